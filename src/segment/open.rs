//! [`Segment`]: a mapped segment, made by [`Segment::create`] or [`Segment::open`].
//!
//! # Creation protocol
//! `create` opens the object with `O_CREAT | O_EXCL` and mode 0600 (or the caller's mode,
//! applied with `fchmod` so the umask does not narrow it), sizes it with `ftruncate`,
//! reserves the memory with `fallocate` (so a full tmpfs fails here, not with SIGBUS
//! later), maps it, takes the attach marker, writes every header field and stores the
//! `init` word **last** (release): [`Header::init`]. `open` waits (bounded by
//! [`INIT_WAIT`]) for the object to reach header size and for `init` to be published, then
//! validates every header field against the object's real size ([`validate_layout`]) before
//! mapping the ring. A foreign or truncated object is [`Error::Incompatible`].

use std::fs::File;
use std::os::unix::fs::PermissionsExt;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use memmap2::{MmapOptions, MmapRaw};

use super::file::{create_new, open_existing, CreateError};
use super::layout::{
    codec_id, normalize_capacity, segment_size, validate_layout, Creator, Header, INIT_DONE, MAGIC,
    RING_OFFSET,
};
use super::name::{error_place, unlink_if_same, validate_name, Location, ObjectId};
use super::stale::take_marker;
use crate::error::{Error, Result};
use crate::sync;
use crate::sys;

/// How long `open` waits for a concurrent creator to finish initialising the segment.
pub(crate) const INIT_WAIT: Duration = Duration::from_secs(2);

/// Options for creating a segment.
#[derive(Clone, Debug)]
pub(crate) struct CreateOptions {
    /// Permission bits of the new object (default 0o600).
    pub mode: u32,
    /// Replace an existing segment that is stale ([`Segment::is_stale`], or abandoned
    /// while being created: [`Peek::is_abandoned`](super::Peek::is_abandoned)).
    pub replace_stale: bool,
    /// Codec id to record.
    pub codec: u32,
    /// Item size to record (Pod codec).
    pub item_size: u32,
    /// Type name to record.
    pub type_name: String,
    /// Record that the segment is meant to outlive its creator
    /// ([`FLAG_PERSISTENT`](super::FLAG_PERSISTENT)).
    pub persistent: bool,
    /// Largest number of queued messages ([`Tasks::max_messages`](super::Tasks::max_messages);
    /// 0: bounded by bytes only).
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
/// `Segment::create` with `remove_on_drop` set also removes its name, under the rule in
/// `segment/name.rs` (who removes a name).
pub struct Segment {
    map: MmapRaw,
    /// The descriptor the segment was mapped from (`O_CLOEXEC`), until
    /// [`Segment::claim_holder`] re-opens it as the handle's liveness descriptor (with an
    /// open file description of its own) and closes it. One descriptor per handle.
    pub(super) file: Option<File>,
    location: Location,
    /// The object this segment maps (from `fstat` of `file`).
    pub(super) object: ObjectId,
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

impl Segment {
    /// Create a new segment with a ring of `capacity` bytes (rounded up to a multiple of 64).
    /// The segment holds one file descriptor (`O_CLOEXEC`) for its whole life.
    pub(crate) fn create(loc: Location, capacity: usize, opts: &CreateOptions) -> Result<Segment> {
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
        // fchmod: the caller's mode, not narrowed by the umask.
        file.set_permissions(std::fs::Permissions::from_mode(opts.mode))
            .map_err(|e| cleanup(Error::io_at("chmod", &path, e)))?;
        file.set_len(size)
            .map_err(|e| cleanup(Error::io_at("resize", &path, e)))?;
        if let Err(e) = sys::fs::reserve(&file, size) {
            return Err(cleanup(Error::Io(std::io::Error::new(
                e.kind(),
                format!(
                    "reserving {size} bytes for {} failed ({e}); free space in {} or use a smaller capacity",
                    path.display(),
                    match &loc {
                        Location::Name(_) => super::name::SHM_DIR.to_string(),
                        Location::Path(p) => format!("the file system of {}", p.display()),
                    }
                ),
            ))));
        }
        let map = MmapOptions::new()
            .len(size as usize)
            .map_raw(&file)
            .map_err(|e| cleanup(Error::io_at("map", &path, e)))?;
        // The attach marker, before any header word is written (see `stale.rs`: a written
        // header without a marker means its creator is gone).
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
        // Every header word, `init` last (the object is zero from ftruncate).
        seg.header().init(capacity, opts, Creator::this_process());
        seg.note_owned();
        Ok(seg)
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
                    if let Ok(g) = sys::fs::reopen_file(f) {
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
    pub(crate) fn object_id(&self) -> ObjectId {
        self.object
    }

    /// Where this segment lives.
    pub fn location(&self) -> &Location {
        &self.location
    }

    /// Whether dropping this handle removes the name. Only honoured in the process that
    /// created the segment through this handle, and only while the name still refers to
    /// the created object (see who removes a name in `segment/name.rs`): a segment that
    /// was opened never removes the name.
    pub fn set_remove_on_drop(&mut self, yes: bool) {
        self.remove_on_drop = yes;
        self.note_owned();
    }

    /// Keep the registry of names this process will remove ([`super::owned`]) in step with
    /// this handle: a named segment created here whose drop removes the name is in it.
    fn note_owned(&self) {
        if self.creator != Some(std::process::id()) {
            return;
        }
        match &self.location {
            Location::Name(n) if self.remove_on_drop => super::owned::enter(n, self.object),
            _ => super::owned::leave(self.object),
        }
    }
}

impl Drop for Segment {
    fn drop(&mut self) {
        // The name belongs to the object that holds it: remove it only in the process that
        // created this object (not in a forked child dropping its copy) and only if the
        // name still refers to this object (not to one created after a `remove`).
        if self.remove_on_drop && self.creator == Some(std::process::id()) {
            let _ = unlink_if_same(&self.location, self.object);
            super::owned::leave(self.object);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    #[test]
    fn header_fits_and_type_name_roundtrips() {
        let name = format!("unit-hdr-{}", std::process::id());
        let opts = CreateOptions {
            type_name: "my::Type".into(),
            ..Default::default()
        };
        let seg = Segment::create(Location::Name(name.clone()), 4096, &opts).unwrap();
        assert_eq!(seg.header().type_name(), "my::Type");
        // The creator recorded is this process (informational; no decision rests on it).
        let h = seg.header();
        assert!(crate::sys::proc::process_alive(
            h.id.creator_pid.load(Ordering::Relaxed),
            h.id.creator_start.load(Ordering::Relaxed),
        ));
        let other = Segment::open(Location::Name(name.clone())).unwrap();
        assert_eq!(other.ring().1, 4096);
        drop(seg);
        assert!(matches!(
            Segment::open(Location::Name(name)),
            Err(Error::NotFound(_))
        ));
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
            let f = s.file().unwrap();
            let fd = f.as_raw_fd();
            let fl = rustix::io::fcntl_getfd(f).unwrap();
            assert!(fl.contains(rustix::io::FdFlags::CLOEXEC), "close-on-exec");
            let st = rustix::fs::fcntl_getfl(f).unwrap();
            assert!(
                !st.contains(rustix::fs::OFlags::NONBLOCK),
                "back to blocking mode"
            );
            let link = std::fs::read_link(format!("/proc/self/fd/{fd}")).unwrap();
            assert_eq!(link, super::super::shm_path(&name));
        }
    }
}
