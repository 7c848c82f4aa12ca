//! Records waiting for their stacks to be named, released in call order.
//!
//! A suspicious call's record waits (off the event loop) for the
//! symbolizer process ([`super::symbolizer`]); the records of calls made
//! after it wait behind it, so every sink sees calls in the order they
//! were made. Nothing waits long: a record whose stack is not named within
//! [`WAIT`] goes out with the stack unnamed, and at most [`MAX_HELD`]
//! records are held.

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use tokio::time::Instant;

use super::record::{Enrich, Record};
use super::stack::Stack;
use super::symbolizer::client::{Answered, Busy, Symbolizer, DEADLINE, QUEUE};
use super::symbolizer::protocol::{Request, RequestKey};

/// The longest a record waits for its stack: the symbolizer's deadline for
/// it and for one request queued ahead of it.
pub const WAIT: Duration = Duration::from_secs(2 * DEADLINE.as_secs());

/// Records held in order at most; past it the oldest waiting stack is
/// given up (a flood must not grow memory or delay every sink). Well under
/// a tail client's queue (4096 by default): an answer releases what it held
/// at once, and a client must not lag for that burst.
pub const MAX_HELD: usize = 1024;

/// A record in call order; it waits while `until` is set.
struct Slot {
    record: Record,
    until: Option<Instant>,
}

impl Slot {
    fn ready(record: Record) -> Self {
        Self {
            record,
            until: None,
        }
    }
}

/// A request in flight and the records (by sequence number) it names.
struct Asked {
    request: Request,
    seqs: Vec<u64>,
}

/// Records in call order, some waiting for their stacks.
pub struct Pending {
    symbolizer: Symbolizer,
    order: VecDeque<Slot>,
    /// Sequence number of `order[0]`.
    first: u64,
    /// Request → its ticket: calls from the same place share one answer.
    tickets: HashMap<RequestKey, u64>,
    asked: HashMap<u64, Asked>,
    next_ticket: u64,
}

/// The raw addresses of a record's stack, unnamed for `why`.
fn unnamed(record: &mut Record, why: String) {
    let addrs: Vec<u64> = record
        .event
        .stack
        .as_ref()
        .map(|s| s.addrs.clone())
        .unwrap_or_default();
    record.stack = Some(Stack::unnamed(&addrs, why));
}

impl Pending {
    /// Nothing held; `symbolizer` names the stacks.
    pub fn new(symbolizer: Symbolizer) -> Self {
        Self {
            symbolizer,
            order: VecDeque::new(),
            first: 0,
            tickets: HashMap::new(),
            asked: HashMap::new(),
            next_ticket: 0,
        }
    }

    /// The symbolizer (for its counters and answers).
    pub fn symbolizer(&mut self) -> &mut Symbolizer {
        &mut self.symbolizer
    }

    /// The symbolizer's counters, shared.
    pub fn counters(&self) -> std::sync::Arc<super::symbolizer::client::SymbolizerCounters> {
        self.symbolizer.counters()
    }

    /// Takes a record, with the request its stack needs if any; appends to
    /// `out` the records that may go now, in call order.
    pub fn push(&mut self, mut record: Record, request: Option<Request>, out: &mut Vec<Record>) {
        let Some(request) = request else {
            if self.order.is_empty() {
                out.push(record);
            } else {
                self.order.push_back(Slot::ready(record));
            }
            return;
        };
        let seq = self.first + self.order.len() as u64;
        let deadline = Instant::now() + WAIT;
        let until = Some(deadline);
        if let Some(asked) = self
            .tickets
            .get(&request.key())
            .and_then(|t| self.asked.get_mut(t))
        {
            if asked.seqs.len() < MAX_HELD {
                asked.seqs.push(seq);
                self.order.push_back(Slot { record, until });
            } else {
                // A flood from one place while its stack is named: the
                // first calls get the names, the rest go out unnamed.
                let why = format!("{MAX_HELD} calls from this place wait for the symbolizer");
                unnamed(&mut record, why);
                self.order.push_back(Slot::ready(record));
            }
        } else {
            let ticket = self.next_ticket;
            self.next_ticket += 1;
            match self.symbolizer.ask(ticket, request.clone(), deadline) {
                Ok(()) => {
                    self.tickets.insert(request.key(), ticket);
                    self.asked.insert(
                        ticket,
                        Asked {
                            request,
                            seqs: vec![seq],
                        },
                    );
                    self.order.push_back(Slot { record, until });
                }
                Err(Busy(_)) => {
                    unnamed(
                        &mut record,
                        format!("{QUEUE} stacks are queued for the symbolizer"),
                    );
                    self.order.push_back(Slot::ready(record));
                }
            }
        }
        while self.order.len() > MAX_HELD {
            self.give_up_first(&format!("{MAX_HELD} records were held for the symbolizer"));
            self.release(out);
        }
        self.release(out);
    }

    /// Fills in the stacks an answer names; appends what may go now.
    pub fn answer(&mut self, a: Answered, enrich: &mut Enrich, out: &mut Vec<Record>) {
        let Some(asked) = self.asked.remove(&a.ticket) else {
            return;
        };
        self.tickets.remove(&asked.request.key());
        if a.named {
            enrich.stacks.remember(&asked.request, &a.stack);
        }
        for seq in asked.seqs {
            let Some(i) = seq.checked_sub(self.first) else {
                // Already released, unnamed, when it waited too long.
                continue;
            };
            if let Some(slot) = self.order.get_mut(i as usize) {
                if slot.until.take().is_some() {
                    slot.record.stack = Some(a.stack.clone());
                }
            }
        }
        self.release(out);
    }

    /// When the oldest waiting record's wait ends, if any waits.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.order.front().and_then(|s| s.until)
    }

    /// Gives up the stacks whose wait has ended; appends what may go now.
    pub fn expire(&mut self, out: &mut Vec<Record>) {
        let now = Instant::now();
        while self.next_deadline().is_some_and(|d| d <= now) {
            self.give_up_first(&format!("the symbolizer did not answer within {WAIT:?}"));
            self.release(out);
        }
    }

    /// Releases every held record, stacks not yet named unnamed for `why`.
    pub fn give_up_all(&mut self, why: &str, out: &mut Vec<Record>) {
        while !self.order.is_empty() {
            self.give_up_first(why);
            self.release(out);
        }
        self.asked.clear();
        self.tickets.clear();
    }

    /// Marks the first record ready, its stack unnamed, if it waits.
    fn give_up_first(&mut self, why: &str) {
        if let Some(slot) = self.order.front_mut() {
            if slot.until.take().is_some() {
                unnamed(&mut slot.record, why.to_string());
            }
        }
    }

    /// Moves the ready records at the front to `out`.
    fn release(&mut self, out: &mut Vec<Record>) {
        while self.order.front().is_some_and(|s| s.until.is_none()) {
            if let Some(s) = self.order.pop_front() {
                out.push(s.record);
            }
            self.first += 1;
        }
        self.symbolizer.counters().held.store(
            self.order.len() as u64,
            std::sync::atomic::Ordering::Relaxed,
        );
    }
}
