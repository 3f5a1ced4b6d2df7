//! The segment's layout: the [`Header`] at offset 0 (identity, type name, shared words,
//! producer side, consumer side, task accounting, each block on a cache line of its own),
//! the ring's bytes at [`RING_OFFSET`], the constants they are checked against, and the one
//! initialisation ([`Header::init`]) and the one validation ([`validate_layout`]) of a
//! header.
//!
//! Every header word is an atomic: the memory is shared with other processes (and may be
//! written by a hostile one), so it is only ever reached through `&Header`, never `&mut`,
//! and every word read from it is checked before it bounds anything.

use std::sync::atomic::Ordering;

use super::CreateOptions;
use crate::error::{Error, Result};
// The header's words: std atomics, or loom's under `cfg(loom)` (see `prim`).
use crate::prim::{AtomicU32, AtomicU64};
use crate::sys;

/// `b"SHMQRING"` as a little-endian u64.
pub const MAGIC: u64 = u64::from_le_bytes(*b"SHMQRING");
/// Layout version; bumped on any incompatible change of the header or framing.
pub(crate) const VERSION: u32 = 2;
/// Value of [`Identity::init`] once the creator has finished writing the header.
pub const INIT_DONE: u32 = 0x1417_0001;
/// Offset of the ring's first byte in the segment (one page: the header lives below).
pub const RING_OFFSET: u64 = 4096;
/// Smallest ring capacity accepted by `create`.
pub(crate) const MIN_CAPACITY: u64 = 64;
/// Largest ring capacity accepted by `create` (1 TiB).
pub(crate) const MAX_CAPACITY: u64 = 1 << 40;

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
pub(crate) const FLAG_PERSISTENT: u32 = 1;

/// Words shared by both sides.
#[repr(C, align(64))]
pub struct Shared {
    /// Unused (version 1 kept the closed flag here; since version 2 it is bit 0 of
    /// [`ProducerSide::tail`], so that closing and publishing are ordered by one word).
    pub reserved: AtomicU32,
    /// Waiters word of the consumers sleeping on `data_seq`: bit 0 set while one may be
    /// registered, bits 1..=31 a wrapping registration count (not a count of sleepers; see
    /// `crate::sync`'s waiting protocol and `docs/design.md`, "Sleepers a dead process
    /// leaves behind").
    pub consumers_waiting: AtomicU32,
    /// Waiters word of the producers sleeping on `space_seq` (like `consumers_waiting`).
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
    /// Producer lock word: holder id and waiters bit (see [`crate::sync::RobustLock`]).
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
    /// Waiters word of the threads sleeping in `join` (like `Shared::consumers_waiting`).
    pub join_waiters: AtomicU32,
    /// Largest number of queued messages (`Options::max_messages`; 0: bounded by bytes
    /// only). Written by the creator before `init`, read once at open.
    pub max_messages: AtomicU64,
    /// Random id chosen at creation: two queues created under one name differ in it
    /// (`RawQueue::uid`; 0 in segments made before it existed).
    pub uid: AtomicU64,
    /// Reserved for later layout additions (zero).
    pub reserved: [AtomicU64; 4],
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
    pub(crate) fn type_name(&self) -> String {
        let mut buf = Vec::with_capacity(64);
        for w in &self.type_name.bytes {
            buf.extend_from_slice(&w.load(Ordering::Relaxed).to_le_bytes());
        }
        let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
        String::from_utf8_lossy(&buf[..end]).into_owned()
    }
}

/// The process that creates a segment, as its header records it (informational: no
/// decision rests on it). The default records none (a header image in process memory).
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Creator {
    pid: u32,
    start: u64,
    created_unix: u64,
    uid: u64,
}

impl Creator {
    /// This process, now.
    pub(crate) fn this_process() -> Creator {
        let pid = std::process::id();
        Creator {
            pid,
            start: sys::proc::process_start_time(pid).unwrap_or(0),
            created_unix: sys::clock::now_unix(),
            uid: random_uid(),
        }
    }
}

