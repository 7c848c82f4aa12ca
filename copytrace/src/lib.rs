//! copytrace: watches every `copy_file_range(2)` call and explains the ones
//! that silently went wrong.
//!
//! Data flows one way: [`bpf`] attaches the kernel programs, [`ringbuf_reader`]
//! reads raw records, [`decode`] types them, [`classify`] gives the verdict
//! (wrapped with paths and time in [`record`]), and the commands fan records
//! out to their sinks ([`sink`]: console, metrics, tail).

pub mod bpf;
pub mod btf;
pub mod classify;
pub mod cli;
pub mod commands;
pub mod config;
pub mod daemon;
pub mod decode;
pub mod doctor;
pub mod errno;
pub mod filter;
pub mod fs_magic;
pub mod kallsyms;
pub mod metrics_server;
pub mod mounts;
pub mod notify;
pub mod offsets;
pub mod privileges;
pub mod record;
pub mod render;
pub mod ringbuf_reader;
pub mod sink;
pub mod summary;
pub mod tail_client;
pub mod tail_protocol;
pub mod tracefs;
pub mod watch;

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
