//! The bridge's error type.

/// Why a bridge stopped (or could not start).
///
/// Transient NATS trouble (a lost connection, a server restarting, an ack that timed out)
/// is not an error: the bridges log it, count it in [`Progress::retries`](crate::Progress)
/// and retry with backoff. What is left here ends [`Out::run`](crate::Out::run) or
/// [`In::run`](crate::In::run).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The local queue failed (not found, incompatible, corrupt, ...).
    #[error("local queue {queue:?}: {source}")]
    Queue {
        /// The queue's name or path.
        queue: String,
        /// What shmq said.
        source: shmq::Error,
    },
    /// A message at the head of the local queue is larger than the NATS server accepts
    /// (`max_payload`, or the stream's `max_msg_size`). It was not published and is still
    /// at the head of the queue, with everything behind it; the out bridge stops rather
    /// than skip it (that would lose it) or retry it (that would spin).
    #[error(
        "message {seq} at the head of queue {queue:?} is {size} bytes and NATS accepts at most \
         {max} ({limit}): it was NOT published and stays at the head of the queue, with \
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
    /// NATS refused something that retrying will not fix (e.g. a stream that cannot be
    /// created with this configuration).
    #[error("NATS: {0}")]
    Nats(String),
    /// A bad bridge configuration (e.g. a stream name with a `.`).
    #[error("invalid bridge configuration: {0}")]
    Config(String),
}

/// `Result<T, shmq_bridge::Error>`.
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    pub(crate) fn queue(queue: &str, source: shmq::Error) -> Error {
        Error::Queue {
            queue: queue.to_string(),
            source,
        }
    }
}
