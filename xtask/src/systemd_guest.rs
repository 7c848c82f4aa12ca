//! The systemd guests: Debian 12 with systemd as PID 1 and its stock 6.1
//! kernel, booted under qemu (TCG), where the copytrace package is
//! installed and checked as a service; then a two-machine fleet scraped
//! by one Prometheus on this host with the shipped alert rules.
//!
//! The root filesystem is built once from the Debian archive (mmdebstrap)
//! and cached under target/; each guest boots it through a copy-on-write
//! overlay, with a small data disk holding the package, the in-guest
//! checker (`copytrace-systemd-check`) and the guest's role. The checker
//! reports one console line per check (`copytrace_guest::console`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use copytrace_common::metric_names::{CALLS_TOTAL, PROBES_ATTACHED};
use copytrace_guest::console::{ConsoleLine, Kind};
use serde_json::Value;

use crate::arch::Arch;
use crate::cmd::{echo, run, say};
use crate::matrix::qemu::{self, Live};
use crate::provision::ensure_debs;
use crate::suite::tally::{Outcome, Run};

const ROOT: &str = "target/systemd-guest";

/// Packages of the guest beyond minbase: systemd as init, a kernel with its
/// initrd, networking for the fleet, a Prometheus to scrape the service,
/// and an NFS server with a Python client for the server-side copy check.
const PACKAGES: &str =
    "systemd-sysv,dbus,udev,linux-image-amd64,initramfs-tools,prometheus,nfs-kernel-server,python3-minimal";

/// Units and files the guest needs besides packages.
const CUSTOMIZE: &str = r#"set -e
mkdir -p "$1/mnt/ct" "$1/etc/systemd/network"
echo '/dev/vdb /mnt/ct ext4 defaults 0 2' >> "$1/etc/fstab"
printf '[Match]\nName=eth0\n[Network]\nAddress=10.0.2.15/24\nGateway=10.0.2.2\n' > "$1/etc/systemd/network/10-eth0.network"
cat > "$1/etc/systemd/system/copytrace-check.service" <<'UNIT'
[Unit]
Description=copytrace package checks
After=multi-user.target network-online.target
RequiresMountsFor=/mnt/ct
[Service]
Type=simple
ExecStart=/mnt/ct/copytrace-systemd-check
StandardInput=tty
StandardOutput=tty
StandardError=tty
TTYPath=/dev/ttyS0
TTYReset=no
TTYVHangup=no
[Install]
WantedBy=multi-user.target
UNIT
chroot "$1" systemctl enable systemd-networkd.service copytrace-check.service
chroot "$1" systemctl mask serial-getty@ttyS0.service getty@tty1.service
"#;

/// The cached root filesystem image with its kernel and initrd.
struct Base {
    image: PathBuf,
    kernel: PathBuf,
    initrd: PathBuf,
}

fn recipe_hash() -> String {
    // A change of packages or customisation rebuilds the image.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in PACKAGES.bytes().chain(CUSTOMIZE.bytes()) {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    format!("{h:016x}")
}

fn base() -> Result<Base> {
    let root = PathBuf::from(ROOT);
    let base = Base {
        image: root.join("base.img"),
        kernel: root.join("vmlinuz"),
        initrd: root.join("initrd.img"),
    };
    let stamp = root.join("base.recipe");
    if std::fs::read_to_string(&stamp).ok().as_deref() == Some(recipe_hash().as_str())
        && base.image.exists()
    {
        return Ok(base);
    }
    std::fs::create_dir_all(&root)?;
    let tar = root.join("rootfs.tar");
    let hook = root.join("customize.sh");
    std::fs::write(&hook, CUSTOMIZE)?;
    say("systemd guest: building a Debian 12 root filesystem (mmdebstrap, about 2 min, cached)");
    run(Command::new("mmdebstrap")
        .args([
            "--variant=minbase",
            "--aptopt=APT::Install-Recommends \"false\"",
        ])
        .arg(format!("--include={PACKAGES}"))
        .arg(format!("--customize-hook=sh {} \"$1\"", hook.display()))
        .args(["bookworm"])
        .arg(&tar))?;
    let stage = root.join("stage");
    let _ = std::fs::remove_dir_all(&stage);
    std::fs::create_dir_all(&stage)?;
    run(Command::new("tar")
        .args(["-xpf"])
        .arg(&tar)
        .arg("-C")
        .arg(&stage))?;
    let boot = stage.join("boot");
    let pick = |prefix: &str| -> Result<PathBuf> {
        std::fs::read_dir(&boot)?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .find(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with(prefix))
            })
            .with_context(|| format!("no /boot/{prefix}* in the root filesystem"))
    };
    std::fs::copy(pick("vmlinuz-")?, &base.kernel)?;
    std::fs::copy(pick("initrd.img-")?, &base.initrd)?;
    let _ = std::fs::remove_file(&base.image);
    run(Command::new("mkfs.ext4")
        .args(["-q", "-F", "-L", "root", "-d"])
        .arg(&stage)
        .arg(&base.image)
        .arg("3G"))?;
    std::fs::remove_dir_all(&stage)?;
    std::fs::remove_file(&tar)?;
    std::fs::write(&stamp, recipe_hash())?;
    Ok(base)
}

