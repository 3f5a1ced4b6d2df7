//! Hardening tests (issue 5, items 5–7): stale segments, resource and input errors,
//! corrupted named segments, permissions.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{bounded, child, stale_lock, uniq, write_at, RemoveOnDrop};
use shmq::internal::{shm_path, RING_OFFSET};
use shmq::{Error, Options, Queue, RawQueue};

/// How long a child process may take.
const LIMIT: Duration = Duration::from_secs(60);

common::child_roles!(create_and_exit, create_persistent);

/// create_and_exit:<name> — create a queue, put one message, and die without dropping the
/// handle (as a crash would): a stale segment.
fn create_and_exit(args: &[String]) {
    let q = RawQueue::create(&args[0], 4096).unwrap();
    q.put(b"left behind").unwrap();
    std::process::exit(0);
}

/// create_persistent:<name> — create a persistent queue (keep_on_drop) and exit normally:
/// not stale.
fn create_persistent(args: &[String]) {
    let q = RawQueue::create_with(
        args[0].as_str(),
        &Options::new().capacity(4096).keep_on_drop(true),
    )
    .unwrap();
    q.put(b"kept").unwrap();
}

fn mode_of(path: &std::path::Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

// ---------------------------------------------------------------------------------------
// 5. Stale segments

#[test]
fn create_over_a_dead_creators_segment_is_stale_with_cleanup_hint() {
    let _serial = stale_lock();
    let name = uniq("stale");
    let _c = RemoveOnDrop(name.clone());
    child!(create_and_exit).arg(&name).run(LIMIT);
    assert!(shm_path(&name).exists());
    let e = RawQueue::create(&name, 4096).unwrap_err();
    assert!(
        matches!(e, Error::AlreadyExists { stale: true, .. }),
        "{e:?}"
    );
    let msg = e.to_string();
    assert!(
        msg.contains("stale") && msg.contains("replace_stale") && msg.contains("shmq::remove"),
        "message should say how to clean up: {msg}"
    );
    // The stale segment itself is intact and readable.
    let q = RawQueue::open(&name).unwrap();
    assert!(!q.stats().creator_alive);
    assert_eq!(q.get_vec().unwrap(), b"left behind");
}

#[test]
fn persistent_segment_of_a_dead_creator_is_not_stale() {
    let _serial = stale_lock();
    let name = uniq("persist");
    let _c = RemoveOnDrop(name.clone());
    child!(create_persistent).arg(&name).run(LIMIT);
    let e = RawQueue::create(&name, 4096).unwrap_err();
    assert!(
        matches!(e, Error::AlreadyExists { stale: false, .. }),
        "{e:?}"
    );
    let e = RawQueue::create_with(name.as_str(), &Options::new().replace_stale(true)).unwrap_err();
    assert!(matches!(e, Error::AlreadyExists { .. }), "{e:?}");
    assert!(!shmq::remove_stale().unwrap().contains(&name));
    assert_eq!(RawQueue::open(&name).unwrap().get_vec().unwrap(), b"kept");
}

#[test]
fn create_over_a_live_creators_segment_is_not_stale_and_never_replaced() {
    let name = uniq("live");
    let q = RawQueue::create(&name, 4096).unwrap();
    q.put(b"mine").unwrap();
    let e = RawQueue::create(&name, 4096).unwrap_err();
    assert!(
        matches!(e, Error::AlreadyExists { stale: false, .. }),
        "{e:?}"
    );
    assert!(e.to_string().contains("open it instead"), "{e}");
    let e = RawQueue::create_with(name.as_str(), &Options::new().replace_stale(true)).unwrap_err();
    assert!(
        matches!(e, Error::AlreadyExists { stale: false, .. }),
        "{e:?}"
    );
    assert_eq!(q.len(), 1, "a failed create must not touch the live queue");
    assert_eq!(RawQueue::open(&name).unwrap().get_vec().unwrap(), b"mine");
}

#[test]
fn replace_stale_replaces_a_dead_creators_segment() {
    let _serial = stale_lock();
    let name = uniq("replace");
    let _c = RemoveOnDrop(name.clone());
    child!(create_and_exit).arg(&name).run(LIMIT);
    let q = RawQueue::create_with(
        name.as_str(),
        &Options::new().capacity(8192).replace_stale(true),
    )
    .unwrap();
    assert_eq!(q.capacity(), 8192);
    assert_eq!(q.len(), 0, "a fresh queue, not the stale one");
    assert!(q.stats().creator_alive);
    assert_eq!(q.stats().creator_pid, std::process::id());
    q.put(b"new").unwrap();
    assert_eq!(RawQueue::open(&name).unwrap().get_vec().unwrap(), b"new");
}

#[test]
fn remove_stale_removes_only_stale_unused_segments() {
    let _serial = stale_lock();
    let stale = uniq("rs-stale");
    let stale_mapped = uniq("rs-mapped");
    let live = uniq("rs-live");
    let _c = (
        RemoveOnDrop(stale.clone()),
        RemoveOnDrop(stale_mapped.clone()),
        RemoveOnDrop(live.clone()),
    );
    child!(create_and_exit).arg(&stale).run(LIMIT);
    child!(create_and_exit).arg(&stale_mapped).run(LIMIT);
    let _live = RawQueue::create(&live, 4096).unwrap();
    let attached = RawQueue::open(&stale_mapped).unwrap();
    let removed = shmq::remove_stale().unwrap();
    assert!(removed.contains(&stale), "{removed:?}");
    assert!(!removed.contains(&stale_mapped), "{removed:?}");
    assert!(!removed.contains(&live), "{removed:?}");
    assert!(!shm_path(&stale).exists());
    assert!(shm_path(&stale_mapped).exists());
    assert!(shm_path(&live).exists());
    // Once nobody maps it any more, it goes too.
    drop(attached);
    let removed = shmq::remove_stale().unwrap();
    assert!(removed.contains(&stale_mapped), "{removed:?}");
    assert!(!shm_path(&stale_mapped).exists());
    assert!(shm_path(&live).exists());
}

#[test]
fn segment_abandoned_during_creation_is_stale() {
    let _serial = stale_lock();
    // A creator killed between shm_open and publishing the header leaves a zero-length (or
    // uninitialised) object that nobody maps.
    let name = uniq("abandoned");
    let _c = RemoveOnDrop(name.clone());
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(shm_path(&name))
        .unwrap();
    let e = bounded(Duration::from_secs(30), "open of an abandoned object", {
        let name = name.clone();
        move || RawQueue::open(&name).unwrap_err()
    });
    assert!(matches!(e, Error::Incompatible { .. }), "{e:?}");
    // Fresh: a creator may still be at work, so it is not stale yet.
    let e = RawQueue::create(&name, 4096).unwrap_err();
    assert!(
        matches!(e, Error::AlreadyExists { stale: false, .. }),
        "{e:?}"
    );
    // Old enough that no creator can still be initialising it: stale.
    let old = std::time::SystemTime::now() - Duration::from_secs(60);
    std::fs::File::options()
        .write(true)
        .open(shm_path(&name))
        .unwrap()
        .set_modified(old)
        .unwrap();
    let e = RawQueue::create(&name, 4096).unwrap_err();
    assert!(
        matches!(e, Error::AlreadyExists { stale: true, .. }),
        "{e:?}"
    );
    let q = RawQueue::create_with(name.as_str(), &Options::new().replace_stale(true)).unwrap();
    q.put(b"ok").unwrap();
    assert_eq!(q.get_vec().unwrap(), b"ok");
}

// ---------------------------------------------------------------------------------------
// 6. Resource and input errors

#[test]
fn capacity_out_of_range_is_invalid_argument() {
    for cap in [0usize, 1, 63, usize::MAX, (1usize << 40) + 1] {
        let name = uniq("cap");
        let e = RawQueue::create(&name, cap).unwrap_err();
        assert!(matches!(e, Error::InvalidArgument(_)), "{cap}: {e:?}");
        assert!(e.to_string().contains("capacity"), "{e}");
        assert!(!shm_path(&name).exists(), "nothing left behind");
    }
}

#[test]
fn capacity_larger_than_dev_shm_fails_cleanly_without_sigbus() {
    // More than the whole tmpfs: the kernel refuses the reservation up front (ENOSPC)
    // without allocating anything, so this is safe on any machine.
    // SAFETY: statvfs on a valid NUL-terminated path into a zeroed struct.
    let total = unsafe {
        let mut st: libc::statvfs = std::mem::zeroed();
        assert_eq!(libc::statvfs(c"/dev/shm".as_ptr(), &mut st), 0);
        st.f_blocks * st.f_frsize
    };
    let cap = (total + (1 << 30)).div_ceil(64) * 64;
    if cap > (1u64 << 40) {
        eprintln!("skipped: /dev/shm is larger than the largest capacity");
        return;
    }
    let name = uniq("enospc");
    let e = RawQueue::create(&name, cap as usize).unwrap_err();
    match &e {
        Error::Io(io) => assert!(
            io.kind() == std::io::ErrorKind::StorageFull && io.to_string().contains("No space"),
            "{e}"
        ),
        other => panic!("expected an I/O error, got {other:?}"),
    }
    assert!(e.to_string().contains("/dev/shm"), "says what to do: {e}");
    assert!(!shm_path(&name).exists(), "the half-made object is removed");
    // The name is usable afterwards.
    let q = RawQueue::create(&name, 4096).unwrap();
    q.put(b"x").unwrap();
}

/// A file-backed queue on a tiny tmpfs (needs root to mount; skipped otherwise).
#[test]
fn file_backed_queue_on_a_full_tmpfs_is_an_error_not_sigbus() {
    let dir = tempfile::tempdir().unwrap();
    let target = dir.path().to_str().unwrap().to_string();
    let ok = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=256k", "tmpfs", &target])
        .stderr(std::process::Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !ok {
        eprintln!("skipped: cannot mount a tmpfs here");
        return;
    }
    struct Unmount(String);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg(&self.0).status();
        }
    }
    let _u = Unmount(target.clone());
    let path = dir.path().join("q.shmq");
    let e = RawQueue::create_at(&path, 1 << 20).unwrap_err();
    assert!(
        matches!(&e, Error::Io(io) if io.kind() == std::io::ErrorKind::StorageFull),
        "{e:?}"
    );
    assert!(!path.exists(), "the half-made file is removed");
    assert!(e.to_string().contains("file system of"), "{e}");
    // What fits works, and is fully usable (no SIGBUS on touching every page).
    let q = RawQueue::create_at(&path, 64 << 10).unwrap();
    let big = vec![7u8; q.max_message()];
    q.put(&big).unwrap();
    assert_eq!(q.get_vec().unwrap(), big);
    // A second queue that no longer fits fails cleanly and leaves the first intact.
    let e = RawQueue::create_at(dir.path().join("q2.shmq"), 240 << 10).unwrap_err();
    assert!(matches!(e, Error::Io(_)), "{e:?}");
    q.put(b"still fine").unwrap();
    assert_eq!(q.get_vec().unwrap(), b"still fine");
    drop(q);
}

