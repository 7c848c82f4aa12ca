//! The daemon's configuration: a TOML file, every key overridable by a flag.
//!
//! Unknown keys and bad values are errors naming the key; a missing default
//! file means defaults, a missing explicit `--config` file is an error.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::model::backend::ProbeChoice;
use crate::sink::console::Print;
use crate::tail::config::TailConfig;

/// Where `copytrace run` looks for its configuration by default.
pub const DEFAULT_PATH: &str = "/etc/copytrace/copytrace.toml";

/// Default metrics listen address.
pub const DEFAULT_METRICS_LISTEN: &str = "127.0.0.1:9977";

/// Most units `metrics.unit_top` may give a label value of their own.
pub const MAX_UNIT_TOP: usize = 100;

/// Errors from reading configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid configuration; the message names the key.
    #[error("config {path}: {message}")]
    Invalid { path: PathBuf, message: String },
    /// A flag's value is out of bounds; the message names the key it sets.
    #[error("command line: {message}")]
    Flags { message: String },
}

/// What `copytrace run`'s flags set. They are applied over the file's keys
/// at start and again after every reload, so a flag always wins.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Overrides {
    /// `log_level`.
    pub log_level: Option<log::LevelFilter>,
    /// `probe`.
    pub probe: Option<ProbeChoice>,
    /// `json`.
    pub json: Option<bool>,
    /// `print`.
    pub print: Option<Print>,
    /// `pid`.
    pub pid: Option<u32>,
    /// `metrics.enabled`.
    pub metrics_enabled: Option<bool>,
    /// `metrics.listen`.
    pub metrics_listen: Option<SocketAddr>,
    /// `tail.enabled`.
    pub tail_enabled: Option<bool>,
    /// `tail.socket`.
    pub tail_socket: Option<PathBuf>,
    /// `tail.group`.
    pub tail_group: Option<String>,
    /// `tail.history`.
    pub tail_history: Option<usize>,
    /// `stacks`.
    pub stacks: Option<bool>,
}

impl Overrides {
    /// Sets every key a flag gave.
    pub fn apply(&self, c: &mut Config) {
        fn set<T: Clone>(key: &mut T, flag: &Option<T>) {
            if let Some(v) = flag {
                *key = v.clone();
            }
        }
        if let Some(l) = self.log_level {
            c.log_level = l.to_string().to_lowercase();
        }
        set(&mut c.probe, &self.probe);
        set(&mut c.json, &self.json);
        set(&mut c.print, &self.print.map(Some));
        set(&mut c.pid, &self.pid);
        set(&mut c.metrics.enabled, &self.metrics_enabled);
        set(&mut c.metrics.listen, &self.metrics_listen);
        set(&mut c.tail.enabled, &self.tail_enabled);
        set(&mut c.tail.socket, &self.tail_socket);
        set(&mut c.tail.group, &self.tail_group);
        set(&mut c.tail.history, &self.tail_history);
        set(&mut c.stacks, &self.stacks);
    }
}

/// Where the configuration comes from, so a reload reads the same file.
#[derive(Debug, Clone, PartialEq)]
pub struct Source {
    path: PathBuf,
    explicit: bool,
}

impl Source {
    /// `--config FILE` (which must exist), or the default path (which may not).
    pub fn new(flag: Option<PathBuf>) -> Self {
        match flag {
            Some(path) => Self {
                path,
                explicit: true,
            },
            None => Self {
                path: PathBuf::from(DEFAULT_PATH),
                explicit: false,
            },
        }
    }

    /// The file, then the flags on top, held to the same bounds.
    pub fn load(&self, overrides: &Overrides) -> Result<Config, ConfigError> {
        let mut c = Config::load(&self.path, self.explicit)?;
        overrides.apply(&mut c);
        c.validate()
            .map_err(|message| ConfigError::Flags { message })?;
        Ok(c)
    }
}

