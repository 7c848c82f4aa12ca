//! `copytrace doctor`'s report: what the daemon's `doctor` command builds
//! and prints (`--json` as [`Report::json`]), and what `cargo xtask` and
//! the kernel-matrix guests read back ([`Report::from_json`]) to learn
//! which back-ends attach. Its JSON is an interface: fields are added,
//! never renamed.

use alloc::collections::BTreeMap;
use alloc::format;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::Backend;

/// Outcome of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Fine.
    Ok,
    /// Absent or failing; copytrace may still work without it.
    Missing,
    /// For information.
    Info,
}

impl Status {
    /// The status as the report writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Missing => "missing",
            Status::Info => "info",
        }
    }
}

/// One line of the report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Check {
    pub status: Status,
    pub what: String,
}

/// Whether one back-end loads and attaches here.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BackendCheck {
    /// It loaded and attached.
    pub attaches: bool,
    /// Why not, when it did not.
    pub why: Option<String>,
    /// How it attached, when in part (fentry with tracepoints for the syscall side).
    pub note: Option<String>,
    /// How its programs read kernel structs, when it attached.
    pub reads: Option<String>,
    /// Its exit programs record the mappings a stack points into (5.17+).
    #[serde(default)]
    pub stack_mappings: bool,
    /// Why not, when it attached without them.
    #[serde(default)]
    pub stack_mappings_why_not: Option<String>,
}

impl BackendCheck {
    /// How the back-end reads kernel structs when it attaches, else why
    /// it does not.
    pub fn attached(&self) -> Result<&str, &str> {
        if self.attaches {
            Ok(self.reads.as_deref().unwrap_or("kernel reads unknown"))
        } else {
            Err(self.why.as_deref().unwrap_or("refused"))
        }
    }
}

/// The whole report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Report {
    /// `uname -r`.
    pub kernel: String,
    /// Every check, in order.
    pub checks: Vec<Check>,
    /// Each back-end by name.
    pub backends: BTreeMap<Backend, BackendCheck>,
    /// What `--probe auto` would use.
    pub usable: Option<Backend>,
}

impl Report {
    /// The report as aligned lines.
    pub fn text(&self) -> String {
        let mut s = String::new();
        for c in &self.checks {
            let _ = writeln!(s, "{:<8}{}", c.status.as_str(), c.what);
        }
        s
    }

    /// The report as one JSON object (`doctor --json`).
    pub fn json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|e| format!(r#"{{"error":"{e}"}}"#))
    }

    /// The report `doctor --json` printed.
    pub fn from_json(text: &str) -> serde_json::Result<Self> {
        serde_json::from_str(text)
    }

    /// The check of the back-end named `name` (`fentry`, `tracepoint`).
    pub fn backend(&self, name: &str) -> Option<&BackendCheck> {
        self.backends
            .iter()
            .find(|(b, _)| b.as_str() == name)
            .map(|(_, c)| c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Report {
        Report {
            kernel: "6.18.44".into(),
            checks: vec![
                Check {
                    status: Status::Info,
                    what: "kernel 6.18.44".into(),
                },
                Check {
                    status: Status::Missing,
                    what: "fentry back-end: EPERM".into(),
                },
            ],
            backends: [
                (
                    Backend::Fentry,
                    BackendCheck {
                        attaches: false,
                        why: Some("EPERM".into()),
                        note: None,
                        reads: None,
                        stack_mappings: false,
                        stack_mappings_why_not: None,
                    },
                ),
                (
                    Backend::Tracepoint,
                    BackendCheck {
                        attaches: true,
                        why: None,
                        note: None,
                        reads: Some("typed kernel reads".into()),
                        stack_mappings: true,
                        stack_mappings_why_not: None,
                    },
                ),
            ]
            .into(),
            usable: Some(Backend::Tracepoint),
        }
    }

    #[test]
    fn the_json_keeps_its_shape() {
        assert_eq!(
            sample().json(),
            concat!(
                r#"{"kernel":"6.18.44","checks":[{"status":"info","what":"kernel 6.18.44"},"#,
                r#"{"status":"missing","what":"fentry back-end: EPERM"}],"backends":{"#,
                r#""tracepoint":{"attaches":true,"why":null,"note":null,"reads":"typed kernel reads","#,
                r#""stack_mappings":true,"stack_mappings_why_not":null},"#,
                r#""fentry":{"attaches":false,"why":"EPERM","note":null,"reads":null,"#,
                r#""stack_mappings":false,"stack_mappings_why_not":null}},"#,
                r#""usable":"tracepoint"}"#
            )
        );
    }

    #[test]
    fn reads_back_what_it_writes_and_names_backends() {
        let r = sample();
        let back = Report::from_json(&r.json()).expect("its own JSON");
        assert_eq!(back, r);
        assert_eq!(
            back.backend("tracepoint").map(BackendCheck::attached),
            Some(Ok("typed kernel reads"))
        );
        assert_eq!(
            back.backend("fentry").map(BackendCheck::attached),
            Some(Err("EPERM"))
        );
        assert_eq!(back.backend("kprobe"), None);
        assert_eq!(
            r.text(),
            "info    kernel 6.18.44\nmissing fentry back-end: EPERM\n"
        );
    }
}
