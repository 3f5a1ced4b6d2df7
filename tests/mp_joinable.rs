//! JoinableQueue across processes: the counters live in the queue's own header, so one
//! name is one object (issue 11's repros), plus `shutdown(immediate)`.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use common::{eventually, uniq, RemoveOnDrop};
use shmq::internal::shm_path;
use shmq::process::{self, JoinableQueue};
use shmq::{Error, Options, RawQueue};

shmq::enable_test_support!();

const LONG: Duration = Duration::from_secs(60);

#[test]
fn one_name_is_one_object_and_mode_applies_to_the_counters() {
    let name = uniq("mode");
    let q: JoinableQueue<u32> =
        JoinableQueue::create_with(name.as_str(), &Options::new().capacity(4096).mode(0o640))
            .unwrap();
    let meta = std::fs::metadata(shm_path(&name)).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o640);
    // No companion object: the counters are in the queue's header.
    assert!(!shm_path(&format!("{name}.jq")).exists());
    let listed: Vec<String> = shmq::list()
        .unwrap()
        .into_iter()
        .map(|i| i.name)
        .filter(|n| n.starts_with(&name))
        .collect();
    assert_eq!(listed, vec![name.clone()]);
    q.put(&1).unwrap();
    assert_eq!(q.unfinished(), 1);
}

#[test]
fn keep_on_drop_keeps_the_unfinished_count() {
    let name = uniq("keep");
    let _rm = RemoveOnDrop(name.clone());
    {
        let q: JoinableQueue<String> = JoinableQueue::create_with(
            name.as_str(),
            &Options::new().capacity(4096).keep_on_drop(true),
        )
        .unwrap();
        q.put(&"a".into()).unwrap();
        q.put(&"b".into()).unwrap();
    }
    let q: JoinableQueue<String> = JoinableQueue::open(&name).unwrap();
    assert_eq!(q.unfinished(), 2);
    // A consumer in another process finishes both.
    let c = process::start(
        |q: JoinableQueue<String>| {
            let mut n = 0;
            while let Ok(s) = q.get_timeout(Duration::from_secs(30)) {
                assert!(s == "a" || s == "b");
                q.task_done().unwrap();
                n += 1;
                if n == 2 {
                    break;
                }
            }
            n
        },
        q.clone(),
    )
    .unwrap();
    q.join_timeout(LONG).unwrap();
    assert_eq!(c.join().unwrap(), 2);
    assert_eq!(q.unfinished(), 0);
    drop(q);
    shmq::remove(&name).unwrap();
}

#[test]
fn replace_stale_after_the_creator_is_killed() {
    let name = uniq("stale");
    let mut c = process::start(
        |name: String| {
            let q: JoinableQueue<u8> = JoinableQueue::create(&name, 4096).unwrap();
            q.put(&7).unwrap();
            std::thread::sleep(Duration::from_secs(600));
        },
        name.clone(),
    )
    .unwrap();
    // Wait until the child created and filled the queue.
    assert!(
        eventually(LONG, || JoinableQueue::<u8>::open(&name)
            .is_ok_and(|q| q.unfinished() == 1)),
        "child never created {name}"
    );
    c.kill().unwrap();
    assert!(matches!(
        c.join_timeout(LONG),
        Err(Error::Process(process::ProcessError::Signaled {
            signal: 9,
            ..
        }))
    ));
    match JoinableQueue::<u8>::create(&name, 4096) {
        Err(Error::AlreadyExists { stale: true, .. }) => {}
        other => panic!("expected AlreadyExists {{ stale: true }}, got {other:?}"),
    }
    let q: JoinableQueue<u8> =
        JoinableQueue::create_with(name.as_str(), &Options::new().replace_stale(true)).unwrap();
    assert_eq!(q.unfinished(), 0);
    assert!(q.is_empty());
    q.put(&1).unwrap();
    assert_eq!(q.unfinished(), 1);
}

#[test]
fn a_200_byte_name_is_accepted() {
    let mut name = uniq("long");
    while name.len() < 200 {
        name.push('x');
    }
    let q: JoinableQueue<u8> = JoinableQueue::create(&name, 4096).unwrap();
    q.put(&1).unwrap();
    let o: JoinableQueue<u8> = JoinableQueue::open(&name).unwrap();
    assert_eq!(o.get().unwrap(), 1);
    o.task_done().unwrap();
    q.join_timeout(LONG).unwrap();
}

