//! `Pool` behaviour from CPython's `_TestPool`, `_TestPoolWorkerErrors`,
//! `_TestPoolWorkerLifetime` and `_TestInitializers` (Lib/test/_test_multiprocessing.py),
//! ported to shmq across real worker processes, plus the lifecycle repros of issue 11.

mod common;

use std::collections::{HashMap, HashSet};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{eventually, uniq, Unsendable};
use shmq::process::{Callbacks, Pool, ProcessError};
use shmq::{Error, Queue};

shmq::enable_test_support!();

const LONG: Duration = Duration::from_secs(60);

fn sqr(x: u64) -> u64 {
    x * x
}

/// `sqr` after sleeping `ms` milliseconds.
fn slow_sqr((x, ms): (u64, u64)) -> u64 {
    std::thread::sleep(Duration::from_millis(ms));
    x * x
}

fn mul(a: u64, b: u64) -> u64 {
    a * b
}

fn pid(_: u64) -> u32 {
    std::process::id()
}

#[test]
fn apply_map_starmap_and_their_async_forms() {
    let pool = Pool::new(4).unwrap();
    // test_apply
    assert_eq!(pool.apply(sqr, 5).unwrap(), 25);
    // test_map
    assert_eq!(
        pool.map(sqr, 0..10).unwrap(),
        (0..10).map(sqr).collect::<Vec<_>>()
    );
    assert_eq!(
        pool.chunked(20).map(sqr, 0..100).unwrap(),
        (0..100).map(sqr).collect::<Vec<_>>()
    );
    // test_starmap
    let pairs: Vec<(u64, u64)> = (0..10).map(|i| (i, i + 1)).collect();
    let want: Vec<u64> = pairs.iter().map(|&(a, b)| a * b).collect();
    assert_eq!(pool.starmap(mul, pairs.clone()).unwrap(), want);
    assert_eq!(pool.chunked(3).starmap(mul, pairs.clone()).unwrap(), want);
    // test_starmap_async, test_map_async
    assert_eq!(pool.starmap_async(mul, pairs).unwrap().get().unwrap(), want);
    assert_eq!(
        pool.map_async(sqr, 0..10).unwrap().get().unwrap(),
        (0..10).map(sqr).collect::<Vec<_>>()
    );
    // test_async: the result cannot come before the task's sleep is over.
    let t = Instant::now();
    let r = pool.apply_async(slow_sqr, (7, 200)).unwrap();
    assert_eq!(r.get().unwrap(), 49);
    assert!(t.elapsed() >= Duration::from_millis(200));
    // test_async_timeout
    let r = pool.apply_async(slow_sqr, (6, 3000)).unwrap();
    assert!(matches!(
        r.get_timeout(Duration::from_millis(100)),
        Err(Error::Timeout)
    ));
    assert!(!r.ready());
    assert_eq!(r.successful(), None);
    assert_eq!(r.get_timeout(LONG).unwrap(), 36);
    assert_eq!(r.successful(), Some(true));
}

#[test]
fn imap_in_order_and_imap_unordered_as_finished() {
    let pool = Pool::new(2).unwrap();
    // test_imap
    let got: Vec<u64> = pool.imap(sqr, 0..10).map(|r| r.unwrap()).collect();
    assert_eq!(got, (0..10).map(sqr).collect::<Vec<_>>());
    let mut it = pool.chunked(100).imap(sqr, 0..1000);
    for i in 0..1000 {
        assert_eq!(it.next().unwrap().unwrap(), i * i);
    }
    assert!(it.next().is_none());
    // test_imap_unordered
    let mut got: Vec<u64> = pool
        .imap_unordered(sqr, 0..1000)
        .map(|r| r.unwrap())
        .collect();
    got.sort();
    assert_eq!(got, (0..1000).map(sqr).collect::<Vec<_>>());
    let mut got: Vec<u64> = pool
        .chunked(53)
        .imap_unordered(sqr, 0..1000)
        .map(|r| r.unwrap())
        .collect();
    got.sort();
    assert_eq!(got, (0..1000).map(sqr).collect::<Vec<_>>());
    // Unordered really is: the first input sleeps 3 s, the others not at all.
    let inputs = (0..6u64).map(|i| (i, if i == 0 { 3000 } else { 0 }));
    let first = pool
        .imap_unordered(slow_sqr, inputs)
        .next()
        .unwrap()
        .unwrap();
    assert_ne!(first, 0, "the slowest task came first");
}

