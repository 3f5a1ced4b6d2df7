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
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{
    command_works, eventually, expect_line, is_root, line_channel, pid_namespaces_work, role, say,
    spawn_role, spawn_role_under, uniq, wait_exit, Reap, RemoveOnDrop, NEW_PID_NS,
};
use shmq::internal::shm_path;
use shmq::{Error, Options, RawQueue};

const ENTRY: &str = "child_entry";
const LIMIT: Duration = Duration::from_secs(30);

/// Run the rest of the command line in a new mount namespace with a fresh, private tmpfs
/// on `/dev/shm` (same PID namespace).
const PRIVATE_SHM: &[&str] = &[
    "unshare",
    "--mount",
    "--propagation",
    "private",
    "--",
    "sh",
    "-c",
    "mount -t tmpfs tmpfs /dev/shm && exec \"$0\" \"$@\"",
];

fn private_shm_works() -> bool {
    let mut cmd = PRIVATE_SHM.to_vec();
    cmd.push("true");
    is_root() && command_works(&cmd)
}

fn skip(test: &str, why: &str) {
    eprintln!("SKIPPED {test}: {why}");
}

/// Wait (bounded) for `path` to exist.
fn wait_for_file(path: &Path, limit: Duration) -> bool {
    eventually(limit, || path.exists())
}

/// Creates its file when dropped (releases a holding child, also when a test fails).
struct Release(PathBuf);

impl Drop for Release {
    fn drop(&mut self) {
        let _ = std::fs::write(&self.0, b"");
    }
}

fn release_file(tag: &str) -> Release {
    let p = std::env::temp_dir().join(format!("{}.release", uniq(tag)));
    let _ = std::fs::remove_file(&p);
    Release(p)
}

