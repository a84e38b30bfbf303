//! The hand-over conversation's messages and their encoding: a 4-byte big-endian length,
//! then that many bytes of JSON. The offer's listening sockets travel as descriptors
//! attached to its first byte, in the order its descriptions list them; a message that
//! says otherwise, or one longer than [`MAX_MESSAGE`], is refused.

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::os::fd::{BorrowedFd, OwnedFd};

use serde::{Deserialize, Serialize};
use tokio::net::UnixStream;

use super::fd_passing;
use super::HandoverError;

/// The longest message body accepted: an offer names a handful of listeners and services.
pub(crate) const MAX_MESSAGE: usize = 64 * 1024;

/// What a listening socket is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum Role {
    /// Client traffic (`server.listen`).
    Public,
    /// The admin surface (`server.admin_listen`).
    Admin,
    /// The redirect to HTTPS (`server.http_redirect_listen`).
    Redirect,
    /// Services dialling in (`services.listen`).
    Services,
}

/// One listening socket of an offer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ListenerDescription {
    pub(crate) role: Role,
    /// Its local address, which the successor compares with its configuration.
    pub(crate) addr: SocketAddr,
}

/// One message of the conversation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub(crate) enum Message {
    /// Successor → running process: hand me your listeners.
    Request {
        /// The successor's process id, for the running process's log.
        pid: u32,
    },
    /// Running → successor: the listeners (their sockets attached, in this order) and the
    /// services registered with it, which the successor waits for.
    Offer { listeners: Vec<ListenerDescription>, services: BTreeSet<String> },
    /// Successor → running process: serving now; stop accepting and drain.
    Ready,
}

impl Message {
    /// The message's bytes on the socket: length, then JSON.
    pub(crate) fn encode(&self) -> Result<Vec<u8>, HandoverError> {
        let body = serde_json::to_vec(self).map_err(|e| HandoverError::Malformed(e.to_string()))?;
        if body.len() > MAX_MESSAGE {
            return Err(HandoverError::Malformed(format!("message of {} bytes is too long", body.len())));
        }
        // Cannot fail: the body is at most MAX_MESSAGE bytes.
        let length = u32::try_from(body.len()).unwrap_or(u32::MAX);
        let mut bytes = length.to_be_bytes().to_vec();
        bytes.extend_from_slice(&body);
        Ok(bytes)
    }

    /// Decodes a body (what follows the length).
    pub(crate) fn decode(body: &[u8]) -> Result<Message, HandoverError> {
        serde_json::from_slice(body).map_err(|e| HandoverError::Malformed(e.to_string()))
    }

    /// How many descriptors must come with it.
    fn descriptors(&self) -> usize {
        match self {
            Message::Offer { listeners, .. } => listeners.len(),
            Message::Request { .. } | Message::Ready => 0,
        }
    }
}

/// Sends `message` with `fds` attached.
pub(crate) async fn send(
    stream: &mut UnixStream,
    message: &Message,
    fds: &[BorrowedFd<'_>],
) -> Result<(), HandoverError> {
    debug_assert_eq!(message.descriptors(), fds.len());
    fd_passing::send(stream, &message.encode()?, fds).await.map_err(HandoverError::Io)
}

/// Reads one message and the descriptors that came with it; a count that does not match
/// the message is refused (the descriptors are closed).
pub(crate) async fn recv(stream: &mut UnixStream) -> Result<(Message, Vec<OwnedFd>), HandoverError> {
    let mut header = [0u8; 4];
    let fds = fd_passing::recv(stream, &mut header).await.map_err(HandoverError::Io)?;
    let length = u32::from_be_bytes(header) as usize;
    if length > MAX_MESSAGE {
        return Err(HandoverError::Malformed(format!("message of {length} bytes is too long")));
    }
    let mut body = vec![0u8; length];
    tokio::io::AsyncReadExt::read_exact(stream, &mut body).await.map_err(HandoverError::Io)?;
    let message = Message::decode(&body)?;
    if message.descriptors() != fds.len() {
        let expected = message.descriptors();
        return Err(HandoverError::Malformed(format!(
            "{} descriptors came with a message needing {expected}",
            fds.len()
        )));
    }
    Ok((message, fds))
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsFd;

    use super::*;

    fn offer() -> Message {
        Message::Offer {
            listeners: vec![
                ListenerDescription { role: Role::Public, addr: "127.0.0.1:8080".parse().unwrap() },
                ListenerDescription { role: Role::Services, addr: "[::1]:7000".parse().unwrap() },
            ],
            services: BTreeSet::from(["demo".to_owned()]),
        }
    }

    #[test]
    fn messages_encode_as_length_then_json_and_decode_back() {
        let bytes = Message::Ready.encode().unwrap();
        assert_eq!(bytes, b"\0\0\0\x10{\"type\":\"ready\"}");
        let bytes = Message::Request { pid: 42 }.encode().unwrap();
        assert_eq!(&bytes[4..], br#"{"type":"request","pid":42}"#);
        let bytes = offer().encode().unwrap();
        let text = std::str::from_utf8(&bytes[4..]).unwrap();
        assert_eq!(
            text,
            r#"{"type":"offer","listeners":[{"role":"public","addr":"127.0.0.1:8080"},{"role":"services","addr":"[::1]:7000"}],"services":["demo"]}"#
        );
        assert_eq!(Message::decode(&bytes[4..]).unwrap(), offer());
    }

    #[test]
    fn unknown_or_broken_messages_are_refused() {
        for body in [&br#"{"type":"surrender"}"#[..], br#"{"type":"offer"}"#, b"\xff", b""] {
            assert!(matches!(Message::decode(body), Err(HandoverError::Malformed(_))), "{body:?}");
        }
    }

    #[tokio::test]
    async fn an_offer_arrives_with_its_listeners_and_a_wrong_count_is_refused() {
        let (mut left, mut right) = UnixStream::pair().unwrap();
        let public = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let services = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        send(&mut left, &offer(), &[public.as_fd(), services.as_fd()]).await.unwrap();
        let (message, fds) = recv(&mut right).await.unwrap();
        assert_eq!(message, offer());
        let received = std::net::TcpListener::from(fds.into_iter().nth(1).unwrap());
        assert_eq!(received.local_addr().unwrap(), services.local_addr().unwrap());

        fd_passing::send(&mut left, &offer().encode().unwrap(), &[public.as_fd()]).await.unwrap();
        assert!(matches!(recv(&mut right).await, Err(HandoverError::Malformed(_))));
    }

    #[tokio::test]
    async fn an_overlong_message_is_refused_before_it_is_read() {
        let (mut left, mut right) = UnixStream::pair().unwrap();
        fd_passing::send(&mut left, &u32::MAX.to_be_bytes(), &[]).await.unwrap();
        assert!(matches!(recv(&mut right).await, Err(HandoverError::Malformed(_))));
    }
}
