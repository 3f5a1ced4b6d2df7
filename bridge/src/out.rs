//! The out bridge: a local queue to a JetStream subject.
//!
//! Loop: take a read loan of up to `batch` messages at the head of the queue; publish each
//! with the header `Nats-Msg-Id: <queue>:<uid>:<seq>`; wait for every JetStream ack; commit
//! the acknowledged prefix of the loan. Killed anywhere, the bridge has committed only
//! messages JetStream holds, and what it sends again after a restart carries the same ids,
//! which the stream drops as duplicates within its dedupe window.
//!
//! The loan is held (the local queue's consumer lock with it) from the moment the batch is
//! taken until its acks are in: nothing leaves the queue before JetStream holds it. That
//! blocks only other consumers of the same queue (the bridge is meant to be its only one);
//! producers need the producer lock and ring room, and the loan holds only the batch's
//! bytes. A batch that fails (no ack, a refused publish) releases the loan before the
//! backoff sleep, and the bridge then makes sure the stream exists, creating it again if it
//! vanished (deleted, or a server that lost its store).
//!
//! The local queue: before every loan the bridge checks (one `stat`) that the queue at its
//! name is still the one it has open. When it was removed, the bridge publishes what is
//! left in the removed queue (it cannot grow except from producers that still hold it),
//! then follows the queue created again at the name; a name left empty for a second stops
//! the bridge with `Error::Queue` (`NotFound`) once the removed queue is drained.
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

use std::time::{Duration, Instant};

use async_nats::jetstream::context::{PublishAckFuture, PublishErrorKind};
use async_nats::jetstream::{self, ErrorCode};
use bytes::Bytes;
use shmq::RawQueue;

use crate::control::{Backoff, Control};
use crate::error::{Error, Result};
use crate::nats::{self, Link};
use crate::state::{AtName, QueueWatch};

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
    /// a fatal error. Transient NATS failures are logged and retried with backoff; a
    /// stream that vanished (deleted, or a server that lost its store) is created again.
    /// A local queue removed under the bridge: what is left in it is published, then the
    /// bridge follows the queue created again at the name, or stops with
    /// [`Error::Queue`] (`NotFound`) when none appears within a second (see the module
    /// docs). A subject with a wildcard (`a.*`, `>`), which cannot be published to, is
    /// [`Error::Config`] before anything else; a publish the server refuses for good (a
    /// permissions violation for the subject, a JetStream status 400/403 answer other than
    /// the ordering condition) is [`Error::Refused`] instead of a retry for ever.
    ///
    /// The queue calls block; they run on a blocking thread of the Tokio runtime, which
    /// must be the multi-thread one.
    pub async fn run(self, ctl: &Control) -> Result<()> {
        crate::error::stop_is_ok(self.run_inner(ctl).await)
    }

    async fn run_inner(self, ctl: &Control) -> Result<()> {
        // Messages are published to the subject: a wildcard would be refused by the server
        // (or worse, match nothing a stream captures) on every publish, for ever.
        nats::check_subject(&self.link.subject, false)?;
        let (q, watch) = QueueWatch::open(&self.queue, self.create)?;
        let who = format!("out {} -> {}", self.queue, self.link.subject);
        let client = nats::connect(&self.link.server, &who, ctl).await?;
        let js = nats::context(client.clone(), &self.link);
        let stream = nats::ensure_stream(&js, &self.link, &who, ctl).await?;
        let mark = crate::mark::Marking::new(
            shmq::internal::bridged::Direction::Out,
            &q,
            &self.link,
            &stream.cached_info().config.name,
            None,
            ctl,
        );
        crate::conflict::check(
            shmq::internal::bridged::Direction::Out,
            q.uid(),
            &self.link.server,
            &stream.cached_info().config.name,
            &self.link.subject,
            None,
            mark.path(),
        )?;
        tracing::info!(
            "{who}: publishing into stream {:?} (queue uid {:016x})",
            stream.cached_info().config.name,
            q.uid()
        );
        let handle = tokio::runtime::Handle::current();
        let ctl2 = ctl.clone();
        tokio::task::spawn_blocking(move || {
            let mut w = Worker {
                id_prefix: id_prefix(&q),
                q,
                watch,
                js,
                client,
                handle,
                ctl: ctl2,
                link: self.link.clone(),
                batch: self.batch,
                poll: self.poll,
                ordered: self.ordered,
                stream_max: stream_max(&stream),
                who,
                phases: Phases::new(),
                mark,
            };
            w.run()
        })
        .await
        .map_err(|e| Error::Nats(format!("out bridge task failed: {e}")))?
    }
}

