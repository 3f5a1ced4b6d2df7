//! The parent side of a function child: [`Builder`] and [`start`] re-execute this program
//! with the child marker and hand it a [`Boot`] record in an exchange file.

use std::ffi::{OsStr, OsString};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::process::CommandExt;

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::error::os_error;
use super::exchange;
use super::handle::Child;
use super::spawner::{install_pre_exec, spawn_from_spawner_thread, DIE_WITH_PARENT};
use super::test_support::{self, ENV_VIA_TEST, HARNESS_ARGS};
use super::wire::{Boot, Call, ENV_CHILD};
use crate::error::{Error, Result};

/// Nesting depth of shmq child processes (guards against runaway recursive spawning).
const ENV_DEPTH: &str = "SHMQ_PROCESS_DEPTH";
const MAX_DEPTH: u32 = 8;

/// Whether descriptor `fd` is open in this process.
fn fd_open(fd: RawFd) -> bool {
    // libc, not rustix: rustix takes a `BorrowedFd`, which must not name a closed
    // descriptor, and asking whether it is closed is the point here.
    // SAFETY: F_GETFD on a descriptor number has no memory-safety preconditions.
    unsafe { libc::fcntl(fd, libc::F_GETFD) >= 0 }
}

/// Options for starting a child process; [`start`] uses the defaults.
///
/// ```
/// # shmq::process::init();
/// let child = shmq::process::Builder::new()
///     .name("greeter")
///     .die_with_parent(true)
///     .env("GREETING", "hi")
///     .start(|()| std::env::var("GREETING").unwrap(), ())?;
/// assert_eq!(child.name(), Some("greeter"));
/// assert_eq!(child.join()?, "hi");
/// # Ok::<(), shmq::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct Builder {
    die_with_parent: bool,
    envs: Vec<(OsString, OsString)>,
    name: Option<String>,
}

impl Default for Builder {
    fn default() -> Self {
        Builder {
            die_with_parent: DIE_WITH_PARENT,
            envs: Vec::new(),
            name: None,
        }
    }
}

impl Builder {
    /// Defaults: the child dies with its parent; the parent's environment is inherited.
    pub fn new() -> Builder {
        Builder::default()
    }

    /// Kill the child (SIGKILL, Linux `PR_SET_PDEATHSIG`) when this process dies
    /// (default `true`). With `false` the child outlives its parent.
    pub fn die_with_parent(mut self, yes: bool) -> Builder {
        self.die_with_parent = yes;
        self
    }

    /// Set an environment variable in the child.
    pub fn env(mut self, key: impl AsRef<OsStr>, value: impl AsRef<OsStr>) -> Builder {
        self.envs
            .push((key.as_ref().to_owned(), value.as_ref().to_owned()));
        self
    }

    /// Name the child (Python's `Process(name=...)`): `ps`, `top` and `pgrep` show it
    /// (the kernel keeps 15 bytes of it, `PR_SET_NAME`), `ps -f` shows it as the command
    /// line's first word, [`Child::name`] returns it in the parent and
    /// [`current_name`](super::current_name) in the child. Without a name a child shows up under the executable's name.
    pub fn name(mut self, name: impl Into<String>) -> Builder {
        self.name = Some(name.into());
        self
    }

    /// Run `f(args)` in a new child process; see [`start`].
    pub fn start<A, R>(&self, f: fn(A) -> R, args: A) -> Result<Child<R>>
    where
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned,
    {
        self.spawn_call(Call::new(f, &args, "the child's arguments")?)
    }

