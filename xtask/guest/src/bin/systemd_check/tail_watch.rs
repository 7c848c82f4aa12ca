//! What `copytrace tail --all --json` shows of the calls some commands
//! make: the records, one line each as an operator reads them, and the
//! counts by origin.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::Value;

use crate::sys::{http_get, sample, wait};
use copytrace_common::metric_names::{CALLS_TOTAL, TAIL_CLIENTS};

/// Every call line `copytrace tail --all --json` prints while `copies` runs.
pub fn calls_during(copies: impl FnOnce() -> String) -> (Vec<Value>, String) {
    let mut tail = match Command::new("copytrace")
        .args(["tail", "--all", "--json"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
    {
        Ok(t) => t,
        Err(e) => return (Vec::new(), format!("cannot run copytrace tail: {e}")),
    };
    // Counted as a client once past its hello: calls made from then on reach it.
    let connected = wait(10, || {
        let m = http_get("127.0.0.1:9977", "/metrics")?;
        (sample(&m, TAIL_CLIENTS) == Some(1.0)).then_some(())
    });
    let ran = copies();
    // Every call of the commands has ended: its record is out within a second.
    std::thread::sleep(Duration::from_secs(2));
    let _ = tail.kill();
    let mut out = String::new();
    if let Some(mut s) = tail.stdout.take() {
        let _ = s.read_to_string(&mut out);
    }
    let _ = tail.wait();
    let calls = out
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["type"] == "call")
        .map(|v| v["data"].clone())
        .collect();
    let note = if connected.is_none() {
        format!("{ran}; the tail client was not counted within 10 s")
    } else {
        ran
    };
    (calls, note)
}

/// One call, as the closing note and an operator read it.
pub fn summary(c: &Value) -> String {
    let within = match &c["within"] {
        Value::Null => String::new(),
        w => format!(
            " inside tid {}'s call fd {}→{} entered at {}",
            c["tid"], w["fd_in"], w["fd_out"], w["start_ns"]
        ),
    };
    format!(
        "{} {} {} pid {} fd {}→{} {}:{} → {}:{} len {} ret {} {} by {} ({} ns){within}",
        c["origin"].as_str().unwrap_or("?"),
        c["verdict"].as_str().unwrap_or("?"),
        c["comm"].as_str().unwrap_or("?"),
        c["pid"],
        c["fd_in"],
        c["fd_out"],
        c["file_in"]["fs"].as_str().unwrap_or("?"),
        c["path_in"].as_str().unwrap_or("?"),
        c["file_out"]["fs"].as_str().unwrap_or("?"),
        c["path_out"].as_str().unwrap_or("?"),
        c["len"],
        c["ret"],
        c["reason"].as_str().unwrap_or(""),
        c["mechanism"].as_str().unwrap_or("?"),
        c["latency_ns"],
    )
}

/// The sum of `calls_total` series with this origin.
pub fn counted(metrics: &str, origin: &str) -> f64 {
    metrics
        .lines()
        .filter(|l| l.starts_with(&format!("{CALLS_TOTAL}{{")))
        .filter(|l| l.contains(&format!("origin=\"{origin}\"")))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}
