//! Which queues a JetStream bridge (crate `shmq-bridge`) is running on, so that `shmq ls`
//! and `shmq stat` can show it: one home for the fact, free of tokio and NATS.
//!
//! A running bridge [`register`]s with a *mark*: a small file
//! `/dev/shm/shmq-bridge.<16 hex digits>.mark` (mode 0600) that it keeps open, with an
//! open-file-description write lock on its first byte (`crate::sys::ofd`, the same kind of
//! lock as the segments' attach marker), for as long as the [`Mark`] lives. The kernel drops
//! that lock when the last descriptor closes, however the bridge ends: a killed bridge is
//! never shown as live. Readers ([`list`], [`of_queue`]) ask the lock with `F_OFD_GETLK`,
//! which takes nothing and needs only a read-only descriptor.
//!
//! The mark records the direction, the local queue ([`Location`]) and the identity of the
//! object bridged (its `uid` and device + inode: a queue removed and created again under the
//! same name is another object, and is not shown as bridged), the server, stream, subject and
//! durable consumer, the bridge's pid and start time, and [`MarkCounters`] the bridge
//! rewrites now and then ([`Mark::update`], one `pwrite` of 128 bytes).
//!
//! Layout (little-endian): bytes 0..8 the magic `SHMQMRK1`, 8..12 the length `n` of the
//! record, 16..144 the counters (16 words), 256..256+n the record (postcard). A file is at
//! most [`MAX_MARK_SIZE`] bytes.
//!
//! Readers treat every mark as untrusted input: a file that is too large, not a regular
//! file, not readable, without the magic, whose record does not decode, or whose text holds
//! control characters or is too long is skipped, never a panic. Counters may be read while
//! the bridge rewrites them: they are informational (a reader can see a mix of two updates).
//!
//! Life cycle: a mark is written under a temporary name (`….mark.tmp`), locked, then renamed
//! to its final name, so every `.mark` a reader sees is complete and locked unless its bridge
//! is gone. Dropping the [`Mark`] removes its file; a killed bridge's file stays until the
//! next [`register`] on the machine sweeps it (every unlocked mark of ours is removed then).
//! A descriptor inherited by a `fork`ed child that did not `exec` keeps the lock (the file is
//! opened `O_CLOEXEC`, so an `exec` drops it).

use std::collections::hash_map::RandomState;
use std::fs::{File, OpenOptions};
use std::hash::BuildHasher;
use std::io::Read;
use std::os::fd::AsFd;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::queue::RawQueue;
use crate::segment::{Location, SHM_DIR};
use crate::sys::ofd;

/// File name prefix of a mark in `/dev/shm`.
pub const MARK_PREFIX: &str = "shmq-bridge.";
/// File name suffix of a mark.
pub const MARK_SUFFIX: &str = ".mark";
/// Largest mark file read (bytes); larger files are skipped.
pub const MAX_MARK_SIZE: usize = 8192;
/// Longest text field accepted in a mark (bytes).
pub const MAX_TEXT: usize = 1024;

const MAGIC: &[u8; 8] = b"SHMQMRK1";
const LEN_OFF: usize = 8;
const COUNTERS_OFF: usize = 16;
const COUNTER_WORDS: usize = 16;
const RECORD_OFF: usize = 256;
/// A temporary file of a registration killed before its rename is swept once this old.
const TMP_GRACE: Duration = Duration::from_secs(60);

/// Which way a bridge moves messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Direction {
    /// The local queue → a JetStream subject.
    Out,
    /// A JetStream consumer → the local queue.
    In,
}

impl Direction {
    /// `"out"` or `"in"`.
    pub fn label(self) -> &'static str {
        match self {
            Direction::Out => "out",
            Direction::In => "in",
        }
    }
}

/// What a bridge says about itself when it registers (the text fields are shown by
/// `shmq stat`: leave credentials out of `server`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BridgeInfo {
    /// Which way it moves messages.
    pub direction: Direction,
    /// The NATS server URL(s).
    pub server: String,
    /// The JetStream stream.
    pub stream: String,
    /// The subject published to (out) or consumed (in).
    pub subject: String,
    /// The durable consumer (in).
    pub durable: Option<String>,
}

