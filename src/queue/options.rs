//! [`Options`]: the settings for creating or opening a queue (and the [`Location`]
//! conversions that let `create_with` / `open_with` take a name or a path).

use std::path::Path;
use std::time::Duration;

use crate::ring::DEFAULT_SPIN;
use crate::segment::{CreateOptions, Location};

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
    pub(super) capacity: usize,
    mode: u32,
    replace_stale: bool,
    pub(super) keep_on_drop: bool,
    pub(super) spin: Duration,
    pub(super) check_type: bool,
    pub(super) strict_type: bool,
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
    /// maps it any more and it was not created persistent; see [`QueueInfo::is_stale`](crate::QueueInfo::is_stale)),
    /// remove it and create afresh instead of failing with
    /// [`Error::AlreadyExists`](crate::Error::AlreadyExists). A
    /// segment that some process maps (in any PID namespace) is never replaced.
    pub fn replace_stale(mut self, yes: bool) -> Options {
        self.replace_stale = yes;
        self
    }

    /// Keep the name after the creating handle (and all its clones) drop, so that the
    /// queue outlives its creator. Remove it later with [`remove`](crate::remove) or `shmq rm`. Such a
    /// queue is recorded as persistent: its creator's death does not make it stale, so
    /// [`remove_stale`](crate::remove_stale) and `shmq rm --stale` leave it alone.
    pub fn keep_on_drop(mut self, yes: bool) -> Options {
        self.keep_on_drop = yes;
        self
    }

    /// How long a blocked `put`/`get` spins before sleeping in the kernel (default 20 µs).
    /// Spinning cuts wake-up latency when producer and consumer run on different CPUs;
    /// `Duration::ZERO` sleeps at once. A consumer that finds the queue empty first yields
    /// its CPU once (`sched_yield`) and reads no shared memory for 300 ns, so that a
    /// producer in the middle of a stream is not slowed by its polls ("temporal slipping";
    /// `docs/design.md`, "The consumer's slip").
    pub fn spin(mut self, spin: Duration) -> Options {
        self.spin = spin;
        self
    }

    /// Bound the queue to at most `n` queued messages, like Python's `Queue(maxsize=n)`
    /// (default 0: bounded only by the ring's bytes). A put that finds `n` messages
    /// queued waits (`put`), or fails with [`Error::Full`](crate::Error::Full) (`try_put`) or
    /// [`Error::Timeout`](crate::Error::Timeout) (`put_timeout`), exactly as when the ring has no room. Recorded in
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
