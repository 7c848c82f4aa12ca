//! Declarative call filters, shared by the tail client (which sends them) and
//! the daemon (which applies them). Within a field the values are ORed;
//! fields are ANDed; an empty field matches everything.

use serde::{Deserialize, Serialize};

use crate::enrich::record::Record;
use crate::model::classify::Verdict;

/// What a tail client wants to see.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Filter {
    /// Every call, not only suspicious ones.
    pub all: bool,
    /// Process ids.
    pub pid: Vec<u32>,
    /// Command names (exact).
    pub comm: Vec<String>,
    /// cgroup v2 ids.
    pub cgroup: Vec<u64>,
    /// Verdicts.
    pub verdict: Vec<Verdict>,
    /// Filesystem names, matching the source or the destination.
    pub fs: Vec<String>,
    /// systemd units (`nginx.service`), matching the caller's unit or a
    /// unit of its user manager's path (`app-foo.scope`).
    pub unit: Vec<String>,
}

fn any_or_empty<T>(values: &[T], pred: impl Fn(&T) -> bool) -> bool {
    values.is_empty() || values.iter().any(pred)
}

impl Filter {
    /// Whether `r` passes.
    pub fn matches(&self, r: &Record) -> bool {
        let e = &r.event;
        (self.all || r.diagnosis.verdict.is_suspicious())
            && any_or_empty(&self.pid, |p| *p == e.pid)
            && any_or_empty(&self.comm, |c| c.as_bytes() == e.comm.as_bytes())
            && any_or_empty(&self.cgroup, |c| *c == e.cgroup_id)
            && any_or_empty(&self.verdict, |v| *v == r.diagnosis.verdict)
            && any_or_empty(&self.fs, |f| {
                e.file_in.as_ref().is_some_and(|s| s.fs == *f)
                    || e.file_out.as_ref().is_some_and(|s| s.fs == *f)
            })
            && any_or_empty(&self.unit, |u| {
                let u = u.as_bytes();
                r.service.unit.as_ref().is_some_and(|x| x.as_bytes() == u)
                    || r.service
                        .user_unit
                        .as_ref()
                        .is_some_and(|x| x.as_bytes().split(|&b| b == b'/').any(|c| c == u))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::enrich::record::Enrich;
    use crate::model::event::{from_raw, tests::blank, tests::name};

    fn record(pid: u32, comm: &str, ret: i64, magic: u64) -> Record {
        let mut e = blank();
        e.pid = pid;
        e.comm = name(comm);
        e.ret = ret;
        e.len = 10;
        e.files[0].present = 1;
        e.files[0].magic = magic;
        e.files[0].mode = 0o100644;
        Record::new(from_raw(&e).expect("valid event"), &mut Enrich::default()).0
    }

    #[test]
    fn and_across_fields_or_within() {
        let bad = record(1, "cp", -9, 0xef53);
        let good = record(2, "cat", 10, 0x9fa0);
        let f = Filter::default();
        assert!(
            f.matches(&bad) && !f.matches(&good),
            "default: suspicious only"
        );
        let f = Filter {
            all: true,
            ..Filter::default()
        };
        assert!(f.matches(&good));
        let f = Filter {
            all: true,
            pid: vec![2, 3],
            comm: vec!["cat".into()],
            ..Filter::default()
        };
        assert!(f.matches(&good) && !f.matches(&bad));
        let f = Filter {
            all: true,
            fs: vec!["ext4".into()],
            ..Filter::default()
        };
        assert!(f.matches(&bad) && !f.matches(&good));
        let f = Filter {
            verdict: vec![Verdict::Error],
            ..Filter::default()
        };
        assert!(f.matches(&bad));
        assert!(serde_json::from_str::<Filter>(r#"{"verdict":["fine"]}"#).is_err());
        let f: Filter = serde_json::from_str(r#"{"verdict":["silent_zero_copy"]}"#).expect("known");
        assert_eq!(f.verdict, [Verdict::SilentZeroCopy]);
    }
}
