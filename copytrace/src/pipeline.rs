//! The pipeline shared by `run` and `trace`: attach probes ([`crate::bpf`]),
//! then for each ring-buffer batch decode ([`crate::model::event`]) →
//! classify and enrich ([`Record::new`]) → hand to a sink ([`crate::sink`]).
//! A record whose stack needs naming waits, off the loop, for the
//! symbolizer process ([`crate::enrich::symbolizer`]); later records do
//! not wait for it, so a suspicious call may reach the sinks after calls
//! made up to [`DEADLINE`] later.
//!
//! The kernel side reports every call only while someone holds its
//! [`ReportAll`] switch; the sinks say which records they want ([`Demand`])
//! and the pipeline builds records only for calls a sink will show.

use std::collections::HashMap;
use std::io;
use std::sync::Arc;

use crate::bpf::counters::KernelCounters;
use crate::bpf::ringbuf::{ReadCounters, RingbufReader};
use crate::bpf::{self, LoadError, LoadOptions, Probes, ReportAll};
use crate::enrich::record::{Enrich, Record};
use crate::enrich::stack::Stack;
use crate::enrich::symbolizer::client::{
    Answered, Busy, Symbolizer, SymbolizerCounters, DEADLINE, QUEUE,
};
use crate::enrich::symbolizer::protocol::Request;
use crate::model::backend::{Backend, ProbeChoice};
use crate::model::classify::report_policy;
use crate::model::event::CopyEvent;
use crate::model::fs_magic;
use crate::sink::RecordSink;

/// The pipeline's own counters, shared with the metrics.
pub type PipelineCounters = ReadCounters;

