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
//! * [`sync`] — the process-shared lock that survives a SIGKILLed holder, futex waiting,
//!   process liveness.
//! * [`segment`] — create / open / validate / remove a named (`/dev/shm/shmq.<name>`) or
//!   file-backed segment and its `#[repr(C)]` header.
//! * [`ring`] — the byte ring of framed variable-length records (two-lock MPMC).
//! * [`queue`] — [`RawQueue`] (bytes), [`Queue<T>`] (serde/postcard) and [`PodQueue<T>`]
//!   (`bytemuck::Pod`, no serialisation), plus [`Options`].
//! * [`process`] — spawn functions in child processes, pools, joinable queues.
//!
//! The `shmq` command-line tool (`src/bin/shmq.rs`, feature `cli`) inspects, taps and
//! removes queues.

#![warn(missing_docs)]

pub mod error;
mod prim;
pub mod process;
pub mod queue;
pub mod ring;
pub mod segment;
pub mod sync;

pub use error::{Error, Result};
pub use queue::{
    list, remove, remove_stale, Codec, Options, Pod, PodQueue, Postcard, Queue, QueueInfo,
    QueueState, RawQueue, TypedQueue,
};
pub use ring::Stats;
pub use segment::Location;

/// The README's examples, compiled and run as doc tests so that it stays true.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