/// A data disk with the package, the checker and the guest's role.
fn data_disk(name: &str, deb: &Path, checker: &Path, role: &str) -> Result<PathBuf> {
    let root = PathBuf::from(ROOT);
    let stage = root.join(format!("data-{name}"));
    let _ = std::fs::remove_dir_all(&stage);
    std::fs::create_dir_all(&stage)?;
    let deb_name = deb.file_name().context("package file name")?;
    std::fs::copy(deb, stage.join(deb_name))?;
    std::fs::copy(checker, stage.join("copytrace-systemd-check"))?;
    std::fs::write(stage.join("role"), role)?;
    let image = root.join(format!("data-{name}.img"));
    let _ = std::fs::remove_file(&image);
    run(Command::new("mkfs.ext4")
        .args(["-q", "-F", "-d"])
        .arg(&stage)
        .arg(&image)
        .arg("64M"))?;
    std::fs::remove_dir_all(&stage)?;
    Ok(image)
}

/// Boots one guest on an overlay of the base, its data disk, and a
/// forwarded metrics port.
fn boot(base: &Base, name: &str, data: &Path, metrics_port: u16) -> Result<Live> {
    let root = PathBuf::from(ROOT);
    let overlay = root.join(format!("{name}.qcow2"));
    let _ = std::fs::remove_file(&overlay);
    run(Command::new("qemu-img")
        .args(["create", "-q", "-f", "qcow2", "-F", "raw", "-b"])
        .arg(std::fs::canonicalize(&base.image)?)
        .arg(&overlay))?;
    let mut cmd = qemu::base_command(Arch::X86_64, 1536);
    cmd.arg("-kernel")
        .arg(&base.kernel)
        .arg("-initrd")
        .arg(&base.initrd)
        .args([
            "-append",
            "root=/dev/vda rw console=ttyS0 quiet net.ifnames=0 systemd.show_status=0",
        ])
        .arg("-drive")
        .arg(format!("file={},if=virtio,format=qcow2", overlay.display()))
        .arg("-drive")
        .arg(format!("file={},if=virtio,format=raw", data.display()))
        .args([
            "-nic",
            &format!("user,model=virtio-net-pci,hostfwd=tcp:127.0.0.1:{metrics_port}-:9977"),
        ]);
    say(&format!(
        "systemd guest {name}: booting Debian 12 (systemd, stock kernel)"
    ));
    Live::start(cmd)
}

/// What one guest reported so far.
struct Guest {
    name: String,
    live: Live,
    run: Option<Run>,
    ready: bool,
    /// Silent zero copies the guest made as a fleet member.
    silent: Option<f64>,
    done: bool,
}

impl Guest {
    /// Reads console lines for up to `wait`; returns after the first one.
    fn pump(&mut self, wait: Duration) {
        let Some(raw) = self.live.next_line(wait) else {
            return;
        };
        let Some(l) = ConsoleLine::parse(&raw) else {
            return;
        };
        match l.kind {
            Kind::Plan => {
                let plan: Vec<String> = l.text.split('|').map(str::to_string).collect();
                self.run = Some(Run::new(format!("systemd guest {}", self.name), &plan));
            }
            Kind::Check => {
                let (ok, _) = l.verdict();
                echo(&format!(
                    "systemd guest {} [{}] {}: {}",
                    self.name,
                    humantime_secs(self.live.elapsed()),
                    l.tag,
                    l.text
                ));
                if let Some(r) = self.run.as_mut() {
                    r.set(&l.tag, if ok { Outcome::Passed } else { Outcome::Failed });
                }
            }
            Kind::FleetReady => {
                echo(&format!(
                    "systemd guest {}: fleet member ready ({})",
                    self.name, l.text
                ));
                self.ready = true;
                self.silent = l.text.split(' ').next().and_then(|n| n.parse().ok());
            }
            Kind::Kernel => echo(&format!("systemd guest {}: kernel {}", self.name, l.text)),
            Kind::Log => echo(&format!(
                "systemd guest {}: {}: {}",
                self.name, l.tag, l.text
            )),
            Kind::Done => self.done = true,
            // Ours, echoed by the guest's terminal.
            Kind::Continue => {}
            // The kernel-matrix guest's lines: not expected here, so shown.
            Kind::Loaded
            | Kind::Refused
            | Kind::Out
            | Kind::Err
            | Kind::Skip
            | Kind::Exit
            | Kind::Bench
            | Kind::Error => echo(&format!("systemd guest {}: unexpected {l}", self.name)),
        }
    }
}

