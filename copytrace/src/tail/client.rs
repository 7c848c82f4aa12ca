//! `copytrace tail`: connects to the daemon's socket and prints calls as
//! they happen. Knows only the wire protocol, never the probes.

use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anstyle::{AnsiColor, Style};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;

use crate::model::classify::{Severity, Verdict};
use crate::sink::render;
use crate::tail::filter::Filter;
use crate::tail::protocol::{ClientMsg, ServerMsg, PROTOCOL_VERSION};

/// What to do about a failed connect, by its cause.
fn connect_hint(e: &io::Error) -> &'static str {
    match e.kind() {
        io::ErrorKind::PermissionDenied => {
            "only root and members of group `copytrace` may tail; ask an admin for `usermod -aG copytrace $USER`"
        }
        _ => "is `copytrace run` running? see --socket",
    }
}

/// Errors that end `copytrace tail` (exit 2).
#[derive(Debug, thiserror::Error)]
pub enum TailClientError {
    /// Could not connect.
    #[error("cannot connect to {path} ({})", connect_hint(source))]
    Connect {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The daemon refused or reported an error.
    #[error("daemon: {0}")]
    Refused(String),
    /// The daemon went away.
    #[error("the daemon closed the connection ({0}); use --follow to reconnect")]
    Closed(String),
    /// The daemon sent something that is not the protocol.
    #[error("unexpected line from the daemon: {0}")]
    Protocol(String),
    /// Socket I/O.
    #[error("tail connection")]
    Io(#[from] io::Error),
}

/// What to ask for and how to print it.
#[derive(Debug, Clone)]
pub struct TailOptions {
    /// Socket path.
    pub socket: PathBuf,
    /// Filter sent to the daemon.
    pub filter: Filter,
    /// History to replay.
    pub history: usize,
    /// JSON Lines output.
    pub json: bool,
    /// Reconnect when the daemon restarts.
    pub follow: bool,
    /// Show stacks under calls (human form).
    pub stack: bool,
}

fn verdict_style(v: Verdict) -> Style {
    let colour = |c: AnsiColor| Style::new().fg_color(Some(c.into()));
    match v.severity() {
        Severity::Fine | Severity::Expected => colour(AnsiColor::Green),
        Severity::Refused => colour(AnsiColor::Yellow),
        Severity::Visible => colour(AnsiColor::Red),
        Severity::Silent => colour(AnsiColor::Red).bold(),
    }
}

/// Prints one daemon line; Ok(false) means the stream ended (`bye`).
fn print_line(
    line: &str,
    opts: &TailOptions,
    out: &mut impl Write,
) -> Result<bool, TailClientError> {
    let msg: ServerMsg = serde_json::from_str(line)
        .map_err(|e| TailClientError::Protocol(format!("{e}: {line}")))?;
    match msg {
        ServerMsg::Call(_) | ServerMsg::Lagged { .. } if opts.json => {
            writeln!(out, "{line}")?;
            Ok(true)
        }
        ServerMsg::Call(r) => {
            let line = render::human(&r);
            let style = verdict_style(r.diagnosis.verdict);
            // Colour the verdict column by position (a command or file
            // name may contain the same word); anstream strips it off a TTY.
            let (before, rest) = line.text.split_at(line.verdict.start);
            let (verdict, after) = rest.split_at(line.verdict.len());
            writeln!(out, "{before}{style}{verdict}{style:#}{after}")?;
            if opts.stack {
                if let Some(s) = &r.stack {
                    write!(out, "{}", render::human_stack(s))?;
                }
            }
            Ok(true)
        }
        ServerMsg::Lagged { missed } => {
            writeln!(out, "copytrace: fell behind: {missed} call(s) not shown")?;
            Ok(true)
        }
        ServerMsg::Live {} | ServerMsg::Hello { .. } => Ok(true),
        ServerMsg::Bye { reason } => Err(TailClientError::Closed(reason)),
        ServerMsg::Error { message } => Err(TailClientError::Refused(message)),
        // A daemon never sends a summary on the socket.
        ServerMsg::Summary(_) => Err(TailClientError::Protocol(line.into())),
    }
}

async fn session(
    opts: &TailOptions,
    history: usize,
    out: &mut impl Write,
) -> Result<(), TailClientError> {
    let stream =
        UnixStream::connect(&opts.socket)
            .await
            .map_err(|source| TailClientError::Connect {
                path: opts.socket.clone(),
                source,
            })?;
    let (r, mut w) = stream.into_split();
    let hello = ClientMsg::Hello {
        version: PROTOCOL_VERSION,
        filter: opts.filter.clone(),
        history,
    };
    let mut text =
        serde_json::to_string(&hello).map_err(|e| TailClientError::Protocol(e.to_string()))?;
    text.push('\n');
    // A daemon that refuses the peer says why and closes before reading the
    // hello, so writing it may fail (EPIPE) with the reason already waiting
    // to be read: read it before reporting the write.
    let sent = w.write_all(text.as_bytes()).await;
    let mut lines = BufReader::new(r).lines();
    let mut first = true;
    while let Some(line) = lines.next_line().await? {
        if first {
            first = false;
            if !line.contains(r#""type":"hello""#) {
                // Refusals arrive as the first line.
                print_line(&line, opts, out)?;
                return Err(TailClientError::Protocol(line));
            }
        }
        print_line(&line, opts, out)?;
        out.flush()?;
    }
    Err(TailClientError::Closed(match sent {
        Ok(()) => "connection lost".into(),
        Err(e) => format!("before the hello was sent: {e}"),
    }))
}

/// Runs `copytrace tail` until the daemon goes away (or forever with --follow).
pub async fn run(opts: TailOptions) -> Result<(), TailClientError> {
    let mut out = anstream::AutoStream::auto(io::stdout().lock());
    let mut history = opts.history;
    loop {
        let err = match session(&opts, history, &mut out).await {
            Ok(()) => return Ok(()),
            Err(TailClientError::Io(e)) if e.kind() == io::ErrorKind::BrokenPipe => return Ok(()),
            Err(e) => e,
        };
        let retry = matches!(
            err,
            TailClientError::Closed(_) | TailClientError::Connect { .. }
        );
        if !(opts.follow && retry) {
            return Err(err);
        }
        log::warn!("{err}; reconnecting");
        // After a restart, replaying history again would repeat calls.
        history = 0;
        wait_for_socket(&opts.socket).await;
    }
}

async fn wait_for_socket(path: &Path) {
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        if UnixStream::connect(path).await.is_ok() {
            return;
        }
    }
}
