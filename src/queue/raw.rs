//! [`RawQueue`], the queue of byte messages every other queue is built on, and [`Batch`],
//! what its batched get fills.

use std::fmt;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;

use super::kind::{check_kind, Kind, RAW_KIND};
use super::options::Options;
use crate::error::{Error, Result};
use crate::ring::{Block, Ring, Stats};
use crate::segment::{Location, Segment};

struct Inner {
    ring: Ring,
    name: String,
}

/// A queue of byte messages.
///
/// A [`Queue<T>`](crate::Queue) or [`PodQueue<T>`](crate::PodQueue) opened on the same
/// name is the same ring: the typed queues are the raw queue plus a [`Codec`](crate::Codec).
/// The creator records its codec, the message type's name and (for `Pod`) the item size in
/// the header; a typed `open` that does not match gets [`Error::Incompatible`]. A
/// `RawQueue` may open any queue.
///
/// Handles are `Send + Sync + Clone` (clones share one mapping). A handle serialises
/// (serde) as its [`Location`] and deserialises by opening it, so a queue passed to a child
/// process as an argument attaches there by name — like Python pickling a
/// `multiprocessing.Queue`.
///
/// ```
/// use shmq::RawQueue;
/// # let name = format!("doc-raw-{}", std::process::id());
/// let q = RawQueue::create(&name, 4096)?;
/// q.put(b"frame 1")?;
/// let mut buf = Vec::new();
/// let n = q.get_into(&mut buf)?;
/// assert_eq!(&buf[..n], b"frame 1");
/// # Ok::<(), shmq::Error>(())
/// ```
#[derive(Clone)]
pub struct RawQueue {
    inner: Arc<Inner>,
}

impl fmt::Debug for RawQueue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RawQueue")
            .field("name", &self.inner.name)
            .field("capacity", &self.capacity())
            .field("len", &self.len())
            .finish()
    }
}

impl RawQueue {
    /// Create a new queue named `name` with a ring of `capacity` bytes.
    ///
    /// Fails with [`Error::AlreadyExists`] if the name is taken, [`Error::InvalidName`] for
    /// a name that breaks the naming rules, and
    /// [`Error::InvalidArgument`] for a capacity outside 64 B ..= 1 TiB. The name is
    /// removed when this handle and its clones drop (see [`Options::keep_on_drop`]), and
    /// only then: not when a `fork`ed child drops its copy, and not if the name was removed
    /// and given to another queue meanwhile (a name belongs to the object that holds it).
    ///
    /// The handle (with its clones) holds one file descriptor (`O_CLOEXEC`) for its life.
    ///
    /// ```
    /// # let name = format!("doc-rawc-{}", std::process::id());
    /// let q = shmq::RawQueue::create(&name, 1 << 20)?;
    /// assert!(matches!(shmq::RawQueue::create(&name, 1 << 20), Err(shmq::Error::AlreadyExists { .. })));
    /// # Ok::<(), shmq::Error>(())
    /// ```
    pub fn create(name: &str, capacity: usize) -> Result<RawQueue> {
        Self::create_with(name, &Options::new().capacity(capacity))
    }

    /// Attach to an existing queue by name ([`Error::NotFound`] if there is none). Never
    /// blocks on a foreign object under the name: a FIFO, socket, directory or symlink is
    /// [`Error::Incompatible`] at once. The handle (with its clones) holds one file
    /// descriptor (`O_CLOEXEC`) for its life.
    ///
    /// ```
    /// # let name = format!("doc-rawo-{}", std::process::id());
    /// # let _q = shmq::RawQueue::create(&name, 4096)?;
    /// let q = shmq::RawQueue::open(&name)?;
    /// assert!(matches!(shmq::RawQueue::open("no-such-queue-xyz"), Err(shmq::Error::NotFound(_))));
    /// # Ok::<(), shmq::Error>(())
    /// ```
    pub fn open(name: &str) -> Result<RawQueue> {
        Self::open_with(name, &Options::new())
    }

    /// Create a persistent queue in a file at `path` (e.g. on a disk or a tmpfs of your
    /// choice) instead of the shared-memory namespace.
    ///
    /// ```
    /// let dir = tempfile::tempdir().unwrap();
    /// let path = dir.path().join("q.shmq");
    /// let q = shmq::RawQueue::create_at(&path, 4096)?;
    /// q.put(b"kept in a file")?;
    /// let other = shmq::RawQueue::open_at(&path)?;
    /// assert_eq!(other.len(), 1);
    /// # Ok::<(), shmq::Error>(())
    /// ```
    pub fn create_at(path: impl AsRef<Path>, capacity: usize) -> Result<RawQueue> {
        Self::create_with(path.as_ref(), &Options::new().capacity(capacity))
    }

