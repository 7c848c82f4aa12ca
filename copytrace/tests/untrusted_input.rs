//! Property tests over everything copytrace parses that someone else wrote:
//! ring-buffer records (the kernel side, or a mismatched eBPF object), the
//! tail socket's client line (any local user in group `copytrace`) and the
//! configuration file. Each must be turned away with an error, never a
//! panic, and whatever it lets through must render as inert output.
//!
//! CI runs a bounded number of cases (`PROPTEST_CASES`, default below);
//! proptest writes any failure it finds to `tests/untrusted_input.proptest-regressions`,
//! which is committed and replayed first on every later run.

use std::cell::RefCell;
use std::mem::offset_of;
use std::path::Path;

use copytrace::enrich::record::{Enrich, Record};
use copytrace::model::event::{decode, DecodeError};
use copytrace::service::config::Config;
use copytrace::sink::render;
use copytrace::tail::filter::Filter;
use copytrace::tail::protocol::{accept_hello, ClientMsg, ServerMsg, MAX_LINE};
use copytrace_common::{Backend, Event, Origin, RECORD_MIN};
use proptest::prelude::*;
use proptest::strategy::ValueTree;

/// Cases per property when `PROPTEST_CASES` is unset.
const CASES: u32 = 2000;

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|c| c.parse().ok())
            .unwrap_or(CASES),
        ..ProptestConfig::default()
    }
}

thread_local! {
    /// One enrichment context for every case (it reads mountinfo and
    /// kallsyms); the symbolizer inside is not Send.
    static ENRICH: RefCell<Enrich> = RefCell::new(Enrich::load());
}

/// Whether a human line is one line that cannot drive a terminal.
fn inert(line: &str) -> Result<(), String> {
    match line
        .chars()
        .find(|c| c.is_control() || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}'))
    {
        Some(c) => Err(format!("{c:?} in {line:?}")),
        None => Ok(()),
    }
}

