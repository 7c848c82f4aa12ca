//! Whether a back-end's exit programs record the mappings a suspicious
//! call's stack points into (5.17+; see docs/kernels.md), and which exit
//! programs of the object that means.

use super::btf::Btf;
use super::offsets;

/// Whether a back-end's exit programs record the mappings a stack points
/// into (see docs/kernels.md), and why not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StackMappings {
    /// They do.
    Recorded,
    /// Not asked for, or not possible on this kernel.
    Off(&'static str),
    /// The verifier refused them: the end of its log.
    Refused(String),
}

impl StackMappings {
    /// What a back-end can do here, before the verifier has its say.
    pub fn asked(stacks: bool, btf: &Btf) -> Self {
        if !stacks {
            StackMappings::Off("stacks are off")
        } else if !offsets::mappings_supported(btf) {
            StackMappings::Off("the kernel lacks bpf_find_vma or bpf_loop (5.17+)")
        } else {
            StackMappings::Recorded
        }
    }

    /// Why they are not recorded, or `None` when they are.
    pub fn why_not(&self) -> Option<&str> {
        match self {
            StackMappings::Recorded => None,
            StackMappings::Off(why) => Some(why),
            StackMappings::Refused(why) => Some(why),
        }
    }
}

/// Which syscall exit programs to load: those that record the mappings a
/// stack points into, where the kernel can find them (`bpf_find_vma` and
/// `bpf_loop`, 5.17+) and stacks are on; the object's others otherwise
/// (older verifiers refuse the callbacks even in code that never runs).
#[derive(Clone, Copy)]
pub struct Exits {
    /// On `syscalls:sys_exit_copy_file_range`.
    pub tracepoint: &'static str,
    /// fexit on the syscall wrapper.
    pub wrapper: &'static str,
}

impl Exits {
    /// The exits with the stack's mappings, or without.
    pub fn new(mappings: bool) -> Self {
        if mappings {
            Self {
                tracepoint: "cfr_sys_exit_mappings",
                wrapper: "cfr_wrapper_exit_mappings",
            }
        } else {
            Self {
                tracepoint: "cfr_sys_exit",
                wrapper: "cfr_wrapper_exit",
            }
        }
    }
}
