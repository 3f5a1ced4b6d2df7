//! The out bridge: a local queue to a JetStream subject.
//!
//! Loop: take a read loan of up to `batch` messages at the head of the queue; publish each
//! with the header `Nats-Msg-Id: <queue>:<uid>:<seq>`; wait for every JetStream ack; commit
//! the acknowledged prefix of the loan. Killed anywhere, the bridge has committed only
//! messages JetStream holds, and what it sends again after a restart carries the same ids,
//! which the stream drops as duplicates within its dedupe window.
//!
//! Order: the publishes of a batch are pipelined, so when one is lost (written into a
//! connection that dies, or refused while the server restarts) a later one can still be
//! stored, e.g. from the client's buffer after it reconnects; sending the lost one again
//! would store it behind its successor. So every message after the first of a batch is
//! published on condition (`Nats-Expected-Last-Msg-Id`: the previous message's id): the
//! stream refuses it unless its predecessor is the last message it stored. Everything behind
//! a lost message is refused, and the retry resends them in queue order. (The dedupe check
//! comes first on the server, so a message already stored is still acknowledged as a
//! duplicate.) See [`Out::ordered`] for streams other publishers write to.

use std::time::Duration;

use async_nats::jetstream::context::{PublishAckFuture, PublishErrorKind};
use async_nats::jetstream::{self, ErrorCode};
use bytes::Bytes;
use shmq::RawQueue;

use crate::control::{Backoff, Control};
use crate::error::{Error, Result};
use crate::nats::{self, Link};

/// Configuration of an out bridge: local queue `queue` → JetStream subject `subject`.
///
/// ```no_run
/// # async fn f() -> shmq_bridge::Result<()> {
/// let ctl = shmq_bridge::Control::new();
/// shmq_bridge::Out::new("jobs", "jobs.host-a")
///     .server("nats://127.0.0.1:4222")
///     .run(&ctl)
///     .await?; // until ctl.stop(), or the queue is closed and drained
/// # Ok(()) }
/// ```
#[derive(Clone, Debug)]
pub struct Out {
    queue: String,
    create: Option<usize>,
    link: Link,
    batch: usize,
    poll: Duration,
    ordered: bool,
}

impl Out {
    /// Bridge the local queue `queue` (a name, or a path holding a `/`) to `subject`.
    /// Defaults: server `nats://127.0.0.1:4222`, the stream that captures the subject (else
    /// a new one, [`default_stream_name`](crate::default_stream_name)), batches of 256,
    /// a 2-minute dedupe window for a stream it creates, a 5 s ack timeout.
    pub fn new(queue: impl Into<String>, subject: impl Into<String>) -> Out {
        Out {
            queue: queue.into(),
            create: None,
            link: Link {
                server: crate::DEFAULT_SERVER.into(),
                subject: subject.into(),
                stream: None,
                dedupe_window: Duration::from_secs(120),
                ack_timeout: Duration::from_secs(5),
            },
            batch: 256,
            poll: Duration::from_millis(200),
            ordered: true,
        }
    }

    /// Keep queue order in the stream across lost connections and server restarts (the
    /// default): each message after the first of a batch is published on condition that
    /// its predecessor is the stream's last message (`Nats-Expected-Last-Msg-Id`). When
    /// other publishers (another out bridge, a `RemoteQueue`) write into the same stream at
    /// the same time, their messages make that condition fail and the bridge resends the
    /// rest of the batch (counted in `retries`): correct, but slower; pass `false` there to
    /// publish without the condition, and accept that a lost connection can then store two
    /// messages of a batch in swapped order (each still once).
    pub fn ordered(mut self, on: bool) -> Out {
        self.ordered = on;
        self
    }

    /// The NATS server URL (`nats://host:port`; several, comma-separated).
    pub fn server(mut self, url: impl Into<String>) -> Out {
        self.link.server = url.into();
        self
    }

    /// Use (or create) this stream rather than the one that captures the subject.
    pub fn stream(mut self, name: impl Into<String>) -> Out {
        self.link.stream = Some(name.into());
        self
    }

    /// Most messages per loan (and per round of acks). Default 256.
    pub fn batch(mut self, n: usize) -> Out {
        self.batch = n.max(1);
        self
    }

