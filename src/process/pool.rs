//! [`Pool`]: N worker processes that run tasks sent over shmq queues.
//!
//! Design: one task queue per worker (so the pool always knows which tasks a worker holds)
//! and one shared result queue. A dispatcher thread in the parent hands tasks to workers
//! (at most `prefetch` outstanding each), routes results back to the callers, and watches
//! the workers: when one dies, tasks still sitting unread in its queue are handed to other
//! workers, the task it was running fails with [`ProcessError::WorkerDied`], and a fresh
//! worker takes its place. A worker that reached `maxtasksperchild` exits by itself and is
//! replaced the same way, quietly. User callbacks run on a second thread of the pool, so a
//! slow callback never holds up the dispatch of tasks.

use std::collections::{HashMap, VecDeque};
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{mpsc, Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::child::describe_status;
use super::{conjure, decode_chunk, entry_at, Builder, Child, Outcome, ProcessError, Target};
use crate::error::{Error, Result};
use crate::{Options, RawQueue};

const TAG_OK: u8 = 0;
const TAG_PANIC: u8 = 1;
const TAG_ERROR: u8 = 2;
const TAG_WAKE: u8 = 3;

/// Task record: id (u64 LE), entry offset (i64 LE), postcard args.
fn encode_task(id: u64, entry: i64, args: &[u8]) -> Vec<u8> {
    let mut b = Vec::with_capacity(16 + args.len());
    b.extend_from_slice(&id.to_le_bytes());
    b.extend_from_slice(&entry.to_le_bytes());
    b.extend_from_slice(args);
    b
}

fn decode_task(b: &[u8]) -> Option<(u64, i64, &[u8])> {
    if b.len() < 16 {
        return None;
    }
    let id = u64::from_le_bytes(b[..8].try_into().ok()?);
    let entry = i64::from_le_bytes(b[8..16].try_into().ok()?);
    Some((id, entry, &b[16..]))
}

/// Result record: tag (u8), task id (u64 LE), payload.
fn encode_result(tag: u8, id: u64, payload: &[u8], out: &mut Vec<u8>) {
    out.clear();
    out.push(tag);
    out.extend_from_slice(&id.to_le_bytes());
    out.extend_from_slice(payload);
}

/// What a worker process is started with: its task queue, the result queue, the
/// initializer (trampoline offset and encoded arguments) and `maxtasksperchild` (0: none).
type WorkerArgs = (RawQueue, RawQueue, Option<(i64, Vec<u8>)>, u64);

/// The worker process's main loop.
fn worker_main((tasks, results, init, max_tasks): WorkerArgs) {
    if let Some((offset, args)) = init {
        // SAFETY: the offset was computed by `Target::new` in the parent, which runs this
        // same executable (the worker was started by re-executing it and passed the
        // bootstrap's binary check).
        let f = unsafe { entry_at(offset) };
        match f(&args) {
            Outcome::Ok(_) => {}
            Outcome::Panic(m) => panic!("the pool's initializer panicked: {m}"),
            Outcome::Error(m) => panic!("the pool's initializer could not run: {m}"),
        }
    }
    let mut buf = Vec::new();
    let mut out = Vec::new();
    let mut done = 0u64;
    while max_tasks == 0 || done < max_tasks {
        match tasks.get_into(&mut buf) {
            Ok(_) => {}
            Err(Error::Closed) => return,
            Err(e) => panic!("pool worker: reading its task queue failed: {e}"),
        }
        let Some((id, offset, args)) = decode_task(&buf) else {
            panic!("pool worker: malformed task record");
        };
        // SAFETY: as for the initializer: an offset computed by `Target::new` or
        // `Target::chunk` in the parent, which runs this same executable.
        let f = unsafe { entry_at(offset) };
        match f(args) {
            Outcome::Ok(b) => encode_result(TAG_OK, id, &b, &mut out),
            Outcome::Panic(m) => encode_result(TAG_PANIC, id, m.as_bytes(), &mut out),
            Outcome::Error(m) => encode_result(TAG_ERROR, id, m.as_bytes(), &mut out),
        }
        let r = match results.put(&out) {
            Err(Error::TooLarge { size, max }) => {
                let m = format!("the task's result ({size} bytes encoded) is larger than the pool's result queue accepts ({max} bytes); raise PoolBuilder::capacity");
                encode_result(TAG_ERROR, id, m.as_bytes(), &mut out);
                results.put(&out)
            }
            r => r,
        };
        if let Err(Error::Closed) = r {
            return;
        }
        r.expect("pool worker: writing a result failed");
        done += 1;
    }
}

/// A copy of an error (errors hold an `io::Error`, which is not `Clone`: it is rebuilt
/// from its kind and message).
fn clone_error(e: &Error) -> Error {
    match e {
        Error::Full => Error::Full,
        Error::Empty => Error::Empty,
        Error::Timeout => Error::Timeout,
        Error::Closed => Error::Closed,
        Error::TooLarge { size, max } => Error::TooLarge {
            size: *size,
            max: *max,
        },
        Error::NotFound(s) => Error::NotFound(s.clone()),
        Error::AlreadyExists { name, stale } => Error::AlreadyExists {
            name: name.clone(),
            stale: *stale,
        },
        Error::InvalidName { name, reason } => Error::InvalidName {
            name: name.clone(),
            reason,
        },
        Error::InvalidArgument(s) => Error::InvalidArgument(s.clone()),
        Error::Incompatible { name, reason } => Error::Incompatible {
            name: name.clone(),
            reason: reason.clone(),
        },
        Error::Corrupt(s) => Error::Corrupt(s.clone()),
        Error::Codec(s) => Error::Codec(s.clone()),
        Error::Io(e) => Error::Io(std::io::Error::new(e.kind(), e.to_string())),
        Error::Process(p) => Error::Process(p.clone()),
    }
}

// ---------------------------------------------------------------------------------------
// Multi-argument functions (starmap)

/// A function of several arguments that [`Pool::starmap`] calls with the fields of a
/// tuple: `Fn(A) -> R` takes `(A,)`, `Fn(A, B) -> R` takes `(A, B)`, and so on up to six
/// arguments — Python's `starmap(f, [(a, b), …])` calling `f(a, b)`.
///
/// It must be a `fn` item or a non-capturing closure: a closure that captures is refused at
/// build time (a `const` assertion that its type is zero-sized, since it is called by its
/// type in the worker).
pub trait StarFn<Args, R>: Copy + Send + 'static {
    /// Call the function with the tuple's fields as its arguments.
    #[doc(hidden)]
    fn call_star(self, args: Args) -> R;
}

macro_rules! star_fn {
    ($($T:ident $v:ident),+) => {
        impl<F, R, $($T),+> StarFn<($($T,)+), R> for F
        where
            F: Fn($($T),+) -> R + Copy + Send + 'static,
        {
            fn call_star(self, ($($v,)+): ($($T,)+)) -> R {
                self($($v),+)
            }
        }
    };
}
/// The plain function pointer `starmap` runs: it calls the zero-sized `F` (conjured: a
/// `fn` item or non-capturing closure has one value) with the fields of the tuple.
fn star_trampoline<F: StarFn<Args, R>, Args, R>(args: Args) -> R {
    conjure::<F>().call_star(args)
}

fn star_fn<F: StarFn<Args, R>, Args, R>() -> fn(Args) -> R {
    star_trampoline::<F, Args, R>
}

star_fn!(A a);
star_fn!(A a, B b);
star_fn!(A a, B b, C c);
star_fn!(A a, B b, C c, D d);
star_fn!(A a, B b, C c, D d, E e);
star_fn!(A a, B b, C c, D d, E e, G g);

// ---------------------------------------------------------------------------------------
// Replies, results and callbacks

/// What a task sends back: the postcard bytes of `R` (or of a chunk's frames), or the
/// failure.
type Reply = Result<Vec<u8>>;

