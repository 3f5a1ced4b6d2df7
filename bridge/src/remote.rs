//! `RemoteQueue<T>`: the `Queue<T>` calls over JetStream directly, for a process on a host
//! without a local queue and bridge.

use std::io::ErrorKind;
use std::marker::PhantomData;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use async_nats::connection::State;
use async_nats::jetstream::consumer::{pull, AckPolicy, PullConsumer};
use async_nats::jetstream::context::PublishErrorKind;
use async_nats::jetstream::{self, AckKind, ErrorCode};
use bytes::Bytes;
use futures_util::StreamExt;
use serde::de::DeserializeOwned;
use serde::Serialize;
use shmq::{Error, Result};

use crate::nats::{self, Link};

/// A queue of `T` held by a JetStream stream: `put` publishes (postcard, the bytes a
/// `shmq::Queue<T>` holds), `get` takes the next message from a durable pull consumer.
/// The calls are `shmq::Queue<T>`'s, with the same error kinds where the meaning is the
/// same; the network adds one outcome a local queue does not have (*maybe stored*, below).
///
/// # Waiting: `put`/`get`, `try_*`, `*_timeout`
///
/// | call | waits for room (a full `discard: new` stream) / a message | waits for the NATS connection | gives up with |
/// | --- | --- | --- | --- |
/// | `put`, `get` | yes, for ever | yes, for ever (the client reconnects by itself) | never (only the errors below) |
/// | `put_timeout(t)`, `get_timeout(t)` | up to `t` | up to `t` | `Error::Timeout` (nothing stored / nothing taken) |
/// | `try_put`, `try_get` | no: `Error::Full` / `Error::Empty` | no: `Error::Io` of kind `NotConnected` | at once |
///
/// "Try" on a network queue means: no waiting for room, for a message or for a connection;
/// the one round trip to the server is still made (`try_put` waits for JetStream's ack,
/// `try_get` for its "no message" answer), bounded by the ack timeout (5 s) and, on a
/// healthy connection, a network round trip (well under a millisecond on loopback). As
/// for `Queue<T>`, `*_timeout(Duration::ZERO)` is one attempt that fails with
/// `Error::Timeout`, and `*_timeout(Duration::MAX)` waits like `put`/`get`.
///
/// # What a failed put means
///
/// Every put carries a `Nats-Msg-Id` unique to this handle and this put
/// (`shmq-rq:<random>:<n>`); the retries a call makes (after an ack timeout, a lost
/// connection, a server restart, a full stream) publish again **with the same id**, so
/// JetStream stores the message once within the stream's dedupe window (2 minutes for a
/// stream this crate creates). So:
///
/// * `Ok(())`: stored once (also when JetStream answered "duplicate": an earlier attempt
///   of the same put was stored).
/// * Every error other than `Error::Io` of kind `TimedOut` (`Full`, `Timeout`,
///   `TooLarge`, `Codec`, `Io` of kind `NotConnected`, `InvalidInput` when JetStream
///   refused the message for good, `Other` when no stream answered): **not stored**, for
///   sure.
/// * `Error::Io` of kind `TimedOut`: **maybe stored**: the message was handed to the
///   connection and no answer came in time (a slow or restarting server, a connection lost
///   after the write). The message says so. A put of **the same value** on this handle
///   right after it is taken as its retry and carries the same `Nats-Msg-Id`, so retrying
///   on this error cannot duplicate the message inside the dedupe window; a put of another
///   value forgets it.
/// * `put` (no deadline) never gives up on transient trouble: it retries with the same id
///   until JetStream acknowledges, so it returns `Ok` or a for-sure failure.
///
/// # Getting
///
/// Several `RemoteQueue`s with the same durable name share its messages (each message goes
/// to one of them), like consumers of one `Queue<T>`; different durable names each see
/// every message. A message is acknowledged (removed) when `get` returns it, so, as with
/// `Queue<T>`, a process that dies after `get` returned has consumed it. A payload that is
/// not a `T` is `Error::Codec` and is consumed (terminated), like `Queue<T>::get`. If the
/// server does not confirm the ack (a connection lost at that moment), `get` still returns
/// the message and JetStream may deliver it again after the consumer's `ack_wait`
/// (at least once, never lost).
///
/// The calls block (like `Queue<T>`'s); the handle runs its own small Tokio runtime, so
/// do not call it from inside an async task (use `spawn_blocking`).
///
/// ```no_run
/// use shmq_bridge::RemoteQueue;
/// let q: RemoteQueue<(u32, String)> =
///     RemoteQueue::connect("nats://127.0.0.1:4222", "jobs.host-a", "workers")?;
/// q.put(&(1, "one".into()))?;
/// let (n, s) = q.get()?;
/// match q.try_put(&(2, "two".into())) {
///     Ok(()) => {}
///     Err(shmq::Error::Full) => { /* the stream is at its limits: not stored */ }
///     Err(shmq::Error::Io(e)) if e.kind() == std::io::ErrorKind::TimedOut => {
///         // maybe stored: retrying the same value is deduplicated by JetStream
///         q.put(&(2, "two".into()))?;
///     }
///     Err(e) => return Err(e),
/// }
/// # Ok::<(), shmq::Error>(())
/// ```
pub struct RemoteQueue<T> {
    rt: tokio::runtime::Runtime,
    js: jetstream::Context,
    client: async_nats::Client,
    consumer: PullConsumer,
    subject: String,
    server: String,
    id_prefix: String,
    next_id: AtomicU64,
    ack_timeout: Duration,
    dedupe_window: Duration,
    /// The last put whose outcome is unknown (maybe stored): its id and bytes.
    unsure: Mutex<Option<(String, Bytes)>>,
    _t: PhantomData<fn(T) -> T>,
}

