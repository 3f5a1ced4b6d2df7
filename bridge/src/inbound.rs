//! The in bridge: a durable JetStream pull consumer to a local queue.
//!
//! Per message, in stream order: put it into the local queue, check that the queue put into
//! is still the one at the queue's name (one `stat`), record its stream sequence
//! ([`crate::state`]), acknowledge it. A full queue is waited on (the message stays
//! unacknowledged and no more are pulled than one batch: back-pressure, no unbounded
//! buffer). A message that can never go into the queue is terminated and counted.
//!
//! After any disruption (start, lost connection, missing heartbeats, a consumer or stream
//! deleted) the bridge resyncs before pulling again: it makes sure the stream exists
//! (creating it again), compares the stream's identity (name and creation time) with the
//! one its state records and starts the state over for a new incarnation (a stream deleted
//! and created again, or a server that lost its store, numbers from 1 again); then, if the
//! consumer has delivered messages nobody acknowledged (to a killed bridge, or into a
//! dropped connection), JetStream would redeliver them only after `ack_wait` and behind
//! newer ones; the bridge instead starts the durable consumer over right after the last
//! message it holds, so order holds and nothing waits.
//!
//! The local queue: every 250 ms while idle, and after every put, the bridge checks that
//! the queue at its name is still the one it has open. A queue removed and created again
//! is followed (a put that went into the removed one is done again into the new one before
//! the ack); a name left empty for a second stops the bridge with `Error::Queue`
//! (`NotFound`) and removes its state file; a closed queue stops it (`Ok`).

use std::path::PathBuf;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::consumer::{pull, AckPolicy, DeliverPolicy, PullConsumer};
use async_nats::jetstream::stream::{ConsumerError, ConsumerErrorKind};
use async_nats::jetstream::{self, stream::Stream, AckKind, ErrorCode};
use futures_util::StreamExt;
use shmq::RawQueue;

use crate::control::{Backoff, Control};
use crate::error::{Error, Result};
use crate::nats::{self, Link};
use crate::state::{self, AtName, QueueWatch, State};

/// Checks a message before it goes into the local queue: `Err(why)` skips it as malformed.
pub type Validator = Arc<dyn Fn(&[u8]) -> std::result::Result<(), String> + Send + Sync>;

/// Configuration of an in bridge: JetStream subject `subject` → local queue `queue`,
/// through a durable pull consumer.
///
/// ```no_run
/// # async fn f() -> shmq_bridge::Result<()> {
/// let ctl = shmq_bridge::Control::new();
/// shmq_bridge::In::new("jobs", "jobs.host-a")
///     .server("nats://127.0.0.1:4222")
///     .durable("jobs-host-b")
///     .run(&ctl)
///     .await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct In {
    queue: String,
    create: Option<usize>,
    link: Link,
    durable: Option<String>,
    state: Option<PathBuf>,
    batch: usize,
    ack_wait: Duration,
    validate: Option<Validator>,
}

impl std::fmt::Debug for In {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("In")
            .field("queue", &self.queue)
            .field("subject", &self.link.subject)
            .field("server", &self.link.server)
            .field("durable", &self.durable_name())
            .field("batch", &self.batch)
            .finish_non_exhaustive()
    }
}

impl In {
    /// Bridge `subject` into the local queue `queue` (a name, or a path holding a `/`).
    /// Defaults: server `nats://127.0.0.1:4222`, the stream that captures the subject (else
    /// a new one), durable consumer `shmq-in-<queue>-<subject>` (see [`durable`](Self::durable)),
    /// pulls of 256, `ack_wait` 30 s, the state file
    /// `/dev/shm/shmq-bridge.<queue>.<stream>.<durable>.in`.
    pub fn new(queue: impl Into<String>, subject: impl Into<String>) -> In {
        In {
            queue: queue.into(),
            create: None,
            link: Link {
                server: crate::DEFAULT_SERVER.into(),
                subject: subject.into(),
                stream: None,
                dedupe_window: Duration::from_secs(120),
                ack_timeout: Duration::from_secs(5),
            },
            durable: None,
            state: None,
            batch: 256,
            ack_wait: Duration::from_secs(30),
            validate: None,
        }
    }

    /// The NATS server URL.
    pub fn server(mut self, url: impl Into<String>) -> In {
        self.link.server = url.into();
        self
    }

    /// Consume from this stream rather than the one that captures the subject.
    pub fn stream(mut self, name: impl Into<String>) -> In {
        self.link.stream = Some(name.into());
        self
    }

