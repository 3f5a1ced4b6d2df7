//! The byte ring: variable-length framed records in the segment, two-lock MPMC.
//!
//! Files: `frame.rs` (record format, position arithmetic, the [`Slot`] and `Record`
//! handles: every payload copy), `put.rs` (reserve, write, publish), `get.rs` (take and
//! release), `loan.rs` (write and read loans over the same steps), `stats.rs` (counters).
//!
//! # Layout
//! `head` and `tail` (in the header) are monotonically increasing byte positions; the byte
//! at position `p` lives at ring offset `p % capacity`. `tail - head` bytes are in use.
//! Bit 0 of the `tail` word is the queue's **closed** flag ([`CLOSED`]); positions are
//! multiples of 8, so the flag never mixes with a position.
//! A record is an 8-byte frame header (`len: u32`, `tag: u32`, little endian, read as one
//! `u64`) followed by `len` payload bytes, padded to a multiple of 8. Records never straddle
//! the end of the ring: a record that would is preceded by a [`SKIP`] frame covering the
//! rest of the ring. The largest record is the whole ring, so the largest message is
//! `capacity - 8` bytes.
//!
//! # Protocol
//! * Producers serialise on the producer lock. A producer writes the payload and the frame
//!   header into free space (which no consumer reads), then publishes with **one**
//!   release compare-and-swap of the `tail` word from the value it found under the lock.
//!   The swap fails if `close` set the closed bit meanwhile: then nothing is published, so no
//!   put publishes after `close` returned. A producer killed mid-copy leaves no visible
//!   record.
//! * Consumers serialise on the consumer lock. A consumer validates and copies the record
//!   at `head`, then releases it with one release-store of `head`. A consumer killed
//!   mid-copy leaves the record in place for the next consumer.
//! * A producer whose record does not fit while every published record has been consumed
//!   (the ring holds nothing but padding) takes the consumer lock and moves `head` over the
//!   [`SKIP`] records itself, so that a message of up to `capacity - 8` bytes fits into an
//!   empty queue without waiting for a consumer. Lock order: producer, then consumer;
//!   consumers never take the producer lock, so this cannot deadlock.
//! * Each side bumps a sequence word and wakes sleepers only when the waiters word is armed
//!   (someone may sleep): on **every** move of `tail` (records or padding) and of `head`. See
//!   `docs/design.md` for the table of who waits for what and who wakes them.
//! * Message counters are repaired after a crash with a write-ahead pair
//!   (`pending_tail`, `pending_count`) stored before the publishing store.
//!
//! Everything read from the segment (positions, frame headers, counters) is untrusted: it is
//! read once into a local, validated, and only then used; a violation is [`Error::Corrupt`].
//! Positions above [`MAX_POS`] are corrupt, so no position arithmetic can overflow; counters
//! are advanced with wrapping arithmetic.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
#[cfg(not(loom))]
use crate::mapping::HeapImage;
use crate::mapping::Memory;
#[cfg(loom)]
use crate::mapping::ModelMemory;
use crate::prim::{self, AtomicU32, AtomicU64, RaceCheck};
use crate::segment::{Header, Segment};
use crate::sync::{self, Acquired, Deadline, Holder, RobustLock};

mod frame;
mod get;
mod loan;
mod put;
mod stats;

pub use frame::{Record, Slot, CLOSED, FRAME};
pub use loan::{ReadLease, WriteLease};
pub use stats::Stats;

/// Value of the cached positions before a first read of the shared ones (so that a fresh
/// handle validates the shared positions on its first put and get).
const UNSET: u64 = u64::MAX;

/// Default spin time before a blocked producer or consumer sleeps in the kernel.
pub const DEFAULT_SPIN: Duration = Duration::from_micros(20);

/// Longest a `try_*` call waits for a lock held by another live holder before it gives up
/// with `Full`/`Empty` (as Python's `Queue.get(block=False)` does when its lock is busy).
pub const TRY_LOCK_WAIT: Duration = Duration::from_millis(50);

