//! Counters and state read from the header: how many messages are queued, whether the
//! ring is full, and the [`Stats`] snapshot.

use std::sync::atomic::Ordering;

use super::frame::CLOSED;
use super::Ring;
use crate::mapping::Memory;
use crate::segment;
use crate::sync;

/// A snapshot of a queue's state and counters, read from its header.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Stats {
    /// Ring capacity in bytes.
    pub capacity: u64,
    /// Bytes in use (records, padding and frame headers).
    pub used_bytes: u64,
    /// Messages queued now.
    pub len: u64,
    /// Messages put, ever.
    pub puts: u64,
    /// Messages got, ever.
    pub gets: u64,
    /// Payload bytes put, ever.
    pub put_bytes: u64,
    /// Payload bytes got, ever.
    pub get_bytes: u64,
    /// Times a producer found the queue full and returned `Full` or had to sleep (finding
    /// it full within the spin phase is not counted: that keeps this shared counter off
    /// the fast path).
    pub full_events: u64,
    /// Times a consumer found the queue empty and returned `Empty` or had to sleep (not
    /// counted within the spin phase, like `full_events`).
    pub empty_events: u64,
    /// 1 while a producer may be asleep waiting for room, else 0: bit 0 ("armed") of the
    /// header's waiters word, set by a producer before it sleeps and cleared by the next
    /// wake-up that woke every sleeper (or by the sleeper itself on waking, when it was the
    /// only one). Not a count: no exact count of sleepers is kept, so that one killed asleep
    /// leaves nothing behind but this bit, which the next `put`/`get` clears (see
    /// `docs/design.md`, "Sleepers a dead process leaves behind").
    pub producers_waiting: u32,
    /// 1 while a consumer may be asleep waiting for a message, else 0; like
    /// `producers_waiting`.
    pub consumers_waiting: u32,
    /// Whether the queue is closed.
    pub closed: bool,
    /// Holder id of the handle holding the producer lock (0: free; ids are random per handle).
    pub producer_lock_holder: u32,
    /// Holder id of the handle holding the consumer lock (0: free).
    pub consumer_lock_holder: u32,
    /// Creator's pid.
    pub creator_pid: u32,
    /// Whether the creator is still running, as seen from this process's PID namespace
    /// (a creator in another namespace looks dead). Informational: whether a queue is
    /// stale is decided by its attach marker (`MAPPED_BYTE` in docs/design.md), not by this.
    pub creator_alive: bool,
    /// Created to outlive its creator (`Options::keep_on_drop(true)`): never stale.
    pub persistent: bool,
    /// Creation time (seconds since the Unix epoch).
    pub created_unix: u64,
    /// Codec id (0 raw bytes, 1 postcard, 2 pod; primitives have their own).
    pub codec: u32,
    /// Message type name recorded by the creator.
    pub type_name: String,
}

impl<M: Memory> Ring<M> {
    /// Messages queued now.
    pub fn len(&self) -> usize {
        let h = self.h();
        let gets = h.cons.get_count.load(Ordering::Acquire);
        let puts = h.prod.put_count.load(Ordering::Acquire);
        puts.saturating_sub(gets) as usize
    }

    /// Whether no message is queued now.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether a put would find no room now: the message bound is reached, or not one
    /// byte of the ring is free (not even an empty message fits).
    pub fn is_full(&self) -> bool {
        let h = self.h();
        if self.at_message_bound(h.prod.put_count.load(Ordering::Acquire)) {
            return true;
        }
        let head = h.cons.head.load(Ordering::Acquire);
        let tail = h.prod.tail.load(Ordering::Acquire) & !CLOSED;
        tail.wrapping_sub(head) >= self.cap
    }

    /// A snapshot of the header's state and counters.
    pub fn stats(&self) -> Stats {
        let h = self.h();
        let head = h.cons.head.load(Ordering::Acquire);
        let tail = h.prod.tail.load(Ordering::Acquire);
        let pid = h.id.creator_pid.load(Ordering::Relaxed);
        Stats {
            capacity: self.cap,
            used_bytes: (tail & !CLOSED).wrapping_sub(head).min(self.cap),
            len: self.len() as u64,
            puts: h.prod.put_count.load(Ordering::Relaxed),
            gets: h.cons.get_count.load(Ordering::Relaxed),
            put_bytes: h.prod.put_bytes.load(Ordering::Relaxed),
            get_bytes: h.cons.get_bytes.load(Ordering::Relaxed),
            full_events: h.shared.full_events.load(Ordering::Relaxed),
            empty_events: h.shared.empty_events.load(Ordering::Relaxed),
            producers_waiting: crate::sync::armed(
                h.shared.producers_waiting.load(Ordering::Relaxed),
            ),
            consumers_waiting: crate::sync::armed(
                h.shared.consumers_waiting.load(Ordering::Relaxed),
            ),
            closed: tail & CLOSED != 0,
            producer_lock_holder: h.prod.lock.load(Ordering::Relaxed) & sync::HOLDER_MASK,
            consumer_lock_holder: h.cons.lock.load(Ordering::Relaxed) & sync::HOLDER_MASK,
            creator_pid: pid,
            creator_alive: sync::process_alive(pid, h.id.creator_start.load(Ordering::Relaxed)),
            persistent: h.shared.flags.load(Ordering::Relaxed) & segment::FLAG_PERSISTENT != 0,
            created_unix: h.id.created_unix.load(Ordering::Relaxed),
            codec: h.id.codec.load(Ordering::Relaxed),
            type_name: h.type_name(),
        }
    }
}
