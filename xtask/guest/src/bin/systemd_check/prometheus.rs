//! Being scraped: by the guest's own Prometheus, and as a fleet member by
//! the host's.

use std::io::BufRead;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::service::CONFIG;
use crate::sys::{copy, http_get, sample, sh, silent_copy, wait};
use copytrace_common::metric_names::CALLS_TOTAL;
use copytrace_guest::console::{ConsoleLine, Kind};
use copytrace_guest::report;

use crate::check;

pub fn prometheus_counts(silent: u64) -> bool {
    let series = format!(
        r#"{CALLS_TOTAL}{{fs_in="proc",fs_out="proc",origin="syscall",verdict="silent_zero_copy"}}"#
    );
    let cfg = "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: copytrace\n    static_configs:\n      - targets: ['127.0.0.1:9977']\n";
    let _ = std::fs::write("/etc/prometheus/prometheus.yml", cfg);
    let _ = sh("systemctl", &["restart", "prometheus"]);
    let own = http_get("127.0.0.1:9977", "/metrics")
        .and_then(|b| sample(&b, &series))
        .unwrap_or(-1.0);
    // The metric's name needs no percent-encoding: letters and `_`.
    let query = format!("/api/v1/query?query={CALLS_TOTAL}%7Bverdict%3D%22silent_zero_copy%22%2Cfs_in%3D%22proc%22%2Cfs_out%3D%22proc%22%7D");
    let seen = wait(90, || {
        let body = http_get("127.0.0.1:9090", &query)?;
        let v: Value = serde_json::from_str(&body).ok()?;
        let n: f64 = v["data"]["result"][0]["value"][1].as_str()?.parse().ok()?;
        (n >= silent as f64).then_some(n)
    });
    check(
        "Prometheus in the guest scrapes exact counts",
        seen == Some(silent as f64) && own == silent as f64,
        &format!("{silent} silent copies made; /metrics says {own}; Prometheus says {seen:?}"),
    )
}

/// Serves the fleet: listen for the host's Prometheus, make `silent` silent
/// and `good` good copies, say so, and wait for the host.
pub fn fleet(silent: usize, good: usize) {
    let cfg = std::fs::read_to_string(CONFIG).unwrap_or_default();
    let _ = std::fs::write(CONFIG, cfg.replace("127.0.0.1:9977", "0.0.0.0:9977"));
    // The unit allows only localhost; a fleet allows its Prometheus.
    let _ = std::fs::create_dir_all("/etc/systemd/system/copytrace.service.d");
    let _ = std::fs::write(
        "/etc/systemd/system/copytrace.service.d/fleet.conf",
        "[Service]\nIPAddressAllow=10.0.2.2\n",
    );
    let _ = sh("systemctl", &["daemon-reload"]);
    let _ = sh("systemctl", &["restart", "copytrace"]);
    for _ in 0..silent {
        silent_copy();
    }
    let _ = std::fs::write("/root/ct-src", vec![1u8; 1000]);
    for _ in 0..good {
        let _ = copy("/root/ct-src", "/root/ct-dst", 1000);
    }
    report::line(
        Kind::FleetReady,
        "",
        &format!("{silent} silent, {good} good"),
    );
    // The host writes a continue line on the console once it has checked.
    let mut tty = std::io::BufReader::new(std::io::stdin());
    let mut l = String::new();
    let end = Instant::now() + Duration::from_secs(600);
    while Instant::now() < end {
        l.clear();
        match tty.read_line(&mut l) {
            Ok(0) => std::thread::sleep(Duration::from_millis(200)),
            Ok(_) if ConsoleLine::parse(&l).is_some_and(|c| c.kind == Kind::Continue) => return,
            Ok(_) => {}
            Err(_) => std::thread::sleep(Duration::from_millis(200)),
        }
    }
    report::line(
        Kind::Log,
        "fleet",
        &format!("no {} from the host in 600 s", Kind::Continue),
    );
}