    /// The durable consumer's name. Default: `shmq-in-<queue>-<subject>` (characters a
    /// consumer name may not hold become `_`, plus a hash of the subject when any did).
    /// Run one in bridge per durable: two would share its messages and restart it under
    /// each other (two on one state file are refused, see [`state_file`](Self::state_file)).
    pub fn durable(mut self, name: impl Into<String>) -> In {
        self.durable = Some(name.into());
        self
    }

    /// Where the bridge records the last stream sequence it put (see the module docs).
    /// Default: `/dev/shm/shmq-bridge.<queue>.<stream>.<durable>.in` (`/` become `_`),
    /// created with mode 0600, never through a symbolic link. The bridge holds an exclusive
    /// `flock` on it while it runs: a second bridge on the same file fails at start with
    /// [`Error::Config`] ("in use by another in bridge"). It is removed by the bridge when
    /// its queue is removed for good; otherwise it stays (64 bytes) until reboot or `rm`.
    pub fn state_file(mut self, path: impl Into<PathBuf>) -> In {
        self.state = Some(path.into());
        self
    }

    /// Most messages pulled (and held unacknowledged) at once. Default 256.
    pub fn batch(mut self, n: usize) -> In {
        self.batch = n.max(1);
        self
    }

    /// `ack_wait` of a consumer the bridge creates. While the local queue is full the
    /// bridge tells JetStream it is still working on the message in hand (`+WPI`).
    pub fn ack_wait(mut self, d: Duration) -> In {
        self.ack_wait = d;
        self
    }

    /// Check each message before it is put: `Err(why)` skips it like an oversized one
    /// (terminated, counted in `malformed`, logged). E.g. for a `Queue<T>`:
    /// `In::validate(|b| postcard::from_bytes::<T>(b).map(drop).map_err(|e| e.to_string()))`.
    pub fn validate(
        mut self,
        f: impl Fn(&[u8]) -> std::result::Result<(), String> + Send + Sync + 'static,
    ) -> In {
        self.validate = Some(Arc::new(f));
        self
    }

    /// Create the local queue with this capacity (bytes) if it does not exist; it is kept
    /// when the bridge exits.
    pub fn create(mut self, capacity: usize) -> In {
        self.create = Some(capacity);
        self
    }

    /// The durable consumer's name: the one given, else `shmq-in-<queue>-<subject>` (every
    /// character a consumer name may not hold becomes `_`, and a hash of the raw subject is
    /// appended when that changed anything), so in bridges from different subjects into one
    /// queue never share a consumer.
    fn durable_name(&self) -> String {
        self.durable.clone().unwrap_or_else(|| {
            let clean = |s: &str| -> String {
                s.chars()
                    .map(|c| {
                        if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                            c
                        } else {
                            '_'
                        }
                    })
                    .collect()
            };
            let (q, s) = (clean(&self.queue), clean(&self.link.subject));
            if s == self.link.subject {
                format!("shmq-in-{q}-{s}")
            } else {
                // FNV-1a: the same name from every build (std's DefaultHasher may change
                // between Rust versions, and with it the durable a restarted bridge uses).
                use std::hash::Hasher;
                let mut h = fnv::FnvHasher::default();
                h.write(self.link.subject.as_bytes());
                format!("shmq-in-{q}-{s}-{:08x}", h.finish() as u32)
            }
        })
    }

    /// Run until `ctl` is stopped (`Ok`), the local queue is closed (`Ok`; what was not
    /// put stays in JetStream), or a fatal error: among them the local queue removed (and
    /// not created again within a second: then its state file is removed too), or the
    /// state file in use by another in bridge ([`Error::Config`]). A queue removed and
    /// created again under the bridge is followed (see the module docs). Needs the
    /// multi-thread Tokio runtime.
    pub async fn run(self, ctl: &Control) -> Result<()> {
        crate::error::stop_is_ok(self.run_inner(ctl).await)
    }

    async fn run_inner(self, ctl: &Control) -> Result<()> {
        let (q, watch) = QueueWatch::open(&self.queue, self.create)?;
        let durable = self.durable_name();
        nats::check_name("durable name", &durable)?;
        let who = format!("in {} -> {}", self.link.subject, self.queue);
        let client = nats::connect(&self.link.server, &who, ctl).await?;
        let js = nats::context(client, &self.link);
        let stream = nats::ensure_stream(&js, &self.link, &who, ctl).await?;
        let sinfo = stream.cached_info();
        let mark = crate::mark::Marking::new(
            shmq::internal::bridged::Direction::In,
            &q,
            &self.link,
            &sinfo.config.name,
            Some(&durable),
            ctl,
        );
        let path = self
            .state
            .clone()
            .unwrap_or_else(|| state::default_path(&self.queue, &sinfo.config.name, &durable));
        let st = State::open(&path, q.uid(), state::stream_id(sinfo))?;
        // After the state file: a bridge on the same file is told so by its lock.
        crate::conflict::check(
            shmq::internal::bridged::Direction::In,
            q.uid(),
            &self.link.server,
            &sinfo.config.name,
            &self.link.subject,
            Some(&durable),
            mark.path(),
        )?;
        tracing::info!(
            "{who}: consuming stream {:?} with durable {durable:?}; last put stream sequence {} ({})",
            sinfo.config.name,
            st.last(),
            path.display()
        );
        let w = Worker {
            q,
            watch,
            st,
            js,
            durable,
            who,
            ctl: ctl.clone(),
            cfg: self,
            mark,
        };
        w.run().await
    }
}

