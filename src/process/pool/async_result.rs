//! The results of the `*_async` calls: [`AsyncResult`] (a slot the dispatcher fills),
//! [`Callbacks`] (Python's `callback=` and `error_callback=`) and the pool's callback
//! thread that runs them.

use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::reply::Reply;
use crate::error::{Error, Result};
use crate::process::target::panic_message;

type ErrorCallback = Box<dyn FnOnce(&Error) + Send>;

/// What completes an [`AsyncResult`]: the encoded value(s), or the error.
pub(super) type Completion = Box<dyn FnOnce(Result<Vec<Vec<u8>>>) + Send>;

/// The shared state behind an [`AsyncResult`].
pub(super) struct Slot {
    state: Mutex<SlotState>,
    cv: Condvar,
}

enum SlotState {
    Pending,
    Done(Result<Vec<Vec<u8>>>),
    Taken { ok: bool },
}

impl Slot {
    pub(super) fn new() -> Arc<Slot> {
        Arc::new(Slot {
            state: Mutex::new(SlotState::Pending),
            cv: Condvar::new(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, SlotState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn set(&self, r: Result<Vec<Vec<u8>>>) {
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
/// [`Pool::apply_async`]: super::Pool::apply_async
/// [`Pool::map_async`]: super::Pool::map_async
/// [`Pool::starmap_async`]: super::Pool::starmap_async
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
    /// The result that `slot` receives, decoded with `decode`.
    pub(super) fn new(slot: Arc<Slot>, decode: fn(&[Vec<u8>]) -> Result<R>) -> Self {
        AsyncResult { slot, decode }
    }

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

/// The replies of the chunks of one `map_async`, gathered until every chunk has come in.
pub(super) struct Gather {
    parts: Vec<Option<Vec<Reply>>>,
    remaining: usize,
    done: Option<Completion>,
}

impl Gather {
    /// The gather of `n` chunks, which calls `done` when the last one came in.
    pub(super) fn new(n: usize, done: Completion) -> Arc<Mutex<Gather>> {
        Arc::new(Mutex::new(Gather {
            parts: (0..n).map(|_| None).collect(),
            remaining: n,
            done: Some(done),
        }))
    }

    /// Chunk `i` came in with `replies`. The last chunk completes the call: with every
    /// value, or the first error in input order.
    pub(super) fn arrived(g: &Mutex<Gather>, i: usize, replies: Vec<Reply>) {
        let mut g = g.lock().unwrap_or_else(|p| p.into_inner());
        g.parts[i] = Some(replies);
        g.remaining -= 1;
        if g.remaining == 0 {
            let parts = std::mem::take(&mut g.parts);
            let done = g.done.take();
            drop(g);
            if let Some(done) = done {
                done(parts.into_iter().flatten().flatten().collect());
            }
        }
    }
}

/// A job for the pool's callback thread.
pub(super) type CallbackJob = Box<dyn FnOnce() + Send>;

/// Start the pool's callback thread: it runs the jobs it is sent, one at a time, until the
/// sender is dropped; a panicking job is reported on stderr.
pub(super) fn spawn_callback_thread() -> std::io::Result<(JoinHandle<()>, mpsc::Sender<CallbackJob>)>
{
    let (cb_tx, cb_rx) = mpsc::channel::<CallbackJob>();
    let thread = std::thread::Builder::new()
        .name("shmq-pool-callbacks".into())
        .spawn(move || {
            for job in cb_rx {
                if let Err(p) = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job)) {
                    eprintln!(
                        "shmq::process::Pool: a callback panicked: {}",
                        panic_message(&*p)
                    );
                }
            }
        })?;
    Ok((thread, cb_tx))
}

/// The completion of an [`AsyncResult`]: fills its slot, after running the callbacks
/// (on the callback thread `cb_tx`, if it still runs) if there are any.
pub(super) fn completion<R: 'static>(
    cb_tx: Option<mpsc::Sender<CallbackJob>>,
    slot: Arc<Slot>,
    decode: fn(&[Vec<u8>]) -> Result<R>,
    cbs: Callbacks<R>,
) -> Completion {
    if cbs.is_empty() {
        return Box::new(move |r| slot.set(r));
    }
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