/// A bridge's counters as last written into its mark ([`Mark::update`]); the meanings are
/// those of `shmq_bridge::Progress`. Times are Unix seconds, 0 for never.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct MarkCounters {
    /// Messages moved (out: acknowledged by JetStream and committed; in: put and acked).
    pub messages: u64,
    /// Payload bytes of those messages.
    pub bytes: u64,
    /// Duplicates recognised (out: by JetStream's dedupe; in: redeliveries not put again).
    pub duplicates: u64,
    /// Messages skipped as malformed or too large (in).
    pub malformed: u64,
    /// Transient failures retried.
    pub retries: u64,
    /// Times the NATS connection was lost.
    pub disconnects: u64,
    /// Messages waiting (out: in the local queue; in: in the JetStream consumer).
    pub lag: u64,
    /// Whether the NATS connection was up at the last update.
    pub connected: bool,
    /// When `messages` last grew (as seen at an update).
    pub last_forward_unix: u64,
    /// When the counters were last written.
    pub updated_unix: u64,
}

impl MarkCounters {
    fn to_words(self) -> [u64; COUNTER_WORDS] {
        let mut w = [0u64; COUNTER_WORDS];
        w[..10].copy_from_slice(&[
            self.messages,
            self.bytes,
            self.duplicates,
            self.malformed,
            self.retries,
            self.disconnects,
            self.lag,
            self.connected as u64,
            self.last_forward_unix,
            self.updated_unix,
        ]);
        w
    }

    fn from_words(w: &[u64; COUNTER_WORDS]) -> MarkCounters {
        MarkCounters {
            messages: w[0],
            bytes: w[1],
            duplicates: w[2],
            malformed: w[3],
            retries: w[4],
            disconnects: w[5],
            lag: w[6],
            connected: w[7] != 0,
            last_forward_unix: w[8],
            updated_unix: w[9],
        }
    }

    fn encode(self) -> [u8; COUNTER_WORDS * 8] {
        let mut b = [0u8; COUNTER_WORDS * 8];
        for (i, w) in self.to_words().iter().enumerate() {
            b[i * 8..i * 8 + 8].copy_from_slice(&w.to_le_bytes());
        }
        b
    }
}

/// The record a mark holds besides its counters.
#[derive(Serialize, Deserialize)]
struct Record {
    info: BridgeInfo,
    queue: Location,
    queue_uid: u64,
    dev: u64,
    ino: u64,
    pid: u32,
    started_unix: u64,
}

/// A live bridge, as read back from its mark by [`list`].
#[derive(Clone, Debug)]
pub struct Bridged {
    /// What the bridge said about itself.
    pub info: BridgeInfo,
    /// The local queue.
    pub queue: Location,
    /// The bridged queue's [`RawQueue::uid`].
    pub queue_uid: u64,
    /// Device and inode of the bridged queue's object.
    pub object: (u64, u64),
    /// The bridge's pid (in its own PID namespace).
    pub pid: u32,
    /// When it registered (Unix seconds).
    pub started_unix: u64,
    /// Its counters as last written.
    pub counters: MarkCounters,
    /// The mark file.
    pub mark: PathBuf,
}

impl Bridged {
    /// Whether the object now at the bridged queue's place is the one the bridge attached
    /// to (same device and inode). `false` once the queue was removed, or removed and
    /// created again: the bridge still runs, on an object nobody else can open.
    pub fn is_current(&self) -> bool {
        std::fs::symlink_metadata(self.queue.object_path())
            .is_ok_and(|m| m.file_type().is_file() && (m.dev(), m.ino()) == self.object)
    }
}

/// A registration: the mark file, locked while this lives, removed when it drops.
#[derive(Debug)]
pub struct Mark {
    file: File,
    path: PathBuf,
}

impl Mark {
    /// The mark file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Rewrite the counters readers see (one `pwrite`). Errors: [`Error::Io`].
    pub fn update(&self, c: &MarkCounters) -> Result<()> {
        self.file
            .write_all_at(&c.encode(), COUNTERS_OFF as u64)
            .map_err(|e| Error::io_at("write", &self.path, e))
    }
}

