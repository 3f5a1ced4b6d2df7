//! Guards and loans carried across `fork` without `exec` (session 5): a child inherits the
//! parent's loans and lock guards, which are the parent's holds. Ending one in the child
//! (drop, commit) must not release the parent's lock nor publish anything, and the loan
//! markers of the forking thread must not make the child's own puts and gets fail.
//!
//! Each test runs a role child (this binary re-run with one test thread, as in
//! `core_fork.rs`) that takes a loan or guard and forks; the fork child does its part and
//! leaves with `_exit` and a status, which the role reports with the parent's results.

mod common;

use std::time::Duration;

use common::{child, say, uniq};
use shmq::{Array, Condition, Error, Lock, Queue, RLock, RawQueue, Semaphore, Value};

/// How long a role child may take before it counts as hung.
const LIMIT: Duration = Duration::from_secs(60);
/// How long the fork child waits for the parent to end its loan.
const WAIT: Duration = Duration::from_secs(30);

common::child_roles!(
    write_loan, read_loan, typed_loan, lock_fork, rlock_fork, cond_fork, value_fork, sem_fork
);

/// `fork()`, checked.
fn fork() -> libc::pid_t {
    // SAFETY: the role process runs one test thread besides the harness's idle main thread
    // (see core_fork.rs); the fork child uses shmq (atomics, futex, fcntl, open), allocates,
    // prints at most one line and leaves with `_exit` (`in_child`).
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
    pid
}

/// The fork child's part: run `f`, say why it failed if it did, and `_exit` with 0 (success)
/// or 1. Never returns (a panic is caught: the child must not go on as a test harness).
fn in_child(f: impl FnOnce() -> Result<(), String>) -> ! {
    let code = match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(Ok(())) => 0,
        Ok(Err(e)) => {
            say(format!("fork child: {e}"));
            1
        }
        Err(_) => 2,
    };
    // SAFETY: _exit ends the child without running destructors (the parent's loans and
    // handles are the parent's to end).
    unsafe { libc::_exit(code) }
}

/// Wait for fork child `pid`: its exit status, or 100 + the signal that killed it.
fn reap(pid: libc::pid_t) -> i32 {
    let mut status = 0;
    // SAFETY: waits for our own child.
    let r = unsafe { libc::waitpid(pid, &mut status, 0) };
    assert_eq!(r, pid, "waitpid: {}", std::io::Error::last_os_error());
    if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        100 + libc::WTERMSIG(status)
    }
}

/// A pipe on which the fork child tells the parent it has done its first part.
struct Signal {
    read: libc::c_int,
    write: libc::c_int,
}

impl Signal {
    fn new() -> Signal {
        let mut fds = [0; 2];
        // SAFETY: `fds` has room for the two descriptors.
        assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
        Signal {
            read: fds[0],
            write: fds[1],
        }
    }

    /// In the child: say "done".
    fn send(&self) {
        // SAFETY: writes one byte from a live buffer to our pipe.
        unsafe { libc::write(self.write, b"x".as_ptr().cast(), 1) };
    }

    /// In the parent: wait until the child said "done" (or exited: end of file).
    fn wait(&self) {
        // SAFETY: the parent's copy of the write end is closed first, so the read ends at
        // the child's byte or exit; `b` is a live one-byte buffer.
        unsafe {
            libc::close(self.write);
            let mut b = 0u8;
            libc::read(self.read, (&mut b as *mut u8).cast(), 1);
            libc::close(self.read);
        }
    }
}

/// In a fork child: the producer lock is still the parent's (a `try_put` finds it busy and
/// answers `Full`, not "this thread holds a write loan", and the lock word is not free).
fn producer_lock_is_the_parents(q: &RawQueue) -> Result<(), String> {
    match q.try_put(b"child try") {
        Err(Error::Full) => {}
        other => {
            return Err(format!(
                "try_put while the parent holds the loan: {other:?}"
            ))
        }
    }
    if q.stats().producer_lock_holder == 0 {
        return Err("the producer lock word is free".into());
    }
    Ok(())
}

