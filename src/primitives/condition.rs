//! [`Condition`]: Python's `multiprocessing.Condition`.

use std::sync::atomic::{fence, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::{by_name, Kind, Object};
use crate::error::{Error, Result};
use crate::segment::Location;
use crate::sync::Deadline;
use crate::Options;

/// A lock plus a way to wait, with the lock released, until another process says that
/// something changed — Python's `multiprocessing.Condition`, in a named segment.
///
/// Take the lock with [`lock`](Condition::lock); the [`CondGuard`] waits
/// ([`wait`](CondGuard::wait), [`wait_timeout`](CondGuard::wait_timeout),
/// [`wait_for`](CondGuard::wait_for)) and notifies ([`notify`](CondGuard::notify),
/// [`notify_all`](CondGuard::notify_all)). The state the condition is about lives
/// elsewhere in shared memory (a [`Value`](crate::Value), an [`Array`](crate::Array), a
/// queue's length...). As with Rust's `std::sync::Condvar` (and unlike Python's
/// `Condition`), a `wait` may return without a notification: check the state in a loop, or
/// use [`wait_for`](CondGuard::wait_for).
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
pub struct CondGuard<'a> {
    cond: &'a Condition,
    guard: Option<crate::sync::LockGuard<'a>>,
    recovered: bool,
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

    /// Release the lock, sleep until notified (or spuriously woken, or `deadline`), take
    /// the lock again. `Ok(false)`: the deadline passed without a notification.
    fn wait_until(&mut self, deadline: &Deadline) -> Result<bool> {
        let o = &self.cond.obj;
        let seq = o.seq();
        // Read under the lock: a notifier bumps it under the lock, after this.
        let s0 = seq.load(Ordering::SeqCst);
        drop(self.guard.take());
        let notified = loop {
            if seq.load(Ordering::SeqCst) != s0 {
                break true;
            }
            match o.wait(deadline, || seq.load(Ordering::SeqCst) != s0) {
                Ok(()) => {}
                Err(Error::Timeout) => break seq.load(Ordering::SeqCst) != s0,
                Err(e) => {
                    self.relock()?;
                    return Err(e);
                }
            }
        };
        self.relock()?;
        Ok(notified)
    }

    fn relock(&mut self) -> Result<()> {
        let (g, recovered) = self.cond.obj.lock(&Deadline::never())?;
        self.guard = Some(g);
        self.recovered |= recovered;
        Ok(())
    }

    /// Release the lock and wait for a notification, then take the lock again (Python's
    /// `wait()`). May return without one: re-check the state.
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

    /// Wake up to `n` processes (or threads) waiting on this condition (Python's
    /// `notify(n)`).
    pub fn notify(&self, n: u32) {
        let o = &self.cond.obj;
        // Always bump (a waiter between releasing the lock and sleeping looks at it), and
        // make the system call only if someone sleeps.
        o.seq().fetch_add(1, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        if o.waiters().load(Ordering::SeqCst) != 0 {
            crate::sync::futex_wake(o.seq(), n.min(i32::MAX as u32) as i32);
        }
    }

    /// Wake every waiter (Python's `notify_all()`).
    pub fn notify_all(&self) {
        self.notify(u32::MAX);
    }
}

by_name!(Condition);
