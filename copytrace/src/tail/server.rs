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
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{broadcast, watch, Semaphore};

use crate::bpf::{ReportAll, ReportAllHold};
use crate::enrich::record::Record;
use crate::model::backend::Backend;
use crate::sink::accept::Backoff;
use crate::sink::{Demand, RecordSink};
use crate::tail::config::TailConfig;
use crate::tail::filter::Filter;
use crate::tail::protocol::{accept_hello, ServerMsg, MAX_LINE, PROTOCOL_VERSION};

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
const WRITE_BATCH_BYTES: usize = 256 * 1024;

/// One call as sent to clients: the record for filtering, the line to send.
struct Item {
    record: Record,
    line: String,
}

/// Shared by the hub and every client task.
struct Shared {
    /// Clients past their hello, and those that want every call.
    sessions: AtomicUsize,
    want_all: AtomicUsize,
    /// Held while a client wants every call.
    report_all: std::sync::OnceLock<ReportAll>,
    history: Mutex<VecDeque<Arc<Item>>>,
    history_cap: Mutex<usize>,
    group_gid: Option<u32>,
    group_name: String,
    backend: Mutex<Option<Backend>>,
    dropped: Mutex<Option<IntCounter>>,
    clients: Mutex<Option<IntGauge>>,
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

/// gid of a group, if it exists.
fn group_gid(name: &str) -> Option<u32> {
    let c = std::ffi::CString::new(name).ok()?;
    // SAFETY: getgrnam takes a valid C string and returns NULL or a pointer
    // to static storage, which is read at once below.
    let g = unsafe { libc::getgrnam(c.as_ptr()) };
    // SAFETY: g is non-null and points to a struct group (checked above).
    (!g.is_null()).then(|| unsafe { (*g).gr_gid })
}

/// Whether process `pid` (of `uid`, `gid`) may use the socket.
/// Supplementary groups the peer had when it connected (SO_PEERGROUPS),
/// read from the socket rather than /proc so a recycled pid cannot lend its
/// groups to another process.
fn peer_groups(stream: &UnixStream) -> io::Result<Vec<libc::gid_t>> {
    use std::os::fd::AsRawFd;
    let mut groups: Vec<libc::gid_t> = vec![0; 64];
    loop {
        let mut len = (groups.len() * std::mem::size_of::<libc::gid_t>()) as libc::socklen_t;
        // SAFETY: the buffer is `len` bytes of writable memory owned by
        // `groups`, and `len` is a valid socklen_t the kernel updates.
        let rc = unsafe {
            libc::getsockopt(
                stream.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_PEERGROUPS,
                groups.as_mut_ptr().cast(),
                &mut len,
            )
        };
        let n = len as usize / std::mem::size_of::<libc::gid_t>();
        if rc == 0 {
            groups.truncate(n);
            return Ok(groups);
        }
        let e = io::Error::last_os_error();
        // ERANGE: the kernel wrote the size it needs into len.
        if e.raw_os_error() == Some(libc::ERANGE) && n > groups.len() && n <= 65536 {
            groups.resize(n, 0);
            continue;
        }
        return Err(e);
    }
}

/// Whether a peer may tail: root, or the tail group as its primary or a
/// supplementary group.
fn authorized(uid: u32, gid: u32, groups: &[libc::gid_t], group: Option<u32>) -> bool {
    if uid == 0 {
        return true;
    }
    let Some(group) = group else { return false };
    gid == group || groups.contains(&group)
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

async fn write_line(w: &mut (impl AsyncWriteExt + Unpin), line: &str) -> io::Result<()> {
    w.write_all(line.as_bytes()).await?;
    w.write_all(b"\n").await
}

/// Reads the hello line (bounded in size and time).
async fn read_hello(
    r: &mut BufReader<tokio::net::unix::ReadHalf<'_>>,
) -> Result<(Filter, usize), String> {
    let mut line = Vec::new();
    let read = tokio::time::timeout(
        std::time::Duration::from_secs(10),
        r.take(MAX_LINE as u64).read_until(b'\n', &mut line),
    )
    .await
    .map_err(|_| "no hello within 10 s".to_string())?
    .map_err(|e| e.to_string())?;
    if read == 0 {
        return Err("connection closed before hello".into());
    }
    accept_hello(&line)
}

/// A client past its hello: counted (for what the pipeline must deliver)
/// until dropped.
struct Session<'a> {
    shared: &'a Shared,
    all: bool,
    _hold: Option<ReportAllHold>,
}

impl<'a> Session<'a> {
    fn open(shared: &'a Shared, all: bool) -> Self {
        // The kernel side reports every call before the client counts as
        // connected, so a call made once the gauge shows it reaches it.
        let _hold = all
            .then(|| shared.report_all.get().map(ReportAll::hold))
            .flatten();
        if all {
            shared.want_all.fetch_add(1, Ordering::Relaxed);
        }
        shared.sessions.fetch_add(1, Ordering::Relaxed);
        gauge_add(shared, 1);
        Session { shared, all, _hold }
    }
}

impl Drop for Session<'_> {
    fn drop(&mut self) {
        self.shared.sessions.fetch_sub(1, Ordering::Relaxed);
        gauge_add(self.shared, -1);
        if self.all {
            self.shared.want_all.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

fn gauge_add(shared: &Shared, d: i64) {
    if let Ok(g) = shared.clients.lock() {
        if let Some(g) = g.as_ref() {
            g.add(d);
        }
    }
}

async fn serve_client(
    mut stream: UnixStream,
    mut rx: broadcast::Receiver<Arc<Item>>,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) {
    let cred = stream.peer_cred();
    let groups = peer_groups(&stream).unwrap_or_default();
    let allowed = cred
        .as_ref()
        .map(|c| authorized(c.uid(), c.gid(), &groups, shared.group_gid))
        .unwrap_or(false);
    if !allowed {
        let uid = cred
            .map(|c| c.uid().to_string())
            .unwrap_or_else(|_| "?".into());
        let message = format!(
            "permission denied: uid {uid} is neither root nor in group {}",
            shared.group_name
        );
        log::info!("tail: refused a client: {message}");
        let _ = write_line(&mut stream, &ServerMsg::Error { message }.line()).await;
        return;
    }
    let (r, mut w) = stream.split();
    let mut r = BufReader::new(r);
    let result: io::Result<()> = async {
        let (filter, history) = match read_hello(&mut r).await {
            Ok(h) => h,
            Err(message) => {
                write_line(&mut w, &ServerMsg::Error { message }.line()).await?;
                return Ok(());
            }
        };
        // Counted from here to the end of the session (the guard undoes it).
        let _session = Session::open(&shared, filter.all);
        let backend = shared.backend.lock().ok().and_then(|b| *b);
        let hello = ServerMsg::Hello {
            version: PROTOCOL_VERSION,
            server: format!("copytrace {}", env!("CARGO_PKG_VERSION")),
            backend,
        };
        write_line(&mut w, &hello.line()).await?;
        let replay: Vec<Arc<Item>> = shared
            .history
            .lock()
            .map(|h| {
                let skip = h.len().saturating_sub(history);
                h.iter().skip(skip).cloned().collect()
            })
            .unwrap_or_default();
        for item in replay.iter().filter(|i| filter.matches(&i.record)) {
            write_line(&mut w, &item.line).await?;
        }
        write_line(&mut w, &ServerMsg::Live {}.line()).await?;
        let mut scratch = [0u8; 256];
        loop {
            let next = tokio::select! {
                n = rx.recv() => n,
                _ = stop.changed() => {
                    let bye = ServerMsg::Bye { reason: "daemon stopping".into() };
                    let _ = write_line(&mut w, &bye.line()).await;
                    return Ok(());
                }
                // Clients only speak once: more input, or EOF, ends the session.
                n = r.read(&mut scratch) => {
                    if let Ok(n @ 1..) = n {
                        let msg = ServerMsg::Error { message: format!("unexpected {n} bytes after hello") };
                        let _ = write_line(&mut w, &msg.line()).await;
                    }
                    return Ok(());
                }
            };
            // Take what else is queued without waiting (recv() is subject
            // to tokio's budget, try_recv is not), and send it in one write.
            let mut out = String::new();
            let mut next = Some(next);
            while let Some(n) = next.take() {
                match n {
                    Ok(item) if filter.matches(&item.record) => {
                        out.push_str(&item.line);
                        out.push('\n');
                    }
                    Ok(_) => {}
                    Err(broadcast::error::RecvError::Lagged(missed)) => {
                        if let Ok(d) = shared.dropped.lock() {
                            if let Some(d) = d.as_ref() {
                                d.inc_by(missed);
                            }
                        }
                        out.push_str(&ServerMsg::Lagged { missed }.line());
                        out.push('\n');
                    }
                    Err(broadcast::error::RecvError::Closed) => return Ok(()),
                }
                if out.len() < WRITE_BATCH_BYTES {
                    next = match rx.try_recv() {
                        Ok(item) => Some(Ok(item)),
                        Err(broadcast::error::TryRecvError::Lagged(m)) => {
                            Some(Err(broadcast::error::RecvError::Lagged(m)))
                        }
                        Err(_) => None,
                    };
                }
            }
            if out.is_empty() {
                continue;
            }
            tokio::select! {
                res = w.write_all(out.as_bytes()) => res?,
                _ = stop.changed() => return Ok(()),
            }
        }
    }
    .await;
    if let Err(e) = result {
        log::debug!("tail client gone: {e}");
    }
}
