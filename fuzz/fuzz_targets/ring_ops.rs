//! `ring_ops`: an arbitrary sequence of put / get / try / batch / close / crash-simulation
//! operations on a ring in process-private memory (`Ring::in_memory`), plus operations
//! with a *sleeping* peer (a consumer thread asleep in `get` while this thread puts, a
//! producer thread asleep in `put` while this thread drains), checked after every step
//! against a reference model.
//!
//! The model is exact at the level of messages (what a get returns, `len()`, the put and
//! get counters, `Closed`, `TooLarge`) and bounds the byte placement from both sides
//! instead of copying the ring's placement rules (a copy would share the ring's faults: it
//! did, for the lost wake-up after a SKIP record of issue 9):
//!
//! * a put must take at least the messages that fit where the ring's positions stand
//!   (directly, or after a SKIP record to the end of the ring), and any message that fits
//!   the ring at all when the ring is empty (`head == tail`, no consumer needed);
//! * it can take at most what the ring's capacity allows next to the queued messages;
//! * positions never decrease, stay multiples of 8, and `tail - head` covers the queued
//!   records and never exceeds the capacity.
//!
//! Message sizes favour the hard cases: near `max_message()`, near half the ring, and
//! anything up to a little more than the ring (`TooLarge`).
#![no_main]

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use shmq::internal::{Block, HeapRing, Ring};
use shmq::Error;

/// A holder id that no handle holds (the heap ring's only live id is its own): a dead holder.
const DEAD_HOLDER: u32 = 4_194_305;

/// How long a sleeping peer may take to be served before it counts as a lost wake-up.
const PEER_LIMIT: Duration = Duration::from_secs(10);

#[derive(Arbitrary, Debug)]
enum Op {
    TryPut(Msg),
    /// Blocking put with a deadline that has already passed.
    PutNow(Msg),
    TryPutBatch(Vec<Msg>),
    PutBatchNow(Vec<Msg>),
    TryGet,
    GetNow,
    TryGetBatch(u8),
    GetBatchNow(u8),
    Close,
    /// A producer (`true`) or consumer died holding its lock.
    DeadHolder(bool),
    /// Copy the segment image out and back in (as another process would see it), after a
    /// dead producer scribbled `u8`-derived garbage over the free space.
    Reload(u8),
    /// A consumer thread falls asleep in a blocking `get` on the empty ring; then this
    /// thread puts the message (blocking): both must return, with that message.
    SleepingConsumer(Msg),
    /// A producer thread blocks in `put` of the message; this thread drains the ring: the
    /// producer must get its message in.
    SleepingProducer(Msg),
    /// Read lease of up to `max % 8` messages (try), checked against the model, then
    /// `commit_first(k % (n + 1))` (0: as a drop).
    LendRead(u8, u8),
    /// Write lease of the message (try): mode % 3: 0 commit all, 1 commit half, 2 drop.
    LendWrite(Msg, u8),
}

#[derive(Arbitrary, Debug)]
struct Msg {
    kind: u8,
    len: u16,
    fill: u8,
}

impl Msg {
    fn bytes(&self, cap: u64) -> Vec<u8> {
        let l = self.len as u64;
        let len = match self.kind % 4 {
            // Near max_message (cap - 8), a few bytes either side (some TooLarge).
            0 => (cap - 8 + 8).saturating_sub(l % 72),
            // Near half the ring.
            1 => (cap / 2 + l % 64).saturating_sub(32),
            // Anything up to a little more than the ring.
            _ => l % (cap + 16),
        };
        (0..len).map(|i| self.fill.wrapping_add(i as u8)).collect()
    }
}

#[derive(Arbitrary, Debug)]
struct Input {
    cap_sel: u16,
    ops: Vec<Op>,
}

fn align8(n: u64) -> u64 {
    (n + 7) & !7
}

fn rec(len: usize) -> u64 {
    align8(8 + len as u64)
}

/// Message-level model of the ring.
struct Model {
    cap: u64,
    msgs: VecDeque<Vec<u8>>,
    closed: bool,
    puts: u64,
    gets: u64,
}

