//! Which finished calls the kernel reports as suspicious, decided by
//! userspace's verdict rules and handed to the kernel as a table.
//!
//! The kernel side records and counts; it does not know what a verdict is.
//! For each kind of source filesystem ([`SizeTruth`]) the table holds one
//! bit per [`ReportPolicy::index`] (the facts word and whether the call
//! failed): set when userspace's rules call such a call suspicious.

/// What a filesystem's advertised file size (`i_size`) says about its content.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(rename_all = "snake_case")
)]
pub enum SizeTruth {
    /// The size is the content length (disk, network and memory filesystems).
    Content = 0,
    /// Files advertise 0 (or a stale number) and generate content on read.
    Generated = 1,
    /// Files advertise one fixed size whatever they contain: one page for
    /// sysfs attributes, 80 bytes for mqueue queues.
    FixedPage = 2,
    /// No meaningful size: pipes, sockets, anonymous inodes.
    Stream = 3,
}

impl SizeTruth {
    /// Every kind, in discriminant order.
    pub const ALL: [SizeTruth; 4] = [
        SizeTruth::Content,
        SizeTruth::Generated,
        SizeTruth::FixedPage,
        SizeTruth::Stream,
    ];
}

/// Bits per row: every facts word, failed or not.
const INDEXES: usize = 1 << (crate::fact::COUNT + 1);
/// u64 words per row.
const WORDS: usize = INDEXES / 64;

/// The kernel's report table (a load-time global).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReportPolicy {
    /// Per [`SizeTruth`], one bit per index: suspicious.
    pub suspicious: [[u64; WORDS]; 4],
    /// One bit per index: every kind of source gives the same answer, so the
    /// kernel need not look the source's kind up.
    pub uniform: [u64; WORDS],
}

const _: () =
    assert!(INDEXES.is_multiple_of(64) && core::mem::size_of::<ReportPolicy>() == 5 * WORDS * 8);

#[inline(always)]
fn bit(words: &[u64; WORDS], idx: u32) -> bool {
    let w = crate::bound((idx >> 6) as usize, WORDS - 1);
    (words[w] >> (idx & 63)) & 1 == 1
}

impl ReportPolicy {
    /// A table that reports nothing: the programs' value until userspace
    /// sets the global at load.
    pub const EMPTY: ReportPolicy = ReportPolicy {
        suspicious: [[0; WORDS]; 4],
        uniform: [0; WORDS],
    };

    /// The table index of a call: its facts word and whether it failed.
    #[inline(always)]
    pub const fn index(facts: u32, failed: bool) -> u32 {
        (facts & ((1 << crate::fact::COUNT) - 1)) | ((failed as u32) << crate::fact::COUNT)
    }

    /// Every index, for building the table.
    pub fn indexes() -> impl Iterator<Item = u32> {
        0..INDEXES as u32
    }

    /// Whether a call at `idx` from a source of `truth` is suspicious.
    #[inline(always)]
    pub fn is_suspicious(&self, truth: u8, idx: u32) -> bool {
        bit(&self.suspicious[crate::bound(truth as usize, 3)], idx)
    }

    /// Whether the answer at `idx` is the same for every kind of source.
    #[inline(always)]
    pub fn is_uniform(&self, idx: u32) -> bool {
        bit(&self.uniform, idx)
    }

    /// Builds the table from a rule: `suspicious(truth, facts, failed)`.
    pub fn from_rule(suspicious: impl Fn(SizeTruth, u32, bool) -> bool) -> Self {
        let mut p = ReportPolicy::default();
        for idx in Self::indexes() {
            let facts = idx & ((1 << crate::fact::COUNT) - 1);
            let failed = idx >> crate::fact::COUNT != 0;
            let answers = SizeTruth::ALL.map(|t| suspicious(t, facts, failed));
            let (w, b) = ((idx >> 6) as usize, idx & 63);
            for (t, a) in answers.iter().enumerate() {
                if *a {
                    p.suspicious[t][w] |= 1 << b;
                }
            }
            if answers.iter().all(|a| *a == answers[0]) {
                p.uniform[w] |= 1 << b;
            }
        }
        p
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fact;

    #[test]
    fn table_answers_what_the_rule_said() {
        // A toy rule: failures, and zero copies from generated sources.
        let rule = |t: SizeTruth, facts: u32, failed: bool| {
            failed || (t == SizeTruth::Generated && facts & fact::COPIED_ZERO != 0)
        };
        let p = ReportPolicy::from_rule(rule);
        let mut seen = 0;
        for facts in 0..1u32 << fact::COUNT {
            for failed in [false, true] {
                let idx = ReportPolicy::index(facts, failed);
                seen += 1;
                for t in SizeTruth::ALL {
                    assert_eq!(
                        p.is_suspicious(t as u8, idx),
                        rule(t, facts, failed),
                        "facts {facts:#x} failed {failed} truth {t:?}"
                    );
                }
            }
        }
        assert_eq!(
            seen,
            ReportPolicy::indexes().count(),
            "one index per call shape"
        );
        let zero = ReportPolicy::index(fact::COPIED_ZERO | fact::IN_PRESENT, false);
        assert!(!p.is_uniform(zero), "depends on the source");
        assert!(p.is_uniform(ReportPolicy::index(0, true)), "every failure");
    }
}
