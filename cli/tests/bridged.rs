//! `shmq ls` / `shmq stat` show the JetStream bridges running on a queue. The bridges are
//! stood for by marks registered through the library (`shmq::internal::bridged`, what a
//! running `shmq-bridge` does), so no NATS server is needed.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use shmq::internal::bridged::{self, BridgeInfo, Direction, MarkCounters};
use shmq::RawQueue;

const BIN: &str = env!("CARGO_BIN_EXE_shmq");
/// Set in the child process of `a_killed_bridge_is_not_shown`: the queue to register on.
const CHILD_ENV: &str = "SHMQ_TEST_MARK_CHILD";

fn uniq(tag: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "clib-{tag}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

fn ok(args: &[&str]) -> String {
    let o = Command::new(BIN).args(args).output().expect("run shmq");
    assert_eq!(
        o.status.code(),
        Some(0),
        "shmq {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).unwrap()
}

fn json(s: &str) -> serde_json::Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("not JSON ({e}): {s}"))
}

/// The BRIDGE cell of `name`'s row in `shmq ls` (the last column).
fn ls_cell(name: &str) -> String {
    let table = ok(&["ls"]);
    let header = table.lines().next().unwrap();
    assert!(header.trim_end().ends_with("BRIDGE"), "{table}");
    let row = table
        .lines()
        .find(|l| l.split_whitespace().next() == Some(name))
        .unwrap_or_else(|| panic!("{name} not listed:\n{table}"));
    row.split_whitespace().last().unwrap().to_string()
}

fn ls_json_bridges(name: &str) -> Vec<serde_json::Value> {
    let all = json(&ok(&["ls", "--json"]));
    let me = all
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == name)
        .unwrap_or_else(|| panic!("{name} not in ls --json"))
        .clone();
    me["bridges"].as_array().expect("a bridges array").clone()
}

fn info(direction: Direction) -> BridgeInfo {
    BridgeInfo {
        direction,
        server: "nats://127.0.0.1:4222".into(),
        stream: "JOBS".into(),
        subject: "jobs.a".into(),
        durable: (direction == Direction::In).then(|| "jobs-b".to_string()),
    }
}

/// A mark registered through the library shows in `ls` (column and JSON) and in `stat`
/// (text and JSON) with its counters, and disappears when it drops; a queue created again
/// under the name is not the bridged one.
#[test]
fn ls_and_stat_show_a_registered_bridge() {
    let name = uniq("ls");
    let q = RawQueue::create(&name, 1 << 16).unwrap();
    assert_eq!(ls_cell(&name), "-");
    assert!(ls_json_bridges(&name).is_empty());
    assert!(ok(&["stat", &name]).contains("bridge     none"));

    let out = bridged::register(&q, &info(Direction::Out)).unwrap();
    let inb = bridged::register(&q, &info(Direction::In)).unwrap();
    out.update(&MarkCounters {
        messages: 12345,
        bytes: 1 << 20,
        lag: 7,
        retries: 2,
        connected: true,
        last_forward_unix: shmq::internal::now_unix(),
        updated_unix: shmq::internal::now_unix(),
        ..Default::default()
    })
    .unwrap();
    assert_eq!(ls_cell(&name), "out,in");
    let bridges = ls_json_bridges(&name);
    assert_eq!(bridges.len(), 2, "{bridges:?}");
    let o = &bridges[0];
    assert_eq!(o["direction"], "out");
    assert_eq!(o["subject"], "jobs.a");
    assert_eq!(o["stream"], "JOBS");
    assert_eq!(o["messages"], 12345);
    assert_eq!(o["lag"], 7);
    assert_eq!(o["pid"], std::process::id());
    assert_eq!(o["queue_uid"], format!("{:016x}", q.uid()));
    assert_eq!(bridges[1]["durable"], "jobs-b");

    let text = ok(&["stat", &name]);
    assert!(
        text.contains("bridge     out -> nats://127.0.0.1:4222 stream JOBS subject jobs.a"),
        "{text}"
    );
    assert!(text.contains("12,345 messages"), "{text}");
    assert!(text.contains("lag 7"), "{text}");
    assert!(text.contains("2 retries"), "{text}");
    assert!(text.contains("NATS connected"), "{text}");
    assert!(text.contains("durable jobs-b"), "{text}");
    let s = json(&ok(&["stat", &name, "--json"]));
    assert_eq!(s["bridges"].as_array().unwrap().len(), 2, "{s}");

    drop(inb);
    assert_eq!(ls_cell(&name), "out");
    let path = out.path().to_path_buf();
    drop(out);
    assert!(!path.exists(), "the mark is removed when it drops");
    assert_eq!(ls_cell(&name), "-");

    // A bridge on the old object of a name is not shown on the new one.
    let mark = bridged::register(&q, &info(Direction::Out)).unwrap();
    shmq::remove(&name).unwrap();
    let q2 = RawQueue::create(&name, 1 << 16).unwrap();
    assert_eq!(ls_cell(&name), "-");
    assert!(bridged::of_queue(&name).is_empty());
    assert!(bridged::list().iter().any(|b| b.mark == mark.path()));
    drop(mark);
    drop((q, q2));
}

