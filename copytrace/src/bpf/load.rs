//! Loading the eBPF object with the running kernel's offsets and type ids,
//! and attaching the chosen back-end (or the first that works).

use aya::{
    maps::HashMap,
    programs::{FEntry, FExit, ProgramError, RawTracePoint, TracePoint},
    Ebpf, EbpfError, EbpfLoader,
};
use copytrace_common::{KernelOffsets, KernelTypes, ProbeConfig, ReportPolicy, SizeTruth};

use super::btf::{self, Btf, BtfError};
use super::stack_mappings::{Exits, StackMappings};
use super::{
    kfunc, offsets, syscall_wrapper, tracefs, KernelReads, LoadError, Probes, VFS_FUNCTION,
};
use crate::model::backend::{Backend, ProbeChoice};

/// Whether an error or one of its sources is the I/O error `errno`.
fn has_errno(err: &(dyn std::error::Error + 'static), errno: i32) -> bool {
    let mut cur = Some(err);
    while let Some(e) = cur {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            if io.raw_os_error() == Some(errno) {
                return true;
            }
        }
        cur = e.source();
    }
    false
}

fn is_eperm(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur = Some(err);
    while let Some(e) = cur {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            if io.raw_os_error() == Some(libc::EPERM) {
                return true;
            }
        }
        if e.to_string().contains("Operation not permitted") {
            return true;
        }
        cur = e.source();
    }
    false
}

fn program_error(backend: Backend, program: &'static str, source: ProgramError) -> LoadError {
    LoadError::Program {
        backend,
        program,
        source,
    }
}

/// The compiled eBPF programs (built by build.rs through aya-build).
pub(super) static EBPF_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/copytrace"));

/// What to load and for whom.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Back-end choice.
    pub probe: ProbeChoice,
    /// Only this process and its descendants (0: all).
    pub follow_tgid: u32,
    /// Which calls the kernel reports (userspace's verdict rules as a table).
    pub policy: ReportPolicy,
    /// Filesystems whose advertised sizes are not their content, by magic.
    pub size_truths: Vec<(u64, SizeTruth)>,
    /// Key the exact counts by cgroup too (for a unit label on metrics).
    pub count_by_cgroup: bool,
    /// Take the user stack of suspicious calls.
    pub stacks: bool,
}

/// Entries of the kernel's exact-count map: outcomes, or outcomes per
/// cgroup when counts are kept per cgroup.
fn counts_capacity(by_cgroup: bool) -> u32 {
    if by_cgroup {
        65_536
    } else {
        copytrace_common::COUNTS_CAPACITY
    }
}

/// Raises RLIMIT_MEMLOCK: kernels before 5.11 charge BPF maps against it.
fn raise_memlock() {
    let rl = libc::rlimit {
        rlim_cur: libc::RLIM_INFINITY,
        rlim_max: libc::RLIM_INFINITY,
    };
    // SAFETY: plain syscall with a valid pointer.
    if unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &rl) } != 0 {
        log::debug!(
            "could not raise RLIMIT_MEMLOCK: {}",
            std::io::Error::last_os_error()
        );
    }
}

/// The object to load, and the BTF ids its typed reads name: the object
/// with its kfunc calls rewritten and the kernel's ids, or the object as
/// built and no ids (its placeholder calls then sit in code the verifier
/// never reaches, as kread::typed() is false).
#[derive(Clone, Copy)]
struct Image<'a> {
    bytes: &'a [u8],
    types: &'a KernelTypes,
}

fn load_object(
    offsets: &KernelOffsets,
    image: Image<'_>,
    config: &ProbeConfig,
    opts: &LoadOptions,
) -> Result<Ebpf, LoadError> {
    let mut ebpf = EbpfLoader::new()
        .map_max_entries("COUNTS", counts_capacity(opts.count_by_cgroup))
        .override_global("OFFSETS", offsets, true)
        .override_global("TYPES", image.types, true)
        .override_global("CONFIG", config, true)
        .override_global("POLICY", &opts.policy, true)
        .load(image.bytes)
        .map_err(|e| match e {
            EbpfError::MapError(aya::maps::MapError::CreateError { name, io_error })
                if !is_eperm(&io_error) =>
            {
                LoadError::MapCreate {
                    name,
                    source: io_error,
                }
            }
            e if is_eperm(&e) => LoadError::Permission,
            e => LoadError::Object(e),
        })?;
    let mut truths: HashMap<_, u64, u8> = ebpf
        .map_mut("SIZE_TRUTH")
        .ok_or(LoadError::MissingMap("SIZE_TRUTH"))?
        .try_into()
        .map_err(|e| LoadError::Map("SIZE_TRUTH", e))?;
    for (magic, truth) in opts
        .size_truths
        .iter()
        .filter(|(_, t)| *t != SizeTruth::Content)
    {
        truths
            .insert(magic, *truth as u8, 0)
            .map_err(|e| LoadError::Map("SIZE_TRUTH", e))?;
    }
    Ok(ebpf)
}

