//! Prometheus metrics. Every metric copytrace exports is declared here.
//!
//! Call counts, errno counts, byte totals and call durations come from the
//! kernel-side maps, read at scrape time: they stay exact whatever is
//! reported or dropped. The pipeline's own counters (events read) are read
//! the same way. Label values come from closed sets: verdict names, the
//! filesystem registry ("other" beyond it), errno names.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use copytrace_common::metric_names as name;
use copytrace_common::{counter, fact, CountKey, CountVal, Origin};
use prometheus::proto::{Bucket, Histogram, Metric, MetricFamily, MetricType};
use prometheus::{
    Encoder, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

use crate::bpf::counters::KernelCounters;
use crate::bpf::ringbuf::ReadCounters;
use crate::enrich::cgroups::CgroupNames;
use crate::enrich::symbolizer::client::SymbolizerCounters;
use crate::model::backend::Backend;
use crate::model::classify::{verdict, Facts, Verdict};
use crate::model::{errno, fs_magic};

/// Metric name prefix (every name is in `copytrace_common::metric_names`).
pub const NAMESPACE: &str = name::NAMESPACE;

/// Durations exported as histogram buckets: 2^10 ns (about 1 µs) to 2^34 ns
/// (about 17 s), each a power of two, then +Inf.
const DURATION_BUCKETS: std::ops::RangeInclusive<u32> = 10..=34;

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
    events_lost: IntCounter,
    events_received: IntCounter,
    events_undecodable: IntCounter,
    read_faults: IntCounter,
    untracked: IntCounter,
    stacks_named: IntCounter,
    stacks_unavailable: IntCounter,
    symbolizer_starts: IntCounter,
    records_held: IntGauge,
    probes_attached: IntGaugeVec,
    /// Tail clients' dropped events (see tail::server).
    pub tail_dropped: IntCounter,
    /// Connected tail clients.
    pub tail_clients: IntGauge,
    /// Journal entries held back (see sink::rate_limit).
    pub journal_held_back: IntCounter,
    kernel: Option<Arc<KernelCounters>>,
    pipeline: Option<Arc<ReadCounters>>,
    symbolizer: Option<Arc<SymbolizerCounters>>,
    /// Kernel values already added to the counters, per key.
    seen: HashMap<CountKey, CountVal>,
    /// Pulled counters: their source's value already added.
    pulled: HashMap<&'static str, u64>,
    /// The `unit` label, when counts are kept per cgroup.
    units: Option<UnitLabels>,
}

/// Label value for units beyond the ones that get their own.
const OTHER_UNIT: &str = "other";

/// Gives the busiest units a `unit` label value of their own, at most
/// `top` of them, kept once given (a counter's series must not move); every
/// other call is counted under `other`.
struct UnitLabels {
    top: usize,
    names: CgroupNames,
    by_cgroup: HashMap<u64, String>,
    own: std::collections::BTreeSet<String>,
}

impl UnitLabels {
    fn new(top: usize) -> Self {
        UnitLabels {
            top,
            names: CgroupNames::load(),
            by_cgroup: HashMap::new(),
            own: Default::default(),
        }
    }

    /// Assigns labels to cgroups not seen before, busiest first.
    fn assign(&mut self, counts: &[(CountKey, CountVal)]) {
        let mut calls: HashMap<u64, u64> = HashMap::new();
        for (k, v) in counts {
            if !self.by_cgroup.contains_key(&k.cgroup_id) {
                *calls.entry(k.cgroup_id).or_default() += v.calls;
            }
        }
        let mut new: Vec<(u64, u64)> = calls.into_iter().collect();
        new.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        for (id, _) in new {
            let unit = self
                .names
                .service(id, 0)
                .unit
                .map(|u| u.human())
                .unwrap_or_else(|| OTHER_UNIT.into());
            let label = if self.own.contains(&unit) {
                unit
            } else if unit != OTHER_UNIT && self.own.len() < self.top {
                self.own.insert(unit.clone());
                unit
            } else {
                OTHER_UNIT.into()
            };
            self.by_cgroup.insert(id, label);
        }
    }