#[test]
fn a_raw_put_is_one_more_task_never_a_corrupt_count() {
    let name = uniq("raw");
    let q: JoinableQueue<u32> = JoinableQueue::create(&name, 4096).unwrap();
    q.put(&1).unwrap();
    // The old companion object no longer exists.
    assert!(matches!(
        RawQueue::open(&format!("{name}.jq")),
        Err(Error::NotFound(_))
    ));
    // Another process puts bytes that are not a u32 through the raw view.
    let c = process::start(
        |name: String| {
            let raw = RawQueue::open(&name).unwrap();
            raw.try_put(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff]).unwrap();
        },
        name.clone(),
    )
    .unwrap();
    c.join().unwrap();
    assert_eq!(q.unfinished(), 2);
    assert_eq!(q.get().unwrap(), 1);
    q.task_done().unwrap();
    assert!(matches!(q.get(), Err(Error::Codec(_))));
    q.task_done().unwrap();
    assert_eq!(q.unfinished(), 0);
    q.join_timeout(LONG).unwrap();
    assert!(q.task_done().is_err());
}

#[test]
fn task_done_past_zero_is_an_error_in_any_process() {
    let q: JoinableQueue<u8> = JoinableQueue::create(&uniq("past"), 4096).unwrap();
    assert!(matches!(q.task_done(), Err(Error::InvalidArgument(_))));
    q.put(&1).unwrap();
    let c = process::start(
        |q: JoinableQueue<u8>| {
            q.get().unwrap();
            let first = q.task_done().is_ok();
            let second = q.task_done().is_err();
            (first, second)
        },
        q.clone(),
    )
    .unwrap();
    assert_eq!(c.join().unwrap(), (true, true));
    assert_eq!(q.unfinished(), 0);
}

#[test]
fn immediate_shutdown_wakes_a_join_in_another_process() {
    let q: JoinableQueue<u32> = JoinableQueue::create(&uniq("sd"), 1 << 16).unwrap();
    for i in 0..10 {
        q.put(&i).unwrap();
    }
    // A consumer takes one item and finishes it after we shut down.
    assert_eq!(q.get().unwrap(), 0);
    let mut joiner = process::start(
        |q: JoinableQueue<u32>| q.join_timeout(Duration::from_secs(60)).is_ok(),
        q.clone(),
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(50));
    assert!(joiner.is_alive(), "join returned with 10 unfinished tasks");
    assert_eq!(q.shutdown(true).unwrap(), 9);
    assert!(matches!(q.put(&1), Err(Error::Closed)));
    assert!(matches!(q.get(), Err(Error::Closed)));
    assert_eq!(q.unfinished(), 1);
    // The item held by the consumer still counts.
    assert!(matches!(
        joiner.join_timeout(Duration::from_millis(100)),
        Err(Error::Timeout)
    ));
    q.task_done().unwrap();
    assert!(joiner.join_timeout(LONG).unwrap());
}

#[test]
fn graceful_shutdown_lets_consumers_drain() {
    let q: JoinableQueue<u32> = JoinableQueue::create(&uniq("gsd"), 1 << 16).unwrap();
    for i in 0..5 {
        q.put(&i).unwrap();
    }
    assert_eq!(q.shutdown(false).unwrap(), 0);
    let c = process::start(
        |q: JoinableQueue<u32>| {
            let mut sum = 0;
            loop {
                match q.get() {
                    Ok(x) => {
                        sum += x;
                        q.task_done().unwrap();
                    }
                    Err(Error::Closed) => return sum,
                    Err(e) => panic!("{e}"),
                }
            }
        },
        q.clone(),
    )
    .unwrap();
    q.join_timeout(LONG).unwrap();
    assert_eq!(c.join().unwrap(), 10);
}

#[test]
fn a_consumer_killed_before_task_done_leaves_the_task_unfinished() {
    let q: JoinableQueue<u8> = JoinableQueue::create(&uniq("kill"), 4096).unwrap();
    q.put(&1).unwrap();
    let c = process::start(
        |q: JoinableQueue<u8>| {
            q.get().unwrap();
            // SAFETY: raise has no memory-safety preconditions.
            unsafe { libc::raise(libc::SIGKILL) };
        },
        q.clone(),
    )
    .unwrap();
    assert!(c.join().is_err());
    assert_eq!(q.unfinished(), 1);
    assert!(matches!(
        q.join_timeout(Duration::from_millis(50)),
        Err(Error::Timeout)
    ));
}