#[test]
fn empty_inputs() {
    // test_empty_iterable
    let pool = Pool::new(2).unwrap();
    assert!(pool.map(sqr, Vec::<u64>::new()).unwrap().is_empty());
    assert!(pool
        .chunked(5)
        .map(sqr, Vec::<u64>::new())
        .unwrap()
        .is_empty());
    assert!(pool.imap(sqr, Vec::<u64>::new()).next().is_none());
    assert!(pool.imap_unordered(sqr, Vec::<u64>::new()).next().is_none());
    assert!(pool
        .map_async(sqr, Vec::<u64>::new())
        .unwrap()
        .get()
        .unwrap()
        .is_empty());
    assert!(pool
        .starmap(mul, Vec::<(u64, u64)>::new())
        .unwrap()
        .is_empty());
}

#[test]
fn chunks_run_whole_in_one_worker() {
    let pool = Pool::new(3).unwrap();
    let pids = pool.chunked(7).map(pid, 0..70).unwrap();
    for chunk in pids.chunks(7) {
        assert!(chunk.iter().all(|&p| p == chunk[0]), "{chunk:?}");
    }
    assert!(pids.iter().all(|p| pool.pids().contains(p)));
}

#[test]
fn errors_reach_the_caller_and_the_pool_goes_on() {
    let pool = Pool::new(2).unwrap();
    // test_wrapped_exception / test_traceback: the panic message comes back.
    let e = pool
        .apply(|x: u64| -> u64 { panic!("bad input {x}") }, 7)
        .unwrap_err();
    match e {
        Error::Process(ProcessError::Panicked { message, .. }) => {
            assert_eq!(message, "bad input 7")
        }
        other => panic!("{other:?}"),
    }
    // test_map_no_failfast: a failing item fails the map; the pool keeps working.
    let r = pool.map(
        |x: u64| {
            if x == 5 {
                panic!("five")
            }
            x
        },
        0..10,
    );
    assert!(r.unwrap_err().to_string().contains("five"));
    // imap yields each task's own result.
    let r: Vec<shmq::Result<u64>> = pool
        .imap(
            |x: u64| {
                if x == 2 {
                    panic!("two")
                }
                x
            },
            0..4,
        )
        .collect();
    assert!(r[2].is_err() && r[0].is_ok() && r[1].is_ok() && r[3].is_ok());
    // test_unpickleable_result: the serializer's own reason is kept.
    let e = pool.apply(|()| Unsendable, ()).unwrap_err();
    assert!(e.to_string().contains(Unsendable::REASON), "{e}");
    // ...and for arguments, at once in the caller.
    let e = pool.apply(|_: Unsendable| 1u8, Unsendable).unwrap_err();
    assert!(
        matches!(&e, Error::Codec(m) if m.contains(Unsendable::REASON)),
        "{e}"
    );
    assert_eq!(pool.map(sqr, 0..4).unwrap(), [0, 1, 4, 9]);
}

