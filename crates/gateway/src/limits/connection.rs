//! One client connection as every request on it sees it: its address, its slot under
//! `max_connections_per_ip`, its slot under `max_connections` and its bandwidth shapers,
//! one per mount that limits bandwidth (the limit is per connection and mount, both ways).
//!
//! Invariant: both slots live exactly as long as the last holder of the connection,
//! which is hyper's connection task or, after an upgrade, the WebSocket session.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use super::bandwidth::Shaper;
use super::connections::ConnectionSlot;
use super::slots::Permit;
use crate::config::MountConfig;

/// One client connection, as every request on it sees it.
#[derive(Debug)]
pub(crate) struct ClientConn {
    pub addr: SocketAddr,
    /// This connection's slot under `max_connections_per_ip`; an upgraded WebSocket keeps
    /// the connection (and so the slot) alive after hyper lets go of it.
    _ip_slot: Permit<IpAddr>,
    /// This connection's place under `max_connections`, which knows whether a request is
    /// in flight on it; it too lives as long as the socket.
    pub slot: Arc<ConnectionSlot>,
    /// Bandwidth shapers of this connection, one per mount that limits bandwidth.
    shapers: Mutex<HashMap<String, Arc<Shaper>>>,
}

impl ClientConn {
    pub(crate) fn new(addr: SocketAddr, ip_slot: Permit<IpAddr>, slot: Arc<ConnectionSlot>) -> Self {
        ClientConn { addr, _ip_slot: ip_slot, slot, shapers: Mutex::new(HashMap::new()) }
    }

    /// The shaper this connection uses on `mount`, if the mount limits bandwidth.
    pub(crate) fn shaper(&self, mount: &MountConfig) -> Option<Arc<Shaper>> {
        let rate = mount.settings.rate_limit_bandwidth?;
        let mut shapers = super::lock(&self.shapers);
        Some(Arc::clone(shapers.entry(mount.prefix.clone()).or_insert_with(|| Arc::new(Shaper::new(rate)))))
    }
}
