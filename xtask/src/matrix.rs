//! `cargo xtask matrix`: boots Debian's 5.10, 6.1 and 6.12 kernels under
//! qemu (TCG) and runs copytrace's scenarios inside each, once per probe
//! back-end, with offsets from each kernel's own BTF.
//!
//! Kernel images come from `apt-get download` with a private apt
//! configuration under target/matrix (the host's /etc/apt is left alone).
//! The guest is an initramfs: the static xtask binary as /init, the static
//! copytrace, the modules the scenarios need (loop, ext4 and dependencies,
//! decompressed, in dependency order) and a small ext4 image.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::guest::SCENARIOS;
use crate::provision::{ensure_debs, output, run as sh};

/// The kernels tested: newest of each line apt offers (pinned; see docs/kernels.md).
pub const KERNELS: &[(&str, &str)] = &[
    ("5.10", "linux-image-5.10.0-46-amd64"),
    ("6.1", "linux-image-6.1.0-56-amd64"),
    ("6.12", "linux-image-6.12.117+deb13-amd64"),
];

const SOURCES: &str = "\
deb http://deb.debian.org/debian bullseye main
deb http://deb.debian.org/debian-security bullseye-security main
deb http://deb.debian.org/debian bookworm main
deb http://deb.debian.org/debian-security bookworm-security main
deb http://deb.debian.org/debian trixie main
";

/// Modules the guest needs (with their dependencies).
const MODULES: &[&str] = &["loop", "crc32c_generic", "ext4"];

const MUSL: &str = "x86_64-unknown-linux-musl";

/// Per-kernel boot timeout.
const BOOT_TIMEOUT: Duration = Duration::from_secs(300);

fn apt_config(root: &Path) -> Result<PathBuf> {
    let apt = root.join("apt");
    for d in ["lists/partial", "cache/archives/partial", "etc"] {
        std::fs::create_dir_all(apt.join(d))?;
    }
    std::fs::write(apt.join("etc/sources.list"), SOURCES)?;
    let _ = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(apt.join("status"))?;
    let a = apt.canonicalize()?;
    let conf = format!(
        "Dir::State \"{0}\";\nDir::State::Lists \"{0}/lists\";\nDir::State::status \"{0}/status\";\nDir::Cache \"{0}/cache\";\nDir::Etc::SourceList \"{0}/etc/sources.list\";\nDir::Etc::SourceParts \"{0}/etc\";\nDir::Etc::Preferences \"{0}/etc/none\";\nDir::Etc::PreferencesParts \"{0}/etc\";\nAPT::Architecture \"amd64\";\n",
        a.display()
    );
    let path = a.join("etc/apt.conf");
    std::fs::write(&path, conf)?;
    Ok(path)
}

/// Downloads (once) and unpacks a kernel package; returns its tree.
fn fetch_kernel(root: &Path, conf: &Path, package: &str) -> Result<PathBuf> {
    let tree = root.join("kernels").join(package);
    if tree.join(".done").exists() {
        return Ok(tree);
    }
    let debs = root.join("debs");
    std::fs::create_dir_all(&debs)?;
    let have = |d: &Path| -> Option<PathBuf> {
        std::fs::read_dir(d)
            .ok()?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .find(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with(&format!("{package}_")))
            })
    };
    let deb = match have(&debs) {
        Some(d) => d,
        None => {
            let lists = conf
                .parent()
                .and_then(Path::parent)
                .map(|a| a.join("lists"));
            let fresh = lists
                .and_then(|l| std::fs::read_dir(l).ok())
                .is_some_and(|mut it| it.any(|e| e.is_ok_and(|e| e.path().is_file())));
            if !fresh {
                sh(Command::new("apt-get")
                    .env("APT_CONFIG", conf)
                    .args(["update", "-q"]))?;
            }
            sh(Command::new("apt-get")
                .env("APT_CONFIG", conf)
                .current_dir(&debs)
                .args(["download", "-q", package]))
            .with_context(|| format!("apt-get download {package}"))?;
            have(&debs).with_context(|| format!("{package} downloaded but not found"))?
        }
    };
    let _ = std::fs::remove_dir_all(&tree);
    std::fs::create_dir_all(&tree)?;
    sh(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&tree))?;
    std::fs::write(tree.join(".done"), "")?;
    Ok(tree)
}

