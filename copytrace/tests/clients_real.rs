//! Real programs that use copy_file_range, each run under `copytrace trace`:
//! coreutils cp and cat, Python, Go's io.Copy and Rust's std::io::copy. The
//! tests assert the verdicts copytrace gives their calls on this kernel.

mod support;

use std::process::Command;

use serde_json::Value;
use support::{ext4, require_program, require_root, tmpfs, trace, tracefs_dir, write_file};

fn verdicts(calls: &[Value]) -> Vec<&str> {
    calls
        .iter()
        .map(|c| c["verdict"].as_str().unwrap_or("?"))
        .collect()
}

fn copied(calls: &[Value]) -> u64 {
    calls
        .iter()
        .filter_map(|c| c["ret"].as_i64())
        .filter(|r| *r > 0)
        .map(|r| r as u64)
        .sum()
}

#[test]
fn coreutils_cp_copies_with_copy_file_range() {
    if !require_program("cp", "coreutils") {
        return;
    }
    let fs = ext4();
    write_file(&fs.path("src"), 1 << 20);
    let t = trace(
        &fs.dir,
        &[
            "cp",
            fs.path("src").to_str().unwrap_or(""),
            fs.path("dst").to_str().unwrap_or(""),
        ],
    );
    assert_eq!(t.code, Some(0));
    assert!(!t.calls.is_empty(), "coreutils cp uses copy_file_range");
    assert_eq!(copied(&t.calls), 1 << 20);
    assert!(t.calls.iter().all(|c| c["comm"] == "cp"));
    // cp asks for far more than the file and loops to EOF: a short read, then 0 at EOF.
    assert!(
        verdicts(&t.calls)
            .iter()
            .all(|v| *v == "short_read" || *v == "ok"),
        "{:?}",
        verdicts(&t.calls)
    );
    assert_eq!(t.summary["suspicious"], 0);
    assert_eq!(
        std::fs::read(fs.path("src")).ok(),
        std::fs::read(fs.path("dst")).ok()
    );
}

#[test]
fn coreutils_cat_copies_with_copy_file_range() {
    if !require_program("cat", "coreutils") || !require_program("sh", "dash") {
        return;
    }
    let fs = tmpfs("8m");
    write_file(&fs.path("src"), 300_000);
    let script = format!("cat {0}/src > {0}/dst", fs.dir.display());
    let t = trace(&fs.dir, &["sh", "-c", &script]);
    assert_eq!(t.code, Some(0));
    assert!(
        t.calls.iter().any(|c| c["comm"] == "cat"),
        "cat uses copy_file_range"
    );
    assert_eq!(copied(&t.calls), 300_000);
    assert_eq!(t.summary["suspicious"], 0);
}

#[test]
fn python_proc_to_proc_is_a_silent_zero_copy() {
    if !require_program("python3", "python3") {
        return;
    }
    let fs = tmpfs("1m");
    let t = trace(
        &fs.dir,
        &["python3", "-c", "import os; a=os.open('/proc/self/status', os.O_RDONLY); b=os.open('/proc/self/comm', os.O_WRONLY); print(os.copy_file_range(a, b, 4096))"],
    );
    assert_eq!(t.code, Some(0));
    assert_eq!(verdicts(&t.calls), vec!["silent_zero_copy"]);
    let c = &t.calls[0];
    assert_eq!(c["ret"], 0, "the kernel reports success");
    assert_eq!(c["file_in"]["fs"], "proc");
    assert_eq!(c["file_in"]["size"], 0);
    assert_eq!(c["file_in"]["dev"], c["file_out"]["dev"], "same superblock");
}

#[test]
fn python_proc_to_tmpfs_is_cross_fs() {
    if !require_program("python3", "python3") {
        return;
    }
    let fs = tmpfs("1m");
    let script = format!(
        "import os\na=os.open('/proc/self/status', os.O_RDONLY); b=os.open('{}/out', os.O_WRONLY|os.O_CREAT)\ntry: os.copy_file_range(a, b, 4096)\nexcept OSError as e: print(e.errno)",
        fs.dir.display()
    );
    let t = trace(&fs.dir, &["python3", "-c", &script]);
    assert_eq!(verdicts(&t.calls), vec!["cross_fs"]);
    assert_eq!(t.calls[0]["ret"], -18);
    let reason = t.calls[0]["reason"].as_str().unwrap_or_default();
    assert!(reason.contains("from proc to tmpfs"), "{reason}");
}

/// The (major, minor) version of python3.
fn python_version() -> (u32, u32) {
    let out = Command::new("python3")
        .args(["-c", "import sys; print(*sys.version_info[:2])"])
        .output()
        .expect("python3");
    let text = String::from_utf8_lossy(&out.stdout);
    let mut it = text.split_whitespace().filter_map(|v| v.parse().ok());
    (it.next().unwrap_or(0), it.next().unwrap_or(0))
}

#[test]
fn python_shutil_copyfile_uses_sendfile_before_3_14() {
    if !require_program("python3", "python3") {
        return;
    }
    let fs = tmpfs("4m");
    write_file(&fs.path("src"), 200_000);
    let script = format!(
        "import shutil\nshutil.copyfile('{0}/src', '{0}/dst')",
        fs.dir.display()
    );
    let t = trace(&fs.dir, &["python3", "-c", &script]);
    assert_eq!(t.code, Some(0));
    if python_version() < (3, 14) {
        // CPython before 3.14 copies with sendfile(2) on Linux: nothing to see.
        assert!(t.calls.is_empty(), "{:#?}", t.calls);
    } else {
        // 3.14 tries copy_file_range first.
        assert_eq!(copied(&t.calls), 200_000);
    }
    assert_eq!(
        std::fs::read(fs.path("src")).ok(),
        std::fs::read(fs.path("dst")).ok()
    );
}