    /// Attach to a file-backed queue at `path` ([`Error::NotFound`] "no shmq queue at
    /// PATH" if there is no file). Only a regular file is opened: a symbolic link at
    /// `path` itself (links in the directories above are followed), a FIFO, socket or
    /// directory is [`Error::Incompatible`], at once.
    pub fn open_at(path: impl AsRef<Path>) -> Result<RawQueue> {
        Self::open_with(path.as_ref(), &Options::new())
    }

    /// Create with explicit [`Options`], by name (`&str`) or at a path (`&Path`).
    ///
    /// ```
    /// # let name = format!("doc-rawcw-{}", std::process::id());
    /// let q = shmq::RawQueue::create_with(name.as_str(), &shmq::Options::new().capacity(8192))?;
    /// assert_eq!(q.max_message(), 8192 - 8);
    /// # Ok::<(), shmq::Error>(())
    /// ```
    pub fn create_with(loc: impl Into<Location>, opts: &Options) -> Result<RawQueue> {
        Self::create_kind(loc.into(), opts, &RAW_KIND)
    }

    /// Open with explicit [`Options`] (only `spin` applies), by name or at a path.
    ///
    /// ```
    /// # let name = format!("doc-rawow-{}", std::process::id());
    /// # let _q = shmq::RawQueue::create(&name, 4096)?;
    /// use std::time::Duration;
    /// let q = shmq::RawQueue::open_with(name.as_str(), &shmq::Options::new().spin(Duration::ZERO))?;
    /// # Ok::<(), shmq::Error>(())
    /// ```
    pub fn open_with(loc: impl Into<Location>, opts: &Options) -> Result<RawQueue> {
        Self::open_kind(loc.into(), opts, None)
    }

    pub(super) fn create_kind(loc: Location, opts: &Options, kind: &Kind) -> Result<RawQueue> {
        let copts = opts.create_options(kind.codec, kind.item_size, kind.type_name);
        let mut seg = Segment::create(loc, opts.capacity, &copts)?;
        seg.set_remove_on_drop(!opts.keep_on_drop);
        Self::from_segment(seg, opts)
    }

    pub(super) fn open_kind(
        loc: Location,
        opts: &Options,
        kind: Option<&Kind>,
    ) -> Result<RawQueue> {
        let seg = Segment::open(loc)?;
        match kind {
            Some(kind) => check_kind(&seg, kind, opts.check_type, opts.strict_type)?,
            None => {
                // A primitive's state lives where a queue's ring would: no queue handle,
                // not even a raw one, may write there.
                let codec = seg.header().id.codec.load(Ordering::Relaxed);
                if let Some(what) = crate::primitives::kind_name(codec) {
                    return Err(Error::Incompatible {
                        name: seg.location().display_name(),
                        reason: format!("it is a {what}, not a queue"),
                    });
                }
            }
        }
        Self::from_segment(seg, opts)
    }

    fn from_segment(seg: Segment, opts: &Options) -> Result<RawQueue> {
        let name = seg.location().display_name();
        let mut ring = Ring::new(seg)?;
        ring.set_spin(opts.spin);
        Ok(RawQueue {
            inner: Arc::new(Inner { ring, name }),
        })
    }

    #[inline]
    pub(crate) fn ring(&self) -> &Ring {
        &self.inner.ring
    }

    // Inlined into each public put: the single-message path in one frame, `block` a constant.
    #[inline(always)]
    fn put_block(&self, msg: &[u8], block: Block) -> Result<()> {
        self.ring()
            .put_one(msg.len(), block, |slot| slot.write(msg))
    }

    /// Append `msg`, waiting while the queue is full.
    ///
    /// Errors: [`Error::TooLarge`] at once if `msg` can never fit, [`Error::Closed`] if the
    /// queue is (or gets) closed while waiting.
    #[inline]
    pub fn put(&self, msg: &[u8]) -> Result<()> {
        // One code path with `put_timeout` (a deadline that never comes), so that both
        // cost the same instructions, argument set-up included (issue 14).
        self.put_timeout(msg, Duration::MAX)
    }

