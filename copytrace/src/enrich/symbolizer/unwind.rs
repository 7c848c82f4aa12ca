//! Unwinding a copy of the caller's stack with its binaries' `.eh_frame`
//! (framehop), in the symbolizer process: code built without frame
//! pointers (libc's syscall wrappers, Debian's packages, Rust and C release
//! builds) hides its callers from the kernel's frame-pointer walk.
//!
//! The binaries are the traced user's choice: each section is read with
//! `pread`, at most [`MAX_SECTION`] bytes, from a file opened by identity
//! (see [`super::identity`]), and an unwind takes at most
//! [`STACK_DEPTH`] frames.

use std::fs::File;
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::rc::Rc;

use base64::Engine as _;
use framehop::{ExplicitModuleSectionInfo, FrameAddress, Module, Unwinder};

use super::identity::{elf64_header, u16_at, u32_at, u64_at, Segment};
use super::protocol::{Mapped, UnwindInput};
use crate::enrich::stack::Method;
use copytrace_common::event::STACK_DEPTH;

/// The largest section read (libc's `.eh_frame` is about 200 KiB; a
/// larger one is a bomb, and its binary is unwound without it).
const MAX_SECTION: u64 = 32 << 20;

/// Section headers read at most.
const MAX_SHNUM: usize = 4096;

/// The sections an unwinder reads from one binary.
#[derive(Debug, Default)]
pub struct UnwindSections {
    text: Option<Range<u64>>,
    got: Option<Range<u64>>,
    eh_frame: Option<(Range<u64>, Rc<[u8]>)>,
    eh_frame_hdr: Option<(Range<u64>, Rc<[u8]>)>,
}

impl UnwindSections {
    /// Whether the binary has unwind information (else framehop falls back
    /// to frame pointers in its code).
    fn has_eh_frame(&self) -> bool {
        self.eh_frame.is_some()
    }
}

/// `.text`, `.got`, `.eh_frame` and `.eh_frame_hdr` of a 64-bit
/// little-endian ELF file, from its section headers.
pub fn read_sections(file: &File) -> UnwindSections {
    read_sections_of(file).unwrap_or_default()
}

fn read_sections_of(file: &File) -> Option<UnwindSections> {
    let ehdr = elf64_header(file)?;
    let shoff = u64_at(&ehdr, 0x28)?;
    let shentsize = usize::from(u16_at(&ehdr, 0x3a)?);
    let shnum = usize::from(u16_at(&ehdr, 0x3c)?).min(MAX_SHNUM);
    let shstrndx = usize::from(u16_at(&ehdr, 0x3e)?);
    if shentsize < 0x40 || shnum == 0 {
        return None;
    }
    let mut table = vec![0u8; shnum.checked_mul(shentsize)?];
    file.read_exact_at(&mut table, shoff).ok()?;
    // (name offset, address, file offset, size, type)
    let headers: Vec<(u32, u64, u64, u64, u32)> = table
        .chunks_exact(shentsize)
        .map(|h| {
            Some((
                u32_at(h, 0)?,
                u64_at(h, 0x10)?,
                u64_at(h, 0x18)?,
                u64_at(h, 0x20)?,
                u32_at(h, 4)?,
            ))
        })
        .collect::<Option<_>>()?;
    let strtab = headers.get(shstrndx)?;
    let names = read_bounded(file, strtab.2, strtab.3)?;
    let name_of = |off: u32| {
        let rest = names.get(off as usize..)?;
        Some(&rest[..rest.iter().position(|&b| b == 0)?])
    };
    // SHT_NOBITS sections have no bytes in the file.
    const SHT_NOBITS: u32 = 8;
    let mut out = UnwindSections::default();
    for &(name, addr, offset, size, kind) in &headers {
        let range = addr..addr.saturating_add(size);
        match name_of(name) {
            Some(b".text") => out.text = Some(range),
            Some(b".got") => out.got = Some(range),
            Some(b".eh_frame") if kind != SHT_NOBITS => {
                out.eh_frame = read_bounded(file, offset, size).map(|d| (range, d.into()));
            }
            Some(b".eh_frame_hdr") if kind != SHT_NOBITS => {
                out.eh_frame_hdr = read_bounded(file, offset, size).map(|d| (range, d.into()));
            }
            _ => {}
        }
    }
    Some(out)
}

/// `size` bytes at `offset`, when at most [`MAX_SECTION`].
fn read_bounded(file: &File, offset: u64, size: u64) -> Option<Vec<u8>> {
    if size > MAX_SECTION {
        return None;
    }
    let mut buf = vec![0u8; usize::try_from(size).ok()?];
    file.read_exact_at(&mut buf, offset).ok()?;
    Some(buf)
}

