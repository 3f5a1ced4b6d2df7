//! The producer side: reserve room for a record, write it through a [`Slot`], publish.
//!
//! A put is a round under the producer lock ([`PutRound`]):
//! 1. [`Ring::begin_put`] takes the lock (repairing after a dead holder) and reads `tail`;
//! 2. [`Ring::reserve`] finds room for one record at the local tail, writing SKIP padding
//!    before it when it would straddle the end of the ring, and clearing leading padding
//!    out of the consumers' way when nothing else is queued;
//! 3. [`Ring::write_record`] fills the payload through a [`Slot`] and writes the frame;
//! 4. [`Ring::publish`] makes everything written visible with one compare-and-swap of
//!    `tail`, and [`Ring::end_put`] releases the lock and wakes consumers.
//!
//! `put_batch` runs these steps for as many messages as fit; a write loan
//! ([`WriteLoan`](super::WriteLoan)) holds a round between reserve and publish.

use std::sync::atomic::Ordering;
use std::time::Instant;

use super::frame::{record_size, skip_len, Slot, CLOSED, MAX_POS, MSG, SKIP};
use super::{Block, Ring, TRY_LOCK_WAIT};
use crate::error::{Error, Result};
use crate::mapping::Memory;
use crate::sync::{self, Acquired, Deadline, LockGuard};

/// Whether `word`, the `tail` word read under the producer lock, allows a put: not
/// closed, and a valid position.
#[inline(always)]
fn tail_ok(word: u64) -> bool {
    // A multiple of 8 has the closed bit (bit 0) clear.
    word <= MAX_POS && word.is_multiple_of(8)
}

/// The error for a `tail` word that [`tail_ok`] refuses.
#[cold]
fn tail_error(word: u64) -> Error {
    let pos = word & !CLOSED;
    if pos > MAX_POS || !pos.is_multiple_of(8) {
        Error::corrupt(format!("tail {pos} out of range"))
    } else {
        Error::Closed
    }
}

/// Longest a spinning producer waits for a quarter of the ring rather than for its record.
const HYSTERESIS_MAX: std::time::Duration = std::time::Duration::from_micros(50);

/// One hold of the producer lock.
pub(super) struct PutRound<'a> {
    guard: LockGuard<'a>,
    /// The `tail` word as last published (found under the lock, then our own publishes).
    from: u64,
    /// Local tail: after the records and padding written in this round.
    tail: u64,
    count: u64,
    bytes: u64,
    /// Whether this round published (records or padding): consumers must be woken.
    moved_tail: bool,
    /// Messages published by this round.
    published: usize,
    /// Messages written but not yet published.
    pending: usize,
    /// Whether this round already tried to clear leading padding.
    tried_skips: bool,
}

/// What [`Ring::reserve`] found.
pub(super) enum Reserve {
    /// Room for the record at this ring offset.
    At(u64),
    /// No room: `need` more free bytes are wanted (0: the message bound is reached).
    NoRoom(u64),
}

impl<M: Memory> Ring<M> {
    /// Take the producer lock, repairing after a dead holder.
    #[inline(always)]
    pub(super) fn lock_producer(&self, deadline: &Deadline) -> Result<LockGuard<'_>> {
        if self.lent_by_this_thread(true) {
            return Err(self.self_deadlock(true));
        }
        let (guard, how) = self.lock(&self.h().prod.lock, deadline)?;
        if let Acquired::Recovered(_) = how {
            self.repair_producer()?;
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

    /// Step 1: take the producer lock and read the published `tail`.
    #[inline(always)]
    pub(super) fn begin_put(&self, deadline: &Deadline) -> Result<PutRound<'_>> {
        let h = self.h();
        let guard = self.lock_producer(deadline)?;
        // Under the producer lock only `close` (setting CLOSED) changes this word.
        let from = h.prod.tail.load(Ordering::Relaxed);
        if !tail_ok(from) {
            return Err(tail_error(from));
        }
        Ok(PutRound {
            guard,
            from,
            tail: from,
            count: h.prod.put_count.load(Ordering::Relaxed),
            bytes: h.prod.put_bytes.load(Ordering::Relaxed),
            moved_tail: false,
            published: 0,
            pending: 0,
            tried_skips: false,
        })
    }

