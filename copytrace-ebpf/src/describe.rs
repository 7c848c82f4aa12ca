//! Describing a reported call: the full record of the task, its parent,
//! both files with their paths, and the executable, written field by field
//! into the record's per-CPU slot.

use aya_ebpf::{bindings::BPF_F_USER_STACK, helpers::generated::bpf_get_stack, EbpfContext};
use copytrace_common::{
    bound, counter, name_flag, status, unwind_flag, Event, FileInfo, KernelOffsets, PathInfo, Tail,
    STACK_BYTES, TAIL_START_MASK, UNWIND_BYTES, UNWIND_SKIPPED_BYTES,
};

use crate::counters::{add, COUNTERS};
use crate::globals::{config, offsets, types};
use crate::inflight::Inflight;
use crate::kread::{Fault, Memory};
use crate::names;
use crate::task;
use crate::user_stack::{code_range, copy_stack, user_regs, whole_copy_allowed};

/// A finished call on its way to the ring buffer.
pub struct Finished<'a> {
    pub rec: &'a Inflight,
    pub ret: i64,
    pub end_ns: u64,
    pub read_pos: i64,
    pub pos_out: i64,
    pub magic: [u64; 2],
    pub sb: [u64; 2],
    pub facts: u32,
    pub status: u8,
}

/// Writes every field of the record at `ev` that userspace reads.
///
/// # Safety
///
/// `ev` must be valid for reads and writes of a whole [`Event`] (this
/// CPU's record slot), and nothing else may access it during the call.
#[inline(always)]
pub unsafe fn describe<C: EbpfContext, M: Memory>(
    ctx: &C,
    call: &Finished,
    off: &KernelOffsets,
    ev: *mut Event,
) {
    let rec = call.rec;
    let task = task::current::<M>();
    let (pid_tgid, uid_gid) = task::ids::<M>(task, off);
    let stack = call.status & status::STACK != 0;
    // SAFETY: `ev` points to this CPU's slot of size_of::<Event>() bytes,
    // which no other program touches until it is sent (this function's
    // contract); every field userspace reads is written through raw
    // pointers, and the pointers handed to read_16, parent, describe_file
    // and exe are fields of that slot, as their contracts ask. The
    // describing subprograms mark read faults in the record's status, so
    // their exits all look alike to the verifier.
    unsafe {
        (*ev).start_ns = rec.start_ns;
        (*ev).end_ns = call.end_ns;
        (*ev).cgroup_id = task::cgroup_id::<M>(task, off);
        (*ev).len = rec.len;
        (*ev).off_in = call.read_pos;
        (*ev).off_out = call.pos_out;
        (*ev).ret = call.ret;
        (*ev).pid = (pid_tgid >> 32) as u32;
        (*ev).tid = pid_tgid as u32;
        (*ev).uid = uid_gid as u32;
        (*ev).gid = (uid_gid >> 32) as u32;
        (*ev).fd_in = rec.fd_in;
        (*ev).fd_out = rec.fd_out;
        (*ev).within_start_ns = rec.within.start_ns;
        (*ev).within_fd_in = rec.within.fd_in;
        (*ev).within_fd_out = rec.within.fd_out;
        (*ev).flags = rec.flags;
        (*ev).facts = call.facts;
        (*ev).backend = config().backend;
        (*ev).origin = rec.origin;
        (*ev).status = call.status;
        (*ev).gaps = rec.gaps;
        let status = core::ptr::addr_of_mut!((*ev).status);
        // The stack, when taken, comes first in the tail; the walks follow.
        let tail = core::ptr::addr_of_mut!((*ev).tail);
        (*tail).used = if stack { STACK_BYTES as u16 } else { 0 };
        (*tail)._pad = 0;
        (*tail)._pad_word = 0;
        // Straight into the record, as two words (the field is 8-aligned):
        // a byte array has alignment 1, so a copy through the stack costs a
        // load and a store per byte.
        let comm = core::ptr::addr_of_mut!((*ev).comm).cast();
        if M::read_16(task, off.task_comm, comm).is_err() {
            mark_fault(status);
        }
        (*ev).mnt_ns = mnt_ns_of_task::<M>(task, off).unwrap_or(0);
        (*ev).ppid = parent::<M>(task, ev);
        let input = Side {
            file: rec.file_in,
            inode: rec.side_in.inode,
            sb: call.sb[0],
            magic: call.magic[0],
            size: rec.side_in.size,
            pos: call.read_pos,
        };
        (*ev).files[0].f_flags = describe_file::<M>(
            &input,
            core::ptr::addr_of_mut!((*ev).files[0]),
            status,
            tail,
        );
        let output = Side {
            file: rec.file_out,
            inode: rec.side_out.inode,
            sb: call.sb[1],
            magic: call.magic[1],
            size: rec.side_out.size,
            pos: call.pos_out,
        };
        (*ev).files[1].f_flags = describe_file::<M>(
            &output,
            core::ptr::addr_of_mut!((*ev).files[1]),
            status,
            tail,
        );
        exe::<M>(task, core::ptr::addr_of_mut!((*ev).exe), status, tail);
        let code = if stack {
            code_range::<M>(task, off)
        } else {
            (0, 0)
        };
        // Volatile: (0, 0) would otherwise become a memset call.
        core::ptr::write_volatile(core::ptr::addr_of_mut!((*ev).code_start), code.0);
        core::ptr::write_volatile(core::ptr::addr_of_mut!((*ev).code_end), code.1);
        (*ev).stack_bytes = if stack {
            bpf_get_stack(
                ctx.as_ptr(),
                core::ptr::addr_of_mut!((*tail).bytes).cast(),
                STACK_BYTES as u32,
                u64::from(BPF_F_USER_STACK),
            ) as i32
        } else {
            0
        };
        let regs = if stack {
            user_regs(rec.regs, off)
        } else {
            [0; 4]
        };
        // Volatile: neighbouring zeros would become a memset call.
        for (i, r) in regs.iter().enumerate() {
            core::ptr::write_volatile(core::ptr::addr_of_mut!((*ev).user_regs[i]), *r);
        }
        let whole = regs[1] != 0 && whole_copy_allowed(call.end_ns);
        let (at, len) = match (regs[1], whole) {
            (0, _) => (0, 0),
            (sp, true) => copy_stack(sp, tail, UNWIND_BYTES),
            (sp, false) => copy_stack(sp, tail, UNWIND_SKIPPED_BYTES),
        };
        core::ptr::write_volatile(core::ptr::addr_of_mut!((*ev).unwind_at), at);
        core::ptr::write_volatile(core::ptr::addr_of_mut!((*ev).unwind_len), len);
        let skipped = if regs[1] != 0 && !whole {
            unwind_flag::SKIPPED
        } else {
            0
        };
        // Volatile, with the fields beside it: zeros would become a memset call.
        core::ptr::write_volatile(core::ptr::addr_of_mut!((*ev).unwind_flags), skipped);
        core::ptr::write_volatile(core::ptr::addr_of_mut!((*ev).maps_count), 0);
        core::ptr::write_volatile(core::ptr::addr_of_mut!((*ev).maps_at), 0);
        if *status & status::READ_FAULT != 0 {
            add(&COUNTERS, counter::READ_FAULTS, 1);
        }
    }
}

