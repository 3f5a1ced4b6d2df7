//! Property tests (issue 5, item 3): random operation sequences, from one thread against
//! an exact `VecDeque` model, and from several threads at once against the model's
//! invariants (exactly-once delivery, per-producer FIFO, no foreign or torn messages,
//! `len` consistent at the end).
//!
//! `PROPTEST_CASES` overrides the number of cases (default 48 per property).

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use proptest::prelude::*;
use shmq::Batch;
use shmq::{Error, Options, RawQueue};

fn uniq() -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "prop-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

#[derive(Clone, Debug)]
enum Op {
    Put(usize),
    TryPut(usize),
    PutTimeout(usize),
    PutMany(Vec<usize>),
    TryPutMany(Vec<usize>),
    TryGet,
    GetTimeout,
    TryGetMany(usize),
    Len,
}

fn op(max_len: usize) -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0..max_len).prop_map(Op::Put),
        3 => (0..max_len).prop_map(Op::TryPut),
        1 => (0..max_len).prop_map(Op::PutTimeout),
        1 => prop::collection::vec(0..max_len, 0..5).prop_map(Op::PutMany),
        1 => prop::collection::vec(0..max_len, 0..5).prop_map(Op::TryPutMany),
        4 => Just(Op::TryGet),
        1 => Just(Op::GetTimeout),
        2 => (0..6usize).prop_map(Op::TryGetMany),
        1 => Just(Op::Len),
    ]
}

/// Message `seq` of producer `thread`: `thread u32 | seq u64 | filler`, `len` ≥ 12 bytes.
fn msg(thread: u32, seq: u64, len: usize) -> Vec<u8> {
    let mut m = Vec::with_capacity(len.max(12));
    m.extend_from_slice(&thread.to_le_bytes());
    m.extend_from_slice(&seq.to_le_bytes());
    while m.len() < len {
        m.push((seq as u8).wrapping_mul(31) ^ m.len() as u8 ^ thread as u8);
    }
    m
}

fn parse(m: &[u8]) -> (u32, u64) {
    assert!(m.len() >= 12, "short message {m:?}");
    let t = u32::from_le_bytes(m[0..4].try_into().unwrap());
    let s = u64::from_le_bytes(m[4..12].try_into().unwrap());
    assert_eq!(msg(t, s, m.len()), m, "torn or foreign message");
    (t, s)
}

const SHORT: Duration = Duration::from_millis(20);

/// What one thread saw: the seqs whose put returned Ok, and the (producer, seq) of every
/// message it received, both in order.
type Outcome = (Vec<u64>, Vec<(u32, u64)>);

/// Run `ops` as thread `t` against `q`.
fn run(q: &RawQueue, t: u32, ops: &[Op]) -> Outcome {
    let mut seq = 0u64;
    let mut ok = Vec::new();
    let mut got = Vec::new();
    let mut buf = Vec::new();
    let mut batch = Batch::new();
    for op in ops {
        match op {
            Op::Put(l) | Op::TryPut(l) | Op::PutTimeout(l) => {
                let m = msg(t, seq, *l);
                let r = match op {
                    // A blocking put could wait for ever once every other thread is done:
                    // bound it instead.
                    Op::Put(_) => q.put_timeout(&m, Duration::from_millis(50)),
                    Op::TryPut(_) => q.try_put(&m),
                    _ => q.put_timeout(&m, SHORT),
                };
                match r {
                    Ok(()) => ok.push(seq),
                    Err(Error::Full) | Err(Error::Timeout) => {}
                    Err(e) => panic!("put: {e}"),
                }
                seq += 1;
            }
            Op::PutMany(ls) | Op::TryPutMany(ls) => {
                let ms: Vec<Vec<u8>> = ls
                    .iter()
                    .enumerate()
                    .map(|(i, l)| msg(t, seq + i as u64, *l))
                    .collect();
                let n = match op {
                    Op::TryPutMany(_) => match q.try_put_many(&ms) {
                        Ok(n) => n,
                        Err(Error::Full) => 0,
                        Err(e) => panic!("try_put_many: {e}"),
                    },
                    _ => match q.put_many(&ms) {
                        Ok(()) => ms.len(),
                        Err(e) => panic!("put_many: {e}"),
                    },
                };
                ok.extend(seq..seq + n as u64);
                seq += ms.len() as u64;
            }
            Op::TryGet | Op::GetTimeout => {
                let r = match op {
                    Op::TryGet => q.try_get_into(&mut buf),
                    _ => q.get_into_timeout(&mut buf, SHORT),
                };
                match r {
                    Ok(n) => {
                        assert_eq!(n, buf.len());
                        got.push(parse(&buf));
                    }
                    Err(Error::Empty) | Err(Error::Timeout) => {}
                    Err(e) => panic!("get: {e}"),
                }
            }
            Op::TryGetMany(k) => match q.try_get_many_into(&mut batch, *k) {
                Ok(n) => {
                    assert!(n <= *k && n == batch.len());
                    got.extend(batch.iter().map(parse));
                }
                Err(Error::Empty) => {}
                Err(e) => panic!("try_get_many: {e}"),
            },
            Op::Len => {
                let _ = q.len();
            }
        }
    }
    (ok, got)
}

