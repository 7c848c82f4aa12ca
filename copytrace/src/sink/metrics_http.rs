//! The HTTP endpoint Prometheus scrapes: GET /metrics, nothing else.
//!
//! Any local user can reach it, so it holds at most [`MAX_CONNECTIONS`] at
//! once, drops a client that has not sent its request headers within
//! [`HEADER_TIMEOUT`] (slowloris), closes every connection after
//! [`CONNECTION_LIFETIME`] (idle keep-alives), and backs off when
//! descriptors run out ([`Backoff`]).
//!
//! It accepts at once, always: when every slot is taken another connection
//! is closed to make room, the oldest silent one first ([`Slots`]). A
//! scraper sends its request as soon as it connects, so connections held
//! open idle (by anyone, in any number) cannot keep it waiting in the
//! listen backlog. After each accept the loop lets the new connection's
//! task run before accepting again: a burst of connections queued in the
//! backlog behind a scraper cannot close it before its request is read.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;

use crate::sink::accept::Backoff;
use crate::sink::metrics::Metrics;
use crate::sink::metrics_slots::{Slots, Watched};

/// Content type of the text exposition format.
const TEXT_FORMAT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Connections served at once.
pub const MAX_CONNECTIONS: usize = 32;

/// Time a client has to send its request headers.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);

/// Longest a connection stays open, keep-alives included.
pub const CONNECTION_LIFETIME: Duration = Duration::from_secs(30);

fn respond(status: StatusCode, ctype: &str, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    if let Ok(v) = ctype.parse() {
        r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
    }
    r
}

fn handle(req: &Request<Incoming>, metrics: &Mutex<Metrics>) -> Response<Full<Bytes>> {
    match (req.method(), req.uri().path()) {
        (&Method::GET, "/metrics") => {
            let body = match metrics.lock() {
                Ok(mut m) => m.render(),
                Err(p) => p.into_inner().render(),
            };
            respond(StatusCode::OK, TEXT_FORMAT, body)
        }
        (&Method::GET, "/") => respond(
            StatusCode::OK,
            "text/plain",
            "copytrace: metrics at /metrics\n".into(),
        ),
        _ => respond(StatusCode::NOT_FOUND, "text/plain", "not found\n".into()),
    }
}

/// Serves `/metrics` on an already bound listener until the task is dropped.
pub async fn serve(listener: TcpListener, metrics: Arc<Mutex<Metrics>>) {
    let open = Arc::new(Mutex::new(Slots::new(MAX_CONNECTIONS)));
    let mut backoff = Backoff::new("metrics listener");
    loop {
        let stream = match listener.accept().await {
            Ok((s, _)) => {
                backoff.succeeded();
                s
            }
            Err(e) => {
                backoff.failed(&e).await;
                continue;
            }
        };
        let Ok(admitted) = open.lock().map(|mut o| o.admit()) else {
            return;
        };
        let metrics = metrics.clone();
        let open = open.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| {
                let resp = handle(&req, &metrics);
                async move { Ok::<_, Infallible>(resp) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(TokioIo::new(Watched::new(stream, admitted.seen)), svc);
            tokio::select! {
                done = tokio::time::timeout(CONNECTION_LIFETIME, conn) => match done {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => log::debug!("metrics connection: {e}"),
                    Err(_) => log::debug!("metrics connection closed after {CONNECTION_LIFETIME:?}"),
                },
                _ = admitted.evicted => log::debug!("metrics connection closed for a newer one"),
            }
            if let Ok(mut o) = open.lock() {
                o.release(admitted.id);
            }
        });
        tokio::task::yield_now().await;
    }
}
