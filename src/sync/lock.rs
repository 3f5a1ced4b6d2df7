//! The lock: one `AtomicU32` in shared memory, `0` when free, otherwise the holder id of
//! the handle that holds it with bit 31 ([`WAITERS`]) set while someone may sleep on it;
//! a waiter that finds the lock kept for a while asks the [`Holder`] whether the holder
//! lives and takes a dead holder's lock over. See [the module docs](super).

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::holder::Holder;
use super::wait::Deadline;
use crate::error::{Error, Result};
// Words in the segment are `prim`'s (loom's under `cfg(loom)`).
use crate::prim::{self, AtomicU32};

/// Bit set in a lock word while a thread may be sleeping on it.
pub(crate) const WAITERS: u32 = 1 << 31;
/// Mask of the holder id in a lock word.
pub(crate) const HOLDER_MASK: u32 = !WAITERS;

/// How long a lock waiter lets a holder keep the lock before asking the kernel whether the
/// holder is still alive (and again after each further slice).
pub(crate) const LIVENESS_SLICE: Duration = Duration::from_millis(10);
/// Spin iterations on a contended lock before sleeping.
#[cfg(not(loom))]
const LOCK_SPIN: u32 = 200;
/// Under loom every spin is a scheduling point: keep one, to cover the spinning path.
#[cfg(loom)]
const LOCK_SPIN: u32 = 1;

/// How a lock was obtained.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub(crate) enum Acquired {
    /// Taken normally.
    Clean,
    /// Taken over from holder `id`, which died while holding it: the protected state may
    /// be mid-update and must be validated and repaired before use.
    Recovered(u32),
}

/// A process-shared lock on one 32-bit word in shared memory. See the module docs.
pub(crate) struct RobustLock<'a> {
    word: &'a AtomicU32,
}

/// Releases the lock when dropped (also on unwinding).
///
/// A guard that may outlive the call that took it (a loan, a primitive's guard) can be
/// carried into a `fork` child, where dropping it would release the lock the *parent* still
/// holds. Such holders record [`LockGuard::fork_generation`] when they take the lock and end
/// the guard with [`release_from`](LockGuard::release_from), which leaves the lock word
/// alone in another generation. Guards that end within the call that took them (a put or a
/// get) need neither: a fork child has only the forking thread, which was not inside that
/// call. (So the generation is not a field here: the put and get paths pay nothing for it.)
pub struct LockGuard<'a> {
    word: &'a AtomicU32,
    me: u32,
}

impl<'a> RobustLock<'a> {
    /// Wrap a lock word.
    pub fn new(word: &'a AtomicU32) -> Self {
        RobustLock { word }
    }

    /// Acquire the lock as holder `me` (from [`Holder::id`]), waiting until `deadline`.
    /// `holder` answers whether another holder is alive.
    ///
    /// Returns [`Error::Timeout`] when the deadline passes while a live holder keeps it.
    #[inline]
    pub fn lock(
        &self,
        me: u32,
        holder: &Holder,
        deadline: &Deadline,
    ) -> Result<(LockGuard<'a>, Acquired)> {
        self.lock_or_abandon(me, holder, deadline, &|| None)
    }