/// Complete daemon configuration.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Probe back-end.
    pub probe: ProbeChoice,
    /// Log level of copytrace's own messages.
    pub log_level: String,
    /// Which calls `run` prints on stdout; unset, [`Print::default_for`]
    /// decides by whether stdout is a terminal.
    pub print: Option<Print>,
    /// Print JSON Lines instead of text.
    pub json: bool,
    /// Only this process and its descendants (0: all).
    pub pid: u32,
    /// Take the user stack of suspicious calls (about a microsecond each).
    pub stacks: bool,
    /// Prometheus endpoint.
    pub metrics: MetricsConfig,
    /// Live tail socket.
    pub tail: TailConfig,
}

/// `[metrics]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Serve /metrics at all.
    pub enabled: bool,
    /// Address to listen on.
    pub listen: SocketAddr,
    /// Label call counts with the caller's systemd unit (off by default:
    /// it multiplies the series, see docs/metrics.md).
    pub unit_label: bool,
    /// Units that get a label value of their own (the busiest first, kept
    /// once given); the rest are counted under `other`.
    pub unit_top: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            probe: ProbeChoice::Auto,
            log_level: "info".into(),
            print: None,
            json: false,
            pid: 0,
            stacks: true,
            metrics: MetricsConfig::default(),
            tail: TailConfig::default(),
        }
    }
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            listen: DEFAULT_METRICS_LISTEN
                .parse()
                .unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 9977))),
            unit_label: false,
            unit_top: 10,
        }
    }
}

impl Config {
    /// Parses TOML text; `origin` names the source in errors.
    pub fn parse(text: &str, origin: &Path) -> Result<Self, ConfigError> {
        let cfg: Config = toml::from_str(text).map_err(|e| ConfigError::Invalid {
            path: origin.to_path_buf(),
            message: e.message().to_string() + &key_hint(text, e.span()),
        })?;
        cfg.validate().map_err(|message| ConfigError::Invalid {
            path: origin.to_path_buf(),
            message,
        })?;
        Ok(cfg)
    }

    /// Reads `path`; with `explicit == false` a missing file means defaults.
    pub fn load(path: &Path, explicit: bool) -> Result<Self, ConfigError> {
        match std::fs::read_to_string(path) {
            Ok(text) => Self::parse(&text, path),
            Err(e) if !explicit && e.kind() == std::io::ErrorKind::NotFound => Ok(Self::default()),
            Err(source) => Err(ConfigError::Read {
                path: path.to_path_buf(),
                source,
            }),
        }
    }

    fn validate(&self) -> Result<(), String> {
        if self.log_level.parse::<log::LevelFilter>().is_err() {
            return Err(format!(
                "log_level: {:?} is not one of off, error, warn, info, debug, trace",
                self.log_level
            ));
        }
        if self.metrics.unit_top > MAX_UNIT_TOP {
            return Err(format!(
                "metrics.unit_top: {} is more than {MAX_UNIT_TOP} (each unit multiplies the series)",
                self.metrics.unit_top
            ));
        }
        self.tail.validate()
    }

    /// Which calls to print: the key, or the default for this stdout.
    pub fn print(&self) -> Print {
        use std::io::IsTerminal as _;
        self.print
            .unwrap_or_else(|| Print::default_for(std::io::stdout().is_terminal()))
    }

    /// The log level as a filter (validated at parse time).
    pub fn level(&self) -> log::LevelFilter {
        self.log_level.parse().unwrap_or(log::LevelFilter::Info)
    }
}

