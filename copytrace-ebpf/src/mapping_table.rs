//! The table of a stack copy's mappings (see [`crate::mappings`]): each
//! executable file mapping found, with its range, offset and file, then
//! the file's path, written after the copy.
//!
//! Every loop here is a `bpf_loop` callback, verified once (the paths'
//! walks unrolled took 6.1 past its million-instruction limit), and takes
//! no context: its state lives in this CPU's [`TABLE`] slot and the record
//! in its own, so that the frames stay small (6.1 caps the exit program's,
//! the mapping function's and the callbacks' stacks at 512 bytes in all).

use core::ffi::c_void;

use aya_ebpf::{
    helpers::generated::{bpf_loop, bpf_probe_read_kernel_str},
    macros::map,
    maps::PerCpuArray,
};
use copytrace_common::{
    bound, clamp, name_flag, unwind_flag, Event, MappingInfo, MAPPINGS_MAX, MAPPINGS_NAMES_LIMIT,
    MAPPINGS_TABLE_LIMIT, NAME_AREA, NAME_READ, PATH_DEPTH,
};

use crate::describe::location;
use crate::globals::offsets;
use crate::kread::{read, Helper};
use crate::record_slot;

/// The mappings found for one stack and the table's writing in progress.
#[repr(C)]
pub struct Table {
    /// Executable file mappings found: start, end, pgoff, file.
    found: [[u64; 4]; MAPPINGS_MAX],
    n_found: u64,
    /// Where the table starts in the tail.
    at: u64,
    /// The entry being written, where its path's names start in the tail,
    /// and the dentry whose name comes next.
    entry: u64,
    names_at: u64,
    dentry: u64,
    /// Non-zero once the path's walk reached its filesystem's root.
    done: u64,
}

/// This CPU's table (see [`Table`]).
#[map]
static TABLE: PerCpuArray<Table> = PerCpuArray::with_max_entries(1, 0);

/// Forgets the last stack's mappings.
#[inline(always)]
pub fn clear() {
    if let Some(t) = TABLE.get_ptr_mut(0) {
        // SAFETY: this CPU's slot.
        unsafe { (*t).n_found = 0 };
    }
}

/// Keeps one mapping found (start, end, pgoff, file); false when the
/// table is full.
#[inline(always)]
pub fn add(mapping: [u64; 4]) -> bool {
    let Some(t) = TABLE.get_ptr_mut(0) else {
        return false;
    };
    // SAFETY: this CPU's slot.
    unsafe {
        let k = (*t).n_found as usize;
        if k >= MAPPINGS_MAX {
            return false;
        }
        (*t).found[bound(k, MAPPINGS_MAX - 1)] = mapping;
        (*t).n_found += 1;
    }
    true
}

/// Writes the mappings kept after the record's stack copy: the table, then
/// each file's path; `flags` are the scan's [`unwind_flag`] bits. Returns
/// the table's entries.
#[inline(always)]
pub fn write(flags: u32) -> u32 {
    let (Some(ev), Some(t)) = (record_slot::record(), TABLE.get_ptr_mut(0)) else {
        return 0;
    };
    // SAFETY: this CPU's record and table slots, which nothing else uses
    // while this program runs.
    unsafe {
        let tail = core::ptr::addr_of_mut!((*ev).tail);
        let used = usize::from(core::ptr::read_volatile(core::ptr::addr_of!((*tail).used)));
        let at = clamp((used + 7) & !7, MAPPINGS_TABLE_LIMIT);
        let n = bound((*t).n_found as usize, 15).min(MAPPINGS_MAX);
        (*tail).used = (at + n * size_of::<MappingInfo>()) as u16;
        (*t).at = at as u64;
        bpf_loop(
            n as u32,
            each_mapping as *mut c_void,
            core::ptr::null_mut(),
            0,
        );
        (*ev).maps_at = at as u16;
        (*ev).maps_count = n as u8;
        (*ev).unwind_flags |= unwind_flag::MAPPINGS | flags as u8;
        n as u32
    }
}

/// Table entry `k` inside the record's tail.
///
/// # Safety
///
/// `ev` and `t` are this CPU's record and table slots.
#[inline(always)]
unsafe fn entry(ev: *mut Event, t: *mut Table, k: usize) -> *mut MappingInfo {
    // SAFETY: the clamp and the mask keep the entry inside the tail
    // (TAIL_BUF is past MAPPINGS_NAMES_LIMIT, itself past a full table).
    unsafe {
        core::ptr::addr_of_mut!((*ev).tail.bytes)
            .cast::<u8>()
            .add(
                clamp((*t).at as usize, MAPPINGS_TABLE_LIMIT)
                    + bound(k, MAPPINGS_MAX - 1) * size_of::<MappingInfo>(),
            )
            .cast::<MappingInfo>()
    }
}

