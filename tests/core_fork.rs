//! Fork without exec and the lock's liveness (issue 9, section 2): a child created by
//! `fork` inherits its parent's descriptors, and so the parent's liveness locks. The
//! child's handles must take a holder id of their own, and a parent that dies holding a
//! lock must be seen dead even while such a child lives.

mod common;

use std::time::{Duration, Instant};

use common::{child, say, signal, uniq};
use shmq::{Error, RawQueue};

/// How long a child may take before it counts as hung.
const LIMIT: Duration = Duration::from_secs(60);

common::child_roles!(hold_and_fork, fork_and_put, fork_after_remove);

/// hold_and_fork:<queue> — holds the producer lock, forks a child that sleeps without
/// touching the queue, prints the child's pid, waits to be killed.
fn hold_and_fork(args: &[String]) {
    let q = RawQueue::open(&args[0]).unwrap();
    let guard = q.hold_lock_for_test(true).unwrap();
    // SAFETY: the child only sleeps and exits through async-signal-safe calls.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        // SAFETY: sleep and _exit are async-signal-safe.
        unsafe {
            libc::sleep(60);
            libc::_exit(0);
        }
    }
    say(format!("forked {pid}"));
    std::thread::sleep(Duration::from_secs(120));
    drop(guard);
}

/// fork_and_put:<queue> — forks; the child puts through the inherited handle (a new holder
/// id), the parent waits for it.
fn fork_and_put(args: &[String]) {
    let q = RawQueue::open(&args[0]).unwrap();
    q.put(b"from the parent").unwrap();
    // SAFETY: this process runs one test thread (--test-threads=1) besides the harness's;
    // the child uses the queue (futex, fcntl, open) and leaves with _exit.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        let ok = q.put_timeout(b"from the fork child", Duration::from_secs(10));
        // SAFETY: _exit ends the child without running the parent's destructors.
        unsafe { libc::_exit(if ok.is_ok() { 0 } else { 1 }) };
    }
    let mut status = 0;
    // SAFETY: waits for our own child.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    say(format!("child status {status}"));
    q.put(b"parent again").unwrap();
}

/// fork_after_remove:<queue> — the name is removed, then a fork child puts through the
/// inherited handle (it re-opens the object itself, not the name).
fn fork_after_remove(args: &[String]) {
    let q = RawQueue::open(&args[0]).unwrap();
    shmq::remove(&args[0]).unwrap();
    // SAFETY: as in fork_and_put.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        let ok = q.put_timeout(b"child after remove", Duration::from_secs(10));
        // SAFETY: _exit ends the child without running the parent's destructors.
        unsafe { libc::_exit(if ok.is_ok() { 0 } else { 1 }) };
    }
    let mut status = 0;
    // SAFETY: waits for our own child.
    unsafe { libc::waitpid(pid, &mut status, 0) };
    let mut buf = Vec::new();
    let got = q.try_get_into(&mut buf).map(|n| buf[..n].to_vec());
    say(format!(
        "child status {status} got {:?}",
        got.map(String::from_utf8)
    ));
}

#[test]
fn fork_child_takes_its_own_holder_id() {
    let name = uniq("forkput");
    let q = RawQueue::create(&name, 4096).unwrap();
    let out = child!(fork_and_put).arg(&name).run(LIMIT);
    assert_eq!(out, ["child status 0"]);
    let mut got = Vec::new();
    let mut buf = Vec::new();
    while let Ok(n) = q.try_get_into(&mut buf) {
        got.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
    assert_eq!(
        got,
        ["from the parent", "from the fork child", "parent again"]
    );
}

#[test]
fn parent_dead_holding_the_lock_is_recovered_while_its_fork_child_lives() {
    let name = uniq("forkdead");
    let q = RawQueue::create(&name, 4096).unwrap();
    let mut holder = child!(hold_and_fork).arg(&name).spawn();
    let line = holder.line(LIMIT, "hold_and_fork");
    let grandchild: u32 = line.strip_prefix("forked ").unwrap().parse().unwrap();
    // While the holder lives, the lock is its: a timed put waits and times out.
    assert!(matches!(
        q.put_timeout(b"x", Duration::from_millis(300)),
        Err(Error::Timeout)
    ));
    holder.kill(); // SIGKILL; the fork child still has the inherited descriptors
    let t = Instant::now();
    let r = q.put_timeout(b"after", Duration::from_secs(20));
    // The grandchild we started only sleeps.
    signal(grandchild, libc::SIGKILL);
    r.unwrap();
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    assert_eq!(q.get_vec().unwrap(), b"after");
}

#[test]
fn fork_child_uses_an_inherited_handle_after_the_name_is_removed() {
    let name = uniq("forkrm");
    let q = RawQueue::create(&name, 4096).unwrap();
    let out = child!(fork_after_remove).arg(&name).run(LIMIT);
    assert_eq!(
        out,
        ["child status 0 got Ok(Ok(\"child after remove\"))"],
        "{out:?}"
    );
    drop(q);
}
