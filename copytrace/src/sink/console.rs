//! Records as text lines on a writer (stdout for `run`, stderr or a file for
//! `trace`), flushed once per batch, with an optional running summary.

use std::io::{self, Write};

use crate::enrich::record::Record;
use crate::sink::render::{self, Format};
use crate::sink::summary::Summary;
use crate::sink::{Demand, RecordSink};

/// Which calls to print.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Print {
    /// Every call.
    All,
    /// Only calls whose verdict is suspicious (not ok, not short_read).
    Suspicious,
    /// Nothing (metrics and tail only).
    None,
}

impl Print {
    /// The default where neither a flag nor the file chose: every call on a
    /// terminal, where a person watches `copytrace run`; only the suspicious
    /// ones elsewhere (the service's journal, a pipe), where every call
    /// would drown them.
    pub fn default_for(stdout_is_terminal: bool) -> Self {
        if stdout_is_terminal {
            Print::All
        } else {
            Print::Suspicious
        }
    }

    /// Which calls a sink printing these needs.
    pub fn demand(self) -> Demand {
        match self {
            Print::All => Demand::Every,
            Print::Suspicious => Demand::Suspicious,
            Print::None => Demand::Nothing,
        }
    }

    /// Whether `r` is printed.
    pub fn admits(self, r: &Record) -> bool {
        match self {
            Print::All => true,
            Print::Suspicious => r.diagnosis.verdict.is_suspicious(),
            Print::None => false,
        }
    }
}

/// Writes records as lines; remembers the first write error (EPIPE ends output quietly).
pub struct Console<W: Write> {
    out: W,
    /// Text or JSON.
    pub format: Format,
    print: Print,
    error: Option<io::Error>,
    /// Totals over every record seen, when asked for.
    pub summary: Option<Summary>,
}

impl<W: Write> Console<W> {
    /// A console writing `print`-selected records to `out`.
    pub fn new(out: W, format: Format, print: Print, summary: bool) -> Self {
        Self {
            out,
            format,
            print,
            error: None,
            summary: summary.then(Summary::default),
        }
    }

    /// Changes which records are printed (config reload).
    pub fn set_print(&mut self, print: Print) {
        self.print = print;
    }

    /// Writes one line.
    pub fn write_line(&mut self, line: &str) {
        if self.error.is_none() {
            if let Err(e) = writeln!(self.out, "{line}") {
                self.error = Some(e);
            }
        }
    }

    /// Flushes, returning the first error other than a closed pipe.
    pub fn finish(&mut self) -> io::Result<()> {
        if let Some(e) = self.error.take().or_else(|| self.out.flush().err()) {
            if e.kind() != io::ErrorKind::BrokenPipe {
                return Err(e);
            }
        }
        Ok(())
    }
}

impl<W: Write> RecordSink for Console<W> {
    fn demand(&self) -> Demand {
        if self.summary.is_some() {
            // A summary counts every call.
            return Demand::Every;
        }
        self.print.demand()
    }

    fn record(&mut self, r: &Record) {
        if let Some(s) = &mut self.summary {
            s.add(r);
        }
        if self.print.admits(r) {
            let line = render::line(r, self.format);
            self.write_line(&line);
        }
    }

    fn batch_end(&mut self) {
        if self.error.is_none() {
            if let Err(e) = self.out.flush() {
                self.error = Some(e);
            }
        }
    }
}
