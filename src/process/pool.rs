//! [`Pool`]: N worker processes that run tasks sent over shmq queues.
//!
//! Design: one task queue per worker (so the pool always knows which tasks a worker holds)
//! and one shared result queue. A dispatcher thread in the parent hands tasks to workers
//! (at most `prefetch` outstanding each), routes results back to the callers, and watches
//! the workers: when one dies, tasks still sitting unread in its queue are handed to other
//! workers, the task it was running fails with [`ProcessError::WorkerDied`], and a fresh
//! worker takes its place.

use std::collections::{HashMap, VecDeque};
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::child::describe_status;
use super::{entry_at, Builder, Child, ProcessError, Target};
use crate::error::{Error, Result};
use crate::{Options, RawQueue};

const TAG_OK: u8 = 0;
const TAG_PANIC: u8 = 1;
const TAG_ERROR: u8 = 2;
const TAG_WAKE: u8 = 3;

/// Task record: id (u64 LE), entry offset (i64 LE), call record ([`Target::encode`]).
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

/// The worker process's main loop.
fn worker_main((tasks, results): (RawQueue, RawQueue)) {
    let mut buf = Vec::new();
    let mut out = Vec::new();
    loop {
        match tasks.get_into(&mut buf) {
            Ok(_) => {}
            Err(Error::Closed) => return,
            Err(e) => panic!("pool worker: reading its task queue failed: {e}"),
        }
        let Some((id, offset, args)) = decode_task(&buf) else {
            panic!("pool worker: malformed task record");
        };
        // SAFETY: the offset was computed by `Target::new` in the parent, which runs this
        // same executable (the worker was started by re-executing it and passed the
        // bootstrap's binary check).
        let f = unsafe { entry_at(offset) };
        match f(args) {
            super::Outcome::Ok(b) => encode_result(TAG_OK, id, &b, &mut out),
            super::Outcome::Panic(m) => encode_result(TAG_PANIC, id, m.as_bytes(), &mut out),
            super::Outcome::Error(m) => encode_result(TAG_ERROR, id, m.as_bytes(), &mut out),
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
    }
}

/// What a task sends back to its caller: the postcard bytes of `R`, or the failure.
type Reply = Result<Vec<u8>>;

struct Task {
    id: u64,
    entry: i64,
    args: Vec<u8>,
    reply: mpsc::Sender<Reply>,
}

enum Cmd {
    Submit(Task),
    Shutdown,
}

/// Options for a [`Pool`].
///
/// ```
/// # shmq::process::init();
/// let pool = shmq::process::Pool::builder(2).capacity(1 << 22).prefetch(2).build()?;
/// assert_eq!(pool.workers(), 2);
/// # Ok::<(), shmq::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct PoolBuilder {
    workers: usize,
    capacity: usize,
    prefetch: usize,
    die_with_parent: bool,
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

    /// Start the workers.
    pub fn build(self) -> Result<Pool> {
        Pool::start(self)
    }
}

/// A pool of worker processes — Python's `multiprocessing.Pool`.
///
/// Functions are plain `fn(A) -> R` pointers — `fn` items or closures that capture
/// nothing — as for [`spawn`](super::spawn); arguments and results are serde values (queues among them re-attach by name). Each call
/// may use a different function. Tasks and results travel over shmq queues.
///
/// A task that panics fails with [`ProcessError::Panicked`]; the worker survives. A worker
/// that dies (crash, `abort`, SIGKILL, `exit`) fails the task it was running with
/// [`ProcessError::WorkerDied`] and is replaced; other tasks are unaffected.
///
/// Dropping the pool (or [`shutdown`](Pool::shutdown)) lets the workers finish the tasks
/// already handed to them, then stops them.
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
    thread: Option<JoinHandle<()>>,
    next_id: AtomicU64,
    pids: Arc<Mutex<Vec<u32>>>,
    size: usize,
    window: usize,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("workers", &self.size)
            .field("pids", &self.pids())
            .finish()
    }
}

