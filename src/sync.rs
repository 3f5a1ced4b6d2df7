//! Process-shared synchronisation: a lock that survives its holder being killed, and
//! futex-style waiting on 32-bit words in the segment.
//!
//! # The lock
//! A lock is one `AtomicU32` in shared memory: `0` when free, otherwise the 31-bit
//! **holder id** of the attached queue handle that holds it, with bit 31 ([`WAITERS`]) set
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
//! for [`LIVENESS_SLICE`]. Why this and not the kernel's robust-futex list, PIDs, or a robust
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
//! in a waiter count, re-check the condition, and `FUTEX_WAIT` on the sequence word. Wakers
//! bump the sequence word and call `FUTEX_WAKE` only when the waiter count is non-zero.
//! Futexes are the shared (non-private) kind so that they wake other processes. A sleep
//! lasts at most [`MAX_SLEEP`] before the condition is checked again, so a waiter count that
//! a hostile process zeroed delays a sleeper by at most that, never for ever.

use std::cell::Cell;
use std::fs::File;
// Process-local words (statics, a holder's own id) are always the standard library's...
use std::sync::atomic::{AtomicU32 as LocalU32, AtomicU64 as LocalU64, Ordering};
use std::time::{Duration, Instant};

use crate::error::{Error, Result};
// ...words in the segment are `prim`'s (loom's under `cfg(loom)`).
use crate::prim::{self, fence, AtomicU32, AtomicU64};

/// Bit set in a lock word while a thread may be sleeping on it.
pub const WAITERS: u32 = 1 << 31;
/// Mask of the holder id in a lock word.
pub const HOLDER_MASK: u32 = !WAITERS;

/// File offset of holder id 0's liveness byte: holder `id` locks byte `LIVE_BASE + id`.
/// Far past any segment's end (locks may lie beyond the end of a file), so liveness locks
/// never touch the segment's contents.
pub const LIVE_BASE: i64 = 1 << 60;

/// How long a lock waiter lets a holder keep the lock before asking the kernel whether the
/// holder is still alive (and again after each further slice).
pub const LIVENESS_SLICE: Duration = Duration::from_millis(10);
/// Longest single kernel sleep of a waiter before it re-checks its condition.
pub const MAX_SLEEP: Duration = Duration::from_millis(100);
/// Spin iterations on a contended lock before sleeping.
#[cfg(not(loom))]
const LOCK_SPIN: u32 = 200;
/// Under loom every spin is a scheduling point: keep one, to cover the spinning path.
#[cfg(loom)]
const LOCK_SPIN: u32 = 1;

static FORK_GENERATION: LocalU64 = LocalU64::new(0);

/// Held while a liveness descriptor is being opened and registered, and by `fork` (the
/// `pthread_atfork` prepare handler), so that no child is forked between the open and the
/// registration (a child would keep an unregistered copy of the parent's description, and
/// with it the parent's id, alive). A spin flag: the fork handlers may take no lock that a
/// vanished thread could hold.
static ATTACH: LocalU32 = LocalU32::new(0);

fn attach_lock() {
    while ATTACH
        .compare_exchange_weak(0, 1, Ordering::Acquire, Ordering::Relaxed)
        .is_err()
    {
        std::thread::yield_now();
    }
}

fn attach_unlock() {
    ATTACH.store(0, Ordering::Release);
}

extern "C" fn before_fork() {
    attach_lock();
}

extern "C" fn after_fork_in_parent() {
    attach_unlock();
}

extern "C" fn after_fork_in_child() {
    FORK_GENERATION.fetch_add(1, Ordering::Relaxed);
    // Only the forking thread exists now. The inherited liveness descriptors share the
    // parent's open file descriptions, whose locks say "the parent lives": replace each by a
    // fresh description of the same file (`/proc/self/fd/N` re-opens the very object, so
    // this works after the name was removed), which the child's holder claims a new id on,
    // and close the inherited one. Only async-signal-safe calls (open, close, atomics).
    for_each_live_slot(|slot| {
        let fd = slot.load(Ordering::Relaxed);
        if fd >= 0 {
            let fresh = reopen_proc_fd(fd);
            // SAFETY: close is async-signal-safe; `fd` is our registered liveness
            // descriptor (the parent keeps its own copy), closed once, here.
            unsafe { libc::close(fd) };
            slot.store(fresh, Ordering::Relaxed);
        }
    });
    attach_unlock();
}

