//! `cargo xtask bench`: copytrace's cost next to the real alternatives, in
//! one run, on real filesystems: [`measure`] takes the numbers with the
//! [`tracers`] around the loops and the kernel programs' [`costs`],
//! [`report`] writes them (and the [`machine`] they came from) to
//! docs/benchmarks.md.

mod costs;
mod machine;
mod measure;
mod report;
mod soak;
mod tracers;

pub use soak::soak;

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Result;
use copytrace_common::metric_names::PROBES_ATTACHED;
use copytrace_testkit::KillOnDrop;

use self::measure::{stats, Fixture, Stats};
use self::tracers::Watch;
use crate::arch::Arch;
use crate::cmd::say;
use crate::provision::ensure_debs;

/// What runs around the measured loop.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Untraced,
    Copytrace,
    /// Empty programs on the two copy_file_range tracepoints: what any
    /// tracepoint tool pays before its programs do anything.
    EmptyTracepoints,
    Bpftrace,
    Strace,
}

impl Mode {
    /// Every mode, in table order.
    pub const ALL: [Mode; 5] = [
        Mode::Untraced,
        Mode::Copytrace,
        Mode::EmptyTracepoints,
        Mode::Bpftrace,
        Mode::Strace,
    ];

    /// Column name.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Untraced => "untraced",
            Mode::Copytrace => "copytrace",
            Mode::EmptyTracepoints => "empty tracepoints",
            Mode::Bpftrace => "bpftrace",
            Mode::Strace => "strace -f",
        }
    }
}

