//! Accepting connections without letting clients take the daemon down.
//!
//! Any local user can connect to the metrics port, and members of the tail
//! group to the tail socket. When file descriptors run out (EMFILE/ENFILE)
//! `accept` fails at once, every time: an accept loop that retries at once
//! spins at full CPU and floods the log. [`Backoff`] sleeps instead, longer
//! while the condition lasts, and reports it once per interval with a count.

use std::io;
use std::time::{Duration, Instant};

/// Shortest and longest pause after a failed accept.
const FIRST_PAUSE: Duration = Duration::from_millis(50);
const LONGEST_PAUSE: Duration = Duration::from_secs(1);

/// Least time between two log lines about failing accepts.
const LOG_EVERY: Duration = Duration::from_secs(10);

/// State of one accept loop's failures.
pub struct Backoff {
    what: &'static str,
    pause: Duration,
    failures: u64,
    last_log: Option<Instant>,
}

/// Whether an accept error means this process (or the system) is out of
/// file descriptors or memory: retrying at once cannot succeed.
fn exhausted(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}

impl Backoff {
    /// For the accept loop of `what` ("metrics listener", "tail socket").
    pub fn new(what: &'static str) -> Self {
        Backoff {
            what,
            pause: FIRST_PAUSE,
            failures: 0,
            last_log: None,
        }
    }

    /// An accept succeeded: the next failure starts from the shortest pause.
    pub fn succeeded(&mut self) {
        if self.failures > 0 && self.last_log.is_some() {
            log::info!("{}: accepting again", self.what);
        }
        self.pause = FIRST_PAUSE;
        self.failures = 0;
        self.last_log = None;
    }

    /// An accept failed: log (at most once per interval) and wait.
    pub async fn failed(&mut self, e: &io::Error) {
        self.failures += 1;
        if self.last_log.is_none_or(|t| t.elapsed() >= LOG_EVERY) {
            log::warn!(
                "{}: {e} ({} failed accept(s); pausing, reported again in {}s if it lasts)",
                self.what,
                self.failures,
                LOG_EVERY.as_secs()
            );
            self.last_log = Some(Instant::now());
        }
        if exhausted(e) {
            tokio::time::sleep(self.pause).await;
            self.pause = (self.pause * 2).min(LONGEST_PAUSE);
        } else {
            // A client that gave up before we accepted: nothing to wait for,
            // but never a tight loop either.
            tokio::task::yield_now().await;
        }
    }
}
