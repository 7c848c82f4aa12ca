//! A guest's initramfs: the static guest init as /init, the static
//! copytrace, the kernel test binaries, the modules the tests need (with
//! their dependencies, decompressed, in load order), an empty ext4 image for
//! tests to copy, and the plan.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{bail, Context, Result};

use crate::cmd::{output, run};

/// Modules the tests need (loop devices, ext4), with their dependencies.
const MODULES: &[&str] = &["loop", "crc32c_generic", "ext4", "overlay"];

/// Size of the empty ext4 image tests copy when the guest has no mkfs.ext4.
const EXT4_TEMPLATE_MIB: u64 = 32;

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

/// Copies the modules and their dependencies into `dest`, returning the load order.
fn stage_modules(tree: &Path, dest: &Path) -> Result<Vec<String>> {
    fn visit(
        name: &str,
        idx: &BTreeMap<String, PathBuf>,
        dest: &Path,
        order: &mut Vec<String>,
    ) -> Result<()> {
        let key = name.replace('-', "_");
        let file = format!("{key}.ko");
        if order.contains(&file) {
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
        std::fs::write(dest.join(&file), data)?;
        order.push(file);
        Ok(())
    }
    let idx = module_index(tree);
    let mut order = Vec::new();
    std::fs::create_dir_all(dest)?;
    for m in MODULES {
        visit(m, &idx, dest, &mut order)?;
    }
    Ok(order)
}

/// What goes into an initramfs besides the kernel's modules.
pub struct Contents<'a> {
    /// The static guest init.
    pub init: &'a Path,
    /// The static copytrace.
    pub copytrace: &'a Path,
    /// The static benchmark loop.
    pub bench_loop: &'a Path,
    /// Kernel test binaries (static), by name.
    pub tests: &'a [(String, PathBuf)],
    /// The plan, as JSON.
    pub plan: &'a str,
}

/// Builds the initramfs for kernel `tree` at `out`.
pub fn build(stage: &Path, tree: &Path, contents: &Contents, out: &Path) -> Result<()> {
    let _ = std::fs::remove_dir_all(stage);
    for d in ["bin", "dev", "proc", "sys", "tmp", "tests", "modules"] {
        std::fs::create_dir_all(stage.join(d))?;
    }
    std::fs::copy(contents.init, stage.join("init"))?;
    std::fs::copy(contents.copytrace, stage.join("bin/copytrace"))?;
    std::fs::copy(contents.bench_loop, stage.join("bin/bench-loop"))?;
    for (name, path) in contents.tests {
        std::fs::copy(path, stage.join("tests").join(name))?;
    }
    std::fs::write(stage.join("plan.json"), contents.plan)?;
    let order = stage_modules(tree, &stage.join("modules"))?;
    std::fs::write(stage.join("modules.order"), order.join("\n"))?;
    run(Command::new("mknod")
        .arg(stage.join("dev/console"))
        .args(["c", "5", "1"]))?;
    let img = stage.join("ext4.img");
    std::fs::File::create(&img)?.set_len(EXT4_TEMPLATE_MIB << 20)?;
    run(Command::new("mkfs.ext4").args(["-q", "-F"]).arg(&img))?;
    let list = output(Command::new("find").arg(".").current_dir(stage))?;
    let mut cpio = Command::new("cpio")
        .args(["-o", "-H", "newc", "--quiet"])
        .current_dir(stage)
        .stdin(Stdio::piped())
        .stdout(std::fs::File::create(out)?)
        .spawn()
        .context("cannot start cpio")?;
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
    let _ = std::fs::remove_dir_all(stage);
    Ok(())
}