/// The child side of `a_killed_bridge_is_not_shown` (does nothing in a normal run):
/// registers a mark on the queue named in `CHILD_ENV`, prints its path, waits to be killed.
#[test]
fn child_registers_and_hangs() {
    let Ok(name) = std::env::var(CHILD_ENV) else {
        return;
    };
    let q = RawQueue::open(&name).unwrap();
    let mark = bridged::register(&q, &info(Direction::Out)).unwrap();
    println!("MARK {}", mark.path().display());
    std::thread::sleep(Duration::from_secs(60));
}

/// A bridge killed with SIGKILL (no destructor runs, its mark file stays) is not shown:
/// the kernel dropped its lock. The next registration sweeps the dead mark away.
#[test]
fn a_killed_bridge_is_not_shown() {
    let name = uniq("kill");
    let q = RawQueue::create(&name, 1 << 16).unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "child_registers_and_hangs", "--nocapture"])
        .env(CHILD_ENV, &name)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let path = loop {
        let l = lines
            .next()
            .expect("the child printed its mark")
            .expect("read the child's output");
        if let Some(p) = l.strip_prefix("MARK ") {
            break std::path::PathBuf::from(p);
        }
    };
    assert_eq!(ls_cell(&name), "out");
    assert_eq!(bridged::of_queue(&name)[0].pid, child.id());
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(path.exists(), "SIGKILL leaves the file");
    assert_eq!(ls_cell(&name), "-");
    assert!(ok(&["stat", &name]).contains("bridge     none"));
    assert!(!bridged::list().iter().any(|b| b.mark == path));
    // The next registration on the machine removes the dead mark.
    let mark = bridged::register(&q, &info(Direction::In)).unwrap();
    assert!(!path.exists(), "the dead mark was swept");
    let _ = std::fs::remove_file(&path);
    drop(mark);
}

/// Garbage under a mark's name (random bytes, the magic with a bad record, a FIFO, a
/// directory) is skipped: `ls` and `stat` work and show no bridge, nothing hangs.
#[test]
fn garbage_marks_are_skipped() {
    let name = uniq("junk");
    let q = RawQueue::create(&name, 1 << 16).unwrap();
    let dir = std::path::Path::new("/dev/shm");
    let tag = uniq("g");
    let junk = dir.join(format!("shmq-bridge.{tag}-a.mark"));
    let magic = dir.join(format!("shmq-bridge.{tag}-b.mark"));
    let fifo = dir.join(format!("shmq-bridge.{tag}-c.mark"));
    let sub = dir.join(format!("shmq-bridge.{tag}-d.mark"));
    let huge = dir.join(format!("shmq-bridge.{tag}-e.mark"));
    std::fs::write(&junk, b"not a mark at all").unwrap();
    let mut b = b"SHMQMRK1".to_vec();
    b.extend_from_slice(&200u32.to_le_bytes());
    b.resize(256 + 200, 0xff);
    std::fs::write(&magic, &b).unwrap();
    let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
    // SAFETY: `c` is a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
    std::fs::create_dir(&sub).unwrap();
    std::fs::write(&huge, vec![0u8; 1 << 20]).unwrap();

    assert_eq!(ls_cell(&name), "-");
    assert!(ls_json_bridges(&name).is_empty());
    assert!(ok(&["stat", &name]).contains("bridge     none"));
    let all = bridged::list();
    for p in [&junk, &magic, &fifo, &sub, &huge] {
        assert!(!all.iter().any(|b| &b.mark == p), "{p:?} listed");
    }
    // A registration (which sweeps dead marks) leaves foreign files alone and works.
    let mark = bridged::register(&q, &info(Direction::Out)).unwrap();
    assert!(junk.exists() && fifo.exists() && sub.exists());
    assert_eq!(ls_cell(&name), "out");
    drop(mark);
    for p in [&junk, &magic, &fifo, &huge] {
        let _ = std::fs::remove_file(p);
    }
    let _ = std::fs::remove_dir(&sub);
}