/// Where a task's reply goes. Called once by the dispatcher thread with the worker's pid;
/// a sink dropped without being called (the dispatcher went away) reports
/// [`ProcessError::Terminated`], so no caller waits for ever.
struct Sink {
    f: Option<Box<dyn FnOnce(u32, Reply) + Send>>,
    task: u64,
}

impl Sink {
    fn new(f: impl FnOnce(u32, Reply) + Send + 'static) -> Sink {
        Sink {
            f: Some(Box::new(f)),
            task: u64::MAX,
        }
    }

    fn send(mut self, pid: u32, r: Reply) {
        if let Some(f) = self.f.take() {
            f(pid, r)
        }
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        if let Some(f) = self.f.take() {
            f(0, Err(ProcessError::Terminated { task: self.task }.into()))
        }
    }
}

/// The replies of a chunk of `n` items, one per item, from the chunk task's reply.
fn split_chunk(pid: u32, n: usize, reply: Reply) -> Vec<Reply> {
    let frames = match reply {
        Err(e) => return (0..n).map(|_| Err(clone_error(&e))).collect(),
        Ok(f) => f,
    };
    match decode_chunk(&frames) {
        Some(items) if items.len() == n => items
            .into_iter()
            .map(|o| match o {
                Outcome::Ok(b) => Ok(b),
                Outcome::Panic(message) => Err(ProcessError::Panicked { pid, message }.into()),
                Outcome::Error(message) => Err(ProcessError::Failed { pid, message }.into()),
            })
            .collect(),
        _ => (0..n)
            .map(|_| {
                Err(ProcessError::Failed {
                    pid,
                    message: "malformed reply of a chunk of tasks".into(),
                }
                .into())
            })
            .collect(),
    }
}

fn decode_reply<R: DeserializeOwned>(bytes: &[u8]) -> Result<R> {
    postcard::from_bytes(bytes).map_err(|e| Error::Codec(format!("decoding a task's result: {e}")))
}

fn decode_one<R: DeserializeOwned>(v: &[Vec<u8>]) -> Result<R> {
    decode_reply(v.first().map_or(&[][..], |b| b))
}

fn decode_all<T: DeserializeOwned>(v: &[Vec<u8>]) -> Result<Vec<T>> {
    v.iter().map(|b| decode_reply(b)).collect()
}

type ErrorCallback = Box<dyn FnOnce(&Error) + Send>;

/// What completes an [`AsyncResult`]: the encoded value(s), or the error.
type Completion = Box<dyn FnOnce(Result<Vec<Vec<u8>>>) + Send>;

/// The shared state behind an [`AsyncResult`].
struct Slot {
    state: Mutex<SlotState>,
    cv: Condvar,
}

enum SlotState {
    Pending,
    Done(Result<Vec<Vec<u8>>>),
    Taken { ok: bool },
}

impl Slot {
    fn new() -> Arc<Slot> {
        Arc::new(Slot {
            state: Mutex::new(SlotState::Pending),
            cv: Condvar::new(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SlotState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn set(&self, r: Result<Vec<Vec<u8>>>) {
        let mut s = self.lock();
        if let SlotState::Pending = *s {
            *s = SlotState::Done(r);
        }
        drop(s);
        self.cv.notify_all();
    }

    /// Wait until the result is in; `false` if `deadline` passed first.
    fn wait(&self, deadline: Option<Instant>) -> bool {
        let mut s = self.lock();
        while let SlotState::Pending = *s {
            match deadline {
                None => s = self.cv.wait(s).unwrap_or_else(|p| p.into_inner()),
                Some(d) => {
                    let now = Instant::now();
                    if now >= d {
                        return false;
                    }
                    s = self
                        .cv
                        .wait_timeout(s, d - now)
                        .unwrap_or_else(|p| p.into_inner())
                        .0;
                }
            }
        }
        true
    }
}

/// Callbacks for the `*_async_with` calls, run in this process on the pool's callback
/// thread when the result arrives (Python's `callback=` and `error_callback=`): `on_success`
/// gets the value, `on_error` the error. The result's [`AsyncResult::get`] returns only
/// after the callback has run, as in Python. Callbacks run one at a time, in the order
/// results arrive; keep them short. A panicking callback is reported on stderr and
/// otherwise ignored.
///
/// ```
/// # shmq::process::init();
/// use shmq::process::{Callbacks, Pool};
/// use std::sync::mpsc;
/// let pool = Pool::new(1)?;
/// let (tx, rx) = mpsc::channel();
/// let r = pool.apply_async_with(
///     |n: u32| n * 2,
///     21,
///     Callbacks::new()
///         .on_success(move |v: u32| tx.send(v).unwrap())
///         .on_error(|e| eprintln!("task failed: {e}")),
/// )?;
/// assert_eq!(r.get()?, 42);
/// assert_eq!(rx.recv().unwrap(), 42); // the callback has run already
/// # Ok::<(), shmq::Error>(())
/// ```
pub struct Callbacks<R> {
    ok: Option<Box<dyn FnOnce(R) + Send>>,
    err: Option<ErrorCallback>,
}

impl<R> Default for Callbacks<R> {
    fn default() -> Self {
        Callbacks {
            ok: None,
            err: None,
        }
    }
}

impl<R> Callbacks<R> {
    /// No callbacks.
    pub fn new() -> Self {
        Callbacks::default()
    }

    /// Run `f(value)` when the task succeeds (Python's `callback`).
    pub fn on_success(mut self, f: impl FnOnce(R) + Send + 'static) -> Self {
        self.ok = Some(Box::new(f));
        self
    }

    /// Run `f(&error)` when the task fails (Python's `error_callback`).
    pub fn on_error(mut self, f: impl FnOnce(&Error) + Send + 'static) -> Self {
        self.err = Some(Box::new(f));
        self
    }

    fn is_empty(&self) -> bool {
        self.ok.is_none() && self.err.is_none()
    }
}

/// The pending result of [`Pool::apply_async`], [`Pool::map_async`] and
/// [`Pool::starmap_async`] — Python's `AsyncResult`.
///
/// ```
/// # shmq::process::init();
/// use std::time::Duration;
/// let pool = shmq::process::Pool::new(1)?;
/// let r = pool.apply_async(|n: u32| n + 1, 41)?;
/// r.wait();
/// assert!(r.ready());
/// assert_eq!(r.successful(), Some(true));
/// assert_eq!(r.get_timeout(Duration::from_secs(60))?, 42);
/// # Ok::<(), shmq::Error>(())
/// ```
pub struct AsyncResult<R> {
    slot: Arc<Slot>,
    decode: fn(&[Vec<u8>]) -> Result<R>,
}

impl<R> std::fmt::Debug for AsyncResult<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AsyncResult")
            .field("ready", &self.ready())
            .finish()
    }
}

impl<R> AsyncResult<R> {
    /// Whether the result has arrived (Python's `ready()`).
    pub fn ready(&self) -> bool {
        !matches!(*self.slot.lock(), SlotState::Pending)
    }

    /// Whether the task succeeded: `None` while it is not [`ready`](Self::ready) (where
    /// Python raises `ValueError`).
    pub fn successful(&self) -> Option<bool> {
        match &*self.slot.lock() {
            SlotState::Pending => None,
            SlotState::Done(r) => Some(r.is_ok()),
            SlotState::Taken { ok } => Some(*ok),
        }
    }

    /// Wait until the result has arrived (Python's `wait()`).
    pub fn wait(&self) {
        self.slot.wait(None);
    }

    /// Wait at most `timeout`; whether the result has arrived (Python's `wait(timeout)`).
    pub fn wait_timeout(&self, timeout: Duration) -> bool {
        self.slot.wait(Instant::now().checked_add(timeout))
    }

    fn take(&self) -> Result<R> {
        let mut s = self.slot.lock();
        let r = match std::mem::replace(&mut *s, SlotState::Taken { ok: false }) {
            SlotState::Done(r) => r,
            SlotState::Taken { ok } => {
                *s = SlotState::Taken { ok };
                return Err(Error::InvalidArgument(
                    "this AsyncResult's value was taken already by an earlier get".into(),
                ));
            }
            SlotState::Pending => unreachable!("take after wait"),
        };
        *s = SlotState::Taken { ok: r.is_ok() };
        drop(s);
        r.and_then(|v| (self.decode)(&v))
    }

    /// Wait for the result.
    pub fn get(self) -> Result<R> {
        self.slot.wait(None);
        self.take()
    }

    /// Wait at most `timeout` ([`Error::Timeout`]; the handle stays usable). The value is
    /// handed out once: a later `get` fails with [`Error::InvalidArgument`].
    pub fn get_timeout(&self, timeout: Duration) -> Result<R> {
        if !self.wait_timeout(timeout) {
            return Err(Error::Timeout);
        }
        self.take()
    }
}

// ---------------------------------------------------------------------------------------
// The pool

struct Task {
    id: u64,
    entry: i64,
    args: Vec<u8>,
    sink: Sink,
}

enum Cmd {
    Submit(Task),
    Close,
    Terminate,
}

/// Options for a [`Pool`] — the arguments of Python's `Pool(processes, initializer,
/// initargs, maxtasksperchild)` and a few more.
///
/// ```
/// # shmq::process::init();
/// let pool = shmq::process::Pool::builder(2)
///     .capacity(1 << 22)
///     .prefetch(2)
///     .initializer(|greeting: String| std::env::set_var("GREETING", greeting), "hi".to_string())
///     .max_tasks_per_child(100)
///     .build()?;
/// assert_eq!(pool.apply(|()| std::env::var("GREETING").unwrap(), ())?, "hi");
/// # Ok::<(), shmq::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct PoolBuilder {
    workers: usize,
    capacity: usize,
    prefetch: usize,
    die_with_parent: bool,
    init: Option<(i64, Vec<u8>)>,
    init_error: Option<String>,
    max_tasks: u64,
    name: String,
}

impl PoolBuilder {
    /// Ring capacity of each worker's task queue and of the result queue (default 1 MiB);
    /// bounds the size of one task's arguments and of one result.
    pub fn capacity(mut self, bytes: usize) -> Self {
        self.capacity = bytes;
        self
    }