    /// Append `msg` if there is room now, else [`Error::Full`] (also when another live
    /// process has held the producer lock for 50 ms (`TRY_LOCK_WAIT`),
    /// e.g. because it is stopped).
    pub fn try_put(&self, msg: &[u8]) -> Result<()> {
        self.put_block(msg, Block::No)
    }

    /// Append `msg`, waiting at most `timeout` for room ([`Error::Timeout`]).
    /// `Duration::MAX` (and any timeout past the clock's range) waits for ever, like
    /// [`put`](Self::put); `Duration::ZERO` gives `Timeout` (or `Full`) at once when there
    /// is no room, and also when another process holds the producer lock (where
    /// [`try_put`](Self::try_put) waits up to 50 ms for it). The clock is read only if the
    /// call has to wait.
    pub fn put_timeout(&self, msg: &[u8], timeout: Duration) -> Result<()> {
        self.put_block(msg, Block::timeout(timeout))
    }

    fn put_many_block<B: AsRef<[u8]>>(&self, msgs: &[B], block: Block) -> Result<usize> {
        if msgs.is_empty() {
            return Ok(0);
        }
        // A message that can never fit fails the whole call before anything is published
        // (a caller that retries must not duplicate the messages in front of it).
        let max = self.max_message();
        if let Some(m) = msgs.iter().map(|m| m.as_ref().len()).find(|&n| n > max) {
            return Err(self.ring().too_large(m));
        }
        self.ring().put_batch(
            msgs.len(),
            block,
            |i| Ok(msgs[i].as_ref().len()),
            |i, slot| slot.write(msgs[i].as_ref()),
        )
    }

    /// Append every message of `msgs` in order, taking the producer lock once per run of
    /// messages that fit; waits for room as needed. A message larger than
    /// [`max_message`](Self::max_message) fails the call with [`Error::TooLarge`] before any
    /// message is queued.
    ///
    /// Not all-or-nothing when it has to wait: the runs that fit are published as they go,
    /// so an [`Error::Closed`] (the queue closed while the call waited for room) can come
    /// after some of the first messages were published (as many as `len()` grew by, if no
    /// one else puts or gets). [`try_put_many`](Self::try_put_many) returns the count.
    ///
    /// ```
    /// # let name = format!("doc-rawpm-{}", std::process::id());
    /// let q = shmq::RawQueue::create(&name, 4096)?;
    /// q.put_many(&[b"a".as_slice(), b"bc", b"def"])?;
    /// assert_eq!(q.len(), 3);
    /// # Ok::<(), shmq::Error>(())
    /// ```
    pub fn put_many<B: AsRef<[u8]>>(&self, msgs: &[B]) -> Result<()> {
        self.put_many_block(msgs, Block::Until(None)).map(|_| ())
    }

    /// Append as many of `msgs` (from the front) as fit now; returns how many. `Err(Full)`
    /// if not even the first fits.
    pub fn try_put_many<B: AsRef<[u8]>>(&self, msgs: &[B]) -> Result<usize> {
        self.put_many_block(msgs, Block::No)
    }

    #[inline(always)]
    pub(super) fn get_block(&self, buf: &mut Vec<u8>, block: Block) -> Result<usize> {
        self.ring().get_one(block, |rec| {
            buf.clear();
            rec.extend_vec(buf);
            buf.len()
        })
    }

    /// Take the oldest message into `buf` (replacing its contents; no allocation once `buf`
    /// is large enough) and return its length, waiting while the queue is empty.
    ///
    /// Errors: [`Error::Closed`] once the queue is closed and drained.
    #[inline]
    pub fn get_into(&self, buf: &mut Vec<u8>) -> Result<usize> {
        // One code path with `get_into_timeout`, as for `put`.
        self.get_into_timeout(buf, Duration::MAX)
    }

    /// Like [`get_into`](Self::get_into) but [`Error::Empty`] instead of waiting (also when
    /// another live process has held the consumer lock for
    /// 50 ms (`TRY_LOCK_WAIT`)).
    pub fn try_get_into(&self, buf: &mut Vec<u8>) -> Result<usize> {
        self.get_block(buf, Block::No)
    }

