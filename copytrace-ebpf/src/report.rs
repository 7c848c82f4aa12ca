//! A described call's way out: the record copied into the ring buffer the
//! daemon reads, and whether it wakes the daemon.

use aya_ebpf::{
    bindings::{BPF_RB_AVAIL_DATA, BPF_RB_CONS_POS, BPF_RB_FORCE_WAKEUP, BPF_RB_NO_WAKEUP},
    macros::map,
    maps::{Array, RingBuf},
    EbpfContext,
};
use copytrace_common::{counter, status, KernelOffsets, RING_BYTES, SUSPICIOUS_WAKE_GAP_NS};

use crate::counters::{add, COUNTERS};
use crate::describe::{describe, Finished};
use crate::kread::Memory;
use crate::mappings;
use crate::record_slot;

/// Reported calls, read by the daemon: a ring of [`RING_BYTES`].
#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(RING_BYTES, 0);

/// What exit knows of the ring's reader (see [`wake_flags`]): one slot,
/// shared by every CPU.
#[map]
pub static READER: Array<ReaderWatch> = Array::with_max_entries(1, 0);

/// The state behind [`wake_flags`].
#[repr(C)]
pub struct ReaderWatch {
    /// Record bytes sent since the last look.
    pub sent: u64,
    /// Where the reader had read to at the last look, plus one.
    pub read_to: u64,
    /// Where it had read to when last woken, plus one (0: never).
    pub woken_at: u64,
    /// When a suspicious call last woke it (`bpf_ktime_get_ns`).
    pub suspicious_woken_ns: u64,
}

/// Record bytes between two looks at whether the reader is asleep (see
/// [`wake_flags`]): a few hundred records, so a look costs each record little.
const CHECK_BYTES: u64 = 128 * 1024;

/// Waiting bytes that make a sleeping reader worth waking: an eighth of
/// the ring, a batch worth the wake-up that leaves room for its latency.
const WAKE_BACKLOG: u64 = RING_BYTES as u64 / 8;

/// Writes the full record of `call` and sends it to the ring buffer, with
/// the mappings its stack points into when `MAPPINGS` (the programs built
/// for kernels with `bpf_find_vma`; see [`mappings`]).
///
/// The record is built in a per-CPU slot and copied into the ring buffer
/// with bpf_ringbuf_output, not written into a bpf_ringbuf_reserve'd slot:
/// before 6.2 the verifier cannot prune states that hold a ring-buffer
/// reservation (each path gets its own reference id), and the description
/// has too many paths for 5.10 and 6.1 to verify that way. Where it could
/// (6.2+), writing in place measured no faster here: the cost is in
/// touching the ring's cold cache lines, which the copy does once either way.
/// The record ends where its tail does ([`Event::record_len`]): the ring
/// copy is paid per byte, in cache lines the reader has yet to read.
#[inline(always)]
pub fn report<C: EbpfContext, M: Memory, const MAPPINGS: bool>(
    ctx: &C,
    call: &Finished,
    off: &KernelOffsets,
) {
    let Some(ev) = record_slot::record() else {
        return;
    };
    // SAFETY: this CPU's slot of SCRATCH, a whole `Event` that nothing
    // else uses until this program returns (tracepoint programs do not
    // nest on a CPU; see kread::read_span for fentry).
    unsafe { describe::<C, M>(ctx, call, off, ev) };
    if MAPPINGS {
        // The record is described: its stack copy is in place.
        mappings::copytrace_stack_mappings();
    }
    // SAFETY: the slot is fully written and stays this CPU's.
    let len = unsafe { (*ev).record_len() };
    let wake = wake_flags(
        call.status & status::SUSPICIOUS != 0,
        len as u64,
        call.end_ns,
    );
    // SAFETY: `len` <= size_of::<Event>() bytes of the slot, all written.
    let record = unsafe { core::slice::from_raw_parts(ev.cast::<u8>(), len) };
    if EVENTS.output::<[u8]>(record, u64::from(wake)).is_err() {
        add(&COUNTERS, counter::LOST, 1);
    }
}

/// How a record wakes the reader.
///
/// A suspicious call wakes it at once, unless another did less than
/// [`SUSPICIOUS_WAKE_GAP_NS`] before (1 ms: at most a thousand wake-ups
/// a second in a flood, and a lone call still shows at once): a reader that keeps up has read
/// everything by the next call, so the ring's adaptive wake-up (flags 0)
/// still woke it once per call, which made a flood of suspicious calls
/// cost some 3 µs more each here. The calls inside the gap are read with
/// the next wake-up or by the daemon's short look after one.
///
/// Other calls wake it only when it seems asleep with a batch waiting.
/// Each [`CHECK_BYTES`] of records, the record that completes them asks
/// the ring how far the reader has read and how much is waiting, and
/// wakes it when [`WAKE_BACKLOG`] or more is waiting, it read nothing
/// since the last look, and it was not woken at that point already. So a
/// sleeping reader is woken once the backlog passes the mark (by at most
/// one look), and a busy one, which is not asleep, at most once per pause.
///
/// A wake-up costs a self-IPI (a VM exit under virtualization), and asking
/// the ring costs a helper call: both are too dear to pay per record. The
/// daemon also drains on a timer.
#[inline(always)]
fn wake_flags(suspicious: bool, len: u64, now_ns: u64) -> u32 {
    let Some(w) = READER.get_ptr_mut(0) else {
        return if suspicious { 0 } else { BPF_RB_NO_WAKEUP };
    };
    // SAFETY: the one slot of READER. CPUs update it without atomics: a
    // lost update only delays a look or adds a wake-up, which the daemon's
    // timer bounds.
    unsafe {
        if suspicious {
            // Forced: records sent without a wake-up may be waiting ahead
            // of this one, which the adaptive wake-up would not wake for.
            if now_ns.wrapping_sub((*w).suspicious_woken_ns) < SUSPICIOUS_WAKE_GAP_NS {
                return BPF_RB_NO_WAKEUP;
            }
            (*w).suspicious_woken_ns = now_ns;
            return BPF_RB_FORCE_WAKEUP;
        }
        (*w).sent += len;
        if (*w).sent < CHECK_BYTES {
            return BPF_RB_NO_WAKEUP;
        }
        (*w).sent = 0;
        // Plus one, so that 0 can mean "never woken".
        let read_to = EVENTS.query(u64::from(BPF_RB_CONS_POS)) + 1;
        let stalled = read_to == (*w).read_to && read_to != (*w).woken_at;
        (*w).read_to = read_to;
        if stalled && EVENTS.query(u64::from(BPF_RB_AVAIL_DATA)) >= WAKE_BACKLOG {
            (*w).woken_at = read_to;
            return BPF_RB_FORCE_WAKEUP;
        }
    }
    BPF_RB_NO_WAKEUP
}
