//! The `shmq` command run as a separate process against live queues.
//!
//! Every test uses its own queue names (with this process's pid) and removes what it
//! creates, so tests can run in parallel with each other and with other suites.

use std::io::Write;
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use shmq::{Options, RawQueue};

const BIN: &str = env!("CARGO_BIN_EXE_shmq");

fn uniq(tag: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "cli-{tag}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Removes the named segment when dropped (whether or not it still exists).
struct Cleanup(String);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = shmq::remove(&self.0);
    }
}

/// The object a queue name stands for (`/dev/shm/shmq.NAME`).
fn object_path(name: &str) -> std::path::PathBuf {
    shmq::Location::Name(name.to_string()).object_path()
}

fn run_with(args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new(BIN)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn shmq");
    // A command that fails before reading stdin closes it: not the test's error.
    if let Err(e) = child.stdin.take().unwrap().write_all(stdin) {
        assert_eq!(
            e.kind(),
            std::io::ErrorKind::BrokenPipe,
            "writing stdin: {e}"
        );
    }
    child.wait_with_output().expect("wait for shmq")
}

fn run(args: &[&str]) -> Output {
    run_with(args, b"")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[track_caller]
fn ok(args: &[&str]) -> String {
    let o = run(args);
    assert_eq!(
        o.status.code(),
        Some(0),
        "shmq {args:?} failed: {}",
        stderr(&o)
    );
    stdout(&o)
}

#[track_caller]
fn fails(args: &[&str], code: i32) -> String {
    let o = run(args);
    assert_eq!(
        o.status.code(),
        Some(code),
        "shmq {args:?}: stdout {:?} stderr {:?}",
        stdout(&o),
        stderr(&o)
    );
    stderr(&o)
}

fn json(s: &str) -> serde_json::Value {
    serde_json::from_str(s).unwrap_or_else(|e| panic!("not JSON ({e}): {s}"))
}

#[test]
fn help_and_exit_codes() {
    let help = ok(&["--help"]);
    for cmd in [
        "ls",
        "stat",
        "watch",
        "create",
        "put",
        "get",
        "close",
        "rm",
        "bench",
        "completions",
        "man",
    ] {
        assert!(help.contains(cmd), "{cmd} missing from --help:\n{help}");
    }
    assert!(help.contains("Exit status"));
    assert!(!help.contains("__bench-peer"), "hidden command shown");
    ok(&["get", "--help"]);
    ok(&["--version"]);
    // Facts the help states come from the library: where queues live, and how old an
    // uninitialised queue must be to count as stale.
    assert!(
        help.contains(&object_path("<NAME>").display().to_string()),
        "{help}"
    );
    let rm = ok(&["rm", "--help"]);
    let grace = humantime::format_duration(shmq::internal::UNINIT_GRACE).to_string();
    assert!(rm.contains(&format!("over {grace} old")), "{rm}");

    // Usage errors: 2.
    fails(&["no-such-command"], 2);
    fails(&["get"], 2);
    let e = fails(&["stat", "a/b"], 2);
    assert!(e.contains("invalid queue name"), "{e}");
    fails(&["put", "x", "--chunk", "4"], 2); // --chunk needs --raw
    fails(&["rm"], 2);
    fails(&["watch", "x", "--interval", "soon"], 2);

    // Errors: 1, with a hint.
    let missing = uniq("missing");
    let e = fails(&["stat", &missing], 1);
    assert!(e.contains("shmq: error:") && e.contains("shmq ls"), "{e}");
    fails(&["get", &missing], 1);
    fails(&["rm", &missing], 1);
}

#[test]
fn ls_and_stat_show_a_program_queue() {
    let name = uniq("ls");
    let q = RawQueue::create(&name, 1 << 16).unwrap();
    q.put_many(&[b"one".as_slice(), b"two", b"three"]).unwrap();
    let pid = std::process::id().to_string();

    let table = ok(&["ls"]);
    let row = table
        .lines()
        .find(|l| l.split_whitespace().next() == Some(name.as_str()))
        .unwrap_or_else(|| panic!("{name} not listed:\n{table}"));
    let cells: Vec<&str> = row.split_whitespace().collect();
    assert!(cells.contains(&"64.0"), "capacity: {row}");
    assert!(cells.contains(&pid.as_str()), "creator pid: {row}");
    assert!(cells.contains(&"yes"), "creator alive: {row}");
    assert!(table.starts_with("NAME"), "{table}");

    let all = json(&ok(&["ls", "--json"]));
    let me = all
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == name.as_str())
        .expect("listed in JSON");
    assert_eq!(me["len"], 3);
    assert_eq!(me["capacity"], 1 << 16);
    assert_eq!(me["creator_alive"], true);
    assert_eq!(me["stale"], false);
    assert!(me["attached"]
        .as_array()
        .unwrap()
        .contains(&serde_json::json!(std::process::id())));

    let mut buf = Vec::new();
    q.get_into(&mut buf).unwrap();
    let s = json(&ok(&["stat", &name, "--json"]));
    assert_eq!(s["name"], name.as_str());
    assert_eq!(s["puts"], 3);
    assert_eq!(s["gets"], 1);
    assert_eq!(s["put_bytes"], 11);
    assert_eq!(s["get_bytes"], 3);
    assert_eq!(s["len"], 2);
    assert_eq!(s["closed"], false);
    // The library's name for the codec (`shmq::internal::codec_name`), not one of our own.
    assert_eq!(
        s["codec_name"],
        shmq::internal::codec_name(shmq::internal::codec_id::RAW)
    );
    assert_eq!(s["kind"], "queue");
    assert_eq!(s["max_message"], (1 << 16) - 8);
    assert_eq!(s["creator_pid"], std::process::id());

    let text = ok(&["stat", &name]);
    assert!(text.contains("2 queued"), "{text}");
    assert!(text.contains(&format!("pid {pid} (alive)")), "{text}");

    // A typed queue shows its codec and message type.
    let typed = uniq("typed");
    let _t: shmq::Queue<(u32, String)> = shmq::Queue::create(&typed, 4096).unwrap();
    let s = json(&ok(&["stat", &typed, "--json"]));
    assert_eq!(s["codec_name"], "postcard");
    assert!(s["type_name"].as_str().unwrap().contains("String"), "{s}");
}

