//! The registry of children not yet reaped, behind [`active_children`], and a look at a
//! child's exit status that does not reap it.

use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::sync::Mutex;

use rustix::process::{Pid, WaitId, WaitIdOptions, WaitIdStatus};

static CHILDREN: Mutex<Vec<u32>> = Mutex::new(Vec::new());

pub(super) fn register(pid: u32) {
    if let Ok(mut c) = CHILDREN.lock() {
        c.push(pid);
    }
}

pub(super) fn unregister(pid: u32) {
    if let Ok(mut c) = CHILDREN.lock() {
        c.retain(|&p| p != pid);
    }
}

/// Child `pid`'s state without reaping it (`waitid` with `WNOWAIT`, so the pid cannot be
/// reused under our feet): `Some(None)` while it runs, `Some(Some(status))` once it has
/// exited, `None` if it is not an unreaped child of this process.
fn peek(pid: u32) -> Option<Option<WaitIdStatus>> {
    let pid = Pid::from_raw(i32::try_from(pid).ok()?)?;
    let how = WaitIdOptions::EXITED | WaitIdOptions::NOHANG | WaitIdOptions::NOWAIT;
    rustix::process::waitid(WaitId::Pid(pid), how).ok()
}

/// The exit status of child `pid` if it has exited, without reaping it; `None` while it
/// runs or if it is not an unreaped child of this process.
pub(super) fn peek_status(pid: u32) -> Option<ExitStatus> {
    let st = peek(pid)??;
    let raw = if let Some(code) = st.exit_status() {
        (code & 0xff) << 8
    } else if let Some(sig) = st.terminating_signal() {
        (sig & 0x7f) | if st.dumped() { 0x80 } else { 0 }
    } else {
        return None;
    };
    Some(ExitStatus::from_raw(raw))
}

/// Process ids of this process's children that are still running: every child started by
/// [`start`](super::start), [`Builder::start`](super::Builder::start),
/// [`Command::spawn`](super::Command::spawn) or a [`Pool`](super::Pool) (its workers),
/// and not finished yet — Python's `multiprocessing.active_children()`. Unlike Python's,
/// it does not reap anything: finished children are reaped by their handles.
///
/// ```
/// # shmq::process::init();
/// let mut c = shmq::process::start(|()| std::thread::sleep(std::time::Duration::from_secs(60)), ())?;
/// assert!(shmq::process::active_children().contains(&c.pid()));
/// c.kill()?;
/// let _ = c.join_timeout(std::time::Duration::from_secs(60));
/// assert!(!shmq::process::active_children().contains(&c.pid()));
/// # Ok::<(), shmq::Error>(())
/// ```
pub fn active_children() -> Vec<u32> {
    let pids = CHILDREN.lock().map(|c| c.clone()).unwrap_or_default();
    pids.into_iter()
        .filter(|&pid| matches!(peek(pid), Some(None)))
        .collect()
}
