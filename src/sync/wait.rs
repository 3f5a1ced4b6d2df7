//! Waiting on 32-bit words in the segment: [`Deadline`], and both sides of the
//! sequence-word protocol ([`wait_until`] / [`notify`]). See [the module docs](super).

use std::cell::Cell;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
// Words in the segment are `prim`'s (loom's under `cfg(loom)`).
use crate::prim::{self, fence, AtomicU32, AtomicU64};

/// Longest single kernel sleep of a waiter before it re-checks its condition.
pub(crate) const MAX_SLEEP: Duration = Duration::from_millis(100);

/// When a blocking call gives up: never, at an instant, or after a duration counted from
/// the first moment the call actually has to wait. The clock is read lazily, so a call that
/// finds room or a message at once never reads it (the `*_timeout` calls cost what the
/// blocking ones cost on the fast path). No arithmetic here can overflow: a deadline past
/// the clock's range is "never".
#[derive(Debug)]
pub(crate) struct Deadline {
    timeout: Option<Duration>,
    at: Cell<Option<Option<Instant>>>,
}

impl Deadline {
    /// No deadline: wait for ever.
    pub fn never() -> Deadline {
        Deadline {
            timeout: None,
            at: Cell::new(Some(None)),
        }
    }

    /// At `at` (`None`: never).
    pub fn at(at: Option<Instant>) -> Deadline {
        Deadline {
            timeout: None,
            at: Cell::new(Some(at)),
        }
    }

    /// `d` after the first call of [`Deadline::get`] (`Duration::MAX` and other durations
    /// past the clock's range: never).
    pub fn after(d: Duration) -> Deadline {
        // `Duration::MAX` is what the blocking calls pass (they are the `*_timeout` calls,
        // issue 14): "never" at once, so that their waits do not read the clock for it.
        if d == Duration::MAX {
            return Deadline::never();
        }
        Deadline {
            timeout: Some(d),
            at: Cell::new(None),
        }
    }

    /// The deadline instant (`None`: never), fixed at the first call. Under loom there is
    /// no clock: every deadline is "never".
    pub fn get(&self) -> Option<Instant> {
        if cfg!(loom) {
            return None;
        }
        match self.at.get() {
            Some(at) => at,
            None => {
                let at = self.timeout.and_then(|d| Instant::now().checked_add(d));
                self.at.set(Some(at));
                at
            }
        }
    }

    /// Time left (`None`: no limit; zero once passed).
    pub fn remaining(&self) -> Option<Duration> {
        self.get()
            .map(|d| d.saturating_duration_since(Instant::now()))
    }

    /// Whether the deadline has passed.
    pub fn expired(&self) -> bool {
        matches!(self.remaining(), Some(r) if r.is_zero())
    }
}

/// Bit 0 of a waiters word (`Shared::consumers_waiting` / `producers_waiting`,
/// `Tasks::join_waiters`, a primitive's `WAITERS`): set while sleepers may be registered
/// on the sequence word since the last wake-up that provably woke them all. Bits 1..=31
/// count registrations (wrapping), so that a waker can tell with one compare-and-swap
/// whether anybody registered since it read the word. Nothing counts sleepers: a process
/// that dies asleep leaves at most this bit behind, and the next waker clears it with its
/// one `FUTEX_WAKE` (see "Sleepers a dead process leaves behind" in `docs/design.md`).
pub(crate) const ARMED: u32 = 1;

/// What one registration adds to a waiters word (above [`ARMED`]).
const REGISTRATION: u32 = 2;

/// Whether a waiters word says sleepers may be registered (0 or 1, for statistics).
#[inline]
pub(crate) fn armed(word: u32) -> u32 {
    word & ARMED
}

/// Register a sleeper: set [`ARMED`] and bump the registration count, in one `SeqCst`
/// read-modify-write (the store of the store/load pair with the waker's `ready` side).
/// Returns the word before and after, for [`unregister`].
fn register(waiters: &AtomicU32) -> (u32, u32) {
    let mut w = waiters.load(Ordering::Relaxed);
    loop {
        let new = (w | ARMED).wrapping_add(REGISTRATION);
        match waiters.compare_exchange_weak(w, new, Ordering::SeqCst, Ordering::Relaxed) {
            Ok(_) => return (w, new),
            Err(now) => w = now,
        }
    }
}

