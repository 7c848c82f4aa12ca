//! The live tail: a Unix socket streaming calls to `copytrace tail` clients.
//!
//! ## Access
//! The socket is created with mode 0660 (group `tail.group` when that group
//! exists) under a temporary name and renamed into place, so nobody can
//! connect before its mode is set. Each connection is also checked with
//! SO_PEERCRED and SO_PEERGROUPS (the peer's credentials when it connected):
//! root, or the group as primary or supplementary group. At most
//! [`MAX_CLIENTS`] connections are served at once; a client must say hello
//! within 10 s.
//!
//! ## Lagging
//! Calls go through one bounded broadcast queue (`tail.client_queue` entries)
//! shared by every client: a client that does not read never blocks the
//! daemon or the others; when it reads again it gets a `lagged` line with the
//! number of calls it missed, and `copytrace_tail_dropped_total` counts them.

use std::borrow::Cow;
use std::collections::VecDeque;
use std::io;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use prometheus::{IntCounter, IntGauge};
use tokio::net::UnixListener;
use tokio::sync::{broadcast, watch, Semaphore};

use crate::bpf::ReportAll;
use crate::enrich::record::Record;
use crate::model::backend::Backend;
use crate::sink::accept::Backoff;
use crate::sink::{Demand, RecordSink};
use crate::tail::access::group_gid;
use crate::tail::config::TailConfig;
use crate::tail::protocol::ServerMsg;
use crate::tail::session::{serve_client, write_line};

/// Errors setting up the socket.
#[derive(Debug, thiserror::Error)]
pub enum TailError {
    /// Creating, binding or placing the socket failed.
    #[error("cannot serve the tail socket {path}")]
    Socket {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// Another process is already serving it.
    #[error("another copytrace is already serving {0} (stop it, or set tail.socket / --socket)")]
    InUse(PathBuf),
    /// Something that is not a socket has the name.
    #[error("{0} exists and is not a socket: copytrace will not replace it (remove it, or set tail.socket / --socket)")]
    NotASocket(PathBuf),
}

/// Clients served at once, counted from accept (hello included), so idle
/// connections cannot exhaust the daemon's file descriptors.
pub const MAX_CLIENTS: usize = 64;

/// Bytes gathered for one write to a client.
pub(super) const WRITE_BATCH_BYTES: usize = 256 * 1024;

/// One call as sent to clients: the record for filtering, the line to send.
pub(super) struct Item {
    pub(super) record: Record,
    pub(super) line: String,
}

/// Shared by the hub and every client task.
pub(super) struct Shared {
    /// Clients past their hello, and those that want every call.
    pub(super) sessions: AtomicUsize,
    pub(super) want_all: AtomicUsize,
    /// Held while a client wants every call.
    pub(super) report_all: std::sync::OnceLock<ReportAll>,
    pub(super) history: Mutex<VecDeque<Arc<Item>>>,
    pub(super) history_cap: Mutex<usize>,
    pub(super) group_gid: Option<u32>,
    pub(super) group_name: String,
    pub(super) backend: Mutex<Option<Backend>>,
    pub(super) dropped: Mutex<Option<IntCounter>>,
    pub(super) clients: Mutex<Option<IntGauge>>,
}

/// The tail socket and its subscribers.
pub struct TailHub {
    listener: Option<std::os::unix::net::UnixListener>,
    path: PathBuf,
    tx: broadcast::Sender<Arc<Item>>,
    shared: Arc<Shared>,
    stop: watch::Sender<bool>,
}

fn socket_err(path: &Path) -> impl FnOnce(io::Error) -> TailError + '_ {
    move |source| TailError::Socket {
        path: path.to_path_buf(),
        source,
    }
}

