//! External programs: [`Command`] starts any program and hands it queue names in its
//! environment; [`queue_from_env`] and [`raw_queue_from_env`] open them in that program.

use std::ffi::OsStr;

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::handle::Child;
use super::spawner::{install_pre_exec, spawn_from_spawner_thread, DIE_WITH_PARENT};
use crate::error::{Error, Result};

/// Prefix of the variables [`Command::queue`] sets.
pub const ENV_QUEUE_PREFIX: &str = "SHMQ_QUEUE_";

/// Start an external program that gets queue names in its environment.
///
/// Each [`queue`](Command::queue) call sets `SHMQ_QUEUE_<KEY>=<queue name>`; the program
/// attaches with [`queue_from_env`] (Rust) or by reading the variable and opening the queue.
/// The child dies with its parent unless [`die_with_parent(false)`](Command::die_with_parent).
/// `join` on the returned [`Child<()>`](Child) succeeds when the program exits with code 0.
///
/// ```
/// # fn run() -> shmq::Result<()> {
/// # let name = format!("doc-cmd-{}", std::process::id());
/// let q: shmq::Queue<String> = shmq::Queue::create(&name, 4096)?;
/// let child = shmq::process::Command::new("sh")
///     .args(["-c", "test -n \"$SHMQ_QUEUE_JOBS\""])
///     .queue("JOBS", q.name())
///     .spawn()?;
/// child.join()?;
/// # Ok(()) }
/// # run().unwrap();
/// ```
#[derive(Debug)]
pub struct Command {
    inner: std::process::Command,
    die_with_parent: bool,
}

impl Command {
    /// A command running `program` (looked up in `PATH` like `std::process::Command`).
    pub fn new(program: impl AsRef<OsStr>) -> Command {
        Command {
            inner: std::process::Command::new(program),
            die_with_parent: DIE_WITH_PARENT,
        }
    }

    /// Add an argument.
    pub fn arg(mut self, arg: impl AsRef<OsStr>) -> Command {
        self.inner.arg(arg);
        self
    }

    /// Add arguments.
    pub fn args<I, S>(mut self, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        self.inner.args(args);
        self
    }

    /// Set an environment variable.
    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Command {
        self.inner.env(key, value);
        self
    }

    /// Hand the program a queue: sets `SHMQ_QUEUE_<KEY>` to `name` (a queue name, or the
    /// path of a file-backed queue as returned by `name()`).
    pub fn queue(mut self, key: &str, name: &str) -> Command {
        self.inner.env(format!("{ENV_QUEUE_PREFIX}{key}"), name);
        self
    }

    /// Kill the program when this process dies (default `true`).
    pub fn die_with_parent(mut self, yes: bool) -> Command {
        self.die_with_parent = yes;
        self
    }

    /// The underlying `std::process::Command`, for stdio, working directory and the rest.
    pub fn as_std_mut(&mut self) -> &mut std::process::Command {
        &mut self.inner
    }

    /// Start the program.
    pub fn spawn(self) -> Result<Child<()>> {
        let mut cmd = self.inner;
        install_pre_exec(&mut cmd, self.die_with_parent, Vec::new());
        let proc_ = spawn_from_spawner_thread(cmd)?;
        Ok(Child::new(proc_, None, false, None))
    }
}

fn env_location(key: &str) -> Result<crate::Location> {
    let var = format!("{ENV_QUEUE_PREFIX}{key}");
    let v = std::env::var(&var).map_err(|_| {
        Error::NotFound(format!(
            "${var} (no queue was handed to this process under {key:?})"
        ))
    })?;
    Ok(if v.contains('/') {
        crate::Location::Path(v.into())
    } else {
        crate::Location::Name(v)
    })
}

/// In a program started by [`Command`], open the typed queue handed over as `key`.
///
/// ```
/// # let name = format!("doc-env-{}", std::process::id());
/// # let q: shmq::Queue<u8> = shmq::Queue::create(&name, 4096)?;
/// # std::env::set_var("SHMQ_QUEUE_JOBS", &name);
/// let jobs: shmq::Queue<u8> = shmq::process::queue_from_env("JOBS")?;
/// # Ok::<(), shmq::Error>(())
/// ```
pub fn queue_from_env<T>(key: &str) -> Result<crate::Queue<T>>
where
    T: Serialize + DeserializeOwned,
{
    crate::Queue::open_with(env_location(key)?, &crate::Options::new())
}

/// In a program started by [`Command`], open the byte queue handed over as `key`.
///
/// ```
/// # let name = format!("doc-envr-{}", std::process::id());
/// # let q = shmq::RawQueue::create(&name, 4096)?;
/// # std::env::set_var("SHMQ_QUEUE_FRAMES", &name);
/// let frames = shmq::process::raw_queue_from_env("FRAMES")?;
/// # Ok::<(), shmq::Error>(())
/// ```
pub fn raw_queue_from_env(key: &str) -> Result<crate::RawQueue> {
    crate::RawQueue::open_with(env_location(key)?, &crate::Options::new())
}
