//! Where classified records go: the console ([`console`], formatted by
//! [`render`]), Prometheus ([`metrics`], served by [`metrics_http`]) and tail
//! clients ([`tail_hub`]). Each sink only receives records; none talks back upstream.

pub mod console;
pub mod metrics;
pub mod metrics_http;
pub mod render;
pub mod summary;
pub mod tail_hub;

use crate::enrich::record::Record;

/// Where records go. `batch_end` lets buffered sinks flush once per batch
/// rather than once per record.
pub trait RecordSink {
    /// One classified call.
    fn record(&mut self, record: &Record);
    /// The current batch is complete.
    fn batch_end(&mut self) {}
}
