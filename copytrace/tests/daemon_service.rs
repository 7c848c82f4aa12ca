//! `copytrace run` as a service: configuration, systemd notification,
//! signals, the metrics endpoint scraped by a real Prometheus, and the
//! deploy/ files checked by systemd-analyze and promtool.

mod support;

use std::io::Write;
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use support::{
    copytrace_bin, daemon, ebadf_calls, free_port, http_get, require_program, require_root, sample,
    scratch_dir as scratch, silent_copies, suite, wait_for,
};

fn deploy(file: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy")
        .join(file)
}

fn run_once(args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(copytrace_bin())
        .arg("run")
        .args(args)
        .output()
        .expect("run");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn check_config_accepts_good_and_names_bad_keys() {
    let dir = scratch("cfg");
    let good = dir.join("good.toml");
    std::fs::write(
        &good,
        "print = \"suspicious\"\n[metrics]\nlisten = \"127.0.0.1:9100\"\n",
    )
    .expect("write");
    let (code, out, _) = run_once(&["--config", good.to_str().unwrap_or(""), "--check-config"]);
    assert_eq!(code, Some(0));
    assert!(
        out.contains("configuration ok") && out.contains("9100"),
        "{out}"
    );

    let bad = dir.join("bad.toml");
    std::fs::write(&bad, "[metrics]\nlisten = \"127.0.0.1:9100\"\nport = 3\n").expect("write");
    let (code, _, err) = run_once(&["--config", bad.to_str().unwrap_or(""), "--check-config"]);
    assert_eq!(code, Some(2));
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with("copytrace: error: config ") && err.contains("port"),
        "{err}"
    );

    std::fs::write(&bad, "print = \"loud\"\n").expect("write");
    let (code, _, err) = run_once(&["--config", bad.to_str().unwrap_or(""), "--check-config"]);
    assert_eq!(code, Some(2));
    assert!(err.contains("loud"), "{err}");

    let (code, _, err) = run_once(&["--config", "/nonexistent/x.toml", "--check-config"]);
    assert_eq!(code, Some(2));
    assert!(
        err.contains("cannot read config /nonexistent/x.toml"),
        "{err}"
    );

    // A flag overrides the file.
    let (code, out, _) = run_once(&[
        "--config",
        good.to_str().unwrap_or(""),
        "--metrics-listen",
        "127.0.0.1:9200",
        "--check-config",
    ]);
    assert_eq!(code, Some(0));
    assert!(out.contains("9200") && !out.contains("9100"), "{out}");
}

#[test]
fn notifies_ready_after_binding_then_watchdog_then_stopping() {
    let dir = scratch("notify");
    let sock_path = dir.join("notify.sock");
    let notify = UnixDatagram::bind(&sock_path).expect("bind notify socket");
    notify
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let tail = dir.join("tail.sock");
    let mut svc = daemon()
        .args(["--metrics-listen", &addr, "--print", "none"])
        .arg("--socket")
        .arg(tail.to_str().unwrap_or(""))
        .env("NOTIFY_SOCKET", sock_path.to_str().unwrap_or(""))
        .env("WATCHDOG_USEC", "400000")
        .spawn();
    let mut buf = [0u8; 512];
    let n = notify.recv(&mut buf).expect("a notification");
    let first = String::from_utf8_lossy(&buf[..n]).into_owned();
    // The daemon wrote its "attached" line to stderr before READY=1; the
    // test's pipe reader thread may not have taken it in yet.
    svc.wait_log("attached ", 5);
    let backend = svc
        .backend()
        .expect("the log names the back-end before READY");
    suite::assert_backend(&backend);
    assert!(
        first.starts_with(&format!(
            "READY=1\nSTATUS=watching copy_file_range ({backend} back-end)"
        )),
        "{first}"
    );
    // READY=1 promises the endpoints are up.
    assert!(
        http_get(&addr, "/metrics").is_some_and(|(c, _)| c == 200),
        "metrics not served at READY"
    );
    assert!(tail.exists(), "tail socket not in place at READY");

    let mut watchdogs = 0;
    for _ in 0..10 {
        let n = notify.recv(&mut buf).expect("watchdog");
        if &buf[..n] == b"WATCHDOG=1" {
            watchdogs += 1;
        }
        if watchdogs == 3 {
            break;
        }
    }
    assert_eq!(watchdogs, 3, "WATCHDOG=1 every 200 ms");

    svc.signal(libc::SIGTERM);
    let mut stopping = false;
    for _ in 0..20 {
        let n = notify.recv(&mut buf).expect("stopping");
        if buf[..n].starts_with(b"STOPPING=1") {
            stopping = true;
            break;
        }
    }
    assert!(stopping);
    assert_eq!(svc.wait_exit(10), Some(0));
    assert!(!tail.exists(), "socket removed on exit");
}

