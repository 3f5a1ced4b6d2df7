//! Shared-memory segments: a named POSIX shared-memory object (`/dev/shm/shmq.<name>`) or a
//! file at a caller-given path, mapped with `memmap2`, holding a [`Header`] at offset 0 and
//! the ring's bytes at [`RING_OFFSET`].
//!
//! # Names
//! A queue name is 1 to [`MAX_NAME_LEN`] bytes of ASCII letters, digits, `_`, `-` and `.`,
//! not starting with `.`. The object is created as `/shmq.<name>` (visible as
//! `/dev/shm/shmq.<name>` on Linux). Anything else is [`Error::InvalidName`].
//!
//! # Creation protocol
//! `create` opens the object with `O_CREAT | O_EXCL` and mode 0600 (or the caller's mode,
//! applied with `fchmod` so the umask does not narrow it), sizes it with `ftruncate`, reserves
//! the memory with `posix_fallocate` (so a full tmpfs fails here, not with SIGBUS later), maps
//! it, writes every header field and stores the `init` word **last** (release). `open` waits
//! (bounded by [`INIT_WAIT`]) for the object to reach header size and for `init` to be
//! published, then validates every header field against the object's real size before
//! mapping the ring. A foreign or truncated object is [`Error::Incompatible`].
//!
//! # Opening a path in a shared directory
//! `/dev/shm` is writable by every local user, so a name may hold anything: a FIFO, a
//! socket, a directory, a symbolic link, a device node. Every open of an existing name or
//! path goes through one function (`open_existing`) that never blocks and never follows a
//! link: `lstat` first (anything but a regular file is refused without being opened), then
//! `open` with `O_NONBLOCK | O_NOFOLLOW | O_NOCTTY | O_CLOEXEC` (a FIFO swapped in after the
//! `lstat` cannot block the open), then `fstat` on the descriptor (the authoritative check),
//! then `O_NONBLOCK` is cleared. A non-regular object is [`Error::Incompatible`]
//! ("not a regular file (a FIFO)"). Named objects are opened as the files
//! `/dev/shm/shmq.<name>`, exactly where glibc's `shm_open` puts them, so that these flags
//! and checks apply to them too.
//!
//! # Stale objects: the attach marker
//! Whether an object is still in use is asked of the kernel, never of `/proc` or a pid
//! (pids mean nothing across PID namespaces). [`Segment::create`] and [`Segment::open`]
//! take an open-file-description read lock on the byte [`MAPPED_BYTE`] of the descriptor
//! they map the object from, right after mapping it (before the creator writes any header
//! word). The mapping holds a reference to that open file description (a `fork` child that
//! inherits the mapping too), so the marker is held exactly as long as some process maps
//! the object. Whether *someone else* maps it is `F_OFD_GETLK` for a write lock on that
//! byte through one's own descriptor (the kernel ignores the caller's own description's
//! locks; a read-only descriptor will do): see [`attached_by_others`].
//!
//! One predicate: an object is **stale** iff it was not created persistent
//! ([`FLAG_PERSISTENT`]) and nobody holds its marker; an object whose header was never
//! published counts as stale when nobody holds its marker and either its creator got as
//! far as writing the header (it took the marker before) or it is older than
//! [`UNINIT_GRACE`]. `replace_stale`, [`crate::QueueInfo::is_stale`],
//! [`crate::remove_stale`] and `shmq rm --stale` all use it. A process that can open the
//! object can hold the marker and keep a dead queue from looking stale; that only stops
//! automatic clean-up (`shmq rm` still removes it).
//!
//! # Who removes a name
//! A name belongs to the object that holds it. A [`Segment`] made by [`Segment::create`]
//! records, in process memory, the creating process's pid and the device and inode of the
//! object it created. Its drop unlinks the name only in that process (not in a `fork`ed
//! child that drops its copy) and only if the name still refers to that object (not after
//! someone removed it and created another queue under the same name). Every other removal
//! that follows an examination (`replace_stale`, [`crate::remove_stale`],
//! [`crate::QueueInfo::remove_if_unchanged`]) applies the same device-and-inode check
//! ([`unlink_if_same`]). Linux has no unlink-by-descriptor, so a window remains between the
//! `lstat` of the name and the `unlink`: a process that removes the name and creates a new
//! object under it in exactly that window loses its new name. Only a process allowed to
//! write `/dev/shm` (or the file's directory) can do that, and it could as well unlink the
//! name directly.

use std::fs::{File, FileType, Metadata};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use memmap2::{MmapOptions, MmapRaw};

use crate::error::{Error, Result};
// The header's words: std atomics, or loom's under `cfg(loom)` (see `prim`).
use crate::prim::{AtomicU32, AtomicU64};
use crate::sync;

/// `b"SHMQRING"` as a little-endian u64.
pub const MAGIC: u64 = u64::from_le_bytes(*b"SHMQRING");
/// Layout version; bumped on any incompatible change of the header or framing.
pub const VERSION: u32 = 2;
/// Value of [`Identity::init`] once the creator has finished writing the header.
pub const INIT_DONE: u32 = 0x1417_0001;
/// Offset of the ring's first byte in the segment (one page: the header lives below).
pub const RING_OFFSET: u64 = 4096;
/// Smallest ring capacity accepted by `create`.
pub const MIN_CAPACITY: u64 = 64;
/// Largest ring capacity accepted by `create` (1 TiB).
pub const MAX_CAPACITY: u64 = 1 << 40;
/// Longest queue name accepted, in bytes.
pub const MAX_NAME_LEN: usize = 200;
/// How long `open` waits for a concurrent creator to finish initialising the segment.
pub const INIT_WAIT: Duration = Duration::from_secs(2);
/// Prefix of shmq objects in the shared-memory namespace.
pub const PREFIX: &str = "shmq.";
/// File offset of the **attach marker**: every mapping of a segment holds an
/// open-file-description read lock on this one byte (far past the segment's end, below the
/// holders' liveness bytes at [`sync::LIVE_BASE`]), taken on the descriptor the segment is
/// mapped from. A mapping keeps its open file description alive, so the kernel drops the
/// lock exactly when the last mapping (and descriptor) of that description is gone, in
/// whatever process or PID namespace, however the process died. See
/// [the module docs](self#stale-objects-the-attach-marker).
pub const MAPPED_BYTE: i64 = sync::LIVE_BASE - 1;

/// Codec identifiers recorded in the header (`0`: untyped/raw).
pub mod codec_id {
    /// Written by a [`RawQueue`](crate::RawQueue): payloads are plain bytes.
    pub const RAW: u32 = 0;
    /// Written by a [`Queue`](crate::Queue) with the postcard codec.
    pub const POSTCARD: u32 = 1;
    /// Written by a [`Queue`](crate::Queue) with the `Pod` codec.
    pub const POD: u32 = 2;
}