/// Bytes of the NATS header block the bridge sends with a message whose id is `id` (and
/// whose predecessor's is `prev`, when it publishes in order): `NATS/1.0\r\n`, one
/// `Name: value\r\n` line per header, `\r\n`. The server's `max_payload` counts them.
fn header_bytes(id: &str, prev: Option<&str>) -> usize {
    let line = |name: &str, v: &str| name.len() + 2 + v.len() + 2;
    "NATS/1.0\r\n".len()
        + line("Nats-Msg-Id", id)
        + prev.map_or(0, |p| line("Nats-Expected-Last-Msg-Id", p))
        + 2
}

fn id_prefix(q: &RawQueue) -> String {
    format!("{}:{:016x}:", q.name(), q.uid())
}

/// The stream's `max_msg_size` (0: none).
fn stream_max(s: &jetstream::stream::Stream) -> usize {
    usize::try_from(s.cached_info().config.max_message_size).unwrap_or(0)
}

/// How long a removed queue name may stay empty (`shmq rm q; shmq create q`) before the
/// bridge takes it as removed for good.
const GONE_GRACE: Duration = Duration::from_secs(1);

struct Worker {
    q: RawQueue,
    watch: QueueWatch,
    js: jetstream::Context,
    client: async_nats::Client,
    handle: tokio::runtime::Handle,
    ctl: Control,
    link: Link,
    id_prefix: String,
    batch: usize,
    poll: Duration,
    ordered: bool,
    stream_max: usize,
    who: String,
    phases: Phases,
    /// The "bridged" mark, registered again when the bridge follows a new queue.
    mark: crate::mark::Marking,
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
    /// The server refused a publish for good (JetStream status 400/403 other than the
    /// ordering condition): retrying unchanged gets the same answer.
    Refused(String),
}

/// Where the time of the out bridge's thread goes (logged at debug level every 10 s): the
/// evidence for the cost of holding the read loan while the acks come back.
struct Phases {
    since: Instant,
    batches: u64,
    msgs: u64,
    /// Waiting for a loan (an empty queue, or the consumer lock).
    wait: Duration,
    /// Handing the publishes to the client.
    send: Duration,
    /// Awaiting JetStream's acks (the loan held).
    acks: Duration,
    /// Committing the loan.
    commit: Duration,
}

impl Phases {
    fn new() -> Phases {
        Phases {
            since: Instant::now(),
            batches: 0,
            msgs: 0,
            wait: Duration::ZERO,
            send: Duration::ZERO,
            acks: Duration::ZERO,
            commit: Duration::ZERO,
        }
    }

    fn report(&mut self, who: &str) {
        let all = self.since.elapsed();
        if all < Duration::from_secs(10) {
            return;
        }
        let pc = |d: Duration| 100.0 * d.as_secs_f64() / all.as_secs_f64();
        tracing::debug!(
            "{who}: {} batches, {} messages in {:.1} s (mean batch {:.1}); waiting for a loan \
             {:.0} %, sending {:.0} %, awaiting acks {:.0} %, committing {:.0} %",
            self.batches,
            self.msgs,
            all.as_secs_f64(),
            self.msgs as f64 / self.batches.max(1) as f64,
            pc(self.wait),
            pc(self.send),
            pc(self.acks),
            pc(self.commit)
        );
        *self = Phases::new();
    }
}

/// What the loop does after a batch.
enum Flow {
    Next,
    /// The batch failed transiently (logged, backed off): make sure the stream exists.
    Retried,
    Stopped,
}

