//! Whether an object is in use, and whether it is stale.
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
//! One predicate ([`is_stale`]): an object is **stale** iff it was not created persistent
//! ([`FLAG_PERSISTENT`]) and nobody holds its marker; an object whose header was never
//! published counts as stale when nobody holds its marker and either its creator got as far
//! as writing the header (it took the marker before) or it is older than [`UNINIT_GRACE`].
//! [`Segment::is_stale`] and [`Peek::is_abandoned`] ask it, and through them
//! `replace_stale`, [`crate::QueueInfo::is_stale`], [`crate::remove_stale`] and
//! `shmq rm --stale` all use it. A process that can open the object can hold the marker and
//! keep a dead queue from looking stale; that only stops automatic clean-up (`shmq rm`
//! still removes it).

use std::fs::File;
use std::os::fd::AsFd;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::file::open_existing;
use super::layout::{Header, Identity, FLAG_PERSISTENT, INIT_DONE, MAGIC, RING_OFFSET};
use super::name::{validate_name, Location, ObjectId, PREFIX, SHM_DIR};
use super::Segment;
use crate::error::{Error, Result};
use crate::sync;
use crate::sys::{self, ofd};

/// File offset of the **attach marker**: every mapping of a segment holds an
/// open-file-description read lock on this one byte (far past the segment's end, below the
/// holders' liveness bytes at [`sync::LIVE_BASE`]), taken on the descriptor the segment is
/// mapped from. A mapping keeps its open file description alive, so the kernel drops the
/// lock exactly when the last mapping (and descriptor) of that description is gone, in
/// whatever process or PID namespace, however the process died. See
/// [the module docs](self).
pub(crate) const MAPPED_BYTE: i64 = sync::LIVE_BASE - 1;

/// How old an uninitialised object that records no creator pid must be before it counts as
/// abandoned (its creator may still be between `shm_open` and writing its pid, e.g. while
/// `fallocate` reserves a large ring).
pub const UNINIT_GRACE: Duration = Duration::from_secs(30);

/// What staleness is decided on in a header: published (and whether it was created to
/// outlive its creator), never published (and how far its creator got), or not a shmq
/// header at all.
#[derive(Clone, Copy, Debug)]
pub(crate) enum HeaderState {
    /// The header was published; `persistent`: [`FLAG_PERSISTENT`] is set.
    Published {
        /// Created to outlive its creator.
        persistent: bool,
    },
    /// The header was never published.
    Unpublished {
        /// The creator recorded its pid, so it got as far as writing the header (and took
        /// the attach marker before that).
        creator_wrote: bool,
        /// Time since the object was last modified.
        age: Duration,
    },
    /// A foreign or unreadable object: never stale.
    Foreign,
}

/// The one staleness predicate (see the [module docs](self)): nobody but the asker maps
/// the object (`attached`: its attach marker is held by someone else, or it could not be
/// asked), and either its header was published without [`FLAG_PERSISTENT`], or it was
/// never published and its creator is gone (it wrote the header, so it took the marker
/// first) or had [`UNINIT_GRACE`] to get that far. No pid is consulted.
pub(crate) fn is_stale(header: HeaderState, attached: bool) -> bool {
    !attached
        && match header {
            HeaderState::Published { persistent } => !persistent,
            HeaderState::Unpublished { creator_wrote, age } => creator_wrote || age > UNINIT_GRACE,
            HeaderState::Foreign => false,
        }
}

impl Segment {
    /// Whether the segment was created to outlive its creator ([`FLAG_PERSISTENT`]).
    pub(crate) fn is_persistent(&self) -> bool {
        self.header().shared.flags.load(Ordering::Relaxed) & FLAG_PERSISTENT != 0
    }

    /// Stale ([`is_stale`]): not created to outlive its creator ([`FLAG_PERSISTENT`]) and
    /// no mapping but this one holds the attach marker. `false` once the ring took the
    /// mapped descriptor (the question cannot be asked without it).
    pub(crate) fn is_stale(&self) -> bool {
        is_stale(
            HeaderState::Published {
                persistent: self.is_persistent(),
            },
            self.attached_by_others(),
        )
    }

    /// Whether a mapping other than this one (in any process, including this one's other
    /// handles) holds the attach marker. `true` when it cannot be asked (the ring took the
    /// mapped descriptor, or the kernel call failed).
    pub(crate) fn attached_by_others(&self) -> bool {
        self.file.as_ref().is_none_or(attached_by_others)
    }

    /// The object now at `loc`, if it is stale (see [`Segment::is_stale`]) or was abandoned
    /// while being created ([`Peek::is_abandoned`], and no process maps it). Never a
    /// foreign object: anything that does not open as a shmq segment is not stale.
    pub(super) fn existing_stale_object(loc: &Location) -> Option<ObjectId> {
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
}

/// Take the attach marker (an OFD read lock on [`MAPPED_BYTE`]) on `file`, the descriptor
/// a segment is mapped from. A write lock that another description holds on the byte
/// (only a hostile process takes one) already marks the object attached: not an error.
pub(super) fn take_marker(file: &File, path: &Path) -> Result<()> {
    match ofd::try_lock(file.as_fd(), ofd::Kind::Read, MAPPED_BYTE) {
        Ok(_) => Ok(()),
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
pub(crate) fn attached_by_others(file: &File) -> bool {
    !matches!(
        ofd::conflicts(file.as_fd(), ofd::Kind::Write, MAPPED_BYTE),
        Ok(false)
    )
}

/// Whether the named object is mapped by some process now (its attach marker is held; see
/// `segment/stale.rs`). `true` if it cannot be told (the object cannot be opened,
/// except when it is missing).
pub fn is_attached(name: &str) -> bool {
    match peek(name) {
        Ok(p) => p.attached,
        Err(Error::NotFound(_)) => false,
        Err(_) => true,
    }
}

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
    /// object created under the same name afterwards ([`unlink_if_same`](super::unlink_if_same)).
    pub object: ObjectId,
}

/// Read a named object's `init` word and creator pid with `pread` (no mapping, so no
/// reference into shared memory, and no waiting for a creator still at work). Never blocks:
/// an object that is not a regular file is [`Error::Incompatible`] (see `open_existing`);
/// a missing one is [`Error::NotFound`].
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
            && is_stale(
                if self.foreign {
                    HeaderState::Foreign
                } else {
                    HeaderState::Unpublished {
                        creator_wrote: self.creator_pid.is_some(),
                        age: self.age,
                    }
                },
                self.attached,
            )
    }
}

/// For every shmq object mapped by some process: the pids mapping it, from one pass over
/// `/proc/*/maps` (processes of other users may be invisible without privileges, and
/// processes of other PID namespaces always are). Informational only (`shmq` shows it):
/// whether an object is in use is its attach marker's business ([`is_attached`]).
pub(crate) fn mapped_all() -> std::collections::HashMap<String, Vec<u32>> {
    sys::proc::mapped_with_prefix(&format!("{SHM_DIR}/{PREFIX}"))
}

/// Pids of the processes that have the named queue's object mapped now (from
/// `/proc/<pid>/maps`; processes of other users may be invisible without privileges,
/// other PID namespaces' always are). Informational only, like `mapped_all`.
pub fn mapped_by(name: &str) -> Vec<u32> {
    mapped_all().remove(name).unwrap_or_default()
}
