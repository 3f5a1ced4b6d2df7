//! Replies: what a task sends back ([`Reply`]), where it goes ([`Sink`]), how a chunk's
//! reply splits into its items', and how an encoded result becomes the caller's value.

use serde::de::DeserializeOwned;

use crate::error::{Error, Result};
use crate::process::wire::Outcome;
use crate::process::ProcessError;

/// What a task sends back: the postcard bytes of `R` (or of a chunk's `Vec<Outcome>`), or
/// the failure.
pub(super) type Reply = Result<Vec<u8>>;

/// Where a task's reply goes. Called once by the dispatcher thread with the worker's pid;
/// a sink dropped without being called (the dispatcher went away) reports
/// [`ProcessError::Terminated`], so no caller waits for ever.
pub(super) struct Sink {
    f: Option<Box<dyn FnOnce(u32, Reply) + Send>>,
    task: u64,
}

impl Sink {
    pub(super) fn new(f: impl FnOnce(u32, Reply) + Send + 'static) -> Sink {
        Sink {
            f: Some(Box::new(f)),
            task: u64::MAX,
        }
    }

    /// The sink of task `id` (named in its `Terminated` error).
    pub(super) fn for_task(mut self, id: u64) -> Sink {
        self.task = id;
        self
    }

    /// Drop the sink without calling it: the caller reports the failure itself.
    pub(super) fn cancel(mut self) {
        self.f = None;
    }

    pub(super) fn send(mut self, pid: u32, r: Reply) {
        if let Some(f) = self.f.take() {
            f(pid, r)
        }
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        if let Some(f) = self.f.take() {
            f(0, Err(ProcessError::Terminated { task: self.task }.into()))
        }
    }
}

/// `n` copies of the error `e` as replies (a chunk of `n` items that failed as a whole).
pub(super) fn fail_all(n: usize, e: &Error) -> Vec<Reply> {
    (0..n).map(|_| Err(clone_error(e))).collect()
}

/// The replies of a chunk of `n` items, one per item, from the chunk task's reply.
pub(super) fn split_chunk(pid: u32, n: usize, reply: Reply) -> Vec<Reply> {
    let frames = match reply {
        Err(e) => return fail_all(n, &e),
        Ok(f) => f,
    };
    match postcard::from_bytes::<Vec<Outcome>>(&frames) {
        Ok(items) if items.len() == n => items.into_iter().map(|o| o.into_reply(pid)).collect(),
        _ => fail_all(
            n,
            &ProcessError::Failed {
                pid,
                message: "malformed reply of a chunk of tasks".into(),
            }
            .into(),
        ),
    }
}

pub(super) fn decode_reply<R: DeserializeOwned>(bytes: &[u8]) -> Result<R> {
    postcard::from_bytes(bytes).map_err(|e| Error::Codec(format!("decoding a task's result: {e}")))
}

pub(super) fn decode_one<R: DeserializeOwned>(v: &[Vec<u8>]) -> Result<R> {
    decode_reply(v.first().map_or(&[][..], |b| b))
}

pub(super) fn decode_all<T: DeserializeOwned>(v: &[Vec<u8>]) -> Result<Vec<T>> {
    v.iter().map(|b| decode_reply(b)).collect()
}

/// A copy of an error (errors hold an `io::Error`, which is not `Clone`: it is rebuilt
/// from its kind and message).
pub(super) fn clone_error(e: &Error) -> Error {
    match e {
        Error::Full => Error::Full,
        Error::Empty => Error::Empty,
        Error::Timeout => Error::Timeout,
        Error::Closed => Error::Closed,
        Error::TooLarge { size, max } => Error::TooLarge {
            size: *size,
            max: *max,
        },
        Error::NotFound(s) => Error::NotFound(s.clone()),
        Error::AlreadyExists { name, stale } => Error::AlreadyExists {
            name: name.clone(),
            stale: *stale,
        },
        Error::InvalidName { name, reason } => Error::InvalidName {
            name: name.clone(),
            reason,
        },
        Error::InvalidArgument(s) => Error::InvalidArgument(s.clone()),
        Error::Incompatible { name, reason } => Error::Incompatible {
            name: name.clone(),
            reason: reason.clone(),
        },
        Error::Corrupt(s) => Error::Corrupt(s.clone()),
        Error::Codec(s) => Error::Codec(s.clone()),
        Error::Io(e) => Error::Io(std::io::Error::new(e.kind(), e.to_string())),
        Error::Process(p) => Error::Process(p.clone()),
    }
}
