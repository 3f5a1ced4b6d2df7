//! Run Rust functions in child processes that attach to queues by name — the counterpart
//! of Python's `multiprocessing.Process`, `Pool` and `JoinableQueue` (the locks, events,
//! semaphores, barriers, conditions and shared values are in [`crate::primitives`]).
//!
//! ```
//! use shmq::{process, Queue};
//!
//! fn main() -> shmq::Result<()> {
//!     process::init(); // FIRST line of main: in a child, this runs the function and exits
//!
//!     let name = format!("seed-demo-{}", std::process::id());
//!     let q: Queue<(String, String)> = Queue::create(&name, 1 << 16)?;
//!     let child = process::start(|(q, who)| {
//!         q.put(&("multiprocess queue test".to_string(), who)).unwrap();
//!         std::process::id()
//!     }, (q.clone(), "zsq".to_string()))?;
//!     println!("{:?}", q.get()?);
//!     let child_pid: u32 = child.join()?; // the function's return value
//!     println!("child {child_pid} done");
//!     Ok(())
//! }
//! ```
//!
//! # Python → shmq
//! | Python `multiprocessing` | shmq |
//! |---|---|
//! | `if __name__ == "__main__":` guard | [`init()`](init) as the first statement of `main` |
//! | `p = Process(target=f, args=(q, "x")); p.start()` | `let p = start(f, (q.clone(), "x".to_string()))?` |
//! | `Process(name=...)`, `current_process().name` | [`Builder::name`], [`current_name`] |
//! | `p.join()`, `p.join(timeout)`, `p.exitcode` | [`Child::join`] (returns `f`'s value), [`Child::join_timeout`], [`Child::exit_code`] / [`Child::exit_status`] |
//! | `p.is_alive()`, `p.kill()`, `p.terminate()`, `p.pid` | [`Child::is_alive`], [`Child::kill`], [`Child::terminate`], [`Child::pid`] |
//! | `p.sentinel`, `connection.wait(sentinels)` | [`Child::pidfd`], [`wait_any`] |
//! | `active_children()` | [`active_children`] |
//! | `p.daemon = True` (killed with the parent) | the default; [`Builder::die_with_parent`]`(false)` opts out |
//! | `Pool(n, initializer, initargs, maxtasksperchild)` | [`Pool::builder`] with [`PoolBuilder::initializer`], [`PoolBuilder::max_tasks_per_child`] |
//! | `pool.map / imap / imap_unordered / starmap / apply` | [`Pool::map`], [`Pool::imap`], [`Pool::imap_unordered`], [`Pool::starmap`], [`Pool::apply`] |
//! | `pool.apply_async / map_async / starmap_async`, `callback=`, `error_callback=` | [`Pool::apply_async`], [`Pool::map_async`], [`Pool::starmap_async`], their `_with` forms taking [`Callbacks`] |
//! | `chunksize=` | [`Pool::chunked`] |
//! | `pool.close(); pool.join()`, `pool.terminate()` | [`Pool::close`], [`Pool::join`], [`Pool::terminate`] (and drop) |
//! | `JoinableQueue`: `task_done()`, `join()` | [`JoinableQueue::task_done`], [`JoinableQueue::join`], [`JoinableQueue::shutdown`] |
//! | `Lock`, `RLock`, `Event`, `Semaphore`, `Barrier`, `Condition`, `Value`, `Array` | [`crate::primitives`] |
//! | `subprocess.Popen(cmd, env=...)` | [`Command`] with [`Command::queue`] |
//!
//! The function comes first, then its arguments, everywhere: [`start`]`(f, args)`,
//! [`Pool::map`]`(f, inputs)`. ([`spawn`]`(args, f)` is the deprecated old order.)
//!
//! A start + join of a trivial function costs about 1.5–3 ms (it is a `fork` + `exec` of
//! the binary); a [`Pool`] task round trip costs tens of microseconds.
//!
//! # How it works
//! [`start`] re-executes the current executable (`/proc/self/exe`) with an environment
//! variable that tells [`init`] "you are a child". The function is identified by its
//! address relative to a known symbol of the same binary (stable across a re-exec even with
//! ASLR); its arguments are serialised with serde (postcard) and sent over a pipe; the
//! return value, or the panic message, comes back over a second pipe. A [`Queue`] or
//! [`RawQueue`] among the arguments travels as its name and the child attaches on arrival.
//!
//! The function is a plain `fn(A) -> R` pointer: a `fn` item or a **non-capturing**
//! closure. A capturing closure is a type error that `cargo check` reports ("expected fn
//! pointer, found closure"). Pass everything the function needs as the `args` value.
//!
//! # ⚠ The rule: call [`init`] first in `main`
//! A child is a fresh run of the same program. **Everything `main` does before
//! [`init`] runs again in every child** — parsing arguments, opening files, printing a
//! banner, creating a queue (which then fails with `AlreadyExists` in the child). [`init`]
//! never returns in a child: it runs the function and exits, so code after it runs only in
//! the parent. Therefore make `shmq::process::init()` the first statement of `main`. Static
//! initialisers (`LazyLock`, `thread_local!`) are per process and simply run again when
//! first used in the child; that is normally what you want.
//!
//! [`start`] refuses to start a child when [`init`] has not been called in this process
//! ([`ProcessError::NotInitialized`]), so forgetting it is an error, not a silent
//! double run of your program — except in `cargo test` binaries, see below.
//!
//! # In `cargo test`
//! Integration tests have no `main` of their own. Put [`enable_test_support!()`](crate::enable_test_support)
//! at the top level of the test file: it adds a test named `shmq_process_test_support`.
//! In a test binary (one that cargo placed in a `deps` directory) a child is started as
//! `<test binary> shmq_process_test_support --nocapture --test-threads=1 -q`, so the
//! harness runs only that helper test, which calls [`init`] and runs the function. No other
//! test runs in the child. Without the macro the child runs no test at all and `join`
//! reports [`ProcessError::NoResult`] with a hint.
//!
//! # Children and their parent
//! * Every child is reaped: [`Child::join`] waits for it, and dropping an unjoined
//!   [`Child`] hands it to a small background thread that waits for it (no zombies).
//! * By default a child is killed (SIGKILL) when its parent process dies (Linux
//!   `PR_SET_PDEATHSIG`); [`Builder::die_with_parent`] turns that off. Children are forked
//!   from one long-lived helper thread, so the signal follows the parent *process*, not
//!   the thread that happened to call [`start`].
//! * stdin, stdout and stderr are inherited (a standard stream this process has closed is
//!   `/dev/null` in the child).
//! * [`active_children`] lists the children still running; [`wait_any`] waits for the
//!   first of several to end.
//!
//! # External programs
//! [`Command`] starts any program and hands it queue names in its environment
//! (`SHMQ_QUEUE_<KEY>=<name>`); the program attaches with [`queue_from_env`] (or by
//! reading the variable itself).
//!
//! # Pools and joinable queues
//! [`Pool`] keeps N worker processes and runs `map`/`imap`/`starmap`/`apply` tasks (and
//! their async forms) on them; a worker that crashes fails its task with
//! [`ProcessError::WorkerDied`] and is replaced. [`JoinableQueue`] adds `task_done` /
//! `join` across processes, with its counters in the queue's own header.
//!
//! [`Queue`]: crate::Queue
//! [`RawQueue`]: crate::RawQueue

