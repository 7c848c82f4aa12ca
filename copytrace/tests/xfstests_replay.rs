//! The copy-range cases of xfstests generic/430, 431, 432, 433, 434, 553,
//! 554, 564 and 565, replayed with xfsprogs' `xfs_io -c "copy_range …"` on
//! xfs loop mounts, under `strace -f` inside `copytrace trace --json`.
//! Their scripts are the spec: every call strace shows is seen once by
//! copytrace, with strace's arguments and return, and with the verdict an
//! oracle derives from strace's view and the files' known sizes.

mod support;

use std::path::Path;

use serde_json::Value;
use support::{require_program, require_root, scratch_dir, trace, Mount};

/// One `copy_file_range` line of `strace -f`: `PID copy_file_range(IN,
/// [OFF], OUT, [OFF]|NULL, LEN, FLAGS) = RET` or `= -1 ENAME (…)`.
#[derive(Debug)]
struct Straced {
    fd_in: i64,
    off_in: Option<i64>,
    fd_out: i64,
    len: u64,
    ret: Result<i64, String>,
}

fn parse_strace(text: &str) -> Vec<Straced> {
    text.lines()
        .filter_map(|l| {
            let call = &l[l.find("copy_file_range(")? + "copy_file_range(".len()..];
            let (args, ret) = call.rsplit_once(") = ")?;
            let parts: Vec<&str> = args.split(", ").collect();
            let num = |s: &str| {
                s.trim_matches(|c| c == '[' || c == ']')
                    .split(' ')
                    .next()?
                    .parse()
                    .ok()
            };
            let ret = ret.split_whitespace().collect::<Vec<_>>();
            Some(Straced {
                fd_in: num(parts.first()?)?,
                off_in: num(parts.get(1)?),
                fd_out: num(parts.get(2)?)?,
                len: parts.get(4)?.parse().ok()?,
                ret: match ret.as_slice() {
                    ["-1", name, ..] => Err(name.to_string()),
                    [n, ..] => Ok(n.parse().ok()?),
                    _ => return None,
                },
            })
        })
        .collect()
}

/// The number of an errno strace names, from the libc crate.
fn errno(name: &str) -> i32 {
    match name {
        "EBADF" => libc::EBADF,
        "EINVAL" => libc::EINVAL,
        "EISDIR" => libc::EISDIR,
        "EPERM" => libc::EPERM,
        "ETXTBSY" => libc::ETXTBSY,
        "EOVERFLOW" => libc::EOVERFLOW,
        "EFBIG" => libc::EFBIG,
        "EXDEV" => libc::EXDEV,
        other => panic!("strace named {other}, which this replay does not expect"),
    }
}

/// The verdict the docs' rules give a call strace saw, on files whose
/// content is their size (xfs): `size` is the source's length.
fn oracle(s: &Straced, size: i64) -> &'static str {
    match &s.ret {
        Err(e) if e == "EXDEV" => "cross_fs",
        Err(_) => "error",
        Ok(_) if s.len == 0 => "ok",
        Ok(n) if *n as u64 == s.len => "ok",
        Ok(n) if s.off_in.unwrap_or(0).saturating_add(*n) >= size => {
            if *n > 0 {
                "short_read"
            } else {
                "ok"
            }
        }
        Ok(_) => "short_write",
    }
}