/// " (at line N)" for a parse error span, so the message points at the key.
fn key_hint(text: &str, span: Option<std::ops::Range<usize>>) -> String {
    span.map(|s| {
        let line = text[..s.start.min(text.len())].matches('\n').count() + 1;
        format!(" (line {line})")
    })
    .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tail::config::{MAX_CLIENT_QUEUE, MAX_HISTORY};

    #[test]
    fn queue_and_history_sizes_are_bounded() {
        // tokio's broadcast channel allocates every slot at start-up.
        let huge = parse("[tail]\nclient_queue = 4096000000\n");
        assert!(huge.is_err_and(|e| e.contains("tail.client_queue")));
        let history = parse(&format!("[tail]\nhistory = {}\n", MAX_HISTORY + 1));
        assert!(history.is_err_and(|e| e.contains("tail.history")));
        assert!(parse(&format!("[tail]\nclient_queue = {MAX_CLIENT_QUEUE}\n")).is_ok());
    }

    fn parse(t: &str) -> Result<Config, String> {
        Config::parse(t, Path::new("test.toml")).map_err(|e| e.to_string())
    }

    #[test]
    fn empty_file_is_defaults() {
        assert_eq!(parse(""), Ok(Config::default()));
    }

    #[test]
    fn reads_every_key() {
        let c = parse(
            r#"
probe = "tracepoint"
log_level = "debug"
print = "suspicious"
json = true
pid = 42
[metrics]
enabled = false
listen = "127.0.0.1:1234"
[tail]
socket = "/tmp/x.sock"
group = "wheel"
history = 5
client_queue = 7
"#,
        )
        .expect("valid");
        assert_eq!(
            c.probe,
            ProbeChoice::Only(crate::model::backend::Backend::Tracepoint)
        );
        assert_eq!(c.print, Some(Print::Suspicious));
        assert_eq!(c.pid, 42);
        assert!(!c.metrics.enabled);
        assert_eq!(c.metrics.listen.port(), 1234);
        assert_eq!(c.tail.history, 5);
        assert_eq!(c.tail.client_queue, 7);
    }

    #[test]
    fn errors_name_the_key() {
        let e = parse("[metrics]\nlisten = \"nowhere\"\n").expect_err("bad address");
        assert!(e.contains("listen") || e.contains("line 2"), "{e}");
        let e = parse("colour = true\n").expect_err("unknown key");
        assert!(e.contains("colour"), "{e}");
        let e = parse("[tail]\nsockett = \"/x\"\n").expect_err("unknown key");
        assert!(e.contains("sockett"), "{e}");
        let e = parse("log_level = \"loud\"\n").expect_err("bad level");
        assert!(e.starts_with("config test.toml: log_level:"), "{e}");
        let e = parse("probe = \"kprobe\"\n").expect_err("bad probe");
        assert!(e.contains("kprobe"), "{e}");
    }

    #[test]
    fn missing_default_file_is_defaults_but_explicit_is_an_error() {
        let p = Path::new("/nonexistent/copytrace.toml");
        assert_eq!(Config::load(p, false).ok(), Some(Config::default()));
        assert!(Config::load(p, true).is_err());
    }

    /// The shipped file and the README's example set every key to its
    /// default, so installing either changes nothing.
    #[test]
    fn shipped_and_documented_files_are_the_defaults() {
        let shipped = include_str!("../../../deploy/copytrace.toml");
        assert_eq!(
            parse(shipped),
            Ok(Config::default()),
            "deploy/copytrace.toml"
        );
        let readme = include_str!("../../../README.md");
        let block = readme
            .split("```toml\n")
            .nth(1)
            .and_then(|b| b.split("```").next())
            .expect("README has a toml block");
        assert_eq!(parse(block), Ok(Config::default()), "README.md");
    }

    /// Flags win over the file's keys, leave the others alone, and are
    /// held to the file's bounds.
    #[test]
    fn flags_override_the_file_within_its_bounds() {
        let dir = std::env::temp_dir().join(format!("copytrace-flags-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("mkdir");
        let file = dir.join("c.toml");
        std::fs::write(
            &file,
            "print = \"none\"\n[tail]\nhistory = 5\ngroup = \"g\"\n",
        )
        .expect("write");
        let source = Source::new(Some(file));
        let flags = Overrides {
            tail_history: Some(7),
            metrics_enabled: Some(false),
            ..Overrides::default()
        };
        let c = source.load(&flags).expect("loads");
        assert_eq!((c.tail.history, c.tail.group.as_str()), (7, "g"));
        assert_eq!(c.print, Some(Print::None));
        assert!(!c.metrics.enabled);
        let huge = Overrides {
            tail_history: Some(MAX_HISTORY + 1),
            ..Overrides::default()
        };
        let e = source.load(&huge).expect_err("out of bounds");
        assert!(e.to_string().contains("tail.history"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
