//! Process-shared synchronisation: a lock that survives its holder being killed, and
//! futex-style waiting on 32-bit words in the segment.
//!
//! # The lock
//! A lock is one `AtomicU32` in shared memory: `0` when free, otherwise the kernel thread id
//! (TID) of the holder, with bit 31 ([`WAITERS`]) set while someone may sleep on it.
//! Acquire is one compare-and-swap; release is one swap plus a `FUTEX_WAKE` only when the
//! waiters bit was set. A waiter spins briefly, then sleeps in the kernel in short slices;
//! after each slice it checks whether the holder's thread still exists (`/proc/<tid>/stat`,
//! treating zombies as dead). If not, it takes the lock over with a compare-and-swap and
//! reports [`Acquired::Recovered`] so the caller can validate and repair the state the lock
//! protects. A holder killed by SIGKILL therefore blocks others for at most one slice plus
//! one liveness check (tens of milliseconds).
//!
//! Why not `raw_sync` or a robust pthread mutex: see `docs/design.md`. In short, raw_sync's
//! mutex is not robust and its timed lock builds invalid deadlines, and a pthread mutex in
//! memory that other processes may scribble on lets them steer glibc's robust-list pointers.
//!
//! # Waiting
//! [`wait_until`] implements the sleep side of a sequence-word protocol: spin, then register
//! in a waiter count, re-check the condition, and `FUTEX_WAIT` on the sequence word. Wakers
//! bump the sequence word and call `FUTEX_WAKE` only when the waiter count is non-zero.
//! Futexes are the shared (non-private) kind so that they wake other processes.

use std::cell::Cell;
use std::sync::atomic::{fence, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};

/// Bit set in a lock word while a thread may be sleeping on it.
pub const WAITERS: u32 = 1 << 31;
/// Mask of the holder's TID in a lock word.
pub const TID_MASK: u32 = !WAITERS;

/// How long a lock waiter sleeps before it checks whether the holder is still alive.
const LIVENESS_SLICE: Duration = Duration::from_millis(10);
/// Spin iterations on a contended lock before sleeping.
const LOCK_SPIN: u32 = 200;

static FORK_GENERATION: AtomicU64 = AtomicU64::new(0);

extern "C" fn after_fork_in_child() {
    FORK_GENERATION.fetch_add(1, Ordering::Relaxed);
}

thread_local! {
    static TID_CACHE: Cell<(u64, u32)> = const { Cell::new((u64::MAX, 0)) };
}

/// The calling thread's kernel thread id, cached per thread (and re-read after `fork`).
pub fn current_tid() -> u32 {
    static ATFORK: std::sync::Once = std::sync::Once::new();
    ATFORK.call_once(|| {
        // SAFETY: registers a plain extern "C" function that only touches an atomic, which is
        // async-signal-safe and valid to call in a freshly forked child.
        unsafe {
            libc::pthread_atfork(None, None, Some(after_fork_in_child));
        }
    });
    let generation = FORK_GENERATION.load(Ordering::Relaxed);
    TID_CACHE.with(|c| {
        let (g, tid) = c.get();
        if g == generation && tid != 0 {
            return tid;
        }
        // SAFETY: gettid has no preconditions.
        let tid = unsafe { libc::gettid() } as u32;
        c.set((generation, tid));
        tid
    })
}

/// Whether the thread (or process) `tid` still exists and is not a zombie.
///
/// Uses `/proc/<tid>/stat` (works for thread ids too); falls back to `kill(tid, 0)` when
/// `/proc` is unavailable. All processes sharing a queue must share a PID namespace.
pub fn tid_alive(tid: u32) -> bool {
    if tid == 0 || tid > i32::MAX as u32 {
        return false;
    }
    match std::fs::read(format!("/proc/{tid}/stat")) {
        Ok(stat) => {
            // The state is the first field after the last ')'.
            let state = stat
                .iter()
                .rposition(|&b| b == b')')
                .and_then(|i| stat.get(i + 2).copied());
            !matches!(state, Some(b'Z') | Some(b'X') | Some(b'x'))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
        Err(_) => {
            // SAFETY: kill with signal 0 only checks for existence and permission.
            let r = unsafe { libc::kill(tid as libc::pid_t, 0) };
            r == 0 || std::io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
        }
    }
}

/// Start time of process `pid` in clock ticks since boot (field 22 of `/proc/<pid>/stat`),
/// used together with the pid to recognise a creator even after pid reuse.
pub fn process_start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    // rest starts at field 3 (state); starttime is field 22.
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// Whether the process that recorded (`pid`, `start`) is still running.
pub fn process_alive(pid: u32, start: u64) -> bool {
    if !tid_alive(pid) {
        return false;
    }
    match process_start_time(pid) {
        Some(s) => start == 0 || s == start,
        None => true,
    }
}

/// Outcome of the kernel wait.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub enum Wake {
    /// Woken, or the word no longer held the expected value.
    Woken,
    /// The timeout elapsed.
    TimedOut,
}

