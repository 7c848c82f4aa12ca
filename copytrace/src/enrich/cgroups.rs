//! Which service made a call: the caller's cgroup v2 path, the systemd unit
//! it belongs to, and the container it runs in, from the cgroup id the
//! kernel records.
//!
//! A cgroup's id is the inode number of its directory in cgroup2fs, so the
//! path is found by asking the caller's `/proc/PID/cgroup` (checked against
//! the id: the process may have moved) or, when the caller is gone, by
//! walking the hierarchy once (rate-limited) and remembering every id.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::model::text::Untrusted;

/// What a cgroup path says about the caller.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Service {
    /// The cgroup v2 path (`/system.slice/nginx.service`).
    pub cgroup: Option<Untrusted>,
    /// The systemd unit (`nginx.service`, `user@1000.service`, `docker-….scope`).
    pub unit: Option<Untrusted>,
    /// Below a user manager, the user's own unit path (`app.slice/app-foo.scope`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_unit: Option<Untrusted>,
    /// The container id a docker, containerd/CRI or podman scope names.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_id: Option<String>,
}

/// Unit name suffixes systemd uses in cgroup paths.
const UNIT_SUFFIXES: [&str; 3] = [".service", ".scope", ".slice"];

fn is_unit(c: &[u8]) -> bool {
    UNIT_SUFFIXES
        .iter()
        .any(|s| c.ends_with(s.as_bytes()) && c.len() > s.len())
}

fn is_hex64(c: &[u8]) -> bool {
    c.len() == 64 && c.iter().all(u8::is_ascii_hexdigit)
}

/// The container id in one path component, if it names one:
/// `docker-<id>.scope`, `cri-containerd-<id>.scope`, `crio-<id>.scope`,
/// `libpod-<id>.scope`, or a bare `<id>` (cgroupfs drivers).
fn container_id(c: &[u8]) -> Option<String> {
    let body = c.strip_suffix(b".scope").unwrap_or(c);
    let id = ["docker-", "cri-containerd-", "crio-", "libpod-"]
        .iter()
        .find_map(|p| body.strip_prefix(p.as_bytes()))
        .unwrap_or(body);
    is_hex64(id).then(|| String::from_utf8_lossy(id).into_owned())
}

/// Derives the unit and container of a cgroup path.
///
/// Whoever a unit delegates its cgroup to (a container runtime, a nested
/// systemd, a user's manager) can create any names below it, so the
/// outermost names decide: the first unit that is not a slice is the unit,
/// and the container id is the outermost one. Below a user manager
/// (`user@UID.service`) the rest is the user's own unit path, and only a
/// rootless runtime's scope (`libpod-<id>.scope`…) names a container there.
pub fn service_of(path: &[u8]) -> Service {
    let comps: Vec<&[u8]> = path
        .split(|&b| b == b'/')
        .filter(|c| !c.is_empty())
        .collect();
    let mut unit = None;
    let mut user_unit = None;
    let mut container = None;
    for (i, c) in comps.iter().enumerate() {
        let user_manager = c.starts_with(b"user@") && c.ends_with(b".service");
        if unit.is_none() && (user_manager || (is_unit(c) && !c.ends_with(b".slice"))) {
            unit = Some(*c);
        }
        if user_manager {
            let rest: Vec<&[u8]> = comps[i + 1..].to_vec();
            if !rest.is_empty() {
                user_unit = Some(rest.join(&b'/'));
            }
            container = container.or_else(|| {
                rest.iter()
                    .filter(|c| c.ends_with(b".scope"))
                    .find_map(|c| container_id(c))
            });
            break;
        }
        container = container.or_else(|| container_id(c));
    }
    if unit.is_none() {
        unit = comps.iter().rev().find(|c| is_unit(c)).copied();
    }
    Service {
        cgroup: Some(Untrusted::new(path.to_vec())),
        unit: unit.map(|u| Untrusted::new(u.to_vec())),
        user_unit: user_unit.map(Untrusted::new),
        container_id: container,
    }
}

/// Least time between two walks of the hierarchy for an id a walk already
/// missed, and for any id at all: a walk reads every cgroup directory, and
/// only root or a delegated user can mint new ids to ask about.
const WALK_EVERY: Duration = Duration::from_secs(1);
const WALK_FLOOR: Duration = Duration::from_millis(50);

/// Most cgroups remembered (a host churning through containers must not
/// grow the daemon without bound).
const MAX_REMEMBERED: usize = 65_536;

