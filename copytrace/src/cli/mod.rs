//! Command-line interface definition (clap). Parsing only: no side effects.

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::model::backend::ProbeChoice;
use crate::model::classify::Verdict;
use crate::service::config::{Overrides, Source};
use crate::sink::console::Print;

/// Watches every copy_file_range(2) call on this machine and explains the
/// ones that silently went wrong: zero-byte copies from procfs, sysfs or
/// tracefs reported as success, short copies (read side or write side),
/// cross-filesystem refusals and errors.
///
/// Needs root (or CAP_BPF + CAP_PERFMON) and a kernel with BTF.
#[derive(Debug, Parser)]
#[command(name = "copytrace", version = crate::VERSION, propagate_version = true)]
pub struct Cli {
    /// Log level for copytrace's own messages (off, error, warn, info, debug, trace) [default: info].
    #[arg(long, global = true, value_name = "LEVEL")]
    pub log_level: Option<log::LevelFilter>,

    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// The daemon: watch every copy_file_range call on the machine, print
    /// calls, serve Prometheus metrics and the live tail socket.
    ///
    /// Reads /etc/copytrace/copytrace.toml (or --config); flags override
    /// its keys. SIGHUP reloads it; SIGTERM or SIGINT detach and exit 0.
    Run(RunArgs),
    /// Run a command and report its copy_file_range calls (and its children's).
    ///
    /// Exits with the command's exit status. Events go to stderr (or --output)
    /// so they do not mix with the command's own output; a summary follows.
    Trace(TraceArgs),
    /// Print suspicious calls as they happen, from a running `copytrace run`.
    ///
    /// Connects to the daemon's socket (root or the socket's group). Filters
    /// combine with AND; a filter given several times matches any of its values.
    Tail(TailArgs),
    /// Check that this machine can run copytrace, and say what to do if not.
    Doctor(DoctorArgs),
    /// Write man pages and shell completions into DIR (for packaging).
    #[command(hide = true)]
    GenerateAssets(GenerateArgs),
}

/// `copytrace doctor`.
#[derive(Debug, Args)]
pub struct DoctorArgs {
    /// One JSON object instead of text.
    #[arg(long)]
    pub json: bool,
}

/// `copytrace generate-assets`.
#[derive(Debug, Args)]
pub struct GenerateArgs {
    /// Where to write man/*.1 and completions/*.
    #[arg(value_name = "DIR")]
    pub dir: PathBuf,
}

/// Options shared by commands that attach probes.
#[derive(Debug, Args, Clone)]
pub struct ProbeArgs {
    /// Probe back-end: fentry where allowed, else syscall tracepoints.
    #[arg(long, value_enum, default_value_t = ProbeChoice::Auto)]
    pub probe: ProbeChoice,

    /// Print one JSON object per line instead of text.
    #[arg(long)]
    pub json: bool,
}

/// `copytrace run`.
#[derive(Debug, Args, Default)]
pub struct RunArgs {
    /// Configuration file [default: /etc/copytrace/copytrace.toml, defaults if absent].
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Validate the configuration (file and flags), print it, and exit.
    #[arg(long)]
    pub check_config: bool,

    /// Probe back-end (config: probe) [default: auto].
    #[arg(long, value_enum)]
    pub probe: Option<ProbeChoice>,

    /// Print one JSON object per line instead of text (config: json).
    #[arg(long)]
    pub json: bool,

    /// Which calls to print on stdout (config: print) [default: all when stdout is a terminal,
    /// suspicious otherwise: the service's journal, a pipe].
    #[arg(long, value_enum)]
    pub print: Option<Print>,

    /// Only calls from this process and its descendants (config: pid).
    #[arg(long, value_name = "PID")]
    pub pid: Option<u32>,

    /// Serve Prometheus metrics on ADDR (config: metrics.listen) [default: 127.0.0.1:9977].
    #[arg(long, value_name = "ADDR")]
    pub metrics_listen: Option<SocketAddr>,

    /// Do not serve metrics (config: metrics.enabled = false).
    #[arg(long)]
    pub no_metrics: bool,

    /// Tail socket path (config: tail.socket) [default: /run/copytrace/copytrace.sock].
    #[arg(long, value_name = "PATH")]
    pub socket: Option<PathBuf>,

