//! Process-shared synchronisation: a lock that survives its holder being killed, and
//! futex-style waiting on 32-bit words in the segment.
//!
//! # The lock
//! A lock is one `AtomicU32` in shared memory: `0` when free, otherwise the 31-bit
//! **holder id** of the attached queue handle that holds it, with bit 31 ([`WAITERS`](lock::WAITERS)) set
//! while someone may sleep on it. Acquire is one compare-and-swap; release is one
//! compare-and-swap plus a `FUTEX_WAKE` only when the waiters bit was set.
//!
//! # Who holds it, and is it alive: [`Holder`]
//! Every handle that attaches to a segment claims a holder id: a random 31-bit number `id`
//! for which it takes an **open-file-description lock** (`fcntl(F_OFD_SETLK)`, a write lock
//! on the one byte at [`LIVE_BASE`]` + id` of the segment's file, far past its end) on a file
//! descriptor of its own. The kernel drops that lock when the last descriptor of the open
//! file description closes, i.e. when the process dies, however it dies. A waiter that finds
//! the lock held for a while asks the kernel (`F_OFD_GETLK` on the holder's byte) whether
//! anybody still holds the holder's id; if nobody does, the holder is dead and the waiter
//! takes the lock over with a compare-and-swap, reporting [`Acquired::Recovered`] so the
//! caller validates and repairs the state the lock protects.
//!
//! This needs no PID: it is right across PID namespaces (containers sharing `/dev/shm`),
//! with `/proc` mounted `hidepid`, and when PIDs or TIDs are reused. The uncontended lock is
//! one atomic operation; the liveness question is asked only after a holder has kept the lock
//! for [`LIVENESS_SLICE`](lock::LIVENESS_SLICE). Why this and not the kernel's robust-futex list, PIDs, or a robust
//! pthread mutex: see `docs/design.md`.
//!
//! A process created by `fork` without `exec` inherits the parent's descriptors, and with
//! them the parent's holder ids. `pthread_atfork` handlers keep forks out of the window
//! between opening and registering a liveness descriptor, and in the child replace each
//! registered descriptor by a fresh open file description of the same file (so a parent
//! that dies holding a lock is seen dead even while such a child lives); the child's
//! handles claim new ids on their next use.
//!
//! # Waiting
//! [`wait_until`] implements the sleep side of a sequence-word protocol: spin, then register
//! in a waiters word (bit 0 "armed", plus a registration count), re-check the condition, and
//! `FUTEX_WAIT` on the sequence word. Wakers bump the sequence word and call `FUTEX_WAKE`
//! only when the word is armed, and disarm it when the kernel woke fewer sleepers than asked
//! (so everybody): nothing counts sleepers, so one that dies asleep costs the survivors one
//! `FUTEX_WAKE`, once. Futexes are the shared (non-private) kind so that they wake other
//! processes. A sleep lasts at most [`MAX_SLEEP`](wait::MAX_SLEEP) before the condition is
//! checked again, so a waiters word that a hostile process zeroed delays a sleeper by at
//! most that, never for ever.
//!
//! # Files
//! * `lock.rs` — [`RobustLock`], its guard and [`Acquired`].
//! * `wait.rs` — [`Deadline`] and the sequence-word protocol ([`wait_until`], [`notify`]).
//! * `holder.rs` — [`Holder`]: claiming an id and asking whether another id lives.
//! * `fork.rs` — the `fork` handlers and the registry of liveness descriptors they replace.
//! * `prim.rs` — the atomics, fence, spin hints and futex calls, swappable for loom's.
//!
//! The system calls (futex, OFD locks, `fstat`, `open`/`close` of a descriptor) are in
//! `crate::sys`.

mod fork;
mod holder;
mod lock;
pub(crate) mod prim;
mod wait;

pub use holder::Holder;
pub(crate) use holder::LIVE_BASE;
pub use lock::LockGuard;
pub(crate) use lock::{Acquired, RobustLock, HOLDER_MASK};
pub(crate) use wait::{
    armed, notify, notify_all, notify_fenced, slip, wait_until, wait_until_counting, Deadline,
};

// Informational process liveness lives in `crate::sys::proc` (no lock decision rests on
// it); these paths are kept for the modules that used to find it here.
pub(crate) use crate::sys::proc::{process_alive, tid_alive};
