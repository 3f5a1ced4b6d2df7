//! The byte ring: variable-length framed records in the segment, two-lock MPMC.
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
//! * Each side bumps a sequence word and wakes sleepers only when the waiter count says
//!   someone sleeps: on **every** move of `tail` (records or padding) and of `head`. See
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
use crate::prim::{self, AtomicU32, AtomicU64, RaceCheck};
use crate::segment::{self, Header, Segment};
use crate::sync::{self, Acquired, Deadline, Holder, RobustLock};

/// Frame tag of a message record.
pub const MSG: u32 = 0x5153_4D31;
/// Frame tag of a skip record (padding up to the end of the ring).
pub const SKIP: u32 = 0x5153_4B50;
/// Frame header size in bytes.
pub const FRAME: u64 = 8;
/// Bit of the `tail` word that marks the queue closed.
pub const CLOSED: u64 = 1;
/// Largest valid position (2^62): a queue would need decades at memory speed to get here,
/// and keeping positions below it makes every `position + length` sum overflow-free.
pub const MAX_POS: u64 = 1 << 62;

/// Value of the cached positions before a first read of the shared ones (so that a fresh
/// handle validates the shared positions on its first put and get).
const UNSET: u64 = u64::MAX;

/// Default spin time before a blocked producer or consumer sleeps in the kernel.
pub const DEFAULT_SPIN: Duration = Duration::from_micros(20);

/// Longest a spinning producer waits for a quarter of the ring rather than for its record.
const HYSTERESIS_MAX: Duration = Duration::from_micros(50);

/// The length field of a [`SKIP`] record that pads `to_end` bytes to the end of the ring:
/// `to_end - 8`, kept to 32 bits (rings above 4 GiB pad more than a `u32` holds; both the
/// writer and the reader compare the same truncated value, and the record's extent comes
/// from its offset, never from this field).
#[inline]
fn skip_len(to_end: u64) -> u32 {
    (to_end - FRAME) as u32
}

#[inline]
fn align8(n: u64) -> u64 {
    (n + 7) & !7
}

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

/// Heap memory laid out like a segment, for in-process rings (tests and fuzzing). Allocated
/// once as raw memory and only ever reached through the raw pointer: no `Box` or reference
/// to it is moved or re-borrowed while the ring's pointers derived from it are in use.
struct HeapMapping {
    ptr: *mut u8,
    layout: std::alloc::Layout,
}

impl HeapMapping {
    fn zeroed(len: usize) -> HeapMapping {
        let layout = std::alloc::Layout::from_size_align(len.max(4096), 4096)
            .expect("segment image size fits a Layout");
        // SAFETY: the layout has a non-zero size.
        let ptr = unsafe { std::alloc::alloc_zeroed(layout) };
        if ptr.is_null() {
            std::alloc::handle_alloc_error(layout);
        }
        HeapMapping { ptr, layout }
    }
}

impl Drop for HeapMapping {
    fn drop(&mut self) {
        // SAFETY: allocated in `zeroed` with this layout, freed once.
        unsafe { std::alloc::dealloc(self.ptr, self.layout) }
    }
}

/// Memory of a ring under the loom model: loom's atomics cannot be conjured from zeroed
/// bytes, so the header is a typed value built with their constructors, and the ring's
/// bytes a separate buffer. Both are reached only through the raw pointers.
#[cfg(loom)]
struct ModelMemory {
    hdr: *mut Header,
    _data: HeapMapping,
}

#[cfg(loom)]
impl Drop for ModelMemory {
    fn drop(&mut self) {
        // SAFETY: `hdr` came from `Box::into_raw` in `Ring::in_memory` and is freed once.
        drop(unsafe { Box::from_raw(self.hdr) });
    }
}

enum Backing {
    Segment(Segment),
    /// Owns the memory `hdr` and `data` point into.
    #[cfg(not(loom))]
    Heap(#[allow(dead_code)] HeapMapping),
    /// Owns the memory `hdr` and `data` point into.
    #[cfg(loom)]
    Model(#[allow(dead_code)] ModelMemory),
}

/// A ring over a mapped segment (or heap memory shaped like one).
pub struct Ring {
    backing: Backing,
    hdr: *const Header,
    data: *mut u8,
    cap: u64,
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
}

// SAFETY: `hdr` and `data` point into `backing`, which the Ring owns and which lives as long
// as it; shared memory is only accessed through atomics and raw-pointer copies.
unsafe impl Send for Ring {}
// SAFETY: all methods take `&self`; mutual exclusion on the ring's bytes is provided by the
// process-shared locks in the header, which also exclude threads of one process.
unsafe impl Sync for Ring {}

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
    /// Producers sleeping now.
    pub producers_waiting: u32,
    /// Consumers sleeping now.
    pub consumers_waiting: u32,
    /// Whether the queue is closed.
    pub closed: bool,
    /// Holder id of the handle holding the producer lock (0: free; see [`sync::Holder`]).
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
    /// Codec id (see [`segment::codec_id`]).
    pub codec: u32,
    /// Message type name recorded by the creator.
    pub type_name: String,
}

impl Ring {
    /// A ring over a created or opened segment. Claims this handle's holder id (one file
    /// descriptor, kept for the ring's life).
    ///
    /// Errors: [`Error::Io`] if no descriptor can be had (`EMFILE`) or the file system
    /// refuses open-file-description locks.
    pub fn new(mut seg: Segment) -> Result<Ring> {
        let hdr = seg.header() as *const Header;
        let (data, cap) = seg.ring();
        // SAFETY: `hdr` points at the header of the mapping `seg` owns (alive here).
        let h = unsafe { &*hdr };
        let holder = seg.claim_holder(|id| lock_names(h, id))?;
        let max_msgs = h.tasks.max_messages.load(Ordering::Relaxed);
        Ok(Ring {
            backing: Backing::Segment(seg),
            hdr,
            data,
            cap,
            max_msgs,
            spin: DEFAULT_SPIN,
            holder,
            cached_head: AtomicU64::new(UNSET),
            cached_tail: AtomicU64::new(UNSET),
            race: RaceCheck::new(cap),
        })
    }