/// Immutable identity, written by the creator before `init`.
#[repr(C, align(64))]
pub struct Identity {
    /// [`MAGIC`].
    pub magic: AtomicU64,
    /// `VERSION`.
    pub version: AtomicU32,
    /// `size_of::<Header>()` of the creator.
    pub header_size: AtomicU32,
    /// Byte offset of the ring in the segment.
    pub ring_offset: AtomicU64,
    /// Ring capacity in bytes (multiple of 8).
    pub capacity: AtomicU64,
    /// Creator's process id.
    pub creator_pid: AtomicU32,
    /// [`INIT_DONE`] once the header is complete; written last.
    pub init: AtomicU32,
    /// Creator's start time (clock ticks since boot), to tell it apart after pid reuse.
    pub creator_start: AtomicU64,
    /// Creation time, seconds since the Unix epoch.
    pub created_unix: AtomicU64,
    /// Codec of the creating handle (see [`codec_id`]).
    pub codec: AtomicU32,
    /// For the Pod codec: `size_of::<T>()`; otherwise 0.
    pub item_size: AtomicU32,
}

/// Type name of the creating handle's message type (informational, NUL padded).
#[repr(C, align(64))]
pub struct TypeName {
    /// UTF-8 bytes, truncated to 64.
    pub bytes: [AtomicU64; 8],
}

/// [`Shared::flags`] bit: the queue was created to outlive its creator
/// (`Options::keep_on_drop(true)`, `shmq create`), so a dead creator does not make it stale.
pub const FLAG_PERSISTENT: u32 = 1;

/// Words shared by both sides.
#[repr(C, align(64))]
pub struct Shared {
    /// Unused (version 1 kept the closed flag here; since version 2 it is bit 0 of
    /// [`ProducerSide::tail`], so that closing and publishing are ordered by one word).
    pub reserved: AtomicU32,
    /// Consumers currently sleeping on `data_seq`.
    pub consumers_waiting: AtomicU32,
    /// Producers currently sleeping on `space_seq`.
    pub producers_waiting: AtomicU32,
    /// Flags set by the creator before `init` ([`FLAG_PERSISTENT`]).
    pub flags: AtomicU32,
    /// Number of times a producer found the queue full.
    pub full_events: AtomicU64,
    /// Number of times a consumer found the queue empty.
    pub empty_events: AtomicU64,
}

/// Producer side: written under the producer lock.
#[repr(C, align(64))]
pub struct ProducerSide {
    /// Producer lock word: holder id and waiters bit (see [`sync::RobustLock`]).
    pub lock: AtomicU32,
    /// Bumped when data is published and consumers sleep.
    pub data_seq: AtomicU32,
    /// Byte position one past the last published record (monotonic), with the queue's
    /// closed flag in bit 0 ([`crate::ring::CLOSED`]).
    pub tail: AtomicU64,
    /// Intended `tail` of the put in progress (for crash repair of `put_count`).
    pub pending_tail: AtomicU64,
    /// `put_count` that goes with `pending_tail`.
    pub pending_count: AtomicU64,
    /// Messages published, ever.
    pub put_count: AtomicU64,
    /// Payload bytes published, ever.
    pub put_bytes: AtomicU64,
}

/// Consumer side: written under the consumer lock.
#[repr(C, align(64))]
pub struct ConsumerSide {
    /// Consumer lock word.
    pub lock: AtomicU32,
    /// Bumped when space is released and producers sleep.
    pub space_seq: AtomicU32,
    /// Byte position of the oldest unread record (monotonic).
    pub head: AtomicU64,
    /// Intended `head` of the get in progress.
    pub pending_head: AtomicU64,
    /// `get_count` that goes with `pending_head`.
    pub pending_count: AtomicU64,
    /// Messages consumed, ever.
    pub get_count: AtomicU64,
    /// Payload bytes consumed, ever.
    pub get_bytes: AtomicU64,
}

/// The segment header at offset 0. Every field is an atomic: the memory is shared with
/// other processes, so it is only ever accessed through `&Header` (interior mutability),
/// never `&mut`.
#[repr(C)]
pub struct Header {
    /// Identity (immutable after init).
    pub id: Identity,
    /// Message type name.
    pub type_name: TypeName,
    /// Shared words.
    pub shared: Shared,
    /// Producer side.
    pub prod: ProducerSide,
    /// Consumer side.
    pub cons: ConsumerSide,
    /// Task accounting and limits (JoinableQueue, message bound).
    pub tasks: Tasks,
}

/// Task accounting for `JoinableQueue` semantics, kept in the queue's own header so that one
/// name is one object. The number of unfinished tasks is `prod.put_count - tasks.done`
/// (`put_count` is already crash-repaired by the ring), so a put needs no second counter.
#[repr(C, align(64))]
pub struct Tasks {
    /// `task_done` calls, ever (never more than `prod.put_count`).
    pub done: AtomicU64,
    /// Bumped when `done` reaches `put_count` (futex word for `join`).
    pub join_seq: AtomicU32,
    /// Threads sleeping in `join`.
    pub join_waiters: AtomicU32,
    /// Largest number of queued messages (`Options::max_messages`; 0: bounded by bytes
    /// only). Written by the creator before `init`, read once at open.
    pub max_messages: AtomicU64,
    /// Reserved for later layout additions (zero).
    pub reserved: [AtomicU64; 5],
}

const _: () = assert!(std::mem::size_of::<Header>() <= RING_OFFSET as usize);
const _: () = assert!(std::mem::size_of::<Header>().is_multiple_of(64));

impl Header {
    /// Store `name` into the type-name words.
    pub(crate) fn set_type_name(&self, name: &str) {
        let mut buf = [0u8; 64];
        let n = name.len().min(64);
        buf[..n].copy_from_slice(&name.as_bytes()[..n]);
        for (i, w) in self.type_name.bytes.iter().enumerate() {
            let mut b = [0u8; 8];
            b.copy_from_slice(&buf[i * 8..i * 8 + 8]);
            w.store(u64::from_le_bytes(b), Ordering::Relaxed);
        }
    }

    /// The recorded message type name (lossy UTF-8; empty for raw queues).
    pub fn type_name(&self) -> String {
        let mut buf = Vec::with_capacity(64);
        for w in &self.type_name.bytes {
            buf.extend_from_slice(&w.load(Ordering::Relaxed).to_le_bytes());
        }
        let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
        String::from_utf8_lossy(&buf[..end]).into_owned()
    }
}

/// Under loom: a freshly initialised header as a typed value (loom's atomics are built with
/// their constructors, not read from bytes), for the model ring `Ring::in_memory`.
#[cfg(loom)]
impl Header {
    pub(crate) fn for_model(capacity: u64) -> Header {
        let u32 = AtomicU32::new;
        let u64 = AtomicU64::new;
        Header {
            id: Identity {
                magic: u64(MAGIC),
                version: u32(VERSION),
                header_size: u32(std::mem::size_of::<Header>() as u32),
                ring_offset: u64(RING_OFFSET),
                capacity: u64(capacity),
                creator_pid: u32(0),
                init: u32(INIT_DONE),
                creator_start: u64(0),
                created_unix: u64(0),
                codec: u32(codec_id::RAW),
                item_size: u32(0),
            },
            type_name: TypeName {
                bytes: std::array::from_fn(|_| u64(0)),
            },
            shared: Shared {
                reserved: u32(0),
                consumers_waiting: u32(0),
                producers_waiting: u32(0),
                flags: u32(0),
                full_events: u64(0),
                empty_events: u64(0),
            },
            prod: ProducerSide {
                lock: u32(0),
                data_seq: u32(0),
                tail: u64(0),
                pending_tail: u64(0),
                pending_count: u64(0),
                put_count: u64(0),
                put_bytes: u64(0),
            },
            cons: ConsumerSide {
                lock: u32(0),
                space_seq: u32(0),
                head: u64(0),
                pending_head: u64(0),
                pending_count: u64(0),
                get_count: u64(0),
                get_bytes: u64(0),
            },
            tasks: Tasks {
                done: u64(0),
                join_seq: u32(0),
                join_waiters: u32(0),
                max_messages: u64(0),
                reserved: std::array::from_fn(|_| u64(0)),
            },
        }
    }
}