/// Marks a read fault in the record's status byte.
///
/// # Safety
///
/// `status` must be valid for reads and writes of a byte (the record's
/// status), and nothing else may access it during the call.
#[inline(always)]
unsafe fn mark_fault(status: *mut u8) {
    // SAFETY: `status` is a valid byte of the record's slot (this
    // function's contract).
    unsafe { *status |= status::READ_FAULT };
}

/// Writes the parent's comm; returns its pid (for the caller to store: a
/// subprogram's result must be used, or the compiler drops it and the
/// return register may still point into the subprogram's stack, which the
/// verifier refuses).
///
/// # Safety
///
/// `ev` must be valid for reads and writes of a whole [`Event`] (the
/// record's slot), and nothing else may access it during the call.
#[inline(never)]
unsafe fn parent<M: Memory>(task: u64, ev: *mut Event) -> u32 {
    let off = offsets();
    // SAFETY: `ev` is the record's slot (this function's contract).
    let comm = unsafe { core::ptr::addr_of_mut!((*ev).parent_comm) };
    let got = M::read::<u64>(task, off.task_real_parent).and_then(|p| {
        let ppid = M::read::<i32>(p, off.task_tgid)?;
        // Straight into the record (see describe() for why).
        // SAFETY: `parent_comm` is 16 bytes of the record's slot, 8-aligned
        // (copytrace_common checks the offset), which only this call uses.
        unsafe { M::read_16(p, off.task_comm, comm.cast())? };
        Ok(ppid)
    });
    match got {
        Ok(ppid) => ppid as u32,
        Err(Fault) => {
            // SAFETY: plain field writes into the record's slot (this
            // function's contract); the status byte is one of its fields.
            unsafe {
                *comm.cast::<u8>() = 0;
                mark_fault(core::ptr::addr_of_mut!((*ev).status));
            }
            0
        }
    }
}

/// Inode number of a task's mount namespace.
#[inline(always)]
fn mnt_ns_of_task<M: Memory>(task: u64, off: &KernelOffsets) -> Result<u32, Fault> {
    let nsproxy: u64 = M::read(task, off.task_nsproxy)?;
    if nsproxy == 0 {
        return Ok(0);
    }
    let ns: u64 = M::read(nsproxy, off.nsproxy_mnt_ns)?;
    if ns == 0 {
        return Ok(0);
    }
    M::read(ns, off.mnt_ns_inum)
}

