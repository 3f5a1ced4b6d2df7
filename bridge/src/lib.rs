//! Bridges between [shmq](https://docs.rs/shmq) shared-memory queues and NATS JetStream, so
//! that a pipeline can grow past one machine without a rewrite.
//!
//! * [`Out`]: a local queue → a JetStream subject. Read loans of a batch at the head of the
//!   queue, each message published with `Nats-Msg-Id: <queue>:<uid>:<seq>`, every ack
//!   awaited, then the loan committed. A bridge killed at any point loses nothing (nothing
//!   is removed before JetStream holds it) and duplicates nothing within the stream's
//!   dedupe window (what it publishes again carries the same ids).
//! * [`In`]: a durable JetStream pull consumer → a local queue: put, then ack. A full local
//!   queue stops the acks and the pulls (back-pressure, no unbounded buffer); a message
//!   that can never go into the queue is terminated and counted, never a crash.
//! * [`RemoteQueue<T>`]: `put`/`get`/`try_*`/`*_timeout` over JetStream directly, for a
//!   process on a host without a local queue.
//!
//! The bytes on the wire are the queue's own bytes (postcard for a `shmq::Queue<T>`), so a
//! `Queue<T>` on one host and a `Queue<T>` (or a `RemoteQueue<T>`, or any postcard reader)
//! on another see the same `T`. The `shmq-bridge` binary runs one bridge and prints its
//! rates and lag; docs/bridge.md has the guarantees as tested and the figures.
//!
//! Both bridges log through [`tracing`] (the binary prints it to stderr). Each NATS
//! connection event is logged once by the bridge, with its name; the NATS client also logs
//! every event itself under the target `async_nats` ("event: disconnected", at INFO), so a
//! subscriber of yours shows each one twice unless it filters that target (the binary
//! shows it only with `-v`).
//!
//! Errors: transient NATS trouble is retried with backoff; permanent trouble (an invalid
//! subject or name, credentials or a configuration the server refuses, a missing local
//! queue) ends a bridge at once with a typed [`Error`] (see its table).
//!
//! Install the binary with `cargo install --path bridge` in a clone of shmq (or
//! `cargo install shmq-bridge` once published); it is called `shmq-bridge`.
//!
//! ```no_run
//! # fn main() -> shmq_bridge::Result<()> {
//! // Host A: the queue "jobs" out to the subject "jobs.a".
//! let out = shmq_bridge::Out::new("jobs", "jobs.a").server("nats://10.0.0.1:4222").spawn()?;
//! // Host B: the subject into its own queue "jobs".
//! let inb = shmq_bridge::In::new("jobs", "jobs.a").server("nats://10.0.0.1:4222").spawn()?;
//! println!("{:?}", out.progress());
//! out.stop()?;
//! inb.stop()?;
//! # Ok(()) }
//! ```

#![warn(missing_docs)]

mod conflict;
mod control;
mod error;
mod inbound;
mod mark;
mod nats;
mod out;
mod remote;
mod state;

use std::thread::JoinHandle;

pub use control::{Control, Progress};
pub use error::{Error, Result};
pub use inbound::{In, Validator};
pub use nats::default_stream_name;
pub use out::Out;
pub use remote::RemoteQueue;

/// The server the bridges use unless told otherwise.
pub const DEFAULT_SERVER: &str = "nats://127.0.0.1:4222";

/// Open the local queue `queue` (a name, or a path when it holds a `/`), creating it with
/// `create` bytes (kept when the bridge exits) if it is missing and `create` is set;
/// missing without `create`: [`Error::QueueMissing`].
pub(crate) fn open_queue(queue: &str, create: Option<usize>) -> Result<shmq::RawQueue> {
    open_queue_raw(queue, create).map_err(|e| match e {
        shmq::Error::NotFound(_) => Error::QueueMissing {
            queue: queue.to_string(),
        },
        e => Error::queue(queue, e),
    })
}