    /// A fresh ring of `capacity` bytes in process-private heap memory (for tests, models
    /// and fuzzing): same header, framing and code paths as a shared segment.
    #[cfg(not(loom))]
    pub fn in_memory(capacity: usize) -> Result<Ring> {
        let cap = segment::normalize_capacity(capacity)?;
        let mut bytes = vec![0u8; (segment::RING_OFFSET + cap) as usize];
        let h = init_header_bytes(cap);
        bytes[..h.len()].copy_from_slice(&h);
        Self::from_bytes(&bytes)
    }

    /// A fresh ring of `capacity` bytes for the loom model: a typed header (loom's atomics
    /// cannot be made from bytes) and a separate buffer for the ring's bytes; no spinning
    /// (there is no clock under loom).
    #[cfg(loom)]
    pub fn in_memory(capacity: usize) -> Result<Ring> {
        let cap = segment::normalize_capacity(capacity)?;
        let hdr = Box::into_raw(Box::new(Header::for_model(cap)));
        let data = HeapMapping::zeroed(cap as usize);
        Ok(Ring {
            hdr,
            data: data.ptr,
            cap,
            max_msgs: 0,
            backing: Backing::Model(ModelMemory { hdr, _data: data }),
            spin: Duration::ZERO,
            holder: Holder::local(),
            cached_head: AtomicU64::new(UNSET),
            cached_tail: AtomicU64::new(UNSET),
            race: RaceCheck::new(cap),
        })
    }

    /// A ring over a copy of `bytes` taken as a whole segment image, validated the way
    /// [`Segment::open`] validates a mapped one. Any content is accepted as input: the
    /// result is an error or a ring whose operations return errors, never a crash.
    #[cfg(not(loom))]
    pub fn from_bytes(bytes: &[u8]) -> Result<Ring> {
        let bad = |r: &str| Error::Incompatible {
            name: "<memory>".into(),
            reason: r.into(),
        };
        if (bytes.len() as u64) < segment::RING_OFFSET {
            return Err(bad("shorter than the header"));
        }
        let mem = HeapMapping::zeroed(bytes.len());
        // SAFETY: `mem` is at least `bytes.len()` bytes, freshly allocated and exclusively
        // ours; the regions do not overlap.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), mem.ptr, bytes.len()) };
        let base = mem.ptr;
        // SAFETY: base is 4096-aligned and at least RING_OFFSET bytes; Header is all atomics.
        let h = unsafe { &*(base as *const Header) };
        let cap = segment::validate_layout(h, bytes.len() as u64, "<memory>")?;
        Ok(Ring {
            hdr: base as *const Header,
            // SAFETY: RING_OFFSET + cap <= bytes.len() <= the allocation (checked above).
            data: unsafe { base.add(segment::RING_OFFSET as usize) },
            cap,
            max_msgs: h.tasks.max_messages.load(Ordering::Relaxed),
            backing: Backing::Heap(mem),
            spin: DEFAULT_SPIN,
            holder: Holder::local(),
            cached_head: AtomicU64::new(UNSET),
            cached_tail: AtomicU64::new(UNSET),
            race: RaceCheck::new(cap),
        })
    }

    /// A copy of the whole segment image of an in-memory ring (header and ring bytes).
    #[cfg(not(loom))]
    pub fn to_bytes(&self) -> Vec<u8> {
        let len = (segment::RING_OFFSET + self.cap) as usize;
        let mut v = vec![0u8; len];
        // SAFETY: the backing holds at least `len` bytes starting at `hdr` (validated at
        // construction); copying raw bytes out creates no reference to shared memory.
        unsafe { std::ptr::copy_nonoverlapping(self.hdr as *const u8, v.as_mut_ptr(), len) };
        v
    }

    /// Set how long a blocked call spins before sleeping in the kernel.
    pub fn set_spin(&mut self, spin: Duration) {
        self.spin = spin;
    }

    /// The underlying segment, if any.
    pub fn segment(&self) -> Option<&Segment> {
        match &self.backing {
            Backing::Segment(s) => Some(s),
            _ => None,
        }
    }

    /// Mutable access to the underlying segment (to change drop behaviour).
    pub fn segment_mut(&mut self) -> Option<&mut Segment> {
        match &mut self.backing {
            Backing::Segment(s) => Some(s),
            _ => None,
        }
    }

    /// This handle's lock identity (for tests and the CLI).
    pub fn holder(&self) -> &Holder {
        &self.holder
    }

    #[inline]
    fn h(&self) -> &Header {
        // SAFETY: `hdr` points at the validated header inside `backing`, which we own; the
        // header is all atomics.
        unsafe { &*self.hdr }
    }

    /// Ring capacity in bytes.
    pub fn capacity(&self) -> u64 {
        self.cap
    }

    /// Largest message payload this ring accepts: `capacity - 8`, and at most
    /// `u32::MAX` bytes (a frame records its length in 32 bits).
    pub fn max_message(&self) -> usize {
        (self.cap - FRAME).min(u32::MAX as u64) as usize
    }

    /// Largest number of queued messages (0: bounded by bytes only).
    pub fn max_messages(&self) -> u64 {
        self.max_msgs
    }

    /// Whether `puts` (a count of messages put) minus the messages got has reached the
    /// message bound.
    #[inline]
    fn at_message_bound(&self, puts: u64) -> bool {
        self.max_msgs != 0
            && puts.saturating_sub(self.h().cons.get_count.load(Ordering::Acquire)) >= self.max_msgs
    }

    /// Check the invariants between `head` and a `tail` position; return the bytes in use.
    #[inline]
    fn positions(&self, head: u64, tail: u64) -> Result<u64> {
        let used = tail.wrapping_sub(head);
        if used > self.cap || tail > MAX_POS || !(head | tail).is_multiple_of(8) {
            return Err(Error::corrupt(format!(
                "ring positions out of range (head {head}, tail {tail}, capacity {})",
                self.cap
            )));
        }
        Ok(used)
    }