#[test]
fn long_and_bad_names_are_invalid_name() {
    let ok = format!("{}-{}", std::process::id(), "n".repeat(200));
    let ok = &ok[..200];
    let q = RawQueue::create(ok, 4096).unwrap();
    q.put(b"long name").unwrap();
    assert_eq!(RawQueue::open(ok).unwrap().get_vec().unwrap(), b"long name");
    for bad in [
        "n".repeat(201),
        "x".repeat(4096),
        String::new(),
        "a/b".into(),
        "../etc".into(),
        ".hidden".into(),
        "nul\0byte".into(),
    ] {
        for e in [
            RawQueue::create(&bad, 4096).unwrap_err(),
            RawQueue::open(&bad).unwrap_err(),
        ] {
            assert!(matches!(e, Error::InvalidName { .. }), "{bad:?}: {e:?}");
        }
        assert!(matches!(shmq::remove(&bad), Err(Error::InvalidName { .. })));
    }
}

#[test]
fn wrong_message_type_on_open_is_incompatible_and_harmless() {
    let name = uniq("type");
    let q: Queue<(String, u64)> = Queue::create(&name, 4096).unwrap();
    q.put(&("a".into(), 1)).unwrap();
    let e = Queue::<Vec<u32>>::open(&name).unwrap_err();
    assert!(matches!(e, Error::Incompatible { .. }), "{e:?}");
    assert!(e.to_string().contains("check_type"), "{e}");
    let e = shmq::PodQueue::<u64>::open(&name).unwrap_err();
    assert!(matches!(e, Error::Incompatible { .. }), "{e:?}");
    // Nothing changed for the queue's users.
    assert_eq!(q.len(), 1);
    let other: Queue<(String, u64)> = Queue::open(&name).unwrap();
    assert_eq!(other.get().unwrap(), ("a".to_string(), 1));
    // A typed queue on a raw queue's segment is allowed (raw records no type).
    let raw = uniq("rawtype");
    let r = RawQueue::create(&raw, 4096).unwrap();
    r.put(&postcard::to_allocvec(&7u64).unwrap()).unwrap();
    let t: Queue<u64> = Queue::open(&raw).unwrap();
    assert_eq!(t.get().unwrap(), 7);
}

