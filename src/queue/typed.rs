//! [`TypedQueue`] and its serde alias [`Queue<T>`]: a [`RawQueue`] plus a [`Codec`], with
//! the per-thread scratch buffer that gets decode from.

use std::cell::RefCell;
use std::fmt;
use std::marker::PhantomData;
use std::path::Path;
use std::time::Duration;

use serde::Serialize;

use super::codec::{Codec, Postcard};
use super::kind::{truncate_type_name, Kind};
use super::options::Options;
use super::raw::RawQueue;
use crate::error::{Error, Result};
use crate::ring::{Block, Stats};
use crate::segment::Location;

/// A typed queue: a [`RawQueue`] plus a [`Codec`]. Use the aliases [`Queue<T>`] (serde)
/// and [`PodQueue<T>`](crate::PodQueue) (plain old data).
pub struct TypedQueue<T, C> {
    pub(super) raw: RawQueue,
    _t: PhantomData<fn(T) -> (T, C)>,
}

/// A queue of serde messages, encoded with postcard. See [`TypedQueue`] for the methods.
///
/// ```
/// use serde::{Deserialize, Serialize};
/// use shmq::Queue;
///
/// #[derive(Serialize, Deserialize, Debug, PartialEq)]
/// struct Job { id: u64, url: String }
///
/// # let name = format!("doc-queue-{}", std::process::id());
/// let q: Queue<Job> = Queue::create(&name, 1 << 20)?;
/// q.put(&Job { id: 1, url: "https://example.com".into() })?;
/// assert_eq!(q.get()?.id, 1);
/// assert!(matches!(q.try_get(), Err(shmq::Error::Empty)));
/// # Ok::<(), shmq::Error>(())
/// ```
pub type Queue<T> = TypedQueue<T, Postcard>;

impl<T, C> Clone for TypedQueue<T, C> {
    fn clone(&self) -> Self {
        TypedQueue {
            raw: self.raw.clone(),
            _t: PhantomData,
        }
    }
}

impl<T, C> fmt::Debug for TypedQueue<T, C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Queue")
            .field("name", &self.raw.name())
            .field("type", &std::any::type_name::<T>())
            .field("len", &self.raw.len())
            .finish()
    }
}

thread_local! {
    /// Per-thread buffer that messages are copied into under the consumer lock and decoded
    /// from after it is released (so decoding never holds up other consumers).
    static SCRATCH: RefCell<(Vec<u8>, Vec<usize>)> = const { RefCell::new((Vec::new(), Vec::new())) };
}

/// Largest scratch buffer kept per thread between calls.
const SCRATCH_KEEP: usize = 16 << 20;

/// Messages up to this size are decoded from a copy on the stack (`get`).
const SMALL: usize = 64;

fn with_scratch<R>(f: impl FnOnce(&mut Vec<u8>, &mut Vec<usize>) -> R) -> R {
    // Take the buffers out so that a re-entrant call (a Deserialize impl that uses a queue)
    // gets fresh ones instead of a RefCell panic.
    let (mut bytes, mut ends) = SCRATCH.with(|s| std::mem::take(&mut *s.borrow_mut()));
    bytes.clear();
    ends.clear();
    let r = f(&mut bytes, &mut ends);
    if bytes.capacity() <= SCRATCH_KEEP {
        SCRATCH.with(|s| *s.borrow_mut() = (bytes, ends));
    }
    r
}

impl<T, C: Codec<T>> TypedQueue<T, C> {
    fn kind() -> Kind {
        Kind {
            codec: C::ID,
            item_size: C::ITEM_SIZE,
            type_name: truncate_type_name(std::any::type_name::<T>()),
        }
    }

    /// Create a new queue named `name` with a ring of `capacity` bytes (see
    /// [`RawQueue::create`] for the errors). The message type is recorded in the header.
    pub fn create(name: &str, capacity: usize) -> Result<Self> {
        Self::create_with(name, &Options::new().capacity(capacity))
    }

    /// Attach to an existing queue by name. [`Error::Incompatible`] if it was created for
    /// another codec or message type.
    ///
    /// ```
    /// # let name = format!("doc-qopen-{}", std::process::id());
    /// let q: shmq::Queue<u32> = shmq::Queue::create(&name, 4096)?;
    /// let same: shmq::Queue<u32> = shmq::Queue::open(&name)?;
    /// let wrong: shmq::Result<shmq::Queue<String>> = shmq::Queue::open(&name);
    /// assert!(matches!(wrong, Err(shmq::Error::Incompatible { .. })));
    /// # Ok::<(), shmq::Error>(())
    /// ```
    pub fn open(name: &str) -> Result<Self> {
        Self::open_with(name, &Options::new())
    }

    /// Create a file-backed queue at `path`.
    pub fn create_at(path: impl AsRef<Path>, capacity: usize) -> Result<Self> {
        Self::create_with(path.as_ref(), &Options::new().capacity(capacity))
    }

    /// Attach to a file-backed queue at `path`.
    pub fn open_at(path: impl AsRef<Path>) -> Result<Self> {
        Self::open_with(path.as_ref(), &Options::new())
    }

