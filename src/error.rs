//! The crate's error type.
//!
//! Every fallible operation returns [`Result<T>`](crate::Result), whose error is the
//! [`Error`] enum below. Each variant's message says what happened and, where it helps,
//! what to do about it.

use std::fmt;
use std::io;

/// Errors returned by shmq.
///
/// The enum is `#[non_exhaustive]`: match the variants you handle and keep a `_` arm.
///
/// ```
/// use shmq::{Error, RawQueue};
/// # let name = format!("doc-err-{}", std::process::id());
/// let q = RawQueue::create(&name, 4096)?;
/// let mut buf = Vec::new();
/// match q.try_get_into(&mut buf) {
///     Err(Error::Empty) => println!("nothing queued yet"),
///     Ok(n) => println!("got {n} bytes"),
///     Err(e) => return Err(e),
/// }
/// # Ok::<(), shmq::Error>(())
/// ```
///
/// # Printing
/// The message ([`Display`](fmt::Display)) is complete: it already contains the message of
/// any inner error, so [`source()`](std::error::Error::source) returns `None` and an error
/// reporter that walks the chain prints nothing twice. [`Debug`](fmt::Debug) — what
/// `fn main() -> shmq::Result<()>` prints when `main` fails — is the variant followed by
/// the message, like `io::Error`'s and `anyhow`'s:
///
/// ```
/// use shmq::process::ProcessError;
/// let e = shmq::Error::from(ProcessError::NotInitialized);
/// assert!(format!("{e:?}").starts_with(
///     "Process(NotInitialized): shmq::process::init() was not called: make it the first statement of main()"
/// ));
/// ```
///
/// `{:#?}` prints the variant's fields instead, as a derived `Debug` would.
#[derive(thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The queue had no room for the message and the call was not allowed to wait (a
    /// `try_` call; also when another process held the producers' lock for its 50 ms).
    #[error("queue is full, or another producer held its lock for 50 ms: no room for the message now (use put/put_timeout to wait)")]
    Full,
    /// The queue held no message and the call was not allowed to wait (a `try_` call; also
    /// when another process held the consumers' lock for its 50 ms, e.g. with a read loan).
    #[error("queue is empty, or another consumer held its lock for 50 ms (a read loan?): no message now (use get/get_timeout to wait)")]
    Empty,
    /// The deadline passed before the operation could complete.
    #[error("timed out: the deadline passed before the queue, lock or other object was ready")]
    Timeout,
    /// The queue was closed: puts fail, gets fail once the remaining messages are drained.
    #[error("queue is closed")]
    Closed,
    /// The message can never fit in this queue, however empty it is: a local queue's ring
    /// (its capacity), or for a `shmq_bridge::RemoteQueue` the NATS server's `max_payload`.
    #[error("message of {size} bytes is larger than this queue can ever hold (at most {max} bytes per message; a local queue: create it with a larger capacity; a RemoteQueue: the NATS server's max_payload)")]
    TooLarge {
        /// Encoded size of the rejected message in bytes.
        size: usize,
        /// Largest message this queue accepts, in bytes.
        max: usize,
    },
    /// No segment exists under that name or path (a path always contains a `/`).
    #[error("{}", not_found_message(.0))]
    NotFound(String),
    /// A segment with that name or path exists already.
    #[error("a queue {} exists already{}", place(.name), if *.stale { " and no process maps it any more (stale): remove it with shmq::remove, `shmq rm`, or create with Options::replace_stale(true)" } else { " (open it instead, or pick another name)" })]
    AlreadyExists {
        /// The name or path that exists.
        name: String,
        /// `true` when the existing object is stale: no process maps it (its attach marker
        /// is free, see `MAPPED_BYTE` in docs/design.md) and it was not created persistent.
        stale: bool,
    },
    /// The name breaks the naming rules: 1 to 200 bytes of ASCII letters, digits, `_`, `-`
    /// and `.`, not starting with `.` (the object is `/dev/shm/shmq.<name>`).
    #[error("invalid queue name {name:?}: {reason}")]
    InvalidName {
        /// The rejected name.
        name: String,
        /// Which rule it breaks.
        reason: &'static str,
    },
    /// A capacity or other argument outside the supported range.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// The object exists but is not a shmq segment of this layout version, or was created
    /// for a different message codec or type.
    #[error("incompatible segment {name:?}: {reason}")]
    Incompatible {
        /// The name or path that was opened.
        name: String,
        /// What did not match.
        reason: String,
    },
    /// The segment's contents break an invariant (a bug, a hostile writer, or memory
    /// corruption). The queue cannot be used safely any more; remove and recreate it.
    #[error("corrupt queue: {0} (remove and recreate the queue)")]
    Corrupt(String),
    /// Serializing or deserializing a message failed.
    #[error("codec error: {0}")]
    Codec(String),
    /// An operating-system call failed. The message names the operation and the path
    /// where there is one; it is printed once (the `io::Error` is the payload, not a
    /// [`source`](std::error::Error::source), so an error-chain printer does not repeat it).
    #[error("I/O error: {0}")]
    Io(io::Error),
    /// A child process or pool task failed: it panicked, exited with a non-zero code, was
    /// killed by a signal, or could not be started (see [`crate::process::ProcessError`]).
    #[error("{0}")]
    Process(crate::process::ProcessError),
}