/// `open("/proc/self/fd/<fd>", O_RDWR | O_CLOEXEC)` without allocating (fork child
/// handler); -1 on failure.
fn reopen_proc_fd(fd: i32) -> i32 {
    let mut buf = [0u8; 32];
    let prefix = b"/proc/self/fd/";
    buf[..prefix.len()].copy_from_slice(prefix);
    let mut digits = [0u8; 11];
    let (mut n, mut v) = (0, fd as u32);
    loop {
        digits[n] = b'0' + (v % 10) as u8;
        n += 1;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    for k in 0..n {
        buf[prefix.len() + k] = digits[n - 1 - k];
    }
    // buf[prefix.len() + n] is 0: the terminator.
    // SAFETY: `buf` is a NUL-terminated path; open is async-signal-safe.
    unsafe { libc::open(buf.as_ptr().cast(), libc::O_RDWR | libc::O_CLOEXEC) }
}

fn register_atfork() {
    static ATFORK: std::sync::Once = std::sync::Once::new();
    ATFORK.call_once(|| {
        // SAFETY: registers plain extern "C" functions that use only atomics, open(2) and
        // close(2), all valid around fork and in a freshly forked child.
        unsafe {
            libc::pthread_atfork(
                Some(before_fork),
                Some(after_fork_in_parent),
                Some(after_fork_in_child),
            );
        }
    });
}

/// How many times this process is a `fork` child of the process that first used shmq
/// (process-local; changes in the child of every `fork`).
pub fn fork_generation() -> u64 {
    register_atfork();
    FORK_GENERATION.load(Ordering::Relaxed)
}

/// Whether the thread (or process) `tid` still exists and is not a zombie.
///
/// Uses `/proc/<tid>/stat` (works for thread ids too); falls back to `kill(tid, 0)` when
/// `/proc` is unavailable. Only meaningful in the caller's PID namespace: the locks do not
/// use it (see [`Holder`]); it serves informational fields such as a creator's liveness.
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

/// Whether the process that recorded (`pid`, `start`) is still running. Informational only,
/// and right only inside the caller's PID namespace: no decision (lock takeover, staleness)
/// rests on it.
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
pub fn futex_wait(word: &LocalU32, expected: u32, timeout: Option<Duration>) -> Wake {
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
pub fn futex_wake(word: &LocalU32, n: i32) {
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

/// When a blocking call gives up: never, at an instant, or after a duration counted from
/// the first moment the call actually has to wait. The clock is read lazily, so a call that
/// finds room or a message at once never reads it (the `*_timeout` calls cost what the
/// blocking ones cost on the fast path). No arithmetic here can overflow: a deadline past
/// the clock's range is "never".
#[derive(Debug)]
pub struct Deadline {
    timeout: Option<Duration>,
    at: Cell<Option<Option<Instant>>>,
}

impl Deadline {
    /// No deadline: wait for ever.
    pub fn never() -> Deadline {
        Deadline {
            timeout: None,
            at: Cell::new(Some(None)),
        }
    }

    /// At `at` (`None`: never).
    pub fn at(at: Option<Instant>) -> Deadline {
        Deadline {
            timeout: None,
            at: Cell::new(Some(at)),
        }
    }

    /// `d` after the first call of [`Deadline::get`] (`Duration::MAX` and other durations
    /// past the clock's range: never).
    pub fn after(d: Duration) -> Deadline {
        Deadline {
            timeout: Some(d),
            at: Cell::new(None),
        }
    }

    /// The deadline instant (`None`: never), fixed at the first call. Under loom there is
    /// no clock: every deadline is "never".
    pub fn get(&self) -> Option<Instant> {
        if cfg!(loom) {
            return None;
        }
        match self.at.get() {
            Some(at) => at,
            None => {
                let at = self.timeout.and_then(|d| Instant::now().checked_add(d));
                self.at.set(Some(at));
                at
            }
        }
    }

    /// Time left (`None`: no limit; zero once passed).
    pub fn remaining(&self) -> Option<Duration> {
        self.get()
            .map(|d| d.saturating_duration_since(Instant::now()))
    }

    /// Whether the deadline has passed.
    pub fn expired(&self) -> bool {
        matches!(self.remaining(), Some(r) if r.is_zero())
    }
}

/// How a lock was obtained.
#[derive(Debug, PartialEq, Eq, Clone, Copy)]
pub enum Acquired {
    /// Taken normally.
    Clean,
    /// Taken over from holder `id`, which died while holding it: the protected state may
    /// be mid-update and must be validated and repaired before use.
    Recovered(u32),
}

/// The liveness descriptors of this process, which the `fork` child handler replaces: a
/// lock-free table of chunks of slots (the handler must not wait for a lock a vanished
/// thread held), allocated as needed, up to `LIVE_CHUNKS * CHUNK` descriptors (more than a
/// process can have open under any usual `ulimit -n`).
const CHUNK: usize = 1024;
const LIVE_CHUNKS: usize = 1024;
type Chunk = [std::sync::atomic::AtomicI32; CHUNK];
static LIVE_SLOTS: [std::sync::atomic::AtomicPtr<Chunk>; LIVE_CHUNKS] =
    [const { std::sync::atomic::AtomicPtr::new(std::ptr::null_mut()) }; LIVE_CHUNKS];

fn chunk(i: usize, create: bool) -> Option<&'static Chunk> {
    let p = LIVE_SLOTS[i].load(Ordering::Acquire);
    if !p.is_null() {
        // SAFETY: chunks are leaked boxes, never freed: the pointer stays valid.
        return Some(unsafe { &*p });
    }
    if !create {
        return None;
    }
    let fresh: Box<Chunk> = Box::new([const { std::sync::atomic::AtomicI32::new(-1) }; CHUNK]);
    let fresh = Box::into_raw(fresh);
    match LIVE_SLOTS[i].compare_exchange(
        std::ptr::null_mut(),
        fresh,
        Ordering::AcqRel,
        Ordering::Acquire,
    ) {
        // SAFETY: just stored; leaked for the process's life.
        Ok(_) => Some(unsafe { &*fresh }),
        Err(other) => {
            // SAFETY: `fresh` was never shared; `other` is a leaked chunk as above.
            unsafe {
                drop(Box::from_raw(fresh));
                Some(&*other)
            }
        }
    }
}

fn for_each_live_slot(mut f: impl FnMut(&std::sync::atomic::AtomicI32)) {
    for i in 0..LIVE_CHUNKS {
        match chunk(i, false) {
            Some(c) => c.iter().for_each(&mut f),
            None => break,
        }
    }
}

/// Put `fd` in a free slot; `None` only if the whole table is full.
fn register_live_fd(fd: i32) -> Option<&'static std::sync::atomic::AtomicI32> {
    (0..LIVE_CHUNKS).find_map(|i| {
        chunk(i, true)?.iter().find(|s| {
            s.compare_exchange(-1, fd, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
        })
    })
}

/// An open-file-description lock request (`cmd`: `F_OFD_SETLK` or `F_OFD_GETLK`) of type
/// `typ` on the one byte at `offset` of `file`. Returns the `l_type` the kernel leaves in
/// the request (for `F_OFD_GETLK`: `F_UNLCK` if nothing conflicts). Used for the segment's
/// attach marker (`segment::MAPPED_BYTE`); holders use [`ofd_lock_fd`] on their byte.
pub(crate) fn ofd_lock(
    file: &File,
    typ: libc::c_int,
    offset: i64,
    cmd: libc::c_int,
) -> std::io::Result<i16> {
    ofd_lock_at(std::os::fd::AsRawFd::as_raw_fd(file), typ, offset, cmd)
}

/// The liveness byte of holder `id`.
fn live_byte(id: u32) -> i64 {
    LIVE_BASE + id as i64
}

/// [`ofd_lock_at`] on holder `id`'s liveness byte.
fn ofd_lock_fd(fd: i32, typ: libc::c_int, id: u32, cmd: libc::c_int) -> std::io::Result<i16> {
    ofd_lock_at(fd, typ, live_byte(id), cmd)
}

fn ofd_lock_at(fd: i32, typ: libc::c_int, offset: i64, cmd: libc::c_int) -> std::io::Result<i16> {
    // SAFETY: an all-zero flock is a valid value of this plain C struct.
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = typ as libc::c_short;
    fl.l_whence = libc::SEEK_SET as libc::c_short;
    fl.l_start = offset;
    fl.l_len = 1;
    // SAFETY: the callers pass an open descriptor (a holder's liveness descriptor, or a
    // borrowed `File`'s); `fl` is a valid flock the kernel reads and, for F_OFD_GETLK,
    // writes.
    let r = unsafe { libc::fcntl(fd, cmd, &mut fl as *mut libc::flock) };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(fl.l_type)
}

fn dev_ino_fd(fd: i32) -> std::io::Result<(u64, u64)> {
    // SAFETY: an all-zero stat is a valid value of this plain C struct.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: `fd` is open; `st` is a valid out-pointer.
    if unsafe { libc::fstat(fd, &mut st) } < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok((st.st_dev, st.st_ino))
}

/// The liveness descriptor of a file-backed holder and how to get a new one after `fork`.
struct LiveFile {
    /// The descriptor, owned through its slot (the fork child handler replaces a slot's
    /// descriptor; whoever takes it out of the slot closes it). -1: none.
    fd: std::sync::atomic::AtomicI32,
    slot: std::sync::atomic::AtomicPtr<std::sync::atomic::AtomicI32>,
    /// `(generation << 1) | 1` while a thread of that fork generation re-claims; 0 idle. A
    /// value of an older generation was left by a thread that did not survive a fork.
    claiming: LocalU64,
    /// Device and inode of the segment, to check a re-opened file is the same object.
    dev_ino: (u64, u64),
    /// Re-opens the segment's file (by name or path; checked against `dev_ino`), when the
    /// fork child handler could not re-open it through `/proc/self/fd`.
    /// (Unwind safe: it only opens a file; a panic in it leaves no broken state.)
    reopen: std::panic::AssertUnwindSafe<Box<dyn Fn() -> std::io::Result<File> + Send + Sync>>,
}

impl LiveFile {
    /// Open a descriptor with `open` and register it, with forks held off in between.
    fn open_registered(&self, open: impl FnOnce() -> Result<File>) -> Result<i32> {
        attach_lock();
        let r = open().map(|f| {
            let fd = std::os::fd::IntoRawFd::into_raw_fd(f);
            let slot = register_live_fd(fd).map_or(std::ptr::null_mut(), |s| {
                s as *const std::sync::atomic::AtomicI32 as *mut _
            });
            self.slot.store(slot, Ordering::Release);
            self.fd.store(fd, Ordering::Release);
            fd
        });
        attach_unlock();
        r
    }

    /// Take the registered descriptor out of its slot and close it.
    fn release(&self) {
        let slot = self.slot.swap(std::ptr::null_mut(), Ordering::AcqRel);
        let fd = if slot.is_null() {
            self.fd.swap(-1, Ordering::AcqRel)
        } else {
            self.fd.store(-1, Ordering::Release);
            // SAFETY: slots live in leaked chunks for the process's life.
            unsafe { &*slot }.swap(-1, Ordering::AcqRel)
        };
        if fd >= 0 {
            // SAFETY: the descriptor came out of our slot: nobody else closes it.
            unsafe { libc::close(fd) };
        }
    }
}

impl Drop for LiveFile {
    fn drop(&mut self) {
        self.release();
    }
}

/// The identity under which a queue handle takes the segment's locks, and the liveness
/// check of other holders. See the module docs.
pub struct Holder {
    id: LocalU32,
    generation: LocalU64,
    live: Option<LiveFile>,
}

impl std::fmt::Debug for Holder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Holder")
            .field("id", &self.id.load(Ordering::Relaxed))
            .field("file", &self.live.is_some())
            .finish()
    }
}

