//! [`Lock`] and [`RLock`]: Python's `multiprocessing.Lock` and `RLock`.

use std::marker::PhantomData;
use std::sync::{Arc, Mutex};
use std::thread::ThreadId;
use std::time::Duration;

use super::{by_name, Kind, Object};
use crate::error::{Error, Result};
use crate::segment::Location;
use crate::sync::Deadline;
use crate::Options;

/// A lock shared by processes — Python's `multiprocessing.Lock`, in a named segment.
///
/// [`lock`](Lock::lock) returns a guard that releases the lock when dropped (Python's
/// `with lock:`). A process killed while holding the lock does not block the others: the
/// next taker gets it within milliseconds, and its guard's
/// [`recovered`](LockGuard::recovered) says that the previous holder died inside the
/// critical section (so what the lock protects may be half-updated).
///
/// Unlike Python's `Lock`, which any thread may release, the lock is released by the guard
/// of whoever took it. Handles are cheap to clone and travel to child processes as the
/// lock's name.
///
/// Across `fork` (without `exec`): a guard the child inherits is the parent's hold, not the
/// child's. Dropping it in the child leaves the lock held by the parent (which releases it
/// with its own guard); the child's own [`lock`](Lock::lock) waits for that like any other
/// process. (Python's child could `release()` the parent's hold explicitly; shmq has no
/// release other than the guard's, so a hold is only ever ended by the process that took it,
/// or by its death.)
///
/// ```
/// # shmq::process::init();
/// use shmq::{process, Lock, Value};
/// # let tag = std::process::id();
/// let lock = Lock::create(&format!("doc-lock-{tag}"))?;
/// let total: Value<u64> = Value::create(&format!("doc-lock-total-{tag}"), 0)?;
/// let kids: Vec<_> = (0..2)
///     .map(|_| {
///         process::start(
///             |(lock, total): (Lock, Value<u64>)| {
///                 for _ in 0..100 {
///                     let _g = lock.lock().unwrap(); // with lock:
///                     let v = total.get().unwrap();
///                     total.set(v + 1).unwrap();
///                 }
///             },
///             (lock.clone(), total.clone()),
///         )
///     })
///     .collect::<shmq::Result<_>>()?;
/// for k in kids {
///     k.join()?;
/// }
/// assert_eq!(total.get()?, 200);
/// # Ok::<(), shmq::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct Lock {
    obj: Arc<Object>,
}

/// Holds a [`Lock`]; releases it when dropped (in the process that took it: in a `fork`
/// child the inherited guard is the parent's hold, and dropping it there releases nothing).
pub struct LockGuard<'a> {
    _held: super::Held<'a>,
    recovered: bool,
}

impl std::fmt::Debug for LockGuard<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LockGuard")
            .field("recovered", &self.recovered)
            .finish()
    }
}

impl LockGuard<'_> {
    /// Whether the previous holder died holding the lock (its critical section may have
    /// been cut short): check and repair what the lock protects.
    pub fn recovered(&self) -> bool {
        self.recovered
    }
}

impl Lock {
    /// Create the lock `name` (unlocked), with default [`Options`].
    pub fn create(name: &str) -> Result<Lock> {
        Self::create_with(name, &Options::new())
    }

    /// Create with [`Options`] (`mode`, `replace_stale`, `keep_on_drop`), by name or at a
    /// path.
    pub fn create_with(loc: impl Into<Location>, opts: &Options) -> Result<Lock> {
        Ok(Lock {
            obj: Arc::new(Object::create(
                loc.into(),
                Kind::Lock,
                0,
                (0, ""),
                opts,
                |_| {},
            )?),
        })
    }

    /// Attach to the lock `name`.
    pub fn open(name: &str) -> Result<Lock> {
        Self::open_at(name)
    }

    /// Attach by name or path.
    pub fn open_at(loc: impl Into<Location>) -> Result<Lock> {
        Self::open_at_location(loc.into())
    }

    fn open_at_location(loc: Location) -> Result<Lock> {
        Ok(Lock {
            obj: Arc::new(Object::open(loc, Kind::Lock, 0, (0, ""))?),
        })
    }

