//! The symbolizer process (`copytrace symbolize-worker`, started by the
//! daemon): confines itself, then answers [`Request`]s on stdin with named
//! stacks on stdout until stdin closes.
//!
//! Every file it reads was chosen by a traced user. A crash, a hang or a
//! bomb here costs the daemon one stack (it kills and replaces this
//! process); everything that keeps growing is bounded so one process can
//! serve many requests.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufReader, BufWriter};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::ExitCode;

use blazesym::symbolize::source::{Elf, Source};
use blazesym::symbolize::{Input, Symbolized, Symbolizer};

use super::confine::{confine, MAX_FILES};
use super::identity::{
    fd_path, file_offset_of, load_segments, open_verified, virt_of, Refusal, Segment,
};
use super::protocol::{
    read_blocking, write_blocking, Answer, FileIdentity, FrameError, Mapped, Offset, Placed,
    Request, MAX_REQUEST,
};
use super::unwind::{load_bias, read_sections, unwind, ModuleIn, UnwindSections};
use crate::enrich::stack::{unnamed, Frame, MappingsFrom, Method, Stack, NOTE, NOTE_UNWOUND};
use crate::model::text::Untrusted;
use copytrace_common::{UNWIND_BURST, UNWIND_REFILL_NS};

/// Files one blazesym instance may hold open before it is replaced (it
/// keeps every file it has seen, and this process has [`MAX_FILES`] descriptors).
const FILES_PER_SYMBOLIZER: usize = (MAX_FILES / 4) as usize;

/// Versions of files (a file whose size or mtime changed is a new one to
/// blazesym, which keeps the old one open) one blazesym instance may load
/// before it is replaced.
const VERSIONS_PER_SYMBOLIZER: usize = (MAX_FILES / 4) as usize;

/// What blazesym tells versions of a file apart by.
type Version = (u64, u64, u64, i64, i64);

fn version_of(file: &File) -> Option<Version> {
    use std::os::unix::fs::MetadataExt;
    let m = file.metadata().ok()?;
    Some((m.dev(), m.ino(), m.size(), m.mtime(), m.mtime_nsec()))
}

/// The uid that owns the system's binaries: only their debug links and
/// `.dwp` files are followed (a user's binary must not make us open other paths).
const ROOT: u32 = 0;

/// A file opened for one request.
struct Opened {
    file: File,
    root_owned: bool,
    segments: Option<Option<Vec<Segment>>>,
    sections: Option<UnwindSections>,
}

impl Opened {
    fn segments(&mut self) -> Option<&[Segment]> {
        let file = &self.file;
        self.segments
            .get_or_insert_with(|| load_segments(file))
            .as_deref()
    }

    /// Its unwind sections, read once.
    fn load_sections(&mut self) {
        if self.sections.is_none() {
            self.sections = Some(read_sections(&self.file));
        }
    }
}

/// Names frames. Files stay open while it lives, so each keeps one
/// stable name for blazesym; past [`FILES_PER_SYMBOLIZER`] it starts
/// afresh (blazesym keeps every file it has seen).
struct Namer {
    symbolizer: Symbolizer,
    files: HashMap<(Vec<u8>, FileIdentity), Result<Opened, Refusal>>,
    loaded: std::collections::HashSet<Version>,
}

fn new_symbolizer() -> Symbolizer {
    Symbolizer::new()
}

impl Namer {
    fn new() -> Self {
        Self {
            symbolizer: new_symbolizer(),
            files: HashMap::new(),
            loaded: std::collections::HashSet::new(),
        }
    }

    /// Starts afresh if `placed`'s file is new and no room is left for it.
    fn make_room(&mut self, placed: &Placed) {
        let key = (placed.path.clone(), placed.identity);
        if !self.files.contains_key(&key) && self.files.len() >= FILES_PER_SYMBOLIZER {
            self.symbolizer = new_symbolizer();
            self.loaded.clear();
            self.files.clear();
        }
    }

