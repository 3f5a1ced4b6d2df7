//! Process-shared synchronisation primitives and shared values, each in a named segment:
//! the other two parts of Python's `multiprocessing` (synchronising processes, sharing
//! state between them).
//!
//! | Python `multiprocessing` | shmq |
//! |---|---|
//! | `Lock()`; `with lock:`; `acquire(False)`; `acquire(timeout=t)` | [`Lock::create`]; [`Lock::lock`] (a guard); [`Lock::try_lock`]; [`Lock::lock_timeout`] |
//! | `RLock()` | [`RLock`] (recursive per handle and thread) |
//! | `Event()`: `set`, `clear`, `is_set`, `wait(timeout)` | [`Event`]: [`set`](Event::set), [`clear`](Event::clear), [`is_set`](Event::is_set), [`wait`](Event::wait), [`wait_timeout`](Event::wait_timeout) |
//! | `Semaphore(n)`: `acquire`, `release`, `get_value` | [`Semaphore`]: [`acquire`](Semaphore::acquire), [`release`](Semaphore::release), [`value`](Semaphore::value), [`access`](Semaphore::access) (a guard) |
//! | `BoundedSemaphore(n)` | [`Semaphore::create_bounded`] (a release past `n` is an error) |
//! | `Barrier(parties)`: `wait`, `abort`, `reset`, `parties`, `n_waiting`, `broken` | [`Barrier`]: the same names |
//! | `Condition()`: `wait`, `wait_for`, `notify`, `notify_all` | [`Condition::lock`] then [`CondGuard`]'s methods |
//! | `Value('d', 0.0)`; `v.value`; `with v.get_lock(): v.value += 1` | [`Value::create`]; [`Value::get`] / [`Value::set`]; [`Value::update`] or [`Value::lock`] |
//! | `Array('i', range(10))`; `a[i]`; `a[:]` | [`Array::create`]; [`Array::get`] / [`Array::set`]; [`Array::to_vec`] |
//!
//! Every primitive:
//! * lives in a segment `/dev/shm/shmq.<name>` with the queues' naming, permission
//!   ([`Options::mode`](crate::Options::mode)), [`replace_stale`](crate::Options::replace_stale)
//!   and [`keep_on_drop`](crate::Options::keep_on_drop) rules, is listed by `shmq ls` and
//!   [`crate::list`], and is removed by `shmq rm` / [`crate::remove`] like a queue;
//! * is opened by name from any process (`open`), and travels to a child process or a
//!   [`Pool`](crate::process::Pool) task as its name (serde), re-attaching there;
//! * survives a process killed at any instruction: a lock held by a dead process is taken
//!   over (the guard's `recovered()` says so); waiting is a futex sleep in bounded slices,
//!   so no waker that died can strand a sleeper.
//!
//! The state lives in the segment's ring area (a primitive is an empty, closed queue to
//! anything that reads it as one; [`RawQueue::open`](crate::RawQueue::open) refuses it).

mod barrier;
mod condition;
mod event;
mod lock;
mod semaphore;
mod value;

pub use barrier::Barrier;
pub use condition::{CondGuard, Condition};
pub use event::Event;
pub use lock::{Lock, LockGuard, RLock, RLockGuard};
pub use semaphore::{Semaphore, SemaphoreGuard};
pub use value::{Array, ArrayGuard, Value, ValueGuard};

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
// Words in the segment: std atomics, or loom's under `cfg(loom)` (as the sync functions take).
use crate::prim::{AtomicU32, AtomicU64};
use crate::segment::{Location, Segment};
use crate::sync::{Acquired, Deadline, Holder, RobustLock};
use crate::Options;

/// Codec ids of the primitives (recorded in the header, so that no queue opens them).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub(crate) enum Kind {
    Lock = 0x5350_0001,
    RLock = 0x5350_0002,
    Event = 0x5350_0003,
    Semaphore = 0x5350_0004,
    Barrier = 0x5350_0005,
    Condition = 0x5350_0006,
    Value = 0x5350_0007,
    Array = 0x5350_0008,
}

impl Kind {
    const ALL: [Kind; 8] = [
        Kind::Lock,
        Kind::RLock,
        Kind::Event,
        Kind::Semaphore,
        Kind::Barrier,
        Kind::Condition,
        Kind::Value,
        Kind::Array,
    ];

    fn name(self) -> &'static str {
        match self {
            Kind::Lock => "shmq Lock",
            Kind::RLock => "shmq RLock",
            Kind::Event => "shmq Event",
            Kind::Semaphore => "shmq Semaphore",
            Kind::Barrier => "shmq Barrier",
            Kind::Condition => "shmq Condition",
            Kind::Value => "shmq Value",
            Kind::Array => "shmq Array",
        }
    }
}

/// What a codec id in a header names, if it is a primitive's ("shmq Lock").
pub(crate) fn kind_name(codec: u32) -> Option<&'static str> {
    Kind::ALL
        .iter()
        .find(|k| **k as u32 == codec)
        .map(|k| k.name())
}