/// In a fork child: the consumer lock is still the parent's.
fn consumer_lock_is_the_parents(q: &RawQueue) -> Result<(), String> {
    let mut buf = Vec::new();
    match q.try_get_into(&mut buf) {
        Err(Error::Empty) => {}
        other => {
            return Err(format!(
                "try_get while the parent holds the loan: {other:?}"
            ))
        }
    }
    if q.stats().consumer_lock_holder == 0 {
        return Err("the consumer lock word is free".into());
    }
    Ok(())
}

/// Whether `e` is the error of a loan committed in a fork child.
fn is_inherited_error(e: &Error) -> bool {
    matches!(e, Error::InvalidArgument(m) if m.contains("belongs to the parent process"))
}

/// write_loan:<queue>:<variant> — takes a write loan of "parent" and forks. The child:
/// `childdrop` drops the inherited loan, `childcommit` commits it (expects the typed error),
/// `childput` puts while the parent holds the loan (expects `Full`), tells the parent, and
/// puts "child" once the parent has committed. Says "child <status> commit <result>".
fn write_loan(args: &[String]) {
    let q = RawQueue::open(&args[0]).unwrap();
    let variant = args[1].clone();
    let mut loan = q.put_loan(6).unwrap();
    loan.as_mut_slice().copy_from_slice(b"parent");
    let signal = Signal::new();
    // The other way: the parent tells the child it has committed.
    let back = Signal::new();
    let pid = fork();
    if pid == 0 {
        in_child(|| {
            match variant.as_str() {
                "childdrop" => drop(loan),
                "childcommit" => match loan.commit() {
                    Err(e) if is_inherited_error(&e) => {}
                    other => return Err(format!("commit of the inherited loan: {other:?}")),
                },
                "childput" => {
                    producer_lock_is_the_parents(&q)?;
                    signal.send();
                    return q
                        .put_timeout(b"child", WAIT)
                        .map_err(|e| format!("put after the parent's commit: {e:?}"));
                }
                "childwrite" => {
                    // After the parent published the loan: writing the inherited loan must
                    // not reach the ring (it writes a private buffer of the same size).
                    back.wait();
                    let mut loan = loan;
                    loan.as_mut_slice().copy_from_slice(b"XXXXXX");
                    if loan.as_mut_slice() != b"XXXXXX" {
                        return Err("the inherited loan forgot what the child wrote".into());
                    }
                    return Ok(());
                }
                v => return Err(format!("unknown variant {v}")),
            }
            producer_lock_is_the_parents(&q)
        });
    }
    let (status, commit) = if variant == "childwrite" {
        let commit = loan.commit();
        back.send();
        (reap(pid), commit)
    } else if variant == "childput" {
        signal.wait();
        let commit = loan.commit();
        (reap(pid), commit)
    } else {
        let status = reap(pid);
        (status, loan.commit())
    };
    say(format!("child {status} commit {commit:?}"));
}

