//! The typed API: [`RawQueue`] (bytes), [`Queue<T>`] (serde, postcard) and [`PodQueue<T>`]
//! (`bytemuck::Pod`, copied without serialisation), all over the same [`Ring`].
//!
//! A `Queue<T>`, a `PodQueue<T>` and a `RawQueue` opened on the same name are the same ring:
//! the typed queues are the raw queue plus a [`Codec`]. The creator records its codec, the
//! message type's name and (for `Pod`) the item size in the header; a typed `open` that does
//! not match gets [`Error::Incompatible`]. A `RawQueue` may open anything.
//!
//! Handles are `Send + Sync + Clone` (clones share one mapping). A handle serialises (serde)
//! as its [`Location`] and deserialises by opening it, so a queue passed to a child process
//! as an argument attaches there by name — like Python pickling a `multiprocessing.Queue`.

use std::cell::RefCell;
use std::fmt;
use std::marker::PhantomData;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::ring::{Block, Ring, Stats, DEFAULT_SPIN};
use crate::segment::{self, codec_id, CreateOptions, Location, Segment};

/// Default ring capacity used by [`Options::new`]: 1 MiB.
pub const DEFAULT_CAPACITY: usize = 1 << 20;

/// Settings for creating or opening a queue.
///
/// ```
/// use shmq::{Options, RawQueue};
/// # let name = format!("doc-opts-{}", std::process::id());
/// let opts = Options::new().capacity(1 << 16).mode(0o660).keep_on_drop(false);
/// let q = RawQueue::create_with(name.as_str(), &opts)?;
/// assert_eq!(q.capacity(), 1 << 16);
/// # Ok::<(), shmq::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct Options {
    capacity: usize,
    mode: u32,
    replace_stale: bool,
    keep_on_drop: bool,
    spin: Duration,
    check_type: bool,
    strict_type: bool,
    max_messages: u64,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            capacity: DEFAULT_CAPACITY,
            mode: 0o600,
            replace_stale: false,
            keep_on_drop: false,
            spin: DEFAULT_SPIN,
            check_type: true,
            strict_type: false,
            max_messages: 0,
        }
    }
}

impl Options {
    /// Defaults: 1 MiB ring, mode 0600, fail on an existing name, remove the name when the
    /// creating handle drops, 20 µs spin before sleeping, check the message type on open.
    pub fn new() -> Options {
        Options::default()
    }

    /// Ring capacity in bytes (rounded up to a multiple of 64; 64 B ..= 1 TiB). The largest
    /// message is `capacity - 8` bytes. Only used by `create`.
    pub fn capacity(mut self, bytes: usize) -> Options {
        self.capacity = bytes;
        self
    }

    /// Permission bits of a created segment (default `0o600`: only the owner's user may
    /// open it). Use e.g. `0o660` to let the owner's group attach. Not narrowed by umask.
    pub fn mode(mut self, mode: u32) -> Options {
        self.mode = mode;
        self
    }

    /// When `create` finds a stale segment of that name (one left by a crash: no process
    /// maps it any more and it was not created persistent; see [`QueueInfo::is_stale`]),
    /// remove it and create afresh instead of failing with [`Error::AlreadyExists`]. A
    /// segment that some process maps (in any PID namespace) is never replaced.
    pub fn replace_stale(mut self, yes: bool) -> Options {
        self.replace_stale = yes;
        self
    }

    /// Keep the name after the creating handle (and all its clones) drop, so that the
    /// queue outlives its creator. Remove it later with [`remove`] or `shmq rm`. Such a
    /// queue is recorded as persistent: its creator's death does not make it stale, so
    /// [`remove_stale`] and `shmq rm --stale` leave it alone.
    pub fn keep_on_drop(mut self, yes: bool) -> Options {
        self.keep_on_drop = yes;
        self
    }

    /// How long a blocked `put`/`get` spins before sleeping in the kernel (default 20 µs).
    /// Spinning cuts wake-up latency when producer and consumer run on different CPUs;
    /// `Duration::ZERO` sleeps at once.
    pub fn spin(mut self, spin: Duration) -> Options {
        self.spin = spin;
        self
    }

