//! Walks up a dentry tree into a record's tail: component names leaf
//! first, packed, each read whole (up to NAME_MAX), stopping at the
//! filesystem's root, with a [`NameSpan`] saying how many bytes and
//! components it wrote, whether the walk was complete and whether the leaf
//! was deleted.

use aya_ebpf::helpers::generated::bpf_probe_read_kernel_str;
use copytrace_common::{
    bound, name_flag, KernelOffsets, NameSpan, NAME_AREA, NAME_READ, PATH_DEPTH,
};

use crate::globals::{offsets, types};
use crate::kread::Memory;

/// Writes the path of `dentry` inside its filesystem at `bytes` (in a
/// record being built, with [`copytrace_common::WALK_MAX`] bytes of room)
/// and its extent in `out` (but for `out.start`, the caller's); a failed
/// read marks the path as cut. Returns the number of
/// components (also stored): a subprogram's result must be used by its
/// caller, or the compiler drops it and the return register may point into
/// this subprogram's stack, which the verifier refuses.
///
/// Written for the verifier of older kernels (5.10, 6.1): a subprogram
/// that returns nothing, so its many exits converge at the call site, and
/// whose running length lives in the record rather than in a register, so
/// each iteration has one verifier state instead of one per length.
///
/// # Safety
///
/// `out` must be valid for reads and writes of a [`NameSpan`], and `bytes`
/// for writes of `WALK_MAX` bytes; nothing else may access either during
/// the call.
#[inline(never)]
pub unsafe fn walk<M: Memory>(dentry: u64, out: *mut NameSpan, bytes: *mut u8) -> u8 {
    let off = offsets();
    // SAFETY: `out` and `bytes` point into a record being built (a per-CPU
    // map slot), valid for this walk's accesses (this function's contract);
    // every access below goes through raw pointers into it.
    unsafe {
        (*out).used = 0;
        (*out).count = 0;
        (*out).flags = 0;
    }
    if dentry == 0 {
        return 0;
    }
    let dentry = M::view(dentry, types().dentry);
    let mut count = 0u8;
    let mut flags = 0u8;
    // Unlinked while open: unhashed but not a root (d_unlinked()). A failed
    // read counts as neither.
    let pprev = M::read::<u64>(dentry, off.dentry_d_hash_pprev).unwrap_or(1);
    let parent = M::read::<u64>(dentry, off.dentry_d_parent).unwrap_or(dentry);
    if pprev == 0 && parent != dentry {
        flags |= name_flag::DELETED;
    }
    let mut d = dentry;
    let mut done = false;
    for _ in 0..PATH_DEPTH {
        let Ok(parent) = M::read::<u64>(d, off.dentry_d_parent) else {
            break;
        };
        // The root of a filesystem is its own parent; its name is not a component.
        if parent == d || parent == 0 {
            done = true;
            break;
        }
        // SAFETY: as above.
        let used =
            usize::from(unsafe { core::ptr::read_volatile(core::ptr::addr_of!((*out).used)) });
        if used >= NAME_AREA {
            break;
        }
        let Ok(name) = M::read::<u64>(d, off.dentry_d_name_name) else {
            break;
        };
        let at = bound(used, NAME_AREA - 1);
        // SAFETY: `at` < NAME_AREA and NAME_READ more bytes fit in WALK_MAX.
        let dst = unsafe { bytes.add(at) };
        // SAFETY: `dst` has NAME_READ bytes of room (as above), more than
        // inline_name's INLINE_WORDS * 8.
        let n = match unsafe { inline_name::<M>(d, name, dst, off) } {
            Some(n) => n as i64,
            // SAFETY: the helper writes at most NAME_READ bytes (NUL
            // included) at `dst` and faults harmlessly on a bad `name`.
            None => unsafe {
                bpf_probe_read_kernel_str(
                    dst.cast(),
                    NAME_READ as u32,
                    name as *const core::ffi::c_void,
                )
            },
        };
        if n <= 0 {
            break;
        }
        let next = at + (n as usize).min(NAME_READ);
        // SAFETY: as above.
        unsafe { core::ptr::write_volatile(core::ptr::addr_of_mut!((*out).used), next as u16) };
        count += 1;
        d = parent;
    }
    flags |= if done {
        name_flag::COMPLETE
    } else {
        name_flag::CUT
    };
    // SAFETY: as above. The count goes back through memory: a value the
    // verifier does not know precisely, so every exit of this subprogram
    // looks alike at the call site (older verifiers otherwise keep one
    // state per possible count, per walk).
    unsafe {
        (*out).flags = flags;
        core::ptr::write_volatile(core::ptr::addr_of_mut!((*out).count), count);
        core::ptr::read_volatile(core::ptr::addr_of!((*out).count))
    }
}

/// Words of the largest inline name storage (`d_shortname`, 40 bytes).
const INLINE_WORDS: u32 = 5;

/// Copies `d`'s name, NUL-terminated, to `dst` when it lives inside the
/// dentry (names shorter than the inline storage, most of them), and
/// returns the bytes written. Only where reads are plain loads: a few word
/// loads then cost less than one helper call. Longer names, and every name
/// read through the helper, return None for the string read.
///
/// # Safety
///
/// `dst` must be valid for writes of `INLINE_WORDS * 8` bytes (no alignment
/// needed), and nothing else may access them during the call.
#[inline(always)]
unsafe fn inline_name<M: Memory>(
    d: u64,
    name: u64,
    dst: *mut u8,
    off: &KernelOffsets,
) -> Option<usize> {
    let words = (off.dentry_inline_len / 8).min(INLINE_WORDS);
    if !M::PLAIN_LOADS || words == 0 || name != d + u64::from(off.dentry_inline_name) {
        return None;
    }
    // The loads go through an opaque copy of `d`, taken after the test:
    // knowing that `name` equals `d + offset`, the compiler would load the
    // name's words through `name`, a plain number to verifiers before 6.16
    // (which refuse the load), rather than through `d`, whose type they
    // know. A copy taken before the test was not enough: 6.12 refused the
    // program again after the test moved.
    // SAFETY: a volatile read of a local variable.
    let d = unsafe { core::ptr::read_volatile(&d) };
    let len = M::read::<u32>(d, off.dentry_d_name_len).ok()?;
    if len >= words * 8 {
        return None;
    }
    // Only the words the name reaches: most are one or two.
    for i in 0..INLINE_WORDS {
        if i < words && i * 8 <= len {
            let w = M::read::<u64>(d, off.dentry_inline_name + i * 8).ok()?;
            // SAFETY: at most INLINE_WORDS * 8 bytes at `dst`, which has
            // that much room (this function's contract).
            unsafe { core::ptr::write_unaligned(dst.add(i as usize * 8).cast::<u64>(), w) };
        }
    }
    // A mask the verifier can follow; len is below 40 already.
    let len = bound(len as usize, 63);
    // SAFETY: as above; the bytes past the name are the storage's leftovers,
    // cut off here.
    unsafe { *dst.add(len) = 0 };
    Some(len + 1)
}
