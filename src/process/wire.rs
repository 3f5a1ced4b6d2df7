//! Everything that crosses between a parent and its child processes or pool workers, each
//! in one place: the environment variable that marks a child, the [`Boot`] record a child
//! starts from, the [`Call`] it makes, the [`Outcome`] it sends back, and the pool's task
//! and result messages. All of them are serde structs encoded with postcard; none is read
//! from shared memory by raw pointer (the pool's travel through [`RawQueue`]s, the others
//! through the [exchange file](super::exchange)).
//!
//! [`RawQueue`]: crate::RawQueue

use std::os::fd::RawFd;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::target::{check_offset, Target};
use super::ProcessError;
use crate::error::{Error, Result};

/// Environment variable that marks a child started by [`start`](super::start): the number of
/// its exchange file descriptor, where it finds its [`Boot`].
pub(super) const ENV_CHILD: &str = "SHMQ_PROCESS_CHILD";

/// The first field of a [`Boot`]: changes whenever a message of this file changes shape, so
/// that a child never misreads a record of another build.
const BOOT_MAGIC: u32 = 0x5348_5032; // "SHP2"

/// `postcard` bytes of `value` (`what` names it in the error; a `Serialize` impl's own
/// message is kept).
pub(super) fn encode<T: Serialize + ?Sized>(value: &T, what: &str) -> Result<Vec<u8>> {
    postcard::to_allocvec(value).map_err(|e| {
        Error::Codec(format!(
            "encoding {what}: {}",
            crate::encode::describe(value, &e)
        ))
    })
}

/// A call of a user function in another process running this executable: which function
/// (a [`Target`]) and its postcard-encoded argument.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub(super) struct Call {
    pub(super) target: Target,
    #[serde(with = "bytes")]
    pub(super) args: Vec<u8>,
}

impl Call {
    /// The call `f(args)` (`what` names the arguments in an encoding error).
    pub(super) fn new<A, R>(f: fn(A) -> R, args: &A, what: &str) -> Result<Call>
    where
        A: Serialize + DeserializeOwned,
        R: Serialize,
    {
        Target::new(f)?.call(args, what)
    }

    /// Run the call in this process.
    ///
    /// # Safety
    /// The call must have been made ([`Call::new`], [`Target::call`]) in a process running
    /// this very executable: a [`Boot`] that passed [`Boot::check`] vouches for that, and so
    /// does anything a pool worker receives from the pool that started it.
    pub(super) unsafe fn run(&self) -> Outcome {
        // SAFETY: per the contract.
        unsafe { self.target.run(&self.args) }
    }
}

/// What a child started by [`start`](super::start) reads first, from its exchange file: all
/// the parent tells it apart from the environment variables it inherits.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct Boot {
    magic: u32,
    /// The parent's [`check_offset`]: the child's equals it only when both run the same
    /// executable.
    check: i64,
    /// The function to run and its argument.
    pub(super) call: Call,
    /// The child's name ([`Builder::name`](super::Builder::name)).
    pub(super) name: Option<String>,
    /// In a test binary: the descriptor of the parent's real stdout, to be restored as fd 1
    /// (the harness's own stdout goes to `/dev/null`).
    pub(super) stdout: Option<RawFd>,
}

impl Boot {
    pub(super) fn new(call: Call, name: Option<String>, stdout: Option<RawFd>) -> Boot {
        Boot {
            magic: BOOT_MAGIC,
            check: check_offset(),
            call,
            name,
            stdout,
        }
    }

    /// Decode a boot record and check that it comes from a parent running this executable.
    pub(super) fn decode(b: &[u8]) -> std::result::Result<Boot, String> {
        let boot = match postcard::from_bytes::<Boot>(b) {
            Ok(boot) if boot.magic == BOOT_MAGIC => boot,
            _ => return Err("the parent did not send a valid bootstrap message".into()),
        };
        if boot.check != check_offset() {
            return Err("the parent runs a different executable than this child (was the binary rebuilt or replaced?)".into());
        }
        Ok(boot)
    }
}

