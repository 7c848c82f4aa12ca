//! Which code made a suspicious call: the user-space return addresses the
//! kernel captured (bpf_get_stack walks frame pointers), checked and named.
//!
//! Each address is placed in the caller's memory map (`/proc/PID/maps`,
//! read as soon as the call is seen) or, when that is gone or unreadable
//! (a sandboxed daemon may not read other processes' maps), in the
//! executable's code range the kernel recorded. Every frame after the
//! first must be a return address: the bytes before it must be a call
//! instruction, or the frame-pointer chain went through code built without
//! frame pointers and the stack is cut there, said so, never guessed past.
//! Names come from the binaries' symbol tables and DWARF (blazesym).

use std::collections::{HashMap, VecDeque};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use blazesym::symbolize::source::{Elf, Source};
use blazesym::symbolize::{Input, Symbolized, Symbolizer};
use serde::{Deserialize, Serialize};

use crate::model::event::RawStack;
use crate::model::text::Untrusted;

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
}

/// A symbolized stack.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stack {
    /// Innermost first.
    pub frames: Vec<Frame>,
    /// Why the frames stop where they do, when it is not the kernel's depth
    /// limit or the outermost frame.
    pub cut: Option<String>,
    /// How the frames were found and what that means.
    pub note: String,
}

/// What every stack says about its frames.
const NOTE: &str = "frames follow frame pointers: the caller of a function built without them (libc's syscall wrappers, Go's assembly) is missing from the list, the frames shown are real";

/// One executable mapping of /proc/PID/maps.
#[derive(Debug, Clone)]
struct Mapping {
    start: u64,
    end: u64,
    offset: u64,
    path: Vec<u8>,
}

fn parse_maps(text: &[u8]) -> Vec<Mapping> {
    text.split(|&b| b == b'\n')
        .filter_map(|line| {
            let mut f = line.splitn(6, |&b| b == b' ');
            let range = std::str::from_utf8(f.next()?).ok()?;
            let perms = f.next()?;
            let offset = std::str::from_utf8(f.next()?).ok()?;
            let _dev = f.next()?;
            let _ino = f.next()?;
            let path = f.next()?.trim_ascii_start();
            if perms.get(2) != Some(&b'x') || !path.starts_with(b"/") {
                return None;
            }
            let (s, e) = range.split_once('-')?;
            Some(Mapping {
                start: u64::from_str_radix(s, 16).ok()?,
                end: u64::from_str_radix(e, 16).ok()?,
                offset: u64::from_str_radix(offset, 16).ok()?,
                path: path.to_vec(),
            })
        })
        .collect()
}

/// Whether the instruction before `ret` (bytes ending at `ret`) is a call.
fn is_call_before(before: &[u8]) -> bool {
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

/// Where a frame's bytes are: a file and either a file offset or a virtual address.
#[derive(Debug, Clone)]
struct Place {
    path: PathBuf,
    file_offset: Option<u64>,
    virt: Option<u64>,
}

/// One PT_LOAD segment of a 64-bit ELF file.
struct Segment {
    offset: u64,
    vaddr: u64,
    filesz: u64,
    executable: bool,
}

/// The PT_LOAD segments of a 64-bit ELF file, from its program headers.
fn load_segments(path: &Path) -> Option<Vec<Segment>> {
    let data = std::fs::read(path).ok()?;
    if data.get(..4)? != b"\x7fELF" || *data.get(4)? != 2 {
        return None;
    }
    let u16_at = |o: usize| Some(u16::from_le_bytes(data.get(o..o + 2)?.try_into().ok()?));
    let u32_at = |o: usize| Some(u32::from_le_bytes(data.get(o..o + 4)?.try_into().ok()?));
    let u64_at = |o: usize| Some(u64::from_le_bytes(data.get(o..o + 8)?.try_into().ok()?));
    let phoff = usize::try_from(u64_at(0x20)?).ok()?;
    let phentsize = usize::from(u16_at(0x36)?);
    let phnum = usize::from(u16_at(0x38)?);
    // A header that cannot be read is skipped, like a segment of another type.
    let segments = (0..phnum)
        .filter_map(|i| {
            let p = phoff + i * phentsize;
            (u32_at(p)? == 1).then_some(())?;
            Some(Segment {
                // PF_X.
                executable: u32_at(p + 4)? & 1 == 1,
                offset: u64_at(p + 8)?,
                vaddr: u64_at(p + 0x10)?,
                filesz: u64_at(p + 0x20)?,
            })
        })
        .collect();
    Some(segments)
}

/// The lowest virtual address of an executable segment of an ELF file
/// (`mm->start_code` minus it is the load bias).
fn exec_vaddr(path: &Path) -> Option<u64> {
    load_segments(path)?
        .iter()
        .filter(|s| s.executable)
        .map(|s| s.vaddr)
        .min()
}

/// How long a process's memory map is reused for its next stacks.
const MAPS_FOR: Duration = Duration::from_secs(1);

/// Stacks resolved recently, reused for calls from the same place (a flood
/// of suspicious calls from one loop costs one symbolization).
const REMEMBERED_STACKS: usize = 256;

/// Names stacks; keeps the parsed binaries (blazesym caches per file).
pub struct Stacks {
    symbolizer: Symbolizer,
    maps: HashMap<u32, (Instant, Vec<Mapping>)>,
    exec_vaddrs: HashMap<PathBuf, Option<u64>>,
    recent: VecDeque<((u64, Vec<u64>), Stack)>,
}

impl std::fmt::Debug for Stacks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Stacks({} stacks remembered)", self.recent.len())
    }
}