static POOL_SEQ: AtomicU64 = AtomicU64::new(0);

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
        }
    }

    fn start(b: PoolBuilder) -> Result<Pool> {
        if b.workers == 0 {
            return Err(Error::InvalidArgument(
                "a pool needs at least one worker".into(),
            ));
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
            backlog: VecDeque::new(),
            pending: HashMap::new(),
            opts,
            prefix,
            generation: 0,
            builder: Builder::new().die_with_parent(b.die_with_parent),
            prefetch: b.prefetch,
            pids: Arc::new(Mutex::new(Vec::new())),
            fatal: None,
            startup_failures: 0,
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
        Ok(Pool {
            tx,
            wake: results,
            thread: Some(thread),
            next_id: AtomicU64::new(0),
            pids,
            size: b.workers,
            window: (b.workers * b.prefetch * 4).max(8),
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

    fn submit_encoded(&self, entry: i64, args: Vec<u8>) -> Result<mpsc::Receiver<Reply>> {
        let (reply, rx) = mpsc::channel();
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.tx
            .send(Cmd::Submit(Task {
                id,
                entry,
                args,
                reply,
            }))
            .map_err(|_| Error::Closed)?;
        // Wake the dispatcher if it is waiting for results; if the queue is full it is
        // busy reading anyway.
        let mut w = [0u8; 9];
        w[0] = TAG_WAKE;
        let _ = self.wake.try_put(&w);
        Ok(rx)
    }

    fn submit<A: Serialize>(&self, target: &Target, args: &A) -> Result<mpsc::Receiver<Reply>> {
        self.submit_encoded(target.entry, target.encode(args)?)
    }

    /// Run `f(args)` on a worker and wait for the result.
    pub fn apply<A, R>(&self, f: fn(A) -> R, args: A) -> Result<R>
    where
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned,
    {
        self.apply_async(f, args)?.get()
    }

    /// Start `f(args)` on a worker; the returned [`AsyncResult`] delivers the result.
    pub fn apply_async<A, R>(&self, f: fn(A) -> R, args: A) -> Result<AsyncResult<R>>
    where
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned,
    {
        Ok(AsyncResult {
            rx: self.submit(&Target::new(f)?, &args)?,
            _r: PhantomData,
        })
    }

    /// Apply `f` to every input and return the results in input order. Fails with the
    /// first task error (in input order).
    pub fn map<A, R, I>(&self, f: fn(A) -> R, inputs: I) -> Result<Vec<R>>
    where
        A: Serialize + DeserializeOwned,
        R: Serialize + DeserializeOwned,
        I: IntoIterator<Item = A>,
    {
        let target = Target::new(f)?;
        let mut rxs = Vec::new();
        for a in inputs {
            rxs.push(self.submit(&target, &a)?);
        }
        rxs.into_iter().map(|rx| recv_reply(&rx, None)).collect()
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
        Imap {
            pool: self,
            inputs: inputs.into_iter(),
            target: Target::new(f).map_err(|e| match e {
                Error::InvalidArgument(m) => m,
                e => e.to_string(),
            }),
            inflight: VecDeque::new(),
            _r: PhantomData,
        }
    }

    /// Stop the pool: workers finish the tasks they already hold, then exit; tasks not yet
    /// handed out fail with [`Error::Closed`]. Dropping the pool does the same.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        let _ = self.tx.send(Cmd::Shutdown);
        let mut w = [0u8; 9];
        w[0] = TAG_WAKE;
        let _ = self.wake.try_put(&w);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Pool {
    fn drop(&mut self) {
        self.stop();
    }
}

fn recv_reply<R: DeserializeOwned>(
    rx: &mpsc::Receiver<Reply>,
    timeout: Option<Duration>,
) -> Result<R> {
    let reply = match timeout {
        None => rx.recv().map_err(|_| Error::Closed)?,
        Some(t) => match rx.recv_timeout(t) {
            Ok(r) => r,
            Err(mpsc::RecvTimeoutError::Timeout) => return Err(Error::Timeout),
            Err(mpsc::RecvTimeoutError::Disconnected) => return Err(Error::Closed),
        },
    };
    let bytes = reply?;
    postcard::from_bytes(&bytes).map_err(|e| Error::Codec(format!("decoding a task's result: {e}")))
}

/// The pending result of [`Pool::apply_async`].
///
/// ```
/// # shmq::process::init();
/// let pool = shmq::process::Pool::new(1)?;
/// let r = pool.apply_async(|n: u32| n + 1, 41)?;
/// assert_eq!(r.get()?, 42);
/// # Ok::<(), shmq::Error>(())
/// ```
pub struct AsyncResult<R> {
    rx: mpsc::Receiver<Reply>,
    _r: PhantomData<fn() -> R>,
}

impl<R: DeserializeOwned> AsyncResult<R> {
    /// Wait for the result.
    pub fn get(self) -> Result<R> {
        recv_reply(&self.rx, None)
    }

    /// Wait at most `timeout` ([`Error::Timeout`]; the handle stays usable).
    pub fn get_timeout(&self, timeout: Duration) -> Result<R> {
        recv_reply(&self.rx, Some(timeout))
    }
}

/// Iterator returned by [`Pool::imap`].
pub struct Imap<'p, I, R> {
    pool: &'p Pool,
    inputs: I,
    /// The function, or why it cannot run in a worker (every item then fails with it).
    target: std::result::Result<Target, String>,
    inflight: VecDeque<Result<mpsc::Receiver<Reply>>>,
    _r: PhantomData<fn() -> R>,
}

impl<I, A, R> Iterator for Imap<'_, I, R>
where
    I: Iterator<Item = A>,
    A: Serialize,
    R: DeserializeOwned,
{
    type Item = Result<R>;

    fn next(&mut self) -> Option<Result<R>> {
        while self.inflight.len() < self.pool.window {
            let Some(a) = self.inputs.next() else { break };
            let sub = match &self.target {
                Ok(t) => self.pool.submit(t, &a),
                Err(m) => Err(Error::InvalidArgument(m.clone())),
            };
            self.inflight.push_back(sub);
        }
        let rx = self.inflight.pop_front()?;
        Some(rx.and_then(|rx| recv_reply(&rx, None)))
    }
}

// ---------------------------------------------------------------------------------------
// The dispatcher thread

struct Worker {
    child: Child<()>,
    tasks: RawQueue,
    /// Tasks handed to this worker, oldest first.
    assigned: VecDeque<u64>,
    /// Whether it was ever handed a task (a worker that dies before that failed to start).
    used: bool,
}

struct Pending {
    reply: mpsc::Sender<Reply>,
    entry: i64,
    worker: usize,
}

struct Dispatcher {
    rx: Option<mpsc::Receiver<Cmd>>,
    results: RawQueue,
    workers: Vec<Worker>,
    backlog: VecDeque<Task>,
    pending: HashMap<u64, Pending>,
    opts: Options,
    prefix: String,
    generation: u64,
    builder: Builder,
    prefetch: usize,
    pids: Arc<Mutex<Vec<u32>>>,
    /// Set when workers can no longer be started: every task fails with it.
    fatal: Option<String>,
    /// Workers in a row that died before being handed any task.
    startup_failures: u32,
}

const CHECK_EVERY: Duration = Duration::from_millis(50);

impl Dispatcher {
    fn start_worker(&mut self) -> Result<Worker> {
        let name = format!("{}-w{}", self.prefix, self.generation);
        self.generation += 1;
        let tasks = RawQueue::create_with(name, &self.opts)?;
        let child = self
            .builder
            .spawn((tasks.clone(), self.results.clone()), worker_main)?;
        Ok(Worker {
            child,
            tasks,
            assigned: VecDeque::new(),
            used: false,
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
                    Ok(Cmd::Shutdown) | Err(mpsc::TryRecvError::Disconnected) => {
                        return self.shutdown();
                    }
                    Err(mpsc::TryRecvError::Empty) => break,
                }
            }
            self.dispatch();
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
        let w = &mut self.workers[p.worker];
        if let Some(pos) = w.assigned.iter().position(|&t| t == id) {
            w.assigned.remove(pos);
        }
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
        let _ = p.reply.send(reply);
    }

    fn dispatch(&mut self) {
        if let Some(msg) = &self.fatal {
            for t in self.backlog.drain(..) {
                let _ = t
                    .reply
                    .send(Err(Error::Io(std::io::Error::other(msg.clone()))));
            }
            return;
        }
        let mut full = vec![false; self.workers.len()];
        while let Some(task) = self.backlog.front() {
            // The least loaded worker with room.
            let Some(i) = (0..self.workers.len())
                .filter(|&i| !full[i] && self.workers[i].assigned.len() < self.prefetch)
                .min_by_key(|&i| self.workers[i].assigned.len())
            else {
                return;
            };
            let rec = encode_task(task.id, task.entry, &task.args);
            match self.workers[i].tasks.try_put(&rec) {
                Ok(()) => {
                    let task = self.backlog.pop_front().expect("front exists");
                    self.workers[i].assigned.push_back(task.id);
                    self.workers[i].used = true;
                    self.pending.insert(
                        task.id,
                        Pending {
                            reply: task.reply,
                            entry: task.entry,
                            worker: i,
                        },
                    );
                }
                Err(Error::Full) => full[i] = true,
                Err(e) => {
                    // TooLarge (or a broken queue): this task can never be handed out.
                    let task = self.backlog.pop_front().expect("front exists");
                    let _ = task.reply.send(Err(e));
                }
            }
        }
    }

    fn check_workers(&mut self, buf: &mut Vec<u8>) {
        for i in 0..self.workers.len() {
            let status = match self.workers[i].child.try_wait() {
                Ok(Some(s)) => s,
                _ => continue,
            };
            // Everything the dead worker finished is in the result queue already.
            self.drain_results(buf);
            let cause = describe_status(status);
            let pid = self.workers[i].child.pid();
            // Tasks it never read go back to the front of the backlog, in order.
            let mut unread = Vec::new();
            while self.workers[i].tasks.try_get_into(buf).is_ok() {
                if let Some((id, _, args)) = decode_task(buf) {
                    if let Some(p) = self.pending.remove(&id) {
                        unread.push(Task {
                            id,
                            entry: p.entry,
                            args: args.to_vec(),
                            reply: p.reply,
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
            if self.workers[i].used {
                self.startup_failures = 0;
            } else {
                self.startup_failures += 1;
            }
            let restart = if self.startup_failures >= 3 {
                Err(Error::InvalidArgument(format!(
                    "{} workers in a row died before running anything (the last {cause}); \
                     is shmq::process::init() the first statement of main (or \
                     shmq::enable_test_support!() present in the test file)?",
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
                    let _ = p.reply.send(Err(ProcessError::WorkerDied {
                        pid,
                        task: id,
                        cause: cause.clone(),
                    }
                    .into()));
                }
            }
            if self.fatal.is_some() {
                return;
            }
        }
    }

    fn shutdown(mut self) {
        for t in self.backlog.drain(..) {
            let _ = t.reply.send(Err(Error::Closed));
        }
        for w in &self.workers {
            w.tasks.close();
        }
        // Keep reading results while the workers finish, so none blocks on a full queue.
        let mut buf = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            self.drain_results(&mut buf);
            let running = self
                .workers
                .iter_mut()
                .map(|w| w.child.is_alive())
                .filter(|&alive| alive)
                .count();
            if running == 0 {
                break;
            }
            if Instant::now() >= deadline {
                for w in &mut self.workers {
                    let _ = w.child.kill();
                }
                break;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        for w in &mut self.workers {
            let _ = w.child.join_timeout(Duration::from_secs(5));
        }
        // Deliver what the workers finished while stopping.
        while self.results.try_get_into(&mut buf).is_ok() {
            self.handle_result(&buf);
        }
        for (_, p) in self.pending.drain() {
            let _ = p.reply.send(Err(Error::Closed));
        }
    }
}
