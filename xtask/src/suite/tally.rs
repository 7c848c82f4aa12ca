//! Reading libtest's output into per-test outcomes, and adding runs up into
//! the suite's one closing line.
//!
//! A test that never reported (its binary crashed, or never started) is
//! "not run", never "skipped"; a test that recorded a skip (see
//! copytrace-testkit's `suite::skip`) is "skipped" with its reason.

use std::collections::{BTreeMap, VecDeque};

/// What became of one test.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Ran and passed.
    Passed,
    /// Ran and failed.
    Failed,
    /// Did not run here, for the reason given.
    Skipped(String),
    /// Never reported: the binary died or did not start.
    NotRun,
}

/// One run of one test binary: which, on what, and what each test did.
#[derive(Debug, Clone)]
pub struct Run {
    /// e.g. `probe_syscalls [tracepoint]` or `guest 6.1 fentry: probe_syscalls`.
    pub name: String,
    /// Test name → outcome.
    pub outcomes: BTreeMap<String, Outcome>,
    /// Why the binary's run went wrong as a whole, if it did.
    pub trouble: Option<String>,
    /// A test whose result line was broken by other output on the same line.
    pending: Option<String>,
    /// What libtest printed for each failed test (`---- NAME stdout ----`), up to its backtrace.
    failure_output: BTreeMap<String, Vec<String>>,
    /// The failed test whose output is being read.
    reading_failure: Option<String>,
    /// The last lines the binary wrote on stderr, when they are collected
    /// (a guest's; the host's go to the terminal as they come).
    stderr: VecDeque<String>,
}

/// How many of a failed test's output lines (before any backtrace) the
/// closing report repeats: CI shows only the end of the output, where the
/// cause must be.
const FAILURE_LINES: usize = 25;

impl Run {
    /// A run of `expected` tests, all not run until their results are read.
    pub fn new(name: impl Into<String>, expected: &[String]) -> Self {
        Run {
            name: name.into(),
            outcomes: expected
                .iter()
                .map(|t| (t.clone(), Outcome::NotRun))
                .collect(),
            trouble: None,
            pending: None,
            failure_output: BTreeMap::new(),
            reading_failure: None,
            stderr: VecDeque::new(),
        }
    }

    /// A run where every test is skipped for one reason (a refused back-end).
    pub fn skipped(name: impl Into<String>, expected: &[String], reason: &str) -> Self {
        let mut r = Run::new(name, expected);
        for o in r.outcomes.values_mut() {
            *o = Outcome::Skipped(reason.to_string());
        }
        r
    }

    /// Reads one line of libtest's output (`test NAME ... ok`). A test's own
    /// child processes may print between the name and the result; the
    /// result then ends a later line.
    pub fn read_line(&mut self, line: &str) {
        if let Some(name) = line
            .strip_prefix("---- ")
            .and_then(|rest| rest.strip_suffix(" stdout ----"))
        {
            self.reading_failure = Some(name.to_string());
            return;
        }
        if let Some(name) = &self.reading_failure {
            if line == "failures:" || line.starts_with("---- ") {
                self.reading_failure = None;
            } else {
                let kept = self.failure_output.entry(name.clone()).or_default();
                // The panic message comes first; a backtrace after it only
                // pushes it out of what CI keeps.
                if line.starts_with("stack backtrace:") {
                    self.reading_failure = None;
                } else if kept.len() < FAILURE_LINES {
                    kept.push(line.to_string());
                }
                return;
            }
        }
        let outcome = |result: &str| match result.trim() {
            "ok" => Some(Outcome::Passed),
            "FAILED" => Some(Outcome::Failed),
            r if r.starts_with("ignored") => Some(Outcome::Skipped("ignored".into())),
            _ => None,
        };
        if let Some((name, result)) = line
            .strip_prefix("test ")
            .and_then(|rest| rest.split_once(" ... "))
        {
            match outcome(result) {
                Some(o) => {
                    self.outcomes.insert(name.to_string(), o);
                    self.pending = None;
                }
                None => self.pending = Some(name.to_string()),
            }
            return;
        }
        if let Some(name) = self.pending.clone() {
            let last = line.rsplit(' ').next().unwrap_or(line);
            if let Some(o) = outcome(last) {
                self.outcomes.insert(name, o);
                self.pending = None;
            }
        }
    }