/// A random, non-zero 64-bit id (std's per-process random hasher keys, a counter, the
/// clock and the pid).
fn random_uid() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(N.fetch_add(1, Ordering::Relaxed));
    h.write_u32(std::process::id());
    if let Ok(d) = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
        h.write_u128(d.as_nanos());
    }
    h.finish().max(1)
}

impl Header {
    /// Write every word of a new header for a ring of `capacity` bytes (already
    /// normalised) and publish it. The memory must be zero (a segment fresh from
    /// `ftruncate`, or a zeroed image): the words not written here keep that value. The
    /// `init` word is stored **last** (release), so that `open` sees a complete header or
    /// waits for one. The one initialisation of a header: [`Segment::create`](super::Segment::create)
    /// and [`header_image`] both call it.
    pub(crate) fn init(&self, capacity: u64, opts: &CreateOptions, creator: Creator) {
        self.id.magic.store(MAGIC, Ordering::Relaxed);
        self.id.version.store(VERSION, Ordering::Relaxed);
        self.id
            .header_size
            .store(std::mem::size_of::<Header>() as u32, Ordering::Relaxed);
        self.id.ring_offset.store(RING_OFFSET, Ordering::Relaxed);
        self.id.capacity.store(capacity, Ordering::Relaxed);
        self.id.creator_pid.store(creator.pid, Ordering::Relaxed);
        self.id
            .creator_start
            .store(creator.start, Ordering::Relaxed);
        self.id
            .created_unix
            .store(creator.created_unix, Ordering::Relaxed);
        self.id.codec.store(opts.codec, Ordering::Relaxed);
        self.id.item_size.store(opts.item_size, Ordering::Relaxed);
        self.set_type_name(&opts.type_name);
        let flags = if opts.persistent { FLAG_PERSISTENT } else { 0 };
        self.shared.flags.store(flags, Ordering::Relaxed);
        self.tasks
            .max_messages
            .store(opts.max_messages, Ordering::Relaxed);
        self.tasks.uid.store(creator.uid, Ordering::Relaxed);
        // Everything else is zero (ftruncate, or the caller's zeroed memory). Publish.
        self.id.init.store(INIT_DONE, Ordering::Release);
    }
}

/// The bytes of a freshly initialised header ([`Header::init`] with the default options
/// and no recorded creator) for a ring of `capacity` bytes (already normalised): the start
/// of a segment image in process memory. The ring's bytes that follow it are zero.
#[cfg(not(loom))]
pub(crate) fn header_image(capacity: u64) -> Vec<u8> {
    // SAFETY: Header is all atomics (and arrays of them), for which zero bytes are a valid
    // value.
    let h: Header = unsafe { std::mem::MaybeUninit::zeroed().assume_init() };
    h.init(capacity, &CreateOptions::default(), Creator::default());
    let len = std::mem::size_of::<Header>();
    let mut out = vec![0u8; len];
    // SAFETY: `h` is a live local of `len` bytes, not shared with any thread; copying its
    // bytes out through a raw pointer creates no reference into it.
    unsafe {
        std::ptr::copy_nonoverlapping((&h as *const Header).cast::<u8>(), out.as_mut_ptr(), len)
    };
    out
}

/// Under loom: a freshly initialised header as a typed value (loom's atomics are built with
/// their constructors, not read from bytes), for the model ring: zero words, then the same
/// [`Header::init`] as a segment.
#[cfg(loom)]
impl Header {
    pub(crate) fn for_model(capacity: u64) -> Header {
        let u32 = || AtomicU32::new(0);
        let u64 = || AtomicU64::new(0);
        let h = Header {
            id: Identity {
                magic: u64(),
                version: u32(),
                header_size: u32(),
                ring_offset: u64(),
                capacity: u64(),
                creator_pid: u32(),
                init: u32(),
                creator_start: u64(),
                created_unix: u64(),
                codec: u32(),
                item_size: u32(),
            },
            type_name: TypeName {
                bytes: std::array::from_fn(|_| u64()),
            },
            shared: Shared {
                reserved: u32(),
                consumers_waiting: u32(),
                producers_waiting: u32(),
                flags: u32(),
                full_events: u64(),
                empty_events: u64(),
            },
            prod: ProducerSide {
                lock: u32(),
                data_seq: u32(),
                tail: u64(),
                pending_tail: u64(),
                pending_count: u64(),
                put_count: u64(),
                put_bytes: u64(),
            },
            cons: ConsumerSide {
                lock: u32(),
                space_seq: u32(),
                head: u64(),
                pending_head: u64(),
                pending_count: u64(),
                get_count: u64(),
                get_bytes: u64(),
            },
            tasks: Tasks {
                done: u64(),
                join_seq: u32(),
                join_waiters: u32(),
                max_messages: u64(),
                uid: u64(),
                reserved: std::array::from_fn(|_| u64()),
            },
        };
        h.init(capacity, &CreateOptions::default(), Creator::default());
        h
    }
}

