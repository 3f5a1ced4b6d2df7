//! [`Semaphore`] (and bounded ones): Python's `multiprocessing.Semaphore` and
//! `BoundedSemaphore`.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use super::{by_name, Kind, Object, WORDS};
use crate::error::{Error, Result};
use crate::segment::Location;
use crate::sync::Deadline;
use crate::Options;

/// The counter.
const VALUE: usize = WORDS;
/// The bound of a bounded semaphore (0: unbounded).
const MAX: usize = WORDS + 4;

/// A counter that processes take from and give back to, waiting while it is zero —
/// Python's `multiprocessing.Semaphore`, in a named segment.
/// [`create_bounded`](Semaphore::create_bounded) makes a `BoundedSemaphore`: a release
/// past the initial value is an error ([`Error::InvalidArgument`], Python's `ValueError`).
///
/// A process killed while it holds a unit does not give it back (as in Python); nothing
/// else is left inconsistent: the counter is one atomic word.
///
/// ```
/// # shmq::process::init();
/// use shmq::{process, Semaphore};
/// # let name = format!("doc-sem-{}", std::process::id());
/// let slots = Semaphore::create_bounded(&name, 2)?;
/// let kids: Vec<_> = (0..4)
///     .map(|_| {
///         process::start(
///             |slots: Semaphore| {
///                 let _unit = slots.access().unwrap(); // with slots:
///                 slots.value() // at most 2 children are in here at once
///             },
///             slots.clone(),
///         )
///     })
///     .collect::<shmq::Result<_>>()?;
/// for k in kids {
///     assert!(k.join()? <= 1);
/// }
/// assert_eq!(slots.value(), 2);
/// assert!(slots.release().is_err()); // bounded: no more than it started with
/// # Ok::<(), shmq::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct Semaphore {
    obj: Arc<Object>,
}

/// A unit taken with [`Semaphore::access`]; given back when dropped, in the process that
/// took it. Dropped in a `fork` child (which inherited it) it gives nothing back: the unit
/// is the parent's, which gives it back itself (giving it back twice would add a unit).
/// An explicit [`Semaphore::release`] works from any process, as in Python.
#[derive(Debug)]
pub struct SemaphoreGuard<'a> {
    sem: &'a Semaphore,
    /// The fork generation the unit was taken in.
    generation: u64,
}

impl Drop for SemaphoreGuard<'_> {
    fn drop(&mut self) {
        if !crate::sync::LockGuard::inherited(self.generation) {
            let _ = self.sem.release();
        }
    }
}

impl Semaphore {
    /// Create the semaphore `name` with `value` units (Python's `Semaphore(value)`).
    pub fn create(name: &str, value: u32) -> Result<Semaphore> {
        Self::create_with(name, value, false, &Options::new())
    }

    /// Create a bounded semaphore (Python's `BoundedSemaphore(value)`): releasing more than
    /// `value` units is an error.
    pub fn create_bounded(name: &str, value: u32) -> Result<Semaphore> {
        Self::create_with(name, value, true, &Options::new())
    }

    /// Create with [`Options`], by name or at a path; `bounded` as for
    /// [`create_bounded`](Self::create_bounded).
    pub fn create_with(
        loc: impl Into<Location>,
        value: u32,
        bounded: bool,
        opts: &Options,
    ) -> Result<Semaphore> {
        if bounded && value == 0 {
            return Err(Error::InvalidArgument(
                "a bounded semaphore needs a value of at least 1".into(),
            ));
        }
        Ok(Semaphore {
            obj: Arc::new(Object::create(
                loc.into(),
                Kind::Semaphore,
                0,
                (0, ""),
                opts,
                |o| {
                    o.u32_at(VALUE).store(value, Ordering::Relaxed);
                    o.u32_at(MAX)
                        .store(if bounded { value } else { 0 }, Ordering::Relaxed);
                },
            )?),
        })
    }

    /// Attach to the semaphore `name`.
    pub fn open(name: &str) -> Result<Semaphore> {
        Self::open_at(name)
    }

    /// Attach by name or path.
    pub fn open_at(loc: impl Into<Location>) -> Result<Semaphore> {
        Self::open_at_location(loc.into())
    }

    fn open_at_location(loc: Location) -> Result<Semaphore> {
        Ok(Semaphore {
            obj: Arc::new(Object::open(loc, Kind::Semaphore, 0, (0, ""))?),
        })
    }

    /// Take a unit if there is one now.
    pub fn try_acquire(&self) -> bool {
        let v = self.obj.u32_at(VALUE);
        let mut cur = v.load(Ordering::Acquire);
        while cur > 0 {
            match v.compare_exchange_weak(cur, cur - 1, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => return true,
                Err(now) => cur = now,
            }
        }
        false
    }

    fn acquire_until(&self, deadline: &Deadline) -> Result<()> {
        let v = self.obj.u32_at(VALUE);
        loop {
            if self.try_acquire() {
                return Ok(());
            }
            self.obj.wait(deadline, || v.load(Ordering::Acquire) > 0)?;
        }
    }

    /// Take a unit, waiting while there is none (Python's `acquire()`).
    pub fn acquire(&self) -> Result<()> {
        self.acquire_until(&Deadline::never())
    }

    /// Take a unit, waiting at most `timeout` ([`Error::Timeout`]).
    pub fn acquire_timeout(&self, timeout: Duration) -> Result<()> {
        self.acquire_until(&Deadline::after(timeout))
    }

    /// Take a unit and give it back when the guard drops (Python's `with sem:`).
    pub fn access(&self) -> Result<SemaphoreGuard<'_>> {
        self.acquire()?;
        Ok(SemaphoreGuard {
            sem: self,
            generation: crate::sync::LockGuard::fork_generation(),
        })
    }

    /// Give a unit back and wake a waiter. [`Error::InvalidArgument`] for a bounded
    /// semaphore already at its initial value (Python's `ValueError`), or at `u32::MAX`.
    pub fn release(&self) -> Result<()> {
        let v = self.obj.u32_at(VALUE);
        let max = match self.obj.u32_at(MAX).load(Ordering::Relaxed) {
            0 => u32::MAX,
            m => m,
        };
        let mut cur = v.load(Ordering::Acquire);
        loop {
            if cur >= max {
                return Err(Error::InvalidArgument(format!(
                    "semaphore {:?} released too many times (it holds {cur}, at most {max})",
                    self.name()
                )));
            }
            match v.compare_exchange_weak(cur, cur + 1, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => break,
                Err(now) => cur = now,
            }
        }
        self.obj.notify(1);
        Ok(())
    }

    /// Units available now (Python's `get_value()`).
    pub fn value(&self) -> u32 {
        self.obj.u32_at(VALUE).load(Ordering::Acquire)
    }

    /// Whether it is a bounded semaphore.
    pub fn is_bounded(&self) -> bool {
        self.obj.u32_at(MAX).load(Ordering::Relaxed) != 0
    }

    /// The semaphore's name (or path).
    pub fn name(&self) -> &str {
        self.obj.name()
    }
}

by_name!(Semaphore);
