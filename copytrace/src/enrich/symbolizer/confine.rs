//! What the symbolizer process gives up before it reads a byte of input:
//! root's identity where it can, every capability, the right to gain
//! privileges or run programs, signals and sockets, and the room to grow.
//!
//! It parses executables and debug info a traced user wrote; if that
//! parsing is ever subverted, this is what the attacker is left holding.

use std::io;

/// The user and group it becomes when it may change them (a root shell);
/// under the shipped unit there is no CAP_SETUID and it stays uid 0, with
/// no capability at all.
const NOBODY: libc::uid_t = 65534;

/// Address space: the largest file it opens, mapped, plus what parsing it takes.
const MAX_ADDRESS_SPACE: u64 = 2 * 1024 * 1024 * 1024;

/// Descriptors: the files one symbolizer keeps open before it starts afresh, and some.
pub const MAX_FILES: u64 = 64;

/// CPU seconds over the process's life; the daemon starts a new one after.
const MAX_CPU_SECONDS: u64 = 120;

/// `AUDIT_ARCH_*` of linux/audit.h: the ELF machine plus 64-bit and little-endian bits.
const fn audit_arch(machine: u16) -> u32 {
    const ARCH_64BIT: u32 = 0x8000_0000;
    const ARCH_LE: u32 = 0x4000_0000;
    machine as u32 | ARCH_64BIT | ARCH_LE
}

#[cfg(target_arch = "x86_64")]
const ARCH: u32 = audit_arch(libc::EM_X86_64);
#[cfg(target_arch = "aarch64")]
const ARCH: u32 = audit_arch(libc::EM_AARCH64);

/// System calls refused with EPERM: running programs, reaching other
/// processes, the kernel's tracing and module interfaces, the network,
/// mounts and namespaces. Parsing needs none of them.
const DENIED: &[libc::c_long] = &[
    libc::SYS_execve,
    libc::SYS_execveat,
    libc::SYS_ptrace,
    libc::SYS_kill,
    libc::SYS_tkill,
    libc::SYS_tgkill,
    libc::SYS_rt_sigqueueinfo,
    libc::SYS_rt_tgsigqueueinfo,
    libc::SYS_pidfd_open,
    libc::SYS_pidfd_send_signal,
    libc::SYS_pidfd_getfd,
    libc::SYS_process_vm_readv,
    libc::SYS_process_vm_writev,
    libc::SYS_bpf,
    libc::SYS_perf_event_open,
    libc::SYS_socket,
    libc::SYS_socketpair,
    libc::SYS_mount,
    libc::SYS_umount2,
    libc::SYS_unshare,
    libc::SYS_setns,
    libc::SYS_init_module,
    libc::SYS_finit_module,
    libc::SYS_delete_module,
    libc::SYS_keyctl,
    libc::SYS_add_key,
    libc::SYS_request_key,
    libc::SYS_setuid,
    libc::SYS_setgid,
    libc::SYS_setresuid,
    libc::SYS_setresgid,
    libc::SYS_setgroups,
    libc::SYS_capset,
    libc::SYS_prctl,
    libc::SYS_seccomp,
    libc::SYS_unlinkat,
    libc::SYS_renameat2,
    libc::SYS_truncate,
    libc::SYS_ftruncate,
    libc::SYS_fchmodat,
    libc::SYS_fchownat,
    libc::SYS_mknodat,
    libc::SYS_linkat,
    libc::SYS_symlinkat,
];

/// What confinement achieved, for the daemon's log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Confined {
    /// The user it runs as.
    pub uid: libc::uid_t,
}

fn check(what: &str, rc: libc::c_int) -> io::Result<()> {
    if rc == 0 {
        Ok(())
    } else {
        let e = io::Error::last_os_error();
        Err(io::Error::new(e.kind(), format!("{what}: {e}")))
    }
}

/// The type glibc and musl give `RLIMIT_*`.
#[cfg(target_env = "gnu")]
type Resource = libc::__rlimit_resource_t;
#[cfg(not(target_env = "gnu"))]
type Resource = libc::c_int;

fn set_limit(resource: Resource, value: u64) -> io::Result<()> {
    let lim = libc::rlimit {
        rlim_cur: value,
        rlim_max: value,
    };
    // SAFETY: a valid rlimit struct, read by the kernel.
    let rc = unsafe { libc::setrlimit(resource, &lim) };
    check("setrlimit", rc)
}

