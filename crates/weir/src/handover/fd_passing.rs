//! Sending open file descriptors to another process over a Unix stream socket
//! (`SCM_RIGHTS`): the only unsafe code of the hand-over, kept to two system calls.
//!
//! A message is its bytes with the descriptors attached to its first byte. The receiver
//! asks for exactly the bytes of a frame header with room for [`MAX_FDS`] descriptors,
//! so the descriptors of one message can never be read together with the next one; a
//! message carrying more than that is refused (the kernel closes what did not fit).
//! Received descriptors are owned ([`OwnedFd`]) and close-on-exec from the start.

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use tokio::io::{AsyncReadExt, AsyncWriteExt, Interest};
use tokio::net::UnixStream;

/// The most descriptors one message may carry: one per listener role.
pub(crate) const MAX_FDS: usize = 8;

/// Room for the control message of `count` descriptors, in `u64`s so that it is aligned
/// for `cmsghdr`.
fn control_buffer(count: usize) -> (Vec<u64>, usize) {
    let data = u32::try_from(count * size_of::<RawFd>()).unwrap_or(u32::MAX);
    // SAFETY: CMSG_SPACE only computes a length from its argument.
    let space = unsafe { libc::CMSG_SPACE(data) } as usize;
    (vec![0u64; space.div_ceil(size_of::<u64>())], space)
}

/// Writes `bytes` with `fds` attached to their first byte.
pub(crate) async fn send(stream: &mut UnixStream, bytes: &[u8], fds: &[BorrowedFd<'_>]) -> io::Result<()> {
    if fds.len() > MAX_FDS {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "too many descriptors for one message"));
    }
    let raw: Vec<RawFd> = fds.iter().map(AsRawFd::as_raw_fd).collect();
    let socket = stream.as_raw_fd();
    let sent = stream.async_io(Interest::WRITABLE, || sendmsg(socket, bytes, &raw)).await?;
    // The descriptors went with the first byte; the rest, if any, is plain bytes.
    stream.write_all(&bytes[sent..]).await
}

/// Reads exactly `buf.len()` bytes and the descriptors attached to the first of them.
pub(crate) async fn recv(stream: &mut UnixStream, buf: &mut [u8]) -> io::Result<Vec<OwnedFd>> {
    let socket = stream.as_raw_fd();
    let (read, fds) = stream.async_io(Interest::READABLE, || recvmsg(socket, buf)).await?;
    if read == 0 && !buf.is_empty() {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    stream.read_exact(&mut buf[read..]).await?;
    Ok(fds)
}

fn sendmsg(socket: RawFd, bytes: &[u8], fds: &[RawFd]) -> io::Result<usize> {
    let mut iov = libc::iovec { iov_base: bytes.as_ptr().cast_mut().cast(), iov_len: bytes.len() };
    let (mut control, space) = control_buffer(fds.len());
    // SAFETY: msghdr is plain data, for which all zeroes (null pointers, zero lengths) is valid.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    if !fds.is_empty() {
        msg.msg_control = control.as_mut_ptr().cast();
        msg.msg_controllen = space as _;
        // SAFETY: `control` is aligned and CMSG_SPACE(fds) long, so CMSG_FIRSTHDR is a
        // valid header with room for CMSG_LEN(fds) bytes, into which the fds are copied.
        unsafe {
            let header = libc::CMSG_FIRSTHDR(&msg);
            (*header).cmsg_level = libc::SOL_SOCKET;
            (*header).cmsg_type = libc::SCM_RIGHTS;
            (*header).cmsg_len = libc::CMSG_LEN(std::mem::size_of_val(fds) as u32) as _;
            std::ptr::copy_nonoverlapping(fds.as_ptr(), libc::CMSG_DATA(header).cast::<RawFd>(), fds.len());
        }
    }
    // SAFETY: `msg` points at `iov` and `control`, both alive for the call; MSG_NOSIGNAL
    // turns a closed peer into EPIPE instead of a signal.
    let sent = unsafe { libc::sendmsg(socket, &msg, libc::MSG_NOSIGNAL) };
    usize::try_from(sent).map_err(|_| io::Error::last_os_error())
}

