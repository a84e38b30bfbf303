//! The one error type of decoding and encoding. Every variant names what was wrong so
//! that a connection closed for it can log a useful reason.

use thiserror::Error;

/// Why bytes could not be read as a frame or a payload.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum ProtoError {
    #[error("frame payload of {len} bytes exceeds the maximum of {max}")]
    FrameTooLarge { len: usize, max: usize },
    #[error("frame length {0} is shorter than the frame header")]
    FrameTooShort(u32),
    #[error("unknown frame type {0}")]
    UnknownFrameType(u8),
    #[error("unknown flag bits {0:#04x}")]
    UnknownFlags(u8),
    #[error("payload ended early while reading {0}")]
    Truncated(&'static str),
    #[error("{0} is not valid UTF-8")]
    InvalidUtf8(&'static str),
    #[error("invalid value for {field}: {detail}")]
    InvalidValue { field: &'static str, detail: String },
    #[error("{0} trailing bytes after the payload")]
    TrailingBytes(usize),
    #[error("{field} is too long to encode ({len} > {max})")]
    TooLong { field: &'static str, len: usize, max: usize },
    #[error("i/o error: {0}")]
    Io(String),
}

impl From<std::io::Error> for ProtoError {
    fn from(err: std::io::Error) -> Self {
        ProtoError::Io(err.to_string())
    }
}
