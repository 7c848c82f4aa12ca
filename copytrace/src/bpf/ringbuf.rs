//! Asynchronous reading of the event ring buffer.
//!
//! The ring buffer's fd becomes readable when the kernel submits records;
//! each wake-up drains everything available in one batch, so a burst costs
//! one poll rather than one per event. Records nobody will show are counted
//! and dropped without being decoded.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use aya::maps::{MapData, RingBuf};
use copytrace_common::SUSPICIOUS_WAKE_GAP_NS;
use tokio::io::{unix::AsyncFd, Interest};

use crate::model::event::{decode, peek_suspicious, CopyEvent};

/// Most records handed out per batch.
pub const MAX_BATCH: usize = 1024;

/// How often the reader looks for events that did not trigger a wake-up.
pub const STRAGGLER_POLL: Duration = Duration::from_millis(50);

/// How soon the reader looks again after a wake-up brought records: the
/// kernel wakes it for at most one suspicious call per
/// [`SUSPICIOUS_WAKE_GAP_NS`], so the calls right after that one are
/// waiting without a wake-up of their own. Twice the gap: past its end.
pub const AFTER_WAKE_LOOK: Duration = Duration::from_nanos(2 * SUSPICIOUS_WAKE_GAP_NS);

/// Batches [`RingbufReader::drain`] takes at most (more than the 4 MiB ring holds).
const DRAIN_BATCHES: usize = 8;

/// What the reader counts as it goes.
#[derive(Debug, Default)]
pub struct ReadCounters {
    /// Records read from the ring buffer.
    pub received: AtomicU64,
    /// Records that failed to decode (layout mismatch); should stay 0.
    pub undecodable: AtomicU64,
}

/// Reads and decodes ring-buffer records.
pub struct RingbufReader {
    fd: AsyncFd<RingBuf<MapData>>,
    /// A batch filled up after readiness was cleared: read without waiting.
    pending: bool,
    /// The last wait ended in a wake-up that brought records: wait
    /// [`AFTER_WAKE_LOOK`] rather than [`STRAGGLER_POLL`] next.
    look_soon: bool,
}

/// Takes at most [`MAX_BATCH`] records (so a producer faster than us
/// cannot keep the caller from its other work: signals, scrapes), decoding
/// those `demand` wants; true when records may remain.
fn drain_into(
    ring: &mut RingBuf<MapData>,
    demand: Demand,
    out: &mut Vec<CopyEvent>,
    counts: &ReadCounters,
) -> bool {
    for _ in 0..MAX_BATCH {
        let Some(item) = ring.next() else {
            return false;
        };
        counts.received.fetch_add(1, Ordering::Relaxed);
        let wanted = match demand {
            Demand::Nothing => false,
            Demand::Suspicious => peek_suspicious(&item),
            Demand::Every => true,
        };
        if !wanted {
            continue;
        }
        match decode(&item) {
            Ok(ev) => out.push(ev),
            Err(e) => {
                counts.undecodable.fetch_add(1, Ordering::Relaxed);
                log::error!("{e}");
            }
        }
    }
    true
}

impl RingbufReader {
    /// Registers the ring buffer with the tokio reactor.
    pub fn new(ring: RingBuf<MapData>) -> io::Result<Self> {
        // SAFETY: the RingBuf owns its map fd and keeps it open, unchanged,
        // for as long as the AsyncFd owns the RingBuf.
        let fd = unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) }
            .map_err(|e| e.into_parts().1)?;
        Ok(Self {
            fd,
            pending: false,
            look_soon: false,
        })
    }

    /// Waits until at least one record is available, then reads up to
    /// [`MAX_BATCH`] of them, appending to `out` the ones `demand` wants.
    /// `demand` is asked when the records are read, not before the wait: a
    /// `tail --all` client that connects while the reader sleeps must get
    /// the calls that woke it.
    pub async fn read_batch(
        &mut self,
        demand: impl Fn() -> Demand,
        out: &mut Vec<CopyEvent>,
        counts: &ReadCounters,
    ) -> io::Result<()> {
        let seen = counts.received.load(Ordering::Relaxed);
        let got = |counts: &ReadCounters| counts.received.load(Ordering::Relaxed) > seen;
        if self.pending {
            // Records were left behind after readiness was cleared.
            self.pending = drain_into(self.fd.get_mut(), demand(), out, counts);
            if got(counts) {
                return Ok(());
            }
        }
        loop {
            // The kernel side wakes us only once a batch piles up (or for a
            // suspicious call, at most once a millisecond); timers pick up
            // the rest: soon after a wake-up, later when idle.
            let wait = if self.look_soon {
                AFTER_WAKE_LOOK
            } else {
                STRAGGLER_POLL
            };
            let Ok(guard) = tokio::time::timeout(wait, self.fd.readable_mut()).await else {
                self.look_soon = false;
                self.pending = drain_into(self.fd.get_mut(), demand(), out, counts);
                if got(counts) {
                    return Ok(());
                }
                continue;
            };
            let mut guard = guard?;
            if drain_into(guard.get_inner_mut(), demand(), out, counts) {
                // A full batch: readiness stays set, more is waiting.
                self.look_soon = true;
                return Ok(());
            }
            // Seen empty: clear readiness, then look once more, so a record
            // submitted in between is not left without a wake-up.
            guard.clear_ready();
            self.pending = drain_into(guard.get_inner_mut(), demand(), out, counts);
            if got(counts) {
                self.look_soon = true;
                return Ok(());
            }
        }
    }

    /// Reads what is available now without waiting: at most a ring
    /// buffer's worth, so a busy machine cannot hold up shutdown.
    pub fn drain(&mut self, demand: Demand, out: &mut Vec<CopyEvent>, counts: &ReadCounters) {
        for _ in 0..DRAIN_BATCHES {
            if !drain_into(self.fd.get_mut(), demand, out, counts) {
                return;
            }
        }
    }
}

/// Which calls a sink needs records of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Demand {
    /// None: counts are enough.
    Nothing,
    /// The suspicious ones.
    Suspicious,
    /// Every call.
    Every,
}