    /// The file a frame is in, opened (or refused) once.
    fn file<'a>(
        files: &'a mut HashMap<(Vec<u8>, FileIdentity), Result<Opened, Refusal>>,
        placed: &Placed,
    ) -> Result<&'a mut Opened, Refusal> {
        files
            .entry((placed.path.clone(), placed.identity))
            .or_insert_with(|| {
                let path = Path::new(std::ffi::OsStr::from_bytes(&placed.path));
                open_verified(path, placed.identity).map(|(file, uid)| Opened {
                    file,
                    root_owned: uid == ROOT,
                    segments: None,
                    sections: None,
                })
            })
            .as_mut()
            .map_err(|r| r.clone())
    }

    fn name(
        symbolizer: &Symbolizer,
        opened: &Opened,
        shown_path: &[u8],
        lookup: Input<u64>,
        addr: u64,
    ) -> Result<Frame, String> {
        let mut elf = Elf::new(fd_path(&opened.file));
        elf.debug_syms = opened.root_owned;
        let src = Source::Elf(elf);
        let module = Some(Untrusted::new(shown_path.to_vec()));
        match symbolizer.symbolize_single(&src, lookup) {
            Ok(Symbolized::Sym(sym)) => {
                let code = sym.code_info.as_deref();
                Ok(Frame {
                    addr: format!("{addr:#x}"),
                    function: Some(Untrusted::from(sym.name.as_ref())),
                    file: code.map(|c| Untrusted::new(c.to_path().as_os_str().as_bytes().to_vec())),
                    line: code.and_then(|c| c.line),
                    module,
                    inlined: sym
                        .inlined
                        .iter()
                        .map(|f| Untrusted::from(f.name.as_ref()))
                        .collect(),
                    method: Method::Unknown,
                })
            }
            Ok(Symbolized::Unknown(_)) => Ok(Frame {
                module,
                ..unnamed(addr)
            }),
            Err(e) => Err(e.to_string()),
        }
    }
}

/// Whether the instruction before `ret` (bytes ending at `ret`) is a call.
pub fn is_call_before(before: &[u8]) -> bool {
    if cfg!(target_arch = "aarch64") {
        // BL imm26, or BLR Xn.
        let Some(w) = before
            .get(before.len().wrapping_sub(4)..)
            .and_then(|b| <[u8; 4]>::try_from(b).ok())
        else {
            return false;
        };
        let insn = u32::from_le_bytes(w);
        return insn & 0xfc00_0000 == 0x9400_0000 || insn & 0xffff_fc1f == 0xd63f_0000;
    }
    let at = |back: usize| {
        before
            .len()
            .checked_sub(back)
            .and_then(|i| before.get(i))
            .copied()
    };
    // call rel32
    if at(5) == Some(0xe8) {
        return true;
    }
    // call r/m (FF /2), with a ModRM of every length x86-64 uses for it.
    let modrm_call = |op: usize, modrm: usize| {
        at(op) == Some(0xff) && at(modrm).is_some_and(|m| m & 0x38 == 0x10)
    };
    modrm_call(2, 1) || modrm_call(3, 2) || modrm_call(4, 3) || modrm_call(6, 5) || modrm_call(7, 6)
}

/// Where in the file the frame's bytes are, as a file offset and a lookup.
fn locate(opened: &mut Opened, placed: &Placed, addr: u64) -> Option<(u64, Input<u64>)> {
    // Name the instruction the address follows (the call itself), which
    // may be on another line than the address.
    match placed.offset {
        Offset::File(o) => Some((o, Input::FileOffset(o.checked_sub(1)?))),
        Offset::CodeStart(start) => {
            let segs = opened.segments()?;
            let v = virt_of(segs, start, addr)?;
            Some((
                file_offset_of(segs, v)?,
                Input::VirtOffset(v.checked_sub(1)?),
            ))
        }
    }
}

/// A frame to name: where it is, how it was found, and whether it is a
/// candidate to drop (rather than end the stack) when it does not follow
/// a call instruction.
struct Candidate {
    addr: u64,
    placed: Option<Placed>,
    method: Method,
    optional: bool,
}

