//! Issue 9 §4: deadlines, arithmetic and shared words.
//!
//! * A deadline bounds every phase of a call, the spin phase included, and no duration
//!   arithmetic can panic: `Options::spin(10 s)` with a 50 ms timeout, `spin(Duration::MAX)`,
//!   timeouts of `Duration::ZERO` and `Duration::MAX`.
//! * Hostile positions near `u64::MAX` end in `Error::Corrupt`, never an overflow panic
//!   (these tests run in debug builds, where overflow panics).
//! * The capacity word is read once at open: toggling it between 4096 and 0 never gives a
//!   handle with another capacity, nor a panic.
//! * No put publishes after `close()` returned, even when the producer was stopped
//!   (SIGSTOP) in the middle of a put; `close()` itself returns within seconds.
//!
//! Every call that could hang runs on a helper thread with a generous limit.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{
    bounded, child, eventually, mix64, panic_text, pattern, say, segment, uniq, wait_stopped,
    RemoveOnDrop,
};
use shmq::{Error, Options, Queue, RawQueue};

const LIMIT: Duration = Duration::from_secs(30);

common::child_roles!(big_putter);

/// big_putter:<queue> — says "started", then puts 4 MiB messages (untimed) until an error;
/// says "closed <ok puts>" or "err <e> <ok puts>".
fn big_putter(args: &[String]) {
    let q = RawQueue::open(&args[0]).unwrap();
    let msg = pattern(4, 4 << 20);
    say("started");
    let mut ok = 0u64;
    loop {
        match q.put(&msg) {
            Ok(()) => ok += 1,
            Err(Error::Closed) => {
                say(format!("closed {ok}"));
                return;
            }
            Err(e) => {
                say(format!("err {e} {ok}"));
                return;
            }
        }
    }
}

fn raw_with(name: &str, cap: usize, spin: Duration) -> RawQueue {
    RawQueue::create_with(name, &Options::new().capacity(cap).spin(spin)).unwrap()
}

/// Fill `q` with 8-byte messages until `try_put` says Full.
fn fill(q: &RawQueue) -> usize {
    let mut n = 0;
    loop {
        match q.try_put(&(n as u64).to_le_bytes()) {
            Ok(()) => n += 1,
            Err(Error::Full) => return n,
            Err(e) => panic!("filling: {e}"),
        }
    }
}

/// `Options::spin(10 s)`, then `get_into_timeout(50 ms)` on an empty queue: `Timeout` in
/// well under the spin time (issue 9: the spin phase ignores the deadline).
#[test]
fn long_spin_does_not_outlast_a_get_deadline() {
    let name = uniq("spinget");
    let _rm = RemoveOnDrop(name.clone());
    let q = raw_with(&name, 4096, Duration::from_secs(10));
    let t = Instant::now();
    let r = bounded(LIMIT, "get_into_timeout(50 ms) with spin 10 s", move || {
        let mut buf = Vec::new();
        q.get_into_timeout(&mut buf, Duration::from_millis(50))
    });
    let took = t.elapsed();
    assert!(matches!(r, Err(Error::Timeout)), "{r:?}");
    assert!(
        took < Duration::from_secs(5),
        "get_into_timeout(50 ms) with spin(10 s) took {took:?}: the spin phase ignores the deadline"
    );
}

/// The same on the producer side: a full queue, spin 10 s, `put_timeout(50 ms)`.
#[test]
fn long_spin_does_not_outlast_a_put_deadline() {
    let name = uniq("spinput");
    let _rm = RemoveOnDrop(name.clone());
    let q = raw_with(&name, 4096, Duration::from_secs(10));
    fill(&q);
    let t = Instant::now();
    let r = bounded(LIMIT, "put_timeout(50 ms) with spin 10 s", move || {
        q.put_timeout(b"one more", Duration::from_millis(50))
    });
    let took = t.elapsed();
    assert!(matches!(r, Err(Error::Timeout)), "{r:?}");
    assert!(
        took < Duration::from_secs(5),
        "put_timeout(50 ms) on a full queue with spin(10 s) took {took:?}"
    );
}

