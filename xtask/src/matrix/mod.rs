//! The kernel matrix: Debian's stock kernels booted under qemu (TCG), each
//! running the same kernel test binaries as the host (static builds), once
//! per probe back-end, with offsets from each kernel's own BTF.
//!
//! [`fetch`] gets and unpacks the kernels, [`initramfs`] packs the guest,
//! [`qemu`] boots it and reads its console, [`console`] turns the console
//! into test runs ([`Run`]) for the suite's tally, and this module runs
//! the guests.

mod console;
pub mod fetch;
pub mod initramfs;
pub mod qemu;

use std::collections::{BTreeMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{Context, Result};

use crate::arch::Arch;
use crate::build::{self, TestBinary};
use crate::cmd::{echo, say};
use crate::provision::ensure_debs;
use crate::suite::host::{self, BACKENDS};
use crate::suite::tally::Run;

pub use self::console::BenchLine;
use self::console::ConsoleReader;

/// One guest kernel.
#[derive(Debug, Clone, Copy)]
pub struct Kernel {
    /// Kernel line (`6.1`).
    pub line: &'static str,
    /// Architecture.
    pub arch: Arch,
    /// Debian package (pinned: see docs/kernels.md).
    pub package: &'static str,
    /// Which kernel test binaries the guest runs.
    pub suite: GuestSuite,
}

/// How much of the kernel test suite a guest runs, on both back-ends. TCG
/// makes each guest minute costly (an arm64 guest runs about 30 times
/// slower than the host), so: one current x86_64 kernel runs every kernel
/// test binary; the older x86_64 kernels run what depends on the kernel
/// (probes, verdicts, paths, stacks); the arm64 kernels run the probe
/// tests, which hold every verdict scenario and every captured field, so
/// verdicts are compared across architectures on the same tests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GuestSuite {
    /// Every kernel test binary.
    Full,
    /// The binaries in [`KERNEL_DEPENDENT`].
    KernelDependent,
    /// `probe_syscalls` and the verdict oracle only.
    Probes,
}

/// Test binaries whose outcome depends on the kernel under the probes.
pub const KERNEL_DEPENDENT: &[&str] = &[
    "probe_syscalls",
    "trace_command",
    "clients_real",
    "diagnosis",
    "hostile_input",
    "kernel_truth",
    "oracle",
];

impl GuestSuite {
    /// Whether this suite includes test binary `name`.
    pub fn includes(self, name: &str) -> bool {
        match self {
            GuestSuite::Full => true,
            GuestSuite::KernelDependent => KERNEL_DEPENDENT.contains(&name),
            GuestSuite::Probes => matches!(name, "probe_syscalls" | "oracle"),
        }
    }
}

impl Kernel {
    /// `6.1/x86_64`.
    pub fn label(&self) -> String {
        format!("{}/{}", self.line, self.arch)
    }
}

/// The kernels tested: newest of each line apt offers, pinned.
pub const KERNELS: &[Kernel] = &[
    // Longest first: two guests run at a time.
    Kernel {
        line: "6.12",
        arch: Arch::X86_64,
        package: "linux-image-6.12.117+deb13-amd64",
        suite: GuestSuite::Full,
    },
    Kernel {
        line: "5.10",
        arch: Arch::X86_64,
        package: "linux-image-5.10.0-46-amd64",
        suite: GuestSuite::KernelDependent,
    },
    Kernel {
        line: "6.1",
        arch: Arch::X86_64,
        package: "linux-image-6.1.0-56-amd64",
        suite: GuestSuite::KernelDependent,
    },
    Kernel {
        line: "6.12",
        arch: Arch::Aarch64,
        package: "linux-image-6.12.117+deb13-arm64",
        suite: GuestSuite::Probes,
    },
    Kernel {
        line: "6.1",
        arch: Arch::Aarch64,
        package: "linux-image-6.1.0-56-arm64",
        suite: GuestSuite::Probes,
    },
];

/// Which guests to boot.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    /// Only this kernel line.
    pub line: Option<String>,
    /// Only this architecture.
    pub arch: Option<Arch>,
    /// Run no tests: only report which back-ends load.
    pub load_only: bool,
}

impl Selection {
    /// Every guest.
    pub fn all() -> Self {
        Selection::default()
    }

    fn kernels(&self) -> Vec<Kernel> {
        KERNELS
            .iter()
            .filter(|k| self.line.as_deref().is_none_or(|l| l == k.line))
            .filter(|k| self.arch.is_none_or(|a| a == k.arch))
            .copied()
            .collect()
    }
}

/// Guests run at once: one per core (each guest is one TCG vCPU).
const PARALLEL_GUESTS: usize = 2;

