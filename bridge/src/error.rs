//! The bridge's error type.

/// Why a bridge stopped (or could not start).
///
/// Transient NATS trouble (a lost connection, a server restarting, an ack that timed out,
/// JetStream answering "unavailable") is not an error: the bridges log it, count it in
/// [`Progress::retries`](crate::Progress) and retry with backoff. What is left here ends
/// [`Out::run`](crate::Out::run) or [`In::run`](crate::In::run), and retrying it unchanged
/// will not help:
///
/// | variant | class | `shmq-bridge` exit status |
/// | --- | --- | --- |
/// | [`QueueMissing`](Error::QueueMissing), [`Config`](Error::Config), [`Refused`](Error::Refused) | the configuration: fix it, then start again | 2 |
/// | [`TooLargeForServer`](Error::TooLargeForServer) | one message: take it out or raise the limit | 3 |
/// | [`Queue`](Error::Queue), [`Nats`](Error::Nats) | anything else | 1 |
/// | [`Stopped`](Error::Stopped) | not returned by `run`, `stop` or `join` (a stop is `Ok`); kept for compatibility | 0 |
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The local queue failed (not found, incompatible, corrupt, ...).
    #[error("{}", queue_message(queue, source))]
    Queue {
        /// The queue's name or path.
        queue: String,
        /// What shmq said.
        source: shmq::Error,
    },
    /// The local queue does not exist and the bridge was not told to create it.
    #[error(
        "the local queue {queue:?} does not exist: create it first (e.g. `shmq create {queue} \
         --capacity 1M`), or let the bridge create it with `--create <bytes>` \
         (`Out::create`/`In::create` in the library)"
    )]
    QueueMissing {
        /// The queue's name or path.
        queue: String,
    },
    /// A message at the head of the local queue is larger than the NATS server accepts
    /// (`max_payload`, or the stream's `max_msg_size`). It was not published and is still
    /// at the head of the queue, with everything behind it; the out bridge stops rather
    /// than skip it (that would lose it) or retry it (that would spin).
    #[error(
        "the message at sequence {seq} (its position in the queue) at the head of queue \
         {queue:?} is {size} bytes with the headers the bridge adds (Nats-Msg-Id, \
         Nats-Expected-Last-Msg-Id) and NATS accepts at most {max} ({limit}): it was NOT published and stays at the head of the queue, with \
         everything behind it. Raise the limit (nats-server `max_payload`, the stream's \
         max_msg_size) or take the message out (e.g. `shmq get {queue}`), then restart the bridge"
    )]
    TooLargeForServer {
        /// The queue's name.
        queue: String,
        /// The message's sequence number in the queue.
        seq: u64,
        /// Payload size plus the headers the bridge adds, in bytes.
        size: usize,
        /// The limit it exceeds, in bytes (0 when the server did not say).
        max: usize,
        /// Which limit: `max_payload` or the stream's `max_msg_size`.
        limit: &'static str,
    },
    /// The NATS server refused the bridge's configuration or credentials for good: an
    /// authorization or authentication failure, a stream whose subjects overlap another
    /// stream's, a stream or consumer configuration the server rejects (JetStream API
    /// status 400). Not retried: retrying unchanged gets the same answer.
    #[error(
        "NATS refused {what}: {reason} (a permanent error, not retried: fix the configuration)"
    )]
    Refused {
        /// What the bridge asked for (e.g. `the connection to nats://host:4222`).
        what: String,
        /// The server's (or client's) answer.
        reason: String,
    },
    /// Any other NATS failure that ends the bridge.
    #[error("NATS: {0}")]
    Nats(String),
    /// A bad bridge configuration, found before asking the server (e.g. a stream name with
    /// a `.`, a subject with an empty token), or at start against the bridges already
    /// running (their marks): an in and an out bridge on one queue and stream (a loop), two
    /// in bridges on one durable consumer, a state file in use or not a regular file of ours.
    #[error("invalid bridge configuration: {0}")]
    Config(String),
    /// The bridge was stopped ([`Control::stop`](crate::Control::stop), SIGINT/SIGTERM
    /// for the binary) before it was connected and set up: nothing was moved. Not a
    /// failure: [`Out::run`](crate::Out::run) and [`In::run`](crate::In::run) turn it
    /// into `Ok(())` (a stop is a stop, connected or not), as do
    /// [`Running::stop`](crate::Running::stop) and the binary (exit status 0); no public
    /// call returns it any more. Kept so that code matching on it still builds.
    #[error("stopped before the bridge was connected: {0}")]
    Stopped(String),
}

/// [`Error::Queue`]'s text: shmq's `NotFound` there only comes from a queue removed under a
/// running bridge (a queue missing at the start is [`Error::QueueMissing`]), where shmq's
/// own advice ("create it first") would mislead.
fn queue_message(queue: &str, source: &shmq::Error) -> String {
    match source {
        shmq::Error::NotFound(_) => format!(
            "local queue {queue:?} was removed while the bridge ran (no queue at the name for \
             1 s)"
        ),
        e => format!("local queue {queue:?}: {e}"),
    }
}

/// `Result<T, shmq_bridge::Error>`.
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// Whether this is a configuration error (exit status 2): the queue is missing, the
    /// configuration is invalid, or the server refused it for good.
    pub fn is_config(&self) -> bool {
        matches!(
            self,
            Error::QueueMissing { .. } | Error::Config(_) | Error::Refused { .. }
        )
    }

    pub(crate) fn queue(queue: &str, source: shmq::Error) -> Error {
        Error::Queue {
            queue: queue.to_string(),
            source,
        }
    }
}

/// A bridge's result as `run` returns it: a stop before the bridge was connected
/// ([`Error::Stopped`]) is a stop like any other, `Ok`, as documented (and as
/// `Running::stop` and the binary have it).
pub(crate) fn stop_is_ok(r: Result<()>) -> Result<()> {
    match r {
        Err(Error::Stopped(why)) => {
            tracing::info!("stopped before the bridge was connected: {why}");
            Ok(())
        }
        r => r,
    }
}
