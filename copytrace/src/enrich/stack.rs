//! Which code made a suspicious call: the user-space return addresses the
//! kernel captured (bpf_get_stack walks frame pointers), placed in files
//! here and named by the isolated symbolizer process ([`super::symbolizer`]).
//!
//! Each address is placed in the caller's executable mappings: those the
//! kernel found at the call (5.17+), else its memory map (`/proc/PID/maps`,
//! read as soon as the call is seen), else, when that is gone or
//! unreadable (a sandboxed daemon may not read other processes' maps),
//! in the executable's code range the kernel recorded. Every placement
//! names the file's identity (device and inode) as the kernel or the map
//! recorded it: the symbolizer opens a name, then refuses any other file
//! there.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use copytrace_common::event::STACK_DEPTH;

use super::fresh::Fresh;
use base64::Engine as _;

use super::symbolizer::protocol::{
    FileIdentity, FrameAt, Mapped, Offset, Placed, Request, RequestKey, UnwindInput,
};
use crate::model::event::{Location, RawStack, UnwindState};
use crate::model::text::Untrusted;

mod maps;
pub use maps::from_kernel as mappings_from_kernel;
#[cfg(test)]
use maps::parse_maps;
use maps::{mapping_of, maps_of};

/// One named frame.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Frame {
    /// The address in the caller's memory (hex: JSON numbers lose 64-bit precision).
    pub addr: String,
    /// The function, when the binary names it.
    pub function: Option<Untrusted>,
    /// Source file and line, when the binary has line tables.
    pub file: Option<Untrusted>,
    pub line: Option<u32>,
    /// The binary the address is in.
    pub module: Option<Untrusted>,
    /// Functions inlined at this address, outermost first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub inlined: Vec<Untrusted>,
    /// How the frame was found.
    #[serde(default)]
    pub method: Method,
}

/// How a frame was found.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    /// The instruction pointer at the syscall (in the syscall wrapper).
    InstructionPointer,
    /// Unwound from the copy of the caller's stack with the `.eh_frame`
    /// of the function below it.
    EhFrame,
    /// A frame pointer: the kernel's walk, or an unwind through code whose
    /// binary has no `.eh_frame`.
    FramePointer,
    /// The return address a leaf syscall wrapper left for its caller (at
    /// the stack pointer, or in arm64's link register), kept because it
    /// follows a call instruction.
    LeafReturn,
    /// Not said (a record from before frames said how they were found).
    #[default]
    Unknown,
}

impl Method {
    /// Stable lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Method::InstructionPointer => "ip",
            Method::EhFrame => "eh_frame",
            Method::FramePointer => "frame pointer",
            Method::LeafReturn => "leaf return",
            Method::Unknown => "?",
        }
    }
}

/// A symbolized stack.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stack {
    /// Innermost first.
    pub frames: Vec<Frame>,
    /// Why the frames stop where they do, or are not named, when it is not
    /// the kernel's depth limit or the outermost frame.
    pub cut: Option<String>,
    /// How the frames were found and what that means.
    pub note: String,
    /// Where the caller's mappings that placed the frames came from
    /// (absent: only the executable's code range was known).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mappings: Option<MappingsFrom>,
}

/// Where the mappings that place a stack's frames in files came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum MappingsFrom {
    /// The kernel, at the call (`bpf_find_vma`, 5.17+): every address
    /// the stack holds was looked up.
    Kernel,
    /// `/proc/PID/maps`, read when the daemon saw the call.
    ProcMaps,
    /// The kernel, but not every address was looked up (its lookups or
    /// table ran out) and the memory map was closed: a frame outside them
    /// goes unnamed rather than ending the chain.
    KernelPartial,
}

impl MappingsFrom {
    /// Whether they are the caller's whole map of executable files: an
    /// address outside them then ends the frame-pointer chain rather than
    /// just going unnamed.
    pub fn is_whole(self) -> bool {
        matches!(self, MappingsFrom::Kernel | MappingsFrom::ProcMaps)
    }
}

