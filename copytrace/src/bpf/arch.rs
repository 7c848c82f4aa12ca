//! What differs between the architectures copytrace knows: the syscall
//! wrapper the fentry back-end hooks, and where `pt_regs` keeps the syscall
//! arguments. On any other architecture the fentry syscall side is off and
//! the tracepoint back-end still works.

use super::btf::{Btf, BtfError};

/// How one architecture passes syscall arguments to its wrapper.
#[derive(Debug, Clone, Copy)]
pub struct SyscallAbi {
    /// The architecture's name, as Rust spells it.
    pub arch: &'static str,
    /// `__<arch>_sys_copy_file_range(const struct pt_regs *)`.
    pub wrapper: &'static str,
    regs: Regs,
}

#[derive(Debug, Clone, Copy)]
enum Regs {
    /// Six named `pt_regs` members (x86-64).
    Members([&'static str; 6]),
    /// Elements 0..6 of an array member of u64s (arm64's `regs[31]`; at the
    /// wrapper's entry regs[0] still holds the first argument, orig_x0 a
    /// copy kept for restarts).
    Array(&'static str),
}

/// The ABI of the architecture this binary was built for, if copytrace knows it.
pub const CURRENT: Option<SyscallAbi> = if cfg!(target_arch = "x86_64") {
    Some(SyscallAbi {
        arch: "x86_64",
        wrapper: "__x64_sys_copy_file_range",
        regs: Regs::Members(["di", "si", "dx", "r10", "r8", "r9"]),
    })
} else if cfg!(target_arch = "aarch64") {
    Some(SyscallAbi {
        arch: "aarch64",
        wrapper: "__arm64_sys_copy_file_range",
        regs: Regs::Array("regs"),
    })
} else {
    None
};

impl SyscallAbi {
    /// `pt_regs` offsets of syscall arguments 0..6 in this kernel's BTF.
    pub fn arg_offsets(&self, btf: &Btf) -> Result<[u32; 6], BtfError> {
        let mut out = [0u32; 6];
        match self.regs {
            Regs::Members(names) => {
                for (slot, reg) in out.iter_mut().zip(names) {
                    *slot = btf.member_offset("pt_regs", reg)?;
                }
            }
            Regs::Array(member) => {
                let base = btf.member_offset("pt_regs", member)?;
                for (i, slot) in out.iter_mut().enumerate() {
                    *slot = base + 8 * i as u32;
                }
            }
        }
        Ok(out)
    }
}