/// Start a child (under `wrapper`, if any) that creates queue `name`, puts "live" and
/// holds it until `release` exists; returns once it said "created".
fn start_creator(wrapper: Option<&[&str]>, name: &str, release: &Release) -> Reap {
    let args = [name.to_string(), release.0.display().to_string()];
    let mut child = match wrapper {
        Some(w) => spawn_role_under(w, ENTRY, "create-hold", &args),
        None => spawn_role(ENTRY, "create-hold", &args),
    };
    let rx = line_channel(&mut child);
    let line = expect_line(&rx, LIMIT, "creator");
    assert!(line.starts_with("created "), "{line}");
    Reap(child)
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

/// Entry point of every child process; ignored when the suite runs normally.
#[test]
#[ignore = "entry point for child processes started by the other tests"]
fn child_entry() {
    let Some((role, args)) = role() else {
        panic!("child_entry runs only as a child process");
    };
    match role.as_str() {
        // create-hold:<queue>:<release file> — creates the queue (not persistent), puts
        // "live", says "created <pid as seen here>", holds it until the file exists (at most
        // 90 s) and exits normally (its drop removes the name).
        "create-hold" => {
            let q = RawQueue::create(&args[0], 4096).unwrap();
            q.put(b"live").unwrap();
            say(format!("created {}", std::process::id()));
            wait_for_file(Path::new(&args[1]), Duration::from_secs(90));
        }
        // create-and-exit:<queue> — creates the queue and exits without dropping it: the
        // name stays, nobody maps it.
        "create-and-exit" => {
            let q = RawQueue::create(&args[0], 4096).unwrap();
            q.put(b"left behind").unwrap();
            std::process::exit(0);
        }
        // remove-stale — the global remove_stale (only ever run in a private /dev/shm);
        // says "removed <names,>".
        "remove-stale" => {
            assert!(
                std::env::var("SHMQ_TEST_PRIVATE_SHM").is_ok(),
                "remove-stale runs only in a private /dev/shm"
            );
            let removed = shmq::remove_stale().unwrap();
            say(format!("removed {}", removed.join(",")));
        }
        // private-shm-scenario — runs in a private /dev/shm; see the test below.
        "private-shm-scenario" => private_shm_scenario(),
        // fork-and-exit:<queue>:<release file> — creates the queue, forks a child that
        // keeps the inherited mapping (touching nothing) until the file exists (at most
        // 60 s), says "forked <pid>" and exits without dropping the queue.
        "fork-and-exit" => {
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
        other => panic!("unknown role {other}"),
    }
}

/// Seen from this PID namespace, a queue whose creator lives in another one (and whose pid,
/// read here, names another process or none) is live: not replaced, not stale.
#[test]
fn a_live_creator_in_another_pid_namespace_is_not_stale() {
    if !pid_namespaces_work() {
        return skip(
            "a_live_creator_in_another_pid_namespace_is_not_stale",
            "needs root and `unshare --pid --fork --mount-proc`",
        );
    }
    let name = uniq("ns-live");
    let _rm = RemoveOnDrop(name.clone());
    let release = release_file("ns-live");
    let mut creator = start_creator(Some(NEW_PID_NS), &name, &release);
    assert_live_and_kept(&name);
    // Still the creator's queue, with its message: the next open by name reaches it.
    let q = RawQueue::open(&name).unwrap();
    assert_eq!(q.get_vec().unwrap(), b"live");
    drop(q);
    drop(release);
    assert!(wait_exit(&mut creator, LIMIT).success());
    // The creator's drop removed its name.
    assert!(!shm_path(&name).exists());
}

/// `remove_stale` in either PID namespace keeps the live queues of the other and removes a
/// queue whose every process died. Runs in a child with a private `/dev/shm`.
#[test]
fn remove_stale_across_pid_namespaces_keeps_live_queues() {
    if !pid_namespaces_work() || !private_shm_works() {
        return skip(
            "remove_stale_across_pid_namespaces_keeps_live_queues",
            "needs root, `unshare --pid --fork --mount-proc` and `unshare --mount` with tmpfs",
        );
    }
    let mut child = spawn_role_under(PRIVATE_SHM, ENTRY, "private-shm-scenario", &[]);
    let rx = line_channel(&mut child);
    let line = expect_line(&rx, Duration::from_secs(120), "scenario");
    assert_eq!(line, "ok");
    assert!(wait_exit(&mut child, LIMIT).success());
}

fn private_shm_scenario() {
    // Make sure this really is a private /dev/shm before any global remove_stale: the
    // wrapper mounted a fresh tmpfs, so it starts empty.
    assert!(
        std::fs::read_dir("/dev/shm").unwrap().next().is_none(),
        "/dev/shm is not a fresh private mount"
    );
    std::env::set_var("SHMQ_TEST_PRIVATE_SHM", "1");
    let remove_stale_in_new_pid_ns = || -> Vec<String> {
        let mut c = spawn_role_under(NEW_PID_NS, ENTRY, "remove-stale", &[]);
        let rx = line_channel(&mut c);
        let line = expect_line(&rx, LIMIT, "remove-stale");
        assert!(wait_exit(&mut c, LIMIT).success());
        let list = line.strip_prefix("removed ").expect("removed line");
        list.split(',')
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect()
    };

    // A: created in another PID namespace, alive.
    let a = uniq("ps-a");
    let release = release_file("ps-a");
    let mut creator = start_creator(Some(NEW_PID_NS), &a, &release);
    // B: created here, alive.
    let b = uniq("ps-b");
    let qb = RawQueue::create(&b, 4096).unwrap();
    qb.put(b"mine").unwrap();
    // C: every process that mapped it died.
    let c = uniq("ps-c");
    let mut child = spawn_role(ENTRY, "create-and-exit", std::slice::from_ref(&c));
    assert!(wait_exit(&mut child, LIMIT).success());
    assert!(shm_path(&c).exists());
    // D: its creator died, but a reader (here) still maps it.
    let d = uniq("ps-d");
    let mut child = spawn_role(ENTRY, "create-and-exit", std::slice::from_ref(&d));
    assert!(wait_exit(&mut child, LIMIT).success());
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

    drop(release);
    assert!(wait_exit(&mut creator, LIMIT).success());
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
    let mut child = spawn_role(ENTRY, "create-and-exit", std::slice::from_ref(&name));
    assert!(wait_exit(&mut child, LIMIT).success());
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
    let release = release_file("fork-kept");
    let mut child = spawn_role(
        ENTRY,
        "fork-and-exit",
        &[name.clone(), release.0.display().to_string()],
    );
    let rx = line_channel(&mut child);
    let line = expect_line(&rx, LIMIT, "fork-and-exit");
    assert!(line.starts_with("forked "), "{line}");
    assert!(wait_exit(&mut child, LIMIT).success());
    // The creator is dead; its fork child maps the queue.
    assert_live_and_kept(&name);
    assert!(!shmq::inspect(&name).unwrap().stats().unwrap().creator_alive);
    drop(release);
    assert!(
        eventually(LIMIT, || shmq::inspect(&name).is_ok_and(|i| i.is_stale())),
        "stale once the fork child exited"
    );
    let q = RawQueue::create_with(name.as_str(), &Options::new().replace_stale(true)).unwrap();
    assert_eq!(q.len(), 0, "a fresh queue");
}
