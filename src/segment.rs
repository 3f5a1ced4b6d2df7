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

use std::ffi::CString;
use std::fs::File;
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::fs::OpenOptionsExt;
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
/// Value of [`Header::init`] once the creator has finished writing the header.
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
    /// [`VERSION`].
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
}

/// Check a queue name against the naming rules (see the module docs).
///
/// ```
/// assert!(shmq::segment::validate_name("jobs-1.v2").is_ok());
/// assert!(shmq::segment::validate_name("a/b").is_err());
/// assert!(shmq::segment::validate_name("").is_err());
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

/// The POSIX shared-memory object name for a queue name (`/shmq.<name>`).
pub fn object_name(name: &str) -> Result<CString> {
    validate_name(name)?;
    Ok(CString::new(format!("/{PREFIX}{name}")).expect("validated name has no NUL"))
}

/// Options for creating a segment.
#[derive(Clone, Debug)]
pub struct CreateOptions {
    /// Permission bits of the new object (default 0o600).
    pub mode: u32,
    /// Replace an existing segment whose creator is dead.
    pub replace_stale: bool,
    /// Codec id to record.
    pub codec: u32,
    /// Item size to record (Pod codec).
    pub item_size: u32,
    /// Type name to record.
    pub type_name: String,
    /// Record that the segment is meant to outlive its creator ([`FLAG_PERSISTENT`]).
    pub persistent: bool,
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
        }
    }
}

/// A mapped segment. Dropping it unmaps; if `remove_on_drop` is set, the name is removed too.
pub struct Segment {
    map: MmapRaw,
    location: Location,
    remove_on_drop: bool,
}

// SAFETY: the mapping is shared memory accessed only through atomics and raw-pointer copies
// (never through `&mut`), so handing the handle to another thread is no different from
// another process mapping it.
unsafe impl Send for Segment {}
// SAFETY: as above; every method takes `&self` and touches shared words atomically.
unsafe impl Sync for Segment {}