impl<T> std::fmt::Debug for RemoteQueue<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteQueue")
            .field("server", &self.server)
            .field("subject", &self.subject)
            .finish_non_exhaustive()
    }
}

fn io(kind: ErrorKind, msg: String) -> Error {
    Error::Io(std::io::Error::new(kind, msg))
}

/// A bridge error from setting up, as a `shmq::Error`.
fn setup_error(e: crate::Error) -> Error {
    match e {
        crate::Error::Config(m) => Error::InvalidArgument(m),
        e @ crate::Error::Refused { .. } => io(ErrorKind::PermissionDenied, e.to_string()),
        e => io(ErrorKind::Other, e.to_string()),
    }
}

/// How long a call may wait.
#[derive(Clone, Copy, Debug)]
enum Wait {
    /// Not for room, a message or a connection (`try_*`).
    No,
    /// Until the instant (`*_timeout`), or for ever (`None`: `put`/`get`, `Duration::MAX`).
    Until(Option<Instant>),
}

impl Wait {
    fn after(d: Duration) -> Wait {
        Wait::Until(Instant::now().checked_add(d))
    }

    /// Time left; `None`: for ever. `Some(ZERO)` when past (or `No`).
    fn left(self) -> Option<Duration> {
        match self {
            Wait::No => Some(Duration::ZERO),
            Wait::Until(None) => None,
            Wait::Until(Some(d)) => Some(d.saturating_duration_since(Instant::now())),
        }
    }

    fn expired(self) -> bool {
        self.left() == Some(Duration::ZERO)
    }
}

/// How one publish attempt ended.
enum Attempt {
    Stored,
    /// Refused: nothing of this attempt is stored; `Some(why)` retryable, `None`: full.
    NotStored(Option<String>),
    /// No answer (or an unreadable one): maybe stored.
    Unknown(String),
    /// Never retried.
    Fatal(Error),
}

/// A random 64-bit value (the standard library's randomly keyed hasher over the time and
/// the process id), so two handles never share a `Nats-Msg-Id` prefix.
fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hash, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    std::time::SystemTime::now().hash(&mut h);
    std::process::id().hash(&mut h);
    h.finish()
}

