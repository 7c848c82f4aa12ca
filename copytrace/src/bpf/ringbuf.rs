//! Asynchronous reading of the event ring buffer.
//!
//! The ring buffer's fd becomes readable when the kernel submits records;
//! each wake-up drains everything available in one batch, so a burst costs
//! one poll rather than one per event.

use std::io;

use aya::maps::{MapData, RingBuf};
use tokio::io::{unix::AsyncFd, Interest};

use crate::model::event::{decode, CopyEvent};

/// Most records handed out per batch.
pub const MAX_BATCH: usize = 1024;

/// How often the reader looks for events that did not trigger a wake-up.
pub const STRAGGLER_POLL: std::time::Duration = std::time::Duration::from_millis(50);

/// Batches [`RingbufReader::drain`] takes at most (more than the 4 MiB ring holds).
const DRAIN_BATCHES: usize = 8;

/// Reads and decodes ring-buffer records.
pub struct RingbufReader {
    fd: AsyncFd<RingBuf<MapData>>,
    /// Records that failed to decode (layout mismatch); should stay 0.
    pub undecodable: u64,
    /// A batch filled up after readiness was cleared: read without waiting.
    pending: bool,
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
            undecodable: 0,
            pending: false,
        })
    }

    /// Takes at most [`MAX_BATCH`] records, so a producer faster than us
    /// cannot keep the caller from its other work (signals, scrapes).
    fn drain_into(ring: &mut RingBuf<MapData>, out: &mut Vec<CopyEvent>, bad: &mut u64) -> bool {
        for _ in 0..MAX_BATCH {
            let Some(item) = ring.next() else {
                return false;
            };
            match decode(&item) {
                Ok(ev) => out.push(ev),
                Err(e) => {
                    *bad += 1;
                    log::error!("{e}");
                }
            }
        }
        true
    }

    /// Waits until at least one record is available, then appends up to
    /// [`MAX_BATCH`] of them to `out`.
    pub async fn read_batch(&mut self, out: &mut Vec<CopyEvent>) -> io::Result<()> {
        let before = out.len();
        if self.pending {
            // Records were left behind after readiness was cleared.
            self.pending = Self::drain_into(self.fd.get_mut(), out, &mut self.undecodable);
            if out.len() > before {
                return Ok(());
            }
        }
        loop {
            // The kernel side wakes us only once a batch piles up; a short
            // timer picks up the stragglers.
            let Ok(guard) = tokio::time::timeout(STRAGGLER_POLL, self.fd.readable_mut()).await
            else {
                self.pending = Self::drain_into(self.fd.get_mut(), out, &mut self.undecodable);
                if out.len() > before {
                    return Ok(());
                }
                continue;
            };
            let mut guard = guard?;
            let (ring, bad) = (guard.get_inner_mut(), &mut self.undecodable);
            if Self::drain_into(ring, out, bad) {
                // A full batch: readiness stays set, more is waiting.
                return Ok(());
            }
            // Seen empty: clear readiness, then look once more, so a record
            // submitted in between is not left without a wake-up.
            guard.clear_ready();
            let (ring, bad) = (guard.get_inner_mut(), &mut self.undecodable);
            self.pending = Self::drain_into(ring, out, bad);
            if out.len() > before {
                return Ok(());
            }
        }
    }

    /// Appends what is available now without waiting: at most a ring
    /// buffer's worth, so a busy machine cannot hold up shutdown.
    pub fn drain(&mut self, out: &mut Vec<CopyEvent>) {
        for _ in 0..DRAIN_BATCHES {
            if !Self::drain_into(self.fd.get_mut(), out, &mut self.undecodable) {
                return;
            }
        }
    }
}
