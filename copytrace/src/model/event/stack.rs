//! A suspicious call's user stack as the kernel captured it: return
//! addresses, the registers and stack copy an unwinder starts from, and
//! the mappings the kernel found the copy pointing into.

use std::mem::size_of;

use copytrace_common::{unwind_flag, Event, MappingInfo};
use serde::{Deserialize, Serialize};

use super::{location, Location};

/// The caller's user-space stack, as captured for a suspicious call.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RawStack {
    /// Return addresses, innermost first (the first is the syscall's own address).
    pub addrs: Vec<u64>,
    /// Why the kernel gave none (a negative errno of bpf_get_stack).
    pub error: Option<i32>,
    /// Where the executable's code was mapped (start, end), 0 when unknown.
    #[serde(skip)]
    pub code: (u64, u64),
    /// What an unwinder needs, when the kernel could take it.
    #[serde(skip)]
    pub unwind: Option<UnwindState>,
}

/// The caller's registers at the syscall and a copy of its stack from the
/// stack pointer up: what an unwinder that reads `.eh_frame` starts from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UnwindState {
    /// Instruction pointer, stack pointer, frame pointer, link register
    /// (arm64; 0 on x86-64).
    pub regs: [u64; 4],
    /// The stack's bytes from `regs[1]` up.
    pub stack: Vec<u8>,
    /// Only the first words were copied: the CPU had spent its budget of
    /// whole copies (a flood of suspicious calls).
    pub skipped: bool,
    /// The executable mappings the kernel found the stack pointing into,
    /// when it looked (5.17+).
    pub mappings: Option<StackMappings>,
}

/// The executable file mappings the kernel found a stack copy's words,
/// registers and frame-pointer addresses in (`bpf_find_vma`), at the call.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StackMappings {
    /// In the order found.
    pub found: Vec<StackMapping>,
    /// Some words were not looked up, or mappings left out: lookups or
    /// table slots ran out, or the memory map was locked.
    pub partial: bool,
}

/// One executable file mapping of the caller, as the kernel saw it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StackMapping {
    /// Where it is in the caller's memory.
    pub start: u64,
    pub end: u64,
    /// `vm_pgoff`: the file offset at `start`, in pages.
    pub pgoff: u64,
    /// The mapped file.
    pub location: Location,
}

impl UnwindState {
    /// The stack's whole words with their offsets, from the stack pointer up.
    pub fn words(&self) -> impl Iterator<Item = (u32, u64)> + '_ {
        self.stack.chunks_exact(8).enumerate().map(|(i, w)| {
            (
                i as u32 * 8,
                u64::from_ne_bytes(std::array::from_fn(|b| w[b])),
            )
        })
    }
}

/// The mapping table the kernel wrote after the stack copy; entries that
/// do not fit the bytes received are left out (and make it partial).
pub(super) fn mappings(e: &Event, tail: &[u8]) -> StackMappings {
    let size = size_of::<MappingInfo>();
    let at = usize::from(e.maps_at);
    let mut found = Vec::new();
    let mut partial = e.unwind_flags
        & (unwind_flag::MAPPINGS_CUT | unwind_flag::MAPPINGS_FULL | unwind_flag::MAPPINGS_BUSY)
        != 0;
    for k in 0..usize::from(e.maps_count) {
        let Some(b) = tail.get(at + k * size..at + (k + 1) * size) else {
            partial = true;
            break;
        };
        // SAFETY: MappingInfo is plain data, valid for any bits; `b` holds
        // size_of::<MappingInfo>() bytes, read unaligned.
        let m: MappingInfo = unsafe { std::ptr::read_unaligned(b.as_ptr().cast()) };
        found.push(StackMapping {
            start: m.start,
            end: m.end,
            pgoff: m.pgoff,
            location: location(&m.path, tail),
        });
    }
    StackMappings { found, partial }
}