mod child;
mod exchange;
mod joinable;
mod pool;

use std::ffi::{OsStr, OsString};
use std::io::{self, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::panic::{self, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, OnceLock};

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::{Error, Result};

pub use child::{active_children, wait_any, Child, Waitable};
pub use joinable::JoinableQueue;
pub use pool::{AsyncResult, Callbacks, Chunked, Imap, ImapUnordered, Pool, PoolBuilder, StarFn};

/// Environment variable that marks a child started by [`start`]: `<exchange fd>:<stdout fd>`.
const ENV_CHILD: &str = "SHMQ_PROCESS_CHILD";
/// The child's name ([`Builder::name`]), read (and removed from the environment) by [`init`].
const ENV_NAME: &str = "SHMQ_PROCESS_NAME";
/// Set in children started through the test harness, so that their own children are too.
const ENV_VIA_TEST: &str = "SHMQ_PROCESS_VIA_TEST";
/// Nesting depth of shmq child processes (guards against runaway recursive spawning).
const ENV_DEPTH: &str = "SHMQ_PROCESS_DEPTH";
const MAX_DEPTH: u32 = 8;
/// Prefix of the variables [`Command::queue`] sets.
pub const ENV_QUEUE_PREFIX: &str = "SHMQ_QUEUE_";
/// Name of the helper test that [`enable_test_support!`](crate::enable_test_support) adds.
pub const TEST_SUPPORT_NAME: &str = "shmq_process_test_support";

static INIT_CALLED: AtomicBool = AtomicBool::new(false);
/// Set when the helper test of [`enable_test_support!`](crate::enable_test_support) ran in
/// this process: children must then be started through the test harness too.
static TEST_SUPPORT: AtomicBool = AtomicBool::new(false);

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
    /// A [`Pool`] worker died (crashed, was killed, or exited) while it held this task.
    #[error("pool worker process {pid} died while running task {task}: {cause}")]
    WorkerDied {
        /// The dead worker's process id.
        pid: u32,
        /// The task's sequence number within the pool.
        task: u64,
        /// How it died, e.g. "killed by signal 9 (SIGKILL)".
        cause: String,
    },
    /// [`start`] was called but [`init`] was never called in this process.
    #[error("shmq::process::init() was not called: make it the first statement of main() (in integration tests, add shmq::enable_test_support!() at the top level of the test file)")]
    NotInitialized,
    /// The child's result was already taken by an earlier `join_timeout`.
    #[error("child process {pid} was already joined")]
    AlreadyJoined {
        /// Child's process id.
        pid: u32,
    },
    /// The [`Pool`] takes no new tasks: [`Pool::close`] or [`Pool::terminate`] was called
    /// (Python's `ValueError: Pool not running`).
    #[error("the pool is closed or terminated: it takes no new tasks")]
    PoolClosed,
    /// [`Pool::terminate`] (or dropping the pool) stopped this task before it finished.
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

// ---------------------------------------------------------------------------------------
// Identifying the function

/// What a child sends back: tag byte then payload.
pub(crate) enum Outcome {
    /// postcard bytes of the return value.
    Ok(Vec<u8>),
    /// Panic message.
    Panic(String),
    /// The function could not be run (argument decoding, result encoding, ...).
    Error(String),
}

impl Outcome {
    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        match self {
            Outcome::Ok(b) => {
                out.push(0);
                out.extend_from_slice(b);
            }
            Outcome::Panic(m) => {
                out.push(1);
                out.extend_from_slice(m.as_bytes());
            }
            Outcome::Error(m) => {
                out.push(2);
                out.extend_from_slice(m.as_bytes());
            }
        }
    }

    pub(crate) fn decode(b: &[u8]) -> Option<Outcome> {
        let (&tag, rest) = b.split_first()?;
        Some(match tag {
            0 => Outcome::Ok(rest.to_vec()),
            1 => Outcome::Panic(String::from_utf8_lossy(rest).into_owned()),
            2 => Outcome::Error(String::from_utf8_lossy(rest).into_owned()),
            _ => return None,
        })
    }

    /// Turn a received outcome into the caller's value or error.
    pub(crate) fn into_result<R: DeserializeOwned>(self, pid: u32) -> Result<R> {
        match self {
            Outcome::Ok(b) => postcard::from_bytes(&b).map_err(|e| {
                Error::Codec(format!("decoding the return value of child {pid}: {e}"))
            }),
            Outcome::Panic(message) => Err(ProcessError::Panicked { pid, message }.into()),
            Outcome::Error(message) => Err(ProcessError::Failed { pid, message }.into()),
        }
    }
}

