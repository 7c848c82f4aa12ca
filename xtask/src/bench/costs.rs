//! What the kernel side costs: the run time per run of BPF programs while
//! a case runs (kernel.bpf_stats_enabled, totals from bpftool), for
//! copytrace's programs and for the building blocks any tracepoint program
//! pays on this machine.

use std::process::Command;

use anyhow::Result;
use copytrace_testkit::KillOnDrop;

use super::measure::{stats, Stats, RUNS};
use super::tracers::attached_bpftrace;
use crate::cmd::{output, run};

/// One copytrace program's runs while a case ran.
#[derive(Debug, Clone)]
pub struct ProgramCost {
    pub name: String,
    /// Average run time per run: median and range over [`RUNS`] passes.
    pub ns_per_run: Stats,
    /// Runs in one pass.
    pub runs: f64,
}

/// Average run time per run of each copytrace program while `f` runs.
pub fn program_costs(f: impl Fn() -> Result<()>) -> Result<Vec<ProgramCost>> {
    costs_of("cfr_", f)
}

/// What this machine charges a tracepoint program for its building blocks:
/// bpftrace one-liners on `sys_enter_getppid`, each timed by bpf_stats over
/// [`RUNS`] passes of getppid calls from this process. (bpftrace's own
/// prologue is in every figure: read them against the empty program.)
pub fn machine_floor() -> Result<Vec<(&'static str, Stats)>> {
    const CALLS: usize = 200_000;
    let cases: [(&str, &str); 6] = [
        ("empty program", "{ }"),
        (
            "clock read (bpf_ktime_get_ns)",
            "{ $t = nsecs; if ($t == 1) { exit(); } }",
        ),
        (
            "one kernel read (bpf_probe_read_kernel)",
            "{ $p = curtask->real_parent; if ($p == 0) { exit(); } }",
        ),
        ("hash lookup by tid", "{ if (@m[tid] == 7) { exit(); } }"),
        ("hash update by tid", "{ @m[tid] = 1; }"),
        (
            "hash update and delete by tid",
            "{ @m[tid] = 1; delete(@m[tid]); }",
        ),
    ];
    let mut out = Vec::new();
    for (what, body) in cases {
        let script = format!("BEGIN {{ @m[0] = 0; }} tracepoint:syscalls:sys_enter_getppid {body}");
        let _bpftrace = KillOnDrop(attached_bpftrace(
            Command::new("bpftrace").args(["-e", &script]),
        )?);
        let costs = costs_of("sys_enter_getp", || {
            for _ in 0..CALLS {
                // SAFETY: getppid has no preconditions.
                unsafe { libc::getppid() };
            }
            Ok(())
        })?;
        if let Some(p) = costs.into_iter().max_by(|a, b| a.runs.total_cmp(&b.runs)) {
            out.push((what, p.ns_per_run));
        }
    }
    Ok(out)
}

/// Average run time per run of each program named `prefix…` while `f` runs
/// (kernel.bpf_stats_enabled; bpftool reads the totals), over [`RUNS`]
/// passes: the machine's neighbours move one pass's figures by a fifth.
fn costs_of(prefix: &str, f: impl Fn() -> Result<()>) -> Result<Vec<ProgramCost>> {
    let mut passes: Vec<Vec<(String, f64, f64)>> = Vec::new();
    for _ in 0..RUNS {
        let before = program_totals(prefix);
        run(Command::new("sysctl").args(["-qw", "kernel.bpf_stats_enabled=1"]))?;
        let r = f();
        run(Command::new("sysctl").args(["-qw", "kernel.bpf_stats_enabled=0"]))?;
        r?;
        let after = program_totals(prefix);
        passes.push(
            after
                .into_iter()
                .filter_map(|(name, (ns, cnt))| {
                    let (ns0, cnt0) = before
                        .iter()
                        .find(|(n, _)| *n == name)
                        .map_or((0.0, 0.0), |(_, v)| *v);
                    let runs = cnt - cnt0;
                    (runs > 0.0).then(|| (name, (ns - ns0) / runs, runs))
                })
                .collect(),
        );
    }
    let mut names: Vec<String> = passes.iter().flatten().map(|(n, _, _)| n.clone()).collect();
    names.sort();
    names.dedup();
    Ok(names
        .into_iter()
        .map(|name| {
            let of = passes.iter().flatten().filter(|(n, _, _)| *n == name);
            let ns: Vec<f64> = of.clone().map(|(_, ns, _)| *ns).collect();
            let runs = of.map(|(_, _, r)| *r).fold(0.0, f64::max);
            ProgramCost {
                name,
                ns_per_run: stats(ns),
                runs,
            }
        })
        .collect())
}

/// (run_time_ns, run_cnt) of each loaded program whose name starts with `prefix`.
fn program_totals(prefix: &str) -> Vec<(String, (f64, f64))> {
    let Ok(text) = output(Command::new("bpftool").args(["prog", "show"])) else {
        return Vec::new();
    };
    text.lines()
        .filter_map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            let at = |k: &str| w.iter().position(|x| *x == k).and_then(|i| w.get(i + 1));
            let name = at("name")?.to_string();
            let ns: f64 = at("run_time_ns")?.parse().ok()?;
            let cnt: f64 = at("run_cnt")?.parse().ok()?;
            name.starts_with(prefix).then_some((name, (ns, cnt)))
        })
        .collect()
}
