//! [`Holder`]: the identity under which a handle takes a segment's locks, and the kernel's
//! answer to whether another identity still lives. A holder id is a random 31-bit number
//! for which the handle holds an open-file-description write lock on the byte
//! [`LIVE_BASE`]` + id` of the segment's file, through a descriptor of its own (registered
//! with the `fork` handlers, see `fork.rs`). See [the module docs](super).

use std::fs::File;
use std::os::fd::{BorrowedFd, IntoRawFd};
// Process-local words (a holder's own id) are always the standard library's.
use std::sync::atomic::{
    AtomicI32, AtomicPtr, AtomicU32 as LocalU32, AtomicU64 as LocalU64, Ordering,
};

use super::fork::{self, fork_generation, FORK_GENERATION};
use super::lock::HOLDER_MASK;
use crate::error::{Error, Result};
use crate::sys::{self, ofd};

/// File offset of holder id 0's liveness byte: holder `id` locks byte `LIVE_BASE + id`.
/// Far past any segment's end (locks may lie beyond the end of a file), so liveness locks
/// never touch the segment's contents.
pub(crate) const LIVE_BASE: i64 = 1 << 60;

/// The liveness byte of holder `id`.
fn live_byte(id: u32) -> i64 {
    LIVE_BASE + id as i64
}

/// The liveness descriptor of a file-backed holder and how to get a new one after `fork`.
struct LiveFile {
    /// The descriptor, owned through its slot (the fork child handler replaces a slot's
    /// descriptor; whoever takes it out of the slot closes it). -1: none.
    fd: AtomicI32,
    slot: AtomicPtr<AtomicI32>,
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
    fn open_registered(&self, open: impl FnOnce() -> Result<File>) -> Result<()> {
        fork::attach_lock();
        let r = open().map(|f| {
            let fd = f.into_raw_fd();
            let slot = fork::register_live_fd(fd)
                .map_or(std::ptr::null_mut(), |s| s as *const AtomicI32 as *mut _);
            self.slot.store(slot, Ordering::Release);
            self.fd.store(fd, Ordering::Release);
        });
        fork::attach_unlock();
        r
    }

    /// The current liveness descriptor, if any.
    fn borrowed(&self) -> Option<BorrowedFd<'_>> {
        let fd = self.fd.load(Ordering::Acquire);
        // SAFETY: a descriptor stored in `fd` stays open until `release` takes it out and
        // closes it, which happens at drop (no `&self` left then) or in `reclaim_as` in a
        // fork child whose handler could not re-open it. A thread of that child racing the
        // re-claim may use a closed or re-used number: the kernel then answers EBADF or about
        // another file (a wrong liveness answer for that one call), never touches memory
        // through it (fcntl and fstat only pass the number).
        (fd >= 0).then(|| unsafe { BorrowedFd::borrow_raw(fd) })
    }

    /// The error for a holder found without its descriptor (only `release` removes it).
    fn missing() -> Error {
        Error::Io(std::io::Error::other(
            "the holder's liveness descriptor is gone",
        ))
    }

    /// Device and inode of the file the liveness descriptor refers to.
    fn dev_ino(&self) -> Result<(u64, u64)> {
        let fd = self.borrowed().ok_or_else(Self::missing)?;
        Ok(sys::fs::dev_ino(fd)?)
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
            unsafe { sys::fs::close(fd) };
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
    pub(crate) fn local() -> Holder {
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
    pub(crate) fn claim(
        open: impl FnOnce() -> Result<File>,
        in_use: impl Fn(u32) -> bool,
        reopen: Box<dyn Fn() -> std::io::Result<File> + Send + Sync>,
    ) -> Result<Holder> {
        let generation = fork_generation();
        let mut live = LiveFile {
            fd: AtomicI32::new(-1),
            slot: AtomicPtr::new(std::ptr::null_mut()),
            claiming: LocalU64::new(0),
            dev_ino: (0, 0),
            reopen: std::panic::AssertUnwindSafe(reopen),
        };
        live.open_registered(open)?;
        live.dev_ino = live.dev_ino()?;
        let id = Self::claim_on(&live, &in_use)?;
        Ok(Holder {
            id: LocalU32::new(id),
            generation: LocalU64::new(generation),
            live: Some(live),
        })
    }

    fn claim_on(live: &LiveFile, in_use: &dyn Fn(u32) -> bool) -> Result<u32> {
        let fd = live.borrowed().ok_or_else(LiveFile::missing)?;
        for _ in 0..1000 {
            let id = random_id();
            if in_use(id) {
                continue;
            }
            match ofd::try_lock(fd, ofd::Kind::Write, live_byte(id)) {
                Ok(true) => return Ok(id),
                Ok(false) => continue,
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
    pub(crate) fn id(&self, in_use: impl Fn(u32) -> bool) -> Result<u32> {
        match self.current_id() {
            Some(id) => Ok(id),
            None => self.reclaim(&in_use),
        }
    }

    /// This holder's id if it needs no re-claim (this process is not a `fork` child of the
    /// one that claimed it): the fast path of [`Holder::id`].
    #[inline(always)]
    pub(crate) fn current_id(&self) -> Option<u32> {
        (self.generation.load(Ordering::Acquire) == FORK_GENERATION.load(Ordering::Relaxed))
            .then(|| self.id.load(Ordering::Relaxed))
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
        match fresh {
            Some(fd) if fd >= 0 => live.fd.store(fd, Ordering::Release),
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
        }
        if live.dev_ino()? != live.dev_ino {
            return Err(Error::Io(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "re-opening the segment in a fork child: its name now refers to another object",
            )));
        }
        let id = Self::claim_on(live, in_use)?;
        self.id.store(id, Ordering::Relaxed);
        self.generation.store(generation, Ordering::Release);
        Ok(id)
    }

    /// Whether holder `id` is alive: for a file-backed holder, whether any open file
    /// description still holds `id`'s liveness lock (asked of the kernel); for a local one,
    /// whether `id` is this holder's. Errors of the kernel call count as alive (waiting is
    /// safe; taking a live holder's lock is not). Call [`Holder::id`] first in a process
    /// that may be a fork child (the lock does).
    pub(crate) fn is_alive(&self, id: u32) -> bool {
        if id == self.id.load(Ordering::Relaxed) {
            return true;
        }
        let Some(live) = &self.live else {
            return false;
        };
        let Some(fd) = live.borrowed() else {
            return true;
        };
        // Probe for a read lock: only a *write* lock conflicts, and only a handle with
        // write access can hold one; read locks that a user with read access may place on
        // the byte do not make a dead holder look alive.
        !matches!(
            ofd::conflicts(fd, ofd::Kind::Read, live_byte(id)),
            Ok(false)
        )
    }
}

#[cfg(all(test, not(loom)))]
mod tests {
    use super::*;
    use crate::prim::AtomicU32;
    use crate::sync::{Acquired, Deadline, RobustLock};

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
}
