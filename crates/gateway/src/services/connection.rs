//! One service connection's life, and the sweeper that watches them all.
//!
//! A service connection's life: Hello read (bounded in time, and in size by
//! `services.max_hello_size`; the connection holds one of the
//! `services.max_pending_handshakes` slots until it is welcomed) →
//! authentication and path authorisation ([`crate::services::auth`]; refused: Error frame
//! and close, logged) → registration in the routing table (refused likewise) → Welcome → its
//! events (heartbeats, endpoint updates, paced and capped by [`super::updates`]) until the
//! link closes → removal from the table at once. The health sweeper closes links whose
//! heartbeats stopped (evicted) and sends the gateway's own heartbeats so services can
//! tell a dead gateway from a quiet one; to a version 2 service they carry a probe, whose
//! answer times the round trip ([`super::probe`]).
//!
//! It also watches each link's writer: a service that stopped reading still heartbeats,
//! but bytes queued for it stop moving. Writes stuck longer than `routing.degraded_after`
//! mark the instance degraded (selection avoids it); stuck longer than
//! `routing.evict_after`, the link is closed and the instance evicted, which fails the
//! requests in flight on it at once (502) instead of leaving them to their timeouts. The
//! same bounds as silence: a peer that takes nothing is as unusable as one that says
//! nothing, and a healthy peer's writes never stall for seconds.

use std::sync::Arc;
use std::time::Instant;

use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use weir_proto::{EndpointsUpdate, ErrorCode, HealthStatus, Heartbeat, Welcome};
use weir_transport::memory::{self, MemoryConnector};
use weir_transport::{accept_hello, ByteStream, Link, LinkConfig, LinkEvent};

use super::auth::{Grant, ServicePeer};
use super::updates::{check_endpoint_count, TooManyEndpoints, UpdatePacer};
use super::{HandshakeSlot, ServiceProof};
use crate::Gateway;

/// The window a service's response (or WebSocket) stream starts with, announced in the
/// Welcome. It grows to `limits.stream_window` while the client takes the bytes as fast
/// as the service sends them, and falls back while the client is slower; so a client that
/// reads nothing (an HTTP/2 window of zero) holds this much per stream and no more.
const RESPONSE_START_WINDOW: u32 = 16 * 1024;

/// Logs an update refused for its length; the previous endpoints stay, and the service is
/// told nothing (an Error on id 0 would close its connection).
fn refuse_update(conn_id: u64, err: &TooManyEndpoints) {
    tracing::warn!(conn_id, reason = %err, "endpoints update refused; the previous endpoints stay");
}

impl Gateway {
    /// Starts accepting in-memory service connections; returns what services dial.
    pub fn attach_memory(self: &Arc<Self>) -> MemoryConnector {
        let (mut listener, connector) = memory::listener();
        let gateway = Arc::clone(self);
        tokio::spawn(async move {
            while let Some(io) = listener.accept().await {
                tokio::spawn(Arc::clone(&gateway).accept_service(io, ServicePeer::embedded(), None));
            }
        });
        connector
    }

