//! Names and objects in `/dev/shm` (issue 9, sections 3 and 5, and the capacity word of
//! section 4): a name belongs to the object that holds it, foreign objects never hang or get
//! removed, a truncated segment is refused at open, layout words are read once, and errors
//! about paths name the path.

mod common;

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{bounded, child, say, segment, stale_lock, uniq, RemovePath};
use shmq::internal::{shm_path, RING_OFFSET};
use shmq::{Error, Options, Queue, QueueState, RawQueue};

/// How long any call below may take before the test counts it as hung (generous: a busy
/// 2-core machine; `Segment::open` of an object that never initialises waits 2 s).
const HANG: Duration = Duration::from_secs(30);

/// How long a child process may take.
const LIMIT: Duration = Duration::from_secs(60);

fn threads_of_this_process() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

common::child_roles!(fork_drop, create_forget);

/// fork_drop:<name> — create, fork, the forked child drops its copy and _exits.
fn fork_drop(args: &[String]) {
    let name = &args[0];
    // The premise of forking and then running Rust code in the child: no other test runs
    // in this process (--test-threads=1). libtest still runs the test on a thread of its
    // own while the main thread waits for it (blocked in a join, holding no lock); the
    // forked child only drops the handle (munmap, close, free: glibc resets malloc's locks
    // in a forked child) and _exits.
    assert!(
        threads_of_this_process() <= 2,
        "only libtest's main thread and this one"
    );
    let q: Queue<u32> = Queue::create(name, 4096).unwrap();
    q.put(&7).unwrap();
    // SAFETY: no other thread of this process runs code that could hold a lock the child
    // needs (see above); the child only drops the handle and _exits.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork failed");
    if pid == 0 {
        drop(q);
        // SAFETY: _exit ends the child at once, without running atexit handlers or the
        // parent's test harness teardown.
        unsafe { libc::_exit(0) };
    }
    let mut status = 0;
    // SAFETY: waiting for our own child with a valid status pointer.
    let r = unsafe { libc::waitpid(pid, &mut status, 0) };
    assert_eq!(r, pid);
    assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0);
    let other = Queue::<u32>::open(name);
    say(format!(
        "after-child-drop open={} len={}",
        other.is_ok(),
        other.as_ref().map(|o| o.len()).unwrap_or(0)
    ));
    // The creator's handle still works after its forked copy went.
    q.put(&8).unwrap();
    let other = other.unwrap();
    say(format!(
        "got {:?}",
        (
            other.get_timeout(Duration::from_secs(10)).unwrap(),
            other.get_timeout(Duration::from_secs(10)).unwrap()
        )
    ));
    drop(other);
    drop(q);
    say(format!(
        "after-creator-drop notfound={}",
        matches!(RawQueue::open(name), Err(Error::NotFound(_)))
    ));
}

/// create_forget:<name> — create a queue and exit without dropping it (stale).
fn create_forget(args: &[String]) {
    let q = RawQueue::create(&args[0], 4096).unwrap();
    std::mem::forget(q);
}

// ---------------------------------------------------------------------------------------
// 3. A name belongs to the object that holds it

#[test]
fn a_forked_child_dropping_its_copy_keeps_the_name() {
    let name = uniq("fork");
    let _c = RemovePath(shm_path(&name));
    let got = child!(fork_drop).arg(&name).run(LIMIT);
    assert_eq!(
        got,
        [
            "after-child-drop open=true len=1",
            "got (7, 8)",
            "after-creator-drop notfound=true"
        ],
        "the name survives the forked child's drop and goes with the creator's"
    );
    assert!(!shm_path(&name).exists());
}

#[test]
fn dropping_an_old_creator_does_not_remove_a_new_queue_of_the_same_name() {
    let name = uniq("reuse");
    let a = RawQueue::create(&name, 4096).unwrap();
    shmq::remove(&name).unwrap();
    let b = RawQueue::create(&name, 4096).unwrap();
    b.put(b"b's").unwrap();
    drop(a);
    let o = RawQueue::open(&name).expect("b's name survives a's drop");
    assert_eq!(o.get_vec().unwrap(), b"b's");
    drop(o);
    drop(b);
    assert!(matches!(RawQueue::open(&name), Err(Error::NotFound(_))));
}