impl<T: Serialize + DeserializeOwned> RemoteQueue<T> {
    /// Connect to `server` (a URL, or several comma-separated; credentials as
    /// `nats://user:password@host:4222` or `nats://token@host:4222`), find (or create) the stream that captures `subject`, and
    /// attach to (or create) the durable pull consumer `durable` on it. One attempt: no
    /// retries.
    ///
    /// Errors: `Error::InvalidArgument` for a subject that cannot be published to (empty,
    /// an empty token, white space, a wildcard) or an invalid durable name (checked before
    /// connecting); `Error::Io` of kind `PermissionDenied` when the server refuses for good
    /// (credentials, a stream configuration it rejects, overlapping subjects); other
    /// `Error::Io` when it cannot be reached.
    pub fn connect(server: &str, subject: &str, durable: &str) -> Result<RemoteQueue<T>> {
        nats::check_subject(subject, false).map_err(setup_error)?;
        nats::check_name("durable name", durable).map_err(setup_error)?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("shmq-remote")
            .enable_all()
            .build()?;
        let link = Link {
            server: server.to_string(),
            subject: subject.to_string(),
            stream: None,
            dedupe_window: Duration::from_secs(120),
            ack_timeout: Duration::from_secs(5),
        };
        let (client, js, consumer, dedupe_window) = rt.block_on(async {
            let opts = async_nats::ConnectOptions::new()
                .name(format!("shmq RemoteQueue {subject}"))
                .connection_timeout(Duration::from_secs(5));
            let (addrs, opts, shown) = nats::servers(server, opts).map_err(setup_error)?;
            let client = opts.connect(addrs).await.map_err(|e| {
                let kind = if nats::connect_error_is_permanent(&e) {
                    ErrorKind::PermissionDenied
                } else {
                    ErrorKind::ConnectionRefused
                };
                io(kind, format!("NATS: cannot connect to {shown}: {e}"))
            })?;
            let js = nats::context(client.clone(), &link);
            let stream = nats::ensure_stream_once(&js, &link)
                .await
                .map_err(setup_error)?;
            let window = stream.cached_info().config.duplicate_window;
            let consumer: PullConsumer = stream
                .get_or_create_consumer(
                    durable,
                    pull::Config {
                        durable_name: Some(durable.to_string()),
                        filter_subject: subject.to_string(),
                        ack_policy: AckPolicy::Explicit,
                        ..Default::default()
                    },
                )
                .await
                .map_err(|e| {
                    let kind = match nats::api_error(&e) {
                        Some(j) if nats::api_error_is_permanent(&j) => ErrorKind::PermissionDenied,
                        _ => ErrorKind::Other,
                    };
                    io(
                        kind,
                        format!("NATS: cannot set up the durable consumer {durable:?}: {e}"),
                    )
                })?;
            Ok::<_, Error>((client, js, consumer, window))
        })?;
        Ok(RemoteQueue {
            rt,
            js,
            client,
            consumer,
            subject: subject.to_string(),
            server: nats::redact(server),
            id_prefix: format!("shmq-rq:{:016x}:", random_u64()),
            next_id: AtomicU64::new(1),
            ack_timeout: link.ack_timeout,
            dedupe_window,
            unsure: Mutex::new(None),
            _t: PhantomData,
        })
    }

    /// Publish `msg` and wait until JetStream has stored it: while the stream is full
    /// (`discard: new` limits), while the connection is down, and across ack timeouts,
    /// retrying with the same `Nats-Msg-Id` (stored once). Never `Full` nor `Timeout`.
    /// Errors: `TooLarge` over the server's `max_payload` (`size`: the payload's bytes,
    /// `max`: `max_payload` less the header bytes the put adds; its text, shmq's, speaks of
    /// a queue's capacity, but the limit here is the server's, also logged as such) or the
    /// stream's `max_msg_size`, `Codec`, `Io` of kind `InvalidInput` when JetStream refuses the
    /// message for good; none of these stored it.
    pub fn put(&self, msg: &T) -> Result<()> {
        self.put_wait(msg, Wait::Until(None))
    }

    /// Publish `msg` without waiting for room or for a connection: `Err(Full)` if the
    /// stream refuses it for its limits, `Err(Io)` of kind `NotConnected` if the client is
    /// not connected now (both: not stored). It waits for JetStream's ack (one round trip,
    /// at most the 5 s ack timeout): no ack in time is `Err(Io)` of kind `TimedOut`,
    /// *maybe stored* (see the type's docs: retrying the same value is deduplicated).
    pub fn try_put(&self, msg: &T) -> Result<()> {
        self.put_wait(msg, Wait::No)
    }