    /// Create with explicit [`Options`], by name (`&str`) or at a path (`&Path`).
    pub fn create_with(loc: impl Into<Location>, opts: &Options) -> Result<Self> {
        Ok(Self::from_raw_unchecked(RawQueue::create_kind(
            loc.into(),
            opts,
            &Self::kind(),
        )?))
    }

    /// Open with explicit [`Options`].
    pub fn open_with(loc: impl Into<Location>, opts: &Options) -> Result<Self> {
        Ok(Self::from_raw_unchecked(RawQueue::open_kind(
            loc.into(),
            opts,
            Some(&Self::kind()),
        )?))
    }

    fn from_raw_unchecked(raw: RawQueue) -> Self {
        TypedQueue {
            raw,
            _t: PhantomData,
        }
    }

    /// The byte queue underneath (same ring).
    pub fn raw(&self) -> &RawQueue {
        &self.raw
    }

    fn put_block(&self, msg: &T, block: Block) -> Result<()> {
        let len = C::encoded_len(msg)?;
        self.raw
            .ring()
            .put_one(len, block, |slot| C::encode(msg, slot))
    }

    /// Append `msg`, waiting while the queue is full. [`Error::TooLarge`] at once if its
    /// encoding can never fit; [`Error::Closed`] if the queue is closed.
    #[inline(always)]
    pub fn put(&self, msg: &T) -> Result<()> {
        // One code path with `put_timeout` (a deadline that never comes), so that both
        // cost the same instructions, argument set-up included (issue 14).
        self.put_timeout(msg, Duration::MAX)
    }

    /// Append `msg` if there is room now, else [`Error::Full`] (also when another live
    /// process has held the producer lock for 50 ms (`TRY_LOCK_WAIT`),
    /// e.g. because it is stopped).
    pub fn try_put(&self, msg: &T) -> Result<()> {
        self.put_block(msg, Block::No)
    }

    /// Append `msg`, waiting at most `timeout` for room ([`Error::Timeout`]).
    /// `Duration::MAX` (and any timeout past the clock's range) waits for ever, like
    /// [`put`](Self::put).
    #[inline(never)]
    pub fn put_timeout(&self, msg: &T, timeout: Duration) -> Result<()> {
        self.put_block(msg, Block::timeout(timeout))
    }

    fn put_many_block(&self, msgs: &[T], block: Block) -> Result<usize> {
        if msgs.is_empty() {
            return Ok(0);
        }
        self.raw.ring().put_batch(
            msgs.len(),
            block,
            |i| C::encoded_len(&msgs[i]),
            |i, slot| C::encode(&msgs[i], slot),
        )
    }

    /// Append all of `msgs` in order, taking the producer lock once per run that fits.
    /// Not all-or-nothing when it has to wait: an [`Error::Closed`] (or an encoding error
    /// in a later run) can come after the first runs were published, as for
    /// [`RawQueue::put_many`](crate::RawQueue::put_many).
    ///
    /// ```
    /// # let name = format!("doc-qpm-{}", std::process::id());
    /// let q: shmq::Queue<u64> = shmq::Queue::create(&name, 4096)?;
    /// q.put_many(&[1, 2, 3])?;
    /// assert_eq!(q.try_get_many(10)?, vec![1, 2, 3]);
    /// # Ok::<(), shmq::Error>(())
    /// ```
    pub fn put_many(&self, msgs: &[T]) -> Result<()> {
        self.put_many_block(msgs, Block::Until(None)).map(|_| ())
    }

    /// Append as many of `msgs` as fit now; returns how many (`Err(Full)` if none).
    pub fn try_put_many(&self, msgs: &[T]) -> Result<usize> {
        self.put_many_block(msgs, Block::No)
    }

    fn get_block(&self, block: Block) -> Result<T> {
        // A message of up to `SMALL` bytes is copied to the stack and decoded from there
        // once the lock is released: no per-thread scratch to take and put back (issue 14).
        let mut small = [0u8; SMALL];
        let big = self.raw.ring().get_one(block, |rec| {
            if rec.len() <= SMALL {
                rec.copy_to(&mut small[..rec.len()]);
                Err(rec.len())
            } else {
                let mut buf = SCRATCH.with(|s| std::mem::take(&mut s.borrow_mut().0));
                buf.clear();
                rec.extend_vec(&mut buf);
                Ok(buf)
            }
        })?;
        match big {
            Err(len) => C::decode(&small[..len]),
            Ok(buf) => {
                let r = C::decode(&buf);
                if buf.capacity() <= SCRATCH_KEEP {
                    SCRATCH.with(|s| s.borrow_mut().0 = buf);
                }
                r
            }
        }
    }

    /// Take the oldest message, waiting while the queue is empty. [`Error::Closed`] once the
    /// queue is closed and drained; [`Error::Codec`] if the bytes do not decode (the
    /// undecodable message is consumed).
    #[inline(always)]
    pub fn get(&self) -> Result<T> {
        // One code path with `get_timeout`, as for `put`.
        self.get_timeout(Duration::MAX)
    }

