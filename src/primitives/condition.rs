//! [`Condition`]: Python's `multiprocessing.Condition`.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use super::{by_name, Kind, Object, WORDS};
use crate::error::{Error, Result};
use crate::segment::Location;
use crate::sync::Deadline;
use crate::Options;

/// Waiters ever started (under the lock).
const TOTAL: usize = WORDS;
/// Wake-ups granted by `notify` (plus waiters that timed out).
const WAKEUP: usize = WORDS + 8;
/// Wake-ups taken by waiters (plus waiters that timed out).
const WOKEN: usize = WORDS + 16;
/// Bumped by `notify_all`.
const BROADCAST: usize = WORDS + 24;

/// A lock plus a way to wait, with the lock released, until another process says that
/// something changed — Python's `multiprocessing.Condition`, in a named segment.
///
/// Take the lock with [`lock`](Condition::lock); the [`CondGuard`] waits
/// ([`wait`](CondGuard::wait), [`wait_timeout`](CondGuard::wait_timeout),
/// [`wait_for`](CondGuard::wait_for)) and notifies ([`notify`](CondGuard::notify),
/// [`notify_all`](CondGuard::notify_all)). The state the condition is about lives
/// elsewhere in shared memory (a [`Value`](crate::Value), an [`Array`](crate::Array), a
/// queue's length...). `notify(n)` wakes `n` of the processes waiting at that moment (not
/// later arrivals), `notify_all` all of them, as in Python. A waiter killed while waiting
/// may leave one notification unused, which a later waiter may then take: check the state
/// in a loop, or use [`wait_for`](CondGuard::wait_for).
///
/// ```
/// # shmq::process::init();
/// use shmq::{process, Condition, Value};
/// use std::time::Duration;
/// # let tag = std::process::id();
/// let cond = Condition::create(&format!("doc-cond-{tag}"))?;
/// let ready: Value<u32> = Value::create(&format!("doc-cond-ready-{tag}"), 0)?;
/// let child = process::start(
///     |(cond, ready): (Condition, Value<u32>)| {
///         let mut g = cond.lock().unwrap();
///         g.wait_for(|| ready.get().unwrap() == 1, Some(Duration::from_secs(60))).unwrap()
///     },
///     (cond.clone(), ready.clone()),
/// )?;
/// {
///     let g = cond.lock()?;
///     ready.set(1)?;
///     g.notify_all();
/// }
/// assert!(child.join()?);
/// # Ok::<(), shmq::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct Condition {
    obj: Arc<Object>,
}

/// The lock of a [`Condition`], held; waits and notifies. Releases the lock when dropped.
///
/// Across `fork` (without `exec`), as Python's `Condition` over an `RLock`: a guard the
/// child inherits is the parent's hold. In the child, dropping it releases nothing,
/// [`wait`](Self::wait) fails with [`Error::InvalidArgument`] (Python: "cannot wait on
/// un-acquired lock"), and [`notify`](Self::notify) / [`notify_all`](Self::notify_all) do
/// nothing (they would change the condition's state without its lock).
pub struct CondGuard<'a> {
    cond: &'a Condition,
    guard: Option<crate::sync::LockGuard<'a>>,
    /// The fork generation the lock was taken in.
    generation: u64,
    recovered: bool,
}

impl Drop for CondGuard<'_> {
    fn drop(&mut self) {
        if let Some(g) = self.guard.take() {
            g.release_from(self.generation);
        }
    }
}

impl std::fmt::Debug for CondGuard<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CondGuard")
            .field("condition", &self.cond.name())
            .field("recovered", &self.recovered)
            .finish()
    }
}

impl Condition {
    /// Create the condition `name`.
    pub fn create(name: &str) -> Result<Condition> {
        Self::create_with(name, &Options::new())
    }

    /// Create with [`Options`], by name or at a path.
    pub fn create_with(loc: impl Into<Location>, opts: &Options) -> Result<Condition> {
        Ok(Condition {
            obj: Arc::new(Object::create(
                loc.into(),
                Kind::Condition,
                0,
                (0, ""),
                opts,
                |_| {},
            )?),
        })
    }

