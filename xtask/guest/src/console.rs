//! The serial console's vocabulary between the guests and the host: one
//! [`ConsoleLine`] per fact, written by the guest programs (PID 1 of the
//! kernel-matrix guests, the systemd checker) and parsed by `cargo xtask`,
//! and [`Kind::Continue`], the one line the host sends back.
//!
//! On the wire a line is `CT-KIND tag: text`. The kernel and firmware share
//! the console, so a reader finds the line's start anywhere in what it
//! read ([`ConsoleLine::parse`]); control characters in the tag and text
//! are replaced when writing, so one fact stays one line.

use std::fmt;

/// What a console line reports. The tag and text each kind carries are
/// given beside it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// The guest's `uname -r`: no tag, the release as text.
    Kernel,
    /// A remark from the guest itself (modules it could not load, its
    /// role): the topic, the remark.
    Log,
    /// A back-end loads and attaches: the back-end, how it reads the kernel.
    Loaded,
    /// The guest's kernel refuses a back-end: the back-end, why.
    Refused,
    /// A line a test binary wrote on stdout: `backend binary`, the line.
    Out,
    /// A line a test binary wrote on stderr: `backend binary`, the line.
    Err,
    /// A test that recorded a skip: `backend binary`, `test<TAB>reason`.
    Skip,
    /// A test binary's exit code: `backend binary`, the code.
    Exit,
    /// One benchmark result: `mode workload`, `median min max programs`.
    Bench,
    /// What went wrong running something: `backend binary` or `setup`, the error.
    Error,
    /// The systemd checker's plan: no tag, the check names joined by `|`.
    Plan,
    /// One systemd check: its name, `ok detail` or `FAIL detail`.
    Check,
    /// A systemd guest serves the fleet: no tag, what it made.
    FleetReady,
    /// Host to guest: the host has checked the fleet, go on.
    Continue,
    /// The guest is done and powers off.
    Done,
}

impl Kind {
    /// Every kind.
    pub const ALL: [Kind; 15] = [
        Kind::Kernel,
        Kind::Log,
        Kind::Loaded,
        Kind::Refused,
        Kind::Out,
        Kind::Err,
        Kind::Skip,
        Kind::Exit,
        Kind::Bench,
        Kind::Error,
        Kind::Plan,
        Kind::Check,
        Kind::FleetReady,
        Kind::Continue,
        Kind::Done,
    ];

    /// The kind's word on the console (`CT-OUT`).
    pub const fn as_str(self) -> &'static str {
        match self {
            Kind::Kernel => "CT-KERNEL",
            Kind::Log => "CT-LOG",
            Kind::Loaded => "CT-LOADED",
            Kind::Refused => "CT-REFUSED",
            Kind::Out => "CT-OUT",
            Kind::Err => "CT-ERR",
            Kind::Skip => "CT-SKIP",
            Kind::Exit => "CT-EXIT",
            Kind::Bench => "CT-BENCH",
            Kind::Error => "CT-ERROR",
            Kind::Plan => "CT-PLAN",
            Kind::Check => "CT-CHECK",
            Kind::FleetReady => "CT-FLEET-READY",
            Kind::Continue => "CT-CONTINUE",
            Kind::Done => "CT-DONE",
        }
    }

    /// The kind a console word names.
    pub fn from_word(word: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == word)
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a [`Kind::Check`] line's name ends: its text starts with a verdict.
const VERDICTS: [&str; 2] = [": ok", ": FAIL"];

/// One line of the console: `CT-KIND tag: text`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsoleLine {
    pub kind: Kind,
    /// Whom the line is about (see [`Kind`]); empty when nobody. It holds
    /// no `: `, except a check's name (see [`ConsoleLine::parse`]).
    pub tag: String,
    pub text: String,
}

impl ConsoleLine {
    /// A line of `kind` about `tag`.
    pub fn new(kind: Kind, tag: impl Into<String>, text: impl Into<String>) -> Self {
        ConsoleLine {
            kind,
            tag: tag.into(),
            text: text.into(),
        }
    }

    /// A line with neither tag nor text ([`Kind::Done`], [`Kind::Continue`]).
    pub fn bare(kind: Kind) -> Self {
        ConsoleLine::new(kind, "", "")
    }

    /// One systemd check's result.
    pub fn check(name: &str, ok: bool, detail: &str) -> Self {
        let verdict = if ok { "ok" } else { "FAIL" };
        ConsoleLine::new(Kind::Check, name, format!("{verdict} {detail}"))
    }

    /// The console line in `raw`, whatever precedes it (kernel messages,
    /// firmware output without a line end): the first `CT-` that starts a
    /// known kind. A tag ends at the first `: `, except a check's name,
    /// which may hold one and ends where its verdict starts.
    pub fn parse(raw: &str) -> Option<Self> {
        raw.match_indices("CT-")
            .find_map(|(at, _)| Self::parse_at(&raw[at..]))
    }

    fn parse_at(line: &str) -> Option<Self> {
        let (word, rest) = line.split_once(' ').unwrap_or((line, ""));
        let kind = Kind::from_word(word)?;
        let verdict = match kind {
            Kind::Check => VERDICTS.iter().filter_map(|v| rest.find(v)).min(),
            _ => None,
        };
        let split = verdict.or_else(|| rest.find(": "));
        let (tag, text) = match split {
            Some(at) => (&rest[..at], &rest[at + 2..]),
            // A line end lost its trailing space: `CT-DONE :` or `CT-DONE`.
            None => (rest.strip_suffix(':').unwrap_or(rest), ""),
        };
        Some(ConsoleLine::new(kind, tag.trim_end(), text))
    }

