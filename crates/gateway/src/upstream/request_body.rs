//! Reading a client's request body under the slow-sender protections.
//!
//! A per-read timeout alone lets a client trickle one byte per period forever, so
//! [`ClientBody`] enforces three bounds, each answered with 408: the longest wait for the
//! next bytes (`read_timeout`), the whole upload (`upload_timeout` of the mount), and a
//! minimum average rate once `data_rate_grace` has passed (`min_request_data_rate`, as
//! Kestrel's MinRequestBodyDataRate). A streaming mount's bandwidth limit shapes reading.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tokio::time::Instant;

use crate::limits::bandwidth::Shaper;
use crate::limits::in_flight::Traffic;
use crate::response::error::GatewayError;

/// The bounds a body is read under.
#[derive(Debug, Clone)]
pub(crate) struct ReadPolicy {
    pub read_timeout: Duration,
    pub upload_timeout: Duration,
    pub min_rate: u64,
    pub grace: Duration,
    pub shaper: Option<Arc<Shaper>>,
    /// The request's byte counters (its exchange's, shown in the registry too).
    pub traffic: Arc<Traffic>,
}

/// A request body being read.
pub(crate) struct ClientBody {
    body: Incoming,
    policy: ReadPolicy,
    started: Instant,
    received: u64,
}

impl ClientBody {
    pub(crate) fn new(body: Incoming, policy: ReadPolicy) -> Self {
        ClientBody { body, policy, started: Instant::now(), received: 0 }
    }

    /// The next non-empty chunk, `None` at the end, or 408/400.
    pub(crate) async fn next(&mut self) -> Result<Option<Bytes>, GatewayError> {
        loop {
            let wait = self.policy.read_timeout.min(self.upload_time_left()?);
            let frame = match tokio::time::timeout(wait, self.body.frame()).await {
                Err(_) => return Err(self.timed_out()),
                Ok(None) => return Ok(None),
                Ok(Some(Err(err))) => return Err(GatewayError::BadRequest(format!("reading the body failed: {err}"))),
                Ok(Some(Ok(frame))) => frame,
            };
            let Ok(data) = frame.into_data() else { continue };
            if data.is_empty() {
                continue;
            }
            self.received += data.len() as u64;
            self.policy.traffic.bytes_in.fetch_add(data.len() as u64, Ordering::Relaxed);
            self.check_rate()?;
            if let Some(shaper) = &self.policy.shaper {
                shaper.throttle(data.len()).await;
            }
            return Ok(Some(data));
        }
    }

    fn upload_time_left(&self) -> Result<Duration, GatewayError> {
        let left = self.policy.upload_timeout.saturating_sub(self.started.elapsed());
        if left.is_zero() {
            return Err(GatewayError::RequestTimeout(format!("upload not done in {:?}", self.policy.upload_timeout)));
        }
        Ok(left)
    }

    fn timed_out(&self) -> GatewayError {
        match self.upload_time_left() {
            Err(err) => err,
            Ok(_) => GatewayError::RequestTimeout(format!("no body bytes for {:?}", self.policy.read_timeout)),
        }
    }

    fn check_rate(&self) -> Result<(), GatewayError> {
        let elapsed = self.started.elapsed();
        if elapsed <= self.policy.grace {
            return Ok(());
        }
        let floor = self.policy.min_rate as f64 * elapsed.as_secs_f64();
        if (self.received as f64) < floor {
            let detail =
                format!("{} body bytes in {elapsed:?} is under {} bytes/s", self.received, self.policy.min_rate);
            return Err(GatewayError::RequestTimeout(detail));
        }
        Ok(())
    }
}