/// A record-sized buffer whose bytes are random, except that names are
/// often hostile text rather than noise, to reach the escaping paths.
/// Client first lines: raw bytes, and hellos of any version with or
/// without a field or trailing junk, so both answers are exercised.
fn client_line() -> impl Strategy<Value = Vec<u8>> {
    let hello = (
        prop_oneof![Just(1u64), any::<u64>()],
        prop_oneof![Just(String::new()), Just(",\"extra\":1".to_string())],
        prop_oneof![Just(String::new()), Just("\n".to_string()), "[ -~]{0,3}"],
    )
        .prop_map(|(v, field, tail)| {
            format!(r#"{{"type":"hello","data":{{"version":{v}{field}}}}}{tail}"#).into_bytes()
        });
    prop_oneof![proptest::collection::vec(any::<u8>(), 0..256), hello]
}

fn record_bytes() -> impl Strategy<Value = Vec<u8>> {
    let n = std::mem::size_of::<Event>();
    (
        proptest::collection::vec(any::<u8>(), n),
        proptest::collection::vec(
            prop_oneof![
                Just(0x1bu8),
                Just(b'\n'),
                Just(b'\r'),
                Just(0x7f),
                Just(0xe2),
                Just(b'/'),
                any::<u8>()
            ],
            0..64,
        ),
        0..n,
        prop::sample::select(&Backend::ALL[..]),
        prop::sample::select(&[Origin::Syscall, Origin::Kernel][..]),
    )
        .prop_map(|(mut bytes, hostile, at, backend, origin)| {
            let end = (at + hostile.len()).min(bytes.len());
            bytes[at..end].copy_from_slice(&hostile[..end - at]);
            // Valid codes, so that most cases get past decoding into the
            // classifier and the renderers; bad codes have their own test.
            bytes[offset_of!(Event, backend)] = backend as u8;
            bytes[offset_of!(Event, origin)] = origin as u8;
            bytes
        })
}

/// The record strategy reaches rendering: most of its records decode.
#[test]
fn record_strategy_mostly_decodes() {
    let mut runner = proptest::test_runner::TestRunner::deterministic();
    let strategy = record_bytes();
    let decoded = (0..200)
        .filter(|_| {
            strategy
                .new_tree(&mut runner)
                .map(|t| decode(&t.current()).is_ok())
                .unwrap_or(false)
        })
        .count();
    assert!(decoded >= 190, "only {decoded} of 200 records decoded");
}

proptest! {
    #![proptest_config(config())]

    /// Any record the size of an event decodes or is refused; a decoded one
    /// is classified, rendered as one inert line and as JSON that parses.
    #[test]
    fn any_record_decodes_to_inert_output(bytes in record_bytes()) {
        if let Ok(event) = decode(&bytes) {
            let record = ENRICH.with_borrow_mut(|ctx| Record::new(event, ctx).0);
            let human = render::human_line(&record);
            prop_assert!(inert(&human).is_ok(), "{}", inert(&human).unwrap_err());
            if let Some(stack) = &record.stack {
                for l in render::human_stack(stack).lines() {
                    prop_assert!(inert(l).is_ok(), "{}", inert(l).unwrap_err());
                }
            }
            let json = ServerMsg::Call(std::borrow::Cow::Borrowed(&record)).line();
            prop_assert!(!json.contains('\n'));
            prop_assert!(serde_json::from_str::<serde_json::Value>(&json).is_ok(), "{json}");
        }
    }

    /// Bad back-end or origin codes are refused.
    #[test]
    fn bad_codes_are_refused(backend in any::<u8>(), origin in any::<u8>()) {
        let mut bytes = vec![0u8; std::mem::size_of::<Event>()];
        bytes[offset_of!(Event, backend)] = backend;
        bytes[offset_of!(Event, origin)] = origin;
        let valid = Backend::ALL.iter().any(|b| *b as u8 == backend)
            && [Origin::Syscall, Origin::Kernel].iter().any(|o| *o as u8 == origin);
        prop_assert_eq!(decode(&bytes).is_ok(), valid);
    }

    /// Short records are refused with their length; bytes past a whole
    /// event are never read, so they change nothing.
    #[test]
    fn records_of_any_length_are_bounded(bytes in proptest::collection::vec(any::<u8>(), 0..2 * std::mem::size_of::<Event>())) {
        let got = decode(&bytes);
        if bytes.len() < RECORD_MIN {
            prop_assert!(
                matches!(got, Err(DecodeError::Short { got: n, .. }) if n == bytes.len()),
                "{got:?}"
            );
        }
        let whole = std::mem::size_of::<Event>();
        if bytes.len() > whole {
            let prefix = decode(&bytes[..whole]);
            prop_assert_eq!(format!("{got:?}"), format!("{prefix:?}"));
        }
    }

    /// Any client line is accepted exactly when it is a JSON hello of
    /// version 1 (docs/tail-protocol.md, read here with serde_json's untyped
    /// parser); a refusal is one `error` line that reads back.
    #[test]
    fn any_client_line_is_hello_or_error(line in client_line()) {
        let oracle = serde_json::from_slice::<serde_json::Value>(&line).ok();
        let is_hello = oracle.as_ref().is_some_and(|v| {
            v["type"] == "hello"
                && v["data"]["version"] == 1
                && v.as_object().is_some_and(|o| o.len() == 2)
                && v["data"].as_object().is_some_and(|d| d.keys().all(|k| k == "version"))
        });
        match accept_hello(&line) {
            Ok((filter, history)) => {
                prop_assert!(is_hello, "accepted {:?}", String::from_utf8_lossy(&line));
                prop_assert_eq!(filter, Filter::default());
                prop_assert_eq!(history, 0);
            }
            Err(message) => {
                prop_assert!(!is_hello, "refused {:?}: {message}", String::from_utf8_lossy(&line));
                let error = ServerMsg::Error { message: message.clone() }.line();
                prop_assert!(!error.contains('\n'));
                let back: serde_json::Value = serde_json::from_str(&error).expect("error line is JSON");
                prop_assert_eq!(back["data"]["message"].as_str(), Some(message.as_str()));
            }
        }
    }

    /// Hellos with hostile but well-formed JSON parse into bounded filters.
    #[test]
    fn structured_hellos_parse_or_fail_cleanly(
        version in any::<u32>(),
        all in any::<bool>(),
        comm in proptest::collection::vec("\\PC{0,20}", 0..4),
        pid in proptest::collection::vec(any::<i64>(), 0..4),
        verdict in proptest::collection::vec(prop_oneof![Just("ok".to_string()), Just("silent_zero_copy".to_string()), "[a-z_]{0,12}"], 0..3),
        history in any::<u64>(),
        extra in proptest::option::of("[a-z]{1,8}"),
    ) {
        let mut data = serde_json::json!({
            "version": version,
            "filter": {"all": all, "comm": comm, "pid": pid, "verdict": verdict},
            "history": history,
        });
        if let Some(k) = &extra {
            data[k.as_str()] = serde_json::json!(1);
        }
        let line = serde_json::json!({"type": "hello", "data": data}).to_string();
        prop_assume!(line.len() < MAX_LINE);
        if let Ok(ClientMsg::Hello { version: v, .. }) = serde_json::from_str::<ClientMsg>(&line) {
            prop_assert_eq!(v, version);
            // Unknown keys are refused, so a typo cannot silently widen a filter.
            prop_assert!(extra.as_deref().is_none_or(|k| ["version", "filter", "history"].contains(&k)));
        }
    }

    /// Any text as a config file is a config or a one-line error.
    #[test]
    fn any_config_text_is_config_or_one_line_error(text in "\\PC{0,200}") {
        if let Err(e) = Config::parse(&text, Path::new("fuzz.toml")) {
            prop_assert!(!e.to_string().contains('\n'), "{e}");
        }
    }

    /// Known keys with values of any type: a config or a one-line error that
    /// names the file.
    #[test]
    fn known_keys_with_any_values(
        key in prop_oneof![
            Just("probe"), Just("log_level"), Just("print"), Just("json"), Just("pid"), Just("stacks"),
            Just("metrics.enabled"), Just("metrics.listen"), Just("metrics.unit_label"),
            Just("metrics.unit_top"), Just("tail.enabled"), Just("tail.socket"),
            Just("tail.group"), Just("tail.history"), Just("tail.client_queue"),
        ],
        value in prop_oneof![
            any::<i64>().prop_map(|v| v.to_string()),
            any::<bool>().prop_map(|v| v.to_string()),
            "\\PC{0,30}".prop_map(|s| format!("{s:?}")),
            Just("[1, 2]".to_string()),
            Just("{ a = 1 }".to_string()),
        ],
    ) {
        let text = match key.split_once('.') {
            Some((table, k)) => format!("[{table}]\n{k} = {value}\n"),
            None => format!("{key} = {value}\n"),
        };
        if let Err(e) = Config::parse(&text, Path::new("fuzz.toml")) {
            let msg = e.to_string();
            prop_assert!(!msg.contains('\n') && msg.starts_with("config fuzz.toml: "), "{msg}");
        }
    }
}
