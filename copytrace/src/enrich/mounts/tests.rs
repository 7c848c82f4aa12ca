use super::*;

struct Fake {
    host: &'static str,
    pid: Option<&'static str>,
}

/// The host's mount namespace in these tests.
const HOST_NS: u32 = 4_026_531_841;

/// When the tests' calls end: after every read of the table.
const LATER: u64 = u64::MAX;

impl MountSource for Fake {
    fn host(&self) -> Option<Vec<u8>> {
        Some(self.host.as_bytes().to_vec())
    }
    fn of_pid(&self, _pid: u32) -> Option<Vec<u8>> {
        self.pid.map(|t| t.as_bytes().to_vec())
    }
    fn host_ns(&self) -> Option<u32> {
        Some(HOST_NS)
    }
}

const HOST: &str = "\
22 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw
30 22 0:5 / /proc rw - proc proc rw
41 22 0:40 / /tmp/my\\040dir rw - tmpfs tmpfs rw,size=64k
42 22 254:0 /srv/data /data rw - ext4 /dev/vda rw
50 22 0:60 /data /mnt/bind rw - tmpfs tmpfs rw
";

fn loc(dev: &str, mnt_id: u32, path: &str) -> Location {
    Location {
        ino: 1,
        dev: dev.into(),
        dev_raw: 0,
        mnt_id,
        mnt_ns: HOST_NS,
        fs_path: Untrusted::from(path),
        path_complete: true,
        deleted: false,
        path_on_other_fs: false,
    }
}

fn table(pid: Option<&'static str>) -> MountTable {
    MountTable::with_source(Box::new(Fake { host: HOST, pid }))
}

fn path(r: Resolved) -> Option<String> {
    r.path.and_then(|p| p.to_str().map(str::to_string))
}

#[test]
fn host_mounts_resolve_exactly_by_id() {
    let mut t = table(None);
    assert_eq!(
        path(t.resolve(&loc("254:0", 22, "/etc/hosts"), 1, LATER)).as_deref(),
        Some("/etc/hosts")
    );
    assert_eq!(
        path(t.resolve(&loc("0:5", 30, "/1/status"), 1, LATER)).as_deref(),
        Some("/proc/1/status")
    );
    assert_eq!(
        path(t.resolve(&loc("0:40", 41, "/f"), 1, LATER)).as_deref(),
        Some("/tmp/my dir/f")
    );
    // The same device through its bind mount: the mount it was opened through.
    assert_eq!(
        path(t.resolve(&loc("254:0", 42, "/srv/data/x"), 1, LATER)).as_deref(),
        Some("/data/x")
    );
}

/// overlayfs on older kernels (6.1) opens its real files with the overlay file's path:
/// the data's device (a tmpfs) with a path inside the overlay mount. The
/// path joins the overlay's mount point, never the tmpfs's.
#[test]
fn a_path_on_another_filesystem_than_its_data_joins_its_own_mount() {
    let overlay = "\
22 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw
41 22 0:40 / /srv/upper rw - tmpfs tmpfs rw
60 22 0:48 / /mnt/ovl rw - overlay overlay rw,lowerdir=/l,upperdir=/srv/upper/up
";
    let mut t = MountTable::with_source(Box::new(Fake {
        host: overlay,
        pid: None,
    }));
    let mut real = loc("0:40", 60, "/b");
    // Without the flag the id's device differs: taken as another mount
    // that reused the id, resolved by device.
    assert_eq!(
        path(t.resolve(&real, 1, LATER)).as_deref(),
        Some("/srv/upper/b")
    );
    real.path_on_other_fs = true;
    let r = t.resolve(&real, 1, LATER);
    assert!(r.alternatives.is_empty(), "{:?}", r.alternatives);
    assert_eq!(path(r).as_deref(), Some("/mnt/ovl/b"));
}

/// A source whose table the test changes.
struct Changing(std::sync::Arc<std::sync::Mutex<String>>);

impl MountSource for Changing {
    fn host(&self) -> Option<Vec<u8>> {
        self.0.lock().ok().map(|t| t.as_bytes().to_vec())
    }
    fn of_pid(&self, _pid: u32) -> Option<Vec<u8>> {
        None
    }
    fn host_ns(&self) -> Option<u32> {
        Some(HOST_NS)
    }
}

/// Found by a test daemon that outlived its tests' mounts: the kernel
/// gave an unmounted tmpfs's id to a new ext4, whose files were then
/// reported under the tmpfs's old mount point.
#[test]
fn a_reused_mount_id_is_not_taken_for_the_old_mount() {
    let text = std::sync::Arc::new(std::sync::Mutex::new(
        "22 1 254:0 / / rw - ext4 /dev/vda rw\n60 22 0:70 / /tmp/old rw - tmpfs tmpfs rw\n"
            .to_string(),
    ));
    let mut t = MountTable::with_source(Box::new(Changing(text.clone())));
    assert_eq!(
        path(t.resolve(&loc("0:70", 60, "/a"), 1, LATER)).as_deref(),
        Some("/tmp/old/a")
    );
    *text.lock().expect("lock") =
        "22 1 254:0 / / rw - ext4 /dev/vda rw\n60 22 7:3 / /tmp/new rw - ext4 /dev/loop3 rw\n"
            .to_string();
    assert_eq!(
        path(t.resolve(&loc("7:3", 60, "/a"), 1, LATER)).as_deref(),
        Some("/tmp/new/a")
    );
}

