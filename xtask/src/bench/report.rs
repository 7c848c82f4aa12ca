//! docs/benchmarks.md from [`Results`].

use std::fmt::Write as _;

use anyhow::{Context, Result};

use super::{measure::RUNS, Mode, Results, ALTERNATING_PASSES};
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
        "copytrace used the **{}** back-end (the one `--probe auto` chose on this kernel), watching every process as the daemon does by default (the ingest rows watch only the loops, `--pid`, to check counts exactly). Medians after a warm-up, range in brackets. The untraced, copytrace and empty-tracepoint runs alternate over {ALTERNATING_PASSES} passes (a fresh daemon for each copytrace run), so the machine's drift falls on the three columns alike, and their ratio is the median of each pass's ratio to the untraced run of the same pass; bpftrace and strace take {RUNS} runs each. The empty tracepoints are bpftrace with empty programs on `sys_enter/exit_copy_file_range`: what attaching there costs before any program does work, so copytrace's own share is the difference between the two columns.\n",
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
            .zip(&r.paired[wi])
            .map(|(c, paired)| match c {
                Some(s) => format!(
                    "{:.0} ns [{:.0}–{:.0}] ({:.2}×)",
                    s.median,
                    s.min,
                    s.max,
                    paired.unwrap_or(s.median / base)
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
    if let Some(g) = &r.guest {
        guest_section(&mut md, g);
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
            let per_call = |p: &&crate::bench::costs::ProgramCost| p.runs * 2.0 >= calls;
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
        let _ = writeln!(
            md,
            "\nThe two every-call rows differ by one read of the caller's memory: with offsets passed, the tracepoint back-end reads `*off_in` and `*off_out` at exit (one `bpf_probe_read_user` of both when they lie side by side), a helper that also runs the hardened-usercopy checks. The fentry back-end reads no user memory: it takes the positions `vfs_copy_file_range` was passed. A suspicious call wakes the daemon at once unless another did less than 1 ms before: each wake-up is a self-IPI (a VM exit under virtualization), which a flood of silent copies would otherwise pay per call."
        );
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

/// Workloads of the guest's loops, in table order, with their names.
const GUEST_WORKLOADS: [(&str, &str); 5] = [
    ("4k-tmpfs", "copy_file_range 4 KiB tmpfs"),
    ("1m-tmpfs", "copy_file_range 1 MiB tmpfs"),
    ("4k-ext4", "copy_file_range 4 KiB ext4"),
    ("1m-ext4", "copy_file_range 1 MiB ext4"),
    ("unrelated", "unrelated openat+read+write+close"),
];

/// The same per-call loops in a guest: each back-end as a ratio to the
/// untraced blocks measured just before and just after it.
pub fn guest_section(md: &mut String, g: &crate::matrix::GuestResult) {
    let _ = writeln!(
        md,
        "\n## Both back-ends in a guest that allows fentry ({} under qemu TCG)\n\n\
         This machine refuses fentry, so the same loops (`bench-loop`, fewer iterations) also run in the \
         kernel matrix's {} guest (one vCPU), with copytrace started the same way on each back-end. TCG \
         emulates every instruction, stretching absolute times by one to two orders of magnitude and \
         unevenly (a helper call, a memcpy and a trap do not slow down alike), and the guest drifts by \
         tens of per cent within a minute (other tenants of this machine's host show through TCG). So the \
         guest measures untraced, fentry, untraced, tracepoint, untraced, 7 passes each; interference \
         only ever adds time, so each back-end's ratio compares fastest passes: its own with the mean of \
         the untraced blocks' on either side of it (both in brackets). Medians [range] are shown too; \
         \"programs\" is the daemon's BPF programs' run time per operation (bpf_stats, in a pass of its own).\n",
        g.release,
        g.kernel.label()
    );
    let find = |mode: &str, w: &str| g.bench.iter().find(|b| b.mode == mode && b.workload == w);
    // Blocks in the order the guest ran them: a back-end's neighbours are
    // the untraced blocks just before and after it (a refused back-end
    // has no block, and its neighbours merge).
    let mut order: Vec<&str> = Vec::new();
    for b in &g.bench {
        if !order.contains(&b.mode.as_str()) {
            order.push(&b.mode);
        }
    }
    let untraced = |m: &str| m.starts_with("untraced");
    let modes: Vec<(&str, Option<&str>, Option<&str>)> = order
        .iter()
        .enumerate()
        .filter(|(_, m)| !untraced(m))
        .map(|(i, m)| {
            let before = order[..i].iter().rev().find(|u| untraced(u)).copied();
            let after = order[i + 1..].iter().find(|u| untraced(u)).copied();
            (*m, before, after)
        })
        .collect();
    let _ = writeln!(
        md,
        "| workload | {} |\n|---|{}",
        modes
            .iter()
            .map(|(m, _, _)| format!("untraced around {m} | copytrace {m} | programs ({m})"))
            .collect::<Vec<_>>()
            .join(" | "),
        "---|---|---|".repeat(modes.len())
    );
    for (key, name) in GUEST_WORKLOADS {
        let mut cells = Vec::new();
        for (m, before, after) in &modes {
            let before = before.and_then(|u| find(u, key));
            let after = after.and_then(|u| find(u, key));
            let (Some(b), Some(before), Some(after)) = (find(m, key), before, after) else {
                cells.extend(["—".to_string(), "—".to_string(), "—".to_string()]);
                continue;
            };
            let base = (before.min + after.min) / 2.0;
            cells.push(format!(
                "fastest {base:.0} ns [{:.0}, {:.0}]; medians {:.0}, {:.0}",
                before.min, after.min, before.median, after.median
            ));
            cells.push(format!(
                "fastest {:.0} ns (**{:.2}×**); median {:.0} [{:.0}–{:.0}]",
                b.min,
                b.min / base,
                b.median,
                b.min,
                b.max
            ));
            cells.push(format!("{:.0} ns", b.programs));
        }
        let _ = writeln!(md, "| {name} | {} |", cells.join(" | "));
    }
    for (backend, why) in &g.refused {
        let _ = writeln!(md, "\nThe guest refused the {backend} back-end: {why}");
    }
}

/// Prints the report and writes docs/benchmarks.md.
pub fn write(r: &Results) -> Result<()> {
    let md = markdown(r);
    echo(&md);
    std::fs::write("docs/benchmarks.md", &md).context("writing docs/benchmarks.md")?;
    crate::cmd::say("wrote docs/benchmarks.md");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::matrix::{BenchLine, GuestResult, KERNELS};

    fn line(mode: &str, workload: &str, min: f64) -> BenchLine {
        BenchLine {
            mode: mode.into(),
            workload: workload.into(),
            median: min * 1.5,
            min,
            max: min * 2.0,
            programs: 7.0,
        }
    }

    #[test]
    fn a_back_end_is_compared_with_the_untraced_blocks_around_it() {
        // fentry refused: the tracepoint block sits between untraced-0 and
        // untraced-1, whatever their numbers.
        let g = GuestResult {
            kernel: KERNELS[0],
            release: "6.12.0-test".into(),
            elapsed: std::time::Duration::ZERO,
            runs: Vec::new(),
            bench: vec![
                line("untraced-0", "4k-tmpfs", 900.0),
                line("tracepoint", "4k-tmpfs", 2000.0),
                line("untraced-1", "4k-tmpfs", 1100.0),
            ],
            refused: vec![("fentry".into(), "no trampoline".into())],
            trouble: None,
        };
        let mut md = String::new();
        guest_section(&mut md, &g);
        assert!(md.contains("untraced around tracepoint"), "{md}");
        assert!(!md.contains("copytrace fentry"), "{md}");
        assert!(md.contains("fastest 1000 ns [900, 1100]"), "{md}");
        assert!(md.contains("fastest 2000 ns (**2.00×**)"), "{md}");
        assert!(
            md.contains("refused the fentry back-end: no trampoline"),
            "{md}"
        );
    }
}