    /// The dedupe window of a stream the bridge creates (an existing stream keeps its own).
    /// A restart later than this after a kill may publish the in-flight batch twice.
    pub fn dedupe_window(mut self, d: Duration) -> Out {
        self.link.dedupe_window = d;
        self
    }

    /// How long to wait for JetStream's ack of a publish before the batch is retried.
    pub fn ack_timeout(mut self, d: Duration) -> Out {
        self.link.ack_timeout = d;
        self
    }

    /// Create the local queue with this capacity (bytes) if it does not exist; it is kept
    /// when the bridge exits. Default: the queue must exist.
    pub fn create(mut self, capacity: usize) -> Out {
        self.create = Some(capacity);
        self
    }

    /// Run until `ctl` is stopped (`Ok`), the local queue is closed and drained (`Ok`), or
    /// a fatal error. Transient NATS failures are logged and retried with backoff.
    ///
    /// The queue calls block; they run on a blocking thread of the Tokio runtime, which
    /// must be the multi-thread one.
    pub async fn run(self, ctl: &Control) -> Result<()> {
        let q = crate::open_queue(&self.queue, self.create)?;
        let who = format!("out {} -> {}", self.queue, self.link.subject);
        let client = nats::connect(&self.link.server, &who, ctl).await?;
        let js = nats::context(client.clone(), &self.link);
        let stream = nats::ensure_stream(&js, &self.link, &who, ctl).await?;
        let stream_max = stream.cached_info().config.max_message_size;
        let _mark = crate::mark::register(
            shmq::internal::bridged::Direction::Out,
            &q,
            &self.link,
            &stream.cached_info().config.name,
            None,
            ctl,
        );
        tracing::info!(
            "{who}: publishing into stream {:?} (queue uid {:016x})",
            stream.cached_info().config.name,
            q.uid()
        );
        let handle = tokio::runtime::Handle::current();
        let ctl2 = ctl.clone();
        tokio::task::spawn_blocking(move || {
            let w = Worker {
                q: &q,
                js,
                client,
                handle,
                ctl: ctl2,
                subject: self.link.subject.clone(),
                id_prefix: format!("{}:{:016x}:", q.name(), q.uid()),
                batch: self.batch,
                poll: self.poll,
                ordered: self.ordered,
                stream_max: if stream_max > 0 {
                    stream_max as usize
                } else {
                    0
                },
                who,
            };
            w.run()
        })
        .await
        .map_err(|e| Error::Nats(format!("out bridge task failed: {e}")))?
    }
}

struct Worker<'q> {
    q: &'q RawQueue,
    js: jetstream::Context,
    client: async_nats::Client,
    handle: tokio::runtime::Handle,
    ctl: Control,
    subject: String,
    id_prefix: String,
    batch: usize,
    poll: Duration,
    ordered: bool,
    stream_max: usize,
    who: String,
}

/// Why a batch stopped short.
enum Stop {
    /// Message `index` of the batch can never be published.
    TooLarge {
        index: usize,
        size: usize,
        max: usize,
        limit: &'static str,
    },
    /// A transient failure: retry the rest of the batch after a backoff.
    Retry(String),
}