/// Locks, events, values, ... live in segments like the queues' and are listed with them,
/// but as what they are, not as closed empty queues; queue commands refuse them.
#[test]
fn primitives_are_listed_with_their_kind() {
    let q = uniq("prim-queue");
    let lock = uniq("prim-lock");
    let value = uniq("prim-value");
    let _q = RawQueue::create(&q, 4096).unwrap();
    let _l = shmq::Lock::create(&lock).unwrap();
    let _v = shmq::Value::<u64>::create(&value, 7).unwrap();

    let table = ok(&["ls", "cli-prim-"]);
    let mut sections = table.split("\n\n");
    let (queues, others) = (sections.next().unwrap(), sections.next().unwrap_or(""));
    assert!(queues.starts_with("NAME") && queues.contains(&q), "{table}");
    assert!(
        !queues.contains(&lock) && !queues.contains(&value),
        "{table}"
    );
    let header: Vec<&str> = others.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        ["NAME", "KIND", "CREATOR", "ALIVE", "PROCS"],
        "{table}"
    );
    let row = others
        .lines()
        .find(|l| l.starts_with(lock.as_str()))
        .unwrap();
    assert!(row.contains("shmq Lock"), "{row}");
    let row = others
        .lines()
        .find(|l| l.starts_with(value.as_str()))
        .unwrap();
    assert!(row.contains("shmq Value<u64>"), "{row}");

    let all = json(&ok(&["ls", "--json", "cli-prim-"]));
    let kind = |n: &str| {
        all.as_array()
            .unwrap()
            .iter()
            .find(|e| e["name"] == n)
            .unwrap_or_else(|| panic!("{n} not in {all}"))["kind"]
            .clone()
    };
    assert_eq!(kind(&q), "queue");
    assert_eq!(kind(&lock), "shmq Lock");

    let s = json(&ok(&["stat", &lock, "--json"]));
    assert_eq!(s["kind"], "shmq Lock");
    assert_eq!(s["max_message"], serde_json::Value::Null);
    let text = ok(&["stat", &lock]);
    assert!(text.contains("shmq Lock (not a queue)"), "{text}");
    assert!(!text.contains("messages"), "{text}");

    for cmd in [
        &["put", &lock, "x"][..],
        &["get", &lock],
        &["watch", &lock, "-n", "1"],
    ] {
        let e = fails(cmd, 1);
        assert!(e.contains("not a queue"), "{cmd:?}: {e}");
    }
}