impl Drop for Mark {
    fn drop(&mut self) {
        // Remove the name only if it is still this file's.
        if let (Ok(mine), Ok(there)) = (self.file.metadata(), std::fs::symlink_metadata(&self.path))
        {
            if (mine.dev(), mine.ino()) == (there.dev(), there.ino()) {
                let _ = std::fs::remove_file(&self.path);
            }
        }
    }
}

fn dir() -> PathBuf {
    PathBuf::from(SHM_DIR)
}

fn clean_text(s: &str) -> bool {
    s.len() <= MAX_TEXT && !s.chars().any(char::is_control)
}

fn check_info(i: &BridgeInfo) -> bool {
    [&i.server, &i.stream, &i.subject]
        .into_iter()
        .chain(i.durable.as_ref())
        .all(|s| clean_text(s))
}

/// A fresh random mark name (without directory).
fn fresh_name() -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos());
    let h =
        RandomState::new().hash_one((std::process::id(), N.fetch_add(1, Ordering::Relaxed), nanos));
    format!("{MARK_PREFIX}{h:016x}{MARK_SUFFIX}")
}

fn open_flags(write: bool) -> OpenOptions {
    let mut o = OpenOptions::new();
    o.read(true)
        .write(write)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC);
    o
}

/// Register a running bridge on `queue`: write its mark and hold it until the returned
/// [`Mark`] drops. Marks of bridges that died are swept first.
///
/// Errors: [`Error::InvalidArgument`] if a text field of `info` is longer than
/// [`MAX_TEXT`] bytes or holds a control character, [`Error::Io`] if `/dev/shm` cannot be
/// written.
///
/// ```
/// use shmq::internal::bridged::{self, BridgeInfo, Direction};
/// # let name = format!("doc-mark-{}", std::process::id());
/// let q = shmq::RawQueue::create(&name, 4096)?;
/// let info = BridgeInfo {
///     direction: Direction::Out,
///     server: "nats://127.0.0.1:4222".into(),
///     stream: "JOBS".into(),
///     subject: "jobs.a".into(),
///     durable: None,
/// };
/// let mark = bridged::register(&q, &info)?;
/// let live = bridged::of_queue(&name);
/// assert_eq!(live.len(), 1);
/// assert_eq!(live[0].info, info);
/// drop(mark);
/// assert!(bridged::of_queue(&name).is_empty());
/// # Ok::<(), shmq::Error>(())
/// ```
pub fn register(queue: &RawQueue, info: &BridgeInfo) -> Result<Mark> {
    if !check_info(info) {
        return Err(Error::InvalidArgument(format!(
            "bridge mark fields must be at most {MAX_TEXT} bytes without control characters"
        )));
    }
    let object = queue.ring().memory().object_id();
    let record = Record {
        info: info.clone(),
        queue: queue.location().clone(),
        queue_uid: queue.uid(),
        dev: object.dev,
        ino: object.ino,
        pid: std::process::id(),
        started_unix: crate::sys::clock::now_unix(),
    };
    let body = postcard::to_allocvec(&record)
        .map_err(|e| Error::Codec(format!("encoding a bridge mark: {e}")))?;
    if RECORD_OFF + body.len() > MAX_MARK_SIZE {
        return Err(Error::InvalidArgument(format!(
            "a bridge mark of {} bytes exceeds {MAX_MARK_SIZE}",
            RECORD_OFF + body.len()
        )));
    }
    let mut bytes = vec![0u8; RECORD_OFF + body.len()];
    bytes[..8].copy_from_slice(MAGIC);
    bytes[LEN_OFF..LEN_OFF + 4].copy_from_slice(&(body.len() as u32).to_le_bytes());
    let counters = MarkCounters {
        updated_unix: record.started_unix,
        ..MarkCounters::default()
    };
    bytes[COUNTERS_OFF..COUNTERS_OFF + COUNTER_WORDS * 8].copy_from_slice(&counters.encode());
    bytes[RECORD_OFF..].copy_from_slice(&body);

    sweep();
    let dir = dir();
    let (file, path, tmp) = loop {
        let path = dir.join(fresh_name());
        let tmp = PathBuf::from(format!("{}.tmp", path.display()));
        match open_flags(true).create_new(true).mode(0o600).open(&tmp) {
            Ok(f) => break (f, path, tmp),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(Error::io_at("create", &tmp, e)),
        }
    };
    let fail = |op: &str, e: std::io::Error| {
        let _ = std::fs::remove_file(&tmp);
        Error::io_at(op, &tmp, e)
    };
    match ofd::try_lock(file.as_fd(), ofd::Kind::Write, 0) {
        Ok(true) => {}
        Ok(false) => {
            return Err(fail(
                "lock",
                std::io::Error::other("a fresh mark is locked by someone else"),
            ))
        }
        Err(e) => return Err(fail("lock", e)),
    }
    file.write_all_at(&bytes, 0).map_err(|e| fail("write", e))?;
    std::fs::rename(&tmp, &path).map_err(|e| fail("rename", e))?;
    Ok(Mark { file, path })
}