/// How often an idle in bridge checks that its local queue is still open and still the one
/// at its name.
const WATCH_EVERY: Duration = Duration::from_millis(250);
/// How long a removed queue name may stay empty (`shmq rm q; shmq create q`) before the
/// bridge gives up on it.
const GONE_GRACE: Duration = Duration::from_secs(1);

struct Worker {
    q: RawQueue,
    watch: QueueWatch,
    st: State,
    js: jetstream::Context,
    durable: String,
    who: String,
    ctl: Control,
    cfg: In,
    /// The "bridged" mark, registered again when the bridge follows a new queue.
    mark: crate::mark::Marking,
}

/// How handling one message ended.
enum Next {
    Continue,
    /// Stop the bridge (stopped, or the queue closed).
    Done,
    /// A delivery went missing (the consumer sequence jumped): resync before going on.
    Resync(String),
}

/// Why setting up the consumer failed.
enum Setup {
    /// Transient: retry with backoff.
    Retry(String),
    /// JetStream refused it for good: stop.
    Refused(Error),
}

/// How one pull stream ended.
enum Exit {
    Done,
    Resync(String),
    Fail(Error),
}

impl Worker {
    async fn run(mut self) -> Result<()> {
        let ctl = self.ctl.clone();
        let c = ctl.counters();
        let mut backoff = Backoff::new();
        let mut lag_task: Option<tokio::task::JoinHandle<()>> = None;
        let result = loop {
            if self.ctl.is_stopped() {
                break Ok(());
            }
            let (consumer, mut next_dseq) = match self.resync().await {
                Ok(Ok(c)) => c,
                Ok(Err(why)) => {
                    if self
                        .retry(&mut backoff, &format!("cannot set up the consumer: {why}"))
                        .await
                    {
                        break Ok(());
                    }
                    continue;
                }
                Err(_) if self.ctl.is_stopped() => break Ok(()),
                Err(e) => break Err(e),
            };
            if let Some(t) = lag_task.take() {
                t.abort();
            }
            lag_task = Some(tokio::spawn(watch_lag(consumer.clone(), self.ctl.clone())));
            let mut msgs = match consumer
                .stream()
                .max_messages_per_batch(self.cfg.batch)
                .heartbeat(Duration::from_secs(5))
                .expires(Duration::from_secs(30))
                .messages()
                .await
            {
                Ok(m) => m,
                Err(e) => {
                    if self.retry(&mut backoff, &format!("cannot pull: {e}")).await {
                        break Ok(());
                    }
                    continue;
                }
            };
            let mut tick = tokio::time::interval(WATCH_EVERY);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let exit = loop {
                let ctl = self.ctl.clone();
                let next = tokio::select! {
                    m = msgs.next() => Some(m),
                    _ = tick.tick() => None,
                    _ = ctl.stopped() => break Exit::Done,
                };
                let idle = next.is_none();
                let r = match next {
                    // Idle (or between messages): is the queue still open, still ours?
                    None => self.watch_queue().await,
                    Some(None) => break Exit::Resync("the pull stream ended".to_string()),
                    Some(Some(Err(e))) => break Exit::Resync(format!("pulling failed: {e}")),
                    Some(Some(Ok(m))) => self.handle(m, &mut next_dseq).await,
                };
                match r {
                    Ok(Next::Continue) => {
                        if !idle {
                            backoff.reset();
                        }
                    }
                    Ok(Next::Done) => break Exit::Done,
                    Ok(Next::Resync(why)) => break Exit::Resync(why),
                    Err(e) => break Exit::Fail(e),
                }
            };
            match exit {
                Exit::Done => break Ok(()),
                Exit::Fail(e) => break Err(e),
                Exit::Resync(why) => {
                    if self.retry(&mut backoff, &why).await {
                        break Ok(());
                    }
                }
            }
        };
        if let Some(t) = lag_task.take() {
            t.abort();
        }
        c.connected.store(false, Relaxed);
        result
    }

