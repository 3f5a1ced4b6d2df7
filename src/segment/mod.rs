//! Shared-memory segments: a named POSIX shared-memory object (`/dev/shm/shmq.<name>`) or a
//! file at a caller-given path, mapped with `memmap2`, holding a [`Header`] at offset 0 and
//! the ring's bytes at [`RING_OFFSET`].
//!
//! * `layout.rs` — the [`Header`] and its blocks, the layout constants, the codec ids, the
//!   one initialisation of a header ([`Header::init`], [`header_image`]) and the one
//!   validation ([`validate_layout`]).
//! * `name.rs` — the naming rules ([`validate_name`]), [`Location`], [`shm_path`],
//!   [`ObjectId`], and who removes a name ([`unlink_if_same`], [`remove`]).
//! * `file.rs` — opening what a name or path refers to without blocking or following a
//!   link, whatever is there.
//! * `open.rs` — [`Segment`]: the creation protocol and `open`.
//! * `owned.rs` — the names this process created and will remove (the registry behind
//!   `remove_own_queues`).
//! * `stale.rs` — the attach marker, [`peek`], and the one staleness predicate
//!   ([`is_stale`], asked by [`Segment::is_stale`] and [`Peek::is_abandoned`]).
//!
//! The system calls are in `crate::sys`; the locks the header's lock words stand for are
//! in `crate::sync` (a segment claims its handle's [`Holder`](crate::sync::Holder)).

mod file;
mod layout;
mod name;
mod open;
pub(crate) mod owned;
mod stale;

// Every item keeps its `crate::segment::X` path whichever file holds it (each file's items
// are `pub` only where `crate::internal` re-exports them, `pub(crate)` or narrower
// otherwise).
pub use layout::*;
pub use name::*;
pub use open::*;
pub use stale::*;
