//! Queue behaviour from CPython's `_TestQueue` (Lib/test/_test_multiprocessing.py), ported
//! to shmq across real processes, and the message bound (`Options::max_messages`).

mod common;

use std::time::{Duration, Instant};

use common::{eventually, uniq};
use shmq::process;
use shmq::{Error, Options, Queue};

shmq::enable_test_support!();

const LONG: Duration = Duration::from_secs(60);

/// `Queue(maxsize=6)`: a producer in another process blocks on the seventh put until the
/// parent takes one; `full()` / `empty()` / `qsize()` follow.
#[test]
fn max_messages_bounds_puts_across_processes() {
    let name = uniq("max");
    let q: Queue<u32> = Queue::create_with(name.as_str(), &Options::new().max_messages(6)).unwrap();
    assert_eq!(q.raw().max_messages(), 6);
    assert!(q.is_empty() && !q.is_full());
    let mut child = process::start(
        |q: Queue<u32>| {
            for i in 0..6 {
                q.try_put(&i).unwrap();
            }
            // Full by count, with the ring almost empty in bytes.
            assert!(q.is_full());
            assert!(matches!(q.try_put(&6), Err(Error::Full)));
            assert!(matches!(
                q.put_timeout(&6, Duration::from_millis(10)),
                Err(Error::Timeout)
            ));
            let t = Instant::now();
            q.put(&6).unwrap(); // blocks until the parent gets one
            t.elapsed()
        },
        q.clone(),
    )
    .unwrap();
    assert!(
        eventually(LONG, || q.len() >= 6),
        "the child did not put six"
    );
    assert!(q.is_full());
    std::thread::sleep(Duration::from_millis(100));
    assert!(child.is_alive(), "the seventh put did not wait");
    assert_eq!(q.len(), 6);
    assert_eq!(q.get().unwrap(), 0);
    // (How long the seventh put waited depends on scheduling; that it could not complete
    // while six were queued is what the length checks above show.)
    let _waited = child.join_timeout(LONG).unwrap();
    assert_eq!(q.drain().unwrap(), vec![1, 2, 3, 4, 5, 6]);
    assert!(q.is_empty() && !q.is_full());
    // The bound is the creator's: an opener cannot change it.
    let o: Queue<u32> = Queue::open_with(name.as_str(), &Options::new().max_messages(1)).unwrap();
    assert_eq!(o.raw().max_messages(), 6);
}

/// `_TestQueue.test_put` / `test_get`: blocking and non-blocking puts and gets with a
/// bounded queue, `full()` / `empty()` / `qsize()`, the other side in a child process.
#[test]
fn put_and_get_block_and_time_out() {
    let q: Queue<u32> =
        Queue::create_with(uniq("putget").as_str(), &Options::new().max_messages(6)).unwrap();
    for i in 0..4 {
        q.put(&i).unwrap();
    }
    q.try_put(&4).unwrap();
    q.put_timeout(&5, Duration::from_millis(10)).unwrap();
    assert_eq!(q.len(), 6);
    assert!(q.is_full() && !q.is_empty());
    assert!(matches!(q.try_put(&6), Err(Error::Full)));
    let t = Instant::now();
    assert!(matches!(
        q.put_timeout(&6, Duration::from_millis(200)),
        Err(Error::Timeout)
    ));
    assert!(t.elapsed() >= Duration::from_millis(200));
    // A child empties it.
    let c = process::start(
        |q: Queue<u32>| {
            let mut got = vec![q.get().unwrap(), q.try_get().unwrap()];
            got.push(q.get_timeout(Duration::from_secs(10)).unwrap());
            got.extend(q.drain().unwrap());
            got
        },
        q.clone(),
    )
    .unwrap();
    assert_eq!(c.join().unwrap(), vec![0, 1, 2, 3, 4, 5]);
    assert!(q.is_empty() && !q.is_full());
    assert_eq!(q.len(), 0);
    assert!(matches!(q.try_get(), Err(Error::Empty)));
    // test_timeout: get(True, 0.2) raises Empty after at least 0.2 s.
    let t = Instant::now();
    assert!(matches!(
        q.get_timeout(Duration::from_millis(200)),
        Err(Error::Timeout)
    ));
    assert!(t.elapsed() >= Duration::from_millis(200));
}

/// `_TestQueue.test_fork`: a child fills the queue the parent created; the parent gets
/// everything in order even after the child exited.
#[test]
fn a_child_fills_the_parents_queue() {
    let q: Queue<u32> = Queue::create(&uniq("fork"), 1 << 12).unwrap();
    let c = process::start(
        |q: Queue<u32>| {
            for i in 0..10 {
                q.put(&i).unwrap();
            }
        },
        q.clone(),
    )
    .unwrap();
    c.join().unwrap();
    let got: Vec<u32> = (0..10).map(|_| q.get_timeout(LONG).unwrap()).collect();
    assert_eq!(got, (0..10).collect::<Vec<_>>());
    assert!(matches!(q.try_get(), Err(Error::Empty)));
}

/// `_TestQueue.test_task_done`: four worker processes consume a JoinableQueue and call
/// `task_done`; `join` returns once every item was handled.
#[test]
fn joinable_queue_workers() {
    use shmq::process::JoinableQueue;
    let q: JoinableQueue<Option<u32>> = JoinableQueue::create(&uniq("tasks"), 1 << 14).unwrap();
    let done: Queue<u32> = Queue::create(&uniq("tasks-done"), 1 << 14).unwrap();
    let workers: Vec<_> = (0..4)
        .map(|_| {
            process::start(
                |(q, done): (JoinableQueue<Option<u32>>, Queue<u32>)| loop {
                    let item = q.get().unwrap();
                    q.task_done().unwrap();
                    match item {
                        Some(x) => done.put(&x).unwrap(),
                        None => return,
                    }
                },
                (q.clone(), done.clone()),
            )
            .unwrap()
        })
        .collect();
    for i in 0..10 {
        q.put(&Some(i)).unwrap();
    }
    q.join_timeout(LONG).unwrap();
    assert_eq!(done.len(), 10);
    for _ in &workers {
        q.put(&None).unwrap();
    }
    for w in workers {
        w.join().unwrap();
    }
    q.join_timeout(LONG).unwrap();
    let mut got = done.drain().unwrap();
    got.sort();
    assert_eq!(got, (0..10).collect::<Vec<_>>());
}

/// `_TestQueue.test_closed_queue_put_get_exceptions`: after `close`, puts fail and gets
/// fail once drained, in every process.
#[test]
fn a_closed_queue_refuses_puts_and_drains() {
    let q: Queue<u32> = Queue::create(&uniq("closed"), 4096).unwrap();
    q.put(&1).unwrap();
    let c = process::start(
        |q: Queue<u32>| {
            q.close();
            (q.put(&2).is_err(), q.get().unwrap())
        },
        q.clone(),
    )
    .unwrap();
    assert_eq!(c.join().unwrap(), (true, 1));
    assert!(q.is_closed());
    assert!(matches!(q.put(&3), Err(Error::Closed)));
    assert!(matches!(q.get(), Err(Error::Closed)));
}