/// What a stack found by frame pointers says about its frames.
pub const NOTE: &str = "frames follow frame pointers: the caller of a function built without them (libc's syscall wrappers, Go's assembly) is missing from the list, the frames shown are real";

/// What a stack unwound with `.eh_frame` says about its frames.
pub const NOTE_UNWOUND: &str = "frames unwound from a copy of the caller's stack with its binaries' .eh_frame (frame pointers where a binary has none); each frame says how it was found";

/// The longest name (function, file, module) a frame keeps, in bytes:
/// binaries are user input and a symbol can be megabytes long.
pub const MAX_NAME: usize = 512;

/// Inlined functions a frame keeps.
pub const MAX_INLINED: usize = 16;

/// The longest `cut` or `note`.
const MAX_TEXT: usize = 1024;

fn clip(u: Untrusted) -> Untrusted {
    if u.as_bytes().len() <= MAX_NAME {
        return u;
    }
    let mut b = u.as_bytes()[..MAX_NAME].to_vec();
    b.extend_from_slice("…".as_bytes());
    Untrusted::new(b)
}

fn clip_text(mut s: String) -> String {
    if s.len() > MAX_TEXT {
        let mut end = MAX_TEXT;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
        s.push('…');
    }
    s
}

impl Frame {
    /// This frame within [`MAX_NAME`] and [`MAX_INLINED`].
    pub fn bounded(self) -> Self {
        let mut inlined = self.inlined;
        inlined.truncate(MAX_INLINED);
        Frame {
            addr: clip_text(self.addr),
            function: self.function.map(clip),
            file: self.file.map(clip),
            line: self.line,
            module: self.module.map(clip),
            inlined: inlined.into_iter().map(clip).collect(),
            method: self.method,
        }
    }
}

impl Stack {
    /// This stack within the kernel's depth and every name's bound: what
    /// the daemon keeps, whoever produced it.
    pub fn bounded(self) -> Self {
        Stack {
            frames: self
                .frames
                .into_iter()
                .take(STACK_DEPTH)
                .map(Frame::bounded)
                .collect(),
            cut: self.cut.map(clip_text),
            note: clip_text(self.note),
            mappings: self.mappings,
        }
    }

    /// A stack whose frames are the raw addresses, unnamed, and why.
    pub fn unnamed(addrs: &[u64], why: String) -> Self {
        Stack {
            frames: addrs
                .iter()
                .take(STACK_DEPTH)
                .map(|&a| unnamed(a))
                .collect(),
            cut: Some(clip_text(format!("stack not available: {why}"))),
            note: NOTE.into(),
            mappings: None,
        }
    }
}

/// A frame with only its address.
pub fn unnamed(addr: u64) -> Frame {
    Frame {
        addr: format!("{addr:#x}"),
        function: None,
        file: None,
        line: None,
        module: None,
        inlined: Vec::new(),
        method: Method::Unknown,
    }
}

/// The mappings the kernel found a stack in, as the daemon can open them.
#[derive(Debug, Clone)]
pub struct KernelMaps {
    /// In address order.
    pub maps: Vec<Mapped>,
    /// Every candidate address was looked up and every file placed.
    pub whole: bool,
}

/// The caller's executable as the kernel recorded it.
#[derive(Debug, Clone, Copy)]
pub struct Executable<'a> {
    /// Where it is, as the kernel recorded it.
    pub location: &'a Location,
    /// Its host path, when it is on a mount this daemon sees.
    pub host_path: Option<&'a Untrusted>,
}

/// What to do for one captured stack.
#[derive(Debug)]
pub enum Prepared {
    /// Known already: no file to read.
    Done(Stack),
    /// Ask the symbolizer.
    Ask(Request),
}

/// Stacks named recently, reused for calls from the same place (a flood
/// of suspicious calls from one loop costs one symbolization).
const REMEMBERED_STACKS: usize = 256;