/// How a call may wait.
#[derive(Clone, Copy, Debug)]
pub enum Block {
    /// Do not wait for space or messages (`try_*`).
    No,
    /// Wait until the deadline (`None`: for ever).
    Until(Option<Instant>),
    /// Wait at most this long, counted from when the call first has to wait (the clock is
    /// not read on the fast path). `Duration::MAX` waits for ever.
    For(Duration),
}

impl Block {
    /// Block at most `timeout`.
    pub fn timeout(d: Duration) -> Block {
        Block::For(d)
    }
    /// Deadline for taking the lock and waiting. A `try_*` call waits for the lock only
    /// briefly ([`TRY_LOCK_WAIT`]): long enough for a holder mid-copy and for taking over
    /// from a dead one, not for a holder that is stopped (SIGSTOP) or hostile.
    fn deadline(self) -> Deadline {
        match self {
            Block::No => Deadline::after(TRY_LOCK_WAIT),
            Block::Until(d) => Deadline::at(d),
            Block::For(d) => Deadline::after(d),
        }
    }
}

/// A ring over memory laid out as a segment: a mapped shared [`Segment`] by default, a
/// [`HeapImage`] for tests and fuzzing ([`HeapRing`]).
pub struct Ring<M: Memory = Segment> {
    hdr: *const Header,
    data: *mut u8,
    cap: u64,
    /// `cap - 1` when the capacity is a power of two (positions map to offsets by a mask),
    /// else 0 (by a division).
    mask: u64,
    /// [`max_message`](Self::max_message), computed once.
    max_msg: usize,
    /// Largest number of queued messages (`Tasks::max_messages`, read once at open; 0:
    /// bounded by bytes only).
    max_msgs: u64,
    spin: Duration,
    /// This handle's identity for the locks, and the liveness check of other holders.
    holder: Holder,
    /// Process-local hint: a `head` value this process has seen (a lower bound of the real
    /// one, since positions only grow). Producers compute free space from it and re-read
    /// the shared `head` (a cache line the consumers write) only when it shows too little.
    cached_head: AtomicU64,
    /// Process-local hint: a `tail` position this process has seen (a lower bound).
    /// Consumers take records up to it without touching the producers' cache line.
    cached_tail: AtomicU64,
    /// Tells loom about accesses to the ring's bytes (nothing, without loom).
    race: RaceCheck,
    /// `mem.identity()`: which memory this is, for the loans a thread holds.
    key: (u64, u64),
    /// Owns the memory `hdr` and `data` point into (declared last: dropped last).
    mem: M,
}

/// A ring in process-private heap memory (tests, fuzzing; under loom, the model's memory).
#[cfg(not(loom))]
pub type HeapRing = Ring<HeapImage>;
/// A ring in process-private heap memory (tests, fuzzing; under loom, the model's memory).
#[cfg(loom)]
pub type HeapRing = Ring<ModelMemory>;

// SAFETY: `hdr` and `data` point into `mem`, which the Ring owns, which lives as long as it
// and does not move with it (the `Memory` contract); shared memory is only accessed through
// atomics and raw-pointer copies.
unsafe impl<M: Memory> Send for Ring<M> {}
// SAFETY: all methods take `&self`; mutual exclusion on the ring's bytes is provided by the
// process-shared locks in the header, which also exclude threads of one process.
unsafe impl<M: Memory> Sync for Ring<M> {}