impl Model {
    fn queued_bytes(&self) -> u64 {
        self.msgs.iter().map(|m| rec(m.len())).sum()
    }
}

/// `head` and the `tail` position (bit 0 of the tail word is the closed flag).
fn positions(r: &HeapRing) -> (u64, u64) {
    let h = r.header();
    (
        h.cons.head.load(Ordering::Acquire),
        h.prod.tail.load(Ordering::Acquire) & !shmq::internal::CLOSED,
    )
}

/// How many of `msgs` a put starting at (`head`, `tail`) must take at least, and how many
/// it may take at most. Stops at the first message larger than the ring.
fn put_bounds(cap: u64, head: u64, tail: u64, queued: u64, msgs: &[Vec<u8>]) -> (usize, usize) {
    // Lower bound: the ring's own placement rules, from where its positions stand.
    let mut lo = 0;
    let (h, mut t) = (head, tail);
    for m in msgs {
        let r = rec(m.len());
        if r > cap {
            break;
        }
        if h == t {
            // An empty ring takes any message that fits the ring (realigned if needed).
            // Where it goes is the ring's choice: stop predicting after it.
            lo += 1;
            break;
        }
        let free = cap - (t - h);
        let off = t % cap;
        let to_end = cap - off;
        if r <= to_end {
            if r > free {
                break;
            }
            t += r;
        } else {
            if to_end > free || r > free - to_end {
                break;
            }
            t += to_end + r;
        }
        lo += 1;
    }
    // Upper bound: capacity next to the queued records.
    let mut hi = 0;
    let mut used = queued;
    for m in msgs {
        let r = rec(m.len());
        if r > cap || used + r > cap {
            break;
        }
        used += r;
        hi += 1;
    }
    (lo, hi)
}

fn put_batch(r: &HeapRing, msgs: &[Vec<u8>], block: Block) -> shmq::Result<usize> {
    r.put_batch(
        msgs.len(),
        block,
        |i| Ok(msgs[i].len()),
        |i, slot| slot.write(&msgs[i]),
    )
}

fn get_batch(r: &HeapRing, max: usize, block: Block) -> shmq::Result<Vec<Vec<u8>>> {
    let mut out = Vec::new();
    r.get_batch(max, block, |rec| {
        let mut v = Vec::new();
        rec.extend_vec(&mut v);
        out.push(v);
    })?;
    Ok(out)
}

fn now() -> Block {
    Block::Until(Some(Instant::now()))
}

/// Put `msgs` and check the outcome against the model (which it then updates).
fn checked_put(ring: &HeapRing, m: &mut Model, msgs: &[Vec<u8>], try_: bool, what: &str) {
    let cap = m.cap;
    let (head, tail) = positions(ring);
    let before = ring.stats().puts;
    let got = put_batch(ring, msgs, if try_ { Block::No } else { now() });
    let done = (ring.stats().puts - before) as usize;
    if msgs.is_empty() {
        assert!(matches!(got, Ok(0)), "{what}: empty batch gave {got:?}");
        return;
    }
    if m.closed {
        assert!(
            matches!(got, Err(Error::Closed)),
            "{what}: closed, got {got:?}"
        );
        assert_eq!(done, 0);
        return;
    }
    let (lo, hi) = put_bounds(cap, head, tail, m.queued_bytes(), msgs);
    assert!(
        lo <= done && done <= hi,
        "{what}: {done} of {} messages (sizes {:?}) went in at head {head} tail {tail} \
         (capacity {cap}, {} queued): expected {lo}..={hi}",
        msgs.len(),
        msgs.iter().map(|x| x.len()).collect::<Vec<_>>(),
        m.msgs.len()
    );
    for x in &msgs[..done] {
        m.msgs.push_back(x.clone());
        m.puts += 1;
    }
    let next_too_large = msgs.get(done).is_some_and(|x| rec(x.len()) > cap);
    match got {
        Ok(n) => {
            assert_eq!(n, done, "{what}: returned {n}, published {done}");
            assert!(
                n == msgs.len() || (try_ && n > 0 && !next_too_large),
                "{what}: Ok({n}) of {}",
                msgs.len()
            );
        }
        Err(Error::TooLarge { size, max }) => {
            assert!(next_too_large, "{what}: TooLarge at message {done}");
            assert_eq!((size, max), (msgs[done].len(), (cap - 8) as usize));
        }
        Err(Error::Full) => assert!(try_ && done == 0 && !next_too_large, "{what}: Full"),
        Err(Error::Timeout) => {
            assert!(
                !try_ && done < msgs.len() && !next_too_large,
                "{what}: Timeout"
            )
        }
        Err(e) => panic!("{what}: unexpected {e:?}"),
    }
}