#[test]
fn dropping_an_old_creator_does_not_remove_a_new_file_at_the_same_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q.shmq");
    let a = RawQueue::create_at(&path, 4096).unwrap();
    std::fs::remove_file(&path).unwrap();
    let b = RawQueue::create_at(&path, 4096).unwrap();
    drop(a);
    assert!(path.exists(), "b's file survives a's drop");
    drop(b);
    assert!(!path.exists());
}

#[test]
fn remove_if_unchanged_and_remove_stale_leave_a_newer_object_alone() {
    let _g = stale_lock();
    let name = uniq("stale-then-new");
    let _c = RemovePath(shm_path(&name));
    child!(create_forget).arg(&name).run(LIMIT);
    let info = shmq::inspect(&name).unwrap();
    assert!(info.is_stale(), "{info:?}");
    // The stale object is replaced by a live queue between the scan and the removal.
    shmq::remove(&name).unwrap();
    let live = RawQueue::create(&name, 4096).unwrap();
    assert!(
        !info.remove_if_unchanged().unwrap(),
        "the new object is not removed"
    );
    assert!(RawQueue::open(&name).is_ok());
    assert!(!shmq::remove_stale().unwrap().contains(&name));
    assert!(RawQueue::open(&name).is_ok());
    drop(live);
    assert!(matches!(
        info.remove_if_unchanged(),
        Err(Error::NotFound(_))
    ));
}

#[test]
fn remove_stale_and_replace_stale_remove_a_stale_queue() {
    // The positive control for the test above: the same object is removed.
    let _g = stale_lock();
    let name = uniq("stale");
    let _c = RemovePath(shm_path(&name));
    child!(create_forget).arg(&name).run(LIMIT);
    assert!(shmq::inspect(&name).unwrap().remove_if_unchanged().unwrap());
    assert!(!shm_path(&name).exists());

    child!(create_forget).arg(&name).run(LIMIT);
    let q = RawQueue::create_with(
        name.as_str(),
        &Options::new().replace_stale(true).capacity(8192),
    )
    .unwrap();
    assert_eq!(q.capacity(), 8192);
    drop(q);
    assert!(!shm_path(&name).exists());
}

// ---------------------------------------------------------------------------------------
// 5. Objects in /dev/shm that are not ours

fn mkfifo(path: &Path) {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0, "mkfifo");
}

/// Every library entry point that looks at names, on a foreign object at `name`: each
/// returns, none removes it, and the per-object ones say `Incompatible` with `kind`.
fn check_foreign(name: &str, kind: &'static str) {
    let path = shm_path(name);
    let n = name.to_string();
    let r = bounded(HANG, "RawQueue::open", move || RawQueue::open(&n));
    match r {
        Err(Error::Incompatible { reason, .. }) => assert!(reason.contains(kind), "{reason}"),
        other => panic!("open of {kind}: {other:?}"),
    }
    let n = name.to_string();
    let r = bounded(HANG, "inspect", move || shmq::inspect(&n));
    match r {
        Err(Error::Incompatible { reason, .. }) => assert!(reason.contains(kind), "{reason}"),
        other => panic!("inspect of {kind}: {other:?}"),
    }
    let all = bounded(HANG, "list", shmq::list).unwrap();
    let info = all.iter().find(|i| i.name == name).expect("listed");
    match &info.state {
        QueueState::Unreadable(why) => assert!(why.contains(kind), "{why}"),
        other => panic!("list state of {kind}: {other:?}"),
    }
    assert!(!info.is_stale());
    assert!(!info.remove_if_unchanged().unwrap());
    let removed = {
        let _g = stale_lock();
        bounded(HANG, "remove_stale", shmq::remove_stale).unwrap()
    };
    assert!(!removed.contains(&name.to_string()));
    assert!(
        std::fs::symlink_metadata(&path).is_ok(),
        "{kind} left alone"
    );
    let n = name.to_string();
    let r = bounded(HANG, "create with replace_stale", move || {
        RawQueue::create_with(
            n.as_str(),
            &Options::new().replace_stale(true).capacity(4096),
        )
    });
    assert!(
        matches!(r, Err(Error::AlreadyExists { stale: false, .. })),
        "{r:?}"
    );
    assert!(
        std::fs::symlink_metadata(&path).is_ok(),
        "{kind} left alone"
    );
}

