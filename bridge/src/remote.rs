//! `RemoteQueue<T>`: the `Queue<T>` calls over JetStream directly, for a process on a host
//! without a local queue and bridge.

use std::marker::PhantomData;
use std::time::{Duration, Instant};

use async_nats::jetstream::consumer::{pull, AckPolicy, PullConsumer};
use async_nats::jetstream::context::PublishErrorKind;
use async_nats::jetstream::{self, AckKind};
use futures_util::StreamExt;
use serde::de::DeserializeOwned;
use serde::Serialize;
use shmq::{Error, Result};

use crate::control::Control;
use crate::nats::{self, Link};

/// A queue of `T` held by a JetStream stream: `put` publishes (postcard, the bytes a
/// `shmq::Queue<T>` holds), `get` takes the next message from a durable pull consumer.
/// The calls and error kinds are `shmq::Queue<T>`'s: `put`/`try_put`/`put_timeout`,
/// `get`/`try_get`/`get_timeout`, `Error::{Full, Empty, Timeout, TooLarge, Codec}`; a
/// NATS failure is `Error::Io`.
///
/// Several `RemoteQueue`s with the same durable name share its messages (each message goes
/// to one of them), like consumers of one `Queue<T>`; different durable names each see
/// every message. A message is acknowledged (removed) when `get` returns it, so, as with
/// `Queue<T>`, a process that dies after `get` returned has consumed it.
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
/// # Ok::<(), shmq::Error>(())
/// ```
pub struct RemoteQueue<T> {
    rt: tokio::runtime::Runtime,
    js: jetstream::Context,
    client: async_nats::Client,
    consumer: PullConsumer,
    subject: String,
    _t: PhantomData<fn(T) -> T>,
}

impl<T> std::fmt::Debug for RemoteQueue<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteQueue")
            .field("subject", &self.subject)
            .finish_non_exhaustive()
    }
}

fn io(e: impl std::fmt::Display) -> Error {
    Error::Io(std::io::Error::other(format!("NATS: {e}")))
}

impl<T: Serialize + DeserializeOwned> RemoteQueue<T> {
    /// Connect to `server`, find (or create) the stream that captures `subject`, and
    /// attach to (or create) the durable pull consumer `durable` on it.
    pub fn connect(server: &str, subject: &str, durable: &str) -> Result<RemoteQueue<T>> {
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
        let (client, js, consumer) = rt.block_on(async {
            let ctl = Control::new();
            // One attempt: a caller of `connect` wants an answer, not a retry loop.
            let client = async_nats::ConnectOptions::new()
                .name(format!("shmq RemoteQueue {subject}"))
                .connection_timeout(Duration::from_secs(5))
                .connect(server)
                .await
                .map_err(io)?;
            let js = nats::context(client.clone(), &link);
            ctl.stop(); // ensure_stream retries only until stopped: make it one attempt
            let stream = nats::ensure_stream(&js, &link, "RemoteQueue", &ctl)
                .await
                .map_err(io)?;
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
                .map_err(io)?;
            Ok::<_, Error>((client, js, consumer))
        })?;
        Ok(RemoteQueue {
            rt,
            js,
            client,
            consumer,
            subject: subject.to_string(),
            _t: PhantomData,
        })
    }

    /// Publish `msg`, waiting (retrying every 50 ms) while the stream refuses it as full
    /// (a stream with `discard: new` limits); never returns `Full`.
    pub fn put(&self, msg: &T) -> Result<()> {
        self.put_until(msg, None, true)
    }

    /// Publish `msg`: `Err(Full)` if the stream refuses it for its limits.
    pub fn try_put(&self, msg: &T) -> Result<()> {
        self.put_until(msg, None, false)
    }

    /// Publish `msg`, waiting at most `timeout` for JetStream to take it
    /// (`Err(Timeout)`).
    pub fn put_timeout(&self, msg: &T, timeout: Duration) -> Result<()> {
        self.put_until(msg, Some(Instant::now() + timeout), true)
    }

    fn put_until(&self, msg: &T, deadline: Option<Instant>, wait: bool) -> Result<()> {
        let bytes = postcard::to_stdvec(msg).map_err(|e| Error::Codec(e.to_string()))?;
        let max = self.client.server_info().max_payload;
        if bytes.len() > max {
            return Err(Error::TooLarge {
                size: bytes.len(),
                max,
            });
        }
        let payload = bytes::Bytes::from(bytes);
        self.rt.block_on(async {
            loop {
                let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
                if left == Some(Duration::ZERO) {
                    return Err(Error::Timeout);
                }
                let attempt = async {
                    let ack = self
                        .js
                        .publish(self.subject.clone(), payload.clone())
                        .await?;
                    ack.await
                };
                let r = match left {
                    Some(l) => match tokio::time::timeout(l, attempt).await {
                        Ok(r) => r,
                        Err(_) => return Err(Error::Timeout),
                    },
                    None => attempt.await,
                };
                match r {
                    Ok(_) => return Ok(()),
                    Err(e) if e.kind() == PublishErrorKind::MaxPayloadExceeded => {
                        return Err(Error::TooLarge {
                            size: payload.len(),
                            max,
                        })
                    }
                    Err(e) if e.to_string().contains("maximum") => {
                        // "maximum messages/bytes exceeded": a full stream (discard new).
                        if !wait {
                            return Err(Error::Full);
                        }
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                    Err(e) if e.kind() == PublishErrorKind::TimedOut && deadline.is_some() => {
                        // Retried until the deadline.
                    }
                    Err(e) => return Err(io(e)),
                }
            }
        })
    }

    /// Take the next message, waiting while there is none.
    pub fn get(&self) -> Result<T> {
        loop {
            match self.take(Some(Duration::from_secs(30))) {
                Err(Error::Timeout) => continue,
                r => return r,
            }
        }
    }

    /// Take the next message: `Err(Empty)` if none is waiting now.
    pub fn try_get(&self) -> Result<T> {
        self.take(None)
    }

    /// Take the next message, waiting at most `timeout` (`Err(Timeout)`).
    pub fn get_timeout(&self, timeout: Duration) -> Result<T> {
        // JetStream wants a pull to last at least a millisecond or so.
        self.take(Some(timeout.max(Duration::from_millis(10))))
    }

    /// `None`: no wait (`Empty`); `Some(t)`: wait `t` (`Timeout`).
    fn take(&self, wait: Option<Duration>) -> Result<T> {
        self.rt.block_on(async {
            let mut batch = match wait {
                None => self
                    .consumer
                    .fetch()
                    .max_messages(1)
                    .messages()
                    .await
                    .map_err(io)?,
                Some(t) => self
                    .consumer
                    .batch()
                    .max_messages(1)
                    .expires(t)
                    .messages()
                    .await
                    .map_err(io)?,
            };
            let m = match batch.next().await {
                Some(m) => m.map_err(io)?,
                None => {
                    return Err(if wait.is_some() {
                        Error::Timeout
                    } else {
                        Error::Empty
                    })
                }
            };
            match decode::<T>(&m.payload) {
                Ok(v) => {
                    m.double_ack().await.map_err(io)?;
                    Ok(v)
                }
                Err(e) => {
                    // Like `Queue<T>::get`: the undecodable message is consumed, not
                    // offered again forever.
                    m.ack_with(AckKind::Term).await.map_err(io)?;
                    Err(e)
                }
            }
        })
    }

    /// Messages not yet delivered to this durable consumer (ask the server).
    pub fn pending(&self) -> Result<u64> {
        self.rt.block_on(async {
            let info = self.consumer.get_info().await.map_err(io)?;
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
