//! [`JoinableQueue`]: a [`Queue`] whose consumers mark items done, so that a producer can
//! wait until every item has been handled.
//!
//! The counters live in the queue's own header ([`Tasks`](crate::segment::Tasks)): one
//! name is one object, with one set of permissions, one owner and one life. The number of
//! unfinished tasks is `puts - done`, where `puts` is the ring's own count of published
//! messages (crash-repaired by the ring) and `done` counts `task_done` calls. A put needs no
//! second counter, so a put that fails or a producer killed mid-put can never leave the
//! count wrong, and any put into the ring (also a [`RawQueue`](crate::RawQueue) or
//! `shmq put` on the same name) is a task.

use std::fmt;
use std::ops::Deref;
use std::sync::atomic::Ordering;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::queue::Batch;
use crate::segment::{Header, Location};
use crate::sync::{self, Deadline};
use crate::{Options, Queue};

/// Messages published, as far as this process can tell: the producers' count, or the
/// consumers' count when that is ahead (a producer between publishing a record and storing
/// its count, or killed there, leaves `put_count` behind until the next put repairs it;
/// a consumed message was certainly put).
fn puts(h: &Header) -> u64 {
    let p = h.prod.put_count.load(Ordering::Acquire);
    let g = h.cons.get_count.load(Ordering::Acquire);
    p.max(g)
}

/// A queue whose consumers mark each item done, so that a producer can wait until every
/// item put has been processed — Python's `multiprocessing.JoinableQueue`, across processes.
///
/// Every message put (by any handle of the queue, typed or raw) is a task;
/// [`task_done`](Self::task_done), called by a consumer after handling an item, finishes
/// one; [`join`](Self::join) waits until every task put so far is finished. The counts live
/// in the queue's own header, so a `JoinableQueue` is one shared-memory object with the
/// same name, permissions ([`Options::mode`]), [`Options::keep_on_drop`] and
/// [`Options::replace_stale`] behaviour as any queue. A handle serialises as the queue's
/// name, so a `JoinableQueue` passed to a child process or a [`Pool`](super::Pool) task
/// re-attaches there. It dereferences to the [`Queue`] underneath for everything else
/// (`put_many`, `drain`, `stats`, …).
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
/// assert!(q.task_done().is_err()); // more task_done calls than puts: Python's ValueError
/// # Ok::<(), shmq::Error>(())
/// ```
pub struct JoinableQueue<T> {
    queue: Queue<T>,
}

impl<T> Clone for JoinableQueue<T> {
    fn clone(&self) -> Self {
        JoinableQueue {
            queue: self.queue.clone(),
        }
    }
}

impl<T: Serialize + DeserializeOwned> fmt::Debug for JoinableQueue<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JoinableQueue")
            .field("name", &self.queue.name())
            .field("len", &self.queue.len())
            .field("unfinished", &self.unfinished())
            .finish()
    }
}

impl<T> Deref for JoinableQueue<T> {
    type Target = Queue<T>;
    fn deref(&self) -> &Queue<T> {
        &self.queue
    }
}

impl<T: Serialize + DeserializeOwned> JoinableQueue<T> {
    /// Create the queue `name` with a ring of `capacity` bytes. The name is removed when
    /// this handle and its clones drop (unless [`Options::keep_on_drop`]).
    pub fn create(name: &str, capacity: usize) -> Result<Self> {
        Self::create_with(name, &Options::new().capacity(capacity))
    }

    /// Create with explicit [`Options`] (by name or at a path): `mode`, `replace_stale`,
    /// `keep_on_drop`, `max_messages` and the rest apply as to any queue.
    pub fn create_with(loc: impl Into<Location>, opts: &Options) -> Result<Self> {
        Ok(JoinableQueue {
            queue: Queue::create_with(loc, opts)?,
        })
    }

    /// Attach to an existing queue by name. Any queue of the same message type is
    /// joinable: its messages put so far count as unfinished tasks.
    pub fn open(name: &str) -> Result<Self> {
        Self::open_with(name, &Options::new())
    }

    /// Attach with explicit [`Options`], by name or at a path.
    pub fn open_with(loc: impl Into<Location>, opts: &Options) -> Result<Self> {
        Ok(JoinableQueue {
            queue: Queue::open_with(loc, opts)?,
        })
    }

    /// Wrap a queue handle.
    pub fn from_queue(queue: Queue<T>) -> Self {
        JoinableQueue { queue }
    }

    fn h(&self) -> &Header {
        self.queue.raw().ring().header()
    }