/// Total segment size for a ring of `capacity` bytes.
pub(crate) fn segment_size(capacity: u64) -> u64 {
    RING_OFFSET + capacity
}

/// Round a requested capacity to what the ring uses (a multiple of 64), or reject it.
pub(crate) fn normalize_capacity(requested: usize) -> Result<u64> {
    let c = requested as u64;
    if !(MIN_CAPACITY..=MAX_CAPACITY).contains(&c) {
        return Err(Error::InvalidArgument(format!(
            "capacity {requested} out of range: use {MIN_CAPACITY}..={MAX_CAPACITY} bytes"
        )));
    }
    Ok(c.div_ceil(64) * 64)
}

/// Check the layout words of a published header against the size of the object (or
/// buffer) that holds it, reading each word exactly once, and return the ring capacity.
///
/// Used by [`Segment::open`](super::Segment::open) (and by heap-backed rings): the caller keeps the returned
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

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;

    #[test]
    fn capacity_rules() {
        assert_eq!(normalize_capacity(100).unwrap(), 128);
        assert!(normalize_capacity(0).is_err());
        assert!(normalize_capacity(usize::MAX).is_err());
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
    fn header_image_is_what_create_writes_and_validates() {
        let img = header_image(4096);
        assert_eq!(img.len(), std::mem::size_of::<Header>());
        let mut page = Box::new(Page([0; 4096]));
        page.0[..img.len()].copy_from_slice(&img);
        // SAFETY: as in `with_header`.
        let h = unsafe { &*(page.as_ref() as *const Page as *const Header) };
        assert_eq!(validate_layout(h, RING_OFFSET + 4096, "t").unwrap(), 4096);

        // The same initialisation as a created segment's, but for what a segment records
        // about its creator.
        let name = format!("unit-img-{}", std::process::id());
        let seg = super::super::Segment::create(
            super::super::Location::Name(name),
            4096,
            &Default::default(),
        )
        .unwrap();
        let mut created = vec![0u8; img.len()];
        // SAFETY: the mapping holds at least a header; copying its bytes out creates no
        // reference into shared memory.
        unsafe {
            std::ptr::copy_nonoverlapping(
                (seg.header() as *const Header).cast::<u8>(),
                created.as_mut_ptr(),
                created.len(),
            )
        };
        let h = seg.header();
        assert_eq!(h.id.creator_pid.load(Ordering::Relaxed), std::process::id());
        assert!(h.id.created_unix.load(Ordering::Relaxed) > 0);
        let id = std::mem::offset_of!(Header, id);
        for (off, len) in [
            (std::mem::offset_of!(Identity, creator_pid), 4),
            (std::mem::offset_of!(Identity, creator_start), 8),
            (std::mem::offset_of!(Identity, created_unix), 8),
        ] {
            created[id + off..id + off + len].fill(0);
        }
        // The creator's random uid too (an image records none).
        assert_ne!(h.tasks.uid.load(Ordering::Relaxed), 0);
        let uid = std::mem::offset_of!(Header, tasks) + std::mem::offset_of!(Tasks, uid);
        created[uid..uid + 8].fill(0);
        assert_eq!(created, img);
    }
}