    #[inline]
    fn write_frame(&self, off: u64, len: u32, tag: u32) {
        let word = (len as u64) | ((tag as u64) << 32);
        self.race.write(off, FRAME);
        // SAFETY: callers pass `off` with off % 8 == 0 and off + 8 <= cap, so the 8 bytes are
        // inside the ring and aligned; this region is free space owned by the producer lock.
        unsafe { std::ptr::write_volatile(self.data.add(off as usize) as *mut u64, word.to_le()) }
    }

    #[inline]
    fn read_frame(&self, off: u64) -> (u32, u32) {
        self.race.read(off, FRAME);
        // SAFETY: callers pass off % 8 == 0 and off < cap (cap % 8 == 0), so off + 8 <= cap;
        // the volatile read takes one snapshot that is validated before use.
        let word = u64::from_le(unsafe {
            std::ptr::read_volatile(self.data.add(off as usize) as *const u64)
        });
        (word as u32, (word >> 32) as u32)
    }

    /// Ring offset of position `pos`: a mask for power-of-two capacities (the common
    /// case), which spares a 64-bit division on every put and get.
    #[inline]
    fn offset(&self, pos: u64) -> u64 {
        if self.cap.is_power_of_two() {
            pos & (self.cap - 1)
        } else {
            pos % self.cap
        }
    }

    /// Free bytes for a producer at `tail`. Uses the cached head when that already shows
    /// `want` free bytes; otherwise reads (and validates) the shared head and caches it.
    #[inline]
    fn free_space(&self, tail: u64, want: u64) -> Result<u64> {
        // Acquire pairs with the Release store below, which follows an Acquire load of the
        // shared head: the consumer's reads of the freed bytes happen before our writes.
        let cached = self.cached_head.load(Ordering::Acquire);
        let used = tail.wrapping_sub(cached);
        if cached != UNSET
            && used <= self.cap
            && self.cap - used >= want
            && (cached | tail).is_multiple_of(8)
        {
            return Ok(self.cap - used);
        }
        let head = self.h().cons.head.load(Ordering::Acquire);
        let used = self.positions(head, tail)?;
        self.cached_head.store(head, Ordering::Release);
        Ok(self.cap - used)
    }

    /// A `tail` position for a consumer at `head`: the cached one when it shows published
    /// records after `head` (it may lag behind other processes' consumers: then it is
    /// ignored), else the shared one, which is cached.
    #[inline]
    fn published_tail(&self, head: u64) -> u64 {
        let cached = self.cached_tail.load(Ordering::Acquire);
        let ahead = cached.wrapping_sub(head);
        if cached != UNSET && ahead != 0 && ahead <= self.cap {
            return cached;
        }
        let tail = self.h().prod.tail.load(Ordering::Acquire) & !CLOSED;
        self.cached_tail.store(tail, Ordering::Release);
        tail
    }

    fn lock<'a>(
        &self,
        word: &'a AtomicU32,
        deadline: &Deadline,
    ) -> Result<(sync::LockGuard<'a>, Acquired)> {
        let h = self.h();
        let me = self.holder.id(|id| lock_names(h, id))?;
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
        let h = self.h();
        let word = if producer { &h.prod.lock } else { &h.cons.lock };
        let (guard, how) = self.lock(word, &Deadline::never())?;
        if let Acquired::Recovered(_) = how {
            if producer {
                self.repair_producer()?;
            } else {
                self.repair_consumer()?;
            }
        }
        Ok(guard)
    }

    /// After taking over the producer lock from a dead holder: validate and repair.
    fn repair_producer(&self) -> Result<()> {
        let p = &self.h().prod;
        let tail = p.tail.load(Ordering::Acquire) & !CLOSED;
        let head = self.h().cons.head.load(Ordering::Acquire);
        self.positions(head, tail)?;
        if p.pending_tail.load(Ordering::Relaxed) == tail {
            p.put_count
                .store(p.pending_count.load(Ordering::Relaxed), Ordering::Relaxed);
        }
        Ok(())
    }

    /// After taking over the consumer lock from a dead holder: validate and repair.
    fn repair_consumer(&self) -> Result<()> {
        let c = &self.h().cons;
        let head = c.head.load(Ordering::Acquire);
        let tail = self.h().prod.tail.load(Ordering::Acquire) & !CLOSED;
        self.positions(head, tail)?;
        if c.pending_head.load(Ordering::Relaxed) == head {
            c.get_count
                .store(c.pending_count.load(Ordering::Relaxed), Ordering::Relaxed);
        }
        Ok(())
    }

    /// Publish records up to `tail` with one release compare-and-swap from `from` (the
    /// word found under the producer lock). Fails with `Closed` (nothing published) if the
    /// queue was closed meanwhile.
    fn publish_tail(&self, from: u64, tail: u64, count: u64, bytes: u64) -> Result<()> {
        let p = &self.h().prod;
        p.pending_tail.store(tail, Ordering::Relaxed);
        p.pending_count.store(count, Ordering::Relaxed);
        match p
            .tail
            .compare_exchange(from, tail, Ordering::Release, Ordering::Relaxed)
        {
            Ok(_) => {}
            Err(cur) if cur & CLOSED != 0 => return Err(Error::Closed),
            Err(cur) => {
                return Err(Error::corrupt(format!(
                    "tail changed under the producer lock ({from} -> {cur})"
                )))
            }
        }
        p.put_count.store(count, Ordering::Relaxed);
        p.put_bytes.store(bytes, Ordering::Relaxed);
        Ok(())
    }

    fn publish_head(&self, head: u64, count: u64, bytes: u64) {
        let c = &self.h().cons;
        c.pending_head.store(head, Ordering::Relaxed);
        c.pending_count.store(count, Ordering::Relaxed);
        c.head.store(head, Ordering::Release);
        c.get_count.store(count, Ordering::Relaxed);
        c.get_bytes.store(bytes, Ordering::Relaxed);
    }

    /// Whether the queue is closed.
    pub fn is_closed(&self) -> bool {
        self.h().prod.tail.load(Ordering::Acquire) & CLOSED != 0
    }