#[test]
fn a_fifo_in_dev_shm_never_hangs_and_is_never_removed_as_stale() {
    let name = uniq("fifo");
    let path = shm_path(&name);
    let _c = RemovePath(path.clone());
    mkfifo(&path);
    check_foreign(&name, "a FIFO");
    // An explicit remove still works, and does not hang either.
    let n = name.clone();
    bounded(HANG, "remove", move || shmq::remove(&n)).unwrap();
    assert!(std::fs::symlink_metadata(&path).is_err());
}

#[test]
fn a_symlink_in_dev_shm_is_not_followed() {
    // The dangerous case: a link to a real queue (it could as well point at a victim's file).
    let target = uniq("link-target");
    let q = RawQueue::create(&target, 4096).unwrap();
    let name = uniq("link");
    let path = shm_path(&name);
    let _c = RemovePath(path.clone());
    std::os::unix::fs::symlink(shm_path(&target), &path).unwrap();
    check_foreign(&name, "a symbolic link");
    bounded(HANG, "remove", {
        let n = name.clone();
        move || shmq::remove(&n)
    })
    .unwrap();
    assert!(std::fs::symlink_metadata(&path).is_err());
    assert!(
        shm_path(&target).exists(),
        "removing the link leaves its target"
    );
    q.put(b"fine").unwrap();
}

#[test]
fn a_directory_in_dev_shm_is_refused() {
    let name = uniq("dir");
    let path = shm_path(&name);
    let _c = RemovePath(path.clone());
    std::fs::create_dir(&path).unwrap();
    check_foreign(&name, "a directory");
    // `remove` unlinks names; a directory is `Incompatible` (not a hang, not EISDIR) and
    // stays.
    let n = name.clone();
    let r = bounded(HANG, "remove", move || shmq::remove(&n));
    assert!(
        matches!(&r, Err(Error::Incompatible { reason, .. }) if reason.contains("is a directory")),
        "{r:?}"
    );
    assert!(path.is_dir());
}

#[test]
fn a_socket_in_dev_shm_is_refused() {
    let name = uniq("sock");
    let path = shm_path(&name);
    let _c = RemovePath(path.clone());
    let _l = std::os::unix::net::UnixListener::bind(&path).unwrap();
    check_foreign(&name, "a socket");
}

#[test]
fn a_fifo_at_a_path_is_refused_by_open_at_and_create_at() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q.fifo");
    mkfifo(&path);
    let p = path.clone();
    let r = bounded(HANG, "open_at", move || RawQueue::open_at(&p));
    assert!(
        matches!(&r, Err(Error::Incompatible { reason, .. }) if reason.contains("a FIFO")),
        "{r:?}"
    );
    let p = path.clone();
    let r = bounded(HANG, "create_at", move || RawQueue::create_at(&p, 4096));
    assert!(matches!(r, Err(Error::AlreadyExists { .. })), "{r:?}");
}

#[test]
fn a_truncated_segment_is_incompatible_at_open() {
    let name = uniq("trunc");
    let q = RawQueue::create(&name, 4096).unwrap();
    let full = RING_OFFSET + 4096;
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(shm_path(&name))
        .unwrap();
    // Header kept, ring gone.
    f.set_len(RING_OFFSET).unwrap();
    let n = name.clone();
    let r = bounded(HANG, "open of a truncated segment", move || {
        RawQueue::open(&n)
    });
    assert!(
        matches!(&r, Err(Error::Incompatible { reason, .. }) if reason.contains("truncated")),
        "{r:?}"
    );
    // Everything gone: looks like an object whose creator never sized it (waits 2 s).
    f.set_len(0).unwrap();
    let n = name.clone();
    let r = bounded(HANG, "open of an empty segment", move || RawQueue::open(&n));
    assert!(matches!(r, Err(Error::Incompatible { .. })), "{r:?}");
    // Restore the size before the creator's handle goes (its mapping would fault).
    f.set_len(full).unwrap();
    drop(q);
    assert!(!shm_path(&name).exists());
}