    fn label(&self, cgroup_id: u64) -> &str {
        self.by_cgroup
            .get(&cgroup_id)
            .map_or(OTHER_UNIT, String::as_str)
    }
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
    /// `unit_top`: label call counts with the caller's unit, giving at most
    /// this many units a value of their own.
    pub fn new(kernel_release: &str, unit_top: Option<usize>) -> Result<Self, MetricsError> {
        let registry = Registry::new();
        let counter = |name: &str, help: &str| -> Result<IntCounter, MetricsError> {
            let c = IntCounter::new(name, help)?;
            registry.register(Box::new(c.clone()))?;
            Ok(c)
        };
        let labels: &[&str] = if unit_top.is_some() {
            &["verdict", "fs_in", "fs_out", "origin", "unit"]
        } else {
            &["verdict", "fs_in", "fs_out", "origin"]
        };
        let calls = IntCounterVec::new(
            Opts::new(
                name::CALLS_TOTAL,
                "copy_file_range calls by verdict, filesystems and origin (a process's syscall, or the kernel's own call); exact, from kernel-side counts",
            ),
            labels,
        )?;
        let errors = IntCounterVec::new(
            Opts::new(name::ERRORS_TOTAL, "failed copy_file_range calls by errno"),
            &["errno"],
        )?;
        let probes_attached = IntGaugeVec::new(
            Opts::new(name::PROBES_ATTACHED, "1 for the probe back-end in use"),
            &["backend"],
        )?;
        let build_info = IntGaugeVec::new(
            Opts::new(name::BUILD_INFO, "copytrace version and running kernel"),
            &["version", "kernel"],
        )?;
        for v in Verdict::ALL {
            for o in Origin::ALL {
                if unit_top.is_some() {
                    calls.with_label_values(&[
                        v.as_str(),
                        "other",
                        "other",
                        o.as_str(),
                        OTHER_UNIT,
                    ]);
                } else {
                    calls.with_label_values(&[v.as_str(), "other", "other", o.as_str()]);
                }
            }
        }
        for b in Backend::ALL {
            probes_attached.with_label_values(&[b.as_str()]).set(0);
        }
        build_info
            .with_label_values(&[env!("CARGO_PKG_VERSION"), kernel_release])
            .set(1);
        registry.register(Box::new(calls.clone()))?;
        registry.register(Box::new(errors.clone()))?;
        registry.register(Box::new(probes_attached.clone()))?;
        registry.register(Box::new(build_info))?;
        let tail_clients = IntGauge::new(name::TAIL_CLIENTS, "connected tail clients")?;
        let records_held = IntGauge::new(
            name::RECORDS_HELD,
            "records held, in call order, until the symbolizer names a suspicious call's stack",
        )?;
        registry.register(Box::new(records_held.clone()))?;
        registry.register(Box::new(tail_clients.clone()))?;
        // Process metrics (RSS, CPU, fds) keep their standard unprefixed names.
        let process = Registry::new();
        process.register(Box::new(
            prometheus::process_collector::ProcessCollector::for_self(),
        ))?;
        Ok(Self {
            bytes_requested: counter(
                name::BYTES_REQUESTED_TOTAL,
                "bytes requested (saturates: cp-style calls ask for ~2^63 bytes)",
            )?,
            bytes_copied: counter(name::BYTES_COPIED_TOTAL, "bytes copied")?,
            events_lost: counter(
                name::EVENTS_LOST_TOTAL,
                "reported calls the ring buffer had no room for (calls are still counted exactly)",
            )?,
            events_received: counter(
                name::EVENTS_RECEIVED_TOTAL,
                "reported calls read from the ring buffer",
            )?,
            events_undecodable: counter(
                name::EVENTS_UNDECODABLE_TOTAL,
                "ring buffer records that did not decode (eBPF object and daemon disagree)",
            )?,
            read_faults: counter(
                name::READ_FAULTS_TOTAL,
                "reported calls whose description hit a failed kernel read (some fields missing)",
            )?,
            untracked: counter(
                name::CALLS_UNTRACKED_TOTAL,
                "calls not tracked: a kernel-side map was full, or a filesystem's nested call went deeper than one level",
            )?,
            tail_dropped: counter(
                name::TAIL_DROPPED_TOTAL,
                "events not delivered to slow tail clients",
            )?,
            journal_held_back: counter(
                name::JOURNAL_HELD_BACK_TOTAL,
                "journal entries of suspicious calls held back by the per-user rate limit or a busy journald",
            )?,
            stacks_named: counter(
                name::STACKS_NAMED_TOTAL,
                "stacks of suspicious calls the symbolizer process named",
            )?,
            stacks_unavailable: counter(
                name::STACKS_UNAVAILABLE_TOTAL,
                "stacks left unnamed because the symbolizer was late, died or was busy",
            )?,
            symbolizer_starts: counter(
                name::SYMBOLIZER_STARTS_TOTAL,
                "times the symbolizer process was started (again after it was late or died)",
            )?,
            registry,
            process,
            calls,
            errors,
            probes_attached,
            tail_clients,
            records_held,
            kernel: None,
            pipeline: None,
            symbolizer: None,
            seen: HashMap::new(),
            pulled: HashMap::new(),
            units: unit_top.map(UnitLabels::new),
        })
    }

