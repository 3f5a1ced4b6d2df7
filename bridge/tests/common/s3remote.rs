//! Helpers for tests/remote.rs and tests/cli.rs: finding the nats-server process of a port
//! (to pause it with SIGSTOP), waiting for a log line, running the binary.

#![allow(dead_code)] // each test binary uses its own part

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The pid of the `nats-server` this process started with store directory `store` (its
/// `-sd` argument, a unique temporary directory) — checked to be our own child, so a test
/// never signals another process (other test runs may use the same port number).
pub fn nats_pid(store: &Path) -> i32 {
    let want = store.as_os_str().as_encoded_bytes();
    let me = std::process::id().to_string();
    for e in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(cmd) = std::fs::read(e.path().join("cmdline")) else {
            continue;
        };
        let args: Vec<&[u8]> = cmd.split(|&b| b == 0).collect();
        let is_nats = args.first().is_some_and(|a| a.ends_with(b"nats-server"));
        let has_store = args.windows(2).any(|w| w[0] == b"-sd" && w[1] == want);
        // /proc/<pid>/stat: "pid (comm) state ppid ..."; comm may hold spaces: split after ')'.
        let ppid = std::fs::read_to_string(e.path().join("stat"))
            .ok()
            .and_then(|s| {
                s.rsplit_once(')')
                    .and_then(|(_, rest)| rest.split_whitespace().nth(1).map(str::to_string))
            });
        if is_nats && has_store && ppid.as_deref() == Some(me.as_str()) {
            return pid;
        }
    }
    panic!(
        "no nats-server child of ours with store {}",
        store.display()
    );
}

/// Send `sig` to `pid` (our own nats-server or bridge child).
pub fn signal(pid: i32, sig: i32) {
    // SAFETY: kill(2) on a process this test started; no memory is involved.
    let r = unsafe { libc::kill(pid, sig) };
    assert_eq!(r, 0, "kill({pid}, {sig})");
}

/// Pauses the server for as long as it lives (SIGSTOP); SIGCONT on drop, so a failing
/// test never leaves a stopped server behind.
pub struct Paused(pub i32);

impl Paused {
    /// Pause the server whose store directory is `store` (`NatsServer::store_dir()`).
    pub fn new(store: &Path) -> Paused {
        let pid = nats_pid(&store.join("store"));
        signal(pid, libc::SIGSTOP);
        let paused = Paused(pid);
        // kill(2) returns before every thread has stopped (a thread running on another
        // core can still answer a request): wait until all are in state T.
        wait_until(10, "every nats-server thread stopped", || {
            std::fs::read_dir(format!("/proc/{pid}/task"))
                .map(|d| {
                    d.flatten().all(|t| {
                        std::fs::read_to_string(t.path().join("stat"))
                            .ok()
                            .and_then(|s| {
                                s.rsplit_once(')').and_then(|(_, r)| {
                                    r.split_whitespace().next().map(str::to_string)
                                })
                            })
                            .is_some_and(|st| st == "T" || st == "t")
                    })
                })
                .unwrap_or(false)
        });
        paused
    }
}

impl Drop for Paused {
    fn drop(&mut self) {
        signal(self.0, libc::SIGCONT);
    }
}

/// Wait until `f` holds, at most `secs` seconds (then panic with `what`).
pub fn wait_until(secs: u64, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(Instant::now() < deadline, "waited {secs} s for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Wait until the file at `log` holds `needle` (at most `secs` s); its text.
pub fn wait_for_log(log: &Path, needle: &str, secs: u64) -> String {
    let mut text = String::new();
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        text = std::fs::read_to_string(log).unwrap_or(text);
        if text.contains(needle) {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "waited {secs} s for {needle:?} in the log; it holds:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Run `shmq-bridge` with `args`, stderr into `log`.
pub fn spawn_bridge(args: &[&str], log: &Path) -> Child {
    let f = std::fs::File::create(log).expect("log file");
    Command::new(env!("CARGO_BIN_EXE_shmq-bridge"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(f)
        .spawn()
        .expect("run shmq-bridge")
}

/// Wait for `child` at most `secs` seconds (then SIGKILL it and panic).
pub fn wait_exit(child: &mut Child, secs: u64) -> std::process::ExitStatus {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(st) = child.try_wait().expect("try_wait") {
            return st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("shmq-bridge did not exit within {secs} s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A loopback port nothing listens on (bound, then released).
pub fn closed_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}