/// Longest a guest may take to boot and run every test on both back-ends.
const GUEST_TIMEOUT: Duration = Duration::from_secs(20 * 60);

/// The static artifacts one architecture's guests need.
struct GuestBuild {
    init: PathBuf,
    copytrace: PathBuf,
    bench_loop: PathBuf,
    tests: Vec<(String, PathBuf)>,
}

fn guest_build(arch: Arch) -> Result<GuestBuild> {
    let tests: Vec<(String, PathBuf)> = build::test_binaries(Some(arch), &["copytrace"])?
        .into_iter()
        .filter(host::is_kernel)
        .map(|b: TestBinary| (b.name, b.path))
        .collect();
    let dir = build::static_bins(arch, &["copytrace", "copytrace-guest"])?;
    Ok(GuestBuild {
        init: dir.join("copytrace-guest-init"),
        copytrace: dir.join("copytrace"),
        bench_loop: dir.join("bench-loop"),
        tests,
    })
}

/// What a guest is booted for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GuestWork {
    /// The kernel test binaries its suite includes, on both back-ends.
    Tests,
    /// No tests: only which back-ends load.
    LoadOnly,
    /// The per-call benchmark (see the guest's `bench` module).
    Bench,
}

/// What one guest reported.
pub struct GuestResult {
    /// Which kernel.
    pub kernel: Kernel,
    /// `uname -r` inside.
    pub release: String,
    /// Boot and run time.
    pub elapsed: Duration,
    /// One run per back-end and test binary.
    pub runs: Vec<Run>,
    /// Benchmark results, when it was booted for them.
    pub bench: Vec<BenchLine>,
    /// Back-ends the guest's kernel refused, with why.
    pub refused: Vec<(String, String)>,
    /// What went wrong with the guest itself, if anything.
    pub trouble: Option<String>,
}

/// Boots one guest and reads its report.
fn run_guest(
    root: &Path,
    kernel: Kernel,
    build: &GuestBuild,
    lists: &BTreeMap<String, Vec<String>>,
    work: GuestWork,
) -> Result<GuestResult> {
    let tree = fetch::kernel_tree(root, kernel.arch, kernel.package)?;
    let image = fetch::boot_image(
        &tree,
        kernel.arch,
        &root.join(format!("kernel-{}-{}", kernel.line, kernel.arch)),
    )?;
    let tests: Vec<&String> = if work != GuestWork::Tests {
        Vec::new()
    } else {
        build
            .tests
            .iter()
            .map(|(n, _)| n)
            .filter(|n| kernel.suite.includes(n))
            .collect()
    };
    let lists: BTreeMap<String, Vec<String>> = lists
        .iter()
        .filter(|(bin, _)| kernel.suite.includes(bin))
        .map(|(bin, names)| (bin.clone(), names.clone()))
        .collect();
    let plan = serde_json::json!({
        "tests": tests,
        "bench": work == GuestWork::Bench,
        "backends": BACKENDS,
        "env": [
            ["COPYTRACE_TEST_GUEST", "1"],
            ["COPYTRACE_BIN", "/bin/copytrace"],
            ["COPYTRACE_TEST_EXT4_TEMPLATE", "/ext4.img"],
            ["COPYTRACE_TEST_TMPDIR", "/tmp/ct"],
            ["PATH", "/bin"],
        ],
    })
    .to_string();
    let tag = format!("{}-{}", kernel.line, kernel.arch);
    let initrd = root.join(format!("initramfs-{tag}.cpio"));
    initramfs::build(
        &root.join(format!("stage-{tag}")),
        &tree,
        &initramfs::Contents {
            init: &build.init,
            copytrace: &build.copytrace,
            bench_loop: &build.bench_loop,
            tests: &build.tests,
            plan: &plan,
        },
        &initrd,
    )?;
    say(&format!(
        "matrix: booting {} ({})",
        kernel.label(),
        kernel.package
    ));
    let mut reader = ConsoleReader::new(&kernel, &lists);
    let console = qemu::boot_initramfs(kernel.arch, &image, &initrd, GUEST_TIMEOUT, |l| {
        reader.line(l)
    })?;
    std::fs::write(
        root.join(format!("console-{tag}.log")),
        console.lines.join("\n"),
    )?;
    let _ = std::fs::remove_file(&initrd);
    let result = reader.finish(kernel, console.elapsed, console.timed_out);
    say(&format!(
        "matrix: {} ({}) finished in {:.0}s",
        kernel.label(),
        result.release,
        result.elapsed.as_secs_f64()
    ));
    Ok(result)
}