impl TailHub {
    /// Creates the socket (mode 0660, then renamed into place).
    pub fn bind(cfg: &TailConfig) -> Result<Self, TailError> {
        let path = cfg.socket.clone();
        if std::os::unix::net::UnixStream::connect(&path).is_ok() {
            return Err(TailError::InUse(path));
        }
        // Only a stale socket may be replaced: never a file, a symlink or a directory.
        if let Ok(m) = std::fs::symlink_metadata(&path) {
            use std::os::unix::fs::FileTypeExt;
            if !m.file_type().is_socket() {
                return Err(TailError::NotASocket(path));
            }
        }
        let dir = path.parent().unwrap_or(Path::new("/"));
        std::fs::create_dir_all(dir).map_err(socket_err(&path))?;
        let tmp = dir.join(format!(".copytrace.sock.{}", std::process::id()));
        let _ = std::fs::remove_file(&tmp);
        let listener = std::os::unix::net::UnixListener::bind(&tmp).map_err(socket_err(&path))?;
        let gid = group_gid(&cfg.group);
        let placed = std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o660))
            .and_then(|()| match gid {
                Some(g) => std::os::unix::fs::chown(&tmp, Some(0), Some(g)),
                None => Ok(()),
            })
            .and_then(|()| std::fs::rename(&tmp, &path));
        if let Err(e) = placed {
            let _ = std::fs::remove_file(&tmp);
            return Err(socket_err(&path)(e));
        }
        listener.set_nonblocking(true).map_err(socket_err(&path))?;
        let (tx, _) = broadcast::channel(cfg.client_queue.max(1));
        let (stop, _) = watch::channel(false);
        Ok(Self {
            listener: Some(listener),
            path,
            tx,
            shared: Arc::new(Shared {
                sessions: AtomicUsize::new(0),
                want_all: AtomicUsize::new(0),
                report_all: std::sync::OnceLock::new(),
                history: Mutex::new(VecDeque::new()),
                history_cap: Mutex::new(cfg.history),
                group_gid: gid,
                group_name: cfg.group.clone(),
                backend: Mutex::new(None),
                dropped: Mutex::new(None),
                clients: Mutex::new(None),
            }),
            stop,
        })
    }

    /// Counts drops and clients in these metrics.
    pub fn set_metrics(&mut self, dropped: IntCounter, clients: IntGauge) {
        if let Ok(mut d) = self.shared.dropped.lock() {
            *d = Some(dropped);
        }
        if let Ok(mut c) = self.shared.clients.lock() {
            *c = Some(clients);
        }
    }

    /// Makes clients that want every call switch the kernel side to
    /// reporting every call while they are connected.
    pub fn set_report_all(&mut self, r: ReportAll) {
        let _ = self.shared.report_all.set(r);
    }

    /// Names the back-end in client handshakes.
    pub fn set_backend(&mut self, backend: Backend) {
        if let Ok(mut b) = self.shared.backend.lock() {
            *b = Some(backend);
        }
    }

    /// Changes how many suspicious calls are kept.
    pub fn set_history(&mut self, n: usize) {
        if let Ok(mut cap) = self.shared.history_cap.lock() {
            *cap = n;
        }
        if let Ok(mut h) = self.shared.history.lock() {
            while h.len() > n {
                h.pop_front();
            }
        }
    }

    /// Starts accepting clients (inside the tokio runtime).
    pub fn start(&mut self) {
        let Some(std_listener) = self.listener.take() else {
            return;
        };
        let listener = match UnixListener::from_std(std_listener) {
            Ok(l) => l,
            Err(e) => {
                log::error!("tail socket {}: {e}", self.path.display());
                return;
            }
        };
        let tx = self.tx.clone();
        let shared = self.shared.clone();
        let stop = self.stop.subscribe();
        tokio::spawn(async move {
            let slots = Arc::new(Semaphore::new(MAX_CLIENTS));
            let mut backoff = Backoff::new("tail socket");
            loop {
                let mut stop_accept = stop.clone();
                let mut stream = tokio::select! {
                    r = listener.accept() => match r {
                        Ok((s, _)) => {
                            backoff.succeeded();
                            s
                        }
                        Err(e) => {
                            backoff.failed(&e).await;
                            continue;
                        }
                    },
                    _ = stop_accept.changed() => return,
                };
                // Tail sessions last: a client over the cap is told why at
                // once instead of waiting unseen in the backlog.
                let Ok(slot) = slots.clone().try_acquire_owned() else {
                    let message =
                        format!("too many tail clients (limit {MAX_CLIENTS}); try again later");
                    tokio::spawn(async move {
                        let line = ServerMsg::Error { message }.line();
                        let _ = tokio::time::timeout(
                            std::time::Duration::from_secs(1),
                            write_line(&mut stream, &line),
                        )
                        .await;
                    });
                    continue;
                };
                let rx = tx.subscribe();
                let (shared, stop) = (shared.clone(), stop.clone());
                tokio::spawn(async move {
                    let _slot = slot;
                    serve_client(stream, rx, shared, stop).await;
                });
            }
        });
    }

    /// Tells clients goodbye and removes the socket.
    pub fn shutdown(&mut self) {
        let _ = self.stop.send(true);
        // Removed only while it is still a socket (ours: the name is ours to remove).
        let is_socket = std::fs::symlink_metadata(&self.path).is_ok_and(|m| {
            use std::os::unix::fs::FileTypeExt;
            m.file_type().is_socket()
        });
        if is_socket {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

impl Drop for TailHub {
    fn drop(&mut self) {
        self.shutdown();
    }
}

impl RecordSink for TailHub {
    fn demand(&self) -> Demand {
        let cap = self.shared.history_cap.lock().map(|c| *c).unwrap_or(0);
        if self.shared.want_all.load(Ordering::Relaxed) > 0 {
            Demand::Every
        } else if cap > 0 || self.shared.sessions.load(Ordering::Relaxed) > 0 {
            Demand::Suspicious
        } else {
            Demand::Nothing
        }
    }

    fn record(&mut self, r: &Record) {
        let suspicious = r.diagnosis.verdict.is_suspicious();
        let cap = self.shared.history_cap.lock().map(|c| *c).unwrap_or(0);
        let keep = suspicious && cap > 0;
        if !keep && self.tx.receiver_count() == 0 {
            return;
        }
        let item = Arc::new(Item {
            record: r.clone(),
            line: ServerMsg::Call(Cow::Borrowed(r)).line(),
        });
        if keep {
            if let Ok(mut h) = self.shared.history.lock() {
                if h.len() >= cap {
                    h.pop_front();
                }
                h.push_back(item.clone());
            }
        }
        // No receivers is not an error: nobody is tailing.
        let _ = self.tx.send(item);
    }
}
