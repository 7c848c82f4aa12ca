//! The `copytrace` binary: parses arguments, dispatches, maps results to exit codes.

use std::io::Write as _;
use std::process::ExitCode;

use clap::Parser as _;
use copytrace::cli::{Cli, Command, TailArgs};
use copytrace::commands::{assets, doctor, trace};
use copytrace::error_chain;
use copytrace::service::daemon;
use copytrace::tail::client::{self, TailOptions};
use copytrace::tail::filter::Filter;

/// Exit code for any copytrace error (bad input, missing privileges, load failure).
const EXIT_ERROR: u8 = 2;

fn init_logging(level: log::LevelFilter) {
    env_logger::Builder::new()
        .filter_level(level)
        .parse_env("COPYTRACE_LOG")
        // One "copytrace: level: message" line each: journald-friendly, no colour.
        .format(|buf, rec| {
            writeln!(
                buf,
                "copytrace: {}: {}",
                rec.level().as_str().to_lowercase(),
                rec.args()
            )
        })
        .init();
}

fn fail(err: &(dyn std::error::Error + 'static)) -> ExitCode {
    log::error!("{}", error_chain(err));
    ExitCode::from(EXIT_ERROR)
}

fn tail_options(a: TailArgs) -> TailOptions {
    TailOptions {
        socket: a.socket,
        filter: Filter {
            all: a.all,
            pid: a.pid,
            comm: a.comm,
            cgroup: a.cgroup,
            verdict: a.verdict,
            fs: a.fs,
            unit: a.unit,
        },
        stack: a.stack,
        history: if a.since_start { usize::MAX } else { a.history },
        json: a.json,
        follow: a.follow,
    }
}

fn main() -> ExitCode {
    // The daemon's symbolizer process: no CLI, no logging, no runtime.
    if std::env::args_os().nth(1).as_deref()
        == Some(std::ffi::OsStr::new(
            copytrace::enrich::symbolizer::client::WORKER_COMMAND,
        ))
    {
        return copytrace::enrich::symbolizer::worker::main();
    }
    let cli = Cli::parse();
    // `run` may take its level from the config file; the logger starts open
    // and the daemon narrows it once the config is read.
    let level = match (&cli.command, cli.log_level) {
        (_, Some(l)) => l,
        (Command::Run(_), None) => log::LevelFilter::Trace,
        (_, None) => log::LevelFilter::Info,
    };
    init_logging(level);
    if !matches!(cli.command, Command::Run(_)) || cli.log_level.is_some() {
        log::set_max_level(level);
    } else {
        log::set_max_level(log::LevelFilter::Info);
    }
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail(&e),
    };
    match cli.command {
        Command::Run(args) => match rt.block_on(daemon::run(
            args.source(),
            args.overrides(cli.log_level),
            args.check_config,
        )) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => fail(&e),
        },
        Command::Trace(args) => match rt.block_on(trace::trace(args)) {
            Ok(code) => ExitCode::from(code.clamp(0, 255) as u8),
            Err(e) => fail(&e),
        },
        Command::Tail(args) => match rt.block_on(client::run(tail_options(args))) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => fail(&e),
        },
        Command::GenerateAssets(args) => match assets::generate(&args.dir) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => fail(&e),
        },
        Command::Doctor(args) => {
            let report = rt.block_on(async { doctor::checks() });
            #[allow(clippy::print_stdout, reason = "the report is doctor's product")]
            if args.json {
                println!("{}", report.json());
            } else {
                print!("{}", report.text());
            }
            if report.usable.is_some() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(EXIT_ERROR)
            }
        }
    }
}