impl<M: Memory> Ring<M> {
    /// A ring over `mem`. Claims this handle's holder id (for a segment: one file
    /// descriptor, kept for the ring's life).
    ///
    /// Errors: [`Error::Io`] if no descriptor can be had (`EMFILE`) or the file system
    /// refuses open-file-description locks.
    pub fn new(mut mem: M) -> Result<Ring<M>> {
        let hdr = mem.header();
        let (data, cap) = mem.data();
        // SAFETY: `hdr` points at the header of the memory `mem` owns (alive here), and the
        // header is all atomics (the `Memory` contract).
        let h = unsafe { &*hdr };
        let holder = mem.claim_holder(&|id| lock_names(h, id))?;
        let max_msgs = h.tasks.max_messages.load(Ordering::Relaxed);
        let key = mem.identity();
        Ok(Ring {
            key,
            hdr,
            data,
            cap,
            mask: if cap.is_power_of_two() { cap - 1 } else { 0 },
            max_msg: (cap - FRAME).min(u32::MAX as u64) as usize,
            max_msgs,
            spin: DEFAULT_SPIN,
            holder,
            cached_head: AtomicU64::new(UNSET),
            cached_tail: AtomicU64::new(UNSET),
            race: RaceCheck::new(cap),
            mem,
        })
    }

    /// The memory the ring runs over.
    pub fn memory(&self) -> &M {
        &self.mem
    }

    /// Mutable access to the memory (to change a segment's drop behaviour).
    pub fn memory_mut(&mut self) -> &mut M {
        &mut self.mem
    }

    /// Set how long a blocked call spins before sleeping in the kernel.
    pub fn set_spin(&mut self, spin: Duration) {
        self.spin = spin;
    }

    /// This handle's lock identity (for tests and the CLI).
    pub fn holder(&self) -> &Holder {
        &self.holder
    }

    #[inline]
    fn h(&self) -> &Header {
        // SAFETY: `hdr` points at the validated header inside `mem`, which we own; the
        // header is all atomics.
        unsafe { &*self.hdr }
    }

    /// The header (for the CLI and tests).
    pub fn header(&self) -> &Header {
        self.h()
    }

    /// Ring capacity in bytes.
    pub fn capacity(&self) -> u64 {
        self.cap
    }

    /// Largest message payload this ring accepts: `capacity - 8`, and at most
    /// `u32::MAX` bytes (a frame records its length in 32 bits).
    #[inline]
    pub fn max_message(&self) -> usize {
        self.max_msg
    }

    /// The error for a message of `size` bytes, larger than [`max_message`](Self::max_message)
    /// (it names the size and the limit, never a position or an index in a batch).
    #[cold]
    pub(crate) fn too_large(&self, size: usize) -> Error {
        Error::TooLarge {
            size,
            max: self.max_msg,
        }
    }

    /// Largest number of queued messages (0: bounded by bytes only).
    pub fn max_messages(&self) -> u64 {
        self.max_msgs
    }

    /// Whether the queue is closed.
    pub fn is_closed(&self) -> bool {
        self.h().prod.tail.load(Ordering::Acquire) & CLOSED != 0
    }

