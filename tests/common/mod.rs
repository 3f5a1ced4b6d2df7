//! Child processes for the core integration tests: the test binary re-executes itself with
//! `--exact <entry> --ignored` and an environment variable naming the role.
#![allow(dead_code)]

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Environment variable carrying the child role and its arguments (`role:arg1:arg2`).
pub const ROLE_VAR: &str = "SHMQ_TEST_ROLE";

/// Start this test binary again as a child running `entry` (an `#[ignore]`d test that
/// dispatches on [`ROLE_VAR`]) with `role` and `args`.
pub fn spawn_role(entry: &str, role: &str, args: &[String]) -> Child {
    let mut spec = role.to_string();
    for a in args {
        spec.push(':');
        spec.push_str(a);
    }
    Command::new(std::env::current_exe().expect("current exe"))
        .args([
            entry,
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
            "-q",
        ])
        .env(ROLE_VAR, spec)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn child")
}

/// The role and arguments this process was started with, if it is a child.
pub fn role() -> Option<(String, Vec<String>)> {
    let spec = std::env::var(ROLE_VAR).ok()?;
    let mut parts = spec.split(':').map(str::to_string);
    let role = parts.next()?;
    Some((role, parts.collect()))
}

/// Wait for `child` at most `limit`; kill it and panic if it does not exit.
pub fn wait_exit(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(st) = child.try_wait().expect("try_wait") {
            return st;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("child {} did not exit within {limit:?}", child.id());
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Poll `cond` every millisecond for at most `limit`.
pub fn eventually(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    cond()
}

/// Prefix of the lines a child prints for its parent (libtest prints its own lines to the
/// same stdout).
pub const MARK: &str = "@@ ";

/// Print one line for the parent.
pub fn say(line: impl std::fmt::Display) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{MARK}{line}").unwrap();
    out.flush().unwrap();
}

/// The child's lines for its parent, without the libtest noise around them.
pub fn lines(out: impl std::io::Read) -> impl Iterator<Item = String> {
    use std::io::BufRead;
    std::io::BufReader::new(out)
        .lines()
        .map_while(|l| l.ok())
        .filter_map(|l| l.strip_prefix(MARK).map(str::to_string))
}

/// A queue name unique to this process and call site.
pub fn uniq(tag: &str) -> String {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    format!(
        "it-{tag}-{}-{}",
        std::process::id(),
        N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    )
}

/// A 64-bit FNV-1a checksum.
pub fn fnv(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

// ---- Additions for the core tests (issue 9): wrapped children, bounded waits, cleanup. ----

/// Like [`spawn_role`], but start the test binary under `wrapper`: a command line that ends
/// by executing the rest of its arguments (e.g. `["unshare", "--pid", "--fork"]`).
pub fn spawn_role_under(wrapper: &[&str], entry: &str, role: &str, args: &[String]) -> Child {
    let mut spec = role.to_string();
    for a in args {
        spec.push(':');
        spec.push_str(a);
    }
    let exe = std::env::current_exe().expect("current exe");
    Command::new(wrapper[0])
        .args(&wrapper[1..])
        .arg(exe)
        .args([
            entry,
            "--exact",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
            "-q",
        ])
        .env(ROLE_VAR, spec)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {wrapper:?}: {e}"))
}

/// The child's lines for its parent (see [`lines`]), read on a thread and handed over a
/// channel, so that the parent can wait for each with a limit ([`expect_line`]).
pub fn line_channel(child: &mut Child) -> std::sync::mpsc::Receiver<String> {
    let out = child.stdout.take().expect("child stdout is piped");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for l in lines(out) {
            if tx.send(l).is_err() {
                break;
            }
        }
    });
    rx
}

/// The next line from `rx`, or a panic naming `what` if none comes within `limit`.
pub fn expect_line(rx: &std::sync::mpsc::Receiver<String>, limit: Duration, what: &str) -> String {
    match rx.recv_timeout(limit) {
        Ok(l) => l,
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
            panic!("{what}: no answer from the child within {limit:?}")
        }
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
            panic!("{what}: the child exited without answering")
        }
    }
}

/// Text of a panic payload.
pub fn panic_text(p: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "(non-string panic payload)".to_string()
    }
}