/// `spin(Duration::MAX)`: `put` does not panic (no `Instant + Duration` overflow), a put
/// on a full queue times out, and `get_timeout(100 ms)` on an empty queue returns
/// `Timeout` (issue 9: panics in `put`, never returns in `get_timeout`).
#[test]
fn spin_duration_max_neither_panics_nor_hangs() {
    let name = uniq("spinmax");
    let _rm = RemoveOnDrop(name.clone());
    let opts = Options::new().capacity(4096).spin(Duration::MAX);
    let q: Queue<u64> = Queue::create_with(name.as_str(), &opts).unwrap();
    let q2 = q.clone();
    bounded(LIMIT, "put with spin(MAX)", move || q2.put(&1))
        .unwrap_or_else(|e| panic!("put with spin(MAX): {e}"));
    let q2 = q.clone();
    assert_eq!(
        bounded(LIMIT, "get_timeout with a message queued", move || {
            q2.get_timeout(Duration::from_millis(100))
        })
        .ok(),
        Some(1)
    );
    // Full: put_timeout must give way too (and compute no overflowing instant).
    let mut n = 0u64;
    while q.try_put(&n).is_ok() {
        n += 1;
    }
    let q2 = q.clone();
    let t = Instant::now();
    let r = bounded(
        LIMIT,
        "put_timeout(100 ms) on a full queue with spin(MAX)",
        move || q2.put_timeout(&99, Duration::from_millis(100)),
    );
    assert!(matches!(r, Err(Error::Timeout)), "{r:?}");
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    assert_eq!(q.len() as u64, n);
    // A blocking put on the full queue, served when another thread drains it 200 ms later.
    let q2 = q.clone();
    let getter = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(200));
        let mut got = Vec::new();
        while let Ok(v) = q2.try_get() {
            got.push(v);
        }
        got
    });
    let q2 = q.clone();
    let r = bounded(LIMIT, "put on a full queue with spin(MAX)", move || {
        q2.put(&100)
    });
    assert!(r.is_ok(), "{r:?}");
    let mut got = getter.join().unwrap();
    while let Ok(v) = q.try_get() {
        got.push(v);
    }
    let mut want: Vec<u64> = (0..n).collect();
    want.push(100);
    assert_eq!(got, want);
    // Empty: the spin phase must give way to the 100 ms deadline.
    let q2 = q.clone();
    let t = Instant::now();
    let r = bounded(LIMIT, "get_timeout(100 ms) with spin(MAX)", move || {
        q2.get_timeout(Duration::from_millis(100))
    });
    assert!(matches!(r, Err(Error::Timeout)), "{r:?}");
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
}

/// `Duration::ZERO` timeouts behave like the `try_*` calls: an answer at once.
#[test]
fn zero_timeouts_answer_at_once() {
    let name = uniq("zero");
    let _rm = RemoveOnDrop(name.clone());
    let q = RawQueue::create(&name, 4096).unwrap();
    let q2 = q.clone();
    let t = Instant::now();
    bounded(LIMIT, "zero timeouts", move || {
        let mut buf = Vec::new();
        let r = q2.get_into_timeout(&mut buf, Duration::ZERO);
        assert!(
            matches!(r, Err(Error::Timeout) | Err(Error::Empty)),
            "get_into_timeout(ZERO) on an empty queue: {r:?}"
        );
        q2.put_timeout(b"a", Duration::ZERO).unwrap();
        assert_eq!(q2.get_into_timeout(&mut buf, Duration::ZERO).unwrap(), 1);
        assert_eq!(buf, b"a");
        fill(&q2);
        let r = q2.put_timeout(b"b", Duration::ZERO);
        assert!(
            matches!(r, Err(Error::Timeout) | Err(Error::Full)),
            "put_timeout(ZERO) on a full queue: {r:?}"
        );
        assert_eq!(q2.get_into_timeout(&mut buf, Duration::ZERO).unwrap(), 8);
    });
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    // With the producer lock held by another thread (a put in progress elsewhere).
    let (held_tx, held_rx) = std::sync::mpsc::channel();
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let q3 = q.clone();
    let holder = std::thread::spawn(move || {
        let g = q3.hold_lock_for_test(true).unwrap();
        held_tx.send(()).unwrap();
        let _ = done_rx.recv_timeout(LIMIT);
        drop(g);
    });
    held_rx.recv_timeout(LIMIT).unwrap();
    let mut buf = Vec::new();
    q.get_into_timeout(&mut buf, Duration::ZERO).unwrap();
    let q2 = q.clone();
    let t = Instant::now();
    let r = bounded(
        LIMIT,
        "put_timeout(ZERO) while the lock is held",
        move || q2.put_timeout(b"c", Duration::ZERO),
    );
    assert!(
        matches!(r, Err(Error::Timeout) | Err(Error::Full)),
        "put_timeout(ZERO) with the producer lock held: {r:?}"
    );
    assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
    done_tx.send(()).unwrap();
    holder.join().unwrap();
}