/// Where a segment lives.
#[derive(Clone, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Location {
    /// A named POSIX shared-memory object `/shmq.<name>`.
    Name(String),
    /// A file at this path (a persistent queue).
    Path(PathBuf),
}

impl Location {
    /// Human-readable name: the queue name, or the path.
    pub fn display_name(&self) -> String {
        match self {
            Location::Name(n) => n.clone(),
            Location::Path(p) => p.display().to_string(),
        }
    }

    /// The object's path in the file system: `/dev/shm/shmq.<name>` for a named queue
    /// (where glibc's `shm_open` puts it), the path itself for a file-backed one.
    pub fn object_path(&self) -> PathBuf {
        match self {
            Location::Name(n) => shm_path(n),
            Location::Path(p) => p.clone(),
        }
    }
}

/// Check a queue name against the naming rules (see the module docs).
///
/// ```
/// assert!(shmq::internal::validate_name("jobs-1.v2").is_ok());
/// assert!(shmq::internal::validate_name("a/b").is_err());
/// assert!(shmq::internal::validate_name("").is_err());
/// ```
pub fn validate_name(name: &str) -> Result<()> {
    let bad = |reason| {
        Err(Error::InvalidName {
            name: name.to_string(),
            reason,
        })
    };
    if name.is_empty() {
        return bad("empty");
    }
    if name.len() > MAX_NAME_LEN {
        return bad("longer than 200 bytes");
    }
    if name.starts_with('.') {
        return bad("starts with '.'");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
    {
        return bad("only ASCII letters, digits, '_', '-' and '.' are allowed");
    }
    Ok(())
}

/// Options for creating a segment.
#[derive(Clone, Debug)]
pub struct CreateOptions {
    /// Permission bits of the new object (default 0o600).
    pub mode: u32,
    /// Replace an existing segment that is stale ([`Segment::is_stale`], or abandoned
    /// while being created).
    pub replace_stale: bool,
    /// Codec id to record.
    pub codec: u32,
    /// Item size to record (Pod codec).
    pub item_size: u32,
    /// Type name to record.
    pub type_name: String,
    /// Record that the segment is meant to outlive its creator ([`FLAG_PERSISTENT`]).
    pub persistent: bool,
    /// Largest number of queued messages ([`Tasks::max_messages`]; 0: bounded by bytes
    /// only).
    pub max_messages: u64,
}

impl Default for CreateOptions {
    fn default() -> Self {
        CreateOptions {
            mode: 0o600,
            replace_stale: false,
            codec: codec_id::RAW,
            item_size: 0,
            type_name: String::new(),
            persistent: false,
            max_messages: 0,
        }
    }
}

/// A mapped segment. Dropping it unmaps and closes its file; a segment made by
/// [`Segment::create`] with `remove_on_drop` set also removes its name, under the rule in
/// the module docs (who removes a name).
pub struct Segment {
    map: MmapRaw,
    /// The descriptor the segment was mapped from (`O_CLOEXEC`), until
    /// [`Segment::claim_holder`] re-opens it as the handle's liveness descriptor (with an
    /// open file description of its own) and closes it. One descriptor per handle.
    file: Option<File>,
    location: Location,
    /// The object this segment maps (from `fstat` of `file`).
    object: ObjectId,
    /// Ring capacity, validated once at create/open; never re-read from the header.
    capacity: u64,
    /// Ring offset, validated once at create/open.
    ring_offset: u64,
    /// Pid of the process that created the object through this handle (`None` for a
    /// segment that was opened).
    creator: Option<u32>,
    remove_on_drop: bool,
}

// SAFETY: the mapping is shared memory accessed only through atomics and raw-pointer copies
// (never through `&mut`), so handing the handle to another thread is no different from
// another process mapping it.
unsafe impl Send for Segment {}
// SAFETY: as above; every method takes `&self` and touches shared words atomically.
unsafe impl Sync for Segment {}

/// Which file-system object a name referred to when it was examined: its device and inode.
/// Two names with the same `ObjectId` are the same object; a name removed and created
/// again gets a different one (the old object is alive while anyone has it open or mapped,
/// so its inode number cannot be reused meanwhile).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ObjectId {
    /// `st_dev`.
    pub dev: u64,
    /// `st_ino`.
    pub ino: u64,
}

impl ObjectId {
    /// The object `meta` describes.
    pub fn of(meta: &Metadata) -> ObjectId {
        ObjectId {
            dev: meta.dev(),
            ino: meta.ino(),
        }
    }
}

/// What kind of object a file type is, in words ("a FIFO", "a directory", ...).
fn kind_of(ft: FileType) -> &'static str {
    if ft.is_file() {
        "a regular file"
    } else if ft.is_dir() {
        "a directory"
    } else if ft.is_symlink() {
        "a symbolic link"
    } else if ft.is_fifo() {
        "a FIFO"
    } else if ft.is_socket() {
        "a socket"
    } else if ft.is_char_device() {
        "a character device"
    } else if ft.is_block_device() {
        "a block device"
    } else {
        "an object of unknown type"
    }
}

fn not_regular(display: &str, ft: FileType) -> Error {
    Error::Incompatible {
        name: display.to_string(),
        reason: format!("not a regular file ({})", kind_of(ft)),
    }
}

/// How errors name a location: the queue name, or the path, always with a `/` in it so
/// that [`Error::NotFound`] and [`Error::AlreadyExists`] say "at <path>" rather than
/// "named <name>" (a queue name never contains `/`).
fn error_place(loc: &Location) -> String {
    match loc {
        Location::Name(n) => n.clone(),
        Location::Path(p) => {
            let s = p.display().to_string();
            if s.contains('/') {
                s
            } else {
                format!("./{s}")
            }
        }
    }
}

fn not_found(loc: &Location) -> Error {
    Error::NotFound(error_place(loc))
}