    /// Records which back-end is attached and where exact counts come from.
    pub fn attach(
        &mut self,
        backend: Backend,
        kernel: Arc<KernelCounters>,
        pipeline: Arc<ReadCounters>,
    ) {
        self.probes_attached
            .with_label_values(&[backend.as_str()])
            .set(1);
        self.kernel = Some(kernel);
        self.pipeline = Some(pipeline);
    }

    /// Where the symbolizer's counts come from.
    pub fn attach_symbolizer(&mut self, symbolizer: Arc<SymbolizerCounters>) {
        self.symbolizer = Some(symbolizer);
    }

    /// Notes probes detached (shutdown).
    pub fn detach(&mut self) {
        for b in Backend::ALL {
            self.probes_attached.with_label_values(&[b.as_str()]).set(0);
        }
    }

    /// Adds to `c` what its source gained since the last pull.
    fn pull(pulled: &mut HashMap<&'static str, u64>, name: &'static str, c: &IntCounter, now: u64) {
        let before = pulled.insert(name, now).unwrap_or(0);
        c.inc_by(now.saturating_sub(before));
    }

    /// Brings the counters up to the kernel-side and pipeline counts.
    pub fn reconcile(&mut self) {
        if let Some(kernel) = self.kernel.clone() {
            let counts = kernel.counts();
            if let Some(u) = &mut self.units {
                u.assign(&counts);
            }
            for (key, now) in counts {
                let before = self.seen.insert(key, now).unwrap_or_default();
                let calls = now.calls.saturating_sub(before.calls);
                if calls == 0 {
                    continue;
                }
                self.add(&key, calls, &before, &now);
            }
            let p = &mut self.pulled;
            Self::pull(p, "lost", &self.events_lost, kernel.lost_events());
            Self::pull(
                p,
                "faults",
                &self.read_faults,
                kernel.counter(counter::READ_FAULTS),
            );
            let untracked = kernel.counter(counter::INFLIGHT_FULL)
                + kernel.counter(counter::COUNTS_FULL)
                + kernel.counter(counter::NESTED_UNTRACKED);
            Self::pull(p, "untracked", &self.untracked, untracked);
        }
        if let Some(sc) = self.symbolizer.clone() {
            let p = &mut self.pulled;
            let load = |c: &std::sync::atomic::AtomicU64| c.load(Ordering::Relaxed);
            Self::pull(p, "stacks_named", &self.stacks_named, load(&sc.named));
            Self::pull(
                p,
                "stacks_unavailable",
                &self.stacks_unavailable,
                load(&sc.unavailable),
            );
            Self::pull(
                p,
                "symbolizer_starts",
                &self.symbolizer_starts,
                load(&sc.starts),
            );
            self.records_held
                .set(i64::try_from(load(&sc.held)).unwrap_or(i64::MAX));
        }
        if let Some(pc) = self.pipeline.clone() {
            let p = &mut self.pulled;
            Self::pull(
                p,
                "received",
                &self.events_received,
                pc.received.load(Ordering::Relaxed),
            );
            Self::pull(
                p,
                "undecodable",
                &self.events_undecodable,
                pc.undecodable.load(Ordering::Relaxed),
            );
        }
    }

