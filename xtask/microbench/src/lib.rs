//! Home of the criterion benchmarks (benches/pipeline.rs) of copytrace's
//! userspace hot path, kept out of the copytrace crate so that its tests
//! build without criterion's C dependencies (static guest builds).
