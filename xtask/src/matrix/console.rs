//! Reading a kernel-matrix guest's console: its [`ConsoleLine`]s, in the
//! order the guest wrote them, become one [`Run`] per back-end and test
//! binary, benchmark results ([`BenchLine`]) and the guest's trouble, for
//! [`GuestResult`].

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use copytrace_guest::console::{ConsoleLine, Kind};

use super::{GuestResult, Kernel, GUEST_TIMEOUT};
use crate::cmd::echo;
use crate::suite::host::BACKENDS;
use crate::suite::tally::Run;

/// One [`Kind::Bench`] result: nanoseconds per operation under one mode.
#[derive(Debug, Clone)]
pub struct BenchLine {
    /// `fentry`, `tracepoint`, or an untraced block (`untraced-0`, …).
    pub mode: String,
    /// `4k-tmpfs`, `1m-ext4`, `unrelated`…
    pub workload: String,
    pub median: f64,
    pub min: f64,
    pub max: f64,
    /// The daemon's BPF programs' run time per operation.
    pub programs: f64,
}

impl BenchLine {
    fn parse(mode: &str, workload: &str, text: &str) -> Option<Self> {
        let v: Vec<f64> = text
            .split_whitespace()
            .map(str::parse)
            .collect::<Result<_, _>>()
            .ok()?;
        let [median, min, max, programs] = v[..] else {
            return None;
        };
        Some(BenchLine {
            mode: mode.to_string(),
            workload: workload.to_string(),
            median,
            min,
            max,
            programs,
        })
    }
}

/// Turns a guest's console into runs.
pub struct ConsoleReader {
    label: String,
    runs: BTreeMap<(String, String), Run>,
    lists: BTreeMap<String, Vec<String>>,
    release: String,
    errors: Vec<String>,
    bench: Vec<BenchLine>,
    refused: Vec<(String, String)>,
    done: bool,
    /// When the guest was started: each test line says how far in it ran.
    started: Instant,
}

impl ConsoleReader {
    pub fn new(kernel: &Kernel, lists: &BTreeMap<String, Vec<String>>) -> Self {
        let label = kernel.label();
        let mut runs = BTreeMap::new();
        for b in BACKENDS {
            for (bin, tests) in lists {
                let name = format!("guest {label} {b}: {bin}");
                runs.insert((b.to_string(), bin.clone()), Run::new(name, tests));
            }
        }
        ConsoleReader {
            label,
            runs,
            lists: lists.clone(),
            release: String::new(),
            errors: Vec::new(),
            bench: Vec::new(),
            refused: Vec::new(),
            done: false,
            started: Instant::now(),
        }
    }

    pub fn line(&mut self, raw: &str) {
        let Some(line) = ConsoleLine::parse(raw) else {
            return;
        };
        let (backend, bin) = line.tag_pair();
        let key = (backend.to_string(), bin.to_string());
        let text = line.text.as_str();
        match line.kind {
            Kind::Kernel => self.release = text.to_string(),
            Kind::Done => self.done = true,
            Kind::Log => echo(&format!("guest {}: {}: {text}", self.label, line.tag)),
            Kind::Loaded => echo(&format!(
                "guest {}: the {backend} back-end {text}",
                self.label
            )),
            Kind::Out => {
                if (text.starts_with("test ") && text.contains(" ... "))
                    || text.starts_with("test result:")
                {
                    echo(&format!(
                        "guest {} [{:.0}s] {backend} {bin}: {text}",
                        self.label,
                        self.started.elapsed().as_secs_f64()
                    ));
                }
                if let Some(r) = self.runs.get_mut(&key) {
                    r.read_line(text);
                }
            }
            // Kept with the run, and shown with its failures.
            Kind::Err => {
                if let Some(r) = self.runs.get_mut(&key) {
                    r.read_stderr(text);
                }
            }
            Kind::Skip => {
                if let Some(r) = self.runs.get_mut(&key) {
                    r.read_skips(text);
                }
            }
            Kind::Exit if text == "0" => {}
            Kind::Exit => {
                if let Some(r) = self.runs.get_mut(&key) {
                    r.trouble = Some(format!("exited with {text}"));
                }
            }
            Kind::Bench => match BenchLine::parse(backend, bin, text) {
                Some(b) => {
                    echo(&format!(
                        "guest {} bench {backend} {bin}: {text}",
                        self.label
                    ));
                    self.bench.push(b);
                }
                None => self
                    .errors
                    .push(format!("unreadable bench line {:?}", line.to_string())),
            },
            Kind::Refused => {
                self.refused.push((backend.to_string(), text.to_string()));
                let reason = format!("this kernel refuses the {backend} back-end: {text}");
                for (bin, tests) in &self.lists {
                    let name = format!("guest {} {backend}: {bin}", self.label);
                    self.runs.insert(
                        (backend.to_string(), bin.clone()),
                        Run::skipped(name, tests, &reason),
                    );
                }
            }
            Kind::Error => self.errors.push(format!("{}: {text}", line.tag)),
            // The systemd guest's lines: not expected here, so shown.
            Kind::Plan | Kind::Check | Kind::FleetReady | Kind::Continue => {
                echo(&format!("guest {}: unexpected {line}", self.label))
            }
        }
    }