/// read_loan:<queue>:<variant> — lends the first message and forks. The child:
/// `childdrop` drops the inherited loan, `childcommit` commits it (removes nothing),
/// `childget` gets while the parent holds the loan (expects `Empty`), tells the parent, and
/// gets the next message once the parent has committed. Then the parent commits. Says
/// "child <status> lent <message>".
fn read_loan(args: &[String]) {
    let q = RawQueue::open(&args[0]).unwrap();
    let variant = args[1].clone();
    let loan = q.get_loan().unwrap();
    let lent = String::from_utf8_lossy(&loan).into_owned();
    let signal = Signal::new();
    let back = Signal::new();
    let pid = fork();
    if pid == 0 {
        in_child(|| {
            if loan.bytes() != lent.as_bytes() {
                return Err("the inherited loan shows other bytes".into());
            }
            match variant.as_str() {
                "childdrop" => drop(loan),
                "childcommit" => loan.commit(),
                "childlater" => {
                    // The parent commits, and producers write over the message's place:
                    // the inherited loan still shows what it showed (a private copy).
                    signal.send();
                    back.wait();
                    return match loan.bytes() {
                        b if b == lent.as_bytes() => Ok(()),
                        b => Err(format!(
                            "the inherited loan now shows {:?}",
                            String::from_utf8_lossy(&b[..b.len().min(8)])
                        )),
                    };
                }
                "childget" => {
                    consumer_lock_is_the_parents(&q)?;
                    signal.send();
                    let mut buf = Vec::new();
                    let n = q
                        .get_into_timeout(&mut buf, WAIT)
                        .map_err(|e| format!("get after the parent's commit: {e:?}"))?;
                    return match &buf[..n] {
                        b"m2" => Ok(()),
                        other => Err(format!("got {:?}", String::from_utf8_lossy(other))),
                    };
                }
                v => return Err(format!("unknown variant {v}")),
            }
            consumer_lock_is_the_parents(&q)
        });
    }
    let status = if variant == "childlater" {
        signal.wait();
        loan.commit();
        // Wrap the ring so that records are written over the committed message's place.
        let mut buf = Vec::new();
        for _ in 0..4 {
            q.put(&[b'Z'; 2000]).unwrap();
            while q.try_get_into(&mut buf).is_ok() {}
        }
        back.send();
        reap(pid)
    } else if variant == "childget" {
        signal.wait();
        loan.commit();
        reap(pid)
    } else {
        let status = reap(pid);
        loan.commit();
        status
    };
    say(format!("child {status} lent {lent}"));
}

/// typed_loan:<queue> — a `Queue<String>` write loan of "typed", forked; the child's commit
/// fails with the typed error and publishes nothing, then the parent commits.
fn typed_loan(args: &[String]) {
    let q: Queue<String> = Queue::open(&args[0]).unwrap();
    let loan = q.put_loan(&"typed".to_string()).unwrap();
    let pid = fork();
    if pid == 0 {
        in_child(|| match loan.commit() {
            Err(e) if is_inherited_error(&e) => Ok(()),
            other => Err(format!("commit of the inherited loan: {other:?}")),
        });
    }
    let status = reap(pid);
    let commit = loan.commit();
    say(format!("child {status} commit {commit:?}"));
}

/// lock_fork:<lock> — takes the `Lock` and forks; the child drops the inherited guard, and
/// the lock stays held (the child's `try_lock` finds it busy). Then the parent releases it.
fn lock_fork(args: &[String]) {
    let lock = Lock::open(&args[0]).unwrap();
    let guard = lock.lock().unwrap();
    let pid = fork();
    if pid == 0 {
        in_child(|| {
            drop(guard);
            if !lock.is_locked() {
                return Err("dropping the inherited guard released the parent's lock".into());
            }
            match lock.try_lock() {
                Ok(None) => Ok(()),
                other => Err(format!(
                    "try_lock in the child: {:?}",
                    other.map(|g| g.is_some())
                )),
            }
        });
    }
    let status = reap(pid);
    let held = lock.is_locked();
    drop(guard);
    say(format!(
        "child {status} held {held} released {}",
        !lock.is_locked()
    ));
}

/// value_fork:<value> <array> — locks the `Value` and the `Array` and forks; the child drops
/// both inherited guards, and both locks stay held (the child's `lock_timeout` times out).
/// Then the parent writes through its guards and releases them.
fn value_fork(args: &[String]) {
    let v = Value::<u64>::open(&args[0]).unwrap();
    let a = Array::<u32>::open(&args[1]).unwrap();
    let mut vg = v.lock().unwrap();
    let mut ag = a.lock().unwrap();
    let pid = fork();
    if pid == 0 {
        in_child(|| {
            drop(vg);
            drop(ag);
            let short = Duration::from_millis(50);
            match (v.lock_timeout(short), a.lock_timeout(short)) {
                (Err(Error::Timeout), Err(Error::Timeout)) => Ok(()),
                (rv, ra) => Err(format!(
                    "after dropping the inherited guards: value {:?}, array {:?}",
                    rv.map(|_| ()),
                    ra.map(|_| ())
                )),
            }
        });
    }
    let status = reap(pid);
    vg.set(7);
    ag.set(0, 9).unwrap();
    drop((vg, ag));
    let short = Duration::from_secs(5);
    let free = v.lock_timeout(short).is_ok() && a.lock_timeout(short).is_ok();
    say(format!("child {status} free {free}"));
}