    /// Take the oldest message, or [`Error::Empty`] (also when the consumer lock stays busy
    /// for 50 ms (`TRY_LOCK_WAIT`)).
    pub fn try_get(&self) -> Result<T> {
        self.get_block(Block::No)
    }

    /// Take the oldest message, waiting at most `timeout` ([`Error::Timeout`];
    /// `Duration::MAX`: never, which is `get`).
    #[inline(never)]
    pub fn get_timeout(&self, timeout: Duration) -> Result<T> {
        self.get_block(Block::timeout(timeout))
    }

    fn get_many_block(&self, max: usize, block: Block, out: &mut Vec<T>) -> Result<usize> {
        with_scratch(|bytes, ends| {
            self.raw.ring().get_batch(max, block, |rec| {
                rec.extend_vec(bytes);
                ends.push(bytes.len());
            })?;
            out.reserve(ends.len());
            let mut start = 0;
            for &end in ends.iter() {
                out.push(C::decode(&bytes[start..end])?);
                start = end;
            }
            Ok(ends.len())
        })
    }

    /// Take up to `max` messages at once (one lock round trip), waiting while empty.
    pub fn get_many(&self, max: usize) -> Result<Vec<T>> {
        let mut v = Vec::new();
        self.get_many_block(max, Block::Until(None), &mut v)?;
        Ok(v)
    }

    /// Take up to `max` messages that are queued now, or [`Error::Empty`].
    pub fn try_get_many(&self, max: usize) -> Result<Vec<T>> {
        let mut v = Vec::new();
        self.get_many_block(max, Block::No, &mut v)?;
        Ok(v)
    }

    /// Take up to `max` messages, waiting at most `timeout` for the first.
    pub fn get_many_timeout(&self, max: usize, timeout: Duration) -> Result<Vec<T>> {
        let mut v = Vec::new();
        self.get_many_block(max, Block::timeout(timeout), &mut v)?;
        Ok(v)
    }

    /// Append up to `max` messages to `out` (no allocation once `out` has room), waiting
    /// while empty; returns how many.
    pub fn get_many_into(&self, out: &mut Vec<T>, max: usize) -> Result<usize> {
        self.get_many_block(max, Block::Until(None), out)
    }

    /// Everything queued now (possibly nothing), without waiting.
    ///
    /// ```
    /// # let name = format!("doc-qdrain-{}", std::process::id());
    /// let q: shmq::Queue<u8> = shmq::Queue::create(&name, 4096)?;
    /// assert!(q.drain()?.is_empty());
    /// q.put(&1)?;
    /// assert_eq!(q.drain()?, vec![1]);
    /// # Ok::<(), shmq::Error>(())
    /// ```
    pub fn drain(&self) -> Result<Vec<T>> {
        match self.try_get_many(usize::MAX) {
            Err(Error::Empty) | Err(Error::Closed) => Ok(Vec::new()),
            r => r,
        }
    }

    /// A blocking iterator of messages that ends when the queue is closed and drained.
    /// Other errors are yielded as `Err` items.
    ///
    /// ```
    /// # let name = format!("doc-qiter-{}", std::process::id());
    /// let q: shmq::Queue<u8> = shmq::Queue::create(&name, 4096)?;
    /// q.put_many(&[1, 2])?;
    /// q.close();
    /// let all: Vec<u8> = q.iter().collect::<shmq::Result<_>>()?;
    /// assert_eq!(all, vec![1, 2]);
    /// # Ok::<(), shmq::Error>(())
    /// ```
    pub fn iter(&self) -> impl Iterator<Item = Result<T>> + '_ {
        std::iter::from_fn(move || match self.get() {
            Err(Error::Closed) => None,
            r => Some(r),
        })
    }

    /// Messages queued now.
    pub fn len(&self) -> usize {
        self.raw.len()
    }

    /// Whether no message is queued now.
    pub fn is_empty(&self) -> bool {
        self.raw.is_empty()
    }

    /// Whether a put would find no room now (see [`RawQueue::is_full`]).
    pub fn is_full(&self) -> bool {
        self.raw.is_full()
    }

    /// Close the queue (see [`RawQueue::close`]).
    pub fn close(&self) {
        self.raw.close()
    }

    /// Whether the queue has been closed.
    pub fn is_closed(&self) -> bool {
        self.raw.is_closed()
    }

    /// The queue's name (or path).
    pub fn name(&self) -> &str {
        self.raw.name()
    }

    /// Ring capacity in bytes.
    pub fn capacity(&self) -> usize {
        self.raw.capacity()
    }

    /// A snapshot of the queue's state and counters.
    pub fn stats(&self) -> Stats {
        self.raw.stats()
    }
}

impl<T, C> Serialize for TypedQueue<T, C> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        self.raw.serialize(s)
    }
}

impl<'de, T, C: Codec<T>> serde::Deserialize<'de> for TypedQueue<T, C> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let loc = Location::deserialize(d)?;
        Self::open_with(loc, &Options::new()).map_err(serde::de::Error::custom)
    }
}
