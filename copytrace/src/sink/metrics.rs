//! Prometheus metrics. Every metric copytrace exports is declared here.
//!
//! Call counts, errno counts and byte totals come from the kernel-side
//! `COUNTS` map, read at scrape time: they stay exact when the ring buffer
//! drops events. Events feed only what needs the full record (the latency
//! histogram). Label values come from closed sets: verdict names, the
//! filesystem registry ("other" beyond it), errno names.

use std::collections::HashMap;
use std::sync::Arc;

use copytrace_common::{counter, CountKey, CountVal};
use prometheus::{
    Encoder, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts,
    Registry, TextEncoder,
};

use crate::bpf::counters::KernelCounters;
use crate::enrich::record::Record;
use crate::model::backend::Backend;
use crate::model::classify::{verdict, Facts, Verdict};
use crate::model::{errno, fs_magic};

/// Metric name prefix.
pub const NAMESPACE: &str = "copytrace";

/// Errors from building the registry (only on programming mistakes).
#[derive(Debug, thiserror::Error)]
#[error("metrics registry")]
pub struct MetricsError(#[from] prometheus::Error);

/// The daemon's metrics.
pub struct Metrics {
    registry: Registry,
    process: Registry,
    calls: IntCounterVec,
    errors: IntCounterVec,
    bytes_requested: IntCounter,
    bytes_copied: IntCounter,
    duration: Histogram,
    events_lost: IntCounter,
    events_received: IntCounter,
    untracked: IntCounter,
    probes_attached: IntGaugeVec,
    /// Tail clients' dropped events (see sink::tail).
    pub tail_dropped: IntCounter,
    /// Connected tail clients.
    pub tail_clients: IntGauge,
    kernel: Option<Arc<KernelCounters>>,
    /// Kernel values already added to the counters, per key.
    seen: HashMap<CountKey, CountVal>,
    lost_seen: u64,
    untracked_seen: u64,
}

fn fs_label(present: bool, magic: u64) -> &'static str {
    if present {
        fs_magic::label(magic)
    } else {
        "none"
    }
}

