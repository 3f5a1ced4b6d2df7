//! loom model checks of the real ring: `put_batch`, `get_batch`, `close`, the locks, the
//! waits and wake-ups of `src/ring/` and `src/sync/`, on the atomics and emulated futex of
//! `src/sync/prim.rs` (issue 9, section 6).
//!
//! `put` and `get` below move one message, so they run the single-message paths
//! (`put_batch(1, ..)` is `put_one`, `get_batch(1, ..)` is `get_one`: issue 14), including
//! their fallback to the rounds of the batch path (padding, no room, an empty ring);
//! scenario (f) mixes them with batches of two.
//!
//! ```sh
//! RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR=target/loom \
//!     cargo test --release --lib ring::loom_tests -- --nocapture
//! ```
//!
//! The ring is [`MIN_CAPACITY`](crate::segment::MIN_CAPACITY) = 64 bytes, so that records
//! wrap and SKIP padding is written within two or three messages. A wait never times out
//! under loom (there is no clock), so a lost wake-up is reported as a deadlock; every
//! access to the ring's bytes is checked by loom for ordering (a torn read fails); and
//! every message is compared byte for byte. `LOOM_MAX_PREEMPTIONS` overrides the bound
//! below (a larger bound explores more, for much longer).

use super::frame::FRAME;
use super::*;
use crate::segment;
use loom::sync::Arc;
use loom::thread;

/// Preemption bound: every interleaving with at most this many forced context switches
/// is run (threads also switch wherever they block). 3 takes about 2 minutes on 2 cores in
/// release; `LOOM_MAX_PREEMPTIONS=2` about 5 seconds.
const PREEMPTIONS: usize = 3;

/// Run `f` under loom in every interleaving within the bound; print how many there were.
fn check(f: impl Fn() + Sync + Send + 'static) {
    let mut b = loom::model::Builder::new();
    if b.preemption_bound.is_none() {
        b.preemption_bound = Some(PREEMPTIONS);
    }
    let runs = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = runs.clone();
    let start = std::time::Instant::now();
    b.check(move || {
        counted.fetch_add(1, Ordering::Relaxed);
        f()
    });
    eprintln!(
        "loom: {} interleavings (preemption bound {:?}) in {:.1?}",
        runs.load(Ordering::Relaxed),
        b.preemption_bound,
        start.elapsed()
    );
}

/// Message `i` of `len` bytes, distinguishable from every other message.
fn msg(i: u8, len: usize) -> Vec<u8> {
    (0..len)
        .map(|k| i.wrapping_mul(31).wrapping_add(k as u8))
        .collect()
}

fn put(r: &HeapRing, m: &[u8]) -> Result<usize> {
    r.put_batch(
        1,
        Block::Until(None),
        |_| Ok(m.len()),
        |_, slot| slot.write(m),
    )
}

/// Up to `max` messages with one `get_batch` (the batch path when `max > 1`).
fn get_many(r: &HeapRing, max: usize) -> Result<Vec<Vec<u8>>> {
    let mut out = Vec::new();
    r.get_batch(max, Block::Until(None), |rec| {
        let mut m = Vec::new();
        rec.extend_vec(&mut m);
        out.push(m);
    })?;
    Ok(out)
}

fn get(r: &HeapRing) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    r.get_batch(1, Block::Until(None), |rec| rec.extend_vec(&mut out))?;
    Ok(out)
}

/// A 64-byte ring whose positions stand at `pos` (a message of `pos - 8` bytes put and got,
/// single-threaded, before the model threads start).
fn ring_at(pos: usize) -> Arc<HeapRing> {
    let r = Ring::in_memory(segment::MIN_CAPACITY as usize).unwrap();
    if pos > 0 {
        put(&r, &vec![0xEE; pos - FRAME as usize]).unwrap();
        get(&r).unwrap();
    }
    assert_eq!(r.h().cons.head.load(Ordering::Relaxed), pos as u64);
    Arc::new(r)
}

fn tail_pos(r: &HeapRing) -> u64 {
    r.h().prod.tail.load(Ordering::SeqCst) & !CLOSED
}

/// (a) One producer puts 24, 40 and 24 bytes (records of 32, 48 and 32 bytes: the second
/// and third do not fit before the end of the ring and need SKIP padding), one consumer
/// gets three times: in every interleaving all three arrive, in order, intact.
#[test]
fn padding_between_messages_keeps_order() {
    check(|| {
        let r = ring_at(0);
        let sizes = [24usize, 40, 24];
        let p = {
            let r = r.clone();
            thread::spawn(move || {
                for (i, &n) in sizes.iter().enumerate() {
                    assert_eq!(put(&r, &msg(i as u8, n)).unwrap(), 1);
                }
            })
        };
        for (i, &n) in sizes.iter().enumerate() {
            assert_eq!(get(&r).unwrap(), msg(i as u8, n));
        }
        p.join().unwrap();
        assert!(r.is_empty());
    });
}