/// Where a file lives: (ino, dev, mount id, mount namespace), its dentry,
/// and whether its mount is another filesystem's ([`name_flag::OTHER_FS`]).
#[inline(always)]
pub fn location<M: Memory>(
    file: u64,
    inode: u64,
    sb: u64,
    off: &KernelOffsets,
) -> Result<([u64; 2], [u32; 2], u64, bool), Fault> {
    let ty = types();
    let file = M::view(file, ty.file);
    let vfsmnt: u64 = M::read(file, off.file_f_path_mnt)?;
    let dentry: u64 = M::read(file, off.file_f_path_dentry)?;
    let ino: u64 = if inode != 0 {
        M::read(M::view(inode, ty.inode), off.inode_i_ino)?
    } else {
        0
    };
    let dev: u32 = if sb != 0 {
        M::read(M::view(sb, ty.super_block), off.sb_s_dev)?
    } else {
        0
    };
    let (mnt_id, mnt_ns, other_fs) = if vfsmnt != 0 {
        // container_of: the vfsmount is a member of its struct mount.
        let mount = M::view(vfsmnt - u64::from(off.mount_mnt), ty.mount);
        let id: i32 = M::read(mount, off.mount_mnt_id)?;
        let ns: u64 = M::read(mount, off.mount_mnt_ns)?;
        let mnt_sb: u64 = M::read(mount, off.mount_mnt_sb)?;
        let inum: u32 = if ns != 0 {
            M::read(ns, off.mnt_ns_inum)?
        } else {
            0
        };
        (id as u32, inum, sb != 0 && mnt_sb != sb)
    } else {
        (0, 0, false)
    };
    Ok(([ino, u64::from(dev)], [mnt_id, mnt_ns], dentry, other_fs))
}

/// Fills `out` with where `file` lives: inode, device, mount, namespace,
/// and the path, whose names go at the end of `tail`.
///
/// # Safety
///
/// `out` must be valid for reads and writes of a [`PathInfo`], `status`
/// for reads and writes of a byte, and `tail` for reads and writes of a
/// whole [`Tail`]: fields of the record being built, which nothing else may
/// access during the call.
#[inline(always)]
unsafe fn describe_path<M: Memory>(
    file: u64,
    inode: u64,
    sb: u64,
    out: *mut PathInfo,
    status: *mut u8,
    tail: *mut Tail,
) {
    // SAFETY: `out` is valid for a `PathInfo` (this function's contract).
    let names = unsafe { core::ptr::addr_of_mut!((*out).names) };
    let found = if file == 0 {
        Ok(([0, 0], [0, 0], 0, false))
    } else {
        location::<M>(file, inode, sb, offsets())
    };
    let ([ino, dev], [mnt_id, mnt_ns], dentry, other_fs) = match found {
        Ok(l) => l,
        Err(Fault) => {
            // SAFETY: `status` is a valid byte (this function's contract).
            unsafe { mark_fault(status) };
            ([0, 0], [0, 0], 0, false)
        }
    };
    // SAFETY: plain field writes into the record's slot (this function's
    // contract).
    unsafe {
        (*out).ino = ino;
        (*out).dev = dev as u32;
        (*out).mnt_id = mnt_id;
        (*out).mnt_ns = mnt_ns;
        (*out)._pad = 0;
    }
    // SAFETY: field writes into the record's slot (this function's
    // contract). The mask is a no-op on what the kernel writes (see
    // TAIL_START_MASK) and bounds the walk's writes for the verifier: a
    // start at most TAIL_START_MASK leaves walk() the WALK_MAX bytes its
    // contract asks for, in a tail of TAIL_BUF; see walk() for why it
    // returns the count.
    unsafe {
        let start = bound(
            usize::from(core::ptr::read_volatile(core::ptr::addr_of!((*tail).used))),
            TAIL_START_MASK,
        );
        (*names).start = start as u16;
        (*names)._pad = [0; 2];
        let bytes = core::ptr::addr_of_mut!((*tail).bytes)
            .cast::<u8>()
            .add(start);
        (*names).count = names::walk::<M>(dentry, names, bytes);
        (*tail).used = start as u16 + (*names).used;
        if other_fs {
            (*names).flags |= name_flag::OTHER_FS;
        }
    }
}

/// What the call already knows of one side of the copy.
#[derive(Clone, Copy)]
struct Side {
    file: u64,
    inode: u64,
    sb: u64,
    magic: u64,
    size: i64,
    pos: i64,
}

