//! Text forms of a [`Record`]: one human line, or one JSON object per line
//! (a [`ServerMsg::Call`], which [`crate::sink::wire`] writes inert).
//!
//! Every name a traced process chose goes through [`Untrusted::human`] in
//! the human form.

use std::borrow::Cow;
use std::fmt::Write as _;

use crate::enrich::record::Record;
use crate::enrich::stack::{Method, Stack};
use crate::model::event::FileSide;
use crate::model::text::Untrusted;
use crate::sink::wire::ServerMsg;

/// Output format chosen on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// Aligned text for people.
    Human,
    /// `{"type":"call","data":{…}}` per line ([`ServerMsg::Call`]).
    Json,
}

/// A file side for people: `fs:path`, marked when deleted, ambiguous or
/// seen from another mount namespace.
fn side(
    f: Option<&FileSide>,
    path: Option<&Untrusted>,
    alternatives: &[Untrusted],
    ns_path: Option<&Untrusted>,
    fd: i32,
) -> String {
    let Some(f) = f else {
        return format!("fd{fd}(not open)");
    };
    let loc = &f.location;
    let mut s = match path {
        Some(p) => format!("{}:{}", f.fs, p.human()),
        // Only the path inside the filesystem is known: say so, so nobody
        // takes it for a path they can open.
        None if !loc.fs_path.is_empty() => {
            let why = if loc.path_complete {
                "no mount point found"
            } else {
                "path cut short"
            };
            format!("{}:{} ({why})", f.fs, loc.fs_path.human())
        }
        None => format!("{}:{}#{}", f.fs, f.kind.as_str(), loc.ino),
    };
    if loc.deleted {
        s.push_str(" (deleted)");
    }
    if loc.path_on_other_fs {
        // `fs` is the data's filesystem, the path another's (an overlay).
        let _ = write!(
            s,
            " (opened under this path; data on {} ino {})",
            loc.dev, loc.ino
        );
    }
    if !alternatives.is_empty() {
        let _ = write!(s, " (or {} other mount point(s))", alternatives.len());
    }
    if let Some(p) = ns_path {
        let _ = write!(s, " [mnt ns {}: {}]", loc.mnt_ns, p.human());
    }
    s
}

fn human_duration(ns: u64) -> String {
    match ns {
        0..=9_999 => format!("{ns}ns"),
        10_000..=9_999_999 => format!("{}µs", ns / 1_000),
        _ => format!("{}ms", ns / 1_000_000),
    }
}

/// Requests at least this long mean "everything": cp asks for about 2^63.
const ASK_ALL: u64 = 1 << 62;

/// The RESULT column: `copied/requested`, or the errno.
fn result(r: &Record) -> String {
    let e = &r.event;
    match e.errno() {
        Some(n) => crate::model::errno::label(n),
        None if e.len >= ASK_ALL => format!("{}/all", e.ret),
        None => format!("{}/{}", e.ret, e.len),
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
    let mut text = String::with_capacity(200);
    let _ = write!(text, "{time} {:<16} {:<7} ", e.comm.human(), e.pid);
    let start = text.len();
    let name = r.diagnosis.verdict.as_str();
    let _ = write!(text, "{name:<16}");
    let verdict = start..start + name.len();
    let _ = write!(
        text,
        " {:>15} {:>7} {} -> {}  {}",
        result(r),
        human_duration(r.latency_ns),
        side(
            e.file_in.as_ref(),
            r.path_in.as_ref(),
            &r.path_in_alternatives,
            r.path_in_ns.as_ref(),
            e.fd_in
        ),
        side(
            e.file_out.as_ref(),
            r.path_out.as_ref(),
            &r.path_out_alternatives,
            r.path_out_ns.as_ref(),
            e.fd_out
        ),
        r.diagnosis.reason
    );
    if let Some(w) = &e.within {
        // The enclosing call is reported after this one (it ends later), on
        // the same thread: its descriptors and entry time name it.
        let _ = write!(
            text,
            "  [inside this thread's call on fd {} -> fd {}, entered {} before]",
            w.fd_in,
            w.fd_out,
            human_duration(e.start_ns.saturating_sub(w.start_ns))
        );
    }
    if let Some(unit) = r.service.user_unit.as_ref().or(r.service.unit.as_ref()) {
        let _ = write!(text, "  [{}]", unit.human());
    }
    HumanLine { text, verdict }
}

/// A named stack for people, one indented line per frame.
pub fn human_stack(s: &Stack) -> String {
    let mut out = String::new();
    for (i, f) in s.frames.iter().enumerate() {
        let _ = write!(out, "    #{i:<2} {:>18}  ", f.addr);
        match &f.function {
            Some(name) => out.push_str(&name.human()),
            None => out.push('?'),
        }
        for inl in &f.inlined {
            let _ = write!(out, " [inlined {}]", inl.human());
        }
        if let (Some(file), Some(line)) = (&f.file, f.line) {
            let _ = write!(out, " at {}:{line}", file.human());
        }
        if let Some(m) = &f.module {
            let _ = write!(out, "  ({})", m.human());
        }
        if f.method != Method::Unknown {
            let _ = write!(out, "  [{}]", f.method.as_str());
        }
        out.push('\n');
    }
    if let Some(cut) = &s.cut {
        let _ = writeln!(out, "    stack cut: {cut}");
    }
    out
}

/// One line for people (see [`human`]).
pub fn human_line(r: &Record) -> String {
    human(r).text
}

/// Formats a record in `format`.
pub fn line(r: &Record, format: Format) -> String {
    match format {
        Format::Human => human_line(r),
        Format::Json => ServerMsg::Call(Cow::Borrowed(r)).line(),
    }
}

/// Column header matching [`human_line`].
pub fn human_header() -> String {
    format!(
        "{:<15} {:<16} {:<7} {:<16} {:>15} {:>7} {}",
        "TIME", "COMM", "PID", "VERDICT", "RESULT", "LATENCY", "SOURCE -> DESTINATION  REASON"
    )
}
