//! The table of a stack copy's mappings (see [`crate::mappings`]): each
//! executable file mapping found, with its range, offset and file, then
//! the file's path, written after the copy. Every loop here is a
//! `bpf_loop` callback, verified once: the paths' walks unrolled took 6.1
//! past its million-instruction limit.

use core::ffi::c_void;

use aya_ebpf::helpers::generated::{bpf_loop, bpf_probe_read_kernel_str};
use copytrace_common::{
    bound, clamp, name_flag, unwind_flag, Event, MappingInfo, NameSpan, MAPPINGS_MAX,
    MAPPINGS_NAMES_LIMIT, MAPPINGS_TABLE_LIMIT, NAME_AREA, NAME_READ, PATH_DEPTH,
};

use crate::describe::location;
use crate::globals::offsets;
use crate::kread::{read, Helper};

/// Writes the `n` mappings `found` (start, end, pgoff, file) after the
/// stack copy: the table, then each file's path; `flags` are the scan's
/// [`unwind_flag`] bits.
///
/// # Safety
///
/// `ev` must be valid for reads and writes of a whole [`Event`] (this
/// CPU's record slot), `found` for reads of its array (this CPU's scan
/// slot), and nothing else may access either during the call.
#[inline(always)]
pub unsafe fn write_table(
    ev: *mut Event,
    found: *const [[u64; 4]; MAPPINGS_MAX],
    n: u32,
    flags: u32,
) {
    // SAFETY: the record's slot and the scan's (the caller's contract).
    unsafe {
        let tail = core::ptr::addr_of_mut!((*ev).tail);
        let used = usize::from(core::ptr::read_volatile(core::ptr::addr_of!((*tail).used)));
        let at = clamp((used + 7) & !7, MAPPINGS_TABLE_LIMIT);
        let n = bound(n as usize, 15).min(MAPPINGS_MAX);
        (*tail).used = (at + n * size_of::<MappingInfo>()) as u16;
        let mut table = Table {
            ev,
            found,
            at: at as u64,
        };
        // A loop the verifier checks once, not once per entry: a path
        // walk is costly to verify (8 unrolled took 6.1 past its limit).
        bpf_loop(
            n as u32,
            each_mapping as *mut c_void,
            core::ptr::addr_of_mut!(table).cast(),
            0,
        );
        (*ev).maps_at = at as u16;
        (*ev).maps_count = n as u8;
        (*ev).unwind_flags |= unwind_flag::MAPPINGS | flags as u8;
    }
}

/// What [`each_mapping`] needs: the record, the mappings found, and
/// where the table starts.
#[repr(C)]
struct Table {
    ev: *mut Event,
    found: *const [[u64; 4]; MAPPINGS_MAX],
    at: u64,
}

/// `bpf_loop`'s callback: fills table entry `k`.
extern "C" fn each_mapping(k: u32, ctx: *mut c_void) -> i64 {
    let k = bound(k as usize, MAPPINGS_MAX - 1);
    // SAFETY: `ctx` is write_table()'s `Table`, on its stack, its `ev` the
    // record's slot; the entry lies below the tail's `used` mark, which
    // write_table() moved past the table.
    unsafe {
        let t = &*ctx.cast::<Table>();
        let ev = t.ev;
        let slot = core::ptr::addr_of_mut!((*ev).tail.bytes)
            .cast::<u8>()
            .add(clamp(t.at as usize, MAPPINGS_TABLE_LIMIT) + k * size_of::<MappingInfo>())
            .cast::<MappingInfo>();
        describe_mapping(ev, slot, core::ptr::addr_of!((*t.found)[k]));
    }
    0
}