/// `Duration::MAX` timeouts behave as blocking calls: served when another thread acts
/// 200 ms later (no overflowing deadline, no immediate timeout).
#[test]
fn max_timeouts_block_until_served() {
    let name = uniq("maxto");
    let _rm = RemoveOnDrop(name.clone());
    let q = RawQueue::create(&name, 4096).unwrap();
    let q2 = q.clone();
    let putter = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(200));
        q2.put(b"late").unwrap();
    });
    let q2 = q.clone();
    let got = bounded(LIMIT, "get_into_timeout(MAX)", move || {
        let mut buf = Vec::new();
        q2.get_into_timeout(&mut buf, Duration::MAX).map(|_| buf)
    });
    assert_eq!(got.ok().as_deref(), Some(&b"late"[..]));
    putter.join().unwrap();

    let n = fill(&q);
    let q2 = q.clone();
    let getter = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(200));
        let mut buf = Vec::new();
        q2.get_into(&mut buf).unwrap();
    });
    let q2 = q.clone();
    let r = bounded(LIMIT, "put_timeout(MAX) on a full queue", move || {
        q2.put_timeout(b"12345678", Duration::MAX)
    });
    assert!(r.is_ok(), "{r:?}");
    getter.join().unwrap();
    assert_eq!(q.len(), n);
    // Typed queues too.
    let tname = uniq("maxtyped");
    let _rm2 = RemoveOnDrop(tname.clone());
    let tq: Queue<u32> = Queue::create(&tname, 4096).unwrap();
    let tq2 = tq.clone();
    let putter = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(200));
        tq2.put(&7).unwrap();
    });
    let tq2 = tq.clone();
    let r = bounded(LIMIT, "Queue::get_timeout(MAX)", move || {
        tq2.get_timeout(Duration::MAX)
    });
    assert_eq!(r.ok(), Some(7));
    putter.join().unwrap();
}

/// Store hostile `head`/`tail` words into the header of queue `name`.
fn set_positions(name: &str, head: u64, tail: u64) {
    let seg = segment(name);
    let h = seg.header();
    h.cons.head.store(head, Ordering::SeqCst);
    h.cons.pending_head.store(head, Ordering::SeqCst);
    h.prod.tail.store(tail, Ordering::SeqCst);
    h.prod.pending_tail.store(tail, Ordering::SeqCst);
}

/// One operation on a fresh handle to `name`, on a helper thread: its result, or a
/// failure naming the operation if it panicked or hung.
fn op(name: &str, what: &'static str) -> shmq::Result<()> {
    let q = RawQueue::open(name).unwrap();
    bounded(
        LIMIT,
        &format!("{what} with hostile positions"),
        move || {
            let mut buf = Vec::new();
            let sec = Duration::from_secs(1);
            match what {
                "try_put" => q.try_put(b"x"),
                "put_timeout" => q.put_timeout(b"x", sec),
                "put_large" => q.put_timeout(&[7u8; 2000], sec),
                "put_many" => q.try_put_many(&[b"x".as_slice(), b"yy"]).map(|_| ()),
                "try_get" => q.try_get_into(&mut buf).map(|_| ()),
                "get_timeout" => q.get_into_timeout(&mut buf, sec).map(|_| ()),
                _ => unreachable!(),
            }
        },
    )
}

const OPS: [&str; 6] = [
    "try_put",
    "put_timeout",
    "put_large",
    "put_many",
    "try_get",
    "get_timeout",
];

/// `head = tail = u64::MAX - 7`: every put and get returns `Err(Corrupt)`, no overflow
/// panic (issue 9 §4).
#[test]
fn positions_at_u64_max_are_corrupt_not_a_panic() {
    let name = uniq("u64max");
    let _rm = RemoveOnDrop(name.clone());
    let _q = RawQueue::create(&name, 4096).unwrap();
    let mut failures = Vec::new();
    for what in OPS {
        set_positions(&name, u64::MAX - 7, u64::MAX - 7);
        let r = std::panic::catch_unwind(|| op(&name, what));
        match r {
            Ok(Err(Error::Corrupt(_))) => {}
            Ok(other) => failures.push(format!("{what}: {other:?}, expected Corrupt")),
            Err(p) => failures.push(format!("{what}: {}", panic_text(&*p))),
        }
    }
    assert!(
        failures.is_empty(),
        "head = tail = u64::MAX - 7:\n  {}",
        failures.join("\n  ")
    );
}