impl From<io::Error> for Error {
    fn from(e: io::Error) -> Error {
        Error::Io(e)
    }
}

/// How a `NotFound`/`AlreadyExists` string reads: `named "q"` for a queue name, `at
/// /some/path` for a path (queue names never contain `/`).
fn place(s: &str) -> String {
    if s.contains('/') {
        format!("at {s}")
    } else {
        format!("named {s:?}")
    }
}

fn not_found_message(s: &str) -> String {
    if s.contains('/') {
        format!("no shmq queue at {s} (no such file; check the path)")
    } else {
        format!("no shmq queue named {s:?} exists (create it first, or check the name)")
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if f.alternate() {
            return match self {
                Error::Full => f.write_str("Full"),
                Error::Empty => f.write_str("Empty"),
                Error::Timeout => f.write_str("Timeout"),
                Error::Closed => f.write_str("Closed"),
                Error::TooLarge { size, max } => f
                    .debug_struct("TooLarge")
                    .field("size", size)
                    .field("max", max)
                    .finish(),
                Error::NotFound(n) => f.debug_tuple("NotFound").field(n).finish(),
                Error::AlreadyExists { name, stale } => f
                    .debug_struct("AlreadyExists")
                    .field("name", name)
                    .field("stale", stale)
                    .finish(),
                Error::InvalidName { name, reason } => f
                    .debug_struct("InvalidName")
                    .field("name", name)
                    .field("reason", reason)
                    .finish(),
                Error::InvalidArgument(m) => f.debug_tuple("InvalidArgument").field(m).finish(),
                Error::Incompatible { name, reason } => f
                    .debug_struct("Incompatible")
                    .field("name", name)
                    .field("reason", reason)
                    .finish(),
                Error::Corrupt(m) => f.debug_tuple("Corrupt").field(m).finish(),
                Error::Codec(m) => f.debug_tuple("Codec").field(m).finish(),
                Error::Io(e) => f.debug_tuple("Io").field(e).finish(),
                Error::Process(p) => f.debug_tuple("Process").field(p).finish(),
            };
        }
        // `Variant: message`, with the inner variant where there is one: the name to match
        // on, then what happened and what to do.
        match self {
            Error::Full => f.write_str("Full"),
            Error::Empty => f.write_str("Empty"),
            Error::Timeout => f.write_str("Timeout"),
            Error::Closed => f.write_str("Closed"),
            Error::TooLarge { .. } => f.write_str("TooLarge"),
            Error::NotFound(_) => f.write_str("NotFound"),
            Error::AlreadyExists { .. } => f.write_str("AlreadyExists"),
            Error::InvalidName { .. } => f.write_str("InvalidName"),
            Error::InvalidArgument(_) => f.write_str("InvalidArgument"),
            Error::Incompatible { .. } => f.write_str("Incompatible"),
            Error::Corrupt(_) => f.write_str("Corrupt"),
            Error::Codec(_) => f.write_str("Codec"),
            Error::Io(e) => write!(f, "Io({:?})", e.kind()),
            Error::Process(p) => write!(f, "Process({})", process_variant(p)),
        }?;
        write!(f, ": {self}")
    }
}

