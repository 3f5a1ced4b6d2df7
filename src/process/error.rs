//! [`ProcessError`]: why a child process or a pool task failed, [`signal_name`] for its
//! messages, and [`os_error`] for a failed system call of `process/`.

use std::io;

use crate::error::Error;

/// A failed system call (a `rustix` error) as [`Error::Io`], `context` first in the message
/// — the form of [`Error::last_os`] for an errno that `rustix` returned rather than left in
/// `errno`.
pub(super) fn os_error(context: &str, e: rustix::io::Errno) -> Error {
    Error::Io(io::Error::new(e.kind(), format!("{context}: {e}")))
}

/// Why a child process (or a pool task) failed. Returned inside [`Error::Process`].
///
/// ```
/// use shmq::process::ProcessError;
/// let e = ProcessError::Exited { pid: 42, code: 3 };
/// assert_eq!(e.to_string(), "child process 42 exited with code 3");
/// ```
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ProcessError {
    /// The function panicked in the child.
    #[error("child process {pid} panicked: {message}")]
    Panicked {
        /// Child's process id.
        pid: u32,
        /// The panic payload (`&str` or `String`), or a placeholder for other payloads.
        message: String,
    },
    /// The child exited with a non-zero code without returning a result (e.g. it called
    /// `std::process::exit(code)`).
    #[error("child process {pid} exited with code {code}")]
    Exited {
        /// Child's process id.
        pid: u32,
        /// Exit code.
        code: i32,
    },
    /// The child was killed by a signal.
    #[error("child process {pid} was killed by signal {signal} ({})", signal_name(*.signal))]
    Signaled {
        /// Child's process id.
        pid: u32,
        /// Signal number.
        signal: i32,
    },
    /// The child exited with code 0 but never sent a result back.
    #[error("child process {pid} exited without returning a result{hint}")]
    NoResult {
        /// Child's process id.
        pid: u32,
        /// Likely cause.
        hint: String,
    },
    /// The child started but could not run the function (e.g. an argument queue could not
    /// be opened, or the return value could not be serialised).
    #[error("child process {pid} could not run the function: {message}")]
    Failed {
        /// Child's process id.
        pid: u32,
        /// What went wrong in the child.
        message: String,
    },
    /// A [`Pool`](super::Pool) worker died (crashed, was killed, or exited) while it held
    /// this task.
    #[error("pool worker process {pid} died while running task {task}: {cause}")]
    WorkerDied {
        /// The dead worker's process id.
        pid: u32,
        /// The task's sequence number within the pool.
        task: u64,
        /// How it died, e.g. "killed by signal 9 (SIGKILL)".
        cause: String,
    },
    /// [`start`](super::start) was called but [`init`](super::init) was never called in
    /// this process.
    #[error("shmq::process::init() was not called: make it the first statement of main() (in integration tests, add shmq::enable_test_support!() at the top level of the test file)")]
    NotInitialized,
    /// The child's result was already taken by an earlier `join_timeout`.
    #[error("child process {pid} was already joined")]
    AlreadyJoined {
        /// Child's process id.
        pid: u32,
    },
    /// The [`Pool`](super::Pool) takes no new tasks: [`Pool::close`](super::Pool::close)
    /// or [`Pool::terminate`](super::Pool::terminate) was called (Python's
    /// `ValueError: Pool not running`).
    #[error("the pool is closed or terminated: it takes no new tasks")]
    PoolClosed,
    /// [`Pool::terminate`](super::Pool::terminate) (or dropping the pool) stopped this task
    /// before it finished.
    #[error("the pool was terminated before task {task} finished")]
    Terminated {
        /// The task's sequence number within the pool.
        task: u64,
    },
    /// A [`Barrier`](crate::Barrier) is broken: [`abort`](crate::Barrier::abort) or
    /// [`reset`](crate::Barrier::reset) was called while this process waited, a waiter
    /// timed out, or a process died inside the barrier's short critical section (Python's
    /// `BrokenBarrierError`). [`reset`](crate::Barrier::reset) makes it usable again.
    #[error("the barrier {name:?} is broken (aborted, reset, a waiter timed out, or a process died inside it); reset() it to use it again")]
    BrokenBarrier {
        /// The barrier's name.
        name: String,
    },
}

impl From<ProcessError> for Error {
    fn from(e: ProcessError) -> Error {
        Error::Process(e)
    }
}

/// Conventional name of a signal number ("SIGKILL"), or "unknown signal".
///
/// ```
/// assert_eq!(shmq::process::signal_name(9), "SIGKILL");
/// ```
pub fn signal_name(sig: i32) -> &'static str {
    match sig {
        libc::SIGHUP => "SIGHUP",
        libc::SIGINT => "SIGINT",
        libc::SIGQUIT => "SIGQUIT",
        libc::SIGILL => "SIGILL",
        libc::SIGTRAP => "SIGTRAP",
        libc::SIGABRT => "SIGABRT",
        libc::SIGBUS => "SIGBUS",
        libc::SIGFPE => "SIGFPE",
        libc::SIGKILL => "SIGKILL",
        libc::SIGUSR1 => "SIGUSR1",
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGUSR2 => "SIGUSR2",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGALRM => "SIGALRM",
        libc::SIGTERM => "SIGTERM",
        _ => "unknown signal",
    }
}