/// The monomorphised trampoline a child calls: read the function, decode the args, call
/// it, encode the result. Its input is a call record made by [`Target::encode`].
type Entry = fn(&[u8]) -> Outcome;

fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "<non-string panic payload>".to_string()
    }
}

fn decode_args<A: DeserializeOwned>(args: &[u8]) -> std::result::Result<A, String> {
    postcard::from_bytes(args).map_err(|e| {
        format!(
            "decoding the arguments ({}) failed: {e} (if they contain queues: each must \
             still exist when the child starts, so keep the creating handle alive until \
             the child has attached)",
            std::any::type_name::<A>()
        )
    })
}

/// Run `f(a)`, catching a panic, and encode the return value (keeping a `Serialize`
/// impl's own error message).
fn call_one<A, R: Serialize>(f: fn(A) -> R, a: A) -> Outcome {
    match panic::catch_unwind(AssertUnwindSafe(move || f(a))) {
        Ok(r) => match postcard::to_allocvec(&r) {
            Ok(b) => Outcome::Ok(b),
            Err(e) => Outcome::Error(format!(
                "encoding the return value ({}) failed: {}",
                std::any::type_name::<R>(),
                crate::encode::describe(&r, &e)
            )),
        },
        Err(p) => Outcome::Panic(panic_message(&*p)),
    }
}

/// A call record, split: the user's function and its encoded arguments.
type Call<'a, A, R> = (fn(A) -> R, &'a [u8]);

