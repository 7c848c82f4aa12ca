//! Opening a file a traced user chose, as the file the kernel recorded and
//! nothing else: no symlink followed, no FIFO or device waited on, the
//! inode and device checked, the size capped. Only the ELF and program
//! headers are read, with `pread`, never the whole file.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::Path;

use super::protocol::FileIdentity;

/// The largest file the symbolizer opens (a debug build of a browser is
/// about this size; a larger "executable" is almost surely a bomb).
pub const MAX_FILE: u64 = 512 * 1024 * 1024;

/// Why a file was not used; shown as "stack not available: <why>".
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    /// open(2) failed.
    #[error("{path} cannot be opened: {err}")]
    Open { path: String, err: String },
    /// Not a regular file (a FIFO, a device, a directory, a symlink).
    #[error("{path} is not a regular file")]
    NotRegular { path: String },
    /// Another file now has the name.
    #[error("{path} is not the file the kernel recorded (device {found_dev}, inode {found_ino}; expected {want_dev}, inode {want_ino})")]
    Replaced {
        path: String,
        found_dev: String,
        found_ino: u64,
        want_dev: String,
        want_ino: u64,
    },
    /// Over [`MAX_FILE`].
    #[error("{path} is {size} bytes, over the symbolizer's {MAX_FILE}-byte limit")]
    TooLarge { path: String, size: u64 },
}

/// `path` escaped for a message.
fn shown(path: &Path) -> String {
    crate::model::text::Untrusted::new(path.as_os_str().as_bytes().to_vec()).human()
}

/// Opens `path` if it is a regular file with `identity`, at most [`MAX_FILE`] long.
pub fn open_verified(path: &Path, identity: FileIdentity) -> Result<(File, u32), Refusal> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        // O_NONBLOCK: opening a FIFO with no writer returns at once.
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(|e| Refusal::Open {
            path: shown(path),
            err: e.to_string(),
        })?;
    let meta = file.metadata().map_err(|e| Refusal::Open {
        path: shown(path),
        err: e.to_string(),
    })?;
    if !meta.file_type().is_file() {
        return Err(Refusal::NotRegular { path: shown(path) });
    }
    let found = (libc::major(meta.dev()), libc::minor(meta.dev()));
    if found != (identity.major, identity.minor) || meta.ino() != identity.ino {
        return Err(Refusal::Replaced {
            path: shown(path),
            found_dev: format!("{}:{}", found.0, found.1),
            found_ino: meta.ino(),
            want_dev: format!("{}:{}", identity.major, identity.minor),
            want_ino: identity.ino,
        });
    }
    if meta.len() > MAX_FILE {
        return Err(Refusal::TooLarge {
            path: shown(path),
            size: meta.len(),
        });
    }
    Ok((file, meta.uid()))
}

/// `/proc/self/fd/N` of an open file: a name for it that no one else can
/// change (the symbolizing library opens names, not descriptors).
pub fn fd_path(file: &File) -> std::path::PathBuf {
    format!("/proc/self/fd/{}", file.as_raw_fd()).into()
}

/// One PT_LOAD segment of a 64-bit ELF file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment {
    /// File offset.
    pub offset: u64,
    /// Virtual address.
    pub vaddr: u64,
    /// Bytes in the file.
    pub filesz: u64,
    /// PF_X.
    pub executable: bool,
}

/// Program headers read at most (the kernel's own loader refuses more
/// than 64 KiB of them).
const MAX_PHNUM: usize = 1024;

/// The header of a 64-bit little-endian ELF file (the only kind the
/// architectures copytrace knows run), if `file` starts with one.
pub fn elf64_header(file: &File) -> Option<[u8; 64]> {
    let mut ehdr = [0u8; 64];
    file.read_exact_at(&mut ehdr, 0).ok()?;
    (ehdr.get(..4)? == b"\x7fELF" && ehdr[4] == 2 && ehdr[5] == 1).then_some(ehdr)
}

/// The little-endian u16 at `o` of `b`.
pub fn u16_at(b: &[u8], o: usize) -> Option<u16> {
    Some(u16::from_le_bytes(
        b.get(o..o.checked_add(2)?)?.try_into().ok()?,
    ))
}

/// The little-endian u32 at `o` of `b`.
pub fn u32_at(b: &[u8], o: usize) -> Option<u32> {
    Some(u32::from_le_bytes(
        b.get(o..o.checked_add(4)?)?.try_into().ok()?,
    ))
}

/// The little-endian u64 at `o` of `b`.
pub fn u64_at(b: &[u8], o: usize) -> Option<u64> {
    Some(u64::from_le_bytes(
        b.get(o..o.checked_add(8)?)?.try_into().ok()?,
    ))
}

/// The PT_LOAD segments of a 64-bit little-endian ELF file, from its headers only.
pub fn load_segments(file: &File) -> Option<Vec<Segment>> {
    let ehdr = elf64_header(file)?;
    let phoff = u64_at(&ehdr, 0x20)?;
    let phentsize = usize::from(u16_at(&ehdr, 0x36)?);
    let phnum = usize::from(u16_at(&ehdr, 0x38)?).min(MAX_PHNUM);
    if phentsize < 0x38 {
        return None;
    }
    let mut table = vec![0u8; phnum.checked_mul(phentsize)?];
    file.read_exact_at(&mut table, phoff).ok()?;
    let segments = table
        .chunks_exact(phentsize)
        .filter_map(|p| {
            (u32_at(p, 0)? == 1).then_some(())?;
            Some(Segment {
                executable: u32_at(p, 4)? & 1 == 1,
                offset: u64_at(p, 8)?,
                vaddr: u64_at(p, 0x10)?,
                filesz: u64_at(p, 0x20)?,
            })
        })
        .collect();
    Some(segments)
}

/// The virtual address (in the file's own terms) of `addr` in a process
/// whose `mm->start_code` is `start_code`.
///
/// The kernel sets `start_code` to the load bias plus the lowest PF_X
/// segment's `p_vaddr`, which LLD does not page-align, so the bias is
/// that difference exactly.
pub fn virt_of(segments: &[Segment], start_code: u64, addr: u64) -> Option<u64> {
    let first = segments
        .iter()
        .filter(|s| s.executable)
        .map(|s| s.vaddr)
        .min()?;
    let bias = start_code.checked_sub(first)?;
    addr.checked_sub(bias)
}

/// The file offset of virtual address `v`, from the segment that holds it.
pub fn file_offset_of(segments: &[Segment], v: u64) -> Option<u64> {
    segments
        .iter()
        .find(|s| v >= s.vaddr && v - s.vaddr < s.filesz)
        .and_then(|s| (v - s.vaddr).checked_add(s.offset))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bias_keeps_an_unaligned_first_code_segment() {
        // LLD's layout: R E at 0x12bc0, loaded at 0x5555_5555_4000 + bias.
        let segs = [
            Segment {
                offset: 0,
                vaddr: 0,
                filesz: 0x12bc0,
                executable: false,
            },
            Segment {
                offset: 0x12bc0,
                vaddr: 0x13bc0,
                filesz: 0x1000,
                executable: true,
            },
        ];
        let bias = 0x5555_5555_0000;
        let start_code = bias + 0x13bc0;
        let v = virt_of(&segs, start_code, bias + 0x13c00);
        assert_eq!(v, Some(0x13c00));
        assert_eq!(file_offset_of(&segs, 0x13c00), Some(0x12c00));
    }
}