/// The file's open flags, ops, mode and filesystem type name.
///
/// # Safety
///
/// `fstype` must be valid for writes of a `[u64; 2]` (16 bytes, 8-aligned),
/// and nothing else may access them during the call.
#[inline(always)]
unsafe fn file_details<M: Memory>(
    side: &Side,
    fstype: *mut [u64; 2],
    off: &KernelOffsets,
) -> Result<(u32, u64, u64, u16), Fault> {
    let ty = types();
    let file = M::view(side.file, ty.file);
    let f_flags: u32 = M::read(file, off.file_f_flags)?;
    let fop: u64 = M::read(file, off.file_f_op)?;
    let (copy_op, remap_op) = if fop != 0 {
        (
            M::read(fop, off.fop_copy_file_range)?,
            M::read(fop, off.fop_remap_file_range)?,
        )
    } else {
        (0, 0)
    };
    let mode: u16 = if side.inode != 0 {
        M::read(M::view(side.inode, ty.inode), off.inode_i_mode)?
    } else {
        0
    };
    if side.sb != 0 {
        let fstype_ptr: u64 = M::read(M::view(side.sb, ty.super_block), off.sb_s_type)?;
        if fstype_ptr != 0 {
            let name: u64 = M::read(fstype_ptr, off.fstype_name)?;
            if name != 0 {
                // SAFETY: `fstype` is valid for the write (this function's
                // contract, which is read_str_16's).
                unsafe { M::read_str_16(name, fstype) };
            }
        }
    }
    Ok((f_flags, copy_op, remap_op, mode))
}

/// Fills `fi` with one side of the copy but its open flags, which it
/// returns for the caller to store (see parent() for why). A subprogram:
/// BPF passes at most five arguments, hence `Side`.
///
/// # Safety
///
/// As for [`describe_path`], with `fi` valid for reads and writes of a
/// [`FileInfo`] in place of `out`.
#[inline(never)]
unsafe fn describe_file<M: Memory>(
    side: &Side,
    fi: *mut FileInfo,
    status: *mut u8,
    tail: *mut Tail,
) -> u32 {
    // SAFETY: plain field writes into the record's slot (this function's
    // contract).
    unsafe {
        (*fi).present = u8::from(side.file != 0);
        (*fi).size = side.size;
        (*fi).pos = side.pos;
        (*fi).magic = side.magic;
        (*fi)._pad = 0;
        // Read up to its NUL; an empty name when there is none.
        (*fi).fstype[0] = 0;
    }
    let details = if side.file == 0 {
        Ok((0, 0, 0, 0))
    } else {
        // SAFETY: `fstype` is 16 bytes of `fi` (this function's contract),
        // 8-aligned (copytrace_common checks the offset).
        unsafe {
            file_details::<M>(
                side,
                core::ptr::addr_of_mut!((*fi).fstype).cast(),
                offsets(),
            )
        }
    };
    let (f_flags, copy_op, remap_op, mode) = match details {
        Ok(d) => d,
        Err(Fault) => {
            // SAFETY: `status` is a valid byte (this function's contract).
            unsafe { mark_fault(status) };
            (0, 0, 0, 0)
        }
    };
    // SAFETY: plain field writes into the record's slot (this function's
    // contract). Volatile: two zeros side by side would become a memset
    // call.
    unsafe {
        core::ptr::write_volatile(core::ptr::addr_of_mut!((*fi).copy_op), copy_op);
        core::ptr::write_volatile(core::ptr::addr_of_mut!((*fi).remap_op), remap_op);
        (*fi).mode = mode;
    }
    // SAFETY: `fi.path` is a `PathInfo` of the record, and `status` and
    // `tail` are as describe_path asks (this function's contract is its).
    unsafe {
        describe_path::<M>(
            side.file,
            side.inode,
            side.sb,
            core::ptr::addr_of_mut!((*fi).path),
            status,
            tail,
        )
    };
    f_flags
}

/// Fills `out` with the task's executable (`mm->exe_file`).
///
/// # Safety
///
/// As for [`describe_path`].
#[inline(always)]
unsafe fn exe<M: Memory>(task: u64, out: *mut PathInfo, status: *mut u8, tail: *mut Tail) {
    let off = offsets();
    let found = M::read::<u64>(task, off.task_mm).and_then(|mm| {
        let file: u64 = if mm != 0 {
            M::read(mm, off.mm_exe_file)?
        } else {
            0
        };
        let side = task::file_side::<M>(file, off)?;
        Ok((file, side.inode, side.sb))
    });
    let (file, inode, sb) = match found {
        Ok(f) => f,
        Err(Fault) => {
            // SAFETY: `status` is a valid byte (this function's contract).
            unsafe { mark_fault(status) };
            (0, 0, 0)
        }
    };
    // SAFETY: this function's contract is describe_path's.
    unsafe { describe_path::<M>(file, inode, sb, out, status, tail) };
}