    /// The position after the [`SKIP`] record at `head`, if there is a valid one that ends
    /// at or before `tail`.
    #[inline]
    fn skip_at(&self, head: u64, tail: u64) -> Option<u64> {
        let off = self.offset(head);
        let (len, tag) = self.read_frame(off);
        let end = head + (self.cap - off);
        (tag == SKIP && len == skip_len(self.cap - off) && end <= tail).then_some(end)
    }

    /// A producer found no room while the queue may hold nothing but padding: with the
    /// consumer lock, move `head` over the [`SKIP`] records up to the published `tail`.
    /// Returns whether `head` moved. Gives up (`Ok(false)`) if the consumer lock cannot be
    /// had before `deadline` (a consumer will consume the padding instead).
    fn drop_leading_skips(&self, tail: u64, deadline: &Deadline) -> Result<bool> {
        let h = self.h();
        let (guard, how) = match self.lock(&h.cons.lock, deadline) {
            Ok(g) => g,
            Err(Error::Timeout) | Err(Error::Closed) => return Ok(false),
            Err(e) => return Err(e),
        };
        if let Acquired::Recovered(_) = how {
            self.repair_consumer()?;
        }
        let start = h.cons.head.load(Ordering::Relaxed);
        self.positions(start, tail)?;
        let mut head = start;
        while head != tail {
            match self.skip_at(head, tail) {
                Some(next) => head = next,
                None => break,
            }
        }
        if head != start {
            let c = &h.cons;
            self.publish_head(
                head,
                c.get_count.load(Ordering::Relaxed),
                c.get_bytes.load(Ordering::Relaxed),
            );
            self.cached_head.store(head, Ordering::Release);
        }
        drop(guard);
        if head != start {
            // Space was freed: other producers sleeping for it may go on.
            sync::notify(&h.cons.space_seq, &h.shared.producers_waiting, i32::MAX);
        }
        Ok(head != start)
    }

    /// Put up to `n` messages. `size(i)` gives message `i`'s exact payload length;
    /// `write(i, dst, len)` writes exactly that payload to `dst` (valid for `len` bytes of
    /// writes) and returns the number of bytes written (at most `len`).
    ///
    /// Returns how many messages were published. With [`Block::No`] that may be fewer than
    /// `n` (zero gives [`Error::Full`]); otherwise it is `n` or an error (messages before the
    /// error were published).
    pub fn put_batch(
        &self,
        n: usize,
        block: Block,
        mut size: impl FnMut(usize) -> Result<usize>,
        mut write: impl FnMut(usize, *mut u8, usize) -> Result<usize>,
    ) -> Result<usize> {
        let h = self.h();
        let deadline = block.deadline();
        let mut done = 0usize;
        let mut cur_len: Option<usize> = None;
        while done < n {
            let (guard, how) = match self.lock(&h.prod.lock, &deadline) {
                Ok(g) => g,
                Err(Error::Timeout) if matches!(block, Block::No) => {
                    return if done > 0 { Ok(done) } else { Err(Error::Full) };
                }
                Err(e) => return Err(e),
            };
            if let Acquired::Recovered(_) = how {
                self.repair_producer()?;
            }
            // Under the producer lock only `close` (setting CLOSED) changes this word.
            let mut from = h.prod.tail.load(Ordering::Relaxed);
            let pos = from & !CLOSED;
            if pos > MAX_POS || !pos.is_multiple_of(8) {
                return Err(Error::corrupt(format!("tail {pos} out of range")));
            }
            if from & CLOSED != 0 {
                return Err(Error::Closed);
            }
            let mut tail = from;
            let mut count = h.prod.put_count.load(Ordering::Relaxed);
            let mut bytes = h.prod.put_bytes.load(Ordering::Relaxed);
            let start_done = done;
            let mut moved_tail = false;
            let mut tried_skips = false;
            let mut result: Result<()> = Ok(());
            let mut need = 0u64;
            while done < n {
                let len = match cur_len {
                    Some(l) => l,
                    None => match size(done) {
                        Ok(l) => *cur_len.insert(l),
                        Err(e) => {
                            result = Err(e);
                            break;
                        }
                    },
                };
                if len > self.max_message() {
                    result = Err(Error::TooLarge {
                        size: len,
                        max: self.max_message(),
                    });
                    break;
                }
                if self.at_message_bound(count) {
                    // As many messages queued as the queue may hold: wait for a get (every
                    // head move wakes the producers).
                    break;
                }
                let rec = align8(FRAME + len as u64);
                let off = self.offset(tail);
                let to_end = self.cap - off;
                let free = match self.free_space(tail, rec.min(to_end)) {
                    Ok(f) => f,
                    Err(e) => {
                        result = Err(e);
                        break;
                    }
                };
                if rec > to_end {
                    if to_end <= free {
                        self.write_frame(off, skip_len(to_end), SKIP);
                        tail += to_end;
                        continue;
                    }
                    need = to_end;
                } else if rec > free {
                    need = rec;
                }
                if need != 0 {
                    // No room. If nothing but padding (ours, or a blocked producer's) may
                    // stand between the consumers and us, remove it ourselves: a message
                    // that fits an empty ring must not wait for a consumer.
                    if done == start_done && !tried_skips {
                        tried_skips = true;
                        if tail != from {
                            if let Err(e) = self.publish_tail(from, tail, count, bytes) {
                                result = Err(e);
                                break;
                            }
                            from = tail;
                            moved_tail = true;
                        }
                        if h.prod.put_count.load(Ordering::Relaxed)
                            == h.cons.get_count.load(Ordering::Acquire)
                        {
                            // Briefly: a busy consumer lock means a consumer is at work
                            // (it consumes the padding itself), and a long wait here would
                            // not see `close`. Long enough to take over from a dead holder.
                            let brief = Deadline::after(
                                deadline
                                    .remaining()
                                    .map_or(TRY_LOCK_WAIT, |r| r.min(TRY_LOCK_WAIT)),
                            );
                            match self.drop_leading_skips(tail, &brief) {
                                Ok(true) => {
                                    need = 0;
                                    continue;
                                }
                                Ok(false) => {}
                                Err(e) => {
                                    result = Err(e);
                                    break;
                                }
                            }
                        }
                    }
                    break;
                }
                // SAFETY: off + rec <= cap, so [off + 8, off + 8 + len) is inside the ring and
                // in free space that only the producer-lock holder writes.
                let dst = unsafe { self.data.add((off + FRAME) as usize) };
                self.race.write(off + FRAME, len as u64);
                let written = match write(done, dst, len) {
                    Ok(w) if w <= len => w,
                    Ok(w) => {
                        result = Err(Error::Codec(format!(
                            "encoder wrote {w} bytes into a {len}-byte slot"
                        )));
                        break;
                    }
                    Err(e) => {
                        result = Err(e);
                        break;
                    }
                };
                self.write_frame(off, written as u32, MSG);
                tail += align8(FRAME + written as u64);
                count = count.wrapping_add(1);
                bytes = bytes.wrapping_add(written as u64);
                done += 1;
                cur_len = None;
            }
            if tail != from {
                match self.publish_tail(from, tail, count, bytes) {
                    Ok(()) => moved_tail = true,
                    Err(e) => {
                        // Closed (or corrupt) before publishing: this round's messages
                        // were never visible.
                        done = start_done;
                        result = Err(e);
                    }
                }
            }
            drop(guard);
            if moved_tail {
                // Records or padding were published: a sleeping consumer must look (it
                // consumes padding too, which is what a producer waiting for room needs).
                let wake = if done - start_done <= 1 { 1 } else { i32::MAX };
                sync::notify(&h.prod.data_seq, &h.shared.consumers_waiting, wake);
            }
            result?;
            if done == n {
                break;
            }
            // No room for message `done`.
            if let Block::No = block {
                h.shared.full_events.fetch_add(1, Ordering::Relaxed);
                return if done > 0 { Ok(done) } else { Err(Error::Full) };
            }
            // Hysteresis: while spinning, wait for a quarter of the ring (or `need`, if more)
            // rather than for just `need`, so that a producer that outruns its consumers
            // writes runs of messages instead of trading one cache line with them per
            // message. After half the spin time (so always before sleeping) `need` suffices.
            let plenty = (self.cap / 4).max(need);
            // At most a short while: a long spin setting must not make a producer hold out
            // for a quarter of the ring while its message fits (nor past its deadline).
            let hysteresis_until = Instant::now().checked_add((self.spin / 2).min(HYSTERESIS_MAX));
            sync::wait_until_counting(
                &h.cons.space_seq,
                &h.shared.producers_waiting,
                Some(&h.shared.full_events),
                self.spin,
                &deadline,
                || {
                    let head = h.cons.head.load(Ordering::Acquire);
                    let word = h.prod.tail.load(Ordering::Acquire);
                    let free = self.cap.saturating_sub((word & !CLOSED).wrapping_sub(head));
                    (free >= need
                        && (free >= plenty || hysteresis_until.is_none_or(|u| Instant::now() >= u))
                        && !self.at_message_bound(h.prod.put_count.load(Ordering::Acquire)))
                        || word & CLOSED != 0
                },
            )
            .map_err(|e| if done > 0 { Error::Timeout } else { e })?;
        }
        Ok(done)
    }

