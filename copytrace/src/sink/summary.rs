//! Running totals over calls, printed at the end of `copytrace trace`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::enrich::record::Record;
use crate::model::classify::Verdict;

/// Totals over a set of calls.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct Summary {
    pub calls: u64,
    pub bytes_requested: u64,
    pub bytes_copied: u64,
    pub suspicious: u64,
    /// Calls per verdict.
    pub verdicts: BTreeMap<Verdict, u64>,
    /// Events the kernel could not deliver (ring buffer full).
    pub lost: u64,
}

impl Summary {
    /// Adds one call.
    pub fn add(&mut self, r: &Record) {
        let v: Verdict = r.diagnosis.verdict;
        self.calls += 1;
        self.bytes_requested = self.bytes_requested.saturating_add(r.event.len);
        if r.event.ret > 0 {
            self.bytes_copied += r.event.ret as u64;
        }
        if v.is_suspicious() {
            self.suspicious += 1;
        }
        *self.verdicts.entry(v).or_default() += 1;
    }

    /// Human text, several lines.
    pub fn human(&self) -> String {
        let mut s = format!(
            "copytrace: {} copy_file_range call(s), {} suspicious; {} of {} requested bytes copied",
            self.calls, self.suspicious, self.bytes_copied, self.bytes_requested
        );
        for (v, n) in &self.verdicts {
            s.push_str(&format!("\ncopytrace:   {:<17} {n}", v.as_str()));
        }
        if self.lost > 0 {
            s.push_str(&format!(
                "\ncopytrace: WARNING: {} event(s) lost (ring buffer full)",
                self.lost
            ));
        }
        s
    }
}