/// `bpf_loop`'s callback: fills table entry `k` from the `k`th mapping
/// found: its range, offset and file, then the file's path. Read through
/// the helper whatever the program's reads: a few mappings gain nothing
/// from typed loads.
extern "C" fn each_mapping(k: u32, _ctx: *mut c_void) -> i64 {
    let (Some(ev), Some(t)) = (record_slot::record(), TABLE.get_ptr_mut(0)) else {
        return 1;
    };
    let off = offsets();
    let k = bound(k as usize, MAPPINGS_MAX - 1);
    // SAFETY: this CPU's record and table slots; the entry lies below the
    // tail's `used` mark, which write() moved past the table.
    unsafe {
        let slot = entry(ev, t, k);
        let [start, end, pgoff, file] = (*t).found[k];
        (*slot).start = start;
        (*slot).end = end;
        (*slot).pgoff = pgoff;
        let inode = read::<u64>(file, off.file_f_inode).unwrap_or(0);
        let sb = if inode != 0 {
            read::<u64>(inode, off.inode_i_sb).unwrap_or(0)
        } else {
            0
        };
        let out = core::ptr::addr_of_mut!((*slot).path);
        let ([ino, dev], [mnt_id, mnt_ns], dentry, other_fs) =
            location::<Helper>(file, inode, sb, off).unwrap_or(([0, 0], [0, 0], 0, false));
        (*out).ino = ino;
        (*out).dev = dev as u32;
        (*out).mnt_id = mnt_id;
        (*out).mnt_ns = mnt_ns;
        (*out)._pad = 0;
        let names = core::ptr::addr_of_mut!((*out).names);
        let used = usize::from(core::ptr::read_volatile(core::ptr::addr_of!(
            (*ev).tail.used
        )));
        let start = clamp(used, MAPPINGS_NAMES_LIMIT);
        // Volatile: neighbouring zeros would become a memset call.
        core::ptr::write_volatile(core::ptr::addr_of_mut!((*names).start), start as u16);
        core::ptr::write_volatile(core::ptr::addr_of_mut!((*names).used), 0);
        core::ptr::write_volatile(core::ptr::addr_of_mut!((*names).count), 0);
        core::ptr::write_volatile(core::ptr::addr_of_mut!((*names)._pad), [0; 2]);
        (*t).entry = k as u64;
        (*t).names_at = start as u64;
        (*t).dentry = dentry;
        (*t).done = 0;
        let mut flags = 0;
        if dentry != 0 {
            // Unlinked while mapped: unhashed but not a root (d_unlinked()).
            let pprev = read::<u64>(dentry, off.dentry_d_hash_pprev).unwrap_or(1);
            let parent = read::<u64>(dentry, off.dentry_d_parent).unwrap_or(dentry);
            if pprev == 0 && parent != dentry {
                flags |= name_flag::DELETED;
            }
            bpf_loop(
                PATH_DEPTH as u32,
                each_component as *mut c_void,
                core::ptr::null_mut(),
                0,
            );
        }
        flags |= if (*t).done != 0 {
            name_flag::COMPLETE
        } else {
            name_flag::CUT
        };
        if other_fs {
            flags |= name_flag::OTHER_FS;
        }
        (*names).flags = flags;
        let n = core::ptr::read_volatile(core::ptr::addr_of!((*names).used));
        (*ev).tail.used = (start + usize::from(n)) as u16;
    }
    0
}

/// `bpf_loop`'s callback: one component of the current entry's path, leaf
/// first, as names::walk writes them.
extern "C" fn each_component(_i: u32, _ctx: *mut c_void) -> i64 {
    let (Some(ev), Some(t)) = (record_slot::record(), TABLE.get_ptr_mut(0)) else {
        return 1;
    };
    let off = offsets();
    // SAFETY: this CPU's record and table slots; the names start below
    // MAPPINGS_NAMES_LIMIT, with WALK_MAX bytes of room after it.
    unsafe {
        let slot = entry(ev, t, (*t).entry as usize);
        let names = core::ptr::addr_of_mut!((*slot).path.names);
        let bytes = core::ptr::addr_of_mut!((*ev).tail.bytes)
            .cast::<u8>()
            .add(clamp((*t).names_at as usize, MAPPINGS_NAMES_LIMIT));
        let d = (*t).dentry;
        let Ok(parent) = read::<u64>(d, off.dentry_d_parent) else {
            return 1;
        };
        // The root of a filesystem is its own parent; its name is not a component.
        if parent == d || parent == 0 {
            (*t).done = 1;
            return 1;
        }
        let used = usize::from(core::ptr::read_volatile(core::ptr::addr_of!((*names).used)));
        if used >= NAME_AREA {
            return 1;
        }
        let Ok(name) = read::<u64>(d, off.dentry_d_name_name) else {
            return 1;
        };
        let at = bound(used, NAME_AREA - 1);
        let n = bpf_probe_read_kernel_str(
            bytes.add(at).cast(),
            NAME_READ as u32,
            name as *const c_void,
        );
        if n <= 0 {
            return 1;
        }
        let next = at + (n as usize).min(NAME_READ);
        core::ptr::write_volatile(core::ptr::addr_of_mut!((*names).used), next as u16);
        (*names).count += 1;
        (*t).dentry = parent;
    }
    0
}
