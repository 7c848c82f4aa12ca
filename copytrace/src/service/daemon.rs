//! `copytrace run`: the long-running service.
//!
//! Start-up order matters to systemd: configuration is validated, the metrics
//! port bound and the probes attached before `READY=1`. Then each ring-buffer
//! batch fans out to the console, the metrics and the tail; SIGHUP reloads
//! the configuration (a bad file keeps the old one), SIGTERM/SIGINT detach,
//! flush and exit 0.

use std::io;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::signal::unix::{signal, SignalKind};

use crate::bpf::LoadOptions;
use crate::enrich::record::Record;
use crate::model::backend::Backend;
use crate::pipeline::{Watch, WatchError};
use crate::service::config::{Config, ConfigError, Overrides, Source};
use crate::service::notify::{self, Notifier};
use crate::sink::console::{Console, Print};
use crate::sink::journal::{self, Journal};
use crate::sink::metrics::{Metrics, MetricsError};
use crate::sink::metrics_http;
use crate::sink::render::{self, Format};
use crate::sink::{Demand, RecordSink};

/// Errors that stop the daemon (each printed as one line, exit 2).
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// Bad configuration.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Probes or ring buffer.
    #[error(transparent)]
    Watch(#[from] WatchError),
    /// The metrics port could not be bound.
    #[error(
        "cannot serve metrics on {addr} (set metrics.listen or --metrics-listen to a free address)"
    )]
    Listen {
        addr: std::net::SocketAddr,
        #[source]
        source: io::Error,
    },
    /// Metrics registry.
    #[error(transparent)]
    Metrics(#[from] MetricsError),
    /// Signal handlers.
    #[error("cannot install signal handlers")]
    Signals(#[source] io::Error),
    /// The tail socket could not be set up.
    #[error(transparent)]
    Tail(#[from] crate::tail::server::TailError),
    /// stdout failed.
    #[error("writing to stdout failed")]
    Write(#[source] io::Error),
}

/// How often the STATUS= line is refreshed (sent only when it changed).
const STATUS_EVERY: Duration = Duration::from_secs(1);

/// Keeps the kernel side reporting every call while `print = "all"`.
struct PrintAll {
    switch: Option<crate::bpf::ReportAll>,
    hold: Option<crate::bpf::ReportAllHold>,
}

impl PrintAll {
    fn new(switch: Option<crate::bpf::ReportAll>, print: Print) -> Self {
        let mut p = PrintAll { switch, hold: None };
        p.set(print);
        p
    }

    fn set(&mut self, print: Print) {
        self.hold = (print == Print::All)
            .then(|| self.switch.as_ref().map(|s| s.hold()))
            .flatten();
    }
}

/// Every sink the daemon feeds records to (the metrics read counts, not records).
struct Fanout<W: io::Write> {
    console: Console<W>,
    /// Structured entries instead of console lines, when stdout is the journal.
    journal: Option<Journal>,
    tail: Option<crate::tail::server::TailHub>,
}

impl<W: io::Write> RecordSink for Fanout<W> {
    fn demand(&self) -> Demand {
        let tail = self.tail.as_ref().map_or(Demand::Nothing, |t| t.demand());
        let journal = self
            .journal
            .as_ref()
            .map_or(Demand::Nothing, |j| j.demand());
        self.console.demand().max(tail).max(journal)
    }

    fn record(&mut self, r: &Record) {
        self.console.record(r);
        if let Some(j) = &mut self.journal {
            j.record(r);
        }
        if let Some(t) = &mut self.tail {
            t.record(r);
        }
    }

    fn batch_end(&mut self) {
        self.console.batch_end();
    }
}

fn status_line(metrics: &Mutex<Metrics>, backend: Backend) -> String {
    let (calls, suspicious, lost) = metrics
        .lock()
        .map(|mut m| {
            let by = m.calls_by_verdict();
            let total: u64 = by.values().sum();
            let suspicious: u64 = by
                .iter()
                .filter(|(v, _)| v.is_suspicious())
                .map(|(_, n)| n)
                .sum();
            (total, suspicious, m.lost())
        })
        .unwrap_or_default();
    let lost = if lost > 0 {
        format!(", {lost} reported call(s) lost (counts stay exact)")
    } else {
        String::new()
    };
    format!(
        "STATUS=watching copy_file_range ({} back-end): {calls} calls, {suspicious} suspicious{lost}",
        backend.as_str()
    )
}

/// `--check-config`: the validated configuration is the command's output.
#[allow(clippy::print_stdout, reason = "stdout is --check-config's product")]
fn print_config(config: &Config) {
    println!("copytrace: configuration ok");
    println!("{config:#?}");
}

/// Runs the daemon until SIGTERM or SIGINT.
pub async fn run(
    source: Source,
    overrides: Overrides,
    check_only: bool,
) -> Result<(), DaemonError> {
    let config = source.load(&overrides)?;
    if check_only {
        print_config(&config);
        return Ok(());
    }
    let daemon = Daemon::start(config).await?;
    daemon.serve(&source, &overrides).await
}

/// The signals the daemon acts on.
struct Signals {
    interrupt: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
    hangup: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> Result<Self, DaemonError> {
        let on = |kind| signal(kind).map_err(DaemonError::Signals);
        Ok(Signals {
            interrupt: on(SignalKind::interrupt())?,
            terminate: on(SignalKind::terminate())?,
            hangup: on(SignalKind::hangup())?,
        })
    }
}

/// A started daemon: probes attached, sockets bound, sinks open, READY sent.
struct Daemon {
    config: Config,
    notifier: Notifier,
    signals: Signals,
    watch: Watch,
    backend: Backend,
    metrics: Arc<Mutex<Metrics>>,
    sinks: Fanout<io::BufWriter<io::StdoutLock<'static>>>,
    print_all: PrintAll,
    status: String,
}

impl Daemon {
    /// Binds the sockets first (a taken port fails before any probe loads),
    /// then attaches the probes and opens the sinks.
    async fn start(config: Config) -> Result<Self, DaemonError> {
        log::set_max_level(config.level());
        crate::bpf::require_privileges().map_err(WatchError::Load)?;
        let notifier = Notifier::from_env();
        let signals = Signals::new()?;

        let listener = if config.metrics.enabled {
            let addr = config.metrics.listen;
            Some(
                TcpListener::bind(addr)
                    .await
                    .map_err(|source| DaemonError::Listen { addr, source })?,
            )
        } else {
            None
        };
        let tail = if config.tail.enabled {
            Some(crate::tail::server::TailHub::bind(&config.tail)?)
        } else {
            None
        };

        let watch = Watch::start(LoadOptions {
            count_by_cgroup: config.metrics.unit_label,
            stacks: config.stacks,
            ..crate::pipeline::load_options(config.probe, config.pid)
        })?;
        let backend = watch.backend();
        let metrics = Arc::new(Mutex::new(Metrics::new(
            &crate::kernel_release(),
            config.metrics.unit_label.then_some(config.metrics.unit_top),
        )?));
        if let (Some(k), Ok(mut m)) = (watch.counters(), metrics.lock()) {
            m.attach(backend, k, watch.read_counters());
            m.attach_symbolizer(watch.symbolizer_counters());
        }
        if let Some(listener) = listener {
            tokio::spawn(metrics_http::serve(listener, metrics.clone()));
        }
        let tail_dropped = metrics
            .lock()
            .map(|m| (m.tail_dropped.clone(), m.tail_clients.clone()))
            .ok();
        let tail = tail.map(|mut t| {
            if let Some((dropped, clients)) = tail_dropped {
                t.set_metrics(dropped, clients);
            }
            t.set_backend(backend);
            if let Some(r) = watch.report_all() {
                t.set_report_all(r);
            }
            t.start();
            t
        });
        announce(&watch, &config);
        let sinks = open_sinks(&config, &metrics, tail);
        // `print = "all"` wants every call reported, from the first one.
        // `print = "all"` wants every call reported, from the first one.
        let print_all = PrintAll::new(watch.report_all(), config.print());
        let status = status_line(&metrics, backend);
        notifier.send(&format!("READY=1\n{status}"));
        Ok(Daemon {
            config,
            notifier,
            signals,
            watch,
            backend,
            metrics,
            sinks,
            print_all,
            status,
        })
    }

    /// Feeds the sinks, answers the watchdog and reloads on SIGHUP, until
    /// SIGTERM or SIGINT; then drains what the kernel still holds and detaches.
    async fn serve(self, source: &Source, overrides: &Overrides) -> Result<(), DaemonError> {
        let Daemon {
            mut config,
            notifier,
            mut signals,
            mut watch,
            backend,
            metrics,
            mut sinks,
            mut print_all,
            mut status,
        } = self;
        let watchdog = notify::watchdog_interval();
        let mut wd_tick = tokio::time::interval(watchdog.unwrap_or(Duration::from_secs(3600)));
        let mut status_tick = tokio::time::interval(STATUS_EVERY);
        loop {
            tokio::select! {
                res = watch.next_batch(&mut sinks) => res?,
                _ = wd_tick.tick(), if watchdog.is_some() => notifier.send("WATCHDOG=1"),
                _ = status_tick.tick(), if notifier.enabled() => {
                    if let Some(j) = &mut sinks.journal {
                        j.summarise();
                    }
                    let now = status_line(&metrics, backend);
                    if now != status {
                        notifier.send(&now);
                        status = now;
                    }
                }
                _ = signals.hangup.recv() => {
                    notifier.send("RELOADING=1");
                    match source.load(overrides) {
                        Ok(new) => {
                            reload(&mut config, &new, &mut sinks);
                            print_all.set(config.print());
                        }
                        Err(e) => log::warn!(
                            "reload: keeping the running configuration: {}",
                            crate::error_chain(&e)
                        ),
                    }
                    notifier.send(&format!("READY=1\n{}", status_line(&metrics, backend)));
                }
                _ = signals.interrupt.recv() => break,
                _ = signals.terminate.recv() => break,
            }
        }
        notifier.send("STOPPING=1\nSTATUS=detaching probes");
        watch.finish(&mut sinks).await;
        if let Some(t) = &mut sinks.tail {
            t.shutdown();
        }
        if let Ok(mut m) = metrics.lock() {
            m.reconcile();
            m.detach();
        }
        let lost = watch.lost_events();
        if lost > 0 {
            log::warn!("{lost} event(s) lost: the ring buffer was full (calls were still counted)");
        }
        log::info!("detached probes; exiting");
        sinks.console.finish().map_err(DaemonError::Write)
    }
}

/// The console (or the journal, when stdout is one) and the tail hub.
fn open_sinks(
    config: &Config,
    metrics: &Mutex<Metrics>,
    tail: Option<crate::tail::server::TailHub>,
) -> Fanout<io::BufWriter<io::StdoutLock<'static>>> {
    let format = if config.json {
        Format::Json
    } else {
        Format::Human
    };
    // Under systemd, suspicious calls become structured journal entries
    // rather than lines on stdout (which would be the same entries, unstructured).
    let journal = if format == Format::Human && journal::stdout_is_journal() {
        match Journal::connect(config.print()) {
            Ok(mut j) => {
                if let Ok(m) = metrics.lock() {
                    j.set_metrics(m.journal_held_back.clone());
                }
                Some(j)
            }
            Err(e) => {
                log::warn!(
                    "stdout is the journal but its socket is not usable ({e}): printing lines"
                );
                None
            }
        }
    } else {
        None
    };
    let console_print = if journal.is_some() {
        Print::None
    } else {
        config.print()
    };
    let mut sinks = Fanout {
        console: Console::new(
            io::BufWriter::new(io::stdout().lock()),
            format,
            console_print,
            false,
        ),
        journal,
        tail,
    };
    if format == Format::Human && console_print != Print::None {
        sinks.console.write_line(&render::human_header());
        sinks.console.batch_end();
    }
    sinks
}

/// Says what is attached and where the daemon serves.
fn announce(watch: &Watch, config: &Config) {
    let backend = watch.backend();
    log::info!(
        "attached {} back-end{}, {}; watching copy_file_range{}{}{}",
        backend.as_str(),
        watch
            .fallback_reason()
            .map(|r| match backend {
                Backend::Fentry => format!(" ({r})"),
                Backend::Tracepoint => format!(" (fentry unavailable: {r})"),
            })
            .unwrap_or_default(),
        watch.kernel_reads().as_str(),
        if config.pid != 0 {
            format!(" of pid {} and its descendants", config.pid)
        } else {
            String::new()
        },
        if config.metrics.enabled {
            format!("; metrics on http://{}/metrics", config.metrics.listen)
        } else {
            String::new()
        },
        if config.tail.enabled {
            format!("; tail on {}", config.tail.socket.display())
        } else {
            String::new()
        },
    );
}

/// Applies what can change at run time to `old` and the sinks; says which
/// keys need a restart (they stay as they are, so the next reload says so again).
fn reload<W: io::Write>(old: &mut Config, new: &Config, sinks: &mut Fanout<W>) {
    log::set_max_level(new.level());
    match &mut sinks.journal {
        Some(j) => j.set_print(new.print()),
        None => sinks.console.set_print(new.print()),
    }
    if let Some(t) = &mut sinks.tail {
        t.set_history(new.tail.history);
    }
    old.log_level = new.log_level.clone();
    old.print = new.print;
    old.tail.history = new.tail.history;
    let restart: Vec<&str> = [
        ("probe", old.probe != new.probe),
        ("pid", old.pid != new.pid),
        ("json", old.json != new.json),
        ("stacks", old.stacks != new.stacks),
        ("metrics", old.metrics != new.metrics),
        ("tail", old.tail != new.tail),
    ]
    .into_iter()
    .filter_map(|(k, changed)| changed.then_some(k))
    .collect();
    if restart.is_empty() {
        log::info!("reload: configuration applied");
    } else {
        log::warn!(
            "reload: applied log_level, print and tail.history; {} change(s) need a restart",
            restart.join(", ")
        );
    }
}