    /// Publish `msg`, waiting at most `timeout` (for room, a connection and the ack).
    /// `Err(Timeout)`: not stored, for sure (nothing was handed to the connection, or every
    /// attempt was refused). `Err(Io)` of kind `TimedOut`: handed over and not
    /// acknowledged within `timeout`: *maybe stored* (retrying the same value is
    /// deduplicated). `Duration::ZERO`: one attempt; `Duration::MAX`: like `put`.
    pub fn put_timeout(&self, msg: &T, timeout: Duration) -> Result<()> {
        self.put_wait(msg, Wait::after(timeout))
    }

    fn put_wait(&self, msg: &T, wait: Wait) -> Result<()> {
        let payload =
            Bytes::from(postcard::to_stdvec(msg).map_err(|e| Error::Codec(e.to_string()))?);
        // A put of the same bytes right after a maybe-stored one is its retry.
        let id = {
            let mut unsure = self.unsure.lock().unwrap_or_else(|p| p.into_inner());
            match unsure.take() {
                Some((id, b)) if b == payload => id,
                _ => format!("{}{}", self.id_prefix, self.next_id.fetch_add(1, Relaxed)),
            }
        };
        // The server's limit counts the headers too: "NATS/1.0\r\nNats-Msg-Id: <id>\r\n\r\n".
        let overhead = 27 + id.len();
        let max_payload = self.client.server_info().max_payload;
        if payload.len() + overhead > max_payload {
            // shmq's `TooLarge` text speaks of a queue's capacity: say what the limit is here.
            tracing::warn!(
                "RemoteQueue on {:?}: a message of {} bytes plus {overhead} bytes of NATS \
                 headers (Nats-Msg-Id) is over the NATS server's max_payload of {max_payload} \
                 bytes: not stored (there is no queue to create larger: raise max_payload in \
                 the nats-server configuration, or send smaller messages)",
                self.subject,
                payload.len()
            );
            return Err(Error::TooLarge {
                size: payload.len(),
                max: max_payload.saturating_sub(overhead),
            });
        }
        let r = self.rt.block_on(self.publish_until(&id, &payload, wait));
        if let Err(Error::Io(e)) = &r {
            if e.kind() == ErrorKind::TimedOut {
                *self.unsure.lock().unwrap_or_else(|p| p.into_inner()) = Some((id, payload));
            }
        }
        r
    }

    async fn publish_until(&self, id: &str, payload: &Bytes, wait: Wait) -> Result<()> {
        // Whether an attempt without an answer may still be stored (or still in the
        // client's buffer, to be sent after a reconnect).
        let mut maybe_stored: Option<String> = None;
        let mut backoff = Duration::from_millis(50);
        loop {
            if self.client.connection_state() != State::Connected {
                if let Wait::No = wait {
                    if let Some(why) = maybe_stored {
                        return Err(self.unknown(id, &why));
                    }
                    return Err(io(
                        ErrorKind::NotConnected,
                        format!(
                            "not connected to NATS at {} (the client is reconnecting): the \
                             message was not published; try_put does not wait for the \
                             connection, put and put_timeout do",
                            self.server
                        ),
                    ));
                }
                if wait.expired() {
                    return Err(match maybe_stored {
                        Some(why) => self.unknown(id, &why),
                        None => Error::Timeout,
                    });
                }
                tokio::time::sleep(
                    Duration::from_millis(20).min(wait.left().unwrap_or(Duration::MAX)),
                )
                .await;
                continue;
            }
            let limit = match wait.left() {
                Some(l) if !matches!(wait, Wait::No) => l.min(self.ack_timeout),
                _ => self.ack_timeout,
            };
            // Duration::ZERO still makes one attempt, with the ack timeout as its bound
            // for the answer (like Queue<T>'s one attempt at the lock).
            let limit = if limit.is_zero() {
                self.ack_timeout
            } else {
                limit
            };
            match self.attempt(id, payload, limit).await {
                Attempt::Stored => return Ok(()),
                Attempt::Fatal(e) => return Err(e),
                Attempt::Unknown(why) => maybe_stored = Some(why),
                Attempt::NotStored(None) => {
                    if let Wait::No = wait {
                        return Err(match maybe_stored {
                            Some(why) => self.unknown(id, &why),
                            None => Error::Full,
                        });
                    }
                }
                Attempt::NotStored(Some(why)) => {
                    if let Wait::No = wait {
                        return Err(match maybe_stored {
                            Some(why) => self.unknown(id, &why),
                            None => io(
                                ErrorKind::Other,
                                format!("JetStream did not take the message (not stored): {why}"),
                            ),
                        });
                    }
                }
            }
            if let Wait::No = wait {
                // Only Unknown reaches here.
                let why = maybe_stored.unwrap_or_default();
                return Err(self.unknown(id, &why));
            }
            if wait.expired() {
                return Err(match maybe_stored {
                    Some(why) => self.unknown(id, &why),
                    None => Error::Timeout,
                });
            }
            let d = backoff.min(wait.left().unwrap_or(Duration::MAX));
            tokio::time::sleep(d).await;
            backoff = (backoff * 2).min(Duration::from_secs(1));
        }
    }

