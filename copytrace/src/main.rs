//! The `copytrace` binary: parses arguments, dispatches, maps results to exit codes.

use std::io::Write as _;
use std::process::ExitCode;

use clap::Parser as _;
use copytrace::cli::{Cli, Command};
use copytrace::{commands, doctor, error_chain};

/// Exit code for any copytrace error (bad input, missing privileges, load failure).
const EXIT_ERROR: u8 = 2;

fn init_logging(level: log::LevelFilter) {
    env_logger::Builder::new()
        .filter_level(level)
        .parse_env("COPYTRACE_LOG")
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

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.log_level);
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail(&e),
    };
    match cli.command {
        Command::Run(args) => match rt.block_on(commands::run(args)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => fail(&e),
        },
        Command::Trace(args) => match rt.block_on(commands::trace(args)) {
            Ok(code) => ExitCode::from(code.clamp(0, 255) as u8),
            Err(e) => fail(&e),
        },
        Command::Doctor => {
            let (checks, usable) = rt.block_on(async { doctor::checks() });
            print!("{}", doctor::report(&checks));
            if usable.is_some() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(EXIT_ERROR)
            }
        }
    }
}