impl Worker {
    fn run(&mut self) -> Result<()> {
        let ctl = self.ctl.clone();
        let c = ctl.counters();
        let mut backoff = Backoff::new();
        // The queue at the name changed: what to do once the old one is drained (the new
        // queue, or the error that says it is gone).
        let mut then: Option<std::result::Result<RawQueue, shmq::Error>> = None;
        while !self.ctl.is_stopped() {
            c.lag
                .store(self.q.len() as u64, std::sync::atomic::Ordering::Relaxed);
            self.phases.report(&self.who);
            if then.is_none() {
                then = self.look_at_name()?;
            }
            let t0 = Instant::now();
            let err = self.batch(then.is_some(), &mut backoff, t0)?;
            let err = match err {
                Ok((flow, ph)) => {
                    self.phases.wait += ph.wait;
                    self.phases.send += ph.send;
                    self.phases.acks += ph.acks;
                    self.phases.commit += ph.commit;
                    self.phases.batches += 1;
                    self.phases.msgs += ph.msgs;
                    match flow {
                        Flow::Next => {}
                        Flow::Stopped => break,
                        Flow::Retried => self.ensure_stream()?,
                    }
                    continue;
                }
                Err(e) => e,
            };
            self.phases.wait += t0.elapsed();
            match err {
                shmq::Error::Timeout | shmq::Error::Empty if then.is_none() => {}
                shmq::Error::Timeout | shmq::Error::Empty | shmq::Error::Closed
                    if then.is_some() =>
                {
                    // The removed queue is drained.
                    match then.take() {
                        Some(Ok(n)) => self.switch(n),
                        Some(Err(e)) => {
                            tracing::error!(
                                "{}: local queue {:?} was removed (and what was left in it is \
                                 published); stopping",
                                self.who,
                                self.q.name()
                            );
                            return Err(Error::queue(self.q.name(), e));
                        }
                        None => {}
                    }
                }
                shmq::Error::Closed => {
                    // Closed and drained; unless a new queue took the name meanwhile.
                    match self.look_at_name()? {
                        Some(n) => then = Some(n),
                        None => {
                            tracing::info!(
                                "{}: local queue closed and drained; stopping",
                                self.who
                            );
                            return Ok(());
                        }
                    }
                }
                e => return Err(Error::queue(self.q.name(), e)),
            }
        }
        Ok(())
    }

    /// Take a loan (not waiting when `draining` a removed queue) and forward it. `Err`
    /// inside: no loan (the queue's answer).
    fn batch(
        &self,
        draining: bool,
        backoff: &mut Backoff,
        t0: Instant,
    ) -> Result<std::result::Result<(Flow, Phases), shmq::Error>> {
        let got = if draining {
            self.q.try_get_loans(self.batch)
        } else {
            self.q.get_loans_timeout(self.batch, self.poll)
        };
        match got {
            Ok(loans) => {
                let mut ph = Phases::new();
                ph.wait = t0.elapsed();
                let flow = self.forward(loans, backoff, &mut ph)?;
                Ok(Ok((flow, ph)))
            }
            Err(e) => Ok(Err(e)),
        }
    }

