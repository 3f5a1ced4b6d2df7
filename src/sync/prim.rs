//! The primitives the ring and the locks are built on, swappable for loom's.
//!
//! Normally these are the standard library's atomics, fence and spin hints and the real
//! futex system calls ([`crate::sys::futex`]). Built with `RUSTFLAGS="--cfg loom"` they are
//! loom's, so that the real `put`/`get`/`close` code of [`crate::ring`] and the locks of
//! [`crate::sync`] run under the loom model checker (see `src/ring/loom_tests.rs` and
//! `docs/hardening.md`). The crate reaches this module as `crate::prim`.
//!
//! * the atomics, `fence`, `spin_loop` and `yield_now` come from loom;
//! * the futex is emulated with a loom `Mutex` (the kernel's hash-bucket lock, under which
//!   the value check and the enqueue of a waiter happen) and a `Condvar`; `wake(n)` wakes at
//!   most `n` waiters of that word and returns how many, like `FUTEX_WAKE`. A wait's timeout is ignored: a sleep
//!   lasts until a wake, so a lost wake-up shows up as a loom deadlock instead of being
//!   papered over by a slice that ends;
//! * [`RaceCheck`] tells loom about the plain (non-atomic) accesses to the ring's bytes, so
//!   that a read of a record not ordered after its writes (a torn read) is a loom failure.
//!   Without loom it is an empty type whose methods compile to nothing.

#[cfg(not(loom))]
pub(crate) use std::hint::spin_loop;
#[cfg(not(loom))]
pub(crate) use std::sync::atomic::{fence, AtomicU32, AtomicU64};
#[cfg(not(loom))]
pub(crate) use std::thread::yield_now;

#[cfg(loom)]
pub(crate) use loom::hint::spin_loop;
#[cfg(loom)]
pub(crate) use loom::sync::atomic::{fence, AtomicU32, AtomicU64};
#[cfg(loom)]
pub(crate) use loom::thread::yield_now;

#[cfg(not(loom))]
pub(crate) use crate::sys::futex::{wait as futex_wait, wake as futex_wake};

#[cfg(loom)]
pub(crate) use model::{futex_wait, futex_wake, RaceCheck};

/// No-op stand-in for loom's access tracking of the ring's bytes.
#[cfg(not(loom))]
pub(crate) struct RaceCheck;

#[cfg(not(loom))]
impl RaceCheck {
    #[inline(always)]
    pub(crate) fn new(_len: u64) -> RaceCheck {
        RaceCheck
    }
    /// The bytes `[off, off + len)` of the ring are read now.
    #[inline(always)]
    pub(crate) fn read(&self, _off: u64, _len: u64) {}
    /// The bytes `[off, off + len)` of the ring are written now.
    #[inline(always)]
    pub(crate) fn write(&self, _off: u64, _len: u64) {}
}

#[cfg(loom)]
mod model {
    use super::AtomicU32;
    use loom::sync::{Condvar, Mutex};
    use std::sync::atomic::Ordering;
    use std::time::Duration;

    struct Waiter {
        word: usize,
        ticket: u64,
        woken: bool,
    }

    #[derive(Default)]
    struct Bucket {
        waiters: Vec<Waiter>,
        next_ticket: u64,
    }

    struct Futexes {
        bucket: Mutex<Bucket>,
        cv: Condvar,
    }

    loom::lazy_static! {
        static ref FUTEXES: Futexes = Futexes {
            bucket: Mutex::new(Bucket::default()),
            cv: Condvar::new(),
        };
    }

    /// `FUTEX_WAIT`: sleep while `word == expected` until a `futex_wake` picks this waiter.
    /// The timeout is ignored (see the module docs).
    pub(crate) fn futex_wait(word: &AtomicU32, expected: u32, _timeout: Option<Duration>) {
        let key = word as *const AtomicU32 as usize;
        let mut b = FUTEXES.bucket.lock().unwrap();
        // The kernel reads the word under the bucket lock, after a full barrier.
        if word.load(Ordering::SeqCst) != expected {
            return;
        }
        let ticket = b.next_ticket;
        b.next_ticket += 1;
        b.waiters.push(Waiter {
            word: key,
            ticket,
            woken: false,
        });
        loop {
            b = FUTEXES.cv.wait(b).unwrap();
            let i = b
                .waiters
                .iter()
                .position(|w| w.ticket == ticket)
                .expect("a waiter stays queued until it leaves");
            if b.waiters[i].woken {
                b.waiters.remove(i);
                return;
            }
        }
    }

    /// `FUTEX_WAKE`: wake up to `n` waiters of `word`, oldest first; returns how many
    /// (like the system call).
    pub(crate) fn futex_wake(word: &AtomicU32, n: i32) -> usize {
        let key = word as *const AtomicU32 as usize;
        let mut b = FUTEXES.bucket.lock().unwrap();
        let mut left = n.max(0);
        for w in b.waiters.iter_mut() {
            if left == 0 {
                break;
            }
            if w.word == key && !w.woken {
                w.woken = true;
                left -= 1;
            }
        }
        let woken = (n.max(0) - left) as usize;
        if woken != 0 {
            FUTEXES.cv.notify_all();
        }
        woken
    }

    /// Shadow of the ring's bytes: one loom cell per 8-byte word, accessed whenever the
    /// real code reads or writes those bytes, so that loom checks every such access is
    /// ordered (happens-before) after the conflicting ones of other threads.
    pub(crate) struct RaceCheck {
        words: Vec<loom::cell::UnsafeCell<()>>,
    }

    impl RaceCheck {
        pub(crate) fn new(len: u64) -> RaceCheck {
            RaceCheck {
                words: (0..len.div_ceil(8))
                    .map(|_| loom::cell::UnsafeCell::new(()))
                    .collect(),
            }
        }

        fn range(&self, off: u64, len: u64) -> &[loom::cell::UnsafeCell<()>] {
            let lo = (off / 8) as usize;
            let hi = (off + len).div_ceil(8) as usize;
            &self.words[lo.min(self.words.len())..hi.min(self.words.len())]
        }

        pub(crate) fn read(&self, off: u64, len: u64) {
            for w in self.range(off, len) {
                w.with(|_| ());
            }
        }

        pub(crate) fn write(&self, off: u64, len: u64) {
            for w in self.range(off, len) {
                w.with_mut(|_| ());
            }
        }
    }
}
