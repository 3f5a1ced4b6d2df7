//! What a bridge must remember or re-check about the things it is bound to.
//!
//! * [`State`]: the in bridge's memory of what it has put: the JetStream stream sequence of
//!   the last message put into the local queue, in a small memory-mapped file (by default in
//!   /dev/shm, beside the queue, so it lives as long as the queue's own contents: a process
//!   death keeps both, a reboot loses both). The file also records which queue (its uid)
//!   and which incarnation of the stream (its name and creation time) the number belongs
//!   to; a mismatch starts it over at 0. While a bridge uses the file it holds an exclusive
//!   `flock` on it: a second bridge on the same file gets [`Error::Config`] instead of
//!   sharing (and clobbering) the number.
//! * [`QueueWatch`]: whether the queue object at the bridge's queue name is still the one it
//!   has open (a `stat` of `/dev/shm/shmq.<name>`, compared by device and inode), so a queue
//!   removed and created again under a running bridge is noticed.
//!
//! A message redelivered by JetStream (its ack was lost with a killed bridge or a dropped
//! connection) whose sequence is not above the recorded one is acknowledged and not put
//! again. The record is one 8-byte store right after the put returns; only a death between
//! the put and that store (a few instructions) can duplicate a message, and then one.

use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use memmap2::MmapMut;
use rustix::fs::{FlockOperation, Mode, OFlags};
use shmq::RawQueue;

use crate::error::{Error, Result};

const MAGIC: u64 = 0x5348_4d51_4252_4931; // "SHMQBRI1"
const LEN: usize = 64;

/// Word offsets in the file.
const W_MAGIC: usize = 0;
const W_QUEUE: usize = 1;
const W_STREAM: usize = 2;
const W_LAST: usize = 3;
/// Pid of the bridge holding the lock (for the error a second bridge gets).
const W_PID: usize = 4;

pub(crate) struct State {
    map: MmapMut,
    /// Holds the `flock` for as long as the state lives.
    _file: File,
    path: PathBuf,
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("State")
            .field("path", &self.path)
            .field("last", &self.last())
            .finish()
    }
}

fn clean(s: &str) -> String {
    s.replace(['/', '\\'], "_")
}

/// The default place: `/dev/shm/shmq-bridge.<queue>.<stream>.<durable>.in` (`/` in any
/// part becomes `_`). The durable's default name already holds the subject, so two in
/// bridges that differ in queue, stream or subject never share a file by default.
pub(crate) fn default_path(queue: &str, stream: &str, durable: &str) -> PathBuf {
    PathBuf::from(format!(
        "/dev/shm/shmq-bridge.{}.{}.{}.in",
        clean(queue),
        clean(stream),
        clean(durable)
    ))
}