/// Where an executable mapping's file is loaded: the difference between
/// its addresses in the caller's memory and in the file's own terms, from
/// the executable PT_LOAD segment the mapping holds. The mapping starts at
/// a page boundary, which may be below the segment's start: LLD does not
/// page-align segments, so that page also holds the end of the segment
/// before, and only the executable one says where the code is.
pub fn load_bias(segments: &[Segment], m: &Mapped) -> Option<u64> {
    let len = m.end.checked_sub(m.start)?;
    let seg = segments.iter().find(|s| {
        s.executable
            && s.offset < m.offset.saturating_add(len)
            && m.offset < s.offset.saturating_add(s.filesz)
    })?;
    // File offset `seg.offset` is at `m.start + (seg.offset - m.offset)`.
    let at = m.start.checked_add(seg.offset)?.checked_sub(m.offset)?;
    at.checked_sub(seg.vaddr)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::enrich::symbolizer::protocol::FileIdentity;

    fn mapped(start: u64, end: u64, offset: u64) -> Mapped {
        Mapped {
            start,
            end,
            offset,
            path: Vec::new(),
            identity: FileIdentity {
                major: 0,
                minor: 0,
                ino: 0,
            },
        }
    }

    /// rustc's LLD layout (readelf -l of a real binary): the code segment
    /// starts mid-page, 0x1000 above its file offset, and the kernel maps
    /// its page from file offset 0x15000 (/proc/PID/maps). The bias is
    /// where the file's first page was mapped (offset 0, address 0).
    #[test]
    fn an_unaligned_code_segment_gets_the_bias_of_the_whole_file() {
        let segs = [
            Segment {
                offset: 0,
                vaddr: 0,
                filesz: 0x15394,
                executable: false,
            },
            Segment {
                offset: 0x153a0,
                vaddr: 0x163a0,
                filesz: 0x40c30,
                executable: true,
            },
        ];
        let code = mapped(0x5555_5556_a000, 0x5555_555a_b000, 0x15000);
        assert_eq!(load_bias(&segs, &code), Some(0x5555_5555_4000));
    }
}

/// One module the unwinder may use: a mapping, its load bias and its sections.
pub struct ModuleIn<'a> {
    pub mapped: &'a Mapped,
    pub bias: u64,
    pub sections: &'a UnwindSections,
}

/// Frames found by unwinding, innermost first, each with how it was found,
/// and why the unwind stopped short of the stack's end, if it did.
#[derive(Debug, Default)]
pub struct Unwound {
    pub frames: Vec<(u64, Method)>,
    pub stopped: Option<String>,
}

/// Unwinds `input`'s stack copy through `modules`.
pub fn unwind(input: &UnwindInput, modules: &[ModuleIn<'_>]) -> Unwound {
    let stack = match base64::engine::general_purpose::STANDARD.decode(&input.stack) {
        Ok(s) => s,
        Err(e) => {
            return Unwound {
                frames: Vec::new(),
                stopped: Some(format!("the stack copy does not decode: {e}")),
            }
        }
    };
    let sp = input.regs[1];
    let mut read_stack = |addr: u64| -> Result<u64, ()> {
        let at = usize::try_from(addr.checked_sub(sp).ok_or(())?).map_err(|_| ())?;
        let word = stack.get(at..at.checked_add(8).ok_or(())?).ok_or(())?;
        Ok(u64::from_ne_bytes(word.try_into().map_err(|_| ())?))
    };
    let with_eh_frame = |addr: u64| {
        modules
            .iter()
            .find(|m| (m.mapped.start..m.mapped.end).contains(&addr))
            .map(|m| m.sections.has_eh_frame())
    };
    let section = |s: &Option<(Range<u64>, Rc<[u8]>)>| s.as_ref().map(|(r, _)| r.clone());
    // Shared, not copied: a module is built per request.
    let data = |s: &Option<(Range<u64>, Rc<[u8]>)>| s.as_ref().map(|(_, d)| d.clone());
    let module = |m: &ModuleIn<'_>| {
        let s = m.sections;
        Module::new(
            String::from_utf8_lossy(&m.mapped.path).into_owned(),
            m.mapped.start..m.mapped.end,
            m.bias,
            ExplicitModuleSectionInfo {
                base_svma: 0,
                text_svma: s.text.clone(),
                got_svma: s.got.clone(),
                eh_frame_svma: section(&s.eh_frame),
                eh_frame: data(&s.eh_frame),
                eh_frame_hdr_svma: section(&s.eh_frame_hdr),
                eh_frame_hdr: data(&s.eh_frame_hdr),
                ..Default::default()
            },
        )
    };
    let mut out = Unwound::default();
    #[cfg(target_arch = "aarch64")]
    let (mut unwinder, mut cache, regs) = (
        framehop::aarch64::UnwinderAarch64::<Rc<[u8]>>::new(),
        framehop::aarch64::CacheAarch64::<_>::new(),
        framehop::aarch64::UnwindRegsAarch64::new(input.regs[3], sp, input.regs[2]),
    );
    #[cfg(not(target_arch = "aarch64"))]
    let (mut unwinder, mut cache, regs) = (
        framehop::x86_64::UnwinderX86_64::<Rc<[u8]>>::new(),
        framehop::x86_64::CacheX86_64::<_>::new(),
        framehop::x86_64::UnwindRegsX86_64::new(input.regs[0], sp, input.regs[2]),
    );
    for m in modules {
        unwinder.add_module(module(m));
    }
    let mut frames = unwinder.iter_frames(input.regs[0], regs, &mut cache, &mut read_stack);
    // The unwind rule of a frame comes from the function it is in: a return
    // address was found with the `.eh_frame` of the frame below it.
    let mut below = None;
    while out.frames.len() < STACK_DEPTH {
        match frames.next() {
            Ok(Some(FrameAddress::InstructionPointer(ip))) => {
                out.frames.push((ip, Method::InstructionPointer));
                below = Some(ip);
            }
            Ok(Some(FrameAddress::ReturnAddress(ret))) => {
                let how = match below.and_then(with_eh_frame) {
                    Some(true) => Method::EhFrame,
                    _ => Method::FramePointer,
                };
                out.frames.push((ret.get(), how));
                below = Some(ret.get());
            }
            Ok(None) => break,
            Err(e) => {
                out.stopped = Some(format!(
                    "unwinding stopped after frame {}: {e}",
                    out.frames.len().saturating_sub(1)
                ));
                break;
            }
        }
    }
    out
}