/// What a function call sends back.
#[derive(Debug, Serialize, Deserialize)]
pub(super) enum Outcome {
    /// postcard bytes of the return value (of a chunk: of one [`Outcome`] per item).
    Ok(#[serde(with = "bytes")] Vec<u8>),
    /// Panic message.
    Panic(String),
    /// The function could not be run (argument decoding, result encoding, ...).
    Error(String),
}

impl Outcome {
    /// The encoded value, or the error of process `pid` that stands for the failure.
    pub(super) fn into_reply(self, pid: u32) -> Result<Vec<u8>> {
        match self {
            Outcome::Ok(b) => Ok(b),
            Outcome::Panic(message) => Err(ProcessError::Panicked { pid, message }.into()),
            Outcome::Error(message) => Err(ProcessError::Failed { pid, message }.into()),
        }
    }

    /// Turn a received outcome into the caller's value or error.
    pub(super) fn into_result<R: DeserializeOwned>(self, pid: u32) -> Result<R> {
        let b = self.into_reply(pid)?;
        postcard::from_bytes(&b)
            .map_err(|e| Error::Codec(format!("decoding the return value of child {pid}: {e}")))
    }
}

/// A pool task, on a worker's task queue.
#[derive(Debug, Serialize, Deserialize)]
pub(super) struct Task {
    /// The task's sequence number within the pool.
    pub(super) id: u64,
    pub(super) call: Call,
}

/// A message on a pool's result queue.
#[derive(Debug, Serialize, Deserialize)]
pub(super) enum PoolMsg {
    /// A worker finished task `id`.
    Done { id: u64, outcome: Outcome },
    /// A submitter woke the dispatcher up (it has new commands); carries nothing.
    Wake,
}

/// A `Vec<u8>` field as serde bytes: postcard writes it as one length and one copy (the
/// same bytes as a sequence of `u8`, which serde would write one element at a time).
mod bytes {
    use serde::{de, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(b: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_bytes(b)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        struct Bytes;
        impl de::Visitor<'_> for Bytes {
            type Value = Vec<u8>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("bytes")
            }
            fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
                Ok(v.to_vec())
            }
            fn visit_byte_buf<E: de::Error>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
                Ok(v)
            }
        }
        d.deserialize_byte_buf(Bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call() -> Call {
        fn double(x: u32) -> u32 {
            x * 2
        }
        Call::new(double, &21u32, "the arguments").unwrap()
    }

    #[test]
    fn boot_roundtrip() {
        let b = encode(&Boot::new(call(), Some("w".into()), Some(7)), "boot").unwrap();
        let boot = Boot::decode(&b).unwrap();
        assert_eq!(boot.call.args, postcard::to_allocvec(&21u32).unwrap());
        assert_eq!((boot.name.as_deref(), boot.stdout), (Some("w"), Some(7)));
        assert!(Boot::decode(&b[..b.len() - 3]).is_err());
        assert!(Boot::decode(b"").is_err());
        let mut other = Boot::new(call(), None, None);
        other.check += 1;
        let e = Boot::decode(&encode(&other, "boot").unwrap()).unwrap_err();
        assert!(e.contains("different executable"), "{e}");
    }

    #[test]
    fn bytes_match_a_sequence_of_u8() {
        // The `bytes` field encoding is postcard's `Vec<u8>` encoding, in one copy.
        let o = Outcome::Ok(vec![1, 2, 3]);
        let b = encode(&o, "outcome").unwrap();
        assert_eq!(b, [0, 3, 1, 2, 3]);
        assert_eq!(
            postcard::from_bytes::<(u8, Vec<u8>)>(&b).unwrap(),
            (0, vec![1, 2, 3])
        );
        match postcard::from_bytes::<Outcome>(&b).unwrap() {
            Outcome::Ok(v) => assert_eq!(v, [1, 2, 3]),
            o => panic!("{o:?}"),
        }
    }

    #[test]
    fn outcome_into_result() {
        let ok = Outcome::Ok(postcard::to_allocvec(&5u8).unwrap());
        assert_eq!(ok.into_result::<u8>(1).unwrap(), 5);
        assert!(matches!(
            Outcome::Panic("boom".into()).into_result::<u8>(1),
            Err(Error::Process(ProcessError::Panicked { pid: 1, .. }))
        ));
        assert!(matches!(
            Outcome::Error("bad".into()).into_result::<u8>(1),
            Err(Error::Process(ProcessError::Failed { pid: 1, .. }))
        ));
    }
}
