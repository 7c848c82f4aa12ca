//! The names of the metrics copytrace exports, as scrapers see them: the
//! daemon declares its metrics under these names and everything that reads
//! them (doctor, the benchmarks, the systemd guest's checks) uses them, so
//! a name is spelled once. Labels and help texts stay with the declarations.

/// Prefix of every name below.
pub const NAMESPACE: &str = "copytrace";

/// Counter: copy_file_range calls by verdict and filesystems (and unit).
pub const CALLS_TOTAL: &str = "copytrace_calls_total";
/// Counter: failed calls by errno.
pub const ERRORS_TOTAL: &str = "copytrace_errors_total";
/// Gauge: 1 for the probe back-end in use, by back-end.
pub const PROBES_ATTACHED: &str = "copytrace_probes_attached";
/// Gauge: 1, labelled with copytrace's version and the running kernel.
pub const BUILD_INFO: &str = "copytrace_build_info";
/// Gauge: connected tail clients.
pub const TAIL_CLIENTS: &str = "copytrace_tail_clients";
/// Gauge: records held until the symbolizer names a stack.
pub const RECORDS_HELD: &str = "copytrace_records_held";
/// Counter: bytes requested.
pub const BYTES_REQUESTED_TOTAL: &str = "copytrace_bytes_requested_total";
/// Counter: bytes copied.
pub const BYTES_COPIED_TOTAL: &str = "copytrace_bytes_copied_total";
/// Counter: reported calls the ring buffer had no room for.
pub const EVENTS_LOST_TOTAL: &str = "copytrace_events_lost_total";
/// Counter: reported calls read from the ring buffer.
pub const EVENTS_RECEIVED_TOTAL: &str = "copytrace_events_received_total";
/// Counter: ring buffer records that did not decode.
pub const EVENTS_UNDECODABLE_TOTAL: &str = "copytrace_events_undecodable_total";
/// Counter: reported calls whose description hit a failed kernel read.
pub const READ_FAULTS_TOTAL: &str = "copytrace_read_faults_total";
/// Counter: calls not tracked (a kernel-side map was full, or a nested call too deep).
pub const CALLS_UNTRACKED_TOTAL: &str = "copytrace_calls_untracked_total";
/// Counter: events not delivered to slow tail clients.
pub const TAIL_DROPPED_TOTAL: &str = "copytrace_tail_dropped_total";
/// Counter: journal entries held back by the rate limit or a busy journald.
pub const JOURNAL_HELD_BACK_TOTAL: &str = "copytrace_journal_held_back_total";
/// Counter: stacks the symbolizer named.
pub const STACKS_NAMED_TOTAL: &str = "copytrace_stacks_named_total";
/// Counter: stacks left unnamed (symbolizer late, dead or busy).
pub const STACKS_UNAVAILABLE_TOTAL: &str = "copytrace_stacks_unavailable_total";
/// Counter: times the symbolizer process was started.
pub const SYMBOLIZER_STARTS_TOTAL: &str = "copytrace_symbolizer_starts_total";
/// Histogram: call durations, from the kernel's power-of-two buckets.
pub const CALL_DURATION_SECONDS: &str = "copytrace_call_duration_seconds";

/// Every name above but the namespace.
pub const ALL: [&str; 19] = [
    CALLS_TOTAL,
    ERRORS_TOTAL,
    PROBES_ATTACHED,
    BUILD_INFO,
    TAIL_CLIENTS,
    RECORDS_HELD,
    BYTES_REQUESTED_TOTAL,
    BYTES_COPIED_TOTAL,
    EVENTS_LOST_TOTAL,
    EVENTS_RECEIVED_TOTAL,
    EVENTS_UNDECODABLE_TOTAL,
    READ_FAULTS_TOTAL,
    CALLS_UNTRACKED_TOTAL,
    TAIL_DROPPED_TOTAL,
    JOURNAL_HELD_BACK_TOTAL,
    STACKS_NAMED_TOTAL,
    STACKS_UNAVAILABLE_TOTAL,
    SYMBOLIZER_STARTS_TOTAL,
    CALL_DURATION_SECONDS,
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_distinct_and_prefixed() {
        for (i, n) in ALL.iter().enumerate() {
            let rest = n
                .strip_prefix(NAMESPACE)
                .and_then(|r| r.strip_prefix('_'))
                .unwrap_or_else(|| panic!("{n} lacks the {NAMESPACE}_ prefix"));
            assert!(
                rest.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
                "{n}"
            );
            assert!(!ALL[..i].contains(n), "{n} twice");
        }
    }
}