    /// [`RobustLock::lock`] that gives up with the error `abandon()` returns, asked before
    /// every sleep of a contended wait (so within [`LIVENESS_SLICE`], and at once after a
    /// wake of the lock word): e.g. `Closed` once the queue is closed, so that `close`
    /// also frees callers waiting for a lock that a live but stopped process holds.
    #[inline]
    pub fn lock_or_abandon(
        &self,
        me: u32,
        holder: &Holder,
        deadline: &Deadline,
        abandon: &dyn Fn() -> Option<Error>,
    ) -> Result<(LockGuard<'a>, Acquired)> {
        debug_assert!(me != 0 && me & WAITERS == 0);
        if self
            .word
            .compare_exchange(0, me, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
        {
            return Ok((self.guard(me), Acquired::Clean));
        }
        self.lock_contended(me, holder, deadline, abandon)
    }

    /// One compare-and-swap: the lock if it is free, else `None` (the caller goes on with
    /// [`lock_or_abandon`](Self::lock_or_abandon)).
    #[inline(always)]
    pub fn try_lock(&self, me: u32) -> Option<LockGuard<'a>> {
        debug_assert!(me != 0 && me & WAITERS == 0);
        self.word
            .compare_exchange(0, me, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
            .then(|| self.guard(me))
    }

    #[inline(always)]
    fn guard(&self, me: u32) -> LockGuard<'a> {
        LockGuard {
            word: self.word,
            me,
        }
    }

