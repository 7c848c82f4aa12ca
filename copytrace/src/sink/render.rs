//! Text forms of a [`Record`]: one human line, or one JSON object per line.

use std::fmt::Write as _;

use serde::Serialize;

use crate::enrich::record::Record;
use crate::model::event::FileSide;

/// Output format chosen on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Aligned text for people.
    Human,
    /// `{"type":"call","data":{…}}` per line.
    Json,
}

/// The JSON Lines envelope: a type tag and its data.
#[derive(Serialize)]
pub struct Envelope<'a, T: Serialize> {
    #[serde(rename = "type")]
    pub kind: &'a str,
    pub data: T,
}

/// Serialises `data` as one envelope line (no trailing newline).
pub fn json_line<T: Serialize>(kind: &str, data: &T) -> String {
    serde_json::to_string(&Envelope { kind, data }).unwrap_or_else(|e| {
        // Serialising plain structs cannot fail; say so loudly if it ever does.
        format!(r#"{{"type":"error","data":{{"message":"cannot serialise {kind}: {e}"}}}}"#)
    })
}

fn side(f: Option<&FileSide>, path: Option<&str>, fd: i32) -> String {
    match (f, path) {
        (Some(f), Some(p)) => format!("{}:{p}", f.fs),
        (Some(f), None) if !f.fs_path.is_empty() => format!("{}:{}", f.fs, f.fs_path),
        (Some(f), None) => format!("{}:{}#{}", f.fs, f.kind.as_str(), f.ino),
        (None, _) => format!("fd{fd}(not open)"),
    }
}

fn human_duration(ns: u64) -> String {
    match ns {
        0..=9_999 => format!("{ns}ns"),
        10_000..=9_999_999 => format!("{}µs", ns / 1_000),
        _ => format!("{}ms", ns / 1_000_000),
    }
}

/// A human line and where its verdict column sits, for colouring.
pub struct HumanLine {
    /// The whole line.
    pub text: String,
    /// Byte range of the verdict name in `text`.
    pub verdict: std::ops::Range<usize>,
}

/// One line for people: time, process, verdict, bytes, latency, files, reason.
pub fn human(r: &Record) -> HumanLine {
    let e = &r.event;
    let time = r.time.get(11..26).unwrap_or(&r.time);
    let result = match e.errno() {
        Some(n) => crate::model::errno::label(n),
        None => format!("{}/{}", e.ret, e.len),
    };
    let mut text = String::with_capacity(200);
    let _ = write!(text, "{time} {:<16} {:<7} ", e.comm, e.pid);
    let start = text.len();
    let name = r.diagnosis.verdict.as_str();
    let _ = write!(text, "{name:<16}");
    let verdict = start..start + name.len();
    let _ = write!(
        text,
        " {:>15} {:>7} {} -> {}  {}",
        result,
        human_duration(r.latency_ns),
        side(e.file_in.as_ref(), r.path_in.as_deref(), e.fd_in),
        side(e.file_out.as_ref(), r.path_out.as_deref(), e.fd_out),
        r.diagnosis.reason
    );
    HumanLine { text, verdict }
}

/// One line for people (see [`human`]).
pub fn human_line(r: &Record) -> String {
    human(r).text
}

/// Formats a record in `format`.
pub fn line(r: &Record, format: Format) -> String {
    match format {
        Format::Human => human_line(r),
        Format::Json => json_line("call", r),
    }
}

/// Column header matching [`human_line`].
pub fn human_header() -> String {
    format!(
        "{:<15} {:<16} {:<7} {:<16} {:>15} {:>7} {}",
        "TIME", "COMM", "PID", "VERDICT", "RESULT", "LATENCY", "SOURCE -> DESTINATION  REASON"
    )
}