/// A sleeper leaves (awake): if its registration `(before, mine)` is still the word's last
/// change and the word was not armed before it, nobody else is registered, so clear
/// [`ARMED`] (keeping the count, which never goes back: a waker's compare-and-swap from an
/// older value must keep failing). Otherwise leave the word to the next waker.
fn unregister(waiters: &AtomicU32, (before, mine): (u32, u32)) {
    if before & ARMED == 0 {
        let _ = waiters.compare_exchange(mine, mine & !ARMED, Ordering::Relaxed, Ordering::Relaxed);
    }
}

/// The sleeping side of the sequence-word protocol.
///
/// Spins for about `spin` (never past the deadline) re-checking `ready`, then registers in
/// `waiters` ([`ARMED`]), re-checks, and sleeps on `seq` until a waker bumps it, for at most
/// [`MAX_SLEEP`] at a time. Returns `Ok(())` once `ready()` held at some check or after a
/// kernel wake or slice (the caller re-checks anyway), and `Err(Timeout)` when the deadline
/// passed with `ready()` false. On return the registration is undone only when it is
/// provably the only one ([`unregister`]); otherwise the next waker clears it (one
/// `FUTEX_WAKE`), and a sleeper killed in the kernel leaves nothing that costs the
/// survivors more than that one call.
pub(crate) fn wait_until(
    seq: &AtomicU32,
    waiters: &AtomicU32,
    spin: Duration,
    deadline: &Deadline,
    ready: impl FnMut() -> bool,
) -> Result<()> {
    wait_until_counting(seq, waiters, None, spin, deadline, ready)
}

/// [`wait_until`] that also bumps `sleeps` once if the spin phase fails (the caller is
/// about to sleep in the kernel, or time out). Counting there rather than on every empty
/// or full check keeps shared statistics writes off the fast path, where they would
/// bounce a cache line that the other side reads on every message.
pub(crate) fn wait_until_counting(
    seq: &AtomicU32,
    waiters: &AtomicU32,
    sleeps: Option<&AtomicU64>,
    spin: Duration,
    deadline: &Deadline,
    mut ready: impl FnMut() -> bool,
) -> Result<()> {
    // A deadline already passed (a `*_timeout(Duration::ZERO)` call): one look, no spinning,
    // no registration, no system call.
    if deadline.expired() {
        if ready() {
            return Ok(());
        }
        if let Some(sleeps) = sleeps {
            sleeps.fetch_add(1, Ordering::Relaxed);
        }
        return Err(Error::Timeout);
    }
    // (Under loom there is no clock to end a spin phase: waiters go straight to sleep.)
    if !spin.is_zero() && !cfg!(loom) {
        let start = Instant::now();
        let spin_until = match (start.checked_add(spin), deadline.get()) {
            (Some(s), Some(d)) => Some(s.min(d)),
            (s, None) => s,
            (None, d) => d,
        };
        loop {
            // About 0.5 µs of polling (a `pause` is 10-20 ns on current x86), checking every
            // four pauses: checking reads the other side's cache line, and checking more
            // often only steals it from the writer more often (measured: 8 B throughput
            // between two CPUs ~110 -> ~95 ns per message, round trips unchanged)...
            for _ in 0..8 {
                if ready() {
                    return Ok(());
                }
                for _ in 0..4 {
                    prim::spin_loop();
                }
            }
            // ...then let a peer on the same CPU run: it is the one we wait for, and with
            // both pinned to one CPU every µs spent polling delays it. With nothing else
            // runnable, sched_yield returns in about 0.3 µs. Reading the clock is cheap (vDSO).
            prim::yield_now();
            if spin_until.is_some_and(|u| Instant::now() >= u) {
                break;
            }
        }
    }
    if let Some(sleeps) = sleeps {
        sleeps.fetch_add(1, Ordering::Relaxed);
    }
    // The order matters: `seq0` is read before the registration, so a waker that saw the
    // registration bumps `seq` after `seq0` was read and the sleep below cannot miss it.
    let seq0 = seq.load(Ordering::SeqCst);
    let registration = register(waiters);
    fence(Ordering::SeqCst);
    let result = if ready() {
        Ok(())
    } else {
        match deadline.remaining() {
            Some(r) if r.is_zero() => Err(Error::Timeout),
            r => {
                let slice = r.map_or(MAX_SLEEP, |r| r.min(MAX_SLEEP));
                prim::futex_wait(seq, seq0, Some(slice));
                Ok(())
            }
        }
    };
    unregister(waiters, registration);
    result
}