/// Most directories one walk reads: a user who mints cgroups by the
/// hundred thousand makes walks cost at most this.
const MAX_WALKED: usize = MAX_REMEMBERED;

/// A walk goes on in steps of at most this long: a call from an unknown
/// cgroup never holds the event loop longer, however many cgroups exist
/// (its record may lack the path until the walk has reached it).
const WALK_STEP: Duration = Duration::from_millis(20);

/// A step that took `t` allows the next only `WALK_DUTY × t` later: walks
/// take at most a tenth of the daemon's time, however often new ids are
/// asked about.
const WALK_DUTY: u32 = 10;

/// cgroup id → path, cached.
#[derive(Debug, Default)]
pub struct CgroupNames {
    root: Option<PathBuf>,
    by_id: HashMap<u64, Vec<u8>>,
    /// Ids a walk did not find (a cgroup removed before we looked).
    missed: std::collections::HashSet<u64>,
    walked: Option<Instant>,
    /// No walk step before this (set from the last step's cost).
    quiet_until: Option<Instant>,
    /// The walk in progress: directories still to read.
    pending: Vec<(PathBuf, Vec<u8>)>,
    /// Directories the walk in progress has read.
    read: usize,
}

/// Where cgroup2 is mounted, from the host's mount table.
fn cgroup2_root() -> Option<PathBuf> {
    let text = std::fs::read("/proc/1/mountinfo")
        .or_else(|_| std::fs::read("/proc/self/mountinfo"))
        .ok()?;
    text.split(|&b| b == b'\n').find_map(|line| {
        let s = String::from_utf8_lossy(line);
        let (left, right) = s.split_once(" - ")?;
        let point = left.split_whitespace().nth(4)?;
        (right.split_whitespace().next()? == "cgroup2").then(|| PathBuf::from(point))
    })
}

impl CgroupNames {
    /// A cache for this machine's cgroup2 hierarchy.
    pub fn load() -> Self {
        CgroupNames {
            root: cgroup2_root(),
            ..Self::default()
        }
    }

    /// A cache for the cgroup2 hierarchy mounted at `root` (or a tree laid
    /// out like one).
    pub fn at(root: PathBuf) -> Self {
        CgroupNames {
            root: Some(root),
            ..Self::default()
        }
    }

    fn id_of(&self, rel: &[u8]) -> Option<u64> {
        use std::os::unix::ffi::OsStrExt;
        let root = self.root.as_ref()?;
        let p = root.join(std::ffi::OsStr::from_bytes(
            rel.strip_prefix(b"/").unwrap_or(rel),
        ));
        std::fs::metadata(p).ok().map(|m| m.ino())
    }

    fn remember(&mut self, id: u64, path: Vec<u8>) {
        if self.by_id.len() >= MAX_REMEMBERED {
            self.by_id.clear();
        }
        self.by_id.insert(id, path);
    }

    /// Goes on with the walk of the hierarchy for at most [`WALK_STEP`],
    /// starting one unless one started within `interval`. Says whether a
    /// whole walk has just ended.
    fn walk(&mut self, interval: Duration) -> bool {
        let now = Instant::now();
        if self.quiet_until.is_some_and(|t| now < t) {
            return false;
        }
        if self.pending.is_empty() {
            if self
                .walked
                .is_some_and(|t| now.duration_since(t) < interval)
            {
                return false;
            }
            let Some(root) = self.root.clone() else {
                return false;
            };
            self.walked = Some(now);
            self.read = 0;
            self.pending.push((root, b"/".to_vec()));
        }
        while let Some((dir, rel)) = self.pending.pop() {
            self.read += 1;
            if self.read > MAX_WALKED {
                self.pending.clear();
                break;
            }
            if let Ok(m) = std::fs::metadata(&dir) {
                self.remember(m.ino(), rel.clone());
            }
            if let Ok(rd) = std::fs::read_dir(&dir) {
                for e in rd.filter_map(Result::ok) {
                    if e.file_type().is_ok_and(|t| t.is_dir()) {
                        use std::os::unix::ffi::OsStrExt;
                        let mut r = rel.clone();
                        if r.len() > 1 {
                            r.push(b'/');
                        }
                        r.extend_from_slice(e.file_name().as_bytes());
                        self.pending.push((e.path(), r));
                    }
                }
            }
            if now.elapsed() > WALK_STEP {
                break;
            }
        }
        self.quiet_until = Some(Instant::now() + now.elapsed() * WALK_DUTY);
        self.pending.is_empty()
    }

