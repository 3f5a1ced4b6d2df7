//! `ring_ops`: an arbitrary sequence of put / get / try / batch / close / crash-simulation
//! operations on a ring in process-private memory (`Ring::in_memory`), checked after every
//! step against a reference model: a `VecDeque` of messages plus an exact model of the
//! ring's byte accounting (positions, skip records), so that `Full`, `Empty`, `TooLarge`,
//! `Timeout`, `Closed`, `len()` and `used_bytes` must all match, not just the payloads.
#![no_main]

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;
use shmq::ring::{Block, Ring};
use shmq::Error;

/// A TID above `PID_MAX_LIMIT`: no thread can have it, so it stands for a dead holder.
const DEAD_HOLDER: u32 = 4_194_305;

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
}

#[derive(Arbitrary, Debug)]
struct Msg {
    len: u16,
    fill: u8,
}

impl Msg {
    fn bytes(&self, cap: u64) -> Vec<u8> {
        // Mostly fitting sizes, sometimes too large.
        let len = self.len as u64 % (cap + 16);
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

/// Exact model of the ring's byte accounting.
struct Model {
    cap: u64,
    head: u64,
    tail: u64,
    /// Records from head to tail: `Some(msg)` or `None` for a skip record.
    recs: VecDeque<(Option<Vec<u8>>, u64)>,
    closed: bool,
    puts: u64,
    gets: u64,
}

enum PutRes {
    Ok,
    Full,
    TooLarge,
}

impl Model {
    fn free(&self) -> u64 {
        self.cap - (self.tail - self.head)
    }

    /// Mirrors `Ring::put_batch`'s placement of one message (skip records are published
    /// even when the message then does not fit). With `may_drop_padding` (the first message
    /// of a lock round) a producer that finds no room while no message is queued removes the
    /// leading padding itself and tries once more.
    fn put_one(&mut self, msg: &[u8], may_drop_padding: bool) -> PutRes {
        let rec = align8(8 + msg.len() as u64);
        if rec > self.cap {
            return PutRes::TooLarge;
        }
        let mut may_drop = may_drop_padding;
        loop {
            let off = self.tail % self.cap;
            let to_end = self.cap - off;
            let fits = if rec > to_end {
                if to_end <= self.free() {
                    self.recs.push_back((None, to_end));
                    self.tail += to_end;
                    continue;
                }
                false
            } else {
                rec <= self.free()
            };
            if !fits {
                if may_drop && self.len() == 0 {
                    may_drop = false;
                    while let Some((None, size)) = self.recs.front() {
                        self.head += size;
                        self.recs.pop_front();
                    }
                    continue;
                }
                return PutRes::Full;
            }
            self.recs.push_back((Some(msg.to_vec()), rec));
            self.tail += rec;
            self.puts += 1;
            return PutRes::Ok;
        }
    }

    /// Up to `max` messages; skip records in front of (and between) them are consumed.
    fn get(&mut self, max: usize) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        while out.len() < max {
            match self.recs.pop_front() {
                None => break,
                Some((m, size)) => {
                    self.head += size;
                    if let Some(m) = m {
                        self.gets += 1;
                        out.push(m);
                    }
                }
            }
        }
        out
    }

    fn len(&self) -> usize {
        self.recs.iter().filter(|(m, _)| m.is_some()).count()
    }
}

fn put_batch(r: &Ring, msgs: &[Vec<u8>], block: Block) -> shmq::Result<usize> {
    r.put_batch(
        msgs.len(),
        block,
        |i| Ok(msgs[i].len()),
        |i, dst, len| {
            assert_eq!(len, msgs[i].len());
            // SAFETY: put_batch hands `dst` valid for `len` bytes of writes.
            unsafe { std::ptr::copy_nonoverlapping(msgs[i].as_ptr(), dst, len) };
            Ok(len)
        },
    )
}

fn get_batch(r: &Ring, max: usize, block: Block) -> shmq::Result<Vec<Vec<u8>>> {
    let mut out = Vec::new();
    r.get_batch(max, block, |src, len| {
        let mut v = vec![0u8; len];
        // SAFETY: get_batch hands `src` valid for `len` bytes of reads.
        unsafe { std::ptr::copy_nonoverlapping(src, v.as_mut_ptr(), len) };
        out.push(v);
    })?;
    Ok(out)
}

fn now() -> Block {
    Block::Until(Some(Instant::now()))
}

/// Model outcome of putting `msgs` (all of them, or as many as fit with `try_`).
fn model_put(m: &mut Model, msgs: &[Vec<u8>], try_: bool) -> shmq::Result<usize> {
    if msgs.is_empty() {
        return Ok(0);
    }
    if m.closed {
        return Err(Error::Closed);
    }
    let mut done = 0;
    for msg in msgs {
        match m.put_one(msg, done == 0) {
            PutRes::Ok => done += 1,
            PutRes::TooLarge => {
                return Err(Error::TooLarge {
                    size: msg.len(),
                    max: (m.cap - 8) as usize,
                })
            }
            PutRes::Full => {
                return if try_ {
                    if done > 0 {
                        Ok(done)
                    } else {
                        Err(Error::Full)
                    }
                } else {
                    Err(Error::Timeout)
                }
            }
        }
    }
    Ok(done)
}

fn same(a: &shmq::Result<usize>, b: &shmq::Result<usize>) -> bool {
    match (a, b) {
        (Ok(x), Ok(y)) => x == y,
        (Err(Error::Full), Err(Error::Full))
        | (Err(Error::Empty), Err(Error::Empty))
        | (Err(Error::Timeout), Err(Error::Timeout))
        | (Err(Error::Closed), Err(Error::Closed)) => true,
        (
            Err(Error::TooLarge { size: s1, max: m1 }),
            Err(Error::TooLarge { size: s2, max: m2 }),
        ) => s1 == s2 && m1 == m2,
        _ => false,
    }
}

fuzz_target!(|input: Input| {
    let cap_req = 64 + (input.cap_sel as usize % 1024);
    let mut ring = Ring::in_memory(cap_req).expect("in_memory");
    ring.set_spin(Duration::ZERO);
    let cap = ring.capacity();
    let mut m = Model {
        cap,
        head: 0,
        tail: 0,
        recs: VecDeque::new(),
        closed: false,
        puts: 0,
        gets: 0,
    };
    let mut dead_holders = 0;
    for op in input.ops.iter().take(256) {
        match op {
            Op::TryPut(msg) | Op::PutNow(msg) => {
                let b = msg.bytes(cap);
                let try_ = matches!(op, Op::TryPut(_));
                let got = put_batch(
                    &ring,
                    std::slice::from_ref(&b),
                    if try_ { Block::No } else { now() },
                );
                let want = model_put(&mut m, std::slice::from_ref(&b), try_);
                assert!(same(&got, &want), "{op:?}: ring {got:?}, model {want:?}");
            }
            Op::TryPutBatch(msgs) | Op::PutBatchNow(msgs) => {
                let bs: Vec<Vec<u8>> = msgs.iter().take(16).map(|x| x.bytes(cap)).collect();
                let try_ = matches!(op, Op::TryPutBatch(_));
                let got = put_batch(&ring, &bs, if try_ { Block::No } else { now() });
                let want = model_put(&mut m, &bs, try_);
                assert!(same(&got, &want), "{op:?}: ring {got:?}, model {want:?}");
            }
            Op::TryGet | Op::GetNow | Op::TryGetBatch(_) | Op::GetBatchNow(_) => {
                let max = match op {
                    Op::TryGetBatch(k) | Op::GetBatchNow(k) => *k as usize % 8,
                    _ => 1,
                };
                let try_ = matches!(op, Op::TryGet | Op::TryGetBatch(_));
                let got = get_batch(&ring, max, if try_ { Block::No } else { now() });
                if max == 0 {
                    assert!(matches!(got, Ok(ref v) if v.is_empty()), "{got:?}");
                    continue;
                }
                let want = m.get(max);
                match got {
                    Ok(v) => assert_eq!(v, want, "{op:?}"),
                    Err(Error::Closed) => assert!(m.closed && want.is_empty()),
                    Err(Error::Empty) => assert!(try_ && !m.closed && want.is_empty()),
                    Err(Error::Timeout) => assert!(!try_ && !m.closed && want.is_empty()),
                    Err(e) => panic!("{op:?}: unexpected {e:?}"),
                }
            }
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
                    w.store(DEAD_HOLDER, std::sync::atomic::Ordering::Relaxed);
                }
            }
            Op::Reload(fill) => {
                let mut img = ring.to_bytes();
                // Garbage in the free space, as a producer killed mid-copy leaves it.
                let base = shmq::segment::RING_OFFSET;
                let mut p = m.tail;
                while p < m.head + cap {
                    img[(base + p % cap) as usize] = fill.wrapping_add(p as u8);
                    p += 1;
                }
                let mut r2 = Ring::from_bytes(&img).expect("valid image reloads");
                r2.set_spin(Duration::ZERO);
                ring = r2;
            }
        }
        assert_eq!(ring.len(), m.len());
        let s = ring.stats();
        assert_eq!(s.used_bytes, m.tail - m.head);
        assert_eq!((s.puts, s.gets), (m.puts, m.gets));
        assert_eq!(s.closed, m.closed);
        assert_eq!(
            ring.header()
                .prod
                .tail
                .load(std::sync::atomic::Ordering::Relaxed),
            m.tail | u64::from(m.closed)
        );
        assert_eq!(
            ring.header()
                .cons
                .head
                .load(std::sync::atomic::Ordering::Relaxed),
            m.head
        );
    }
});
