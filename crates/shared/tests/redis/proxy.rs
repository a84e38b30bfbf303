//! A TCP proxy between a store and Redis that a test can cut: refuse (close every
//! connection, and each new one at once) or blackhole (keep connections open and
//! forward nothing), then resume. Redis itself is never touched.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// What the proxy does with connections.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Forwards both ways.
    Pass,
    /// Closes every connection, open or new.
    Refuse,
    /// Accepts and keeps connections but forwards nothing.
    Blackhole,
}

/// The proxy, stopped when dropped.
pub struct Proxy {
    /// Where the store connects.
    pub addr: SocketAddr,
    /// The mode every connection follows.
    mode: watch::Sender<Mode>,
    /// The accept loop.
    task: JoinHandle<()>,
}

impl Proxy {
    /// A proxy to `upstream`, forwarding.
    pub async fn start(upstream: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("address");
        let (mode, watching) = watch::channel(Mode::Pass);
        let task = tokio::spawn(accept(listener, upstream, watching));
        Proxy { addr, mode, task }
    }

    /// Switches every connection, open or new, to `mode`.
    pub fn set(&self, mode: Mode) {
        self.mode.send_replace(mode);
    }

    /// `redis://` URL of the proxy.
    pub fn url(&self) -> String {
        format!("redis://{}", self.addr)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
        self.mode.send_replace(Mode::Refuse);
    }
}

async fn accept(listener: TcpListener, upstream: SocketAddr, mode: watch::Receiver<Mode>) {
    while let Ok((client, _)) = listener.accept().await {
        let now = *mode.borrow();
        match now {
            Mode::Refuse => drop(client),
            Mode::Blackhole => {
                tokio::spawn(hold(vec![client], mode.clone()));
            }
            Mode::Pass => {
                tokio::spawn(pipe(client, upstream, mode.clone()));
            }
        }
    }
}

/// Keeps `sockets` open, unread, until the proxy leaves blackhole mode.
async fn hold(sockets: Vec<TcpStream>, mut mode: watch::Receiver<Mode>) {
    let _ = mode.wait_for(|mode| *mode != Mode::Blackhole).await;
    drop(sockets);
}

/// Forwards between `client` and Redis while the proxy passes.
async fn pipe(mut client: TcpStream, upstream: SocketAddr, mut mode: watch::Receiver<Mode>) {
    let Ok(mut server) = TcpStream::connect(upstream).await else { return };
    let (mut to_client, mut to_server) = (vec![0u8; 16 * 1024], vec![0u8; 16 * 1024]);
    loop {
        tokio::select! {
            read = client.read(&mut to_server) => match read {
                Ok(n) if n > 0 && server.write_all(&to_server[..n]).await.is_ok() => {}
                _ => return,
            },
            read = server.read(&mut to_client) => match read {
                Ok(n) if n > 0 && client.write_all(&to_client[..n]).await.is_ok() => {}
                _ => return,
            },
            changed = mode.changed() => {
                let now = *mode.borrow_and_update();
                match (changed, now) {
                    (Err(_), _) | (_, Mode::Refuse) => return,
                    (_, Mode::Blackhole) => return hold(vec![client, server], mode).await,
                    (_, Mode::Pass) => {}
                }
            }
        }
    }
}
