//! Asynchronous reading of the event ring buffer.
//!
//! The ring buffer's fd becomes readable when the kernel submits records;
//! each wake-up drains everything available in one batch, so a burst costs
//! one poll rather than one per event.

use std::io;

use aya::maps::{MapData, RingBuf};
use tokio::io::{unix::AsyncFd, Interest};

use crate::decode::{decode, CopyEvent};

/// Reads and decodes ring-buffer records.
pub struct RingbufReader {
    fd: AsyncFd<RingBuf<MapData>>,
    /// Records that failed to decode (layout mismatch); should stay 0.
    pub undecodable: u64,
}

impl RingbufReader {
    /// Registers the ring buffer with the tokio reactor.
    pub fn new(ring: RingBuf<MapData>) -> io::Result<Self> {
        // SAFETY: the RingBuf owns its map fd and keeps it open, unchanged,
        // for as long as the AsyncFd owns the RingBuf.
        let fd = unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) }
            .map_err(|e| e.into_parts().1)?;
        Ok(Self { fd, undecodable: 0 })
    }

    fn drain_into(ring: &mut RingBuf<MapData>, out: &mut Vec<CopyEvent>, bad: &mut u64) {
        while let Some(item) = ring.next() {
            match decode(&item) {
                Ok(ev) => out.push(ev),
                Err(e) => {
                    *bad += 1;
                    log::error!("{e}");
                }
            }
        }
    }

    /// Waits until at least one record is available, then appends all of them to `out`.
    pub async fn read_batch(&mut self, out: &mut Vec<CopyEvent>) -> io::Result<()> {
        loop {
            let mut guard = self.fd.readable_mut().await?;
            // Clear before draining: a record submitted while we drain then
            // re-arms readiness instead of being lost with a late clear.
            guard.clear_ready();
            let before = out.len();
            let (ring, bad) = (guard.get_inner_mut(), &mut self.undecodable);
            Self::drain_into(ring, out, bad);
            if out.len() > before {
                return Ok(());
            }
        }
    }

    /// Appends whatever is available now without waiting.
    pub fn drain(&mut self, out: &mut Vec<CopyEvent>) {
        Self::drain_into(self.fd.get_mut(), out, &mut self.undecodable);
    }
}
