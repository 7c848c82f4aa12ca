//! Where classified records go: the console ([`console`], formatted by
//! [`render`]), Prometheus ([`metrics`], served by [`metrics_http`]) and tail
//! clients (`crate::tail::server`). Each sink only receives records; what flows back
//! is only what a sink wants ([`Demand`]), so the kernel side and the
//! pipeline do no work nobody asked for.

pub mod accept;
pub mod console;
pub mod journal;
pub mod metrics;
pub mod metrics_http;
pub mod metrics_slots;
pub mod rate_limit;
pub mod render;
pub mod summary;
pub mod wire;

pub use crate::bpf::ringbuf::Demand;
use crate::enrich::record::Record;

/// Where records go. `batch_end` lets buffered sinks flush once per batch
/// rather than once per record.
pub trait RecordSink {
    /// Which calls this sink needs, right now.
    fn demand(&self) -> Demand;
    /// One classified call.
    fn record(&mut self, record: &Record);
    /// The current batch is complete.
    fn batch_end(&mut self) {}
}
