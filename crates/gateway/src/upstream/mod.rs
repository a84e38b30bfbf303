//! The exchange with a service over its link: the HTTP exchange ([`http`]), the WebSocket
//! relay ([`websocket`]) and the client's request body as read for them ([`request_body`]).

pub(crate) mod http;
pub(crate) mod request_body;
pub(crate) mod websocket;