    /// One publish with `id`, its ack awaited at most `limit`.
    async fn attempt(&self, id: &str, payload: &Bytes, limit: Duration) -> Attempt {
        let p = jetstream::message::PublishMessage::build()
            .payload(payload.clone())
            .message_id(id);
        let ack = match self.js.send_publish(self.subject.clone(), p).await {
            Ok(f) => f,
            Err(e) if e.kind() == PublishErrorKind::MaxPayloadExceeded => {
                return Attempt::Fatal(Error::TooLarge {
                    size: payload.len(),
                    max: self.client.server_info().max_payload,
                })
            }
            // Not handed to the connection.
            Err(e) => return Attempt::NotStored(Some(e.to_string())),
        };
        let r = match tokio::time::timeout(limit, std::future::IntoFuture::into_future(ack)).await {
            Ok(r) => r,
            Err(_) => {
                return Attempt::Unknown(format!(
                    "no ack within {}",
                    humantime::format_duration(limit)
                ))
            }
        };
        let e = match r {
            Ok(_) => return Attempt::Stored,
            Err(e) => e,
        };
        match e.kind() {
            PublishErrorKind::TimedOut => Attempt::Unknown(format!(
                "no ack within {}",
                humantime::format_duration(limit.min(self.ack_timeout))
            )),
            // "no responders": no stream (server) took the message.
            PublishErrorKind::StreamNotFound => Attempt::NotStored(Some(format!(
                "no JetStream stream answered on {:?} (server restarting?)",
                self.subject
            ))),
            _ => match nats::api_error(&e) {
                Some(j)
                    if j.error_code() == ErrorCode::STREAM_STORE_FAILED
                        && j.to_string().contains("maximum") =>
                {
                    Attempt::NotStored(None)
                }
                Some(j) if j.error_code() == ErrorCode::STREAM_MESSAGE_EXCEEDS_MAXIMUM => {
                    Attempt::Fatal(Error::TooLarge {
                        size: payload.len(),
                        max: 0,
                    })
                }
                Some(j) if nats::api_error_is_permanent(&j) => Attempt::Fatal(io(
                    ErrorKind::InvalidInput,
                    format!("JetStream refused the message (not stored): {j}"),
                )),
                Some(j) => Attempt::NotStored(Some(j.to_string())),
                // A lost subscription or an unreadable answer: we do not know.
                None => Attempt::Unknown(e.to_string()),
            },
        }
    }

    fn unknown(&self, id: &str, why: &str) -> Error {
        io(
            ErrorKind::TimedOut,
            format!(
                "the message was published to {:?} but not acknowledged ({why}): it may have \
                 been stored. Putting the same value again on this handle reuses its \
                 Nats-Msg-Id {id:?}, so JetStream keeps one copy within the stream's dedupe \
                 window ({})",
                self.subject,
                humantime::format_duration(self.dedupe_window)
            ),
        )
    }

    /// Take the next message, waiting (for ever) while there is none and while the
    /// connection is down.
    pub fn get(&self) -> Result<T> {
        self.take(Wait::Until(None))
    }

    /// Take the next message without waiting for one or for a connection: `Err(Empty)` if
    /// none is waiting (one round trip to the server), `Err(Io)` of kind `NotConnected` if
    /// the client is not connected now.
    pub fn try_get(&self) -> Result<T> {
        self.take(Wait::No)
    }