    /// Bound the queue to at most `n` queued messages, like Python's `Queue(maxsize=n)`
    /// (default 0: bounded only by the ring's bytes). A put that finds `n` messages
    /// queued waits (`put`), or fails with [`Error::Full`] (`try_put`) or
    /// [`Error::Timeout`] (`put_timeout`), exactly as when the ring has no room. Recorded in
    /// the header by `create`, so it binds every process; ignored by `open`.
    ///
    /// ```
    /// # let name = format!("doc-maxmsg-{}", std::process::id());
    /// let q: shmq::Queue<u8> = shmq::Queue::create_with(name.as_str(), &shmq::Options::new().max_messages(2))?;
    /// q.put(&1)?;
    /// q.put(&2)?;
    /// assert!(q.is_full());
    /// assert!(matches!(q.try_put(&3), Err(shmq::Error::Full)));
    /// q.get()?;
    /// q.try_put(&3)?;
    /// # Ok::<(), shmq::Error>(())
    /// ```
    pub fn max_messages(mut self, n: u64) -> Options {
        self.max_messages = n;
        self
    }

    /// The segment options these settings give, for an object of `codec`.
    pub(crate) fn create_options(
        &self,
        codec: u32,
        item_size: u32,
        type_name: &str,
    ) -> CreateOptions {
        CreateOptions {
            mode: self.mode,
            replace_stale: self.replace_stale,
            codec,
            item_size,
            type_name: type_name.to_string(),
            persistent: self.keep_on_drop,
            max_messages: self.max_messages,
        }
    }

    /// Whether a typed `open` compares the message type name recorded by the creator with
    /// its own (default `true`). The names are compared without their module paths, so the
    /// same `LogLine` struct defined in a producer binary and in a consumer binary matches
    /// (`producer::LogLine` / `consumer::LogLine`), while `LogLine` and `Event`, or `u32`
    /// and `u64`, do not. Turn the check off to open a queue as any type of the same codec.
    pub fn check_type(mut self, yes: bool) -> Options {
        self.check_type = yes;
        self
    }

    /// Compare the full type names, module paths included (default `false`): a queue of
    /// `producer::LogLine` then opens only as `producer::LogLine`. For programs that
    /// share one crate of message types and want two structs of the same name told apart.
    pub fn strict_type_check(mut self, yes: bool) -> Options {
        self.strict_type = yes;
        self
    }
}

impl From<&str> for Location {
    fn from(name: &str) -> Location {
        Location::Name(name.to_string())
    }
}

impl From<String> for Location {
    fn from(name: String) -> Location {
        Location::Name(name)
    }
}

impl From<&String> for Location {
    fn from(name: &String) -> Location {
        Location::Name(name.clone())
    }
}

impl From<&Path> for Location {
    fn from(path: &Path) -> Location {
        Location::Path(path.to_path_buf())
    }
}

impl From<std::path::PathBuf> for Location {
    fn from(path: std::path::PathBuf) -> Location {
        Location::Path(path)
    }
}

struct Inner {
    ring: Ring,
    name: String,
}

/// A queue of byte messages. See the [module docs](self).
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

/// Header record of the creating handle: codec, item size and type name.
struct Kind {
    codec: u32,
    item_size: u32,
    type_name: &'static str,
}

const RAW_KIND: Kind = Kind {
    codec: codec_id::RAW,
    item_size: 0,
    type_name: "",
};

impl RawQueue {
    /// Create a new queue named `name` with a ring of `capacity` bytes.
    ///
    /// Fails with [`Error::AlreadyExists`] if the name is taken, [`Error::InvalidName`] for
    /// a name outside the rules of [`segment::validate_name`], and
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

    fn create_kind(loc: Location, opts: &Options, kind: &Kind) -> Result<RawQueue> {
        let copts = opts.create_options(kind.codec, kind.item_size, kind.type_name);
        let mut seg = Segment::create(loc, opts.capacity, &copts)?;
        seg.set_remove_on_drop(!opts.keep_on_drop);
        Self::from_segment(seg, opts)
    }

