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

// The map of the pool, one idea per file:
//
//   mod.rs           Pool: submitting tasks, the map/apply calls, close/join/terminate
//   builder.rs       PoolBuilder: options and defaults
//   starmap.rs       StarFn: multi-argument functions
//   reply.rs         what a task sends back and where it goes (Reply, Sink)
//   async_result.rs  AsyncResult, Callbacks and the callback thread
//   imap.rs          the lazy maps, Imap and ImapUnordered, on one Stream
//   chunked.rs       Chunked: the map calls with an explicit chunk size
//   dispatcher.rs    the dispatcher thread: workers, backlog, results, deaths
//   worker.rs        the worker process's main loop

mod async_result;
mod builder;
mod chunked;
mod dispatcher;
mod imap;
mod reply;
mod starmap;
mod worker;

use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::thread::JoinHandle;

use serde::de::DeserializeOwned;
use serde::Serialize;

use self::async_result::{
    completion, spawn_callback_thread, CallbackJob, Completion, Gather, Slot,
};
use self::dispatcher::Dispatcher;
use self::reply::{clone_error, decode_all, decode_one, decode_reply, split_chunk, Reply, Sink};
use self::starmap::star_fn;
use crate::error::{Error, Result};
use crate::process::target::Target;
use crate::process::wire::{self, Call, PoolMsg, Task};
use crate::process::ProcessError;
use crate::{Options, RawQueue};

pub use self::async_result::{AsyncResult, Callbacks};
pub use self::builder::PoolBuilder;
pub use self::chunked::Chunked;
pub use self::imap::{Imap, ImapUnordered};
pub use self::starmap::StarFn;

/// A task submitted and not yet handed to a worker: the message for the worker, and where
/// its reply goes.
struct Submitted {
    msg: Task,
    sink: Sink,
}

/// What a [`Pool`] tells its dispatcher thread.
enum Cmd {
    Submit(Submitted),
    Close,
    Terminate,
}

/// The states of a pool.
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
    /// The result queue, which the dispatcher sleeps on: a [`PoolMsg::Wake`] wakes it up.
    wake: RawQueue,
    /// The encoded [`PoolMsg::Wake`].
    wake_msg: Vec<u8>,
    thread: Mutex<Option<JoinHandle<()>>>,
    callbacks: Mutex<Option<JoinHandle<()>>>,
    cb_tx: Mutex<Option<mpsc::Sender<CallbackJob>>>,
    next_id: AtomicU64,
    pids: Arc<Mutex<Vec<u32>>>,
    size: usize,
    window: usize,
    state: AtomicU8,
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
        PoolBuilder::new(workers)
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
        let wake_msg = wire::encode(&PoolMsg::Wake, "a wake-up")?;
        let size = b.workers;
        let window = (b.workers * b.prefetch * 4).max(8);
        let (tx, rx) = mpsc::channel();
        let d = Dispatcher::new(b, opts, prefix, results.clone(), rx)?;
        let pids = d.pids();
        let thread = std::thread::Builder::new()
            .name("shmq-pool".into())
            .spawn(move || d.run())?;
        let (callbacks, cb_tx) = spawn_callback_thread()?;
        Ok(Pool {
            tx,
            wake: results,
            wake_msg,
            thread: Mutex::new(Some(thread)),
            callbacks: Mutex::new(Some(callbacks)),
            cb_tx: Mutex::new(Some(cb_tx)),
            next_id: AtomicU64::new(0),
            pids,
            size,
            window,
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
        let _ = self.wake.try_put(&self.wake_msg);
    }

    fn submit(&self, call: Call, sink: Sink) -> Result<()> {
        if self.state.load(Ordering::Acquire) != RUNNING {
            sink.cancel(); // the caller gets the error instead
            return Err(ProcessError::PoolClosed.into());
        }
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let msg = Task { id, call };
        let sink = sink.for_task(id);
        self.tx
            .send(Cmd::Submit(Submitted { msg, sink }))
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
        let call = target.call(items, "a task's arguments")?;
        self.submit(
            call,
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
        let cb_tx = self.cb_tx.lock().ok().and_then(|t| t.clone());
        completion(cb_tx, slot, decode, cbs)
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
        let call = Call::new(f, &args, "a task's arguments")?;
        let slot = Slot::new();
        let decode: fn(&[Vec<u8>]) -> Result<R> = decode_one::<R>;
        let done = self.completion(slot.clone(), decode, callbacks);
        self.submit(
            call,
            Sink::new(move |_, reply| done(reply.map(|b| vec![b]))),
        )?;
        Ok(AsyncResult::new(slot, decode))
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
            return Ok(AsyncResult::new(slot, decode));
        }
        if self.state.load(Ordering::Acquire) != RUNNING {
            return Err(ProcessError::PoolClosed.into());
        }
        let gather = Gather::new(chunks.len(), done);
        for (i, chunk) in chunks.iter().enumerate() {
            let g = gather.clone();
            let sub = self.submit_chunk(&target, chunk, move |replies| {
                Gather::arrived(&g, i, replies)
            });
            if let Err(e) = sub {
                // Chunks already submitted will complete the gather with their replies;
                // the missing ones fail it now.
                for j in i..chunks.len() {
                    Gather::arrived(&gather, j, vec![Err(clone_error(&e))]);
                }
                return Err(e);
            }
        }
        Ok(AsyncResult::new(slot, decode))
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
