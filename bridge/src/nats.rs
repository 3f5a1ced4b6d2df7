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

/// The server list `server` (one URL or several, comma-separated), parsed, and its
/// printable form with any password or token replaced by `***`. Credentials in a URL
/// (`nats://user:password@host:4222`, `nats://token@host:4222`) are passed on as the
/// connection's user and password (or token): the NATS client ignores them in a URL.
pub(crate) fn servers(
    server: &str,
    opts: async_nats::ConnectOptions,
) -> Result<(
    Vec<async_nats::ServerAddr>,
    async_nats::ConnectOptions,
    String,
)> {
    let mut addrs = Vec::new();
    let mut shown = Vec::new();
    let mut opts = Some(opts);
    let mut creds = None;
    for s in server.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let a: async_nats::ServerAddr = s
            .parse()
            .map_err(|e| Error::Config(format!("invalid NATS server URL {:?}: {e}", redact(s))))?;
        if creds.is_none() {
            if let Some(u) = a.username() {
                creds = Some((u.to_string(), a.password().map(str::to_string)));
            }
        }
        shown.push(redact(s));
        addrs.push(a);
    }
    if addrs.is_empty() {
        return Err(Error::Config("no NATS server URL given".into()));
    }
    let mut o = opts.take().unwrap_or_default();
    match creds {
        Some((user, Some(pass))) => o = o.user_and_password(user, pass),
        Some((token, None)) => o = o.token(token),
        None => {}
    }
    Ok((addrs, o, shown.join(",")))
}

/// `url` with the user-info part (password or token) hidden.
pub(crate) fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(i), Some(at)) if at > i + 3 => format!("{}***{}", &url[..i + 3], &url[at..]),
        (None, Some(at)) => format!("***{}", &url[at..]),
        _ => url.to_string(),
    }
}

/// Whether a failed connection attempt will fail the same way every time: a server URL
/// that does not parse, credentials the server refuses, a TLS setup that cannot work.
/// Everything else (refused, reset, timed out, DNS) may be a server not up yet: retried.
pub(crate) fn connect_error_is_permanent(e: &async_nats::ConnectError) -> bool {
    use async_nats::ConnectErrorKind as K;
    matches!(
        e.kind(),
        K::ServerParse | K::Authentication | K::AuthorizationViolation | K::Tls
    )
}

/// Whether a JetStream API error is the server refusing the request itself (status 400:
/// an invalid or conflicting configuration, e.g. overlapping subjects; 403: not
/// permitted), not a passing condition (503: JetStream unavailable, 500: a server-side
/// failure, 408: a timeout).
pub(crate) fn api_error_is_permanent(e: &jetstream::Error) -> bool {
    matches!(e.code(), 400 | 403)
}

/// Whether the server's `-ERR` `denied` (see `Counters::denied`) refused publishes to
/// exactly `subject` (it names the subject in quotes).
pub(crate) fn denies_publish_to(denied: &str, subject: &str) -> bool {
    denied
        .to_ascii_lowercase()
        .contains("permissions violation for publish")
        && denied.contains(&format!("\"{subject}\""))
}

/// The JetStream API error in `e` or its chain of sources, if any.
pub(crate) fn api_error(e: &(dyn std::error::Error + 'static)) -> Option<jetstream::Error> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(x) = cur {
        if let Some(j) = x.downcast_ref::<jetstream::Error>() {
            return Some(j.clone());
        }
        cur = x.source();
    }
    None
}

/// Check a subject before any server sees it: non-empty, no empty token (`a..b`, a
/// leading or trailing `.`), no white space or control characters, and `*` or `>` only as
/// a whole token (`>` only as the last one). `wildcards`: whether `*`/`>` are allowed at
/// all (a subject that is published to may hold none).
pub(crate) fn check_subject(subject: &str, wildcards: bool) -> Result<()> {
    let bad = |why: &str| Err(Error::Config(format!("invalid subject {subject:?}: {why}")));
    if subject.is_empty() {
        return bad("it is empty");
    }
    if subject.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return bad("it holds white space or a control character");
    }
    let tokens: Vec<&str> = subject.split('.').collect();
    for (i, t) in tokens.iter().enumerate() {
        if t.is_empty() {
            return bad("it has an empty token (a leading or trailing '.', or '..')");
        }
        if t.contains(['*', '>']) {
            if !wildcards {
                return bad("it holds a wildcard ('*' or '>'), and messages are published to it");
            }
            if *t != "*" && *t != ">" {
                return bad("'*' and '>' must be whole tokens");
            }
            if *t == ">" && i + 1 != tokens.len() {
                return bad("'>' must be the last token");
            }
        }
    }
    Ok(())
}

