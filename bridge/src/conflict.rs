//! Bridges that must not run together, found at the start through the bridged marks
//! (`shmq::internal::bridged::list`) once this bridge has registered its own:
//!
//! * an in and an out bridge on the same local queue (same uid) and the same stream of the
//!   same server, the in bridge's subject matching the out bridge's: each message goes out,
//!   comes back in as a new stream message (a new sequence, so no dedupe catches it) and
//!   goes out again, for ever, the stream growing without bound;
//! * two in bridges sharing a durable consumer (same server, stream and durable name) with
//!   different state files: the consumer hands each message to one of them, each dedupes
//!   only what it put itself, so redeliveries are put twice and the order is lost.
//!
//! A bridge checks once, right after it registered, before it moves anything: the second of
//! two that clash refuses to run ([`Error::Config`], exit status 2); two started at the
//! same moment may both refuse (never both run). A bridge whose mark could not be written
//! is not checked.

use std::path::Path;

use shmq::internal::bridged::{self, Direction};

use crate::error::{Error, Result};

/// Whether the NATS subject pattern `pattern` (`*` one token, `>` the rest) matches the
/// subject `subject` (or, when `subject` is itself a pattern, may match what it matches).
pub(crate) fn subject_matches(pattern: &str, subject: &str) -> bool {
    let mut p = pattern.split('.');
    let mut s = subject.split('.');
    loop {
        match (p.next(), s.next()) {
            (Some(">"), Some(_)) => return true,
            (Some(_), Some(">")) => return true,
            (Some("*"), Some(_)) | (Some(_), Some("*")) => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

/// Refuse this bridge (direction `dir` on the queue with uid `queue_uid`, server `server`,
/// stream `stream`, subject `subject`, durable `durable` for in) when a live bridge that
/// clashes with it (see the module docs). `own`: this bridge's mark.
pub(crate) fn check(
    dir: Direction,
    queue_uid: u64,
    server: &str,
    stream: &str,
    subject: &str,
    durable: Option<&str>,
    own: Option<&Path>,
) -> Result<()> {
    let Some(own) = own else { return Ok(()) };
    let all = bridged::list();
    let server = crate::mark::redact(server);
    for b in all.iter().filter(|b| b.mark != own) {
        if b.info.server != server || b.info.stream != stream {
            continue;
        }
        let (out_subject, in_subject) = match dir {
            Direction::Out => (subject, b.info.subject.as_str()),
            Direction::In => (b.info.subject.as_str(), subject),
        };
        if b.info.direction != dir
            && b.queue_uid == queue_uid
            && subject_matches(in_subject, out_subject)
        {
            return Err(Error::Config(format!(
                "an {} bridge (pid {}) already moves queue {:?} and stream {stream:?} \
                 ({:?}) the other way: together the two bridges would loop for ever (each \
                 message out comes back in as a new stream message, which no dedupe catches, \
                 and goes out again; the stream grows without bound). Bridge a queue out and \
                 another queue in, or use different streams",
                b.info.direction.label(),
                b.pid,
                b.queue,
                b.info.subject,
            )));
        }
        if dir == Direction::In
            && b.info.direction == Direction::In
            && durable.is_some()
            && b.info.durable.as_deref() == durable
        {
            return Err(Error::Config(format!(
                "an in bridge (pid {}, queue {:?}) already consumes stream {stream:?} through \
                 the durable consumer {:?}: two bridges sharing one durable consumer split its \
                 messages, put redeliveries twice and lose the order. Run one in bridge per \
                 durable consumer, or give this one its own --durable",
                b.pid,
                b.queue,
                durable.unwrap_or_default(),
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::subject_matches as m;

    #[test]
    fn subjects() {
        assert!(m("a.b", "a.b"));
        assert!(!m("a.b", "a.c"));
        assert!(m("a.*", "a.b"));
        assert!(!m("a.*", "a.b.c"));
        assert!(m("a.>", "a.b.c"));
        assert!(!m("a.>", "a"));
        assert!(m(">", "x"));
        assert!(!m("a.b", "a.b.c"));
    }
}