    fn open_kind(loc: Location, opts: &Options, kind: Option<&Kind>) -> Result<RawQueue> {
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

    fn put_block(&self, msg: &[u8], block: Block) -> Result<()> {
        self.ring().put_batch(
            1,
            block,
            |_| Ok(msg.len()),
            |_, slot| slot.write(msg),
        )?;
        Ok(())
    }

    /// Append `msg`, waiting while the queue is full.
    ///
    /// Errors: [`Error::TooLarge`] at once if `msg` can never fit, [`Error::Closed`] if the
    /// queue is (or gets) closed while waiting.
    pub fn put(&self, msg: &[u8]) -> Result<()> {
        self.put_block(msg, Block::Until(None))
    }

    /// Append `msg` if there is room now, else [`Error::Full`] (also when another live
    /// process has held the producer lock for 50 ms (`TRY_LOCK_WAIT`),
    /// e.g. because it is stopped).
    pub fn try_put(&self, msg: &[u8]) -> Result<()> {
        self.put_block(msg, Block::No)
    }

    /// Append `msg`, waiting at most `timeout` for room ([`Error::Timeout`]).
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
            return Err(Error::TooLarge { size: m, max });
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

    fn get_block(&self, buf: &mut Vec<u8>, block: Block) -> Result<usize> {
        self.ring().get_batch(1, block, |rec| {
            buf.clear();
            rec.extend_vec(buf);
        })?;
        Ok(buf.len())
    }

    /// Take the oldest message into `buf` (replacing its contents; no allocation once `buf`
    /// is large enough) and return its length, waiting while the queue is empty.
    ///
    /// Errors: [`Error::Closed`] once the queue is closed and drained.
    pub fn get_into(&self, buf: &mut Vec<u8>) -> Result<usize> {
        self.get_block(buf, Block::Until(None))
    }

    /// Like [`get_into`](Self::get_into) but [`Error::Empty`] instead of waiting (also when
    /// another live process has held the consumer lock for
    /// 50 ms (`TRY_LOCK_WAIT`)).
    pub fn try_get_into(&self, buf: &mut Vec<u8>) -> Result<usize> {
        self.get_block(buf, Block::No)
    }

    /// Like [`get_into`](Self::get_into) but [`Error::Timeout`] after `timeout`.
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
    /// let mut batch = shmq::queue::Batch::new();
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

fn check_kind(seg: &Segment, want: &Kind, check_type: bool, strict: bool) -> Result<()> {
    let h = seg.header();
    let name = seg.location().display_name();
    let codec = h.id.codec.load(Ordering::Relaxed);
    if codec == codec_id::RAW {
        return Ok(());
    }
    let bad = |reason: String| Error::Incompatible {
        name: name.clone(),
        reason,
    };
    if codec != want.codec {
        return Err(bad(format!(
            "created for codec {} ({}), opened with codec {} ({})",
            codec,
            codec_name(codec),
            want.codec,
            codec_name(want.codec)
        )));
    }
    let item = h.id.item_size.load(Ordering::Relaxed);
    if item != want.item_size {
        return Err(bad(format!(
            "created for {item}-byte items, opened for {}-byte items",
            want.item_size
        )));
    }
    if check_type {
        let theirs = h.type_name();
        let ours = truncate_type_name(want.type_name);
        if !theirs.is_empty() && !crate::typename::same(&theirs, ours, strict) {
            let how = if strict {
                "Options::strict_type_check(true) compares module paths too"
            } else {
                "type names are compared without module paths; Options::check_type(false) skips this check"
            };
            return Err(bad(format!(
                "created for message type {theirs}, opened as {ours} ({how})"
            )));
        }
    }
    Ok(())
}

fn truncate_type_name(s: &str) -> &str {
    let mut end = s.len().min(64);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Human name of a codec id.
pub fn codec_name(id: u32) -> &'static str {
    match id {
        codec_id::RAW => "raw bytes",
        codec_id::POSTCARD => "postcard",
        codec_id::POD => "pod",
        other => crate::primitives::kind_name(other).unwrap_or("unknown"),
    }
}

// ---------------------------------------------------------------------------------------
// Codecs

pub use crate::ring::Slot;

/// How a typed queue turns messages into bytes and back.
///
/// shmq ships [`Postcard`] (serde, the default) and [`Pod`] (plain old data). A codec
/// encodes straight into ring memory through a [`Slot`].
pub trait Codec<T>: Send + Sync + 'static {
    /// Id recorded in the header (see [`segment::codec_id`]).
    const ID: u32;
    /// Fixed item size recorded in the header (0: variable).
    const ITEM_SIZE: u32 = 0;
    /// Exact encoded length of `msg`.
    fn encoded_len(msg: &T) -> Result<usize>;
    /// Write exactly `encoded_len(msg)` bytes into `out`.
    fn encode(msg: &T, out: &mut Slot<'_>) -> Result<()>;
    /// Decode one message from its bytes.
    fn decode(bytes: &[u8]) -> Result<T>;
}

/// The default codec: [postcard](https://docs.rs/postcard), a compact serde format.
///
/// For byte payloads, wrap them in `serde_bytes` (`#[serde(with = "serde_bytes")]` on a
/// `Vec<u8>` field, or `serde_bytes::ByteBuf`): a plain `Vec<u8>` goes through serde one
/// element at a time and is about 20× slower.
#[derive(Clone, Copy, Debug, Default)]
pub struct Postcard;

impl<T: Serialize + DeserializeOwned> Codec<T> for Postcard {
    const ID: u32 = codec_id::POSTCARD;

    fn encoded_len(msg: &T) -> Result<usize> {
        postcard::serialize_with_flavor::<T, postcard::ser_flavors::Size, usize>(
            msg,
            Default::default(),
        )
        .map_err(|e| Error::Codec(crate::encode::describe(msg, &e)))
    }

    fn encode(msg: &T, out: &mut Slot<'_>) -> Result<()> {
        postcard::serialize_with_flavor(msg, out)
            .map(|_| ())
            .map_err(|e| Error::Codec(crate::encode::describe(msg, &e)))
    }

    fn decode(bytes: &[u8]) -> Result<T> {
        let fail = |e: &dyn std::fmt::Display| {
            Error::Codec(format!(
                "cannot decode a {}-byte message as {}: {e}",
                bytes.len(),
                std::any::type_name::<T>()
            ))
        };
        // The whole message must be the value: trailing bytes mean it is not a `T` (a
        // message put by another writer), not a `T` followed by garbage.
        match postcard::take_from_bytes(bytes) {
            Ok((v, [])) => Ok(v),
            Ok((_, rest)) => Err(fail(&format_args!("{} bytes left over", rest.len()))),
            Err(e) => Err(fail(&e)),
        }
    }
}

/// The plain-old-data codec: a `bytemuck::Pod` value is copied byte for byte, with no
/// serialisation. Both ends must agree on the type (same layout, same endianness); the
/// item size is checked on `open`.
#[derive(Clone, Copy, Debug, Default)]
pub struct Pod;

impl<T: bytemuck::Pod + Send + Sync> Codec<T> for Pod {
    const ID: u32 = codec_id::POD;
    const ITEM_SIZE: u32 = std::mem::size_of::<T>() as u32;

    #[inline]
    fn encoded_len(_msg: &T) -> Result<usize> {
        Ok(std::mem::size_of::<T>())
    }

    #[inline]
    fn encode(msg: &T, out: &mut Slot<'_>) -> Result<()> {
        out.write(bytemuck::bytes_of(msg))
    }

    #[inline]
    fn decode(bytes: &[u8]) -> Result<T> {
        bytemuck::try_pod_read_unaligned(bytes).map_err(|_| {
            Error::Codec(format!(
                "a {}-byte message is not a {} ({} bytes)",
                bytes.len(),
                std::any::type_name::<T>(),
                std::mem::size_of::<T>()
            ))
        })
    }
}

thread_local! {
    /// Per-thread buffer that messages are copied into under the consumer lock and decoded
    /// from after it is released (so decoding never holds up other consumers).
    static SCRATCH: RefCell<(Vec<u8>, Vec<usize>)> = const { RefCell::new((Vec::new(), Vec::new())) };
}

/// Largest scratch buffer kept per thread between calls.
const SCRATCH_KEEP: usize = 16 << 20;

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

/// A typed queue: a [`RawQueue`] plus a [`Codec`]. Use the aliases [`Queue<T>`] (serde)
/// and [`PodQueue<T>`] (plain old data).
pub struct TypedQueue<T, C> {
    raw: RawQueue,
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

/// A queue of `bytemuck::Pod` values, copied without serialisation.
///
/// ```
/// # let name = format!("doc-pod-{}", std::process::id());
/// let q: shmq::PodQueue<[u64; 4]> = shmq::PodQueue::create(&name, 4096)?;
/// q.put(&[1, 2, 3, 4])?;
/// assert_eq!(q.get()?, [1, 2, 3, 4]);
/// # Ok::<(), shmq::Error>(())
/// ```
pub type PodQueue<T> = TypedQueue<T, Pod>;

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
        self.raw.ring().put_batch(
            1,
            block,
            |_| Ok(len),
            |_, slot| C::encode(msg, slot),
        )?;
        Ok(())
    }

    /// Append `msg`, waiting while the queue is full. [`Error::TooLarge`] at once if its
    /// encoding can never fit; [`Error::Closed`] if the queue is closed.
    pub fn put(&self, msg: &T) -> Result<()> {
        self.put_block(msg, Block::Until(None))
    }

    /// Append `msg` if there is room now, else [`Error::Full`] (also when another live
    /// process has held the producer lock for 50 ms (`TRY_LOCK_WAIT`),
    /// e.g. because it is stopped).
    pub fn try_put(&self, msg: &T) -> Result<()> {
        self.put_block(msg, Block::No)
    }

    /// Append `msg`, waiting at most `timeout` for room ([`Error::Timeout`]).
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
        with_scratch(|buf, _| {
            self.raw.get_block(buf, block)?;
            C::decode(buf)
        })
    }