/// Run `f` on its own thread and return its value; panic naming `what` if it panics or
/// does not return within `limit` (a hung thread is left behind: the caller's cleanup
/// guards must not depend on it).
pub fn bounded<T: Send + 'static>(
    limit: Duration,
    what: &str,
    f: impl FnOnce() -> T + Send + 'static,
) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    let h = std::thread::spawn(move || {
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
        let _ = tx.send(r);
    });
    match rx.recv_timeout(limit) {
        Ok(Ok(v)) => {
            let _ = h.join();
            v
        }
        Ok(Err(p)) => panic!("{what}: panicked: {}", panic_text(&*p)),
        Err(_) => panic!("{what}: did not return within {limit:?} (hung)"),
    }
}

/// Removes the queue `name` (if it still exists) when dropped, also when a test fails.
pub struct RemoveOnDrop(pub String);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = shmq::remove(&self.0);
    }
}

/// A child process that is killed (SIGKILL) and reaped when dropped.
pub struct Reap(pub Child);

impl Drop for Reap {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl std::ops::Deref for Reap {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for Reap {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

/// Send `sig` to process `pid`.
pub fn signal(pid: u32, sig: i32) {
    // SAFETY: kill(2) with a pid of one of our own children; no memory is involved.
    unsafe { libc::kill(pid as libc::pid_t, sig) };
}

/// Wait (at most `limit`) until process `pid` is stopped (or a zombie).
pub fn wait_stopped(pid: u32, limit: Duration) -> bool {
    let t = Instant::now();
    while t.elapsed() < limit {
        if let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            let state = stat.rsplit_once(") ").map(|(_, r)| r.as_bytes()[0]);
            if matches!(state, Some(b'T') | Some(b't') | Some(b'Z')) {
                return true;
            }
        }
        std::thread::sleep(Duration::from_micros(200));
    }
    false
}

/// Whether this process runs as root (needed for namespaces, mounts and other uids).
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Whether `cmd` runs and exits successfully (to probe for namespace support).
pub fn command_works(cmd: &[&str]) -> bool {
    Command::new(cmd[0])
        .args(&cmd[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// `unshare` arguments that run the rest of the command line as PID 1 of a new PID
/// namespace with its own /proc, killed when the `unshare` process dies.
pub const NEW_PID_NS: &[&str] = &["unshare", "--pid", "--fork", "--mount-proc", "--kill-child"];

/// Whether [`NEW_PID_NS`] works here (root, util-linux `unshare`, namespaces allowed).
pub fn pid_namespaces_work() -> bool {
    let mut cmd = NEW_PID_NS.to_vec();
    cmd.push("true");
    is_root() && command_works(&cmd)
}

/// The pids of the children of process `pid` (from `/proc/<pid>/task/*/children`).
pub fn children_of(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for t in tasks.flatten() {
            if let Ok(s) = std::fs::read_to_string(t.path().join("children")) {
                out.extend(s.split_whitespace().filter_map(|x| x.parse::<u32>().ok()));
            }
        }
    }
    out
}

/// A cheap deterministic 64-bit mixer (splitmix64 finaliser).
pub fn mix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

/// `len` bytes determined by `key` (cheap to generate and to compare in debug builds).
pub fn pattern(key: u64, len: usize) -> Vec<u8> {
    let base = mix64(key);
    let mut v = Vec::with_capacity(len + 8);
    let mut i = 0u64;
    while v.len() < len {
        v.extend_from_slice(&(base ^ i.wrapping_mul(0x9e37_79b9_7f4a_7c15)).to_le_bytes());
        i += 1;
    }
    v.truncate(len);
    v
}

/// Whether `bytes` is exactly `pattern(key, bytes.len())`.
pub fn is_pattern(key: u64, bytes: &[u8]) -> bool {
    let base = mix64(key);
    let mut chunks = bytes.chunks_exact(8);
    let mut i = 0u64;
    for c in &mut chunks {
        let w = base ^ i.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        if u64::from_le_bytes(c.try_into().unwrap()) != w {
            return false;
        }
        i += 1;
    }
    let rest = chunks.remainder();
    let w = (base ^ i.wrapping_mul(0x9e37_79b9_7f4a_7c15)).to_le_bytes();
    rest == &w[..rest.len()]
}
