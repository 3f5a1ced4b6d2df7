//! [`Barrier`]: Python's `multiprocessing.Barrier`.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use super::{by_name, Kind, Object, WORDS};
use crate::error::{Error, Result};
use crate::process::ProcessError;
use crate::segment::Location;
use crate::sync::Deadline;
use crate::Options;

/// Processes that must all arrive before any goes on.
const PARTIES: usize = WORDS;
/// Arrived in the current round.
const COUNT: usize = WORDS + 4;
/// Bumped when a round completes (or on `reset`).
const GENERATION: usize = WORDS + 8;
/// Non-zero while broken.
const BROKEN: usize = WORDS + 12;
/// Bumped by `reset`: waiters of a round that was reset fail.
const RESETS: usize = WORDS + 16;

/// A meeting point for a fixed number of processes (or threads) — Python's
/// `multiprocessing.Barrier`, in a named segment. [`wait`](Barrier::wait) blocks until
/// `parties` callers are waiting, then releases them all; each gets a different index in
/// `0..parties` (the last to arrive gets `parties - 1`: run a once-per-round action where
/// the index is 0, Python's `action=`).
///
/// A timed-out waiter, [`abort`](Barrier::abort), [`reset`](Barrier::reset) with waiters,
/// or a process killed inside the barrier's (short) critical section breaks it: waiters
/// fail with [`ProcessError::BrokenBarrier`] until `reset`. A process killed while merely
/// *waiting* still counts as arrived (as in Python, where it would hang the others).
///
/// ```
/// # shmq::process::init();
/// use shmq::{process, Barrier};
/// use std::time::Duration;
/// # let name = format!("doc-barrier-{}", std::process::id());
/// let b = Barrier::create(&name, 3)?;
/// let kids: Vec<_> = (0..2)
///     .map(|_| process::start(|b: Barrier| b.wait_timeout(Duration::from_secs(60)).unwrap(), b.clone()))
///     .collect::<shmq::Result<_>>()?;
/// let mine = b.wait_timeout(Duration::from_secs(60))?;
/// let mut idx = vec![mine];
/// for k in kids {
///     idx.push(k.join()?);
/// }
/// idx.sort();
/// assert_eq!(idx, [0, 1, 2]);
/// # Ok::<(), shmq::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct Barrier {
    obj: Arc<Object>,
}

impl Barrier {
    /// Create the barrier `name` for `parties` (at least 1) callers.
    pub fn create(name: &str, parties: u32) -> Result<Barrier> {
        Self::create_with(name, parties, &Options::new())
    }

    /// Create with [`Options`], by name or at a path.
    pub fn create_with(loc: impl Into<Location>, parties: u32, opts: &Options) -> Result<Barrier> {
        if parties == 0 {
            return Err(Error::InvalidArgument(
                "a barrier needs at least one party".into(),
            ));
        }
        Ok(Barrier {
            obj: Arc::new(Object::create(
                loc.into(),
                Kind::Barrier,
                0,
                (0, ""),
                opts,
                |o| o.u32_at(PARTIES).store(parties, Ordering::Relaxed),
            )?),
        })
    }

    /// Attach to the barrier `name`.
    pub fn open(name: &str) -> Result<Barrier> {
        Self::open_at(name)
    }

    /// Attach by name or path.
    pub fn open_at(loc: impl Into<Location>) -> Result<Barrier> {
        Self::open_at_location(loc.into())
    }

    fn open_at_location(loc: Location) -> Result<Barrier> {
        Ok(Barrier {
            obj: Arc::new(Object::open(loc, Kind::Barrier, 0, (0, ""))?),
        })
    }

    fn broken_error(&self) -> Error {
        ProcessError::BrokenBarrier {
            name: self.name().to_string(),
        }
        .into()
    }

    /// Break the barrier and wake every waiter (who then fail).
    fn break_locked(&self) {
        self.obj.u32_at(BROKEN).store(1, Ordering::SeqCst);
    }