    /// Group allowed to use the tail socket besides root (config: tail.group) [default: copytrace].
    #[arg(long, value_name = "GROUP")]
    pub socket_group: Option<String>,

    /// Suspicious calls kept for `tail --history` (config: tail.history) [default: 1000].
    #[arg(long, value_name = "N")]
    pub history: Option<usize>,

    /// Do not serve the tail socket (config: tail.enabled = false).
    #[arg(long)]
    pub no_tail: bool,

    /// Do not take the user stack of suspicious calls (config: stacks = false).
    #[arg(long)]
    pub no_stacks: bool,
}

impl RunArgs {
    /// The configuration file these flags name.
    pub fn source(&self) -> Source {
        Source::new(self.config.clone())
    }

    /// The keys these flags set, over the file's; `log_level` is the global `--log-level`.
    pub fn overrides(&self, log_level: Option<log::LevelFilter>) -> Overrides {
        Overrides {
            log_level,
            probe: self.probe,
            json: self.json.then_some(true),
            print: self.print,
            pid: self.pid,
            metrics_enabled: self.no_metrics.then_some(false),
            metrics_listen: self.metrics_listen,
            tail_enabled: self.no_tail.then_some(false),
            tail_socket: self.socket.clone(),
            tail_group: self.socket_group.clone(),
            tail_history: self.history,
            stacks: self.no_stacks.then_some(false),
        }
    }
}

/// `copytrace trace`.
#[derive(Debug, Args)]
pub struct TraceArgs {
    #[command(flatten)]
    pub probe: ProbeArgs,

    /// Write events and the summary to FILE instead of stderr.
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,

    /// The command to run, after `--`.
    #[arg(required = true, last = true, value_name = "CMD")]
    pub command: Vec<OsString>,
}

/// `copytrace tail`.
#[derive(Debug, Args)]
pub struct TailArgs {
    /// Daemon socket.
    #[arg(long, value_name = "PATH", default_value = crate::tail::config::DEFAULT_SOCKET)]
    pub socket: PathBuf,

    /// Every call, not only suspicious ones.
    #[arg(long)]
    pub all: bool,

    /// Only this process id (repeatable).
    #[arg(long, value_name = "PID")]
    pub pid: Vec<u32>,

    /// Only this command name (repeatable).
    #[arg(long, value_name = "COMM")]
    pub comm: Vec<String>,

    /// Only this cgroup v2 id (repeatable).
    #[arg(long, value_name = "ID")]
    pub cgroup: Vec<u64>,

    /// Only this verdict (repeatable).
    #[arg(long, value_enum, value_name = "VERDICT")]
    pub verdict: Vec<Verdict>,

    /// Only calls touching this filesystem, source or destination (repeatable).
    #[arg(long, value_name = "FS")]
    pub fs: Vec<String>,

    /// Only calls from this systemd unit (repeatable): `nginx.service`, or a
    /// unit of a user's manager such as `app-foo.scope`.
    #[arg(long, value_name = "UNIT")]
    pub unit: Vec<String>,

    /// Show the named user-space stack under each suspicious call.
    #[arg(long)]
    pub stack: bool,

    /// First replay up to N suspicious calls the daemon kept.
    #[arg(long, value_name = "N", default_value_t = 0)]
    pub history: usize,

    /// Replay every suspicious call the daemon kept (as --history with no limit).
    #[arg(long, conflicts_with = "history")]
    pub since_start: bool,

    /// One JSON object per line (see docs/tail-protocol.md).
    #[arg(long)]
    pub json: bool,