    /// Like [`get_into`](Self::get_into) but [`Error::Timeout`] after `timeout`
    /// (`Duration::MAX`: never, which is `get_into`). `Duration::ZERO` looks once and never
    /// waits, not even for a consumer lock another process holds (where
    /// [`try_get_into`](Self::try_get_into) waits up to 50 ms).
    pub fn get_into_timeout(&self, buf: &mut Vec<u8>, timeout: Duration) -> Result<usize> {
        self.get_block(buf, Block::timeout(timeout))
    }

    /// Take the oldest message as a new `Vec` (waits while empty). Prefer
    /// [`get_into`](Self::get_into) in loops: it reuses its buffer.
    ///
    /// ```
    /// # let name = format!("doc-rawgv-{}", std::process::id());
    /// let q = shmq::RawQueue::create(&name, 4096)?;
    /// q.put(b"x")?;
    /// assert_eq!(q.get_vec()?, b"x");
    /// # Ok::<(), shmq::Error>(())
    /// ```
    pub fn get_vec(&self) -> Result<Vec<u8>> {
        let mut v = Vec::new();
        self.get_into(&mut v)?;
        Ok(v)
    }

    fn get_many_block(&self, out: &mut Batch, max: usize, block: Block) -> Result<usize> {
        out.clear();
        self.ring().get_batch(max, block, |rec| {
            rec.extend_vec(&mut out.bytes);
            out.ends.push(out.bytes.len());
        })
    }

    /// Take up to `max` messages at once into `out` (cleared first), taking the consumer
    /// lock once; waits while the queue is empty and returns how many were taken (≥ 1).
    ///
    /// ```
    /// # let name = format!("doc-rawgm-{}", std::process::id());
    /// let q = shmq::RawQueue::create(&name, 4096)?;
    /// q.put_many(&[b"a".as_slice(), b"bc"])?;
    /// let mut batch = shmq::Batch::new();
    /// assert_eq!(q.get_many_into(&mut batch, 10)?, 2);
    /// assert_eq!(batch.iter().collect::<Vec<_>>(), vec![b"a".as_slice(), b"bc"]);
    /// # Ok::<(), shmq::Error>(())
    /// ```
    pub fn get_many_into(&self, out: &mut Batch, max: usize) -> Result<usize> {
        self.get_many_block(out, max, Block::Until(None))
    }

    /// Like [`get_many_into`](Self::get_many_into) but [`Error::Empty`] instead of waiting.
    pub fn try_get_many_into(&self, out: &mut Batch, max: usize) -> Result<usize> {
        self.get_many_block(out, max, Block::No)
    }

    /// Like [`get_many_into`](Self::get_many_into) but [`Error::Timeout`] after `timeout`.
    pub fn get_many_into_timeout(
        &self,
        out: &mut Batch,
        max: usize,
        timeout: Duration,
    ) -> Result<usize> {
        self.get_many_block(out, max, Block::timeout(timeout))
    }

    /// Messages queued now.
    pub fn len(&self) -> usize {
        self.ring().len()
    }

    /// Whether no message is queued now.
    pub fn is_empty(&self) -> bool {
        self.ring().is_empty()
    }

    /// Whether a put would find no room now: [`Options::max_messages`] messages are
    /// queued, or no byte of the ring is free. (A large message may not fit even when
    /// this is `false`.) Like Python's `Queue.full()`, the answer may be stale at once.
    pub fn is_full(&self) -> bool {
        self.ring().is_full()
    }

    /// The message bound set at creation ([`Options::max_messages`]; 0: none).
    pub fn max_messages(&self) -> u64 {
        self.ring().max_messages()
    }

    /// Close the queue, from any process: later puts fail with [`Error::Closed`], gets
    /// drain what is left and then fail with `Closed`, and every blocked `put`/`get` in
    /// every process wakes up.
    ///
    /// ```
    /// # let name = format!("doc-rawcl-{}", std::process::id());
    /// let q = shmq::RawQueue::create(&name, 4096)?;
    /// q.put(b"last")?;
    /// q.close();
    /// assert!(q.is_closed());
    /// assert!(matches!(q.put(b"more"), Err(shmq::Error::Closed)));
    /// assert_eq!(q.get_vec()?, b"last");
    /// assert!(matches!(q.get_vec(), Err(shmq::Error::Closed)));
    /// # Ok::<(), shmq::Error>(())
    /// ```
    pub fn close(&self) {
        self.ring().close()
    }

    /// Whether the queue has been closed.
    pub fn is_closed(&self) -> bool {
        self.ring().is_closed()
    }