/// Loads and attaches one fentry or fexit program on `func`.
fn attach_tracing(
    ebpf: &mut Ebpf,
    btf: &aya::Btf,
    prog: &'static str,
    func: &str,
    exit: bool,
) -> Result<(), LoadError> {
    const B: Backend = Backend::Fentry;
    let p = ebpf
        .program_mut(prog)
        .ok_or_else(|| program_error(B, prog, ProgramError::NotLoaded))?;
    let res = if exit {
        let p: &mut FExit = p.try_into().map_err(|e| program_error(B, prog, e))?;
        p.load(func, btf).and_then(|()| p.attach().map(drop))
    } else {
        let p: &mut FEntry = p.try_into().map_err(|e| program_error(B, prog, e))?;
        p.load(func, btf).and_then(|()| p.attach().map(drop))
    };
    res.map_err(|e| {
        if is_eperm(&e) {
            LoadError::FentryDenied(prog)
        } else if has_errno(&e, crate::model::errno::ENOTSUPP as i32) {
            // The BPF syscalls pass the kernel's internal ENOTSUPP on.
            LoadError::FentryUnsupported(prog)
        } else {
            program_error(B, prog, e)
        }
    })
}

/// Program `prog` as its type `P`, loaded: EPERM is the one-line
/// permission error, anything else names the program.
fn loaded<'a, P>(
    ebpf: &'a mut Ebpf,
    backend: Backend,
    prog: &'static str,
) -> Result<&'a mut P, LoadError>
where
    &'a mut P: TryFrom<&'a mut aya::programs::Program, Error = ProgramError>,
    P: LoadPlain,
{
    let p = ebpf
        .program_mut(prog)
        .ok_or_else(|| program_error(backend, prog, ProgramError::NotLoaded))?;
    let p: &mut P = p.try_into().map_err(|e| program_error(backend, prog, e))?;
    p.load_plain().map_err(|e| {
        if is_eperm(&e) {
            LoadError::Permission
        } else {
            program_error(backend, prog, e)
        }
    })?;
    Ok(p)
}

/// Program types loaded without arguments.
trait LoadPlain {
    fn load_plain(&mut self) -> Result<(), ProgramError>;
}

impl LoadPlain for TracePoint {
    fn load_plain(&mut self) -> Result<(), ProgramError> {
        self.load()
    }
}

impl LoadPlain for RawTracePoint {
    fn load_plain(&mut self) -> Result<(), ProgramError> {
        self.load()
    }
}

/// Loads and attaches the thread-exit program, which frees an exiting
/// thread's in-flight slot or record (every back-end needs it: a thread's
/// record stays between its calls).
fn attach_thread_exit(ebpf: &mut Ebpf, backend: Backend) -> Result<(), LoadError> {
    const PROG: &str = "cfr_thread_exit";
    loaded::<RawTracePoint>(ebpf, backend, PROG)?
        .attach("sched_process_exit")
        .map_err(|e| program_error(backend, PROG, e))?;
    Ok(())
}

/// Loads and attaches the two syscall tracepoint programs.
fn attach_syscall_tracepoints(
    ebpf: &mut Ebpf,
    backend: Backend,
    exits: Exits,
) -> Result<(), LoadError> {
    for (prog, tp) in [
        ("cfr_sys_enter", "sys_enter_copy_file_range"),
        (exits.tracepoint, "sys_exit_copy_file_range"),
    ] {
        loaded::<TracePoint>(ebpf, backend, prog)?
            .attach("syscalls", tp)
            .map_err(|e| program_error(backend, prog, e))?;
    }
    Ok(())
}