    /// Take the next message, waiting at most `timeout` (`Err(Timeout)`), also for a lost
    /// connection to come back. `Duration::ZERO`: one attempt; `Duration::MAX`: like `get`.
    pub fn get_timeout(&self, timeout: Duration) -> Result<T> {
        self.take(Wait::after(timeout))
    }

    fn take(&self, wait: Wait) -> Result<T> {
        self.rt.block_on(async {
            let mut backoff = Duration::from_millis(50);
            loop {
                let failed = |why: String| match wait {
                    Wait::No => Err(io(ErrorKind::Other, format!("NATS: {why}"))),
                    _ if wait.expired() => Err(Error::Timeout),
                    _ => Ok(why),
                };
                if self.client.connection_state() != State::Connected {
                    if let Wait::No = wait {
                        return Err(io(
                            ErrorKind::NotConnected,
                            format!(
                                "not connected to NATS at {} (the client is reconnecting); \
                                 try_get does not wait for the connection, get and \
                                 get_timeout do",
                                self.server
                            ),
                        ));
                    }
                    if wait.expired() {
                        return Err(Error::Timeout);
                    }
                    tokio::time::sleep(
                        Duration::from_millis(20).min(wait.left().unwrap_or(Duration::MAX)),
                    )
                    .await;
                    continue;
                }
                // A pull waits at most 30 s, then is renewed; below 10 ms (and for the
                // last moments of a deadline) it is a no-wait fetch.
                let expires = wait.left().unwrap_or(Duration::from_secs(30));
                let batch = if expires < Duration::from_millis(10) {
                    self.consumer.fetch().max_messages(1).messages().await
                } else {
                    self.consumer
                        .batch()
                        .max_messages(1)
                        .expires(expires.min(Duration::from_secs(30)))
                        .messages()
                        .await
                };
                let next = match batch {
                    Ok(mut b) => b.next().await,
                    Err(e) => Some(Err(e.into())),
                };
                let m = match next {
                    Some(Ok(m)) => m,
                    Some(Err(e)) => {
                        failed(format!("pulling from {:?} failed: {e}", self.subject))?;
                        tokio::time::sleep(backoff.min(wait.left().unwrap_or(Duration::MAX))).await;
                        backoff = (backoff * 2).min(Duration::from_secs(1));
                        continue;
                    }
                    None => match wait {
                        Wait::No => return Err(Error::Empty),
                        _ if wait.expired() => return Err(Error::Timeout),
                        _ => continue,
                    },
                };
                return match decode::<T>(&m.payload) {
                    Ok(v) => {
                        if let Err(e) = m.double_ack().await {
                            // The message is the caller's; JetStream may deliver it again
                            // after ack_wait if the ack did not arrive (never lost).
                            tracing::warn!(
                                "RemoteQueue {:?}: the ack of a message was not confirmed \
                                 ({e}); JetStream may deliver it again",
                                self.subject
                            );
                        }
                        Ok(v)
                    }
                    Err(e) => {
                        // Like `Queue<T>::get`: the undecodable message is consumed, not
                        // offered again forever.
                        let _ = m.ack_with(AckKind::Term).await;
                        Err(e)
                    }
                };
            }
        })
    }

    /// Messages not yet delivered to this durable consumer (ask the server).
    pub fn pending(&self) -> Result<u64> {
        self.rt.block_on(async {
            let info = self
                .consumer
                .get_info()
                .await
                .map_err(|e| io(ErrorKind::Other, format!("NATS: {e}")))?;
            Ok(info.num_pending + info.num_ack_pending as u64)
        })
    }

    /// The subject this queue publishes to and consumes from.
    pub fn subject(&self) -> &str {
        &self.subject
    }
}

/// Decode like `shmq::Queue<T>`: the whole payload must be one `T`.
fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    match postcard::take_from_bytes::<T>(bytes) {
        Ok((v, [])) => Ok(v),
        Ok((_, rest)) => Err(Error::Codec(format!(
            "cannot decode a {}-byte message as {}: {} bytes left over",
            bytes.len(),
            std::any::type_name::<T>(),
            rest.len()
        ))),
        Err(e) => Err(Error::Codec(format!(
            "cannot decode a {}-byte message as {}: {e}",
            bytes.len(),
            std::any::type_name::<T>()
        ))),
    }
}