/// Fills one table entry from a found mapping: its range, offset and
/// file. Read through the helper whatever the program's reads: a few
/// mappings gain nothing from typed loads, and their walks cost the
/// verifier less so. Inlined into its callback: one frame less keeps 6.1's
/// combined stack of the exit program, this module's global function and
/// both callbacks under 512 bytes. Returns the path's component count.
///
/// # Safety
///
/// `ev` as for [`write_table`]; `slot` a [`MappingInfo`] inside its tail
/// below the tail's `used` mark; `found` one of the mappings found.
#[inline(always)]
unsafe fn describe_mapping(ev: *mut Event, slot: *mut MappingInfo, found: *const [u64; 4]) -> u8 {
    let off = offsets();
    // SAFETY: as this function's contract says.
    unsafe {
        let [start, end, pgoff, file] = *found;
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
        let tail = core::ptr::addr_of_mut!((*ev).tail);
        let used = usize::from(core::ptr::read_volatile(core::ptr::addr_of!((*tail).used)));
        let start = clamp(used, MAPPINGS_NAMES_LIMIT);
        // Volatile: neighbouring zeros would become a memset call.
        core::ptr::write_volatile(core::ptr::addr_of_mut!((*names).start), start as u16);
        core::ptr::write_volatile(core::ptr::addr_of_mut!((*names).used), 0);
        core::ptr::write_volatile(core::ptr::addr_of_mut!((*names).count), 0);
        core::ptr::write_volatile(core::ptr::addr_of_mut!((*names)._pad), [0; 2]);
        let mut walk = Walk {
            dentry,
            names,
            bytes: core::ptr::addr_of_mut!((*tail).bytes)
                .cast::<u8>()
                .add(start),
            done: 0,
        };
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
                core::ptr::addr_of_mut!(walk).cast(),
                0,
            );
        }
        flags |= if walk.done != 0 {
            name_flag::COMPLETE
        } else {
            name_flag::CUT
        };
        if other_fs {
            flags |= name_flag::OTHER_FS;
        }
        (*names).flags = flags;
        let n = core::ptr::read_volatile(core::ptr::addr_of!((*names).used));
        (*tail).used = (start + usize::from(n)) as u16;
        core::ptr::read_volatile(core::ptr::addr_of!((*names).count))
    }
}

/// A mapped file's path walk in progress (see [`each_component`]).
#[repr(C)]
struct Walk {
    /// The dentry whose name comes next.
    dentry: u64,
    names: *mut NameSpan,
    /// Where the names start in the tail.
    bytes: *mut u8,
    /// Non-zero once the walk reached its filesystem's root.
    done: u64,
}

/// `bpf_loop`'s callback: one component of a mapped file's path, leaf
/// first, as names::walk writes them. One component per call, so the
/// verifier checks one rather than sixteen: eight unrolled walks took
/// 6.1 past its million-instruction limit.
extern "C" fn each_component(_i: u32, ctx: *mut c_void) -> i64 {
    let off = offsets();
    // SAFETY: `ctx` is describe_mapping()'s `Walk`, on its stack; `names`
    // and `bytes` point into the record's slot, `bytes` with WALK_MAX
    // bytes of room (TAIL_BUF past MAPPINGS_NAMES_LIMIT).
    unsafe {
        let w = &mut *ctx.cast::<Walk>();
        let d = w.dentry;
        let Ok(parent) = read::<u64>(d, off.dentry_d_parent) else {
            return 1;
        };
        // The root of a filesystem is its own parent; its name is not a component.
        if parent == d || parent == 0 {
            w.done = 1;
            return 1;
        }
        let used = usize::from(core::ptr::read_volatile(core::ptr::addr_of!(
            (*w.names).used
        )));
        if used >= NAME_AREA {
            return 1;
        }
        let Ok(name) = read::<u64>(d, off.dentry_d_name_name) else {
            return 1;
        };
        let at = bound(used, NAME_AREA - 1);
        let n = bpf_probe_read_kernel_str(
            w.bytes.add(at).cast(),
            NAME_READ as u32,
            name as *const c_void,
        );
        if n <= 0 {
            return 1;
        }
        let next = at + (n as usize).min(NAME_READ);
        core::ptr::write_volatile(core::ptr::addr_of_mut!((*w.names).used), next as u16);
        (*w.names).count += 1;
        w.dentry = parent;
    }
    0
}