#[test]
fn callbacks_run_in_the_parent_before_get_returns() {
    let pool = Pool::new(2).unwrap();
    // apply_async(callback=...)
    let (tx, rx) = mpsc::channel();
    let r = pool
        .apply_async_with(
            sqr,
            9,
            Callbacks::new().on_success(move |v: u64| tx.send((v, std::process::id())).unwrap()),
        )
        .unwrap();
    assert_eq!(r.get().unwrap(), 81);
    assert_eq!(rx.try_recv().unwrap(), (81, std::process::id()));
    // test_async_error_callback
    let (tx, rx) = mpsc::channel();
    let r = pool
        .apply_async_with(
            |()| -> u8 { panic!("key error") },
            (),
            Callbacks::new()
                .on_success(|_| panic!("success callback on a failure"))
                .on_error(move |e| tx.send(e.to_string()).unwrap()),
        )
        .unwrap();
    assert!(r.get().is_err());
    assert!(rx.try_recv().unwrap().contains("key error"));
    // test_map_async_callbacks
    let (tx, rx) = mpsc::channel();
    let r = pool
        .map_async_with(
            sqr,
            0..10,
            Callbacks::new().on_success(move |v: Vec<u64>| tx.send(v).unwrap()),
        )
        .unwrap();
    r.wait();
    assert_eq!(rx.recv_timeout(LONG).unwrap(), r.get().unwrap());
    let (tx, rx) = mpsc::channel();
    let r = pool
        .starmap_async_with(
            |a: u64, b: u64| -> u64 {
                if a == 3 {
                    panic!("three")
                }
                a + b
            },
            (0..6).map(|i| (i, i)),
            Callbacks::new().on_error(move |e| tx.send(e.to_string()).unwrap()),
        )
        .unwrap();
    assert!(r.get().is_err());
    assert!(rx.try_recv().unwrap().contains("three"));
    // An unencodable result calls the error callback with the serializer's reason.
    let (tx, rx) = mpsc::channel();
    let r = pool
        .apply_async_with(
            |()| Unsendable,
            (),
            Callbacks::new().on_error(move |e| tx.send(e.to_string()).unwrap()),
        )
        .unwrap();
    r.wait();
    assert!(rx.recv_timeout(LONG).unwrap().contains(Unsendable::REASON));
}

/// A callback that panics is reported and otherwise ignored: the result still arrives.
#[test]
fn a_panicking_callback_does_not_lose_the_result() {
    let pool = Pool::new(1).unwrap();
    let r = pool
        .apply_async_with(
            sqr,
            7,
            Callbacks::new().on_success(|_: u64| panic!("the callback panics")),
        )
        .unwrap();
    assert_eq!(r.get_timeout(Duration::from_secs(30)).unwrap(), 49);
    let r = pool
        .apply_async_with(
            |()| -> u8 { panic!("task fails") },
            (),
            Callbacks::new().on_error(|_| panic!("the error callback panics")),
        )
        .unwrap();
    assert!(r.get_timeout(Duration::from_secs(30)).is_err());
}

#[test]
fn close_then_join_finishes_every_queued_task() {
    // The repro: 6 tasks on 2 workers, then close + join: all 6 results arrive.
    let pool = Pool::new(2).unwrap();
    assert!(matches!(pool.join(), Err(Error::InvalidArgument(_))));
    let results: Vec<_> = (0..6)
        .map(|i| pool.apply_async(slow_sqr, (i, 100)).unwrap())
        .collect();
    pool.close();
    assert!(matches!(
        pool.apply(sqr, 1),
        Err(Error::Process(ProcessError::PoolClosed))
    ));
    pool.join().unwrap();
    for (i, r) in results.into_iter().enumerate() {
        assert!(r.ready());
        assert_eq!(r.get().unwrap(), (i * i) as u64);
    }
    // The workers are gone.
    assert!(shmq::process::active_children()
        .iter()
        .all(|p| !pool.pids().contains(p)));
}

#[test]
fn terminate_stops_busy_workers_at_once() {
    // test_terminate: a long backlog of sleeping tasks; terminate returns promptly.
    let pool = Pool::new(4).unwrap();
    let pids = pool.pids();
    let r = pool
        .chunked(1)
        .map_async(
            |ms: u64| std::thread::sleep(Duration::from_millis(ms)),
            vec![100u64; 10_000],
            Callbacks::new(),
        )
        .unwrap();
    let long = pool.apply_async(slow_sqr, (1, 600_000)).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let t = Instant::now();
    pool.terminate();
    assert!(t.elapsed() < Duration::from_secs(8), "{:?}", t.elapsed());
    assert!(matches!(
        r.get(),
        Err(Error::Process(ProcessError::Terminated { .. }))
    ));
    assert!(matches!(
        long.get(),
        Err(Error::Process(ProcessError::Terminated { .. }))
    ));
    for p in pids {
        assert!(!shmq::process::active_children().contains(&p));
    }
    // test_enter: a terminated pool takes nothing.
    assert!(matches!(
        pool.apply(sqr, 2),
        Err(Error::Process(ProcessError::PoolClosed))
    ));
    pool.join().unwrap();
}

