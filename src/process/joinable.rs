//! [`JoinableQueue`]: a [`Queue`] plus a cross-process count of unfinished tasks.

use std::fmt;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::segment::{CreateOptions, Location, Segment};
use crate::sync::{futex_wait, futex_wake};
use crate::{Options, Queue};

/// Codec id recorded in the counter segment's header (not a queue: typed opens refuse it).
const COUNTER_CODEC: u32 = 0x4A51_0001;
const COUNTER_TYPE: &str = "shmq::process::JoinableQueue counters";

/// The small side segment that holds the counters, in its ring area (never used as a ring:
/// head and tail stay 0, so ring readers see an empty queue).
struct Counters {
    seg: Segment,
}

impl Counters {
    fn location(queue: &Location) -> Location {
        match queue {
            Location::Name(n) => Location::Name(format!("{n}.jq")),
            Location::Path(p) => {
                let mut s = p.clone().into_os_string();
                s.push(".jq");
                Location::Path(s.into())
            }
        }
    }

    fn create(queue: &Location, opts: &Options) -> Result<Counters> {
        let _ = opts;
        let copts = CreateOptions {
            codec: COUNTER_CODEC,
            type_name: COUNTER_TYPE.to_string(),
            ..CreateOptions::default()
        };
        let mut seg = Segment::create(Self::location(queue), 64, &copts)?;
        seg.set_remove_on_drop(true);
        Ok(Counters { seg })
    }

    fn open(queue: &Location) -> Result<Counters> {
        let seg = Segment::open(Self::location(queue))?;
        if seg.header().id.codec.load(Ordering::Relaxed) != COUNTER_CODEC || seg.ring().1 < 16 {
            return Err(Error::Incompatible {
                name: seg.location().display_name(),
                reason: "not a JoinableQueue counter segment".into(),
            });
        }
        Ok(Counters { seg })
    }

    /// Unfinished-task count.
    fn unfinished(&self) -> &AtomicU64 {
        let (p, _) = self.seg.ring();
        // SAFETY: the ring area is page aligned (RING_OFFSET = 4096) and at least 16 bytes
        // (checked in open; 64 at create); other processes touch these words only through
        // atomics, so a shared reference to an atomic is sound.
        unsafe { &*(p as *const AtomicU64) }
    }

    /// Sequence word bumped (and futex-woken) when the count reaches zero.
    fn seq(&self) -> &AtomicU32 {
        let (p, _) = self.seg.ring();
        // SAFETY: as in `unfinished`; offset 8 is 4-byte aligned and within the 16 bytes.
        unsafe { &*(p.add(8) as *const AtomicU32) }
    }

    fn add(&self) {
        self.unfinished().fetch_add(1, Ordering::AcqRel);
    }

    fn done(&self) -> Result<()> {
        let c = self.unfinished();
        let mut cur = c.load(Ordering::Acquire);
        loop {
            if cur == 0 {
                return Err(Error::InvalidArgument(
                    "task_done() called more times than items were put".into(),
                ));
            }
            match c.compare_exchange_weak(cur, cur - 1, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => break,
                Err(now) => cur = now,
            }
        }
        if cur == 1 {
            self.seq().fetch_add(1, Ordering::Release);
            futex_wake(self.seq(), i32::MAX);
        }
        Ok(())
    }

    fn join(&self, deadline: Option<Instant>) -> Result<()> {
        loop {
            let s = self.seq().load(Ordering::Acquire);
            if self.unfinished().load(Ordering::Acquire) == 0 {
                return Ok(());
            }
            // Sleep in slices so a waker that died between the decrement and the wake
            // cannot strand us.
            let mut slice = Duration::from_millis(200);
            if let Some(d) = deadline {
                let now = Instant::now();
                if now >= d {
                    return Err(Error::Timeout);
                }
                slice = slice.min(d - now);
            }
            futex_wait(self.seq(), s, Some(slice));
        }
    }
}

/// A queue whose consumers mark each item done, so that a producer can wait until every
/// item put has been processed — Python's `multiprocessing.JoinableQueue`, across processes.
///
/// Every [`put`](Self::put) adds one to a shared count of unfinished tasks;
/// [`task_done`](Self::task_done) (called by a consumer after handling an item) takes one
/// away; [`join`](Self::join) waits until the count is zero. The count lives in a small
/// side segment named `<name>.jq`. Handles serialise as the queue's name, so a
/// `JoinableQueue` passed to a child process or a [`Pool`](super::Pool) task re-attaches
/// there.
///
/// ```
/// use shmq::process::JoinableQueue;
/// # let name = format!("doc-jq-{}", std::process::id());
/// let q: JoinableQueue<u32> = JoinableQueue::create(&name, 1 << 16)?;
/// q.put(&1)?;
/// q.put(&2)?;
/// // a consumer (normally another process):
/// let c: JoinableQueue<u32> = JoinableQueue::open(&name)?;
/// while let Ok(x) = c.try_get() {
///     let _ = x * 10;
///     c.task_done()?;
/// }
/// q.join()?; // returns: both items are done
/// assert_eq!(q.unfinished(), 0);
/// # Ok::<(), shmq::Error>(())
/// ```
pub struct JoinableQueue<T> {
    queue: Queue<T>,
    counters: Arc<Counters>,
}