/// The uncompressed ELF kernel inside a bzImage (boots faster under TCG).
fn extract_vmlinux(vmlinuz: &Path, out: &Path) -> Result<PathBuf> {
    if out.exists() {
        return Ok(out.to_path_buf());
    }
    let data = std::fs::read(vmlinuz)?;
    let find = |magic: &[u8]| data.windows(magic.len()).position(|w| w == magic);
    let (offset, tool) = if let Some(o) = find(b"\xfd7zXZ\x00") {
        (o, "xz")
    } else if let Some(o) = find(b"\x28\xb5\x2f\xfd") {
        (o, "zstd")
    } else {
        bail!("{}: no xz or zstd payload", vmlinuz.display());
    };
    let mut child = Command::new(tool)
        .args(["-dc"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()?;
    let mut stdin = child.stdin.take().context("stdin")?;
    let payload = data[offset..].to_vec();
    let writer = std::thread::spawn(move || {
        use std::io::Write as _;
        let _ = stdin.write_all(&payload);
    });
    let mut elf = Vec::new();
    child
        .stdout
        .take()
        .context("stdout")?
        .read_to_end(&mut elf)?;
    let _ = child.wait();
    let _ = writer.join();
    if !elf.starts_with(b"\x7fELF") {
        bail!("{}: payload is not an ELF kernel", vmlinuz.display());
    }
    std::fs::write(out, elf)?;
    Ok(out.to_path_buf())
}

/// `depends=` of a module, from its .modinfo strings.
fn module_depends(data: &[u8]) -> Vec<String> {
    let key = b"depends=";
    data.windows(key.len())
        .position(|w| w == key)
        .map(|p| {
            let rest = &data[p + key.len()..];
            let end = rest.iter().position(|&c| c == 0).unwrap_or(rest.len());
            String::from_utf8_lossy(&rest[..end])
                .split(',')
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

/// Reads a module file, decompressing .ko.xz / .ko.zst.
fn read_module(path: &Path) -> Result<Vec<u8>> {
    let name = path.to_string_lossy();
    let tool = if name.ends_with(".xz") {
        Some("xz")
    } else if name.ends_with(".zst") {
        Some("zstd")
    } else {
        None
    };
    match tool {
        Some(t) => {
            let out = Command::new(t).arg("-dc").arg(path).output()?;
            if !out.status.success() {
                bail!("{t} -dc {name} failed");
            }
            Ok(out.stdout)
        }
        None => Ok(std::fs::read(path)?),
    }
}

/// Module name → file, for every module in the tree.
fn module_index(tree: &Path) -> BTreeMap<String, PathBuf> {
    let mut idx = BTreeMap::new();
    let mut stack: Vec<PathBuf> = ["lib/modules", "usr/lib/modules"]
        .iter()
        .map(|d| tree.join(d))
        .collect();
    while let Some(dir) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in rd.filter_map(Result::ok) {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if let Some(n) = p.file_name().and_then(|n| n.to_str()) {
                if let Some(stem) = n.split(".ko").next().filter(|_| n.contains(".ko")) {
                    idx.insert(stem.replace('-', "_"), p.clone());
                }
            }
        }
    }
    idx
}

/// Copies `wanted` modules and their dependencies into `dest`, returning the load order.
fn stage_modules(tree: &Path, dest: &Path) -> Result<Vec<String>> {
    let idx = module_index(tree);
    let mut order = Vec::new();
    fn visit(
        name: &str,
        idx: &BTreeMap<String, PathBuf>,
        dest: &Path,
        order: &mut Vec<String>,
    ) -> Result<()> {
        let key = name.replace('-', "_");
        if order
            .iter()
            .any(|o: &String| o.trim_end_matches(".ko") == key)
        {
            return Ok(());
        }
        // Built into the kernel: nothing to load.
        let Some(path) = idx.get(&key) else {
            return Ok(());
        };
        let data = read_module(path)?;
        for dep in module_depends(&data) {
            visit(&dep, idx, dest, order)?;
        }
        let file = format!("{key}.ko");
        std::fs::write(dest.join(&file), data)?;
        order.push(file);
        Ok(())
    }
    std::fs::create_dir_all(dest)?;
    for m in MODULES {
        visit(m, &idx, dest, &mut order)?;
    }
    Ok(order)
}

/// Builds the guest's initramfs.
fn initramfs(root: &Path, tree: &Path, name: &str, bins: &(PathBuf, PathBuf)) -> Result<PathBuf> {
    let stage = root.join("stage").join(name);
    let _ = std::fs::remove_dir_all(&stage);
    for d in ["bin", "dev", "proc", "sys", "tmp", "mnt/ext4", "modules"] {
        std::fs::create_dir_all(stage.join(d))?;
    }
    std::fs::copy(&bins.0, stage.join("init"))?;
    std::fs::copy(&bins.1, stage.join("bin/copytrace"))?;
    let order = stage_modules(tree, &stage.join("modules"))?;
    std::fs::write(stage.join("modules.order"), order.join("\n"))?;
    sh(Command::new("mknod")
        .arg(stage.join("dev/console"))
        .args(["c", "5", "1"]))?;
    let content = root.join("ext4-content");
    std::fs::create_dir_all(&content)?;
    std::fs::write(content.join("src"), vec![42u8; 65536])?;
    let img = stage.join("ext4.img");
    std::fs::File::create(&img)?.set_len(8 << 20)?;
    sh(Command::new("mkfs.ext4")
        .args(["-q", "-F", "-d"])
        .arg(&content)
        .arg(&img))?;
    let out = root.join(format!("initramfs-{name}.cpio"));
    let list = output(Command::new("find").arg(".").current_dir(&stage))?;
    let mut cpio = Command::new("cpio")
        .args(["-o", "-H", "newc", "--quiet"])
        .current_dir(&stage)
        .stdin(Stdio::piped())
        .stdout(std::fs::File::create(&out)?)
        .spawn()?;
    {
        use std::io::Write as _;
        cpio.stdin
            .take()
            .context("cpio stdin")?
            .write_all(list.as_bytes())?;
    }
    if !cpio.wait()?.success() {
        bail!("cpio failed");
    }
    Ok(out)
}

/// What one guest reported.
#[derive(Debug, Default)]
pub struct GuestReport {
    pub kernel: String,
    pub boot_and_run: Duration,
    /// backend → scenario len → (verdict, ret)
    pub calls: BTreeMap<String, BTreeMap<u64, (String, i64)>>,
    pub errors: Vec<String>,
    pub doctor: Vec<String>,
    pub done: bool,
    /// Everything the guest printed.
    pub console: Vec<String>,
}

fn boot(kernel: &Path, initrd: &Path) -> Result<GuestReport> {
    let start = Instant::now();
    let mut child = Command::new("qemu-system-x86_64")
        .args([
            "-accel",
            "tcg",
            "-cpu",
            "max",
            "-m",
            "1024",
            "-smp",
            "1",
            "-nographic",
            "-no-reboot",
            "-nic",
            "none",
        ])
        .arg("-kernel")
        .arg(kernel)
        .arg("-initrd")
        .arg(initrd)
        .args(["-append", "console=ttyS0 panic=-1 quiet rdinit=/init"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("qemu-system-x86_64 (installed by the matrix provisioning)")?;
    let out = child.stdout.take().context("qemu stdout")?;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for l in BufReader::new(out).lines().map_while(Result::ok) {
            let _ = tx.send(l);
        }
    });
    let mut r = GuestReport::default();
    loop {
        let left = BOOT_TIMEOUT.saturating_sub(start.elapsed());
        let line = match rx.recv_timeout(left) {
            Ok(l) => l,
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                r.errors
                    .push(format!("timed out after {}s", BOOT_TIMEOUT.as_secs()));
                break;
            }
            Err(_) => break,
        };
        let line = line.trim_end_matches('\r');
        r.console.push(line.to_string());
        // Firmware output may share a line with the first report.
        let line = line.find("CT-").map_or(line, |i| &line[i..]);
        if let Some(k) = line.strip_prefix("CT-KERNEL ") {
            r.kernel = k.to_string();
        } else if let Some(rest) = line.strip_prefix("CT-CALL ") {
            let (backend, json) = rest.split_once(' ').unwrap_or(("?", ""));
            let v: serde_json::Value = serde_json::from_str(json).unwrap_or_default();
            let d = &v["data"];
            let len = d["len"].as_u64().unwrap_or(0);
            let entry = (
                d["verdict"].as_str().unwrap_or("?").to_string(),
                d["ret"].as_i64().unwrap_or(0),
            );
            r.calls
                .entry(backend.to_string())
                .or_default()
                .insert(len, entry);
        } else if let Some(e) = line.strip_prefix("CT-ERROR ") {
            r.errors.push(e.to_string());
        } else if let Some(d) = line.strip_prefix("CT-DOCTOR ") {
            r.doctor.push(d.to_string());
        } else if let Some(l) = line.strip_prefix("CT-LOG ") {
            eprintln!("xtask: guest: {l}");
        } else if line.starts_with("CT-DONE") {
            r.done = true;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    r.boot_and_run = start.elapsed();
    Ok(r)
}

/// Builds the static binaries the guests run.
fn build_static() -> Result<(PathBuf, PathBuf)> {
    sh(Command::new("rustup").args(["target", "add", MUSL]))?;
    sh(Command::new("cargo").args([
        "build",
        "--release",
        "--target",
        MUSL,
        "-p",
        "copytrace",
        "-p",
        "xtask",
    ]))?;
    let dir = PathBuf::from("target").join(MUSL).join("release");
    Ok((dir.join("xtask"), dir.join("copytrace")))
}

/// Checks a report against the scenario table: (checks passed, failure lines).
/// Each back-end × scenario is one check; a guest error or an unfinished
/// guest is one more failure.
pub fn verify(r: &GuestReport) -> (u64, Vec<String>) {
    let mut fails: Vec<String> = r.errors.iter().map(|e| format!("error: {e}")).collect();
    if !r.done {
        fails.push("guest did not finish".into());
    }
    let mut passed = 0;
    for backend in ["fentry", "tracepoint"] {
        let calls = r.calls.get(backend);
        for s in SCENARIOS {
            match calls.and_then(|c| c.get(&(s.len as u64))) {
                Some((v, _)) if v == s.verdict => passed += 1,
                Some((v, ret)) => fails.push(format!(
                    "{backend}: {}: {v} (ret {ret}), expected {}",
                    s.name, s.verdict
                )),
                None => fails.push(format!("{backend}: {}: call not seen", s.name)),
            }
        }
    }
    (passed, fails)
}

/// Boots each kernel (or only `only`) and checks both back-ends.
pub fn matrix(only: Option<&str>) -> Result<Vec<(String, GuestReport)>> {
    ensure_debs(&["qemu-system-x86", "cpio", "xz-utils", "zstd", "e2fsprogs"])?;
    let bins = build_static()?;
    let root = PathBuf::from("target/matrix");
    std::fs::create_dir_all(&root)?;
    let conf = apt_config(&root)?;
    let mut reports = Vec::new();
    for (line, package) in KERNELS.iter().filter(|(l, _)| only.is_none_or(|o| o == *l)) {
        eprintln!("xtask: matrix: {package}");
        let tree = fetch_kernel(&root, &conf, package)?;
        let vmlinuz = std::fs::read_dir(tree.join("boot"))?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .find(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("vmlinuz"))
            })
            .context("no /boot/vmlinuz in the package")?;
        let kernel =
            extract_vmlinux(&vmlinuz, &root.join(format!("vmlinux-{line}"))).unwrap_or(vmlinuz);
        let initrd = initramfs(&root, &tree, line, &bins)?;
        let report = boot(&kernel, &initrd)?;
        let log = root.join(format!("console-{line}.log"));
        std::fs::write(&log, report.console.join("\n"))?;
        eprintln!(
            "xtask: matrix: {line} ({}) in {:.1}s",
            report.kernel,
            report.boot_and_run.as_secs_f64()
        );
        reports.push((line.to_string(), report));
    }
    if reports.is_empty() {
        bail!(
            "no kernel matches; known: {}",
            KERNELS.iter().map(|k| k.0).collect::<Vec<_>>().join(", ")
        );
    }
    Ok(reports)
}

/// Scenario checks that passed and failed.
#[derive(Debug, Default, Clone, Copy)]
pub struct Checks {
    pub passed: u64,
    pub failed: u64,
}

/// `cargo xtask matrix`: runs, prints the table; Ok with the check counts
/// (failed checks are counted, not errors), Err when a guest cannot be run.
pub fn run(only: Option<&str>) -> Result<Checks> {
    let started = Instant::now();
    let reports = matrix(only)?;
    let mut checks = Checks::default();
    println!(
        "| scenario | expected | {} |",
        reports
            .iter()
            .map(|(l, r)| format!("{l} ({}) fentry | tracepoint", r.kernel))
            .collect::<Vec<_>>()
            .join(" | ")
    );
    for s in SCENARIOS {
        let mut cells = Vec::new();
        for (_, r) in &reports {
            for b in ["fentry", "tracepoint"] {
                cells.push(
                    r.calls
                        .get(b)
                        .and_then(|c| c.get(&(s.len as u64)))
                        .map_or("—".into(), |(v, _)| v.clone()),
                );
            }
        }
        println!("| {} | {} | {} |", s.name, s.verdict, cells.join(" | "));
    }
    for (line, r) in &reports {
        println!(
            "{line}: {} boot+run {:.1}s",
            r.kernel,
            r.boot_and_run.as_secs_f64()
        );
        for d in &r.doctor {
            println!("  doctor: {d}");
        }
        let (passed, fails) = verify(r);
        for f in &fails {
            println!("  FAIL {f}");
        }
        checks.passed += passed;
        checks.failed += fails.len() as u64;
    }
    println!(
        "matrix: {} kernel(s) in {:.0}s: {} checks passed, {} failed",
        reports.len(),
        started.elapsed().as_secs_f64(),
        checks.passed,
        checks.failed
    );
    Ok(checks)
}
