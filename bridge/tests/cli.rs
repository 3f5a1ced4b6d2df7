//! The `shmq-bridge` binary: exit statuses and messages (a missing queue, a permanent
//! configuration error, a stop while connecting), and each NATS event logged once.
//! Queues are file-backed in temporary directories (nothing left in /dev/shm).

mod common;
#[path = "common/s3remote.rs"]
mod helpers;

use common::NatsServer;
use helpers::{spawn_bridge, wait_exit, wait_for_log};

fn stderr_of(log: &std::path::Path) -> String {
    std::fs::read_to_string(log).unwrap_or_default()
}

/// A missing local queue: exit status 2, the message says the queue is missing and how
/// `--create` makes it, and no "done" summary comes first. For `out` and `in`.
#[test]
fn missing_queue_names_create() {
    let dir = tempfile::tempdir().unwrap();
    let q = dir.path().join("nope");
    let q = q.to_str().unwrap();
    let url = format!("nats://127.0.0.1:{}", helpers::closed_port());
    for cmd in ["out", "in"] {
        let log = dir.path().join(format!("{cmd}.log"));
        let mut c = spawn_bridge(
            &[
                cmd,
                "--queue",
                q,
                "--subject",
                "x",
                "--server",
                &url,
                "--every",
                "0s",
            ],
            &log,
        );
        let st = wait_exit(&mut c, 20);
        let err = stderr_of(&log);
        assert_eq!(st.code(), Some(2), "{cmd}: {st:?}\n{err}");
        assert!(err.contains("does not exist"), "{cmd}: {err}");
        assert!(err.contains("--create <bytes>"), "{cmd}: {err}");
        assert!(
            !err.contains("done:"),
            "{cmd}: no summary before the error: {err}"
        );
    }
}

/// SIGTERM or SIGINT while the bridge is still trying to connect: a clean stop, exit 0
/// (as for a stop while running), no error printed.
#[test]
fn signal_while_connecting_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("nats://127.0.0.1:{}", helpers::closed_port());
    for (i, sig) in [libc::SIGTERM, libc::SIGINT].into_iter().enumerate() {
        for cmd in ["out", "in"] {
            let q = dir.path().join(format!("q{i}{cmd}"));
            let log = dir.path().join(format!("{cmd}{i}.log"));
            let mut args = vec![
                cmd,
                "--queue",
                q.to_str().unwrap(),
                "--subject",
                "x",
                "--server",
                &url,
                "--create",
                "65536",
                "--every",
                "0s",
            ];
            let state = dir.path().join(format!("state{i}"));
            if cmd == "in" {
                args.extend(["--state", state.to_str().unwrap()]);
            }
            let mut c = spawn_bridge(&args, &log);
            wait_for_log(&log, "cannot connect to NATS", 20);
            helpers::signal(c.id() as i32, sig);
            let st = wait_exit(&mut c, 20);
            let err = stderr_of(&log);
            assert_eq!(st.code(), Some(0), "{cmd} signal {sig}: {st:?}\n{err}");
            assert!(err.contains("stopping"), "{err}");
            assert!(
                !err.contains("shmq-bridge: stopped"),
                "no error printed: {err}"
            );
        }
    }
}

/// A subject the server can never accept: exit status 2 at once, saying why (not a retry
/// loop).
#[test]
fn bad_subject_exits_2() {
    let srv = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let q = dir.path().join("q");
    let log = dir.path().join("out.log");
    let mut c = spawn_bridge(
        &[
            "out",
            "--queue",
            q.to_str().unwrap(),
            "--subject",
            "a..b",
            "--server",
            &srv.url(),
            "--create",
            "65536",
        ],
        &log,
    );
    let st = wait_exit(&mut c, 20);
    let err = stderr_of(&log);
    assert_eq!(st.code(), Some(2), "{st:?}\n{err}");
    assert!(err.contains("invalid subject \"a..b\""), "{err}");
    assert!(!err.contains("retrying"), "{err}");
}

/// A lost connection is logged once (by the bridge, with its name), not once more by the
/// NATS client ("event: disconnected").
#[test]
fn nats_events_are_logged_once() {
    let mut srv = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let q = dir.path().join("q");
    let log = dir.path().join("out.log");
    let mut c = spawn_bridge(
        &[
            "out",
            "--queue",
            q.to_str().unwrap(),
            "--subject",
            "once.x",
            "--server",
            &srv.url(),
            "--create",
            "65536",
            "--every",
            "0s",
        ],
        &log,
    );
    wait_for_log(&log, "publishing into stream", 20);
    srv.restart();
    wait_for_log(&log, "lost the NATS connection", 30);
    helpers::wait_until(30, "the reconnect logged", || {
        let t = stderr_of(&log);
        let lost = t.find("lost the NATS connection").unwrap_or(usize::MAX);
        t.rfind("NATS connection up").is_some_and(|up| up > lost)
    });
    helpers::signal(c.id() as i32, libc::SIGTERM);
    let st = wait_exit(&mut c, 20);
    let err = stderr_of(&log);
    assert_eq!(st.code(), Some(0), "{st:?}\n{err}");
    assert_eq!(
        err.matches("lost the NATS connection").count(),
        1,
        "one disconnect, one line: {err}"
    );
    assert!(
        !err.lines().any(|l| l.contains("event:")),
        "the client's own copy of the event is not printed: {err}"
    );
}