    /// Take the oldest message, waiting while the queue is empty. [`Error::Closed`] once the
    /// queue is closed and drained; [`Error::Codec`] if the bytes do not decode (the
    /// undecodable message is consumed).
    pub fn get(&self) -> Result<T> {
        self.get_block(Block::Until(None))
    }

    /// Take the oldest message, or [`Error::Empty`] (also when the consumer lock stays busy
    /// for 50 ms (`TRY_LOCK_WAIT`)).
    pub fn try_get(&self) -> Result<T> {
        self.get_block(Block::No)
    }

    /// Take the oldest message, waiting at most `timeout` ([`Error::Timeout`]).
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

impl<T: bytemuck::Pod + Send + Sync> TypedQueue<T, Pod> {
    fn get_into_block(&self, out: &mut T, block: Block) -> Result<()> {
        let dst = bytemuck::bytes_of_mut(out);
        let mut got = None;
        self.raw.ring().get_batch(1, block, |rec| {
            if rec.len() == dst.len() {
                rec.copy_to(dst);
            }
            got = Some(rec.len());
        })?;
        match got {
            Some(len) if len == std::mem::size_of::<T>() => Ok(()),
            len => Err(Error::Codec(format!(
                "a {}-byte message is not a {} ({} bytes)",
                len.unwrap_or(0),
                std::any::type_name::<T>(),
                std::mem::size_of::<T>()
            ))),
        }
    }