/// (b) Issue 9, fault 1: a consumer is asleep in an untimed `get` on an empty ring whose
/// positions stand at 32; a producer puts a 56-byte message (a 64-byte record: the whole
/// ring), which first needs 32 bytes of padding up to the end of the ring. The consumer
/// must get the message and both calls must return.
#[test]
fn sleeping_consumer_gets_a_message_behind_padding() {
    check(|| {
        let r = ring_at(32);
        let c = {
            let r = r.clone();
            thread::spawn(move || get(&r).unwrap())
        };
        assert_eq!(put(&r, &msg(1, 56)).unwrap(), 1);
        assert_eq!(c.join().unwrap(), msg(1, 56));
        assert!(r.is_empty());
    });
}

/// (c) `close` from a third thread while a producer (24 then 40 bytes: padding on the
/// second) and a consumer run. Both return; a put that returned `Ok` is delivered, in
/// order; the consumer drains, then gets `Closed`; nothing is published after `close`
/// returned (the `tail` word does not move again).
#[test]
fn close_races_with_put_and_get() {
    check(|| {
        let r = ring_at(0);
        let sizes = [24usize, 40];
        let p = {
            let r = r.clone();
            thread::spawn(move || {
                let mut ok = 0;
                for (i, &n) in sizes.iter().enumerate() {
                    match put(&r, &msg(i as u8, n)) {
                        Ok(1) => ok += 1,
                        Err(Error::Closed) => break,
                        other => panic!("put: {other:?}"),
                    }
                }
                ok
            })
        };
        let c = {
            let r = r.clone();
            thread::spawn(move || {
                let mut got = Vec::new();
                loop {
                    match get(&r) {
                        Ok(m) => got.push(m),
                        Err(Error::Closed) => return got,
                        Err(e) => panic!("get: {e:?}"),
                    }
                }
            })
        };
        r.close();
        let at_close = r.h().prod.tail.load(Ordering::SeqCst);
        assert!(at_close & CLOSED != 0);
        let ok = p.join().unwrap();
        let got = c.join().unwrap();
        assert_eq!(r.h().prod.tail.load(Ordering::SeqCst), at_close);
        assert_eq!(got.len(), ok);
        for (i, m) in got.iter().enumerate() {
            assert_eq!(*m, msg(i as u8, sizes[i]));
        }
        assert!(matches!(get(&r), Err(Error::Closed)));
        assert!(matches!(put(&r, b"x"), Err(Error::Closed)));
    });
}

/// (d) Two consumers, one producer of two 8-byte messages (each put wakes one sleeping
/// consumer; the second needs 8 bytes of padding first: positions start at 40). A
/// consumer that takes a message while another is queued wakes the next sleeper (the
/// chain wake-up): both consumers return, with the two messages between them.
#[test]
fn wake_one_puts_reach_both_consumers() {
    check(|| {
        let r = ring_at(40);
        let consumer = || {
            let r = r.clone();
            thread::spawn(move || get(&r).unwrap())
        };
        let (a, b) = (consumer(), consumer());
        for i in 0..2u8 {
            assert_eq!(put(&r, &msg(i, 8)).unwrap(), 1);
        }
        let mut got = [a.join().unwrap(), b.join().unwrap()];
        got.sort();
        let mut want = [msg(0, 8), msg(1, 8)];
        want.sort();
        assert_eq!(got, want);
        assert!(r.is_empty());
        assert_eq!(tail_pos(&r), 40 + 16 + 8 + 16);
    });
}

/// (e) Crash recovery under concurrency: a producer died holding the producer lock after
/// publishing its message but before updating `put_count`. A new producer (which takes
/// the lock over and repairs the count) and a consumer run concurrently: both messages
/// arrive, and the counters agree at the end.
#[test]
fn dead_producer_is_taken_over_while_a_consumer_runs() {
    check(|| {
        let r = ring_at(0);
        put(&r, &msg(0, 24)).unwrap();
        let p = &r.h().prod;
        let tail = p.tail.load(Ordering::Relaxed);
        // The dead producer's state: count not yet stored, lock word naming it.
        p.pending_tail.store(tail, Ordering::Relaxed);
        p.pending_count.store(1, Ordering::Relaxed);
        p.put_count.store(0, Ordering::Relaxed);
        let dead = 7;
        assert!(!r.holder().is_alive(dead));
        p.lock.store(dead, Ordering::Relaxed);
        let c = {
            let r = r.clone();
            thread::spawn(move || [get(&r).unwrap(), get(&r).unwrap()])
        };
        assert_eq!(put(&r, &msg(1, 16)).unwrap(), 1);
        assert_eq!(c.join().unwrap(), [msg(0, 24), msg(1, 16)]);
        assert_eq!(r.h().prod.put_count.load(Ordering::Relaxed), 2);
        assert!(r.is_empty());
    });
}