#[test]
fn tracefs_trace_to_trace_marker_is_a_silent_zero_copy() {
    if !require_program("python3", "python3") {
        return;
    }
    let tracefs = tracefs_dir();
    let fs = tmpfs("1m");
    let script = format!(
        "import os; a=os.open('{0}/trace', os.O_RDONLY); b=os.open('{0}/trace_marker', os.O_WRONLY); print(os.copy_file_range(a, b, 65536))",
        tracefs.display()
    );
    let t = trace(&fs.dir, &["python3", "-c", &script]);
    assert_eq!(t.code, Some(0));
    assert_eq!(verdicts(&t.calls), vec!["silent_zero_copy"]);
    assert_eq!(t.calls[0]["file_in"]["fs"], "tracefs");
    assert_eq!(t.calls[0]["file_in"]["magic"], support::magic::TRACEFS);
}

#[test]
fn cgroup_file_to_cgroup_file_is_a_silent_zero_copy() {
    require_root();
    if !require_program("python3", "python3") {
        return;
    }
    let (root, _own) = support::cgroup2_root(&support::scratch());
    let child = root.join(format!("copytrace-test-{}", std::process::id()));
    std::fs::create_dir(&child).expect("create cgroup");
    let fs = tmpfs("1m");
    let script = format!(
        "import os; a=os.open('{}/cgroup.procs', os.O_RDONLY); b=os.open('{}/cgroup.procs', os.O_WRONLY); print(os.copy_file_range(a, b, 4096))",
        root.display(),
        child.display()
    );
    let t = trace(&fs.dir, &["python3", "-c", &script]);
    let _ = std::fs::remove_dir(&child);
    assert_eq!(t.code, Some(0));
    assert_eq!(verdicts(&t.calls), vec!["silent_zero_copy"]);
    assert_eq!(t.calls[0]["file_in"]["fs"], "cgroup2");
}

#[test]
fn empty_ext4_file_is_ok_not_silent() {
    if !require_program("python3", "python3") {
        return;
    }
    let fs = ext4();
    std::fs::write(fs.path("empty"), b"").expect("create");
    let script = format!(
        "import os; a=os.open('{0}/empty', os.O_RDONLY); b=os.open('{0}/out', os.O_WRONLY|os.O_CREAT); print(os.copy_file_range(a, b, 4096))",
        fs.dir.display()
    );
    let t = trace(&fs.dir, &["python3", "-c", &script]);
    assert_eq!(verdicts(&t.calls), vec!["ok"]);
    assert_eq!(t.calls[0]["file_in"]["fs"], "ext4");
    assert_eq!(t.summary["suspicious"], 0);
}

#[test]
fn go_io_copy_between_files() {
    require_root();
    if !require_program("go", "golang-go") {
        return;
    }
    let bin = support::go_client();
    let bin = bin.to_str().unwrap_or_default();

    let fs = tmpfs("8m");
    write_file(&fs.path("src"), 500_000);
    let (src, dst) = (fs.path("src"), fs.path("dst"));
    let t = trace(
        &fs.dir,
        &[bin, src.to_str().unwrap_or(""), dst.to_str().unwrap_or("")],
    );
    assert_eq!(t.code, Some(0));
    assert!(
        !t.calls.is_empty(),
        "Go's io.Copy between *os.File uses copy_file_range"
    );
    assert_eq!(copied(&t.calls), 500_000);
    assert_eq!(t.summary["suspicious"], 0);

    // From tracefs Go gets 0 from the kernel, which copytrace flags, and Go
    // then falls back to read/write on its own.
    let tracefs = tracefs_dir();
    let t = trace(
        &fs.dir,
        &[
            bin,
            tracefs.join("trace").to_str().unwrap_or(""),
            tracefs.join("trace_marker").to_str().unwrap_or(""),
        ],
    );
    assert_eq!(t.code, Some(0));
    assert_eq!(verdicts(&t.calls), vec!["silent_zero_copy"]);
}

const RUST_CLIENT: &str = r#"
use std::fs::{File, OpenOptions};
fn main() {
    let a: Vec<String> = std::env::args().collect();
    let n = std::fs::copy(&a[1], &a[2]).expect("fs::copy");
    let mut src = File::open(&a[1]).expect("open");
    let mut dst = OpenOptions::new().write(true).create(true).truncate(true).open(&a[3]).expect("open");
    let m = std::io::copy(&mut src, &mut dst).expect("io::copy");
    println!("{n} {m}");
}
"#;

#[test]
fn rust_std_fs_copy_and_io_copy() {
    require_root();
    if !require_program("rustc", "the Rust toolchain") {
        return;
    }
    let work = support::scratch().join("rust-client");
    std::fs::create_dir_all(&work).expect("mkdir");
    std::fs::write(work.join("client.rs"), RUST_CLIENT).expect("write rust source");
    let bin = work.join("rustclient");
    let st = Command::new("rustc")
        .args(["-O", "--edition", "2021", "-o"])
        .arg(&bin)
        .arg(work.join("client.rs"))
        .status()
        .expect("rustc");
    assert!(st.success(), "rustc failed");
    let fs = ext4();
    write_file(&fs.path("src"), 700_000);
    let p = |n: &str| fs.path(n).to_str().unwrap_or("").to_string();
    let t = trace(
        &fs.dir,
        &[bin.to_str().unwrap_or(""), &p("src"), &p("a"), &p("b")],
    );
    assert_eq!(t.code, Some(0));
    assert_eq!(
        copied(&t.calls),
        2 * 700_000,
        "fs::copy and io::copy both use copy_file_range"
    );
    assert_eq!(t.summary["suspicious"], 0);
}
