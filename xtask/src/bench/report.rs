//! docs/benchmarks.md from [`Results`].

use std::fmt::Write as _;

use anyhow::{Context, Result};

use super::{measure::RUNS, Mode, Results};
use crate::cmd::echo;

/// Renders the report.
pub fn markdown(r: &Results) -> String {
    let m = &r.machine;
    let mut md = String::new();
    let _ = writeln!(
        md,
        "# Benchmarks\n\nMeasured by `cargo xtask bench` on {}: Linux {}, {}, {} logical CPUs.",
        m.date, m.kernel, m.cpu, m.cores
    );
    let _ = writeln!(
        md,
        "copytrace used the **{}** back-end (the one `--probe auto` chose on this kernel). Median of {RUNS} runs after a warm-up; range in brackets.\n",
        r.backend
    );
    let _ = writeln!(
        md,
        "## Per-call cost\n\n| workload | {} |\n|---|{}",
        Mode::ALL
            .iter()
            .map(|m| m.name())
            .collect::<Vec<_>>()
            .join(" | "),
        "---|".repeat(Mode::ALL.len())
    );
    for (wi, w) in r.workloads.iter().enumerate() {
        let base = r.table[wi][0].map_or(f64::NAN, |s| s.median);
        let cells: Vec<String> = r.table[wi]
            .iter()
            .map(|c| match c {
                Some(s) => format!(
                    "{:.0} ns [{:.0}–{:.0}] ({:.2}×)",
                    s.median,
                    s.min,
                    s.max,
                    s.median / base
                ),
                None => "—".into(),
            })
            .collect();
        let _ = writeln!(md, "| {w} | {} |", cells.join(" | "));
    }
    let _ = writeln!(
        md,
        "\nThe last row is the floor of syscall tracepoints: attaching to \
         `syscalls:sys_enter/exit_copy_file_range` sets TIF_SYSCALL_TRACEPOINT \
         on every task, so every syscall of every process takes the slow entry \
         and exit path (`syscall_trace_enter`/`exit`), copy_file_range or not. \
         The fentry back-end, where the kernel allows it, patches only \
         `__x64_sys_copy_file_range` (`__arm64_…`) and `vfs_copy_file_range`: \
         no flag is set and other syscalls run the fast path untouched, so it \
         costs unrelated syscalls nothing."
    );
    let _ = writeln!(md, "\n## Ingest (copytrace daemon, 4 KiB tmpfs copies)\n\nThe kernel reports to the daemon only the calls some consumer shows; every call is counted in the kernel either way.\n\n| daemon shows | threads | calls | calls/s | events read | events lost | counted exactly | peak RSS | daemon CPU s per 100k calls |\n|---|---|---|---|---|---|---|---|---|");
    for i in &r.ingests {
        let _ = writeln!(
            md,
            "| {} | {} | {:.0} | {:.0} | {:.0} | {:.0} ({:.1} %) | {} | {:.1} MiB | {:.3} |",
            i.daemon,
            i.threads,
            i.calls,
            i.calls / i.seconds,
            i.received,
            i.lost,
            100.0 * i.lost / i.calls.max(1.0),
            if i.counted_exactly { "yes" } else { "NO" },
            i.peak_rss_kib as f64 / 1024.0,
            i.cpu_per_100k
        );
    }
    if !r.costs.is_empty() {
        let _ = writeln!(
            md,
            "\n## Kernel programs (bpf_stats: average run time per call, median of {RUNS} passes [range])\n\n| case | programs | total per call |\n|---|---|---|"
        );
        for (case, programs) in &r.costs {
            // Programs that ran about once per call add up to the per-call
            // cost; the thread-exit program runs once per thread.
            let calls = programs.iter().map(|p| p.runs).fold(0.0, f64::max);
            let per_call = |p: &&crate::bench::measure::ProgramCost| p.runs * 2.0 >= calls;
            let each: Vec<String> = programs
                .iter()
                .map(|p| {
                    let ns = p.ns_per_run;
                    let spread = format!("{:.0} ns [{:.0}–{:.0}]", ns.median, ns.min, ns.max);
                    if per_call(&p) {
                        format!("{} {spread}", p.name)
                    } else {
                        format!("{} {spread} per run ({} runs)", p.name, p.runs)
                    }
                })
                .collect();
            let total: f64 = programs
                .iter()
                .filter(per_call)
                .map(|p| p.ns_per_run.median)
                .sum();
            let _ = writeln!(md, "| {case} | {} | {total:.0} ns |", each.join(", "));
        }
    }
    if !r.floor.is_empty() {
        let _ = writeln!(
            md,
            "\n## This machine's floor (bpftrace one-liners on sys_enter_getppid, bpf_stats, median of {RUNS} passes [range])\n\nWhat copytrace's programs are built from costs this much here; each figure includes bpftrace's own prologue (the empty program).\n\n| program does | per run |\n|---|---|"
        );
        for (what, s) in &r.floor {
            let _ = writeln!(
                md,
                "| {what} | {:.0} ns [{:.0}–{:.0}] |",
                s.median, s.min, s.max
            );
        }
    }
    let _ = writeln!(md, "\n## Daemon\n\n| measure | value |\n|---|---|");
    let _ = writeln!(
        md,
        "| start to READY=1 | {:.0} ms [{:.0}–{:.0}] |",
        r.ready.median, r.ready.min, r.ready.max
    );
    let _ = writeln!(
        md,
        "| RSS idle | {:.1} MiB |",
        r.idle_rss_kib as f64 / 1024.0
    );
    if !r.micro.is_empty() {
        let _ = writeln!(md, "\n## Decode and classify (criterion)\n\n| benchmark | time [low est high] |\n|---|---|");
        for (n, t) in &r.micro {
            let _ = writeln!(md, "| {n} | {t} |");
        }
    }
    md
}

/// Prints the report and writes docs/benchmarks.md.
pub fn write(r: &Results) -> Result<()> {
    let md = markdown(r);
    echo(&md);
    std::fs::write("docs/benchmarks.md", &md).context("writing docs/benchmarks.md")?;
    crate::cmd::say("wrote docs/benchmarks.md");
    Ok(())
}
