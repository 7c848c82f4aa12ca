//! The fleet checks: both guests scraped by one Prometheus on this host
//! with the shipped alert rules.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use copytrace_common::metric_names::{CALLS_TOTAL, PROBES_ATTACHED};
use copytrace_testkit::net::{free_port, http_get};
use serde_json::Value;

use super::ROOT;
use crate::cmd::echo;
use crate::suite::tally::{Outcome, Run};

fn http_json(addr: &str, path: &str) -> Option<Value> {
    serde_json::from_str(&http_get(addr, path)?.1).ok()
}

/// `sum by (instance)` of a PromQL expression, from the host's Prometheus.
fn by_instance(prom: &str, expr: &str) -> BTreeMap<String, f64> {
    let q: String = expr
        .bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect();
    http_json(prom, &format!("/api/v1/query?query={q}"))
        .and_then(|v| v["data"]["result"].as_array().cloned())
        .unwrap_or_default()
        .iter()
        .filter_map(|r| {
            Some((
                r["metric"]["instance"].as_str()?.to_string(),
                r["value"][1].as_str()?.parse().ok()?,
            ))
        })
        .collect()
}

/// The fleet checks against the host's Prometheus, as one run. `ports`:
/// each member's name, forwarded metrics port and silent copies made; the
/// first is the bad host.
pub fn fleet_checks(ports: &[(String, u16, f64)]) -> Result<Run> {
    let checks = [
        "sum by (instance) separates the hosts",
        "the silent-copy alert fires for the bad host only",
    ];
    let mut run = Run::new(
        "fleet: two guests, one Prometheus",
        &checks.map(str::to_string),
    );
    let dir = PathBuf::from(ROOT).join("prometheus");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let rules = std::fs::canonicalize("deploy/alerts.yml")?;
    let mut cfg = format!(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nrule_files: ['{}']\nscrape_configs:\n  - job_name: copytrace\n    static_configs:\n",
        rules.display()
    );
    for (name, port, _) in ports {
        cfg.push_str(&format!(
            "      - targets: ['127.0.0.1:{port}']\n        labels: {{instance: {name}}}\n"
        ));
    }
    std::fs::write(dir.join("prometheus.yml"), cfg)?;
    let prom_port = free_port();
    let prom = format!("127.0.0.1:{prom_port}");
    let mut server = Command::new("prometheus")
        .arg(format!(
            "--config.file={}",
            dir.join("prometheus.yml").display()
        ))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("data").display()
        ))
        .arg(format!("--web.listen-address={prom}"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .context("prometheus (cargo xtask provision installs it)")?;
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut sums = BTreeMap::new();
    let mut firing: Vec<String> = Vec::new();
    while Instant::now() < deadline {
        std::thread::sleep(Duration::from_secs(2));
        sums = by_instance(
            &prom,
            &format!("sum by (instance) ({CALLS_TOTAL}{{verdict=\"silent_zero_copy\"}}) or sum by (instance) ({PROBES_ATTACHED}) * 0"),
        );
        firing = http_json(&prom, "/api/v1/alerts")
            .and_then(|v| v["data"]["alerts"].as_array().cloned())
            .unwrap_or_default()
            .iter()
            .filter(|a| {
                a["labels"]["alertname"] == "CopyFileRangeSilentZeroCopy" && a["state"] == "firing"
            })
            .filter_map(|a| a["labels"]["instance"].as_str().map(str::to_string))
            .collect();
        if sums.len() == ports.len() && !firing.is_empty() {
            // One more evaluation, so a wrong second alert would show too.
            std::thread::sleep(Duration::from_secs(3));
            break;
        }
    }
    let _ = server.kill();
    let _ = server.wait();
    echo(&format!(
        "fleet: silent zero copies by instance {sums:?}; alert firing for {firing:?}"
    ));
    let bad = ports.first().map(|(n, _, _)| n.clone()).unwrap_or_default();
    let exact = ports
        .iter()
        .all(|(n, _, silent)| sums.get(n).copied() == Some(*silent));
    run.set(
        checks[0],
        if exact {
            Outcome::Passed
        } else {
            Outcome::Failed
        },
    );
    run.set(
        checks[1],
        if firing == vec![bad] {
            Outcome::Passed
        } else {
            Outcome::Failed
        },
    );
    Ok(run)
}