/// Remove the marks (and leftover temporary files) of bridges that died, as far as this
/// process may (its own user's files).
fn sweep() {
    let Ok(entries) = std::fs::read_dir(dir()) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let Some(name) = name.to_str() else { continue };
        if !name.starts_with(MARK_PREFIX) {
            continue;
        }
        let tmp = name.ends_with(".mark.tmp");
        if !name.ends_with(MARK_SUFFIX) && !tmp {
            continue;
        }
        let path = e.path();
        let Ok(f) = open_flags(true).open(&path) else {
            continue;
        };
        let Ok(meta) = f.metadata() else { continue };
        if !meta.file_type().is_file() {
            continue;
        }
        if tmp {
            let old = meta
                .modified()
                .ok()
                .and_then(|m| m.elapsed().ok())
                .is_some_and(|age| age > TMP_GRACE);
            if !old {
                continue;
            }
        }
        // Only files that are marks: a foreign file under such a name is left alone.
        let mut magic = [0u8; 8];
        if f.read_exact_at(&mut magic, 0).is_err() || &magic != MAGIC {
            continue;
        }
        if let Ok(true) = ofd::try_lock(f.as_fd(), ofd::Kind::Write, 0) {
            // Unlocked: its bridge is gone (nobody locks a dead mark again: names are
            // never reused). Remove the name if it is still this file's.
            if let Ok(there) = std::fs::symlink_metadata(&path) {
                if (there.dev(), there.ino()) == (meta.dev(), meta.ino()) {
                    let _ = std::fs::remove_file(&path);
                }
            }
        }
    }
}

/// Read one mark; `None` if it is not a live, well-formed mark.
fn read_mark(path: &Path) -> Option<Bridged> {
    let f = open_flags(false).open(path).ok()?;
    let meta = f.metadata().ok()?;
    if !meta.file_type().is_file() || meta.len() > MAX_MARK_SIZE as u64 {
        return None;
    }
    // Live: another description holds the write lock.
    if !ofd::conflicts(f.as_fd(), ofd::Kind::Read, 0).ok()? {
        return None;
    }
    let mut buf = Vec::with_capacity(meta.len() as usize);
    (&f).take(MAX_MARK_SIZE as u64 + 1)
        .read_to_end(&mut buf)
        .ok()?;
    parse(&buf, path)
}

/// Decode a mark's bytes (untrusted).
fn parse(buf: &[u8], path: &Path) -> Option<Bridged> {
    if buf.len() > MAX_MARK_SIZE || buf.len() < RECORD_OFF || &buf[..8] != MAGIC {
        return None;
    }
    let n = u32::from_le_bytes(buf[LEN_OFF..LEN_OFF + 4].try_into().ok()?) as usize;
    let body = buf.get(RECORD_OFF..RECORD_OFF.checked_add(n)?)?;
    let r: Record = crate::queue::decode_whole(body).ok()?;
    if !check_info(&r.info) || !clean_text(&r.queue.display_name()) || r.pid == 0 {
        return None;
    }
    let mut words = [0u64; COUNTER_WORDS];
    for (i, w) in words.iter_mut().enumerate() {
        let at = COUNTERS_OFF + i * 8;
        *w = u64::from_le_bytes(buf[at..at + 8].try_into().ok()?);
    }
    Some(Bridged {
        info: r.info,
        queue: r.queue,
        queue_uid: r.queue_uid,
        object: (r.dev, r.ino),
        pid: r.pid,
        started_unix: r.started_unix,
        counters: MarkCounters::from_words(&words),
        mark: path.to_path_buf(),
    })
}

