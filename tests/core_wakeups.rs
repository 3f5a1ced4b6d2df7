//! Issue 9 §1: no lost wake-ups. Every state change a sleeper may wait for (a record
//! published, a SKIP record published or consumed, head moved, close) must wake it or be
//! found by it, and a hostile process that zeroes a waiter count must not strand an untimed
//! sleeper for ever.
//!
//! The inputs of the issue, in the same thread and across processes:
//! * an empty 4 KiB ring whose positions are not at the start of the ring must take a
//!   `max_message()` record (and 2100 B at 2056, 3500 B at 3000) at once, with no consumer;
//! * a consumer process asleep in `get()` while another process puts such a record;
//! * records near half and near all of the ring, put while the consumer sleeps;
//! * a 64 KiB ring with mixed 1-2000 B / 40 000 B messages between two processes;
//! * a one-worker `Pool` given a 500 000-byte then a 600 000-byte argument;
//! * a sleeping consumer whose `consumers_waiting` word a hostile process zeroed.
//!
//! Every wait is bounded: a hang fails the test with a message after a generous limit.

mod common;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::{
    bounded, child, eventually, fnv, is_pattern, mix64, pattern, say, segment, uniq, RemoveOnDrop,
};
use shmq::{Error, RawQueue};

shmq::enable_test_support!();

/// How long a cross-process step may take before it counts as a hang.
const LIMIT: Duration = Duration::from_secs(20);

fn align8(n: u64) -> u64 {
    (n + 7) & !7
}

/// `(head, tail)` as stored in the header of queue `name`.
fn positions(name: &str) -> (u64, u64) {
    let seg = segment(name);
    let h = seg.header();
    (
        h.cons.head.load(Ordering::Acquire),
        h.prod.tail.load(Ordering::Acquire),
    )
}

/// Length of message `seq` of the mixed-size run: 10 % are 40 000 B, the rest 1..=2000 B.
/// (With this key, a 40 000-byte message meets an empty ring at an offset where it needs
/// a SKIP record and more than the rest of the ring at message 738 and again at 2541, as
/// the positions run without realignment.)
fn mixed_len(seq: u64) -> usize {
    let h = mix64(seq ^ (2 << 32));
    if h.is_multiple_of(10) {
        40_000
    } else {
        1 + ((h >> 8) % 2000) as usize
    }
}

/// Message `seq` of the mixed-size run.
fn mixed_message(seq: u64) -> Vec<u8> {
    pattern(seq ^ 0x5eed_0000, mixed_len(seq))
}

common::child_roles!(get_say, put_list, mix_producer, mix_consumer);

/// get_say:<queue> — untimed gets; prints "msg <len> <fnv>" per message, then "closed" (or
/// "err <e>").
fn get_say(args: &[String]) {
    let q = RawQueue::open(&args[0]).unwrap();
    let mut buf = Vec::new();
    loop {
        match q.get_into(&mut buf) {
            Ok(n) => say(format!("msg {n} {}", fnv(&buf))),
            Err(Error::Closed) => {
                say("closed");
                return;
            }
            Err(e) => {
                say(format!("err {e}"));
                return;
            }
        }
    }
}

/// put_list:<queue>:<len,len,...> — untimed puts of pattern(i, len_i); prints "put <i>"
/// after each, then "done" (or "err <i> <e>").
fn put_list(args: &[String]) {
    let q = RawQueue::open(&args[0]).unwrap();
    for (i, l) in args[1].split(',').enumerate() {
        let len: usize = l.parse().unwrap();
        match q.put(&pattern(i as u64, len)) {
            Ok(()) => say(format!("put {i}")),
            Err(e) => {
                say(format!("err {i} {e}"));
                return;
            }
        }
    }
    say("done");
}

/// mix_producer:<queue>:<count> — untimed puts of mixed_message(0..count).
fn mix_producer(args: &[String]) {
    let q = RawQueue::open(&args[0]).unwrap();
    let n: u64 = args[1].parse().unwrap();
    for seq in 0..n {
        // Before every large message, let the consumer empty the ring and fall asleep (the
        // lost wake-up needs a sleeping consumer behind a SKIP record).
        if mixed_len(seq) > 2000 {
            eventually(Duration::from_secs(2), || {
                q.is_empty() && q.stats().consumers_waiting > 0
            });
        }
        if let Err(e) = q.put(&mixed_message(seq)) {
            say(format!("err {seq} {e}"));
            return;
        }
    }
    say("done");
}