/// Found by the matrix: a file opened through a mount the table never
/// listed, detached before the call, while two binds of its device,
/// also newer than the table, remain. The table is re-read for it, and
/// only when the call ended after the table was read.
#[test]
fn mounts_newer_than_the_table_name_a_detached_mounts_files() {
    let text = std::sync::Arc::new(std::sync::Mutex::new(
        "22 1 254:0 / / rw - ext4 /dev/vda rw\n".to_string(),
    ));
    let mut t = MountTable::with_source(Box::new(Changing(text.clone())));
    *text.lock().expect("lock") = "22 1 254:0 / / rw - ext4 /dev/vda rw\n\
         71 22 0:80 / /tmp/b1 rw - tmpfs tmpfs rw\n\
         72 22 0:80 / /tmp/b2 rw - tmpfs tmpfs rw\n"
        .to_string();
    let mut l = loc("0:80", 70, "/y");
    l.mnt_ns = 0;
    let before = t.resolve(&l, 1, 0);
    assert_eq!(
        before.path, None,
        "a call older than the table: not re-read"
    );
    let r = t.resolve(&l, 1, LATER);
    let mut seen: Vec<String> = r.alternatives.iter().map(Untrusted::to_string).collect();
    seen.extend(path(r));
    seen.sort();
    assert_eq!(seen, ["/tmp/b1/y", "/tmp/b2/y"]);
}

#[test]
fn joining_respects_components() {
    let mut t = table(None);
    // Reachable only through a bind of its /data: "/database/x" is not under it.
    let r = t.resolve(&loc("0:60", 50, "/database/x"), 1, LATER);
    assert_eq!(r.path, None, "never a path that does not exist");
    assert_eq!(
        path(t.resolve(&loc("0:60", 50, "/data/x"), 1, LATER)).as_deref(),
        Some("/mnt/bind/x")
    );
    assert_eq!(
        path(t.resolve(&loc("0:60", 50, "/data"), 1, LATER)).as_deref(),
        Some("/mnt/bind")
    );
}

#[test]
fn cut_paths_are_not_joined() {
    let mut t = table(None);
    let mut l = loc("0:40", 41, "…/a/f");
    l.path_complete = false;
    assert_eq!(t.resolve(&l, 1, LATER), Resolved::default());
}

#[test]
fn other_namespaces_map_to_the_host_view_and_their_own() {
    // A mount id the host does not have: the caller's namespace bound
    // /srv/data at /inside.
    let mut t = table(Some(
        "900 1 254:0 /srv/data /inside rw - ext4 /dev/vda rw\n",
    ));
    let mut inside = loc("254:0", 900, "/srv/data/f");
    inside.mnt_ns = 4_026_532_000;
    let r = t.resolve(&inside, 7, LATER);
    assert!(r.foreign_ns);
    assert_eq!(r.ns_path, Some(Untrusted::from("/inside/f")));
    // The host reaches the same device at / and through its /data bind.
    assert_eq!(path(r.clone()).as_deref(), Some("/data/f"));
    assert_eq!(r.alternatives, vec![Untrusted::from("/srv/data/f")]);
    // A device the host does not mount at all: no host path, said so.
    let mut elsewhere = loc("0:99", 901, "/f");
    elsewhere.mnt_ns = 4_026_532_000;
    let r = t.resolve(&elsewhere, 7, LATER);
    assert!(r.foreign_ns && r.path.is_none());
    // A mount since detached (no namespace): no namespace view claimed.
    let mut detached = loc("0:60", 902, "/data/x");
    detached.mnt_ns = 0;
    let r = t.resolve(&detached, 7, LATER);
    assert!(!r.foreign_ns && r.ns_path.is_none());
    assert_eq!(path(r).as_deref(), Some("/mnt/bind/x"));
}

/// Found by the matrix: a file opened through a mount that was then
/// unmounted was named under that mount's point, because the table had
/// been read, for an earlier event, while the mount still existed.
#[test]
fn a_detached_mount_is_not_found_by_its_stale_id() {
    let mut t = table(None);
    // Mount 41 (device 0:40, at "/tmp/my dir") is in the cached table,
    // but the kernel says this file's mount is detached.
    let mut l = loc("0:40", 41, "/f");
    l.mnt_ns = 0;
    let r = t.resolve(&l, 1, LATER);
    assert_eq!(r.path, None, "no mount of 0:40 remains to name it: {r:?}");
    // Through the same id while attached: its point.
    assert_eq!(
        path(t.resolve(&loc("0:40", 41, "/f"), 1, LATER)).as_deref(),
        Some("/tmp/my dir/f")
    );
}

#[test]
fn mount_points_keep_raw_bytes() {
    let m = parse(b"7 1 0:9 / /m\\377nt rw - tmpfs t rw\n");
    assert_eq!(m[0].point, b"/m\xffnt");
}