// ---------------------------------------------------------------------------------------
// Corrupted named segments (garbage written into /dev/shm/shmq.<name> with std::fs)

fn offsets() -> (u64, u64, u64, u64) {
    use shmq::internal::Header;
    let prod = std::mem::offset_of!(Header, prod) as u64;
    let cons = std::mem::offset_of!(Header, cons) as u64;
    // ProducerSide: lock u32, data_seq u32, tail u64; ConsumerSide: lock, space_seq, head.
    (prod, prod + 8, cons, cons + 8)
}

#[test]
fn corrupted_header_fields_are_incompatible() {
    // (offset, bytes) of identity fields: magic, version, header size, ring offset,
    // capacity (too large for the object, not a multiple of 64, zero).
    let cases: Vec<(u64, Vec<u8>)> = vec![
        (0, b"NOTSHMQ!".to_vec()),
        (8, 99u32.to_le_bytes().to_vec()),
        (12, 7u32.to_le_bytes().to_vec()),
        (16, 8192u64.to_le_bytes().to_vec()),
        (24, (1u64 << 30).to_le_bytes().to_vec()),
        (24, 4100u64.to_le_bytes().to_vec()),
        (24, 0u64.to_le_bytes().to_vec()),
    ];
    for (off, bytes) in cases {
        let name = uniq("hdr");
        let q = RawQueue::create(&name, 4096).unwrap();
        q.put(b"before").unwrap();
        write_at(&name, off, &bytes);
        let e = bounded(Duration::from_secs(10), "open of a corrupted header", {
            let name = name.clone();
            move || RawQueue::open(&name).unwrap_err()
        });
        assert!(
            matches!(e, Error::Incompatible { .. }),
            "offset {off}: {e:?}"
        );
        // The creator's handle keeps its validated geometry: no crash, just works or errs.
        let _ = q.try_put(b"after");
        let _ = q.stats();
    }
}

