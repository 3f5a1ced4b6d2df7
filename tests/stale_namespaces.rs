//! Staleness from the attach marker, not from PIDs or `/proc` (issue 9 §2's kind of fault).
//!
//! * A live creator in another PID namespace is not stale seen from ours: `create` with
//!   `replace_stale` fails with `AlreadyExists { stale: false }` and the queue keeps its
//!   messages.
//! * `remove_stale` keeps live, attached queues whichever PID namespace it runs in, and
//!   removes a queue whose every process died. These runs call the global `remove_stale`,
//!   so they happen in a child with a private `/dev/shm` (a tmpfs in its own mount
//!   namespace), never on the shared one.
//! * A `fork` child that inherited the mapping keeps the queue attached after its parent,
//!   the creator, died; once it exits the queue is stale.
//!
//! Namespaces and mounts need root and util-linux `unshare`; where unavailable, the test
//! says so on stderr and returns.

mod common;

use std::ffi::CString;
use std::path::Path;
use std::time::Duration;

use common::{
    can_run, child, eventually, say, uniq, wait_for_file, Release, RemoveOnDrop, RoleChild,
    Wrapper, NEW_PID_NS, PRIVATE_SHM,
};
use shmq::internal::shm_path;
use shmq::{Error, Options, RawQueue};

const LIMIT: Duration = Duration::from_secs(30);

/// Start a child (under `wrapper`, if any) that creates queue `name`, puts "live" and
/// holds it until `release` exists; returns once it said "created".
fn start_creator(wrapper: Option<&'static Wrapper>, name: &str, release: &Release) -> RoleChild {
    let mut role = child!(create_hold).arg(name).arg(release.path().display());
    if let Some(w) = wrapper {
        role = role.under(w);
    }
    let child = role.spawn();
    let line = child.line(LIMIT, "creator");
    assert!(line.starts_with("created "), "{line}");
    child
}

fn assert_live_and_kept(name: &str) {
    let e = RawQueue::create(name, 4096).unwrap_err();
    assert!(
        matches!(e, Error::AlreadyExists { stale: false, .. }),
        "{e:?}"
    );
    let e = RawQueue::create_with(name, &Options::new().replace_stale(true)).unwrap_err();
    assert!(
        matches!(e, Error::AlreadyExists { stale: false, .. }),
        "{e:?}"
    );
    let info = shmq::inspect(name).unwrap();
    assert!(info.mapped && !info.is_stale(), "{info:?}");
}

common::child_roles!(
    create_hold,
    create_and_exit,
    remove_stale,
    private_shm_scenario,
    fork_and_exit
);

/// create_hold:<queue>:<release file> — creates the queue (not persistent), puts "live",
/// says "created <pid as seen here>", holds it until the file exists (at most 90 s) and
/// exits normally (its drop removes the name).
fn create_hold(args: &[String]) {
    let q = RawQueue::create(&args[0], 4096).unwrap();
    q.put(b"live").unwrap();
    say(format!("created {}", std::process::id()));
    wait_for_file(Path::new(&args[1]), Duration::from_secs(90));
}

/// create_and_exit:<queue> — creates the queue and exits without dropping it: the name
/// stays, nobody maps it.
fn create_and_exit(args: &[String]) {
    let q = RawQueue::create(&args[0], 4096).unwrap();
    q.put(b"left behind").unwrap();
    std::process::exit(0);
}

/// remove_stale — the global remove_stale (only ever run in a private /dev/shm); says
/// "removed <names,>".
fn remove_stale(_: &[String]) {
    assert!(
        std::env::var("SHMQ_TEST_PRIVATE_SHM").is_ok(),
        "remove_stale runs only in a private /dev/shm"
    );
    let removed = shmq::remove_stale().unwrap();
    say(format!("removed {}", removed.join(",")));
}

/// fork_and_exit:<queue>:<release file> — creates the queue, forks a child that keeps the
/// inherited mapping (touching nothing) until the file exists (at most 60 s), says
/// "forked <pid>" and exits without dropping the queue.
fn fork_and_exit(args: &[String]) {
    let q = RawQueue::create(&args[0], 4096).unwrap();
    q.put(b"inherited").unwrap();
    let path = CString::new(args[1].as_str()).unwrap();
    // SAFETY: the child only calls access, nanosleep and _exit (async-signal-safe).
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        for _ in 0..6000 {
            // SAFETY: `path` is a valid NUL-terminated string; these calls are
            // async-signal-safe.
            unsafe {
                if libc::access(path.as_ptr(), libc::F_OK) == 0 {
                    break;
                }
                let t = libc::timespec {
                    tv_sec: 0,
                    tv_nsec: 10_000_000,
                };
                libc::nanosleep(&t, std::ptr::null_mut());
            }
        }
        // SAFETY: ends the child without running the parent's destructors.
        unsafe { libc::_exit(0) };
    }
    assert!(pid > 0, "fork failed");
    say(format!("forked {pid}"));
    std::process::exit(0);
}

/// Seen from this PID namespace, a queue whose creator lives in another one (and whose pid,
/// read here, names another process or none) is live: not replaced, not stale.
#[test]
fn a_live_creator_in_another_pid_namespace_is_not_stale() {
    if !can_run(
        "a_live_creator_in_another_pid_namespace_is_not_stale",
        &[&NEW_PID_NS],
    ) {
        return;
    }
    let name = uniq("ns-live");
    let _rm = RemoveOnDrop(name.clone());
    let release = Release::new();
    let mut creator = start_creator(Some(&NEW_PID_NS), &name, &release);
    assert_live_and_kept(&name);
    // Still the creator's queue, with its message: the next open by name reaches it.
    let q = RawQueue::open(&name).unwrap();
    assert_eq!(q.get_vec().unwrap(), b"live");
    drop(q);
    release.release();
    assert!(creator.wait(LIMIT).success());
    // The creator's drop removed its name.
    assert!(!shm_path(&name).exists());
}