    /// Tasks handed to a worker ahead of time (default 2; at least 1). More hides the
    /// dispatch round trip for tiny tasks; fewer balances long tasks better.
    pub fn prefetch(mut self, n: usize) -> Self {
        self.prefetch = n.max(1);
        self
    }

    /// Kill workers when this process dies (default `true`).
    pub fn die_with_parent(mut self, yes: bool) -> Self {
        self.die_with_parent = yes;
        self
    }

    /// Run `f(args)` once in every worker when it starts, before its first task (Python's
    /// `initializer` and `initargs`): open files, set up logging, warm a cache. A worker
    /// whose initializer panics dies; the pool starts another, and gives up (every task
    /// fails) after three workers in a row died that way.
    pub fn initializer<A>(mut self, f: fn(A), args: A) -> Self
    where
        A: Serialize + DeserializeOwned,
    {
        let call = Target::new(f).and_then(|t| {
            t.encode(&args, "the pool initializer's arguments")
                .map(|b| (t.entry, b))
        });
        match call {
            Ok(c) => {
                self.init = Some(c);
                self.init_error = None;
            }
            Err(e) => self.init_error = Some(e.to_string()),
        }
        self
    }

    /// Replace a worker by a fresh process after it has run `n` tasks (Python's
    /// `maxtasksperchild`; default 0: never). Frees what a long-lived worker would leak.
    /// A chunk of tasks ([`Pool::chunked`]) counts as one.
    pub fn max_tasks_per_child(mut self, n: u64) -> Self {
        self.max_tasks = n;
        self
    }

    /// The workers' process name, as `ps`, `top` and `pgrep` show it (default
    /// `"shmq-worker"`; see [`Builder::name`]).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Start the workers.
    pub fn build(self) -> Result<Pool> {
        Pool::start(self)
    }
}

const RUNNING: u8 = 0;
const CLOSED: u8 = 1;
const TERMINATED: u8 = 2;

/// A pool of worker processes — Python's `multiprocessing.Pool`.
///
/// Functions are plain `fn(A) -> R` pointers — `fn` items or closures that capture
/// nothing — as for [`start`](super::start) (`starmap`'s take several arguments:
/// [`StarFn`]);
/// arguments and results are serde values (queues among them re-attach by name). Each call
/// may use a different function. Tasks and results travel over shmq queues. The function
/// always comes first, then its arguments, as in Python and everywhere in `shmq::process`.
///
/// A task that panics fails with [`ProcessError::Panicked`]; the worker survives. A worker
/// that dies (crash, `abort`, SIGKILL, `exit`) fails the task it was running with
/// [`ProcessError::WorkerDied`] and is replaced; other tasks are unaffected.
///
/// # Stopping
/// * [`close`](Pool::close) then [`join`](Pool::join): no new tasks; `join` waits until
///   every task submitted so far has finished (their results are delivered) and the workers
///   have exited.
/// * [`terminate`](Pool::terminate): stop now. Idle workers exit, busy ones are killed
///   (SIGKILL); tasks not finished fail with [`ProcessError::Terminated`].
/// * **Drop** (without a `join` that returned): the same as `terminate`, like leaving
///   Python's `with Pool() as pool:` block. Results already delivered stay valid; pending
///   [`AsyncResult`]s fail with `Terminated`. To wait for submitted work, call `close` and
///   `join` before the pool goes out of scope.
///
/// ```
/// # shmq::process::init();
/// # fn run() -> shmq::Result<()> {
/// let pool = shmq::process::Pool::new(2)?;
/// let squares = pool.map(|x: u64| x * x, 0..10)?;
/// assert_eq!(squares, (0..10).map(|x| x * x).collect::<Vec<_>>());
/// let total: u64 = pool.apply(|v: Vec<u64>| v.iter().sum(), squares)?;
/// for r in pool.imap(|s: String| s.len(), ["a", "bb"].map(String::from)) {
///     println!("{}", r?);
/// }
/// fn add(a: u64, b: u64) -> u64 {
///     a + b
/// }
/// assert_eq!(pool.starmap(add, [(1, 2), (3, 4)])?, [3, 7]);
/// pool.close();
/// pool.join()?;
/// # assert_eq!(total, 285); Ok(()) }
/// # run().unwrap();
/// ```
///
/// A closure that captures a local is rejected by `cargo check` ("expected fn pointer,
/// found closure"); hand the value over with each input instead, e.g.
/// `pool.map(|(x, k): (u64, u64)| x * k, (0..10).map(|x| (x, k)))`:
///
/// ```compile_fail,E0308
/// # fn run() -> shmq::Result<()> {
/// let pool = shmq::process::Pool::new(2)?;
/// let k = 3u64;
/// let scaled = pool.map(move |x: u64| x * k, 0..10)?; // captures `k`
/// # Ok(()) }
/// ```
pub struct Pool {
    tx: mpsc::Sender<Cmd>,
    wake: RawQueue,
    thread: Mutex<Option<JoinHandle<()>>>,
    callbacks: Mutex<Option<JoinHandle<()>>>,
    cb_tx: Mutex<Option<mpsc::Sender<CallbackJob>>>,
    next_id: AtomicU64,
    pids: Arc<Mutex<Vec<u32>>>,
    size: usize,
    window: usize,
    state: AtomicU8,
}

type CallbackJob = Box<dyn FnOnce() + Send>;

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("workers", &self.size)
            .field("pids", &self.pids())
            .finish()
    }
}

static POOL_SEQ: AtomicU64 = AtomicU64::new(0);

/// Chunk size Python's `Pool.map` picks when none is given: about four chunks per worker.
fn auto_chunksize(items: usize, workers: usize) -> usize {
    items.div_ceil(workers.max(1) * 4).max(1)
}

impl Pool {
    /// A pool of `workers` processes with default options.
    pub fn new(workers: usize) -> Result<Pool> {
        Pool::builder(workers).build()
    }