impl Metrics {
    /// Declares every metric, with counters at 0 for all verdicts.
    pub fn new(kernel_release: &str) -> Result<Self, MetricsError> {
        let registry = Registry::new_custom(Some(NAMESPACE.into()), None)?;
        let calls = IntCounterVec::new(
            Opts::new(
                "calls_total",
                "copy_file_range calls by verdict and filesystems (exact, from kernel-side counts)",
            ),
            &["verdict", "fs_in", "fs_out"],
        )?;
        let errors = IntCounterVec::new(
            Opts::new("errors_total", "failed copy_file_range calls by errno"),
            &["errno"],
        )?;
        let bytes_requested = IntCounter::new(
            "bytes_requested_total",
            "bytes requested (saturates: cp-style calls ask for ~2^63 bytes)",
        )?;
        let bytes_copied = IntCounter::new("bytes_copied_total", "bytes copied")?;
        let duration = Histogram::with_opts(
            HistogramOpts::new(
                "call_duration_seconds",
                "copy_file_range call latency (from delivered events)",
            )
            .buckets(prometheus::exponential_buckets(1e-6, 4.0, 12)?),
        )?;
        let events_lost = IntCounter::new(
            "events_lost_total",
            "events the ring buffer had no room for (calls are still counted exactly)",
        )?;
        let events_received =
            IntCounter::new("events_received_total", "events read from the ring buffer")?;
        let untracked = IntCounter::new(
            "calls_untracked_total",
            "calls not tracked because a kernel-side map was full",
        )?;
        let probes_attached = IntGaugeVec::new(
            Opts::new("probes_attached", "1 for the probe back-end in use"),
            &["backend"],
        )?;
        let build_info = IntGaugeVec::new(
            Opts::new("build_info", "copytrace version and running kernel"),
            &["version", "kernel"],
        )?;
        let tail_dropped = IntCounter::new(
            "tail_dropped_total",
            "events not delivered to slow tail clients",
        )?;
        let tail_clients = IntGauge::new("tail_clients", "connected tail clients")?;
        for v in Verdict::ALL {
            calls.with_label_values(&[v.as_str(), "other", "other"]);
        }
        for b in Backend::ALL {
            probes_attached.with_label_values(&[b.as_str()]).set(0);
        }
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION"), kernel_release])
            .set(1);
        registry.register(Box::new(calls.clone()))?;
        registry.register(Box::new(errors.clone()))?;
        registry.register(Box::new(bytes_requested.clone()))?;
        registry.register(Box::new(bytes_copied.clone()))?;
        registry.register(Box::new(duration.clone()))?;
        registry.register(Box::new(events_lost.clone()))?;
        registry.register(Box::new(events_received.clone()))?;
        registry.register(Box::new(untracked.clone()))?;
        registry.register(Box::new(probes_attached.clone()))?;
        registry.register(Box::new(build_info))?;
        registry.register(Box::new(tail_dropped.clone()))?;
        registry.register(Box::new(tail_clients.clone()))?;
        // Process metrics (RSS, CPU, fds) keep their standard unprefixed names.
        let process = Registry::new();
        process.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))?;
        Ok(Self {
            registry,
            process,
            calls,
            errors,
            bytes_requested,
            bytes_copied,
            duration,
            events_lost,
            events_received,
            untracked,
            probes_attached,
            tail_dropped,
            tail_clients,
            kernel: None,
            seen: HashMap::new(),
            lost_seen: 0,
            untracked_seen: 0,
        })
    }

    /// Records which back-end is attached and where exact counts come from.
    pub fn attach(&mut self, backend: Backend, kernel: Arc<KernelCounters>) {
        self.probes_attached
            .with_label_values(&[backend.as_str()])
            .set(1);
        self.kernel = Some(kernel);
    }

    /// Notes probes detached (shutdown).
    pub fn detach(&mut self) {
        for b in Backend::ALL {
            self.probes_attached.with_label_values(&[b.as_str()]).set(0);
        }
    }

    /// Accounts one delivered event.
    pub fn observe(&self, r: &Record) {
        self.events_received.inc();
        self.duration.observe(r.latency_ns as f64 / 1e9);
    }

    /// Brings the counters up to the kernel-side counts.
    pub fn reconcile(&mut self) {
        let Some(kernel) = self.kernel.clone() else {
            return;
        };
        for (key, now) in kernel.counts() {
            let before = self.seen.insert(key, now).unwrap_or_default();
            let calls = now.calls.saturating_sub(before.calls);
            if calls == 0 {
                continue;
            }
            self.add(&key, calls, &before, &now);
        }
        let lost = kernel.lost_events();
        self.events_lost.inc_by(lost.saturating_sub(self.lost_seen));
        self.lost_seen = lost;
        let untracked =
            kernel.counter(counter::INFLIGHT_FULL) + kernel.counter(counter::COUNTS_FULL);
        self.untracked
            .inc_by(untracked.saturating_sub(self.untracked_seen));
        self.untracked_seen = untracked;
    }

    fn add(&self, key: &CountKey, calls: u64, before: &CountVal, now: &CountVal) {
        use copytrace_common::fact;
        let v = verdict(&Facts::of_count_key(key));
        let fs_in = fs_label(key.facts & fact::IN_PRESENT != 0, key.magic_in);
        let fs_out = fs_label(key.facts & fact::OUT_PRESENT != 0, key.magic_out);
        self.calls
            .with_label_values(&[v.as_str(), fs_in, fs_out])
            .inc_by(calls);
        if key.errno != 0 {
            self.errors
                .with_label_values(&[&errno::label(i64::from(key.errno))])
                .inc_by(calls);
        }
        let req = now.bytes_requested.saturating_sub(before.bytes_requested);
        let room = u64::MAX - self.bytes_requested.get();
        self.bytes_requested.inc_by(req.min(room));
        self.bytes_copied
            .inc_by(now.bytes_copied.saturating_sub(before.bytes_copied));
    }

    /// Reconciles, then renders the text exposition format.
    pub fn render(&mut self) -> String {
        self.reconcile();
        let mut buf = Vec::new();
        let mut families = self.registry.gather();
        families.extend(self.process.gather());
        if let Err(e) = TextEncoder::new().encode(&families, &mut buf) {
            log::error!("encoding metrics failed: {e}");
        }
        String::from_utf8(buf).unwrap_or_default()
    }

    /// Exact calls per verdict so far (for summaries and tests).
    pub fn calls_by_verdict(&mut self) -> HashMap<Verdict, u64> {
        self.reconcile();
        let mut out = HashMap::new();
        for (key, val) in &self.seen {
            *out.entry(verdict(&Facts::of_count_key(key))).or_default() += val.calls;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn declares_every_metric_with_prefix() {
        let mut m = Metrics::new("6.18.0").expect("registry");
        let text = m.render();
        for name in [
            "copytrace_calls_total{fs_in=\"other\",fs_out=\"other\",verdict=\"silent_zero_copy\"} 0",
            "copytrace_bytes_copied_total 0",
            "copytrace_events_lost_total 0",
            "copytrace_call_duration_seconds_bucket",
            "copytrace_probes_attached{backend=\"tracepoint\"} 0",
            "copytrace_build_info{kernel=\"6.18.0\",version=",
            "process_resident_memory_bytes",
        ] {
            assert!(text.contains(name), "{name} missing from:\n{text}");
        }
    }
}