/// Get up to `max` messages and check them against the model (exact).
fn checked_get(ring: &HeapRing, m: &mut Model, max: usize, block: Block, try_: bool, what: &str) {
    let got = get_batch(ring, max, block);
    if max == 0 {
        assert!(matches!(got, Ok(ref v) if v.is_empty()), "{got:?}");
        return;
    }
    let n = max.min(m.msgs.len());
    let want: Vec<Vec<u8>> = m.msgs.drain(..n).collect();
    m.gets += n as u64;
    match got {
        Ok(v) => assert!(
            v == want,
            "{what}: got {} messages, want {}",
            v.len(),
            want.len()
        ),
        Err(Error::Closed) => assert!(m.closed && want.is_empty(), "{what}: Closed"),
        Err(Error::Empty) => assert!(try_ && !m.closed && want.is_empty(), "{what}: Empty"),
        Err(Error::Timeout) => assert!(!try_ && !m.closed && want.is_empty(), "{what}: Timeout"),
        Err(e) => panic!("{what}: unexpected {e:?}"),
    }
}

/// A read lease checked against the model: the lent messages are the model's first ones,
/// in order, with increasing sequence numbers; committing `k` removes exactly those.
fn checked_lend_read(ring: &HeapRing, m: &mut Model, max: u8, k: u8) {
    let max = (max % 8) as usize;
    match ring.lease_read(max, Block::No) {
        Ok(l) => {
            let n = l.len();
            assert!(n >= 1 && n <= max.max(1) && n <= m.msgs.len(), "lent {n}");
            let mut last = None;
            for i in 0..n {
                let (seq, bytes) = l.get(i).expect("lent message");
                assert_eq!(bytes, &m.msgs[i][..], "lent message {i}");
                assert!(last.is_none_or(|p| seq > p), "seq {seq} after {last:?}");
                last = Some(seq);
            }
            assert!(l.get(n).is_none());
            let k = k as usize % (n + 1);
            l.commit_first(k);
            m.msgs.drain(..k);
            m.gets += k as u64;
        }
        Err(Error::Empty) => assert!(m.msgs.is_empty() && !m.closed, "Empty"),
        Err(Error::Closed) => assert!(m.msgs.is_empty() && m.closed, "Closed"),
        Err(e) => panic!("lease_read: unexpected {e:?}"),
    }
}

/// A write lease checked against the model: refused exactly as a try_put of the same
/// message would be; committed bytes (all or the first half) are queued, a dropped lease
/// queues nothing.
fn checked_lend_write(ring: &HeapRing, m: &mut Model, b: &[u8], mode: u8) {
    let (head, tail) = positions(ring);
    let (lo, hi) = put_bounds(m.cap, head, tail, m.queued_bytes(), &[b.to_vec()]);
    match ring.lease_write(b.len(), Block::No) {
        Ok(mut w) => {
            assert!(
                !m.closed && hi == 1,
                "lease_write succeeded: closed {} hi {hi}",
                m.closed
            );
            assert_eq!(w.len(), b.len());
            w.as_mut_slice().copy_from_slice(b);
            match mode % 3 {
                0 => {
                    w.commit(b.len()).expect("commit");
                    m.msgs.push_back(b.to_vec());
                    m.puts += 1;
                }
                1 => {
                    w.commit(b.len() / 2).expect("commit half");
                    m.msgs.push_back(b[..b.len() / 2].to_vec());
                    m.puts += 1;
                }
                _ => drop(w),
            }
        }
        Err(Error::TooLarge { .. }) => assert!(rec(b.len()) > m.cap, "TooLarge"),
        Err(Error::Closed) => assert!(m.closed, "Closed"),
        Err(Error::Full) => assert!(lo == 0 && !m.closed, "Full (lo {lo})"),
        Err(e) => panic!("lease_write: unexpected {e:?}"),
    }
}

