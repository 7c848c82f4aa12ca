//! `copytrace doctor`: checks every precondition for real and says, per line,
//! what is missing and what to do about it. `--json` gives the same report
//! for scripts: its type is shared ([`copytrace_common::doctor`]), and
//! `cargo xtask` and the test guests read which back-ends attach from it.

pub use copytrace_common::doctor::{BackendCheck, Check, Report, Status};
use copytrace_common::metric_names;

use crate::bpf::btf::{Btf, VMLINUX_BTF};
use crate::bpf::{self, offsets, tracefs, LoadError};
use crate::model::backend::{Backend, ProbeChoice};

fn check(status: Status, what: impl Into<String>) -> Check {
    Check {
        status,
        what: what.into(),
    }
}

/// Runs every check.
pub fn checks() -> Report {
    let kernel = crate::kernel_release();
    let mut out = vec![
        check(Status::Info, format!("kernel {kernel}")),
        check(
            Status::Info,
            format!(
                "copytrace {} (eBPF built with {})",
                env!("CARGO_PKG_VERSION"),
                env!("COPYTRACE_BPF_TOOLCHAIN")
            ),
        ),
    ];

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

    match Btf::from_sys_fs() {
        Ok(btf) => {
            out.push(check(Status::Ok, format!("BTF at {VMLINUX_BTF}")));
            match offsets::from_btf(&btf) {
                Ok(_) => out.push(check(Status::Ok, "kernel struct offsets resolved from BTF")),
                Err(e) => out.push(check(
                    Status::Missing,
                    format!("kernel struct offsets: {e}: this kernel's layout is not supported"),
                )),
            }
            let wrapper = bpf::syscall_wrapper();
            for f in std::iter::once(bpf::VFS_FUNCTION).chain(wrapper) {
                let st = if btf.has_function(f) {
                    Status::Ok
                } else {
                    Status::Missing
                };
                out.push(check(st, format!("fentry target {f} in BTF")));
            }
            if wrapper.is_none() {
                out.push(check(
                    Status::Missing,
                    format!(
                        "copytrace does not know the syscall wrapper of {}: the fentry back-end's syscall side uses tracepoints",
                        std::env::consts::ARCH
                    ),
                ));
            }
        }
        Err(e) => out.push(check(
            Status::Missing,
            format!(
                "BTF: {}: use a kernel built with CONFIG_DEBUG_INFO_BTF=y",
                crate::error_chain(&e)
            ),
        )),
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

    let mut backends = std::collections::BTreeMap::new();
    let mut usable = None;
    for backend in Backend::ALL {
        let name = backend.as_str();
        let result = bpf::load(crate::pipeline::load_options(ProbeChoice::Only(backend), 0));
        let b = match result {
            Ok(p) => {
                let note = p.fallback_reason().map(str::to_string);
                let shown = note
                    .as_deref()
                    .map(|n| format!(" ({n})"))
                    .unwrap_or_default();
                let why_not = p.stack_mappings().why_not().map(str::to_string);
                let mappings = match &why_not {
                    None => ", stack mappings recorded in the kernel".to_string(),
                    Some(why) => format!(", stack mappings not recorded in the kernel ({why})"),
                };
                out.push(check(
                    Status::Ok,
                    format!(
                        "{name} back-end loads and attaches, {}{mappings}{shown}",
                        p.kernel_reads().as_str()
                    ),
                ));
                usable.get_or_insert(backend);
                BackendCheck {
                    attaches: true,
                    why: None,
                    note,
                    reads: Some(p.kernel_reads().as_str().into()),
                    stack_mappings: why_not.is_none(),
                    stack_mappings_why_not: why_not,
                }
            }
            Err(e) => {
                let why = match &e {
                    LoadError::FentryRefused(inner) => crate::error_chain(&**inner),
                    other => crate::error_chain(other),
                };
                out.push(check(Status::Missing, format!("{name} back-end: {why}")));
                BackendCheck {
                    attaches: false,
                    why: Some(why),
                    note: None,
                    reads: None,
                    stack_mappings: false,
                    stack_mappings_why_not: None,
                }
            }
        };
        backends.insert(backend, b);
    }
    let partial = backends
        .get(&Backend::Fentry)
        .is_some_and(|b| b.note.is_some());
    out.push(match usable {
        Some(Backend::Fentry) if partial => check(
            Status::Info,
            "copytrace will use fentry/fexit on vfs_copy_file_range (sees in-kernel callers) with syscall tracepoints for the syscall side: unrelated syscalls take the tracing slow path while attached; calls a seccomp filter refuses are seen at exit only, as errors without files",
        ),
        Some(Backend::Fentry) => check(
            Status::Info,
            "copytrace will use fentry/fexit: no cost to unrelated syscalls; sees in-kernel callers (nfsd's server-side copies, overlayfs's calls on its real files); calls a seccomp filter refuses never reach the traced functions and are not seen",
        ),
        Some(Backend::Tracepoint) => check(
            Status::Info,
            "copytrace will use syscall tracepoints: every syscall of every task takes the tracing slow path while attached (tens of ns each, see docs/benchmarks.md); in-kernel callers are not seen; calls a seccomp filter refuses are seen at exit only, as errors without files",
        ),
        None => check(
            Status::Missing,
            "no probe back-end can attach: copytrace cannot run here",
        ),
    });
    out.push(running_daemon());
    Report {
        kernel,
        checks: out,
        backends,
        usable,
    }
}

/// What a daemon on this machine has lost, from its own metrics (the
/// address in the default configuration file).
fn running_daemon() -> Check {
    let path = std::path::Path::new(crate::service::config::DEFAULT_PATH);
    let listen = match crate::service::config::Config::load(path, false) {
        Ok(cfg) if cfg.metrics.enabled => cfg.metrics.listen,
        Ok(_) => {
            return check(
                Status::Info,
                "running daemon: its metrics are off, so its losses cannot be read",
            )
        }
        Err(e) => {
            return check(
                Status::Missing,
                format!("running daemon: {}", crate::error_chain(&e)),
            )
        }
    };
    let body = match scrape(listen) {
        Ok(b) => b,
        Err(e) => {
            return check(
                Status::Info,
                format!("running daemon: none answering at {listen} ({e})"),
            )
        }
    };
    let value = |name: &str| -> u64 {
        body.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .map_or(0, |v| v as u64)
    };
    let received = value(metric_names::EVENTS_RECEIVED_TOTAL);
    let lost = value(metric_names::EVENTS_LOST_TOTAL);
    let untracked = value(metric_names::CALLS_UNTRACKED_TOTAL);
    let what = format!(
        "running daemon at {listen}: {received} reported calls read, {lost} lost (ring buffer full), {untracked} untracked (kernel map full)"
    );
    if lost + untracked == 0 {
        check(Status::Ok, what)
    } else {
        check(
            Status::Missing,
            what + ": calls are still counted exactly where tracked; lost reports are missing from tail and logs (print fewer calls, or see docs/benchmarks.md)",
        )
    }
}

/// GET /metrics with short timeouts (a stuck daemon must not hang doctor).
fn scrape(addr: std::net::SocketAddr) -> std::io::Result<String> {
    use std::io::{Read, Write};
    let timeout = std::time::Duration::from_secs(2);
    let mut s = std::net::TcpStream::connect_timeout(&addr, timeout)?;
    s.set_read_timeout(Some(timeout))?;
    s.set_write_timeout(Some(timeout))?;
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")?;
    let mut body = Vec::new();
    s.take(4 << 20).read_to_end(&mut body)?;
    let text = String::from_utf8_lossy(&body).into_owned();
    if !text.starts_with("HTTP/1.") || !text.contains(" 200 ") {
        return Err(std::io::Error::other("not copytrace's metrics"));
    }
    Ok(text)
}
