//! Command-line interface definition (clap). Parsing only: no side effects.

use std::ffi::OsString;
use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

use crate::bpf::ProbeChoice;

/// Watches every copy_file_range(2) call on this machine and explains the
/// ones that silently went wrong: zero-byte copies from procfs, sysfs or
/// tracefs reported as success, short copies (read side or write side),
/// cross-filesystem refusals and errors.
///
/// Needs root (or CAP_BPF + CAP_PERFMON) and a kernel with BTF.
#[derive(Debug, Parser)]
#[command(name = "copytrace", version, propagate_version = true)]
pub struct Cli {
    /// Log level for copytrace's own messages (error, warn, info, debug, trace).
    #[arg(long, global = true, default_value = "info", value_name = "LEVEL")]
    pub log_level: log::LevelFilter,

    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Watch every copy_file_range call on the machine and print one line per call.
    Run(RunArgs),
    /// Run a command and report its copy_file_range calls (and its children's).
    ///
    /// Exits with the command's exit status. Events go to stderr (or --output)
    /// so they do not mix with the command's own output; a summary follows.
    Trace(TraceArgs),
    /// Check that this machine can run copytrace, and say what to do if not.
    Doctor,
}

/// Options shared by commands that attach probes.
#[derive(Debug, Args, Clone)]
pub struct ProbeArgs {
    /// Probe back-end: fentry where allowed, else syscall tracepoints.
    #[arg(long, value_enum, default_value = "auto")]
    pub probe: ProbeChoice,

    /// Print one JSON object per line instead of text.
    #[arg(long)]
    pub json: bool,
}

/// `copytrace run`.
#[derive(Debug, Args)]
pub struct RunArgs {
    #[command(flatten)]
    pub probe: ProbeArgs,

    /// Only calls from this process and its descendants.
    #[arg(long, value_name = "PID")]
    pub pid: Option<u32>,
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

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("copytrace").chain(args.iter().copied()))
    }

    #[test]
    fn run_flags() {
        let cli = parse(&["run", "--json", "--probe", "tracepoint", "--pid", "7"]).expect("parses");
        let Command::Run(r) = cli.command else {
            panic!("not run")
        };
        assert!(r.probe.json);
        assert_eq!(r.probe.probe, ProbeChoice::Tracepoint);
        assert_eq!(r.pid, Some(7));
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
    fn rejects_bad_input() {
        assert!(parse(&["trace"]).is_err(), "trace needs a command");
        assert!(parse(&["run", "--probe", "kprobe"]).is_err());
        assert!(parse(&["run", "--pid", "-3"]).is_err());
        assert!(parse(&["run", "--frobnicate"]).is_err());
        assert!(parse(&["doctor", "--log-level", "loud"]).is_err());
    }
}