/// Whether every subject `subject` matches is matched by `pattern` (`*`: one token, `>`:
/// one or more trailing tokens); `subject` may hold wildcards (a consumer's filter).
pub(crate) fn covers(pattern: &str, subject: &str) -> bool {
    let mut p = pattern.split('.');
    let mut s = subject.split('.');
    loop {
        match (p.next(), s.next()) {
            (Some(">"), Some(_)) => return true,
            (Some("*"), Some(t)) if t != ">" => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// Check a stream or consumer name (`what`: "stream name", "durable name"): 1 to 255
/// printable ASCII characters without `.`, `*`, `>`, `/`, `\\` or white space (the names
/// JetStream accepts; they become subject tokens and file names on the server).
pub(crate) fn check_name(what: &str, name: &str) -> Result<()> {
    if name.is_empty()
        || name.len() > 255
        || name
            .chars()
            .any(|c| !c.is_ascii_graphic() || matches!(c, '.' | '*' | '>' | '/' | '\\'))
    {
        return Err(Error::Config(format!(
            "{what} {name:?} must be 1 to 255 printable ASCII characters without '.', '*', \
             '>', '/', '\\' or white space"
        )));
    }
    Ok(())
}

/// Connect, retrying with backoff (logged) until the server answers or `ctl` stops.
/// A permanent failure ([`connect_error_is_permanent`]) is [`Error::Refused`] at once;
/// stopped meanwhile: [`Error::Stopped`].
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
                        async_nats::Event::ServerError(async_nats::ServerError::Other(m))
                            if m.to_ascii_lowercase()
                                .contains("permissions violation for publish") =>
                        {
                            tracing::error!("{label}: NATS: {m}");
                            if let Ok(mut d) = ctl.counters().denied.lock() {
                                *d = Some(m);
                            }
                        }
                        other => tracing::warn!("{label}: NATS: {other}"),
                    }
                }
            });
        let (addrs, opts, shown) = servers(server, opts)?;
        match opts.connect(addrs).await {
            Ok(c) => {
                ctl.counters().connected.store(true, Relaxed);
                return Ok(c);
            }
            Err(e) if connect_error_is_permanent(&e) => {
                let e = Error::Refused {
                    what: format!("the connection to {shown}"),
                    reason: e.to_string(),
                };
                tracing::error!("{name}: {e}");
                return Err(e);
            }
            Err(e) => {
                let d = backoff.next_delay();
                tracing::warn!(
                    "{name}: cannot connect to NATS at {shown}: {e}; retrying in {}",
                    humantime::format_duration(d)
                );
                ctl.counters().add(&ctl.counters().retries, 1);
                if ctl.sleep(d).await {
                    return Err(Error::Stopped(format!("NATS at {shown} had not answered")));
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
/// it, or a new file-backed stream with the dedupe window. Transient failures are retried;
/// an invalid subject or stream name is [`Error::Config`] and a request the server
/// refuses for good ([`api_error_is_permanent`]) is [`Error::Refused`], both at once.
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
                    return Err(Error::Stopped(
                        "the JetStream stream was not set up yet".into(),
                    ));
                }
            }
        }
    }
}