    /// Get up to `max` messages (at least one unless an error is returned): `read(src, len)`
    /// is called once per message, in order, with `src` valid for `len` bytes of reads,
    /// while the consumer lock is held. It must only copy the bytes out.
    pub fn get_batch(
        &self,
        max: usize,
        block: Block,
        mut read: impl FnMut(*const u8, usize),
    ) -> Result<usize> {
        let h = self.h();
        let deadline = block.deadline();
        if max == 0 {
            return Ok(0);
        }
        loop {
            let (guard, how) = match self.lock(&h.cons.lock, &deadline) {
                Ok(g) => g,
                Err(Error::Timeout) => {
                    // Leaving without taking anything: a wake meant for a consumer may
                    // have been ours; pass it on so no message waits for a sleeper.
                    self.pass_on_wake();
                    return Err(if matches!(block, Block::No) {
                        Error::Empty
                    } else {
                        Error::Timeout
                    });
                }
                Err(e) => return Err(e),
            };
            if let Acquired::Recovered(_) = how {
                self.repair_consumer()?;
            }
            let start_head = h.cons.head.load(Ordering::Relaxed);
            if start_head > MAX_POS {
                return Err(Error::corrupt(format!("head {start_head} out of range")));
            }
            let mut head = start_head;
            let mut count = h.cons.get_count.load(Ordering::Relaxed);
            let mut bytes = h.cons.get_bytes.load(Ordering::Relaxed);
            let mut got = 0usize;
            let mut result: Result<()> = Ok(());
            let mut tail = self.published_tail(head);
            while got < max {
                if head == tail {
                    break;
                }
                let avail = match self.positions(head, tail) {
                    Ok(a) => a,
                    Err(e) => {
                        result = Err(e);
                        break;
                    }
                };
                let off = self.offset(head);
                let (len, tag) = self.read_frame(off);
                let len = len as u64;
                let to_end = self.cap - off;
                match tag {
                    SKIP if len as u32 == skip_len(to_end) && to_end <= avail => {
                        head += to_end;
                    }
                    MSG if align8(FRAME + len) <= to_end && align8(FRAME + len) <= avail => {
                        // SAFETY: the record lies inside the ring (checked above) and inside the
                        // published region, which producers do not write while we hold the
                        // consumer lock and have not released it.
                        let src = unsafe { self.data.add((off + FRAME) as usize) };
                        self.race.read(off + FRAME, len);
                        read(src, len as usize);
                        head += align8(FRAME + len);
                        count = count.wrapping_add(1);
                        bytes = bytes.wrapping_add(len);
                        got += 1;
                    }
                    _ => {
                        result = Err(Error::corrupt(format!(
                            "bad frame at position {head} (tag {tag:#x}, length {len}, tail {tail})"
                        )));
                        break;
                    }
                }
                if head == tail {
                    tail = self.published_tail(head);
                }
            }
            if head != start_head {
                self.publish_head(head, count, bytes);
            }
            drop(guard);
            if head != start_head {
                // One fence orders the head store before both waiter-count reads.
                prim::fence(Ordering::SeqCst);
                sync::notify_fenced(&h.cons.space_seq, &h.shared.producers_waiting, i32::MAX);
                if head != tail {
                    // More is queued than this call took: the next sleeping consumer may
                    // take it (a wake-one put woke only us).
                    sync::notify_fenced(&h.prod.data_seq, &h.shared.consumers_waiting, 1);
                }
            }
            result?;
            if got > 0 {
                return Ok(got);
            }
            // Empty. Closed and still empty in the same read of the tail word: drained.
            let word = h.prod.tail.load(Ordering::Acquire);
            if word & CLOSED != 0 && word & !CLOSED == head {
                return Err(Error::Closed);
            }
            if let Block::No = block {
                h.shared.empty_events.fetch_add(1, Ordering::Relaxed);
                return Err(Error::Empty);
            }
            if let Err(e) = sync::wait_until_counting(
                &h.prod.data_seq,
                &h.shared.consumers_waiting,
                Some(&h.shared.empty_events),
                self.spin,
                &deadline,
                || h.prod.tail.load(Ordering::Acquire) != h.cons.head.load(Ordering::Relaxed),
            ) {
                self.pass_on_wake();
                return Err(e);
            }
        }
    }