    /// The single-message paths' lock: `word` (the producer's when `producer`) if one
    /// compare-and-swap takes it, as [`lock`](Self::lock) would have. `None` when that
    /// would not do: the lock is held (also by a loan of this thread, which the full path
    /// reports), the holder must re-claim its id after a `fork`, or a dead holder's lock
    /// must be taken over and repaired. The caller then takes the full path.
    #[inline(always)]
    fn try_lock<'a>(&self, word: &'a AtomicU32, producer: bool) -> Option<sync::LockGuard<'a>> {
        if self.lent_by_this_thread(producer) {
            return None;
        }
        RobustLock::new(word).try_lock(self.holder.current_id()?)
    }

    /// Take the producer or consumer lock word `word`, waiting until `deadline`: one
    /// compare-and-swap when the lock is free, else [`lock_contended`](Self::lock_contended).
    #[inline(always)]
    fn lock<'a>(
        &self,
        word: &'a AtomicU32,
        deadline: &Deadline,
    ) -> Result<(sync::LockGuard<'a>, Acquired)> {
        let h = self.h();
        let me = self.holder.id(|id| lock_names(h, id))?;
        match RobustLock::new(word).try_lock(me) {
            Some(guard) => Ok((guard, Acquired::Clean)),
            None => self.lock_contended(word, me, deadline),
        }
    }

    /// [`lock`](Self::lock) when the first compare-and-swap failed: spin, sleep, take over
    /// from a dead holder, give up on a closed queue.
    #[inline(never)]
    fn lock_contended<'a>(
        &self,
        word: &'a AtomicU32,
        me: u32,
        deadline: &Deadline,
    ) -> Result<(sync::LockGuard<'a>, Acquired)> {
        let h = self.h();
        // A closed queue frees a producer waiting for its lock at once, and a consumer once
        // nothing is left to drain (`close` also wakes sleepers on both lock words).
        let producer = std::ptr::eq(word, &h.prod.lock);
        let abandon = || {
            let t = h.prod.tail.load(Ordering::Acquire);
            let drained = t & !CLOSED == h.cons.head.load(Ordering::Acquire);
            (t & CLOSED != 0 && (producer || drained)).then_some(Error::Closed)
        };
        RobustLock::new(word).lock_or_abandon(me, &self.holder, deadline, &abandon)
    }

    /// Take the producer or consumer lock (repairing after a dead holder) and return its
    /// guard (test support: stands for a put or get in progress).
    pub fn hold_lock(&self, producer: bool) -> Result<sync::LockGuard<'_>> {
        if producer {
            self.lock_producer(&Deadline::never())
        } else {
            self.lock_consumer(&Deadline::never())
        }
    }

    /// Close the queue: later puts fail with [`Error::Closed`]; gets drain what is left, then
    /// fail with `Closed`; every sleeper wakes.
    ///
    /// One atomic `fetch_or` of the closed bit into the `tail` word: it takes no lock, so a
    /// stopped or hostile lock holder cannot delay it, and a put in progress publishes only
    /// if its compare-and-swap of `tail` comes first: no put publishes after `close` returns.
    pub fn close(&self) {
        let h = self.h();
        h.prod.tail.fetch_or(CLOSED, Ordering::SeqCst);
        sync::notify_all(&h.prod.data_seq, &h.shared.consumers_waiting);
        sync::notify_all(&h.cons.space_seq, &h.shared.producers_waiting);
        // Callers waiting for a lock give up on a closed queue (see `lock`): wake them too.
        prim::futex_wake(&h.prod.lock, i32::MAX);
        prim::futex_wake(&h.cons.lock, i32::MAX);
    }
}

#[cfg(not(loom))]
impl Ring<HeapImage> {
    /// A fresh ring of `capacity` bytes in process-private heap memory (for tests and
    /// fuzzing): same header, framing and code paths as a shared segment.
    pub fn in_memory(capacity: usize) -> Result<HeapRing> {
        Ring::new(HeapImage::new(capacity)?)
    }

    /// A ring over a copy of `bytes` taken as a whole segment image ([`HeapImage::from_bytes`]).
    /// Any content is accepted as input: the result is an error or a ring whose operations
    /// return errors, never a crash.
    pub fn from_bytes(bytes: &[u8]) -> Result<HeapRing> {
        Ring::new(HeapImage::from_bytes(bytes)?)
    }

    /// A copy of the whole segment image (header and ring bytes).
    pub fn to_bytes(&self) -> Vec<u8> {
        self.mem.to_bytes()
    }
}

#[cfg(loom)]
impl Ring<ModelMemory> {
    /// A fresh ring of `capacity` bytes for the loom model: a typed header (loom's atomics
    /// cannot be made from bytes) and a separate buffer for the ring's bytes; no spinning
    /// (there is no clock under loom).
    pub fn in_memory(capacity: usize) -> Result<HeapRing> {
        let cap = crate::segment::normalize_capacity(capacity)?;
        let mut r = Ring::new(ModelMemory::new(cap))?;
        r.spin = Duration::ZERO;
        Ok(r)
    }
}

/// Whether `id` stands in one of the segment's lock words (a holder id not to re-use).
fn lock_names(h: &Header, id: u32) -> bool {
    [&h.prod.lock, &h.cons.lock]
        .iter()
        .any(|w| w.load(Ordering::Relaxed) & sync::HOLDER_MASK == id)
}

#[cfg(all(test, loom))]
mod loom_tests;

#[cfg(all(test, not(loom)))]
mod tests;
