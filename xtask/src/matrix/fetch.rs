//! Debian kernel packages: downloaded once with a private apt configuration
//! under target/matrix (the host's /etc/apt is left alone), unpacked, and
//! the kernel image made bootable quickly under TCG.

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

use crate::arch::Arch;
use crate::cmd::run;

const SOURCES: &str = "\
deb http://deb.debian.org/debian bullseye main
deb http://deb.debian.org/debian-security bullseye-security main
deb http://deb.debian.org/debian bookworm main
deb http://deb.debian.org/debian-security bookworm-security main
deb http://deb.debian.org/debian trixie main
";

/// The private apt configuration for `arch`; returns its apt.conf.
fn apt_config(root: &Path, arch: Arch) -> Result<PathBuf> {
    let apt = root.join(format!("apt-{}", arch.debian()));
    for d in ["lists/partial", "cache/archives/partial", "etc"] {
        std::fs::create_dir_all(apt.join(d))?;
    }
    std::fs::write(apt.join("etc/sources.list"), SOURCES)?;
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(apt.join("status"))?;
    let a = apt.canonicalize()?;
    let conf = format!(
        "Dir::State \"{0}\";\nDir::State::Lists \"{0}/lists\";\nDir::State::status \"{0}/status\";\nDir::Cache \"{0}/cache\";\nDir::Etc::SourceList \"{0}/etc/sources.list\";\nDir::Etc::SourceParts \"{0}/etc\";\nDir::Etc::Preferences \"{0}/etc/none\";\nDir::Etc::PreferencesParts \"{0}/etc\";\nAPT::Architecture \"{1}\";\nAPT::Architectures {{ \"{1}\"; }};\nAPT::Sandbox::User \"root\";\n",
        a.display(),
        arch.debian()
    );
    let path = a.join("etc/apt.conf");
    std::fs::write(&path, conf)?;
    Ok(path)
}

/// The file in `dir` whose name starts with `prefix`.
fn find_prefixed(dir: &Path, prefix: &str) -> Option<PathBuf> {
    std::fs::read_dir(dir)
        .ok()?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(prefix))
        })
}

/// Downloads (once) and unpacks a kernel package; returns its tree.
pub fn kernel_tree(root: &Path, arch: Arch, package: &str) -> Result<PathBuf> {
    let tree = root.join("kernels").join(package);
    if tree.join(".done").exists() {
        return Ok(tree);
    }
    let debs = root.join("debs");
    std::fs::create_dir_all(&debs)?;
    let prefix = format!("{package}_");
    let deb = match find_prefixed(&debs, &prefix) {
        Some(d) => d,
        None => {
            let conf = apt_config(root, arch)?;
            let lists = conf
                .parent()
                .and_then(Path::parent)
                .map(|a| a.join("lists"));
            let fresh = lists
                .and_then(|l| std::fs::read_dir(l).ok())
                .is_some_and(|mut it| it.any(|e| e.is_ok_and(|e| e.path().is_file())));
            if !fresh {
                run(Command::new("apt-get")
                    .env("APT_CONFIG", &conf)
                    .args(["update", "-q"]))?;
            }
            run(Command::new("apt-get")
                .env("APT_CONFIG", &conf)
                .current_dir(&debs)
                .args(["download", "-q", package]))
            .with_context(|| format!("apt-get download {package}"))?;
            find_prefixed(&debs, &prefix)
                .with_context(|| format!("{package} downloaded but not found"))?
        }
    };
    let _ = std::fs::remove_dir_all(&tree);
    std::fs::create_dir_all(&tree)?;
    run(Command::new("dpkg-deb").arg("-x").arg(&deb).arg(&tree))?;
    std::fs::write(tree.join(".done"), "")?;
    Ok(tree)
}

/// Decompresses `data[offset..]` with `tool -dc`.
fn decompress(tool: &str, data: &[u8]) -> Result<Vec<u8>> {
    let mut child = Command::new(tool)
        .arg("-dc")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("cannot start {tool}"))?;
    let mut stdin = child.stdin.take().context("stdin")?;
    let payload = data.to_vec();
    let writer = std::thread::spawn(move || {
        use std::io::Write as _;
        let _ = stdin.write_all(&payload);
    });
    let mut out = Vec::new();
    child
        .stdout
        .take()
        .context("stdout")?
        .read_to_end(&mut out)?;
    let _ = child.wait();
    let _ = writer.join();
    Ok(out)
}

/// The kernel image to boot: for x86-64 the ELF vmlinux inside the bzImage
/// (boots faster under TCG than the bzImage itself), for arm64 the
/// uncompressed Image. Cached next to the tree.
pub fn boot_image(tree: &Path, arch: Arch, out: &Path) -> Result<PathBuf> {
    if out.exists() {
        return Ok(out.to_path_buf());
    }
    let vmlinuz = find_prefixed(&tree.join("boot"), "vmlinuz")
        .context("no /boot/vmlinuz in the kernel package")?;
    let data = std::fs::read(&vmlinuz)?;
    let image = match arch {
        Arch::X86_64 => {
            let find = |magic: &[u8]| data.windows(magic.len()).position(|w| w == magic);
            let (offset, tool) = if let Some(o) = find(b"\xfd7zXZ\x00") {
                (o, "xz")
            } else if let Some(o) = find(b"\x28\xb5\x2f\xfd") {
                (o, "zstd")
            } else {
                bail!("{}: no xz or zstd payload", vmlinuz.display());
            };
            let elf = decompress(tool, &data[offset..])?;
            if !elf.starts_with(b"\x7fELF") {
                bail!("{}: payload is not an ELF kernel", vmlinuz.display());
            }
            elf
        }
        Arch::Aarch64 if data.starts_with(b"\x1f\x8b") => decompress("gzip", &data)?,
        Arch::Aarch64 => data,
    };
    std::fs::write(out, image)?;
    Ok(out.to_path_buf())
}