    /// A consumer leaves without taking a message: if messages are queued, wake one
    /// sleeping consumer in its place.
    fn pass_on_wake(&self) {
        let h = self.h();
        if h.prod.tail.load(Ordering::Acquire) & !CLOSED != h.cons.head.load(Ordering::Acquire) {
            sync::notify(&h.prod.data_seq, &h.shared.consumers_waiting, 1);
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
        sync::notify_all(&h.prod.data_seq);
        sync::notify_all(&h.cons.space_seq);
        // Callers waiting for a lock give up on a closed queue (see `lock`): wake them too.
        prim::futex_wake(&h.prod.lock, i32::MAX);
        prim::futex_wake(&h.cons.lock, i32::MAX);
    }

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
            producers_waiting: h.shared.producers_waiting.load(Ordering::Relaxed),
            consumers_waiting: h.shared.consumers_waiting.load(Ordering::Relaxed),
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

    /// The header (for the CLI and tests).
    pub fn header(&self) -> &Header {
        self.h()
    }
}

/// Whether `id` stands in one of the segment's lock words (a holder id not to re-use).
fn lock_names(h: &Header, id: u32) -> bool {
    [&h.prod.lock, &h.cons.lock]
        .iter()
        .any(|w| w.load(Ordering::Relaxed) & sync::HOLDER_MASK == id)
}

/// Header bytes of a freshly initialised segment with a ring of `cap` bytes.
#[cfg(not(loom))]
fn init_header_bytes(cap: u64) -> Vec<u8> {
    let mut b = vec![0u8; std::mem::size_of::<Header>()];
    b[0..8].copy_from_slice(&segment::MAGIC.to_le_bytes());
    b[8..12].copy_from_slice(&segment::VERSION.to_le_bytes());
    b[12..16].copy_from_slice(&(std::mem::size_of::<Header>() as u32).to_le_bytes());
    b[16..24].copy_from_slice(&segment::RING_OFFSET.to_le_bytes());
    b[24..32].copy_from_slice(&cap.to_le_bytes());
    b[36..40].copy_from_slice(&segment::INIT_DONE.to_le_bytes());
    b
}

#[cfg(all(test, loom))]
mod loom_tests;

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::collections::VecDeque;

    fn put(r: &Ring, msg: &[u8], block: Block) -> Result<usize> {
        r.put_batch(
            1,
            block,
            |_| Ok(msg.len()),
            |_, dst, len| {
                // SAFETY: dst is valid for len bytes per put_batch's contract.
                unsafe { std::ptr::copy_nonoverlapping(msg.as_ptr(), dst, len) };
                Ok(len)
            },
        )
    }