    /// Keeps one line the binary wrote on stderr: the last
    /// [`FAILURE_LINES`] are reported with the run's failures. Which test
    /// wrote a line is not known (stdout and stderr are read apart).
    pub fn read_stderr(&mut self, line: &str) {
        if self.stderr.len() == FAILURE_LINES {
            self.stderr.pop_front();
        }
        self.stderr.push_back(line.to_string());
    }

    /// Records the outcome of one test (or check) directly.
    pub fn set(&mut self, test: &str, outcome: Outcome) {
        self.outcomes.insert(test.to_string(), outcome);
    }

    /// Applies a skip log (`test\treason` lines): those tests did not run.
    pub fn read_skips(&mut self, log: &str) {
        for l in log.lines() {
            if let Some((test, reason)) = l.split_once('\t') {
                if let Some(o) = self.outcomes.get_mut(test) {
                    if *o == Outcome::Passed {
                        *o = Outcome::Skipped(reason.to_string());
                    }
                }
            }
        }
    }

    fn count(&self, f: impl Fn(&Outcome) -> bool) -> usize {
        self.outcomes.values().filter(|o| f(o)).count()
    }

    /// One summary line for this run.
    pub fn summary(&self) -> String {
        let mut s = format!(
            "{}: {} passed, {} failed, {} skipped, {} not run",
            self.name,
            self.count(|o| *o == Outcome::Passed),
            self.count(|o| *o == Outcome::Failed),
            self.count(|o| matches!(o, Outcome::Skipped(_))),
            self.count(|o| *o == Outcome::NotRun),
        );
        if let Some(t) = &self.trouble {
            s.push_str(&format!(" ({t})"));
        }
        s
    }
}

/// Totals over every run of the suite.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Totals {
    pub passed: usize,
    pub failed: usize,
    pub skipped: usize,
    pub not_run: usize,
}

impl Totals {
    /// Adds every run up.
    pub fn of(runs: &[Run]) -> Self {
        let mut t = Totals::default();
        for r in runs {
            t.passed += r.count(|o| *o == Outcome::Passed);
            t.failed += r.count(|o| *o == Outcome::Failed);
            t.skipped += r.count(|o| matches!(o, Outcome::Skipped(_)));
            t.not_run += r.count(|o| *o == Outcome::NotRun);
        }
        t
    }

    /// The suite's closing line.
    pub fn line(&self) -> String {
        format!(
            "tests: {} passed, {} failed, {} skipped, {} not run",
            self.passed, self.failed, self.skipped, self.not_run
        )
    }

    /// Green only when nothing failed and everything that should run ran.
    pub fn green(&self) -> bool {
        self.failed == 0 && self.not_run == 0 && self.passed > 0
    }
}

/// Test names from `BINARY --list --format terse` (`name: test` lines).
pub fn parse_list(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| l.strip_suffix(": test"))
        .map(str::to_string)
        .collect()
}

/// Every test that failed or did not run, with the last lines it printed
/// (and the last its binary wrote on stderr), for the end of the report.
pub fn failures(runs: &[Run]) -> Vec<String> {
    let mut out = Vec::new();
    for r in runs {
        let before = out.len();
        for (t, o) in &r.outcomes {
            match o {
                Outcome::Failed => {
                    out.push(format!("FAILED {}: {t}", r.name));
                    for l in r.failure_output.get(t).into_iter().flatten() {
                        out.push(format!("    {l}"));
                    }
                }
                Outcome::NotRun => out.push(format!(
                    "NOT RUN {}: {t}{}",
                    r.name,
                    r.trouble
                        .as_deref()
                        .map(|why| format!(" ({why})"))
                        .unwrap_or_default()
                )),
                _ => {}
            }
        }
        if out.len() > before && !r.stderr.is_empty() {
            out.push(format!("STDERR {}: its last lines", r.name));
            out.extend(r.stderr.iter().map(|l| format!("    {l}")));
        }
    }
    out
}

