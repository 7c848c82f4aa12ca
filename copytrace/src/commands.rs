//! `copytrace run` and `copytrace trace`: wiring of the watch pipeline to
//! output, signals and child processes.

use std::fs::File;
use std::io::{self, Write};
use std::os::unix::process::ExitStatusExt;

use tokio::signal::unix::{signal, SignalKind};

use crate::bpf::LoadOptions;
use crate::cli::{RunArgs, TraceArgs};
use crate::record::Record;
use crate::render::{self, Format};
use crate::summary::Summary;
use crate::watch::{RecordSink, Watch, WatchError};

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

fn format_of(json: bool) -> Format {
    if json {
        Format::Json
    } else {
        Format::Human
    }
}

/// Writes records as lines, flushed per batch, optionally totalling them;
/// remembers the first write error (EPIPE ends output quietly).
struct LineSink<W: Write> {
    out: W,
    format: Format,
    error: Option<io::Error>,
    summary: Option<Summary>,
}

impl<W: Write> LineSink<W> {
    fn new(out: W, json: bool, summary: bool) -> Self {
        Self {
            out,
            format: format_of(json),
            error: None,
            summary: summary.then(Summary::default),
        }
    }

    fn write_line(&mut self, line: &str) {
        if self.error.is_none() {
            if let Err(e) = writeln!(self.out, "{line}") {
                self.error = Some(e);
            }
        }
    }

    fn flush(&mut self) -> Result<(), CommandError> {
        if let Some(e) = self.error.take().or_else(|| self.out.flush().err()) {
            if e.kind() != io::ErrorKind::BrokenPipe {
                return Err(CommandError::Write(e));
            }
        }
        Ok(())
    }
}

/// `copytrace run`: prints every call until SIGINT or SIGTERM.
pub async fn run(args: RunArgs) -> Result<(), CommandError> {
    let mut sigint = signal(SignalKind::interrupt()).map_err(CommandError::Signals)?;
    let mut sigterm = signal(SignalKind::terminate()).map_err(CommandError::Signals)?;
    let mut watch = Watch::start(LoadOptions {
        probe: args.probe.probe,
        follow_tgid: args.pid.unwrap_or(0),
    })?;
    log::info!(
        "attached {} back-end{}; watching copy_file_range{}",
        watch.attached(),
        watch
            .fallback_reason()
            .map(|r| format!(" (fentry unavailable: {r})"))
            .unwrap_or_default(),
        args.pid
            .map(|p| format!(" of pid {p} and its descendants"))
            .unwrap_or_default()
    );
    let mut sink = LineSink::new(
        io::BufWriter::new(io::stdout().lock()),
        args.probe.json,
        false,
    );
    if sink.format == Format::Human {
        sink.write_line(&render::human_header());
        sink.batch_end();
    }
    loop {
        tokio::select! {
            res = watch.next_batch(&mut sink) => res?,
            _ = sigint.recv() => break,
            _ = sigterm.recv() => break,
        }
    }
    watch.drain(&mut sink);
    let lost = watch.lost_events();
    if lost > 0 {
        log::warn!("{lost} event(s) lost: the ring buffer was full");
    }
    log::info!("detaching probes");
    sink.flush()
}

impl<W: Write> RecordSink for LineSink<W> {
    fn record(&mut self, r: Record) {
        if let Some(s) = &mut self.summary {
            s.add(&r);
        }
        let line = render::line(&r, self.format);
        self.write_line(&line);
    }

    fn batch_end(&mut self) {
        if self.error.is_none() {
            if let Err(e) = self.out.flush() {
                self.error = Some(e);
            }
        }
    }
}

fn exit_code(status: std::process::ExitStatus) -> i32 {
    status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .unwrap_or(1)
}

/// `copytrace trace -- CMD`: runs CMD, reports its calls, returns its exit code.
pub async fn trace(args: TraceArgs) -> Result<i32, CommandError> {
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
    let mut watch = Watch::start(LoadOptions {
        probe: args.probe.probe,
        follow_tgid: std::process::id(),
    })?;
    log::debug!("attached {} back-end", watch.attached());

    let (program, rest) = args
        .command
        .split_first()
        .ok_or_else(|| CommandError::Spawn {
            command: String::new(),
            source: io::Error::new(io::ErrorKind::InvalidInput, "no command given"),
        })?;
    let mut child = tokio::process::Command::new(program)
        .args(rest)
        .spawn()
        .map_err(|source| CommandError::Spawn {
            command: program.to_string_lossy().into_owned(),
            source,
        })?;

    let mut sink = LineSink::new(io::BufWriter::new(out), args.probe.json, true);
    let status = loop {
        tokio::select! {
            res = watch.next_batch(&mut sink) => res?,
            status = child.wait() => break status,
            _ = sigint.recv() => {}
        }
    };
    // Every call of the child completed before it exited, so its events are
    // already in the ring buffer.
    watch.drain(&mut sink);
    let mut summary = sink.summary.take().unwrap_or_default();
    summary.lost = watch.lost_events();
    match sink.format {
        Format::Json => sink.write_line(&render::json_line("summary", &summary)),
        Format::Human => sink.write_line(&summary.human()),
    }
    sink.flush()?;
    let status = status.map_err(|source| CommandError::Spawn {
        command: program.to_string_lossy().into_owned(),
        source,
    })?;
    Ok(exit_code(status))
}
