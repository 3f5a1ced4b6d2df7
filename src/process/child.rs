//! The parent's handle on a child process.

use std::fs::File;
use std::io::{self, Read};
use std::marker::PhantomData;
use std::os::fd::AsRawFd;
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;

use super::{Outcome, ProcessError};
use crate::error::{Error, Result};

/// A running (or finished) child process started by [`spawn`](super::spawn),
/// [`Builder::spawn`](super::Builder::spawn) or [`Command::spawn`](super::Command::spawn).
///
/// `R` is the function's return value, delivered by [`join`](Child::join). A child that is
/// dropped without being joined is still reaped, by a background thread (no zombies).
///
/// ```
/// # shmq::process::init();
/// # fn run() -> shmq::Result<()> {
/// use std::time::Duration;
/// let mut child = shmq::process::spawn(100u64, |ms| {
///     std::thread::sleep(Duration::from_millis(ms));
///     "done".to_string()
/// })?;
/// println!("started {}", child.pid());
/// assert!(matches!(child.join_timeout(Duration::from_millis(1)), Err(shmq::Error::Timeout)));
/// assert_eq!(child.join_timeout(Duration::from_secs(60))?, "done");
/// # Ok(()) }
/// # run().unwrap();
/// ```
pub struct Child<R> {
    pid: u32,
    proc_: Option<std::process::Child>,
    /// Read end of the result pipe (function children only) until EOF.
    result: Option<File>,
    function: bool,
    buf: Vec<u8>,
    status: Option<ExitStatus>,
    taken: bool,
    test_mode: bool,
    _r: PhantomData<fn() -> R>,
}

impl<R> std::fmt::Debug for Child<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Child")
            .field("pid", &self.pid)
            .field("status", &self.status)
            .finish()
    }
}

/// "killed by signal 9 (SIGKILL)" / "exited with code 3".
pub(crate) fn describe_status(status: ExitStatus) -> String {
    if let Some(sig) = status.signal() {
        format!("killed by signal {sig} ({})", super::signal_name(sig))
    } else {
        format!("exited with code {}", status.code().unwrap_or(-1))
    }
}

impl<R> Child<R> {
    pub(crate) fn new(proc_: std::process::Child, result: Option<File>, test_mode: bool) -> Self {
        Child {
            pid: proc_.id(),
            proc_: Some(proc_),
            function: result.is_some(),
            result,
            buf: Vec::new(),
            status: None,
            taken: false,
            test_mode,
            _r: PhantomData,
        }
    }

    /// The child's process id.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    fn proc_mut(&mut self) -> &mut std::process::Child {
        self.proc_.as_mut().expect("child handle is live")
    }

    /// Reap the child if it has exited; its exit status, or `None` while it runs.
    ///
    /// Reaping does not lose the function's result: it stays in the pipe until `join`.
    pub fn try_wait(&mut self) -> Result<Option<ExitStatus>> {
        if self.status.is_none() {
            self.status = self.proc_mut().try_wait()?;
        }
        Ok(self.status)
    }

    /// The exit status, once the child has been reaped (by `join`, `try_wait` or
    /// `is_alive`).
    pub fn exit_status(&self) -> Option<ExitStatus> {
        self.status
    }

    /// Whether the child is still running (reaps it if it has exited).
    pub fn is_alive(&mut self) -> bool {
        matches!(self.try_wait(), Ok(None))
    }

    /// Send signal `sig` to the child, unless it has already been reaped (then it is a
    /// no-op: its pid may belong to another process by now).
    pub fn signal(&mut self, sig: i32) -> Result<()> {
        if self.try_wait()?.is_some() {
            return Ok(());
        }
        // SAFETY: kill has no memory-safety preconditions. The pid is ours and not reaped
        // yet, so it cannot have been reused.
        if unsafe { libc::kill(self.pid as libc::pid_t, sig) } != 0 {
            let e = io::Error::last_os_error();
            if e.raw_os_error() != Some(libc::ESRCH) {
                return Err(e.into());
            }
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

    /// Read the result pipe to EOF and reap; `false` if the deadline passed first.
    fn wait_until(&mut self, deadline: Option<Instant>) -> Result<bool> {
        while let Some(file) = self.result.as_mut() {
            let timeout_ms: libc::c_int = match deadline {
                None => -1,
                Some(d) => {
                    let left = d.saturating_duration_since(Instant::now());
                    left.as_micros().div_ceil(1000).min(i32::MAX as u128) as libc::c_int
                }
            };
            let mut pfd = libc::pollfd {
                fd: file.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: `pfd` is one valid pollfd for the duration of the call.
            let n = unsafe { libc::poll(&mut pfd, 1, timeout_ms) };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e.into());
            }
            if n == 0 {
                return Ok(false);
            }
            let mut chunk = [0u8; 8192];
            match file.read(&mut chunk) {
                Ok(0) => self.result = None,
                Ok(k) => self.buf.extend_from_slice(&chunk[..k]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        }
        if self.status.is_none() {
            match deadline {
                None => self.status = Some(self.proc_mut().wait()?),
                Some(d) => {
                    let mut nap = Duration::from_micros(200);
                    loop {
                        if self.try_wait()?.is_some() {
                            break;
                        }
                        let now = Instant::now();
                        if now >= d {
                            return Ok(false);
                        }
                        std::thread::sleep(nap.min(d - now));
                        nap = (nap * 2).min(Duration::from_millis(10));
                    }
                }
            }
        }
        Ok(true)
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
        if self.function {
            if let Some(outcome) = Outcome::decode(&self.buf) {
                self.buf = Vec::new();
                return outcome.into_result(pid);
            }
        }
        if let Some(signal) = status.signal() {
            return Err(ProcessError::Signaled { pid, signal }.into());
        }
        match status.code() {
            Some(0) if self.function => {
                let hint = if self.test_mode {
                    ": in a test binary, put shmq::enable_test_support!() at the top level of the test file"
                } else {
                    " (did the function call std::process::exit, or does main not call shmq::process::init() on every path?)"
                };
                Err(ProcessError::NoResult {
                    pid,
                    hint: hint.to_string(),
                }
                .into())
            }
            // A command: success. `R` is `()` here, which postcard decodes from nothing.
            Some(0) => postcard::from_bytes(&[]).map_err(|e| Error::Codec(e.to_string())),
            Some(code) => Err(ProcessError::Exited { pid, code }.into()),
            None => Err(ProcessError::Exited { pid, code: -1 }.into()),
        }
    }

    /// Wait for the child to finish and return the function's return value.
    ///
    /// Errors: [`ProcessError::Panicked`] with the panic message, [`ProcessError::Exited`]
    /// with the exit code, [`ProcessError::Signaled`] with the signal (all inside
    /// [`Error::Process`]), [`Error::Codec`] if the value does not decode.
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
        if self.wait_until(deadline)? {
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
        // Close our end first: a child blocked writing a large result gets EPIPE and exits.
        self.result = None;
        if self.status.is_some() {
            return;
        }
        if let Some(mut p) = self.proc_.take() {
            if let Ok(Some(_)) = p.try_wait() {
                return;
            }
            // Reap it whenever it ends, without blocking the caller.
            let _ = std::thread::Builder::new()
                .name("shmq-reaper".into())
                .spawn(move || {
                    let _ = p.wait();
                });
        }
    }
}