/// Wait (bounded) until `cond` holds.
fn wait_for(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let t = Instant::now();
    while t.elapsed() < limit {
        if cond() {
            return true;
        }
        std::thread::yield_now();
    }
    cond()
}

fuzz_target!(|input: Input| {
    let cap_req = 64 + (input.cap_sel as usize % 1024);
    let mut ring = Ring::in_memory(cap_req).expect("in_memory");
    ring.set_spin(Duration::ZERO);
    let cap = ring.capacity();
    let mut m = Model {
        cap,
        msgs: VecDeque::new(),
        closed: false,
        puts: 0,
        gets: 0,
    };
    let mut dead_holders = 0;
    let mut peers = 0;
    let mut last = (0u64, 0u64);
    for op in input.ops.iter().take(256) {
        match op {
            Op::TryPut(msg) | Op::PutNow(msg) => {
                let b = msg.bytes(cap);
                let try_ = matches!(op, Op::TryPut(_));
                checked_put(
                    &ring,
                    &mut m,
                    std::slice::from_ref(&b),
                    try_,
                    &format!("{op:?}"),
                );
            }
            Op::TryPutBatch(msgs) | Op::PutBatchNow(msgs) => {
                let bs: Vec<Vec<u8>> = msgs.iter().take(16).map(|x| x.bytes(cap)).collect();
                let try_ = matches!(op, Op::TryPutBatch(_));
                checked_put(&ring, &mut m, &bs, try_, &format!("{op:?}"));
            }
            Op::TryGet | Op::GetNow | Op::TryGetBatch(_) | Op::GetBatchNow(_) => {
                let max = match op {
                    Op::TryGetBatch(k) | Op::GetBatchNow(k) => *k as usize % 8,
                    _ => 1,
                };
                let try_ = matches!(op, Op::TryGet | Op::TryGetBatch(_));
                let block = if try_ { Block::No } else { now() };
                checked_get(&ring, &mut m, max, block, try_, &format!("{op:?}"));
            }
            Op::LendRead(max, k) => checked_lend_read(&ring, &mut m, *max, *k),
            Op::LendWrite(msg, mode) => checked_lend_write(&ring, &mut m, &msg.bytes(cap), *mode),
            Op::Close => {
                ring.close();
                m.closed = true;
            }
            Op::DeadHolder(producer) => {
                // A `try_` call recovers after one liveness slice (~10 ms): one per input keeps the fuzzer fast.
                if dead_holders < 1 {
                    dead_holders += 1;
                    let h = ring.header();
                    let w = if *producer {
                        &h.prod.lock
                    } else {
                        &h.cons.lock
                    };
                    w.store(DEAD_HOLDER, Ordering::Relaxed);
                }
            }
            Op::Reload(fill) => {
                let (head, tail) = positions(&ring);
                let mut img = ring.to_bytes();
                // Garbage in the free space, as a producer killed mid-copy leaves it.
                let base = shmq::internal::RING_OFFSET;
                let mut p = tail;
                while p < head + cap {
                    img[(base + p % cap) as usize] = fill.wrapping_add(p as u8);
                    p += 1;
                }
                let mut r2 = Ring::from_bytes(&img).expect("valid image reloads");
                r2.set_spin(Duration::ZERO);
                ring = r2;
            }
            Op::SleepingConsumer(msg) => {
                let mut b = msg.bytes(cap);
                b.truncate((cap - 8) as usize);
                // Threads cost time: a few per input. A queued message would be taken at
                // once (no sleeper): then this is a plain blocking get.
                if m.closed || !m.msgs.is_empty() || peers >= 4 {
                    let what = format!("{op:?} (as a get)");
                    checked_get(&ring, &mut m, 1, now(), false, &what);
                    continue;
                }
                peers += 1;
                let r = &ring;
                let got = std::thread::scope(|s| {
                    let consumer = s.spawn(move || {
                        get_batch(r, 1, Block::Until(Some(Instant::now() + PEER_LIMIT)))
                    });
                    // Let it fall asleep (bounded: a peer that does not sleep is fine too).
                    wait_for(Duration::from_secs(2), || {
                        r.stats().consumers_waiting > 0 || consumer.is_finished()
                    });
                    let (head, tail) = positions(r);
                    let t = Instant::now();
                    let put = put_batch(
                        r,
                        std::slice::from_ref(&b),
                        Block::Until(Some(t + PEER_LIMIT)),
                    );
                    assert!(
                        matches!(put, Ok(1)),
                        "{op:?}: put of {} B at head {head} tail {tail} (capacity {cap}) with \
                         a consumer asleep in get: {put:?} after {:?}",
                        b.len(),
                        t.elapsed()
                    );
                    consumer.join().expect("consumer thread")
                });
                assert!(
                    matches!(&got, Ok(v) if v.len() == 1 && v[0] == b),
                    "{op:?}: the sleeping consumer got {:?}",
                    got.as_ref()
                        .map(|v| v.iter().map(|x| x.len()).collect::<Vec<_>>())
                );
                m.puts += 1;
                m.gets += 1;
            }
            Op::SleepingProducer(msg) => {
                let b = msg.bytes(cap);
                if m.closed || rec(b.len()) > cap || peers >= 4 {
                    let what = format!("{op:?} (as a put)");
                    checked_put(&ring, &mut m, std::slice::from_ref(&b), false, &what);
                    continue;
                }
                peers += 1;
                let r = &ring;
                let done = AtomicBool::new(false);
                let done = &done;
                let b2 = b.clone();
                let (put, extra) = std::thread::scope(|s| {
                    let producer = s.spawn(move || {
                        let t = Instant::now();
                        let res = put_batch(
                            r,
                            std::slice::from_ref(&b2),
                            Block::Until(Some(t + PEER_LIMIT)),
                        );
                        done.store(true, Ordering::SeqCst);
                        res
                    });
                    wait_for(Duration::from_secs(2), || {
                        r.stats().producers_waiting > 0 || done.load(Ordering::SeqCst)
                    });
                    // Drain what was queued before, one message at a time.
                    while let Some(want) = m.msgs.pop_front() {
                        let got = get_batch(r, 1, Block::No);
                        assert!(
                            matches!(&got, Ok(v) if v.len() == 1 && v[0] == want),
                            "{op:?}: draining under a sleeping producer: {:?}",
                            got.map(|v| v.len())
                        );
                        m.gets += 1;
                    }
                    // One more get: consumes a SKIP record the producer may have written,
                    // or takes the producer's message if it is already in.
                    let extra = get_batch(r, 1, Block::No);
                    (producer.join().expect("producer thread"), extra)
                });
                assert!(
                    matches!(put, Ok(1)),
                    "{op:?}: a producer asleep in put of {} B (capacity {cap}) was not let \
                     in after the ring was drained: {put:?}",
                    b.len()
                );
                m.puts += 1;
                match extra {
                    Ok(v) => {
                        assert!(v.len() == 1 && v[0] == b, "{op:?}: extra get");
                        m.gets += 1;
                    }
                    Err(Error::Empty) => m.msgs.push_back(b),
                    Err(e) => panic!("{op:?}: extra get: {e:?}"),
                }
            }
        }
        assert_eq!(ring.len(), m.msgs.len(), "len after {op:?}");
        let s = ring.stats();
        let (head, tail) = positions(&ring);
        assert!(head % 8 == 0 && tail % 8 == 0, "positions {head} {tail}");
        assert!(
            head >= last.0 && tail >= last.1,
            "positions went back: {last:?} -> ({head}, {tail}) after {op:?}"
        );
        last = (head, tail);
        let used = tail - head;
        assert!(used <= cap, "used {used} > capacity {cap}");
        assert!(used >= m.queued_bytes(), "used {used} < queued records");
        assert_eq!(s.used_bytes, used);
        assert_eq!((s.puts, s.gets), (m.puts, m.gets), "counters after {op:?}");
        assert_eq!(s.closed, m.closed);
    }
});