/// sem_fork:<sem> — takes a unit with `access` and forks; the child drops the inherited
/// guard, which gives nothing back (the value stays 0). Then the parent drops its guard.
fn sem_fork(args: &[String]) {
    let s = Semaphore::open(&args[0]).unwrap();
    let g = s.access().unwrap();
    let pid = fork();
    if pid == 0 {
        in_child(|| {
            drop(g);
            match s.value() {
                0 => Ok(()),
                n => Err(format!("value {n} after dropping the inherited guard")),
            }
        });
    }
    let status = reap(pid);
    drop(g);
    say(format!("child {status} value {}", s.value()));
}

/// rlock_fork:<rlock> — takes the `RLock` and forks; in the child the hold is not its own:
/// depth 0, `try_lock` finds it busy (no recursion), and dropping the inherited guard and
/// the handle releases nothing. Then the parent releases it.
fn rlock_fork(args: &[String]) {
    let r = RLock::open(&args[0]).unwrap();
    let guard = r.lock().unwrap();
    let pid = fork();
    if pid == 0 {
        let not_ours = (|| {
            if r.depth() != 0 {
                return Err(format!("depth {} in the child", r.depth()));
            }
            match r.try_lock() {
                Ok(None) => Ok(()),
                other => Err(format!(
                    "try_lock in the child: {:?}",
                    other.map(|g| g.is_some())
                )),
            }
        })();
        drop(guard);
        drop(r); // the last handle: its state holds the parent's guard
        in_child(|| {
            not_ours?;
            let other = RLock::open(&args[0]).map_err(|e| e.to_string())?;
            if !other.is_locked() {
                return Err("dropping the inherited guard released the parent's lock".into());
            }
            Ok(())
        });
    }
    let status = reap(pid);
    let (depth, held) = (r.depth(), r.is_locked());
    drop(guard);
    say(format!(
        "child {status} depth {depth} held {held} released {}",
        !r.is_locked()
    ));
}

/// cond_fork:<condition> — takes the `Condition`'s lock and forks; in the child the
/// inherited guard cannot wait (typed error), its notify does nothing, and dropping it
/// releases nothing (the child's own `lock_timeout` times out). Then the parent releases it.
fn cond_fork(args: &[String]) {
    let c = Condition::open(&args[0]).unwrap();
    let mut guard = c.lock().unwrap();
    let pid = fork();
    if pid == 0 {
        in_child(|| {
            match guard.wait_timeout(Duration::from_millis(100)) {
                Err(Error::InvalidArgument(m)) if m.contains("belongs to the parent") => {}
                other => return Err(format!("wait with the inherited guard: {other:?}")),
            }
            guard.notify_all();
            guard.notify(1);
            drop(guard);
            match c.lock_timeout(Duration::from_millis(100)) {
                Err(Error::Timeout) => Ok(()),
                other => Err(format!("lock in the child: {:?}", other.map(|_| "taken"))),
            }
        });
    }
    let status = reap(pid);
    drop(guard);
    let again = c.lock_timeout(Duration::from_secs(10)).map(|_| "taken");
    say(format!("child {status} again {again:?}"));
}

/// Everything `q` holds, as text.
fn drain(q: &RawQueue) -> Vec<String> {
    let mut got = Vec::new();
    let mut buf = Vec::new();
    while let Ok(n) = q.try_get_into(&mut buf) {
        got.push(String::from_utf8_lossy(&buf[..n]).into_owned());
    }
    got
}

fn write_case(variant: &str, expect: &[&str]) {
    let name = uniq(variant);
    let q = RawQueue::create(&name, 4096).unwrap();
    let out = child!(write_loan).arg(&name).arg(variant).run(LIMIT);
    assert_eq!(out, ["child 0 commit Ok(())"], "{variant}");
    assert_eq!(drain(&q), expect, "{variant}");
}

