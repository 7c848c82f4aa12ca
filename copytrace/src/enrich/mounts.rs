//! Turns where the kernel says a file lives (its mount's id, device and the
//! path inside its filesystem) into the absolute path people use, and says
//! when that path is a guess or cannot be known.
//!
//! The mount table read is the host's (`/proc/1/mountinfo`): the daemon may
//! run in a mount namespace of its own (systemd's sandboxing gives it one),
//! whose mounts have other ids and may include a /proc of its own. Mount
//! ids are unique across namespaces, so a file opened through a host mount
//! resolves exactly, even when its device is mounted several times. A file
//! opened in another namespace (a container) is matched to the host's
//! mounts of its device, component by component; its path as its own
//! namespace sees it is read from the caller's mountinfo.

use std::collections::HashMap;
use std::time::Duration;

use super::fresh::Fresh;
use crate::model::event::Location;
use crate::model::text::Untrusted;

/// One line of mountinfo.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Mount {
    id: u32,
    /// "major:minor".
    dev: String,
    /// Path inside the filesystem that is mounted (bind mounts: not "/").
    root: Vec<u8>,
    /// Where it is mounted.
    point: Vec<u8>,
}

/// How a path was found.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resolved {
    /// The absolute path as the host sees it, when it can be known.
    pub path: Option<Untrusted>,
    /// Other host paths of the same file, when its device is mounted
    /// several times and the exact mount is not the host's.
    pub alternatives: Vec<Untrusted>,
    /// The path inside the caller's own mount namespace, when that is not the host's.
    pub ns_path: Option<Untrusted>,
    /// The file's mount is in a namespace other than the host's.
    pub foreign_ns: bool,
}

/// Undoes mountinfo's octal escapes (`\040` for space), keeping raw bytes.
fn unescape(s: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(s.len());
    let mut i = 0;
    while i < s.len() {
        if s[i] == b'\\' && i + 3 < s.len() {
            let digits = &s[i + 1..i + 4];
            if digits.iter().all(|d| (b'0'..=b'7').contains(d)) {
                let v = digits.iter().fold(0u32, |a, d| a * 8 + u32::from(d - b'0'));
                if let Ok(b) = u8::try_from(v) {
                    out.push(b);
                    i += 4;
                    continue;
                }
            }
        }
        out.push(s[i]);
        i += 1;
    }
    out
}

/// Parses mountinfo text (bytes: mount points may be any bytes).
fn parse(text: &[u8]) -> Vec<Mount> {
    text.split(|&b| b == b'\n')
        .filter_map(|line| {
            let f: Vec<&[u8]> = line.split(|&b| b == b' ').collect();
            if f.len() < 5 {
                return None;
            }
            Some(Mount {
                id: std::str::from_utf8(f[0]).ok()?.parse().ok()?,
                dev: String::from_utf8_lossy(f[2]).into_owned(),
                root: unescape(f[3]),
                point: unescape(f[4]),
            })
        })
        .collect()
}

/// `fs_path` relative to `root`, when `root` is a component-wise prefix of it.
fn under<'a>(root: &[u8], fs_path: &'a [u8]) -> Option<&'a [u8]> {
    let root = root.strip_suffix(b"/").unwrap_or(root);
    let rest = fs_path.strip_prefix(root)?;
    if rest.is_empty() {
        Some(rest)
    } else {
        // "/data" is a prefix of "/data/x", not of "/database/x".
        rest.strip_prefix(b"/")
    }
}

/// The absolute path of `fs_path` through mount `m`, if the file is under its root.
fn join(m: &Mount, fs_path: &[u8]) -> Option<Untrusted> {
    let rel = under(&m.root, fs_path)?;
    let point = m.point.strip_suffix(b"/").unwrap_or(&m.point);
    let mut p = Vec::with_capacity(point.len() + rel.len() + 1);
    p.extend_from_slice(point);
    if !rel.is_empty() || p.is_empty() {
        p.push(b'/');
    }
    p.extend_from_slice(rel);
    Some(Untrusted::new(p))
}