#[test]
fn whole_header_of_garbage_is_incompatible() {
    let name = uniq("garbage");
    let _q = RawQueue::create_with(name.as_str(), &Options::new().capacity(4096)).unwrap();
    let mut x = 0x1234_5678_9abc_def0u64;
    let garbage: Vec<u8> = (0..RING_OFFSET)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    write_at(&name, 0, &garbage);
    let e = bounded(
        Duration::from_secs(10),
        "open of a garbage header",
        move || RawQueue::open(&name).unwrap_err(),
    );
    assert!(matches!(e, Error::Incompatible { .. }), "{e:?}");
}

#[test]
fn truncated_object_is_incompatible_after_a_bounded_wait() {
    let name = uniq("trunc");
    let _c = RemoveOnDrop(name.clone());
    let q = RawQueue::create_with(name.as_str(), &Options::new().keep_on_drop(true)).unwrap();
    drop(q);
    std::fs::OpenOptions::new()
        .write(true)
        .open(shm_path(&name))
        .unwrap()
        .set_len(100)
        .unwrap();
    let t = Instant::now();
    let e = bounded(Duration::from_secs(30), "open of a truncated object", {
        let name = name.clone();
        move || RawQueue::open(&name).unwrap_err()
    });
    assert!(matches!(e, Error::Incompatible { .. }), "{e:?}");
    assert!(t.elapsed() < Duration::from_secs(20));
}

#[test]
fn corrupted_ring_indices_are_corrupt_not_a_crash_or_hang() {
    let (_, tail_off, _, head_off) = offsets();
    let cases: Vec<(u64, u64)> = vec![
        (tail_off, 1 << 40),  // tail far ahead of head
        (tail_off, 3),        // misaligned tail
        (head_off, 24),       // head ahead of tail
        (head_off, 1 << 50),  // head far ahead of tail
        (tail_off, 4096 + 8), // used > capacity
    ];
    for (off, val) in cases {
        let name = uniq("idx");
        let q = RawQueue::create(&name, 4096).unwrap();
        q.put(b"m").unwrap();
        write_at(&name, off, &val.to_le_bytes());
        let r = RawQueue::open(&name).unwrap();
        let (g, p) = bounded(
            Duration::from_secs(30),
            "get and put on corrupt indices",
            move || {
                let mut buf = Vec::new();
                let g = r.get_into_timeout(&mut buf, Duration::from_millis(200));
                let p = r.put_timeout(b"x", Duration::from_millis(200));
                (g.map(|_| ()), p)
            },
        );
        assert!(
            matches!(g, Err(Error::Corrupt(_))),
            "get, {off}={val}: {g:?}"
        );
        assert!(
            matches!(p, Err(Error::Corrupt(_))),
            "put, {off}={val}: {p:?}"
        );
        let _ = q.stats();
        let _ = q.len();
    }
}