/// How long a process's memory map is reused for its next stacks: a flood
/// of calls from one process (with a map of tens of thousands of lines)
/// reads it once.
const MAPS_FOR: Duration = Duration::from_secs(1);

/// Processes whose maps are kept at once.
const MAPS_KEPT: usize = 64;

/// Places captured stacks in files and remembers named ones.
#[derive(Debug)]
pub struct Stacks {
    recent: VecDeque<RequestKey>,
    named: HashMap<RequestKey, Stack>,
    maps: Fresh<u32, Maps>,
}

/// A process's executable mappings, or `None` when unreadable.
type Maps = Option<Arc<[Mapped]>>;

impl Default for Stacks {
    fn default() -> Self {
        Self {
            recent: VecDeque::new(),
            named: HashMap::new(),
            maps: Fresh::new(MAPS_FOR, MAPS_KEPT),
        }
    }
}

impl Stacks {
    /// Places `raw`'s frames for the symbolizer, or answers from memory.
    /// `kernel_maps` are the mappings the kernel found the stack in
    /// (see [`mappings_from_kernel`]), preferred to `/proc/PID/maps` when
    /// whole: they are the call's own, and the unit lets the daemon read
    /// no other process's map.
    pub fn prepare(
        &mut self,
        raw: &RawStack,
        pid: u32,
        exe: Option<Executable<'_>>,
        kernel_maps: Option<KernelMaps>,
    ) -> Prepared {
        if let Some(e) = raw.error {
            return Prepared::Done(Stack {
                frames: Vec::new(),
                cut: Some(format!("the kernel captured no stack (error {e})")),
                note: NOTE.into(),
                mappings: None,
            });
        }
        let addrs: Vec<u64> = raw.addrs.iter().copied().take(STACK_DEPTH).collect();
        let (maps, from): (Maps, _) = match kernel_maps {
            Some(k) if k.whole && !k.maps.is_empty() => {
                (Some(k.maps.into()), Some(MappingsFrom::Kernel))
            }
            k => match self.maps.get_or_read(pid, || maps_of(pid).map(Into::into)) {
                Some(m) => (Some(m), Some(MappingsFrom::ProcMaps)),
                None => match k.filter(|k| !k.maps.is_empty()) {
                    Some(k) => (Some(k.maps.into()), Some(MappingsFrom::KernelPartial)),
                    None => (None, None),
                },
            },
        };
        let place = match &maps {
            Some(maps) => Placer::Maps(maps),
            None => {
                let in_exe = match exe {
                    None => Err("the kernel recorded no executable".to_string()),
                    Some(e) if e.location.deleted => Err(format!(
                        "the executable {} was deleted, and its name may now be another file",
                        e.location.fs_path.human()
                    )),
                    Some(e) => match e.host_path {
                        None => Err(format!(
                            "the executable {} is on no mount this daemon sees",
                            e.location.fs_path.human()
                        )),
                        Some(p) => Ok((p, e.location)),
                    },
                };
                match in_exe {
                    Ok((path, loc)) => Placer::Exe {
                        path,
                        loc,
                        code: raw.code,
                    },
                    Err(why) => return Prepared::Done(Stack::unnamed(&addrs, why)),
                }
            }
        };
        let frames = addrs.iter().map(|&addr| place.frame(addr)).collect();
        let leaf_return = raw
            .unwind
            .as_ref()
            .and_then(leaf_return_of)
            .map(|addr| place.frame(addr));
        let unwind = match (&maps, &raw.unwind) {
            (Some(maps), Some(u)) if !u.stack.is_empty() && !u.skipped => {
                let mappings = needed(maps, u);
                Some(UnwindInput {
                    regs: u.regs,
                    stack: base64::engine::general_purpose::STANDARD.encode(&u.stack),
                    code_words: code_words(&mappings, u),
                    mappings,
                })
            }
            _ => None,
        };
        let req = Request {
            frames,
            mappings_from: from,
            leaf_return,
            unwind,
            copy_skipped: raw.unwind.as_ref().is_some_and(|u| u.skipped),
        };
        match self.named.get(&req.key()) {
            Some(s) => Prepared::Done(s.clone()),
            None => Prepared::Ask(req),
        }
    }

