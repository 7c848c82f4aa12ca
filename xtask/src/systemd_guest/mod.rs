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
//!
//! [`image`] builds and boots the machine, [`data_disk`] carries what each
//! guest checks, [`fleet`] holds the checks made from the host.

mod data_disk;
mod fleet;
mod image;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use copytrace_guest::console::{ConsoleLine, Kind};
use copytrace_testkit::net::free_port;

use crate::arch::Arch;
use crate::cmd::{echo, say};
use crate::matrix::qemu::Live;
use crate::provision::ensure_debs;
use crate::suite::tally::{Outcome, Run};
use data_disk::{data_disk, stack_programs};
use fleet::fleet_checks;
use image::{base, boot};

const ROOT: &str = "target/systemd-guest";

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
        "gcc",
        "golang-go",
    ])?;
    let programs = stack_programs()?;
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
        let data = data_disk(name, deb, checker, role, &programs)?;
        let port = free_port();
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
