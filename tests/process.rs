//! Cross-process tests for `shmq::process`: every test starts real child processes.

mod common;

use std::time::Duration;

use common::{eventually, uniq};
use shmq::process::{self, Builder, JoinableQueue, Pool, ProcessError};
use shmq::{Error, Queue};

shmq::enable_test_support!();

/// Wait (generously) until `pid` no longer runs (gone or a zombie).
fn wait_dead(pid: u32, within: Duration) -> bool {
    eventually(within, || !shmq::internal::tid_alive(pid))
}

#[test]
fn return_value_comes_back() {
    let c = process::start(|(a, b)| a * b, (6u32, 7u32)).unwrap();
    assert_ne!(c.pid(), std::process::id());
    assert_eq!(c.join().unwrap(), 42);

    let c = process::start(
        |s: String| (s.repeat(2), std::process::id()),
        "hi".to_string(),
    )
    .unwrap();
    let pid = c.pid();
    assert_eq!(c.join().unwrap(), ("hihi".to_string(), pid));
}

#[test]
fn queue_argument_attaches_by_name() {
    let name = uniq("seed");
    let q: Queue<(String, String)> = Queue::create(&name, 1 << 16).unwrap();
    let c = process::start(
        |(q, who): (Queue<(String, String)>, String)| {
            q.put(&("multiprocess queue test".to_string(), who))
                .unwrap();
            q.name().to_string()
        },
        (q.clone(), "zsq".to_string()),
    )
    .unwrap();
    assert_eq!(
        q.get_timeout(Duration::from_secs(30)).unwrap(),
        ("multiprocess queue test".to_string(), "zsq".to_string())
    );
    assert_eq!(c.join().unwrap(), name);
}

#[test]
fn missing_queue_argument_is_a_clear_error() {
    let name = uniq("gone");
    let q: Queue<u8> = Queue::create(&name, 4096).unwrap();
    shmq::remove(&name).unwrap(); // the handle still serialises as `name`
    let c = process::start(|q: Queue<u8>| q.len(), q.clone()).unwrap();
    match c.join() {
        Err(Error::Process(ProcessError::Failed { message, .. })) => {
            assert!(message.contains("decoding the arguments"), "{message}");
            assert!(message.contains("must still exist"), "{message}");
        }
        other => panic!("expected Failed, got {other:?}"),
    }
}

#[test]
fn panic_message_reaches_join() {
    let c = process::start(
        |x: u8| -> u8 {
            if x == 7 {
                panic!("boom in the child: {x}");
            }
            x
        },
        7u8,
    )
    .unwrap();
    let pid = c.pid();
    match c.join() {
        Err(Error::Process(ProcessError::Panicked { pid: p, message })) => {
            assert_eq!(p, pid);
            assert_eq!(message, "boom in the child: 7");
        }
        other => panic!("expected a panic error, got {other:?}"),
    }
}

#[test]
fn nonzero_exit_code_reaches_join() {
    let c = process::start(|()| -> u8 { std::process::exit(3) }, ()).unwrap();
    let pid = c.pid();
    let e = c.join().unwrap_err();
    assert!(
        matches!(e, Error::Process(ProcessError::Exited { pid: p, code: 3 }) if p == pid),
        "{e}"
    );
    assert_eq!(
        e.to_string(),
        format!("child process {pid} exited with code 3")
    );
}

#[test]
fn kill_and_liveness() {
    let mut c = process::start(|s: u64| std::thread::sleep(Duration::from_secs(s)), 60u64).unwrap();
    assert!(c.is_alive());
    c.kill().unwrap();
    match c.join_timeout(Duration::from_secs(30)) {
        Err(Error::Process(ProcessError::Signaled { signal, .. })) => {
            assert_eq!(signal, libc::SIGKILL)
        }
        other => panic!("expected SIGKILL, got {other:?}"),
    }
    assert!(!c.is_alive());
    c.kill().unwrap(); // a no-op once reaped

    let mut c = process::start(|s: u64| std::thread::sleep(Duration::from_secs(s)), 60u64).unwrap();
    c.terminate().unwrap();
    let e = c.join().unwrap_err();
    assert!(e.to_string().contains("SIGTERM"), "{e}");
}

#[test]
fn join_timeout_then_join() {
    let mut c = process::start(
        |ms: u64| {
            std::thread::sleep(Duration::from_millis(ms));
            ms + 1
        },
        1500u64,
    )
    .unwrap();
    assert!(matches!(
        c.join_timeout(Duration::from_millis(50)),
        Err(Error::Timeout)
    ));
    assert!(matches!(c.try_join(), Ok(None)));
    assert_eq!(c.join_timeout(Duration::from_secs(60)).unwrap(), 1501);
    assert!(matches!(
        c.join_timeout(Duration::from_secs(1)),
        Err(Error::Process(ProcessError::AlreadyJoined { .. }))
    ));
    assert!(c.exit_status().unwrap().success());
}