impl Worker<'_> {
    fn run(&self) -> Result<()> {
        let c = self.ctl.counters();
        let mut backoff = Backoff::new();
        while !self.ctl.is_stopped() {
            c.lag
                .store(self.q.len() as u64, std::sync::atomic::Ordering::Relaxed);
            let loans = match self.q.get_loans_timeout(self.batch, self.poll) {
                Ok(l) => l,
                Err(shmq::Error::Timeout) | Err(shmq::Error::Empty) => continue,
                Err(shmq::Error::Closed) => {
                    tracing::info!("{}: local queue closed and drained; stopping", self.who);
                    return Ok(());
                }
                Err(e) => return Err(Error::queue(self.q.name(), e)),
            };
            let items: Vec<(u64, &[u8])> = loans.iter().collect();
            let (acked, bytes, stop) = self.handle.block_on(self.publish(&items));
            let seqs: Vec<u64> = items.iter().map(|&(s, _)| s).collect();
            drop(items);
            loans.commit_first(acked);
            c.add(&c.messages, acked as u64);
            c.add(&c.bytes, bytes);
            match stop {
                None => backoff.reset(),
                Some(Stop::TooLarge {
                    index,
                    size,
                    max,
                    limit,
                }) => {
                    let e = Error::TooLargeForServer {
                        queue: self.q.name().to_string(),
                        seq: seqs[index],
                        size,
                        max,
                        limit,
                    };
                    tracing::error!("{}: {e}", self.who);
                    return Err(e);
                }
                Some(Stop::Retry(why)) => {
                    c.add(&c.retries, 1);
                    let d = backoff.next_delay();
                    tracing::warn!(
                        "{}: {why}; {} of {} messages of the batch committed, the rest stays \
                         in the queue; retrying in {}",
                        self.who,
                        acked,
                        seqs.len(),
                        humantime::format_duration(d)
                    );
                    if self.handle.block_on(self.ctl.sleep(d)) {
                        break;
                    }
                }
            }
        }
        Ok(())
    }

    /// Publish every lent message, then await the acks. Returns how many messages at the
    /// front of the batch JetStream holds, their payload bytes, and why it stopped short.
    async fn publish(&self, loans: &[(u64, &[u8])]) -> (usize, u64, Option<Stop>) {
        let max_payload = self.client.server_info().max_payload;
        let mut pending: Vec<(PublishAckFuture, usize)> = Vec::with_capacity(loans.len());
        let mut stop = None;
        let mut prev_id: Option<String> = None;
        for (i, &(seq, msg)) in loans.iter().enumerate() {
            let id = format!("{}{seq}", self.id_prefix);
            if self.stream_max > 0 && msg.len() > self.stream_max {
                stop = Some(Stop::TooLarge {
                    index: i,
                    size: msg.len(),
                    max: self.stream_max,
                    limit: "the stream's max_msg_size",
                });
                break;
            }
            let mut p = jetstream::message::PublishMessage::build()
                .payload(Bytes::copy_from_slice(msg))
                .message_id(&id);
            // The first message of a batch needs no condition: everything before it in the
            // queue was committed, so the stream holds it.
            if let Some(prev) = prev_id.as_deref().filter(|_| self.ordered) {
                p = p.expected_last_message_id(prev);
            }
            match self.js.send_publish(self.subject.clone(), p).await {
                Ok(f) => {
                    pending.push((f, msg.len()));
                    prev_id = Some(id);
                }
                Err(e) if e.kind() == PublishErrorKind::MaxPayloadExceeded => {
                    stop = Some(Stop::TooLarge {
                        index: i,
                        // payload + the Nats-Msg-Id header line and the header preamble
                        size: msg.len() + id.len() + 30,
                        max: max_payload,
                        limit: "the server's max_payload",
                    });
                    break;
                }
                Err(e) => {
                    stop = Some(Stop::Retry(format!("publish failed: {e}")));
                    break;
                }
            }
        }
        let c = self.ctl.counters();
        let acks = futures_util::future::join_all(
            pending
                .into_iter()
                .map(|(f, n)| async move { (f.await, n) }),
        )
        .await;
        let mut acked = 0;
        let mut bytes = 0u64;
        for (i, (ack, n)) in acks.into_iter().enumerate() {
            match ack {
                Ok(a) => {
                    if a.duplicate {
                        c.add(&c.duplicates, 1);
                    }
                    acked += 1;
                    bytes += n as u64;
                }
                Err(e) => {
                    let too_large = std::error::Error::source(&e)
                        .and_then(|s| s.downcast_ref::<jetstream::Error>())
                        .is_some_and(|j| {
                            j.error_code() == ErrorCode::STREAM_MESSAGE_EXCEEDS_MAXIMUM
                        });
                    let behind = e.kind() == PublishErrorKind::WrongLastMessageId;
                    stop = Some(if too_large {
                        Stop::TooLarge {
                            index: i,
                            size: n,
                            max: self.stream_max,
                            limit: "the stream's max_msg_size",
                        }
                    } else if behind {
                        Stop::Retry(format!(
                            "message {i} of the batch was refused because the message before \
                             it is not the stream's last (lost, or another publisher wrote in \
                             between); resending from there to keep queue order"
                        ))
                    } else {
                        Stop::Retry(format!("no JetStream ack: {e}"))
                    });
                    break;
                }
            }
        }
        (acked, bytes, stop)
    }
}
