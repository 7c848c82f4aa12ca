//! The caller's executable mappings, which place stack addresses in
//! files: as the kernel found them at the call (5.17+), or from
//! `/proc/PID/maps` read as soon as the call is seen.

use std::io::Read;

use super::super::symbolizer::protocol::{FileIdentity, Mapped};
use crate::model::event::{StackMapping, StackMappings};
use crate::model::text::Untrusted;

/// The executable, file-backed mappings of a /proc/PID/maps text.
pub(super) fn parse_maps(text: &[u8]) -> Vec<Mapped> {
    text.split(|&b| b == b'\n')
        .filter_map(|line| {
            let mut f = line.splitn(6, |&b| b == b' ');
            let range = std::str::from_utf8(f.next()?).ok()?;
            let perms = f.next()?;
            let offset = std::str::from_utf8(f.next()?).ok()?;
            let dev = std::str::from_utf8(f.next()?).ok()?;
            let ino = std::str::from_utf8(f.next()?).ok()?;
            let path = f.next()?.trim_ascii_start();
            if perms.get(2) != Some(&b'x') || !path.starts_with(b"/") {
                return None;
            }
            let (s, e) = range.split_once('-')?;
            let (major, minor) = dev.split_once(':')?;
            Some(Mapped {
                start: u64::from_str_radix(s, 16).ok()?,
                end: u64::from_str_radix(e, 16).ok()?,
                offset: u64::from_str_radix(offset, 16).ok()?,
                identity: FileIdentity {
                    major: u32::from_str_radix(major, 16).ok()?,
                    minor: u32::from_str_radix(minor, 16).ok()?,
                    ino: ino.parse().ok()?,
                },
                path: path.to_vec(),
            })
        })
        .collect()
}

/// The most of a memory map read (a process can make its map hundreds
/// of MiB long); a longer one is treated as unreadable.
const MAX_MAPS: u64 = 1024 * 1024;

/// The caller's executable mappings, while it is alive and we may read them.
pub(super) fn maps_of(pid: u32) -> Option<Vec<Mapped>> {
    let file = std::fs::File::open(format!("/proc/{pid}/maps")).ok()?;
    let mut text = Vec::new();
    file.take(MAX_MAPS + 1).read_to_end(&mut text).ok()?;
    if text.len() as u64 > MAX_MAPS {
        return None;
    }
    let mut m = parse_maps(&text);
    // In address order (the kernel prints them so), for the binary searches
    // of `mapping_of`: a map can hold thousands of mappings.
    m.sort_unstable_by_key(|m| m.start);
    (!m.is_empty()).then_some(m)
}

/// The mapping of `maps` (in address order) that holds `addr`.
pub(super) fn mapping_of(maps: &[Mapped], addr: u64) -> Option<usize> {
    let i = maps.partition_point(|m| m.start <= addr).checked_sub(1)?;
    (addr < maps[i].end).then_some(i)
}

/// The kernel's mappings of a stack as the daemon can open them: each with
/// its host path (`host_path` resolves a mapped file's location; a file on
/// no mount the daemon sees is left out), in address order.
pub fn from_kernel(
    found: &StackMappings,
    mut host_path: impl FnMut(&StackMapping) -> Option<Untrusted>,
) -> Vec<Mapped> {
    let page = page_size();
    let mut m: Vec<Mapped> = found
        .found
        .iter()
        .filter(|k| k.start < k.end && !k.location.deleted)
        .filter_map(|k| {
            let path = host_path(k)?;
            Some(Mapped {
                start: k.start,
                end: k.end,
                offset: k.pgoff.checked_mul(page)?,
                path: path.as_bytes().to_vec(),
                identity: FileIdentity {
                    major: k.location.dev_raw >> 20,
                    minor: k.location.dev_raw & 0xf_ffff,
                    ino: k.location.ino,
                },
            })
        })
        .collect();
    m.sort_unstable_by_key(|m| m.start);
    // Two entries for one range would make placement ambiguous; the
    // kernel never sends them, a bad record might.
    m.dedup_by(|b, a| b.start < a.end);
    m
}

/// The page size `vm_pgoff` counts in.
fn page_size() -> u64 {
    // SAFETY: sysconf reads a constant of the process.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    u64::try_from(p).unwrap_or(4096)
}