    /// Put an item (waits while full); it counts as unfinished until a `task_done`.
    pub fn put(&self, msg: &T) -> Result<()> {
        self.queue.put(msg)
    }

    /// Put if there is room now ([`Error::Full`] otherwise).
    pub fn try_put(&self, msg: &T) -> Result<()> {
        self.queue.try_put(msg)
    }

    /// Put, waiting at most `timeout` for room.
    pub fn put_timeout(&self, msg: &T, timeout: Duration) -> Result<()> {
        self.queue.put_timeout(msg, timeout)
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

    /// Mark one item as done. [`Error::InvalidArgument`] (Python's `ValueError`) if every
    /// item put so far is done already.
    pub fn task_done(&self) -> Result<()> {
        let h = self.h();
        let done = &h.tasks.done;
        let mut cur = done.load(Ordering::Acquire);
        loop {
            if cur >= puts(h) {
                return Err(Error::InvalidArgument(
                    "task_done() called more times than items were put".into(),
                ));
            }
            match done.compare_exchange_weak(cur, cur + 1, Ordering::AcqRel, Ordering::Acquire) {
                Ok(_) => break,
                Err(now) => cur = now,
            }
        }
        sync::notify(&h.tasks.join_seq, &h.tasks.join_waiters, i32::MAX);
        Ok(())
    }

    fn join_until(&self, deadline: &Deadline) -> Result<()> {
        let h = self.h();
        // `done` is read before `puts`: both only grow, so `done >= puts` here means that
        // at the moment `puts` was read every task put until then was done.
        let ready = || h.tasks.done.load(Ordering::Acquire) >= puts(h);
        while !ready() {
            // Sleeps at most sync::MAX_SLEEP at a time, so a waker that died between its
            // increment and its wake-up delays us by that much, never for ever.
            sync::wait_until(
                &h.tasks.join_seq,
                &h.tasks.join_waiters,
                crate::ring::DEFAULT_SPIN,
                deadline,
                ready,
            )?;
        }
        Ok(())
    }

    /// Wait until every item put so far has been marked done.
    pub fn join(&self) -> Result<()> {
        self.join_until(&Deadline::never())
    }

    /// Like [`join`](Self::join) but [`Error::Timeout`] after `timeout`.
    pub fn join_timeout(&self, timeout: Duration) -> Result<()> {
        self.join_until(&Deadline::after(timeout))
    }

    /// Items put but not yet marked done (queued ones included).
    pub fn unfinished(&self) -> u64 {
        let h = self.h();
        let done = h.tasks.done.load(Ordering::Acquire);
        puts(h).saturating_sub(done)
    }

    /// Python 3.13's `Queue.shutdown(immediate)`: close the queue (later puts fail with
    /// [`Error::Closed`], in every process). With `immediate == false`, consumers still
    /// get what is queued and `join` waits for it as before. With `immediate == true`, the
    /// queued items are discarded and counted as done, so `join` returns as soon as the
    /// items consumers hold already are done, and `get` fails with `Closed` at once.
    /// Returns how many items were discarded.
    ///
    /// ```
    /// # let name = format!("doc-jqsd-{}", std::process::id());
    /// let q: shmq::process::JoinableQueue<u8> = shmq::process::JoinableQueue::create(&name, 4096)?;
    /// q.put(&1)?;
    /// q.put(&2)?;
    /// assert_eq!(q.shutdown(true)?, 2);
    /// q.join()?; // nothing left to wait for
    /// assert!(matches!(q.get(), Err(shmq::Error::Closed)));
    /// # Ok::<(), shmq::Error>(())
    /// ```
    pub fn shutdown(&self, immediate: bool) -> Result<usize> {
        self.queue.close();
        if !immediate {
            return Ok(0);
        }
        let h = self.h();
        let raw = self.queue.raw();
        let mut batch = Batch::new();
        let mut dropped = 0usize;
        loop {
            match raw.try_get_many_into(&mut batch, 4096) {
                Ok(n) => {
                    dropped += n;
                    h.tasks.done.fetch_add(n as u64, Ordering::AcqRel);
                    sync::notify(&h.tasks.join_seq, &h.tasks.join_waiters, i32::MAX);
                }
                Err(Error::Closed) | Err(Error::Empty) => break,
                Err(e) => return Err(e),
            }
        }
        Ok(dropped)
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

    /// Close the queue (see [`Queue::close`](crate::TypedQueue::close)); the same as
    /// [`shutdown(false)`](Self::shutdown).
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
        Ok(JoinableQueue {
            queue: Queue::deserialize(d)?,
        })
    }
}