fn process_variant(p: &crate::process::ProcessError) -> &'static str {
    use crate::process::ProcessError as P;
    match p {
        P::Panicked { .. } => "Panicked",
        P::Exited { .. } => "Exited",
        P::Signaled { .. } => "Signaled",
        P::NoResult { .. } => "NoResult",
        P::Failed { .. } => "Failed",
        P::WorkerDied { .. } => "WorkerDied",
        P::NotInitialized => "NotInitialized",
        P::AlreadyJoined { .. } => "AlreadyJoined",
        P::PoolClosed => "PoolClosed",
        P::Terminated { .. } => "Terminated",
        P::BrokenBarrier { .. } => "BrokenBarrier",
    }
}

/// `Result<T, shmq::Error>`.
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// Wrap the current `errno` with a short context string.
    pub(crate) fn last_os(context: &str) -> Error {
        let e = io::Error::last_os_error();
        Error::Io(io::Error::new(e.kind(), format!("{context}: {e}")))
    }

    /// An I/O error of operation `op` (e.g. "open", "create") on `path`, with both in the
    /// message: `open /dev/shm/shmq.q: Permission denied (os error 13)`. Keeps the kind.
    pub(crate) fn io_at(op: &str, path: &std::path::Path, e: io::Error) -> Error {
        Error::Io(io::Error::new(
            e.kind(),
            format!("{op} {}: {e}", path.display()),
        ))
    }

    pub(crate) fn corrupt(what: impl Into<String>) -> Error {
        Error::Corrupt(what.into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::process::ProcessError;
    use std::error::Error as _;

    fn samples() -> Vec<Error> {
        vec![
            Error::Full,
            Error::Empty,
            Error::Timeout,
            Error::Closed,
            Error::TooLarge { size: 10, max: 8 },
            Error::NotFound("jobs".into()),
            Error::AlreadyExists {
                name: "jobs".into(),
                stale: true,
            },
            Error::InvalidName {
                name: "a/b".into(),
                reason: "contains '/'",
            },
            Error::InvalidArgument("capacity 0".into()),
            Error::Incompatible {
                name: "jobs".into(),
                reason: "other codec".into(),
            },
            Error::Corrupt("tail past head".into()),
            Error::Codec("bad varint".into()),
            Error::from(io::Error::from_raw_os_error(libc::ENOENT)),
            Error::last_os("shm_open"),
            ProcessError::NotInitialized.into(),
            ProcessError::Panicked {
                pid: 7,
                message: "boom".into(),
            }
            .into(),
        ]
    }

    /// What `fn main() -> shmq::Result<()>` prints is the variant and the helpful message.
    #[test]
    fn debug_is_variant_then_message() {
        let e: Error = ProcessError::NotInitialized.into();
        let d = format!("{e:?}");
        assert!(d.starts_with("Process(NotInitialized): "), "{d}");
        assert!(d.contains("first statement of main()"), "{d}");
        assert_eq!(
            format!("{:?}", Error::Timeout),
            "Timeout: timed out: the deadline passed before the queue, lock or other object was ready"
        );
        let io = Error::from(io::Error::from_raw_os_error(libc::ENOENT));
        assert!(
            format!("{io:?}").starts_with("Io(NotFound): I/O error: No such file"),
            "{io:?}"
        );
        for e in samples() {
            let d = format!("{e:?}");
            assert!(d.ends_with(&e.to_string()), "{d}");
            assert!(!format!("{e:#?}").is_empty());
        }
        assert_eq!(
            format!("{:#?}", Error::TooLarge { size: 10, max: 8 }),
            "TooLarge {\n    size: 10,\n    max: 8,\n}"
        );
    }

    /// A reporter that prints each error of the `source()` chain never prints a message
    /// twice: the message is complete and there is no source.
    #[test]
    fn no_message_twice_in_a_source_chain() {
        for e in samples() {
            let mut chain = vec![e.to_string()];
            let mut cur: Option<&(dyn std::error::Error + 'static)> = e.source();
            while let Some(c) = cur {
                chain.push(c.to_string());
                cur = c.source();
            }
            for (i, a) in chain.iter().enumerate() {
                for b in &chain[i + 1..] {
                    assert!(!a.contains(b.as_str()), "{b:?} printed twice in {chain:?}");
                }
            }
            assert!(e.source().is_none(), "{e:?}");
        }
    }
}