/// Split a call record into the user's function and the encoded arguments.
///
/// # Safety
/// `call` must be a call record made by [`Target::encode`] for a `Target` of this `A` and
/// `R`, in a process running this same executable.
unsafe fn split_call<A, R>(call: &[u8]) -> std::result::Result<Call<'_, A, R>, String> {
    let Some((func, args)) = call.split_first_chunk::<8>() else {
        return Err("malformed call record (shorter than 8 bytes)".into());
    };
    // SAFETY: per the contract, the offset was computed by `Target::new::<A, R>` (or
    // `Target::chunk`) from a `fn(A) -> R` pointer into this executable.
    Ok((unsafe { func_at::<A, R>(i64::from_le_bytes(*func)) }, args))
}

fn entry<A, R>(call: &[u8]) -> Outcome
where
    A: DeserializeOwned,
    R: Serialize,
{
    // SAFETY: call records are made only by `Target::encode` in a process running this
    // same executable (checked by the bootstrap), and this trampoline is `entry::<A, R>`
    // for the `A` and `R` of that `Target`.
    let (f, args) = match unsafe { split_call::<A, R>(call) } {
        Ok(x) => x,
        Err(m) => return Outcome::Error(m),
    };
    match decode_args::<A>(args) {
        Ok(a) => call_one(f, a),
        Err(m) => Outcome::Error(m),
    }
}

/// The trampoline of a chunk of pool tasks: the arguments are a `Vec<A>`; each item is run
/// on its own (a panic fails only its item), and the outcomes come back as frames
/// ([`encode_chunk_item`]) in one `Outcome::Ok`.
fn entry_chunk<A, R>(call: &[u8]) -> Outcome
where
    A: DeserializeOwned,
    R: Serialize,
{
    // SAFETY: as in `entry`, for `entry_chunk::<A, R>` (from `Target::chunk::<A, R>`).
    let (f, args) = match unsafe { split_call::<A, R>(call) } {
        Ok(x) => x,
        Err(m) => return Outcome::Error(m),
    };
    let items = match decode_args::<Vec<A>>(args) {
        Ok(v) => v,
        Err(m) => return Outcome::Error(m),
    };
    let mut out = Vec::new();
    for a in items {
        encode_chunk_item(&call_one(f, a), &mut out);
    }
    Outcome::Ok(out)
}

/// One item of a chunk's reply: tag (u8), length (u32 LE), the [`Outcome`]'s payload.
pub(crate) fn encode_chunk_item(o: &Outcome, out: &mut Vec<u8>) {
    let (tag, bytes): (u8, &[u8]) = match o {
        Outcome::Ok(b) => (0, b),
        Outcome::Panic(m) => (1, m.as_bytes()),
        Outcome::Error(m) => (2, m.as_bytes()),
    };
    out.push(tag);
    out.extend_from_slice(&(bytes.len() as u32).to_le_bytes());
    out.extend_from_slice(bytes);
}

/// Split a chunk's reply into its items' outcomes (`None`: malformed).
pub(crate) fn decode_chunk(mut b: &[u8]) -> Option<Vec<Outcome>> {
    let mut out = Vec::new();
    while !b.is_empty() {
        let (&tag, rest) = b.split_first()?;
        let len = u32::from_le_bytes(rest.get(..4)?.try_into().ok()?) as usize;
        let body = rest.get(4..4 + len)?;
        out.push(match tag {
            0 => Outcome::Ok(body.to_vec()),
            1 => Outcome::Panic(String::from_utf8_lossy(body).into_owned()),
            2 => Outcome::Error(String::from_utf8_lossy(body).into_owned()),
            _ => return None,
        });
        b = &rest[4 + len..];
    }
    Some(out)
}

/// What a child process or pool worker runs: a trampoline for `(A, R)` and the user's
/// function, both as offsets from [`base_addr`] (stable across a re-exec with ASLR).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Target {
    /// Offset of `entry::<A, R>` (or `entry_chunk::<A, R>`).
    pub(crate) entry: i64,
    /// Offset of the `fn(A) -> R`.
    func: i64,
}

impl Target {
    /// The target that runs `f` on one argument. Fails when `f` lives in a shared library
    /// rather than in this executable: its offset would mean nothing in the re-executed
    /// child.
    pub(crate) fn new<A, R>(f: fn(A) -> R) -> Result<Target>
    where
        A: DeserializeOwned,
        R: Serialize,
    {
        Self::with_entry(entry::<A, R>, f as usize)
    }

    /// The target that runs `f` on each of a chunk (a `Vec<A>`) of arguments.
    pub(crate) fn chunk<A, R>(f: fn(A) -> R) -> Result<Target>
    where
        A: DeserializeOwned,
        R: Serialize,
    {
        Self::with_entry(entry_chunk::<A, R>, f as usize)
    }

