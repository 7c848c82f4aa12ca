//! The tail socket's wire format: newline-delimited JSON, each line an
//! envelope `{"type": "...", "data": {...}}` (documented in docs/tail-protocol.md).
//!
//! The client speaks first with `hello` (protocol version, filter, history);
//! the daemon answers `hello`, replays history as `call` lines, sends `live`,
//! then streams `call` lines, a `lagged` line when the client fell behind, and
//! `bye` when it stops. Any problem is one `error` line, then the connection closes.

use serde::{Deserialize, Serialize};

use crate::model::backend::Backend;
use crate::tail::filter::Filter;

/// Version both sides must agree on.
pub const PROTOCOL_VERSION: u32 = 1;

/// Longest line either side accepts.
pub const MAX_LINE: usize = 64 * 1024;

/// Client → daemon.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(
    tag = "type",
    content = "data",
    rename_all = "snake_case",
    deny_unknown_fields
)]
pub enum ClientMsg {
    /// The only client message.
    Hello {
        /// [`PROTOCOL_VERSION`].
        version: u32,
        /// Which calls to send.
        #[serde(default)]
        filter: Filter,
        /// Replay up to this many kept suspicious calls first.
        #[serde(default)]
        history: usize,
    },
}

/// Daemon → client (except `call`, whose data is a record, sent pre-serialised).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data", rename_all = "snake_case")]
pub enum ServerMsg {
    /// Handshake answer.
    Hello {
        version: u32,
        /// "copytrace X.Y.Z".
        server: String,
        /// Probe back-end in use (null only before the probes are attached).
        backend: Option<Backend>,
    },
    /// History replay is over; what follows is live.
    Live {},
    /// The client fell behind and `missed` calls were not sent to it.
    Lagged { missed: u64 },
    /// The daemon is stopping.
    Bye { reason: String },
    /// A refusal or protocol error; the connection closes after it.
    Error { message: String },
}

impl ServerMsg {
    /// One line (no newline).
    pub fn line(&self) -> String {
        serde_json::to_string(self)
            .unwrap_or_else(|_| r#"{"type":"error","data":{"message":"encoding"}}"#.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wire_forms_are_stable() {
        let hello = ClientMsg::Hello {
            version: 1,
            filter: Filter::default(),
            history: 3,
        };
        let text = serde_json::to_string(&hello).expect("encode");
        assert!(
            text.starts_with(r#"{"type":"hello","data":{"version":1,"filter":{"all":false"#),
            "{text}"
        );
        assert_eq!(serde_json::from_str::<ClientMsg>(&text).ok(), Some(hello));
        let minimal: ClientMsg =
            serde_json::from_str(r#"{"type":"hello","data":{"version":1}}"#).expect("minimal");
        assert!(matches!(minimal, ClientMsg::Hello { history: 0, .. }));
        assert_eq!(
            ServerMsg::Lagged { missed: 7 }.line(),
            r#"{"type":"lagged","data":{"missed":7}}"#
        );
        assert_eq!(ServerMsg::Live {}.line(), r#"{"type":"live","data":{}}"#);
        assert!(serde_json::from_str::<ClientMsg>("garbage").is_err());
    }
}
