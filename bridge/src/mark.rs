//! The bridge's mark: tells `shmq ls` / `shmq stat` that a queue is bridged, where to, and
//! how far along (see `shmq::internal::bridged` for the file and its guarantees).
//!
//! [`register`] writes the mark once the stream is known and starts a small task that copies
//! [`Control::progress`] into it every second (one `pwrite`; the bridge's hot path is not
//! touched). The returned [`Marked`] keeps the mark for the run: dropping it removes the
//! file at once, and the task ends at its next tick. A mark that cannot be written is
//! logged and the bridge runs on without it: the mark is for people, not for delivery.

use std::sync::{Arc, Weak};
use std::time::Duration;

use shmq::internal::bridged::{self, BridgeInfo, Direction, Mark, MarkCounters};
use shmq::internal::now_unix;
use shmq::RawQueue;

use crate::control::Control;
use crate::nats::Link;

/// How often the counters in the mark are refreshed.
const EVERY: Duration = Duration::from_secs(1);

/// A bridge's mark that follows its local queue: [`follow`](Self::follow) registers it
/// again for the queue created at the name after the old one was removed (the mark names
/// the object bridged, so the old mark would no longer show the new queue as bridged).
#[derive(Debug)]
pub(crate) struct Marking {
    direction: Direction,
    link: Link,
    stream: String,
    durable: Option<String>,
    ctl: Control,
    cur: Option<Marked>,
}

impl Marking {
    /// [`register`] on `q`, remembering what to register again on a switch.
    pub(crate) fn new(
        direction: Direction,
        q: &RawQueue,
        link: &Link,
        stream: &str,
        durable: Option<&str>,
        ctl: &Control,
    ) -> Marking {
        let cur = register(direction, q, link, stream, durable, ctl);
        Marking {
            direction,
            link: link.clone(),
            stream: stream.to_string(),
            durable: durable.map(str::to_string),
            ctl: ctl.clone(),
            cur,
        }
    }

    /// The bridge now works on `q` (created again at the name): drop the old mark (its
    /// file goes) and register on `q`. Must run inside a Tokio runtime (entered, for a
    /// blocking thread).
    pub(crate) fn follow(&mut self, q: &RawQueue) {
        self.cur = None;
        self.cur = register(
            self.direction,
            q,
            &self.link,
            &self.stream,
            self.durable.as_deref(),
            &self.ctl,
        );
    }
}

impl Marking {
    /// The current mark's file (`None`: it could not be written).
    pub(crate) fn path(&self) -> Option<&std::path::Path> {
        self.cur.as_ref().map(|m| m._mark.path())
    }
}

/// A registration for the length of a run (see the module docs).
#[derive(Debug)]
pub(crate) struct Marked {
    _mark: Arc<Mark>,
}

/// `nats://user:pass@host:4222` → `nats://***@host:4222`, for each comma-separated URL: the
/// mark is readable by its owner only, but `shmq stat` prints it.
pub(crate) fn redact(server: &str) -> String {
    server
        .split(',')
        .map(|u| {
            let (scheme, rest) = match u.split_once("://") {
                Some((s, r)) => (Some(s), r),
                None => (None, u),
            };
            let rest = match rest.rsplit_once('@') {
                Some((_, host)) => format!("***@{host}"),
                None => rest.to_string(),
            };
            match scheme {
                Some(s) => format!("{s}://{rest}"),
                None => rest,
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// Register the bridge `direction` on `q` (stream `stream`, durable consumer `durable` for
/// in) and keep its counters fresh from `ctl`. Must run inside a Tokio runtime.
pub(crate) fn register(
    direction: Direction,
    q: &RawQueue,
    link: &Link,
    stream: &str,
    durable: Option<&str>,
    ctl: &Control,
) -> Option<Marked> {
    let info = BridgeInfo {
        direction,
        server: redact(&link.server),
        stream: stream.to_string(),
        subject: link.subject.clone(),
        durable: durable.map(str::to_string),
    };
    let mark = match bridged::register(q, &info) {
        Ok(m) => Arc::new(m),
        Err(e) => {
            tracing::warn!(
                "{} bridge of {}: cannot register it for `shmq ls` ({e}); running on",
                direction.label(),
                q.name()
            );
            return None;
        }
    };
    let weak: Weak<Mark> = Arc::downgrade(&mark);
    let ctl = ctl.clone();
    tokio::spawn(async move {
        let mut last = MarkCounters::default();
        loop {
            let stopped = ctl.sleep(EVERY).await;
            let Some(mark) = weak.upgrade() else { return };
            let p = ctl.progress();
            let now = now_unix();
            let c = MarkCounters {
                messages: p.messages,
                bytes: p.bytes,
                duplicates: p.duplicates,
                malformed: p.malformed,
                retries: p.retries,
                disconnects: p.disconnects,
                lag: p.lag,
                connected: p.connected,
                last_forward_unix: if p.messages > last.messages {
                    now
                } else {
                    last.last_forward_unix
                },
                updated_unix: now,
            };
            // A failed write leaves the previous counters; nothing to do about it here.
            let _ = mark.update(&c);
            last = c;
            if stopped {
                return;
            }
        }
    });
    Some(Marked { _mark: mark })
}

#[cfg(test)]
mod tests {
    #[test]
    fn credentials_are_left_out() {
        assert_eq!(
            super::redact("nats://127.0.0.1:4222"),
            "nats://127.0.0.1:4222"
        );
        assert_eq!(
            super::redact("nats://u:p@h:1,tls://tok@h2:2"),
            "nats://***@h:1,tls://***@h2:2"
        );
        assert_eq!(super::redact("u:p@h"), "***@h");
    }
}