    fn add(&self, key: &CountKey, calls: u64, before: &CountVal, now: &CountVal) {
        let v = verdict(&Facts::of_count_key(key));
        let fs_in = fs_label(key.facts & fact::IN_PRESENT != 0, key.magic_in);
        let fs_out = fs_label(key.facts & fact::OUT_PRESENT != 0, key.magic_out);
        // The kernel writes only the two codes; anything else is counted, as a syscall.
        let origin = Origin::from_raw(key.origin)
            .unwrap_or(Origin::Syscall)
            .as_str();
        match &self.units {
            Some(u) => self
                .calls
                .with_label_values(&[v.as_str(), fs_in, fs_out, origin, u.label(key.cgroup_id)])
                .inc_by(calls),
            None => self
                .calls
                .with_label_values(&[v.as_str(), fs_in, fs_out, origin])
                .inc_by(calls),
        }
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

    /// The call-duration histogram, from the kernel's power-of-two buckets.
    fn durations(&self) -> MetricFamily {
        let lat = self
            .kernel
            .as_ref()
            .map(|k| k.latencies())
            .unwrap_or_default();
        let mut cumulative = 0u64;
        let mut buckets = Vec::new();
        for (i, n) in lat.buckets.iter().enumerate() {
            cumulative += n;
            if DURATION_BUCKETS.contains(&(i as u32)) {
                let mut b = Bucket::default();
                b.set_upper_bound((1u64 << i) as f64 / 1e9);
                b.set_cumulative_count(cumulative);
                buckets.push(b);
            }
        }
        let mut h = Histogram::default();
        h.set_sample_count(cumulative);
        h.set_sample_sum(lat.sum_ns as f64 / 1e9);
        h.set_bucket(buckets);
        let mut m = Metric::default();
        m.set_histogram(h);
        let mut f = MetricFamily::default();
        f.set_name(name::CALL_DURATION_SECONDS.into());
        f.set_help(
            "copy_file_range call durations (every call, from kernel-side power-of-two buckets)"
                .into(),
        );
        f.set_field_type(MetricType::HISTOGRAM);
        f.set_metric(vec![m]);
        f
    }

    /// Reconciles, then renders the text exposition format.
    pub fn render(&mut self) -> String {
        self.reconcile();
        let mut buf = Vec::new();
        let mut families = self.registry.gather();
        families.push(self.durations());
        families.sort_by(|a, b| a.name().cmp(b.name()));
        families.extend(self.process.gather());
        if let Err(e) = TextEncoder::new().encode(&families, &mut buf) {
            log::error!("encoding metrics failed: {e}");
        }
        String::from_utf8(buf).unwrap_or_default()
    }

    /// Reported calls the ring buffer had no room for, so far.
    pub fn lost(&self) -> u64 {
        self.kernel.as_ref().map_or(0, |k| k.lost_events())
    }

    /// Exact calls per verdict so far (for status lines and tests).
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
mod tests;