/// fentry/fexit on `vfs_copy_file_range` (every caller, in-kernel ones too)
/// and on the syscall wrapper (calls rejected before the VFS). Where the
/// wrapper cannot be traced (5.10's BTF declares its `pt_regs` argument only
/// as a forward, which the verifier refuses), the syscall side falls back to
/// the syscall tracepoints; the returned string says so.
fn attach_fentry(
    offsets: &KernelOffsets,
    image: Image<'_>,
    opts: &LoadOptions,
    btf: &Btf,
    exits: Exits,
) -> Result<(Ebpf, Option<String>), LoadError> {
    if !btf.has_function(VFS_FUNCTION) {
        return Err(LoadError::NoFunction(VFS_FUNCTION));
    }
    // Tracepoint record offsets too, in case the syscall side needs them:
    // globals are fixed when the object loads.
    let mut offsets = *offsets;
    let tracepoints_ready = tracefs::ensure_mounted()
        .ok()
        .is_some_and(|dir| offsets::add_tracepoint_fields(&mut offsets, &dir).is_ok());
    let config = probe_config(Backend::Fentry, opts);
    // Parsed before the maps are created: it is the load's largest heap
    // allocation, and under a tight memory limit a map that cannot be
    // created is a clear error, while running out after the maps exist
    // gets the process killed.
    let aya_btf = aya::Btf::from_sys_fs().map_err(|e| {
        LoadError::Btf(BtfError::Read {
            path: btf::VMLINUX_BTF.to_string(),
            source: std::io::Error::other(e),
        })
    })?;
    let mut ebpf = load_object(&offsets, image, &config, opts)?;
    attach_thread_exit(&mut ebpf, Backend::Fentry)?;
    attach_tracing(&mut ebpf, &aya_btf, "cfr_vfs_entry", VFS_FUNCTION, false)?;
    attach_tracing(&mut ebpf, &aya_btf, "cfr_vfs_exit", VFS_FUNCTION, true)?;
    // The syscall side: fentry on this architecture's wrapper, when this
    // build knows the architecture and the kernel lets us trace it.
    let wrapper = match syscall_wrapper() {
        Some(w) if !btf.has_function(w) => Err(format!("kernel BTF has no function {w}")),
        Some(_) if !offsets::regs_known(&offsets) => {
            Err("this kernel's pt_regs lacks the syscall argument registers".to_string())
        }
        Some(w) => attach_tracing(&mut ebpf, &aya_btf, "cfr_wrapper_entry", w, false)
            .and_then(|()| attach_tracing(&mut ebpf, &aya_btf, exits.wrapper, w, true))
            .map_err(|e| match e {
                e @ (LoadError::FentryDenied(_) | LoadError::Permission) => crate::error_chain(&e),
                e => format!("{w} is not traceable here ({})", crate::error_chain(&e)),
            }),
        None => Err(format!(
            "copytrace does not know the syscall wrapper of {}",
            std::env::consts::ARCH
        )),
    };
    match wrapper {
        Ok(()) => Ok((ebpf, None)),
        Err(why) if tracepoints_ready => {
            attach_syscall_tracepoints(&mut ebpf, Backend::Fentry, exits)?;
            let first = why.lines().next().unwrap_or_default();
            Ok((ebpf, Some(format!("syscall side on tracepoints: {first}"))))
        }
        Err(why) => Err(LoadError::SyscallSide(why)),
    }
}

/// The load-time settings of `backend`'s programs.
fn probe_config(backend: Backend, opts: &LoadOptions) -> ProbeConfig {
    ProbeConfig {
        follow_tgid: opts.follow_tgid,
        backend: backend as u8,
        count_by_cgroup: u8::from(opts.count_by_cgroup),
        stacks: u8::from(opts.stacks),
        _pad: 0,
        max_rw_count: crate::model::limits::max_per_call(),
    }
}

fn attach_tracepoints(
    offsets: &KernelOffsets,
    image: Image<'_>,
    opts: &LoadOptions,
    exits: Exits,
) -> Result<Ebpf, LoadError> {
    let dir = tracefs::ensure_mounted()?;
    let mut offsets = *offsets;
    offsets::add_tracepoint_fields(&mut offsets, &dir)?;
    let config = probe_config(Backend::Tracepoint, opts);
    let mut ebpf = load_object(&offsets, image, &config, opts)?;
    attach_thread_exit(&mut ebpf, Backend::Tracepoint)?;
    attach_syscall_tracepoints(&mut ebpf, Backend::Tracepoint, exits)?;
    Ok(ebpf)
}

/// An attached back-end: its object, how it reads the kernel, a note when
/// part of it fell back, and whether it records the stack's mappings.
type Attached = (Ebpf, KernelReads, Option<String>, StackMappings);

/// Logs a refused load that is tried again another way: `what` failed,
/// so `then`. The info line keeps the journal readable; the whole verifier
/// log, which says which load was refused, is for --log-level debug.
/// Returns the log's end (where it stopped, and its counts), short enough
/// for `copytrace doctor`.
fn log_refusal(backend: Backend, e: &LoadError, what: &str, then: &str) -> String {
    let chain = crate::error_chain(e);
    let b = backend.as_str();
    log::debug!("{b} back-end: the refusal of {what} in full: {chain}");
    let first = chain.lines().next().unwrap_or_default();
    log::info!("{b} back-end: {then} ({first})");
    let lines: Vec<&str> = chain.lines().filter(|l| !l.trim().is_empty()).collect();
    lines[lines.len().saturating_sub(4)..].join(" | ")
}

