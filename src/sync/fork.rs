//! Living with `fork` without `exec`: a child inherits the parent's descriptors, and with
//! them the parent's holder ids. `pthread_atfork` handlers keep forks out of the window
//! between opening and registering a liveness descriptor ([`attach_lock`]), and in the
//! child replace each registered descriptor by a fresh open file description of the same
//! file (so a parent that dies holding a lock is seen dead even while such a child lives)
//! and bump the [fork generation](fork_generation), on which the child's holders claim new
//! ids. See [the module docs](super) and `docs/design.md`.

use std::os::fd::{BorrowedFd, IntoRawFd};
// Process-local words, always the standard library's.
use std::sync::atomic::{
    AtomicI32, AtomicPtr, AtomicU32 as LocalU32, AtomicU64 as LocalU64, Ordering,
};

use crate::sys;

pub(super) static FORK_GENERATION: LocalU64 = LocalU64::new(0);

/// Held while a liveness descriptor is being opened and registered, and by `fork` (the
/// `pthread_atfork` prepare handler), so that no child is forked between the open and the
/// registration (a child would keep an unregistered copy of the parent's description, and
/// with it the parent's id, alive). A spin flag: the fork handlers may take no lock that a
/// vanished thread could hold.
static ATTACH: LocalU32 = LocalU32::new(0);

pub(super) fn attach_lock() {
    while ATTACH
        .compare_exchange_weak(0, 1, Ordering::Acquire, Ordering::Relaxed)
        .is_err()
    {
        std::thread::yield_now();
    }
}

pub(super) fn attach_unlock() {
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
            // SAFETY: `fd` is our registered liveness descriptor, open until the close
            // below (only the one thread that runs this handler exists).
            let inherited = unsafe { BorrowedFd::borrow_raw(fd) };
            // -1 on failure: the holder re-opens the file by name or path instead.
            let fresh = sys::fs::reopen(inherited).map_or(-1, IntoRawFd::into_raw_fd);
            // SAFETY: close is async-signal-safe; `fd` is our registered liveness
            // descriptor (the parent keeps its own copy), closed once, here.
            unsafe { sys::fs::close(fd) };
            slot.store(fresh, Ordering::Relaxed);
        }
    });
    attach_unlock();
}

fn register_atfork() {
    static ATFORK: std::sync::Once = std::sync::Once::new();
    ATFORK.call_once(|| {
        // SAFETY: registers plain extern "C" functions that use only atomics, open(2) and
        // close(2), all valid around fork and in a freshly forked child.
        unsafe { sys::fork::at_fork(before_fork, after_fork_in_parent, after_fork_in_child) };
    });
}

/// How many times this process is a `fork` child of the process that first used shmq
/// (process-local; changes in the child of every `fork`).
pub(crate) fn fork_generation() -> u64 {
    register_atfork();
    FORK_GENERATION.load(Ordering::Relaxed)
}

/// The liveness descriptors of this process, which the `fork` child handler replaces: a
/// lock-free table of chunks of slots (the handler must not wait for a lock a vanished
/// thread held), allocated as needed, up to `LIVE_CHUNKS * CHUNK` descriptors (more than a
/// process can have open under any usual `ulimit -n`).
const CHUNK: usize = 1024;
const LIVE_CHUNKS: usize = 1024;
type Chunk = [AtomicI32; CHUNK];
static LIVE_SLOTS: [AtomicPtr<Chunk>; LIVE_CHUNKS] =
    [const { AtomicPtr::new(std::ptr::null_mut()) }; LIVE_CHUNKS];

fn chunk(i: usize, create: bool) -> Option<&'static Chunk> {
    let p = LIVE_SLOTS[i].load(Ordering::Acquire);
    if !p.is_null() {
        // SAFETY: chunks are leaked boxes, never freed: the pointer stays valid.
        return Some(unsafe { &*p });
    }
    if !create {
        return None;
    }
    let fresh: Box<Chunk> = Box::new([const { AtomicI32::new(-1) }; CHUNK]);
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

fn for_each_live_slot(mut f: impl FnMut(&AtomicI32)) {
    for i in 0..LIVE_CHUNKS {
        match chunk(i, false) {
            Some(c) => c.iter().for_each(&mut f),
            None => break,
        }
    }
}

/// Put `fd` in a free slot; `None` only if the whole table is full.
pub(super) fn register_live_fd(fd: i32) -> Option<&'static AtomicI32> {
    (0..LIVE_CHUNKS).find_map(|i| {
        chunk(i, true)?.iter().find(|s| {
            s.compare_exchange(-1, fd, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
        })
    })
}