/// mix_consumer:<queue>:<count> — untimed gets; checks each message against
/// mixed_message(seq) in order; prints "bad ..." for the first few mismatches and
/// "done <count> <bad>" at the end.
fn mix_consumer(args: &[String]) {
    let q = RawQueue::open(&args[0]).unwrap();
    let n: u64 = args[1].parse().unwrap();
    let mut buf = Vec::new();
    let mut bad = 0u64;
    for seq in 0..n {
        match q.get_into(&mut buf) {
            Ok(_) => {
                if buf.len() != mixed_len(seq) || !is_pattern(seq ^ 0x5eed_0000, &buf) {
                    bad += 1;
                    if bad <= 5 {
                        say(format!("bad {seq} len {}", buf.len()));
                    }
                }
            }
            Err(e) => {
                say(format!("err {seq} {e}"));
                return;
            }
        }
    }
    say(format!("done {n} {bad}"));
}

/// Put and get one message of `first` bytes, check the positions moved to
/// `align8(8 + first)`, then the empty ring must take a `big`-byte message at once with no
/// consumer running.
fn empty_ring_takes(first: usize, big: usize) {
    let name = uniq("empty");
    let _rm = RemoveOnDrop(name.clone());
    let q = RawQueue::create(&name, 4096).unwrap();
    assert_eq!(q.max_message(), 4088);
    q.put(&pattern(1, first)).unwrap();
    let mut buf = Vec::new();
    q.get_into_timeout(&mut buf, Duration::from_secs(5))
        .unwrap();
    assert!(is_pattern(1, &buf));
    let pos = align8(8 + first as u64);
    assert_eq!(positions(&name), (pos, pos), "positions after one put/get");
    assert!(q.is_empty());
    let msg = pattern(2, big);
    let q2 = q.clone();
    let t = Instant::now();
    let r = bounded(
        Duration::from_secs(30),
        "put_timeout on an empty queue",
        move || q2.put_timeout(&msg, Duration::from_secs(5)),
    );
    assert!(
        r.is_ok(),
        "an empty 4 KiB queue at position {pos} refused a {big}-byte message \
         (max_message {}): {r:?} after {:?} (issue 9 §1: the record needs a SKIP and \
         nothing consumes it)",
        q.max_message(),
        t.elapsed()
    );
    assert!(
        t.elapsed() < Duration::from_secs(3),
        "the put into an empty queue waited {:?}",
        t.elapsed()
    );
    let n = q
        .get_into_timeout(&mut buf, Duration::from_secs(5))
        .unwrap();
    assert_eq!(n, big);
    assert!(
        is_pattern(2, &buf),
        "the {big}-byte message came back changed"
    );
    assert!(q.is_empty());
}

#[test]
fn empty_ring_at_112_takes_max_message() {
    empty_ring_takes(100, 4088);
}

#[test]
fn empty_ring_at_2056_takes_2100_bytes() {
    empty_ring_takes(2048, 2100);
}

#[test]
fn empty_ring_at_3000_takes_3500_bytes() {
    empty_ring_takes(2992, 3500);
}

/// The same at every position of a 4 KiB ring: whatever the offset of an empty ring, a
/// `max_message()` record goes in at once (stops at the first position that fails).
#[test]
fn empty_ring_takes_max_message_at_every_position() {
    for pos in (8..4096u64).step_by(8) {
        let name = uniq("sweep");
        let _rm = RemoveOnDrop(name.clone());
        let q = RawQueue::create(&name, 4096).unwrap();
        q.put(&vec![3u8; (pos - 8) as usize]).unwrap();
        let mut buf = Vec::new();
        q.try_get_into(&mut buf).unwrap();
        assert_eq!(positions(&name), (pos, pos));
        let msg = pattern(pos, q.max_message());
        let q2 = q.clone();
        let r = bounded(
            Duration::from_secs(30),
            "put_timeout on an empty queue",
            move || q2.put_timeout(&msg, Duration::from_secs(5)),
        );
        assert!(
            r.is_ok(),
            "empty 4 KiB queue at position {pos}: put of max_message gave {r:?}"
        );
        q.try_get_into(&mut buf).unwrap();
        assert!(is_pattern(pos, &buf));
    }
}

