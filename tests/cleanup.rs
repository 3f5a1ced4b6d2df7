//! `cleanup_on_signals`: a process stopped by SIGTERM or SIGINT removes the queues it
//! created (not the persistent ones), and still dies of that signal.

mod common;

use std::time::Duration;

use common::{
    can_run, child, children_of, eventually, say, uniq, wait_for_file, Release, RemoveOnDrop,
    NEW_PID_NS,
};
use shmq::process::{self, ProcessError};
use shmq::{Error, Options, Queue, RawQueue};

shmq::enable_test_support!();
common::child_roles!(hold_own, remove_own, init_with_cleanup);

const LIMIT: Duration = Duration::from_secs(60);

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

/// hold_own:<queue>:<release> — creates the queue (removed when this process's handle
/// drops), says "created <pid>", holds it until `release` exists.
fn hold_own(args: &[String]) {
    let q = RawQueue::create(&args[0], 4096).unwrap();
    q.put(b"live").unwrap();
    say(format!("created {}", std::process::id()));
    wait_for_file(std::path::Path::new(&args[1]), Duration::from_secs(90));
}

/// remove_own:<queue> — creates its own queue, then says what `remove_own_queues` removed
/// ("removed a,b").
fn remove_own(args: &[String]) {
    let _mine = RawQueue::create(&args[0], 4096).unwrap();
    say(format!(
        "removed {}",
        shmq::remove_own_queues().unwrap().join(",")
    ));
}

/// init_with_cleanup:<queue> — `cleanup_on_signals`, a queue, "ready <pid>", then waits to
/// be signalled.
fn init_with_cleanup(args: &[String]) {
    shmq::cleanup_on_signals().unwrap();
    let _q = RawQueue::create(&args[0], 4096).unwrap();
    say(format!("ready {}", std::process::id()));
    loop {
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// Two processes that are both PID 1 of their own PID namespace (two containers' entry
/// points): `remove_own_queues` in one removes its own queue and never the other's, whatever
/// their headers' pid and start tick say.
#[test]
fn remove_own_queues_in_pid_namespaces_keeps_the_other_inits_queue() {
    if !can_run(
        "remove_own_queues_in_pid_namespaces_keeps_the_other_inits_queue",
        &[&NEW_PID_NS],
    ) {
        return;
    }
    let base = uniq("cleanup-ns");
    let (theirs, mine) = (format!("{base}-theirs"), format!("{base}-mine"));
    let _rm = (RemoveOnDrop(theirs.clone()), RemoveOnDrop(mine.clone()));
    let release = Release::new();
    let mut holder = child!(hold_own)
        .arg(&theirs)
        .arg(release.path().display())
        .under(&NEW_PID_NS)
        .spawn();
    assert_eq!(holder.line(LIMIT, "holder"), "created 1");
    let remover = child!(remove_own).arg(&mine).under(&NEW_PID_NS).spawn();
    assert_eq!(remover.line(LIMIT, "remover"), format!("removed {mine}"));
    // The other init's queue is untouched, message and all.
    let q = RawQueue::open(&theirs).unwrap();
    assert_eq!(q.get_vec().unwrap(), b"live");
    drop(q);
    release.release();
    assert!(holder.wait(LIMIT).success());
}

/// `cleanup_on_signals` in the init process of a PID namespace: SIGTERM removes its queue
/// and it exits with status 128 + 15 (the kernel does not let init die of a default
/// action; it used to end in SIGSEGV from signal-hook's `abort` fallback).
#[test]
fn cleanup_on_signals_in_a_pid_namespace_init_exits_143() {
    if !can_run(
        "cleanup_on_signals_in_a_pid_namespace_init_exits_143",
        &[&NEW_PID_NS],
    ) {
        return;
    }
    let name = uniq("cleanup-init");
    let _rm = RemoveOnDrop(name.clone());
    let mut init = child!(init_with_cleanup)
        .arg(&name)
        .under(&NEW_PID_NS)
        .spawn();
    assert_eq!(init.line(LIMIT, "init"), "ready 1");
    assert!(RawQueue::open(&name).is_ok());
    // The wrapper (`unshare --fork`) is our child; PID 1 of the namespace is its child.
    let mut inner = Vec::new();
    assert!(
        eventually(LIMIT, || {
            inner = children_of(init.id());
            !inner.is_empty()
        }),
        "no process inside the namespace"
    );
    common::signal(inner[0], libc::SIGTERM);
    let status = init.wait(LIMIT);
    assert_eq!(status.code(), Some(143), "{status:?}");
    assert!(
        matches!(RawQueue::open(&name), Err(Error::NotFound(_))),
        "{name} left behind"
    );
}