    /// Log and count a transient failure, then sleep a backoff. Returns whether the
    /// bridge was stopped meanwhile.
    async fn retry(&self, backoff: &mut Backoff, why: &str) -> bool {
        let ctl = self.ctl.clone();
        let c = ctl.counters();
        c.add(&c.retries, 1);
        let d = backoff.next_delay();
        tracing::warn!(
            "{}: {why}; resyncing in {}",
            self.who,
            humantime::format_duration(d)
        );
        self.ctl.sleep(d).await
    }

    fn consumer_config(&self, deliver_policy: DeliverPolicy) -> pull::Config {
        pull::Config {
            durable_name: Some(self.durable.clone()),
            filter_subject: self.cfg.link.subject.clone(),
            ack_policy: AckPolicy::Explicit,
            ack_wait: self.cfg.ack_wait,
            max_ack_pending: (self.cfg.batch as i64 * 2).max(64),
            deliver_policy,
            ..Default::default()
        }
    }

    /// The stream (created again if it vanished), checked against the incarnation the state
    /// belongs to (a new one starts the state over); the durable consumer, started over
    /// after the last message held when it delivered messages nobody acknowledged (see the
    /// module docs); and the consumer sequence its next delivery must carry. The outer
    /// error is fatal (or the bridge was stopped), the inner one transient.
    async fn resync(&mut self) -> Result<std::result::Result<(PullConsumer, u64), String>> {
        let mut stream =
            nats::ensure_stream(&self.js, &self.cfg.link, &self.who, &self.ctl).await?;
        match self.resync_on(&mut stream).await {
            Err(Setup::Refused(e)) => {
                tracing::error!("{}: {e}", self.who);
                Err(e)
            }
            Err(Setup::Retry(why)) => Ok(Err(why)),
            Ok(c) => Ok(Ok(c)),
        }
    }

    /// A consumer request that failed: [`Setup::Refused`] when JetStream refused it for
    /// good (status 400/403: e.g. the stream's consumer limit, a configuration it rejects;
    /// not "already exists", which a retry after the delete can pass), else a retry.
    fn consumer_fail(&self, what: &str, e: ConsumerError) -> Setup {
        let j = match e.kind() {
            ConsumerErrorKind::JetStream(j) => Some(j),
            _ => nats::api_error(&e),
        };
        match j {
            Some(j)
                if nats::api_error_is_permanent(&j)
                    && j.error_code() != ErrorCode::CONSUMER_NAME_EXIST
                    && j.error_code() != ErrorCode::CONSUMER_ALREADY_EXISTS =>
            {
                Setup::Refused(Error::Refused {
                    what: format!(
                        "{what} (durable {:?} on stream {:?}, subject {:?})",
                        self.durable,
                        self.cfg
                            .link
                            .stream
                            .as_deref()
                            .unwrap_or("that captures it"),
                        self.cfg.link.subject
                    ),
                    reason: j.to_string(),
                })
            }
            _ => Setup::Retry(e.to_string()),
        }
    }

