//! The only code of the queue layers (sync, segment, ring, queue) that talks to Linux:
//! futexes ([`futex`]), open-file-description locks
//! ([`ofd`]), the file calls the segment needs beyond `std::fs` ([`fs`]), `/proc` ([`proc`]),
//! the `fork` hooks ([`fork`]) and the wall clock ([`clock`]).
//!
//! Each wrapper is small and returns a `std::io::Result` (or a plain answer, for the
//! informational `/proc` reads). The system calls go through `rustix`, which wraps them
//! without `unsafe` or `errno` at the call site; `libc` is used only where `rustix` has no
//! wrapper: open-file-description locks (`fcntl(F_OFD_SETLK / F_OFD_GETLK)` on a byte
//! range, [`ofd`]) and `pthread_atfork` ([`fork`]). The process layer (`src/process/`) and
//! `src/cleanup.rs` (signal handlers) make their own calls, through rustix where it has a
//! wrapper, each argued where it is made.

pub(crate) mod clock;
pub(crate) mod fork;
pub(crate) mod fs;
pub(crate) mod futex;
pub(crate) mod ofd;
pub(crate) mod proc;