    /// A [`PoolBuilder`] for `workers` processes.
    pub fn builder(workers: usize) -> PoolBuilder {
        PoolBuilder {
            workers,
            capacity: 1 << 20,
            prefetch: 2,
            die_with_parent: true,
            init: None,
            init_error: None,
            max_tasks: 0,
            name: "shmq-worker".into(),
        }
    }

    fn start(b: PoolBuilder) -> Result<Pool> {
        if b.workers == 0 {
            return Err(Error::InvalidArgument(
                "a pool needs at least one worker".into(),
            ));
        }
        if let Some(e) = b.init_error {
            return Err(Error::InvalidArgument(e));
        }
        let prefix = format!(
            "shmq-pool-{}-{}",
            std::process::id(),
            POOL_SEQ.fetch_add(1, Ordering::Relaxed)
        );
        let opts = Options::new().capacity(b.capacity);
        let results = RawQueue::create_with(format!("{prefix}-results"), &opts)?;
        let mut d = Dispatcher {
            rx: None,
            results: results.clone(),
            workers: Vec::with_capacity(b.workers),
            retired: Vec::new(),
            backlog: VecDeque::new(),
            pending: HashMap::new(),
            opts,
            prefix,
            generation: 0,
            builder: Builder::new()
                .die_with_parent(b.die_with_parent)
                .name(b.name),
            prefetch: b.prefetch,
            init: b.init,
            max_tasks: b.max_tasks,
            pids: Arc::new(Mutex::new(Vec::new())),
            fatal: None,
            startup_failures: 0,
            closing: false,
        };
        for _ in 0..b.workers {
            let w = d.start_worker()?;
            d.workers.push(w);
        }
        d.publish_pids();
        let pids = d.pids.clone();
        let (tx, rx) = mpsc::channel();
        d.rx = Some(rx);
        let thread = std::thread::Builder::new()
            .name("shmq-pool".into())
            .spawn(move || d.run())?;
        let (cb_tx, cb_rx) = mpsc::channel::<CallbackJob>();
        let callbacks = std::thread::Builder::new()
            .name("shmq-pool-callbacks".into())
            .spawn(move || {
                for job in cb_rx {
                    if let Err(p) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job)) {
                        eprintln!(
                            "shmq::process::Pool: a callback panicked: {}",
                            super::panic_message(&*p)
                        );
                    }
                }
            })?;
        Ok(Pool {
            tx,
            wake: results,
            thread: Mutex::new(Some(thread)),
            callbacks: Mutex::new(Some(callbacks)),
            cb_tx: Mutex::new(Some(cb_tx)),
            next_id: AtomicU64::new(0),
            pids,
            size: b.workers,
            window: (b.workers * b.prefetch * 4).max(8),
            state: AtomicU8::new(RUNNING),
        })
    }

    /// Number of worker processes.
    pub fn workers(&self) -> usize {
        self.size
    }

    /// Process ids of the current workers (a replaced worker's pid changes).
    pub fn pids(&self) -> Vec<u32> {
        self.pids.lock().map(|p| p.clone()).unwrap_or_default()
    }

    fn wake_dispatcher(&self) {
        let mut w = [0u8; 9];
        w[0] = TAG_WAKE;
        let _ = self.wake.try_put(&w);
    }

    fn submit_encoded(&self, entry: i64, args: Vec<u8>, sink: Sink) -> Result<()> {
        if self.state.load(Ordering::Acquire) != RUNNING {
            let mut sink = sink;
            sink.f = None; // the caller gets the error instead
            return Err(ProcessError::PoolClosed.into());
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let mut sink = sink;
        sink.task = id;
        self.tx
            .send(Cmd::Submit(Task {
                id,
                entry,
                args,
                sink,
            }))
            .map_err(|_| Error::from(ProcessError::PoolClosed))?;
        // Wake the dispatcher if it is waiting for results; if the queue is full it is
        // busy reading anyway.
        self.wake_dispatcher();
        Ok(())
    }

    /// Submit a chunk of items for `target` (a [`Target::chunk`]); `sink` gets one reply
    /// per item.
    fn submit_chunk<A: Serialize>(
        &self,
        target: &Target,
        items: &[A],
        sink: impl FnOnce(Vec<Reply>) + Send + 'static,
    ) -> Result<()> {
        let n = items.len();
        let args = target.encode(items, "a task's arguments")?;
        self.submit_encoded(
            target.entry,
            args,
            Sink::new(move |pid, reply| sink(split_chunk(pid, n, reply))),
        )
    }

    /// The completion of an [`AsyncResult`]: fills its slot, after running the callbacks
    /// (on the callback thread) if there are any.
    fn completion<R: 'static>(
        &self,
        slot: Arc<Slot>,
        decode: fn(&[Vec<u8>]) -> Result<R>,
        cbs: Callbacks<R>,
    ) -> Completion {
        if cbs.is_empty() {
            return Box::new(move |r| slot.set(r));
        }
        let cb_tx = self.cb_tx.lock().ok().and_then(|t| t.clone());
        Box::new(move |r| {
            let job = move || {
                let Callbacks { ok, err } = cbs;
                // A panicking callback is reported and otherwise ignored: the result is
                // still set, so `get()` returns it (it hung for ever before).
                let called = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| match &r {
                    Ok(v) => match decode(v) {
                        Ok(value) => {
                            if let Some(f) = ok {
                                f(value)
                            }
                        }
                        Err(e) => {
                            if let Some(f) = err {
                                f(&e)
                            }
                        }
                    },
                    Err(e) => {
                        if let Some(f) = err {
                            f(e)
                        }
                    }
                }));
                slot.set(r);
                if let Err(p) = called {
                    std::panic::resume_unwind(p);
                }
            };
            let job: CallbackJob = Box::new(job);
            match cb_tx {
                Some(tx) => {
                    if let Err(mpsc::SendError(job)) = tx.send(job) {
                        job()
                    }
                }
                None => job(),
            }
        })
    }

    /// Run `f(args)` on a worker and wait for the result.
    pub fn apply<A, R>(&self, f: fn(A) -> R, args: A) -> Result<R>
    where
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned + 'static,
    {
        self.apply_async(f, args)?.get()
    }

    /// Start `f(args)` on a worker; the returned [`AsyncResult`] delivers the result.
    pub fn apply_async<A, R>(&self, f: fn(A) -> R, args: A) -> Result<AsyncResult<R>>
    where
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned + 'static,
    {
        self.apply_async_with(f, args, Callbacks::new())
    }

    /// [`apply_async`](Self::apply_async) with [`Callbacks`] (Python's `callback` and
    /// `error_callback`).
    pub fn apply_async_with<A, R>(
        &self,
        f: fn(A) -> R,
        args: A,
        callbacks: Callbacks<R>,
    ) -> Result<AsyncResult<R>>
    where
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned + 'static,
    {
        let target = Target::new(f)?;
        let args = target.encode(&args, "a task's arguments")?;
        let slot = Slot::new();
        let decode: fn(&[Vec<u8>]) -> Result<R> = decode_one::<R>;
        let done = self.completion(slot.clone(), decode, callbacks);
        self.submit_encoded(
            target.entry,
            args,
            Sink::new(move |_, reply| done(reply.map(|b| vec![b]))),
        )?;
        Ok(AsyncResult { slot, decode })
    }

    /// Apply `f` to every input and return the results in input order. Fails with the
    /// first task error (in input order). The inputs are sent in chunks of about a
    /// quarter of the inputs per worker, as Python does; [`chunked`](Self::chunked) sets
    /// the size.
    pub fn map<A, R, I>(&self, f: fn(A) -> R, inputs: I) -> Result<Vec<R>>
    where
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned,
        I: IntoIterator<Item = A>,
    {
        self.map_impl(f, inputs, None)
    }

    /// [`map`](Self::map) for functions of several arguments: each input is a tuple whose
    /// fields are the arguments (Python's `starmap`).
    ///
    /// ```
    /// # shmq::process::init();
    /// fn power(base: u64, exp: u32) -> u64 {
    ///     base.pow(exp)
    /// }
    /// let pool = shmq::process::Pool::new(2)?;
    /// assert_eq!(pool.starmap(power, [(2, 10), (3, 3)])?, [1024, 27]);
    /// # Ok::<(), shmq::Error>(())
    /// ```
    pub fn starmap<F, Args, R, I>(&self, f: F, inputs: I) -> Result<Vec<R>>
    where
        F: StarFn<Args, R>,
        Args: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned,
        I: IntoIterator<Item = Args>,
    {
        let _ = f;
        self.map_impl(star_fn::<F, Args, R>(), inputs, None)
    }

    fn map_impl<A, R, I>(
        &self,
        f: fn(A) -> R,
        inputs: I,
        chunksize: Option<usize>,
    ) -> Result<Vec<R>>
    where
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned,
        I: IntoIterator<Item = A>,
    {
        let target = Target::chunk(f)?;
        let items: Vec<A> = inputs.into_iter().collect();
        let cs = chunksize.unwrap_or_else(|| auto_chunksize(items.len(), self.size));
        let mut rxs = Vec::new();
        for chunk in items.chunks(cs) {
            let (tx, rx) = mpsc::channel();
            self.submit_chunk(&target, chunk, move |r| {
                let _ = tx.send(r);
            })?;
            rxs.push(rx);
        }
        let mut out = Vec::with_capacity(items.len());
        for rx in rxs {
            let replies = rx
                .recv()
                .map_err(|_| Error::from(ProcessError::PoolClosed))?;
            for r in replies {
                out.push(decode_reply(&r?)?);
            }
        }
        Ok(out)
    }

    /// [`map`](Self::map) without waiting: the [`AsyncResult`] delivers the whole list
    /// (or the first error in input order).
    pub fn map_async<A, R, I>(&self, f: fn(A) -> R, inputs: I) -> Result<AsyncResult<Vec<R>>>
    where
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned + 'static,
        I: IntoIterator<Item = A>,
    {
        self.map_async_impl(f, inputs, None, Callbacks::new())
    }

    /// [`map_async`](Self::map_async) with [`Callbacks`]: `on_success` gets the whole list.
    pub fn map_async_with<A, R, I>(
        &self,
        f: fn(A) -> R,
        inputs: I,
        callbacks: Callbacks<Vec<R>>,
    ) -> Result<AsyncResult<Vec<R>>>
    where
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned + 'static,
        I: IntoIterator<Item = A>,
    {
        self.map_async_impl(f, inputs, None, callbacks)
    }

    /// [`starmap`](Self::starmap) without waiting.
    pub fn starmap_async<F, Args, R, I>(&self, f: F, inputs: I) -> Result<AsyncResult<Vec<R>>>
    where
        F: StarFn<Args, R>,
        Args: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned + 'static,
        I: IntoIterator<Item = Args>,
    {
        let _ = f;
        self.map_async_impl(star_fn::<F, Args, R>(), inputs, None, Callbacks::new())
    }

    /// [`starmap_async`](Self::starmap_async) with [`Callbacks`].
    pub fn starmap_async_with<F, Args, R, I>(
        &self,
        f: F,
        inputs: I,
        callbacks: Callbacks<Vec<R>>,
    ) -> Result<AsyncResult<Vec<R>>>
    where
        F: StarFn<Args, R>,
        Args: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned + 'static,
        I: IntoIterator<Item = Args>,
    {
        let _ = f;
        self.map_async_impl(star_fn::<F, Args, R>(), inputs, None, callbacks)
    }

    fn map_async_impl<A, R, I>(
        &self,
        f: fn(A) -> R,
        inputs: I,
        chunksize: Option<usize>,
        callbacks: Callbacks<Vec<R>>,
    ) -> Result<AsyncResult<Vec<R>>>
    where
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned + 'static,
        I: IntoIterator<Item = A>,
    {
        let target = Target::chunk(f)?;
        let items: Vec<A> = inputs.into_iter().collect();
        let cs = chunksize.unwrap_or_else(|| auto_chunksize(items.len(), self.size));
        let slot = Slot::new();
        let decode: fn(&[Vec<u8>]) -> Result<Vec<R>> = decode_all::<R>;
        let done = self.completion(slot.clone(), decode, callbacks);
        let chunks: Vec<&[A]> = items.chunks(cs).collect();
        if chunks.is_empty() {
            done(Ok(Vec::new()));
            return Ok(AsyncResult { slot, decode });
        }
        if self.state.load(Ordering::Acquire) != RUNNING {
            return Err(ProcessError::PoolClosed.into());
        }
        struct Gather {
            parts: Vec<Option<Vec<Reply>>>,
            remaining: usize,
            done: Option<Completion>,
        }
        let gather = Arc::new(Mutex::new(Gather {
            parts: (0..chunks.len()).map(|_| None).collect(),
            remaining: chunks.len(),
            done: Some(done),
        }));
        for (i, chunk) in chunks.iter().enumerate() {
            let g = gather.clone();
            let sub = self.submit_chunk(&target, chunk, move |replies| {
                let mut g = g.lock().unwrap_or_else(|p| p.into_inner());
                g.parts[i] = Some(replies);
                g.remaining -= 1;
                if g.remaining == 0 {
                    let parts = std::mem::take(&mut g.parts);
                    let done = g.done.take();
                    drop(g);
                    let all: Result<Vec<Vec<u8>>> = parts.into_iter().flatten().flatten().collect();
                    if let Some(done) = done {
                        done(all);
                    }
                }
            });
            if let Err(e) = sub {
                // Chunks already submitted will complete the gather with their replies;
                // the missing ones fail it now.
                let mut g = gather.lock().unwrap_or_else(|p| p.into_inner());
                let missing = chunks.len() - i;
                for j in i..chunks.len() {
                    g.parts[j] = Some(vec![Err(clone_error(&e))]);
                }
                g.remaining -= missing;
                if g.remaining == 0 {
                    let parts = std::mem::take(&mut g.parts);
                    let done = g.done.take();
                    drop(g);
                    if let Some(done) = done {
                        done(parts.into_iter().flatten().flatten().collect());
                    }
                }
                return Err(e);
            }
        }
        Ok(AsyncResult { slot, decode })
    }

    /// Streaming [`map`](Self::map): a lazy iterator of results in input order, which keeps
    /// a bounded number of tasks in flight and pulls inputs as results are consumed. Each
    /// item is that task's own result, so one failed task does not hide the others.
    pub fn imap<A, R, I>(&self, f: fn(A) -> R, inputs: I) -> Imap<'_, I::IntoIter, R>
    where
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned,
        I: IntoIterator<Item = A>,
    {
        Imap::new(self, inputs.into_iter(), Target::chunk(f), 1)
    }

    /// Like [`imap`](Self::imap), but results come in the order tasks finish (Python's
    /// `imap_unordered`). Return the input (or an index) from `f` to tell them apart.
    ///
    /// ```
    /// # shmq::process::init();
    /// let pool = shmq::process::Pool::new(2)?;
    /// let mut got: Vec<(u64, u64)> = pool
    ///     .imap_unordered(|x: u64| (x, x * x), 0..5)
    ///     .collect::<shmq::Result<_>>()?;
    /// got.sort();
    /// assert_eq!(got, [(0, 0), (1, 1), (2, 4), (3, 9), (4, 16)]);
    /// # Ok::<(), shmq::Error>(())
    /// ```
    pub fn imap_unordered<A, R, I>(
        &self,
        f: fn(A) -> R,
        inputs: I,
    ) -> ImapUnordered<'_, I::IntoIter, R>
    where
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned,
        I: IntoIterator<Item = A>,
    {
        ImapUnordered::new(self, inputs.into_iter(), Target::chunk(f), 1)
    }

    /// The map calls with an explicit `chunksize` (Python's `chunksize=` argument): inputs
    /// travel to the workers `chunksize` at a time, which saves round trips for tiny
    /// tasks. A worker that dies fails its whole chunk.
    ///
    /// ```
    /// # shmq::process::init();
    /// let pool = shmq::process::Pool::new(2)?;
    /// let v = pool.chunked(100).map(|x: u32| x + 1, 0..1000)?;
    /// assert_eq!(v.len(), 1000);
    /// let s: u32 = pool.chunked(10).imap(|x: u32| x, 0..100).map(|r| r.unwrap()).sum();
    /// assert_eq!(s, 4950);
    /// # Ok::<(), shmq::Error>(())
    /// ```
    pub fn chunked(&self, chunksize: usize) -> Chunked<'_> {
        Chunked {
            pool: self,
            chunksize: chunksize.max(1),
        }
    }

    /// Take no more tasks (Python's `close()`): later submissions fail with
    /// [`ProcessError::PoolClosed`]; tasks submitted so far still run. Follow with
    /// [`join`](Self::join).
    pub fn close(&self) {
        if self
            .state
            .compare_exchange(RUNNING, CLOSED, Ordering::AcqRel, Ordering::Acquire)
            .is_ok()
        {
            let _ = self.tx.send(Cmd::Close);
            self.wake_dispatcher();
        }
    }

    /// Wait until the workers have exited (Python's `join()`): after [`close`](Self::close),
    /// once every submitted task has finished and its result was delivered (callbacks
    /// included); after [`terminate`](Self::terminate), at once.
    /// [`Error::InvalidArgument`] if neither was called (Python's `ValueError`).
    pub fn join(&self) -> Result<()> {
        if self.state.load(Ordering::Acquire) == RUNNING {
            return Err(Error::InvalidArgument(
                "Pool::join needs Pool::close or Pool::terminate first".into(),
            ));
        }
        self.join_threads();
        Ok(())
    }

    fn join_threads(&self) {
        let t = self.thread.lock().ok().and_then(|mut t| t.take());
        if let Some(t) = t {
            let _ = t.join();
        }
        // The dispatcher is gone: no reply will need the callback thread any more.
        if let Ok(mut tx) = self.cb_tx.lock() {
            tx.take();
        }
        let c = self.callbacks.lock().ok().and_then(|mut t| t.take());
        if let Some(c) = c {
            if std::thread::current().id() != c.thread().id() {
                let _ = c.join();
            }
        }
    }

    /// Stop at once (Python's `terminate()`): idle workers exit, busy ones are killed
    /// (SIGKILL); tasks not finished fail with [`ProcessError::Terminated`]. Returns once
    /// the workers are gone (bounded: a worker that does not exit within 5 s of being
    /// asked is killed).
    pub fn terminate(&self) {
        if self.state.swap(TERMINATED, Ordering::AcqRel) != TERMINATED {
            let _ = self.tx.send(Cmd::Terminate);
            self.wake_dispatcher();
        }
        let t = self.thread.lock().ok().and_then(|mut t| t.take());
        if let Some(t) = t {
            let _ = t.join();
        }
        if let Ok(mut tx) = self.cb_tx.lock() {
            tx.take();
        }
    }

    /// Graceful stop: [`close`](Self::close) then [`join`](Self::join).
    #[deprecated(
        note = "use close() then join() to wait for the tasks, or terminate() to stop now"
    )]
    pub fn shutdown(self) {
        self.close();
        let _ = self.join();
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        let joined = self.thread.lock().map(|t| t.is_none()).unwrap_or(true);
        if !joined {
            self.terminate();
        }
    }
}