/// Loads and attaches one back-end, with typed loads where the kernel has
/// them, and once more reading through the helper if the verifier refuses
/// the typed programs: kernels since 6.2 differ in which BTF-typed loads
/// they accept, and a slower copytrace beats none.
fn attach(
    backend: Backend,
    offsets: &KernelOffsets,
    typed: Option<Image<'_>>,
    opts: &LoadOptions,
    btf: &Btf,
) -> Result<Attached, LoadError> {
    let support = StackMappings::asked(opts.stacks, btf);
    let mappings = support == StackMappings::Recorded;
    let once = |image: Image<'_>, mappings: bool| {
        let exits = Exits::new(mappings);
        match backend {
            Backend::Fentry => attach_fentry(offsets, image, opts, btf, exits),
            Backend::Tracepoint => {
                attach_tracepoints(offsets, image, opts, exits).map(|e| (e, None))
            }
        }
    };
    // The stack's mappings are worth less than typed reads, which every
    // call's count uses: a refused exit program with mappings is tried
    // again without them before typed reads are given up.
    let with_or_without = |image: Image<'_>| match once(image, mappings) {
        Ok((ebpf, note)) => Ok((ebpf, note, support.clone())),
        Err(e @ LoadError::Program { .. }) if mappings => {
            let why = log_refusal(
                backend,
                &e,
                "the exit with mappings",
                "the stack's mappings cannot be recorded in the kernel, frames are placed with /proc/PID/maps",
            );
            once(image, false).map(|(ebpf, note)| (ebpf, note, StackMappings::Refused(why)))
        }
        Err(e) => Err(e),
    };
    let no_types = KernelTypes::default();
    let helper_image = Image {
        bytes: EBPF_OBJECT,
        types: &no_types,
    };
    let helper = |(ebpf, note, m)| (ebpf, KernelReads::Helper, note, m);
    let Some(typed) = typed else {
        return with_or_without(helper_image).map(helper);
    };
    match with_or_without(typed) {
        Ok((ebpf, note, m)) => Ok((ebpf, KernelReads::Typed, note, m)),
        Err(e @ LoadError::Program { .. }) => {
            log_refusal(
                backend,
                &e,
                "the typed programs",
                "typed loads refused, reading through bpf_probe_read_kernel instead",
            );
            with_or_without(helper_image).map(helper)
        }
        Err(e) => Err(e),
    }
}

/// Loads the programs and attaches the chosen (or first working) back-end.
pub fn load(opts: LoadOptions) -> Result<Probes, LoadError> {
    raise_memlock();
    let btf = Btf::from_sys_fs()?;
    let offsets = offsets::from_btf(&btf)?;
    log::debug!("kernel offsets from BTF: {offsets:?}");
    let types = offsets::types_from_btf(&btf);
    log::debug!("kernel BTF ids for typed loads: {types:?}");
    // Rewritten once for every back-end tried (a copy of the whole object).
    let rewritten = match types.rdonly_cast {
        0 => None,
        id => Some(kfunc::with_rdonly_cast(EBPF_OBJECT, id)?.0),
    };
    let typed = rewritten.as_ref().map(|o| Image {
        bytes: o.bytes(),
        types: &types,
    });
    let mut fallback = None;
    for &backend in opts.probe.candidates() {
        let attached = attach(backend, &offsets, typed, &opts, &btf);
        match attached {
            Ok((ebpf, reads, note, stack_mappings)) => {
                if let Some(n) = &note {
                    log::info!("{} back-end: {n}", backend.as_str());
                }
                return Ok(Probes {
                    ebpf,
                    backend,
                    reads,
                    fallback: note.or(fallback),
                    stack_mappings,
                });
            }
            Err(LoadError::Permission) => return Err(LoadError::Permission),
            Err(e) if opts.probe == ProbeChoice::Only(Backend::Fentry) => {
                return Err(LoadError::FentryRefused(Box::new(e)))
            }
            Err(e) if backend == Backend::Fentry => {
                let why = crate::error_chain(&e);
                log::debug!("fentry back-end unavailable ({why}), using syscall tracepoints");
                fallback = Some(why);
            }
            Err(e) => return Err(e),
        }
    }
    Err(LoadError::NoBackend)
}
