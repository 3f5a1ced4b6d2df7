//! Ghost waiters (session 5): a process killed while asleep in a blocking call must leave
//! nothing behind that costs the survivors more than one system call.
//!
//! Before, a sleeper counted itself into the queue's `consumers_waiting` /
//! `producers_waiting` word and counted itself out after its sleep; one killed asleep never
//! counted itself out, so the word stayed non-zero for ever and every later put (get) made
//! a `FUTEX_WAKE` system call (13x the cost of a put + get). Now the word is an "armed" bit
//! (plus a registration count) that the waker disarms when the kernel woke fewer sleepers
//! than asked. Each test here kills a sleeper, checks that its registration is there (the
//! ghost), then checks that one wake-up removes it: `stats()` shows 0 and later puts and
//! gets no longer bump the sequence word (the `FUTEX_WAKE` path). And that disarming does
//! not lose a second sleeper: two consumers asleep, two wake-one puts, both get a message.
//!
//! Every wait is bounded: a hang fails the test with a message after a generous limit.

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use common::{child, child_roles, eventually, say, segment, uniq, RemoveOnDrop};
use shmq::process::JoinableQueue;
use shmq::{Error, RawQueue};

shmq::enable_test_support!();

/// How long a cross-process step may take before it counts as a hang.
const LIMIT: Duration = Duration::from_secs(20);

/// Tries at killing a sleeper while it is registered (it is not, for a few µs of every
/// 100 ms slice, between two sleeps).
const TRIES: usize = 5;

child_roles!(get_once, put_once, join_once);

/// get_once:<queue> — one untimed get; prints "got <len>".
fn get_once(args: &[String]) {
    let q = RawQueue::open(&args[0]).unwrap();
    let mut buf = Vec::new();
    let n = q.get_into(&mut buf).unwrap();
    say(format!("got {n}"));
}

/// put_once:<queue>:<len> — one untimed put of `len` bytes; prints "put".
fn put_once(args: &[String]) {
    let q = RawQueue::open(&args[0]).unwrap();
    let len: usize = args[1].parse().unwrap();
    q.put(&vec![7u8; len]).unwrap();
    say("put");
}

/// join_once:<queue> — one untimed `JoinableQueue::join`; prints "joined".
fn join_once(args: &[String]) {
    let q: JoinableQueue<u8> = JoinableQueue::open(&args[0]).unwrap();
    q.join().unwrap();
    say("joined");
}

/// Spawn `spawn()` until a child is killed (SIGKILL) while `armed()` holds, i.e. while it
/// is registered as a sleeper; panics after [`TRIES`] children.
fn kill_a_sleeper(
    what: &str,
    mut spawn: impl FnMut() -> common::RoleChild,
    armed: impl Fn() -> bool,
) {
    for _ in 0..TRIES {
        let mut c = spawn();
        assert!(
            eventually(LIMIT, &armed),
            "the {what} child never went to sleep"
        );
        c.kill();
        if armed() {
            return;
        }
    }
    panic!("no {what} child was killed while registered as a sleeper in {TRIES} tries");
}

/// A consumer killed asleep in an untimed `get` on an empty queue: its registration costs
/// the next put one wake-up and no put after that.
#[test]
fn consumer_killed_asleep_in_get_leaves_no_ghost() {
    let name = uniq("ghost-get");
    let _rm = RemoveOnDrop(name.clone());
    let q = RawQueue::create(&name, 4096).unwrap();
    let seg = segment(&name);
    let h = seg.header();
    kill_a_sleeper(
        "consumer",
        || child!(get_once).arg(&name).spawn(),
        || q.stats().consumers_waiting == 1,
    );
    // The ghost: nobody sleeps, the word says somebody may.
    assert_eq!(q.stats().consumers_waiting, 1);
    let seq0 = h.prod.data_seq.load(Ordering::SeqCst);
    let mut buf = Vec::new();
    q.put(b"one").unwrap();
    assert_eq!(q.get_into(&mut buf).unwrap(), 3);
    assert_eq!(
        q.stats().consumers_waiting,
        0,
        "the dead consumer's registration is still there after a put + get"
    );
    assert_eq!(h.prod.data_seq.load(Ordering::SeqCst), seq0.wrapping_add(1));
    for i in 0..1000u32 {
        q.put(&i.to_le_bytes()).unwrap();
        q.get_into(&mut buf).unwrap();
        assert_eq!(buf, i.to_le_bytes());
    }
    assert_eq!(
        h.prod.data_seq.load(Ordering::SeqCst),
        seq0.wrapping_add(1),
        "puts after the first still take the wake-up path"
    );
    let s = q.stats();
    assert_eq!((s.consumers_waiting, s.producers_waiting, s.len), (0, 0, 0));
}