/// The map calls of a [`Pool`] with an explicit chunk size; from [`Pool::chunked`].
#[derive(Clone, Copy, Debug)]
pub struct Chunked<'p> {
    pool: &'p Pool,
    chunksize: usize,
}

impl<'p> Chunked<'p> {
    /// [`Pool::map`] with this chunk size.
    pub fn map<A, R, I>(&self, f: fn(A) -> R, inputs: I) -> Result<Vec<R>>
    where
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned,
        I: IntoIterator<Item = A>,
    {
        self.pool.map_impl(f, inputs, Some(self.chunksize))
    }

    /// [`Pool::starmap`] with this chunk size.
    pub fn starmap<F, Args, R, I>(&self, f: F, inputs: I) -> Result<Vec<R>>
    where
        F: StarFn<Args, R>,
        Args: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned,
        I: IntoIterator<Item = Args>,
    {
        let _ = f;
        self.pool
            .map_impl(star_fn::<F, Args, R>(), inputs, Some(self.chunksize))
    }

    /// [`Pool::map_async_with`] with this chunk size (pass `Callbacks::new()` for none).
    pub fn map_async<A, R, I>(
        &self,
        f: fn(A) -> R,
        inputs: I,
        callbacks: Callbacks<Vec<R>>,
    ) -> Result<AsyncResult<Vec<R>>>
    where
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned + 'static,
        I: IntoIterator<Item = A>,
    {
        self.pool
            .map_async_impl(f, inputs, Some(self.chunksize), callbacks)
    }