/// The frames of `req` unwound from its stack copy, placed in its
/// mappings; None when it has none or the unwind found no caller.
fn unwound(namer: &mut Namer, req: &Request) -> Option<(Vec<Candidate>, Option<String>)> {
    let input = req.unwind.as_ref()?;
    let placed_file = |m: &Mapped| Placed {
        path: m.path.clone(),
        identity: m.identity,
        offset: Offset::File(m.offset),
    };
    for m in &input.mappings {
        let placed = placed_file(m);
        namer.make_room(&placed);
        if let Ok(opened) = Namer::file(&mut namer.files, &placed) {
            opened.load_sections();
            let _ = opened.segments();
        }
    }
    let modules: Vec<ModuleIn<'_>> = input
        .mappings
        .iter()
        .filter_map(|m| {
            let opened = namer
                .files
                .get(&(m.path.clone(), m.identity))?
                .as_ref()
                .ok()?;
            let segments = opened.segments.as_ref()?.as_deref()?;
            Some(ModuleIn {
                mapped: m,
                bias: load_bias(segments, m)?,
                sections: opened.sections.as_ref()?,
            })
        })
        .collect();
    let found = unwind(input, &modules);
    if found.frames.len() < 2 {
        return None;
    }
    let frames = found
        .frames
        .iter()
        .map(|&(addr, method)| Candidate {
            addr,
            placed: input
                .mappings
                .iter()
                .find(|m| (m.start..m.end).contains(&addr))
                .map(|m| Placed {
                    offset: Offset::File(addr - m.start + m.offset),
                    ..placed_file(m)
                }),
            method,
            optional: false,
        })
        .collect();
    Some((frames, found.stopped))
}

/// The frame-pointer walk's frames.
fn walked(req: &Request) -> Vec<Candidate> {
    req.frames
        .iter()
        .enumerate()
        .map(|(i, f)| Candidate {
            addr: f.addr,
            placed: f.placed.clone(),
            method: if i == 0 {
                Method::InstructionPointer
            } else {
                Method::FramePointer
            },
            optional: false,
        })
        .collect()
}

/// Adds the leaf wrapper's return address as a candidate second frame
/// when the second frame came from a frame pointer: a wrapper that keeps
/// none (libc's, Go's assembly) hides its caller from that step.
fn with_leaf_return(mut frames: Vec<Candidate>, req: &Request) -> Vec<Candidate> {
    let Some(leaf) = &req.leaf_return else {
        return frames;
    };
    let by_frame_pointer = frames
        .get(1)
        .is_none_or(|f| f.method == Method::FramePointer);
    let known = frames.get(1).is_some_and(|f| f.addr == leaf.addr);
    if !frames.is_empty() && by_frame_pointer && !known && leaf.placed.is_some() {
        frames.insert(
            1,
            Candidate {
                addr: leaf.addr,
                placed: leaf.placed.clone(),
                method: Method::LeafReturn,
                optional: true,
            },
        );
    }
    frames
}