/// A producer killed asleep in an untimed `put` on a full queue: its registration costs
/// the next get one wake-up and no get after that.
#[test]
fn producer_killed_asleep_in_put_leaves_no_ghost() {
    let name = uniq("ghost-put");
    let _rm = RemoveOnDrop(name.clone());
    let q = RawQueue::create(&name, 4096).unwrap();
    let seg = segment(&name);
    let h = seg.header();
    let mut queued = 0;
    loop {
        match q.try_put(&[1u8; 100]) {
            Ok(()) => queued += 1,
            Err(Error::Full) => break,
            Err(e) => panic!("filling the queue: {e}"),
        }
    }
    kill_a_sleeper(
        "producer",
        || child!(put_once).arg(&name).arg(100).spawn(),
        || q.stats().producers_waiting == 1,
    );
    assert_eq!(q.len(), queued, "the killed producer's message went in");
    assert_eq!(q.stats().producers_waiting, 1);
    let seq0 = h.cons.space_seq.load(Ordering::SeqCst);
    let mut buf = Vec::new();
    // The get that frees room wakes the (dead) producer; then one put + get more.
    q.get_into(&mut buf).unwrap();
    q.put(&[2u8; 100]).unwrap();
    q.get_into(&mut buf).unwrap();
    assert_eq!(
        q.stats().producers_waiting,
        0,
        "the dead producer's registration is still there after a get, a put and a get"
    );
    assert_eq!(
        h.cons.space_seq.load(Ordering::SeqCst),
        seq0.wrapping_add(1)
    );
    for _ in 0..1000 {
        q.put(&[3u8; 100]).unwrap();
        q.get_into(&mut buf).unwrap();
    }
    assert_eq!(
        h.cons.space_seq.load(Ordering::SeqCst),
        seq0.wrapping_add(1),
        "gets after the first still take the wake-up path"
    );
    assert_eq!(q.len(), queued - 1);
}

/// A process killed asleep in `JoinableQueue::join`: the next `task_done` clears its
/// registration.
#[test]
fn joiner_killed_asleep_in_join_leaves_no_ghost() {
    let name = uniq("ghost-join");
    let _rm = RemoveOnDrop(name.clone());
    let q: JoinableQueue<u8> = JoinableQueue::create(&name, 4096).unwrap();
    let seg = segment(&name);
    let h = seg.header();
    let armed = || h.tasks.join_waiters.load(Ordering::SeqCst) & 1 == 1;
    for i in 0..3 {
        q.put(&i).unwrap();
    }
    kill_a_sleeper("joiner", || child!(join_once).arg(&name).spawn(), armed);
    let seq0 = h.tasks.join_seq.load(Ordering::SeqCst);
    for i in 0..3 {
        assert_eq!(q.get().unwrap(), i);
        q.task_done().unwrap();
    }
    assert!(
        !armed(),
        "the dead joiner's registration survived a task_done"
    );
    assert_eq!(
        h.tasks.join_seq.load(Ordering::SeqCst),
        seq0.wrapping_add(1)
    );
    q.join().unwrap();
}

/// The thread id of the calling thread (from `/proc/thread-self`).
fn tid() -> u32 {
    let link = std::fs::read_link("/proc/thread-self").unwrap();
    link.file_name().unwrap().to_str().unwrap().parse().unwrap()
}