#[test]
fn port_in_use_is_a_one_line_error() {
    require_root();
    let holder = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = holder.local_addr().expect("addr").to_string();
    let (code, _, err) = run_once(&["--metrics-listen", &addr, "--no-tail"]);
    assert_eq!(code, Some(2));
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains(&format!("cannot serve metrics on {addr}")),
        "{err}"
    );
    // EADDRINUSE: glibc says "Address already in use", musl "Address in use".
    assert!(err.contains("(os error 98)"), "{err}");
}

#[test]
fn sighup_with_broken_config_keeps_running_and_counting() {
    let dir = scratch("hup");
    let cfg = dir.join("copytrace.toml");
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let pid = std::process::id().to_string();
    std::fs::write(&cfg, format!("pid = {pid}\nprint = \"all\"\n[metrics]\nlisten = \"{addr}\"\n[tail]\nenabled = false\n"))
        .expect("write");
    let mut svc = daemon()
        .arg("--config")
        .arg(cfg.to_str().unwrap_or(""))
        .start();
    silent_copies(4);
    let series = r#"copytrace_calls_total{fs_in="proc",fs_out="proc",origin="syscall",verdict="silent_zero_copy"}"#;
    let count = || http_get(&addr, "/metrics").and_then(|(_, b)| sample(&b, series));
    assert_eq!(count(), Some(4.0));

    std::fs::write(&cfg, "pid = \"not a number\"\n").expect("break config");
    svc.signal(libc::SIGHUP);
    svc.wait_log("reload: keeping the running configuration", 10);
    silent_copies(2);
    assert_eq!(
        count(),
        Some(6.0),
        "still counting with the old configuration"
    );

    std::fs::write(&cfg, format!("pid = {pid}\nprint = \"none\"\nlog_level = \"debug\"\n[metrics]\nlisten = \"{addr}\"\n[tail]\nenabled = false\n"))
        .expect("fix config");
    svc.signal(libc::SIGHUP);
    svc.wait_log("reload: configuration applied", 10);
    svc.signal(libc::SIGTERM);
    assert_eq!(svc.wait_exit(10), Some(0));
}

#[test]
fn sigterm_under_load_detaches_and_exits_zero() {
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    let mut svc = daemon()
        .args(["--metrics-listen", &addr, "--no-tail", "--print", "all"])
        .start();
    // Bounded in time, and killed by the guard if the test fails first.
    let _load = support::KillOnDrop(
        support::caller::command("silent-for", &["60"])
            .spawn()
            .expect("load generator"),
    );
    wait_for(10, "calls under load", || {
        let (_, b) = http_get(&addr, "/metrics")?;
        let n = sample(
            &b,
            r#"copytrace_calls_total{fs_in="proc",fs_out="proc",origin="syscall",verdict="silent_zero_copy"}"#,
        )?;
        (n > 1000.0).then_some(())
    });
    svc.signal(libc::SIGTERM);
    let code = svc.wait_exit(10);
    assert_eq!(code, Some(0), "{}", svc.log());
    assert!(svc.log().contains("detached probes"), "{}", svc.log());
}

