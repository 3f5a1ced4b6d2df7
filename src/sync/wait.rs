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

/// The sleeping side of the sequence-word protocol.
///
/// Spins for about `spin` (never past the deadline) re-checking `ready`, then registers in
/// `waiters`, re-checks, and sleeps on `seq` until a waker bumps it, for at most
/// [`MAX_SLEEP`] at a time. Returns `Ok(())` once `ready()` held at some check or after a
/// kernel wake or slice (the caller re-checks anyway), and `Err(Timeout)` when the deadline
/// passed with `ready()` false.
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
    let seq0 = seq.load(Ordering::SeqCst);
    waiters.fetch_add(1, Ordering::SeqCst);
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
    waiters.fetch_sub(1, Ordering::SeqCst);
    result
}

/// The waking side: after publishing a change that `ready()` observes, call this.
/// Skips the syscall when nobody sleeps. `n` is how many sleepers to wake.
#[inline]
pub(crate) fn notify(seq: &AtomicU32, waiters: &AtomicU32, n: i32) {
    fence(Ordering::SeqCst);
    notify_fenced(seq, waiters, n);
}

/// [`notify`] for a caller that issued the `SeqCst` fence after its change itself (one
/// fence serves several notifications of the same change).
#[inline]
pub(crate) fn notify_fenced(seq: &AtomicU32, waiters: &AtomicU32, n: i32) {
    if waiters.load(Ordering::Relaxed) != 0 {
        seq.fetch_add(1, Ordering::SeqCst);
        prim::futex_wake(seq, n);
    }
}

/// Unconditionally bump `seq` and wake every sleeper (used by `close`).
pub(crate) fn notify_all(seq: &AtomicU32) {
    seq.fetch_add(1, Ordering::SeqCst);
    prim::futex_wake(seq, i32::MAX);
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

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
}