/// Across processes: a consumer asleep in an untimed `get()` on the empty queue (at
/// position 112); the parent puts a `max_message()` record: both calls return.
#[test]
fn blocked_consumer_process_gets_max_message() {
    let name = uniq("blocked");
    let _rm = RemoveOnDrop(name.clone());
    let q = RawQueue::create(&name, 4096).unwrap();
    q.put(&[9u8; 100]).unwrap();
    q.get_vec().unwrap();
    let mut child = child!(get_say).arg(&name).spawn();
    assert!(
        eventually(LIMIT, || q.stats().consumers_waiting == 1),
        "the consumer child never went to sleep in get(): {:?}",
        q.stats()
    );
    let msg = pattern(7, q.max_message());
    let sum = fnv(&msg);
    let q2 = q.clone();
    let r = bounded(LIMIT + Duration::from_secs(10), "parent put", move || {
        q2.put_timeout(&msg, LIMIT)
    });
    assert!(
        r.is_ok(),
        "put of max_message with a consumer asleep in get() in another process: {r:?}; \
         stats {:?} (issue 9 §1: neither call returns)",
        q.stats()
    );
    assert_eq!(
        child.line(LIMIT, "consumer asleep in get() before the put"),
        format!("msg 4088 {sum}")
    );
    q.close();
    assert_eq!(child.line(LIMIT, "consumer after close"), "closed");
    assert!(child.wait(LIMIT).success());
}

/// Records near half and near all of the ring, each put while the consumer process is
/// asleep in `get()`, so that the producer wraps (and writes SKIP records) behind a sleeper.
#[test]
fn sleeping_consumer_gets_records_near_half_and_all_of_the_ring() {
    let name = uniq("halfall");
    let _rm = RemoveOnDrop(name.clone());
    let q = RawQueue::create(&name, 4096).unwrap();
    let mut child = child!(get_say).arg(&name).spawn();
    let sizes = [
        2040usize, 2048, 2056, 2100, 4088, 2040, 4080, 2048, 4088, 1, 4088, 3000, 3500, 2100, 4088,
        2047, 2049, 4000, 4088,
    ];
    for (i, &len) in sizes.iter().enumerate() {
        assert!(
            eventually(LIMIT, || q.stats().consumers_waiting == 1),
            "step {i}: the consumer child never went to sleep: {:?}",
            q.stats()
        );
        let (head, tail) = positions(&name);
        let msg = pattern(100 + i as u64, len);
        let sum = fnv(&msg);
        let q2 = q.clone();
        let r = bounded(LIMIT + Duration::from_secs(10), "parent put", move || {
            q2.put_timeout(&msg, LIMIT)
        });
        assert!(
            r.is_ok(),
            "step {i}: put of {len} B at position {tail} (head {head}) while the consumer \
             sleeps: {r:?}; stats {:?}",
            q.stats()
        );
        assert_eq!(
            child.line(LIMIT, &format!("step {i}: {len} B put at position {tail}")),
            format!("msg {len} {sum}")
        );
    }
    q.close();
    assert_eq!(child.line(LIMIT, "consumer after close"), "closed");
    assert!(child.wait(LIMIT).success());
}

/// The other direction: a producer process asleep in an untimed `put()` of records larger
/// than half the ring, woken by the parent's gets (which also consume SKIP records). Before
/// each get the parent waits until the producer sleeps (or has already put the next one).
#[test]
fn sleeping_producer_is_woken_across_wraps() {
    let name = uniq("sleepprod");
    let _rm = RemoveOnDrop(name.clone());
    let q = RawQueue::create(&name, 4096).unwrap();
    let sizes = [
        3000usize, 3000, 2100, 2100, 4088, 2500, 4088, 3500, 1000, 3500,
    ];
    let list = sizes
        .iter()
        .map(|s| s.to_string())
        .collect::<Vec<_>>()
        .join(",");
    let mut child = child!(put_list).args([&name, &list]).spawn();
    let mut said: Vec<String> = Vec::new();
    let mut buf = Vec::new();
    for (i, &len) in sizes.iter().enumerate() {
        let next = format!("put {}", i + 1);
        let ready = eventually(LIMIT, || {
            said.extend(child.lines().try_iter());
            q.stats().producers_waiting > 0
                || said
                    .iter()
                    .any(|l| *l == next || l == "done" || l.starts_with("err"))
        });
        assert!(
            ready,
            "step {i}: the producer neither sleeps nor progresses: {said:?}, {:?}",
            q.stats()
        );
        assert!(
            !said.iter().any(|l| l.starts_with("err")),
            "producer: {said:?}"
        );
        let r = q.get_into_timeout(&mut buf, LIMIT);
        assert_eq!(
            r.as_ref().ok(),
            Some(&len),
            "step {i}: get gave {r:?} with the producer asleep; producer said {said:?}; {:?}",
            q.stats()
        );
        assert!(is_pattern(i as u64, &buf), "step {i}: message changed");
    }
    assert!(child.wait(LIMIT).success());
    said.extend(child.lines().try_iter());
    assert_eq!(said.last().map(String::as_str), Some("done"), "{said:?}");
    assert!(q.is_empty());
}