    fn with_entry(entry: Entry, func: usize) -> Result<Target> {
        let entry = entry as usize;
        if !same_object(func, base_addr()) || !same_object(entry, base_addr()) {
            return Err(Error::InvalidArgument(
                "shmq::process runs functions of the executable itself; this one is in a \
                 shared library (wrap it in a fn or closure of your program)"
                    .into(),
            ));
        }
        Ok(Target {
            entry: entry.wrapping_sub(base_addr()) as i64,
            func: func.wrapping_sub(base_addr()) as i64,
        })
    }

    /// The call record for `args`: the function's offset, then the postcard args (a
    /// `Serialize` impl's own error message is kept; `what` names them in the error).
    pub(crate) fn encode<A: Serialize + ?Sized>(&self, args: &A, what: &str) -> Result<Vec<u8>> {
        postcard::to_extend(args, self.func.to_le_bytes().to_vec()).map_err(|e| {
            Error::Codec(format!(
                "encoding {what}: {}",
                crate::encode::describe(args, &e)
            ))
        })
    }
}

/// Whether two code addresses are in the same loaded object (executable or shared
/// library), as far as the dynamic loader can tell; `true` when it cannot (a static
/// executable is one object).
fn same_object(a: usize, b: usize) -> bool {
    fn base(addr: usize) -> Option<usize> {
        // SAFETY: Dl_info is plain data that dladdr fills in; an all-zero value is valid.
        let mut info: libc::Dl_info = unsafe { std::mem::zeroed() };
        // SAFETY: dladdr only reads the loader's tables for `addr` and writes `info`.
        let ok = unsafe { libc::dladdr(addr as *const libc::c_void, &mut info) };
        (ok != 0 && !info.dli_fbase.is_null()).then_some(info.dli_fbase as usize)
    }
    match (base(a), base(b)) {
        (Some(x), Some(y)) => x == y,
        _ => true,
    }
}

/// The user's function at `offset`.
///
/// # Safety
/// `offset` must have been produced by [`Target::new::<A, R>`] (or `Target::chunk`) in a
/// process running this very executable.
unsafe fn func_at<A, R>(offset: i64) -> fn(A) -> R {
    let addr = base_addr().wrapping_add(offset as usize);
    // SAFETY: per the contract, `addr` is the address of a function of type `fn(A) -> R`
    // in this executable; fn pointers and usize have the same size.
    unsafe { std::mem::transmute::<usize, fn(A) -> R>(addr) }
}

/// Compile-time check that `F` is zero-sized (a `fn` item or a non-capturing closure):
/// [`StarFn`](pool::StarFn) turns such an `F` into a plain `fn` pointer.
const fn assert_zero_sized<F>() {
    const {
        assert!(
            std::mem::size_of::<F>() == 0,
            "shmq::process needs a fn item or a non-capturing closure: pass captured values through the arguments instead"
        )
    }
}

/// The value of the zero-sized `F`.
pub(crate) fn conjure<F: Copy>() -> F {
    assert_zero_sized::<F>();
    // SAFETY: `F` is zero-sized (asserted at compile time by `assert_zero_sized`), so a
    // value of it has no bytes that could be invalid, and it is `Copy` (no drop glue, no
    // ownership to duplicate). The caller held a value of this exact type (`StarFn::into_fn`
    // takes one), so the type is inhabited: a `fn` item or a non-capturing closure, whose
    // every value is the same.
    unsafe { std::ptr::NonNull::<F>::dangling().as_ptr().read() }
}

/// Base symbol that offsets are taken from.
fn base_addr() -> usize {
    init as fn() as usize
}

/// A second symbol: parent and child compare its offset to check they run the same binary.
fn check_offset() -> i64 {
    (run_child as fn(&OsStr) -> i32 as usize).wrapping_sub(base_addr()) as i64
}

/// The trampoline at `offset` (in the same binary as the process that computed it).
///
/// # Safety
/// `offset` must be a [`Target::entry`] made in a process running this very executable
/// (the bootstrap's check offset vouches for that).
pub(crate) unsafe fn entry_at(offset: i64) -> Entry {
    let addr = base_addr().wrapping_add(offset as usize);
    // SAFETY: per the contract, `addr` is the address of an `entry::<A, R>` or
    // `entry_chunk::<A, R>` function in this binary, whose type is `Entry`; fn pointers and
    // usize have the same size.
    unsafe { std::mem::transmute::<usize, Entry>(addr) }
}

// ---------------------------------------------------------------------------------------
// The child side

/// Dispatch point for child processes. **Call it first thing in `main`.**
///
/// In the parent (no child marker in the environment) it only records that it was called
/// and returns at once. In a child started by [`start`] it runs the function, sends its
/// return value (or panic message) to the parent and exits the process — it never returns.
/// Everything before this call runs again in every child; see the
/// [module docs](self#-the-rule-call-init-first-in-main).
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

