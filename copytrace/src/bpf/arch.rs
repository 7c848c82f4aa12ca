//! What differs between the architectures copytrace knows: the syscall
//! wrapper the fentry back-end hooks, and where `pt_regs` keeps the syscall
//! arguments. On any other architecture the fentry syscall side is off and
//! the tracepoint back-end still works.

use copytrace_common::NO_REGISTER;

use super::btf::{Btf, BtfError};

/// How one architecture passes syscall arguments to its wrapper.
#[derive(Debug, Clone, Copy)]
pub struct SyscallAbi {
    /// The architecture's name, as Rust spells it.
    pub arch: &'static str,
    /// `__<arch>_sys_copy_file_range(const struct pt_regs *)`.
    pub wrapper: &'static str,
    regs: Regs,
    user: UserRegs,
}

/// Where `pt_regs` keeps the registers an unwinder starts from.
#[derive(Debug, Clone, Copy)]
enum UserRegs {
    /// Named members: instruction, stack and frame pointer (x86-64 has no
    /// link register: a call pushes the return address).
    Members([&'static str; 3]),
    /// Named pc and sp, and the frame pointer and link register as
    /// elements 29 and 30 of the general registers' array (arm64).
    PcSpArray(&'static str, &'static str, &'static str),
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
        user: UserRegs::Members(["ip", "sp", "bp"]),
    })
} else if cfg!(target_arch = "aarch64") {
    Some(SyscallAbi {
        arch: "aarch64",
        wrapper: "__arm64_sys_copy_file_range",
        regs: Regs::Array("regs"),
        user: UserRegs::PcSpArray("pc", "sp", "regs"),
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

    /// `pt_regs` offsets of the instruction, stack and frame pointers and
    /// the link register ([`NO_REGISTER`] where there is none).
    pub fn user_offsets(&self, btf: &Btf) -> Result<[u32; 4], BtfError> {
        let m = |name| btf.member_offset("pt_regs", name);
        Ok(match self.user {
            UserRegs::Members([ip, sp, fp]) => [m(ip)?, m(sp)?, m(fp)?, NO_REGISTER],
            UserRegs::PcSpArray(pc, sp, array) => {
                let base = m(array)?;
                [m(pc)?, m(sp)?, base + 8 * 29, base + 8 * 30]
            }
        })
    }
}
