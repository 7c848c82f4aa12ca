//! The tail socket's wire format: newline-delimited JSON, each line an
//! envelope `{"type": "...", "data": {...}}` (documented in docs/tail-protocol.md).
//! The daemon's lines are [`ServerMsg`], the vocabulary of every JSON
//! stream copytrace writes ([`crate::sink::wire`]); the client's are [`ClientMsg`].
//!
//! The client speaks first with `hello` (protocol version, filter, history);
//! the daemon answers `hello`, replays history as `call` lines, sends `live`,
//! then streams `call` lines, a `lagged` line when the client fell behind, and
//! `bye` when it stops. Any problem is one `error` line, then the connection closes.

use serde::{Deserialize, Serialize};

pub use crate::sink::wire::ServerMsg;
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

/// A client's first line: its filter and history, or the message of the
/// `error` line that refuses it.
pub fn accept_hello(line: &[u8]) -> Result<(Filter, usize), String> {
    match serde_json::from_slice::<ClientMsg>(line) {
        Ok(ClientMsg::Hello { version, .. }) if version != PROTOCOL_VERSION => Err(format!(
            "protocol version {version} not supported (daemon speaks {PROTOCOL_VERSION})"
        )),
        Ok(ClientMsg::Hello {
            filter, history, ..
        }) => Ok((filter, history)),
        Err(e) => Err(format!("bad hello: {e}")),
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
        assert!(serde_json::from_str::<ClientMsg>("garbage").is_err());
    }
}