/// Open the existing object at `loc` without ever blocking and without following a
/// symbolic link at the last path component; refuse anything but a regular file (see
/// the [module docs](self#opening-a-path-in-a-shared-directory)). `write`: open read-write,
/// else read-only. Returns the file and its `fstat`.
pub(crate) fn open_existing(loc: &Location, write: bool) -> Result<(File, Metadata)> {
    let path = loc.object_path();
    let display = loc.display_name();
    // 1. Refuse a non-regular object without opening it at all (opening a device node
    //    may have side effects).
    match std::fs::symlink_metadata(&path) {
        Ok(m) if !m.file_type().is_file() => return Err(not_regular(&display, m.file_type())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(not_found(loc)),
        // Anything else (e.g. a directory we may not search): let `open` report it.
        _ => {}
    }
    // 2. Open. O_NONBLOCK: a FIFO swapped in after the lstat does not block the open, nor
    //    does a file lease held by another process. O_NOFOLLOW: a symlink swapped in is
    //    ELOOP. O_NOCTTY: a terminal swapped in does not become our controlling terminal.
    //    (std adds O_CLOEXEC.)
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(write)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOFOLLOW | libc::O_NOCTTY)
        .open(&path)
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                return not_found(loc);
            }
            // ELOOP (symlink), ENXIO (socket), EISDIR, EWOULDBLOCK...: say what is there
            // if it is not a regular file.
            match std::fs::symlink_metadata(&path) {
                Ok(m) if !m.file_type().is_file() => not_regular(&display, m.file_type()),
                _ => Error::io_at("open", &path, e),
            }
        })?;
    // 3. The authoritative check, on what was actually opened.
    let meta = file
        .metadata()
        .map_err(|e| Error::io_at("fstat", &path, e))?;
    if !meta.file_type().is_file() {
        return Err(not_regular(&display, meta.file_type()));
    }
    // 4. Back to blocking mode (it makes no difference to a regular file, but the
    //    descriptor is handed to code that may assume it).
    clear_nonblock(&file).map_err(|e| Error::io_at("fcntl", &path, e))?;
    Ok((file, meta))
}

fn clear_nonblock(file: &File) -> std::io::Result<()> {
    let fd = file.as_raw_fd();
    // SAFETY: `fd` is a valid descriptor owned by `file`; F_GETFL takes no argument.
    let fl = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if fl < 0 {
        return Err(std::io::Error::last_os_error());
    }
    if fl & libc::O_NONBLOCK != 0 {
        // SAFETY: as above; F_SETFL takes an int of status flags.
        if unsafe { libc::fcntl(fd, libc::F_SETFL, fl & !libc::O_NONBLOCK) } < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Create a new object at `loc` (`O_CREAT | O_EXCL`, which never follows a link and fails
/// on any existing object, whatever its type). `EEXIST` is returned as the raw io error
/// for the caller to judge; other errors name the path.
fn create_new(loc: &Location, mode: u32) -> std::result::Result<(File, Metadata), CreateError> {
    let path = loc.object_path();
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(mode)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOFOLLOW | libc::O_NOCTTY)
        .open(&path)
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::AlreadyExists {
                CreateError::Exists
            } else {
                CreateError::Other(Error::io_at("create", &path, e))
            }
        })?;
    let fail = |e: Error| {
        // The object is ours (O_EXCL); remove it unless the name moved on already.
        if let Ok(m) = file.metadata() {
            let _ = unlink_if_same(loc, ObjectId::of(&m));
        }
        CreateError::Other(e)
    };
    let meta = file
        .metadata()
        .map_err(|e| fail(Error::io_at("fstat", &path, e)))?;
    if !meta.file_type().is_file() {
        // Cannot happen with O_CREAT | O_EXCL; checked anyway.
        return Err(fail(not_regular(&loc.display_name(), meta.file_type())));
    }
    clear_nonblock(&file).map_err(|e| fail(Error::io_at("fcntl", &path, e)))?;
    Ok((file, meta))
}

enum CreateError {
    Exists,
    Other(Error),
}

/// Unlink `loc`'s name if it still refers to `object` (same device and inode, by `lstat`
/// of the name). `Ok(true)`: removed; `Ok(false)`: the name now refers to another object,
/// which is left alone; [`Error::NotFound`]: there is no such name any more.
///
/// A window remains between the `lstat` and the `unlink` (Linux cannot unlink by
/// descriptor): if another process removes the name and creates a new object under it in
/// exactly that window, the new object's name is removed. See the
/// [module docs](self#who-removes-a-name).
pub fn unlink_if_same(loc: &Location, object: ObjectId) -> Result<bool> {
    let path = loc.object_path();
    let now = match std::fs::symlink_metadata(&path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(not_found(loc)),
        Err(e) => return Err(Error::io_at("stat", &path, e)),
    };
    if ObjectId::of(&now) != object {
        return Ok(false);
    }
    // The stat-then-unlink window described above is here.
    unlink(loc).map(|()| true)
}

/// Unlink `loc`'s name, whatever it refers to.
fn unlink(loc: &Location) -> Result<()> {
    let path = loc.object_path();
    std::fs::remove_file(&path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            not_found(loc)
        } else {
            Error::io_at("remove", &path, e)
        }
    })
}

/// Remove the named queue's shared-memory object, whatever it is (an explicit request: a
/// foreign object under a shmq name is removed too; nothing is opened, so this never
/// blocks). Processes that have it open keep working; new `open`s fail with
/// [`Error::NotFound`].
pub fn remove(name: &str) -> Result<()> {
    validate_name(name)?;
    unlink(&Location::Name(name.to_string()))
}

/// Total segment size for a ring of `capacity` bytes.
pub fn segment_size(capacity: u64) -> u64 {
    RING_OFFSET + capacity
}

/// Round a requested capacity to what the ring uses (a multiple of 64), or reject it.
pub fn normalize_capacity(requested: usize) -> Result<u64> {
    let c = requested as u64;
    if !(MIN_CAPACITY..=MAX_CAPACITY).contains(&c) {
        return Err(Error::InvalidArgument(format!(
            "capacity {requested} out of range: use {MIN_CAPACITY}..={MAX_CAPACITY} bytes"
        )));
    }
    Ok(c.div_ceil(64) * 64)
}

