//! The kernel side: loading the eBPF object with the running kernel's
//! offsets, choosing and attaching a probe back-end, and handing out the ring
//! buffer ([`ringbuf`]) and the exact counts ([`counters`]). This folder is
//! the only place that uses aya.

pub mod arch;
pub mod btf;
pub mod counters;
pub mod kfunc;
mod load;
pub mod offsets;
pub mod privileges;
mod report_all;
pub mod ringbuf;
mod stack_mappings;
pub mod tracefs;

pub use self::load::{load, LoadOptions};
pub use self::report_all::{ReportAll, ReportAllHold};
pub use self::stack_mappings::StackMappings;

use aya::{
    maps::{MapData, RingBuf},
    programs::ProgramError,
    Ebpf, EbpfError,
};
use tokio::io::{unix::AsyncFd, Interest};

use self::btf::BtfError;
use self::counters::KernelCounters;
use self::tracefs::TracefsError;
use crate::model::backend::Backend;

/// The kernel function every copy_file_range, from syscalls or in-kernel callers, goes through.
pub const VFS_FUNCTION: &str = "vfs_copy_file_range";

/// The syscall wrapper the fentry back-end hooks to see calls rejected
/// before the VFS, on this architecture.
pub fn syscall_wrapper() -> Option<&'static str> {
    arch::CURRENT.map(|a| a.wrapper)
}

/// Errors from loading or attaching the probes.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// Reading BTF failed.
    #[error(transparent)]
    Btf(#[from] BtfError),
    /// tracefs trouble.
    #[error(transparent)]
    Tracefs(#[from] TracefsError),
    /// The caller lacks the capabilities to load BPF programs.
    #[error("permission denied loading eBPF programs: run as root (or with CAP_BPF, CAP_PERFMON and CAP_SYS_RESOURCE)")]
    Permission,
    /// The object's code could not be prepared for this kernel.
    #[error(transparent)]
    Elf(#[from] kfunc::ElfError),
    /// Creating maps or parsing the object failed.
    #[error("loading the eBPF object failed")]
    Object(#[source] EbpfError),
    /// A program failed to load or attach.
    #[error("{} back-end: program {program} failed", backend.as_str())]
    Program {
        backend: Backend,
        program: &'static str,
        #[source]
        source: ProgramError,
    },
    /// The kernel would not create a map (out of memory, or a limit).
    #[error("cannot create the {name} map (copytrace's maps need about 9 MiB of kernel memory, charged to its memory cgroup, or to RLIMIT_MEMLOCK before Linux 5.11: raise MemoryMax/memory.max or the limit)")]
    MapCreate {
        name: String,
        #[source]
        source: std::io::Error,
    },
    /// The object lacks a map this build needs (build mismatch).
    #[error("the eBPF object has no {0} map")]
    MissingMap(&'static str),
    /// A map could not be set up.
    #[error("cannot set up the {0} map (is the locked-memory or map limit too low?)")]
    Map(&'static str, #[source] aya::maps::MapError),
    /// Neither the syscall wrapper nor the syscall tracepoints can carry
    /// the fentry back-end's syscall side.
    #[error("fentry back-end: no syscall side: {0}")]
    SyscallSide(String),
    /// The kernel lacks the function the fentry back-end needs.
    #[error("fentry back-end: kernel BTF has no function {0}")]
    NoFunction(&'static str),
    /// The kernel refuses fentry/fexit programs (EPERM with an empty verifier log).
    #[error("the kernel refused to load fentry program {0} (EPERM: fentry/fexit are disabled here, e.g. by lockdown or an LSM policy)")]
    FentryDenied(&'static str),
    /// The kernel has no BPF trampoline to attach fentry/fexit with
    /// (ENOTSUPP, 524: arm64 before Linux 6.4, for one).
    #[error("this kernel cannot attach fentry program {0} (ENOTSUPP: no BPF trampoline on this architecture and kernel; arm64 has one from Linux 6.4)")]
    FentryUnsupported(&'static str),
    /// No back-end was tried (an empty choice).
    #[error("no probe back-end to try")]
    NoBackend,
    /// The fentry back-end was forced but refused, with the reason.
    #[error("fentry back-end refused by this kernel ({0}); use --probe tracepoint")]
    FentryRefused(Box<LoadError>),
}

/// How the loaded programs read kernel structs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KernelReads {
    /// Direct loads the verifier checks against BTF (`bpf_rdonly_cast`, 6.2+).
    Typed,
    /// One `bpf_probe_read_kernel` call per read.
    Helper,
}

impl KernelReads {
    /// How logs and `doctor` name it.
    pub fn as_str(self) -> &'static str {
        match self {
            KernelReads::Typed => "typed kernel reads",
            KernelReads::Helper => "helper kernel reads",
        }
    }
}

/// Loaded, attached probes. Dropping this detaches them.
pub struct Probes {
    pub(crate) ebpf: Ebpf,
    pub(crate) backend: Backend,
    pub(crate) reads: KernelReads,
    pub(crate) fallback: Option<String>,
    pub(crate) stack_mappings: StackMappings,
}

impl Probes {
    /// Which back-end is attached.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// How its programs read kernel structs.
    pub fn kernel_reads(&self) -> KernelReads {
        self.reads
    }

    /// Whether its exit programs record the mappings a stack points into
    /// (5.17+), which name frames where `/proc/PID/maps` is closed.
    pub fn stack_mappings(&self) -> &StackMappings {
        &self.stack_mappings
    }

    /// Why the fentry back-end was not used (or only in part), when it fell back.
    pub fn fallback_reason(&self) -> Option<&str> {
        self.fallback.as_deref()
    }

    /// Takes the event ring buffer (once).
    pub fn take_events(&mut self) -> Option<RingBuf<MapData>> {
        self.ebpf.take_map("EVENTS")?.try_into().ok()
    }

    /// Forwards aya-log records from the kernel programs to the `log`
    /// facade, from a task on the current tokio runtime.
    pub fn forward_kernel_logs(&mut self) {
        let logger = match aya_log::EbpfLogger::init(&mut self.ebpf) {
            Ok(l) => l,
            Err(e) => {
                log::warn!("kernel-side logging unavailable: {e}");
                return;
            }
        };
        // SAFETY: the logger owns its ring buffer fd for as long as the AsyncFd owns the logger.
        let Ok(mut fd) = (unsafe { AsyncFd::register_with_interest(logger, Interest::READABLE) })
        else {
            return;
        };
        tokio::spawn(async move {
            while let Ok(mut guard) = fd.readable_mut().await {
                guard.clear_ready();
                guard.get_inner_mut().flush();
            }
        });
    }

    /// Takes the kernel-side counters (once), to be shared by every reader.
    pub fn take_counters(&mut self) -> Option<KernelCounters> {
        let counts = self.ebpf.take_map("COUNTS")?.try_into().ok()?;
        let counters = self.ebpf.take_map("COUNTERS")?.try_into().ok()?;
        let latency = self.ebpf.take_map("LATENCY")?.try_into().ok()?;
        Some(KernelCounters {
            counts,
            counters,
            latency,
        })
    }

    /// Takes the switch that tells the kernel side whether every call is
    /// wanted (once).
    pub fn take_report_all(&mut self) -> Option<ReportAll> {
        let settings = self.ebpf.take_map("SETTINGS")?.try_into().ok()?;
        Some(ReportAll::new(settings))
    }
}

/// Fails early, before anything else is set up, when this process may not
/// load tracing programs.
pub fn require_privileges() -> Result<(), LoadError> {
    if privileges::can_trace() {
        Ok(())
    } else {
        Err(LoadError::Permission)
    }
}