/// `remove_stale` in either PID namespace keeps the live queues of the other and removes a
/// queue whose every process died. Runs in a child with a private `/dev/shm`.
#[test]
fn remove_stale_across_pid_namespaces_keeps_live_queues() {
    if !can_run(
        "remove_stale_across_pid_namespaces_keeps_live_queues",
        &[&NEW_PID_NS, &PRIVATE_SHM],
    ) {
        return;
    }
    let mut child = child!(private_shm_scenario).under(&PRIVATE_SHM).spawn();
    let line = child.line(Duration::from_secs(120), "scenario");
    assert_eq!(line, "ok");
    assert!(child.wait(LIMIT).success());
}

/// private_shm_scenario — runs in a private /dev/shm; see the test above.
fn private_shm_scenario(_: &[String]) {
    // Make sure this really is a private /dev/shm before any global remove_stale: the
    // wrapper mounted a fresh tmpfs, so it starts empty.
    assert!(
        std::fs::read_dir("/dev/shm").unwrap().next().is_none(),
        "/dev/shm is not a fresh private mount"
    );
    std::env::set_var("SHMQ_TEST_PRIVATE_SHM", "1");
    let remove_stale_in_new_pid_ns = || -> Vec<String> {
        let mut c = child!(remove_stale).under(&NEW_PID_NS).spawn();
        let line = c.line(LIMIT, "remove_stale");
        assert!(c.wait(LIMIT).success());
        let list = line.strip_prefix("removed ").expect("removed line");
        list.split(',')
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect()
    };

    // A: created in another PID namespace, alive.
    let a = uniq("ps-a");
    let release = Release::new();
    let mut creator = start_creator(Some(&NEW_PID_NS), &a, &release);
    // B: created here, alive.
    let b = uniq("ps-b");
    let qb = RawQueue::create(&b, 4096).unwrap();
    qb.put(b"mine").unwrap();
    // C: every process that mapped it died.
    let c = uniq("ps-c");
    child!(create_and_exit).arg(&c).run(LIMIT);
    assert!(shm_path(&c).exists());
    // D: its creator died, but a reader (here) still maps it.
    let d = uniq("ps-d");
    child!(create_and_exit).arg(&d).run(LIMIT);
    let qd = RawQueue::open(&d).unwrap();

    // From inside a new PID namespace: only C goes.
    let removed = remove_stale_in_new_pid_ns();
    assert_eq!(removed, vec![c.clone()], "removed in the new PID namespace");
    for n in [&a, &b, &d] {
        assert!(shm_path(n).exists(), "{n} must be kept");
    }
    assert!(!shm_path(&c).exists());
    assert_eq!(qb.len(), 1);

    // From this (the parent) PID namespace: A's creator is invisible to pid checks made
    // here in the sense that matters (its pid means another process); it is kept.
    let removed = shmq::remove_stale().unwrap();
    assert!(removed.is_empty(), "{removed:?}");
    assert_live_and_kept(&a);
    assert_eq!(RawQueue::open(&a).unwrap().get_vec().unwrap(), b"live");

    // Once D's last mapping is gone, it is stale, whichever namespace asks.
    drop(qd);
    assert_eq!(remove_stale_in_new_pid_ns(), vec![d.clone()]);

    release.release();
    assert!(creator.wait(LIMIT).success());
    drop(qb);
    // Everything cleaned up: A's and B's creators removed their names.
    assert!(
        std::fs::read_dir("/dev/shm").unwrap().next().is_none(),
        "leftovers in the private /dev/shm"
    );
    say("ok");
}

/// A queue whose every process died is stale, and replace_stale replaces it.
#[test]
fn a_queue_whose_every_process_died_is_stale() {
    let name = uniq("all-dead");
    let _rm = RemoveOnDrop(name.clone());
    child!(create_and_exit).arg(&name).run(LIMIT);
    let info = shmq::inspect(&name).unwrap();
    assert!(!info.mapped && info.is_stale(), "{info:?}");
    let e = RawQueue::create(&name, 4096).unwrap_err();
    assert!(
        matches!(e, Error::AlreadyExists { stale: true, .. }),
        "{e:?}"
    );
    let q = RawQueue::create_with(name.as_str(), &Options::new().replace_stale(true)).unwrap();
    assert_eq!(q.len(), 0, "a fresh queue");
}

/// A `fork` child that inherited the mapping keeps the queue attached after the creator
/// (its parent) died; when it exits too, the queue is stale.
#[test]
fn a_fork_child_that_inherited_the_mapping_keeps_it_attached() {
    let name = uniq("fork-kept");
    let _rm = RemoveOnDrop(name.clone());
    let release = Release::new();
    let mut child = child!(fork_and_exit)
        .arg(&name)
        .arg(release.path().display())
        .spawn();
    let line = child.line(LIMIT, "fork_and_exit");
    assert!(line.starts_with("forked "), "{line}");
    assert!(child.wait(LIMIT).success());
    // The creator is dead; its fork child maps the queue.
    assert_live_and_kept(&name);
    assert!(!shmq::inspect(&name).unwrap().stats().unwrap().creator_alive);
    release.release();
    assert!(
        eventually(LIMIT, || shmq::inspect(&name).is_ok_and(|i| i.is_stale())),
        "stale once the fork child exited"
    );
    let q = RawQueue::create_with(name.as_str(), &Options::new().replace_stale(true)).unwrap();
    assert_eq!(q.len(), 0, "a fresh queue");
}