    /// [`Pool::starmap_async_with`] with this chunk size.
    pub fn starmap_async<F, Args, R, I>(
        &self,
        f: F,
        inputs: I,
        callbacks: Callbacks<Vec<R>>,
    ) -> Result<AsyncResult<Vec<R>>>
    where
        F: StarFn<Args, R>,
        Args: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned + 'static,
        I: IntoIterator<Item = Args>,
    {
        let _ = f;
        self.pool.map_async_impl(
            star_fn::<F, Args, R>(),
            inputs,
            Some(self.chunksize),
            callbacks,
        )
    }

    /// [`Pool::imap`] with this chunk size.
    pub fn imap<A, R, I>(&self, f: fn(A) -> R, inputs: I) -> Imap<'p, I::IntoIter, R>
    where
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned,
        I: IntoIterator<Item = A>,
    {
        Imap::new(
            self.pool,
            inputs.into_iter(),
            Target::chunk(f),
            self.chunksize,
        )
    }

    /// [`Pool::imap_unordered`] with this chunk size.
    pub fn imap_unordered<A, R, I>(
        &self,
        f: fn(A) -> R,
        inputs: I,
    ) -> ImapUnordered<'p, I::IntoIter, R>
    where
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned,
        I: IntoIterator<Item = A>,
    {
        ImapUnordered::new(
            self.pool,
            inputs.into_iter(),
            Target::chunk(f),
            self.chunksize,
        )
    }
}

/// Take the next chunk of up to `n` inputs and submit it; `None` when the inputs are done.
/// A failed submission comes back as that many errors.
fn next_chunk<I, A>(
    pool: &Pool,
    inputs: &mut I,
    target: &std::result::Result<Target, String>,
    n: usize,
    sink: impl FnOnce(Vec<Reply>) + Send + 'static,
) -> Option<std::result::Result<usize, Vec<Reply>>>
where
    I: Iterator<Item = A>,
    A: Serialize,
{
    let chunk: Vec<A> = inputs.by_ref().take(n).collect();
    if chunk.is_empty() {
        return None;
    }
    let k = chunk.len();
    let sub = match target {
        Ok(t) => pool.submit_chunk(t, &chunk, sink),
        Err(m) => Err(Error::InvalidArgument(m.clone())),
    };
    Some(match sub {
        Ok(()) => Ok(k),
        Err(e) => Err((0..k).map(|_| Err(clone_error(&e))).collect()),
    })
}

/// Iterator returned by [`Pool::imap`]: results in input order.
pub struct Imap<'p, I, R> {
    pool: &'p Pool,
    inputs: I,
    /// What runs the chunks (or why the function cannot be run).
    target: std::result::Result<Target, String>,
    chunksize: usize,
    /// Chunks submitted, oldest first: their reply channel, or their submission errors.
    inflight: VecDeque<std::result::Result<mpsc::Receiver<Vec<Reply>>, Vec<Reply>>>,
    ready: VecDeque<Reply>,
    _r: PhantomData<fn() -> R>,
}