/// Seconds since the Unix epoch, now (0 if the clock is before 1970).
pub fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Check the layout words of a published header against the size of the object (or
/// buffer) that holds it, reading each word exactly once, and return the ring capacity.
///
/// Used by [`Segment::open`] (and by heap-backed rings): the caller keeps the returned
/// capacity as its private copy and never reads the word again, so a process that
/// rewrites the header later cannot move the ring's bounds. The ring starts at
/// [`RING_OFFSET`] (checked here). A mismatch is [`Error::Incompatible`] naming `display`.
pub(crate) fn validate_layout(h: &Header, object_size: u64, display: &str) -> Result<u64> {
    let bad = |reason: String| Error::Incompatible {
        name: display.to_string(),
        reason,
    };
    if h.id.init.load(Ordering::Acquire) != INIT_DONE {
        return Err(bad(
            "not initialised (its header was never published)".into()
        ));
    }
    if h.id.magic.load(Ordering::Relaxed) != MAGIC {
        return Err(bad("not a shmq segment (bad magic)".into()));
    }
    let version = h.id.version.load(Ordering::Relaxed);
    if version != VERSION {
        return Err(bad(format!(
            "layout version {version}, this build reads version {VERSION}"
        )));
    }
    let hs = h.id.header_size.load(Ordering::Relaxed) as u64;
    let hdr_len = std::mem::size_of::<Header>() as u64;
    if hs != hdr_len {
        return Err(bad(format!("header size {hs}, expected {hdr_len}")));
    }
    let ro = h.id.ring_offset.load(Ordering::Relaxed);
    let cap = h.id.capacity.load(Ordering::Relaxed);
    if ro != RING_OFFSET || !(MIN_CAPACITY..=MAX_CAPACITY).contains(&cap) || !cap.is_multiple_of(64)
    {
        return Err(bad(format!(
            "bad geometry (ring offset {ro}, capacity {cap})"
        )));
    }
    // No overflow: ro == RING_OFFSET and cap <= MAX_CAPACITY.
    if object_size < ro + cap {
        return Err(bad(format!(
            "truncated: {object_size} bytes, header says {}",
            ro + cap
        )));
    }
    Ok(cap)
}

impl Segment {
    /// Create a new segment with a ring of `capacity` bytes (rounded up to a multiple of 64).
    /// The segment holds one file descriptor (`O_CLOEXEC`) for its whole life.
    pub fn create(loc: Location, capacity: usize, opts: &CreateOptions) -> Result<Segment> {
        if let Location::Name(n) = &loc {
            validate_name(n)?;
        }
        let capacity = normalize_capacity(capacity)?;
        let size = segment_size(capacity);
        let (file, meta) = match create_new(&loc, opts.mode) {
            Ok(f) => f,
            Err(CreateError::Exists) => {
                let stale = Self::existing_stale_object(&loc);
                if let (Some(object), true) = (stale, opts.replace_stale) {
                    // Only the object judged stale is removed: if the name holds another
                    // object by now (Ok(false)), it stays, and the retry reports it.
                    match unlink_if_same(&loc, object) {
                        Ok(_) | Err(Error::NotFound(_)) => {}
                        Err(e) => return Err(e),
                    }
                    let mut o = opts.clone();
                    o.replace_stale = false;
                    return Self::create(loc, capacity as usize, &o);
                }
                return Err(Error::AlreadyExists {
                    name: error_place(&loc),
                    stale: stale.is_some(),
                });
            }
            Err(CreateError::Other(e)) => return Err(e),
        };
        let object = ObjectId::of(&meta);
        let path = loc.object_path();
        // From here on, any failure must remove the half-made object (if the name still
        // refers to it).
        let cleanup = |e: Error| {
            let _ = unlink_if_same(&loc, object);
            e
        };
        let fd = file.as_raw_fd();
        // SAFETY: fd is a valid open descriptor owned by `file`.
        if unsafe { libc::fchmod(fd, opts.mode as libc::mode_t) } < 0 {
            let e = std::io::Error::last_os_error();
            return Err(cleanup(Error::io_at("chmod", &path, e)));
        }
        file.set_len(size)
            .map_err(|e| cleanup(Error::io_at("resize", &path, e)))?;
        // SAFETY: fd is valid; posix_fallocate returns an error number instead of setting errno.
        let r = unsafe { libc::posix_fallocate(fd, 0, size as libc::off_t) };
        if r != 0 && r != libc::EOPNOTSUPP && r != libc::EINVAL {
            let e = std::io::Error::from_raw_os_error(r);
            return Err(cleanup(Error::Io(std::io::Error::new(
                e.kind(),
                format!(
                    "reserving {size} bytes for {} failed ({e}); free space in {} or use a smaller capacity",
                    path.display(),
                    match &loc {
                        Location::Name(_) => "/dev/shm".to_string(),
                        Location::Path(p) => format!("the file system of {}", p.display()),
                    }
                ),
            ))));
        }
        let map = MmapOptions::new()
            .len(size as usize)
            .map_raw(&file)
            .map_err(|e| cleanup(Error::io_at("map", &path, e)))?;
        // The attach marker, before any header word is written (see the module docs: a
        // written header without a marker means its creator is gone).
        take_marker(&file, &path).map_err(cleanup)?;
        let seg = Segment {
            map,
            file: Some(file),
            location: loc,
            object,
            capacity,
            ring_offset: RING_OFFSET,
            creator: Some(std::process::id()),
            remove_on_drop: true,
        };
        let h = seg.header();
        let me = std::process::id();
        h.id.magic.store(MAGIC, Ordering::Relaxed);
        h.id.version.store(VERSION, Ordering::Relaxed);
        h.id.header_size
            .store(std::mem::size_of::<Header>() as u32, Ordering::Relaxed);
        h.id.ring_offset.store(RING_OFFSET, Ordering::Relaxed);
        h.id.capacity.store(capacity, Ordering::Relaxed);
        h.id.creator_pid.store(me, Ordering::Relaxed);
        h.id.creator_start
            .store(sync::process_start_time(me).unwrap_or(0), Ordering::Relaxed);
        h.id.created_unix.store(now_unix(), Ordering::Relaxed);
        h.id.codec.store(opts.codec, Ordering::Relaxed);
        h.id.item_size.store(opts.item_size, Ordering::Relaxed);
        h.set_type_name(&opts.type_name);
        let flags = if opts.persistent { FLAG_PERSISTENT } else { 0 };
        h.shared.flags.store(flags, Ordering::Relaxed);
        h.tasks
            .max_messages
            .store(opts.max_messages, Ordering::Relaxed);
        // Everything else is zero from ftruncate. Publish.
        h.id.init.store(INIT_DONE, Ordering::Release);
        Ok(seg)
    }

    /// The object now at `loc`, if it is stale (see [`Segment::is_stale`]) or was abandoned
    /// while being created ([`Peek::is_abandoned`], and no process maps it). Never a
    /// foreign object: anything that does not open as a shmq segment is not stale.
    fn existing_stale_object(loc: &Location) -> Option<ObjectId> {
        // An object whose creator died before publishing the header is stale too (checked
        // first: `open` would wait for it to be initialised).
        if let Location::Name(n) = loc {
            if let Ok(p) = peek(n) {
                if p.is_abandoned() {
                    return Some(p.object);
                }
            }
        }
        match Self::open(loc.clone()) {
            Ok(seg) if seg.is_stale() => Some(seg.object),
            _ => None,
        }
    }

    /// Open an existing segment, waiting (bounded) for a concurrent creator to finish.
    /// Never blocks on a foreign object (a FIFO is [`Error::Incompatible`] at once). The
    /// segment holds one file descriptor (`O_CLOEXEC`) for its whole life.
    pub fn open(loc: Location) -> Result<Segment> {
        if let Location::Name(n) = &loc {
            validate_name(n)?;
        }
        let display = loc.display_name();
        let path = loc.object_path();
        let incompatible = |reason: String| Error::Incompatible {
            name: display.clone(),
            reason,
        };
        let (file, meta) = open_existing(&loc, true)?;
        let object = ObjectId::of(&meta);
        let start = Instant::now();
        // Wait for the creator to size the object and publish the header.
        let mut size = meta.len();
        let (map, size) = loop {
            // A creator sizes the object in one ftruncate, from 0 to the whole segment: any
            // other size below the smallest segment is not a shmq object (no need to wait).
            if size > 0 && size < RING_OFFSET {
                return Err(incompatible(format!(
                    "{size} bytes: too small for a shmq segment (not a shmq object)"
                )));
            }
            if size >= RING_OFFSET {
                let map = MmapOptions::new()
                    .len(RING_OFFSET as usize)
                    .map_raw(&file)
                    .map_err(|e| Error::io_at("map", &path, e))?;
                // SAFETY: the mapping is RING_OFFSET >= size_of::<Header>() bytes, page
                // aligned, and the Header consists of atomics only.
                let h = unsafe { &*(map.as_ptr() as *const Header) };
                if h.id.init.load(Ordering::Acquire) == INIT_DONE {
                    break (map, size);
                }
                let magic = h.id.magic.load(Ordering::Relaxed);
                if magic != 0 && magic != MAGIC {
                    return Err(incompatible("not a shmq segment (bad magic)".into()));
                }
            }
            if start.elapsed() >= INIT_WAIT {
                return Err(incompatible(format!(
                    "not initialised after {:?} (size {size} bytes): not a shmq segment, or its creator died while creating it",
                    INIT_WAIT
                )));
            }
            std::thread::sleep(Duration::from_millis(1));
            size = file
                .metadata()
                .map_err(|e| Error::io_at("fstat", &path, e))?
                .len();
        };
        // SAFETY: as above.
        let h = unsafe { &*(map.as_ptr() as *const Header) };
        let capacity = validate_layout(h, size, &display)?;
        drop(map);
        let map = MmapOptions::new()
            .len((RING_OFFSET + capacity) as usize)
            .map_raw(&file)
            .map_err(|e| Error::io_at("map", &path, e))?;
        take_marker(&file, &path)?;
        Ok(Segment {
            map,
            file: Some(file),
            location: loc,
            object,
            capacity,
            ring_offset: RING_OFFSET,
            creator: None,
            remove_on_drop: false,
        })
    }

    /// The header.
    pub fn header(&self) -> &Header {
        // SAFETY: the mapping is at least RING_OFFSET bytes (checked at create/open), page
        // aligned (>= align_of::<Header>() = 64), and Header is all atomics, so a shared
        // reference is sound even while other processes write the words.
        unsafe { &*(self.map.as_ptr() as *const Header) }
    }

    /// Pointer to the ring's first byte and the ring's capacity: the private copies
    /// validated at create/open, never re-read from the header.
    pub fn ring(&self) -> (*mut u8, u64) {
        debug_assert!(self.ring_offset + self.capacity <= self.map.len() as u64);
        // SAFETY: ring_offset + capacity <= mapping length was validated at create/open and
        // both are private copies that nothing else can change.
        let ptr = unsafe { self.map.as_mut_ptr().add(self.ring_offset as usize) };
        (ptr, self.capacity)
    }

    /// Ring capacity in bytes (the private copy validated at create/open).
    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    /// The file the segment is mapped from, unless the ring took it.
    #[cfg(test)]
    pub(crate) fn file(&self) -> Option<&File> {
        self.file.as_ref()
    }

    /// Claim this handle's lock identity ([`sync::Holder`]) on the segment. The holder's
    /// descriptor has an open file description of its own, not the mapped one: a mapping
    /// keeps its file description alive, and a `fork` child inherits mappings, so a lock on
    /// the mapped description would outlive the parent in such a child. The mapped
    /// descriptor is re-opened through `/proc/self/fd` (the same object for certain) and then
    /// closed (the mapping does not need it); without `/proc`, the name is opened again and
    /// checked to be the same object. `in_use` says whether a lock word names an id now.
    pub(crate) fn claim_holder(&mut self, in_use: impl Fn(u32) -> bool) -> Result<sync::Holder> {
        let mapped = self.file.take();
        let object = self.object;
        let loc = self.location.clone();
        let reopen_loc = loc.clone();
        sync::Holder::claim(
            move || {
                if let Some(f) = &mapped {
                    let path = format!("/proc/self/fd/{}", f.as_raw_fd());
                    if let Ok(g) = File::options().read(true).write(true).open(path) {
                        return Ok(g);
                    }
                }
                let (g, meta) = open_existing(&loc, true)?;
                if ObjectId::of(&meta) != object {
                    return Err(Error::Incompatible {
                        name: loc.display_name(),
                        reason: "the name was given to another object while it was being opened"
                            .into(),
                    });
                }
                Ok(g)
            },
            in_use,
            Box::new(move || {
                open_existing(&reopen_loc, true)
                    .map(|(f, _)| f)
                    .map_err(std::io::Error::other)
            }),
        )
    }

    /// Device and inode of the object this segment maps.
    pub fn object_id(&self) -> ObjectId {
        self.object
    }

    /// Where this segment lives.
    pub fn location(&self) -> &Location {
        &self.location
    }

    /// Whether dropping this handle removes the name. Only honoured in the process that
    /// created the segment through this handle, and only while the name still refers to
    /// the created object (see the [module docs](self#who-removes-a-name)): a segment that
    /// was opened never removes the name.
    pub fn set_remove_on_drop(&mut self, yes: bool) {
        self.remove_on_drop = yes;
    }

    /// Whether the segment was created to outlive its creator ([`FLAG_PERSISTENT`]).
    pub fn is_persistent(&self) -> bool {
        self.header().shared.flags.load(Ordering::Relaxed) & FLAG_PERSISTENT != 0
    }

    /// Stale: not created to outlive its creator ([`FLAG_PERSISTENT`]) and no mapping but
    /// this one holds the attach marker (see the
    /// [module docs](self#stale-objects-the-attach-marker)). `false` once the ring took
    /// the mapped descriptor (the question cannot be asked without it).
    pub fn is_stale(&self) -> bool {
        !self.is_persistent() && !self.attached_by_others()
    }

    /// Whether a mapping other than this one (in any process, including this one's other
    /// handles) holds the attach marker. `true` when it cannot be asked (the ring took the
    /// mapped descriptor, or the kernel call failed).
    pub fn attached_by_others(&self) -> bool {
        self.file.as_ref().is_none_or(attached_by_others)
    }

    /// Whether the creator process recorded in the header is still running, as seen from
    /// this process's PID namespace ([`sync::process_alive`]). Informational only: a
    /// creator in another PID namespace looks dead; staleness does not depend on it.
    pub fn creator_alive(&self) -> bool {
        let h = self.header();
        sync::process_alive(
            h.id.creator_pid.load(Ordering::Relaxed),
            h.id.creator_start.load(Ordering::Relaxed),
        )
    }
}

impl Drop for Segment {
    fn drop(&mut self) {
        // The name belongs to the object that holds it: remove it only in the process that
        // created this object (not in a forked child dropping its copy) and only if the
        // name still refers to this object (not to one created after a `remove`).
        if self.remove_on_drop && self.creator == Some(std::process::id()) {
            let _ = unlink_if_same(&self.location, self.object);
        }
    }
}

/// Take the attach marker (an OFD read lock on [`MAPPED_BYTE`]) on `file`, the descriptor
/// a segment is mapped from. A write lock that another description holds on the byte
/// (only a hostile process takes one) already marks the object attached: not an error.
fn take_marker(file: &File, path: &Path) -> Result<()> {
    match sync::ofd_lock(file, libc::F_RDLCK, MAPPED_BYTE, libc::F_OFD_SETLK) {
        Ok(_) => Ok(()),
        Err(e) if matches!(e.raw_os_error(), Some(libc::EAGAIN) | Some(libc::EACCES)) => Ok(()),
        Err(e) => Err(Error::Io(std::io::Error::new(
            e.kind(),
            format!(
                "taking the attach marker (F_OFD_SETLK) on {}: {e}",
                path.display()
            ),
        ))),
    }
}

/// Whether some open file description other than `file`'s holds the attach marker of the
/// object `file` refers to, i.e. whether some mapping other than the caller's own (through
/// this description) exists, in any process or PID namespace. `file` may be read-only.
/// Errors of the kernel call count as attached (keeping a queue is safe; removing a live
/// one is not).
pub fn attached_by_others(file: &File) -> bool {
    !matches!(
        sync::ofd_lock(file, libc::F_WRLCK, MAPPED_BYTE, libc::F_OFD_GETLK),
        Ok(t) if t == libc::F_UNLCK as i16
    )
}

/// Whether the named object is mapped by some process now (its attach marker is held; see
/// the module docs on the attach marker). `true` if it cannot be told
/// (the object cannot be opened, except when it is missing).
pub fn is_attached(name: &str) -> bool {
    match peek(name) {
        Ok(p) => p.attached,
        Err(Error::NotFound(_)) => false,
        Err(_) => true,
    }
}

/// Path of a named queue's object in `/dev/shm` (Linux).
pub fn shm_path(name: &str) -> PathBuf {
    Path::new("/dev/shm").join(format!("{PREFIX}{name}"))
}

/// How old an uninitialised object that records no creator pid must be before it counts as
/// abandoned (its creator may still be between `shm_open` and writing its pid, e.g. while
/// `posix_fallocate` reserves a large ring).
pub const UNINIT_GRACE: Duration = Duration::from_secs(30);

/// A quick look at a named object without mapping it or waiting for its creator.
#[derive(Clone, Debug)]
pub struct Peek {
    /// The header was published (`init` is [`INIT_DONE`]).
    pub initialised: bool,
    /// Not a shmq segment: the magic word is neither [`MAGIC`] nor still zero.
    pub foreign: bool,
    /// Creator pid recorded in the header, if any.
    pub creator_pid: Option<u32>,
    /// Size of the object in bytes.
    pub size: u64,
    /// Time since the object was last modified (its creation, for a header never published).
    pub age: Duration,
    /// Some process maps the object: its attach marker is held ([`attached_by_others`],
    /// asked after the header words were read).
    pub attached: bool,
    /// The object that was read (device and inode), for removals that must not hit an
    /// object created under the same name afterwards ([`unlink_if_same`]).
    pub object: ObjectId,
}

/// Read a named object's `init` word and creator pid with `pread` (no mapping, so no
/// reference into shared memory, and no waiting for a creator still at work). Never blocks:
/// an object that is not a regular file is [`Error::Incompatible`] (see the
/// module docs on opening a path in a shared directory); a missing one is
/// [`Error::NotFound`].
pub fn peek(name: &str) -> Result<Peek> {
    use std::os::unix::fs::FileExt;
    validate_name(name)?;
    let loc = Location::Name(name.to_string());
    let (file, meta) = open_existing(&loc, false)?;
    let read_err = |e| Error::io_at("read", &loc.object_path(), e);
    let read_u32 = |off: usize| -> Result<Option<u32>> {
        let mut buf = [0u8; 4];
        let n = file.read_at(&mut buf, off as u64).map_err(read_err)?;
        Ok((n == 4).then(|| u32::from_ne_bytes(buf)))
    };
    let base = std::mem::offset_of!(Header, id);
    let mut magic = [0u8; 8];
    let magic = match file
        .read_at(
            &mut magic,
            (base + std::mem::offset_of!(Identity, magic)) as u64,
        )
        .map_err(read_err)?
    {
        8 => u64::from_ne_bytes(magic),
        _ => 0,
    };
    let init = read_u32(base + std::mem::offset_of!(Identity, init))?;
    let pid = read_u32(base + std::mem::offset_of!(Identity, creator_pid))?.filter(|&p| p != 0);
    // After reading the header: a creator takes the marker before writing any header word,
    // so a written magic read above with no marker seen here means that creator is gone.
    let attached = attached_by_others(&file);
    Ok(Peek {
        initialised: magic == MAGIC && init == Some(INIT_DONE),
        // Another program's: a foreign magic, or a size no shmq object ever has (a creator
        // sizes its object in one ftruncate, from 0 to at least a header and a ring).
        foreign: (magic != 0 && magic != MAGIC) || (meta.len() > 0 && meta.len() < RING_OFFSET),
        // A creator pid is only meaningful in a shmq header (the creator writes the magic
        // before the pid); garbage in a foreign object must not pass for a dead creator.
        creator_pid: pid.filter(|_| magic == MAGIC),
        size: meta.len(),
        age: meta
            .modified()
            .ok()
            .and_then(|m| m.elapsed().ok())
            .unwrap_or_default(),
        attached,
        object: ObjectId::of(&meta),
    })
}

impl Peek {
    /// Abandoned while being created: never initialised, nobody holds its attach marker,
    /// and either its creator got as far as writing the header (it took the marker before
    /// that, so it is gone) or, with an empty header, it is older than [`UNINIT_GRACE`] (a
    /// creator may still be between `open` and mapping it). No pid is consulted.
    pub fn is_abandoned(&self) -> bool {
        !self.initialised
            && !self.foreign
            && !self.attached
            && (self.creator_pid.is_some() || self.age > UNINIT_GRACE)
    }
}

/// Names of every shmq segment in `/dev/shm` (whatever their state).
pub fn list_names() -> Result<Vec<String>> {
    let mut names = Vec::new();
    let dir = Path::new("/dev/shm");
    let err = |e| Error::io_at("read directory", dir, e);
    for entry in std::fs::read_dir(dir).map_err(err)? {
        let entry = entry.map_err(err)?;
        if let Some(n) = entry.file_name().to_str() {
            if let Some(rest) = n.strip_prefix(PREFIX) {
                if validate_name(rest).is_ok() {
                    names.push(rest.to_string());
                }
            }
        }
    }
    names.sort();
    Ok(names)
}

/// For every shmq object mapped by some process: the pids mapping it, from one pass over
/// `/proc/*/maps` (processes of other users may be invisible without privileges, and
/// processes of other PID namespaces always are). Informational only (`shmq` shows it):
/// whether an object is in use is its attach marker's business ([`is_attached`]).
pub fn mapped_all() -> std::collections::HashMap<String, Vec<u32>> {
    let mut out: std::collections::HashMap<String, Vec<u32>> = Default::default();
    let prefix = format!("/dev/shm/{PREFIX}");
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(maps) = std::fs::read_to_string(format!("/proc/{pid}/maps")) else {
            continue;
        };
        let mut seen: Vec<&str> = Vec::new();
        for line in maps.lines() {
            let path = line.split_whitespace().nth(5);
            if let Some(name) = path.and_then(|p| p.strip_prefix(prefix.as_str())) {
                if !seen.contains(&name) {
                    seen.push(name);
                    out.entry(name.to_string()).or_default().push(pid);
                }
            }
        }
    }
    out
}