fn cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(48)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: cases(), ..ProptestConfig::default() })]

    /// One thread, a ring large enough to never fill: exact FIFO against a VecDeque,
    /// `len()` after every step.
    #[test]
    fn single_thread_matches_vecdeque(ops in prop::collection::vec(op(300), 1..120)) {
        let name = uniq();
        let q = RawQueue::create_with(name.as_str(), &Options::new().capacity(1 << 20)).unwrap();
        let mut model: VecDeque<Vec<u8>> = VecDeque::new();
        let mut seq = 0u64;
        let mut buf = Vec::new();
        let mut batch = Batch::new();
        for op in &ops {
            match op {
                Op::Put(l) | Op::TryPut(l) | Op::PutTimeout(l) => {
                    let m = msg(0, seq, *l);
                    seq += 1;
                    match op {
                        Op::Put(_) => q.put(&m).unwrap(),
                        Op::TryPut(_) => q.try_put(&m).unwrap(),
                        _ => q.put_timeout(&m, SHORT).unwrap(),
                    }
                    model.push_back(m);
                }
                Op::PutMany(ls) | Op::TryPutMany(ls) => {
                    let ms: Vec<Vec<u8>> = ls.iter().map(|l| { seq += 1; msg(0, seq, *l) }).collect();
                    if matches!(op, Op::PutMany(_)) {
                        q.put_many(&ms).unwrap();
                    } else {
                        prop_assert_eq!(q.try_put_many(&ms).unwrap(), ms.len());
                    }
                    model.extend(ms);
                }
                Op::TryGet | Op::GetTimeout => {
                    let r = if matches!(op, Op::TryGet) {
                        q.try_get_into(&mut buf)
                    } else {
                        q.get_into_timeout(&mut buf, SHORT)
                    };
                    match (r, model.pop_front()) {
                        (Ok(_), Some(m)) => prop_assert_eq!(&buf, &m),
                        (Err(Error::Empty), None) | (Err(Error::Timeout), None) => {}
                        (r, m) => prop_assert!(false, "ring {:?}, model {:?}", r, m),
                    }
                }
                Op::TryGetMany(k) => match q.try_get_many_into(&mut batch, *k) {
                    Ok(n) => {
                        prop_assert!(n <= *k && (n >= 1 || *k == 0));
                        for got in batch.iter() {
                            prop_assert_eq!(Some(got.to_vec()), model.pop_front());
                        }
                        // Took as many as there were, up to k.
                        prop_assert!(n == *k || model.is_empty());
                    }
                    Err(Error::Empty) => prop_assert!(model.is_empty() || *k == 0),
                    Err(e) => prop_assert!(false, "{e}"),
                },
                Op::Len => {}
            }
            prop_assert_eq!(q.len(), model.len());
            prop_assert_eq!(q.is_empty(), model.is_empty());
        }
    }

    /// Three threads, each a random mix of puts and gets, on a small ring (so Full, skip
    /// records and wrap-around are common). Afterwards the remaining messages are drained:
    /// every message whose put returned Ok is received exactly once, nothing else is, and
    /// every receiver sees each producer's messages in order.
    #[test]
    fn threads_deliver_exactly_once_in_producer_order(
        cap in 64usize..2048,
        per_thread in prop::collection::vec(prop::collection::vec(op(200), 1..60), 3),
    ) {
        let name = uniq();
        let q = RawQueue::create_with(name.as_str(), &Options::new().capacity(cap)).unwrap();
        let max = q.max_message();
        // Keep messages placeable (TooLarge is tested elsewhere).
        let fit = |l: usize| 12 + l % (max - 11);
        let per_thread: Vec<Vec<Op>> = per_thread.into_iter().map(|ops| ops.into_iter().map(|o| match o {
            Op::Put(l) => Op::Put(fit(l)),
            Op::TryPut(l) => Op::TryPut(fit(l)),
            Op::PutTimeout(l) => Op::PutTimeout(fit(l)),
            // Blocking batches could wait for space nobody frees: use the try form.
            Op::PutMany(ls) | Op::TryPutMany(ls) => Op::TryPutMany(ls.into_iter().map(fit).collect()),
            o => o,
        }).collect()).collect();
        let results: Vec<Outcome> = std::thread::scope(|s| {
            let hs: Vec<_> = per_thread.iter().enumerate().map(|(t, ops)| {
                let q = q.clone();
                s.spawn(move || run(&q, t as u32, ops))
            }).collect();
            hs.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let mut received: Vec<Vec<(u32, u64)>> = results.iter().map(|(_, g)| g.clone()).collect();
        let mut rest = Vec::new();
        let mut buf = Vec::new();
        let left = q.len();
        while q.try_get_into(&mut buf).is_ok() {
            rest.push(parse(&buf));
        }
        prop_assert_eq!(rest.len(), left, "len() before the drain");
        received.push(rest);
        let mut count: HashMap<(u32, u64), u32> = HashMap::new();
        for r in &received {
            let mut last: HashMap<u32, u64> = HashMap::new();
            for &(t, s) in r {
                *count.entry((t, s)).or_default() += 1;
                if let Some(&p) = last.get(&t) {
                    prop_assert!(s > p, "producer {} out of order: {} after {}", t, s, p);
                }
                last.insert(t, s);
            }
        }
        for (t, (ok, _)) in results.iter().enumerate() {
            for &s in ok {
                prop_assert_eq!(count.remove(&(t as u32, s)), Some(1), "message ({}, {})", t, s);
            }
        }
        prop_assert!(count.is_empty(), "received but never put Ok: {:?}", count);
        prop_assert_eq!(q.len(), 0);
    }
}