#[test]
fn put_and_get_lines_and_bytes() {
    let name = uniq("putget");
    let q = RawQueue::create(&name, 1 << 16).unwrap();

    ok(&["put", &name, "alpha", "beta"]);
    let o = run_with(&["put", &name], b"gamma\n\ndelta");
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(q.len(), 5);
    assert_eq!(ok(&["get", &name, "--count", "3"]), "alpha\nbeta\ngamma\n");
    // Without --count/--follow: what is queued now, then exit.
    assert_eq!(ok(&["get", &name]), "\ndelta\n");
    assert_eq!(ok(&["get", &name]), "");

    // --count limits what put reads.
    let o = run_with(&["put", &name, "-n", "2"], b"1\n2\n3\n");
    assert!(o.status.success());
    assert_eq!(q.len(), 2);
    assert_eq!(ok(&["get", &name, "-0"]), "1\u{0}2\u{0}");

    // NUL-separated records keep their newlines.
    let o = run_with(&["put", &name, "-0"], b"a\nb\0c");
    assert!(o.status.success());
    let mut buf = Vec::new();
    q.get_into(&mut buf).unwrap();
    assert_eq!(buf, b"a\nb");
    q.get_into(&mut buf).unwrap();
    assert_eq!(buf, b"c");

    // Raw bytes: all of stdin as one message, or in chunks.
    let bin: Vec<u8> = (0..=255u8).collect();
    let o = run_with(&["put", &name, "--raw"], &bin);
    assert!(o.status.success(), "{}", stderr(&o));
    q.get_into(&mut buf).unwrap();
    assert_eq!(buf, bin);
    let o = run_with(&["put", &name, "--raw", "--chunk", "100"], &bin);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(q.len(), 3);
    let o = run(&["get", &name, "--raw"]);
    assert!(o.status.success());
    assert_eq!(o.stdout, bin);
    assert!(q.is_empty());

    // --hex round-trips binary messages, e.g. a typed queue's encoded values.
    let typed = uniq("hex");
    let t: shmq::Queue<(u32, String)> = shmq::Queue::create(&typed, 4096).unwrap();
    t.put(&(7, "seven\n".to_string())).unwrap();
    let line = ok(&["get", &typed, "--hex", "-n", "1"]);
    assert!(line.ends_with('\n') && line.trim().bytes().all(|b| b.is_ascii_hexdigit()));
    ok(&["put", &typed, "--hex", line.trim()]);
    let o = run_with(&["put", &typed, "--hex"], line.as_bytes());
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(t.get().unwrap(), (7, "seven\n".to_string()));
    assert_eq!(t.get().unwrap(), (7, "seven\n".to_string()));
    let e = fails(&["put", &typed, "--hex", "xyz"], 1);
    assert!(e.contains("not hex"), "{e}");

    // Messages put by a program come out of `shmq get`, and vice versa.
    q.put(b"from the program").unwrap();
    assert_eq!(ok(&["get", &name, "-n", "1"]), "from the program\n");
}