/// One attempt at [`ensure_stream`]: a transient failure is [`Error::Nats`] with the reason,
/// not retried (for `RemoteQueue::connect`, whose caller wants an answer).
pub(crate) async fn ensure_stream_once(
    js: &jetstream::Context,
    link: &Link,
) -> Result<stream::Stream> {
    match try_ensure_stream(js, link).await {
        Ok(s) => Ok(s),
        Err(Fail::Fatal(e)) => Err(e),
        Err(Fail::Retry(why)) => Err(Error::Nats(format!(
            "cannot set up the JetStream stream for {:?}: {why}",
            link.subject
        ))),
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
    check_subject(&link.subject, true).map_err(Fail::Fatal)?;
    let refused = |what: String, j: &jetstream::Error| {
        Fail::Fatal(Error::Refused {
            what,
            reason: j.to_string(),
        })
    };
    let name = match &link.stream {
        Some(n) => {
            check_name("stream name", n).map_err(Fail::Fatal)?;
            n.clone()
        }
        None => match js.stream_by_subject(link.subject.clone()).await {
            Ok(n) => n,
            Err(e) if e.kind() == GetStreamByNameErrorKind::NotFound => {
                default_stream_name(&link.subject)
            }
            Err(e) if e.kind() == GetStreamByNameErrorKind::InvalidSubject => {
                return Err(Fail::Fatal(Error::Config(format!(
                    "invalid subject {:?}: {e}",
                    link.subject
                ))))
            }
            Err(e) => match api_error(&e) {
                Some(j) if api_error_is_permanent(&j) => {
                    return Err(refused(
                        format!("the stream lookup for subject {:?}", link.subject),
                        &j,
                    ))
                }
                _ => return Err(Fail::Retry(e.to_string())),
            },
        },
    };
    match js.get_stream(&name).await {
        Ok(s) => {
            let subjects = &s.cached_info().config.subjects;
            // A stream named explicitly that does not capture the subject: publishes would
            // find no stream ("no responders") and a consumer filter would be refused, for
            // ever. (A stream without subjects, e.g. a mirror, is left to the server.)
            if !subjects.is_empty() && !subjects.iter().any(|p| covers(p, &link.subject)) {
                return Err(Fail::Fatal(Error::Config(format!(
                    "stream {name:?} does not capture subject {:?} (its subjects: {subjects:?}): \
                     name another stream, or none to use the one that captures it",
                    link.subject
                ))));
            }
            return Ok(s);
        }
        Err(e) => match e.kind() {
            GetStreamErrorKind::JetStream(j) if j.error_code() == ErrorCode::STREAM_NOT_FOUND => {}
            GetStreamErrorKind::JetStream(j) if api_error_is_permanent(&j) => {
                return Err(refused(format!("stream {name:?}"), &j))
            }
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
        Err(e) => {
            match e.kind() {
                // Created by the other side meanwhile.
                CreateStreamErrorKind::JetStream(j)
                    if j.error_code() == ErrorCode::STREAM_NAME_EXIST =>
                {
                    js.get_stream(&name)
                        .await
                        .map_err(|e| Fail::Retry(e.to_string()))
                }
                CreateStreamErrorKind::JetStream(j) if api_error_is_permanent(&j) => Err(refused(
                    format!("to create stream {name:?} for {:?}", link.subject),
                    &j,
                )),
                CreateStreamErrorKind::InvalidStreamName
                | CreateStreamErrorKind::EmptyStreamName => Err(Fail::Fatal(Error::Config(
                    format!("cannot create stream {name:?} for {:?}: {e}", link.subject),
                ))),
                _ => Err(Fail::Retry(e.to_string())),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subject_checks() {
        for ok in ["a", "a.b", "a.*", "a.>", "*", ">", "a.*.c"] {
            assert!(check_subject(ok, true).is_ok(), "{ok}");
        }
        for bad in ["", "a..b", ".a", "a.", "a b", "a\tb", "a*", "a.>.b", "a.b>"] {
            assert!(check_subject(bad, true).is_err(), "{bad:?}");
        }
        assert!(check_subject("a.*", false).is_err());
        assert!(check_subject("a.b", false).is_ok());
        assert!(check_name("durable name", "ok-1_A").is_ok());
        for bad in ["", "a.b", "a b", "a*", "a>", "a/b", "a\\b", "é"] {
            assert!(check_name("durable name", bad).is_err(), "{bad:?}");
        }
        assert!(check_name("stream name", &"x".repeat(256)).is_err());
    }

    #[test]
    fn covering() {
        assert!(covers("a.>", "a.b"));
        assert!(covers("a.>", "a.b.c"));
        assert!(covers("a.>", "a.*"));
        assert!(!covers("a.>", "a"));
        assert!(covers("a.*", "a.b"));
        assert!(!covers("a.*", "a.b.c"));
        assert!(!covers("a.*", "a.>"));
        assert!(covers(">", "x.y"));
        assert!(covers("a.b", "a.b"));
        assert!(!covers("a.b", "a.c"));
        assert!(!covers("a.b", "a.*"));
    }

    #[test]
    fn redacting() {
        assert_eq!(redact("nats://u:p@h:1"), "nats://***@h:1");
        assert_eq!(redact("nats://tok@h:1"), "nats://***@h:1");
        assert_eq!(redact("nats://h:1"), "nats://h:1");
        assert_eq!(redact("u:p@h:1"), "***@h:1");
    }
}
