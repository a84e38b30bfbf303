//! The in-memory transport: a service in the same process dials the gateway through a
//! bounded in-memory pipe (`tokio::io::duplex`). Nothing else differs from TCP: the same
//! frames, codec, flow control and checks run over it, which makes it the reference
//! transport of the conformance suite and the cheapest way to embed a service.

use tokio::io::DuplexStream;
use tokio::sync::mpsc;

/// Bytes each direction of an in-memory pipe buffers before the writer waits.
pub const PIPE_BUFFER: usize = 256 * 1024;

/// The gateway's end: yields one byte stream per dialling service.
#[derive(Debug)]
pub struct MemoryListener {
    incoming: mpsc::Receiver<DuplexStream>,
}

/// The services' end: dials the listener it was made with. Cheap to clone.
#[derive(Debug, Clone)]
pub struct MemoryConnector {
    outgoing: mpsc::Sender<DuplexStream>,
}

/// A listener and the connector that reaches it.
pub fn listener() -> (MemoryListener, MemoryConnector) {
    let (tx, rx) = mpsc::channel(16);
    (MemoryListener { incoming: rx }, MemoryConnector { outgoing: tx })
}

impl MemoryListener {
    /// The next dialled connection; `None` once every connector is gone.
    pub async fn accept(&mut self) -> Option<DuplexStream> {
        self.incoming.recv().await
    }
}

impl MemoryConnector {
    /// Opens a connection to the listener.
    pub async fn connect(&self) -> std::io::Result<DuplexStream> {
        let (near, far) = tokio::io::duplex(PIPE_BUFFER);
        self.outgoing
            .send(far)
            .await
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "in-memory listener is closed"))?;
        Ok(near)
    }
}
