//! Bytes chosen by whoever made a call: file names, paths, `comm`, cgroup
//! names. A traced process may be an attacker, and people read copytrace's
//! output in terminals and journals, so such bytes are never printed raw:
//!
//! - to people ([`Untrusted::human`]) they are shown like strace and ls
//!   show names: as they are when they are plain, else in double quotes with
//!   C-style escapes (`\x1b`, `\n`, `\"`, `\\`, `\u{202e}`), so a name can
//!   neither drive the terminal nor start a line nor pose as another column;
//! - in JSON they keep their exact bytes: a string when they are UTF-8,
//!   else `{"bytes": "<base64>"}` (docs/tail-protocol.md).

use std::fmt::{self, Write as _};

use base64::Engine as _;
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::ser::{SerializeMap, Serializer};
use serde::{Deserialize, Serialize};

/// Bytes from a traced process, shown escaped, serialised exactly.
#[derive(Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Untrusted(Vec<u8>);

impl Untrusted {
    /// Wraps bytes.
    pub fn new(bytes: impl Into<Vec<u8>>) -> Self {
        Untrusted(bytes.into())
    }

    /// The exact bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }

    /// Whether there are no bytes.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The bytes as UTF-8, when they are.
    pub fn to_str(&self) -> Option<&str> {
        std::str::from_utf8(&self.0).ok()
    }

    /// The bytes as a path (Linux paths are bytes).
    pub fn as_path(&self) -> &std::path::Path {
        use std::os::unix::ffi::OsStrExt;
        std::path::Path::new(std::ffi::OsStr::from_bytes(&self.0))
    }

    /// The form for people: bare when plain, else quoted with escapes.
    pub fn human(&self) -> String {
        // Most names are printable ASCII: a byte test settles them without
        // decoding characters (the reader runs this for every path shown).
        if !self.0.is_empty() && self.0.iter().all(|&b| plain_ascii(b)) {
            return self.0.iter().map(|&b| char::from(b)).collect();
        }
        match self.to_str() {
            Some(s) if !s.is_empty() && s.chars().all(plain) => s.to_string(),
            _ => self.quoted(),
        }
    }

    /// Always the quoted, escaped form.
    pub fn quoted(&self) -> String {
        let mut out = String::with_capacity(self.0.len() + 2);
        out.push('"');
        for chunk in self.0.utf8_chunks() {
            for c in chunk.valid().chars() {
                escape_char(c, &mut out);
            }
            for b in chunk.invalid() {
                let _ = write!(out, "\\x{b:02x}");
            }
        }
        out.push('"');
        out
    }
}

impl From<&str> for Untrusted {
    fn from(s: &str) -> Self {
        Untrusted(s.as_bytes().to_vec())
    }
}

impl fmt::Debug for Untrusted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.quoted())
    }
}

impl fmt::Display for Untrusted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.human())
    }
}

/// Characters that change what a terminal shows without being printed, or
/// reorder or hide text: controls (C0, DEL, C1), line and paragraph
/// separators, and the format characters (bidi overrides and isolates,
/// zero-width, BOM).
pub fn invisible(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{00ad}'
                | '\u{061c}'
                | '\u{180e}'
                | '\u{200b}'..='\u{200f}'
                | '\u{2028}'..='\u{202e}'
                | '\u{2060}'..='\u{2064}'
                | '\u{2066}'..='\u{206f}'
                | '\u{feff}'
                | '\u{fff9}'..='\u{fffb}'
        )
}

/// A character shown bare in a human field (no quoting needed): visible,
/// not a space, not a quote or backslash.
fn plain(c: char) -> bool {
    !invisible(c) && !c.is_whitespace() && c != '"' && c != '\\' && c != '\''
}

/// [`plain`] for an ASCII byte; false for every other byte (whose
/// character, if any, [`plain`] decides).
fn plain_ascii(b: u8) -> bool {
    b.is_ascii_graphic() && !matches!(b, b'"' | b'\\' | b'\'')
}