#[test]
fn large_arguments_and_results() {
    let big: Vec<u32> = (0..200_000).collect();
    let c = process::start(
        |v: Vec<u32>| v.into_iter().map(|x| x as u64 * 2).collect::<Vec<u64>>(),
        big.clone(),
    )
    .unwrap();
    let back = c.join().unwrap();
    assert_eq!(back.len(), big.len());
    assert_eq!(back[199_999], 399_998);
}

/// A middle process starts a grandchild, reports its pid, then is killed: the grandchild
/// must die too (PR_SET_PDEATHSIG) unless it opted out.
fn grandchild_fate(die_with_parent: bool) -> (u32, bool) {
    let name = uniq("orphan");
    let q: Queue<u32> = Queue::create(&name, 4096).unwrap();
    let mut middle = process::start(
        |(q, die): (Queue<u32>, bool)| {
            let g = Builder::new()
                .die_with_parent(die)
                .start(|s: u64| std::thread::sleep(Duration::from_secs(s)), 120u64)
                .unwrap();
            q.put(&g.pid()).unwrap();
            std::thread::sleep(Duration::from_secs(120));
        },
        (q.clone(), die_with_parent),
    )
    .unwrap();
    let grandchild = q.get_timeout(Duration::from_secs(60)).unwrap();
    assert!(shmq::internal::tid_alive(grandchild));
    middle.kill().unwrap();
    let _ = middle.join_timeout(Duration::from_secs(30));
    let died = wait_dead(
        grandchild,
        Duration::from_secs(if die_with_parent { 20 } else { 1 }),
    );
    (grandchild, died)
}

#[test]
fn parent_death_takes_children_down() {
    let (_, died) = grandchild_fate(true);
    assert!(died, "the grandchild survived its parent");
}

#[test]
fn die_with_parent_opt_out() {
    let (pid, died) = grandchild_fate(false);
    assert!(!died, "the grandchild died although it opted out");
    // SAFETY: kill has no memory-safety preconditions; `pid` is the orphan we started.
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    assert!(wait_dead(pid, Duration::from_secs(20)));
}

#[test]
fn dropped_child_is_reaped() {
    let c = process::start(|()| (), ()).unwrap();
    let pid = c.pid();
    drop(c);
    // Reaped by the background reaper: the pid disappears entirely (no zombie left).
    eventually(Duration::from_secs(30), || {
        !std::path::Path::new(&format!("/proc/{pid}")).exists()
    });
    let zombie = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            s.rsplit(')')
                .next()
                .unwrap_or("")
                .trim_start()
                .starts_with('Z')
        })
        .unwrap_or(false);
    assert!(!zombie, "child {pid} left as a zombie");
}

#[test]
fn external_command_gets_queue_names() {
    let name = uniq("cmd");
    let q: Queue<String> = Queue::create(&name, 4096).unwrap();
    let ok = process::Command::new("sh")
        .args(["-c", &format!("test \"$SHMQ_QUEUE_JOBS\" = \"{name}\"")])
        .queue("JOBS", q.name())
        .spawn()
        .unwrap();
    ok.join().unwrap();
    let bad = process::Command::new("sh")
        .args(["-c", "exit 4"])
        .spawn()
        .unwrap();
    assert!(matches!(
        bad.join(),
        Err(Error::Process(ProcessError::Exited { code: 4, .. }))
    ));
}

#[test]
fn nested_spawn_in_child() {
    let c = process::start(
        |n: u32| {
            let inner = process::start(|m: u32| m * 10, n).unwrap();
            inner.join().unwrap() + 1
        },
        3u32,
    )
    .unwrap();
    assert_eq!(c.join().unwrap(), 31);
}

#[test]
fn pool_map_keeps_input_order() {
    let pool = Pool::new(3).unwrap();
    // Later inputs finish first.
    let out = pool
        .map(
            |x: u64| {
                std::thread::sleep(Duration::from_millis((20 - x) * 3));
                (x, x * x)
            },
            0..20u64,
        )
        .unwrap();
    assert_eq!(out, (0..20u64).map(|x| (x, x * x)).collect::<Vec<_>>());
    let streamed: Vec<u64> = pool
        .imap(|x: u64| x + 1, 0..100u64)
        .collect::<shmq::Result<_>>()
        .unwrap();
    assert_eq!(streamed, (1..=100).collect::<Vec<_>>());
    assert_eq!(
        pool.apply(|s: String| s.len(), "four".to_string()).unwrap(),
        4
    );
    // Tasks really run in several processes.
    let pids: std::collections::HashSet<u32> = pool
        .map(
            |_: u8| {
                std::thread::sleep(Duration::from_millis(30));
                std::process::id()
            },
            0..12u8,
        )
        .unwrap()
        .into_iter()
        .collect();
    assert!(pids.len() > 1, "all tasks ran in one worker: {pids:?}");
    assert!(pids.iter().all(|p| pool.pids().contains(p)));
}

