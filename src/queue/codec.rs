//! How a typed queue turns messages into bytes and back: the [`Codec`] trait, the [`Slot`]
//! of ring memory a codec encodes into, and the default codec, [`Postcard`] (with the
//! postcard flavor that writes into a `Slot`).

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::error::{Error, Result};
use crate::segment::codec_id;

pub use crate::ring::Slot;

/// How a typed queue turns messages into bytes and back.
///
/// shmq ships [`Postcard`] (serde, the default) and [`Pod`](crate::Pod) (plain old data). A codec
/// encodes straight into ring memory through a [`Slot`].
pub trait Codec<T>: Send + Sync + 'static {
    /// Id recorded in the header by `create` and compared by a typed `open`.
    const ID: u32;
    /// Fixed item size recorded in the header (0: variable).
    const ITEM_SIZE: u32 = 0;
    /// Exact encoded length of `msg`.
    fn encoded_len(msg: &T) -> Result<usize>;
    /// Write exactly `encoded_len(msg)` bytes into `out`.
    fn encode(msg: &T, out: &mut Slot<'_>) -> Result<()>;
    /// Decode one message from its bytes.
    fn decode(bytes: &[u8]) -> Result<T>;
}

/// The default codec: [postcard](https://docs.rs/postcard), a compact serde format.
///
/// For byte payloads, wrap them in `serde_bytes` (`#[serde(with = "serde_bytes")]` on a
/// `Vec<u8>` field, or `serde_bytes::ByteBuf`): a plain `Vec<u8>` goes through serde one
/// element at a time and is about 20× slower.
#[derive(Clone, Copy, Debug, Default)]
pub struct Postcard;

impl<T: Serialize + DeserializeOwned> Codec<T> for Postcard {
    const ID: u32 = codec_id::POSTCARD;

    fn encoded_len(msg: &T) -> Result<usize> {
        postcard::serialize_with_flavor::<T, postcard::ser_flavors::Size, usize>(
            msg,
            Default::default(),
        )
        .map_err(|e| Error::Codec(crate::encode::describe(msg, &e)))
    }

    fn encode(msg: &T, out: &mut Slot<'_>) -> Result<()> {
        postcard::serialize_with_flavor(msg, out)
            .map(|_| ())
            .map_err(|e| Error::Codec(crate::encode::describe(msg, &e)))
    }

    fn decode(bytes: &[u8]) -> Result<T> {
        decode_whole(bytes)
    }
}

/// Decode `bytes` as one postcard value of `U`, which may borrow from them. The whole message
/// must be the value: trailing bytes mean it is not a `U` (a message put by another
/// writer), not a `U` followed by garbage ([`Error::Codec`]).
pub(crate) fn decode_whole<'a, U: serde::Deserialize<'a>>(bytes: &'a [u8]) -> Result<U> {
    let fail = |e: &dyn std::fmt::Display| {
        Error::Codec(format!(
            "cannot decode a {}-byte message as {}: {e}",
            bytes.len(),
            std::any::type_name::<U>()
        ))
    };
    match postcard::take_from_bytes(bytes) {
        Ok((v, [])) => Ok(v),
        Ok((_, rest)) => Err(fail(&format_args!("{} bytes left over", rest.len()))),
        Err(e) => Err(fail(&e)),
    }
}
