//! The daemon's side of the symbolizer: a task that owns the symbolizer
//! process, hands it one request at a time, and kills and replaces it when
//! it is late, dies or says something it should not.
//!
//! The event loop only queues requests ([`Symbolizer::ask`], never waiting)
//! and receives answers ([`Symbolizer::answers`]); whatever the traced
//! user's files do to the symbolizer, the loop goes on.

use std::path::PathBuf;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};
use tokio::sync::mpsc;
use tokio::time::{timeout, Instant};

use super::protocol::{body_len, encode, Answer, Request, MAX_ANSWER};
use crate::enrich::stack::Stack;

/// The hidden subcommand that runs [`super::worker::main`].
pub const WORKER_COMMAND: &str = "symbolize-worker";

/// How long one stack may take before its symbolizer is killed.
pub const DEADLINE: Duration = Duration::from_secs(2);

/// Stacks waiting for the symbolizer; more are reported unnamed at once.
pub const QUEUE: usize = 64;

/// The least time between two starts of the symbolizer (a binary that
/// crashes it on every call must not make the daemon fork in a loop).
pub const RESTART_DELAY: Duration = Duration::from_millis(250);

/// What the symbolizer did, for the metrics.
#[derive(Debug, Default)]
pub struct SymbolizerCounters {
    /// Stacks it named.
    pub named: AtomicU64,
    /// Stacks left unnamed because it was late, died, was busy or refused.
    pub unavailable: AtomicU64,
    /// Times it was started.
    pub starts: AtomicU64,
    /// Records held, in call order, until their stacks are named (kept
    /// by [`crate::enrich::pending::Pending`]).
    pub held: AtomicU64,
}

/// One request in, one stack out.
#[derive(Debug)]
pub struct Answered {
    /// The caller's ticket.
    pub ticket: u64,
    /// The request, to remember its stack by.
    pub request: Request,
    /// The stack, named or saying why not.
    pub stack: Stack,
    /// Whether the symbolizer answered (rather than failing): only then is
    /// the stack worth remembering.
    pub named: bool,
}

struct Job {
    ticket: u64,
    request: Request,
    /// Past this no one waits for the answer: the job is skipped.
    until: Instant,
}

/// Handle to the symbolizer task.
pub struct Symbolizer {
    jobs: mpsc::Sender<Job>,
    answers: mpsc::Receiver<Answered>,
    counters: Arc<SymbolizerCounters>,
}

impl std::fmt::Debug for Symbolizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Symbolizer")
    }
}

/// Why a request was not queued.
#[derive(Debug)]
pub struct Busy(pub Box<Request>);

impl Symbolizer {
    /// Starts the task (the process starts with the first request). Must
    /// run inside a tokio runtime.
    pub fn start() -> Self {
        Self::start_with(PathBuf::from("/proc/self/exe"))
    }

    /// Starts the task with `program` (a copytrace binary) as the symbolizer.
    pub fn start_with(program: PathBuf) -> Self {
        let (jobs, rx) = mpsc::channel(QUEUE);
        let (tx, answers) = mpsc::channel(QUEUE);
        let counters = Arc::new(SymbolizerCounters::default());
        tokio::spawn(serve(program, rx, tx, counters.clone()));
        Self {
            jobs,
            answers,
            counters,
        }
    }

    /// Queues a request without waiting, worth answering until `until`;
    /// gives it back when the queue is full.
    pub fn ask(&self, ticket: u64, request: Request, until: Instant) -> Result<(), Busy> {
        self.jobs
            .try_send(Job {
                ticket,
                request,
                until,
            })
            .map_err(|e| match e {
                mpsc::error::TrySendError::Full(j) | mpsc::error::TrySendError::Closed(j) => {
                    self.counters.unavailable.fetch_add(1, Ordering::Relaxed);
                    Busy(Box::new(j.request))
                }
            })
    }

    /// The next answer.
    pub async fn answer(&mut self) -> Option<Answered> {
        self.answers.recv().await
    }

    /// Its counters, shared.
    pub fn counters(&self) -> Arc<SymbolizerCounters> {
        self.counters.clone()
    }
}

/// A running symbolizer process.
struct Worker {
    child: Child,
    stdin: ChildStdin,
    stdout: ChildStdout,
}

