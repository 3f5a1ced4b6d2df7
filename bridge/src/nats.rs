//! Connecting to NATS and finding (or creating) the JetStream stream of a subject.

use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use async_nats::jetstream::context::{
    CreateStreamErrorKind, GetStreamByNameErrorKind, GetStreamErrorKind,
};
use async_nats::jetstream::ErrorCode;
use async_nats::jetstream::{self, stream};

use crate::control::{Backoff, Control};
use crate::error::{Error, Result};

/// How the bridges reach JetStream: the server, and the stream that captures the subject.
#[derive(Clone, Debug)]
pub(crate) struct Link {
    pub server: String,
    pub subject: String,
    /// Stream name; `None`: the stream that already captures the subject, else a new one
    /// named [`default_stream_name`].
    pub stream: Option<String>,
    pub dedupe_window: Duration,
    pub ack_timeout: Duration,
}

/// `SHMQ_` + the subject with every character a stream name may not hold (`.`, `*`, `>`,
/// white space, path separators) replaced by `_`.
pub fn default_stream_name(subject: &str) -> String {
    let tail: String = subject
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("SHMQ_{tail}")
}

/// Connect, retrying with backoff (logged) until the server answers or `ctl` stops.
/// Connection events (lost, back) are logged and mirrored in `Progress::connected`; the
/// client reconnects by itself with its own backoff (up to 4 s between attempts).
pub(crate) async fn connect(server: &str, name: &str, ctl: &Control) -> Result<async_nats::Client> {
    let mut backoff = Backoff::new();
    loop {
        let events = ctl.clone();
        let label = name.to_string();
        let opts = async_nats::ConnectOptions::new()
            .name(name)
            .connection_timeout(Duration::from_secs(2))
            .event_callback(move |ev| {
                let ctl = events.clone();
                let label = label.clone();
                async move {
                    match ev {
                        async_nats::Event::Connected => {
                            ctl.counters().connected.store(true, Relaxed);
                            tracing::info!("{label}: NATS connection up");
                        }
                        async_nats::Event::Disconnected => {
                            ctl.counters().connected.store(false, Relaxed);
                            ctl.counters().add(&ctl.counters().disconnects, 1);
                            tracing::warn!(
                                "{label}: lost the NATS connection; reconnecting with backoff"
                            );
                        }
                        other => tracing::warn!("{label}: NATS: {other}"),
                    }
                }
            });
        match opts.connect(server).await {
            Ok(c) => {
                ctl.counters().connected.store(true, Relaxed);
                return Ok(c);
            }
            Err(e) => {
                let d = backoff.next_delay();
                tracing::warn!(
                    "{name}: cannot connect to NATS at {server}: {e}; retrying in {}",
                    humantime::format_duration(d)
                );
                ctl.counters().add(&ctl.counters().retries, 1);
                if ctl.sleep(d).await {
                    return Err(Error::Nats(format!(
                        "stopped before NATS at {server} answered"
                    )));
                }
            }
        }
    }
}

/// The JetStream context for `link`, its ack timeout set.
pub(crate) fn context(client: async_nats::Client, link: &Link) -> jetstream::Context {
    jetstream::ContextBuilder::new()
        .timeout(link.ack_timeout)
        .build(client)
}

/// The stream that captures `link.subject`: the named one, or whichever already captures
/// it, or a new file-backed stream with the dedupe window. Transient failures are retried.
pub(crate) async fn ensure_stream(
    js: &jetstream::Context,
    link: &Link,
    who: &str,
    ctl: &Control,
) -> Result<stream::Stream> {
    let mut backoff = Backoff::new();
    loop {
        match try_ensure_stream(js, link).await {
            Ok(s) => return Ok(s),
            Err(Fail::Fatal(e)) => return Err(e),
            Err(Fail::Retry(e)) => {
                let d = backoff.next_delay();
                tracing::warn!(
                    "{who}: cannot set up the JetStream stream for {:?}: {e}; retrying in {}",
                    link.subject,
                    humantime::format_duration(d)
                );
                ctl.counters().add(&ctl.counters().retries, 1);
                if ctl.sleep(d).await {
                    return Err(Error::Nats("stopped while setting up the stream".into()));
                }
            }
        }
    }
}

enum Fail {
    Retry(String),
    Fatal(Error),
}

async fn try_ensure_stream(
    js: &jetstream::Context,
    link: &Link,
) -> std::result::Result<stream::Stream, Fail> {
    let name = match &link.stream {
        Some(n) => {
            if n.is_empty() || n.contains(['.', '*', '>', ' ', '\t', '/', '\\']) {
                return Err(Fail::Fatal(Error::Config(format!(
                    "stream name {n:?} may not be empty nor hold '.', '*', '>', '/', '\\' or white space"
                ))));
            }
            n.clone()
        }
        None => match js.stream_by_subject(link.subject.clone()).await {
            Ok(n) => n,
            Err(e) if e.kind() == GetStreamByNameErrorKind::NotFound => {
                default_stream_name(&link.subject)
            }
            Err(e) => return Err(Fail::Retry(e.to_string())),
        },
    };
    match js.get_stream(&name).await {
        Ok(s) => return Ok(s),
        Err(e) => match e.kind() {
            GetStreamErrorKind::JetStream(j) if j.error_code() == ErrorCode::STREAM_NOT_FOUND => {}
            _ => return Err(Fail::Retry(e.to_string())),
        },
    }
    let cfg = stream::Config {
        name: name.clone(),
        subjects: vec![link.subject.clone()],
        duplicate_window: link.dedupe_window,
        storage: stream::StorageType::File,
        ..Default::default()
    };
    match js.create_stream(cfg).await {
        Ok(s) => Ok(s),
        Err(e) => match e.kind() {
            // Created by the other side meanwhile.
            CreateStreamErrorKind::JetStream(j)
                if j.error_code() == ErrorCode::STREAM_NAME_EXIST =>
            {
                js.get_stream(&name)
                    .await
                    .map_err(|e| Fail::Retry(e.to_string()))
            }
            CreateStreamErrorKind::JetStream(j) => Err(Fail::Fatal(Error::Nats(format!(
                "cannot create stream {name:?} for {:?}: {j}",
                link.subject
            )))),
            _ => Err(Fail::Retry(e.to_string())),
        },
    }
}