/// `FUTEX_WAIT` (shared) on `word` while it equals `expected`, for at most `timeout`.
pub fn futex_wait(word: &AtomicU32, expected: u32, timeout: Option<Duration>) -> Wake {
    let ts;
    let ts_ptr = match timeout {
        Some(d) => {
            ts = libc::timespec {
                tv_sec: d.as_secs().min(i64::MAX as u64) as libc::time_t,
                tv_nsec: d.subsec_nanos() as libc::c_long,
            };
            &ts as *const libc::timespec
        }
        None => std::ptr::null(),
    };
    // SAFETY: `word` is a valid, aligned 32-bit atomic for the duration of the call; the
    // kernel only reads it. FUTEX_WAIT without FUTEX_PRIVATE_FLAG keys on the physical page,
    // so it pairs with wakes from other processes mapping the same segment.
    let r = unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT,
            expected,
            ts_ptr,
            std::ptr::null::<u32>(),
            0u32,
        )
    };
    if r == -1 && std::io::Error::last_os_error().raw_os_error() == Some(libc::ETIMEDOUT) {
        Wake::TimedOut
    } else {
        Wake::Woken
    }
}

/// `FUTEX_WAKE` (shared) up to `n` waiters on `word`.
pub fn futex_wake(word: &AtomicU32, n: i32) {
    // SAFETY: `word` is a valid aligned 32-bit atomic; FUTEX_WAKE does not access user memory
    // beyond using its address as the key.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAKE,
            n,
            std::ptr::null::<libc::timespec>(),
            std::ptr::null::<u32>(),
            0u32,
        );
    }
}

/// Remaining time until `deadline`, or `None` for "no deadline".
fn remaining(deadline: Option<Instant>) -> Option<Duration> {
    deadline.map(|d| d.saturating_duration_since(Instant::now()))
}

/// How a lock was obtained.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub enum Acquired {
    /// Taken normally.
    Clean,
    /// Taken over from holder `tid`, which died while holding it: the protected state may
    /// be mid-update and must be validated and repaired before use.
    Recovered(u32),
}

/// A process-shared lock on one 32-bit word in shared memory. See the module docs.
pub struct RobustLock<'a> {
    word: &'a AtomicU32,
}

/// Releases the lock when dropped (also on unwinding).
pub struct LockGuard<'a> {
    word: &'a AtomicU32,
    me: u32,
}

impl<'a> RobustLock<'a> {
    /// Wrap a lock word.
    pub fn new(word: &'a AtomicU32) -> Self {
        RobustLock { word }
    }