/// Other positions near the top of the range: every call returns `Ok` or `Corrupt` (never
/// panics or hangs), and whatever a get returns is a message that was put.
#[test]
fn positions_near_u64_max_never_panic() {
    let name = uniq("nearmax");
    let _rm = RemoveOnDrop(name.clone());
    let _q = RawQueue::create(&name, 4096).unwrap();
    let cases = [
        (u64::MAX - 4095, u64::MAX - 4095),
        (u64::MAX - 7, 0),
        (u64::MAX - 15, u64::MAX - 7),
        (0, u64::MAX - 7),
        (u64::MAX - 4095 - 2048, u64::MAX - 4095 - 2048),
    ];
    let mut failures = Vec::new();
    for (head, tail) in cases {
        set_positions(&name, head, tail);
        // A run of puts and gets that would cross 2^64 (up to the first failure).
        let before = failures.len();
        for round in 0..6 {
            if failures.len() > before {
                break;
            }
            for what in ["put_large", "try_get", "put_timeout", "get_timeout"] {
                let r = std::panic::catch_unwind(|| op(&name, what));
                match r {
                    Ok(Ok(())) | Ok(Err(Error::Corrupt(_))) => {}
                    Ok(Err(Error::Timeout | Error::Empty | Error::Full)) => {}
                    Ok(Err(e)) => failures.push(format!(
                        "head {head} tail {tail} round {round} {what}: unexpected {e:?}"
                    )),
                    Err(p) => failures.push(format!(
                        "head {head} tail {tail} round {round} {what}: {}",
                        panic_text(&*p)
                    )),
                }
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// The capacity word toggles between 4096 and 0 while handles are opened: every handle
/// that opens has `capacity() == 4096` and `max_message() == 4088`, and its puts and
/// gets work or say `Corrupt`, never panic.
#[test]
fn capacity_word_toggled_during_open_never_reaches_a_handle() {
    let name = uniq("captoggle");
    let _rm = RemoveOnDrop(name.clone());
    let q = RawQueue::create(&name, 4096).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let toggler = {
        let stop = stop.clone();
        let seg = segment(&name);
        std::thread::spawn(move || {
            let w = &seg.header().id.capacity;
            while !stop.load(Ordering::Relaxed) {
                w.store(0, Ordering::Relaxed);
                std::hint::spin_loop();
                w.store(4096, Ordering::Relaxed);
                std::hint::spin_loop();
            }
            w.store(4096, Ordering::SeqCst);
        })
    };
    let n2 = name.clone();
    let outcome = std::panic::catch_unwind(move || {
        bounded(
            LIMIT * 2,
            "opening while the capacity word toggles",
            move || {
                let mut opened = 0u32;
                let mut refused = 0u32;
                let mut bad = Vec::new();
                let t = Instant::now();
                while t.elapsed() < Duration::from_secs(3) && bad.len() < 5 {
                    let h = match RawQueue::open(&n2) {
                        Ok(h) => h,
                        Err(Error::Incompatible { .. }) => {
                            refused += 1;
                            continue;
                        }
                        Err(e) => {
                            bad.push(format!("open: {e:?}"));
                            continue;
                        }
                    };
                    opened += 1;
                    let r = std::panic::catch_unwind(|| {
                        let caps = (h.capacity(), h.max_message());
                        let mut buf = Vec::new();
                        let p = h.try_put(b"x");
                        let g = h.try_get_into(&mut buf).map(|_| ());
                        (caps, p, g)
                    });
                    match r {
                        Ok(((4096, 4088), p, g)) => {
                            for x in [p, g] {
                                if let Err(e) = x {
                                    if !matches!(e, Error::Corrupt(_) | Error::Full | Error::Empty)
                                    {
                                        bad.push(format!("put/get: {e:?}"));
                                    }
                                }
                            }
                        }
                        Ok((caps, ..)) => bad.push(format!("(capacity, max_message) = {caps:?}")),
                        Err(p) => bad.push(format!("panic: {}", panic_text(&*p))),
                    }
                }
                (opened, refused, bad)
            },
        )
    });
    stop.store(true, Ordering::Relaxed);
    toggler.join().unwrap();
    let (opened, refused, bad) = outcome.unwrap_or_else(|p| std::panic::resume_unwind(p));
    assert!(opened > 0, "no open succeeded ({refused} refused)");
    assert!(
        bad.is_empty(),
        "{opened} handles opened, {refused} refused, bad: {bad:?} (issue 9 §4: the capacity \
         word is read again after open validated it)"
    );
    assert_eq!(q.capacity(), 4096);
}

/// A handle opened before the capacity word is zeroed keeps its capacity; puts and gets
/// work or say `Corrupt`; a new open is refused.
#[test]
fn capacity_word_zeroed_after_open_is_ignored_by_open_handles() {
    let name = uniq("capzero");
    let _rm = RemoveOnDrop(name.clone());
    let q = RawQueue::create(&name, 4096).unwrap();
    let h = RawQueue::open(&name).unwrap();
    let seg = segment(&name);
    seg.header().id.capacity.store(0, Ordering::SeqCst);
    let r = std::panic::catch_unwind(|| {
        let caps = (h.capacity(), h.max_message(), q.capacity(), q.max_message());
        let mut buf = Vec::new();
        let p = h.try_put(&[1u8; 3000]);
        let g = q.try_get_into(&mut buf).map(|_| buf.len());
        (caps, p, g)
    });
    let reopen = RawQueue::open(&name);
    seg.header().id.capacity.store(4096, Ordering::SeqCst);
    let (caps, p, g) = r.unwrap_or_else(|p| panic!("panicked: {}", panic_text(&*p)));
    assert_eq!(caps, (4096, 4088, 4096, 4088));
    assert!(matches!(p, Ok(()) | Err(Error::Corrupt(_))), "{p:?}");
    assert!(matches!(g, Ok(3000) | Err(Error::Corrupt(_))), "{g:?}");
    assert!(
        matches!(reopen, Err(Error::Incompatible { .. })),
        "{:?}",
        reopen.map(|q| q.capacity())
    );
}

/// `close()` while the only producer is stopped (SIGSTOP), if possible in the middle of a
/// 4 MiB put: `close` returns within seconds, and after SIGCONT no put is published (the
/// put in progress fails with `Closed`). Every put the child saw succeed was published
/// before `close` returned.
#[test]
fn close_with_a_stopped_producer_publishes_nothing_afterwards() {
    let name = uniq("closestop");
    let _rm = RemoveOnDrop(name.clone());
    let q = RawQueue::create_with(name.as_str(), &Options::new().capacity(64 << 20)).unwrap();
    let mut child = child!(big_putter).arg(&name).spawn();
    assert_eq!(child.line(LIMIT, "big_putter"), "started");
    // Consume in the background so that the producer keeps copying (holding its lock).
    let qc = q.clone();
    let consumer = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let mut got = 0u64;
        let t = Instant::now();
        loop {
            match qc.get_into_timeout(&mut buf, Duration::from_secs(1)) {
                Ok(_) => got += 1,
                Err(Error::Closed) => return Ok(got),
                Err(Error::Timeout) if t.elapsed() < Duration::from_secs(120) => {}
                Err(e) => return Err(e),
            }
        }
    });
    assert!(
        eventually(LIMIT, || q.stats().puts >= 4),
        "the producer does not put: {:?}",
        q.stats()
    );
    let pid = child.id();
    let mut holding = false;
    let mut seed = 0x9e37_79b9u64;
    for _ in 0..400 {
        child.signal(libc::SIGSTOP);
        assert!(wait_stopped(pid, LIMIT), "the producer did not stop");
        if q.stats().producer_lock_holder != 0 {
            holding = true;
            break;
        }
        child.signal(libc::SIGCONT);
        seed = mix64(seed);
        std::thread::sleep(Duration::from_micros(seed % 3000));
    }
    eprintln!(
        "stopped the producer {} its lock",
        if holding { "holding" } else { "(not holding)" }
    );
    let q2 = q.clone();
    let t = Instant::now();
    bounded(LIMIT, "close() with a stopped producer", move || q2.close());
    let took = t.elapsed();
    let puts_at_close = q.stats().puts;
    child.signal(libc::SIGCONT);
    std::thread::sleep(Duration::from_secs(1));
    let puts_after = q.stats().puts;
    let line = child.line(LIMIT, "producer after SIGCONT");
    assert!(child.wait(LIMIT).success());
    let got = bounded(LIMIT, "consumer after close", move || {
        consumer.join().unwrap()
    });
    assert!(took < Duration::from_secs(5), "close() took {took:?}");
    assert_eq!(
        puts_after,
        puts_at_close,
        "a put was published after close() returned (producer stopped {} its lock); the \
         child said {line:?}",
        if holding { "holding" } else { "not holding" }
    );
    assert_eq!(
        line,
        format!("closed {puts_at_close}"),
        "the child's acknowledged puts must be exactly those published before close"
    );
    assert_eq!(got.ok(), Some(puts_at_close), "consumer");
}