impl State {
    /// Open or create the file at `path` (mode 0600, not through a symbolic link, owned by
    /// this user) and lock it (`flock`, exclusive, not waiting). When it was written for
    /// another queue (`queue` uid) or another incarnation of the stream (`stream` id), it
    /// starts over at 0. Errors ([`Error::Config`]): the file cannot be opened, is not
    /// ours, or another bridge holds it.
    pub(crate) fn open(path: &Path, queue: u64, stream: u64) -> Result<State> {
        let err =
            |what: String| Error::Config(format!("bridge state file {}: {what}", path.display()));
        let io = |e: std::io::Error| err(e.to_string());
        let fd = rustix::fs::open(
            path,
            OFlags::RDWR | OFlags::CREATE | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::RUSR | Mode::WUSR,
        )
        .map_err(|e| {
            if e == rustix::io::Errno::LOOP {
                err(
                    "is a symbolic link, refused (a link could send the bridge's writes to \
                     another file); remove the link or give --state a regular file's path"
                        .into(),
                )
            } else {
                io(e.into())
            }
        })?;
        let f = File::from(fd);
        let meta = f.metadata().map_err(io)?;
        if !meta.is_file() || meta.uid() != rustix::process::geteuid().as_raw() {
            return Err(err(format!(
                "not a regular file owned by this user (uid {}); remove it or choose another \
                 --state",
                meta.uid()
            )));
        }
        if let Err(e) = rustix::fs::flock(&f, FlockOperation::NonBlockingLockExclusive) {
            let holder = Self::peek_pid(&f);
            return Err(err(format!(
                "in use by another in bridge{} ({e}): run one in bridge per queue, stream and \
                 durable consumer, or give this one its own --durable (or --state)",
                holder.map(|p| format!(" (pid {p})")).unwrap_or_default()
            )));
        }
        if meta.mode() & 0o077 != 0 {
            rustix::fs::fchmod(&f, Mode::RUSR | Mode::WUSR).map_err(|e| io(e.into()))?;
        }
        if meta.len() < LEN as u64 {
            f.set_len(LEN as u64).map_err(io)?;
        }
        // SAFETY: the file is this bridge's own (locked above: a second bridge cannot open
        // it through `State`); every access below goes through atomics on the mapping, so
        // any other writer could give a wrong number, never undefined behaviour.
        let map = unsafe { MmapMut::map_mut(&f) }.map_err(io)?;
        let s = State {
            map,
            _file: f,
            path: path.to_path_buf(),
        };
        if s.word(W_MAGIC).load(Ordering::Acquire) != MAGIC
            || s.word(W_QUEUE).load(Ordering::Relaxed) != queue
            || s.word(W_STREAM).load(Ordering::Relaxed) != stream
        {
            s.reset(queue, stream);
        }
        s.word(W_PID)
            .store(u64::from(std::process::id()), Ordering::Relaxed);
        Ok(s)
    }

    /// The pid a locked state file names (best effort, for the error message).
    fn peek_pid(f: &File) -> Option<u64> {
        use std::os::unix::fs::FileExt;
        let mut b = [0u8; 8];
        f.read_exact_at(&mut b, (W_PID * 8) as u64).ok()?;
        Some(u64::from_ne_bytes(b)).filter(|&p| p != 0)
    }

    fn word(&self, i: usize) -> &AtomicU64 {
        assert!(i < LEN / 8);
        // SAFETY: the mapping is LEN bytes, page aligned, and lives as long as `self`;
        // word `i` is in bounds (asserted) and 8-aligned. Shared memory is only touched
        // through this atomic.
        unsafe { &*(self.map.as_ptr().add(i * 8) as *const AtomicU64) }
    }

    /// Start over at 0 for the queue with uid `queue` and the stream incarnation `stream`.
    pub(crate) fn reset(&self, queue: u64, stream: u64) {
        self.word(W_MAGIC).store(0, Ordering::Release);
        self.word(W_QUEUE).store(queue, Ordering::Relaxed);
        self.word(W_STREAM).store(stream, Ordering::Relaxed);
        self.word(W_LAST).store(0, Ordering::Relaxed);
        self.word(W_MAGIC).store(MAGIC, Ordering::Release);
    }

    /// The record now belongs to the queue with uid `queue` (it replaced the one at the
    /// name under a running bridge; what was put into that one went with it).
    pub(crate) fn set_queue(&self, queue: u64) {
        self.word(W_QUEUE).store(queue, Ordering::Relaxed);
    }

    /// The stream incarnation the record belongs to.
    pub(crate) fn stream(&self) -> u64 {
        self.word(W_STREAM).load(Ordering::Relaxed)
    }

    /// Stream sequence of the last message put into the queue (0: none yet).
    pub(crate) fn last(&self) -> u64 {
        self.word(W_LAST).load(Ordering::Acquire)
    }

    /// Record that the message with stream sequence `seq` is in the queue.
    pub(crate) fn set_last(&self, seq: u64) {
        self.word(W_LAST).store(seq, Ordering::Release);
    }