impl<'p, I, R> Imap<'p, I, R> {
    fn new(pool: &'p Pool, inputs: I, target: Result<Target>, chunksize: usize) -> Self {
        Imap {
            pool,
            inputs,
            target: target.map_err(|e| e.to_string()),
            chunksize,
            inflight: VecDeque::new(),
            ready: VecDeque::new(),
            _r: PhantomData,
        }
    }
}

impl<I, A, R> Iterator for Imap<'_, I, R>
where
    I: Iterator<Item = A>,
    A: Serialize,
    R: DeserializeOwned,
{
    type Item = Result<R>;

    fn next(&mut self) -> Option<Result<R>> {
        loop {
            if let Some(r) = self.ready.pop_front() {
                return Some(r.and_then(|b| decode_reply(&b)));
            }
            while self.inflight.len() < self.pool.window {
                let (tx, rx) = mpsc::channel();
                match next_chunk(
                    self.pool,
                    &mut self.inputs,
                    &self.target,
                    self.chunksize,
                    move |r| {
                        let _ = tx.send(r);
                    },
                ) {
                    None => break,
                    Some(Ok(_)) => self.inflight.push_back(Ok(rx)),
                    Some(Err(errs)) => self.inflight.push_back(Err(errs)),
                }
            }
            match self.inflight.pop_front()? {
                Err(errs) => self.ready.extend(errs),
                Ok(rx) => match rx.recv() {
                    Ok(replies) => self.ready.extend(replies),
                    Err(_) => return Some(Err(ProcessError::PoolClosed.into())),
                },
            }
        }
    }
}

/// Iterator returned by [`Pool::imap_unordered`]: results in the order they finish.
pub struct ImapUnordered<'p, I, R> {
    pool: &'p Pool,
    inputs: I,
    target: std::result::Result<Target, String>,
    chunksize: usize,
    tx: mpsc::Sender<Vec<Reply>>,
    rx: mpsc::Receiver<Vec<Reply>>,
    /// Chunks submitted and not yet received.
    inflight: usize,
    ready: VecDeque<Reply>,
    _r: PhantomData<fn() -> R>,
}

impl<'p, I, R> ImapUnordered<'p, I, R> {
    fn new(pool: &'p Pool, inputs: I, target: Result<Target>, chunksize: usize) -> Self {
        let (tx, rx) = mpsc::channel();
        ImapUnordered {
            pool,
            inputs,
            target: target.map_err(|e| e.to_string()),
            chunksize,
            tx,
            rx,
            inflight: 0,
            ready: VecDeque::new(),
            _r: PhantomData,
        }
    }
}

impl<I, A, R> Iterator for ImapUnordered<'_, I, R>
where
    I: Iterator<Item = A>,
    A: Serialize,
    R: DeserializeOwned,
{
    type Item = Result<R>;

    fn next(&mut self) -> Option<Result<R>> {
        loop {
            if let Some(r) = self.ready.pop_front() {
                return Some(r.and_then(|b| decode_reply(&b)));
            }
            while self.inflight < self.pool.window {
                let tx = self.tx.clone();
                match next_chunk(
                    self.pool,
                    &mut self.inputs,
                    &self.target,
                    self.chunksize,
                    move |r| {
                        let _ = tx.send(r);
                    },
                ) {
                    None => break,
                    Some(Ok(_)) => self.inflight += 1,
                    Some(Err(errs)) => self.ready.extend(errs),
                }
            }
            if !self.ready.is_empty() {
                continue;
            }
            if self.inflight == 0 {
                return None;
            }
            // Every submitted chunk's sink sends exactly once (a dropped sink reports
            // `Terminated`), so this cannot wait for a reply that never comes.
            let replies = self.rx.recv().expect("the iterator holds a sender");
            self.inflight -= 1;
            self.ready.extend(replies);
        }
    }
}

// ---------------------------------------------------------------------------------------
// The dispatcher thread

struct Worker {
    child: Child<()>,
    tasks: RawQueue,
    /// Tasks handed to this worker, oldest first.
    assigned: VecDeque<u64>,
    /// Tasks handed to it in its life (for `maxtasksperchild`).
    given: u64,
    /// Results it sent back.
    completed: u64,
}

struct Pending {
    sink: Sink,
    entry: i64,
    worker: usize,
}

struct Dispatcher {
    rx: Option<mpsc::Receiver<Cmd>>,
    results: RawQueue,
    workers: Vec<Worker>,
    /// Workers replaced after `maxtasksperchild`, until they are reaped.
    retired: Vec<Child<()>>,
    backlog: VecDeque<Task>,
    pending: HashMap<u64, Pending>,
    opts: Options,
    prefix: String,
    generation: u64,
    builder: Builder,
    prefetch: usize,
    init: Option<(i64, Vec<u8>)>,
    max_tasks: u64,
    pids: Arc<Mutex<Vec<u32>>>,
    /// Set when workers can no longer be started: every task fails with it.
    fatal: Option<String>,
    /// Workers in a row that died before being handed any task.
    startup_failures: u32,
    /// `close()` was called: stop once the backlog and the pending tasks are done.
    closing: bool,
}

const CHECK_EVERY: Duration = Duration::from_millis(50);

/// How a worker died, with its panic message when the worker itself panicked (in the
/// initializer, or reading its queues: a task's panic is caught and does not kill it), and
/// whether it did.
fn death_cause(child: &mut Child<()>, status: std::process::ExitStatus) -> (String, bool) {
    match child.try_join() {
        Err(Error::Process(ProcessError::Panicked { message, .. })) => {
            (format!("panicked: {message}"), true)
        }
        Err(Error::Process(ProcessError::Failed { message, .. })) => {
            (format!("failed: {message}"), true)
        }
        _ => (describe_status(status), false),
    }
}

impl Dispatcher {
    fn start_worker(&mut self) -> Result<Worker> {
        let name = format!("{}-w{}", self.prefix, self.generation);
        self.generation += 1;
        let tasks = RawQueue::create_with(name, &self.opts)?;
        let child = self.builder.start(
            worker_main,
            (
                tasks.clone(),
                self.results.clone(),
                self.init.clone(),
                self.max_tasks,
            ),
        )?;
        Ok(Worker {
            child,
            tasks,
            assigned: VecDeque::new(),
            given: 0,
            completed: 0,
        })
    }

    fn publish_pids(&self) {
        if let Ok(mut p) = self.pids.lock() {
            *p = self.workers.iter().map(|w| w.child.pid()).collect();
        }
    }

    fn run(mut self) {
        let rx = self.rx.take().expect("command channel");
        let mut buf = Vec::new();
        let mut last_check = Instant::now();
        loop {
            loop {
                match rx.try_recv() {
                    Ok(Cmd::Submit(t)) => self.backlog.push_back(t),
                    Ok(Cmd::Close) => self.closing = true,
                    Ok(Cmd::Terminate) | Err(mpsc::TryRecvError::Disconnected) => {
                        return self.terminate(&rx);
                    }
                    Err(mpsc::TryRecvError::Empty) => break,
                }
            }
            self.dispatch();
            if self.closing && self.backlog.is_empty() && self.pending.is_empty() {
                return self.finish();
            }
            match self.results.get_into_timeout(&mut buf, CHECK_EVERY) {
                Ok(_) => {
                    self.handle_result(&buf);
                    self.drain_results(&mut buf);
                }
                Err(Error::Timeout) => {}
                Err(e) => {
                    self.fatal = Some(format!("the pool's result queue failed: {e}"));
                }
            }
            if last_check.elapsed() >= CHECK_EVERY {
                self.check_workers(&mut buf);
                last_check = Instant::now();
            }
        }
    }

    fn drain_results(&mut self, buf: &mut Vec<u8>) {
        while self.results.try_get_into(buf).is_ok() {
            self.handle_result(buf);
        }
    }

