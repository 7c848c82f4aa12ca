//! The kernel-side counts: exact per-outcome call counts, call durations,
//! and loss counters.

use aya::maps::{MapData, PerCpuArray, PerCpuHashMap};
use copytrace_common::{counter, latency, CountKey, CountVal};

/// The kernel-side counts. Reading needs only `&self`, so one instance can
/// be shared (Arc) between the event loop and the metrics endpoint.
pub struct KernelCounters {
    pub(super) counts: PerCpuHashMap<MapData, CountKey, CountVal>,
    pub(super) counters: PerCpuArray<MapData, u64>,
    pub(super) latency: PerCpuArray<MapData, u64>,
}

/// Call durations summed over CPUs: calls per power-of-two bucket of ns,
/// and the sum of every duration.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Latencies {
    /// `buckets[i]`: calls that took [2^i, 2^(i+1)) ns (bucket 0 also holds 0 ns).
    pub buckets: Vec<u64>,
    /// Sum of every duration, in ns.
    pub sum_ns: u64,
}

impl KernelCounters {
    /// Sum over CPUs of a counter (see `copytrace_common::counter`).
    pub fn counter(&self, index: u32) -> u64 {
        self.counters
            .get(&index, 0)
            .map(|v| v.iter().sum())
            .unwrap_or_default()
    }

    /// Call durations, summed over CPUs.
    pub fn latencies(&self) -> Latencies {
        let slot = |i: u32| -> u64 {
            self.latency
                .get(&i, 0)
                .map(|v| v.iter().sum())
                .unwrap_or_default()
        };
        Latencies {
            buckets: (0..latency::BUCKETS).map(slot).collect(),
            sum_ns: slot(latency::SUM),
        }
    }

    /// Events the ring buffer had no room for.
    pub fn lost_events(&self) -> u64 {
        self.counter(counter::LOST)
    }

    /// Every count key with its values summed over CPUs.
    pub fn counts(&self) -> Vec<(CountKey, CountVal)> {
        self.counts
            .iter()
            .filter_map(Result::ok)
            .map(|(k, per_cpu)| {
                let v = per_cpu.iter().fold(CountVal::default(), |a, b| CountVal {
                    calls: a.calls + b.calls,
                    bytes_requested: a.bytes_requested.saturating_add(b.bytes_requested),
                    bytes_copied: a.bytes_copied + b.bytes_copied,
                });
                (k, v)
            })
            .collect()
    }
}
