//! Reading kernel and user memory. Every read can fail (a bad pointer, a
//! page not present): the helpers say so instead of handing back a zero
//! that would look like a real value.

use aya_ebpf::helpers::{bpf_probe_read_kernel, bpf_probe_read_user};

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