fn random_id() -> u32 {
    if cfg!(loom) {
        // A fixed id, so that every loom execution runs the same code.
        return 1;
    }
    use std::hash::{BuildHasher, Hasher};
    static N: LocalU64 = LocalU64::new(0);
    loop {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(N.fetch_add(1, Ordering::Relaxed));
        h.write_u32(std::process::id());
        let id = (h.finish() as u32) & HOLDER_MASK;
        if id != 0 {
            return id;
        }
    }
}

impl Holder {
    /// A holder for memory private to this process (heap rings in tests and fuzzing): its
    /// id is alive, every other id is dead.
    pub fn local() -> Holder {
        Holder {
            id: LocalU32::new(random_id()),
            generation: LocalU64::new(fork_generation()),
            live: None,
        }
    }

    /// Claim a holder id on a segment: `open` opens the segment's file with an open file
    /// description of its own (the holder keeps it: it carries the liveness lock). `in_use`
    /// says whether an id appears in a lock word now (a dead holder's id is not re-used
    /// while a lock word still names it). `reopen` opens the same file again by name or
    /// path (used in a `fork` child when `/proc/self/fd` is not available).
    ///
    /// Errors: [`Error::Io`] if the file system refuses OFD locks or the process is out of
    /// file descriptors.
    pub fn claim(
        open: impl FnOnce() -> Result<File>,
        in_use: impl Fn(u32) -> bool,
        reopen: Box<dyn Fn() -> std::io::Result<File> + Send + Sync>,
    ) -> Result<Holder> {
        let generation = fork_generation();
        let mut live = LiveFile {
            fd: std::sync::atomic::AtomicI32::new(-1),
            slot: std::sync::atomic::AtomicPtr::new(std::ptr::null_mut()),
            claiming: LocalU64::new(0),
            dev_ino: (0, 0),
            reopen: std::panic::AssertUnwindSafe(reopen),
        };
        let fd = live.open_registered(open)?;
        live.dev_ino = dev_ino_fd(fd)?;
        let id = Self::claim_on(fd, &in_use)?;
        Ok(Holder {
            id: LocalU32::new(id),
            generation: LocalU64::new(generation),
            live: Some(live),
        })
    }

