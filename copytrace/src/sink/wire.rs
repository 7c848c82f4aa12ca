//! The lines every JSON stream of copytrace carries: `run --json` on stdout,
//! `trace --json`'s output and the daemon's side of the tail socket. Each
//! line is an envelope `{"type": "...", "data": {...}}`
//! (docs/tail-protocol.md); [`ServerMsg`] is its one definition, written by
//! the daemon and read by `copytrace tail`.
//!
//! Names a traced process chose keep their exact bytes, and DEL, C1
//! controls and bidi/format characters are written as `\u` escapes: the
//! same string to a JSON reader, but inert when the line lands in a terminal.

use std::borrow::Cow;
use std::io;

use serde::{Deserialize, Serialize};

use crate::enrich::record::Record;
use crate::model::backend::Backend;
use crate::model::text::invisible;
use crate::sink::summary::Summary;

/// One line of a copytrace JSON stream. Borrowed when written (a record is
/// serialised once for every reader), owned when read.
#[allow(
    clippy::large_enum_variant,
    reason = "one message lives at a time: a record is borrowed to write, read once per line"
)]
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", content = "data", rename_all = "snake_case")]
pub enum ServerMsg<'a> {
    /// Handshake answer.
    Hello {
        version: u32,
        /// "copytrace X.Y.Z".
        server: String,
        /// Probe back-end in use (null only before the probes are attached).
        backend: Option<Backend>,
    },
    /// One classified call.
    Call(Cow<'a, Record>),
    /// Totals at the end of `copytrace trace`.
    Summary(Cow<'a, Summary>),
    /// History replay is over; what follows is live.
    Live {},
    /// The client fell behind and `missed` calls were not sent to it.
    Lagged { missed: u64 },
    /// The daemon is stopping.
    Bye { reason: String },
    /// A refusal or protocol error; the connection closes after it.
    Error { message: String },
}

/// serde_json's compact formatter, escaping what terminals act on.
struct InertFormatter;

impl serde_json::ser::Formatter for InertFormatter {
    fn write_string_fragment<W: ?Sized + io::Write>(
        &mut self,
        w: &mut W,
        fragment: &str,
    ) -> io::Result<()> {
        let bytes = fragment.as_bytes();
        let mut start = 0;
        for (i, c) in fragment.char_indices() {
            if invisible(c) {
                w.write_all(&bytes[start..i])?;
                write!(w, "\\u{:04x}", c as u32)?;
                start = i + c.len_utf8();
            }
        }
        w.write_all(&bytes[start..])
    }
}

impl ServerMsg<'_> {
    /// One line, inert in a terminal (no trailing newline).
    pub fn line(&self) -> String {
        let mut out = Vec::with_capacity(1024);
        let mut ser = serde_json::Serializer::with_formatter(&mut out, InertFormatter);
        match self.serialize(&mut ser) {
            // serde_json writes UTF-8 (names that are not are base64 in JSON).
            Ok(()) => String::from_utf8(out).unwrap_or_default(),
            // Serialising plain structs cannot fail; say so loudly if it ever does.
            Err(e) => format!(r#"{{"type":"error","data":{{"message":"cannot serialise: {e}"}}}}"#),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_inert_in_a_terminal_and_exact() {
        let reason = "a\u{9b}2J\u{202e}\u{7f}\u{1b}b".to_string();
        let line = ServerMsg::Bye {
            reason: reason.clone(),
        }
        .line();
        assert!(line.chars().all(|c| !invisible(c)), "{line:?}");
        assert_eq!(
            line,
            r#"{"type":"bye","data":{"reason":"a\u009b2J\u202e\u007f\u001bb"}}"#
        );
        let back: ServerMsg = serde_json::from_str(&line).expect("valid JSON");
        assert!(matches!(back, ServerMsg::Bye { reason: r } if r == reason));
    }

    #[test]
    fn wire_forms_are_stable() {
        assert_eq!(
            ServerMsg::Lagged { missed: 7 }.line(),
            r#"{"type":"lagged","data":{"missed":7}}"#
        );
        assert_eq!(ServerMsg::Live {}.line(), r#"{"type":"live","data":{}}"#);
        let summary = Summary {
            calls: 2,
            ..Summary::default()
        };
        let line = ServerMsg::Summary(Cow::Borrowed(&summary)).line();
        assert!(
            line.starts_with(r#"{"type":"summary","data":{"calls":2,"#),
            "{line}"
        );
        let back: ServerMsg = serde_json::from_str(&line).expect("summary reads back");
        assert!(matches!(back, ServerMsg::Summary(s) if s.calls == 2));
    }
}
