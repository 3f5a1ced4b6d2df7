//! # shmq — message queues between processes over named shared memory
//!
//! shmq is what Rust lacks next to Python's `multiprocessing.Queue` and
//! `multiprocessing.Process`: a lock-protected ring buffer of framed records in a named
//! shared-memory segment, a typed (serde) queue on top of it, and helpers that run Rust
//! functions in child processes which attach to queues by name.
//!
//! ```
//! use shmq::Queue;
//! # let name = format!("doc-lib-{}", std::process::id());
//! let q: Queue<(String, u32)> = Queue::create(&name, 1 << 16)?;
//! q.put(&("hello".to_string(), 7))?;
//! // Any process on the machine can now `Queue::open(&name)` and `get` it.
//! let other: Queue<(String, u32)> = Queue::open(&name)?;
//! assert_eq!(other.get()?, ("hello".to_string(), 7));
//! # Ok::<(), shmq::Error>(())
//! ```
//!
//! ## Layers (bottom up; each builds on the ones listed before it)
//! * [`error`] — the [`Error`] enum and [`Result`].
//! * Internal layers, private (see `docs/design.md`): `sync` (the process-shared lock that
//!   survives a SIGKILLed holder, futex waiting), `segment` (create / open / validate /
//!   remove a named `/dev/shm/shmq.<name>` or file-backed segment and its header) and
//!   `ring` (the byte ring of framed variable-length records, two-lock MPMC).
//! * `queue` — [`RawQueue`] (bytes), [`Queue<T>`] (serde/postcard) and [`PodQueue<T>`]
//!   (`bytemuck::Pod`, no serialisation), plus [`Options`].
//! * [`primitives`] — process-shared `Lock`, `RLock`, `Event`, `Semaphore`, `Barrier`,
//!   `Condition`, `Value` and `Array`, each in a named segment.
//! * [`process`] — start functions in child processes, pools, joinable queues.
//!
//! A process killed by Ctrl-C or SIGTERM runs no destructors, so the queues it created
//! would stay in `/dev/shm`: [`cleanup_on_signals()`] removes them first (and
//! [`remove_own_queues()`] is the same removal for programs with their own signal handling).
//!
//! The `shmq` command-line tool, which lists, inspects, taps and removes queues, is a crate
//! of its own (`shmq-cli`, `cargo install shmq-cli`): depending on `shmq` builds only the
//! library.

#![warn(missing_docs)]

// shmq is built on Linux futexes, `/proc` and `/dev/shm`: on any other OS, say so once
// instead of a page of unresolved `libc` items (the modules below are Linux-only).
#[cfg(not(target_os = "linux"))]
compile_error!(
    "shmq supports Linux only: it needs futexes, /proc and /dev/shm (target_os = \"linux\")"
);

#[cfg(target_os = "linux")]
mod admin;
#[cfg(target_os = "linux")]
mod bridged;
#[cfg(target_os = "linux")]
mod cleanup;
#[cfg(target_os = "linux")]
mod encode;
#[cfg(target_os = "linux")]
pub mod error;
#[cfg(target_os = "linux")]
mod mapping;
#[cfg(target_os = "linux")]
pub mod primitives;
#[cfg(target_os = "linux")]
pub mod process;
#[cfg(target_os = "linux")]
mod queue;
#[cfg(target_os = "linux")]
mod ring;
#[cfg(target_os = "linux")]
mod segment;
#[cfg(target_os = "linux")]
mod sync;
#[cfg(target_os = "linux")]
mod sys;
// The loom shim lives beside the locks (`src/sync/prim.rs`); the ring and the primitives
// reach it as `crate::prim`.
#[cfg(target_os = "linux")]
use sync::prim;
#[cfg(target_os = "linux")]
mod typename;

#[cfg(target_os = "linux")]
pub use admin::{inspect, list, remove, remove_stale, QueueInfo, QueueState};
#[cfg(target_os = "linux")]
pub use cleanup::{cleanup_on_signals, remove_own_queues, CLEANUP_SIGNALS};
#[cfg(target_os = "linux")]
pub use error::{Error, Result};
#[cfg(target_os = "linux")]
pub use primitives::{
    Array, ArrayGuard, Barrier, CondGuard, Condition, Event, Lock, LockGuard, RLock, RLockGuard,
    Semaphore, SemaphoreGuard, Value, ValueGuard,
};
#[cfg(target_os = "linux")]
pub use queue::{
    Batch, Codec, Options, Pod, PodQueue, Postcard, Queue, RawQueue, ReadLoan, ReadLoans, Slot,
    TypedQueue, TypedWriteLoan, WriteLoan,
};
#[cfg(target_os = "linux")]
pub use ring::Stats;
#[cfg(target_os = "linux")]
pub use segment::Location;

/// Internals that shmq's own tools reach for (the `shmq` CLI, the fuzz targets, the
/// benchmarks and the integration tests that forge hostile segments). Not part of the API:
/// anything here may change in any release.
#[cfg(target_os = "linux")]
#[doc(hidden)]
pub mod internal {
    /// Which queues a JetStream bridge is running on (`shmq ls` / `shmq stat`).
    pub mod bridged {
        pub use crate::bridged::*;
    }
    #[cfg(not(loom))]
    pub use crate::mapping::HeapImage;
    pub use crate::mapping::Memory;
    pub use crate::queue::{codec_name, DEFAULT_CAPACITY};
    pub use crate::ring::{Block, HeapRing, Record, Ring, CLOSED};
    pub use crate::segment::{
        codec_id, is_attached, mapped_by, peek, shm_path, validate_name, Header, Identity,
        Location, Segment, INIT_DONE, MAGIC, PREFIX, RING_OFFSET, UNINIT_GRACE,
    };
    pub use crate::sync::Holder;
    pub use crate::sys::clock::now_unix;
    pub use crate::sys::proc::tid_alive;
}

/// The README's examples, compiled and run as doc tests so that it stays true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