/// Where mount tables come from (a seam for tests).
pub trait MountSource {
    /// The host's mountinfo.
    fn host(&self) -> Option<Vec<u8>>;
    /// A process's mountinfo (its own mount namespace).
    fn of_pid(&self, pid: u32) -> Option<Vec<u8>>;
    /// The inode number of the host's mount namespace, when known.
    fn host_ns(&self) -> Option<u32> {
        None
    }
}

/// The running system's /proc.
#[derive(Debug, Default)]
pub struct ProcMounts;

impl MountSource for ProcMounts {
    fn host(&self) -> Option<Vec<u8>> {
        std::fs::read("/proc/1/mountinfo")
            .or_else(|_| std::fs::read("/proc/self/mountinfo"))
            .ok()
    }

    fn of_pid(&self, pid: u32) -> Option<Vec<u8>> {
        use std::io::Read;
        let file = std::fs::File::open(format!("/proc/{pid}/mountinfo")).ok()?;
        let mut text = Vec::new();
        file.take(MAX_FOREIGN_MOUNTINFO + 1)
            .read_to_end(&mut text)
            .ok()?;
        (text.len() as u64 <= MAX_FOREIGN_MOUNTINFO).then_some(text)
    }

    fn host_ns(&self) -> Option<u32> {
        let link = std::fs::read_link("/proc/1/ns/mnt")
            .or_else(|_| std::fs::read_link("/proc/self/ns/mnt"))
            .ok()?;
        let text = link.to_str()?;
        text.strip_prefix("mnt:[")?.strip_suffix(']')?.parse().ok()
    }
}

/// The host's mount table, cached and refreshed when a mount is unknown.
pub struct MountTable {
    source: Box<dyn MountSource + Send>,
    by_id: HashMap<u32, Mount>,
    all: Vec<Mount>,
    /// CLOCK_MONOTONIC when the table was last read, in ns (the kernel's
    /// timestamps' clock).
    read_ns: u64,
    /// Mount ids a refresh did not find (gone, or another namespace's).
    missed: std::collections::HashSet<u32>,
    host_ns: Option<u32>,
    /// (pid, mount namespace) → its table, read at most once per [`FOREIGN_FOR`].
    foreign: Fresh<(u32, u32), ForeignMounts>,
}

impl std::fmt::Debug for MountTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MountTable({} mounts)", self.all.len())
    }
}

impl Default for MountTable {
    fn default() -> Self {
        Self::with_source(Box::new(ProcMounts))
    }
}

/// Least time between two re-reads of the mount table for a mount id a
/// re-read already missed: a burst of files from a namespace the host
/// cannot see must not re-read it per call.
const REFRESH_EVERY: Duration = Duration::from_millis(250);

/// Most mount ids remembered as missed.
const MAX_MISSED: usize = 4096;

/// The longest mount table read from a caller's namespace: a user
/// namespace can hold ~100,000 mounts (10 MB); past this the caller's own
/// view of its files goes unnamed.
const MAX_FOREIGN_MOUNTINFO: u64 = 1024 * 1024;

/// How long a caller namespace's table is reused (one read per burst of
/// calls, not one per file side per call).
const FOREIGN_FOR: Duration = Duration::from_secs(1);

/// Caller namespaces whose tables are kept at once.
const FOREIGN_KEPT: usize = 64;

/// A caller namespace's mounts, or `None` when unreadable or too long.
type ForeignMounts = Option<std::sync::Arc<[Mount]>>;

impl MountTable {
    /// A table read from `source`.
    pub fn with_source(source: Box<dyn MountSource + Send>) -> Self {
        let host_ns = source.host_ns();
        let mut t = MountTable {
            source,
            by_id: HashMap::new(),
            all: Vec::new(),
            read_ns: 0,
            missed: std::collections::HashSet::new(),
            host_ns,
            foreign: Fresh::new(FOREIGN_FOR, FOREIGN_KEPT),
        };
        t.refresh();
        t
    }

