//! The core queue across real processes: MPMC delivery, close waking another process,
//! SIGKILL of a lock holder, and corrupted segments.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::{eventually, fnv, lines, role, say, spawn_role, uniq, wait_exit};
use serde::{Deserialize, Serialize};
use shmq::internal::{Location, Segment};
use shmq::{Error, Queue, RawQueue};

const ENTRY: &str = "child_entry";

#[derive(Serialize, Deserialize, Debug, Clone)]
struct Msg {
    producer: u32,
    seq: u64,
    #[serde(with = "serde_bytes")]
    payload: Vec<u8>,
    sum: u64,
}

fn payload(producer: u32, seq: u64) -> Vec<u8> {
    let len = ((seq * 7919 + producer as u64 * 31) % 300) as usize;
    (0..len)
        .map(|i| (i as u64 ^ seq ^ producer as u64) as u8)
        .collect()
}

/// Entry point of every child process; ignored when the suite runs normally.
#[test]
#[ignore = "entry point for child processes started by the other tests"]
fn child_entry() {
    let Some((role, args)) = role() else {
        panic!("child_entry runs only as a child process");
    };
    match role.as_str() {
        // producer:<queue>:<id>:<count>
        "producer" => {
            let q: Queue<Msg> = Queue::open(&args[0]).unwrap();
            let id: u32 = args[1].parse().unwrap();
            let n: u64 = args[2].parse().unwrap();
            for seq in 0..n {
                let p = payload(id, seq);
                let m = Msg {
                    producer: id,
                    seq,
                    sum: fnv(&p),
                    payload: p,
                };
                q.put_timeout(&m, Duration::from_secs(60)).unwrap();
            }
        }
        // consumer:<queue> — prints "producer seq" per message, in order received.
        "consumer" => {
            let q: Queue<Msg> = Queue::open(&args[0]).unwrap();
            loop {
                match q.get_timeout(Duration::from_secs(60)) {
                    Ok(m) => {
                        assert_eq!(fnv(&m.payload), m.sum, "torn or corrupted message");
                        assert_eq!(m.payload, payload(m.producer, m.seq));
                        say(format!("{} {}", m.producer, m.seq));
                    }
                    Err(Error::Closed) => break,
                    Err(e) => panic!("consumer: {e}"),
                }
            }
        }
        // blocked_get:<queue> — prints the outcome of one blocking get.
        "blocked_get" => {
            let q = RawQueue::open(&args[0]).unwrap();
            let mut buf = Vec::new();
            let r = q.get_into_timeout(&mut buf, Duration::from_secs(60));
            say(if matches!(r, Err(Error::Closed)) {
                "closed"
            } else {
                "other"
            });
        }
        // hold_lock:<queue>:<producer|consumer> — takes a lock, scribbles a half record into
        // free space, says "locked" and waits to be killed.
        "hold_lock" => {
            let q = shmq::RawQueue::open(&args[0]).unwrap();
            let producer = args[1] == "producer";
            let guard = q.hold_lock_for_test(producer).unwrap();
            if producer {
                let seg = Segment::open(Location::Name(args[0].clone())).unwrap();
                let h = seg.header();
                let (data, cap) = seg.ring();
                let tail = h.prod.tail.load(std::sync::atomic::Ordering::Relaxed) & !1;
                let off = (tail % cap) as usize;
                // SAFETY: off < cap and the 8 bytes at a multiple of 8 lie inside the ring;
                // this is free space that only the producer-lock holder (us) writes.
                unsafe { std::ptr::write_bytes(data.add(off), 0xAB, 8) };
            }
            say("locked");
            std::thread::sleep(Duration::from_secs(120));
            drop(guard);
        }
        // spam:<queue> — puts checksummed messages as fast as it can until killed.
        "spam" => {
            let q: Queue<Msg> = Queue::open(&args[0]).unwrap();
            say("started");
            for seq in 0.. {
                let p = vec![(seq % 251) as u8; 1000 + (seq % 3000) as usize];
                let m = Msg {
                    producer: 9,
                    seq,
                    sum: fnv(&p),
                    payload: p,
                };
                match q.put_timeout(&m, Duration::from_secs(60)) {
                    Ok(()) => {}
                    Err(e) => panic!("spam: {e}"),
                }
            }
        }
        // create_keep:<queue> — creates a queue that outlives this process.
        "create_keep" => {
            let opts = shmq::Options::new().capacity(4096).keep_on_drop(true);
            RawQueue::create_with(args[0].as_str(), &opts).unwrap();
        }
        other => panic!("unknown role {other}"),
    }
}