    /// Step 2: room for one record with a payload of `len` bytes at the round's tail.
    /// `deadline` bounds the brief wait for the consumer lock when leading padding must be
    /// cleared. Errors: `TooLarge`, `Corrupt`, `Closed` (padding could not be published).
    #[inline(always)]
    pub(super) fn reserve(
        &self,
        round: &mut PutRound<'_>,
        len: usize,
        deadline: &Deadline,
    ) -> Result<Reserve> {
        let h = self.h();
        if len > self.max_message() {
            return Err(self.too_large(len));
        }
        if let Some(off) = self.reserve_fast(round, len) {
            return Ok(Reserve::At(off));
        }
        loop {
            if self.at_message_bound_checked(round.count)? {
                // As many messages queued as the queue may hold: wait for a get (every head
                // move wakes the producers).
                return Ok(Reserve::NoRoom(0));
            }
            let rec = record_size(len as u64);
            let off = self.offset(round.tail);
            let to_end = self.cap - off;
            let free = self.free_space(round.tail, rec.min(to_end))?;
            let need = if rec > to_end {
                if to_end <= free {
                    self.write_frame(off, skip_len(to_end), SKIP);
                    round.tail += to_end;
                    continue;
                }
                to_end
            } else if rec > free {
                rec
            } else {
                return Ok(Reserve::At(off));
            };
            // No room. If nothing but padding (ours, or a blocked producer's) may stand
            // between the consumers and us, remove it ourselves: a message that fits an
            // empty ring must not wait for a consumer.
            if round.pending > 0 || round.published > 0 || round.tried_skips {
                return Ok(Reserve::NoRoom(need));
            }
            round.tried_skips = true;
            self.publish(round)?;
            if h.prod.put_count.load(Ordering::Relaxed) != h.cons.get_count.load(Ordering::Acquire)
            {
                return Ok(Reserve::NoRoom(need));
            }
            // Briefly: a busy consumer lock means a consumer is at work (it consumes the
            // padding itself), and a long wait here would not see `close`. Long enough to
            // take over from a dead holder.
            let brief = Deadline::after(
                deadline
                    .remaining()
                    .map_or(TRY_LOCK_WAIT, |r| r.min(TRY_LOCK_WAIT)),
            );
            if !self.drop_leading_skips(round.tail, &brief)? {
                return Ok(Reserve::NoRoom(need));
            }
        }
    }

    /// Step 2, the common case (the single-message path's only one): room for a record of
    /// `len` payload bytes at the round's tail without padding, under the message bound,
    /// and within the free space (the cached `head`, or the shared one when the cached one
    /// shows too little). `None`: the general [`reserve`](Self::reserve) decides.
    #[inline(always)]
    pub(super) fn reserve_fast(&self, round: &PutRound<'_>, len: usize) -> Option<u64> {
        self.room_at(round.tail, round.count, len)
    }

    /// [`reserve_fast`](Self::reserve_fast) for a producer at position `tail` that has put
    /// `count` messages: the ring offset of room for the record, or `None` (also when the
    /// shared `head` is corrupt: the general path reports it).
    #[inline(always)]
    fn room_at(&self, tail: u64, count: u64, len: usize) -> Option<u64> {
        let rec = record_size(len as u64);
        let off = self.offset(tail);
        if rec > self.cap - off || self.at_message_bound(count) {
            return None;
        }
        (rec <= self.room(tail, rec)?).then_some(off)
    }

