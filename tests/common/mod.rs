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