    /// Reconnect when the daemon restarts instead of exiting.
    #[arg(long)]
    pub follow: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::backend::Backend;
    use clap::{CommandFactory as _, ValueEnum as _};

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("copytrace").chain(args.iter().copied()))
    }

    #[test]
    fn run_flags() {
        let cli = parse(&[
            "run",
            "--json",
            "--probe",
            "tracepoint",
            "--pid",
            "7",
            "--metrics-listen",
            "127.0.0.1:1",
            "--print",
            "suspicious",
            "--no-tail",
        ])
        .expect("parses");
        let Command::Run(r) = cli.command else {
            panic!("not run")
        };
        assert!(r.json);
        assert_eq!(r.probe, Some(ProbeChoice::Only(Backend::Tracepoint)));
        assert_eq!(r.pid, Some(7));
        assert_eq!(r.print, Some(Print::Suspicious));
        assert_eq!(r.metrics_listen.map(|a| a.port()), Some(1));
        assert!(r.no_tail);
        assert!(parse(&["run", "--metrics-listen", "nowhere"]).is_err());
    }

    #[test]
    fn trace_takes_command_after_dashes() {
        let cli = parse(&["trace", "-o", "/tmp/x", "--", "cp", "-v", "a", "b"]).expect("parses");
        let Command::Trace(t) = cli.command else {
            panic!("not trace")
        };
        assert_eq!(t.command, vec!["cp", "-v", "a", "b"]);
        assert_eq!(t.output.as_deref(), Some(std::path::Path::new("/tmp/x")));
        assert_eq!(t.probe.probe, ProbeChoice::Auto);
    }

    #[test]
    fn tail_filters_repeat() {
        let cli = parse(&[
            "tail",
            "--pid",
            "1",
            "--pid",
            "2",
            "--verdict",
            "error",
            "--since-start",
            "--json",
        ])
        .expect("parses");
        let Command::Tail(t) = cli.command else {
            panic!("not tail")
        };
        assert_eq!(t.pid, vec![1, 2]);
        assert_eq!(t.verdict, vec![Verdict::Error]);
        assert!(t.since_start && t.json && !t.follow);
        assert_eq!(t.socket, PathBuf::from("/run/copytrace/copytrace.sock"));
        assert!(parse(&["tail", "--history", "3", "--since-start"]).is_err());
    }

    #[test]
    fn rejects_bad_input() {
        assert!(parse(&["trace"]).is_err(), "trace needs a command");
        assert!(parse(&["run", "--probe", "kprobe"]).is_err());
        assert!(parse(&["run", "--pid", "-3"]).is_err());
        assert!(parse(&["run", "--frobnicate"]).is_err());
        assert!(parse(&["doctor", "--log-level", "loud"]).is_err());
    }

    /// Every `[default: …]` the help shows for a flag with a config key is
    /// what the configuration holds when neither file nor flag sets it.
    #[test]
    fn help_defaults_are_the_configuration_defaults() {
        use crate::service::config::{Config, DEFAULT_PATH};
        let cmd = Cli::command();
        let run = cmd.find_subcommand("run").expect("run");
        let mut checked = 0;
        for arg in run.get_arguments() {
            let help = arg.get_help().map(|h| h.to_string()).unwrap_or_default();
            let help = help.replace('\n', " ");
            let Some(default) = help.split("[default: ").nth(1) else {
                continue;
            };
            let default = default.split(']').next().unwrap_or_default();
            if arg.get_id() == "config" {
                assert!(default.starts_with(DEFAULT_PATH), "{help}");
                continue;
            }
            if arg.get_id() == "print" {
                // Decided at start by the terminal: both cases are named.
                for case in [true, false] {
                    let p = Print::default_for(case);
                    let name = p.to_possible_value().expect("value").get_name().to_string();
                    assert!(default.contains(&name), "{help} lacks {name}");
                }
                checked += 1;
                continue;
            }
            let key = help
                .split("(config: ")
                .nth(1)
                .and_then(|k| k.split(')').next())
                .unwrap_or_else(|| panic!("{help}: a default without a config key"));
            let value = if default.parse::<i64>().is_ok() || default == "true" || default == "false"
            {
                default.to_string()
            } else {
                format!("{default:?}")
            };
            let text = match key.split_once('.') {
                Some((table, k)) => format!("[{table}]\n{k} = {value}\n"),
                None => format!("{key} = {value}\n"),
            };
            let parsed = Config::parse(&text, std::path::Path::new("help"))
                .unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(
                parsed,
                Config::default(),
                "--{}: help says {default}",
                arg.get_id()
            );
            checked += 1;
        }
        assert!(checked >= 6, "only {checked} defaults found in run's help");
        let global = cmd
            .get_arguments()
            .find(|a| a.get_id() == "log_level")
            .and_then(|a| a.get_help())
            .map(|h| h.to_string())
            .unwrap_or_default();
        assert!(
            global.contains(&format!("[default: {}]", Config::default().log_level)),
            "{global}"
        );
    }
}