    fn get(r: &Ring, block: Block) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        r.get_batch(1, block, |src, len| {
            out.resize(len, 0);
            // SAFETY: src valid for len bytes per get_batch's contract.
            unsafe { std::ptr::copy_nonoverlapping(src, out.as_mut_ptr(), len) };
        })?;
        Ok(out)
    }

    #[test]
    fn header_offsets_match_struct() {
        let r = Ring::in_memory(256).unwrap();
        assert_eq!(r.capacity(), 256);
        assert_eq!(
            r.header().id.init.load(Ordering::Relaxed),
            segment::INIT_DONE
        );
    }

    #[test]
    fn model_check_wraparound_sizes() {
        let r = Ring::in_memory(256).unwrap();
        let mut model = VecDeque::new();
        let mut seed = 12345u64;
        // Under Miri (some 1000 times slower) fewer steps: still dozens of wraps.
        let steps = if cfg!(miri) { 1_000 } else { 20_000u32 };
        for step in 0..steps {
            seed = seed
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            let len = (seed >> 33) as usize % 120;
            if (seed >> 20).is_multiple_of(2) {
                let msg: Vec<u8> = (0..len).map(|i| (i as u32 + step) as u8).collect();
                match put(&r, &msg, Block::No) {
                    Ok(1) => model.push_back(msg),
                    Err(Error::Full) => {}
                    other => panic!("{other:?}"),
                }
            } else {
                match get(&r, Block::No) {
                    Ok(m) => assert_eq!(Some(m), model.pop_front()),
                    Err(Error::Empty) => assert!(model.is_empty()),
                    other => panic!("{other:?}"),
                }
            }
            assert_eq!(r.len(), model.len());
        }
    }

    #[test]
    fn message_bound_is_enforced_and_a_get_wakes_a_blocked_put() {
        let mut img = Ring::in_memory(4096).unwrap().to_bytes();
        let off = std::mem::offset_of!(Header, tasks)
            + std::mem::offset_of!(segment::Tasks, max_messages);
        img[off..off + 8].copy_from_slice(&2u64.to_ne_bytes());
        let r = Ring::from_bytes(&img).unwrap();
        assert_eq!(r.max_messages(), 2);
        assert!(!r.is_full());
        put(&r, b"a", Block::No).unwrap();
        put(&r, b"b", Block::No).unwrap();
        assert!(r.is_full());
        assert!(matches!(put(&r, b"c", Block::No), Err(Error::Full)));
        assert!(matches!(
            put(&r, b"c", Block::timeout(Duration::from_millis(20))),
            Err(Error::Timeout)
        ));
        std::thread::scope(|s| {
            let t = s.spawn(|| put(&r, b"c", Block::Until(None)));
            std::thread::sleep(Duration::from_millis(20));
            assert_eq!(get(&r, Block::No).unwrap(), b"a");
            assert_eq!(t.join().unwrap().unwrap(), 1);
        });
        assert_eq!(r.len(), 2);
        assert_eq!(get(&r, Block::No).unwrap(), b"b");
        assert_eq!(get(&r, Block::No).unwrap(), b"c");
        assert!(!r.is_full());
    }

    #[test]
    fn is_full_by_bytes() {
        let r = Ring::in_memory(64).unwrap();
        assert!(!r.is_full());
        put(&r, &[0; 56], Block::No).unwrap();
        assert!(r.is_full());
        get(&r, Block::No).unwrap();
        assert!(!r.is_full());
    }

    #[test]
    fn whole_ring_message_fits_and_larger_is_too_large() {
        let r = Ring::in_memory(256).unwrap();
        put(&r, &[1; 100], Block::No).unwrap();
        get(&r, Block::No).unwrap();
        // A message of capacity - 8 bytes needs the whole ring: the producer removes the
        // padding it needs itself, since nothing else is queued.
        let big = vec![7u8; 248];
        put(&r, &big, Block::No).unwrap();
        assert_eq!(get(&r, Block::No).unwrap(), big);
        assert!(matches!(
            put(&r, &[0; 249], Block::No),
            Err(Error::TooLarge {
                size: 249,
                max: 248
            })
        ));
        assert!(matches!(put(&r, &[], Block::No), Ok(1)));
        assert_eq!(get(&r, Block::No).unwrap(), b"");
    }

    #[test]
    fn corrupt_positions_and_frames_are_errors() {
        let r = Ring::in_memory(256).unwrap();
        put(&r, b"hello", Block::No).unwrap();
        let mut img = r.to_bytes();
        // Corrupt the frame tag.
        img[segment::RING_OFFSET as usize + 4] ^= 0xff;
        let bad = Ring::from_bytes(&img).unwrap();
        assert!(matches!(get(&bad, Block::No), Err(Error::Corrupt(_))));
        // Tail far beyond head.
        let r2 = Ring::in_memory(256).unwrap();
        r2.header().prod.tail.store(1 << 40, Ordering::Relaxed);
        assert!(matches!(get(&r2, Block::No), Err(Error::Corrupt(_))));
        assert!(matches!(put(&r2, b"x", Block::No), Err(Error::Corrupt(_))));
    }

    /// Run `f` while another thread of this process holds the consumer lock, and the
    /// producer lock too if `producer`, as a stopped process would.
    fn with_locks_held<T>(r: &Ring, producer: bool, f: impl FnOnce() -> T) -> T {
        let (held_tx, held_rx) = std::sync::mpsc::channel();
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        std::thread::scope(|s| {
            s.spawn(move || {
                let _p = producer.then(|| r.hold_lock(true).unwrap());
                let _c = r.hold_lock(false).unwrap();
                held_tx.send(()).unwrap();
                let _ = done_rx.recv();
            });
            held_rx.recv().unwrap();
            let out = f();
            done_tx.send(()).unwrap();
            out
        })
    }

    #[test]
    fn try_calls_do_not_wait_for_a_live_lock_holder() {
        let r = Ring::in_memory(256).unwrap();
        put(&r, b"x", Block::No).unwrap();
        with_locks_held(&r, true, || {
            let t = Instant::now();
            assert!(matches!(put(&r, b"y", Block::No), Err(Error::Full)));
            assert!(matches!(get(&r, Block::No), Err(Error::Empty)));
            assert!(matches!(
                get(&r, Block::timeout(Duration::from_millis(20))),
                Err(Error::Timeout)
            ));
            assert!(t.elapsed() < Duration::from_secs(5));
        });
        assert_eq!(get(&r, Block::No).unwrap(), b"x");
    }

    /// Issue 9, fault 1: a message that fits an empty ring is accepted at once, wherever
    /// the positions stand (padding is removed by the producer itself).
    #[test]
    fn max_message_fits_an_empty_ring_at_any_position() {
        for (cap, first, big) in [
            (4096, 100, 4088),
            (4096, 2048, 2100),
            (4096, 2992, 3500),
            (4096, 4000, 4088),
            (4160, 100, 4152),
        ] {
            let r = Ring::in_memory(cap).unwrap();
            put(&r, &vec![1; first], Block::No).unwrap();
            assert_eq!(get(&r, Block::No).unwrap().len(), first);
            let msg = vec![9u8; big];
            put(&r, &msg, Block::timeout(Duration::ZERO)).unwrap();
            assert_eq!(get(&r, Block::No).unwrap(), msg);
            // And again, now that the ring has wrapped.
            put(&r, &msg, Block::No).unwrap();
            assert_eq!(get(&r, Block::No).unwrap(), msg);
            assert!(r.is_empty());
        }
    }

    /// Padding published by a producer that then gave up is removed by the next one.
    #[test]
    fn leftover_padding_does_not_block_a_later_put() {
        let r = Ring::in_memory(4096).unwrap();
        put(&r, &[1; 100], Block::No).unwrap();
        // A message is queued: the big one cannot fit; its padding gets published.
        assert!(matches!(put(&r, &[2; 4088], Block::No), Err(Error::Full)));
        assert_eq!(get(&r, Block::No).unwrap(), vec![1; 100]);
        put(&r, &[3; 4088], Block::No).unwrap();
        assert_eq!(get(&r, Block::No).unwrap(), vec![3; 4088]);
    }

    /// Issue 9, fault 1 across threads: a consumer asleep in an untimed get wakes for a
    /// message whose put first had to publish padding.
    #[test]
    fn sleeping_consumer_wakes_after_padding() {
        let r = Ring::in_memory(4096).unwrap();
        put(&r, &[1; 100], Block::No).unwrap();
        get(&r, Block::No).unwrap();
        std::thread::scope(|s| {
            let c = s.spawn(|| get(&r, Block::timeout(Duration::from_secs(30))));
            std::thread::sleep(Duration::from_millis(50));
            put(&r, &[5; 4088], Block::timeout(Duration::from_secs(30))).unwrap();
            assert_eq!(c.join().unwrap().unwrap(), vec![5; 4088]);
        });
    }

    /// A producer that needs padding removed while a live consumer holds the consumer lock
    /// does not wait on that lock for ever: `close` still wakes it.
    #[test]
    fn close_wakes_a_producer_waiting_for_padding_behind_a_busy_consumer_lock() {
        let r = Ring::in_memory(4096).unwrap();
        put(&r, &[1; 100], Block::No).unwrap();
        get(&r, Block::No).unwrap();
        with_locks_held(&r, false, || {
            std::thread::scope(|s| {
                let p = s.spawn(|| put(&r, &[2; 4088], Block::Until(None)));
                std::thread::sleep(Duration::from_millis(200));
                let t = Instant::now();
                r.close();
                assert!(matches!(p.join().unwrap(), Err(Error::Closed)));
                assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
            })
        });
    }

    /// `close` frees a producer waiting for the producer lock that a live, stuck holder
    /// keeps, and a consumer waiting for the consumer lock once nothing is left to drain.
    #[test]
    fn close_frees_callers_waiting_for_a_held_lock() {
        let r = Ring::in_memory(256).unwrap();
        with_locks_held(&r, true, || {
            std::thread::scope(|s| {
                let p = s.spawn(|| put(&r, b"x", Block::Until(None)));
                let g = s.spawn(|| get(&r, Block::Until(None)));
                std::thread::sleep(Duration::from_millis(100));
                let t = Instant::now();
                r.close();
                assert!(matches!(p.join().unwrap(), Err(Error::Closed)));
                assert!(matches!(g.join().unwrap(), Err(Error::Closed)));
                assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
            })
        });
    }

    /// A frame records its length in 32 bits: a larger message is `TooLarge`, never torn.
    #[test]
    fn max_message_fits_a_frame() {
        assert_eq!(skip_len(FRAME + (1u64 << 33)), 0);
        let r = Ring::in_memory(256).unwrap();
        assert_eq!(r.max_message(), 248);
    }

    #[test]
    fn hostile_positions_are_corrupt_not_overflow() {
        let r = Ring::in_memory(256).unwrap();
        let h = r.header();
        h.cons.head.store(u64::MAX - 7, Ordering::Relaxed);
        h.prod.tail.store(u64::MAX - 7, Ordering::Relaxed);
        assert!(matches!(put(&r, b"x", Block::No), Err(Error::Corrupt(_))));
        assert!(matches!(
            get(&r, Block::timeout(Duration::ZERO)),
            Err(Error::Corrupt(_)) | Err(Error::Timeout)
        ));
        h.prod.tail.store(MAX_POS - 8, Ordering::Relaxed);
        h.cons.head.store(MAX_POS - 8, Ordering::Relaxed);
        // Near the limit a put of padding + record lands past it: refused, no panic.
        let _ = put(&r, &[0; 200], Block::No);
        let _ = put(&r, &[0; 200], Block::No);
        let _ = get(&r, Block::No);
        h.prod.put_count.store(u64::MAX, Ordering::Relaxed);
        h.prod.put_bytes.store(u64::MAX, Ordering::Relaxed);
        h.prod.tail.store(0, Ordering::Relaxed);
        h.cons.head.store(0, Ordering::Relaxed);
        put(&r, b"counters wrap", Block::No).unwrap();
    }

    #[test]
    fn close_is_one_bit_and_refuses_a_publish_in_flight() {
        let r = Ring::in_memory(256).unwrap();
        put(&r, b"a", Block::No).unwrap();
        let from = r.header().prod.tail.load(Ordering::Relaxed);
        r.close();
        assert!(r.is_closed());
        // A producer that found the queue open under its lock and publishes after close:
        // the compare-and-swap refuses.
        assert!(matches!(
            r.publish_tail(from, from + 16, 2, 2),
            Err(Error::Closed)
        ));
        assert_eq!(r.len(), 1);
        assert_eq!(get(&r, Block::No).unwrap(), b"a");
        assert!(matches!(get(&r, Block::No), Err(Error::Closed)));
        assert!(r.stats().closed);
    }

    #[test]
    fn close_drains_then_fails() {
        let r = Ring::in_memory(256).unwrap();
        put(&r, b"a", Block::No).unwrap();
        r.close();
        assert!(matches!(put(&r, b"b", Block::No), Err(Error::Closed)));
        assert_eq!(get(&r, Block::No).unwrap(), b"a");
        assert!(matches!(get(&r, Block::Until(None)), Err(Error::Closed)));
    }

    #[test]
    fn crash_repair_restores_counts() {
        let r = Ring::in_memory(256).unwrap();
        put(&r, b"abc", Block::No).unwrap();
        let h = r.header();
        // Simulate a producer that died after publishing tail but before updating put_count,
        // while holding the lock (a TID that cannot exist).
        h.prod.put_count.store(0, Ordering::Relaxed);
        h.prod.lock.store(4_194_305, Ordering::Relaxed);
        put(&r, b"def", Block::timeout(Duration::from_secs(5))).unwrap();
        assert_eq!(r.len(), 2);
    }
}