    async fn resync_on(
        &mut self,
        stream: &mut Stream,
    ) -> std::result::Result<(PullConsumer, u64), Setup> {
        let cons: PullConsumer = match stream
            .get_or_create_consumer(&self.durable, self.consumer_config(DeliverPolicy::All))
            .await
        {
            Ok(c) => c,
            Err(e) => return Err(self.consumer_fail("the consumer", e)),
        };
        // The stream's identity read after the consumer was found: a consumer belongs to
        // the incarnation it was found on, and dies with it, so a stream recreated after
        // this read makes the pull fail and brings the bridge back here.
        let sinfo = stream
            .info()
            .await
            .map_err(|e| Setup::Retry(e.to_string()))?
            .clone();
        let id = state::stream_id(&sinfo);
        if id != self.st.stream() || sinfo.state.last_sequence < self.st.last() {
            tracing::warn!(
                "{}: stream {:?} is not the one the state file recorded (created {}; its last \
                 sequence {}, the state's last put {}): it was deleted and created again, or \
                 the server lost its store. Starting the state over: every message of this \
                 stream is new",
                self.who,
                sinfo.config.name,
                sinfo.created,
                sinfo.state.last_sequence,
                self.st.last()
            );
            self.st.reset(self.q.uid(), id);
        }
        let info = cons
            .get_info()
            .await
            .map_err(|e| Setup::Retry(e.to_string()))?;
        let floor = info.ack_floor.stream_sequence.max(self.st.last());
        if info.num_ack_pending == 0 && info.delivered.stream_sequence <= floor {
            return Ok((cons, info.delivered.consumer_sequence + 1));
        }
        tracing::info!(
            "{}: {} messages were delivered and not acknowledged (last delivered {}, \
             acknowledged up to {}, put up to {}): restarting the consumer at stream \
             sequence {}",
            self.who,
            info.num_ack_pending,
            info.delivered.stream_sequence,
            info.ack_floor.stream_sequence,
            self.st.last(),
            floor + 1
        );
        if let Err(e) = stream.delete_consumer(&self.durable).await {
            return Err(self.consumer_fail("to delete the consumer", e));
        }
        let cons = match stream
            .create_consumer(self.consumer_config(DeliverPolicy::ByStartSequence {
                start_sequence: floor + 1,
            }))
            .await
        {
            Ok(c) => c,
            Err(e) => return Err(self.consumer_fail("to create the consumer again", e)),
        };
        Ok((cons, 1))
    }

    /// Put, record, ack one delivery. `next_dseq`: the consumer sequence it must carry;
    /// a jump means a delivery was lost in transit (into a dropped connection) and JetStream
    /// would redeliver it only after `ack_wait`, behind this one: resync instead.
    async fn handle(&mut self, m: jetstream::Message, next_dseq: &mut u64) -> Result<Next> {
        let ctl = self.ctl.clone();
        let c = ctl.counters();
        let (seq, dseq, pending) = match m.info() {
            Ok(i) => (i.stream_sequence, i.consumer_sequence, i.pending),
            Err(e) => {
                // Not a JetStream delivery (no ack subject): nothing to put or ack.
                tracing::error!(
                    "{}: skipping a message without JetStream metadata: {e}",
                    self.who
                );
                c.add(&c.malformed, 1);
                return Ok(Next::Continue);
            }
        };
        if dseq != *next_dseq {
            return Ok(Next::Resync(format!(
                "delivery {} of the consumer went missing (got {dseq}, stream sequence {seq})",
                *next_dseq
            )));
        }
        *next_dseq += 1;
        c.lag.store(pending, Relaxed);
        if seq <= self.st.last() {
            c.add(&c.duplicates, 1);
            self.ack(&m, AckKind::Ack).await;
            return Ok(Next::Continue);
        }
        let payload = m.payload.clone();
        let bad = if payload.len() > self.q.max_message() {
            Some(format!(
                "{} bytes, larger than the local queue's largest message ({} bytes)",
                payload.len(),
                self.q.max_message()
            ))
        } else {
            self.cfg.validate.as_ref().and_then(|v| v(&payload).err())
        };
        if let Some(why) = bad {
            c.add(&c.malformed, 1);
            tracing::error!(
                "{}: skipping malformed message at stream sequence {seq}: {why}; terminated \
                 (+TERM: JetStream will not deliver it again)",
                self.who
            );
            self.st.set_last(seq);
            self.ack(&m, AckKind::Term).await;
            return Ok(Next::Continue);
        }
        if let Next::Done = self.put(&m, seq).await? {
            return Ok(Next::Done);
        }
        self.st.set_last(seq);
        c.add(&c.messages, 1);
        c.add(&c.bytes, payload.len() as u64);
        self.ack(&m, AckKind::Ack).await;
        Ok(Next::Continue)
    }