/// A 64 KiB ring, 90 % of the messages 1-2000 B and 10 % 40 000 B, one producer process
/// and one consumer process, both untimed: everything arrives, checked, in order (issue 9:
/// stalled within ~1000 puts).
#[test]
fn mixed_sizes_64k_ring_two_processes() {
    const N: u64 = 3000;
    let name = uniq("mixed");
    let _rm = RemoveOnDrop(name.clone());
    let q = RawQueue::create(&name, 64 * 1024).unwrap();
    let mut cons = child!(mix_consumer).arg(&name).arg(N).spawn();
    let mut prod = child!(mix_producer).arg(&name).arg(N).spawn();
    // A stall is no progress for LIMIT (the whole run takes about a second).
    let t = Instant::now();
    let mut last = (0, Instant::now());
    let cline = loop {
        if let Ok(l) = cons.lines().recv_timeout(Duration::from_millis(100)) {
            break l;
        }
        let s = q.stats();
        if s.gets != last.0 {
            last = (s.gets, Instant::now());
        } else if last.1.elapsed() > LIMIT || t.elapsed() > Duration::from_secs(180) {
            panic!(
                "mixed-size run stalled: no progress for {:?}, {} of {N} messages put, {} \
                 got; stats {s:?}",
                last.1.elapsed(),
                s.puts,
                s.gets
            );
        }
    };
    assert_eq!(cline, format!("done {N} 0"), "consumer reported: {cline}");
    assert_eq!(prod.line(LIMIT, "producer"), "done");
    assert!(prod.wait(LIMIT).success());
    assert!(cons.wait(LIMIT).success());
    let s = q.stats();
    assert_eq!((s.puts, s.gets, s.len), (N, N, 0));
}

/// A hostile process zeroes `consumers_waiting` while a consumer sleeps in an untimed
/// `get()`; two messages are then put: the consumer must get them within seconds.
#[test]
fn zeroed_waiter_count_does_not_strand_a_sleeping_consumer() {
    let name = uniq("zeroed");
    let _rm = RemoveOnDrop(name.clone());
    let q = RawQueue::create(&name, 4096).unwrap();
    let mut child = child!(get_say).arg(&name).spawn();
    assert!(
        eventually(LIMIT, || q.stats().consumers_waiting == 1),
        "the consumer child never went to sleep: {:?}",
        q.stats()
    );
    let seg = segment(&name);
    seg.header()
        .shared
        .consumers_waiting
        .store(0, Ordering::SeqCst);
    q.put(b"first").unwrap();
    q.put(b"second").unwrap();
    let limit = Duration::from_secs(10);
    let l1 = child.lines().recv_timeout(limit).unwrap_or_else(|_| {
        panic!(
            "consumer still asleep {limit:?} after two puts with its waiter count zeroed \
             (len {}): an untimed wait became permanent",
            q.len()
        )
    });
    assert_eq!(l1, format!("msg 5 {}", fnv(b"first")));
    assert_eq!(
        child.line(limit, "second message"),
        format!("msg 6 {}", fnv(b"second"))
    );
    q.close();
    assert_eq!(child.line(LIMIT, "consumer after close"), "closed");
    assert!(child.wait(LIMIT).success());
}

/// A one-worker `Pool` with default settings: a task with a 500 000-byte argument, then
/// one with 600 000 bytes (the second task record needs a SKIP in the worker's 1 MiB task
/// ring while the worker sleeps in `get()`): its result must arrive.
#[test]
fn pool_task_after_a_large_one_completes() {
    let pool = shmq::process::Pool::new(1).unwrap();
    let r = pool
        .apply_async(|v: Vec<u8>| v.len(), vec![7u8; 500_000])
        .unwrap();
    assert_eq!(r.get_timeout(Duration::from_secs(60)).unwrap(), 500_000);
    let r = pool
        .apply_async(|v: Vec<u8>| v.len(), vec![8u8; 600_000])
        .unwrap();
    let got = r.get_timeout(Duration::from_secs(30));
    assert!(
        matches!(got, Ok(600_000)),
        "the 600 000-byte task after a 500 000-byte one: {got:?} (issue 9 §1: never arrives)"
    );
    // And a few more of alternating sizes.
    for (i, len) in [900_000usize, 100, 700_000, 400_000, 1_000_000]
        .into_iter()
        .enumerate()
    {
        let r = pool
            .apply_async(|v: Vec<u8>| v.len(), vec![i as u8; len])
            .unwrap();
        assert_eq!(
            r.get_timeout(Duration::from_secs(30)).ok(),
            Some(len),
            "task {i} ({len} B)"
        );
    }
    pool.close();
    pool.join().unwrap();
}