impl<T> Clone for JoinableQueue<T> {
    fn clone(&self) -> Self {
        JoinableQueue {
            queue: self.queue.clone(),
            counters: self.counters.clone(),
        }
    }
}

impl<T: Serialize + DeserializeOwned> fmt::Debug for JoinableQueue<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JoinableQueue")
            .field("name", &self.queue.name())
            .field("len", &self.queue.len())
            .field(
                "unfinished",
                &self.counters.unfinished().load(Ordering::Relaxed),
            )
            .finish()
    }
}

impl<T: Serialize + DeserializeOwned> JoinableQueue<T> {
    /// Create the queue `name` (ring of `capacity` bytes) and its counter segment
    /// `<name>.jq`. Both names are removed when this handle and its clones drop.
    pub fn create(name: &str, capacity: usize) -> Result<Self> {
        Self::create_with(name, &Options::new().capacity(capacity))
    }

    /// Create with explicit [`Options`] (by name or at a path; the counters go to
    /// `<path>.jq`).
    pub fn create_with(loc: impl Into<Location>, opts: &Options) -> Result<Self> {
        let loc = loc.into();
        let counters = Counters::create(&loc, opts)?;
        let queue = Queue::create_with(loc, opts)?;
        Ok(JoinableQueue {
            queue,
            counters: Arc::new(counters),
        })
    }

    /// Attach to an existing joinable queue by name.
    pub fn open(name: &str) -> Result<Self> {
        Self::open_with(name, &Options::new())
    }

    /// Attach with explicit [`Options`], by name or at a path.
    pub fn open_with(loc: impl Into<Location>, opts: &Options) -> Result<Self> {
        let loc = loc.into();
        let queue = Queue::open_with(loc.clone(), opts)?;
        let counters = Counters::open(&loc)?;
        Ok(JoinableQueue {
            queue,
            counters: Arc::new(counters),
        })
    }

    fn counted(&self, r: Result<()>) -> Result<()> {
        if r.is_err() {
            let _ = self.counters.done();
        }
        r
    }

    /// Put an item (waits while full) and count it as unfinished.
    pub fn put(&self, msg: &T) -> Result<()> {
        self.counters.add();
        self.counted(self.queue.put(msg))
    }

    /// Put if there is room now ([`Error::Full`] otherwise).
    pub fn try_put(&self, msg: &T) -> Result<()> {
        self.counters.add();
        self.counted(self.queue.try_put(msg))
    }

    /// Put, waiting at most `timeout` for room.
    pub fn put_timeout(&self, msg: &T, timeout: Duration) -> Result<()> {
        self.counters.add();
        self.counted(self.queue.put_timeout(msg, timeout))
    }

    /// Take an item (waits while empty). Call [`task_done`](Self::task_done) when it has
    /// been handled.
    pub fn get(&self) -> Result<T> {
        self.queue.get()
    }

    /// Take an item or [`Error::Empty`].
    pub fn try_get(&self) -> Result<T> {
        self.queue.try_get()
    }

    /// Take an item, waiting at most `timeout`.
    pub fn get_timeout(&self, timeout: Duration) -> Result<T> {
        self.queue.get_timeout(timeout)
    }

    /// Mark one item taken from the queue as done. [`Error::InvalidArgument`] if called
    /// more often than items were put.
    pub fn task_done(&self) -> Result<()> {
        self.counters.done()
    }

    /// Wait until every item put so far has been marked done.
    pub fn join(&self) -> Result<()> {
        self.counters.join(None)
    }

    /// Like [`join`](Self::join) but [`Error::Timeout`] after `timeout`.
    pub fn join_timeout(&self, timeout: Duration) -> Result<()> {
        self.counters.join(Instant::now().checked_add(timeout))
    }

    /// Items put but not yet marked done (queued ones included).
    pub fn unfinished(&self) -> u64 {
        self.counters.unfinished().load(Ordering::Acquire)
    }

    /// The queue underneath.
    pub fn queue(&self) -> &Queue<T> {
        &self.queue
    }

    /// Messages queued now.
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    /// Whether no message is queued now.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// Close the queue (see [`Queue::close`](crate::TypedQueue::close)).
    pub fn close(&self) {
        self.queue.close()
    }

    /// The queue's name.
    pub fn name(&self) -> &str {
        self.queue.name()
    }
}

impl<T> Serialize for JoinableQueue<T> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        self.queue.serialize(s)
    }
}

impl<'de, T: Serialize + DeserializeOwned> serde::Deserialize<'de> for JoinableQueue<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let loc = Location::deserialize(d)?;
        Self::open_with(loc, &Options::new()).map_err(serde::de::Error::custom)
    }
}
