//! How many journal entries a user's calls may cause: a token bucket per
//! uid and one for everyone, so that no user (and not all of them
//! together) can push copytrace past journald's own per-unit limit, which
//! would silence every copytrace message, other users' and the daemon's
//! own. What is held back is counted per uid and summarised.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// One user's (or everyone's) allowance.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// The allowance: `burst` entries at once, then `per_second`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    /// Entries allowed at once.
    pub burst: f64,
    /// Entries allowed per second after that.
    pub per_second: f64,
}

impl Bucket {
    fn full(rate: Rate, now: Instant) -> Self {
        Self {
            tokens: rate.burst,
            at: now,
        }
    }

    fn refill(&mut self, rate: Rate, now: Instant) {
        let secs = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + secs * rate.per_second).min(rate.burst);
        self.at = now;
    }
}

/// Per user: 20 entries at once, then 2 a second.
pub const PER_UID: Rate = Rate {
    burst: 20.0,
    per_second: 2.0,
};

/// Everyone together: 200 at once, then 50 a second, well under journald's
/// default of 10,000 per 30 s for the unit.
pub const IN_ALL: Rate = Rate {
    burst: 200.0,
    per_second: 50.0,
};

/// Users tracked one by one; beyond them, new uids share one bucket.
pub const MAX_UIDS: usize = 4096;

/// Users named one by one in a summary; the rest are summed.
const SUMMARISED_UIDS: usize = 16;

/// How often held-back counts are summarised.
pub const SUMMARY_EVERY: Duration = Duration::from_secs(30);

/// The uid standing for every uid beyond [`MAX_UIDS`].
const OVERFLOW_UID: u32 = u32::MAX;

/// Decides which entries go to the journal.
#[derive(Debug)]
pub struct RateLimit {
    per_uid: Rate,
    in_all: Rate,
    users: HashMap<u32, Bucket>,
    all: Bucket,
    held: HashMap<u32, u64>,
    last_summary: Instant,
}

/// Held-back counts to report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Summary {
    /// (uid, entries held back), largest first; [`u32::MAX`] stands for
    /// uids beyond [`MAX_UIDS`].
    pub by_uid: Vec<(u32, u64)>,
    /// Entries held back for uids not listed.
    pub others: u64,
}

impl RateLimit {
    /// A limiter with the given allowances, all full at `now`.
    pub fn new(per_uid: Rate, in_all: Rate, now: Instant) -> Self {
        Self {
            per_uid,
            in_all,
            users: HashMap::new(),
            all: Bucket::full(in_all, now),
            held: HashMap::new(),
            last_summary: now,
        }
    }

    /// Whether an entry for `uid` may be written now; counts it if not.
    pub fn admit(&mut self, uid: u32, now: Instant) -> bool {
        if !self.users.contains_key(&uid) && self.users.len() >= MAX_UIDS {
            // Forget users whose allowance is whole again before sharing.
            let rate = self.per_uid;
            self.users.retain(|_, b| {
                b.refill(rate, now);
                b.tokens < rate.burst
            });
        }
        let key = if self.users.contains_key(&uid) || self.users.len() < MAX_UIDS {
            uid
        } else {
            OVERFLOW_UID
        };
        let rate = self.per_uid;
        let user = self
            .users
            .entry(key)
            .or_insert_with(|| Bucket::full(rate, now));
        user.refill(rate, now);
        self.all.refill(self.in_all, now);
        if user.tokens >= 1.0 && self.all.tokens >= 1.0 {
            user.tokens -= 1.0;
            self.all.tokens -= 1.0;
            return true;
        }
        *self.held.entry(key).or_default() += 1;
        false
    }

    /// What was held back since the last summary, once [`SUMMARY_EVERY`]
    /// has passed and something was.
    pub fn summary(&mut self, now: Instant) -> Option<Summary> {
        if self.held.is_empty() || now.saturating_duration_since(self.last_summary) < SUMMARY_EVERY
        {
            return None;
        }
        self.last_summary = now;
        let mut by_uid: Vec<(u32, u64)> = self.held.drain().collect();
        by_uid.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        let others = by_uid.iter().skip(SUMMARISED_UIDS).map(|(_, n)| n).sum();
        by_uid.truncate(SUMMARISED_UIDS);
        Some(Summary { by_uid, others })
    }
}

impl RateLimit {
    /// Takes back a summary that could not be written: its counts join the
    /// next one, which is due at once.
    pub fn put_back(&mut self, s: Summary, now: Instant) {
        for (uid, n) in s.by_uid {
            *self.held.entry(uid).or_default() += n;
        }
        if s.others > 0 {
            *self.held.entry(OVERFLOW_UID).or_default() += s.others;
        }
        self.last_summary = now.checked_sub(SUMMARY_EVERY).unwrap_or(now);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SLOW: Rate = Rate {
        burst: 3.0,
        per_second: 1.0,
    };
    const WIDE: Rate = Rate {
        burst: 1e9,
        per_second: 1e9,
    };

    #[test]
    fn a_flooding_user_is_held_back_and_others_are_not() {
        let t0 = Instant::now();
        let mut r = RateLimit::new(SLOW, WIDE, t0);
        let passed = (0..100).filter(|_| r.admit(1000, t0)).count();
        assert_eq!(passed, 3, "the burst");
        assert!(
            r.admit(1001, t0),
            "another user has an allowance of its own"
        );
        assert!(
            r.admit(1000, t0 + Duration::from_secs(1)),
            "refilled by the rate"
        );
        let s = r.summary(t0 + SUMMARY_EVERY).expect("held back");
        assert_eq!(s.by_uid, vec![(1000, 97)]);
        assert_eq!(s.others, 0);
        assert_eq!(r.summary(t0 + SUMMARY_EVERY * 3), None, "nothing new");
        let t1 = t0 + SUMMARY_EVERY * 4;
        r.put_back(s.clone(), t1);
        assert_eq!(r.summary(t1), Some(s), "an unsent summary comes again");
    }

    #[test]
    fn everyone_together_is_bounded_too() {
        let t0 = Instant::now();
        let all = Rate {
            burst: 10.0,
            per_second: 1.0,
        };
        let mut r = RateLimit::new(SLOW, all, t0);
        let passed = (0..100u32).filter(|uid| r.admit(*uid, t0)).count();
        assert_eq!(passed, 10);
    }

    #[test]
    fn more_users_than_tracked_share_one_allowance() {
        let t0 = Instant::now();
        let mut r = RateLimit::new(SLOW, WIDE, t0);
        for uid in 0..MAX_UIDS as u32 {
            // Each spends its whole burst, so none can be forgotten.
            for _ in 0..3 {
                r.admit(uid, t0);
            }
        }
        let newcomers = (0..10u32).filter(|i| r.admit(1_000_000 + i, t0)).count();
        assert_eq!(newcomers, 3, "one shared burst");
        assert!(r.users.len() <= MAX_UIDS + 1);
    }
}