/// Whether thread `tid` of this process is asleep in a futex wait (state `S`, and a
/// `wchan` naming a futex function where the kernel reports one).
fn asleep_in_futex(tid: u32) -> bool {
    let dir = format!("/proc/self/task/{tid}");
    let Ok(stat) = std::fs::read_to_string(format!("{dir}/stat")) else {
        return false;
    };
    let state = stat.rsplit_once(") ").map(|(_, r)| r.as_bytes()[0]);
    if state != Some(b'S') {
        return false;
    }
    match std::fs::read_to_string(format!("{dir}/wchan")) {
        Ok(w) if !w.is_empty() && w != "0" => w.contains("futex"),
        _ => true,
    }
}

/// What each consumer of [`two_sleeping_consumers`] got.
type Got = std::sync::mpsc::Receiver<Result<Vec<u8>, Error>>;

/// Two consumer threads blocked in `get_into_timeout` on the empty queue `name`, both asleep
/// in the kernel with the waiters word armed when this returns: their handles and the
/// channel on which each sends its result (the message, or the error).
fn two_sleeping_consumers(name: &str, q: &RawQueue) -> (Vec<std::thread::JoinHandle<()>>, Got) {
    let (tids, tid_rx) = std::sync::mpsc::channel();
    let (got, got_rx) = std::sync::mpsc::channel();
    let consumers: Vec<_> = (0..2)
        .map(|_| {
            let (name, tids, got) = (name.to_string(), tids.clone(), got.clone());
            std::thread::spawn(move || {
                let q = RawQueue::open(&name).unwrap();
                tids.send(tid()).unwrap();
                let mut buf = Vec::new();
                let r = q.get_into_timeout(&mut buf, LIMIT * 2).map(|_| buf);
                got.send(r).unwrap();
            })
        })
        .collect();
    let t: Vec<u32> = (0..2)
        .map(|_| tid_rx.recv_timeout(LIMIT).unwrap())
        .collect();
    assert!(
        eventually(LIMIT, || t.iter().all(|&t| asleep_in_futex(t))
            && q.stats().consumers_waiting != 0),
        "the two consumers never both went to sleep"
    );
    (consumers, got_rx)
}

/// Disarming must not lose a sleeper: two consumers asleep on an empty queue, two puts
/// that each wake one (a single message: `notify(.., 1)`). The first wakes one of the two
/// and must leave the word armed for the second; each consumer gets a message.
#[test]
fn two_sleeping_consumers_are_both_woken_by_two_puts() {
    let name = uniq("ghost-rearm");
    let _rm = RemoveOnDrop(name.clone());
    let q = RawQueue::create(&name, 4096).unwrap();
    let (consumers, got_rx) = two_sleeping_consumers(&name, &q);
    q.put(b"first").unwrap();
    q.put(b"second").unwrap();
    let mut msgs: Vec<Vec<u8>> = (0..2)
        .map(|i| {
            got_rx
                .recv_timeout(LIMIT)
                .unwrap_or_else(|_| panic!("consumer {i} was not woken"))
                .unwrap()
        })
        .collect();
    msgs.sort();
    assert_eq!(msgs, [b"first".to_vec(), b"second".to_vec()]);
    for c in consumers {
        c.join().unwrap();
    }
    // Whatever the two wake-ups left armed, one more put + get disarms it.
    let mut buf = Vec::new();
    q.put(b"x").unwrap();
    q.get_into(&mut buf).unwrap();
    assert_eq!(q.stats().consumers_waiting, 0);
}

/// `close` wakes every sleeper and leaves no armed word behind: before, with two consumers
/// asleep neither was the sole registration that clears the word itself, and no put could
/// follow on a closed queue, so `stats()` showed a waiting consumer for ever.
#[test]
fn close_with_two_sleeping_consumers_leaves_no_waiter_shown() {
    let name = uniq("ghost-close");
    let _rm = RemoveOnDrop(name.clone());
    let q = RawQueue::create(&name, 4096).unwrap();
    let (consumers, got_rx) = two_sleeping_consumers(&name, &q);
    q.close();
    for i in 0..2 {
        let r = got_rx
            .recv_timeout(LIMIT)
            .unwrap_or_else(|_| panic!("consumer {i} was not woken by close"));
        assert!(matches!(r, Err(Error::Closed)), "consumer {i}: {r:?}");
    }
    for c in consumers {
        c.join().unwrap();
    }
    assert_eq!(q.stats().consumers_waiting, 0);
}