/// Offsets in the state area (the segment's ring area, page aligned). Every primitive has
/// the same first 16 bytes; kind-specific words follow; a [`Value`]'s or [`Array`]'s data
/// starts at [`DATA`].
const READY: usize = 0;
const LOCK: usize = 4;
const SEQ: usize = 8;
const WAITERS: usize = 12;
/// First kind-specific word.
const WORDS: usize = 16;
/// Start of the data of a `Value` or `Array` (64-byte aligned).
const DATA: usize = 64;

/// Written last by the creator into [`READY`].
const READY_MAGIC: u32 = 0x5250_4459;
/// How long `open` waits for a creator to finish initialising the state: as long as a
/// queue's `open` waits for its header.
const READY_WAIT: Duration = crate::segment::INIT_WAIT;
/// How long a waiter spins before sleeping: as long as a queue's.
const SPIN: Duration = crate::ring::DEFAULT_SPIN;

/// A mapped primitive: its segment, its holder id for the robust lock, and the name.
pub(crate) struct Object {
    seg: Segment,
    holder: Holder,
    state: *mut u8,
    len: usize,
    name: String,
    kind: Kind,
}

// SAFETY: the state is shared memory reached only through atomics and raw-pointer copies
// (never `&`/`&mut` to non-atomic data), exactly like a queue's ring.
unsafe impl Send for Object {}
// SAFETY: as above; every method takes `&self` and touches shared words atomically.
unsafe impl Sync for Object {}

impl std::fmt::Debug for Object {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct(self.kind.name())
            .field("name", &self.name)
            .finish()
    }
}

fn lock_named(state: *mut u8, id: u32) -> bool {
    // SAFETY: the state area is at least DATA bytes (checked at create/open), page aligned;
    // LOCK is 4-aligned; the word is only accessed atomically.
    let w = unsafe { &*(state.add(LOCK) as *const AtomicU32) };
    w.load(Ordering::Relaxed) & crate::sync::HOLDER_MASK == id
}

impl Object {
    /// Create the primitive `loc` with `len` bytes of state (at least [`DATA`]); `item`
    /// is the item size and type name recorded for a `Value`/`Array`; `init` writes the
    /// kind-specific words before the state is published.
    pub(crate) fn create(
        loc: Location,
        kind: Kind,
        len: usize,
        item: (u32, &str),
        opts: &Options,
        init: impl FnOnce(&Object),
    ) -> Result<Object> {
        let len = len.max(DATA);
        let type_name = if item.1.is_empty() {
            kind.name().to_string()
        } else {
            format!("{}<{}>", kind.name(), item.1)
        };
        let copts = opts.create_options(kind as u32, item.0, &type_name);
        let mut seg = Segment::create(loc, len, &copts)?;
        seg.set_remove_on_drop(!copts.persistent);
        // A primitive is an empty, closed queue to anything that reads it as one.
        seg.header()
            .prod
            .tail
            .fetch_or(crate::ring::CLOSED, Ordering::SeqCst);
        let obj = Self::attach(seg, kind)?;
        init(&obj);
        obj.u32_at(READY).store(READY_MAGIC, Ordering::Release);
        Ok(obj)
    }