    fn lock_until(&self, deadline: &Deadline) -> Result<LockGuard<'_>> {
        let (g, recovered) = self.obj.lock(deadline)?;
        Ok(LockGuard {
            _held: super::Held::new(g),
            recovered,
        })
    }

    /// Take the lock, waiting as long as another live process holds it (Python's
    /// `acquire()`).
    pub fn lock(&self) -> Result<LockGuard<'_>> {
        self.lock_until(&Deadline::never())
    }

    /// Take the lock if it is free now (or held by a dead process): Python's
    /// `acquire(False)`. `Ok(None)` when another live holder has it.
    pub fn try_lock(&self) -> Result<Option<LockGuard<'_>>> {
        match self.lock_until(&Deadline::after(Duration::ZERO)) {
            Ok(g) => Ok(Some(g)),
            Err(Error::Timeout) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Take the lock, waiting at most `timeout` ([`Error::Timeout`]): Python's
    /// `acquire(timeout=t)`.
    pub fn lock_timeout(&self, timeout: Duration) -> Result<LockGuard<'_>> {
        self.lock_until(&Deadline::after(timeout))
    }

    /// Whether some handle holds the lock now (a snapshot).
    pub fn is_locked(&self) -> bool {
        self.obj
            .u32_at(super::LOCK)
            .load(std::sync::atomic::Ordering::Relaxed)
            & crate::sync::HOLDER_MASK
            != 0
    }

    /// The lock's name (or path).
    pub fn name(&self) -> &str {
        self.obj.name()
    }
}

by_name!(Lock);

/// A recursive lock shared by processes — Python's `multiprocessing.RLock`.
///
/// The thread that holds it may take it again; it is released when every guard is gone.
/// Recursion is counted per handle (and its clones) and thread: two handles opened
/// separately in one process are two different owners. A process killed while holding it
/// releases it, as for [`Lock`].
///
/// Across `fork` (without `exec`), as Python's `RLock` (whose `_after_fork` resets the
/// owner and count in the child): the child does not own what its parent held. Its
/// [`lock`](RLock::lock) waits for the parent to release the lock rather than recursing,
/// [`depth`](RLock::depth) is 0 there, and dropping an inherited guard (or the handle)
/// releases nothing: the parent still holds the lock and releases it itself.
///
/// ```
/// # let name = format!("doc-rlock-{}", std::process::id());
/// let r = shmq::RLock::create(&name)?;
/// let outer = r.lock()?;
/// let inner = r.lock()?; // the same thread again: no deadlock
/// assert_eq!(r.depth(), 2);
/// drop(inner);
/// drop(outer);
/// assert!(!r.is_locked());
/// # Ok::<(), shmq::Error>(())
/// ```
#[derive(Clone)]
pub struct RLock {
    inner: Arc<RInner>,
}

struct RInner {
    /// Declared before `obj`: the guard it may hold borrows `obj`'s mapping.
    state: Mutex<RState>,
    obj: Arc<Object>,
}

struct RState {
    owner: Option<ThreadId>,
    depth: u32,
    recovered: bool,
    /// The robust lock while some thread of this handle holds the `RLock`. Its lifetime
    /// is really that of `RInner::obj` (see `RLock::lock_until`).
    guard: Option<crate::sync::LockGuard<'static>>,
    /// The fork generation `owner`, `depth` and `guard` belong to. In a fork child they are
    /// the parent's: [`RState::current`] forgets them (without releasing the lock).
    generation: u64,
}

impl RState {
    /// This state as this process sees it: a fork parent's hold is not ours, so in another
    /// fork generation the state is reset to unowned, and the parent's guard forgotten
    /// (the parent releases the lock).
    fn current(&mut self) -> &mut Self {
        let now = crate::sync::LockGuard::fork_generation();
        if self.generation != now {
            if let Some(g) = self.guard.take() {
                g.release_from(self.generation);
            }
            self.owner = None;
            self.depth = 0;
            self.recovered = false;
            self.generation = now;
        }
        self
    }
}

impl Drop for RState {
    fn drop(&mut self) {
        // The last handle dropped with the lock still held: release it, unless the hold is
        // a fork parent's.
        if let Some(g) = self.guard.take() {
            g.release_from(self.generation);
        }
    }
}

impl std::fmt::Debug for RLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RLock")
            .field("name", &self.inner.obj.name())
            .field("depth", &self.depth())
            .finish()
    }
}

/// Holds an [`RLock`] once; the lock is released when the last guard of the owning thread
/// drops. Not `Send`: it belongs to the thread that took it.
#[derive(Debug)]
pub struct RLockGuard<'a> {
    lock: &'a RLock,
    recovered: bool,
    /// The fork generation it was taken in: in a fork child it is the parent's.
    generation: u64,
    _not_send: PhantomData<*const ()>,
}

impl RLockGuard<'_> {
    /// Whether the previous holder died holding the lock (see [`LockGuard::recovered`]).
    pub fn recovered(&self) -> bool {
        self.recovered
    }
}

impl Drop for RLockGuard<'_> {
    fn drop(&mut self) {
        if crate::sync::LockGuard::inherited(self.generation) {
            // A fork parent's hold: not this process's to end.
            return;
        }
        let release = {
            let mut st = self
                .lock
                .inner
                .state
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            let st = st.current();
            st.depth = st.depth.saturating_sub(1);
            if st.depth == 0 {
                st.owner = None;
                st.guard.take()
            } else {
                None
            }
        };
        drop(release);
    }
}