    /// Remove the file (its queue is gone: the record means nothing any more). The lock
    /// goes with the state when it drops.
    pub(crate) fn remove(&self) {
        if let Err(e) = std::fs::remove_file(&self.path) {
            tracing::debug!("cannot remove {}: {e}", self.path.display());
        }
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}

/// Identity of a stream incarnation: a hash of its name and creation time (a stream deleted
/// and created again, or created anew by a server that lost its store, gets a new one).
pub(crate) fn stream_id(info: &async_nats::jetstream::stream::Info) -> u64 {
    // FNV-1a, stable across builds: the recorded id must match after the bridge is rebuilt.
    use std::hash::Hasher;
    let mut h = fnv::FnvHasher::default();
    h.write(info.config.name.as_bytes());
    h.write(&info.created.unix_timestamp_nanos().to_le_bytes());
    h.finish()
}

/// What is at the bridge's queue name now.
pub(crate) enum AtName {
    /// The queue the bridge has open.
    Same,
    /// Another queue (the name was removed and created again): this one, opened.
    Replaced(RawQueue),
    /// Nothing (removed); the error from opening the name.
    Gone(shmq::Error),
}

/// Watches whether the object at a queue's name is still the queue a bridge has open:
/// a `stat` compared by (device, inode). The open queue keeps its object alive, so no
/// other object can carry the same pair meanwhile.
#[derive(Debug)]
pub(crate) struct QueueWatch {
    name: String,
    create: Option<usize>,
    path: PathBuf,
    id: (u64, u64),
}

fn object_id(path: &Path) -> std::io::Result<(u64, u64)> {
    let m = std::fs::metadata(path)?;
    Ok((m.dev(), m.ino()))
}

impl QueueWatch {
    /// Open the queue `name` (creating it with `create` bytes if missing and set) and watch
    /// its name.
    pub(crate) fn open(name: &str, create: Option<usize>) -> Result<(RawQueue, QueueWatch)> {
        let q = crate::open_queue(name, create)?;
        let path = q.location().object_path();
        let mut w = QueueWatch {
            name: name.to_string(),
            create,
            path,
            id: (0, 0),
        };
        let q = w.bind(q)?;
        Ok((q, w))
    }

    /// Record the (device, inode) of `q`'s object: `stat` the name between two opens with
    /// the same uid (then the name held `q` all along), else take the newer queue and again.
    fn bind(&mut self, mut q: RawQueue) -> Result<RawQueue> {
        loop {
            let id =
                object_id(&self.path).map_err(|e| Error::queue(&self.name, shmq::Error::Io(e)));
            let again = crate::open_queue(&self.name, None)?;
            if again.uid() == q.uid() {
                self.id = id?;
                return Ok(q);
            }
            q = again;
        }
    }

    /// What is at the name now, compared with `q` (the queue the bridge has open). Cheap
    /// (one `stat`) while the name holds `q`. A removed name is recreated when the bridge
    /// was told to create its queue.
    pub(crate) fn check(&mut self, q: &RawQueue) -> Result<AtName> {
        if object_id(&self.path).ok() == Some(self.id) {
            return Ok(AtName::Same);
        }
        // shmq's own error, not `open_queue`'s: that one turns `NotFound` into
        // `Error::QueueMissing` (for the start), which a match on `Error::Queue` missed, so
        // a removed queue ended the bridge at once with `QueueMissing` instead of the grace
        // period and the `Queue`/`NotFound` stop (a merge of two branches, session 3).
        let now = match crate::open_queue_raw(&self.name, self.create) {
            Ok(n) => n,
            Err(e @ shmq::Error::NotFound(_)) => return Ok(AtName::Gone(e)),
            Err(e) => return Err(Error::queue(&self.name, e)),
        };
        let now = match self.bind(now) {
            // Removed again between the two opens of `bind`.
            Err(Error::QueueMissing { .. }) => {
                return Ok(AtName::Gone(shmq::Error::NotFound(self.name.clone())))
            }
            r => r?,
        };
        if now.uid() == q.uid() {
            return Ok(AtName::Same);
        }
        Ok(AtName::Replaced(now))
    }
}