    /// Open the primitive at `loc`, which must be a `kind` with at least `len` bytes of
    /// state and (for a `Value`/`Array`) items of `item.0` bytes named `item.1`.
    pub(crate) fn open(loc: Location, kind: Kind, len: usize, item: (u32, &str)) -> Result<Object> {
        let seg = Segment::open(loc)?;
        let display = seg.location().display_name();
        let bad = |reason: String| Error::Incompatible {
            name: display.clone(),
            reason,
        };
        let h = seg.header();
        let codec = h.id.codec.load(Ordering::Relaxed);
        if codec != kind as u32 {
            let what = kind_name(codec).unwrap_or(if codec <= 2 {
                "queue"
            } else {
                "unknown object"
            });
            return Err(bad(format!("it is a {what}, not a {}", kind.name())));
        }
        if (seg.capacity() as usize) < len.max(DATA) {
            return Err(bad(format!(
                "{} bytes of state, a {} needs {}",
                seg.capacity(),
                kind.name(),
                len.max(DATA)
            )));
        }
        if item.0 != 0 {
            // Any bytes are a valid `Pod` value: the item size is what memory safety needs.
            // (The type name is recorded for `shmq ls`, not compared: the same type may
            // have another path in another program.)
            let size = h.id.item_size.load(Ordering::Relaxed);
            if size != item.0 {
                return Err(bad(format!(
                    "created for {size}-byte items ({}), opened for {}-byte items ({})",
                    h.type_name(),
                    item.0,
                    item.1
                )));
            }
        }
        let obj = Self::attach(seg, kind)?;
        let start = Instant::now();
        while obj.u32_at(READY).load(Ordering::Acquire) != READY_MAGIC {
            if start.elapsed() > READY_WAIT {
                return Err(bad(format!(
                    "its creator did not finish initialising it within {READY_WAIT:?}"
                )));
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        Ok(obj)
    }

    fn attach(mut seg: Segment, kind: Kind) -> Result<Object> {
        let (state, len) = seg.ring();
        let loc = seg.location().clone();
        let name = loc.display_name();
        let holder = seg.claim_holder(move |id| lock_named(state, id))?;
        Ok(Object {
            seg,
            holder,
            state,
            len: len as usize,
            name,
            kind,
        })
    }

    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    pub(crate) fn location(&self) -> &Location {
        self.seg.location()
    }

    /// The 32-bit word at `off` of the state (`off` < [`DATA`], 4-aligned).
    pub(crate) fn u32_at(&self, off: usize) -> &AtomicU32 {
        debug_assert!(off + 4 <= DATA && off.is_multiple_of(4));
        // SAFETY: the state area is page aligned and at least DATA bytes long (checked at
        // create/open); other processes touch it only atomically.
        unsafe { &*(self.state.add(off) as *const AtomicU32) }
    }

    /// The 64-bit word at `off` of the state (`off` < [`DATA`], 8-aligned).
    pub(crate) fn u64_at(&self, off: usize) -> &AtomicU64 {
        debug_assert!(off + 8 <= DATA && off.is_multiple_of(8));
        // SAFETY: as in `u32_at`, with 8-byte alignment.
        unsafe { &*(self.state.add(off) as *const AtomicU64) }
    }

    /// Pointer to the data area ([`DATA`] onwards) and its length.
    pub(crate) fn data(&self) -> (*mut u8, usize) {
        // SAFETY: len >= DATA (checked at create/open).
        (unsafe { self.state.add(DATA) }, self.len - DATA)
    }

    pub(crate) fn seq(&self) -> &AtomicU32 {
        self.u32_at(SEQ)
    }

    pub(crate) fn waiters(&self) -> &AtomicU32 {
        self.u32_at(WAITERS)
    }

    /// Take the robust lock (until `deadline`); `Ok((guard, recovered))`.
    pub(crate) fn lock(&self, deadline: &Deadline) -> Result<(crate::sync::LockGuard<'_>, bool)> {
        let state = self.state;
        let me = self.holder.id(|id| lock_named(state, id))?;
        let (g, how) = RobustLock::new(self.u32_at(LOCK)).lock(me, &self.holder, deadline)?;
        Ok((g, matches!(how, Acquired::Recovered(_))))
    }

    /// Wake up to `n` sleepers on the sequence word.
    pub(crate) fn notify(&self, n: i32) {
        crate::sync::notify(self.seq(), self.waiters(), n);
    }

    /// Sleep until `ready()` (or a wake-up, or a slice of at most 100 ms); `Err(Timeout)`
    /// once the deadline has passed with `ready()` false.
    pub(crate) fn wait(&self, deadline: &Deadline, ready: impl FnMut() -> bool) -> Result<()> {
        crate::sync::wait_until(self.seq(), self.waiters(), SPIN, deadline, ready)
    }
}

/// The `Serialize`/`Deserialize` impls of a primitive: it travels as its location and
/// re-opens on arrival (in a child process, a pool task, or anywhere a serde value goes).
macro_rules! by_name {
    ($t:ident $(<$p:ident $(: $b:path)?>)?) => {
        impl$(<$p $(: $b)?>)? serde::Serialize for $t$(<$p>)? {
            fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
                self.obj.location().serialize(s)
            }
        }

        impl<'de $(, $p $(: $b)?)?> serde::Deserialize<'de> for $t$(<$p>)? {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
                let loc = crate::segment::Location::deserialize(d)?;
                Self::open_at_location(loc).map_err(serde::de::Error::custom)
            }
        }
    };
}
pub(crate) use by_name;

/// A primitive's robust lock held by a guard that may outlive the call that took it
/// ([`Lock`], [`Value`], [`Array`] guards). Dropped in the process that took it, it
/// releases the lock; dropped in a `fork` child (which inherited it), it releases nothing:
/// the hold is the parent's, which still runs and will release it
/// (docs/design.md, "Guards and loans across fork").
pub(crate) struct Held<'a> {
    /// `None` only while dropping.
    guard: Option<crate::sync::LockGuard<'a>>,
    /// The fork generation the lock was taken in.
    generation: u64,
}

impl<'a> Held<'a> {
    /// Keep `guard`, taken just now in this process.
    pub(crate) fn new(guard: crate::sync::LockGuard<'a>) -> Held<'a> {
        Held {
            guard: Some(guard),
            generation: crate::sync::LockGuard::fork_generation(),
        }
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        if let Some(g) = self.guard.take() {
            g.release_from(self.generation);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_are_named_and_distinct_from_queues() {
        for k in Kind::ALL {
            assert_eq!(kind_name(k as u32), Some(k.name()));
        }
        assert_eq!(kind_name(0), None);
        assert_eq!(kind_name(1), None);
        assert_eq!(kind_name(2), None);
    }
}