fn humantime_secs(d: Duration) -> String {
    format!("{:.0}s", d.as_secs_f64())
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

fn http_json(addr: &str, path: &str) -> Option<Value> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    serde_json::from_str(text.split_once("\r\n\r\n")?.1).ok()
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
fn fleet_checks(ports: &[(String, u16, f64)]) -> Result<Run> {
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
    let prom_port = free_port()?;
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

/// Builds the package and the checker, boots both guests, runs the fleet
/// checks, and returns every run for the suite's tally.
pub fn suite_runs() -> Result<Vec<Run>> {
    let artifacts = crate::dist::dist(Arch::X86_64)?;
    let checker = crate::build::static_bins(Arch::X86_64, &["copytrace-guest"])?
        .join("copytrace-systemd-check");
    runs(&artifacts.deb, &checker)
}

/// Boots both guests with `deb` and `checker`, runs the fleet checks, and
/// returns every run.
pub fn runs(deb: &Path, checker: &Path) -> Result<Vec<Run>> {
    ensure_debs(&[
        "qemu-system-x86",
        "qemu-utils",
        "mmdebstrap",
        "e2fsprogs",
        "prometheus",
    ])?;
    let started = Instant::now();
    let base = base()?;
    say(&format!(
        "systemd guest: root filesystem ready after {:.0}s",
        started.elapsed().as_secs_f64()
    ));
    let roles = [("guest-a", "checks"), ("guest-b", "fleet-good")];
    let mut guests = Vec::new();
    let mut ports = Vec::new();
    for (name, role) in roles {
        let data = data_disk(name, deb, checker, role)?;
        let port = free_port()?;
        ports.push((name.to_string(), port));
        guests.push(Guest {
            name: name.to_string(),
            live: boot(&base, name, &data, port)?,
            run: None,
            ready: false,
            silent: None,
            done: false,
        });
    }
    // Until both fleet members are ready (guest-a first runs its checks).
    let deadline = Instant::now() + Duration::from_secs(30 * 60);
    while !guests.iter().all(|g| g.ready || g.done) && Instant::now() < deadline {
        for g in guests.iter_mut() {
            g.pump(Duration::from_millis(100));
        }
    }
    let mut runs = Vec::new();
    if guests.iter().all(|g| g.ready) {
        let members: Vec<(String, u16, f64)> = ports
            .iter()
            .zip(&guests)
            .map(|((n, p), g)| (n.clone(), *p, g.silent.unwrap_or(-1.0)))
            .collect();
        runs.push(fleet_checks(&members)?);
        for g in guests.iter_mut() {
            g.live
                .send(&ConsoleLine::bare(Kind::Continue).to_string())?;
        }
    }
    while !guests.iter().all(|g| g.done) && Instant::now() < deadline {
        for g in guests.iter_mut() {
            g.pump(Duration::from_millis(100));
        }
    }
    for g in guests {
        let name = g.name.clone();
        let elapsed = g.live.elapsed();
        let done = g.done;
        let mut run = g
            .run
            .unwrap_or_else(|| Run::new(format!("systemd guest {name}"), &["boot".to_string()]));
        let console = g.live.finish(Duration::from_secs(60));
        std::fs::write(
            PathBuf::from(ROOT).join(format!("console-{name}.log")),
            console.join("\n"),
        )?;
        if !done {
            run.trouble = Some(format!(
                "guest stopped reporting after {:.0}s (console in {ROOT}/console-{name}.log)",
                elapsed.as_secs_f64()
            ));
        }
        say(&format!(
            "systemd guest {name}: {:.0}s from boot to power-off",
            elapsed.as_secs_f64()
        ));
        runs.push(run);
    }
    if runs.is_empty() {
        bail!("the systemd guests reported nothing");
    }
    Ok(runs)
}