#[test]
fn real_prometheus_sees_exact_counts_and_promtool_accepts_the_scrape() {
    require_root();
    if !require_program("promtool", "prometheus") || !require_program("prometheus", "prometheus") {
        return;
    }
    let dir = scratch("prom");
    let port = free_port();
    let target = format!("127.0.0.1:{port}");
    let pid = std::process::id().to_string();
    let mut svc = daemon()
        .args(["--metrics-listen", &target, "--no-tail", "--pid", &pid])
        .args(["--print", "none"])
        .start();

    let (code, body) = http_get(&target, "/metrics").expect("scrape");
    assert_eq!(code, 200);
    let mut check = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (installed by cargo xtask provision)");
    check
        .stdin
        .take()
        .expect("stdin")
        .write_all(body.as_bytes())
        .expect("feed promtool");
    let out = check.wait_with_output().expect("promtool");
    assert!(
        out.status.success() && out.stdout.is_empty() && out.stderr.is_empty(),
        "promtool check metrics: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(http_get(&target, "/nope").map(|(c, _)| c), Some(404));

    let prom_port = free_port();
    let prom_addr = format!("127.0.0.1:{prom_port}");
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!("global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: copytrace\n    static_configs:\n      - targets: ['{target}']\n"),
    )
    .expect("prometheus config");
    let _prom = support::KillOnDrop(
        Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={prom_addr}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus (installed by cargo xtask provision)"),
    );

    silent_copies(3);
    ebadf_calls(2);
    let query = |q: &str| -> Option<f64> {
        let (_, body) = http_get(&prom_addr, &format!("/api/v1/query?query={q}"))?;
        let v: serde_json::Value = serde_json::from_str(&body).ok()?;
        v["data"]["result"][0]["value"][1].as_str()?.parse().ok()
    };
    let silent = "copytrace_calls_total%7Bverdict%3D%22silent_zero_copy%22%2Cfs_in%3D%22proc%22%2Cfs_out%3D%22proc%22%7D";
    let ebadf = "copytrace_errors_total%7Berrno%3D%22EBADF%22%7D";
    let got = wait_for(60, "Prometheus to scrape the calls", || {
        let s = query(silent)?;
        let e = query(ebadf)?;
        (s >= 3.0 && e >= 2.0).then_some((s, e))
    });
    assert_eq!(got, (3.0, 2.0), "Prometheus holds exactly the calls made");
    svc.signal(libc::SIGTERM);
    assert_eq!(svc.wait_exit(10), Some(0));
}

#[test]
fn alert_rules_pass_promtool() {
    if !require_program("promtool", "prometheus") {
        return;
    }
    for args in [
        vec![
            "check".to_string(),
            "rules".into(),
            deploy("alerts.yml").display().to_string(),
        ],
        vec![
            "test".to_string(),
            "rules".into(),
            deploy("alerts_test.yml").display().to_string(),
        ],
    ] {
        let out = Command::new("promtool")
            .args(&args)
            .output()
            .expect("promtool");
        assert!(
            out.status.success(),
            "promtool {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn service_unit_verifies_and_is_hardened() {
    if !require_program("systemd-analyze", "systemd") {
        return;
    }
    let dir = scratch("unit");
    let unit = std::fs::read_to_string(deploy("copytrace.service")).expect("unit");
    // verify checks that ExecStart exists: point it at the binary under test.
    let unit = unit.replace("/usr/bin/copytrace", &copytrace_bin().to_string_lossy());
    let path = dir.join("copytrace.service");
    std::fs::write(&path, unit).expect("write unit");
    // verify also opens the unit's Documentation= man pages: the ones the
    // package ships, generated from the CLI definitions.
    let assets = dir.join("assets");
    let generated = Command::new(copytrace_bin())
        .arg("generate-assets")
        .arg(&assets)
        .status()
        .expect("copytrace generate-assets");
    assert!(generated.success());
    let mut man1 = assets.join("man");
    man1.push("man1");
    std::fs::create_dir_all(&man1).expect("man1");
    for page in std::fs::read_dir(assets.join("man")).expect("man pages") {
        let page = page.expect("man page").path();
        if page.extension().is_some_and(|e| e == "1") {
            std::fs::rename(&page, man1.join(page.file_name().expect("name")))
                .expect("move man page");
        }
    }
    // The system's pages too (copy_file_range(2)), after ours.
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .arg(&path)
        .env("MANPATH", format!("{}:", assets.join("man").display()))
        .output()
        .expect("systemd-analyze");
    assert!(
        out.status.success() && out.stderr.is_empty(),
        "systemd-analyze verify: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = Command::new("systemd-analyze")
        .args(["security", "--offline=true", "--no-pager"])
        .arg(&path)
        .output()
        .expect("systemd-analyze security");
    let text = String::from_utf8_lossy(&out.stdout);
    let score: f64 = text
        .lines()
        .find_map(|l| l.split("copytrace.service: ").nth(1))
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no exposure score in: {text}"));
    let max = copytrace_testkit::UNIT_EXPOSURE_MAX;
    assert!(score <= max, "exposure {score} > {max}:\n{text}");
    let readme = std::fs::read_to_string(deploy("../README.md")).expect("README");
    let stated: f64 = readme
        .split("(`systemd-analyze security`: ")
        .nth(1)
        .and_then(|s| s.split(')').next())
        .and_then(|s| s.parse().ok())
        .expect("README states the unit's exposure score");
    assert_eq!(
        stated, max,
        "README's score is the one the tests hold the unit to"
    );
}