    /// `None` while the queue at the name is the one open; else what follows it once it
    /// is drained: the new queue, or (no queue at the name for [`GONE_GRACE`]) the error.
    fn look_at_name(&mut self) -> Result<Option<std::result::Result<RawQueue, shmq::Error>>> {
        let give_up = Instant::now() + GONE_GRACE;
        loop {
            match self.watch.check(&self.q)? {
                AtName::Same => return Ok(None),
                AtName::Replaced(n) => {
                    tracing::warn!(
                        "{}: local queue {:?} was removed and created again (uid {:016x}, now \
                         {:016x}); publishing what is left in the removed one ({} messages), \
                         then the new one",
                        self.who,
                        self.q.name(),
                        self.q.uid(),
                        n.uid(),
                        self.q.len()
                    );
                    return Ok(Some(Ok(n)));
                }
                AtName::Gone(e) => {
                    if Instant::now() >= give_up || self.ctl.is_stopped() {
                        tracing::warn!(
                            "{}: local queue {:?} was removed; publishing what is left in it \
                             ({} messages), then stopping",
                            self.who,
                            self.q.name(),
                            self.q.len()
                        );
                        return Ok(Some(Err(e)));
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        }
    }

    fn switch(&mut self, n: RawQueue) {
        tracing::info!(
            "{}: now publishing from the new queue {:?} (uid {:016x})",
            self.who,
            n.name(),
            n.uid()
        );
        self.id_prefix = id_prefix(&n);
        {
            let _rt = self.handle.enter();
            self.mark.follow(&n);
        }
        self.q = n;
    }

    /// After a failed batch: the stream exists (created again if it vanished), and its
    /// current `max_msg_size`.
    fn ensure_stream(&mut self) -> Result<()> {
        match self.handle.block_on(nats::ensure_stream(
            &self.js, &self.link, &self.who, &self.ctl,
        )) {
            Ok(s) => {
                self.stream_max = stream_max(&s);
                Ok(())
            }
            Err(_) if self.ctl.is_stopped() => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// The server's permissions violation for this bridge's subject, if it sent one: the
    /// publishes it dropped will never be acknowledged, whatever the retries.
    fn denied(&self) -> Option<String> {
        let d = self.ctl.counters().denied.lock().ok()?.clone()?;
        nats::denies_publish_to(&d, &self.link.subject).then_some(d)
    }

    /// The error (logged) for a publish the server refused for good; nothing of the batch
    /// past the acknowledged prefix was committed: it stays in the queue.
    fn refused(&self, why: String) -> Error {
        let e = Error::Refused {
            what: format!(
                "the publishes from queue {:?} to subject {:?}",
                self.q.name(),
                self.link.subject
            ),
            reason: why,
        };
        tracing::error!(
            "{}: {e}; the unpublished messages stay in the queue",
            self.who
        );
        e
    }

    /// Publish a loan's messages, await the acks, commit what JetStream holds.
    fn forward(
        &self,
        loans: shmq::ReadLoans<'_>,
        backoff: &mut Backoff,
        ph: &mut Phases,
    ) -> Result<Flow> {
        let ctl = self.ctl.clone();
        let c = ctl.counters();
        let items: Vec<(u64, &[u8])> = loans.iter().collect();
        ph.msgs = items.len() as u64;
        let (acked, bytes, stop) = self.handle.block_on(self.publish(&items, ph));
        let seqs: Vec<u64> = items.iter().map(|&(s, _)| s).collect();
        drop(items);
        let t = Instant::now();
        loans.commit_first(acked);
        ph.commit = t.elapsed();
        c.add(&c.messages, acked as u64);
        c.add(&c.bytes, bytes);
        match stop {
            None => {
                backoff.reset();
                Ok(Flow::Next)
            }
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
                Err(e)
            }
            Some(Stop::Refused(why)) => Err(self.refused(why)),
            Some(Stop::Retry(_)) if self.denied().is_some() => {
                let why = self.denied().unwrap_or_default();
                Err(self.refused(why))
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
                    return Ok(Flow::Stopped);
                }
                Ok(Flow::Retried)
            }
        }
    }

    /// Publish every lent message, then await the acks. Returns how many messages at the
    /// front of the batch JetStream holds, their payload bytes, and why it stopped short.
    async fn publish(&self, loans: &[(u64, &[u8])], ph: &mut Phases) -> (usize, u64, Option<Stop>) {
        let t = Instant::now();
        let max_payload = self.client.server_info().max_payload;
        let mut pending: Vec<(PublishAckFuture, usize, usize)> = Vec::with_capacity(loans.len());
        let mut stop = None;
        let mut prev_id: Option<String> = None;
        for (i, &(seq, msg)) in loans.iter().enumerate() {
            let id = format!("{}{seq}", self.id_prefix);
            let prev = prev_id.as_deref().filter(|_| self.ordered);
            let size = msg.len() + header_bytes(&id, prev);
            if self.stream_max > 0 && msg.len() > self.stream_max {
                stop = Some(Stop::TooLarge {
                    index: i,
                    size,
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
            if let Some(prev) = prev {
                p = p.expected_last_message_id(prev);
            }
            match self.js.send_publish(self.link.subject.clone(), p).await {
                Ok(f) => {
                    pending.push((f, msg.len(), size));
                    prev_id = Some(id);
                }
                Err(e) if e.kind() == PublishErrorKind::MaxPayloadExceeded => {
                    stop = Some(Stop::TooLarge {
                        index: i,
                        size,
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
        let ctl = self.ctl.clone();
        let c = ctl.counters();
        ph.send = t.elapsed();
        let t = Instant::now();
        let acks = futures_util::future::join_all(
            pending
                .into_iter()
                .map(|(f, n, size)| async move { (f.await, n, size) }),
        )
        .await;
        let mut acked = 0;
        let mut bytes = 0u64;
        for (i, (ack, n, size)) in acks.into_iter().enumerate() {
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
                    let refused = nats::api_error(&e)
                        .filter(nats::api_error_is_permanent)
                        .filter(|j| j.error_code() != ErrorCode::STREAM_WRONG_LAST_MESSAGE_ID);
                    stop = Some(if too_large {
                        Stop::TooLarge {
                            index: i,
                            size,
                            max: self.stream_max,
                            limit: "the stream's max_msg_size",
                        }
                    } else if let (Some(j), false) = (refused, behind) {
                        Stop::Refused(j.to_string())
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
        ph.acks = t.elapsed();
        (acked, bytes, stop)
    }
}
