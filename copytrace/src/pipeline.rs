//! The pipeline shared by `run` and `trace`: attach probes ([`crate::bpf`]),
//! then for each ring-buffer batch decode ([`crate::model::event`]) →
//! classify and enrich ([`Record::new`]) → hand to a sink ([`crate::sink`]).
//! A record whose stack needs naming waits, off the loop, for the
//! symbolizer process ([`crate::enrich::symbolizer`]), and the records
//! after it wait behind it ([`Pending`]): sinks see calls in the order they
//! were made, a few seconds late at worst.
//!
//! The kernel side reports every call only while someone holds its
//! [`ReportAll`] switch; the sinks say which records they want ([`Demand`])
//! and the pipeline builds records only for calls a sink will show.

use std::io;
use std::sync::Arc;

use crate::bpf::counters::KernelCounters;
use crate::bpf::ringbuf::{ReadCounters, RingbufReader};
use crate::bpf::{self, LoadError, LoadOptions, Probes, ReportAll};
use crate::enrich::pending::Pending;
use crate::enrich::record::{Enrich, Record};
use crate::enrich::symbolizer::client::{Symbolizer, SymbolizerCounters};
use crate::model::backend::{Backend, ProbeChoice};
use crate::model::classify::report_policy;
use crate::model::event::CopyEvent;
use crate::model::fs_magic;
use crate::sink::RecordSink;

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
    pending: Pending,
    /// Records ready for the sinks.
    out: Vec<Record>,
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
            pending: Pending::new(Symbolizer::start()),
            out: Vec::new(),
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
    pub fn read_counters(&self) -> Arc<ReadCounters> {
        self.read.clone()
    }

    /// The switch that makes the kernel side report every call while held
    /// (it always counts every call).
    pub fn report_all(&self) -> Option<ReportAll> {
        self.report_all.clone()
    }

    /// The symbolizer's counters, shared.
    pub fn symbolizer_counters(&self) -> Arc<SymbolizerCounters> {
        self.pending.counters()
    }

    /// Hands the records that may go now to `sink`.
    fn flush(&mut self, sink: &mut impl RecordSink) {
        for r in self.out.drain(..) {
            sink.record(&r);
        }
        sink.batch_end();
    }

    fn emit(&mut self, sink: &mut impl RecordSink) {
        for ev in self.batch.drain(..) {
            let (record, request) = Record::new(ev, &mut self.enrich);
            self.pending.push(record, request, &mut self.out);
        }
        self.flush(sink);
    }

    /// Waits for the next batch of calls, a named stack or the end of a
    /// stack's wait, and passes each wanted record to `sink`, in call order.
    pub async fn next_batch(&mut self, sink: &mut impl RecordSink) -> Result<(), WatchError> {
        let deadline = self.pending.next_deadline();
        let far = tokio::time::Instant::now() + std::time::Duration::from_secs(3600);
        tokio::select! {
            read = self.reader.read_batch(|| sink.demand(), &mut self.batch, &self.read) => {
                read.map_err(WatchError::Read)?;
                self.emit(sink);
            }
            Some(answer) = self.pending.symbolizer().answer() => {
                self.pending.answer(answer, &mut self.enrich, &mut self.out);
                self.flush(sink);
            }
            _ = tokio::time::sleep_until(deadline.unwrap_or(far)), if deadline.is_some() => {
                self.pending.expire(&mut self.out);
                self.flush(sink);
            }
        }
        // Under a steady stream a batch is always ready; yield so the
        // runtime polls its driver (signals, metrics scrapes, tail clients).
        tokio::task::yield_now().await;
        Ok(())
    }

    /// Passes every wanted call already in the ring buffer to `sink`, and
    /// the records held for their stacks once named (or, past their wait,
    /// unnamed).
    pub async fn finish(&mut self, sink: &mut impl RecordSink) {
        self.reader
            .drain(sink.demand(), &mut self.batch, &self.read);
        self.emit(sink);
        while let Some(deadline) = self.pending.next_deadline() {
            let answer =
                tokio::time::timeout_at(deadline, self.pending.symbolizer().answer()).await;
            match answer {
                Ok(Some(a)) => self.pending.answer(a, &mut self.enrich, &mut self.out),
                Ok(None) => break,
                Err(_) => self.pending.expire(&mut self.out),
            }
        }
        self.pending.give_up_all(
            "copytrace stopped before the symbolizer answered",
            &mut self.out,
        );
        self.flush(sink);
    }
}
