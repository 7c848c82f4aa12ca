//! Reading kernel and user memory. Every read can fail (a bad pointer, a
//! page not present): the helpers say so instead of handing back a zero
//! that would look like a real value. Typed loads ([`Typed`], where the
//! kernel allows them) cannot say so: a fault reads as zero, which the
//! walks treat as "no such object".

use aya_ebpf::{
    helpers::{bpf_probe_read_kernel, bpf_probe_read_user, generated},
    macros::map,
    maps::PerCpuArray,
};
use copytrace_common::{bound, RDONLY_CAST_PLACEHOLDER};

use crate::globals::types;

/// A kernel or user read failed.
pub struct Fault;

/// Reads a `T` at `base + off` in kernel memory.
#[inline(always)]
pub fn read<T>(base: u64, off: u32) -> Result<T, Fault> {
    // SAFETY: bpf_probe_read_kernel copies through the fault-tolerant
    // copy_from_kernel_nofault: any address is safe, a bad one is an error.
    unsafe { bpf_probe_read_kernel((base + u64::from(off)) as *const T) }.map_err(|_| Fault)
}

/// Reads a `T` at a user-space address of the current task.
#[inline(always)]
pub fn read_user<T>(addr: u64) -> Result<T, Fault> {
    // SAFETY: bpf_probe_read_user copies with copy_from_user_nofault: any
    // address is safe, a bad one is an error.
    unsafe { bpf_probe_read_user(addr as *const T) }.map_err(|_| Fault)
}

/// Words a span read ([`read_two`], [`read_user_two`]) covers with one helper call.
pub const SPAN_WORDS: usize = 8;

/// Per-CPU landing place of kread's span reads (one helper call for two fields).
#[map]
pub static SPAN: PerCpuArray<[u64; SPAN_WORDS]> = PerCpuArray::with_max_entries(1, 0);

/// Which address space a span read reads.
#[derive(Clone, Copy)]
enum Space {
    Kernel,
    User,
}

/// Reads the words at addresses `a` and `b` with one helper call, when
/// they lie within [`SPAN_WORDS`] words of each other and a whole number
/// of words apart: a helper call costs far more than the bytes it copies.
/// It reads only the span from the lower word to the higher. None when
/// they are further apart or the span cannot be read: the caller then
/// reads them one by one.
#[inline(always)]
fn read_span(a: u64, b: u64, space: Space) -> Option<(u64, u64)> {
    let (lo, hi) = if a <= b { (a, b) } else { (b, a) };
    let gap = hi - lo;
    if gap % 8 != 0 || gap >= (SPAN_WORDS * 8) as u64 {
        return None;
    }
    let buf = SPAN.get_ptr_mut(0)?;
    // A bound the verifier can follow, 8..=64 bytes (bound() keeps the
    // compiler from dropping a mask the check above makes redundant).
    let len = bound(gap as usize, 0x38) as u32 + 8;
    let src = lo as *const core::ffi::c_void;
    // SAFETY: the helper writes `len` <= SPAN_WORDS * 8 bytes into this
    // CPU's span slot, read back below, and faults harmlessly on a bad
    // address. Nothing else uses the slot in between: tracepoint programs
    // do not nest on a CPU. An fentry program runs with migration disabled,
    // and only a fully preemptible kernel could run another on this CPU
    // between the read and its use (the SCRATCH record slot carries the
    // same assumption).
    let r = unsafe {
        match space {
            Space::Kernel => generated::bpf_probe_read_kernel(buf.cast(), len, src),
            Space::User => generated::bpf_probe_read_user(buf.cast(), len, src),
        }
    };
    if r != 0 {
        return None;
    }
    let word = |p: u64| ((p - lo) / 8) as usize & (SPAN_WORDS - 1);
    // SAFETY: indices are masked into the slot, and both words were read.
    Some(unsafe { ((*buf)[word(a)], (*buf)[word(b)]) })
}

/// Reads the two 8-byte fields at `base + a` and `base + b` of kernel
/// memory: with one helper call when [`read_span`] can, else with two.
#[inline(always)]
pub fn read_two(base: u64, a: u32, b: u32) -> Result<(u64, u64), Fault> {
    if let Some(both) = read_span(base + u64::from(a), base + u64::from(b), Space::Kernel) {
        return Ok(both);
    }
    Ok((read(base, a)?, read(base, b)?))
}

/// Reads the `i64`s at user addresses `a` and `b` with one helper call
/// (callers often keep both copy offsets side by side). None when
/// [`read_span`] cannot: the caller then reads them one by one.
#[inline(always)]
pub fn read_user_two(a: u64, b: u64) -> Option<(i64, i64)> {
    read_span(a, b, Space::User).map(|(x, y)| (x as i64, y as i64))
}