#[test]
fn xfstests_copy_range_cases_are_seen_as_strace_sees_them() {
    require_root();
    if !require_program("xfs_io", "xfsprogs")
        || !require_program("strace", "strace")
        || !require_program("mkfs.xfs", "xfsprogs")
    {
        return;
    }
    let base = scratch_dir("xfstests");
    let test = Mount::on_loop(&base, "xfs", 320).expect("mkfs.xfs");
    let scratch = Mount::on_loop(&base, "xfs", 320).expect("mkfs.xfs");
    let t = test.dir.display().to_string();
    let s = scratch.dir.display().to_string();
    // 8 * 2^60 - 65536 - 1, as generic/564 computes it.
    let max_off: i64 = i64::MAX - 65536;
    // Each line is one step of the scripts, in their order; the source
    // sizes the oracle needs are the files' lengths as written here.
    let script = format!(
        r#"set -u
X=xfs_io
cd {t}
# generic/430: a 5000-byte file of 'a'..'e'
$X -f -c "pwrite -S 0x61 0 1000" -c "pwrite -S 0x62 1000 1000" -c "pwrite -S 0x63 2000 1000" -c "pwrite -S 0x64 3000 1000" -c "pwrite -S 0x65 4000 1000" file >/dev/null
$X -f -c "copy_range {t}/file" copy
$X -f -c "copy_range -l 1000 {t}/file" beginning
$X -f -c "copy_range -s 1000 -l 3000 {t}/file" middle
$X -f -c "copy_range -s 4000 -l 1000 {t}/file" end
$X -f -c "copy_range -s 4000 -l 2000 {t}/file" beyond
$X -f -c "copy_range -s 1000 -l 3000 -d 1000 {t}/file" hole
# generic/432: copies inside one copy of the file
$X -f -c "copy_range -s 4000 -l 1000 {t}/file" copy
$X -f -c "copy_range -d 4000 -l 1000 {t}/file" copy
$X -f -c "copy_range -s 1000 -d 3000 -l 1000 {t}/file" copy
$X -f -c "copy_range -s 3000 -d 1000 -l 1000 {t}/file" copy
$X -f -c "copy_range -s 1000 -d 3000 -l 4000 {t}/file" copy
# generic/431 and 433: a 5-byte file
printf abcde > small
$X -f -c "copy_range {t}/small" scopy
for i in 0 1 2 3 4; do $X -f -c "copy_range -s $i -l 1 {t}/small" one$i; done
$X -f -c "copy_range -s 4 -l 1 -d 1 {t}/small" onef
$X -f -c "copy_range -s 5 -l 1 {t}/small" oneg
$X -f -c "copy_range -s 0 -d 4 -l 1 {t}/small" scopy
$X -f -c "copy_range -s 1 -d 3 -l 4 {t}/small" scopy
# generic/434: a 1000-byte file; EOF, read-only, append, device, fifo
$X -f -c "pwrite -S 0x61 0 1000" f434 >/dev/null
mknod dev1 c 1 3
mkfifo fifo
$X -f -c "copy_range -s 1000 -l 100 {t}/f434" c434
rm -f c434
$X -r -f -c "copy_range -s 0 -l 100 {t}/f434" c434
rm -f c434
$X -a -f -c "copy_range -s 0 -l 100 {t}/f434" c434
$X -a -f -c "copy_range -s 0 -l 100 {t}/f434" dev1
$X -a -f -c "copy_range -s 0 -l 100 {t}/f434" fifo
# generic/553: an immutable destination, held open across chattr +i
$X -f -c "pwrite -S 0x61 0 128k" f128 >/dev/null
$X -f -c "pwrite -S 0x61 0 64k" -c fsync immutable >/dev/null
$X -f -c "chattr +i" -c "copy_range -l 32k {t}/f128" immutable
$X -f -r -c "chattr -i" immutable
# generic/564: boundaries
$X -f -c "copy_range -s 32k -d 48k -l 32k {t}/f128" f128
$X -f -r -c "copy_range -l 32k {t}/f128" c564
$X -f -a -c "copy_range -l 32k {t}/f128" c564
$X -c "copy_range -l 32k {t}/f128" {t}
$X -f -c "copy_range -l 32k {t}" c564
$X -c "copy_range -l 32k {t}/f128" /dev/null
$X -f -c "copy_range -l 32k /dev/zero" c564
$X -c "copy_range -l 32k {t}/f128" fifo
$X -f -c "copy_range -l 10e -s {max_off} {t}/f128" c564
$X -f -c "copy_range -l 10e -d {max_off} {t}/f128" c564
$X -c "copy_range -s {max_off} -l 65537 -d 0 {t}/f128" c564
$X -c "copy_range -l 65537 -s 0 -d {max_off} {t}/f128" c564
rm -f c564
(ulimit -f 8192; $X -f -c "copy_range -l 32k -s 0 -d 16m {t}/f128" c564)
# generic/554: a swapfile as destination
$X -f -c "pwrite -S 0x61 0 128k" {s}/file >/dev/null
dd if=/dev/zero of={s}/swapfile bs=1M count=16 status=none
chmod 600 {s}/swapfile
mkswap {s}/swapfile >/dev/null
if swapon {s}/swapfile; then
  $X -f -c "copy_range -l 32k {s}/file" {s}/swapfile
  swapoff {s}/swapfile
fi
# generic/565: across two filesystems
$X -f -c "copy_range -l 128k {t}/f128" {s}/copy
true
"#
    );
    let script_path = base.join("replay.sh");
    std::fs::write(&script_path, script).expect("write the replay script");
    let strace_out = base.join("strace.out");
    let tr = trace(
        &base,
        &[
            "strace",
            "-f",
            "-qq",
            "-e",
            "trace=copy_file_range",
            "-o",
            strace_out.to_str().expect("utf8"),
            "sh",
            script_path.to_str().expect("utf8"),
        ],
    );
    let straced = parse_strace(&std::fs::read_to_string(&strace_out).expect("strace output"));
    assert!(straced.len() >= 40, "strace saw {} calls", straced.len());
    let mut calls: Vec<&Value> = tr.calls.iter().collect();
    calls.sort_by_key(|c| c["start_ns"].as_u64().unwrap_or(0));
    assert_eq!(
        calls.len(),
        straced.len(),
        "copytrace saw every call strace saw, once: {straced:#?}"
    );
    // Source sizes by the source's name, as the script wrote them.
    let size_of = |c: &Value| -> i64 {
        let path = c["path_in"].as_str().unwrap_or("");
        match Path::new(path).file_name().and_then(|n| n.to_str()) {
            Some("file") if path.starts_with(&t) => 5000,
            Some("small") => 5,
            Some("f434") => 1000,
            Some("file" | "f128") => 128 << 10,
            // Directories, devices and fifos: only failures come from them.
            _ => 0,
        }
    };
    let mut verdicts = std::collections::BTreeMap::new();
    for (i, (c, s)) in calls.iter().zip(&straced).enumerate() {
        let ret = match &s.ret {
            Ok(n) => *n,
            Err(name) => -i64::from(errno(name)),
        };
        assert_eq!(
            (
                c["fd_in"].as_i64(),
                c["fd_out"].as_i64(),
                c["len"].as_u64(),
                c["ret"].as_i64()
            ),
            (Some(s.fd_in), Some(s.fd_out), Some(s.len), Some(ret)),
            "call {i}: strace {s:?} vs copytrace {c:#}"
        );
        let want = oracle(s, size_of(c));
        assert_eq!(c["verdict"], want, "call {i}: strace {s:?}: {c:#}");
        *verdicts
            .entry(format!("{:?} -> {want}", s.ret))
            .or_insert(0) += 1;
    }
    eprintln!("xfstests replays: {} calls: {verdicts:#?}", calls.len());
}