/// Wait about `d` without reading anything another process writes: one `sched_yield`,
/// then `pause` between reads of the local clock until `d` has passed since the call
/// (nothing under loom, whose model has no clock).
///
/// A consumer that finds its queue empty calls this before it starts to poll the
/// producers' words ("temporal slipping", Giacomoni, Moseley and Vachharajani,
/// *FastForward for Efficient Pipeline Parallelism*, PPoPP 2008): a consumer that polls
/// while the producer writes takes the producers' cache line from it in the middle of its
/// put, and every locked instruction of the put then waits for the line to come back.
/// See `docs/design.md`, "The consumer's slip".
pub(crate) fn slip(d: Duration) {
    if cfg!(loom) || d.is_zero() {
        return;
    }
    let start = Instant::now();
    // First give the CPU away: a peer on this CPU (the producer we wait for) runs now,
    // and with nothing else runnable `sched_yield` returns after about 0.3 µs of kernel
    // time that reads nothing of ours...
    prim::yield_now();
    // ...then pause out the rest of `d`.
    while start.elapsed() < d {
        for _ in 0..8 {
            prim::spin_loop();
        }
    }
}

/// The waking side: after publishing a change that `ready()` observes, call this.
/// Skips the syscall when no sleeper is registered. Wakes up to `n` sleepers.
#[inline]
pub(crate) fn notify(seq: &AtomicU32, waiters: &AtomicU32, n: i32) {
    fence(Ordering::SeqCst);
    notify_fenced(seq, waiters, n);
}

/// [`notify`] for a caller that issued the `SeqCst` fence after its change itself (one
/// fence serves several notifications of the same change).
#[inline]
pub(crate) fn notify_fenced(seq: &AtomicU32, waiters: &AtomicU32, n: i32) {
    let seen = waiters.load(Ordering::Relaxed);
    if seen & ARMED != 0 {
        wake_registered(seq, waiters, seen, n);
    }
}

/// A waker that found `seen` (armed) in `waiters`: bump `seq` and wake up to `n` sleepers.
/// Fewer than `n` woken proves that every sleeper in the kernel was woken (and one that
/// registered before `seen` but is not in the kernel yet read its `seq0` before the bump,
/// so its `FUTEX_WAIT` returns at once): the registrations up to `seen` are spent, so clear
/// [`ARMED`] with a compare-and-swap from `seen`, which fails (leaving the word armed, for
/// the next waker) if anybody registered meanwhile. With `n` woken more may sleep: the word
/// stays armed (a woken sleeper that was the only one registered clears it itself). A dead
/// sleeper is in no kernel queue, so a word armed only by the dead costs exactly this one
/// `FUTEX_WAKE` (woken 0) and is cleared.
#[cold]
fn wake_registered(seq: &AtomicU32, waiters: &AtomicU32, seen: u32, n: i32) {
    seq.fetch_add(1, Ordering::SeqCst);
    let woken = prim::futex_wake(seq, n);
    if woken < n.max(0) as usize {
        // Relaxed is enough: only the modification order of `waiters` matters (any
        // registration after `seen` makes this fail).
        let _ = waiters.compare_exchange(seen, seen & !ARMED, Ordering::Relaxed, Ordering::Relaxed);
    }
}