/// How a program reads kernel structs. Every walk is written once, generic
/// over this, and each program runs the one its kernel allows (see
/// [`typed`]): the verifier drops the other as dead code.
pub trait Memory {
    /// Whether a read is a plain load, cheaper than any helper call (else
    /// it is one, and neighbouring fields are worth one combined read).
    const PLAIN_LOADS: bool;
    /// `ptr`, made readable as the struct of BTF id `ty` (a `KernelTypes`
    /// field). Pointers read through this memory are readable already.
    fn view(ptr: u64, ty: u32) -> u64;
    /// Reads a `T` at `base + off` of a readable pointer (see [`Memory::view`]).
    fn read<T>(base: u64, off: u32) -> Result<T, Fault>;
    /// Copies the 16 bytes at `base + off` of a readable pointer (a
    /// `comm`) to `dst`; a failed read leaves zeros.
    ///
    /// # Safety
    ///
    /// `dst` must be valid for writes of a `[u64; 2]` (16 bytes, 8-aligned),
    /// and nothing else may access those bytes during the call.
    unsafe fn read_16(base: u64, off: u32, dst: *mut [u64; 2]) -> Result<(), Fault>;
    /// Copies the first 16 bytes of the kernel string at `ptr` to `dst`:
    /// NUL-terminated if shorter, and what follows its NUL is not defined.
    ///
    /// # Safety
    ///
    /// As for [`Memory::read_16`]: `dst` must be valid for writes of a
    /// `[u64; 2]`, and nothing else may access those bytes during the call.
    unsafe fn read_str_16(ptr: u64, dst: *mut [u64; 2]);
}

/// Reads through `bpf_probe_read_kernel`: one helper call each, any kernel.
pub enum Helper {}

impl Memory for Helper {
    const PLAIN_LOADS: bool = false;

    #[inline(always)]
    fn view(ptr: u64, _ty: u32) -> u64 {
        ptr
    }

    #[inline(always)]
    fn read<T>(base: u64, off: u32) -> Result<T, Fault> {
        read(base, off)
    }

    /// # Safety
    ///
    /// As for [`Memory::read_16`].
    #[inline(always)]
    unsafe fn read_16(base: u64, off: u32, dst: *mut [u64; 2]) -> Result<(), Fault> {
        let src = (base + u64::from(off)) as *const core::ffi::c_void;
        // SAFETY: the helper writes 16 bytes at `dst` (zeros when it fails),
        // which the caller made writable (this function's contract), and
        // faults harmlessly on a bad `src`.
        match unsafe { generated::bpf_probe_read_kernel(dst.cast(), 16, src) } {
            0 => Ok(()),
            _ => Err(Fault),
        }
    }

    /// # Safety
    ///
    /// As for [`Memory::read_str_16`].
    #[inline(always)]
    unsafe fn read_str_16(ptr: u64, dst: *mut [u64; 2]) {
        // SAFETY: the helper writes at most 16 bytes at `dst`, NUL
        // included, which the caller made writable (this function's
        // contract), and faults harmlessly on a bad `ptr`.
        unsafe {
            generated::bpf_probe_read_kernel_str(dst.cast(), 16, ptr as *const core::ffi::c_void)
        };
    }
}

/// Plain loads through pointers the verifier knows by their BTF type
/// (Linux 6.2+): it checks each against the struct's layout and turns it
/// into a fault-tolerant load that costs what a load costs. A faulting
/// load reads as zero, which every walk treats as "no such object".
pub enum Typed {}

impl Memory for Typed {
    const PLAIN_LOADS: bool = true;

    #[inline(always)]
    fn view(ptr: u64, ty: u32) -> u64 {
        // SAFETY: the placeholder is rewritten to the bpf_rdonly_cast kfunc
        // call before loading (see RDONLY_CAST_PLACEHOLDER), whose result
        // is `ptr` itself as a read-only pointer to struct `ty`, and which
        // the verifier turns into a register move.
        unsafe {
            let cast: unsafe extern "C" fn(u64, u32) -> u64 =
                core::mem::transmute(RDONLY_CAST_PLACEHOLDER as usize);
            cast(ptr, ty)
        }
    }

    #[inline(always)]
    fn read<T>(base: u64, off: u32) -> Result<T, Fault> {
        // SAFETY: `base` came from view() or from a load through such a
        // pointer: the verifier checks this load against the BTF layout
        // and makes it fault-tolerant.
        Ok(unsafe { core::ptr::read_volatile((base + u64::from(off)) as *const T) })
    }

    /// # Safety
    ///
    /// As for [`Memory::read_16`].
    #[inline(always)]
    unsafe fn read_16(base: u64, off: u32, dst: *mut [u64; 2]) -> Result<(), Fault> {
        // The verifier allows word loads from a char array inside it (a
        // `comm`): two loads instead of a helper call.
        let a = Self::read::<u64>(base, off)?;
        let b = Self::read::<u64>(base, off + 8)?;
        // SAFETY: `dst` is 16 writable bytes, 8-aligned (this function's
        // contract).
        unsafe { dst.write([a, b]) };
        Ok(())
    }

    /// # Safety
    ///
    /// As for [`Memory::read_str_16`].
    #[inline(always)]
    unsafe fn read_str_16(ptr: u64, dst: *mut [u64; 2]) {
        // A string has no BTF type: view it as a struct that starts with a
        // long enough char array. The bytes past its NUL are whatever
        // follows it in memory (a fault reads as zeros), cut off by the
        // reader at the NUL.
        // SAFETY: `dst` is valid for a `[u64; 2]` write (this function's
        // contract, which is read_16's).
        let _ = unsafe { Self::read_16(Self::view(ptr, types().text), 0, dst) };
    }
}

/// Whether this kernel has `bpf_rdonly_cast`, so programs read through
/// [`Typed`]. A load from a frozen read-only global: the verifier knows the
/// value and explores only the branch it selects.
#[inline(always)]
pub fn typed() -> bool {
    // SAFETY: a read of a load-time global (see globals::types()).
    unsafe { core::ptr::read_volatile(core::ptr::addr_of!(types().rdonly_cast)) != 0 }
}
