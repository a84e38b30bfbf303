//! Options set on every accepted client socket, before any byte is read or written.
//!
//! - `TCP_NODELAY`: responses are written whole by hyper, so Nagle's delay only adds latency.
//! - `TCP_NOTSENT_LOWAT` ([`UNSENT_LOW_WATER`]): the kernel takes a write only while fewer
//!   bytes than this wait unsent in the socket. Without it Linux grows a socket's send
//!   buffer to megabytes, and a client that reads slowly looks fast until the buffer is
//!   full: the gateway pulls the service's stream at full speed meanwhile (its paced
//!   window grows to the maximum), the minimum response rate counts bytes the client never
//!   read, and the kernel holds megabytes per slow reader. With it, backpressure reaches
//!   the relay as soon as the client falls behind, while bytes already sent and not yet
//!   acknowledged (a fast client far away) are not limited: the congestion window keeps
//!   the path full. Failing to set an option costs performance, not safety, so it is
//!   logged and the connection is served.

use std::os::fd::AsRawFd;

use tokio::net::TcpStream;

/// The most bytes a client socket holds unsent before writes wait. Enough for a few
/// writes of hyper's buffer, so a fast client's pipe never runs dry between wake-ups.
pub(crate) const UNSENT_LOW_WATER: u32 = 32 * 1024;

/// Sets the client socket's options (see the module doc).
pub(crate) fn tune(stream: &TcpStream) {
    if let Err(err) = stream.set_nodelay(true) {
        tracing::debug!(error = %err, "could not set TCP_NODELAY");
    }
    if let Err(err) = set_unsent_low_water(stream, UNSENT_LOW_WATER) {
        tracing::debug!(error = %err, "could not set TCP_NOTSENT_LOWAT");
    }
}

/// `setsockopt(TCP_NOTSENT_LOWAT)`: neither std nor tokio name this option.
fn set_unsent_low_water(stream: &TcpStream, bytes: u32) -> std::io::Result<()> {
    let value: libc::c_int = bytes.try_into().unwrap_or(libc::c_int::MAX);
    // SAFETY: the descriptor is open for as long as `stream` is borrowed, and the option
    // value is a c_int that lives across the call, with its size passed alongside.
    let status = unsafe {
        libc::setsockopt(
            stream.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_NOTSENT_LOWAT,
            std::ptr::addr_of!(value).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    match status {
        0 => Ok(()),
        _ => Err(std::io::Error::last_os_error()),
    }
}

/// The bytes the client has acknowledged over the connection's life (`tcpi_bytes_acked`),
/// or `None` where the kernel does not say.
pub(crate) fn bytes_acked(stream: &TcpStream) -> Option<u64> {
    // SAFETY: tcp_info is plain old data, for which all zeroes is a valid value.
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: the descriptor is open while `stream` is borrowed; `len` tells the kernel
    // the size of `info`, which it fills at most.
    let status = unsafe {
        libc::getsockopt(
            stream.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            std::ptr::addr_of_mut!(info).cast(),
            &mut len,
        )
    };
    // A kernel older than the field (Linux 4.1) fills less of the struct.
    let filled = std::mem::offset_of!(libc::tcp_info, tcpi_bytes_acked) + std::mem::size_of::<u64>();
    (status == 0 && len as usize >= filled).then_some(info.tcpi_bytes_acked)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_low_water_mark_is_set_on_a_tuned_socket() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        let (accepted, _) = listener.accept().await.unwrap();
        tune(&accepted);
        let mut value: libc::c_int = 0;
        let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
        // SAFETY: as in `set_unsent_low_water`, with `len` telling the size of `value`.
        let status = unsafe {
            libc::getsockopt(
                accepted.as_raw_fd(),
                libc::IPPROTO_TCP,
                libc::TCP_NOTSENT_LOWAT,
                std::ptr::addr_of_mut!(value).cast(),
                &mut len,
            )
        };
        assert_eq!(status, 0);
        assert_eq!(value as u32, UNSENT_LOW_WATER);
        assert!(accepted.nodelay().unwrap());
        drop(client);
    }

    #[tokio::test]
    async fn bytes_acked_counts_what_the_client_received() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap()).await.unwrap();
        let (mut accepted, _) = listener.accept().await.unwrap();
        let start = bytes_acked(&accepted).expect("Linux reports tcpi_bytes_acked");
        accepted.write_all(&[7; 1000]).await.unwrap();
        let mut buf = [0u8; 1000];
        client.read_exact(&mut buf).await.unwrap();
        // The acknowledgement may trail the data a little: wait for it.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while bytes_acked(&accepted).unwrap() < start + 1000 {
            assert!(std::time::Instant::now() < deadline, "the client's acknowledgement never came");
            tokio::time::sleep(std::time::Duration::from_millis(1)).await;
        }
    }
}
