//! Primitive encodings shared by every payload: big-endian integers, length-prefixed
//! strings and byte strings, counted lists and optional values. Hand-written rather than
//! a serde format so that the byte layout is ours, stable and documented for other
//! languages (`docs/protocol.md`, "Primitives").

use bytes::{Buf, BufMut, Bytes, BytesMut};

use crate::ProtoError;

/// Reads primitives from a payload; every read checks the remaining length first.
pub(crate) struct Reader {
    buf: Bytes,
}

impl Reader {
    pub(crate) fn new(buf: Bytes) -> Self {
        Reader { buf }
    }

    fn need(&self, n: usize, what: &'static str) -> Result<(), ProtoError> {
        if self.buf.remaining() < n {
            return Err(ProtoError::Truncated(what));
        }
        Ok(())
    }

    pub(crate) fn u8(&mut self, what: &'static str) -> Result<u8, ProtoError> {
        self.need(1, what)?;
        Ok(self.buf.get_u8())
    }

    pub(crate) fn u16(&mut self, what: &'static str) -> Result<u16, ProtoError> {
        self.need(2, what)?;
        Ok(self.buf.get_u16())
    }

    pub(crate) fn u32(&mut self, what: &'static str) -> Result<u32, ProtoError> {
        self.need(4, what)?;
        Ok(self.buf.get_u32())
    }

    pub(crate) fn u64(&mut self, what: &'static str) -> Result<u64, ProtoError> {
        self.need(8, what)?;
        Ok(self.buf.get_u64())
    }

    pub(crate) fn bool(&mut self, what: &'static str) -> Result<bool, ProtoError> {
        match self.u8(what)? {
            0 => Ok(false),
            1 => Ok(true),
            other => Err(ProtoError::InvalidValue { field: what, detail: format!("boolean byte {other}") }),
        }
    }

    /// A string: `u16` byte length, then UTF-8.
    pub(crate) fn str(&mut self, what: &'static str) -> Result<String, ProtoError> {
        let len = usize::from(self.u16(what)?);
        self.need(len, what)?;
        let raw = self.buf.split_to(len);
        String::from_utf8(raw.to_vec()).map_err(|_| ProtoError::InvalidUtf8(what))
    }

    /// A byte string: `u32` length, then the bytes (shared, not copied).
    pub(crate) fn bytes(&mut self, what: &'static str) -> Result<Bytes, ProtoError> {
        let len = self.u32(what)? as usize;
        self.need(len, what)?;
        Ok(self.buf.split_to(len))
    }

    /// A list: `u16` count, then each item.
    pub(crate) fn list<T>(
        &mut self,
        what: &'static str,
        mut item: impl FnMut(&mut Reader) -> Result<T, ProtoError>,
    ) -> Result<Vec<T>, ProtoError> {
        let count = usize::from(self.u16(what)?);
        // Every item takes at least one byte, so a count beyond the remaining bytes is a lie;
        // checking it first keeps a forged count from reserving memory.
        self.need(count, what)?;
        let mut items = Vec::with_capacity(count);
        for _ in 0..count {
            items.push(item(self)?);
        }
        Ok(items)
    }

    /// An optional value: `u8` tag 0 (absent) or 1 (present, value follows).
    pub(crate) fn option<T>(
        &mut self,
        what: &'static str,
        item: impl FnOnce(&mut Reader) -> Result<T, ProtoError>,
    ) -> Result<Option<T>, ProtoError> {
        if self.bool(what)? {
            Ok(Some(item(self)?))
        } else {
            Ok(None)
        }
    }

    /// Bytes not read yet: an optional tail is present when this is not zero.
    pub(crate) fn remaining(&self) -> usize {
        self.buf.remaining()
    }

    /// The rest of the payload, which must be empty.
    pub(crate) fn finish(self) -> Result<(), ProtoError> {
        match self.buf.remaining() {
            0 => Ok(()),
            n => Err(ProtoError::TrailingBytes(n)),
        }
    }
}

/// Writes primitives into a payload; lengths that do not fit their prefix are errors.
pub(crate) struct Writer {
    buf: BytesMut,
}

impl Writer {
    pub(crate) fn new() -> Self {
        Writer::with_capacity(128)
    }

    /// A writer for a payload of about `capacity` bytes: a head with an inline body
    /// reserves room for it at once rather than growing (and copying) step by step.
    pub(crate) fn with_capacity(capacity: usize) -> Self {
        Writer { buf: BytesMut::with_capacity(capacity) }
    }

    pub(crate) fn u8(&mut self, v: u8) {
        self.buf.put_u8(v);
    }

    pub(crate) fn u16(&mut self, v: u16) {
        self.buf.put_u16(v);
    }

    pub(crate) fn u32(&mut self, v: u32) {
        self.buf.put_u32(v);
    }

    pub(crate) fn u64(&mut self, v: u64) {
        self.buf.put_u64(v);
    }

    pub(crate) fn bool(&mut self, v: bool) {
        self.buf.put_u8(u8::from(v));
    }

    pub(crate) fn str(&mut self, field: &'static str, v: &str) -> Result<(), ProtoError> {
        let len = u16::try_from(v.len()).map_err(|_| ProtoError::TooLong {
            field,
            len: v.len(),
            max: usize::from(u16::MAX),
        })?;
        self.buf.put_u16(len);
        self.buf.extend_from_slice(v.as_bytes());
        Ok(())
    }

    pub(crate) fn bytes(&mut self, field: &'static str, v: &[u8]) -> Result<(), ProtoError> {
        let len =
            u32::try_from(v.len()).map_err(|_| ProtoError::TooLong { field, len: v.len(), max: u32::MAX as usize })?;
        self.buf.put_u32(len);
        self.buf.extend_from_slice(v);
        Ok(())
    }

    pub(crate) fn list<T>(
        &mut self,
        field: &'static str,
        items: &[T],
        mut item: impl FnMut(&mut Writer, &T) -> Result<(), ProtoError>,
    ) -> Result<(), ProtoError> {
        let count = u16::try_from(items.len()).map_err(|_| ProtoError::TooLong {
            field,
            len: items.len(),
            max: usize::from(u16::MAX),
        })?;
        self.buf.put_u16(count);
        items.iter().try_for_each(|i| item(self, i))
    }

    pub(crate) fn option<T>(
        &mut self,
        value: Option<&T>,
        item: impl FnOnce(&mut Writer, &T) -> Result<(), ProtoError>,
    ) -> Result<(), ProtoError> {
        match value {
            None => {
                self.u8(0);
                Ok(())
            }
            Some(v) => {
                self.u8(1);
                item(self, v)
            }
        }
    }

    pub(crate) fn finish(self) -> Bytes {
        self.buf.freeze()
    }
}