/// Boots every selected guest (two at a time) and returns what each reported.
pub fn run_guests(sel: &Selection) -> Result<Vec<GuestResult>> {
    let work = if sel.load_only {
        GuestWork::LoadOnly
    } else {
        GuestWork::Tests
    };
    boot_guests(sel, work)
}

/// Boots the guest of kernel `line` on `arch` for the per-call benchmark.
pub fn bench_guest(line: &str, arch: Arch) -> Result<GuestResult> {
    let sel = Selection {
        line: Some(line.to_string()),
        arch: Some(arch),
        load_only: false,
    };
    let g = boot_guests(&sel, GuestWork::Bench)?
        .pop()
        .context("the benchmark guest reported nothing")?;
    if let Some(t) = &g.trouble {
        anyhow::bail!("the benchmark guest {}: {t}", g.kernel.label());
    }
    Ok(g)
}

fn boot_guests(sel: &Selection, work: GuestWork) -> Result<Vec<GuestResult>> {
    ensure_debs(&[
        "qemu-system-x86",
        "qemu-system-arm",
        "cpio",
        "xz-utils",
        "zstd",
    ])?;
    let kernels = sel.kernels();
    anyhow::ensure!(!kernels.is_empty(), "no kernel matches the selection");
    // Test names come from the host's own build of the same tests, asked
    // for exactly as the host suite builds it (the whole workspace): a
    // build of one package unifies features differently and would rebuild
    // copytrace and its dependencies a second time.
    let mut lists = BTreeMap::new();
    if work == GuestWork::Tests {
        for b in build::test_binaries(None, &[])?
            .iter()
            .filter(|b| host::is_kernel(b))
        {
            lists.insert(b.name.clone(), host::list(&b.path, None)?);
        }
    }
    let mut builds = BTreeMap::new();
    for arch in [Arch::X86_64, Arch::Aarch64] {
        if kernels.iter().any(|k| k.arch == arch) {
            builds.insert(arch.to_string(), guest_build(arch)?);
        }
    }
    let root = PathBuf::from("target/matrix");
    std::fs::create_dir_all(&root)?;
    // Download and unpack serially (apt holds a lock), boot in parallel.
    for k in &kernels {
        fetch::kernel_tree(&root, k.arch, k.package)?;
    }
    let queue = Mutex::new(kernels.into_iter().collect::<VecDeque<_>>());
    let results = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..PARALLEL_GUESTS {
            s.spawn(|| loop {
                let Some(k) = queue.lock().ok().and_then(|mut q| q.pop_front()) else {
                    return;
                };
                let r = builds
                    .get(&k.arch.to_string())
                    .context("no build for this architecture")
                    .and_then(|b| run_guest(&root, k, b, &lists, work))
                    .with_context(|| format!("guest {}", k.label()));
                if let Ok(mut all) = results.lock() {
                    all.push(r);
                }
            });
        }
    });
    let mut out = Vec::new();
    for r in results.into_inner().unwrap_or_default() {
        out.push(r?);
    }
    out.sort_by_key(|r| (r.kernel.arch.to_string(), r.kernel.line));
    Ok(out)
}

/// `--load-only`: which back-ends each selected guest's kernel accepts.
/// Fails when a guest went wrong or its kernel accepted no back-end (a
/// kernel may refuse one: 6.1 on arm64 has no fentry).
pub fn load_check(sel: &Selection) -> Result<()> {
    let mut bad = Vec::new();
    for r in run_guests(sel)? {
        let label = format!("{} ({})", r.kernel.label(), r.release);
        for (backend, why) in &r.refused {
            echo(&format!(
                "matrix: {label} refuses the {backend} back-end: {why}"
            ));
        }
        if let Some(t) = &r.trouble {
            bad.push(format!("{label}: {t}"));
        } else if r.refused.len() >= BACKENDS.len() {
            bad.push(format!("{label}: no back-end loads"));
        } else {
            echo(&format!(
                "matrix: {label} loads in {:.0}s",
                r.elapsed.as_secs_f64()
            ));
        }
    }
    anyhow::ensure!(bad.is_empty(), "kernel matrix, loads: {}", bad.join("; "));
    Ok(())
}

/// The runs of every selected guest, for the suite's tally.
pub fn guest_runs(sel: &Selection) -> Result<Vec<Run>> {
    let results = run_guests(sel)?;
    for r in &results {
        echo(&format!(
            "matrix: {} ({}) boot and both back-ends in {:.0}s",
            r.kernel.label(),
            r.release,
            r.elapsed.as_secs_f64()
        ));
    }
    Ok(results.into_iter().flat_map(|r| r.runs).collect())
}