/// Called by the helper test that [`enable_test_support!`](crate::enable_test_support)
/// adds; not for direct use.
#[doc(hidden)]
pub fn __test_support_init() {
    TEST_SUPPORT.store(true, Ordering::SeqCst);
    dispatch_child();
}

fn dispatch_child() {
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

/// Whether this process is a child started by [`start`] (before [`init`] consumed the
/// marker). Useful in a test binary to skip expensive set-up.
///
/// ```
/// assert!(!shmq::process::is_child());
/// ```
pub fn is_child() -> bool {
    std::env::var_os(ENV_CHILD).is_some()
}

fn parse_fd(s: Option<&str>) -> Option<RawFd> {
    s?.parse::<RawFd>().ok()
}

fn set_cloexec(fd: RawFd) {
    // SAFETY: fcntl on an fd number has no memory-safety preconditions; errors are ignored
    // (a bad fd just fails).
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFD);
        if flags >= 0 {
            libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC);
        }
    }
}

static NAME: OnceLock<Option<String>> = OnceLock::new();

/// In a child started with [`Builder::name`]: that name (Python's
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
    let mut bytes: Vec<u8> = name.bytes().filter(|&b| b != 0).take(15).collect();
    // The main thread's name is the process's; /proc/self/comm is the main thread's.
    let _ = std::fs::write("/proc/self/comm", &bytes);
    bytes.push(0);
    // SAFETY: PR_SET_NAME reads a NUL-terminated string of at most 16 bytes.
    unsafe { libc::prctl(libc::PR_SET_NAME, bytes.as_ptr() as libc::c_ulong, 0, 0, 0) };
}

fn run_child(spec: &OsStr) -> i32 {
    let spec = spec.to_string_lossy();
    let mut parts = spec.split(':');
    let (Some(x_fd), Some(stdout_fd)) = (parse_fd(parts.next()), parse_fd(parts.next())) else {
        eprintln!("shmq::process: malformed {ENV_CHILD}={spec:?}");
        return 2;
    };
    for fd in [x_fd, stdout_fd] {
        if fd >= 0 {
            set_cloexec(fd);
        }
    }
    if stdout_fd >= 0 {
        // SAFETY: dup2/close on fds the parent handed us; fd 1 is replaced atomically.
        unsafe {
            libc::dup2(stdout_fd, 1);
            libc::close(stdout_fd);
        }
    }
    let name = std::env::var(ENV_NAME).ok();
    std::env::remove_var(ENV_NAME);
    if let Some(n) = &name {
        set_process_name(n);
    }
    let _ = NAME.set(name);
    // SAFETY: the parent passed this descriptor to this process alone, and nothing else in
    // this process owns it.
    let x = unsafe { exchange::adopt(x_fd) };
    let boot = match exchange::read_call(&x) {
        Ok(b) => b,
        Err(e) => {
            eprintln!("shmq::process: reading the call from the parent failed: {e}");
            return 2;
        }
    };
    let outcome = match decode_bootstrap(&boot) {
        Err(msg) => Outcome::Error(msg),
        Ok((offset, args)) => {
            let _ = exchange::mark_running(&x);
            // SAFETY: decode_bootstrap checked that the parent runs this same binary (equal
            // check offsets), and the offset came from `Target::new` there.
            let f = unsafe { entry_at(offset) };
            f(args)
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

const BOOT_MAGIC: u32 = 0x5348_5031; // "SHP1"

fn encode_bootstrap(offset: i64, args: &[u8]) -> Vec<u8> {
    let mut b = Vec::with_capacity(20 + args.len());
    b.extend_from_slice(&BOOT_MAGIC.to_le_bytes());
    b.extend_from_slice(&check_offset().to_le_bytes());
    b.extend_from_slice(&offset.to_le_bytes());
    b.extend_from_slice(args);
    b
}

fn decode_bootstrap(b: &[u8]) -> std::result::Result<(i64, &[u8]), String> {
    if b.len() < 20 || b[..4] != BOOT_MAGIC.to_le_bytes() {
        return Err("the parent did not send a valid bootstrap message".into());
    }
    let check = i64::from_le_bytes(b[4..12].try_into().unwrap());
    if check != check_offset() {
        return Err("the parent runs a different executable than this child (was the binary rebuilt or replaced?)".into());
    }
    let offset = i64::from_le_bytes(b[12..20].try_into().unwrap());
    Ok((offset, &b[20..]))
}

// ---------------------------------------------------------------------------------------
// The parent side

/// A job for the spawner thread.
type SpawnJob = (
    std::process::Command,
    mpsc::SyncSender<io::Result<std::process::Child>>,
);

/// Fork every child from one long-lived thread, so that `PR_SET_PDEATHSIG` (which fires
/// when the *thread* that forked exits) follows the lifetime of the whole process.
fn spawn_from_spawner_thread(cmd: std::process::Command) -> io::Result<std::process::Child> {
    static SPAWNER: OnceLock<mpsc::Sender<SpawnJob>> = OnceLock::new();
    let tx = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<SpawnJob>();
        std::thread::Builder::new()
            .name("shmq-spawner".into())
            .spawn(move || {
                for (mut cmd, reply) in rx {
                    let _ = reply.send(cmd.spawn());
                }
            })
            .expect("starting the shmq spawner thread");
        tx
    });
    let (rtx, rrx) = mpsc::sync_channel(1);
    tx.send((cmd, rtx))
        .map_err(|_| io::Error::other("shmq spawner thread is gone"))?;
    rrx.recv()
        .map_err(|_| io::Error::other("shmq spawner thread is gone"))?
}

/// Whether descriptor `fd` is open in this process.
fn fd_open(fd: RawFd) -> bool {
    // SAFETY: F_GETFD on a descriptor number has no memory-safety preconditions.
    unsafe { libc::fcntl(fd, libc::F_GETFD) >= 0 }
}

/// Whether this process is a cargo test (or bench) binary: cargo puts those in `deps/`.
fn in_cargo_test_binary() -> bool {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.ends_with("deps")))
        .unwrap_or(false)
}