#[test]
fn get_waits_and_times_out() {
    let name = uniq("timeout");
    let q = RawQueue::create(&name, 4096).unwrap();
    let e = fails(&["get", &name, "-n", "1", "--timeout", "200ms"], 1);
    assert!(e.contains("timed out") && e.contains("0 of 1"), "{e}");

    // A waiting `get -n 2` receives messages put after it started.
    let child = Command::new(BIN)
        .args(["get", &name, "-n", "2", "--timeout", "60s"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    q.put(b"late-1").unwrap();
    q.put(b"late-2").unwrap();
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o), "late-1\nlate-2\n");

    // Closed before the count is reached: error, after printing what there was.
    q.put(b"last").unwrap();
    q.close();
    let o = run(&["get", &name, "-n", "5"]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(stdout(&o), "last\n");
    assert!(stderr(&o).contains("closed"), "{}", stderr(&o));
}

#[test]
fn get_follow_ends_when_the_queue_is_closed() {
    let name = uniq("follow");
    let q = RawQueue::create(&name, 4096).unwrap();
    let child = Command::new(BIN)
        .args(["get", &name, "--follow"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    for i in 0..50 {
        q.put(format!("m{i}").as_bytes()).unwrap();
    }
    std::thread::sleep(Duration::from_millis(100));
    q.close();
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let want: String = (0..50).map(|i| format!("m{i}\n")).collect();
    assert_eq!(stdout(&o), want);

    // --follow with --timeout ends quietly when nothing arrives.
    let name2 = uniq("follow-idle");
    let _q2 = RawQueue::create(&name2, 4096).unwrap();
    assert_eq!(ok(&["get", &name2, "--follow", "--timeout", "200ms"]), "");
}

#[test]
fn put_reports_full_closed_and_too_large() {
    let name = uniq("full");
    let q = RawQueue::create(&name, 64).unwrap();
    q.put(&[7u8; 56]).unwrap();
    let e = fails(&["put", &name, "--timeout", "200ms", "x"], 1);
    assert!(e.contains("stayed full") && e.contains("consumer"), "{e}");

    let o = run_with(&["put", &name, "--raw"], &[0u8; 100]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("--chunk"), "{}", stderr(&o));

    ok(&["close", &name]);
    assert!(q.is_closed());
    let e = fails(&["put", &name, "y"], 1);
    assert!(e.contains("closed"), "{e}");

    // put --close closes after the last message.
    let name2 = uniq("putclose");
    let q2 = RawQueue::create(&name2, 4096).unwrap();
    ok(&["put", &name2, "--close", "bye"]);
    assert!(q2.is_closed());
    assert_eq!(q2.get_vec().unwrap(), b"bye");
}

#[test]
fn create_keeps_the_queue_and_rm_removes_it() {
    let name = uniq("create");
    let _cleanup = Cleanup(name.clone());
    let out = ok(&["create", &name, "--capacity", "64K"]);
    assert!(out.contains(&name), "{out}");

    // It outlived the command; a program can use it.
    let q = RawQueue::open(&name).unwrap();
    assert_eq!(q.capacity(), 64 << 10);
    q.put(b"kept").unwrap();

    let e = fails(&["create", &name], 1);
    assert!(e.contains("exists already"), "{e}");

    // The creator (the `create` command) is dead, but we have it mapped: not stale.
    let s = json(&ok(&["stat", &name, "--json"]));
    assert_eq!(s["creator_alive"], false);
    assert_eq!(s["stale"], false);
    let o = run(&["rm", "--stale", &name]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("kept"), "{}", stderr(&o));
    assert!(RawQueue::open(&name).is_ok());

    // Unmapped now, but created to outlive its creator (persistent): still not stale.
    drop(q);
    let s = json(&ok(&["stat", &name, "--json"]));
    assert_eq!(s["persistent"], true);
    assert_eq!(s["stale"], false);
    let out = ok(&["rm", "--stale", "--dry-run", &name]);
    assert!(!out.contains("would remove"), "{out}");
    let o = run(&["rm", "--stale", &name]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(RawQueue::open(&name).is_ok());
    // Removed by name.
    let out = ok(&["rm", &name]);
    assert!(out.contains(&format!("removed {name}")), "{out}");
    assert!(matches!(
        RawQueue::open(&name),
        Err(shmq::Error::NotFound(_))
    ));

    // A dry run over the whole machine changes nothing and succeeds.
    ok(&["rm", "--stale", "--dry-run"]);
}

#[test]
fn rm_by_name_leaves_attached_processes_working() {
    let a = uniq("rm-a");
    let b = uniq("rm-b");
    let opts = Options::new().keep_on_drop(true);
    let qa = RawQueue::create_with(a.as_str(), &opts).unwrap();
    let _qb = RawQueue::create_with(b.as_str(), &opts).unwrap();
    let _cleanup = (Cleanup(a.clone()), Cleanup(b.clone()));

    let o = run(&["rm", &a, &b]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o), format!("removed {a}\nremoved {b}\n"));
    assert!(stderr(&o).contains("still mapped"), "{}", stderr(&o));
    qa.put(b"still works").unwrap();
    assert_eq!(qa.get_vec().unwrap(), b"still works");
    assert!(!ok(&["ls"]).contains(&a));

    // One missing name among several: the others are removed, exit 1.
    let c = uniq("rm-c");
    let _qc = RawQueue::create_with(c.as_str(), &opts).unwrap();
    let _cleanup_c = Cleanup(c.clone());
    let o = run(&["rm", &a, &c]);
    assert_eq!(o.status.code(), Some(1));
    assert_eq!(stdout(&o), format!("removed {c}\n"));
}

#[test]
fn watch_prints_rates() {
    let name = uniq("watch");
    let q = RawQueue::create(&name, 1 << 16).unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let feeder = {
        let (q, stop) = (q.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                q.put(&[1u8; 100]).unwrap();
                q.get_into(&mut buf).unwrap();
                std::thread::sleep(Duration::from_millis(1));
            }
        })
    };
    let out = ok(&["watch", &name, "--interval", "300ms", "--count", "3"]);
    stop.store(true, Ordering::Relaxed);
    feeder.join().unwrap();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 4, "{out}");
    assert!(
        lines[0].contains("PUT/s") && lines[0].contains("OUT/s"),
        "{out}"
    );
    // Messages flowed during the watch: some sample shows a non-zero put rate.
    assert!(
        lines[1..]
            .iter()
            .any(|l| l.split_whitespace().nth(1) != Some("0")),
        "{out}"
    );
    assert!(lines[1..].iter().all(|l| l.ends_with("open")), "{out}");

    // Without --count, the watch ends by itself when the queue is removed.
    let mut child = Command::new(BIN)
        .args(["watch", &name, "--interval", "100ms"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    drop(q); // the creating handle removes the name
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            child.kill().unwrap();
            panic!("watch did not end after its queue was removed");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stderr(&o).contains("was removed"), "{}", stderr(&o));

    // Watching a queue that does not exist is an error.
    fails(&["watch", &name, "--count", "1"], 1);
}

#[test]
fn bench_runs_in_two_processes() {
    let o = run(&["bench", "--duration", "300ms", "--sizes", "64,1K", "--json"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let r = json(&stdout(&o));
    let t = r["throughput"].as_array().unwrap();
    assert_eq!(t.len(), 2);
    assert!(t[0]["messages"].as_u64().unwrap() > 0, "{r}");
    assert!(t[1]["bytes_per_sec"].as_f64().unwrap() > 0.0, "{r}");
    assert!(r["latency"]["round_trips"].as_u64().unwrap() > 0, "{r}");

    let o = run(&[
        "bench",
        "--duration",
        "200ms",
        "--sizes",
        "64",
        "--no-latency",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = stdout(&o);
    assert!(out.contains("THROUGHPUT") && out.contains("MSG/S"), "{out}");
    assert!(!out.contains("LATENCY"), "{out}");

    // A message that cannot fit the ring is a clear error.
    let o = run(&["bench", "--sizes", "2M", "--no-latency"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stderr(&o).contains("--capacity"), "{}", stderr(&o));
}

/// Objects that never finished initialising (a creator killed between `shm_open` and
/// publishing the header) are listed at once, explained, and removable.
#[test]
fn uninitialised_segments_are_reported_not_waited_for() {
    use std::mem::offset_of;
    use std::os::unix::fs::FileExt;

    let empty = uniq("uninit-empty");
    let half = uniq("uninit-half");
    let _cleanup = (Cleanup(empty.clone()), Cleanup(half.clone()));
    std::fs::write(object_path(&empty), b"").unwrap();
    // A header with the magic and a creator pid but no `init` word, from a process that is
    // now dead.
    let dead = {
        let mut c = Command::new("true").spawn().unwrap();
        c.wait().unwrap();
        c.id()
    };
    let f = std::fs::File::create(object_path(&half)).unwrap();
    f.set_len(8192).unwrap();
    let off =
        offset_of!(shmq::internal::Header, id) + offset_of!(shmq::internal::Identity, creator_pid);
    f.write_at(&dead.to_ne_bytes(), off as u64).unwrap();
    // The creator writes the magic before its pid (a pid without the magic is garbage).
    let magic_off =
        offset_of!(shmq::internal::Header, id) + offset_of!(shmq::internal::Identity, magic);
    f.write_at(&shmq::internal::MAGIC.to_ne_bytes(), magic_off as u64)
        .unwrap();
    drop(f);

    let started = std::time::Instant::now();
    let o = run(&["ls"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains(&format!("{empty}: never initialised")),
        "{err}"
    );
    assert!(
        err.contains(&format!(
            "{half}: never initialised: creator pid {dead} died"
        )),
        "{err}"
    );
    // `Segment::open` would wait 2 s for each; ls must not (generous bound for a busy box).
    assert!(started.elapsed() < Duration::from_secs(30));

    let e = fails(&["stat", &half], 1);
    assert!(
        e.contains("never initialised") && e.contains("shmq rm"),
        "{e}"
    );

    // The one whose creator is known dead is stale; the young one without a pid is not.
    let o = run(&["rm", "--stale", &half, &empty]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).contains(&format!("removed {half}")),
        "{}",
        stdout(&o)
    );
    assert!(
        stderr(&o).contains(&format!("kept {empty}")),
        "{}",
        stderr(&o)
    );
    assert!(!object_path(&half).exists());
    ok(&["rm", &empty]);
    assert!(!object_path(&empty).exists());
}

/// A reader that goes away (`shmq ls | head -1`) is not an error, and does not stop `rm`
/// halfway.
#[test]
fn closed_stdout_is_quiet_and_rm_still_finishes() {
    let names: Vec<String> = (0..3).map(|i| uniq(&format!("pipe{i}"))).collect();
    let _cleanup: Vec<Cleanup> = names.iter().map(|n| Cleanup(n.clone())).collect();
    let opts = Options::new().keep_on_drop(true);
    for n in &names {
        drop(RawQueue::create_with(n.as_str(), &opts).unwrap());
    }
    let closed_stdout = || {
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        writer
    };
    for args in [vec!["ls"], vec!["ls", "--json"], vec!["stat", &names[0]]] {
        let o = Command::new(BIN)
            .args(&args)
            .stdout(closed_stdout())
            .stderr(Stdio::piped())
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(0), "{args:?}: {}", stderr(&o));
        assert!(!stderr(&o).contains("error"), "{args:?}: {}", stderr(&o));
    }
    let mut args = vec!["rm"];
    args.extend(names.iter().map(|s| s.as_str()));
    let o = Command::new(BIN)
        .args(&args)
        .stdout(closed_stdout())
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    for n in &names {
        assert!(!object_path(n).exists(), "{n} left behind");
    }
}

/// A typed queue (Queue<T>, PodQueue<T>) holds encoded values: `put` refuses text unless
/// --hex or --raw says what the bytes are, and `get` prints its messages as hex.
#[test]
fn typed_queues_take_no_text_and_print_hex() {
    let name = uniq("typed-put");
    let q: shmq::Queue<(u32, String)> = shmq::Queue::create(&name, 4096).unwrap();
    let e = fails(&["put", &name, "hello"], 1);
    assert!(
        e.contains("postcard values of type") && e.contains("--hex") && e.contains("--raw"),
        "{e}"
    );
    let o = run_with(&["put", &name], b"line from stdin\n");
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(q.is_empty(), "nothing was put");

    // get prints the encoded values as hex (a note on stderr says so), which put --hex
    // takes back.
    q.put(&(7, "seven".to_string())).unwrap();
    let o = run(&["get", &name]);
    assert!(o.status.success(), "{}", stderr(&o));
    let line = stdout(&o);
    assert_eq!(line.trim(), "0705736576656e", "{line}");
    assert!(stderr(&o).contains("as hex"), "{}", stderr(&o));
    ok(&["put", &name, "--hex", line.trim()]);
    assert_eq!(q.get().unwrap(), (7, "seven".to_string()));

    // --raw: the bytes as they are, both ways.
    ok(&["put", &name, "--raw", "x"]);
    let o = run(&["get", &name, "--raw"]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(o.stdout, b"x");

    // A Pod queue is typed too.
    let pod = uniq("typed-pod");
    let _p: shmq::PodQueue<u64> = shmq::PodQueue::create(&pod, 4096).unwrap();
    let e = fails(&["put", &pod, "1"], 1);
    assert!(e.contains("pod values"), "{e}");
}

/// `ls` lists the caller's queues whose names match; `--all` adds other users' with an
/// OWNER column; `rm --stale` leaves other users' queues alone unless `--all`.
#[test]
fn ls_filters_by_name_and_owner() {
    let a = uniq("lsf-alpha");
    let b = uniq("lsf-beta");
    let _qa = RawQueue::create(&a, 4096).unwrap();
    let _qb = RawQueue::create(&b, 4096).unwrap();
    let names = |out: &str| -> Vec<String> {
        out.lines()
            .skip(1)
            .filter_map(|l| l.split_whitespace().next().map(str::to_string))
            .collect()
    };
    let listed = names(&ok(&["ls", "lsf-alpha"]));
    assert!(listed.contains(&a) && !listed.contains(&b), "{listed:?}");
    let listed = names(&ok(&["ls", "cli-lsf-be?a-*"]));
    assert!(!listed.contains(&a) && listed.contains(&b), "{listed:?}");
    let o = run(&["ls", "no-such-queue-anywhere"]);
    assert!(
        o.status.success() && stdout(&o).is_empty(),
        "{}",
        stdout(&o)
    );
    assert!(stderr(&o).contains("no matching"), "{}", stderr(&o));

    let all = ok(&["ls", "--all", "lsf-"]);
    assert!(all.lines().next().unwrap().ends_with("OWNER"), "{all}");
    let me = all.lines().find(|l| l.starts_with(a.as_str())).unwrap();
    assert!(
        me.ends_with(&user_name()),
        "owner of {a} should be {}: {me}",
        user_name()
    );

    // Another user's queue: only root can make one here.
    if my_uid() != 0 {
        eprintln!("not root: skipping the other-user part");
        return;
    }
    let other = uniq("lsf-other");
    let _cleanup = Cleanup(other.clone());
    let path = object_path(&other);
    write_abandoned(&path);
    std::os::unix::fs::chown(&path, Some(54321), Some(54321)).unwrap();
    assert!(!names(&ok(&["ls", "lsf-other"])).contains(&other));
    let all = ok(&["ls", "--all", "lsf-other"]);
    assert!(
        all.lines()
            .any(|l| l.starts_with(other.as_str()) && l.ends_with("54321")),
        "{all}"
    );
    // rm --stale: not another user's queue by default, but with --all.
    let out = ok(&["rm", "--stale", "--dry-run"]);
    assert!(!out.contains(&other), "{out}");
    let out = ok(&["rm", "--stale", "--all", "--dry-run"]);
    assert!(out.contains(&format!("would remove {other}")), "{out}");
    assert!(path.exists());
}

fn user_name() -> String {
    let uid = my_uid();
    std::fs::read_to_string("/etc/passwd")
        .ok()
        .and_then(|p| {
            p.lines().find_map(|l| {
                let f: Vec<&str> = l.split(':').collect();
                (f.get(2) == Some(&uid.to_string().as_str())).then(|| f[0].to_string())
            })
        })
        .unwrap_or_else(|| uid.to_string())
}

fn my_uid() -> u32 {
    use std::os::unix::fs::MetadataExt;
    // The owner of a file this process just created is its effective uid.
    let dir = std::env::temp_dir().join(format!("shmq-cli-uid-{}", std::process::id()));
    std::fs::write(&dir, b"").unwrap();
    let uid = std::fs::metadata(&dir).unwrap().uid();
    std::fs::remove_file(&dir).unwrap();
    uid
}

/// An object with shmq's magic and a dead creator but no published header: stale.
fn write_abandoned(path: &std::path::Path) {
    use std::mem::offset_of;
    use std::os::unix::fs::FileExt;
    let dead = {
        let mut c = Command::new("true").spawn().unwrap();
        c.wait().unwrap();
        c.id()
    };
    let f = std::fs::File::create(path).unwrap();
    f.set_len(8192).unwrap();
    let id = offset_of!(shmq::internal::Header, id);
    f.write_at(
        &shmq::internal::MAGIC.to_ne_bytes(),
        (id + offset_of!(shmq::internal::Identity, magic)) as u64,
    )
    .unwrap();
    f.write_at(
        &dead.to_ne_bytes(),
        (id + offset_of!(shmq::internal::Identity, creator_pid)) as u64,
    )
    .unwrap();
}

/// `rm` of an object named shmq.X that is not a shmq queue says what it is and wants
/// --force.
#[test]
fn rm_refuses_a_foreign_object_without_force() {
    let name = uniq("foreign");
    let _cleanup = Cleanup(name.clone());
    let path = object_path(&name);
    std::fs::write(&path, b"PGSQL shared memory, not a queue").unwrap();
    let e = fails(&["rm", &name], 1);
    assert!(
        e.contains("is not a shmq queue") && e.contains("PGSQL") && e.contains("--force"),
        "{e}"
    );
    assert!(path.exists(), "removed without --force");
    // Among several names: the others are removed, the foreign one is kept.
    let other = uniq("foreign-ok");
    drop(RawQueue::create_with(other.as_str(), &Options::new().keep_on_drop(true)).unwrap());
    let o = run(&["rm", &other, &name]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    assert!(!object_path(&other).exists());
    assert!(path.exists());
    let out = ok(&["rm", "--force", &name]);
    assert!(out.contains(&format!("removed {name}")), "{out}");
    assert!(!path.exists());
}

/// A directory named shmq.X is never removed, not even with --force: a clear error, no
/// EISDIR.
#[test]
fn rm_force_keeps_a_directory_with_a_clear_error() {
    let name = uniq("dir");
    let path = object_path(&name);
    std::fs::create_dir(&path).unwrap();
    std::fs::write(path.join("keep"), b"someone's file").unwrap();
    for args in [vec!["rm", &name], vec!["rm", "--force", &name]] {
        let e = fails(&args, 1);
        assert!(
            e.contains("is a directory") || e.contains("is not a shmq queue"),
            "{args:?}: {e}"
        );
        assert!(!e.contains("os error 21"), "{args:?}: {e}");
        assert!(path.join("keep").exists());
    }
    std::fs::remove_dir_all(&path).unwrap();
}

/// A FIFO or a symlink named shmq.X is not a queue either: described, kept without --force.
#[test]
fn rm_refuses_a_fifo_or_symlink_without_force() {
    for kind in ["fifo", "symlink"] {
        let name = uniq(kind);
        let _cleanup = Cleanup(name.clone());
        let path = object_path(&name);
        if kind == "fifo" {
            let c = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
            // SAFETY: a valid NUL-terminated path.
            assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        } else {
            std::os::unix::fs::symlink("/tmp", &path).unwrap();
        }
        let e = fails(&["rm", &name], 1);
        assert!(
            e.contains("is not a shmq queue") && e.contains("--force"),
            "{kind}: {e}"
        );
        assert!(
            path.symlink_metadata().is_ok(),
            "{kind} removed without --force"
        );
        ok(&["rm", "--force", &name]);
        assert!(path.symlink_metadata().is_err(), "{kind} kept with --force");
    }
}

#[test]
fn completions_and_man_pages() {
    let bash = ok(&["completions", "bash"]);
    assert!(
        bash.contains("_shmq()") && bash.contains("complete"),
        "{bash}"
    );
    for shell in ["zsh", "fish"] {
        assert!(ok(&["completions", shell]).contains("shmq"));
    }
    fails(&["completions", "cmd.exe"], 2);
    let man = ok(&["man"]);
    assert!(man.contains(".TH shmq 1"), "{man}");
    assert!(
        man.contains("SUBCOMMANDS") && !man.contains("bench-peer"),
        "{man}"
    );
    let dir = std::env::temp_dir().join(uniq("man"));
    std::fs::create_dir_all(&dir).unwrap();
    ok(&["man", "--dir", dir.to_str().unwrap()]);
    let get = std::fs::read_to_string(dir.join("shmq-get.1")).unwrap();
    assert!(get.contains("follow"), "{get}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Wait for `child` to exit on its own (at most 30 s, generous for a busy machine).
fn wait_exit(child: &mut std::process::Child, what: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            child.kill().unwrap();
            panic!("{what}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `get --follow` ends when the queue's name is removed, as `watch` does, and follows a
/// queue created again under the same name.
#[test]
fn get_follow_notices_removal_and_recreation() {
    let name = uniq("follow-rm");
    let q = RawQueue::create(&name, 4096).unwrap();
    q.put(b"before").unwrap();
    let mut child = Command::new(BIN)
        .args(["get", &name, "--follow"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    drop(q); // the creating handle removes the name
    wait_exit(
        &mut child,
        "get --follow did not end after its queue was removed",
    );
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o), "before\n");
    assert!(stderr(&o).contains("was removed"), "{}", stderr(&o));

    // Recreated: a new queue takes the name in one step (a rename over it), so the
    // follower never sees the name missing; it drains the old queue, then follows the new.
    let name = uniq("follow-new");
    let tmp = uniq("follow-tmp");
    let _cleanup = (Cleanup(name.clone()), Cleanup(tmp.clone()));
    let keep = Options::new().keep_on_drop(true);
    let old = RawQueue::create_with(name.as_str(), &keep).unwrap();
    let mut child = Command::new(BIN)
        .args(["get", &name, "--follow"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    old.put(b"old").unwrap();
    // Once "old" is taken the follower is attached to the old queue.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !old.is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "the follower took nothing"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let new = RawQueue::create_with(tmp.as_str(), &keep).unwrap();
    new.put(b"new").unwrap();
    std::fs::rename(object_path(&tmp), object_path(&name)).unwrap();
    new.close(); // the follower drains "new", then ends
    wait_exit(
        &mut child,
        "get --follow did not follow the recreated queue",
    );
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(stdout(&o), "old\nnew\n");
    assert!(stderr(&o).contains("created again"), "{}", stderr(&o));
}