    /// The old argument order of [`start`](Self::start): arguments first.
    #[deprecated(
        note = "use Builder::start(f, args): the function comes first everywhere in shmq::process, as in Pool::map(f, inputs) and Python's Process(target=f, args=...)"
    )]
    pub fn spawn<A, R>(&self, args: A, f: fn(A) -> R) -> Result<Child<R>>
    where
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned,
    {
        self.start(f, args)
    }

    fn spawn_call<R>(&self, call: Call) -> Result<Child<R>> {
        let test_mode = test_support::through_harness()?;
        // A runaway recursion of spawns (e.g. a child that spawns itself) stops here.
        let depth: u32 = std::env::var(ENV_DEPTH)
            .ok()
            .and_then(|d| d.parse().ok())
            .unwrap_or(0);
        if depth >= MAX_DEPTH {
            return Err(Error::InvalidArgument(format!(
                "refusing to spawn: already {depth} levels of nested shmq child processes"
            )));
        }
        let mut cmd = std::process::Command::new("/proc/self/exe");
        // A standard stream closed here is /dev/null in the child: otherwise the first file
        // the child opens would take its number and receive, say, its println! output.
        if !fd_open(0) {
            cmd.stdin(std::process::Stdio::null());
        }
        if !fd_open(1) {
            cmd.stdout(std::process::Stdio::null());
        }
        if !fd_open(2) {
            cmd.stderr(std::process::Stdio::null());
        }
        // In a test binary the harness prints "running 1 test" on stdout: send that to
        // /dev/null and hand the child the real stdout on a spare fd instead.
        let saved_stdout = if test_mode {
            cmd.args(HARNESS_ARGS);
            cmd.stdout(std::process::Stdio::null());
            if fd_open(1) {
                let fd = rustix::io::fcntl_dupfd_cloexec(std::io::stdout(), 3)
                    .map_err(|e| os_error("dup(stdout)", e))?;
                Some(fd)
            } else {
                None
            }
        } else {
            None
        };
        // The call and, later, the outcome travel in a memfd (numbered above 2, so that it
        // never stands in for a standard stream this process has closed).
        let exchange = exchange::create(&Boot::new(
            call,
            self.name.clone(),
            saved_stdout.as_ref().map(|f| f.as_raw_fd()),
        ))?;
        let mut keep = vec![exchange.as_raw_fd()];
        keep.extend(saved_stdout.as_ref().map(|f| f.as_raw_fd()));
        match (&self.name, std::env::args_os().next()) {
            (Some(n), _) => {
                cmd.arg0(n);
            }
            (None, Some(arg0)) if !test_mode => {
                cmd.arg0(arg0);
            }
            _ => {}
        }
        cmd.env(ENV_DEPTH, (depth + 1).to_string());
        if test_mode {
            cmd.env(ENV_VIA_TEST, "1");
        }
        cmd.env(ENV_CHILD, exchange.as_raw_fd().to_string());
        for (k, v) in &self.envs {
            cmd.env(k, v);
        }
        install_pre_exec(&mut cmd, self.die_with_parent, keep);
        let proc_ = spawn_from_spawner_thread(cmd)?;
        drop(saved_stdout);
        Ok(Child::new(
            proc_,
            Some(exchange),
            test_mode,
            self.name.clone(),
        ))
    }
}

/// Run `f(args)` in a new child process and return its handle — Python's
/// `Process(target=f, args=args).start()`.
///
/// `f` is a plain function pointer, `fn(A) -> R`: a `fn` item or a closure that captures
/// nothing (it coerces to one). Whatever the function needs travels in `args`, any serde
/// value — queues, primitives (`Lock`, `Event`, `Value`, …) and joinable queues inside it
/// re-attach by name in the child. `join` returns what `f` returns. Needs
/// [`init`](super::init) at the top of `main` (or
/// [`enable_test_support!`](crate::enable_test_support) in a test file).
///
/// The function comes first, then its arguments, everywhere in `shmq::process` (as in
/// [`Pool::map`](super::Pool::map) and Python).
///
/// ```
/// # shmq::process::init();
/// # fn run() -> shmq::Result<()> {
/// let child = shmq::process::start(|(a, b)| a * b, (6u32, 7u32))?;
/// assert_eq!(child.join()?, 42);
///
/// fn greet(name: String) -> String {
///     format!("hello, {name}")
/// }
/// assert_eq!(shmq::process::start(greet, "zsq".to_string())?.join()?, "hello, zsq");
/// # Ok(()) }
/// # run().unwrap();
/// ```
///
/// A closure that captures a variable is not a `fn` pointer, so `cargo check` (and the
/// IDE) rejects it with "expected fn pointer, found closure"; pass the value in `args`:
///
/// ```compile_fail,E0308
/// # fn run() -> shmq::Result<()> {
/// let factor = 6u32;
/// let child = shmq::process::start(move |x: u32| x * factor, 7u32)?; // captures `factor`
/// # Ok(()) }
/// ```
///
/// ```
/// # shmq::process::init();
/// # fn run() -> shmq::Result<()> {
/// let factor = 6u32;
/// let child = shmq::process::start(|(x, factor)| x * factor, (7u32, factor))?;
/// assert_eq!(child.join()?, 42);
/// # Ok(()) }
/// # run().unwrap();
/// ```
pub fn start<A, R>(f: fn(A) -> R, args: A) -> Result<Child<R>>
where
    A: Serialize + DeserializeOwned,
    R: Serialize + DeserializeOwned,
{
    Builder::new().start(f, args)
}

/// The old argument order of [`start`]: arguments first.
#[deprecated(
    note = "use shmq::process::start(f, args): the function comes first everywhere in shmq::process, as in Pool::map(f, inputs) and Python's Process(target=f, args=...)"
)]
pub fn spawn<A, R>(args: A, f: fn(A) -> R) -> Result<Child<R>>
where
    A: Serialize + DeserializeOwned,
    R: Serialize + DeserializeOwned,
{
    Builder::new().start(f, args)
}
