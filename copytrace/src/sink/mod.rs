//! Where classified records go: the console, Prometheus metrics, and (later)
//! tail clients. Each sink only receives records; none talks back upstream.

pub mod console;
pub mod metrics;
pub mod tail;