/// Every skip reason of every run, once each with its tests.
pub fn skip_reasons(runs: &[Run]) -> Vec<String> {
    let mut out = Vec::new();
    for r in runs {
        let mut by: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
        for (t, o) in &r.outcomes {
            if let Outcome::Skipped(why) = o {
                by.entry(why).or_default().push(t);
            }
        }
        for (why, tests) in by {
            out.push(format!("{}: skipped {} ({why})", r.name, tests.join(", ")));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: &[&str]) -> Vec<String> {
        n.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_crashed_binary_leaves_its_tests_not_run() {
        let mut r = Run::new("probe [tracepoint]", &names(&["a", "b", "c"]));
        r.read_line("running 3 tests");
        r.read_line("test a ... ok");
        r.read_line("test b ... FAILED");
        // The binary aborted: c never reported.
        let t = Totals::of(&[r]);
        assert_eq!(
            t,
            Totals {
                passed: 1,
                failed: 1,
                skipped: 0,
                not_run: 1
            }
        );
        assert!(!t.green());
        assert_eq!(t.line(), "tests: 1 passed, 1 failed, 0 skipped, 1 not run");
    }

    #[test]
    fn skips_are_counted_with_their_reasons_not_as_passes() {
        let mut r = Run::new("clients [fentry]", &names(&["go", "cp"]));
        r.read_line("test go ... ok");
        r.read_line("test cp ... ok");
        r.read_skips("go\tthis guest has no go (golang-go)\n");
        let t = Totals::of(std::slice::from_ref(&r));
        assert_eq!((t.passed, t.skipped), (1, 1));
        assert_eq!(
            skip_reasons(&[r]),
            ["clients [fentry]: skipped go (this guest has no go (golang-go))"]
        );
        let refused = Run::skipped("x [fentry]", &names(&["a", "b"]), "fentry refused");
        assert_eq!(Totals::of(&[refused]).skipped, 2);
    }

    #[test]
    fn a_failure_is_reported_last_with_its_own_output() {
        let mut r = Run::new("guest 6.1 fentry: hostile_input", &names(&["a", "b", "c"]));
        for l in [
            "test a ... FAILED",
            "test b ... ok",
            "failures:",
            "",
            "---- a stdout ----",
            "thread 'a' panicked at tests/x.rs:1:1:",
            "the daemon said nothing",
            "stack backtrace:",
            "   0: __rustc::rust_begin_unwind",
            "",
            "failures:",
            "    a",
        ] {
            r.read_line(l);
        }
        assert_eq!(
            failures(&[r]),
            [
                "FAILED guest 6.1 fentry: hostile_input: a",
                "    thread 'a' panicked at tests/x.rs:1:1:",
                "    the daemon said nothing",
                "NOT RUN guest 6.1 fentry: hostile_input: c",
            ]
        );
    }

    #[test]
    fn stderr_is_reported_with_a_runs_failures_only() {
        let mut bad = Run::new("guest 6.1 fentry: oracle", &names(&["a", "b"]));
        let mut good = Run::new("guest 6.1 tracepoint: oracle", &names(&["a"]));
        for i in 0..FAILURE_LINES + 2 {
            bad.read_stderr(&format!("line {i}"));
            good.read_stderr("fine");
        }
        bad.read_line("test a ... ok");
        bad.read_line("test b ... FAILED");
        good.read_line("test a ... ok");
        let f = failures(&[bad, good]);
        assert_eq!(f[0], "FAILED guest 6.1 fentry: oracle: b");
        assert_eq!(f[1], "STDERR guest 6.1 fentry: oracle: its last lines");
        assert_eq!(f[2], "    line 2", "only the last lines are kept");
        assert_eq!(f.last(), Some(&format!("    line {}", FAILURE_LINES + 1)));
        assert_eq!(
            f.len(),
            2 + FAILURE_LINES,
            "a green run's stderr is not shown"
        );
    }

    #[test]
    fn a_result_after_a_childs_output_still_counts() {
        let mut r = Run::new("clients", &names(&["go", "cp"]));
        r.read_line("test go ... 500000");
        r.read_line("121166");
        r.read_line("ok");
        r.read_line("test cp ... hello FAILED");
        r.read_line("FAILED");
        assert_eq!(r.outcomes["go"], Outcome::Passed);
        assert_eq!(r.outcomes["cp"], Outcome::Failed);
    }

    #[test]
    fn reads_terse_lists_and_ignored_tests() {
        assert_eq!(
            parse_list("a::b: test\nc: test\nbench: benchmark\n"),
            ["a::b", "c"]
        );
        let mut r = Run::new("x", &names(&["i"]));
        r.read_line("test i ... ignored, needs a disk");
        assert_eq!(Totals::of(&[r]).skipped, 1);
        assert!(!Totals::default().green(), "nothing ran is not green");
    }
}