/// Unconditionally bump `seq` and wake every sleeper (used by `close`), then disarm
/// `waiters` as [`wake_registered`] does (every sleeper in the kernel was woken): after a
/// close no later put may come to clear it, and `stats()` would show sleepers for ever.
/// `seen` is read `SeqCst` before the bump, so a sleeper whose registration it includes
/// read its `seq0` before the bump and does not sleep on.
pub(crate) fn notify_all(seq: &AtomicU32, waiters: &AtomicU32) {
    let seen = waiters.load(Ordering::SeqCst);
    wake_registered(seq, waiters, seen, i32::MAX);
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn slip_spins_at_least_its_time_and_zero_not_at_all() {
        // A lower bound only: `slip` returns once its own clock says `d` passed. (Miri's
        // clock advances with the interpreted code: a shorter slip there.)
        let d = Duration::from_micros(if cfg!(miri) { 20 } else { 3000 });
        let t = Instant::now();
        slip(d);
        assert!(t.elapsed() >= d);
        let t = Instant::now();
        for _ in 0..1000 {
            slip(Duration::ZERO);
        }
        // 1000 zero slips read no clock and spin not at all: far below a second even
        // under Miri or on a busy machine (a 3 ms slip each would take 3 s).
        assert!(t.elapsed() < Duration::from_secs(3));
    }

    #[test]
    fn deadlines_never_overflow() {
        let d = Deadline::after(Duration::MAX);
        assert_eq!(d.get(), None);
        assert!(!d.expired());
        // Huge but not `MAX`: past the clock's range, so never too.
        let huge = Deadline::after(Duration::from_secs(u64::MAX));
        assert_eq!(huge.get(), None);
        assert!(!huge.expired());
        let z = Deadline::after(Duration::ZERO);
        assert!(z.expired());
        assert_eq!(Deadline::never().remaining(), None);
        let w = AtomicU32::new(0);
        let n = AtomicU32::new(0);
        // A spin of Duration::MAX is bounded by the deadline.
        let r = wait_until(
            &w,
            &n,
            Duration::MAX,
            &Deadline::after(Duration::from_millis(20)),
            || false,
        );
        assert!(matches!(r, Err(Error::Timeout)));
    }

    /// A registration nobody undoes (its sleeper was killed) costs the next waker one
    /// wake-up (one `seq` bump: the `FUTEX_WAKE` path) and no waker after it.
    #[test]
    fn a_dead_registration_costs_one_wake_up() {
        let (seq, w) = (AtomicU32::new(0), AtomicU32::new(0));
        register(&w); // and die
        assert_eq!(armed(w.load(Ordering::Relaxed)), 1);
        notify(&seq, &w, 1);
        assert_eq!(seq.load(Ordering::Relaxed), 1);
        assert_eq!(armed(w.load(Ordering::Relaxed)), 0);
        for _ in 0..10 {
            notify(&seq, &w, 1);
            notify(&seq, &w, i32::MAX);
        }
        assert_eq!(seq.load(Ordering::Relaxed), 1);
    }

    /// A sleeper that leaves undoes its registration only while it is the only one.
    #[test]
    fn a_leaving_sleeper_disarms_only_its_own_registration() {
        let w = AtomicU32::new(0);
        let first = register(&w);
        let second = register(&w);
        unregister(&w, first); // a later registration: left armed
        assert_eq!(armed(w.load(Ordering::Relaxed)), 1);
        unregister(&w, second); // armed before it: left armed
        assert_eq!(armed(w.load(Ordering::Relaxed)), 1);
        let (seq, w) = (AtomicU32::new(0), AtomicU32::new(0));
        let only = register(&w);
        unregister(&w, only);
        assert_eq!(armed(w.load(Ordering::Relaxed)), 0);
        notify(&seq, &w, 1);
        assert_eq!(seq.load(Ordering::Relaxed), 0, "no wake-up for nobody");
        // The registration count never goes back, so a waker's compare-and-swap from a
        // word it read before (here: armed by `only`) fails.
        assert_ne!(w.load(Ordering::Relaxed), only.1);
        // A timed-out wait on an unarmed word leaves it unarmed too.
        let r = wait_until(
            &seq,
            &w,
            Duration::ZERO,
            &Deadline::after(Duration::ZERO),
            || false,
        );
        assert!(matches!(r, Err(Error::Timeout)));
        assert_eq!(armed(w.load(Ordering::Relaxed)), 0);
    }

    /// A waker that wakes fewer than asked leaves the word armed when a sleeper registered
    /// after the waker read it (its compare-and-swap fails).
    #[test]
    fn a_registration_during_a_wake_up_keeps_the_word_armed() {
        let (seq, w) = (AtomicU32::new(0), AtomicU32::new(0));
        register(&w);
        let seen = w.load(Ordering::Relaxed);
        register(&w); // between the waker's read and its compare-and-swap
        wake_registered(&seq, &w, seen, 1);
        assert_eq!(armed(w.load(Ordering::Relaxed)), 1);
        wake_registered(&seq, &w, w.load(Ordering::Relaxed), 1);
        assert_eq!(armed(w.load(Ordering::Relaxed)), 0);
    }
}