/// Becomes nobody, if this process may change its identity at all.
fn leave_root() -> io::Result<()> {
    // SAFETY: plain syscalls on this process's credentials; no pointers
    // but a null list of zero groups.
    let groups = unsafe { libc::setgroups(0, std::ptr::null()) };
    if groups != 0 {
        // No CAP_SETGID (the shipped unit): stay, without capabilities.
        return Ok(());
    }
    // SAFETY: as above.
    check("setresgid", unsafe {
        libc::setresgid(NOBODY, NOBODY, NOBODY)
    })?;
    // SAFETY: as above.
    check("setresuid", unsafe {
        libc::setresuid(NOBODY, NOBODY, NOBODY)
    })
}

/// Drops every capability: ambient, then effective, permitted and inheritable.
fn drop_capabilities() -> io::Result<()> {
    let none: libc::c_ulong = 0;
    // SAFETY: prctl with integer arguments only.
    let rc = unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL,
            none,
            none,
            none,
        )
    };
    check("clearing ambient capabilities", rc)?;
    // linux/capability.h: _LINUX_CAPABILITY_VERSION_3 takes two 32-bit words per set.
    const VERSION_3: u32 = 0x2008_0522;
    #[repr(C)]
    struct Header {
        version: u32,
        pid: libc::c_int,
    }
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    let header = Header {
        version: VERSION_3,
        pid: 0,
    };
    let data = [Data {
        effective: 0,
        permitted: 0,
        inheritable: 0,
    }; 2];
    // SAFETY: the header and two data words capset reads for version 3.
    let rc = unsafe { libc::syscall(libc::SYS_capset, &header, data.as_ptr()) };
    check("capset", rc as libc::c_int)
}

fn stmt(code: u32, k: u32) -> libc::sock_filter {
    libc::sock_filter {
        code: code as u16,
        jt: 0,
        jf: 0,
        k,
    }
}

fn jump_eq(k: u32, jt: u8, jf: u8) -> libc::sock_filter {
    libc::sock_filter {
        code: (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16,
        jt,
        jf,
        k,
    }
}

/// Installs the seccomp filter that refuses [`DENIED`] (and any other architecture).
fn deny_syscalls() -> io::Result<()> {
    // struct seccomp_data: nr at 0, arch at 4.
    let load = |at: u32| stmt(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS, at);
    let ret = |v: u32| stmt(libc::BPF_RET | libc::BPF_K, v);
    let mut prog = vec![
        load(4),
        jump_eq(ARCH, 1, 0),
        ret(libc::SECCOMP_RET_KILL_PROCESS),
        load(0),
    ];
    for &nr in DENIED {
        // Equal: skip nothing and fall to the EPERM return placed right after; else skip it.
        prog.push(jump_eq(nr as u32, 0, 1));
        prog.push(ret(
            libc::SECCOMP_RET_ERRNO | (libc::EPERM as u32 & libc::SECCOMP_RET_DATA)
        ));
    }
    prog.push(ret(libc::SECCOMP_RET_ALLOW));
    let fprog = libc::sock_fprog {
        len: prog.len() as u16,
        filter: prog.as_mut_ptr(),
    };
    // SAFETY: fprog points at `prog`, alive across the call; the kernel copies it.
    let rc = unsafe {
        libc::prctl(
            libc::PR_SET_SECCOMP,
            libc::SECCOMP_MODE_FILTER,
            &fprog as *const _ as libc::c_ulong,
            0,
            0,
        )
    };
    check("installing the seccomp filter", rc)
}

/// Confines this process for good. Must run before any input is read,
/// on the only thread.
pub fn confine() -> io::Result<Confined> {
    let no: libc::c_ulong = 0;
    // SAFETY: prctl with integer arguments only.
    check("no_new_privs", unsafe {
        libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1 as libc::c_ulong, no, no, no)
    })?;
    // The cgroup's OOM killer takes this process before the daemon.
    let _ = std::fs::write("/proc/self/oom_score_adj", "1000");
    set_limit(libc::RLIMIT_CORE, 0)?;
    set_limit(libc::RLIMIT_FSIZE, 0)?;
    set_limit(libc::RLIMIT_NOFILE, MAX_FILES)?;
    set_limit(libc::RLIMIT_AS, MAX_ADDRESS_SPACE)?;
    set_limit(libc::RLIMIT_CPU, MAX_CPU_SECONDS)?;
    set_limit(libc::RLIMIT_MEMLOCK, 0)?;
    leave_root()?;
    drop_capabilities()?;
    deny_syscalls()?;
    // SAFETY: getuid has no arguments.
    let uid = unsafe { libc::getuid() };
    Ok(Confined { uid })
}