impl RLock {
    /// Create the recursive lock `name`, with default [`Options`].
    pub fn create(name: &str) -> Result<RLock> {
        Self::create_with(name, &Options::new())
    }

    /// Create with [`Options`], by name or at a path.
    pub fn create_with(loc: impl Into<Location>, opts: &Options) -> Result<RLock> {
        Ok(Self::wrap(Object::create(
            loc.into(),
            Kind::RLock,
            0,
            (0, ""),
            opts,
            |_| {},
        )?))
    }

    /// Attach to the recursive lock `name`.
    pub fn open(name: &str) -> Result<RLock> {
        Self::open_at(name)
    }

    /// Attach by name or path.
    pub fn open_at(loc: impl Into<Location>) -> Result<RLock> {
        Self::open_at_location(loc.into())
    }

    fn open_at_location(loc: Location) -> Result<RLock> {
        Ok(Self::wrap(Object::open(loc, Kind::RLock, 0, (0, ""))?))
    }

    fn wrap(obj: Object) -> RLock {
        RLock {
            inner: Arc::new(RInner {
                state: Mutex::new(RState {
                    owner: None,
                    depth: 0,
                    recovered: false,
                    guard: None,
                    generation: crate::sync::LockGuard::fork_generation(),
                }),
                obj: Arc::new(obj),
            }),
        }
    }

    fn lock_until(&self, deadline: &Deadline) -> Result<RLockGuard<'_>> {
        let me = std::thread::current().id();
        let generation = crate::sync::LockGuard::fork_generation();
        {
            let mut st = self.inner.state.lock().unwrap_or_else(|p| p.into_inner());
            let st = st.current();
            if st.owner == Some(me) {
                st.depth += 1;
                return Ok(RLockGuard {
                    lock: self,
                    recovered: st.recovered,
                    generation,
                    _not_send: PhantomData,
                });
            }
        }
        // Not ours: take the shared lock (without holding the local mutex, which the
        // owner needs to release it).
        let (g, recovered) = self.inner.obj.lock(deadline)?;
        // SAFETY: the guard borrows the lock word in `self.inner.obj`'s mapping. It is
        // stored in `self.inner.state`, which is dropped before `self.inner.obj` (field
        // order of `RInner`), and taken out and dropped when the depth returns to zero,
        // always while `self.inner` (and so the mapping) is alive. Extending the borrow to
        // 'static never lets it outlive the mapping.
        let g: crate::sync::LockGuard<'static> = unsafe { std::mem::transmute(g) };
        let mut st = self.inner.state.lock().unwrap_or_else(|p| p.into_inner());
        let st = st.current();
        st.owner = Some(me);
        st.depth = 1;
        st.recovered = recovered;
        st.guard = Some(g);
        st.generation = generation;
        Ok(RLockGuard {
            lock: self,
            recovered,
            generation,
            _not_send: PhantomData,
        })
    }

    /// Take the lock (again, if this thread holds it already).
    pub fn lock(&self) -> Result<RLockGuard<'_>> {
        self.lock_until(&Deadline::never())
    }

    /// Take the lock if that needs no waiting; `Ok(None)` if another owner holds it.
    pub fn try_lock(&self) -> Result<Option<RLockGuard<'_>>> {
        match self.lock_until(&Deadline::after(Duration::ZERO)) {
            Ok(g) => Ok(Some(g)),
            Err(Error::Timeout) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Take the lock, waiting at most `timeout` ([`Error::Timeout`]).
    pub fn lock_timeout(&self, timeout: Duration) -> Result<RLockGuard<'_>> {
        self.lock_until(&Deadline::after(timeout))
    }

    /// How many guards the owning thread of this handle holds (0: not held through this
    /// handle, nor in a fork child of the process that holds it).
    pub fn depth(&self) -> u32 {
        let mut st = self.inner.state.lock().unwrap_or_else(|p| p.into_inner());
        st.current().depth
    }

    /// Whether some handle holds the lock now (a snapshot).
    pub fn is_locked(&self) -> bool {
        self.inner
            .obj
            .u32_at(super::LOCK)
            .load(std::sync::atomic::Ordering::Relaxed)
            & crate::sync::HOLDER_MASK
            != 0
    }

    /// The lock's name (or path).
    pub fn name(&self) -> &str {
        self.inner.obj.name()
    }
}

impl serde::Serialize for RLock {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        self.inner.obj.location().serialize(s)
    }
}

impl<'de> serde::Deserialize<'de> for RLock {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let loc = Location::deserialize(d)?;
        RLock::open_at_location(loc).map_err(serde::de::Error::custom)
    }
}
