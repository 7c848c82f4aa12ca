//! copytrace: watches every `copy_file_range(2)` call and explains the ones
//! that silently went wrong.
//!
//! Data flows one way, and the folders are its stages, lowest first; a
//! module only uses the ones above it in this list (`cargo xtask test`
//! checks it, xtask/src/layers.rs):
//! - [`model`]: pure types and rules: decoding a record into a [`model::event::CopyEvent`],
//!   classifying it into a verdict, the filesystem registry. No I/O.
//! - [`bpf`]: the kernel side: loading and attaching the probes with the
//!   running kernel's offsets, reading the event ring buffer and the exact
//!   kernel-side counts. The only module that talks to the kernel's BPF API.
//! - [`enrich`]: what the machine adds to an event: absolute paths from the
//!   mount table, wall-clock time, units, stacks and symbol names. Produces
//!   a [`enrich::record::Record`].
//! - [`sink`]: where records go: the console or the journal, Prometheus
//!   metrics, and the JSON lines every stream speaks ([`sink::wire`]).
//! - [`tail`]: the live tail, both ends: the daemon's socket server (a
//!   sink), its configuration, the filters and the `copytrace tail` client.
//! - [`pipeline`] wires the stages together for the commands;
//!   [`service`] is the daemon, [`cli`] turns flags into their options and
//!   [`commands`] holds `trace`, `doctor` and the generated assets.

pub mod bpf;
pub mod cli;
pub mod commands;
pub mod enrich;
pub mod model;
pub mod pipeline;
pub mod service;
pub mod sink;
pub mod tail;

/// What `copytrace --version` prints after the name: the version, the
/// commit built, the probe back-ends this binary carries and the eBPF
/// toolchain.
pub const VERSION: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("COPYTRACE_GIT_COMMIT"),
    "; back-ends: fentry, tracepoint; eBPF built with ",
    env!("COPYTRACE_BPF_TOOLCHAIN"),
    ")"
);

/// The running kernel's release (`uname -r`), or "unknown".
pub fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

/// An error and its sources on one line, `outer: inner: innermost`.
pub fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut s = err.to_string();
    let mut cur = err.source();
    while let Some(e) = cur {
        let msg = e.to_string();
        if !s.contains(&msg) {
            s.push_str(": ");
            s.push_str(&msg);
        }
        cur = e.source();
    }
    s
}

#[cfg(test)]
mod version_tests {
    use super::VERSION;
    use copytrace_common::Backend;

    /// The version string is written by hand; this keeps it honest when a
    /// back-end is added.
    #[test]
    fn version_names_every_backend() {
        let listed = VERSION
            .split("back-ends: ")
            .nth(1)
            .and_then(|rest| rest.split(';').next())
            .unwrap_or_default();
        let names: Vec<&str> = listed.split(", ").collect();
        for backend in Backend::ALL {
            assert!(
                names.contains(&backend.as_str()),
                "{VERSION} lacks {}",
                backend.as_str()
            );
        }
        assert_eq!(names.len(), Backend::ALL.len(), "{VERSION}");
    }
}
