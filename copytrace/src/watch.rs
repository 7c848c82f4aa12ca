//! The pipeline shared by `run` and `trace`: attach probes, then for each
//! ring-buffer batch decode → classify (in [`Record::new`]) → hand to a sink.

use std::io;

use tokio::io::{unix::AsyncFd, Interest};

use crate::bpf::{self, Attached, LoadError, LoadOptions, Probes};
use crate::decode::CopyEvent;
use crate::record::{Enrich, Record};
use crate::ringbuf_reader::RingbufReader;

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

/// Where records go. `batch_end` lets buffered sinks flush once per batch
/// rather than once per record.
pub trait RecordSink {
    /// One classified call.
    fn record(&mut self, record: &Record);
    /// The current batch is complete.
    fn batch_end(&mut self) {}
}

/// Attached probes plus everything needed to turn their events into records.
pub struct Watch {
    probes: Probes,
    counters: Option<std::sync::Arc<crate::bpf::KernelCounters>>,
    reader: RingbufReader,
    enrich: Enrich,
    batch: Vec<CopyEvent>,
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

/// Forwards aya-log records from the kernel programs to the `log` facade.
fn spawn_kernel_logger(probes: &mut Probes) {
    let Some(logger) = probes.take_logger() else {
        return;
    };
    // SAFETY: the logger owns its ring buffer fd for as long as the AsyncFd owns the logger.
    let Ok(mut fd) = (unsafe { AsyncFd::register_with_interest(logger, Interest::READABLE) })
    else {
        return;
    };
    tokio::spawn(async move {
        while let Ok(mut guard) = fd.readable_mut().await {
            guard.clear_ready();
            guard.get_inner_mut().flush();
        }
    });
}

impl Watch {
    /// Loads and attaches the probes. Must run inside a tokio runtime.
    pub fn start(opts: LoadOptions) -> Result<Self, WatchError> {
        let mut probes = bpf::load(opts)?;
        spawn_kernel_logger(&mut probes);
        let ring = probes.take_events().ok_or(WatchError::NoRingBuffer)?;
        let counters = probes.take_counters().map(std::sync::Arc::new);
        let reader = RingbufReader::new(ring).map_err(WatchError::Read)?;
        let enrich = Enrich::load();
        release_freed_heap();
        Ok(Self {
            probes,
            counters,
            reader,
            enrich,
            batch: Vec::with_capacity(256),
        })
    }

    /// The attached back-end.
    pub fn attached(&self) -> Attached {
        self.probes.attached()
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
    pub fn counters(&self) -> Option<std::sync::Arc<crate::bpf::KernelCounters>> {
        self.counters.clone()
    }

    fn emit(&mut self, sink: &mut impl RecordSink) {
        for ev in self.batch.drain(..) {
            sink.record(&Record::new(ev, &mut self.enrich));
        }
        sink.batch_end();
    }

    /// Waits for the next batch of calls and passes each to `sink`.
    pub async fn next_batch(&mut self, sink: &mut impl RecordSink) -> Result<(), WatchError> {
        self.reader
            .read_batch(&mut self.batch)
            .await
            .map_err(WatchError::Read)?;
        self.emit(sink);
        // Under a steady stream a batch is always ready; yield so the
        // runtime polls its driver (signals, metrics scrapes, tail clients).
        tokio::task::yield_now().await;
        Ok(())
    }

    /// Passes every call already in the ring buffer to `sink`, without waiting.
    pub fn drain(&mut self, sink: &mut impl RecordSink) {
        self.reader.drain(&mut self.batch);
        self.emit(sink);
    }
}