    fn wait_until(&self, deadline: &Deadline) -> Result<u32> {
        let o = &self.obj;
        let (guard, recovered) = o.lock(&Deadline::never())?;
        if recovered {
            // A process died in the critical section: the round's count may be torn.
            self.break_locked();
        }
        if o.u32_at(BROKEN).load(Ordering::SeqCst) != 0 {
            drop(guard);
            o.notify(i32::MAX);
            return Err(self.broken_error());
        }
        let parties = o.u32_at(PARTIES).load(Ordering::Relaxed).max(1);
        let generation = o.u32_at(GENERATION).load(Ordering::SeqCst);
        let resets = o.u32_at(RESETS).load(Ordering::SeqCst);
        let index = o.u32_at(COUNT).load(Ordering::Relaxed);
        // `index` is a shared word (untrusted): no overflow on a hostile value.
        if index.saturating_add(1) >= parties {
            // The last to arrive: start the next round and release everybody.
            o.u32_at(COUNT).store(0, Ordering::Relaxed);
            o.u32_at(GENERATION)
                .store(generation.wrapping_add(1), Ordering::SeqCst);
            drop(guard);
            o.notify(i32::MAX);
            return Ok(index.min(parties - 1));
        }
        o.u32_at(COUNT).store(index + 1, Ordering::Relaxed);
        drop(guard);
        let outcome = |o: &Object| {
            if o.u32_at(RESETS).load(Ordering::SeqCst) != resets {
                Some(Err(self.broken_error()))
            } else if o.u32_at(GENERATION).load(Ordering::SeqCst) != generation {
                Some(Ok(index))
            } else if o.u32_at(BROKEN).load(Ordering::SeqCst) != 0 {
                Some(Err(self.broken_error()))
            } else {
                None
            }
        };
        loop {
            if let Some(r) = outcome(o) {
                return r;
            }
            match o.wait(deadline, || outcome(o).is_some()) {
                Ok(()) => {}
                Err(Error::Timeout) => {
                    // Python: a timeout breaks the barrier. Unless the round completed
                    // meanwhile.
                    let (guard, _) = o.lock(&Deadline::never())?;
                    if let Some(r) = outcome(o) {
                        return r;
                    }
                    self.break_locked();
                    drop(guard);
                    o.notify(i32::MAX);
                    return Err(Error::Timeout);
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Wait until `parties` callers wait; this caller's index in `0..parties`.
    /// [`ProcessError::BrokenBarrier`] if the barrier is or gets broken.
    pub fn wait(&self) -> Result<u32> {
        self.wait_until(&Deadline::never())
    }

    /// Like [`wait`](Self::wait), but after `timeout` the barrier breaks (as in Python) and
    /// this caller gets [`Error::Timeout`]; the other waiters get `BrokenBarrier`.
    pub fn wait_timeout(&self, timeout: Duration) -> Result<u32> {
        self.wait_until(&Deadline::after(timeout))
    }

    /// Break the barrier: current and later waiters fail with `BrokenBarrier` until
    /// [`reset`](Self::reset) (Python's `abort()`).
    pub fn abort(&self) -> Result<()> {
        let (guard, _) = self.obj.lock(&Deadline::never())?;
        self.break_locked();
        drop(guard);
        self.obj.notify(i32::MAX);
        Ok(())
    }

    /// Return the barrier to its empty, unbroken state; current waiters fail with
    /// `BrokenBarrier` (Python's `reset()`).
    pub fn reset(&self) -> Result<()> {
        let o = &self.obj;
        let (guard, _) = o.lock(&Deadline::never())?;
        o.u32_at(RESETS).fetch_add(1, Ordering::SeqCst);
        o.u32_at(GENERATION).fetch_add(1, Ordering::SeqCst);
        o.u32_at(COUNT).store(0, Ordering::Relaxed);
        o.u32_at(BROKEN).store(0, Ordering::SeqCst);
        drop(guard);
        o.notify(i32::MAX);
        Ok(())
    }

    /// The number of callers needed to pass.
    pub fn parties(&self) -> u32 {
        self.obj.u32_at(PARTIES).load(Ordering::Relaxed)
    }

    /// Callers waiting now (Python's `n_waiting`).
    pub fn n_waiting(&self) -> u32 {
        self.obj.u32_at(COUNT).load(Ordering::Relaxed)
    }

    /// Whether the barrier is broken (Python's `broken`).
    pub fn is_broken(&self) -> bool {
        self.obj.u32_at(BROKEN).load(Ordering::SeqCst) != 0
    }

    /// The barrier's name (or path).
    pub fn name(&self) -> &str {
        self.obj.name()
    }
}

by_name!(Barrier);