    /// Put `m` into the local queue, such that the queue it went into was still the one at
    /// the queue's name after the put (checked with one `stat`; a put into a queue removed
    /// meanwhile is done again into its successor). A full queue is waited on without
    /// acknowledging (back-pressure), telling JetStream every `ack_wait / 3` that the
    /// message is still in hand. `Done`: stopped, or the queue closed (not acknowledged).
    async fn put(&mut self, m: &jetstream::Message, seq: u64) -> Result<Next> {
        let ctl = self.ctl.clone();
        let c = ctl.counters();
        let progress_every = (self.cfg.ack_wait / 3).max(Duration::from_millis(100));
        let mut last_progress: Option<Instant> = None;
        loop {
            let r = match self.q.try_put(&m.payload) {
                Err(shmq::Error::Full) => {
                    if last_progress.is_none() {
                        c.add(&c.full_waits, 1);
                        tracing::info!(
                            "{}: local queue full; not acknowledging stream sequence {seq} \
                             until it has room",
                            self.who
                        );
                        last_progress = Some(Instant::now());
                    }
                    let q = self.q.clone();
                    let p = m.payload.clone();
                    tokio::task::spawn_blocking(move || q.put_timeout(&p, WATCH_EVERY))
                        .await
                        .map_err(|e| Error::Nats(format!("in bridge put task failed: {e}")))?
                }
                r => r,
            };
            match r {
                Ok(()) => {
                    // The message is in `self.q`: is that still the queue at the name?
                    if self.follow_queue().await? {
                        continue;
                    }
                    return Ok(Next::Continue);
                }
                Err(shmq::Error::Timeout) | Err(shmq::Error::Full) => {
                    if self.ctl.is_stopped() {
                        return Ok(Next::Done);
                    }
                    if last_progress.is_some_and(|t| t.elapsed() >= progress_every) {
                        self.ack(m, AckKind::Progress).await;
                        last_progress = Some(Instant::now());
                    }
                    self.follow_queue().await?;
                }
                Err(shmq::Error::Closed) => {
                    if self.follow_queue().await? {
                        continue;
                    }
                    return Ok(self.closed());
                }
                Err(e) => return Err(Error::queue(self.q.name(), e)),
            }
        }
    }

    /// The periodic check of an idle bridge: the queue removed (and created again, or not),
    /// or closed.
    async fn watch_queue(&mut self) -> Result<Next> {
        self.follow_queue().await?;
        if self.q.is_closed() {
            return Ok(self.closed());
        }
        Ok(Next::Continue)
    }

    /// Whether the queue at the name is another one than `self.q` (then it is `self.q` now).
    /// A name left empty for [`GONE_GRACE`] is fatal: the queue was removed (its state file
    /// is removed with it).
    async fn follow_queue(&mut self) -> Result<bool> {
        let give_up = Instant::now() + GONE_GRACE;
        loop {
            match self.watch.check(&self.q)? {
                AtName::Same => return Ok(false),
                AtName::Replaced(n) => {
                    tracing::warn!(
                        "{}: local queue {:?} was removed and created again (uid {:016x}, now \
                         {:016x}): putting into the new one from now on (what was put into \
                         the removed one went with it)",
                        self.who,
                        self.q.name(),
                        self.q.uid(),
                        n.uid()
                    );
                    self.st.set_queue(n.uid());
                    self.mark.follow(&n);
                    self.q = n;
                    return Ok(true);
                }
                AtName::Gone(e) => {
                    if Instant::now() >= give_up || self.ctl.is_stopped() {
                        tracing::error!(
                            "{}: local queue {:?} was removed; stopping (what was not put \
                             stays in JetStream; the state file {} is removed)",
                            self.who,
                            self.q.name(),
                            self.st.path().display()
                        );
                        self.st.remove();
                        return Err(Error::queue(self.q.name(), e));
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }

    fn closed(&self) -> Next {
        tracing::info!(
            "{}: local queue closed; stopping (what was not put stays in JetStream)",
            self.who
        );
        Next::Done
    }

    /// Acknowledge (or terminate, or extend) `m`. A failure is only logged: the message is
    /// recorded as put, so a redelivery is acknowledged without a second put.
    async fn ack(&self, m: &jetstream::Message, kind: AckKind) {
        if let Err(e) = m.ack_with(kind).await {
            tracing::debug!(
                "{}: ack failed (a redelivery will be skipped): {e}",
                self.who
            );
        }
    }
}

/// Keep `Progress::lag` current while no message flows: the consumer's pending count.
async fn watch_lag(cons: PullConsumer, ctl: Control) {
    loop {
        if let Ok(info) = cons.get_info().await {
            ctl.counters().lag.store(info.num_pending, Relaxed);
        }
        if ctl.sleep(Duration::from_secs(2)).await {
            return;
        }
    }
}