#[test]
fn drop_terminates_and_fails_what_is_pending() {
    let pool = Pool::new(1).unwrap();
    let done = pool.apply_async(sqr, 3).unwrap();
    assert_eq!(done.get_timeout(LONG).unwrap(), 9);
    let pending = pool.apply_async(slow_sqr, (2, 600_000)).unwrap();
    let t = Instant::now();
    drop(pool);
    assert!(t.elapsed() < Duration::from_secs(8));
    assert!(matches!(
        pending.get(),
        Err(Error::Process(ProcessError::Terminated { .. }))
    ));
}

#[test]
fn bad_pool_sizes_are_refused() {
    // test_make_pool
    assert!(matches!(Pool::new(0), Err(Error::InvalidArgument(_))));
}

#[test]
fn initializer_runs_once_per_worker() {
    // _TestInitializers: every worker runs the initializer before its first task.
    let q: Queue<u32> = Queue::create(&uniq("init"), 4096).unwrap();
    let pool = Pool::builder(3)
        .initializer(
            |(q, tag): (Queue<u32>, String)| {
                std::env::set_var("POOL_TAG", tag);
                q.put(&std::process::id()).unwrap();
            },
            (q.clone(), "ready".to_string()),
        )
        .build()
        .unwrap();
    let tags = pool
        .map(|_: u8| std::env::var("POOL_TAG").unwrap(), 0..12)
        .unwrap();
    assert!(tags.iter().all(|t| t == "ready"));
    pool.close();
    pool.join().unwrap();
    let mut inited = q.drain().unwrap();
    inited.sort();
    let mut pids = pool.pids();
    pids.sort();
    assert_eq!(inited, pids);
}

#[test]
fn a_panicking_initializer_fails_the_tasks_with_its_message() {
    let pool = Pool::builder(2)
        .initializer(|()| panic!("no database"), ())
        .build()
        .unwrap();
    let e = pool.apply(sqr, 2).unwrap_err();
    let m = e.to_string();
    assert!(m.contains("no database"), "{m}");
}

#[test]
fn max_tasks_per_child_replaces_workers() {
    // _TestPoolWorkerLifetime.test_pool_worker_lifetime
    let pool = Pool::builder(3).max_tasks_per_child(10).build().unwrap();
    let before: HashSet<u32> = pool.pids().into_iter().collect();
    let results: Vec<_> = (0..100)
        .map(|i| {
            pool.apply_async(|x: u64| (x, std::process::id()), i)
                .unwrap()
        })
        .collect();
    let mut per_pid: HashMap<u32, u32> = HashMap::new();
    for (i, r) in results.into_iter().enumerate() {
        let (x, p) = r.get().unwrap();
        assert_eq!(x, i as u64);
        *per_pid.entry(p).or_default() += 1;
    }
    assert!(per_pid.values().all(|&n| n <= 10), "{per_pid:?}");
    assert!(per_pid.len() >= 10, "{per_pid:?}");
    // At most 10 tasks per worker: 100 tasks cannot all have run in the first three.
    let after: HashSet<u32> = pool.pids().into_iter().collect();
    assert_eq!(after.len(), 3);
    assert_ne!(before, after);
    // test_pool_worker_lifetime_early_close
    let pool = Pool::builder(1).max_tasks_per_child(1).build().unwrap();
    let results: Vec<_> = (0..6)
        .map(|i| pool.apply_async(slow_sqr, (i, 10)).unwrap())
        .collect();
    pool.close();
    pool.join().unwrap();
    for (i, r) in results.into_iter().enumerate() {
        assert_eq!(r.get().unwrap(), (i * i) as u64);
    }
}

#[test]
fn workers_carry_a_process_name() {
    /// Whether the name `ps` shows for `pid` becomes `want` (a worker names itself as it
    /// starts).
    fn comm_becomes(pid: u32, want: &str) -> bool {
        eventually(LONG, || {
            std::fs::read_to_string(format!("/proc/{pid}/comm"))
                .is_ok_and(|comm| comm.trim_end() == want)
        })
    }
    let pool = Pool::builder(2).name("resizer").build().unwrap();
    for p in pool.pids() {
        assert!(comm_becomes(p, "resizer"));
    }
    let pool = Pool::new(1).unwrap();
    assert!(comm_becomes(pool.pids()[0], "shmq-worker"));
}