    /// Take the oldest message straight into `out`, with no intermediate copy: the way to
    /// receive large `Pod` values (a `get` returns `T` by value, through the stack). Waits
    /// while the queue is empty.
    ///
    /// ```
    /// # let name = format!("doc-podinto-{}", std::process::id());
    /// let q: shmq::PodQueue<[u64; 512]> = shmq::PodQueue::create(&name, 1 << 16)?;
    /// let mut frame = Box::new([0u64; 512]);
    /// frame[7] = 42;
    /// q.put(&frame)?;
    /// let mut out = Box::new([0u64; 512]);
    /// q.get_into(&mut out)?;
    /// assert_eq!(out[7], 42);
    /// # Ok::<(), shmq::Error>(())
    /// ```
    pub fn get_into(&self, out: &mut T) -> Result<()> {
        self.get_into_block(out, Block::Until(None))
    }

    /// Like [`get_into`](Self::get_into) but [`Error::Empty`] instead of waiting.
    pub fn try_get_into(&self, out: &mut T) -> Result<()> {
        self.get_into_block(out, Block::No)
    }

    /// Like [`get_into`](Self::get_into) but [`Error::Timeout`] after `timeout`.
    pub fn get_into_timeout(&self, out: &mut T, timeout: Duration) -> Result<()> {
        self.get_into_block(out, Block::timeout(timeout))
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

// ---------------------------------------------------------------------------------------
// Names on the machine

/// Remove the named queue's segment. Processes attached to it keep working; new `open`s
/// fail with [`Error::NotFound`].
///
/// ```
/// # let name = format!("doc-rm-{}", std::process::id());
/// let q = shmq::RawQueue::create_with(name.as_str(), &shmq::Options::new().keep_on_drop(true))?;
/// drop(q);
/// shmq::remove(&name)?;
/// assert!(matches!(shmq::remove(&name), Err(shmq::Error::NotFound(_))));
/// # Ok::<(), shmq::Error>(())
/// ```
pub fn remove(name: &str) -> Result<()> {
    segment::remove(name)
}

/// What [`list`] and [`inspect`] found in one `/dev/shm/shmq.*` object.
#[derive(Clone, Debug)]
pub enum QueueState {
    /// A readable shmq queue, with its state and counters.
    Ready(Box<Stats>),
    /// The header was never published: its creator is still initialising it, or died
    /// doing so.
    Uninit {
        /// Creator pid recorded in the header, if it got that far.
        creator: Option<u32>,
        /// Whether that creator is still running, as seen from this PID namespace
        /// (informational: staleness does not depend on it).
        creator_alive: bool,
    },
    /// Not readable as a queue: another user's, a foreign object, another layout version…
    Unreadable(String),
}

/// One shmq segment found by [`list`] or [`inspect`].
#[derive(Clone, Debug)]
pub struct QueueInfo {
    /// Queue name.
    pub name: String,
    /// Size of the object in bytes.
    pub size: u64,
    /// Time since the object was last modified.
    pub age: Duration,
    /// Pids that have it mapped now, from `/proc/*/maps` (informational: processes of
    /// other users may be invisible, and those of other PID namespaces always are; see
    /// [`QueueInfo::mapped`] for what staleness is decided on).
    pub attached: Vec<u32>,
    /// Some process (in any PID namespace; this one's other handles included) maps the
    /// object: its attach marker is held (see `MAPPED_BYTE` in docs/design.md). `false` when the
    /// object could not be opened to ask.
    pub mapped: bool,
    /// Header state.
    pub state: QueueState,
    /// The object examined (device and inode), if it could be opened.
    object: Option<segment::ObjectId>,
}

impl QueueInfo {
    /// The queue's state and counters, if its header is readable.
    pub fn stats(&self) -> Option<&Stats> {
        match &self.state {
            QueueState::Ready(s) => Some(s),
            _ => None,
        }
    }

    /// The creator pid recorded in the header, if any.
    pub fn creator(&self) -> Option<u32> {
        match &self.state {
            QueueState::Ready(s) => Some(s.creator_pid),
            QueueState::Uninit { creator, .. } => *creator,
            QueueState::Unreadable(_) => None,
        }
    }

    /// Stale: no process maps it (its attach marker is free: [`QueueInfo::mapped`], right
    /// across PID namespaces), and either it was not created to outlive its creator (see
    /// [`Options::keep_on_drop`]), or it was abandoned while being created
    /// (abandoned while being created). No pid is consulted. Unreadable objects are never
    /// stale.
    pub fn is_stale(&self) -> bool {
        if self.mapped {
            return false;
        }
        match &self.state {
            QueueState::Ready(s) => !s.persistent,
            // Its creator wrote the header (so it took the marker first, and is gone), or
            // it is old enough that no creator can still be sizing it.
            QueueState::Uninit { creator, .. } => {
                creator.is_some() || self.age > segment::UNINIT_GRACE
            }
            QueueState::Unreadable(_) => false,
        }
    }

    /// Remove the name if it still refers to the object this info describes (same device
    /// and inode as when [`list`] or [`inspect`] examined it): `Ok(true)` if removed,
    /// `Ok(false)` if the name now holds another object (left alone, e.g. a queue created
    /// after the scan) or the object could not be opened when examined,
    /// [`Error::NotFound`] if the name is gone. This is what [`remove_stale`] does for each
    /// stale queue; the caller judges staleness (and re-checks [`segment::is_attached`] if
    /// time has passed). A small window remains between the check and the unlink (see
    /// `unlink_if_same`).
    pub fn remove_if_unchanged(&self) -> Result<bool> {
        match self.object {
            Some(object) => segment::unlink_if_same(&Location::Name(self.name.clone()), object),
            None => Ok(false),
        }
    }

    /// Why the header could not be read, in words (`None` for a readable queue).
    pub fn problem(&self) -> Option<String> {
        match &self.state {
            QueueState::Ready(_) => None,
            QueueState::Uninit {
                creator: Some(pid), ..
            } if self.mapped => Some(format!("being created by pid {pid} (not initialised yet)")),
            QueueState::Uninit {
                creator: Some(pid), ..
            } => Some(format!(
                "never initialised: creator pid {pid} died while creating it"
            )),
            QueueState::Uninit { creator: None, .. } => Some(format!(
                "never initialised, no creator recorded ({} s old{})",
                self.age.as_secs(),
                if self.age > segment::UNINIT_GRACE {
                    ""
                } else {
                    "; stale once older than 30 s"
                }
            )),
            QueueState::Unreadable(e) => Some(e.clone()),
        }
    }
}

fn inspect_with(name: &str, attached: Vec<u32>) -> Result<QueueInfo> {
    let mut mapped = false;
    let (state, size, age, object) = match segment::peek(name) {
        Err(Error::NotFound(n)) => return Err(Error::NotFound(n)),
        // Not a regular file (a FIFO, a directory, a symlink...): not a queue at all.
        Err(e @ Error::Incompatible { .. }) => return Err(e),
        Err(Error::Io(e)) if e.kind() == std::io::ErrorKind::PermissionDenied => (
            QueueState::Unreadable(format!(
                "permission denied (another user's queue? run as its owner or root): {e}"
            )),
            0,
            Duration::ZERO,
            None,
        ),
        Err(e) => (
            QueueState::Unreadable(e.to_string()),
            0,
            Duration::ZERO,
            None,
        ),
        Ok(p) if p.foreign => (
            // (`mapped` stays false: a foreign object is never stale anyway.)
            QueueState::Unreadable("not a shmq segment (bad magic)".into()),
            p.size,
            p.age,
            Some(p.object),
        ),
        Ok(p) if !p.initialised => {
            mapped = p.attached;
            (
                QueueState::Uninit {
                    creator: p.creator_pid,
                    creator_alive: p.creator_pid.is_some_and(crate::sync::tid_alive),
                },
                p.size,
                p.age,
                Some(p.object),
            )
        }
        // Initialised: opening does not wait.
        Ok(p) => match Segment::open(Location::Name(name.to_string())) {
            // The state describes the object opened (the name may have moved on since the
            // peek), so that is the object a later removal may remove.
            Ok(seg) => {
                let object = seg.object_id();
                // Asked before the ring takes the mapped descriptor.
                mapped = seg.attached_by_others();
                match Ring::new(seg) {
                    Ok(ring) => (
                        QueueState::Ready(Box::new(ring.stats())),
                        p.size,
                        p.age,
                        Some(object),
                    ),
                    Err(e) => (
                        QueueState::Unreadable(e.to_string()),
                        p.size,
                        p.age,
                        Some(object),
                    ),
                }
            }
            Err(Error::NotFound(n)) => return Err(Error::NotFound(n)),
            Err(e) => {
                mapped = p.attached;
                (
                    QueueState::Unreadable(e.to_string()),
                    p.size,
                    p.age,
                    Some(p.object),
                )
            }
        },
    };
    Ok(QueueInfo {
        name: name.to_string(),
        size,
        age,
        attached,
        mapped,
        state,
        object,
    })
}

/// Look at one named queue without waiting for a creator still at work on it
/// ([`Error::NotFound`] if there is none). Never blocks on a foreign object: a FIFO,
/// socket, directory or symlink under the name is [`Error::Incompatible`] ("not a regular
/// file (a FIFO)"); a regular file that is not a shmq segment is
/// [`QueueState::Unreadable`].
///
/// ```
/// # let name = format!("doc-inspect-{}", std::process::id());
/// let q = shmq::RawQueue::create(&name, 4096)?;
/// q.put(b"x")?;
/// let info = shmq::queue::inspect(&name)?;
/// assert_eq!(info.stats().unwrap().len, 1);
/// assert!(info.mapped);
/// assert!(info.attached.contains(&std::process::id()));
/// assert!(!info.is_stale());
/// # Ok::<(), shmq::Error>(())
/// ```
pub fn inspect(name: &str) -> Result<QueueInfo> {
    segment::validate_name(name)?;
    inspect_with(name, segment::mapped_by(name))
}

/// Every shmq segment in `/dev/shm`, sorted by name. Fast even on a machine littered with
/// crashed programs' segments: headers are peeked with `pread` (no waiting for creators)
/// and the process maps are read once. Never blocks on a foreign object: a FIFO, socket,
/// directory or symlink under a `shmq.` name is listed as
/// [`QueueState::Unreadable`] ("not a regular file (a FIFO)") and is never stale.
///
/// ```
/// # let name = format!("doc-ls-{}", std::process::id());
/// let _q = shmq::RawQueue::create(&name, 4096)?;
/// assert!(shmq::list()?.iter().any(|i| i.name == name));
/// # Ok::<(), shmq::Error>(())
/// ```
pub fn list() -> Result<Vec<QueueInfo>> {
    let mut attached = segment::mapped_all();
    let mut out = Vec::new();
    for name in segment::list_names()? {
        let pids = attached.remove(&name).unwrap_or_default();
        match inspect_with(&name, pids.clone()) {
            Ok(info) => out.push(info),
            Err(Error::NotFound(_)) => {} // removed meanwhile
            Err(e @ Error::Incompatible { .. }) => out.push(QueueInfo {
                size: std::fs::symlink_metadata(segment::shm_path(&name))
                    .map(|m| m.len())
                    .unwrap_or(0),
                name,
                age: Duration::ZERO,
                attached: pids,
                mapped: false,
                state: QueueState::Unreadable(e.to_string()),
                object: None,
            }),
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

/// Remove every stale segment ([`QueueInfo::is_stale`]); returns the names removed. A name
/// is removed only if it still refers to the object found stale
/// ([`QueueInfo::remove_if_unchanged`]); foreign objects are never stale, so never removed.
///
/// ```
/// let removed = shmq::remove_stale()?;
/// println!("removed {} stale queues", removed.len());
/// # Ok::<(), shmq::Error>(())
/// ```
pub fn remove_stale() -> Result<Vec<String>> {
    let mut removed = Vec::new();
    for info in list()? {
        // Re-check the attach marker right before removing: a process may have attached
        // since (the object examined, or one created since under the name, which
        // `remove_if_unchanged` leaves alone anyway).
        if info.is_stale() && !segment::is_attached(&info.name) {
            match info.remove_if_unchanged() {
                Ok(true) => removed.push(info.name),
                Ok(false) | Err(Error::NotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uniq(tag: &str) -> String {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        format!(
            "unit-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        )
    }

    #[test]
    fn typed_roundtrip_and_type_check() {
        let n = uniq("typed");
        let q: Queue<(String, u32)> = Queue::create(&n, 4096).unwrap();
        q.put(&("a".into(), 1)).unwrap();
        let o: Queue<(String, u32)> = Queue::open(&n).unwrap();
        assert_eq!(o.get().unwrap(), ("a".to_string(), 1));
        assert!(matches!(
            PodQueue::<u64>::open(&n),
            Err(Error::Incompatible { .. })
        ));
        let lax: Queue<Vec<u8>> =
            Queue::open_with(n.as_str(), &Options::new().check_type(false)).unwrap();
        assert_eq!(lax.len(), 0);
    }

    #[test]
    fn pod_get_into_copies_straight_and_checks_length() {
        let n = uniq("podinto");
        let q: PodQueue<[u32; 4]> = PodQueue::create(&n, 4096).unwrap();
        let mut out = [0u32; 4];
        assert!(matches!(q.try_get_into(&mut out), Err(Error::Empty)));
        q.put(&[1, 2, 3, 4]).unwrap();
        q.get_into(&mut out).unwrap();
        assert_eq!(out, [1, 2, 3, 4]);
        // A record of the wrong size (written through the raw view) is a codec error and
        // leaves `out` untouched.
        q.raw().put(&[9u8; 3]).unwrap();
        assert!(matches!(q.get_into(&mut out), Err(Error::Codec(_))));
        assert_eq!(out, [1, 2, 3, 4]);
    }

    #[test]
    fn pod_size_checked() {
        let n = uniq("pod");
        let _q: PodQueue<u64> = PodQueue::create(&n, 4096).unwrap();
        let r = TypedQueue::<u32, Pod>::open_with(n.as_str(), &Options::new().check_type(false));
        assert!(matches!(r, Err(Error::Incompatible { .. })));
    }

    #[test]
    fn too_large_is_immediate() {
        let n = uniq("big");
        let q = RawQueue::create(&n, 128).unwrap();
        let e = q.put(&[0u8; 121]).unwrap_err();
        assert!(
            matches!(
                e,
                Error::TooLarge {
                    size: 121,
                    max: 120
                }
            ),
            "{e}"
        );
        q.put(&[0u8; 120]).unwrap();
    }

    #[test]
    fn handle_serializes_as_location() {
        let n = uniq("ser");
        let q: Queue<u8> = Queue::create(&n, 4096).unwrap();
        let bytes = postcard::to_allocvec(&q).unwrap();
        let q2: Queue<u8> = postcard::from_bytes(&bytes).unwrap();
        q.put(&9).unwrap();
        assert_eq!(q2.get().unwrap(), 9);
    }

    #[test]
    fn codec_error_on_garbage() {
        let n = uniq("garbage");
        let q: Queue<String> = Queue::create(&n, 4096).unwrap();
        q.raw().put(&[0xff, 0xff, 0xff]).unwrap();
        assert!(matches!(q.get(), Err(Error::Codec(_))));
        q.put(&"fine".to_string()).unwrap();
        assert_eq!(q.get().unwrap(), "fine");
    }
}
