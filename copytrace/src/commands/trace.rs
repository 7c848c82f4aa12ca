//! `copytrace trace`: runs a command under the probes and reports its calls.

use std::borrow::Cow;
use std::fs::File;
use std::io::{self, Write};
use std::os::unix::process::ExitStatusExt;

use tokio::signal::unix::{signal, SignalKind};

use crate::cli::TraceArgs;
use crate::pipeline::{Watch, WatchError};
use crate::sink::console::{Console, Print};
use crate::sink::render::Format;
use crate::sink::wire::ServerMsg;

/// Errors from the commands.
#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    /// The watch pipeline failed.
    #[error(transparent)]
    Watch(#[from] WatchError),
    /// Signal handlers could not be installed.
    #[error("cannot install signal handlers")]
    Signals(#[source] io::Error),
    /// The output file could not be created.
    #[error("cannot create {path}")]
    Output {
        path: String,
        #[source]
        source: io::Error,
    },
    /// The traced command could not be started.
    #[error("cannot run {command}")]
    Spawn {
        command: String,
        #[source]
        source: io::Error,
    },
    /// Writing events failed (other than a closed pipe).
    #[error("writing output failed")]
    Write(#[source] io::Error),
}

fn exit_code(status: std::process::ExitStatus) -> i32 {
    status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(1)
}

/// `copytrace trace -- CMD`: runs CMD, reports its calls, returns its exit code.
pub async fn trace(args: TraceArgs) -> Result<i32, CommandError> {
    crate::bpf::require_privileges().map_err(WatchError::Load)?;
    // Orphaned grandchildren are reparented to us, so the kernel-side
    // ancestor walk still finds our pid above them.
    // SAFETY: prctl with integer arguments.
    unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
    // Ctrl-C reaches the traced command through the process group; we only
    // need to outlive it to print the summary.
    let mut sigint = signal(SignalKind::interrupt()).map_err(CommandError::Signals)?;
    let out: Box<dyn Write> = match &args.output {
        Some(path) => Box::new(File::create(path).map_err(|source| CommandError::Output {
            path: path.display().to_string(),
            source,
        })?),
        None => Box::new(io::stderr()),
    };
    let mut watch = Watch::start(crate::pipeline::load_options(
        args.probe.probe,
        std::process::id(),
    ))?;
    log::debug!("attached {} back-end", watch.backend().as_str());

    let (program, rest) = args
        .command
        .split_first()
        .ok_or_else(|| CommandError::Spawn {
            command: String::new(),
            source: io::Error::new(io::ErrorKind::InvalidInput, "no command given"),
        })?;
    // Every call of the command is reported, from its very first: the
    // switch is on before the command exists (a fast command's first copy
    // otherwise raced it and went uncounted in the output).
    let _all = watch.report_all().map(|r| r.hold());
    let mut child = tokio::process::Command::new(program)
        .args(rest)
        .spawn()
        .map_err(|source| CommandError::Spawn {
            command: program.to_string_lossy().into_owned(),
            source,
        })?;

    let format = if args.probe.json {
        Format::Json
    } else {
        Format::Human
    };
    let mut sink = Console::new(io::BufWriter::new(out), format, Print::All, true);
    let status = loop {
        tokio::select! {
            res = watch.next_batch(&mut sink) => res?,
            status = child.wait() => break status,
            _ = sigint.recv() => {}
        }
    };
    // Every call of the child completed before it exited, so its events are
    // already in the ring buffer.
    watch.finish(&mut sink).await;
    let mut summary = sink.summary.take().unwrap_or_default();
    summary.lost = watch.lost_events();
    match sink.format {
        Format::Json => sink.write_line(&ServerMsg::Summary(Cow::Owned(summary)).line()),
        Format::Human => sink.write_line(&summary.human()),
    }
    sink.finish().map_err(CommandError::Write)?;
    let status = status.map_err(|source| CommandError::Spawn {
        command: program.to_string_lossy().into_owned(),
        source,
    })?;
    Ok(exit_code(status))
}
