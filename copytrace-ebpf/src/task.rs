//! The calling task: whether it is followed, and its files.

use aya_ebpf::helpers::{
    bpf_get_current_cgroup_id, bpf_get_current_pid_tgid, bpf_get_current_task,
    bpf_get_current_uid_gid,
};
use copytrace_common::{contiguous, KernelOffsets, ProbeConfig};

use crate::globals::types;
use crate::kread::{read, read_two, Fault, Memory};

/// Parent-chain depth searched for `follow_tgid`.
const FOLLOW_DEPTH: usize = 16;

/// The current `task_struct`, readable through `M`.
#[inline(always)]
pub fn current<M: Memory>() -> u64 {
    // SAFETY: returns the current task pointer; never null in task context.
    M::view(unsafe { bpf_get_current_task() }, types().task_struct)
}

/// The current task's ids, encoded as `bpf_get_current_pid_tgid` and
/// `bpf_get_current_uid_gid` return them: loaded from `task` where reads
/// are plain loads (four loads cost less than one helper call), else
/// from the two helpers (fewer calls than four reads).
#[inline(always)]
pub fn ids<M: Memory>(task: u64, off: &KernelOffsets) -> (u64, u64) {
    if !M::PLAIN_LOADS {
        return (bpf_get_current_pid_tgid(), bpf_get_current_uid_gid());
    }
    let pid = M::read::<u32>(task, off.task_pid).unwrap_or(0);
    let tgid = M::read::<u32>(task, off.task_tgid).unwrap_or(0);
    let (uid, gid) = match M::read::<u64>(task, off.task_cred) {
        Ok(cred) if cred != 0 => (
            M::read::<u32>(cred, off.cred_uid).unwrap_or(0),
            M::read::<u32>(cred, off.cred_gid).unwrap_or(0),
        ),
        _ => (0, 0),
    };
    (
        u64::from(tgid) << 32 | u64::from(pid),
        u64::from(gid) << 32 | u64::from(uid),
    )
}

/// The current task's cgroup v2 id, as `bpf_get_current_cgroup_id`
/// returns it: loaded from `task` where reads are plain loads and the
/// kernel has cgroups, else from the helper.
#[inline(always)]
pub fn cgroup_id<M: Memory>(task: u64, off: &KernelOffsets) -> u64 {
    if !M::PLAIN_LOADS || off.task_cgroups == 0 {
        // SAFETY: bpf_get_current_cgroup_id has no preconditions.
        return unsafe { bpf_get_current_cgroup_id() };
    }
    let id = || -> Result<u64, Fault> {
        let css_set: u64 = M::read(task, off.task_cgroups)?;
        let cgroup: u64 = if css_set != 0 {
            M::read(css_set, off.css_set_dfl_cgrp)?
        } else {
            0
        };
        let kn: u64 = if cgroup != 0 {
            M::read(cgroup, off.cgroup_kn)?
        } else {
            0
        };
        if kn == 0 {
            return Ok(0);
        }
        M::read(kn, off.kernfs_node_id)
    };
    id().unwrap_or(0)
}

/// True when the current task is `follow_tgid` or one of its descendants.
#[inline(always)]
pub fn followed<M: Memory>(cfg: &ProbeConfig, off: &KernelOffsets) -> bool {
    if cfg.follow_tgid == 0 {
        return true;
    }
    let mut task = current::<M>();
    for _ in 0..FOLLOW_DEPTH {
        let Ok(tgid) = M::read::<i32>(task, off.task_tgid) else {
            return false;
        };
        if tgid as u32 == cfg.follow_tgid {
            return true;
        }
        let Ok(parent) = M::read::<u64>(task, off.task_real_parent) else {
            return false;
        };
        // init is its own parent.
        if parent == task || parent == 0 {
            return false;
        }
        task = parent;
    }
    false
}

/// `fdtable.max_fds` and the `fd` pointer after it, read as one.
#[repr(C)]
struct FdtableHead {
    max_fds: u32,
    _pad: u32,
    fd: u64,
}

/// `current->files->fdt->fd[a]` and `[b]`; 0 for a descriptor that is not
/// open. The verifier types `fd` as a pointer to pointers, through which
/// it allows no indexed load: a slot is viewed on its own, as a `struct fd`
/// (see `KernelTypes::fd`).
#[inline(always)]
pub fn files_of<M: Memory>(a: i64, b: i64, off: &KernelOffsets) -> Result<(u64, u64), Fault> {
    let files: u64 = M::read(current::<M>(), off.task_files)?;
    if files == 0 {
        return Ok((0, 0));
    }
    let fdt: u64 = M::read(files, off.files_fdt)?;
    if fdt == 0 {
        return Ok((0, 0));
    }
    let (max_fds, fd_array) = if !M::PLAIN_LOADS && off.contiguous & contiguous::FDTABLE != 0 {
        let head: FdtableHead = read(fdt, off.fdt_max_fds)?;
        (head.max_fds, head.fd)
    } else {
        (
            M::read::<u32>(fdt, off.fdt_max_fds)?,
            M::read::<u64>(fdt, off.fdt_fd)?,
        )
    };
    let open = |fd: i64| fd_array != 0 && (0..i64::from(max_fds)).contains(&fd);
    // Most copies use neighbouring descriptors: read_two reads both slots
    // at once (its byte offsets are u32, hence the bound).
    const NEAR: i64 = 1 << 28;
    if !M::PLAIN_LOADS && open(a) && open(b) && a < NEAR && b < NEAR {
        return read_two(fd_array, (a as u32) * 8, (b as u32) * 8);
    }
    let slot = |fd: i64| -> Result<u64, Fault> {
        if !open(fd) {
            return Ok(0);
        }
        M::read(M::view(fd_array + (fd as u64) * 8, types().fd), 0)
    };
    Ok((slot(a)?, slot(b)?))
}

/// What entry reads of a file: its inode, superblock and advertised size.
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub struct FileSide {
    pub inode: u64,
    pub sb: u64,
    pub size: i64,
}

/// `file->f_inode` with its `i_sb` and `i_size`, or zeros for no file.
#[inline(always)]
pub fn file_side<M: Memory>(file: u64, off: &KernelOffsets) -> Result<FileSide, Fault> {
    if file == 0 {
        return Ok(FileSide::default());
    }
    let inode: u64 = M::read(M::view(file, types().file), off.file_f_inode)?;
    if inode == 0 {
        return Ok(FileSide::default());
    }
    let (sb, size) = if !M::PLAIN_LOADS {
        read_two(inode, off.inode_i_sb, off.inode_i_size)?
    } else {
        (
            M::read(inode, off.inode_i_sb)?,
            M::read(inode, off.inode_i_size)?,
        )
    };
    Ok(FileSide {
        inode,
        sb,
        size: size as i64,
    })
}