/// Every live bridge on the machine whose mark this process can read (its own user's, or
/// all for root): the out bridges first, then the in bridges, each oldest first. Marks of dead bridges, foreign and malformed files are
/// skipped; an unreadable `/dev/shm` gives an empty list.
pub fn list() -> Vec<Bridged> {
    let Ok(entries) = std::fs::read_dir(dir()) else {
        return Vec::new();
    };
    let mut v: Vec<Bridged> = entries
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_str()
                .is_some_and(|n| n.starts_with(MARK_PREFIX) && n.ends_with(MARK_SUFFIX))
        })
        .filter_map(|e| read_mark(&e.path()))
        .collect();
    let key = |b: &Bridged| {
        (
            b.info.direction == Direction::In,
            b.started_unix,
            b.mark.clone(),
        )
    };
    v.sort_by_key(key);
    v
}

/// The live bridges of the named queue now at `name` (the same object: a queue created
/// again under the name after a bridge attached to the old one is not bridged by it).
pub fn of_queue(name: &str) -> Vec<Bridged> {
    let loc = Location::Name(name.to_string());
    list()
        .into_iter()
        .filter(|b| b.queue == loc && b.is_current())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn garbage_parses_to_nothing() {
        let p = Path::new("/x");
        assert!(parse(b"", p).is_none());
        assert!(parse(&[0u8; 300], p).is_none());
        let mut b = vec![0u8; 300];
        b[..8].copy_from_slice(MAGIC);
        b[8..12].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(parse(&b, p).is_none());
        b[8..12].copy_from_slice(&40u32.to_le_bytes());
        for (i, x) in b[RECORD_OFF..].iter_mut().enumerate() {
            *x = (i * 37) as u8;
        }
        assert!(parse(&b, p).is_none());
    }

    #[test]
    fn a_record_round_trips_and_control_text_is_refused() {
        let r = Record {
            info: BridgeInfo {
                direction: Direction::In,
                server: "nats://h:1".into(),
                stream: "S".into(),
                subject: "a.b".into(),
                durable: Some("d".into()),
            },
            queue: Location::Name("q".into()),
            queue_uid: 9,
            dev: 1,
            ino: 2,
            pid: 3,
            started_unix: 4,
        };
        let body = postcard::to_allocvec(&r).unwrap();
        let mut b = vec![0u8; RECORD_OFF + body.len()];
        b[..8].copy_from_slice(MAGIC);
        b[8..12].copy_from_slice(&(body.len() as u32).to_le_bytes());
        let c = MarkCounters {
            messages: 5,
            connected: true,
            lag: 7,
            ..Default::default()
        };
        b[COUNTERS_OFF..COUNTERS_OFF + 128].copy_from_slice(&c.encode());
        b[RECORD_OFF..].copy_from_slice(&body);
        let got = parse(&b, Path::new("/m")).unwrap();
        assert_eq!(got.info, r.info);
        assert_eq!((got.object, got.pid, got.queue_uid), ((1, 2), 3, 9));
        assert_eq!(got.counters, c);
        // A trailing byte in the record, or a control character, and it is skipped.
        let mut longer = b.clone();
        longer.push(0);
        longer[8..12].copy_from_slice(&(body.len() as u32 + 1).to_le_bytes());
        assert!(parse(&longer, Path::new("/m")).is_none());
        let mut bad = r;
        bad.info.subject = "a\u{1b}[2J".into();
        let body = postcard::to_allocvec(&bad).unwrap();
        let mut b2 = b[..RECORD_OFF].to_vec();
        b2[8..12].copy_from_slice(&(body.len() as u32).to_le_bytes());
        b2.extend_from_slice(&body);
        assert!(parse(&b2, Path::new("/m")).is_none());
    }
}
