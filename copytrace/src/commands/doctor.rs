//! `copytrace doctor`: checks every precondition for real and says, per line,
//! what is missing and what to do about it.

use std::fmt::Write as _;

use crate::bpf::btf::{Btf, VMLINUX_BTF};
use crate::bpf::{self, offsets, tracefs, LoadError, LoadOptions};
use crate::model::backend::{Backend, ProbeChoice};

/// Outcome of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Fine.
    Ok,
    /// Absent or failing; copytrace may still work without it.
    Missing,
    /// For information.
    Info,
}

impl Status {
    fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Missing => "missing",
            Status::Info => "info",
        }
    }
}

/// One line of the report.
#[derive(Debug, Clone)]
pub struct Check {
    pub status: Status,
    pub what: String,
}

fn check(status: Status, what: impl Into<String>) -> Check {
    Check {
        status,
        what: what.into(),
    }
}

/// Runs every check; also returns the back-end copytrace would use, if any.
pub fn checks() -> (Vec<Check>, Option<Backend>) {
    let mut out = Vec::new();
    out.push(check(
        Status::Info,
        format!("kernel {}", crate::kernel_release()),
    ));
    out.push(check(
        Status::Info,
        format!(
            "copytrace {} (eBPF built with {})",
            env!("CARGO_PKG_VERSION"),
            env!("COPYTRACE_BPF_TOOLCHAIN")
        ),
    ));

    // SAFETY: geteuid cannot fail.
    let euid = unsafe { libc::geteuid() };
    if bpf::privileges::can_trace() {
        out.push(check(
            Status::Ok,
            format!("privileges: euid {euid}, CAP_BPF/CAP_PERFMON or CAP_SYS_ADMIN"),
        ));
    } else {
        out.push(check(
            Status::Missing,
            format!(
                "privileges: euid {euid} lacks CAP_BPF+CAP_PERFMON: run as root (sudo copytrace …)"
            ),
        ));
    }

    let btf = match Btf::from_sys_fs() {
        Ok(b) => {
            out.push(check(Status::Ok, format!("BTF at {VMLINUX_BTF}")));
            Some(b)
        }
        Err(e) => {
            out.push(check(
                Status::Missing,
                format!(
                    "BTF: {}: use a kernel built with CONFIG_DEBUG_INFO_BTF=y",
                    crate::error_chain(&e)
                ),
            ));
            None
        }
    };
    if let Some(btf) = &btf {
        match offsets::from_btf(btf) {
            Ok(_) => out.push(check(Status::Ok, "kernel struct offsets resolved from BTF")),
            Err(e) => out.push(check(
                Status::Missing,
                format!("kernel struct offsets: {e}: this kernel's layout is not supported"),
            )),
        }
        for f in [bpf::VFS_FUNCTION, bpf::SYSCALL_WRAPPER] {
            let st = if btf.has_function(f) {
                Status::Ok
            } else {
                Status::Missing
            };
            out.push(check(st, format!("fentry target {f} in BTF")));
        }
    }

    match tracefs::find_mount() {
        Some(d) => out.push(check(
            Status::Ok,
            format!("tracefs mounted at {}", d.display()),
        )),
        None => out.push(check(
            Status::Missing,
            format!(
                "tracefs not mounted: copytrace mounts it at {} itself (needs root)",
                tracefs::DEFAULT_MOUNT
            ),
        )),
    }

    let mut usable = None;
    for backend in Backend::ALL {
        let name = backend.as_str();
        match bpf::load(LoadOptions {
            probe: ProbeChoice::Only(backend),
            follow_tgid: 0,
        }) {
            Ok(p) => {
                let partial = (p.backend() == Backend::Fentry)
                    .then(|| p.fallback_reason().map(str::to_string))
                    .flatten();
                let note = partial
                    .as_deref()
                    .map(|n| format!(" ({n})"))
                    .unwrap_or_default();
                out.push(check(
                    Status::Ok,
                    format!("{name} back-end loads and attaches{note}"),
                ));
                if usable.is_none() {
                    usable = Some((p.backend(), partial.is_some()));
                }
            }
            Err(LoadError::FentryRefused(e)) => out.push(check(
                Status::Missing,
                format!("fentry back-end refused: {}", crate::error_chain(&*e)),
            )),
            Err(e) => out.push(check(
                Status::Missing,
                format!("{name} back-end: {}", crate::error_chain(&e)),
            )),
        }
    }
    match usable {
        Some((Backend::Fentry, true)) => out.push(check(
            Status::Info,
            "copytrace will use fentry/fexit on vfs_copy_file_range (sees in-kernel callers) with syscall tracepoints for the syscall side: unrelated syscalls take the tracing slow path while attached",
        )),
        Some((Backend::Fentry, false)) => out.push(check(
            Status::Info,
            "copytrace will use fentry/fexit: no cost to unrelated syscalls; sees in-kernel callers (nfsd, overlayfs)",
        )),
        Some((Backend::Tracepoint, _)) => out.push(check(
            Status::Info,
            "copytrace will use syscall tracepoints: every syscall of every task takes the tracing slow path while attached (tens of ns each, see docs/benchmarks.md); in-kernel callers are not seen",
        )),
        None => out.push(check(Status::Missing, "no probe back-end can attach: copytrace cannot run here")),
    }
    (out, usable.map(|(a, _)| a))
}

/// Formats the report as aligned lines.
pub fn report(checks: &[Check]) -> String {
    let mut s = String::new();
    for c in checks {
        let _ = writeln!(s, "{:<8}{}", c.status.as_str(), c.what);
    }
    s
}
