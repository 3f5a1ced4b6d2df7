//! The child side: [`init`] and what it runs in a child started by
//! [`start`](super::start) — read the [`Boot`](super::wire::Boot) record from the exchange
//! file, run the function, write its outcome back and exit.

use std::ffi::{CString, OsStr};
use std::io::{self, Write};
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;

use rustix::io::FdFlags;

use super::exchange;
use super::wire::{Outcome, ENV_CHILD};

/// Set by [`init`]: without it (and outside a test binary) [`start`](super::start) refuses
/// to start a child.
pub(super) static INIT_CALLED: AtomicBool = AtomicBool::new(false);

/// Dispatch point for child processes. **Call it first thing in `main`.**
///
/// In the parent (no child marker in the environment) it only records that it was called
/// and returns at once. In a child started by [`start`](super::start) it runs the function,
/// sends its return value (or panic message) to the parent and exits the process — it never
/// returns. Everything before this call runs again in every child; see the
/// [module docs](super#-the-rule-call-init-first-in-main).
///
/// ```
/// // fn main() {
/// shmq::process::init(); // the first statement
/// // ... the program; children never get here
/// // }
/// ```
pub fn init() {
    INIT_CALLED.store(true, Ordering::SeqCst);
    dispatch_child();
}

/// In a child: run the function and exit. Elsewhere: return at once.
pub(super) fn dispatch_child() {
    let Some(spec) = std::env::var_os(ENV_CHILD) else {
        return;
    };
    // Grandchildren started with a plain std::process::Command must not inherit the marker.
    std::env::remove_var(ENV_CHILD);
    let code = run_child(&spec);
    let _ = io::stdout().flush();
    let _ = io::stderr().flush();
    std::process::exit(code);
}

/// Whether this process is a child started by [`start`](super::start) (before [`init`]
/// consumed the marker). Useful in a test binary to skip expensive set-up.
///
/// ```
/// assert!(!shmq::process::is_child());
/// ```
pub fn is_child() -> bool {
    std::env::var_os(ENV_CHILD).is_some()
}

static NAME: OnceLock<Option<String>> = OnceLock::new();

/// In a child started with [`Builder::name`](super::Builder::name): that name (Python's
/// `current_process().name`); `None` elsewhere.
///
/// ```
/// # shmq::process::init();
/// let c = shmq::process::Builder::new()
///     .name("resizer")
///     .start(|()| shmq::process::current_name(), ())?;
/// assert_eq!(c.join()?.as_deref(), Some("resizer"));
/// assert_eq!(shmq::process::current_name(), None); // the parent has none
/// # Ok::<(), shmq::Error>(())
/// ```
pub fn current_name() -> Option<String> {
    NAME.get().cloned().flatten()
}

/// Give this process the name `ps`, `top` and `pgrep` show (`/proc/self/comm`, at most
/// 15 bytes; the main thread's, also when called from another thread).
fn set_process_name(name: &str) {
    let bytes: Vec<u8> = name.bytes().filter(|&b| b != 0).take(15).collect();
    // The main thread's name is the process's; /proc/self/comm is the main thread's.
    let _ = std::fs::write("/proc/self/comm", &bytes);
    if let Ok(name) = CString::new(bytes) {
        // PR_SET_NAME: the calling thread's name (the main thread's outside the harness).
        let _ = rustix::thread::set_name(&name);
    }
}

/// The child's work, given the value of [`ENV_CHILD`]; the process's exit code.
pub(super) fn run_child(spec: &OsStr) -> i32 {
    let Some(x_fd) = spec
        .to_str()
        .and_then(|s| s.parse::<RawFd>().ok())
        .filter(|&fd| fd >= 0)
    else {
        eprintln!("shmq::process: malformed {ENV_CHILD}={spec:?}");
        return 2;
    };
    // The marker may be stale (a program started by a shmq child with the environment
    // copied by hand, or a marker set by someone else): adopt the descriptor only if it is
    // open and is the parent's call file, never a descriptor of this process's own.
    if !exchange::is_call_file(x_fd) {
        eprintln!(
            "shmq::process: {ENV_CHILD}={x_fd} names no shmq call file (descriptor {x_fd} is \
             closed or something else): this program was not started by shmq::process::start; \
             unset {ENV_CHILD}"
        );
        return 2;
    }
    // SAFETY: the descriptor is open and is a `shmq-call` memfd (checked above), which only
    // a parent's `start` creates and passes to this process alone; nothing else in this
    // process owns it.
    let x = unsafe { exchange::adopt(x_fd) };
    // It was inherited across exec; programs this one runs must not inherit it too.
    let _ = rustix::io::fcntl_setfd(&x, FdFlags::CLOEXEC);
    let boot = match exchange::read_boot(&x) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("shmq::process: reading the call from the parent failed: {e}");
            return 2;
        }
    };
    let outcome = match boot {
        Err(msg) => Outcome::Error(msg),
        Ok(boot) => {
            if let Some(fd) = boot.stdout.filter(|&fd| fd >= 0) {
                // SAFETY: the parent passed this descriptor (its real stdout, see
                // `Boot::stdout`) to this process alone, and nothing else here owns it.
                let fd = unsafe { OwnedFd::from_raw_fd(fd) };
                // fd 1 is replaced atomically; `fd` itself is closed on drop.
                let _ = rustix::stdio::dup2_stdout(&fd);
            }
            if let Some(n) = &boot.name {
                set_process_name(n);
            }
            let _ = NAME.set(boot.name);
            let _ = exchange::mark_running(&x);
            // SAFETY: `Boot::decode` checked that the parent runs this same binary (equal
            // check offsets), and the call was made by `Call::new` there.
            unsafe { boot.call.run() }
        }
    };
    let code = match outcome {
        Outcome::Ok(_) => 0,
        Outcome::Panic(_) => 101,
        Outcome::Error(_) => 1,
    };
    if let Err(e) = exchange::write_outcome(&x, &outcome) {
        eprintln!("shmq::process: writing the result for the parent failed: {e}");
        return 2;
    }
    code
}
