//! The consumer side: find the records at `head`, take (or lend) them, release.
//!
//! A get is a round under the consumer lock ([`GetRound`]):
//! 1. [`Ring::begin_get`] takes the lock (repairing after a dead holder) and reads `head`;
//! 2. [`Ring::next_record`] validates the frame at the round's cursor, stepping over SKIP
//!    padding, and [`Ring::take`] moves the cursor past a message;
//! 3. [`Ring::end_get`] publishes the cursor as the new `head` with one release store,
//!    releases the lock and wakes producers (and, when messages are left, one consumer).
//!
//! `get_batch` copies each record out between steps 2 and 3; a read loan
//! ([`ReadLoans`](super::ReadLoans)) holds the round and publishes only what it commits.

use std::sync::atomic::Ordering;

use super::frame::{record_size, skip_len, Record, CLOSED, MAX_POS, MSG, SKIP};
use super::{Block, Ring};
use crate::error::{Error, Result};
use crate::mapping::Memory;
use crate::prim;
use crate::sync::{self, Acquired, Deadline, LockGuard};

/// What [`Ring::frame_at`] found.
enum Step {
    /// A message record.
    Msg(Found),
    /// Padding: the next record is at this position.
    Skip(u64),
}

/// One hold of the consumer lock.
pub(super) struct GetRound<'a> {
    guard: LockGuard<'a>,
    /// `head` as found under the lock.
    pub(super) start: u64,
    /// Cursor: after the records taken (and padding stepped over) so far.
    pub(super) head: u64,
    pub(super) count: u64,
    pub(super) bytes: u64,
    /// A published `tail` seen by this round (refreshed when the cursor reaches it).
    tail: u64,
}

/// A message record found by [`Ring::next_record`].
#[derive(Clone, Copy, Debug)]
pub(super) struct Found {
    /// Position of its frame: unique for the life of the queue, strictly increasing.
    pub(super) pos: u64,
    /// Ring offset of its frame.
    pub(super) off: u64,
    /// Payload length.
    pub(super) len: usize,
}

impl<M: Memory> Ring<M> {
    /// Take the consumer lock, repairing after a dead holder.
    #[inline(always)]
    pub(super) fn lock_consumer(&self, deadline: &Deadline) -> Result<LockGuard<'_>> {
        if self.lent_by_this_thread(false) {
            return Err(self.self_deadlock(false));
        }
        let (guard, how) = self.lock(&self.h().cons.lock, deadline)?;
        if let Acquired::Recovered(_) = how {
            self.repair_consumer()?;
        }
        Ok(guard)
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

