//! Loans: the put and get rounds of `put.rs` and `get.rs`, held open across a caller's
//! code.
//!
//! * A [`WriteLease`] is a put round stopped between reserve and publish: the caller fills
//!   the reserved payload in place; `commit` writes the frame and publishes, drop publishes
//!   nothing (padding written before the reserved record is dropped with it unless it was
//!   already published to make room).
//! * A [`ReadLease`] is a get round stopped before `head` is published: the caller reads
//!   the lent records in place; `commit_first(k)` publishes `head` after the k-th, drop (or
//!   the death of the holder: the robust consumer lock is recovered by the next consumer,
//!   with `head` untouched) leaves every lent record for the next consumer.
//!
//! Both hold the side's lock for their whole life: other producers (consumers) wait.
//!
//! Across `fork`: a lease records the [fork generation](LockGuard::fork_generation) it was
//! taken in. In a fork child the inherited lease is the parent's (the parent holds the lock
//! and ends the lease itself): its commit publishes nothing (a write lease's commit fails
//! with [`Error::InvalidArgument`]) and its drop touches no shared memory, and the child's
//! thread-local loan markers inherited from the forking thread are ignored.

use std::cell::{Cell, RefCell};
use std::sync::atomic::Ordering;

use super::frame::Slot;
use super::get::{Found, GetRound};
use super::put::{PutRound, Reserve};
use super::{Block, Ring};
use crate::error::{Error, Result};
use crate::mapping::Memory;
use crate::sync::LockGuard;

/// Key of a loan marker: (the memory's identity, producer side).
type LentKey = ((u64, u64), bool);

thread_local! {
    /// The loans this thread holds: (the memory's identity, producer side). A put or get on
    /// the same side of the same queue from this thread would wait for the loan's own lock
    /// for ever; it fails at once instead ([`Ring::lent_by_this_thread`]). Beside the list,
    /// the fork generation it was written in: a fork child inherits the forking thread's
    /// list, which names the parent's loans, not the child's, so in another generation the
    /// list is stale and is emptied before use ([`with_lent`]).
    static LENT: RefCell<(u64, Vec<LentKey>)> = const { RefCell::new((0, Vec::new())) };
    /// `LENT`'s length, read first: the put/get fast path costs one thread-local load.
    static LENT_N: Cell<usize> = const { Cell::new(0) };
}

/// Run `f` on this thread's loan markers, emptied first if they are a fork parent's.
fn with_lent<R>(f: impl FnOnce(&mut Vec<LentKey>) -> R) -> R {
    LENT.with(|l| {
        let (generation, l) = &mut *l.borrow_mut();
        let now = LockGuard::fork_generation();
        if *generation != now {
            l.clear();
            *generation = now;
        }
        let r = f(l);
        LENT_N.set(l.len());
        r
    })
}

/// Whether this thread's loan markers name `key` (the slow path of
/// [`Ring::lent_by_this_thread`], out of line: the put/get fast path stays one load).
#[cold]
#[inline(never)]
fn is_lent(key: LentKey) -> bool {
    with_lent(|l| l.contains(&key))
}

fn note_lent(key: LentKey) {
    with_lent(|l| l.push(key));
}

fn note_returned(key: LentKey) {
    with_lent(|l| {
        if let Some(i) = l.iter().position(|&k| k == key) {
            l.swap_remove(i);
        }
    });
}

/// The error for ending a loan in a fork child of the process that took it.
fn inherited_loan() -> Error {
    Error::InvalidArgument(
        "a loan taken before fork belongs to the parent process: this write loan was \
         inherited through fork, and only the parent, which holds the queue's producer lock, \
         can commit it (nothing was published)"
            .into(),
    )
}

impl<M: Memory> Ring<M> {
    /// Whether this thread holds a loan on the producer (`true`) or consumer side of this
    /// ring.
    #[inline]
    pub(super) fn lent_by_this_thread(&self, producer: bool) -> bool {
        if LENT_N.with(|n| n.get()) == 0 {
            return false;
        }
        is_lent((self.key, producer))
    }

    /// The error for a put (`producer`) or get on a side this thread holds a loan on.
    pub(super) fn self_deadlock(&self, producer: bool) -> Error {
        Error::InvalidArgument(format!(
            "this thread holds a {} loan on this queue: commit or drop it before the next {} \
             (the {} would wait for the loan's own lock)",
            if producer { "write" } else { "read" },
            if producer { "put" } else { "get" },
            if producer { "put" } else { "get" },
        ))
    }
}

/// Reserved room for one record, under the producer lock.
pub struct WriteLease<'q, M: Memory> {
    /// Not `Send`: the lease is noted in its thread's `LENT` list and must end there.
    _thread: std::marker::PhantomData<*const ()>,
    ring: &'q Ring<M>,
    round: Option<PutRound<'q>>,
    /// The fork generation the lease was taken in (see the module docs).
    generation: u64,
    off: u64,
    slot: Slot<'q>,
    /// In a fork child, the private buffer [`as_mut_slice`](Self::as_mut_slice) hands out
    /// instead of the parent's reservation (empty, unallocated, everywhere else).
    // Boxed: one pointer wide, because the lease is moved through every layer that returns
    // it (a bare `Vec` here cost `loan_write` +77 instructions per message, docs/design.md).
    #[allow(clippy::box_collection)]
    scratch: Option<Box<Vec<u8>>>,
}