    pub fn finish(mut self, kernel: Kernel, elapsed: Duration, timed_out: bool) -> GuestResult {
        let trouble = if timed_out {
            Some(format!(
                "guest timed out after {}s",
                GUEST_TIMEOUT.as_secs()
            ))
        } else if !self.done {
            Some(format!("guest stopped before reporting {}", Kind::Done))
        } else if !self.errors.is_empty() {
            Some(self.errors.join("; "))
        } else {
            None
        };
        if let Some(t) = &trouble {
            for r in self.runs.values_mut() {
                r.trouble.get_or_insert_with(|| t.clone());
            }
        }
        GuestResult {
            kernel,
            release: self.release,
            elapsed,
            runs: self.runs.into_values().collect(),
            bench: self.bench,
            refused: self.refused,
            trouble,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::matrix::KERNELS;

    #[test]
    fn a_bench_line_is_four_numbers_or_nothing() {
        let b = BenchLine::parse("fentry", "4k-tmpfs", "20290.5 19000.0 36339.1 7331.2")
            .expect("four numbers");
        assert_eq!(
            (b.mode.as_str(), b.workload.as_str()),
            ("fentry", "4k-tmpfs")
        );
        assert_eq!(
            (b.median, b.min, b.max, b.programs),
            (20290.5, 19000.0, 36339.1, 7331.2)
        );
        assert!(BenchLine::parse("fentry", "4k-tmpfs", "1 2 3").is_none());
        assert!(BenchLine::parse("fentry", "4k-tmpfs", "1 2 3 x").is_none());
    }

    #[test]
    fn a_guests_console_becomes_runs_with_their_stderr() {
        let lists = BTreeMap::from([("oracle".to_string(), vec!["a".into(), "b".into()])]);
        let mut reader = ConsoleReader::new(&KERNELS[0], &lists);
        for l in [
            "SeaBIOS noise CT-KERNEL : 6.12.117+deb13-amd64",
            "CT-LOADED fentry: loads and attaches, typed kernel reads",
            "CT-REFUSED tracepoint: not here",
            "CT-OUT fentry oracle: test a ... ok",
            "CT-ERR fentry oracle: thread 'b' panicked: the daemon said nothing",
            "CT-OUT fentry oracle: test b ... FAILED",
            "CT-EXIT fentry oracle: 101",
            "CT-DONE : ",
        ] {
            reader.line(l);
        }
        let g = reader.finish(KERNELS[0], Duration::from_secs(1), false);
        assert_eq!(g.release, "6.12.117+deb13-amd64");
        assert_eq!(g.trouble, None);
        assert_eq!(
            g.refused,
            [("tracepoint".to_string(), "not here".to_string())]
        );
        let fentry = g
            .runs
            .iter()
            .find(|r| r.name.ends_with("fentry: oracle"))
            .expect("the fentry run");
        assert_eq!(fentry.trouble.as_deref(), Some("exited with 101"));
        assert_eq!(
            crate::suite::tally::failures(std::slice::from_ref(fentry)),
            [
                "FAILED guest 6.12/x86_64 fentry: oracle: b",
                "STDERR guest 6.12/x86_64 fentry: oracle: its last lines",
                "    thread 'b' panicked: the daemon said nothing",
            ]
        );
    }
}