fn shm_open(name: &CString, flags: i32, mode: u32) -> std::io::Result<File> {
    // SAFETY: `name` is a valid NUL-terminated string; shm_open returns a new fd or -1.
    let fd =
        unsafe { libc::shm_open(name.as_ptr(), flags | libc::O_CLOEXEC, mode as libc::mode_t) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` was just returned by shm_open and is owned by nobody else.
    Ok(File::from(unsafe { OwnedFd::from_raw_fd(fd) }))
}

fn shm_unlink(name: &CString) -> std::io::Result<()> {
    // SAFETY: `name` is a valid NUL-terminated string.
    if unsafe { libc::shm_unlink(name.as_ptr()) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Remove the named queue's shared-memory object. Processes that have it open keep working;
/// new `open`s fail with [`Error::NotFound`].
pub fn remove(name: &str) -> Result<()> {
    let obj = object_name(name)?;
    match shm_unlink(&obj) {
        Ok(()) => Ok(()),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Err(Error::NotFound(name.into())),
        Err(e) => Err(Error::Io(e)),
    }
}

fn remove_location(loc: &Location) -> Result<()> {
    match loc {
        Location::Name(n) => remove(n),
        Location::Path(p) => std::fs::remove_file(p).map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                Error::NotFound(p.display().to_string())
            } else {
                Error::Io(e)
            }
        }),
    }
}

fn open_file(loc: &Location, create: bool, mode: u32) -> std::io::Result<File> {
    match loc {
        Location::Name(n) => {
            let obj = object_name(n).map_err(|e| {
                std::io::Error::new(std::io::ErrorKind::InvalidInput, e.to_string())
            })?;
            let flags = if create {
                libc::O_RDWR | libc::O_CREAT | libc::O_EXCL
            } else {
                libc::O_RDWR
            };
            shm_open(&obj, flags, mode)
        }
        Location::Path(p) => {
            let mut o = std::fs::OpenOptions::new();
            o.read(true).write(true);
            if create {
                o.create_new(true).mode(mode);
            }
            o.open(p)
        }
    }
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

fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Segment {
    /// Create a new segment with a ring of `capacity` bytes (rounded up to a multiple of 64).
    pub fn create(loc: Location, capacity: usize, opts: &CreateOptions) -> Result<Segment> {
        if let Location::Name(n) = &loc {
            validate_name(n)?;
        }
        let capacity = normalize_capacity(capacity)?;
        let size = segment_size(capacity);
        let file = match open_file(&loc, true, opts.mode) {
            Ok(f) => f,
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
                let stale = Self::existing_is_stale(&loc);
                if stale && opts.replace_stale {
                    match remove_location(&loc) {
                        Ok(()) | Err(Error::NotFound(_)) => {}
                        Err(e) => return Err(e),
                    }
                    let mut o = opts.clone();
                    o.replace_stale = false;
                    return Self::create(loc, capacity as usize, &o);
                }
                return Err(Error::AlreadyExists {
                    name: loc.display_name(),
                    stale,
                });
            }
            Err(e) => return Err(Error::Io(e)),
        };
        // From here on, any failure must remove the half-made object.
        let cleanup = |e: Error| {
            let _ = remove_location(&loc);
            e
        };
        let fd = std::os::fd::AsRawFd::as_raw_fd(&file);
        // SAFETY: fd is a valid open descriptor owned by `file`.
        if unsafe { libc::fchmod(fd, opts.mode as libc::mode_t) } < 0 {
            return Err(cleanup(Error::last_os("fchmod")));
        }
        file.set_len(size).map_err(|e| cleanup(Error::Io(e)))?;
        // SAFETY: fd is valid; posix_fallocate returns an error number instead of setting errno.
        let r = unsafe { libc::posix_fallocate(fd, 0, size as libc::off_t) };
        if r != 0 && r != libc::EOPNOTSUPP && r != libc::EINVAL {
            let e = std::io::Error::from_raw_os_error(r);
            return Err(cleanup(Error::Io(std::io::Error::new(
                e.kind(),
                format!(
                    "reserving {size} bytes for the queue failed ({e}); free space in {} or use a smaller capacity",
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
            .map_err(|e| cleanup(Error::Io(e)))?;
        let seg = Segment {
            map,
            location: loc,
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
        // Everything else is zero from ftruncate. Publish.
        h.id.init.store(INIT_DONE, Ordering::Release);
        Ok(seg)
    }

    fn existing_is_stale(loc: &Location) -> bool {
        // An object whose creator died before publishing the header is stale too (checked
        // first: `open` would wait for it to be initialised).
        if let Location::Name(n) = loc {
            if is_abandoned(n) {
                return true;
            }
        }
        match Self::open(loc.clone()) {
            Ok(seg) => seg.is_stale(),
            Err(_) => false,
        }
    }

    /// Open an existing segment, waiting (bounded) for a concurrent creator to finish.
    pub fn open(loc: Location) -> Result<Segment> {
        if let Location::Name(n) = &loc {
            validate_name(n)?;
        }
        let display = loc.display_name();
        let incompatible = |reason: String| Error::Incompatible {
            name: display.clone(),
            reason,
        };
        let file = match open_file(&loc, false, 0) {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(Error::NotFound(display))
            }
            Err(e) => return Err(Error::Io(e)),
        };
        let start = Instant::now();
        let hdr_len = std::mem::size_of::<Header>() as u64;
        // Wait for the creator to size the object and publish the header.
        let (map, size) = loop {
            let size = file.metadata()?.len();
            if size >= RING_OFFSET {
                let map = MmapOptions::new()
                    .len(RING_OFFSET as usize)
                    .map_raw(&file)?;
                // SAFETY: the mapping is RING_OFFSET >= size_of::<Header>() bytes, page
                // aligned, and the Header consists of atomics only.
                let h = unsafe { &*(map.as_ptr() as *const Header) };
                if h.id.init.load(Ordering::Acquire) == INIT_DONE {
                    break (map, size);
                }
                if h.id.magic.load(Ordering::Relaxed) != 0
                    && h.id.magic.load(Ordering::Relaxed) != MAGIC
                {
                    return Err(incompatible("not a shmq segment (bad magic)".into()));
                }
            } else if size > 0 && size < hdr_len {
                // Could still be growing; keep waiting.
            }
            if start.elapsed() >= INIT_WAIT {
                return Err(incompatible(format!(
                    "not initialised after {:?} (size {size} bytes): not a shmq segment, or its creator died while creating it",
                    INIT_WAIT
                )));
            }
            std::thread::sleep(Duration::from_millis(1));
        };
        // SAFETY: as above.
        let h = unsafe { &*(map.as_ptr() as *const Header) };
        let magic = h.id.magic.load(Ordering::Relaxed);
        if magic != MAGIC {
            return Err(incompatible("not a shmq segment (bad magic)".into()));
        }
        let version = h.id.version.load(Ordering::Relaxed);
        if version != VERSION {
            return Err(incompatible(format!(
                "layout version {version}, this build reads version {VERSION}"
            )));
        }
        let hs = h.id.header_size.load(Ordering::Relaxed);
        if hs as u64 != hdr_len {
            return Err(incompatible(format!(
                "header size {hs}, expected {hdr_len}"
            )));
        }
        let ro = h.id.ring_offset.load(Ordering::Relaxed);
        let cap = h.id.capacity.load(Ordering::Relaxed);
        if ro != RING_OFFSET
            || !(MIN_CAPACITY..=MAX_CAPACITY).contains(&cap)
            || !cap.is_multiple_of(64)
        {
            return Err(incompatible(format!(
                "bad geometry (ring offset {ro}, capacity {cap})"
            )));
        }
        if size < ro + cap {
            return Err(incompatible(format!(
                "truncated: {size} bytes, header says {}",
                ro + cap
            )));
        }
        drop(map);
        let map = MmapOptions::new().len((ro + cap) as usize).map_raw(&file)?;
        Ok(Segment {
            map,
            location: loc,
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

    /// Pointer to the ring's first byte and the ring's capacity.
    pub fn ring(&self) -> (*mut u8, u64) {
        let cap = self.header().id.capacity.load(Ordering::Relaxed);
        // SAFETY: RING_OFFSET + cap <= mapping length was validated at create/open, and the
        // capacity word is immutable after init (a hostile rewrite is caught below).
        let ptr = unsafe { self.map.as_mut_ptr().add(RING_OFFSET as usize) };
        let mapped = self.map.len() as u64 - RING_OFFSET;
        (ptr, cap.min(mapped))
    }

    /// Where this segment lives.
    pub fn location(&self) -> &Location {
        &self.location
    }

    /// Whether dropping this handle removes the name.
    pub fn set_remove_on_drop(&mut self, yes: bool) {
        self.remove_on_drop = yes;
    }

    /// Whether the segment was created to outlive its creator ([`FLAG_PERSISTENT`]).
    pub fn is_persistent(&self) -> bool {
        self.header().shared.flags.load(Ordering::Relaxed) & FLAG_PERSISTENT != 0
    }

    /// Stale: the creator is dead and the segment was not created to outlive it.
    pub fn is_stale(&self) -> bool {
        !self.is_persistent() && !self.creator_alive()
    }

    /// Whether the creator process recorded in the header is still running.
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
        if self.remove_on_drop {
            let _ = remove_location(&self.location);
        }
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
}

/// Read a named object's `init` word and creator pid with `pread` (no mapping, so no
/// reference into shared memory, and no waiting for a creator still at work).
pub fn peek(name: &str) -> std::io::Result<Peek> {
    use std::os::unix::fs::FileExt;
    let path = shm_path(name);
    let file = File::open(&path)?;
    let meta = file.metadata()?;
    let read_u32 = |off: usize| -> std::io::Result<Option<u32>> {
        let mut buf = [0u8; 4];
        Ok((file.read_at(&mut buf, off as u64)? == 4).then(|| u32::from_ne_bytes(buf)))
    };
    let base = std::mem::offset_of!(Header, id);
    let mut magic = [0u8; 8];
    let magic = match file.read_at(
        &mut magic,
        (base + std::mem::offset_of!(Identity, magic)) as u64,
    )? {
        8 => u64::from_ne_bytes(magic),
        _ => 0,
    };
    let init = read_u32(base + std::mem::offset_of!(Identity, init))?;
    let pid = read_u32(base + std::mem::offset_of!(Identity, creator_pid))?.filter(|&p| p != 0);
    Ok(Peek {
        initialised: magic == MAGIC && init == Some(INIT_DONE),
        foreign: magic != 0 && magic != MAGIC,
        // A creator pid is only meaningful in a shmq header (the creator writes the magic
        // before the pid); garbage in a foreign object must not pass for a dead creator.
        creator_pid: pid.filter(|_| magic == MAGIC),
        size: meta.len(),
        age: meta
            .modified()
            .ok()
            .and_then(|m| m.elapsed().ok())
            .unwrap_or_default(),
    })
}

impl Peek {
    /// Abandoned while being created: never initialised, and its recorded creator is dead
    /// (or, with none recorded, it is older than [`UNINIT_GRACE`]). The caller checks
    /// separately that no process maps it.
    pub fn is_abandoned(&self) -> bool {
        !self.initialised
            && !self.foreign
            && match self.creator_pid {
                Some(pid) => !sync::tid_alive(pid),
                None => self.age > UNINIT_GRACE,
            }
    }
}

/// Whether the named object was abandoned while being created ([`Peek::is_abandoned`]) and
/// no process has it mapped. Such an object counts as stale.
pub fn is_abandoned(name: &str) -> bool {
    peek(name).is_ok_and(|p| p.is_abandoned()) && mapped_by(name).is_empty()
}

/// Names of every shmq segment in `/dev/shm` (whatever their state).
pub fn list_names() -> Result<Vec<String>> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir("/dev/shm")? {
        let entry = entry?;
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
/// `/proc/*/maps` (processes of other users may be invisible without privileges).
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
/// `/proc/<pid>/maps`; processes of other users may be invisible without privileges).
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
}