    /// The queue's name (or, for a file-backed queue, its path).
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// Where the queue lives.
    pub fn location(&self) -> &Location {
        self.ring().memory().location()
    }

    /// A 64-bit id chosen at random when the queue was created: two queues created one
    /// after the other under the same name have different ids, and every handle on one
    /// queue reads the same. With a read loan's [`seq`](crate::ReadLoan::seq) it names a
    /// message uniquely (the JetStream bridge's deduplication id). Segments created by
    /// shmq versions without the field read as a hash of their creation time, creator
    /// and inode instead.
    pub fn uid(&self) -> u64 {
        let h = self.ring().header();
        let uid = h.tasks.uid.load(std::sync::atomic::Ordering::Relaxed);
        if uid != 0 {
            return uid;
        }
        // FNV-1a over fixed-width little-endian words: the same id in every process,
        // whatever Rust built it (std's DefaultHasher may change between versions).
        use std::hash::Hasher;
        let mut s = fnv::FnvHasher::default();
        let o = self.ring().memory().object_id();
        for w in [
            h.id.created_unix.load(std::sync::atomic::Ordering::Relaxed),
            u64::from(h.id.creator_pid.load(std::sync::atomic::Ordering::Relaxed)),
            h.id.creator_start
                .load(std::sync::atomic::Ordering::Relaxed),
            o.dev,
            o.ino,
        ] {
            s.write(&w.to_le_bytes());
        }
        s.finish()
    }

    /// Ring capacity in bytes.
    pub fn capacity(&self) -> usize {
        self.ring().capacity() as usize
    }

    /// Largest message, in encoded bytes, this queue accepts (`capacity - 8`).
    pub fn max_message(&self) -> usize {
        self.ring().max_message()
    }

    /// A snapshot of the queue's state and lifetime counters.
    ///
    /// ```
    /// # let name = format!("doc-rawst-{}", std::process::id());
    /// let q = shmq::RawQueue::create(&name, 4096)?;
    /// q.put(b"abc")?;
    /// let s = q.stats();
    /// assert_eq!((s.len, s.puts, s.put_bytes), (1, 1, 3));
    /// # Ok::<(), shmq::Error>(())
    /// ```
    pub fn stats(&self) -> Stats {
        self.ring().stats()
    }

    /// Test support, not API: take this queue's producer (`producer == true`) or consumer
    /// lock and hold it until the returned guard drops, as a put or get in progress would.
    /// Integration tests use it to stand for a live (or, once the process is killed, a dead)
    /// lock holder.
    #[doc(hidden)]
    pub fn hold_lock_for_test(&self, producer: bool) -> Result<impl Drop + '_> {
        self.ring().hold_lock(producer)
    }

    /// Test support, not API: the holder id this handle writes into a lock word it holds
    /// (what [`Stats::producer_lock_holder`] shows while it holds the producer lock).
    #[doc(hidden)]
    pub fn holder_id_for_test(&self) -> Result<u32> {
        let r = self.ring();
        r.holder().id(|_| false)
    }
}

/// Messages taken by [`RawQueue::get_many_into`]: one buffer of concatenated payloads plus
/// their end offsets, reused across calls so that batches allocate nothing in steady state.
#[derive(Clone, Debug, Default)]
pub struct Batch {
    bytes: Vec<u8>,
    ends: Vec<usize>,
}

impl Batch {
    /// An empty batch.
    pub fn new() -> Batch {
        Batch::default()
    }

    /// Number of messages.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// Whether the batch holds no message.
    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// Message `i`, if any.
    pub fn get(&self, i: usize) -> Option<&[u8]> {
        let end = *self.ends.get(i)?;
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        Some(&self.bytes[start..end])
    }

    /// The messages in order.
    pub fn iter(&self) -> impl Iterator<Item = &[u8]> + '_ {
        (0..self.len()).filter_map(move |i| self.get(i))
    }

    /// Remove every message (keeping the allocation).
    pub fn clear(&mut self) {
        self.bytes.clear();
        self.ends.clear();
    }
}

impl Serialize for RawQueue {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        self.location().serialize(s)
    }
}

impl<'de> serde::Deserialize<'de> for RawQueue {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let loc = Location::deserialize(d)?;
        RawQueue::open_with(loc, &Options::new()).map_err(serde::de::Error::custom)
    }
}