    /// Step 1: take the consumer lock and read `head`.
    #[inline(always)]
    pub(super) fn begin_get(&self, deadline: &Deadline) -> Result<GetRound<'_>> {
        let h = self.h();
        let guard = self.lock_consumer(deadline)?;
        let head = h.cons.head.load(Ordering::Relaxed);
        if head > MAX_POS {
            return Err(Error::corrupt(format!("head {head} out of range")));
        }
        Ok(GetRound {
            guard,
            start: head,
            head,
            count: h.cons.get_count.load(Ordering::Relaxed),
            bytes: h.cons.get_bytes.load(Ordering::Relaxed),
            tail: self.published_tail(head),
        })
    }

    /// Step 2: the message record at the round's cursor, stepping over padding; `None` when
    /// the cursor reached the published `tail`. The frame is validated against the ring and
    /// the published region before it is returned.
    #[inline(always)]
    pub(super) fn next_record(&self, r: &mut GetRound<'_>) -> Result<Option<Found>> {
        loop {
            if r.head == r.tail {
                r.tail = self.published_tail(r.head);
                if r.head == r.tail {
                    return Ok(None);
                }
            }
            match self.frame_at(r.head, r.tail)? {
                Step::Skip(next) => r.head = next,
                Step::Msg(f) => return Ok(Some(f)),
            }
        }
    }

    /// The record at `head`, before the published `tail` (`head != tail`): its frame is
    /// read once and validated against the ring and the published region (a message that
    /// ends inside both, or padding that reaches exactly the end of the ring); anything else
    /// is `Corrupt`.
    #[inline(always)]
    fn frame_at(&self, head: u64, tail: u64) -> Result<Step> {
        match self.step_at(head, tail) {
            Some(step) => Ok(step),
            None => Err(self.frame_error(head, tail)),
        }
    }

    /// [`frame_at`](Self::frame_at) without the error: `None` when it would be `Corrupt`.
    #[inline(always)]
    fn step_at(&self, head: u64, tail: u64) -> Option<Step> {
        let avail = self.used(head, tail)?;
        let off = self.offset(head);
        let (len, tag) = self.read_frame(off);
        let len = len as u64;
        let to_end = self.cap - off;
        match tag {
            SKIP if len as u32 == skip_len(to_end) && to_end <= avail => {
                Some(Step::Skip(head + to_end))
            }
            MSG if record_size(len) <= to_end && record_size(len) <= avail => {
                Some(Step::Msg(Found {
                    pos: head,
                    off,
                    len: len as usize,
                }))
            }
            _ => None,
        }
    }

    /// The error for the record at `head` that [`step_at`](Self::step_at) refused (its
    /// frame read again for the message).
    #[cold]
    fn frame_error(&self, head: u64, tail: u64) -> Error {
        if self.used(head, tail).is_none() {
            return self.positions_error(head, tail);
        }
        let (len, tag) = self.read_frame(self.offset(head));
        Error::corrupt(format!(
            "bad frame at position {head} (tag {tag:#x}, length {len}, tail {tail})"
        ))
    }

    /// Move the round's cursor past the message `f` (the last one `next_record` returned).
    #[inline(always)]
    pub(super) fn take(&self, r: &mut GetRound<'_>, f: &Found) {
        debug_assert_eq!(f.pos, r.head);
        r.head += record_size(f.len as u64);
        r.count = r.count.wrapping_add(1);
        r.bytes = r.bytes.wrapping_add(f.len as u64);
    }

    /// Step 3: publish the cursor as `head` (if it moved), release the lock, wake. A caller
    /// that leaves messages it saw behind (a read lease dropped) passes a wake on itself
    /// ([`pass_on_wake`](Self::pass_on_wake)); an empty round has nothing to pass on.
    #[inline(always)]
    pub(super) fn end_get(&self, r: GetRound<'_>) {
        let moved = r.head != r.start;
        if moved {
            self.publish_head(r.head, r.count, r.bytes);
        }
        let GetRound {
            guard, head, tail, ..
        } = r;
        drop(guard);
        if moved {
            self.wake_after_get(head, tail);
        }
    }

    /// After `head` moved to `head` (the round saw records up to `tail`) and the lock was
    /// released: wake producers waiting for room, and, if more is queued than this round
    /// took, one sleeping consumer (a wake-one put woke only us). One fence orders the head
    /// store before both waiters-word reads; when nobody sleeps this is the fence and two
    /// loads from one line, and no word of the producers' is read.
    #[inline(always)]
    fn wake_after_get(&self, head: u64, tail: u64) {
        let h = self.h();
        prim::fence(Ordering::SeqCst);
        sync::notify_fenced(&h.cons.space_seq, &h.shared.producers_waiting, i32::MAX);
        if sync::armed(h.shared.consumers_waiting.load(Ordering::Relaxed)) != 0
            && (head != tail || self.published_tail(head) != head)
        {
            sync::notify_fenced(&h.prod.data_seq, &h.shared.consumers_waiting, 1);
        }
    }

    #[inline(always)]
    pub(super) fn publish_head(&self, head: u64, count: u64, bytes: u64) {
        let c = &self.h().cons;
        c.pending_head.store(head, Ordering::Relaxed);
        c.pending_count.store(count, Ordering::Relaxed);
        c.head.store(head, Ordering::Release);
        c.get_count.store(count, Ordering::Relaxed);
        c.get_bytes.store(bytes, Ordering::Relaxed);
    }

    /// A consumer leaves without taking a message: if messages are queued, wake one
    /// sleeping consumer in its place.
    pub(super) fn pass_on_wake(&self) {
        let h = self.h();
        if h.prod.tail.load(Ordering::Acquire) & !CLOSED != h.cons.head.load(Ordering::Acquire) {
            sync::notify(&h.prod.data_seq, &h.shared.consumers_waiting, 1);
        }
    }

    /// Begin a round that finds at least one message: takes the consumer lock and waits
    /// (per `block`) while the queue is empty. Errors: `Empty` (`Block::No`), `Timeout`,
    /// `Closed` once drained, `Corrupt`.
    ///
    /// The first try is inline (the common case: a message is there); waiting, and the
    /// tries after it, are [`begin_nonempty_wait`](Self::begin_nonempty_wait).
    #[inline(always)]
    pub(super) fn begin_nonempty(&self, block: Block) -> Result<(GetRound<'_>, Found)> {
        let deadline = block.deadline();
        match self.try_begin_nonempty(block, &deadline)? {
            Ok(found) => Ok(found),
            Err(head) => self.begin_nonempty_wait(block, &deadline, head),
        }
    }

    /// One try of [`begin_nonempty`](Self::begin_nonempty): the round and its first message,
    /// or (`Ok(Err(head))`) the queue was empty at `head` (the round ended).
    #[inline(always)]
    fn try_begin_nonempty(
        &self,
        block: Block,
        deadline: &Deadline,
    ) -> Result<std::result::Result<(GetRound<'_>, Found), u64>> {
        let mut round = match self.begin_get(deadline) {
            Ok(r) => r,
            Err(Error::Timeout) => {
                // Leaving without taking anything: pass a wake that may have been ours on.
                self.pass_on_wake();
                return Err(if matches!(block, Block::No) {
                    Error::Empty
                } else {
                    Error::Timeout
                });
            }
            Err(e) => return Err(e),
        };
        match self.next_record(&mut round) {
            Ok(Some(f)) => Ok(Ok((round, f))),
            Ok(None) => {
                let head = round.head;
                self.end_get(round);
                Ok(Err(head))
            }
            Err(e) => {
                // Padding stepped over before the bad frame is released.
                self.end_get(round);
                Err(e)
            }
        }
    }

    /// [`begin_nonempty`](Self::begin_nonempty) after a try found the queue empty at `head`:
    /// closed and drained gives `Closed`, `Block::No` gives `Empty`, else wait for a put and
    /// try again.
    #[inline(never)]
    fn begin_nonempty_wait(
        &self,
        block: Block,
        deadline: &Deadline,
        mut head: u64,
    ) -> Result<(GetRound<'_>, Found)> {
        let h = self.h();
        loop {
            // Empty. Closed and still empty in the same read of the tail word: drained.
            let word = h.prod.tail.load(Ordering::Acquire);
            if word & CLOSED != 0 && word & !CLOSED == head {
                return Err(Error::Closed);
            }
            if let Block::No = block {
                h.shared.empty_events.fetch_add(1, Ordering::Relaxed);
                return Err(Error::Empty);
            }
            // Before polling, let the producer write a few messages undisturbed (unless
            // the caller asked for no spinning or its deadline has passed).
            if !self.spin.is_zero() {
                let d = self.spin.min(slip_time());
                sync::slip(deadline.remaining().map_or(d, |left| left.min(d)));
            }
            if let Err(e) = sync::wait_until_counting(
                &h.prod.data_seq,
                &h.shared.consumers_waiting,
                Some(&h.shared.empty_events),
                self.spin,
                deadline,
                || h.prod.tail.load(Ordering::Acquire) != h.cons.head.load(Ordering::Relaxed),
            ) {
                self.pass_on_wake();
                return Err(e);
            }
            match self.try_begin_nonempty(block, deadline)? {
                Ok(found) => return Ok(found),
                Err(at) => head = at,
            }
        }
    }

    /// Get one message: `read(record)` copies its payload out while the consumer lock is
    /// held, and its result is returned. Errors as for [`get_batch`](Self::get_batch).
    ///
    /// The single-message path: the lock (one compare-and-swap), `head` (one load), the
    /// cached `tail` (the shared word only when the cached one shows nothing after `head`),
    /// the validation of one frame ([`frame_at`](Self::frame_at), as every get does), the
    /// copy, the publishing store of `head`, the unlock, and the wake check. No deadline is
    /// computed and the clock is not read unless the call has to wait. Anything else
    /// (padding, a corrupt frame, a busy lock) is the general path's, which takes the lock
    /// again and decides; an empty queue goes straight to waiting.
    #[inline(always)]
    pub fn get_one<R>(&self, block: Block, read: impl FnOnce(Record<'_>) -> R) -> Result<R> {
        let c = &self.h().cons;
        let mut empty_at = None;
        if let Some(guard) = self.try_lock(&c.lock, false) {
            let head = c.head.load(Ordering::Relaxed);
            let tail = self.published_tail(head);
            if head == tail {
                if head <= MAX_POS {
                    empty_at = Some(head);
                }
            } else if let Some(Step::Msg(f)) = self.step_at(head, tail) {
                let out = read(self.record(f.off, f.len));
                let next = head + record_size(f.len as u64);
                let count = c.get_count.load(Ordering::Relaxed).wrapping_add(1);
                let bytes = c.get_bytes.load(Ordering::Relaxed);
                self.publish_head(next, count, bytes.wrapping_add(f.len as u64));
                drop(guard);
                self.wake_after_get(next, tail);
                return Ok(out);
            }
            drop(guard);
        }
        self.get_one_slow(block, empty_at, read)
    }

    /// [`get_one`](Self::get_one) when its one try did not do: wait if it found the queue
    /// empty at `empty_at`, else begin a general round.
    #[inline(never)]
    fn get_one_slow<R>(
        &self,
        block: Block,
        empty_at: Option<u64>,
        read: impl FnOnce(Record<'_>) -> R,
    ) -> Result<R> {
        let (mut round, f) = match empty_at {
            Some(head) => self.begin_nonempty_wait(block, &block.deadline(), head)?,
            None => self.begin_nonempty(block)?,
        };
        let out = read(self.record(f.off, f.len));
        self.take(&mut round, &f);
        self.end_get(round);
        Ok(out)
    }

    /// Get up to `max` messages (at least one unless an error is returned): `read(record)`
    /// is called once per message, in order, while the consumer lock is held; it copies the
    /// payload out through the [`Record`] handle. One message (`max == 1`) goes through
    /// [`get_one`](Self::get_one).
    pub fn get_batch(
        &self,
        max: usize,
        block: Block,
        mut read: impl FnMut(Record<'_>),
    ) -> Result<usize> {
        match max {
            0 => return Ok(0),
            1 => return self.get_one(block, read).map(|()| 1),
            _ => {}
        }
        let (mut round, mut f) = self.begin_nonempty(block)?;
        let mut got = 0usize;
        let result = loop {
            read(self.record(f.off, f.len));
            self.take(&mut round, &f);
            got += 1;
            if got == max {
                break Ok(());
            }
            match self.next_record(&mut round) {
                Ok(Some(next)) => f = next,
                Ok(None) => break Ok(()),
                Err(e) => break Err(e),
            }
        };
        self.end_get(round);
        result.map(|()| got)
    }
}

/// How long a consumer that found its queue empty waits before it polls `tail`
/// ([`sync::slip`]). 300 ns: the best trade measured on a 2-vCPU KVM guest (docs/design.md, "The
/// consumer's slip"). `SHMQ_SLIP_NS` overrides it for experiments (read once per process;
/// at most 1 ms; a value that is not a number is ignored). A slip never outlasts the
/// handle's spin setting nor the call's deadline.
fn slip_time() -> std::time::Duration {
    static NS: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    let ns = *NS.get_or_init(|| {
        std::env::var("SHMQ_SLIP_NS")
            .ok()
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map_or(300, |ns| ns.min(1_000_000))
    });
    std::time::Duration::from_nanos(ns)
}
