//! [`Child`]: the parent's handle on a child process — its pid, pidfd, exit status,
//! signals, and the join that reads the function's outcome from the exchange file.

use std::fs::File;
use std::io;
use std::marker::PhantomData;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use rustix::process::{Pid, PidfdFlags};
use serde::de::DeserializeOwned;

use super::exchange::{self, Report};
use super::registry::{peek_status, register, unregister};
use super::wait::{far_future, wait_first, Waitable};
use super::ProcessError;
use crate::error::{Error, Result};

/// A running (or finished) child process started by [`start`](super::start),
/// [`Builder::start`](super::Builder::start) or [`Command::spawn`](super::Command::spawn).
///
/// `R` is the function's return value, delivered by [`join`](Child::join). A child that is
/// dropped without being joined is still reaped, by a background thread (no zombies).
///
/// ```
/// # shmq::process::init();
/// # fn run() -> shmq::Result<()> {
/// use std::time::Duration;
/// let mut child = shmq::process::start(|ms| {
///     std::thread::sleep(Duration::from_millis(ms));
///     "done".to_string()
/// }, 100u64)?;
/// println!("started {}", child.pid());
/// assert!(matches!(child.join_timeout(Duration::from_millis(1)), Err(shmq::Error::Timeout)));
/// assert_eq!(child.exit_status(), None); // still running
/// assert_eq!(child.join_timeout(Duration::from_secs(60))?, "done");
/// # Ok(()) }
/// # run().unwrap();
/// ```
pub struct Child<R> {
    pid: u32,
    proc_: Option<std::process::Child>,
    /// The exchange file (function children only; see `exchange`).
    result: Option<File>,
    /// `pidfd_open` of the child: readable once it has exited (`None` on kernels before 5.3).
    pidfd: Option<OwnedFd>,
    status: Option<ExitStatus>,
    taken: bool,
    test_mode: bool,
    name: Option<String>,
    _r: PhantomData<fn() -> R>,
}

impl<R> std::fmt::Debug for Child<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Child")
            .field("pid", &self.pid)
            .field("name", &self.name)
            .field("status", &self.status)
            .finish()
    }
}

/// "killed by signal 9 (SIGKILL)" / "exited with code 3".
pub(super) fn describe_status(status: ExitStatus) -> String {
    if let Some(sig) = status.signal() {
        format!("killed by signal {sig} ({})", super::signal_name(sig))
    } else {
        format!("exited with code {}", status.code().unwrap_or(-1))
    }
}

/// A pidfd of child `pid` (close-on-exec, numbered above 2); `None` on kernels without
/// `pidfd_open` (before 5.3).
fn pidfd_open(pid: u32) -> Option<OwnedFd> {
    let pid = Pid::from_raw(i32::try_from(pid).ok()?)?;
    let fd = rustix::process::pidfd_open(pid, PidfdFlags::empty()).ok()?;
    exchange::above_stdio(fd).ok()
}

impl<R> Child<R> {
    pub(super) fn new(
        proc_: std::process::Child,
        result: Option<File>,
        test_mode: bool,
        name: Option<String>,
    ) -> Self {
        let pid = proc_.id();
        register(pid);
        Child {
            pid,
            // The child is ours and not reaped, so the pid still names it here.
            pidfd: pidfd_open(pid),
            proc_: Some(proc_),
            result,
            status: None,
            taken: false,
            test_mode,
            name,
            _r: PhantomData,
        }
    }

    /// The child's process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The name given with [`Builder::name`](super::Builder::name), if any.
    pub fn name(&self) -> Option<&str> {
        self.name.as_deref()
    }

    fn proc_mut(&mut self) -> &mut std::process::Child {
        self.proc_.as_mut().expect("child handle is live")
    }

    fn record(&mut self, status: ExitStatus) {
        if self.status.is_none() {
            self.status = Some(status);
            unregister(self.pid);
        }
    }

    /// Reap the child if it has exited; its exit status, or `None` while it runs.
    ///
    /// Reaping does not lose the function's result: it stays available to `join`.
    pub fn try_wait(&mut self) -> Result<Option<ExitStatus>> {
        if self.status.is_none() {
            if let Some(s) = self.proc_mut().try_wait()? {
                self.record(s);
            }
        }
        Ok(self.status)
    }

    /// The exit status once the child has exited (whether or not it was reaped yet),
    /// `None` while it runs — Python's `exitcode`, as a plain accessor.
    pub fn exit_status(&self) -> Option<ExitStatus> {
        self.status.or_else(|| peek_status(self.pid))
    }

    /// Python's `exitcode`: the exit code once the child has exited, `-signal` if a
    /// signal killed it, `None` while it runs.
    pub fn exit_code(&self) -> Option<i32> {
        self.exit_status()
            .map(|s| s.code().unwrap_or_else(|| -s.signal().unwrap_or(0)))
    }

    /// Whether the child is still running (reaps it if it has exited). The child never
    /// waits for the parent to read its result, so this turns `false` as soon as the
    /// function has returned and the process exited, whatever the result's size.
    pub fn is_alive(&mut self) -> bool {
        matches!(self.try_wait(), Ok(None))
    }