fn escape_char(c: char, out: &mut String) {
    match c {
        '\\' => out.push_str("\\\\"),
        '"' => out.push_str("\\\""),
        '\n' => out.push_str("\\n"),
        '\t' => out.push_str("\\t"),
        '\r' => out.push_str("\\r"),
        c if (c as u32) < 0x80 && invisible(c) => {
            let _ = write!(out, "\\x{:02x}", c as u32);
        }
        c if invisible(c) => {
            let _ = write!(out, "\\u{{{:x}}}", c as u32);
        }
        c => out.push(c),
    }
}

impl Serialize for Untrusted {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.to_str() {
            Some(text) => s.serialize_str(text),
            None => {
                let mut m = s.serialize_map(Some(1))?;
                m.serialize_entry(
                    "bytes",
                    &base64::engine::general_purpose::STANDARD.encode(&self.0),
                )?;
                m.end()
            }
        }
    }
}

impl<'de> Deserialize<'de> for Untrusted {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Untrusted;

            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str(r#"a string, or {"bytes": "<base64>"}"#)
            }

            fn visit_str<E: de::Error>(self, v: &str) -> Result<Untrusted, E> {
                Ok(Untrusted::from(v))
            }

            fn visit_map<A: MapAccess<'de>>(self, mut m: A) -> Result<Untrusted, A::Error> {
                let mut bytes = None;
                while let Some(k) = m.next_key::<String>()? {
                    if k != "bytes" || bytes.is_some() {
                        return Err(de::Error::unknown_field(&k, &["bytes"]));
                    }
                    let b64: String = m.next_value()?;
                    bytes = Some(
                        base64::engine::general_purpose::STANDARD
                            .decode(b64)
                            .map_err(de::Error::custom)?,
                    );
                }
                bytes
                    .map(Untrusted)
                    .ok_or_else(|| de::Error::missing_field("bytes"))
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_names_stay_bare() {
        assert_eq!(Untrusted::from("cp").human(), "cp");
        assert_eq!(Untrusted::from("données.txt").human(), "données.txt");
        assert_eq!(Untrusted::from("日本").human(), "日本");
    }

    #[test]
    fn the_ascii_fast_path_agrees_with_plain() {
        for b in 0..=u8::MAX {
            let by_char = b.is_ascii() && plain(char::from(b));
            assert_eq!(plain_ascii(b), by_char, "byte {b:#04x}");
        }
    }

    #[test]
    fn hostile_names_are_quoted_and_escaped() {
        let cases: [(&[u8], &str); 9] = [
            (b"\x1b]0;pwned\x07", r#""\x1b]0;pwned\x07""#),
            (b"a\nfake line", r#""a\nfake line""#),
            (b"x ok 1 silent_zero_copy", r#""x ok 1 silent_zero_copy""#),
            (b"\x1b[2J\x1b[H", r#""\x1b[2J\x1b[H""#),
            (b"q\"uote\\", r#""q\"uote\\""#),
            (b"\xff\xfe", r#""\xff\xfe""#),
            ("\u{202e}txt.exe".as_bytes(), r#""\u{202e}txt.exe""#),
            ("\u{9b}31m".as_bytes(), r#""\u{9b}31m""#),
            (b"", r#""""#),
        ];
        for (raw, want) in cases {
            let got = Untrusted::new(raw).human();
            assert_eq!(got, want);
            assert!(
                got.chars().all(|c| !invisible(c)),
                "{got:?} carries an invisible character"
            );
        }
    }

    #[test]
    fn json_keeps_the_exact_bytes() {
        let utf8 = Untrusted::from("a\u{1b}b");
        assert_eq!(
            serde_json::to_string(&utf8).ok().as_deref(),
            Some(r#""a\u001bb""#)
        );
        let raw = Untrusted::new(b"\xffname\n".to_vec());
        let json = serde_json::to_string(&raw).expect("serialise");
        assert_eq!(json, r#"{"bytes":"/25hbWUK"}"#);
        for v in [utf8, raw] {
            let text = serde_json::to_string(&v).expect("serialise");
            let back: Untrusted = serde_json::from_str(&text).expect("round trip");
            assert_eq!(back, v);
        }
        assert!(serde_json::from_str::<Untrusted>(r#"{"text":"x"}"#).is_err());
    }
}