#[test]
fn corrupted_frame_is_corrupt() {
    let name = uniq("frame");
    let q = RawQueue::create(&name, 4096).unwrap();
    q.put(b"hello").unwrap();
    // Frame header: length 4000 (past tail), then a bad tag.
    write_at(&name, RING_OFFSET, &4000u32.to_le_bytes());
    let mut buf = Vec::new();
    assert!(matches!(q.try_get_into(&mut buf), Err(Error::Corrupt(_))));
    write_at(&name, RING_OFFSET, &5u32.to_le_bytes());
    write_at(&name, RING_OFFSET + 4, b"EVIL");
    assert!(matches!(q.try_get_into(&mut buf), Err(Error::Corrupt(_))));
}

#[test]
fn garbage_lock_words_do_not_hang_timed_calls() {
    let (prod_lock, _, cons_lock, _) = offsets();
    let name = uniq("lockw");
    let q = RawQueue::create(&name, 4096).unwrap();
    q.put(b"m").unwrap();
    // A live holder (another thread holding both locks through the real lock): timed calls
    // must time out, not hang and not take the lock.
    let holder = q.clone();
    let (held_tx, held_rx) = std::sync::mpsc::channel();
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    let t = std::thread::spawn(move || {
        let _p = holder.hold_lock_for_test(true).unwrap();
        let _c = holder.hold_lock_for_test(false).unwrap();
        held_tx.send(()).unwrap();
        let _ = done_rx.recv();
    });
    held_rx.recv().unwrap();
    let q2 = q.clone();
    let (p, g) = bounded(
        Duration::from_secs(30),
        "timed calls against a live holder",
        move || {
            let p = q2.put_timeout(b"x", Duration::from_millis(50));
            let mut buf = Vec::new();
            let g = q2.get_into_timeout(&mut buf, Duration::from_millis(50));
            (p, g)
        },
    );
    assert!(matches!(p, Err(Error::Timeout)), "{p:?}");
    assert!(matches!(g, Err(Error::Timeout)), "{g:?}");
    done_tx.send(()).unwrap();
    t.join().unwrap();
    // A lock word naming an id that no live handle holds (pid 1 was a "live TID" to the
    // old /proc check; ids are not pids) is a dead holder.
    write_at(&name, prod_lock, &1u32.to_le_bytes());
    q.put_timeout(b"z", Duration::from_secs(10)).unwrap();
    assert_eq!(q.get_vec().unwrap(), b"m");
    assert_eq!(q.get_vec().unwrap(), b"z");
    q.put(b"m").unwrap();
    // Dead or impossible holders are taken over, even by calls with a short timeout.
    write_at(&name, prod_lock, &4_194_305u32.to_le_bytes());
    write_at(&name, cons_lock, &(4_194_306u32 | 1 << 31).to_le_bytes());
    let q2 = q.clone();
    bounded(
        Duration::from_secs(30),
        "taking over dead holders",
        move || {
            q2.put_timeout(b"y", Duration::from_millis(1)).unwrap();
            let mut buf = Vec::new();
            q2.get_into_timeout(&mut buf, Duration::from_millis(1))
                .unwrap();
            assert_eq!(buf, b"m");
        },
    );
    assert_eq!(q.get_vec().unwrap(), b"y");
}

// ---------------------------------------------------------------------------------------
// 7. Permissions

#[test]
fn default_mode_is_0600() {
    let name = uniq("mode");
    let _q = RawQueue::create(&name, 4096).unwrap();
    assert_eq!(mode_of(&shm_path(&name)), 0o600);
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("q.shmq");
    let _f = RawQueue::create_at(&p, 4096).unwrap();
    assert_eq!(mode_of(&p), 0o600);
}

#[test]
fn mode_0660_gives_group_access_regardless_of_umask() {
    // SAFETY: umask only changes this process's file-creation mask. A restrictive one
    // (0o077) must not narrow the requested mode.
    let old = unsafe { libc::umask(0o077) };
    let name = uniq("mode660");
    let q = RawQueue::create_with(name.as_str(), &Options::new().mode(0o660));
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("q.shmq");
    let f = RawQueue::create_with(p.as_path(), &Options::new().mode(0o660));
    // SAFETY: as above, restores the previous mask.
    unsafe { libc::umask(old) };
    let (_q, _f) = (q.unwrap(), f.unwrap());
    assert_eq!(mode_of(&shm_path(&name)), 0o660);
    assert_eq!(mode_of(&p), 0o660);
    let q2 = RawQueue::create_with(uniq("mode640").as_str(), &Options::new().mode(0o640)).unwrap();
    assert_eq!(mode_of(&shm_path(q2.name())), 0o640);
}