fn recvmsg(socket: RawFd, buf: &mut [u8]) -> io::Result<(usize, Vec<OwnedFd>)> {
    let mut iov = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: buf.len() };
    let (mut control, space) = control_buffer(MAX_FDS);
    // SAFETY: as in `sendmsg`.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control.as_mut_ptr().cast();
    msg.msg_controllen = space as _;
    // SAFETY: `msg` points at `iov` (over `buf`) and `control`, both alive for the call.
    let read = unsafe { libc::recvmsg(socket, &mut msg, libc::MSG_CMSG_CLOEXEC) };
    let read = usize::try_from(read).map_err(|_| io::Error::last_os_error())?;
    let fds = received_fds(&msg);
    if msg.msg_flags & libc::MSG_CTRUNC != 0 {
        // `fds` are closed as they drop.
        return Err(io::Error::new(io::ErrorKind::InvalidData, "more descriptors than a message may carry"));
    }
    Ok((read, fds))
}

/// Takes ownership of every descriptor in `msg`'s `SCM_RIGHTS` control messages.
fn received_fds(msg: &libc::msghdr) -> Vec<OwnedFd> {
    let mut fds = Vec::new();
    // SAFETY: `msg` was filled by recvmsg: CMSG_FIRSTHDR/CMSG_NXTHDR walk headers the
    // kernel wrote within `msg_controllen`, and each SCM_RIGHTS header holds
    // `cmsg_len - CMSG_LEN(0)` bytes of descriptors, now open in this process and owned
    // by nobody else.
    unsafe {
        let mut header = libc::CMSG_FIRSTHDR(msg);
        while !header.is_null() {
            if (*header).cmsg_level == libc::SOL_SOCKET && (*header).cmsg_type == libc::SCM_RIGHTS {
                let data = libc::CMSG_DATA(header).cast::<RawFd>();
                let count = ((*header).cmsg_len as usize - libc::CMSG_LEN(0) as usize) / size_of::<RawFd>();
                for i in 0..count {
                    fds.push(OwnedFd::from_raw_fd(std::ptr::read_unaligned(data.add(i))));
                }
            }
            header = libc::CMSG_NXTHDR(msg, header);
        }
    }
    fds
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::os::fd::AsFd;

    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn descriptors_cross_a_socketpair_and_stay_usable() {
        let (mut left, mut right) = UnixStream::pair().unwrap();
        let (mut near, far) = std::os::unix::net::UnixStream::pair().unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let fds = [far.as_fd(), listener.as_fd()];
        send(&mut left, b"four and more", &fds).await.unwrap();

        let mut head = [0u8; 4];
        let received = recv(&mut right, &mut head).await.unwrap();
        assert_eq!(&head, b"four");
        assert_eq!(received.len(), 2);
        let mut rest = [0u8; 9];
        right.read_exact(&mut rest).await.unwrap();
        assert_eq!(&rest, b" and more", "the bytes after the first read carry no descriptor");

        // The received socket is the same socket: what is written to it arrives at `near`.
        let mut passed = std::os::unix::net::UnixStream::from(received.into_iter().next().unwrap());
        passed.write_all(b"through").unwrap();
        let mut got = [0u8; 7];
        near.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"through");
    }

    #[tokio::test]
    async fn a_message_without_descriptors_yields_none_and_eof_is_an_error() {
        let (mut left, mut right) = UnixStream::pair().unwrap();
        send(&mut left, b"ok", &[]).await.unwrap();
        let mut buf = [0u8; 2];
        assert!(recv(&mut right, &mut buf).await.unwrap().is_empty());
        drop(left);
        let err = recv(&mut right, &mut buf).await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
    }

    #[tokio::test]
    async fn more_descriptors_than_allowed_are_refused_by_the_sender() {
        let (mut left, _right) = UnixStream::pair().unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let fds = vec![listener.as_fd(); MAX_FDS + 1];
        assert_eq!(send(&mut left, b"x", &fds).await.unwrap_err().kind(), io::ErrorKind::InvalidInput);
    }
}