    /// Keeps a named stack for the next call from the same place.
    pub fn remember(&mut self, req: &Request, stack: &Stack) {
        let key = req.key();
        if self.named.contains_key(&key) {
            return;
        }
        if self.recent.len() >= REMEMBERED_STACKS {
            if let Some(old) = self.recent.pop_front() {
                self.named.remove(&old);
            }
        }
        self.named.insert(key.clone(), stack.clone());
        self.recent.push_back(key);
    }
}

/// Where addresses are placed in files: the caller's map, or (without it)
/// the executable's code range the kernel recorded.
enum Placer<'a> {
    Maps(&'a [Mapped]),
    Exe {
        path: &'a Untrusted,
        loc: &'a Location,
        code: (u64, u64),
    },
}

impl Placer<'_> {
    /// `addr`, placed in its file if it lies in one.
    fn frame(&self, addr: u64) -> FrameAt {
        FrameAt {
            addr,
            placed: self.place(addr),
        }
    }

    fn place(&self, addr: u64) -> Option<Placed> {
        match self {
            Placer::Maps(maps) => mapping_of(maps, addr).map(|i| &maps[i]).map(|m| Placed {
                path: m.path.clone(),
                identity: m.identity,
                offset: Offset::File(addr - m.start + m.offset),
            }),
            Placer::Exe { path, loc, code } => (code.0..code.1).contains(&addr).then(|| Placed {
                path: path.as_bytes().to_vec(),
                identity: FileIdentity {
                    major: loc.dev_raw >> 20,
                    minor: loc.dev_raw & 0xf_ffff,
                    ino: loc.ino,
                },
                offset: Offset::CodeStart(code.0),
            }),
        }
    }
}

/// The return address a leaf syscall wrapper leaves its caller: the word
/// at the stack pointer (x86-64's call pushes it), or the link register
/// (arm64's branch-and-link sets it).
fn leaf_return_of(u: &UnwindState) -> Option<u64> {
    let addr = if cfg!(target_arch = "aarch64") {
        u.regs[3]
    } else {
        u.words().next()?.1
    };
    (addr != 0).then_some(addr)
}

/// Modules an unwind reads at most: past it, the mappings the stack
/// points into least are left out (their frames then end the unwind).
const MAX_MODULES: usize = 64;

/// The words of the stack copy that fall in `mappings` (in address
/// order), with their offsets.
fn code_words(mappings: &[Mapped], u: &UnwindState) -> Vec<(u32, u64)> {
    u.words()
        .filter(|&(_, w)| mapping_of(mappings, w).is_some())
        .collect()
}

/// The executable mappings the instruction pointer or a word of the stack
/// copy falls in: an unwind never needs another, and each one it gets
/// costs the symbolizer a parse.
fn needed(maps: &[Mapped], u: &UnwindState) -> Vec<Mapped> {
    let words = u.words().map(|(_, w)| w);
    let mut hits = vec![0usize; maps.len()];
    for addr in std::iter::once(u.regs[0])
        .chain(std::iter::once(u.regs[3]))
        .chain(words)
    {
        if let Some(i) = mapping_of(maps, addr) {
            hits[i] += 1;
        }
    }
    let mut order: Vec<usize> = (0..maps.len()).filter(|&i| hits[i] > 0).collect();
    order.sort_by_key(|&i| std::cmp::Reverse(hits[i]));
    order.truncate(MAX_MODULES);
    order.sort_unstable();
    order.into_iter().map(|i| maps[i].clone()).collect()
}

#[cfg(test)]
mod tests;