    /// Runs one service connection from its Hello to its close. `peer` says how far the
    /// transport vouches for it (see [`crate::services::auth`]); `slot`, its place among
    /// the pending handshakes, is given back once it is welcomed.
    pub(crate) async fn accept_service<T: ByteStream>(
        self: Arc<Self>,
        io: T,
        peer: ServicePeer,
        slot: Option<HandshakeSlot>,
    ) {
        let config = self.config();
        let services = &config.services;
        let pending = match accept_hello(io, services.max_hello_size, services.handshake_timeout).await {
            Ok(pending) => pending,
            Err(err) => {
                tracing::warn!(%peer, error = %err, "service connection refused during handshake");
                self.metrics().services.handshake_failed(&err);
                return;
            }
        };
        if let Err((code, reason)) = self.authorize_hello(&pending.hello, &peer) {
            self.metrics().services.hello_refused(code);
            return pending.refuse(code, &reason).await;
        }
        let hello = pending.hello.clone();
        // Answered in the Hello's own version, so an older service is sent nothing newer.
        let welcome = Welcome {
            protocol_version: hello.protocol_version,
            initial_window: config.limits.stream_window.min(RESPONSE_START_WINDOW),
            heartbeat_interval: config.routing.heartbeat_interval,
        };
        let link_config = LinkConfig {
            recv_window_max: config.limits.stream_window,
            max_update_endpoints: services.max_endpoints,
            ..LinkConfig::default()
        };
        let counters = self.metrics().services.link_counters(&hello.service);
        let (link, events) = pending.start_observed(&welcome, link_config, Some(counters));
        let conn_id = self.links.next_id();
        if let Err(err) = self.routing.register(conn_id, &hello, link.clone(), Instant::now()) {
            tracing::warn!(%peer, service = %hello.service, instance = %hello.instance_id, reason = %err, "service registration refused");
            self.metrics().services.hello_refused(ErrorCode::RegistrationRefused);
            link.close_with_error(ErrorCode::RegistrationRefused, err.to_string());
            return;
        }
        // Registered before welcomed: requests routed here now queue behind the Welcome.
        if let Err(err) = link.open_with(&welcome) {
            tracing::warn!(%peer, error = %err, "service link failed before its Welcome");
            self.routing.remove(conn_id);
            return;
        }
        let proof = Arc::new(ServiceProof { hello: hello.clone(), trust: peer.trust.clone() });
        self.links.insert(conn_id, link.clone(), Arc::clone(&proof));
        self.intake.registered();
        drop(slot);
        // A reload between the check above and the insert would have missed this link.
        if self.authorize_hello(&hello, &peer).is_err() {
            self.routing.remove(conn_id);
            self.links.remove(conn_id);
            link.close_with_error(ErrorCode::Unauthorized, "credentials withdrawn by a configuration reload");
            return;
        }
        tracing::info!(%peer, conn_id, service = %hello.service, version = %hello.version, instance = %hello.instance_id, endpoints = hello.endpoints.len(), "service registered");
        self.metrics().services.registered(&hello.service, &hello.instance_id);
        self.follow_link(conn_id, &link, events, &proof).await;
        self.routing.remove(conn_id);
        self.links.remove(conn_id);
        let reason = link.close_reason().unwrap_or_default();
        tracing::info!(%peer, conn_id, service = %hello.service, instance = %hello.instance_id, %reason, "service disconnected");
    }

    /// Authenticates `hello` and checks its paths; a refusal is logged here and returned
    /// as the Error to send. Tokens are never logged.
    fn authorize_hello(&self, hello: &weir_proto::Hello, peer: &ServicePeer) -> Result<(), (ErrorCode, String)> {
        let (service, instance) = (&hello.service, &hello.instance_id);
        let grant = self.live().service_auth.authenticate(hello, &peer.trust).map_err(|err| {
            tracing::warn!(%peer, %service, %instance, reason = %err, "service connection refused: unauthorized");
            (ErrorCode::Unauthorized, err.to_string())
        })?;
        check_endpoint_count(hello.endpoints.len(), self.config().services.max_endpoints).map_err(|err| {
            tracing::warn!(%peer, %service, %instance, reason = %err, "service registration refused");
            (ErrorCode::RegistrationRefused, err.to_string())
        })?;
        grant.check(service, &hello.endpoints).map_err(|err| {
            tracing::warn!(%peer, %service, %instance, reason = %err, "service registration refused");
            (ErrorCode::RegistrationRefused, err.to_string())
        })?;
        Ok(())
    }

    /// Applies a registered link's events until it closes. Endpoint updates must stay
    /// within what the service's `proof` grants under the credentials in force and
    /// `services.max_endpoints`, like the Hello's endpoints, and are paced (see
    /// [`super::updates`]).
    async fn follow_link(
        &self,
        conn_id: u64,
        link: &Link,
        mut events: mpsc::UnboundedReceiver<LinkEvent>,
        proof: &ServiceProof,
    ) {
        let mut pacer = UpdatePacer::default();
        loop {
            let event = tokio::select! {
                event = events.recv() => event,
                () = pacer.turn() => {
                    if let Some(update) = pacer.take(tokio::time::Instant::now()) {
                        self.apply_update(conn_id, &update, proof);
                    }
                    continue;
                }
                _ = link.closed() => None,
            };
            match event {
                None => return,
                Some(LinkEvent::Heartbeat(heartbeat)) => self.on_heartbeat(conn_id, &heartbeat, proof),
                Some(LinkEvent::EndpointsUpdate(update)) => {
                    let max = self.config().services.max_endpoints;
                    if let Err(err) = check_endpoint_count(update.endpoints.len(), max) {
                        refuse_update(conn_id, &err);
                    } else if let Some(update) = pacer.offer(update, tokio::time::Instant::now()) {
                        self.apply_update(conn_id, &update, proof);
                    }
                }
                // The link judged it from its count alone and never decoded it.
                Some(LinkEvent::EndpointsOverLimit { declared }) => {
                    let max = self.config().services.max_endpoints;
                    refuse_update(conn_id, &TooManyEndpoints { count: declared, max });
                }
                // The link's reader passes neither on for the gateway side: never reached.
                Some(LinkEvent::Request(_) | LinkEvent::GoAway(_)) => {
                    link.close_with_error(ErrorCode::ProtocolViolation, "a service may not send requests");
                    return;
                }
            }
        }
    }