    /// The cgroup path of `id` (the caller `pid`'s cgroup at the call).
    pub fn path(&mut self, id: u64, pid: u32) -> Option<Vec<u8>> {
        if let Some(p) = self.by_id.get(&id) {
            return Some(p.clone());
        }
        // The caller says where it is; believe it only if the ids agree.
        if let Some(p) = read_proc_cgroup(Path::new(&format!("/proc/{pid}/cgroup"))) {
            if self.id_of(&p) == Some(id) {
                self.remember(id, p.clone());
                return Some(p);
            }
        }
        // A cgroup not seen before is likely new: worth a walk soon. One a
        // walk already missed is likely gone: not worth many.
        let interval = if self.missed.contains(&id) {
            WALK_EVERY
        } else {
            WALK_FLOOR
        };
        let walked = self.walk(interval);
        let found = self.by_id.get(&id).cloned();
        if found.is_none() && walked {
            if self.missed.len() >= MAX_REMEMBERED {
                self.missed.clear();
            }
            self.missed.insert(id);
        }
        found
    }

    /// The service of a caller.
    pub fn service(&mut self, id: u64, pid: u32) -> Service {
        match self.path(id, pid) {
            Some(p) => service_of(&p),
            None => Service::default(),
        }
    }
}

/// The cgroup v2 path in a `/proc/PID/cgroup` file (`0::/path`).
fn read_proc_cgroup(file: &Path) -> Option<Vec<u8>> {
    let text = std::fs::read(file).ok()?;
    text.split(|&b| b == b'\n')
        .find_map(|l| l.strip_prefix(b"0::"))
        .map(<[u8]>::to_vec)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(path: &str) -> (Option<String>, Option<String>, Option<String>) {
        let s = service_of(path.as_bytes());
        let text = |u: Option<Untrusted>| u.and_then(|u| u.to_str().map(str::to_string));
        (text(s.unit), text(s.user_unit), s.container_id)
    }

    #[test]
    fn units_and_containers_from_paths() {
        let id = "a".repeat(64);
        assert_eq!(
            unit("/system.slice/nginx.service"),
            (Some("nginx.service".into()), None, None)
        );
        assert_eq!(
            unit("/user.slice/user-1000.slice/user@1000.service/app.slice/app-foo.scope"),
            (
                Some("user@1000.service".into()),
                Some("app.slice/app-foo.scope".into()),
                None
            )
        );
        assert_eq!(
            unit(&format!("/system.slice/docker-{id}.scope")),
            (Some(format!("docker-{id}.scope")), None, Some(id.clone()))
        );
        assert_eq!(
            unit(&format!(
                "/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod1234.slice/cri-containerd-{id}.scope"
            ))
            .2,
            Some(id.clone())
        );
        assert_eq!(
            unit(&format!("/machine.slice/libpod-{id}.scope")).2,
            Some(id.clone())
        );
        assert_eq!(unit(&format!("/docker/{id}")).2, Some(id.clone()));
        assert_eq!(unit("/init.scope").0.as_deref(), Some("init.scope"));
        assert_eq!(unit("/").0, None);
        assert_eq!(
            unit("/user.slice").0.as_deref(),
            Some("user.slice"),
            "a slice when nothing deeper"
        );
    }

    #[test]
    fn names_below_a_delegation_cannot_pose_as_another_unit_or_container() {
        let id = "a".repeat(64);
        let other = "b".repeat(64);
        assert_eq!(
            unit("/system.slice/x.scope/sshd.service").0.as_deref(),
            Some("x.scope"),
            "the outermost unit, not one its delegate created"
        );
        assert_eq!(
            unit(&format!("/system.slice/docker-{id}.scope/{other}")),
            (Some(format!("docker-{id}.scope")), None, Some(id.clone())),
            "the outermost container"
        );
        assert_eq!(
            unit(&format!(
                "/user.slice/user-1000.slice/user@1000.service/app.slice/{id}"
            ))
            .2,
            None,
            "a bare id a session user made names no container"
        );
        assert_eq!(
            unit(&format!(
                "/user.slice/user-1000.slice/user@1000.service/user.slice/libpod-{id}.scope"
            ))
            .2,
            Some(id.clone()),
            "a rootless runtime's scope does"
        );
    }

    #[test]
    fn proc_cgroup_lines() {
        let dir = std::env::temp_dir().join(format!("ct-cg-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let f = dir.join("cgroup");
        std::fs::write(&f, "12:cpu:/x\n0::/system.slice/a.service\n").expect("write");
        assert_eq!(
            read_proc_cgroup(&f),
            Some(b"/system.slice/a.service".to_vec())
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
