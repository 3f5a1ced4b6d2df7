//! Stopping a running bridge and reading its counters.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

/// A running bridge's handle for stopping it and reading its progress. Cheap to clone;
/// every clone controls the same bridge.
///
/// ```
/// let ctl = shmq_bridge::Control::new();
/// assert!(!ctl.is_stopped());
/// ctl.stop();
/// assert!(ctl.is_stopped());
/// assert_eq!(ctl.progress().messages, 0);
/// ```
#[derive(Clone, Debug, Default)]
pub struct Control {
    inner: Arc<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    stopped: AtomicBool,
    notify: Notify,
    c: Counters,
}

/// The live counters (shared, relaxed atomics). Read them through [`Control::progress`].
#[derive(Debug, Default)]
pub(crate) struct Counters {
    pub messages: AtomicU64,
    pub bytes: AtomicU64,
    pub duplicates: AtomicU64,
    pub malformed: AtomicU64,
    pub retries: AtomicU64,
    pub full_waits: AtomicU64,
    pub disconnects: AtomicU64,
    pub lag: AtomicU64,
    pub connected: AtomicBool,
    /// The last "Permissions Violation for Publish to ..." the server sent (asynchronously,
    /// as `-ERR`): a publish it dropped, whose ack then never comes. The out bridge reads
    /// it to tell a refused subject (permanent) from a slow server (retried).
    pub denied: std::sync::Mutex<Option<String>>,
}

/// A snapshot of a bridge's counters, since it started.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Progress {
    /// Messages moved: out, published and acknowledged by JetStream, then committed
    /// (removed from the local queue); in, put into the local queue and acknowledged.
    pub messages: u64,
    /// Payload bytes of those messages.
    pub bytes: u64,
    /// Out: publishes JetStream recognised as duplicates (a batch sent again after a
    /// restart or a failed ack; the stream keeps one copy). In: redeliveries of messages
    /// already in the local queue, acknowledged and not put again.
    pub duplicates: u64,
    /// In: messages skipped because they cannot go into the local queue (larger than its
    /// largest message, or refused by the validator); each was terminated (`+TERM`) so
    /// JetStream does not deliver it again.
    pub malformed: u64,
    /// Transient failures retried with backoff (lost connection, ack timeout, server
    /// restarting). Each is logged.
    pub retries: u64,
    /// In: times the local queue was full and the bridge stopped acknowledging until it
    /// had room (back-pressure).
    pub full_waits: u64,
    /// Times the NATS connection was lost (each logged; the client reconnects by itself).
    pub disconnects: u64,
    /// Messages waiting: out, in the local queue; in, in the JetStream consumer (not yet
    /// delivered to the bridge, as last reported by the server).
    pub lag: u64,
    /// Whether the NATS connection is up now.
    pub connected: bool,
}

impl Control {
    /// A new control, not stopped, all counters zero.
    pub fn new() -> Control {
        Control::default()
    }

    /// Ask the bridge to stop: it finishes (or abandons, uncommitted) the batch in hand and
    /// returns from `run`. Nothing is lost either way.
    pub fn stop(&self) {
        self.inner.stopped.store(true, Relaxed);
        self.inner.notify.notify_waiters();
    }

    /// Whether [`stop`](Self::stop) was called.
    pub fn is_stopped(&self) -> bool {
        self.inner.stopped.load(Relaxed)
    }

    /// The counters now.
    pub fn progress(&self) -> Progress {
        let c = &self.inner.c;
        Progress {
            messages: c.messages.load(Relaxed),
            bytes: c.bytes.load(Relaxed),
            duplicates: c.duplicates.load(Relaxed),
            malformed: c.malformed.load(Relaxed),
            retries: c.retries.load(Relaxed),
            full_waits: c.full_waits.load(Relaxed),
            disconnects: c.disconnects.load(Relaxed),
            lag: c.lag.load(Relaxed),
            connected: c.connected.load(Relaxed),
        }
    }

    pub(crate) fn counters(&self) -> &Counters {
        &self.inner.c
    }

    /// Resolves once [`stop`](Self::stop) has been called.
    pub async fn stopped(&self) {
        loop {
            let n = self.inner.notify.notified();
            if self.is_stopped() {
                return;
            }
            n.await;
        }
    }

    /// Sleep `d`, or less if the bridge is stopped meanwhile. Returns whether it is
    /// stopped.
    pub async fn sleep(&self, d: Duration) -> bool {
        tokio::select! {
            _ = tokio::time::sleep(d) => self.is_stopped(),
            _ = self.stopped() => true,
        }
    }
}

impl Counters {
    pub(crate) fn add(&self, field: &AtomicU64, n: u64) {
        field.fetch_add(n, Relaxed);
    }
}

/// Exponential backoff: 100 ms doubling to 5 s, reset on success.
#[derive(Debug)]
pub(crate) struct Backoff {
    next: Duration,
}

impl Backoff {
    const FIRST: Duration = Duration::from_millis(100);
    const MAX: Duration = Duration::from_secs(5);

    pub(crate) fn new() -> Backoff {
        Backoff { next: Self::FIRST }
    }

    pub(crate) fn next_delay(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(Self::MAX);
        d
    }

    pub(crate) fn reset(&mut self) {
        self.next = Self::FIRST;
    }
}