/// Errors that end a watch.
#[derive(Debug, thiserror::Error)]
pub enum WatchError {
    /// Probes could not be loaded or attached.
    #[error(transparent)]
    Load(#[from] LoadError),
    /// The event ring buffer is missing from the object (build mismatch).
    #[error("the eBPF object has no EVENTS ring buffer")]
    NoRingBuffer,
    /// Polling the ring buffer failed.
    #[error("reading the event ring buffer failed")]
    Read(#[source] io::Error),
}

/// What to load: the user's back-end choice and whom to follow, with the
/// report table built from the verdict rules and the filesystem registry.
pub fn load_options(probe: ProbeChoice, follow_tgid: u32) -> LoadOptions {
    LoadOptions {
        probe,
        follow_tgid,
        policy: report_policy(),
        size_truths: fs_magic::untrustworthy_sizes(),
        count_by_cgroup: false,
        stacks: true,
    }
}

/// Attached probes plus everything needed to turn their events into records.
pub struct Watch {
    probes: Probes,
    counters: Option<Arc<KernelCounters>>,
    read: Arc<ReadCounters>,
    report_all: Option<ReportAll>,
    reader: RingbufReader,
    enrich: Enrich,
    batch: Vec<CopyEvent>,
    naming: Naming,
}

/// Records that wait past this many for the symbolizer get their stack
/// unnamed at once (a flood from many places must not grow memory).
const MAX_WAITING: usize = 4 * QUEUE;

/// Records waiting for their stack to be named.
struct Naming {
    symbolizer: Symbolizer,
    /// Ticket → the request and the records that share it.
    waiting: HashMap<u64, (Request, Vec<Record>)>,
    /// Request → its ticket: calls from the same place share one answer.
    tickets: HashMap<Request, u64>,
    records: usize,
    next_ticket: u64,
}

impl Naming {
    fn new() -> Self {
        Self {
            symbolizer: Symbolizer::start(),
            waiting: HashMap::new(),
            tickets: HashMap::new(),
            records: 0,
            next_ticket: 0,
        }
    }

    /// Takes `record` until its stack is named, or returns it with the
    /// stack unnamed when too many wait already.
    fn wait(&mut self, mut record: Record, request: Request) -> Option<Record> {
        let unnamed = |record: &mut Record, request: &Request, why: String| {
            let addrs: Vec<u64> = request.frames.iter().map(|f| f.addr).collect();
            record.stack = Some(Stack::unnamed(&addrs, why));
        };
        if self.records >= MAX_WAITING {
            unnamed(
                &mut record,
                &request,
                format!("{MAX_WAITING} stacks are waiting for the symbolizer"),
            );
            return Some(record);
        }
        if let Some(t) = self.tickets.get(&request) {
            if let Some((_, records)) = self.waiting.get_mut(t) {
                records.push(record);
                self.records += 1;
                return None;
            }
        }
        let ticket = self.next_ticket;
        self.next_ticket += 1;
        match self.symbolizer.ask(ticket, request.clone()) {
            Ok(()) => {
                self.tickets.insert(request.clone(), ticket);
                self.waiting.insert(ticket, (request, vec![record]));
                self.records += 1;
                None
            }
            Err(Busy(request)) => {
                unnamed(
                    &mut record,
                    &request,
                    format!("{QUEUE} stacks are queued for the symbolizer"),
                );
                Some(record)
            }
        }
    }

    /// The records an answer completes.
    fn complete(&mut self, a: Answered, enrich: &mut Enrich) -> Vec<Record> {
        let Some((request, mut records)) = self.waiting.remove(&a.ticket) else {
            return Vec::new();
        };
        self.tickets.remove(&request);
        self.records -= records.len();
        if a.named {
            enrich.stacks.remember(request, &a.stack);
        }
        for r in &mut records {
            r.stack = Some(a.stack.clone());
        }
        records
    }

    /// Every waiting record, its stack unnamed for `why`.
    fn give_up(&mut self, why: &str) -> Vec<Record> {
        self.tickets.clear();
        self.records = 0;
        let mut out = Vec::new();
        for (_, (request, records)) in self.waiting.drain() {
            let addrs: Vec<u64> = request.frames.iter().map(|f| f.addr).collect();
            for mut r in records {
                r.stack = Some(Stack::unnamed(&addrs, why.to_string()));
                out.push(r);
            }
        }
        out
    }
}

/// Gives back to the system the heap that start-up used and freed (BTF
/// parsing, reading kallsyms: tens of MiB); glibc would otherwise keep it
/// resident for the daemon's whole life.
fn release_freed_heap() {
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only releases free memory.
    unsafe {
        libc::malloc_trim(0);
    }
}

impl Watch {
    /// Loads and attaches the probes. Must run inside a tokio runtime.
    pub fn start(opts: LoadOptions) -> Result<Self, WatchError> {
        let mut probes = bpf::load(opts)?;
        probes.forward_kernel_logs();
        let ring = probes.take_events().ok_or(WatchError::NoRingBuffer)?;
        let counters = probes.take_counters().map(Arc::new);
        let report_all = probes.take_report_all();
        let reader = RingbufReader::new(ring).map_err(WatchError::Read)?;
        let enrich = Enrich::load();
        release_freed_heap();
        Ok(Self {
            probes,
            counters,
            read: Arc::new(ReadCounters::default()),
            report_all,
            reader,
            enrich,
            batch: Vec::with_capacity(256),
            naming: Naming::new(),
        })
    }

    /// The attached back-end.
    pub fn backend(&self) -> Backend {
        self.probes.backend()
    }

    /// How the attached programs read kernel structs.
    pub fn kernel_reads(&self) -> crate::bpf::KernelReads {
        self.probes.kernel_reads()
    }

    /// Why `auto` did not use fentry, if it fell back.
    pub fn fallback_reason(&self) -> Option<&str> {
        self.probes.fallback_reason()
    }

    /// Events the kernel dropped because the ring buffer was full.
    pub fn lost_events(&self) -> u64 {
        self.counters.as_ref().map_or(0, |c| c.lost_events())
    }

    /// The kernel-side exact counts, shared.
    pub fn counters(&self) -> Option<Arc<KernelCounters>> {
        self.counters.clone()
    }

    /// The pipeline's own counters, shared.
    pub fn read_counters(&self) -> Arc<PipelineCounters> {
        self.read.clone()
    }

    /// The switch that makes the kernel side report every call while held
    /// (it always counts every call).
    pub fn report_all(&self) -> Option<ReportAll> {
        self.report_all.clone()
    }

    /// The symbolizer's counters, shared.
    pub fn symbolizer_counters(&self) -> Arc<SymbolizerCounters> {
        self.naming.symbolizer.counters()
    }

    fn emit(&mut self, sink: &mut impl RecordSink) {
        for ev in self.batch.drain(..) {
            let (record, request) = Record::new(ev, &mut self.enrich);
            let ready = match request {
                None => Some(record),
                Some(req) => self.naming.wait(record, req),
            };
            if let Some(r) = ready {
                sink.record(&r);
            }
        }
        sink.batch_end();
    }

    /// Waits for the next batch of calls, or the next named stack, and
    /// passes each wanted record to `sink`.
    pub async fn next_batch(&mut self, sink: &mut impl RecordSink) -> Result<(), WatchError> {
        tokio::select! {
            read = self.reader.read_batch(|| sink.demand(), &mut self.batch, &self.read) => {
                read.map_err(WatchError::Read)?;
                self.emit(sink);
            }
            Some(answer) = self.naming.symbolizer.answer() => {
                for r in self.naming.complete(answer, &mut self.enrich) {
                    sink.record(&r);
                }
                sink.batch_end();
            }
        }
        // Under a steady stream a batch is always ready; yield so the
        // runtime polls its driver (signals, metrics scrapes, tail clients).
        tokio::task::yield_now().await;
        Ok(())
    }

    /// Passes every wanted call already in the ring buffer to `sink`, and
    /// the records waiting for their stacks once named (or, past the
    /// symbolizer's deadline, unnamed).
    pub async fn finish(&mut self, sink: &mut impl RecordSink) {
        self.reader
            .drain(sink.demand(), &mut self.batch, &self.read);
        self.emit(sink);
        let until = tokio::time::Instant::now() + DEADLINE + DEADLINE;
        while !self.naming.waiting.is_empty() {
            match tokio::time::timeout_at(until, self.naming.symbolizer.answer()).await {
                Ok(Some(answer)) => {
                    for r in self.naming.complete(answer, &mut self.enrich) {
                        sink.record(&r);
                    }
                }
                Ok(None) | Err(_) => break,
            }
        }
        for r in self
            .naming
            .give_up("copytrace stopped before the symbolizer answered")
        {
            sink.record(&r);
        }
        sink.batch_end();
    }
}