    fn claim_on(fd: i32, in_use: &dyn Fn(u32) -> bool) -> Result<u32> {
        for _ in 0..1000 {
            let id = random_id();
            if in_use(id) {
                continue;
            }
            match ofd_lock_fd(fd, libc::F_WRLCK, id, libc::F_OFD_SETLK) {
                Ok(_) => return Ok(id),
                Err(e) if matches!(e.raw_os_error(), Some(libc::EAGAIN) | Some(libc::EACCES)) => {
                    continue
                }
                Err(e) => {
                    return Err(Error::Io(std::io::Error::new(
                        e.kind(),
                        format!("taking the liveness lock (F_OFD_SETLK) on the segment: {e}"),
                    )))
                }
            }
        }
        Err(Error::Io(std::io::Error::new(
            std::io::ErrorKind::ResourceBusy,
            "no free holder id after 1000 tries: another process holds locks on the \
             segment's liveness range (a user with access to the segment may block new \
             handles this way)",
        )))
    }

    /// This holder's id, re-claimed first if this process is a `fork` child of the one that
    /// claimed it.
    #[inline]
    pub fn id(&self, in_use: impl Fn(u32) -> bool) -> Result<u32> {
        if self.generation.load(Ordering::Acquire) == FORK_GENERATION.load(Ordering::Relaxed) {
            return Ok(self.id.load(Ordering::Relaxed));
        }
        self.reclaim(&in_use)
    }

