//! One tail client, from its hello to its last line: checked, replayed
//! the history it asked for, then streamed live calls until it or the
//! daemon stops.

use std::io;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::UnixStream;
use tokio::sync::{broadcast, watch};

use crate::bpf::{ReportAll, ReportAllHold};
use crate::tail::access::{authorized, peer_groups};
use crate::tail::filter::Filter;
use crate::tail::protocol::{accept_hello, ServerMsg, MAX_LINE, PROTOCOL_VERSION};
use crate::tail::server::{Item, Shared, WRITE_BATCH_BYTES};

pub(super) async fn write_line(w: &mut (impl AsyncWriteExt + Unpin), line: &str) -> io::Result<()> {
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

pub(super) async fn serve_client(
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
