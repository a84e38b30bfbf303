//! The process itself, after the Prometheus client conventions:
//! `process_resident_memory_bytes`, `process_open_fds` and `process_start_time_seconds`,
//! read from `/proc/self` at each scrape (Linux only: elsewhere they are left out), and
//! `weir_uptime_seconds`, the time since the gateway's metrics were created (its start).
//!
//! A [`ProcessCollector`] is registered as a collector, so its values are read while the
//! scrape is encoded and never stored; a value `/proc` cannot give is left out of that
//! scrape rather than shown as zero.

use std::time::{Instant, SystemTime, UNIX_EPOCH};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::gauge::ConstGauge;

/// Reads the process's figures at each scrape.
#[derive(Debug)]
pub(crate) struct ProcessCollector {
    /// When the gateway started: the origin of `weir_uptime_seconds`, on the monotonic
    /// clock so that a change of the wall clock does not move it.
    started: Instant,
}

impl ProcessCollector {
    pub(crate) fn new() -> Self {
        ProcessCollector { started: Instant::now() }
    }
}

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let uptime = "Seconds since the gateway started";
        gauge(&mut encoder, "weir_uptime_seconds", uptime, self.started.elapsed().as_secs_f64())?;
        if let Some(rss) = linux::resident_bytes() {
            gauge(&mut encoder, "process_resident_memory_bytes", "Resident memory size in bytes", rss as f64)?;
        }
        if let Some(fds) = linux::open_fds() {
            gauge(&mut encoder, "process_open_fds", "Number of open file descriptors", fds as f64)?;
        }
        if let Some(start) = linux::start_time() {
            let help = "Start time of the process since the Unix epoch, in seconds";
            gauge(&mut encoder, "process_start_time_seconds", help, start)?;
        }
        Ok(())
    }
}

/// Encodes one unlabelled gauge named `name` (its unit already in the name).
fn gauge(encoder: &mut DescriptorEncoder, name: &str, help: &str, value: f64) -> Result<(), std::fmt::Error> {
    let gauge = ConstGauge::new(value);
    gauge.encode(encoder.encode_descriptor(name, help, None, gauge.metric_type())?)
}

/// Seconds since the Unix epoch now, by the wall clock.
fn now_since_epoch() -> Option<f64> {
    SystemTime::now().duration_since(UNIX_EPOCH).ok().map(|d| d.as_secs_f64())
}

#[cfg(target_os = "linux")]
mod linux {
    //! The figures as Linux's `/proc` gives them.

    /// `VmRSS` of `/proc/self/status`, in bytes.
    pub(super) fn resident_bytes() -> Option<u64> {
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        parse_vm_rss(&status)
    }

    pub(super) fn parse_vm_rss(status: &str) -> Option<u64> {
        let line = status.lines().find_map(|line| line.strip_prefix("VmRSS:"))?;
        let kib: u64 = line.trim().strip_suffix("kB")?.trim().parse().ok()?;
        kib.checked_mul(1024)
    }

    /// The entries of `/proc/self/fd` (the directory's own descriptor, open while it is
    /// read, is not counted).
    pub(super) fn open_fds() -> Option<u64> {
        let entries = std::fs::read_dir("/proc/self/fd").ok()?;
        Some((entries.count() as u64).saturating_sub(1))
    }

    /// The process's start: now, less its age (the system's uptime less the uptime at
    /// which the process started, field 22 of `/proc/self/stat`, in clock ticks).
    pub(super) fn start_time() -> Option<f64> {
        let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
        let uptime = std::fs::read_to_string("/proc/uptime").ok()?;
        let system_uptime: f64 = uptime.split_whitespace().next()?.parse().ok()?;
        // SAFETY: sysconf reads a system constant; it takes no pointer and cannot fail
        // in a way other than returning -1, which is checked.
        let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
        let started_at = parse_start_ticks(&stat)? as f64 / (ticks > 0).then_some(ticks as f64)?;
        Some(super::now_since_epoch()? - (system_uptime - started_at))
    }

    /// Field 22 of `/proc/self/stat`, counted after the command name, which is in
    /// parentheses and may hold spaces.
    pub(super) fn parse_start_ticks(stat: &str) -> Option<u64> {
        let after_name = &stat[stat.rfind(')')? + 1..];
        // Fields 3 onwards; the start time is the 20th of them.
        after_name.split_whitespace().nth(19)?.parse().ok()
    }
}

#[cfg(not(target_os = "linux"))]
mod linux {
    //! No `/proc`: the process figures are left out.

    pub(super) fn resident_bytes() -> Option<u64> {
        None
    }

    pub(super) fn open_fds() -> Option<u64> {
        None
    }

    pub(super) fn start_time() -> Option<f64> {
        let _ = super::now_since_epoch;
        None
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use prometheus_client::registry::Registry;

    use super::*;

    #[test]
    fn proc_fields_are_parsed_where_the_kernel_puts_them() {
        assert_eq!(linux::parse_vm_rss("Name:\tweir\nVmRSS:\t   2048 kB\nVmSwap: 0 kB\n"), Some(2048 * 1024));
        assert_eq!(linux::parse_vm_rss("Name:\tweir\n"), None);
        let stat = "42 (a (b) c) S 1 42 42 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 4 0 123456 1000 200";
        assert_eq!(linux::parse_start_ticks(stat), Some(123456));
    }

    #[test]
    fn a_scrape_shows_this_process() {
        let mut registry = Registry::default();
        registry.register_collector(Box::new(ProcessCollector::new()));
        let mut text = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut text, &registry).unwrap();
        let value = |name: &str| -> f64 {
            let line = text.lines().find(|l| l.starts_with(&format!("{name} "))).unwrap_or_else(|| panic!("{text}"));
            line.rsplit(' ').next().unwrap().parse().unwrap()
        };
        assert!(text.contains("# TYPE process_open_fds gauge"), "{text}");
        assert!(value("process_resident_memory_bytes") > 1_000_000.0, "{text}");
        assert!(value("process_open_fds") >= 3.0, "{text}");
        let now = now_since_epoch().unwrap();
        let start = value("process_start_time_seconds");
        assert!(start <= now + 1.0 && start > now - 86_400.0, "{start} vs {now}");
        assert!(value("weir_uptime_seconds") < 60.0, "{text}");
    }
}