    /// Step 3: write the record reserved at `off` (payload `len` bytes): `fill` writes the
    /// payload through the slot; the frame records what it wrote.
    #[inline(always)]
    pub(super) fn write_record(
        &self,
        round: &mut PutRound<'_>,
        off: u64,
        len: usize,
        fill: impl FnOnce(&mut Slot<'_>) -> Result<()>,
    ) -> Result<()> {
        let mut slot = self.slot(off, len);
        fill(&mut slot)?;
        self.finish_record(round, off, slot.written());
        Ok(())
    }

    /// Step 3, second half: write the frame of the record at `off` whose payload of
    /// `written` bytes is in place, and move the round's tail past it.
    #[inline(always)]
    pub(super) fn finish_record(&self, round: &mut PutRound<'_>, off: u64, written: usize) {
        self.write_frame(off, written as u32, MSG);
        round.tail += record_size(written as u64);
        round.count = round.count.wrapping_add(1);
        round.bytes = round.bytes.wrapping_add(written as u64);
        round.pending += 1;
    }

    /// Step 4: publish everything written in the round (records and padding) with one
    /// release compare-and-swap of `tail`. Fails with `Closed` (nothing of it published) if
    /// the queue was closed meanwhile.
    #[inline(always)]
    pub(super) fn publish(&self, round: &mut PutRound<'_>) -> Result<()> {
        if round.tail == round.from {
            return Ok(());
        }
        match self.publish_tail(round.from, round.tail, round.count, round.bytes) {
            Ok(()) => {
                self.prefetch_next(round.tail, round.tail - round.from);
                round.from = round.tail;
                round.moved_tail = true;
                round.published += round.pending;
                round.pending = 0;
                Ok(())
            }
            Err(e) => {
                // Closed (or corrupt) before publishing: the unpublished records were never
                // visible.
                round.tail = round.from;
                round.pending = 0;
                Err(e)
            }
        }
    }

    /// Release the producer lock and wake consumers if the round moved `tail`. Returns the
    /// number of messages published.
    #[inline(always)]
    pub(super) fn end_put(&self, round: PutRound<'_>) -> usize {
        let PutRound {
            guard,
            moved_tail,
            published,
            ..
        } = round;
        drop(guard);
        if moved_tail {
            self.wake_consumers(published);
        }
        published
    }

    /// After a round that moved `tail` (published `published` messages, or only padding)
    /// released the lock: a sleeping consumer must look (it consumes padding too, which is
    /// what a producer waiting for room needs). One fence and one load of the consumers'
    /// waiters word when none sleeps.
    #[inline(always)]
    fn wake_consumers(&self, published: usize) {
        let h = self.h();
        let wake = if published <= 1 { 1 } else { i32::MAX };
        sync::notify(&h.prod.data_seq, &h.shared.consumers_waiting, wake);
    }

    /// Publish records up to `tail` with one release compare-and-swap from `from` (the
    /// word found under the producer lock). Fails with `Closed` (nothing published) if the
    /// queue was closed meanwhile.
    #[inline(always)]
    pub(super) fn publish_tail(&self, from: u64, tail: u64, count: u64, bytes: u64) -> Result<()> {
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

    /// Whether `puts` (a count of messages put) minus the messages got has reached the
    /// message bound.
    #[inline]
    pub(super) fn at_message_bound(&self, puts: u64) -> bool {
        self.max_msgs != 0
            && puts.saturating_sub(self.h().cons.get_count.load(Ordering::Acquire)) >= self.max_msgs
    }

    /// [`at_message_bound`](Self::at_message_bound) on the general path, where an impossible
    /// count is reported: more messages queued than the ring could hold (each record is at
    /// least 8 bytes) means a corrupt counter, which would otherwise refuse every put with
    /// `Full` for ever.
    pub(super) fn at_message_bound_checked(&self, puts: u64) -> Result<bool> {
        if self.max_msgs == 0 {
            return Ok(false);
        }
        let got = self.h().cons.get_count.load(Ordering::Acquire);
        let queued = puts.wrapping_sub(got);
        if queued > self.cap / 8 {
            return Err(Error::corrupt(format!(
                "the message counters say {queued} messages are queued ({puts} put, {got} got), more than a ring of {} bytes can hold",
                self.cap
            )));
        }
        Ok(queued >= self.max_msgs)
    }

    /// The position after the [`SKIP`] record at `head`, if there is a valid one that ends
    /// at or before `tail`.
    #[inline]
    pub(super) fn skip_at(&self, head: u64, tail: u64) -> Option<u64> {
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
        if self.lent_by_this_thread(false) {
            // This thread holds a read loan: a consumer is at work, as with a busy lock.
            return Ok(false);
        }
        let guard = match self.lock_consumer(deadline) {
            Ok(g) => g,
            Err(Error::Timeout) | Err(Error::Closed) => return Ok(false),
            Err(e) => return Err(e),
        };
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

    /// Wait (after a round found no room for `need` bytes) until room may have appeared,
    /// the queue closed, or `deadline` passed.
    pub(super) fn wait_for_room(&self, need: u64, deadline: &Deadline) -> Result<()> {
        let h = self.h();
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
            deadline,
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
    }

    /// Put up to `n` messages. `size(i)` gives message `i`'s exact payload length;
    /// `write(i, slot)` writes that payload into the slot (at most `size(i)` bytes; the
    /// record publishes what was written).
    ///
    /// Returns how many messages were published. With [`Block::No`] that may be fewer than
    /// `n` (zero gives [`Error::Full`]); otherwise it is `n` or an error (messages before the
    /// error were published).
    ///
    /// One message (`n == 1`) goes through [`put_one`](Self::put_one).
    pub fn put_batch(
        &self,
        n: usize,
        block: Block,
        mut size: impl FnMut(usize) -> Result<usize>,
        mut write: impl FnMut(usize, &mut Slot<'_>) -> Result<()>,
    ) -> Result<usize> {
        if n == 1 {
            let len = size(0)?;
            return self.put_one(len, block, |s| write(0, s)).map(|()| 1);
        }
        self.put_rounds(n, block, &block.deadline(), size, write)
    }

    /// Put one message of exactly `len` payload bytes, which `fill` writes into the slot
    /// (at most `len` bytes; the record publishes what was written): the single-message
    /// path. Errors: `TooLarge` (before anything else), `Full` ([`Block::No`]), `Timeout`,
    /// `Closed`, `Corrupt`, and `fill`'s own (nothing is published then).
    ///
    /// The common case is one round of the shared steps with no loop around them: the lock
    /// (one compare-and-swap), the `tail` word (one load), [`reserve_fast`](Self::reserve_fast)
    /// (one bounds check against the cached `head`), the payload and the frame, the
    /// publishing compare-and-swap of `tail`, the unlock, and a wake check that is one load
    /// when no consumer sleeps. The clock is not read and no deadline is computed unless
    /// the call has to wait. Anything else (padding at the end of the ring, no room, the
    /// message bound) continues the same round in the general loop of [`put_batch`](Self::put_batch).
    #[inline(always)]
    pub fn put_one(
        &self,
        len: usize,
        block: Block,
        mut fill: impl FnMut(&mut Slot<'_>) -> Result<()>,
    ) -> Result<()> {
        if len > self.max_message() {
            // The general path decides which error wins (a closed queue says `Closed`,
            // as for a batch), so both paths answer alike.
            return self.put_one_slow(len, block, fill);
        }
        let p = &self.h().prod;
        if let Some(guard) = self.try_lock(&p.lock, true) {
            // Under the producer lock only `close` (setting CLOSED) changes this word.
            let from = p.tail.load(Ordering::Relaxed);
            if tail_ok(from) {
                let count = p.put_count.load(Ordering::Relaxed);
                if let Some(off) = self.room_at(from, count, len) {
                    let mut slot = self.slot(off, len);
                    // An error of `fill` leaves nothing visible: the lock is released
                    // (the guard's drop) with `tail` unchanged.
                    fill(&mut slot)?;
                    let written = slot.written();
                    self.write_frame(off, written as u32, MSG);
                    let bytes = p.put_bytes.load(Ordering::Relaxed);
                    let tail = from + record_size(written as u64);
                    let r = self.publish_tail(
                        from,
                        tail,
                        count.wrapping_add(1),
                        bytes.wrapping_add(written as u64),
                    );
                    if r.is_ok() {
                        self.prefetch_next(tail, tail - from);
                    }
                    drop(guard);
                    if r.is_ok() {
                        self.wake_consumers(1);
                    }
                    return r;
                }
            }
            // Anything else (closed, corrupt, padding, no room, the message bound) is the
            // general path's, which takes the lock again and decides.
            drop(guard);
        }
        self.put_one_slow(len, block, fill)
    }

    /// [`put_one`](Self::put_one) when its one try did not do: the rounds of
    /// [`put_batch`](Self::put_batch) for one message.
    #[inline(never)]
    fn put_one_slow(
        &self,
        len: usize,
        block: Block,
        mut fill: impl FnMut(&mut Slot<'_>) -> Result<()>,
    ) -> Result<()> {
        self.put_rounds(1, block, &block.deadline(), |_| Ok(len), |_, s| fill(s))
            .map(|_| ())
    }

    /// The loop of [`put_batch`](Self::put_batch): rounds until `n` messages are published,
    /// waiting for room between them.
    fn put_rounds(
        &self,
        n: usize,
        block: Block,
        deadline: &Deadline,
        mut size: impl FnMut(usize) -> Result<usize>,
        mut write: impl FnMut(usize, &mut Slot<'_>) -> Result<()>,
    ) -> Result<usize> {
        let h = self.h();
        let mut done = 0usize;
        let mut cur_len: Option<usize> = None;
        while done < n {
            let mut round = match self.begin_put(deadline) {
                Ok(r) => r,
                Err(Error::Timeout) if matches!(block, Block::No) => {
                    return if done > 0 { Ok(done) } else { Err(Error::Full) };
                }
                Err(e) => return Err(e),
            };
            let mut result: Result<()> = Ok(());
            let mut need = None;
            while done + round.pending < n {
                let i = done + round.pending;
                let len = match cur_len {
                    Some(l) => l,
                    None => match size(i) {
                        Ok(l) => *cur_len.insert(l),
                        Err(e) => {
                            result = Err(e);
                            break;
                        }
                    },
                };
                match self.reserve(&mut round, len, deadline) {
                    Ok(Reserve::At(off)) => {
                        if let Err(e) = self.write_record(&mut round, off, len, |s| write(i, s)) {
                            result = Err(e);
                            break;
                        }
                        cur_len = None;
                    }
                    Ok(Reserve::NoRoom(want)) => {
                        need = Some(want);
                        break;
                    }
                    Err(e) => {
                        result = Err(e);
                        break;
                    }
                }
            }
            if let Err(e) = self.publish(&mut round) {
                result = Err(e);
            }
            done += self.end_put(round);
            result?;
            let Some(need) = need else { break };
            // No room for message `done`.
            if let Block::No = block {
                h.shared.full_events.fetch_add(1, Ordering::Relaxed);
                return if done > 0 { Ok(done) } else { Err(Error::Full) };
            }
            self.wait_for_room(need, deadline).map_err(|e| {
                if done > 0 {
                    Error::Timeout
                } else {
                    e
                }
            })?;
        }
        Ok(done)
    }
}