/// How to start a child: `Ok(true)` through the test harness, `Ok(false)` as a plain
/// re-execution, or `NotInitialized` when neither is safe (a normal binary that never
/// called `init()` would run its whole `main` again in the child).
fn launch_mode(init_called: bool, test_support: bool, cargo_test_binary: bool) -> Result<bool> {
    if test_support || (!init_called && cargo_test_binary) {
        Ok(true)
    } else if init_called {
        Ok(false)
    } else {
        Err(ProcessError::NotInitialized.into())
    }
}

/// Prepare the `pre_exec` hook: optionally die with the parent, and let `keep` fds
/// survive the exec.
fn install_pre_exec(cmd: &mut std::process::Command, die_with_parent: bool, keep: Vec<RawFd>) {
    // SAFETY: getpid has no preconditions.
    let parent = unsafe { libc::getpid() };
    // SAFETY: the closure runs between fork and exec and only makes async-signal-safe
    // system calls (prctl, getppid, fcntl, _exit) on plain integers; it allocates nothing.
    unsafe {
        cmd.pre_exec(move || {
            if die_with_parent {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) != 0 {
                    return Err(io::Error::last_os_error());
                }
                // The parent may have died before prctl took effect.
                if libc::getppid() != parent {
                    libc::_exit(1);
                }
            }
            for &fd in &keep {
                let flags = libc::fcntl(fd, libc::F_GETFD);
                if flags < 0 || libc::fcntl(fd, libc::F_SETFD, flags & !libc::FD_CLOEXEC) < 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
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
            die_with_parent: true,
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
    /// line's first word, [`Child::name`] returns it in the parent and [`current_name`]
    /// in the child. Without a name a child shows up under the executable's name.
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
        let target = Target::new(f)?;
        let call = target.encode(&args, "the child's arguments")?;
        self.spawn_entry(target.entry, &call)
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

    fn spawn_entry<R>(&self, offset: i64, args: &[u8]) -> Result<Child<R>> {
        // Test mode when the test-support helper ran here (we are a child of a test binary,
        // or a test binary whose helper test already ran), or when no init() was called
        // in a cargo test binary. Never re-exec a test binary without the helper filter:
        // that would run the whole test suite in the child.
        let test_mode = launch_mode(
            INIT_CALLED.load(Ordering::SeqCst),
            TEST_SUPPORT.load(Ordering::SeqCst) || std::env::var_os(ENV_VIA_TEST).is_some(),
            in_cargo_test_binary(),
        )?;
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
        // The call and, later, the outcome travel in a memfd (numbered above 2, so that it
        // never stands in for a standard stream this process has closed).
        let exchange = exchange::create(&encode_bootstrap(offset, args))?;
        let mut cmd = std::process::Command::new("/proc/self/exe");
        let mut keep = vec![exchange.as_raw_fd()];
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
            cmd.args([TEST_SUPPORT_NAME, "--nocapture", "--test-threads=1", "-q"]);
            cmd.stdout(std::process::Stdio::null());
            if fd_open(1) {
                // SAFETY: F_DUPFD_CLOEXEC on fd 1 creates a new fd owned by us (or fails).
                let fd = unsafe { libc::fcntl(1, libc::F_DUPFD_CLOEXEC, 3) };
                if fd < 0 {
                    return Err(Error::last_os("dup(stdout)"));
                }
                // SAFETY: `fd` was just created and nothing else owns it.
                let fd = unsafe { OwnedFd::from_raw_fd(fd) };
                keep.push(fd.as_raw_fd());
                Some(fd)
            } else {
                None
            }
        } else {
            None
        };
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
        cmd.env(
            ENV_CHILD,
            format!(
                "{}:{}",
                exchange.as_raw_fd(),
                saved_stdout.as_ref().map_or(-1, |f| f.as_raw_fd())
            ),
        );
        match &self.name {
            Some(n) => {
                cmd.env(ENV_NAME, n);
            }
            None => {
                cmd.env_remove(ENV_NAME);
            }
        }
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
/// re-attach by name in the child. `join` returns what `f` returns. Needs [`init`] at the
/// top of `main` (or [`enable_test_support!`](crate::enable_test_support) in a test file).
///
/// The function comes first, then its arguments, everywhere in `shmq::process` (as in
/// [`Pool::map`] and Python).
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

// ---------------------------------------------------------------------------------------
// External commands

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
            die_with_parent: true,
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

/// Make [`start`](crate::process::start) and [`Pool`](crate::process::Pool) work inside this test binary (`tests/*.rs`, or a
/// `#[cfg(test)]` module). Invoke once at the top level of the test file.
///
/// It adds a test named `shmq_process_test_support`; children re-run the test binary with
/// that test as the only filter, and the test calls [`init`](crate::process::init). In the
/// parent the helper test does nothing and passes.
///
/// A test file then uses the helpers like any program would:
///
/// ```text
/// // tests/workers.rs
/// shmq::enable_test_support!();
///
/// #[test]
/// fn square_in_a_child() {
///     let c = shmq::process::start(|x| x * x, 7u64).unwrap();
///     assert_eq!(c.join().unwrap(), 49);
/// }
/// ```
///
/// The invocation itself (here in a doctest, where it adds nothing that runs):
///
/// ```
/// shmq::enable_test_support!();
/// ```
#[macro_export]
macro_rules! enable_test_support {
    () => {
        #[test]
        fn shmq_process_test_support() {
            $crate::process::__test_support_init();
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    crate::enable_test_support!();

    #[test]
    fn bootstrap_roundtrip() {
        let off = 1234;
        let b = encode_bootstrap(off, b"xyz");
        let (o, a) = decode_bootstrap(&b).unwrap();
        assert_eq!((o, a), (off, &b"xyz"[..]));
        assert!(decode_bootstrap(&b[..10]).is_err());
    }

    #[test]
    fn entry_runs_in_process() {
        fn double(x: u32) -> u32 {
            x * 2
        }
        let target = Target::new(double as fn(u32) -> u32).unwrap();
        // SAFETY: the offset comes from Target::new in this same process.
        let f = unsafe { entry_at(target.entry) };
        let call = target.encode(&21u32, "the arguments").unwrap();
        match f(&call) {
            Outcome::Ok(b) => assert_eq!(postcard::from_bytes::<u32>(&b).unwrap(), 42),
            _ => panic!("unexpected outcome"),
        }
    }

    #[test]
    fn launch_mode_rules() {
        // A binary that called init(): plain re-exec.
        assert!(!launch_mode(true, false, false).unwrap());
        // A bench with its own main in deps/ that called init(): plain too.
        assert!(!launch_mode(true, false, true).unwrap());
        // A test binary (helper ran, or no init in deps/): through the harness.
        assert!(launch_mode(false, true, true).unwrap());
        assert!(launch_mode(true, true, true).unwrap());
        assert!(launch_mode(false, false, true).unwrap());
        // A normal binary that forgot init(): refuse rather than re-run main.
        assert!(matches!(
            launch_mode(false, false, false),
            Err(Error::Process(ProcessError::NotInitialized))
        ));
    }

    #[test]
    fn spawn_in_unit_test() {
        let c = start(|x| x + 1, 5u8).unwrap();
        assert_eq!(c.join().unwrap(), 6u8);
        // The old argument order still works, deprecated.
        #[allow(deprecated)]
        let c = spawn(5u8, |x| x + 2).unwrap();
        assert_eq!(c.join().unwrap(), 7u8);
    }
}
