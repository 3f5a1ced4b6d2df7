//! Bounded waiting: every wait of a test has a limit, generous enough for a busy 2-core
//! machine, after which the test fails with a message instead of hanging the suite.

use std::path::Path;
use std::time::{Duration, Instant};

/// Poll `cond` every millisecond for at most `limit`; whether it became true.
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

/// Wait (at most `limit`) for `path` to exist.
pub fn wait_for_file(path: &Path, limit: Duration) -> bool {
    eventually(limit, || path.exists())
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