    /// Acquire the lock, waiting until `deadline` (`None`: no limit).
    ///
    /// Returns [`Error::Timeout`] when the deadline passes while a live thread holds it.
    pub fn lock(&self, deadline: Option<Instant>) -> Result<(LockGuard<'a>, Acquired)> {
        let me = current_tid();
        if self
            .word
            .compare_exchange(0, me, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
        {
            return Ok((self.guard(me), Acquired::Clean));
        }
        for _ in 0..LOCK_SPIN {
            std::hint::spin_loop();
            let v = self.word.load(Ordering::Relaxed);
            if v == 0
                && self
                    .word
                    .compare_exchange(0, me, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
            {
                return Ok((self.guard(me), Acquired::Clean));
            }
        }
        self.lock_slow(me, deadline)
    }

    fn guard(&self, me: u32) -> LockGuard<'a> {
        LockGuard {
            word: self.word,
            me,
        }
    }

    #[cold]
    fn lock_slow(&self, me: u32, deadline: Option<Instant>) -> Result<(LockGuard<'a>, Acquired)> {
        let mut stuck_since: Option<(u32, Instant)> = None;
        loop {
            let v = self.word.load(Ordering::Relaxed);
            if v == 0 {
                // We may have been one of several sleepers: keep the waiters bit so that our
                // unlock wakes the next one.
                if self
                    .word
                    .compare_exchange(0, me | WAITERS, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
                {
                    return Ok((self.guard(me), Acquired::Clean));
                }
                continue;
            }
            let owner = v & TID_MASK;
            // A lock word naming our own thread cannot be ours (we never lock recursively):
            // a dead holder's TID was reused by us. Treat it as dead.
            let owner_dead = owner == me || owner == 0;
            if !owner_dead
                && v & WAITERS == 0
                && self
                    .word
                    .compare_exchange(v, v | WAITERS, Ordering::Relaxed, Ordering::Relaxed)
                    .is_err()
            {
                continue;
            }
            // Check the holder's liveness once it has held the lock for a slice.
            // Also check once when the caller's deadline has passed: a short timeout must not
            // make a dead holder look alive (it would time out for ever without recovering).
            let expired = matches!(remaining(deadline), Some(r) if r.is_zero());
            let check_now = owner_dead
                || expired
                || match stuck_since {
                    Some((o, t)) if o == owner => t.elapsed() >= LIVENESS_SLICE,
                    _ => {
                        stuck_since = Some((owner, Instant::now()));
                        false
                    }
                };
            if check_now {
                if owner_dead || !tid_alive(owner) {
                    let cur = self.word.load(Ordering::Relaxed);
                    if cur & TID_MASK == owner
                        && self
                            .word
                            .compare_exchange(
                                cur,
                                me | WAITERS,
                                Ordering::Acquire,
                                Ordering::Relaxed,
                            )
                            .is_ok()
                    {
                        return Ok((self.guard(me), Acquired::Recovered(owner)));
                    }
                    continue;
                }
                stuck_since = Some((owner, Instant::now()));
            }
            let slice = match remaining(deadline) {
                Some(r) if r.is_zero() => return Err(Error::Timeout),
                Some(r) => r.min(LIVENESS_SLICE),
                None => LIVENESS_SLICE,
            };
            futex_wait(self.word, v | WAITERS, Some(slice));
        }
    }
}

impl Drop for LockGuard<'_> {
    fn drop(&mut self) {
        let mut v = self.word.load(Ordering::Relaxed);
        loop {
            if v & TID_MASK != self.me {
                // Someone took the lock over (they believed us dead): it is theirs now.
                return;
            }
            match self
                .word
                .compare_exchange_weak(v, 0, Ordering::Release, Ordering::Relaxed)
            {
                Ok(_) => break,
                Err(cur) => v = cur,
            }
        }
        if v & WAITERS != 0 {
            futex_wake(self.word, 1);
        }
    }
}

/// The sleeping side of the sequence-word protocol.
///
/// Spins for about `spin` re-checking `ready`, then registers in `waiters`, re-checks, and
/// sleeps on `seq` until a waker bumps it, in slices no longer than `max_slice`. Returns
/// `Ok(())` once `ready()` held at some check or after any kernel wake (the caller
/// re-checks anyway), and `Err(Timeout)` when the deadline passed with `ready()` false.
pub fn wait_until(
    seq: &AtomicU32,
    waiters: &AtomicU32,
    spin: Duration,
    deadline: Option<Instant>,
    ready: impl FnMut() -> bool,
) -> Result<()> {
    wait_until_counting(seq, waiters, None, spin, deadline, ready)
}

/// [`wait_until`] that also bumps `sleeps` once if the spin phase fails (the caller is
/// about to sleep in the kernel, or time out). Counting there rather than on every empty
/// or full check keeps shared statistics writes off the fast path, where they would
/// bounce a cache line that the other side reads on every message.
pub fn wait_until_counting(
    seq: &AtomicU32,
    waiters: &AtomicU32,
    sleeps: Option<&AtomicU64>,
    spin: Duration,
    deadline: Option<Instant>,
    mut ready: impl FnMut() -> bool,
) -> Result<()> {
    if !spin.is_zero() {
        let start = Instant::now();
        loop {
            // About 0.5 µs of polling (a `pause` is 10-20 ns on current x86), checking every
            // four pauses: checking reads the other side's cache line, and checking more
            // often only steals it from the writer more often (measured: 8 B throughput
            // between two CPUs ~110 -> ~95 ns per message, round trips unchanged)...
            for _ in 0..8 {
                if ready() {
                    return Ok(());
                }
                for _ in 0..4 {
                    std::hint::spin_loop();
                }
            }
            // ...then let a peer on the same CPU run: it is the one we wait for, and with
            // both pinned to one CPU every µs spent polling delays it. With nothing else
            // runnable, sched_yield returns in about 0.3 µs. Reading the clock is cheap (vDSO).
            std::thread::yield_now();
            if start.elapsed() >= spin {
                break;
            }
        }
    }
    if let Some(sleeps) = sleeps {
        sleeps.fetch_add(1, Ordering::Relaxed);
    }
    let seq0 = seq.load(Ordering::SeqCst);
    waiters.fetch_add(1, Ordering::SeqCst);
    fence(Ordering::SeqCst);
    let result = if ready() {
        Ok(())
    } else {
        match remaining(deadline) {
            Some(r) if r.is_zero() => Err(Error::Timeout),
            r => {
                futex_wait(seq, seq0, r);
                Ok(())
            }
        }
    };
    waiters.fetch_sub(1, Ordering::SeqCst);
    result
}

/// The waking side: after publishing a change that `ready()` observes, call this.
/// Skips the syscall when nobody sleeps. `n` is how many sleepers to wake.
#[inline]
pub fn notify(seq: &AtomicU32, waiters: &AtomicU32, n: i32) {
    fence(Ordering::SeqCst);
    if waiters.load(Ordering::Relaxed) != 0 {
        seq.fetch_add(1, Ordering::SeqCst);
        futex_wake(seq, n);
    }
}

/// Unconditionally bump `seq` and wake every sleeper (used by `close`).
pub fn notify_all(seq: &AtomicU32) {
    seq.fetch_add(1, Ordering::SeqCst);
    futex_wake(seq, i32::MAX);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn lock_excludes_threads() {
        let word = Arc::new(AtomicU32::new(0));
        let counter = Arc::new(AtomicU64::new(0));
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let word = word.clone();
                let counter = counter.clone();
                std::thread::spawn(move || {
                    for _ in 0..10_000 {
                        let lock = RobustLock::new(&word);
                        let (_g, how) = lock.lock(None).unwrap();
                        assert_eq!(how, Acquired::Clean);
                        // Non-atomic read-modify-write under the lock.
                        let v = counter.load(Ordering::Relaxed);
                        counter.store(v + 1, Ordering::Relaxed);
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        assert_eq!(counter.load(Ordering::Relaxed), 40_000);
        assert_eq!(word.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn dead_holder_is_recovered() {
        // A TID that cannot exist (above PID_MAX_LIMIT) stands for a dead holder.
        let word = AtomicU32::new(4_194_305);
        let (_g, how) = RobustLock::new(&word).lock(None).unwrap();
        assert_eq!(how, Acquired::Recovered(4_194_305));
    }

    #[test]
    fn live_holder_times_out() {
        let word = AtomicU32::new(0);
        let (g, _) = RobustLock::new(&word).lock(None).unwrap();
        std::thread::scope(|s| {
            s.spawn(|| {
                let r =
                    RobustLock::new(&word).lock(Some(Instant::now() + Duration::from_millis(30)));
                assert!(matches!(r, Err(Error::Timeout)));
            });
        });
        drop(g);
        assert_eq!(word.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn own_process_is_alive_and_start_time_known() {
        let pid = std::process::id();
        assert!(tid_alive(pid));
        let st = process_start_time(pid).expect("start time");
        assert!(process_alive(pid, st));
        assert!(!process_alive(pid, st + 1));
        assert!(!tid_alive(0));
    }
}