// ---------------------------------------------------------------------------------------
// 4. Layout words read once

#[test]
fn a_toggled_capacity_word_never_gives_a_handle_a_wrong_capacity() {
    let name = uniq("capword");
    let q = RawQueue::create(&name, 4096).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let hostile = {
        let seg = segment(&name);
        let stop = stop.clone();
        std::thread::spawn(move || {
            let cap = &seg.header().id.capacity;
            while !stop.load(Ordering::Relaxed) {
                cap.store(0, Ordering::Relaxed);
                std::hint::spin_loop();
                cap.store(4096, Ordering::Relaxed);
                std::hint::spin_loop();
            }
        })
    };
    let (mut ok, mut refused) = (0, 0);
    for _ in 0..500 {
        match RawQueue::open(&name) {
            Ok(h) => {
                assert_eq!(h.capacity(), 4096);
                assert_eq!(h.max_message(), 4088);
                ok += 1;
            }
            Err(Error::Incompatible { .. }) => refused += 1,
            Err(e) => panic!("{e:?}"),
        }
    }
    stop.store(true, Ordering::Relaxed);
    hostile.join().unwrap();
    eprintln!("{ok} opens accepted, {refused} refused");
    assert_eq!(q.capacity(), 4096);
    // Deterministically: the word changes between open's validation and the ring's
    // construction (the window the loop above aims at).
    let seg = segment(&name);
    seg.header().id.capacity.store(0, Ordering::Relaxed);
    assert_eq!(seg.capacity(), 4096, "the private copy");
    assert_eq!(seg.ring().1, 4096);
    let ring = shmq::internal::Ring::new(seg).unwrap();
    assert_eq!(ring.capacity(), 4096);
    assert_eq!(ring.max_message(), 4088);
    ring.header().id.capacity.store(4096, Ordering::Relaxed);
}

// ---------------------------------------------------------------------------------------
// Errors name paths

#[test]
fn errors_about_paths_name_the_path() {
    let e = RawQueue::create_at("/nonexistent-dir/q", 4096).unwrap_err();
    let msg = e.to_string();
    assert!(
        matches!(&e, Error::Io(io) if io.kind() == std::io::ErrorKind::NotFound),
        "{e:?}"
    );
    assert!(
        msg.contains("/nonexistent-dir/q") && msg.contains("create"),
        "{msg}"
    );
    // The io error is printed once, whether the error is shown alone or as a chain.
    assert_eq!(msg.matches("No such file").count(), 1, "{msg}");
    assert!(std::error::Error::source(&e).is_none());

    let e = RawQueue::open_at("/nonexistent-dir/q").unwrap_err();
    assert!(matches!(e, Error::NotFound(_)), "{e:?}");
    assert_eq!(
        e.to_string(),
        "no shmq queue at /nonexistent-dir/q (no such file; check the path)"
    );
    let e = RawQueue::open_at("no-such-relative-file.shmq").unwrap_err();
    assert!(
        e.to_string().contains("at ./no-such-relative-file.shmq"),
        "{e}"
    );
    let e = RawQueue::open("no-such-queue-name").unwrap_err();
    assert!(
        e.to_string().contains("named \"no-such-queue-name\""),
        "{e}"
    );

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q.shmq");
    let _q = RawQueue::create_at(&path, 4096).unwrap();
    let e = RawQueue::create_at(&path, 4096).unwrap_err();
    assert!(
        e.to_string()
            .contains(&format!("a queue at {} exists", path.display())),
        "{e}"
    );
}
