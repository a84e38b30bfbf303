//! `[server.http2]`: how the client listener speaks HTTP/2 (h2c), as plain values. Every
//! setting bounds what one HTTP/2 connection may make the gateway hold or do: streams
//! at once, bytes a client may send or leave unread, header bytes, resets. The `weir`
//! binary's config reader checks each against the HTTP/2 specification's bounds (RFC
//! 9113) and the gateway's own; `downstream::connection_builder` hands them to hyper.

use std::time::Duration;

/// `[server.http2]`: the client listener's HTTP/2 settings.
#[derive(Debug, Clone, PartialEq)]
pub struct Http2Config {
    /// Streams one connection may have open at once (SETTINGS_MAX_CONCURRENT_STREAMS):
    /// each can hold its window's worth of request bytes and its send buffer of
    /// response bytes, so this multiplies every per-stream bound below.
    pub max_concurrent_streams: u32,
    /// Request-body bytes a client may send on one stream before the gateway has read
    /// them (SETTINGS_INITIAL_WINDOW_SIZE): what h2 buffers per stream when the service
    /// is slower than the client.
    pub initial_stream_window: u32,
    /// Request-body bytes a client may send on all its streams together before the
    /// gateway has read them: the ceiling of what one connection's unread uploads hold.
    pub initial_connection_window: u32,
    /// Response bytes h2 holds per stream waiting for the client's window before hyper
    /// stops taking more from the body: what a client that does not read costs per stream.
    pub max_send_buffer: usize,
    /// Largest decoded request header list (SETTINGS_MAX_HEADER_LIST_SIZE): a larger
    /// one is answered 431, one four times larger closes the connection, so an HPACK
    /// bomb is refused before it is allocated.
    pub max_header_list_size: u32,
    /// Silence after which a client is pinged; `None`: half of `server.idle_timeout`.
    pub keep_alive_interval: Option<Duration>,
    /// How long a pinged client has to answer before the connection is closed, requests
    /// in flight or not; `None`: half of `server.idle_timeout`.
    pub keep_alive_timeout: Option<Duration>,
    /// Streams a client may open and reset before the gateway has accepted them (the
    /// rapid-reset attack); one more closes the connection with ENHANCE_YOUR_CALM.
    pub max_pending_accept_reset_streams: usize,
    /// Streams the gateway may reset for a client's protocol errors on one connection;
    /// one more closes the connection with ENHANCE_YOUR_CALM.
    pub max_local_error_reset_streams: usize,
}

impl Http2Config {
    /// The ping interval in effect for a listener whose idle timeout is `idle_timeout`.
    pub fn ping_interval(&self, idle_timeout: Duration) -> Duration {
        self.keep_alive_interval.unwrap_or(idle_timeout / 2)
    }

    /// The ping answer deadline in effect for a listener whose idle timeout is
    /// `idle_timeout`.
    pub fn ping_timeout(&self, idle_timeout: Duration) -> Duration {
        self.keep_alive_timeout.unwrap_or(idle_timeout / 2)
    }
}

impl Default for Http2Config {
    fn default() -> Self {
        Http2Config {
            max_concurrent_streams: 128,
            initial_stream_window: 1024 * 1024,
            initial_connection_window: 1024 * 1024,
            max_send_buffer: 16 * 1024,
            max_header_list_size: 16 * 1024,
            keep_alive_interval: None,
            keep_alive_timeout: None,
            max_pending_accept_reset_streams: 20,
            max_local_error_reset_streams: 1024,
        }
    }
}
