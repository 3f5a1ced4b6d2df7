//! Removing this process's own queues when it is interrupted (Ctrl-C) or terminated.
//!
//! A creating handle removes its queue's name when it drops, but a process killed by
//! SIGINT or SIGTERM runs no destructors, so its `/dev/shm/shmq.*` objects stay behind
//! (stale, until someone runs `shmq rm --stale`). [`cleanup_on_signals`] closes that gap
//! for the common signals; [`remove_own_queues`] is the removal itself, for programs that
//! handle signals their own way (tokio's `ctrl_c`, a `ctrlc` handler, ...).

use std::sync::atomic::{AtomicBool, Ordering};

use crate::error::{Error, Result};
use crate::segment;

/// The signals [`cleanup_on_signals`] handles: SIGINT (Ctrl-C), SIGTERM (`kill`,
/// systemd, docker stop) and SIGHUP (the terminal went away).
pub const CLEANUP_SIGNALS: [i32; 3] = [libc::SIGINT, libc::SIGTERM, libc::SIGHUP];

/// On SIGINT, SIGTERM or SIGHUP, remove the named queues this process created (as
/// [`remove_own_queues`] does), then die of that signal as the program would have without
/// this call (same exit status for the shell or the supervisor).
///
/// Call it once, early in `main` (after [`process::init`](crate::process::init)); later
/// calls do nothing. It starts a small thread that waits for the signals (with
/// `signal-hook`), so the removal runs as ordinary code, not inside a signal handler.
/// Queues made with [`Options::keep_on_drop`](crate::Options::keep_on_drop) are kept, as
/// on a normal exit; file-backed queues (`create_at`) are not touched. SIGKILL cannot be
/// caught: what a killed process leaves behind is stale and removed by
/// [`remove_stale`](crate::remove_stale) or `shmq rm --stale`.
///
/// ```no_run
/// fn main() -> shmq::Result<()> {
///     shmq::process::init();
///     shmq::cleanup_on_signals()?; // Ctrl-C no longer leaves /dev/shm/shmq.jobs behind
///     let q: shmq::Queue<String> = shmq::Queue::create("jobs", 1 << 20)?;
///     loop {
///         println!("{}", q.get()?);
///     }
/// }
/// ```
pub fn cleanup_on_signals() -> Result<()> {
    static INSTALLED: AtomicBool = AtomicBool::new(false);
    if INSTALLED.swap(true, Ordering::SeqCst) {
        return Ok(());
    }
    // Signals the program ignores (started under `nohup`, or with SIGINT ignored as a
    // background job) stay ignored: handling them would kill a program that was meant to
    // survive them.
    let wanted: Vec<i32> = CLEANUP_SIGNALS
        .iter()
        .copied()
        .filter(|&sig| !signal_is_ignored(sig))
        .collect();
    let mut signals = match signal_hook::iterator::Signals::new(&wanted) {
        Ok(s) => s,
        Err(e) => {
            INSTALLED.store(false, Ordering::SeqCst);
            return Err(Error::Io(e));
        }
    };
    std::thread::Builder::new()
        .name("shmq-cleanup".into())
        .spawn(move || {
            if let Some(sig) = signals.forever().next() {
                let _ = remove_own_queues();
                // Die of the signal: the default action, as without the handler. Not in
                // the init process of a PID namespace (a container's entry point, or
                // `unshare --pid --fork`): the kernel ignores a default-action signal sent
                // to init, so raising it would return and signal-hook would fall back to
                // `abort`, which init cannot die of either (glibc then ends in SIGSEGV).
                // Init exits with the shell's 128 + signal status instead.
                if std::process::id() != 1 {
                    let _ = signal_hook::low_level::emulate_default_handler(sig);
                }
                std::process::exit(128 + sig);
            }
        })
        .map_err(Error::Io)?;
    Ok(())
}

/// Remove the name of every queue in `/dev/shm` that this process created and did not
/// mark to outlive it ([`Options::keep_on_drop`](crate::Options::keep_on_drop)); returns
/// the names removed, sorted. Handles in this or other processes keep working, exactly as
/// after the creating handle dropped.
///
/// The process remembers the objects it created (not the pid in their headers: pids repeat
/// across PID namespaces, so two containers' init processes look alike), and a name is
/// removed only while it still refers to the object this process made. A child forked
/// without `exec` removes none of its parent's queues. Errors: an I/O error removing a
/// name (the names removed before it stay removed).
///
/// ```
/// # let name = format!("doc-own-{}", std::process::id());
/// let q = shmq::RawQueue::create(&name, 4096)?;
/// assert!(shmq::remove_own_queues()?.contains(&name));
/// assert!(matches!(shmq::RawQueue::open(&name), Err(shmq::Error::NotFound(_))));
/// q.put(b"still works")?; // the handle keeps its ring
/// # Ok::<(), shmq::Error>(())
/// ```
pub fn remove_own_queues() -> Result<Vec<String>> {
    let mut removed = Vec::new();
    for (name, object) in segment::owned::owned_names() {
        if segment::owned::remove_owned(&name, object)? {
            removed.push(name);
        }
    }
    removed.sort();
    Ok(removed)
}

/// Whether `sig`'s disposition is SIG_IGN now (asked without changing it).
fn signal_is_ignored(sig: i32) -> bool {
    // SAFETY: an all-zero sigaction is a valid out-value for this plain C struct.
    let mut old: libc::sigaction = unsafe { std::mem::zeroed() };
    // SAFETY: a null new action only queries the current one into `old`.
    let r = unsafe { libc::sigaction(sig, std::ptr::null(), &mut old) };
    r == 0 && old.sa_sigaction == libc::SIG_IGN
}