#[test]
fn mpmc_three_producers_three_consumers_exactly_once_fifo() {
    const PRODUCERS: u32 = 3;
    const CONSUMERS: usize = 3;
    const PER: u64 = 4000;
    let name = uniq("mpmc");
    // A small ring so that producers block on full and wrap around many times.
    let q: Queue<Msg> = Queue::create(&name, 16 * 1024).unwrap();
    let mut consumers: Vec<_> = (0..CONSUMERS)
        .map(|_| spawn_role(ENTRY, "consumer", std::slice::from_ref(&name)))
        .collect();
    let mut producers: Vec<_> = (0..PRODUCERS)
        .map(|id| {
            spawn_role(
                ENTRY,
                "producer",
                &[name.clone(), id.to_string(), PER.to_string()],
            )
        })
        .collect();
    // Read consumer output concurrently so their pipes never fill up.
    let readers: Vec<_> = consumers
        .iter_mut()
        .map(|c| {
            let stdout = c.stdout.take().unwrap();
            std::thread::spawn(move || {
                lines(stdout)
                    .map(|l| {
                        let (p, s) = l.split_once(' ').unwrap();
                        (p.parse::<u32>().unwrap(), s.parse::<u64>().unwrap())
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    for p in &mut producers {
        assert!(
            wait_exit(p, Duration::from_secs(240)).success(),
            "producer failed"
        );
    }
    q.close();
    for c in &mut consumers {
        assert!(
            wait_exit(c, Duration::from_secs(240)).success(),
            "consumer failed"
        );
    }
    let mut seen: HashMap<(u32, u64), usize> = HashMap::new();
    for r in readers {
        let got = r.join().unwrap();
        // Per-producer FIFO: within what one consumer received, each producer's sequence
        // numbers strictly increase.
        let mut last: HashMap<u32, u64> = HashMap::new();
        for &(p, s) in &got {
            if let Some(&prev) = last.get(&p) {
                assert!(s > prev, "producer {p}: {s} after {prev}");
            }
            last.insert(p, s);
            *seen.entry((p, s)).or_default() += 1;
        }
    }
    for p in 0..PRODUCERS {
        for s in 0..PER {
            assert_eq!(
                seen.get(&(p, s)),
                Some(&1),
                "message {p}/{s} not delivered exactly once"
            );
        }
    }
    assert_eq!(seen.len(), (PRODUCERS as u64 * PER) as usize);
    let st = q.stats();
    assert_eq!(st.puts, PRODUCERS as u64 * PER);
    assert_eq!(st.gets, st.puts);
    assert!(q.is_empty());
}

#[test]
fn try_and_timeout_behaviour() {
    let name = uniq("try");
    let q: Queue<u64> = Queue::create(&name, 64).unwrap();
    assert!(matches!(q.try_get(), Err(Error::Empty)));
    let t = Instant::now();
    assert!(matches!(
        q.get_timeout(Duration::from_millis(50)),
        Err(Error::Timeout)
    ));
    assert!(t.elapsed() >= Duration::from_millis(50));
    // Fill: every record of a u64 takes 16 bytes of the 64-byte ring.
    let mut n = 0;
    while q.try_put(&n).is_ok() {
        n += 1;
    }
    assert_eq!(n, 4);
    assert!(matches!(q.try_put(&99), Err(Error::Full)));
    let t = Instant::now();
    assert!(matches!(
        q.put_timeout(&99, Duration::from_millis(50)),
        Err(Error::Timeout)
    ));
    assert!(t.elapsed() >= Duration::from_millis(50));
    // A second process sees the same state.
    let other: Queue<u64> = Queue::open(&name).unwrap();
    assert_eq!(other.len(), 4);
    assert_eq!(other.try_get().unwrap(), 0);
    q.try_put(&4).unwrap();
    assert_eq!(q.drain().unwrap(), vec![1, 2, 3, 4]);
}

#[test]
fn close_wakes_a_getter_blocked_in_another_process() {
    let name = uniq("close");
    let q = RawQueue::create(&name, 4096).unwrap();
    let mut child = spawn_role(ENTRY, "blocked_get", std::slice::from_ref(&name));
    assert!(
        eventually(Duration::from_secs(30), || q.stats().consumers_waiting == 1),
        "child never blocked"
    );
    let t = Instant::now();
    q.close();
    assert!(wait_exit(&mut child, Duration::from_secs(30)).success());
    let out: Vec<String> = lines(child.stdout.take().unwrap()).collect();
    assert_eq!(out, ["closed"]);
    assert!(
        t.elapsed() < Duration::from_secs(10),
        "close did not wake the getter promptly"
    );
}

fn kill_holder(name: &str, side: &str) {
    let mut child = spawn_role(ENTRY, "hold_lock", &[name.to_string(), side.to_string()]);
    let line = lines(child.stdout.as_mut().unwrap()).next();
    assert_eq!(line.as_deref(), Some("locked"));
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
}

#[test]
fn sigkill_while_holding_either_lock_then_queue_still_works() {
    let name = uniq("kill");
    let q: Queue<Msg> = Queue::create(&name, 8192).unwrap();
    let m = |seq| {
        let p = payload(1, seq);
        Msg {
            producer: 1,
            seq,
            sum: fnv(&p),
            payload: p,
        }
    };
    q.put(&m(0)).unwrap();
    for side in ["producer", "consumer"] {
        kill_holder(&name, side);
        let st = q.stats();
        assert_ne!(
            if side == "producer" {
                st.producer_lock_holder
            } else {
                st.consumer_lock_holder
            },
            0,
            "the dead child should still be recorded as the {side} lock holder"
        );
        // The next locker takes the lock over within a bounded time.
        let t = Instant::now();
        q.put_timeout(&m(1), Duration::from_secs(10)).unwrap();
        let got = q.get_timeout(Duration::from_secs(10)).unwrap();
        assert!(t.elapsed() < Duration::from_secs(5));
        assert_eq!(got.seq, 0);
        assert_eq!(fnv(&got.payload), got.sum);
        // Only complete records are visible: the half record was never published.
        let next = q.try_get().unwrap();
        assert_eq!(next.seq, 1);
        assert!(matches!(q.try_get(), Err(Error::Empty)));
        q.put(&m(0)).unwrap();
    }
    assert_eq!(q.len(), 1);
}

#[test]
fn sigkill_of_a_busy_producer_leaves_no_torn_message() {
    let name = uniq("spam");
    let q: Queue<Msg> = Queue::create(&name, 64 * 1024).unwrap();
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    for round in 0..8 {
        let mut child = spawn_role(ENTRY, "spam", std::slice::from_ref(&name));
        let line = lines(child.stdout.as_mut().unwrap()).next();
        assert_eq!(line.as_deref(), Some("started"));
        // Let it run for 0..20 ms, draining meanwhile so it keeps copying.
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let until = Instant::now() + Duration::from_micros(seed % 20_000);
        while Instant::now() < until {
            if let Ok(m) = q.try_get() {
                assert_eq!(fnv(&m.payload), m.sum, "round {round}: torn message");
            }
        }
        child.kill().unwrap();
        child.wait().unwrap();
        let t = Instant::now();
        for m in q.drain().unwrap() {
            assert_eq!(fnv(&m.payload), m.sum, "round {round}: torn message");
        }
        // The producer lock may have died with the child: the next put recovers it.
        q.put_timeout(
            &Msg {
                producer: 0,
                seq: 0,
                payload: vec![],
                sum: fnv(&[]),
            },
            Duration::from_secs(10),
        )
        .unwrap();
        assert_eq!(q.get_timeout(Duration::from_secs(10)).unwrap().producer, 0);
        assert!(t.elapsed() < Duration::from_secs(5));
    }
}

fn write_at(name: &str, offset: u64, bytes: &[u8]) {
    use std::os::unix::fs::FileExt;
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(shmq::internal::shm_path(name))
        .unwrap();
    f.write_all_at(bytes, offset).unwrap();
}

#[test]
fn corrupted_header_is_incompatible_not_a_crash() {
    let name = uniq("badhdr");
    let q = RawQueue::create(&name, 4096).unwrap();
    write_at(&name, 0, b"NOTSHMQ!");
    assert!(matches!(
        RawQueue::open(&name),
        Err(Error::Incompatible { .. })
    ));
    drop(q);
    // A foreign object that merely has the prefix in its name.
    let name = uniq("foreign");
    std::fs::write(shmq::internal::shm_path(&name), vec![0x5a; 10_000]).unwrap();
    let r = RawQueue::open(&name);
    assert!(matches!(r, Err(Error::Incompatible { .. })), "{r:?}");
    // Not ours to judge: listed as unreadable, never stale (its garbage "creator pid" is
    // not taken for a dead creator), so remove_stale leaves it alone.
    let info = shmq::inspect(&name).unwrap();
    assert!(
        matches!(info.state, shmq::QueueState::Unreadable(_)),
        "{info:?}"
    );
    assert!(!info.is_stale());
    // A zero-length object (a creator that died before sizing it) times out as Incompatible.
    std::fs::write(shmq::internal::shm_path(&name), b"").unwrap();
    let r = RawQueue::open(&name);
    assert!(matches!(r, Err(Error::Incompatible { .. })), "{r:?}");
    shmq::remove(&name).unwrap();
}

#[test]
fn corrupted_ring_index_and_frame_are_corrupt_errors() {
    let name = uniq("badidx");
    let q = RawQueue::create(&name, 4096).unwrap();
    q.put(b"hello").unwrap();
    let tail_offset = {
        let seg = Segment::open(Location::Name(name.clone())).unwrap();
        let base = seg.header() as *const _ as usize;
        &seg.header().prod.tail as *const _ as usize - base
    };
    // Tail far beyond head: both sides refuse with Corrupt.
    write_at(&name, tail_offset as u64, &(1u64 << 40).to_le_bytes());
    let mut buf = Vec::new();
    assert!(matches!(q.try_get_into(&mut buf), Err(Error::Corrupt(_))));
    assert!(matches!(q.try_put(b"x"), Err(Error::Corrupt(_))));
    // Restore the index, then break the frame header's length instead.
    write_at(&name, tail_offset as u64, &16u64.to_le_bytes());
    write_at(&name, shmq::internal::RING_OFFSET, &u32::MAX.to_le_bytes());
    assert!(matches!(q.try_get_into(&mut buf), Err(Error::Corrupt(_))));
}

#[test]
fn name_rules_and_too_large() {
    for bad in ["", ".x", "a/b", "with space", "ü", &"n".repeat(201)] {
        assert!(
            matches!(RawQueue::create(bad, 4096), Err(Error::InvalidName { .. })),
            "{bad:?}"
        );
        assert!(
            matches!(RawQueue::open(bad), Err(Error::InvalidName { .. })),
            "{bad:?}"
        );
    }
    let name = uniq("large");
    let q: Queue<Vec<u8>> = Queue::create(&name, 1024).unwrap();
    let t = Instant::now();
    let e = q.put(&vec![0u8; 2000]).unwrap_err();
    assert!(matches!(e, Error::TooLarge { max: 1016, .. }), "{e}");
    assert!(t.elapsed() < Duration::from_secs(5));
    assert!(matches!(
        RawQueue::open(&uniq("missing")),
        Err(Error::NotFound(_))
    ));
    assert!(matches!(
        RawQueue::create(&name, 1024),
        Err(Error::AlreadyExists { stale: false, .. })
    ));
    assert!(matches!(
        RawQueue::create(&uniq("cap"), 0),
        Err(Error::InvalidArgument(_))
    ));
}

#[test]
fn creator_drop_removes_the_name_but_attached_processes_keep_working() {
    let name = uniq("drop");
    let q = RawQueue::create(&name, 4096).unwrap();
    let other = RawQueue::open(&name).unwrap();
    drop(q);
    assert!(matches!(RawQueue::open(&name), Err(Error::NotFound(_))));
    other.put(b"still here").unwrap();
    assert_eq!(other.get_vec().unwrap(), b"still here");
}

#[test]
fn a_persistent_queue_is_not_stale_after_its_creator_exits() {
    // The creator is a child process that exits at once; keep_on_drop marks it persistent.
    let name = uniq("persist");
    let mut child = spawn_role(ENTRY, "create_keep", std::slice::from_ref(&name));
    assert!(wait_exit(&mut child, Duration::from_secs(60)).success());
    let q = RawQueue::open(&name).unwrap();
    let st = q.stats();
    assert!(!st.creator_alive && st.persistent);
    drop(q);
    let info = shmq::list()
        .unwrap()
        .into_iter()
        .find(|i| i.name == name)
        .unwrap();
    assert!(!info.is_stale());
    assert!(!shmq::remove_stale().unwrap().contains(&name));
    assert!(matches!(
        RawQueue::create_with(name.as_str(), &shmq::Options::new().replace_stale(true)),
        Err(Error::AlreadyExists { stale: false, .. })
    ));
    shmq::remove(&name).unwrap();
}