impl Default for Stacks {
    fn default() -> Self {
        Stacks {
            symbolizer: Symbolizer::new(),
            maps: HashMap::new(),
            exec_vaddrs: HashMap::new(),
            recent: VecDeque::new(),
        }
    }
}

impl Stacks {
    fn maps_of(&mut self, pid: u32) -> Option<Vec<Mapping>> {
        self.maps.retain(|_, (t, _)| t.elapsed() < MAPS_FOR);
        if let Some((_, m)) = self.maps.get(&pid) {
            return Some(m.clone());
        }
        let text = std::fs::read(format!("/proc/{pid}/maps")).ok()?;
        let m = parse_maps(&text);
        if m.is_empty() {
            return None;
        }
        self.maps.insert(pid, (Instant::now(), m.clone()));
        Some(m)
    }

    /// Where `addr` is, from the maps if known, else from the executable's code range.
    fn place(
        &mut self,
        addr: u64,
        maps: Option<&[Mapping]>,
        raw: &RawStack,
        exe: Option<&Path>,
        pid: u32,
    ) -> Option<Place> {
        if let Some(maps) = maps {
            let m = maps.iter().find(|m| (m.start..m.end).contains(&addr))?;
            let own = PathBuf::from(std::ffi::OsStr::from_bytes(&m.path));
            // The caller's own view of the file, if ours does not have it (containers).
            let path = if own.exists() {
                own
            } else {
                let mut through_root = format!("/proc/{pid}/root").into_bytes();
                through_root.extend_from_slice(&m.path);
                PathBuf::from(std::ffi::OsStr::from_bytes(&through_root))
            };
            return Some(Place {
                path,
                file_offset: Some(addr - m.start + m.offset),
                virt: None,
            });
        }
        let (start, end) = raw.code;
        let exe = exe?;
        if !(start..end).contains(&addr) {
            return None;
        }
        let first = *self
            .exec_vaddrs
            .entry(exe.to_path_buf())
            .or_insert_with(|| exec_vaddr(exe));
        let bias = start.checked_sub(first? & !0xfff)?;
        Some(Place {
            path: exe.to_path_buf(),
            file_offset: None,
            virt: Some(addr - bias),
        })
    }

    /// Whether the bytes before `place` end with a call instruction.
    fn returns_from_call(&mut self, place: &Place) -> bool {
        let Ok(file) = std::fs::File::open(&place.path) else {
            return false;
        };
        let offset = match (place.file_offset, place.virt) {
            (Some(o), _) => Some(o),
            (None, Some(v)) => file_offset_of(&place.path, v),
            _ => None,
        };
        let Some(offset) = offset.filter(|o| *o >= 8) else {
            return false;
        };
        let mut before = [0u8; 8];
        file.read_exact_at(&mut before, offset - 8).is_ok() && is_call_before(&before)
    }