    /// Attach to the condition `name`.
    pub fn open(name: &str) -> Result<Condition> {
        Self::open_at(name)
    }

    /// Attach by name or path.
    pub fn open_at(loc: impl Into<Location>) -> Result<Condition> {
        Self::open_at_location(loc.into())
    }

    fn open_at_location(loc: Location) -> Result<Condition> {
        Ok(Condition {
            obj: Arc::new(Object::open(loc, Kind::Condition, 0, (0, ""))?),
        })
    }

    fn lock_until(&self, deadline: &Deadline) -> Result<CondGuard<'_>> {
        let (g, recovered) = self.obj.lock(deadline)?;
        Ok(CondGuard {
            cond: self,
            guard: Some(g),
            generation: crate::sync::LockGuard::fork_generation(),
            recovered,
        })
    }

    /// Take the condition's lock (Python's `with cond:` / `acquire()`).
    pub fn lock(&self) -> Result<CondGuard<'_>> {
        self.lock_until(&Deadline::never())
    }

    /// Take the lock, waiting at most `timeout` ([`Error::Timeout`]).
    pub fn lock_timeout(&self, timeout: Duration) -> Result<CondGuard<'_>> {
        self.lock_until(&Deadline::after(timeout))
    }

    /// The condition's name (or path).
    pub fn name(&self) -> &str {
        self.obj.name()
    }
}