    /// The tag's two words (`backend binary`, `mode workload`); the second
    /// is empty when the tag has one.
    pub fn tag_pair(&self) -> (&str, &str) {
        self.tag.split_once(' ').unwrap_or((&self.tag, ""))
    }

    /// A [`Kind::Check`]'s verdict and detail.
    pub fn verdict(&self) -> (bool, &str) {
        match self.text.split_once(' ') {
            Some(("ok", detail)) => (true, detail),
            None if self.text == "ok" => (true, ""),
            Some((_, detail)) => (false, detail),
            None => (false, ""),
        }
    }
}

/// `s` with every control character but a tab replaced by a space.
fn one_line(s: &str) -> impl fmt::Display + '_ {
    struct OneLine<'a>(&'a str);
    impl fmt::Display for OneLine<'_> {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            for c in self.0.chars() {
                let c = if c.is_control() && c != '\t' { ' ' } else { c };
                fmt::Write::write_char(f, c)?;
            }
            Ok(())
        }
    }
    OneLine(s)
}

impl fmt::Display for ConsoleLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.kind,
            one_line(&self.tag),
            one_line(&self.text)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(l: &ConsoleLine) -> Option<ConsoleLine> {
        ConsoleLine::parse(&l.to_string())
    }

    #[test]
    fn every_kind_round_trips_with_and_without_tag_and_text() {
        for kind in Kind::ALL {
            for (tag, text) in [
                ("", ""),
                ("", "6.1.0-56-amd64"),
                ("fentry probe_syscalls", "test a ... ok"),
                ("setup", "mount: no such device: ENODEV"),
                ("fentry", "cannot load: reason: EPERM\tdetail"),
            ] {
                let l = ConsoleLine::new(kind, tag, text);
                assert_eq!(round_trip(&l).as_ref(), Some(&l), "{l}");
            }
        }
    }

    #[test]
    fn words_are_distinct_and_name_their_kind() {
        for k in Kind::ALL {
            assert_eq!(Kind::from_word(k.as_str()), Some(k));
            assert!(k.as_str().starts_with("CT-"));
        }
        assert_eq!(Kind::from_word("CT-NOPE"), None);
    }

    #[test]
    fn writes_the_wire_format() {
        let l = ConsoleLine::new(Kind::Out, "fentry oracle", "test x ... ok");
        assert_eq!(l.to_string(), "CT-OUT fentry oracle: test x ... ok");
        assert_eq!(ConsoleLine::bare(Kind::Done).to_string(), "CT-DONE : ");
        assert_eq!(
            ConsoleLine::new(Kind::Err, "t b", "a\nb\r\u{1b}[0m\tc").to_string(),
            "CT-ERR t b: a b  [0m\tc",
            "one fact stays one line; tabs stay"
        );
    }

    #[test]
    fn finds_the_line_after_console_noise() {
        let l = ConsoleLine::parse("[    2.345678] random: crng initCT-KERNEL : 6.12.117")
            .expect("a line");
        assert_eq!(l, ConsoleLine::new(Kind::Kernel, "", "6.12.117"));
        // A `CT-` that starts no known kind is noise too.
        let l = ConsoleLine::parse("OCT-2025 CT-NOPE x: y CT-EXIT tracepoint oracle: 101")
            .expect("a line");
        assert_eq!(l, ConsoleLine::new(Kind::Exit, "tracepoint oracle", "101"));
        assert_eq!(l.tag_pair(), ("tracepoint", "oracle"));
        assert_eq!(ConsoleLine::parse("Booting the kernel"), None);
        assert_eq!(ConsoleLine::parse("CT-"), None);
    }

    #[test]
    fn a_lost_trailing_space_still_ends_the_guest() {
        for raw in ["CT-DONE :", "CT-DONE", "CT-DONE : "] {
            assert_eq!(
                ConsoleLine::parse(raw),
                Some(ConsoleLine::bare(Kind::Done)),
                "{raw:?}"
            );
        }
        assert_eq!(
            ConsoleLine::parse("CT-CONTINUE : \r\n".trim_end_matches(['\r', '\n'])),
            Some(ConsoleLine::bare(Kind::Continue))
        );
    }

    #[test]
    fn a_checks_name_may_hold_a_colon() {
        let l = ConsoleLine::check("reload: a good config", false, "exit 1: denied");
        let back = round_trip(&l).expect("a line");
        assert_eq!(back, l);
        assert_eq!(back.verdict(), (false, "exit 1: denied"));
        let ok = ConsoleLine::check("group copytrace exists", true, "gid 998");
        assert_eq!(
            round_trip(&ok).expect("a line").verdict(),
            (true, "gid 998")
        );
        // Any other kind's tag ends at the first ": ".
        let l = ConsoleLine::parse("CT-ERROR setup: mount: EPERM").expect("a line");
        assert_eq!((l.tag.as_str(), l.text.as_str()), ("setup", "mount: EPERM"));
    }
}