fn spawn(program: &PathBuf, counters: &SymbolizerCounters) -> Result<Worker, String> {
    let mut child = Command::new(program)
        .arg(WORKER_COMMAND)
        .env_clear()
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("the symbolizer could not start: {e}"))?;
    counters.starts.fetch_add(1, Ordering::Relaxed);
    match (child.stdin.take(), child.stdout.take()) {
        (Some(stdin), Some(stdout)) => Ok(Worker {
            child,
            stdin,
            stdout,
        }),
        _ => Err("the symbolizer started without pipes".into()),
    }
}

/// Why a worker was given up on.
enum Failure {
    /// Over [`DEADLINE`].
    Late,
    /// Its pipe closed or broke: it exited or was killed.
    Gone,
    /// It said something out of protocol.
    Garbled(String),
    /// It said why it cannot go on.
    Refused(String),
}

async fn exchange(w: &mut Worker, req: &Request) -> Result<Answer, Failure> {
    let bytes = encode(req).map_err(|e| Failure::Garbled(e.to_string()))?;
    w.stdin.write_all(&bytes).await.map_err(|_| Failure::Gone)?;
    let mut prefix = [0u8; 4];
    w.stdout
        .read_exact(&mut prefix)
        .await
        .map_err(|_| Failure::Gone)?;
    let len = body_len(prefix, MAX_ANSWER).map_err(|e| Failure::Garbled(e.to_string()))?;
    let mut body = vec![0u8; len];
    w.stdout
        .read_exact(&mut body)
        .await
        .map_err(|_| Failure::Gone)?;
    serde_json::from_slice(&body).map_err(|e| Failure::Garbled(e.to_string()))
}

/// Ends a worker and says how it ended.
async fn end(mut w: Worker, failure: Failure) -> String {
    let _ = w.child.start_kill();
    let status = timeout(DEADLINE, w.child.wait()).await;
    match failure {
        Failure::Late => {
            format!("the symbolizer took over {DEADLINE:?} on this stack and was stopped")
        }
        Failure::Garbled(e) => {
            format!("the symbolizer gave an answer out of protocol ({e}) and was stopped")
        }
        Failure::Refused(why) => why,
        Failure::Gone => match status {
            Ok(Ok(s)) => format!("the symbolizer ended on this stack ({s})"),
            _ => "the symbolizer ended on this stack".into(),
        },
    }
}

async fn serve(
    program: PathBuf,
    mut jobs: mpsc::Receiver<Job>,
    answers: mpsc::Sender<Answered>,
    counters: Arc<SymbolizerCounters>,
) {
    let mut worker: Option<Worker> = None;
    let mut next_start = Instant::now();
    while let Some(job) = jobs.recv().await {
        let addrs: Vec<u64> = job.request.frames.iter().map(|f| f.addr).collect();
        if Instant::now() >= job.until {
            // Its records went out unnamed already: spend nothing on it.
            counters.unavailable.fetch_add(1, Ordering::Relaxed);
            let stack = Stack::unnamed(&addrs, "no one waited for it any more".into());
            let done = Answered {
                ticket: job.ticket,
                request: job.request,
                stack,
                named: false,
            };
            if answers.send(done).await.is_err() {
                return;
            }
            continue;
        }
        let outcome = match worker.take() {
            Some(w) => Ok(w),
            None if Instant::now() < next_start => Err("the symbolizer is restarting".to_string()),
            None => {
                next_start = Instant::now() + RESTART_DELAY;
                spawn(&program, &counters)
            }
        };
        let (stack, named) = match outcome {
            Err(why) => (Stack::unnamed(&addrs, why), false),
            Ok(mut w) => match timeout(DEADLINE, exchange(&mut w, &job.request)).await {
                Ok(Ok(Ok(stack))) => {
                    worker = Some(w);
                    (stack.bounded(), true)
                }
                Ok(Ok(Err(why))) => (
                    Stack::unnamed(&addrs, end(w, Failure::Refused(why)).await),
                    false,
                ),
                Ok(Err(f)) => (Stack::unnamed(&addrs, end(w, f).await), false),
                Err(_) => (Stack::unnamed(&addrs, end(w, Failure::Late).await), false),
            },
        };
        let counter = if named {
            &counters.named
        } else {
            &counters.unavailable
        };
        counter.fetch_add(1, Ordering::Relaxed);
        let done = Answered {
            ticket: job.ticket,
            request: job.request,
            stack,
            named,
        };
        if answers.send(done).await.is_err() {
            return;
        }
    }
}