    /// A descriptor that becomes readable (`poll`/`epoll`, or an async runtime's reactor)
    /// when the child exits: a Linux pidfd (`pidfd_open`, Linux 5.3 or newer; `None` on
    /// older kernels). Python's `Process.sentinel`.
    pub fn pidfd(&self) -> Option<BorrowedFd<'_>> {
        self.pidfd.as_ref().map(|f| f.as_fd())
    }

    /// Send signal `sig` to the child, unless it has already been reaped (then it is a
    /// no-op: its pid may belong to another process by now).
    pub fn signal(&mut self, sig: i32) -> Result<()> {
        if self.try_wait()?.is_some() {
            return Ok(());
        }
        // libc, not rustix: `rustix::process::kill_process` takes a `Signal`, which any
        // `sig` (a realtime signal, 0 to probe) cannot safely become.
        // SAFETY: kill has no memory-safety preconditions. The pid is ours and not reaped
        // yet, so it cannot have been reused.
        if unsafe { libc::kill(self.pid as libc::pid_t, sig) } != 0
            && io::Error::last_os_error().raw_os_error() != Some(libc::ESRCH)
        {
            return Err(Error::last_os("kill"));
        }
        Ok(())
    }

    /// Kill the child at once (SIGKILL). `join` afterwards reports
    /// [`ProcessError::Signaled`] unless it had already finished.
    pub fn kill(&mut self) -> Result<()> {
        self.signal(libc::SIGKILL)
    }

    /// Ask the child to stop (SIGTERM).
    pub fn terminate(&mut self) -> Result<()> {
        self.signal(libc::SIGTERM)
    }

    /// Wait until the child has exited and reap it; `false` if the deadline passed first.
    fn wait_until(&mut self, deadline: Option<Instant>) -> Result<bool> {
        if self.status.is_some() {
            return Ok(true);
        }
        let Some(d) = deadline else {
            let s = self.proc_mut().wait()?;
            self.record(s);
            return Ok(true);
        };
        Ok(wait_first(std::slice::from_mut(self), Some(d))?.is_some())
    }

    fn finish(&mut self) -> Result<R>
    where
        R: DeserializeOwned,
    {
        if self.taken {
            return Err(ProcessError::AlreadyJoined { pid: self.pid }.into());
        }
        self.taken = true;
        let status = self.status.expect("finish after reaping");
        let pid = self.pid;
        let report = match self.result.take() {
            Some(f) => exchange::read_report(&f),
            // A command: a success is the `()` it returns.
            None => Report::Started,
        };
        let started = match report {
            Report::Done(outcome) => return outcome.into_result(pid),
            Report::Bad(message) => return Err(ProcessError::Failed { pid, message }.into()),
            Report::Started => true,
            Report::NotStarted => false,
        };
        if let Some(signal) = status.signal() {
            return Err(ProcessError::Signaled { pid, signal }.into());
        }
        match status.code() {
            Some(0) if started => {
                // The function called `exit(0)` (or a command succeeded): a success for a
                // function that returns `()` (postcard decodes `()` from nothing).
                postcard::from_bytes(&[]).map_err(|_| {
                    ProcessError::NoResult {
                        pid,
                        hint:
                            " (the function called std::process::exit(0) before returning a value)"
                                .into(),
                    }
                    .into()
                })
            }
            Some(0) => {
                let hint = if self.test_mode {
                    ": in a test binary, put shmq::enable_test_support!() at the top level of the test file"
                } else {
                    " (does main call shmq::process::init() first, on every path?)"
                };
                Err(ProcessError::NoResult {
                    pid,
                    hint: hint.to_string(),
                }
                .into())
            }
            Some(code) => Err(ProcessError::Exited { pid, code }.into()),
            None => Err(ProcessError::Exited { pid, code: -1 }.into()),
        }
    }

    /// Wait for the child to finish and return the function's return value.
    ///
    /// Errors: [`ProcessError::Panicked`] with the panic message, [`ProcessError::Exited`]
    /// with the exit code, [`ProcessError::Signaled`] with the signal (all inside
    /// [`Error::Process`]), [`Error::Codec`] if the value does not decode. A function that
    /// calls `std::process::exit(0)` instead of returning succeeds if it returns `()`.
    pub fn join(mut self) -> Result<R>
    where
        R: DeserializeOwned,
    {
        self.wait_until(None)?;
        self.finish()
    }

    /// Like [`join`](Self::join), but gives up with [`Error::Timeout`] after `timeout`,
    /// leaving the child running and the handle usable (call it again, `kill`, ...).
    pub fn join_timeout(&mut self, timeout: Duration) -> Result<R>
    where
        R: DeserializeOwned,
    {
        let deadline = Instant::now().checked_add(timeout);
        if self.wait_until(Some(deadline.unwrap_or_else(far_future)))? {
            self.finish()
        } else {
            Err(Error::Timeout)
        }
    }

    /// The result if the child has finished, `Ok(None)` if it is still running.
    pub fn try_join(&mut self) -> Result<Option<R>>
    where
        R: DeserializeOwned,
    {
        match self.join_timeout(Duration::ZERO) {
            Ok(r) => Ok(Some(r)),
            Err(Error::Timeout) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

impl<R> Drop for Child<R> {
    fn drop(&mut self) {
        if self.status.is_some() {
            return;
        }
        if let Some(mut p) = self.proc_.take() {
            if let Ok(Some(_)) = p.try_wait() {
                unregister(self.pid);
                return;
            }
            // Reap it whenever it ends, without blocking the caller.
            let pid = self.pid;
            let _ = std::thread::Builder::new()
                .name("shmq-reaper".into())
                .spawn(move || {
                    let _ = p.wait();
                    unregister(pid);
                });
        }
    }
}

impl<R> Waitable for Child<R> {
    fn has_exited(&mut self) -> Result<bool> {
        Ok(self.try_wait()?.is_some())
    }
    fn sentinel(&self) -> Option<BorrowedFd<'_>> {
        self.pidfd()
    }
}