impl<M: Memory> Ring<M> {
    /// Reserve room for a record with a payload of `len` bytes, waiting for room per
    /// `block`. Errors as for a put: `TooLarge`, `Full` (`Block::No`), `Timeout`,
    /// `Closed`, `Corrupt`.
    pub fn lease_write(&self, len: usize, block: Block) -> Result<WriteLease<'_, M>> {
        if len > self.max_message() {
            return Err(Error::TooLarge {
                size: len,
                max: self.max_message(),
            });
        }
        let deadline = block.deadline();
        loop {
            let mut round = match self.begin_put(&deadline) {
                Ok(r) => r,
                Err(Error::Timeout) if matches!(block, Block::No) => return Err(Error::Full),
                Err(e) => return Err(e),
            };
            let need = match self.reserve(&mut round, len, &deadline) {
                Ok(Reserve::At(off)) => {
                    note_lent((self.key, true));
                    return Ok(WriteLease {
                        _thread: std::marker::PhantomData,
                        generation: LockGuard::fork_generation(),
                        ring: self,
                        off,
                        slot: self.slot(off, len),
                        scratch: None,
                        round: Some(round),
                    });
                }
                Ok(Reserve::NoRoom(need)) => need,
                Err(e) => {
                    self.end_put(round);
                    return Err(e);
                }
            };
            let published = self.publish(&mut round);
            self.end_put(round);
            published?;
            if let Block::No = block {
                self.h().shared.full_events.fetch_add(1, Ordering::Relaxed);
                return Err(Error::Full);
            }
            self.wait_for_room(need, &deadline)?;
        }
    }

    /// Lend up to `max` (at least 1) messages at the head, waiting per `block` while the
    /// queue is empty. Errors as for a get: `Empty` (`Block::No`), `Timeout`, `Closed`
    /// once drained, `Corrupt`.
    pub fn lease_read(&self, max: usize, block: Block) -> Result<ReadLease<'_, M>> {
        let (mut round, f) = self.begin_nonempty(block)?;
        let first = self.lend(&mut round, f);
        // The first message lives inline: a single-message lease allocates nothing.
        let mut rest = Vec::new();
        while 1 + rest.len() < max {
            // A bad frame after good ones ends the lease there: the good ones are lent, and
            // the error comes to whoever reaches the bad frame next.
            match self.next_record(&mut round) {
                Ok(Some(f)) => rest.push(self.lend(&mut round, f)),
                Ok(None) | Err(_) => break,
            }
        }
        note_lent((self.key, false));
        Ok(ReadLease {
            _thread: std::marker::PhantomData,
            generation: LockGuard::fork_generation(),
            ring: self,
            round: Some(round),
            first,
            rest,
            copies: std::cell::OnceCell::new(),
        })
    }

    /// Move the round's cursor past `f` and note the consumer state after it.
    #[inline]
    fn lend(&self, round: &mut GetRound<'_>, f: Found) -> Lent {
        self.take(round, &f);
        Lent {
            found: f,
            head: round.head,
            count: round.count,
            bytes: round.bytes,
        }
    }
}

impl<M: Memory> WriteLease<'_, M> {
    /// Size of the reserved payload in bytes.
    pub fn len(&self) -> usize {
        self.slot.capacity()
    }

    /// Whether the reserved payload is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The reserved payload, to fill in place (see [`Slot`] for why this is sound).
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        if LockGuard::inherited(self.generation) {
            return self.scratch_slice();
        }
        self.slot.as_mut_slice()
    }

    /// [`as_mut_slice`](Self::as_mut_slice) in a fork child of the process that took the
    /// lease: the reservation is the parent's, which may have published it and reused the
    /// space for later messages since, so the child gets a private buffer of the same size
    /// (never published: `commit` there is `InvalidArgument`) rather than a `&mut` to memory
    /// another process writes.
    #[cold]
    fn scratch_slice(&mut self) -> &mut [u8] {
        let len = self.slot.capacity();
        self.scratch.get_or_insert_with(|| Box::new(vec![0; len]))
    }

    /// Publish the first `len` bytes of the reserved payload as one message (`len` at most
    /// [`len`](Self::len)). Errors: `Closed` (nothing published) if the queue was closed
    /// meanwhile; `InvalidArgument` if `len` exceeds the reservation, or (nothing
    /// published) if the lease was taken before a `fork` and this is the child.
    pub fn commit(mut self, len: usize) -> Result<()> {
        if LockGuard::inherited(self.generation) {
            // The drop that follows leaves the parent's round alone.
            return Err(inherited_loan());
        }
        if len > self.slot.capacity() {
            return Err(Error::InvalidArgument(format!(
                "committing {len} bytes of a {}-byte write loan",
                self.slot.capacity()
            )));
        }
        let mut round = self.round.take().expect("a lease is committed once");
        note_returned((self.ring.key, true));
        self.ring.finish_record(&mut round, self.off, len);
        let published = self.ring.publish(&mut round);
        self.ring.end_put(round);
        published
    }
}

