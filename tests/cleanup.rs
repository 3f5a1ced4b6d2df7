//! `cleanup_on_signals`: a process stopped by SIGTERM or SIGINT removes the queues it
//! created (not the persistent ones), and still dies of that signal.

mod common;

use std::time::Duration;

use common::{uniq, RemoveOnDrop};
use shmq::process::{self, ProcessError};
use shmq::{Error, Options, Queue, RawQueue};

shmq::enable_test_support!();

/// In the child: install the cleanup, create a queue and a persistent one, say so, wait.
fn child((base, ready): (String, Queue<u32>)) {
    shmq::cleanup_on_signals().unwrap();
    shmq::cleanup_on_signals().unwrap(); // a second call does nothing
    let _own = RawQueue::create(&format!("{base}-own"), 4096).unwrap();
    let keep = Options::new().keep_on_drop(true);
    let _kept = RawQueue::create_with(format!("{base}-kept").as_str(), &keep).unwrap();
    ready.put(&1).unwrap();
    loop {
        std::thread::sleep(Duration::from_secs(1));
    }
}

fn stopped_by(signal: i32) {
    let base = uniq(&format!("cleanup-{signal}"));
    let ready: Queue<u32> = Queue::create(&format!("{base}-ready"), 4096).unwrap();
    let (own, kept) = (format!("{base}-own"), format!("{base}-kept"));
    let _rm = (RemoveOnDrop(own.clone()), RemoveOnDrop(kept.clone()));
    let child = process::start(child, (base.clone(), ready.clone())).unwrap();
    ready.get_timeout(Duration::from_secs(60)).unwrap();
    assert!(RawQueue::open(&own).is_ok());
    // SAFETY: kill has no memory-safety preconditions; the pid is our live child.
    assert_eq!(unsafe { libc::kill(child.pid() as i32, signal) }, 0);
    match child.join() {
        Err(Error::Process(ProcessError::Signaled { signal: s, .. })) => assert_eq!(s, signal),
        other => panic!("expected death by signal {signal}, got {other:?}"),
    }
    assert!(
        matches!(RawQueue::open(&own), Err(Error::NotFound(_))),
        "{own} left behind"
    );
    // A queue meant to outlive its creator stays.
    assert!(RawQueue::open(&kept).is_ok());
    shmq::remove(&kept).unwrap();
}

#[test]
fn sigterm_removes_own_queues() {
    stopped_by(libc::SIGTERM);
}

#[test]
fn sigint_removes_own_queues() {
    stopped_by(libc::SIGINT);
}

/// In a child process of its own: `remove_own_queues` there cannot touch the queues that
/// the other tests of this (parent) process created.
fn own_queues(base: String) -> Vec<String> {
    let mine = RawQueue::create(&format!("{base}-mine"), 4096).unwrap();
    let keep = Options::new().keep_on_drop(true);
    let kept = RawQueue::create_with(format!("{base}-kept").as_str(), &keep).unwrap();
    let removed = shmq::remove_own_queues().unwrap();
    mine.put(b"still usable").unwrap();
    assert_eq!(mine.get_vec().unwrap(), b"still usable");
    assert_eq!(kept.len(), 0);
    removed
}

#[test]
fn remove_own_queues_keeps_persistent_and_other_processes_queues() {
    let base = uniq("cleanup-own");
    let _rm = RemoveOnDrop(format!("{base}-kept"));
    // The parent's queue: created by another process than the child's.
    let _parents = RawQueue::create(&format!("{base}-parent"), 4096).unwrap();
    let removed = process::start(own_queues, base.clone())
        .unwrap()
        .join()
        .unwrap();
    assert_eq!(removed, vec![format!("{base}-mine")]);
    assert!(RawQueue::open(&format!("{base}-parent")).is_ok());
    assert!(RawQueue::open(&format!("{base}-kept")).is_ok());
    shmq::remove(&format!("{base}-kept")).unwrap();
}