    /// Re-reads the table.
    fn refresh(&mut self) {
        self.read_ns = super::monotonic_ns();
        if let Some(text) = self.source.host() {
            self.all = parse(&text);
            self.by_id = self.all.iter().map(|m| (m.id, m.clone())).collect();
        }
    }

    /// Re-reads the table for a file whose mount it does not have, when
    /// that can help: when the table was read before the call at `at_ns`
    /// (a table read since shows every mount there still is), and at most
    /// every [`REFRESH_EVERY`] for an id a re-read already missed.
    fn refresh_for(&mut self, loc: &Location, at_ns: u64) {
        let read_ns = self.read_ns;
        let recent =
            || super::monotonic_ns().saturating_sub(read_ns) < REFRESH_EVERY.as_nanos() as u64;
        if read_ns >= at_ns || (self.missed.contains(&loc.mnt_id) && recent()) {
            return;
        }
        self.refresh();
        if self.host_mount(loc).is_none() {
            if self.missed.len() >= MAX_MISSED {
                self.missed.clear();
            }
            self.missed.insert(loc.mnt_id);
        }
    }

    /// The host mount a file was opened through, if the table has it: the
    /// same id and the same device (ids are reused after an unmount). A
    /// mount the kernel reports detached (namespace 0) is in no table, even
    /// when a table read before its unmount still lists its id: the daemon
    /// may resolve an event after the mount went away. A path on another
    /// filesystem than the file's data (overlayfs's real files on older kernels, such as 6.1)
    /// is on its mount's device, not the data's: the id alone names it.
    fn host_mount(&self, loc: &Location) -> Option<&Mount> {
        if loc.mnt_ns == 0 {
            return None;
        }
        self.by_id
            .get(&loc.mnt_id)
            .filter(|m| loc.path_on_other_fs || m.dev == loc.dev)
    }

    /// Resolves where a file lives; `pid` is the caller (for its
    /// namespace's view), `at_ns` when the call ended (CLOCK_MONOTONIC).
    pub fn resolve(&mut self, loc: &Location, pid: u32, at_ns: u64) -> Resolved {
        let fs_path = loc.fs_path.as_bytes();
        if !loc.path_complete {
            // A path cut short cannot be joined to a mount point.
            return Resolved::default();
        }
        if self.host_mount(loc).is_none() {
            // A new mount; one whose id the kernel gave to a new mount
            // after an unmount (another device); one detached since, whose
            // files other mounts may still reach, mounts as new as it, and
            // whose id a table read before the unmount still lists; or
            // another namespace's.
            self.refresh_for(loc, at_ns);
        }
        if let Some(m) = self.host_mount(loc) {
            return Resolved {
                path: join(m, fs_path),
                ..Resolved::default()
            };
        }
        // Not a host mount: one since unmounted (its namespace is gone, 0)
        // or another namespace's. The host's view by device either way, and
        // the caller's own view by mount id when it is another namespace.
        let foreign = loc.mnt_ns != 0 && self.host_ns != Some(loc.mnt_ns);
        let mut found: Vec<Untrusted> = Vec::new();
        // The file's own mount is never one of them: it is detached or
        // another namespace's, even when a stale table still lists its id.
        // The data's device does not hold a path on another filesystem.
        for m in self
            .all
            .iter()
            .filter(|m| !loc.path_on_other_fs && m.dev == loc.dev && m.id != loc.mnt_id)
        {
            if let Some(p) = join(m, fs_path) {
                if !found.contains(&p) {
                    found.push(p);
                }
            }
        }
        found.sort_by_key(|p| p.as_bytes().len());
        let ns_path = foreign
            .then(|| {
                let source = &self.source;
                self.foreign.get_or_read((pid, loc.mnt_ns), || {
                    source.of_pid(pid).map(|t| parse(&t).into())
                })
            })
            .flatten()
            .and_then(|mounts| mounts.iter().find(|m| m.id == loc.mnt_id).cloned())
            .and_then(|m| join(&m, fs_path));
        let mut found = found.into_iter();
        Resolved {
            path: found.next(),
            alternatives: found.collect(),
            ns_path,
            foreign_ns: foreign,
        }
    }
}

#[cfg(test)]
mod tests;
