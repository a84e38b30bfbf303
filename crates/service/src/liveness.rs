//! Telling a dead gateway from a quiet one: a watchdog per session.
//!
//! A gateway sends its own heartbeats every `Welcome::heartbeat_interval`. If nothing at
//! all (a heartbeat or any other frame, [`Link::last_received`]) arrives for
//! [`ServiceBuilder::heartbeat_miss_count`](crate::ServiceBuilder::heartbeat_miss_count)
//! intervals, the connection is taken for dead (a half-open socket, a partitioned or
//! frozen gateway): the link is closed, which cancels every request in flight, and
//! [`Service::run`](crate::Service::run) dials again.
//!
//! The protocol makes the gateway's heartbeats optional, so the watchdog is armed only
//! once the gateway has sent one: a gateway that never does is never judged.

use std::time::Duration;

use weir_transport::Link;

/// Watches `link` until it closes, closing it if the gateway falls silent for
/// `miss_count` heartbeat intervals. Does nothing when either is zero.
pub(crate) async fn watch(link: Link, interval: Duration, miss_count: u32) {
    if interval.is_zero() || miss_count == 0 {
        return;
    }
    let allowed = interval.saturating_mul(miss_count);
    loop {
        let wait = match next_check(&link, interval, allowed) {
            Ok(wait) => wait,
            Err(silent) => {
                tracing::warn!(?silent, miss_count, "no frame from the gateway in time: closing the connection");
                link.close(format!("gateway silent for {silent:?} ({miss_count} heartbeat intervals)"));
                return;
            }
        };
        tokio::select! {
            () = link.closed() => return,
            () = tokio::time::sleep(wait) => {}
        }
    }
}

/// How long until the next check, or `Err(silence)` if the gateway is taken for dead.
fn next_check(link: &Link, interval: Duration, allowed: Duration) -> Result<Duration, Duration> {
    if link.peer_heartbeats() == 0 {
        return Ok(interval);
    }
    let silent = link.last_received().elapsed();
    if silent >= allowed {
        return Err(silent);
    }
    Ok(allowed - silent)
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use weir_proto::{EndpointDescriptor, HealthStatus, Heartbeat, Hello, Welcome, PROTOCOL_VERSION};
    use weir_transport::{accept_hello, dial, LinkConfig};

    use super::*;

    const WAIT: Duration = Duration::from_secs(5);
    const INTERVAL: Duration = Duration::from_millis(20);

    /// A (gateway, service) pair of links over an in-memory pipe.
    async fn pair() -> (Link, Link) {
        let (a, b) = tokio::io::duplex(64 * 1024);
        let hello = Hello {
            protocol_version: PROTOCOL_VERSION,
            service: "svc".into(),
            version: "1.0.0".into(),
            region: String::new(),
            instance_id: "i".into(),
            initial_window: 65536,
            token: String::new(),
            endpoints: vec![EndpointDescriptor::new("GET", "/x")],
        };
        let dialing = tokio::spawn(async move { dial(a, &hello, LinkConfig::default(), WAIT).await });
        let pending = accept_hello(b, weir_proto::DEFAULT_MAX_FRAME_PAYLOAD, WAIT).await.unwrap();
        let welcome =
            Welcome { protocol_version: PROTOCOL_VERSION, initial_window: 65536, heartbeat_interval: INTERVAL };
        let (gateway, _events) = pending.welcome(&welcome, LinkConfig::default()).await.unwrap();
        let (service, _events, _) = dialing.await.unwrap().unwrap();
        (gateway, service)
    }

    fn heartbeat() -> Heartbeat {
        Heartbeat::new(HealthStatus::Healthy, 0, 0.0)
    }

    #[tokio::test]
    async fn a_gateway_that_falls_silent_is_closed_after_the_miss_count() {
        let (gateway, service) = pair().await;
        gateway.send_heartbeat(&heartbeat()).unwrap();
        while service.peer_heartbeats() == 0 {
            tokio::task::yield_now().await;
        }
        let armed_at = Instant::now();
        tokio::spawn(watch(service.clone(), INTERVAL, 3));
        tokio::time::timeout(WAIT, service.closed()).await.expect("the silent gateway was never given up");
        assert!(armed_at.elapsed() >= INTERVAL * 2, "gave up after {:?}", armed_at.elapsed());
        assert!(service.close_reason().unwrap().contains("gateway silent"), "{:?}", service.close_reason());
    }

    #[tokio::test]
    async fn heartbeats_keep_the_link_and_a_gateway_without_any_is_never_judged() {
        let (gateway, service) = pair().await;
        tokio::spawn(watch(service.clone(), INTERVAL, 2));
        // No heartbeat yet: not armed, however long the silence (an upper bound, not a pause).
        assert!(tokio::time::timeout(INTERVAL * 6, service.closed()).await.is_err());
        for _ in 0..10 {
            gateway.send_heartbeat(&heartbeat()).unwrap();
            tokio::time::sleep(INTERVAL / 2).await;
        }
        assert!(!service.is_closed(), "{:?}", service.close_reason());
    }
}