/// (f) The single-message path and the batch path side by side (issue 14): positions at
/// 40, so records wrap behind padding. One producer puts two 8-byte messages with one
/// `put_batch` (the rounds), another puts one with `put_one`; a consumer takes them with
/// `get_batch` of up to two (the batch path) and then single gets. All three arrive
/// intact, the batch's two in order, and the counters agree.
#[test]
fn single_and_batch_paths_interleave() {
    check(|| {
        let r = ring_at(40);
        let b = {
            let r = r.clone();
            thread::spawn(move || {
                let ms = [msg(1, 8), msg(2, 8)];
                let n = r
                    .put_batch(
                        2,
                        Block::Until(None),
                        |i| Ok(ms[i].len()),
                        |i, slot| slot.write(&ms[i]),
                    )
                    .unwrap();
                assert_eq!(n, 2);
            })
        };
        let c = {
            let r = r.clone();
            thread::spawn(move || {
                let mut got = get_many(&r, 2).unwrap();
                while got.len() < 3 {
                    got.push(get(&r).unwrap());
                }
                got
            })
        };
        r.put_one(8, Block::Until(None), |slot| slot.write(&msg(3, 8)))
            .unwrap();
        b.join().unwrap();
        let got = c.join().unwrap();
        let batch: Vec<_> = got.iter().filter(|m| **m != msg(3, 8)).cloned().collect();
        assert_eq!(batch, [msg(1, 8), msg(2, 8)]);
        assert!(got.contains(&msg(3, 8)));
        assert!(r.is_empty());
        assert_eq!(r.h().prod.put_count.load(Ordering::Relaxed), 4);
        assert_eq!(r.h().cons.get_count.load(Ordering::Relaxed), 4);
    });
}

/// Sleepers on a bare sequence word: a counting semaphore built on the real
/// `sync::wait_until` / `sync::notify`, `tokens` taken with a compare-and-swap.
struct Sem {
    tokens: crate::prim::AtomicU32,
    seq: crate::prim::AtomicU32,
    waiters: crate::prim::AtomicU32,
}

impl Sem {
    fn acquire(&self) {
        loop {
            let t = self.tokens.load(Ordering::SeqCst);
            if t > 0 {
                if self
                    .tokens
                    .compare_exchange(t, t - 1, Ordering::SeqCst, Ordering::SeqCst)
                    .is_ok()
                {
                    return;
                }
                continue;
            }
            crate::sync::wait_until(
                &self.seq,
                &self.waiters,
                std::time::Duration::ZERO,
                &crate::sync::Deadline::never(),
                || self.tokens.load(Ordering::SeqCst) > 0,
            )
            .unwrap();
        }
    }

    fn release(&self) {
        self.tokens.fetch_add(1, Ordering::SeqCst);
        crate::sync::notify(&self.seq, &self.waiters, 1);
    }
}

/// (g) Ghost waiters (session 5): two sleepers, and a waker that wakes one per token
/// (`notify(.., 1)`, as a put of one message does). A waker that wakes one of two must
/// leave the waiters word armed for the second (a lost wake-up is a loom deadlock: sleeps
/// have no time limit here). Run twice: with a clean word, and with the word armed by a
/// sleeper that died before the model starts (it is in no kernel queue). Afterwards one
/// more `notify` with nobody asleep leaves the word disarmed: a registration of the dead
/// costs one wake-up, once.
#[test]
fn wake_one_wakes_each_of_two_sleepers_with_and_without_a_ghost() {
    for ghost in [false, true] {
        check(move || {
            let s = Arc::new(Sem {
                tokens: crate::prim::AtomicU32::new(0),
                seq: crate::prim::AtomicU32::new(0),
                // Bit 0 armed, one registration: what a sleeper killed in the kernel leaves.
                waiters: crate::prim::AtomicU32::new(if ghost { 3 } else { 0 }),
            });
            let sleeper = || {
                let s = s.clone();
                thread::spawn(move || s.acquire())
            };
            let (a, b) = (sleeper(), sleeper());
            s.release();
            s.release();
            a.join().unwrap();
            b.join().unwrap();
            assert_eq!(s.tokens.load(Ordering::SeqCst), 0);
            crate::sync::notify(&s.seq, &s.waiters, 1);
            assert_eq!(crate::sync::armed(s.waiters.load(Ordering::SeqCst)), 0);
        });
    }
}