/// Everything one `cargo xtask bench` measured.
pub struct Results {
    pub machine: machine::Machine,
    pub backend: String,
    pub workloads: Vec<String>,
    /// [workload][mode].
    pub table: Vec<Vec<Option<Stats>>>,
    /// [workload][mode]: the median of a mode's per-pass ratios to the
    /// untraced run of the same pass, for the modes that alternate.
    pub paired: Vec<Vec<Option<f64>>>,
    /// Kernel-side cost per case: (case, [(program, ns per run)]).
    pub costs: Vec<(String, Vec<costs::ProgramCost>)>,
    pub ingests: Vec<measure::Ingest>,
    pub ready: Stats,
    pub idle_rss_kib: u64,
    pub micro: Vec<(String, String)>,
    /// What a tracepoint program's building blocks cost on this machine.
    pub floor: Vec<(&'static str, Stats)>,
    /// The per-call loops in a qemu guest whose kernel allows fentry.
    pub guest: Option<crate::matrix::GuestResult>,
}

/// Passes of the alternating per-call runs: more than the other modes'
/// [`measure::RUNS`], as their ratios are the figures the targets are
/// about, and a pass is short.
pub const ALTERNATING_PASSES: usize = 11;

/// Time a tracer gets after attaching before the loops run: both keep
/// working for a moment (the daemon reads its tables, bpftrace finishes
/// setting up), on the CPU the loop would otherwise have to itself.
const SETTLE: Duration = Duration::from_millis(1500);

/// The guest the per-call loops also run in: a stock kernel that allows
/// fentry, which this machine refuses.
pub const GUEST_KERNEL: (&str, Arch) = ("6.12", Arch::X86_64);

/// Runs every benchmark (the guest's too when `guest`) and writes
/// docs/benchmarks.md.
pub fn bench(guest: bool) -> Result<()> {
    ensure_debs(&["bpftrace", "bpftool", "strace"])?;
    measure::build_release()?;
    let root = PathBuf::from("target/bench");
    let fx = Fixture::new(&root)?;
    let ws = measure::workloads(&fx);
    let silent = measure::silent_workload();
    let mut table: Vec<Vec<Option<Stats>>> = vec![vec![None; Mode::ALL.len()]; ws.len()];
    let mut paired: Vec<Vec<Option<f64>>> = vec![vec![None; Mode::ALL.len()]; ws.len()];
    let mut idle_rss_kib = 0;
    let mut ingests = Vec::new();
    let mut costs = Vec::new();
    let mut backend = String::from("?");
    // Untraced, copytrace and the empty tracepoints alternate pass by pass,
    // the daemon started afresh for each: this machine's speed drifts by
    // tens of percent over minutes (other tenants), and alternating puts
    // that drift on the three columns alike instead of on their ratios.
    say("bench: untraced, copytrace and empty tracepoints, alternating");
    let alternating = [Mode::Untraced, Mode::Copytrace, Mode::EmptyTracepoints];
    let mut passes = vec![[Vec::new(), Vec::new(), Vec::new()]; ws.len()];
    // Each pass's daemon start is also the start-up figure.
    let mut ready = Vec::new();
    for w in &ws {
        measure::run_loop(false, w, w.iters / 5)?;
    }
    // One run of every workload, into column `col` of `passes`.
    let run_column = |passes: &mut Vec<[Vec<f64>; 3]>, col: usize| -> Result<()> {
        for (wi, w) in ws.iter().enumerate() {
            passes[wi][col].push(measure::run_loop(false, w, w.iters)?);
        }
        Ok(())
    };
    for pass in 0..ALTERNATING_PASSES {
        run_column(&mut passes, 0)?;
        let d = tracers::start_copytrace(&root, Watch::Machine, &[], None)?;
        ready.push(d.ready.as_secs_f64() * 1000.0);
        if pass == 0 {
            std::thread::sleep(Duration::from_secs(2));
            idle_rss_kib = measure::proc_status_kib(d.child.id(), "VmRSS:");
            backend = measure::scrape(&d.metrics)?
                .lines()
                .find(|l| l.starts_with(&format!("{PROBES_ATTACHED}{{")) && l.ends_with(" 1"))
                .and_then(|l| l.split('"').nth(1))
                .unwrap_or("?")
                .to_string();
        }
        std::thread::sleep(SETTLE);
        run_column(&mut passes, 1)?;
        drop(d);
        let _empty = KillOnDrop(tracers::start_empty_tracepoints()?);
        std::thread::sleep(SETTLE);
        run_column(&mut passes, 2)?;
    }
    for (wi, columns) in passes.into_iter().enumerate() {
        for (mode, runs) in alternating.iter().zip(&columns) {
            let ratios = runs.iter().zip(&columns[0]).map(|(r, u)| r / u).collect();
            paired[wi][*mode as usize] = Some(stats(ratios).median);
            table[wi][*mode as usize] = Some(stats(runs.clone()));
        }
    }
    {
        let _d = tracers::start_copytrace(&root, Watch::Machine, &[], None)?;
        costs.push((
            "ok 4 KiB tmpfs copy (metrics and suspicious calls only)".to_string(),
            costs::program_costs(|| measure::run_loop(false, &ws[0], ws[0].iters).map(drop))?,
        ));
        costs.push((
            "silent zero copy flood, stacks on (a CPU takes 32 whole stack copies, then 100 a second; the rest copy 64 bytes)".to_string(),
            costs::program_costs(|| measure::run_loop(false, &silent, silent.iters).map(drop))?,
        ));
    }
    for (mi, mode) in Mode::ALL.iter().enumerate() {
        let _bpftrace = match mode {
            Mode::Untraced | Mode::Copytrace | Mode::EmptyTracepoints => continue,
            Mode::Bpftrace => Some(KillOnDrop(tracers::start_bpftrace(&root)?)),
            Mode::Strace => None,
        };
        say(&format!("bench: {}", mode.name()));
        for (wi, w) in ws.iter().enumerate() {
            if *mode == Mode::Strace && !w.copies {
                continue;
            }
            table[wi][mi] = Some(measure::measure(*mode == Mode::Strace, w)?);
        }
    }
    // Ingest checks exact counts, so its daemons watch only the loops.
    {
        let d = tracers::start_copytrace(&root, Watch::OnlyUs, &[], None)?;
        for threads in [1, 2] {
            ingests.push(measure::ingest(
                &d,
                "metrics and suspicious calls (default)",
                &fx,
                threads,
            )?);
        }
    }
    // The same programs, loaded for other consumers.
    let at_fpos = measure::at_file_positions(&ws[0]);
    for (case, extra, w) in [
        (
            "ok 4 KiB tmpfs copy, every call reported (--print all)",
            &["--print", "all"][..],
            &ws[0],
        ),
        (
            "the same at the file positions (NULL offsets, as cp and Go pass them), every call reported",
            &["--print", "all"][..],
            &at_fpos,
        ),
        (
            "silent zero copy, --no-stacks",
            &["--no-stacks"][..],
            &silent,
        ),
    ] {
        let _d = tracers::start_copytrace(&root, Watch::Machine, extra, None)?;
        costs.push((
            case.to_string(),
            costs::program_costs(|| measure::run_loop(false, w, w.iters).map(drop))?,
        ));
    }
    {
        let d = tracers::start_copytrace(&root, Watch::OnlyUs, &["--print", "all"], None)?;
        ingests.push(measure::ingest(&d, "every call (--print all)", &fx, 2)?);
    }
    let floor = costs::machine_floor()?;
    let micro = measure::criterion().unwrap_or_else(|e| {
        say(&format!("criterion benchmarks failed: {e:#}"));
        Vec::new()
    });
    // Last, with the host otherwise idle: the guest's TCG vCPU takes a core.
    let guest = if guest {
        say("bench: the per-call loops in the guest");
        Some(crate::matrix::bench_guest(GUEST_KERNEL.0, GUEST_KERNEL.1)?)
    } else {
        None
    };
    let results = Results {
        machine: machine::Machine::detect(),
        backend,
        workloads: ws.iter().map(|w| w.name.clone()).collect(),
        table,
        paired,
        costs,
        floor,
        ingests,
        ready: stats(ready),
        idle_rss_kib,
        micro,
        guest,
    };
    report::write(&results)
}