    /// A service's heartbeat: its health for the routing table and, answering one of the
    /// gateway's probes, the round trip.
    fn on_heartbeat(&self, conn_id: u64, heartbeat: &Heartbeat, proof: &ServiceProof) {
        let now = Instant::now();
        self.routing.heartbeat(conn_id, heartbeat, now);
        if let Some(rtt) =
            heartbeat.probe.filter(|_| proof.answers_probes()).and_then(|probe| self.probes.round_trip(probe, now))
        {
            self.metrics().services.heartbeat_round_trip(&proof.hello.service, rtt);
        }
    }

    /// Replaces the endpoints of `conn_id` with `update`'s if the credentials in force
    /// still grant them to `proof`; refused, the previous endpoints stay (logged).
    fn apply_update(&self, conn_id: u64, update: &EndpointsUpdate, proof: &ServiceProof) {
        let service = &proof.hello.service;
        let grant = self.live().service_auth.authenticate(&proof.hello, &proof.trust).map_err(|e| e.to_string());
        let allowed = grant.and_then(|grant: Grant| grant.check(service, &update.endpoints).map_err(|e| e.to_string()));
        let applied =
            allowed.and_then(|()| self.routing.update_endpoints(conn_id, &update.endpoints).map_err(|e| e.to_string()));
        if let Err(err) = applied {
            tracing::warn!(conn_id, reason = %err, "endpoints update refused; the previous endpoints stay");
        }
    }

    /// Starts the task that evicts silent services and sends the gateway's heartbeats.
    pub(crate) fn spawn_health_sweeper(self: &Arc<Self>) -> JoinHandle<()> {
        let gateway = Arc::downgrade(self);
        let every = self.config().routing.heartbeat_interval;
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(every);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticker.tick().await;
                let Some(gateway) = gateway.upgrade() else {
                    return;
                };
                gateway.sweep_once(Instant::now());
            }
        })
    }

    /// One sweep: evict services silent past `evict_after`, heartbeat the others (with a
    /// probe to those that answer one).
    pub fn sweep_once(&self, now: Instant) {
        for rate in self.live().mounts.iter().filter_map(|m| m.request_rate.as_ref()) {
            rate.forget_idle();
        }
        for conn_id in self.routing.sweep(now) {
            if let Some(link) = self.links.remove(conn_id) {
                tracing::warn!(conn_id, "evicting a service that stopped sending heartbeats");
                link.close_with_error(ErrorCode::ProtocolViolation, "no heartbeat received in time; evicted");
            }
        }
        self.sweep_stalled_writes(now);
        let probe = self.probes.stamp(now);
        for (_, link, proof) in self.links.proofs() {
            let mut heartbeat = Heartbeat::new(HealthStatus::Healthy, link.open_streams() as u32, 0.0);
            if proof.answers_probes() {
                heartbeat.probe = Some(probe);
            }
            let _ = link.send_heartbeat(&heartbeat);
        }
    }

    /// Degrades instances whose link writes are stuck past `degraded_after`; evicts those
    /// stuck past `evict_after`.
    fn sweep_stalled_writes(&self, now: Instant) {
        let routing = self.routing.config();
        for (conn_id, link) in self.links.all() {
            let stalled = link.write_stalled_for(now);
            if stalled <= routing.evict_after {
                self.routing.set_write_stalled(conn_id, stalled > routing.degraded_after);
                continue;
            }
            tracing::warn!(conn_id, ?stalled, "evicting a service that stopped reading: writes to it are stuck");
            self.routing.remove(conn_id);
            self.links.remove(conn_id);
            link.close_with_error(
                ErrorCode::ProtocolViolation,
                "the gateway could not write to this service in time; evicted",
            );
        }
    }

    /// Closes every service link (shutdown).
    pub fn close_services(&self, message: &str) {
        for link in self.links.take_all() {
            link.close_with_error(ErrorCode::ShuttingDown, message);
        }
    }
}
