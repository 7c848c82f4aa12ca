//! Maps a filesystem's device number to where it is mounted, so the
//! filesystem-relative path from the eBPF dentry walk becomes a path users know.

use std::collections::HashMap;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, PartialEq, Eq)]
struct Mount {
    /// Path inside the filesystem that is mounted (bind mounts: not "/").
    root: String,
    /// Where it is mounted.
    point: String,
}

/// A cached view of /proc/self/mountinfo.
#[derive(Debug, Default)]
pub struct MountTable {
    by_dev: HashMap<String, Mount>,
    /// Devices with no mount (pipefs, sockfs…), remembered briefly.
    missing: HashMap<String, Instant>,
}

/// How long a device without a mount is remembered before looking again.
const MISS_TTL: Duration = Duration::from_secs(1);

/// Undoes mountinfo's octal escapes (`\040` for space).
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\' && i + 3 < b.len() {
            if let Some(v) = std::str::from_utf8(&b[i + 1..i + 4])
                .ok()
                .and_then(|d| u8::from_str_radix(d, 8).ok())
            {
                out.push(v);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parses mountinfo text into device → first mount seen.
fn parse(text: &str) -> HashMap<String, Mount> {
    let mut map = HashMap::new();
    for line in text.lines() {
        let f: Vec<&str> = line.split(' ').collect();
        if f.len() < 5 {
            continue;
        }
        // Prefer a mount of the filesystem's root over a bind mount of a subtree.
        let m = Mount {
            root: unescape(f[3]),
            point: unescape(f[4]),
        };
        match map.get(f[2]) {
            Some(Mount { root, .. }) if root == "/" => {}
            _ => {
                map.insert(f[2].to_string(), m);
            }
        }
    }
    map
}

impl MountTable {
    /// Reads /proc/self/mountinfo now.
    pub fn load() -> Self {
        let mut t = Self::default();
        t.refresh();
        t
    }

    fn refresh(&mut self) {
        if let Ok(text) = std::fs::read_to_string("/proc/self/mountinfo") {
            self.by_dev = parse(&text);
        }
    }

    /// The absolute path of `fs_path` on device `dev` ("major:minor"), when mounted.
    pub fn resolve(&mut self, dev: &str, fs_path: &str) -> Option<String> {
        if !self.by_dev.contains_key(dev) {
            if self
                .missing
                .get(dev)
                .is_some_and(|t| t.elapsed() < MISS_TTL)
            {
                return None;
            }
            self.refresh();
            if !self.by_dev.contains_key(dev) {
                self.missing.insert(dev.to_string(), Instant::now());
                return None;
            }
        }
        let m = self.by_dev.get(dev)?;
        join(m, fs_path)
    }
}

fn join(m: &Mount, fs_path: &str) -> Option<String> {
    let rel = fs_path.strip_prefix('/')?;
    let root = m.root.trim_end_matches('/');
    let rel = if root.is_empty() {
        rel
    } else {
        rel.strip_prefix(root.trim_start_matches('/'))?
            .trim_start_matches('/')
    };
    let point = m.point.trim_end_matches('/');
    Some(format!("{point}/{rel}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const INFO: &str = "\
22 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw
30 22 0:5 / /proc rw - proc proc rw
41 22 0:40 / /tmp/my\\040dir rw - tmpfs tmpfs rw,size=64k
42 22 254:0 /srv/data /data rw - ext4 /dev/vda rw
";

    #[test]
    fn resolves_paths_through_mounts() {
        let map = parse(INFO);
        let r = |dev: &str, p: &str| join(map.get(dev)?, p);
        assert_eq!(r("254:0", "/etc/hosts").as_deref(), Some("/etc/hosts"));
        assert_eq!(r("0:5", "/1/status").as_deref(), Some("/proc/1/status"));
        assert_eq!(r("0:40", "/f").as_deref(), Some("/tmp/my dir/f"));
        // Truncated walks stay unresolved rather than guessing.
        assert_eq!(r("0:40", "…/a/f"), None);
    }
}