/// [`open_queue`] with shmq's own error: `NotFound` stays `NotFound` (for the bridges'
/// watch of a queue removed under them, which must tell "gone" from other failures).
pub(crate) fn open_queue_raw(queue: &str, create: Option<usize>) -> shmq::Result<shmq::RawQueue> {
    let loc: shmq::Location = if queue.contains('/') {
        std::path::Path::new(queue).into()
    } else {
        queue.into()
    };
    match shmq::RawQueue::open_with(loc.clone(), &shmq::Options::new()) {
        Err(shmq::Error::NotFound(_)) if create.is_some() => {
            let opts = shmq::Options::new()
                .capacity(create.unwrap_or_default())
                .keep_on_drop(true);
            match shmq::RawQueue::create_with(loc.clone(), &opts) {
                // Created by someone else meanwhile.
                Err(shmq::Error::AlreadyExists { stale: false, .. }) => {
                    shmq::RawQueue::open_with(loc, &shmq::Options::new())
                }
                r => r,
            }
        }
        r => r,
    }
}

/// A bridge running on a thread of its own (with its own Tokio runtime), from
/// [`Out::spawn`] or [`In::spawn`].
#[derive(Debug)]
pub struct Running {
    ctl: Control,
    thread: Option<JoinHandle<Result<()>>>,
}

impl Running {
    /// The bridge's counters now.
    pub fn progress(&self) -> Progress {
        self.ctl.progress()
    }

    /// The bridge's control (to stop it from elsewhere, or read its counters).
    pub fn control(&self) -> &Control {
        &self.ctl
    }

    /// Whether the bridge has returned (stopped, or failed: [`join`](Self::join) says).
    pub fn is_finished(&self) -> bool {
        self.thread.as_ref().is_none_or(|t| t.is_finished())
    }

    /// Stop the bridge and wait for it; its result (`Ok` also when it was stopped before
    /// it was connected: [`Error::Stopped`] is not a failure).
    pub fn stop(mut self) -> Result<()> {
        self.ctl.stop();
        self.join_inner()
    }

    /// Wait for the bridge to return by itself (a fatal error, or a closed queue).
    pub fn join(mut self) -> Result<()> {
        self.join_inner()
    }

    fn join_inner(&mut self) -> Result<()> {
        match self.thread.take() {
            Some(t) => match t.join() {
                Ok(Err(Error::Stopped(_))) => Ok(()),
                Ok(r) => r,
                Err(_) => Err(Error::Nats("the bridge thread panicked".into())),
            },
            None => Ok(()),
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.ctl.stop();
        let _ = self.join_inner();
    }
}

fn spawn<F, Fut>(name: &str, f: F) -> Result<Running>
where
    F: FnOnce(Control) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<()>>,
{
    let ctl = Control::new();
    let c = ctl.clone();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name(name)
        .enable_all()
        .build()
        .map_err(|e| Error::Config(format!("cannot start a Tokio runtime: {e}")))?;
    let thread = std::thread::Builder::new()
        .name(name.to_string())
        .spawn(move || rt.block_on(f(c)))
        .map_err(|e| Error::Config(format!("cannot start the bridge thread: {e}")))?;
    Ok(Running {
        ctl,
        thread: Some(thread),
    })
}

impl Out {
    /// Run the bridge on a thread of its own, with its own Tokio runtime; for programs
    /// that have none. See [`run`](Self::run).
    pub fn spawn(self) -> Result<Running> {
        spawn(
            "shmq-bridge-out",
            move |ctl| async move { self.run(&ctl).await },
        )
    }
}

impl In {
    /// Run the bridge on a thread of its own, with its own Tokio runtime; for programs
    /// that have none. See [`run`](Self::run).
    pub fn spawn(self) -> Result<Running> {
        spawn(
            "shmq-bridge-in",
            move |ctl| async move { self.run(&ctl).await },
        )
    }
}