impl CondGuard<'_> {
    /// Whether a previous holder of the lock died holding it (see
    /// [`LockGuard::recovered`](crate::LockGuard::recovered)); stays set for this guard
    /// once a re-acquisition after a wait found that.
    pub fn recovered(&self) -> bool {
        self.recovered
    }

    /// Release the lock, sleep until notified (or `deadline`), take the lock again.
    /// `Ok(false)`: the deadline passed without a notification.
    ///
    /// The algorithm of glibc's condition variables before 2.25: under the lock, a waiter
    /// counts itself in `TOTAL` and remembers `WAKEUP`; `notify(n)` grants up to `n` of the
    /// waiters counted and not yet granted (`WAKEUP += k`); a waiter whose remembered
    /// `WAKEUP` is older takes a grant (`WOKEN += 1`) when one is left. A waiter that times
    /// out cancels itself (`WAKEUP += 1`, `WOKEN += 1`). `notify_all` grants everybody.
    /// The futex word (`SEQ`) is bumped on every grant; the counters are the truth.
    fn wait_until(&mut self, deadline: &Deadline) -> Result<bool> {
        if self.inherited() {
            return Err(Error::InvalidArgument(
                "a Condition lock taken before fork belongs to the parent process: \
                 a fork child cannot wait with it"
                    .into(),
            ));
        }
        let o = &self.cond.obj;
        let seq = o.seq();
        let (total, wakeup, woken, broadcast) = (
            o.u64_at(TOTAL),
            o.u64_at(WAKEUP),
            o.u64_at(WOKEN),
            o.u32_at(BROADCAST),
        );
        total.store(
            total.load(Ordering::Relaxed).wrapping_add(1),
            Ordering::Relaxed,
        );
        let mine = wakeup.load(Ordering::Relaxed);
        let bc = broadcast.load(Ordering::Relaxed);
        let mut s = seq.load(Ordering::SeqCst);
        drop(self.guard.take());
        let mut timed_out = false;
        loop {
            match o.wait(deadline, || seq.load(Ordering::SeqCst) != s) {
                Ok(()) => {}
                Err(Error::Timeout) => timed_out = true,
                Err(e) => {
                    self.relock()?;
                    return Err(e);
                }
            }
            // Read before looking under the lock: a grant after the look bumps it, so the
            // next sleep returns at once.
            s = seq.load(Ordering::SeqCst);
            self.relock()?;
            if broadcast.load(Ordering::Relaxed) != bc {
                return Ok(true);
            }
            let w = wakeup.load(Ordering::Relaxed);
            let k = woken.load(Ordering::Relaxed);
            if w != mine && k < w {
                woken.store(k.wrapping_add(1), Ordering::Relaxed);
                return Ok(true);
            }
            if timed_out {
                wakeup.store(w.wrapping_add(1), Ordering::Relaxed);
                woken.store(k.wrapping_add(1), Ordering::Relaxed);
                return Ok(false);
            }
            drop(self.guard.take());
        }
    }

    /// Whether this guard was taken before a `fork` and this is the child.
    fn inherited(&self) -> bool {
        crate::sync::LockGuard::inherited(self.generation)
    }

    fn relock(&mut self) -> Result<()> {
        let (g, recovered) = self.cond.obj.lock(&Deadline::never())?;
        self.guard = Some(g);
        self.recovered |= recovered;
        Ok(())
    }

    /// Release the lock and wait for a notification, then take the lock again (Python's
    /// `wait()`).
    pub fn wait(&mut self) -> Result<()> {
        self.wait_until(&Deadline::never()).map(|_| ())
    }

    /// [`wait`](Self::wait) for at most `timeout`; `false` if it timed out (Python's
    /// `wait(timeout)`). The lock is held again on return either way.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Result<bool> {
        self.wait_until(&Deadline::after(timeout))
    }

    /// Wait until `predicate()` (evaluated with the lock held) is true, or `timeout`
    /// passes (`None`: no limit); returns the last value of the predicate (Python's
    /// `wait_for(predicate, timeout)`).
    pub fn wait_for(
        &mut self,
        mut predicate: impl FnMut() -> bool,
        timeout: Option<Duration>,
    ) -> Result<bool> {
        let deadline = match timeout {
            Some(t) => Deadline::after(t),
            None => Deadline::never(),
        };
        loop {
            if predicate() {
                return Ok(true);
            }
            if deadline.expired() {
                return Ok(false);
            }
            self.wait_until(&deadline)?;
        }
    }

    /// Wake up to `n` of the processes (or threads) waiting on this condition now
    /// (Python's `notify(n)`).
    pub fn notify(&self, n: u32) {
        if self.inherited() {
            return;
        }
        let o = &self.cond.obj;
        let (total, wakeup) = (o.u64_at(TOTAL), o.u64_at(WAKEUP));
        let t = total.load(Ordering::Relaxed);
        let w = wakeup.load(Ordering::Relaxed);
        let k = t.saturating_sub(w).min(n as u64);
        if k == 0 {
            return;
        }
        wakeup.store(w.wrapping_add(k), Ordering::Relaxed);
        self.kick();
    }

    /// Bump the futex word and wake the sleepers (each checks under the lock whether a
    /// grant is for it; the others sleep again). The bump is the change the sleepers'
    /// `ready` looks for, so it comes first; the wake-up is the common one
    /// (`Object::notify`: fence, then `FUTEX_WAKE` only while a
    /// sleeper is registered, and the waker disarms the word), so that a waiter killed
    /// while waiting costs later notifies at most one system call.
    fn kick(&self) {
        let o = &self.cond.obj;
        o.seq().fetch_add(1, Ordering::SeqCst);
        o.notify(i32::MAX);
    }

    /// Wake every waiter (Python's `notify_all()`).
    pub fn notify_all(&self) {
        if self.inherited() {
            return;
        }
        let o = &self.cond.obj;
        let t = o.u64_at(TOTAL).load(Ordering::Relaxed);
        if t == o.u64_at(WAKEUP).load(Ordering::Relaxed) {
            return;
        }
        o.u64_at(WAKEUP).store(t, Ordering::Relaxed);
        o.u64_at(WOKEN).store(t, Ordering::Relaxed);
        let b = o.u32_at(BROADCAST);
        b.store(b.load(Ordering::Relaxed).wrapping_add(1), Ordering::Relaxed);
        self.kick();
    }
}

by_name!(Condition);