/// Names a request's frames (unwound when it can be, else walked),
/// checking each after the first follows a call.
fn stack(namer: &mut Namer, req: &Request) -> Stack {
    let (frames, stopped, note) = match unwound(namer, req) {
        Some((frames, stopped)) => (frames, stopped, NOTE_UNWOUND),
        None => (walked(req), None, NOTE),
    };
    let frames = with_leaf_return(frames, req);
    let mut stack = Stack {
        frames: Vec::new(),
        cut: None,
        note: note.into(),
        mappings: req.mappings_from,
    };
    for (i, f) in frames.iter().enumerate() {
        let Some(placed) = &f.placed else {
            if f.optional {
                continue;
            }
            if req.mappings_from.is_some_and(MappingsFrom::is_whole) {
                stack.cut = Some(format!(
                    "frame {i} ({:#x}) is in no executable mapping: the chain ends",
                    f.addr
                ));
                break;
            }
            // Without the map only the executable's frames can be placed.
            stack.frames.push(Frame {
                method: f.method,
                ..unnamed(f.addr)
            });
            stack.cut.get_or_insert_with(|| {
                "frames outside the executable cannot be named: the caller's memory map was not readable".into()
            });
            continue;
        };
        namer.make_room(placed);
        let opened = match Namer::file(&mut namer.files, placed) {
            Ok(o) => o,
            Err(refusal) => {
                stack.frames.push(Frame {
                    method: f.method,
                    ..unnamed(f.addr)
                });
                stack
                    .cut
                    .get_or_insert_with(|| format!("frame {i} not named: {refusal}"));
                continue;
            }
        };
        let Some((offset, lookup)) = locate(opened, placed, f.addr) else {
            if f.optional {
                continue;
            }
            stack.cut = Some(format!(
                "frame {i} ({:#x}) is in no segment of its file",
                f.addr
            ));
            break;
        };
        if i > 0 {
            let mut before = [0u8; 8];
            let read = offset
                .checked_sub(8)
                .is_some_and(|at| opened.file.read_exact_at(&mut before, at).is_ok());
            if !read || !is_call_before(&before) {
                if f.optional {
                    continue;
                }
                stack.cut = Some(format!(
                    "frame {i} ({:#x}) does not follow a call instruction: code without unwind information or frame pointers broke the chain",
                    f.addr
                ));
                break;
            }
        }
        if let Some(v) = version_of(&opened.file) {
            if !namer.loaded.contains(&v) && namer.loaded.len() >= VERSIONS_PER_SYMBOLIZER {
                namer.symbolizer = new_symbolizer();
                namer.loaded.clear();
            }
            namer.loaded.insert(v);
        }
        let named = Namer::name(&namer.symbolizer, opened, &placed.path, lookup, f.addr);
        match named {
            Ok(frame) => stack.frames.push(Frame {
                method: f.method,
                ..frame
            }),
            Err(e) => {
                stack.frames.push(Frame {
                    method: f.method,
                    ..unnamed(f.addr)
                });
                stack
                    .cut
                    .get_or_insert_with(|| format!("frame {i} not named: {e}"));
            }
        }
    }
    if stack.cut.is_none() {
        stack.cut = stopped;
    }
    if req.copy_skipped && stack.cut.is_none() {
        stack.cut = Some(format!(
            "the kernel copied only the stack's first words: this CPU had taken more than {UNWIND_BURST} whole copies in a burst ({} a second), so frames follow frame pointers",
            1_000_000_000 / UNWIND_REFILL_NS
        ));
    }
    stack.bounded()
}

/// The symbolizer process's main.
pub fn main() -> ExitCode {
    let mut out = BufWriter::new(io::stdout().lock());
    if let Err(e) = confine() {
        let answer: Answer = Err(format!("the symbolizer could not confine itself: {e}"));
        let _ = write_blocking(&mut out, &answer);
        return ExitCode::FAILURE;
    }
    let mut input = BufReader::new(io::stdin().lock());
    let mut namer = Namer::new();
    loop {
        let req: Request = match read_blocking(&mut input, MAX_REQUEST) {
            Ok(r) => r,
            Err(FrameError::Io(e)) if e.kind() == io::ErrorKind::UnexpectedEof => {
                return ExitCode::SUCCESS
            }
            Err(e) => {
                let answer: Answer = Err(format!("a request the symbolizer cannot read: {e}"));
                let _ = write_blocking(&mut out, &answer);
                return ExitCode::FAILURE;
            }
        };
        let answer: Answer = Ok(stack(&mut namer, &req));
        if write_blocking(&mut out, &answer).is_err() {
            return ExitCode::FAILURE;
        }
    }
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use super::*;

    #[test]
    fn recognises_x86_calls() {
        assert!(is_call_before(&[0, 0, 0, 0xe8, 1, 2, 3, 4]), "call rel32");
        assert!(
            is_call_before(&[0, 0, 0, 0, 0, 0, 0xff, 0xd0]),
            "call *%rax"
        );
        assert!(
            is_call_before(&[0, 0, 0xff, 0x15, 1, 2, 3, 4]),
            "call *disp32(%rip)"
        );
        assert!(!is_call_before(&[0x90; 8]), "nops");
        assert!(
            !is_call_before(&[0, 0, 0, 0, 0, 0, 0xff, 0xe0]),
            "jmp *%rax is no call"
        );
    }
}