    fn handle_result(&mut self, b: &[u8]) {
        if b.len() < 9 || b[0] == TAG_WAKE {
            return;
        }
        let id = u64::from_le_bytes(b[1..9].try_into().expect("8 bytes"));
        let Some(p) = self.pending.remove(&id) else {
            return;
        };
        let i = p.worker;
        let w = &mut self.workers[i];
        if let Some(pos) = w.assigned.iter().position(|&t| t == id) {
            w.assigned.remove(pos);
        }
        w.completed += 1;
        let pid = w.child.pid();
        let payload = &b[9..];
        let reply = match b[0] {
            TAG_OK => Ok(payload.to_vec()),
            TAG_PANIC => Err(ProcessError::Panicked {
                pid,
                message: String::from_utf8_lossy(payload).into_owned(),
            }
            .into()),
            _ => Err(ProcessError::Failed {
                pid,
                message: String::from_utf8_lossy(payload).into_owned(),
            }
            .into()),
        };
        p.sink.send(pid, reply);
        let w = &self.workers[i];
        if self.max_tasks != 0 && w.given >= self.max_tasks && w.assigned.is_empty() {
            // It exits by itself now: start its successor at once.
            self.retire(i);
        }
    }

    /// Replace worker `i`, which finished its `maxtasksperchild` tasks and exits by itself.
    fn retire(&mut self, i: usize) {
        match self.start_worker() {
            Ok(w) => {
                let old = std::mem::replace(&mut self.workers[i], w);
                self.retired.push(old.child);
                self.publish_pids();
            }
            Err(e) => self.fatal = Some(format!("starting a pool worker failed: {e}")),
        }
    }

    fn dispatch(&mut self) {
        if let Some(msg) = &self.fatal {
            for t in self.backlog.drain(..) {
                t.sink
                    .send(0, Err(Error::Io(std::io::Error::other(msg.clone()))));
            }
            return;
        }
        let mut full = vec![false; self.workers.len()];
        while let Some(task) = self.backlog.front() {
            // The least loaded worker with room.
            let max = self.max_tasks;
            let Some(i) = (0..self.workers.len())
                .filter(|&i| {
                    let w = &self.workers[i];
                    !full[i] && w.assigned.len() < self.prefetch && (max == 0 || w.given < max)
                })
                .min_by_key(|&i| self.workers[i].assigned.len())
            else {
                return;
            };
            let rec = encode_task(task.id, task.entry, &task.args);
            match self.workers[i].tasks.try_put(&rec) {
                Ok(()) => {
                    let task = self.backlog.pop_front().expect("front exists");
                    let w = &mut self.workers[i];
                    w.assigned.push_back(task.id);
                    w.given += 1;
                    self.pending.insert(
                        task.id,
                        Pending {
                            sink: task.sink,
                            entry: task.entry,
                            worker: i,
                        },
                    );
                }
                Err(Error::Full) => full[i] = true,
                Err(e) => {
                    // TooLarge (or a broken queue): this task can never be handed out.
                    let task = self.backlog.pop_front().expect("front exists");
                    task.sink.send(0, Err(e));
                }
            }
        }
    }

    fn check_workers(&mut self, buf: &mut Vec<u8>) {
        self.retired.retain_mut(|c| c.is_alive());
        let dead: Vec<(usize, u32, std::process::ExitStatus)> = self
            .workers
            .iter_mut()
            .enumerate()
            .filter_map(|(i, w)| match w.child.try_wait() {
                Ok(Some(s)) => Some((i, w.child.pid(), s)),
                _ => None,
            })
            .collect();
        if dead.is_empty() {
            return;
        }
        // Everything the dead workers finished is in the result queue already.
        self.drain_results(buf);
        for (i, pid, status) in dead {
            if self.workers[i].child.pid() != pid {
                continue; // retired (and replaced) while the results were drained
            }
            let (cause, own_panic) = death_cause(&mut self.workers[i].child, status);
            // Tasks it never read go back to the front of the backlog, in order.
            let mut unread = Vec::new();
            while self.workers[i].tasks.try_get_into(buf).is_ok() {
                if let Some((id, _, args)) = decode_task(buf) {
                    if let Some(p) = self.pending.remove(&id) {
                        unread.push(Task {
                            id,
                            entry: p.entry,
                            args: args.to_vec(),
                            sink: p.sink,
                        });
                    }
                }
            }
            for t in unread.into_iter().rev() {
                self.backlog.push_front(t);
            }
            // What is left was being run when it died. Replace the worker first, so
            // that a caller who sees the failure also sees the new worker in `pids()`.
            let lost = std::mem::take(&mut self.workers[i].assigned);
            // A worker that never completed a task and died either before being handed
            // one or by a panic of its own (its initializer) failed to start; a worker
            // killed by its first task did not.
            let w = &self.workers[i];
            if w.completed == 0 && (w.given == 0 || own_panic) {
                self.startup_failures += 1;
            } else {
                self.startup_failures = 0;
            }
            let restart = if self.startup_failures >= 3 {
                Err(Error::InvalidArgument(format!(
                    "{} pool workers in a row died before running anything (the last {cause}); \
                     is the initializer failing, or is shmq::process::init() not the first \
                     statement of main (shmq::enable_test_support!() missing in a test file)?",
                    self.startup_failures
                )))
            } else {
                self.start_worker()
            };
            match restart {
                Ok(w) => {
                    self.workers[i] = w;
                    self.publish_pids();
                }
                Err(e) => self.fatal = Some(format!("restarting a dead pool worker failed: {e}")),
            }
            for id in lost {
                if let Some(p) = self.pending.remove(&id) {
                    p.sink.send(
                        pid,
                        Err(ProcessError::WorkerDied {
                            pid,
                            task: id,
                            cause: cause.clone(),
                        }
                        .into()),
                    );
                }
            }
            if self.fatal.is_some() {
                // Fail what is pending on the remaining workers too: nothing will replace
                // them if they die.
                return;
            }
        }
    }

    /// Wait (at most `grace`) for every worker to exit, reading results meanwhile so none
    /// blocks on a full result queue; kill those still running then, and reap them all.
    fn stop_workers(&mut self, grace: Duration) {
        for w in &self.workers {
            w.tasks.close();
        }
        let mut buf = Vec::new();
        let deadline = Instant::now() + grace;
        loop {
            self.drain_results(&mut buf);
            let running = self
                .workers
                .iter_mut()
                .map(|w| w.child.is_alive())
                .chain(self.retired.iter_mut().map(|c| c.is_alive()))
                .filter(|&alive| alive)
                .count();
            if running == 0 {
                break;
            }
            if Instant::now() >= deadline {
                for w in &mut self.workers {
                    let _ = w.child.kill();
                }
                for c in &mut self.retired {
                    let _ = c.kill();
                }
                break;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        for w in &mut self.workers {
            let _ = w.child.join_timeout(Duration::from_secs(5));
        }
        for c in &mut self.retired {
            let _ = c.join_timeout(Duration::from_secs(5));
        }
        self.drain_results(&mut buf);
    }

    /// After `close()`: every task is done; let the workers exit.
    fn finish(mut self) {
        self.stop_workers(Duration::from_secs(10));
        for (_, p) in self.pending.drain() {
            p.sink.send(0, Err(ProcessError::PoolClosed.into()));
        }
    }

    /// `terminate()`: idle workers exit, busy ones are killed; unfinished tasks fail.
    fn terminate(mut self, rx: &mpsc::Receiver<Cmd>) {
        while let Ok(cmd) = rx.try_recv() {
            if let Cmd::Submit(t) = cmd {
                self.backlog.push_back(t);
            }
        }
        for t in self.backlog.drain(..) {
            let id = t.id;
            t.sink
                .send(0, Err(ProcessError::Terminated { task: id }.into()));
        }
        for w in &mut self.workers {
            if !w.assigned.is_empty() {
                let _ = w.child.kill();
            }
        }
        self.stop_workers(Duration::from_secs(5));
        for (id, p) in self.pending.drain() {
            p.sink
                .send(0, Err(ProcessError::Terminated { task: id }.into()));
        }
    }
}
