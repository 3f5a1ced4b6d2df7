//! `FUTEX_WAIT` and `FUTEX_WAKE` on a 32-bit word, the shared (non-private) kind, so that
//! they pair with the calls of other processes mapping the same segment (the kernel keys
//! a shared futex on the physical page, not on the address). Under `cfg(loom)` the
//! crate's code calls loom's emulation instead (`crate::prim`).

use std::sync::atomic::AtomicU32;
use std::time::Duration;

use rustix::thread::futex;

/// `FUTEX_WAIT` (shared) on `word` while it equals `expected`, for at most `timeout`.
/// Returns when woken, when the word did not hold `expected`, on a signal, or when the
/// timeout elapsed: the callers re-check their condition in every case.
#[cfg_attr(loom, allow(dead_code))]
pub(crate) fn wait(word: &AtomicU32, expected: u32, timeout: Option<Duration>) {
    let ts = timeout.map(|d| futex::Timespec {
        tv_sec: d.as_secs().min(i64::MAX as u64) as i64,
        tv_nsec: i64::from(d.subsec_nanos()),
    });
    // Flags::empty(): no FUTEX_PRIVATE_FLAG (see the module docs). The errors (EAGAIN: the
    // word changed; ETIMEDOUT; EINTR) all mean "re-check".
    let _ = futex::wait(word, futex::Flags::empty(), expected, ts.as_ref());
}

/// `FUTEX_WAKE` (shared) up to `n` waiters on `word` (`n <= 0`: none). Returns how many
/// the kernel woke (the system call's result): fewer than `n` means every waiter queued on
/// `word` at that moment was woken (the wake-up protocol of `crate::sync` relies on that).
#[cfg_attr(loom, allow(dead_code))]
pub(crate) fn wake(word: &AtomicU32, n: i32) -> usize {
    let n = n.max(0) as u32;
    // The only possible errors are for a bad address, which a reference is not; should one
    // happen anyway, report `n` (as if more might sleep: the callers then keep waking).
    futex::wake(word, futex::Flags::empty(), n).unwrap_or(n as usize)
}