#[test]
fn pool_worker_crash_fails_only_its_task() {
    let pool = Pool::new(2).unwrap();
    let before = pool.pids();
    let results: Vec<shmq::Result<u32>> = pool
        .imap(
            |x: u32| {
                if x == 3 {
                    // SAFETY: raise(SIGKILL) has no memory-safety preconditions.
                    unsafe { libc::raise(libc::SIGKILL) };
                }
                x * 2
            },
            0..8u32,
        )
        .collect();
    for (i, r) in results.iter().enumerate() {
        if i == 3 {
            match r {
                Err(Error::Process(ProcessError::WorkerDied { cause, .. })) => {
                    assert!(cause.contains("SIGKILL"), "{cause}")
                }
                other => panic!("task 3: expected WorkerDied, got {other:?}"),
            }
        } else {
            assert_eq!(*r.as_ref().unwrap(), i as u32 * 2);
        }
    }
    // The dead worker was replaced; the pool keeps working at full size.
    let after = pool.pids();
    assert_eq!(after.len(), 2);
    assert_ne!(before, after);
    assert_eq!(
        pool.map(|x: u32| x + 1, 0..10u32).unwrap(),
        (1..=10).collect::<Vec<_>>()
    );
    // A panicking task fails alone; its worker survives.
    let e = pool
        .apply(|_: ()| -> u8 { panic!("task panic") }, ())
        .unwrap_err();
    assert!(e.to_string().contains("task panic"), "{e}");
    assert_eq!(pool.pids(), after);
    // exit() inside a task is a worker death too.
    let e = pool
        .apply(|_: ()| -> u8 { std::process::exit(9) }, ())
        .unwrap_err();
    assert!(e.to_string().contains("exited with code 9"), "{e}");
}

#[test]
fn joinable_queue_with_pool() {
    let name = uniq("jq");
    let jq: JoinableQueue<u32> = JoinableQueue::create(&name, 1 << 16).unwrap();
    let out: Queue<u32> = Queue::create(&uniq("jq-out"), 1 << 16).unwrap();
    let pool = Pool::new(2).unwrap();
    // Two long-running consumers.
    let consumers: Vec<_> = (0..2)
        .map(|_| {
            pool.apply_async(
                |(jq, out): (JoinableQueue<u32>, Queue<u32>)| {
                    let mut n = 0u32;
                    loop {
                        match jq.get() {
                            Ok(x) => {
                                std::thread::sleep(Duration::from_millis(2));
                                out.put(&(x * 10)).unwrap();
                                jq.task_done().unwrap();
                                n += 1;
                            }
                            Err(Error::Closed) => return n,
                            Err(e) => panic!("{e}"),
                        }
                    }
                },
                (jq.clone(), out.clone()),
            )
            .unwrap()
        })
        .collect();
    for i in 0..50 {
        jq.put(&i).unwrap();
    }
    jq.join_timeout(Duration::from_secs(60)).unwrap();
    assert_eq!(jq.unfinished(), 0);
    assert_eq!(
        out.len(),
        50,
        "join returned before every item was processed"
    );
    jq.close();
    let handled: u32 = consumers.into_iter().map(|c| c.get().unwrap()).sum();
    assert_eq!(handled, 50);
    let mut got = out.drain().unwrap();
    got.sort();
    assert_eq!(got, (0..50).map(|x| x * 10).collect::<Vec<_>>());
}

#[test]
fn joinable_queue_in_spawned_children() {
    let jq: JoinableQueue<String> = JoinableQueue::create(&uniq("jqs"), 1 << 16).unwrap();
    for w in ["a", "b", "c"] {
        jq.put(&w.to_string()).unwrap();
    }
    assert!(matches!(
        jq.join_timeout(Duration::from_millis(20)),
        Err(Error::Timeout)
    ));
    let c = process::start(
        |jq: JoinableQueue<String>| {
            while let Ok(s) = jq.try_get() {
                let _ = s;
                jq.task_done().unwrap();
            }
            // One too many:
            jq.task_done().is_err()
        },
        jq.clone(),
    )
    .unwrap();
    jq.join_timeout(Duration::from_secs(60)).unwrap();
    assert!(c.join().unwrap());
    assert_eq!(jq.unfinished(), 0);
}

/// Spawns itself until the nesting limit refuses; returns the deepest level reached.
fn dig(level: u32) -> u32 {
    match process::start(dig, level + 1) {
        Ok(child) => child.join().unwrap(),
        Err(e) => {
            assert!(e.to_string().contains("nested"), "{e}");
            level
        }
    }
}

#[test]
fn runaway_recursion_is_bounded() {
    assert_eq!(dig(0), 8);
}

/// A stale child marker (`SHMQ_PROCESS_CHILD` naming a closed descriptor, or one that is not
/// a shmq call file) ends the program with a clear message and status 2, never an abort
/// from closing a descriptor it does not own.
#[test]
fn stale_child_marker_is_a_clear_error() {
    let exe = std::env::current_exe().unwrap();
    // 0 is stdin (not a call file); 987 is closed.
    for fd in ["987", "0"] {
        let out = std::process::Command::new(&exe)
            .args([process::TEST_SUPPORT_NAME, "--exact", "--nocapture", "-q"])
            .env("SHMQ_PROCESS_CHILD", fd)
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "fd {fd}: {out:?}");
        assert!(err.contains("names no shmq call file"), "fd {fd}: {err}");
    }
}