impl<M: Memory> Drop for WriteLease<'_, M> {
    fn drop(&mut self) {
        if let Some(round) = self.round.take() {
            if LockGuard::inherited(self.generation) {
                // A fork child's copy of the parent's round: the lock and the reservation
                // are the parent's. Touch nothing (the guard inside is not dropped).
                std::mem::forget(round);
                return;
            }
            note_returned((self.ring.key, true));
            // Nothing of the reservation is published; padding published to make room was.
            self.ring.end_put(round);
        }
    }
}

/// One lent message and the consumer state after it.
struct Lent {
    found: Found,
    head: u64,
    count: u64,
    bytes: u64,
}

/// Messages lent in place at the head of the queue, under the consumer lock.
pub struct ReadLease<'q, M: Memory> {
    /// Not `Send`: the lease is noted in its thread's `LENT` list and must end there.
    _thread: std::marker::PhantomData<*const ()>,
    ring: &'q Ring<M>,
    round: Option<GetRound<'q>>,
    /// The fork generation the lease was taken in (see the module docs).
    generation: u64,
    /// The first lent message, then the others.
    first: Lent,
    rest: Vec<Lent>,
    /// In a fork child, private copies of the lent messages, taken at the child's first
    /// [`get`](Self::get) (see there).
    // Boxed, one pointer wide, for the same reason as `WriteLease::scratch`.
    #[allow(clippy::box_collection)]
    copies: std::cell::OnceCell<Box<Vec<Vec<u8>>>>,
}

impl<M: Memory> ReadLease<'_, M> {
    /// Number of lent messages (at least 1).
    pub fn len(&self) -> usize {
        1 + self.rest.len()
    }

    /// Whether no message is lent: never, a lease lends at least one.
    pub fn is_empty(&self) -> bool {
        false
    }

    fn item(&self, i: usize) -> Option<&Lent> {
        match i {
            0 => Some(&self.first),
            _ => self.rest.get(i - 1),
        }
    }

    /// Message `i`: its sequence number (the position of its record: unique for the life of
    /// the queue and strictly increasing in queue order) and its payload in place. In a fork
    /// child of the process that took the lease the payload is a private copy taken at the
    /// child's first call: the parent may have committed the messages by then and producers
    /// may be writing over them, so the copy holds what the ring held at that moment, and
    /// the child never gets a `&[u8]` to memory another process writes.
    pub fn get(&self, i: usize) -> Option<(u64, &[u8])> {
        let l = self.item(i)?;
        if self.is_inherited() {
            return Some((l.found.pos, &self.inherited_copies()[i]));
        }
        let bytes = self.ring.record(l.found.off, l.found.len).into_slice();
        Some((l.found.pos, bytes))
    }

    /// The copies of [`get`](Self::get) in a fork child, taken once.
    #[cold]
    fn inherited_copies(&self) -> &[Vec<u8>] {
        self.copies.get_or_init(|| {
            Box::new(
                std::iter::once(&self.first)
                    .chain(&self.rest)
                    .map(|l| {
                        let mut v = Vec::with_capacity(l.found.len);
                        self.ring
                            .record(l.found.off, l.found.len)
                            .extend_vec(&mut v);
                        v
                    })
                    .collect(),
            )
        })
    }

    /// Remove the first `k` lent messages from the queue (all of them if `k` is larger) and
    /// end the loan; the others stay at the head for the next consumer. In a fork child of
    /// the process that took the lease it removes nothing: the lease is the parent's
    /// ([`is_inherited`](Self::is_inherited)).
    pub fn commit_first(mut self, k: usize) {
        if self.is_inherited() {
            // The drop that follows leaves the parent's round alone.
            return;
        }
        let mut round = self.round.take().expect("a lease is committed once");
        note_returned((self.ring.key, false));
        match k.min(self.len()).checked_sub(1).and_then(|i| self.item(i)) {
            Some(l) => {
                round.head = l.head;
                round.count = l.count;
                round.bytes = l.bytes;
            }
            None => round.head = round.start,
        }
        let left_some = k < self.len();
        self.ring.end_get(round);
        if left_some {
            // Messages this lease saw stay queued: a wake meant for a consumer may have
            // been ours; pass it on so they do not wait for a sleeper.
            self.ring.pass_on_wake();
        }
    }

    /// Whether the lease was taken before a `fork` and this is the child: the lease is the
    /// parent's, and [`commit_first`](Self::commit_first) and drop leave it alone.
    pub fn is_inherited(&self) -> bool {
        LockGuard::inherited(self.generation)
    }
}

impl<M: Memory> Drop for ReadLease<'_, M> {
    fn drop(&mut self) {
        if let Some(mut round) = self.round.take() {
            if self.is_inherited() {
                // As for a write lease: the parent's round, left alone.
                std::mem::forget(round);
                return;
            }
            note_returned((self.ring.key, false));
            round.head = round.start;
            self.ring.end_get(round);
            // Every lent message stays queued: pass on a wake that may have been ours.
            self.ring.pass_on_wake();
        }
    }
}