/// Pids of the processes that have the named queue's object mapped now (from
/// `/proc/<pid>/maps`; processes of other users may be invisible without privileges,
/// other PID namespaces' always are). Informational only, like `mapped_all`.
pub fn mapped_by(name: &str) -> Vec<u32> {
    mapped_all().remove(name).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_rules() {
        assert!(validate_name("ok_name-1.2").is_ok());
        for bad in ["", ".hidden", "a/b", "sp ace", "é", &"x".repeat(201)] {
            assert!(
                matches!(validate_name(bad), Err(Error::InvalidName { .. })),
                "{bad:?}"
            );
        }
        assert!(validate_name(&"x".repeat(200)).is_ok());
    }

    #[test]
    fn capacity_rules() {
        assert_eq!(normalize_capacity(100).unwrap(), 128);
        assert!(normalize_capacity(0).is_err());
        assert!(normalize_capacity(usize::MAX).is_err());
    }

    #[test]
    fn header_fits_and_type_name_roundtrips() {
        let name = format!("unit-hdr-{}", std::process::id());
        let opts = CreateOptions {
            type_name: "my::Type".into(),
            ..Default::default()
        };
        let seg = Segment::create(Location::Name(name.clone()), 4096, &opts).unwrap();
        assert_eq!(seg.header().type_name(), "my::Type");
        assert!(seg.creator_alive());
        let other = Segment::open(Location::Name(name.clone())).unwrap();
        assert_eq!(other.ring().1, 4096);
        drop(seg);
        assert!(matches!(
            Segment::open(Location::Name(name)),
            Err(Error::NotFound(_))
        ));
    }

    /// A zeroed page holding a header (all atomics: zero is a valid value).
    #[repr(C, align(4096))]
    struct Page([u8; 4096]);

    fn with_header(f: impl FnOnce(&Header)) {
        let page = Box::new(Page([0; 4096]));
        // SAFETY: the page is 4096-aligned and 4096 >= size_of::<Header>() bytes; Header is
        // all atomics, for which zero bytes are valid; the box outlives the reference.
        let h = unsafe { &*(page.as_ref() as *const Page as *const Header) };
        f(h)
    }

    fn publish(h: &Header, cap: u64) {
        h.id.magic.store(MAGIC, Ordering::Relaxed);
        h.id.version.store(VERSION, Ordering::Relaxed);
        h.id.header_size
            .store(std::mem::size_of::<Header>() as u32, Ordering::Relaxed);
        h.id.ring_offset.store(RING_OFFSET, Ordering::Relaxed);
        h.id.capacity.store(cap, Ordering::Relaxed);
        h.id.init.store(INIT_DONE, Ordering::Release);
    }

    fn reason(r: Result<u64>) -> String {
        match r {
            Err(Error::Incompatible { name, reason }) => {
                assert_eq!(name, "t");
                reason
            }
            other => panic!("expected Incompatible, got {other:?}"),
        }
    }

    #[test]
    fn validate_layout_checks_every_word_against_the_size() {
        with_header(|h| {
            assert!(reason(validate_layout(h, 1 << 20, "t")).contains("not initialised"));
            publish(h, 4096);
            assert_eq!(validate_layout(h, RING_OFFSET + 4096, "t").unwrap(), 4096);
            assert!(reason(validate_layout(h, RING_OFFSET + 4095, "t")).contains("truncated"));
            for bad in [0, 32, 100, MAX_CAPACITY + 64, u64::MAX] {
                h.id.capacity.store(bad, Ordering::Relaxed);
                assert!(reason(validate_layout(h, u64::MAX, "t")).contains("bad geometry"));
            }
            h.id.capacity.store(4096, Ordering::Relaxed);
            h.id.ring_offset.store(0, Ordering::Relaxed);
            assert!(reason(validate_layout(h, u64::MAX, "t")).contains("bad geometry"));
            h.id.ring_offset.store(RING_OFFSET, Ordering::Relaxed);
            h.id.header_size.store(8, Ordering::Relaxed);
            assert!(reason(validate_layout(h, u64::MAX, "t")).contains("header size"));
            h.id.header_size
                .store(std::mem::size_of::<Header>() as u32, Ordering::Relaxed);
            h.id.version.store(VERSION + 1, Ordering::Relaxed);
            assert!(reason(validate_layout(h, u64::MAX, "t")).contains("layout version"));
            h.id.version.store(VERSION, Ordering::Relaxed);
            h.id.magic.store(7, Ordering::Relaxed);
            assert!(reason(validate_layout(h, u64::MAX, "t")).contains("bad magic"));
        });
    }

    #[test]
    fn capacity_is_the_private_copy() {
        let name = format!("unit-cap-{}", std::process::id());
        let seg = Segment::create(Location::Name(name.clone()), 4096, &Default::default()).unwrap();
        let other = Segment::open(Location::Name(name)).unwrap();
        seg.header().id.capacity.store(0, Ordering::Relaxed);
        assert_eq!((seg.capacity(), other.capacity()), (4096, 4096));
        assert_eq!((seg.ring().1, other.ring().1), (4096, 4096));
    }

    #[test]
    fn the_mapped_file_stays_open_for_the_segments_life() {
        let name = format!("unit-fd-{}", std::process::id());
        let seg = Segment::create(Location::Name(name.clone()), 4096, &Default::default()).unwrap();
        let other = Segment::open(Location::Name(name.clone())).unwrap();
        for s in [&seg, &other] {
            let m = s.file().unwrap().metadata().unwrap();
            assert_eq!(ObjectId::of(&m), s.object_id());
            let fd = s.file().unwrap().as_raw_fd();
            // SAFETY: F_GETFD on a descriptor we own.
            let fl = unsafe { libc::fcntl(fd, libc::F_GETFD) };
            assert!(fl & libc::FD_CLOEXEC != 0, "close-on-exec");
            // SAFETY: as above.
            let st = unsafe { libc::fcntl(fd, libc::F_GETFL) };
            assert_eq!(st & libc::O_NONBLOCK, 0, "back to blocking mode");
            let link = std::fs::read_link(format!("/proc/self/fd/{fd}")).unwrap();
            assert_eq!(link, shm_path(&name));
        }
    }

    #[test]
    fn unlink_if_same_leaves_another_object_alone() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x");
        let loc = Location::Path(p.clone());
        std::fs::write(&p, b"a").unwrap();
        let a = ObjectId::of(&std::fs::metadata(&p).unwrap());
        let _keep_a_alive = File::open(&p).unwrap(); // so that b cannot reuse a's inode
        std::fs::remove_file(&p).unwrap();
        std::fs::write(&p, b"b").unwrap();
        assert!(!unlink_if_same(&loc, a).unwrap());
        assert!(p.exists());
        let b = ObjectId::of(&std::fs::metadata(&p).unwrap());
        assert!(unlink_if_same(&loc, b).unwrap());
        assert!(!p.exists());
        assert!(matches!(unlink_if_same(&loc, b), Err(Error::NotFound(_))));
    }

    #[test]
    fn open_existing_refuses_what_is_not_a_regular_file_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let sub = dir.path().join("dir");
        std::fs::create_dir(&sub).unwrap();
        let file = dir.path().join("file");
        std::fs::write(&file, b"x").unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&file, &link).unwrap();
        for (p, kind) in [
            (&fifo, "a FIFO"),
            (&sub, "a directory"),
            (&link, "a symbolic link"),
        ] {
            for write in [false, true] {
                match open_existing(&Location::Path(p.clone()), write) {
                    Err(Error::Incompatible { reason, .. }) => {
                        assert_eq!(reason, format!("not a regular file ({kind})"))
                    }
                    other => panic!("{p:?}: {other:?}"),
                }
            }
        }
        assert!(open_existing(&Location::Path(file), true).is_ok());
        assert!(matches!(
            open_existing(&Location::Path(dir.path().join("none")), false),
            Err(Error::NotFound(s)) if s.ends_with("/none")
        ));
    }
}