#[test]
fn write_loan_dropped_in_a_fork_child_stays_the_parents() {
    write_case("childdrop", &["parent"]);
}

#[test]
fn write_loan_committed_in_a_fork_child_fails_and_publishes_nothing() {
    write_case("childcommit", &["parent"]);
}

#[test]
fn write_loan_written_in_a_fork_child_does_not_reach_the_ring() {
    write_case("childwrite", &["parent"]);
}

#[test]
fn fork_child_puts_despite_the_forking_threads_write_loan() {
    write_case("childput", &["parent", "child"]);
}

fn read_case(variant: &str, expect: &[&str]) {
    let name = uniq(variant);
    let q = RawQueue::create(&name, 4096).unwrap();
    q.put(b"m1").unwrap();
    q.put(b"m2").unwrap();
    let out = child!(read_loan).arg(&name).arg(variant).run(LIMIT);
    assert_eq!(out, ["child 0 lent m1"], "{variant}");
    assert_eq!(drain(&q), expect, "{variant}");
}

#[test]
fn read_loan_in_a_fork_child_keeps_its_bytes_after_the_parent_commits() {
    read_case("childlater", &[]);
}

#[test]
fn read_loan_dropped_in_a_fork_child_stays_the_parents() {
    read_case("childdrop", &["m2"]);
}

#[test]
fn read_loan_committed_in_a_fork_child_removes_nothing() {
    read_case("childcommit", &["m2"]);
}

#[test]
fn fork_child_gets_despite_the_forking_threads_read_loan() {
    read_case("childget", &[]);
}

#[test]
fn typed_write_loan_committed_in_a_fork_child_fails() {
    let name = uniq("typedloan");
    let q: Queue<String> = Queue::create(&name, 4096).unwrap();
    let out = child!(typed_loan).arg(&name).run(LIMIT);
    assert_eq!(out, ["child 0 commit Ok(())"]);
    assert_eq!(q.try_get().unwrap(), "typed");
    assert!(matches!(q.try_get(), Err(Error::Empty)));
}

#[test]
fn lock_guard_dropped_in_a_fork_child_keeps_the_parents_hold() {
    let name = uniq("lockfork");
    let lock = Lock::create(&name).unwrap();
    let out = child!(lock_fork).arg(&name).run(LIMIT);
    assert_eq!(out, ["child 0 held true released true"]);
    assert!(!lock.is_locked());
}

#[test]
fn rlock_held_by_the_parent_is_not_the_fork_childs() {
    let name = uniq("rlockfork");
    let r = RLock::create(&name).unwrap();
    let out = child!(rlock_fork).arg(&name).run(LIMIT);
    assert_eq!(out, ["child 0 depth 1 held true released true"]);
    assert!(!r.is_locked());
}

#[test]
fn condition_guard_in_a_fork_child_is_the_parents() {
    let name = uniq("condfork");
    let _c = Condition::create(&name).unwrap();
    let out = child!(cond_fork).arg(&name).run(LIMIT);
    assert_eq!(out, ["child 0 again Ok(\"taken\")"]);
}

#[test]
fn value_and_array_guards_dropped_in_a_fork_child_keep_the_parents_hold() {
    let (vn, an) = (uniq("valuefork"), uniq("arrayfork"));
    let v = Value::<u64>::create(&vn, 0).unwrap();
    let a = Array::<u32>::create(&an, &[0, 0]).unwrap();
    let out = child!(value_fork).arg(&vn).arg(&an).run(LIMIT);
    assert_eq!(out, ["child 0 free true"]);
    assert_eq!((v.get().unwrap(), a.to_vec().unwrap()), (7, vec![9, 0]));
}

#[test]
fn semaphore_guard_dropped_in_a_fork_child_gives_nothing_back() {
    let name = uniq("semfork");
    let s = Semaphore::create(&name, 1).unwrap();
    let out = child!(sem_fork).arg(&name).run(LIMIT);
    assert_eq!(out, ["child 0 value 1"]);
    assert_eq!(s.value(), 1);
}
