//! `[tail]` of the daemon's configuration: the live tail socket and how
//! much it keeps for its clients.

use std::path::PathBuf;

use serde::Deserialize;

/// Default tail socket.
pub const DEFAULT_SOCKET: &str = "/run/copytrace/copytrace.sock";

/// The largest `tail.client_queue` accepted (records a slow client may lag behind).
pub const MAX_CLIENT_QUEUE: usize = 65_536;

/// The largest `tail.history` accepted (suspicious calls kept for new clients).
pub const MAX_HISTORY: usize = 100_000;

/// `[tail]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TailConfig {
    /// Serve the tail socket at all.
    pub enabled: bool,
    /// Socket path.
    pub socket: PathBuf,
    /// Group allowed to connect besides root.
    pub group: String,
    /// Suspicious calls kept for `--history`.
    pub history: usize,
    /// Events queued per client before it is told it lagged.
    pub client_queue: usize,
}

impl Default for TailConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            socket: PathBuf::from(DEFAULT_SOCKET),
            group: "copytrace".into(),
            history: 1000,
            client_queue: 4096,
        }
    }
}

impl TailConfig {
    /// Checks the bounds; the message names the key.
    pub fn validate(&self) -> Result<(), String> {
        if self.client_queue == 0 {
            return Err("tail.client_queue: must be at least 1".into());
        }
        // The broadcast queue allocates every slot up front, and each
        // history entry keeps a record: a typo must not be a start-up OOM.
        if self.client_queue > MAX_CLIENT_QUEUE {
            return Err(format!(
                "tail.client_queue: {} is more than {MAX_CLIENT_QUEUE}",
                self.client_queue
            ));
        }
        if self.history > MAX_HISTORY {
            return Err(format!(
                "tail.history: {} is more than {MAX_HISTORY}",
                self.history
            ));
        }
        if !self.socket.is_absolute() {
            return Err(format!(
                "tail.socket: {} must be an absolute path",
                self.socket.display()
            ));
        }
        Ok(())
    }
}