    #[cold]
    fn lock_contended(
        &self,
        me: u32,
        holder: &Holder,
        deadline: &Deadline,
        abandon: &dyn Fn() -> Option<Error>,
    ) -> Result<(LockGuard<'a>, Acquired)> {
        for _ in 0..LOCK_SPIN {
            prim::spin_loop();
            if self.word.load(Ordering::Relaxed) == 0
                && self
                    .word
                    .compare_exchange(0, me, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
            {
                return Ok((self.guard(me), Acquired::Clean));
            }
        }
        let mut stuck_since: Option<(u32, Instant)> = None;
        loop {
            let v = self.word.load(Ordering::Relaxed);
            let owner = v & HOLDER_MASK;
            if owner == 0 {
                // Free. We may have been one of several sleepers: keep the waiters bit so
                // that our unlock wakes the next one.
                if self
                    .word
                    .compare_exchange(v, me | WAITERS, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
                {
                    return Ok((self.guard(me), Acquired::Clean));
                }
                continue;
            }
            if v & WAITERS == 0
                && self
                    .word
                    .compare_exchange(v, v | WAITERS, Ordering::Relaxed, Ordering::Relaxed)
                    .is_err()
            {
                continue;
            }
            // Ask whether the holder lives once it has kept the lock for a slice, and once
            // more when the caller's deadline has passed: a short timeout must not make a
            // dead holder look alive for ever. (Under loom, which has no clock: every time.)
            let expired = deadline.expired();
            let check_now = expired
                || cfg!(loom)
                || match stuck_since {
                    Some((o, t)) if o == owner => t.elapsed() >= LIVENESS_SLICE,
                    _ => {
                        stuck_since = Some((owner, Instant::now()));
                        false
                    }
                };
            if check_now {
                if !holder.is_alive(owner) {
                    let cur = self.word.load(Ordering::Relaxed);
                    if cur & HOLDER_MASK == owner
                        && self
                            .word
                            .compare_exchange(
                                cur,
                                me | WAITERS,
                                Ordering::Acquire,
                                Ordering::Relaxed,
                            )
                            .is_ok()
                    {
                        return Ok((self.guard(me), Acquired::Recovered(owner)));
                    }
                    continue;
                }
                stuck_since = Some((owner, Instant::now()));
            }
            if let Some(e) = abandon() {
                return Err(e);
            }
            let slice = match deadline.remaining() {
                Some(r) if r.is_zero() => return Err(Error::Timeout),
                Some(r) => r.min(LIVENESS_SLICE),
                None => LIVENESS_SLICE,
            };
            prim::futex_wait(self.word, v | WAITERS, Some(slice));
        }
    }
}

impl LockGuard<'_> {
    /// The fork generation of this process now: record it beside a guard that may outlive
    /// the call that took it, and end the guard with [`release_from`](Self::release_from).
    /// One relaxed load: the `fork` handlers that count generations were registered when
    /// the [`Holder`] of any lock's taker was made.
    #[inline]
    pub(crate) fn fork_generation() -> u64 {
        super::fork::FORK_GENERATION.load(Ordering::Relaxed)
    }

    /// Whether something taken in fork generation `generation` was inherited through
    /// `fork`: this process is a fork child of the one that took it, and a lock taken then
    /// is held by that parent (which still runs, holds it and will release it).
    #[inline]
    pub(crate) fn inherited(generation: u64) -> bool {
        generation != Self::fork_generation()
    }

    /// End a guard taken in fork generation `generation`: release the lock (as dropping
    /// the guard does) when that is this process's generation; in a fork child leave the
    /// lock word untouched (the lock is the parent's; see [`inherited`](Self::inherited)).
    /// Returns whether the lock was released.
    #[inline]
    pub(crate) fn release_from(self, generation: u64) -> bool {
        if Self::inherited(generation) {
            std::mem::forget(self);
            false
        } else {
            drop(self);
            true
        }
    }
}

impl Drop for LockGuard<'_> {
    #[inline]
    fn drop(&mut self) {
        // Fast path: nobody waits.
        if self
            .word
            .compare_exchange(self.me, 0, Ordering::Release, Ordering::Relaxed)
            .is_ok()
        {
            return;
        }
        let mut v = self.word.load(Ordering::Relaxed);
        loop {
            if v & HOLDER_MASK != self.me {
                // Someone took the lock over (a hostile write, or they believed us dead):
                // it is theirs now.
                return;
            }
            match self
                .word
                .compare_exchange_weak(v, 0, Ordering::Release, Ordering::Relaxed)
            {
                Ok(_) => break,
                Err(cur) => v = cur,
            }
        }
        if v & WAITERS != 0 {
            prim::futex_wake(self.word, 1);
        }
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::prim::AtomicU64;
    use std::sync::Arc;

    /// Rounds per thread (fewer under Miri, which is some 1000 times slower).
    const ROUNDS: u64 = if cfg!(miri) { 300 } else { 10_000 };

    #[test]
    fn lock_excludes_threads() {
        let word = Arc::new(AtomicU32::new(0));
        let counter = Arc::new(AtomicU64::new(0));
        let holder = Arc::new(Holder::local());
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let word = word.clone();
                let counter = counter.clone();
                let holder = holder.clone();
                std::thread::spawn(move || {
                    let me = holder.id(|_| false).unwrap();
                    for _ in 0..ROUNDS {
                        let lock = RobustLock::new(&word);
                        let (_g, how) = lock.lock(me, &holder, &Deadline::never()).unwrap();
                        assert_eq!(how, Acquired::Clean);
                        // Non-atomic read-modify-write under the lock.
                        let v = counter.load(Ordering::Relaxed);
                        counter.store(v + 1, Ordering::Relaxed);
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        assert_eq!(counter.load(Ordering::Relaxed), 4 * ROUNDS);
        assert_eq!(word.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn dead_holder_is_recovered() {
        let holder = Holder::local();
        let me = holder.id(|_| false).unwrap();
        let dead = if me == 12345 { 54321 } else { 12345 };
        let word = AtomicU32::new(dead);
        let (_g, how) = RobustLock::new(&word)
            .lock(me, &holder, &Deadline::never())
            .unwrap();
        assert_eq!(how, Acquired::Recovered(dead));
    }

    #[test]
    fn live_holder_times_out() {
        let word = AtomicU32::new(0);
        let holder = Holder::local();
        let me = holder.id(|_| false).unwrap();
        let (g, _) = RobustLock::new(&word)
            .lock(me, &holder, &Deadline::never())
            .unwrap();
        std::thread::scope(|s| {
            s.spawn(|| {
                // Another thread of the same holder: alive, so it waits and times out.
                let r = RobustLock::new(&word).lock(
                    me,
                    &holder,
                    &Deadline::after(Duration::from_millis(30)),
                );
                assert!(matches!(r, Err(Error::Timeout)));
            });
        });
        drop(g);
        assert_eq!(word.load(Ordering::Relaxed), 0);
    }
}