    #[cold]
    fn reclaim(&self, in_use: &dyn Fn(u32) -> bool) -> Result<u32> {
        let Some(live) = &self.live else {
            self.id.store(random_id(), Ordering::Relaxed);
            self.generation
                .store(FORK_GENERATION.load(Ordering::Relaxed), Ordering::Release);
            return Ok(self.id.load(Ordering::Relaxed));
        };
        loop {
            let generation = FORK_GENERATION.load(Ordering::Relaxed);
            if self.generation.load(Ordering::Acquire) == generation {
                return Ok(self.id.load(Ordering::Relaxed));
            }
            let mine = (generation << 1) | 1;
            let c = live.claiming.load(Ordering::Acquire);
            if c == mine {
                // Another thread of this process is re-claiming: wait for it.
                std::thread::yield_now();
                continue;
            }
            // Idle, or left by a thread of an older generation that did not survive a fork.
            if live
                .claiming
                .compare_exchange(c, mine, Ordering::AcqRel, Ordering::Acquire)
                .is_err()
            {
                continue;
            }
            let r = self.reclaim_as(live, generation, in_use);
            live.claiming.store(0, Ordering::Release);
            return r;
        }
    }

    fn reclaim_as(
        &self,
        live: &LiveFile,
        generation: u64,
        in_use: &dyn Fn(u32) -> bool,
    ) -> Result<u32> {
        // The fork child handler replaced our inherited descriptor (which shared the
        // parent's description and id) by a fresh description of the same file, in our
        // slot. If it could not (no /proc), open the segment again by name or path.
        let slot = live.slot.load(Ordering::Acquire);
        // SAFETY: slots live in leaked chunks for the process's life.
        let fresh = (!slot.is_null()).then(|| unsafe { &*slot }.load(Ordering::Acquire));
        let fd = match fresh {
            Some(fd) if fd >= 0 => {
                live.fd.store(fd, Ordering::Release);
                fd
            }
            _ => {
                live.release();
                live.open_registered(|| {
                    (live.reopen.0)().map_err(|e| {
                        Error::Io(std::io::Error::new(
                            e.kind(),
                            format!("re-opening the segment in a fork child: {e}"),
                        ))
                    })
                })?
            }
        };
        if dev_ino_fd(fd)? != live.dev_ino {
            return Err(Error::Io(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "re-opening the segment in a fork child: its name now refers to another object",
            )));
        }
        let id = Self::claim_on(fd, in_use)?;
        self.id.store(id, Ordering::Relaxed);
        self.generation.store(generation, Ordering::Release);
        Ok(id)
    }

    /// Whether holder `id` is alive: for a file-backed holder, whether any open file
    /// description still holds `id`'s liveness lock (asked of the kernel); for a local one,
    /// whether `id` is this holder's. Errors of the kernel call count as alive (waiting is
    /// safe; taking a live holder's lock is not). Call [`Holder::id`] first in a process
    /// that may be a fork child (the lock does).
    pub fn is_alive(&self, id: u32) -> bool {
        if id == self.id.load(Ordering::Relaxed) {
            return true;
        }
        let Some(live) = &self.live else {
            return false;
        };
        let fd = live.fd.load(Ordering::Acquire);
        if fd < 0 {
            return true;
        }
        // Probe for a read lock: only a *write* lock conflicts, and only a handle with
        // write access can hold one; read locks that a user with read access may place on
        // the byte do not make a dead holder look alive.
        !matches!(
            ofd_lock_fd(fd, libc::F_RDLCK, id, libc::F_OFD_GETLK),
            Ok(t) if t == libc::F_UNLCK as i16
        )
    }
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

    /// Acquire the lock as holder `me` (from [`Holder::id`]), waiting until `deadline`.
    /// `holder` answers whether another holder is alive.
    ///
    /// Returns [`Error::Timeout`] when the deadline passes while a live holder keeps it.
    #[inline]
    pub fn lock(
        &self,
        me: u32,
        holder: &Holder,
        deadline: &Deadline,
    ) -> Result<(LockGuard<'a>, Acquired)> {
        self.lock_or_abandon(me, holder, deadline, &|| None)
    }

    /// [`RobustLock::lock`] that gives up with the error `abandon()` returns, asked before
    /// every sleep of a contended wait (so within [`LIVENESS_SLICE`], and at once after a
    /// wake of the lock word): e.g. `Closed` once the queue is closed, so that `close`
    /// also frees callers waiting for a lock that a live but stopped process holds.
    #[inline]
    pub fn lock_or_abandon(
        &self,
        me: u32,
        holder: &Holder,
        deadline: &Deadline,
        abandon: &dyn Fn() -> Option<Error>,
    ) -> Result<(LockGuard<'a>, Acquired)> {
        debug_assert!(me != 0 && me & WAITERS == 0);
        if self
            .word
            .compare_exchange(0, me, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
        {
            return Ok((self.guard(me), Acquired::Clean));
        }
        self.lock_contended(me, holder, deadline, abandon)
    }

    fn guard(&self, me: u32) -> LockGuard<'a> {
        LockGuard {
            word: self.word,
            me,
        }
    }

    #[cold]
    fn lock_contended(
        &self,
        me: u32,
        holder: &Holder,
        deadline: &Deadline,
        abandon: &dyn Fn() -> Option<Error>,
    ) -> Result<(LockGuard<'a>, Acquired)> {
        for _ in 0..LOCK_SPIN {
            prim::spin_loop();
            if self.word.load(Ordering::Relaxed) == 0
                && self
                    .word
                    .compare_exchange(0, me, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
            {
                return Ok((self.guard(me), Acquired::Clean));
            }
        }
        let mut stuck_since: Option<(u32, Instant)> = None;
        loop {
            let v = self.word.load(Ordering::Relaxed);
            let owner = v & HOLDER_MASK;
            if owner == 0 {
                // Free. We may have been one of several sleepers: keep the waiters bit so
                // that our unlock wakes the next one.
                if self
                    .word
                    .compare_exchange(v, me | WAITERS, Ordering::Acquire, Ordering::Relaxed)
                    .is_ok()
                {
                    return Ok((self.guard(me), Acquired::Clean));
                }
                continue;
            }
            if v & WAITERS == 0
                && self
                    .word
                    .compare_exchange(v, v | WAITERS, Ordering::Relaxed, Ordering::Relaxed)
                    .is_err()
            {
                continue;
            }
            // Ask whether the holder lives once it has kept the lock for a slice, and once
            // more when the caller's deadline has passed: a short timeout must not make a
            // dead holder look alive for ever. (Under loom, which has no clock: every time.)
            let expired = deadline.expired();
            let check_now = expired
                || cfg!(loom)
                || match stuck_since {
                    Some((o, t)) if o == owner => t.elapsed() >= LIVENESS_SLICE,
                    _ => {
                        stuck_since = Some((owner, Instant::now()));
                        false
                    }
                };
            if check_now {
                if !holder.is_alive(owner) {
                    let cur = self.word.load(Ordering::Relaxed);
                    if cur & HOLDER_MASK == owner
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
            if let Some(e) = abandon() {
                return Err(e);
            }
            let slice = match deadline.remaining() {
                Some(r) if r.is_zero() => return Err(Error::Timeout),
                Some(r) => r.min(LIVENESS_SLICE),
                None => LIVENESS_SLICE,
            };
            prim::futex_wait(self.word, v | WAITERS, Some(slice));
        }
    }
}

impl Drop for LockGuard<'_> {
    #[inline]
    fn drop(&mut self) {
        // Fast path: nobody waits.
        if self
            .word
            .compare_exchange(self.me, 0, Ordering::Release, Ordering::Relaxed)
            .is_ok()
        {
            return;
        }
        let mut v = self.word.load(Ordering::Relaxed);
        loop {
            if v & HOLDER_MASK != self.me {
                // Someone took the lock over (a hostile write, or they believed us dead):
                // it is theirs now.
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
            prim::futex_wake(self.word, 1);
        }
    }
}

/// The sleeping side of the sequence-word protocol.
///
/// Spins for about `spin` (never past the deadline) re-checking `ready`, then registers in
/// `waiters`, re-checks, and sleeps on `seq` until a waker bumps it, for at most
/// [`MAX_SLEEP`] at a time. Returns `Ok(())` once `ready()` held at some check or after a
/// kernel wake or slice (the caller re-checks anyway), and `Err(Timeout)` when the deadline
/// passed with `ready()` false.
pub fn wait_until(
    seq: &AtomicU32,
    waiters: &AtomicU32,
    spin: Duration,
    deadline: &Deadline,
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
    deadline: &Deadline,
    mut ready: impl FnMut() -> bool,
) -> Result<()> {
    // (Under loom there is no clock to end a spin phase: waiters go straight to sleep.)
    if !spin.is_zero() && !cfg!(loom) {
        let start = Instant::now();
        let spin_until = match (start.checked_add(spin), deadline.get()) {
            (Some(s), Some(d)) => Some(s.min(d)),
            (s, None) => s,
            (None, d) => d,
        };
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
                    prim::spin_loop();
                }
            }
            // ...then let a peer on the same CPU run: it is the one we wait for, and with
            // both pinned to one CPU every µs spent polling delays it. With nothing else
            // runnable, sched_yield returns in about 0.3 µs. Reading the clock is cheap (vDSO).
            prim::yield_now();
            if spin_until.is_some_and(|u| Instant::now() >= u) {
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
        match deadline.remaining() {
            Some(r) if r.is_zero() => Err(Error::Timeout),
            r => {
                let slice = r.map_or(MAX_SLEEP, |r| r.min(MAX_SLEEP));
                prim::futex_wait(seq, seq0, Some(slice));
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
    notify_fenced(seq, waiters, n);
}

/// [`notify`] for a caller that issued the `SeqCst` fence after its change itself (one
/// fence serves several notifications of the same change).
#[inline]
pub fn notify_fenced(seq: &AtomicU32, waiters: &AtomicU32, n: i32) {
    if waiters.load(Ordering::Relaxed) != 0 {
        seq.fetch_add(1, Ordering::SeqCst);
        prim::futex_wake(seq, n);
    }
}

/// Unconditionally bump `seq` and wake every sleeper (used by `close`).
pub fn notify_all(seq: &AtomicU32) {
    seq.fetch_add(1, Ordering::SeqCst);
    prim::futex_wake(seq, i32::MAX);
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn lock_file() -> (tempfile::NamedTempFile, File) {
        let t = tempfile::NamedTempFile::new().unwrap();
        let f = File::options()
            .read(true)
            .write(true)
            .open(t.path())
            .unwrap();
        (t, f)
    }

    fn file_holder(path: &std::path::Path) -> Holder {
        let f = File::options().read(true).write(true).open(path).unwrap();
        let p = path.to_path_buf();
        Holder::claim(
            move || Ok(f),
            |_| false,
            Box::new(move || File::options().read(true).write(true).open(&p)),
        )
        .unwrap()
    }

    /// Rounds per thread (fewer under Miri, which is some 1000 times slower).
    const ROUNDS: u64 = if cfg!(miri) { 300 } else { 10_000 };

    #[test]
    fn lock_excludes_threads() {
        let word = Arc::new(AtomicU32::new(0));
        let counter = Arc::new(AtomicU64::new(0));
        let holder = Arc::new(Holder::local());
        let handles: Vec<_> = (0..4)
            .map(|_| {
                let word = word.clone();
                let counter = counter.clone();
                let holder = holder.clone();
                std::thread::spawn(move || {
                    let me = holder.id(|_| false).unwrap();
                    for _ in 0..ROUNDS {
                        let lock = RobustLock::new(&word);
                        let (_g, how) = lock.lock(me, &holder, &Deadline::never()).unwrap();
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
        assert_eq!(counter.load(Ordering::Relaxed), 4 * ROUNDS);
        assert_eq!(word.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn dead_holder_is_recovered() {
        let holder = Holder::local();
        let me = holder.id(|_| false).unwrap();
        let dead = if me == 12345 { 54321 } else { 12345 };
        let word = AtomicU32::new(dead);
        let (_g, how) = RobustLock::new(&word)
            .lock(me, &holder, &Deadline::never())
            .unwrap();
        assert_eq!(how, Acquired::Recovered(dead));
    }

    #[test]
    fn live_holder_times_out() {
        let word = AtomicU32::new(0);
        let holder = Holder::local();
        let me = holder.id(|_| false).unwrap();
        let (g, _) = RobustLock::new(&word)
            .lock(me, &holder, &Deadline::never())
            .unwrap();
        std::thread::scope(|s| {
            s.spawn(|| {
                // Another thread of the same holder: alive, so it waits and times out.
                let r = RobustLock::new(&word).lock(
                    me,
                    &holder,
                    &Deadline::after(Duration::from_millis(30)),
                );
                assert!(matches!(r, Err(Error::Timeout)));
            });
        });
        drop(g);
        assert_eq!(word.load(Ordering::Relaxed), 0);
    }

    #[test]
    #[cfg_attr(
        miri,
        ignore = "needs files and fcntl(F_OFD_SETLK/GETLK), which Miri lacks"
    )]
    fn file_holders_see_each_other_alive_and_a_closed_one_dead() {
        let (t, _f) = lock_file();
        let a = file_holder(t.path());
        let b = file_holder(t.path());
        let ida = a.id(|_| false).unwrap();
        let idb = b.id(|_| false).unwrap();
        assert_ne!(ida, idb);
        assert!(a.is_alive(idb) && b.is_alive(ida));
        // An id nobody holds is dead.
        let free = (1..).find(|i| *i != ida && *i != idb).unwrap();
        assert!(!a.is_alive(free));
        // Closing b's descriptor (as the kernel does when b's process dies) frees its id.
        drop(b);
        assert!(!a.is_alive(idb));
        // A lock word left by the dead holder is taken over.
        let word = AtomicU32::new(idb);
        let (_g, how) = RobustLock::new(&word)
            .lock(ida, &a, &Deadline::never())
            .unwrap();
        assert_eq!(how, Acquired::Recovered(idb));
    }

    #[test]
    #[cfg_attr(miri, ignore = "needs files and fcntl(F_OFD_SETLK), which Miri lacks")]
    fn claim_avoids_ids_named_in_lock_words() {
        let (t, f) = lock_file();
        let p = t.path().to_path_buf();
        let h = Holder::claim(
            move || Ok(f),
            |id| id % 2 == 0,
            Box::new(move || File::options().read(true).write(true).open(&p)),
        )
        .unwrap();
        assert_eq!(h.id(|_| false).unwrap() % 2, 1);
    }

    #[test]
    fn deadlines_never_overflow() {
        let d = Deadline::after(Duration::MAX);
        assert_eq!(d.get(), None);
        assert!(!d.expired());
        let z = Deadline::after(Duration::ZERO);
        assert!(z.expired());
        assert_eq!(Deadline::never().remaining(), None);
        let w = AtomicU32::new(0);
        let n = AtomicU32::new(0);
        // A spin of Duration::MAX is bounded by the deadline.
        let r = wait_until(
            &w,
            &n,
            Duration::MAX,
            &Deadline::after(Duration::from_millis(20)),
            || false,
        );
        assert!(matches!(r, Err(Error::Timeout)));
    }

    #[test]
    #[cfg_attr(miri, ignore = "reads /proc: Miri runs isolated from the file system")]
    fn own_process_is_alive_and_start_time_known() {
        let pid = std::process::id();
        assert!(tid_alive(pid));
        let st = process_start_time(pid).expect("start time");
        assert!(process_alive(pid, st));
        assert!(!process_alive(pid, st + 1));
        assert!(!tid_alive(0));
    }
}