    fn name(&self, place: &Place, addr: u64) -> Frame {
        // Name the instruction that the address follows (the call itself),
        // which may be on another line than the address.
        let back = 1;
        let src = Source::Elf(Elf::new(&place.path));
        let looked = match (place.file_offset, place.virt) {
            (Some(o), _) => self
                .symbolizer
                .symbolize_single(&src, Input::FileOffset(o - back)),
            (None, Some(v)) => self
                .symbolizer
                .symbolize_single(&src, Input::VirtOffset(v - back)),
            _ => return unnamed(addr, Some(&place.path)),
        };
        match looked {
            Ok(Symbolized::Sym(sym)) => {
                let code = sym.code_info.as_deref();
                Frame {
                    addr: format!("{addr:#x}"),
                    function: Some(Untrusted::from(sym.name.as_ref())),
                    file: code.map(|c| Untrusted::new(c.to_path().as_os_str().as_bytes().to_vec())),
                    line: code.and_then(|c| c.line),
                    module: Some(Untrusted::new(place.path.as_os_str().as_bytes().to_vec())),
                    inlined: sym
                        .inlined
                        .iter()
                        .map(|f| Untrusted::from(f.name.as_ref()))
                        .collect(),
                }
            }
            _ => unnamed(addr, Some(&place.path)),
        }
    }

    /// Checks and names a captured stack. `exe`: the caller's executable as
    /// this daemon can open it.
    pub fn resolve(&mut self, raw: &RawStack, pid: u32, exe: Option<&Path>) -> Stack {
        if let Some(e) = raw.error {
            return Stack {
                frames: Vec::new(),
                cut: Some(format!("the kernel captured no stack (error {e})")),
                note: NOTE.into(),
            };
        }
        let key = (raw.code.0, raw.addrs.clone());
        if let Some((_, s)) = self.recent.iter().find(|(k, _)| *k == key) {
            return s.clone();
        }
        let maps = self.maps_of(pid);
        let mut stack = Stack {
            frames: Vec::new(),
            cut: None,
            note: NOTE.into(),
        };
        for (i, &addr) in raw.addrs.iter().enumerate() {
            let Some(place) = self.place(addr, maps.as_deref(), raw, exe, pid) else {
                if maps.is_some() {
                    stack.cut = Some(format!("frame {i} ({addr:#x}) is in no executable mapping: the frame-pointer chain ends"));
                    break;
                }
                // Without the map only the executable's frames can be placed.
                stack.frames.push(unnamed(addr, None));
                stack.cut.get_or_insert_with(|| {
                    "frames outside the executable cannot be named: the caller's memory map was not readable".into()
                });
                continue;
            };
            if i > 0 && !self.returns_from_call(&place) {
                stack.cut = Some(format!(
                    "frame {i} ({addr:#x}) does not follow a call instruction: code without frame pointers broke the chain"
                ));
                break;
            }
            // Every address is after an instruction: frame 0 after the
            // syscall instruction, the others after their call.
            stack.frames.push(self.name(&place, addr));
        }
        if self.recent.len() >= REMEMBERED_STACKS {
            self.recent.pop_front();
        }
        self.recent.push_back((key, stack.clone()));
        stack
    }
}

fn unnamed(addr: u64, module: Option<&Path>) -> Frame {
    Frame {
        addr: format!("{addr:#x}"),
        function: None,
        file: None,
        line: None,
        module: module.map(|p| Untrusted::new(p.as_os_str().as_bytes().to_vec())),
        inlined: Vec::new(),
    }
}

/// The file offset of virtual address `v` in an ELF file (its PT_LOAD).
fn file_offset_of(path: &Path, v: u64) -> Option<u64> {
    load_segments(path)?
        .iter()
        .find(|s| (s.vaddr..s.vaddr + s.filesz).contains(&v))
        .map(|s| v - s.vaddr + s.offset)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg(target_arch = "x86_64")]
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

    #[test]
    fn reads_executable_mappings() {
        let maps = b"55d0e0a00000-55d0e0a21000 r-xp 00002000 fe:00 123 /usr/bin/cat\n7f00-7f10 rw-p 0 0:0 0 [heap]\n7f20-7f30 r-xp 0 0:0 0 [vdso]\n";
        let m = parse_maps(maps);
        assert_eq!(m.len(), 1);
        assert_eq!((m[0].start, m[0].offset), (0x55d0_e0a0_0000, 0x2000));
        assert_eq!(m[0].path, b"/usr/bin/cat");
    }

    #[test]
    fn names_this_test_binary_s_own_frame() {
        // The address of this very function, as a live process's stack would hold it.
        let here = names_this_test_binary_s_own_frame as *const () as usize as u64 + 1;
        let raw = RawStack {
            addrs: vec![here],
            error: None,
            code: (0, 0),
        };
        let mut stacks = Stacks::default();
        let s = stacks.resolve(&raw, std::process::id(), None);
        let f = &s.frames[0];
        let name = f.function.as_ref().and_then(|n| n.to_str()).unwrap_or("");
        assert!(name.contains("names_this_test_binary_s_own_frame"), "{s:?}");
    }
}
