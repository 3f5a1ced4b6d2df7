//! Plain old data: the [`Pod`] codec (a `bytemuck::Pod` value copied byte for byte),
//! [`PodQueue<T>`], and the `get_into` that copies a message straight into the caller's
//! value.

use std::time::Duration;

use super::codec::{Codec, Slot};
use super::typed::TypedQueue;
use crate::error::{Error, Result};
use crate::ring::Block;
use crate::segment::codec_id;

/// The plain-old-data codec: a `bytemuck::Pod` value is copied byte for byte, with no
/// serialisation. Both ends must agree on the type (same layout, same endianness); the
/// item size is checked on `open`.
#[derive(Clone, Copy, Debug, Default)]
pub struct Pod;

impl<T: bytemuck::Pod + Send + Sync> Codec<T> for Pod {
    const ID: u32 = codec_id::POD;
    const ITEM_SIZE: u32 = std::mem::size_of::<T>() as u32;

    #[inline]
    fn encoded_len(_msg: &T) -> Result<usize> {
        Ok(std::mem::size_of::<T>())
    }

    #[inline]
    fn encode(msg: &T, out: &mut Slot<'_>) -> Result<()> {
        out.write(bytemuck::bytes_of(msg))
    }

    #[inline]
    fn decode(bytes: &[u8]) -> Result<T> {
        bytemuck::try_pod_read_unaligned(bytes).map_err(|_| {
            Error::Codec(format!(
                "a {}-byte message is not a {} ({} bytes)",
                bytes.len(),
                std::any::type_name::<T>(),
                std::mem::size_of::<T>()
            ))
        })
    }
}

/// A queue of `bytemuck::Pod` values, copied without serialisation.
///
/// ```
/// # let name = format!("doc-pod-{}", std::process::id());
/// let q: shmq::PodQueue<[u64; 4]> = shmq::PodQueue::create(&name, 4096)?;
/// q.put(&[1, 2, 3, 4])?;
/// assert_eq!(q.get()?, [1, 2, 3, 4]);
/// # Ok::<(), shmq::Error>(())
/// ```
pub type PodQueue<T> = TypedQueue<T, Pod>;

impl<T: bytemuck::Pod + Send + Sync> TypedQueue<T, Pod> {
    fn get_into_block(&self, out: &mut T, block: Block) -> Result<()> {
        let dst = bytemuck::bytes_of_mut(out);
        let len = self.raw.ring().get_one(block, |rec| {
            if rec.len() == dst.len() {
                rec.copy_to(dst);
            }
            rec.len()
        })?;
        match len {
            len if len == std::mem::size_of::<T>() => Ok(()),
            len => Err(Error::Codec(format!(
                "a {}-byte message is not a {} ({} bytes)",
                len,
                std::any::type_name::<T>(),
                std::mem::size_of::<T>()
            ))),
        }
    }

    /// Take the oldest message straight into `out`, with no intermediate copy: the way to
    /// receive large `Pod` values (a `get` returns `T` by value, through the stack). Waits
    /// while the queue is empty.
    ///
    /// ```
    /// # let name = format!("doc-podinto-{}", std::process::id());
    /// let q: shmq::PodQueue<[u64; 512]> = shmq::PodQueue::create(&name, 1 << 16)?;
    /// let mut frame = Box::new([0u64; 512]);
    /// frame[7] = 42;
    /// q.put(&frame)?;
    /// let mut out = Box::new([0u64; 512]);
    /// q.get_into(&mut out)?;
    /// assert_eq!(out[7], 42);
    /// # Ok::<(), shmq::Error>(())
    /// ```
    #[inline(always)]
    pub fn get_into(&self, out: &mut T) -> Result<()> {
        // One code path with `get_into_timeout` (a deadline that never comes), so that
        // both cost the same instructions (issue 14).
        self.get_into_timeout(out, Duration::MAX)
    }

    /// Like [`get_into`](Self::get_into) but [`Error::Empty`] instead of waiting.
    pub fn try_get_into(&self, out: &mut T) -> Result<()> {
        self.get_into_block(out, Block::No)
    }

    /// Like [`get_into`](Self::get_into) but [`Error::Timeout`] after `timeout`
    /// (`Duration::MAX`: never, which is `get_into`).
    #[inline(never)]
    pub fn get_into_timeout(&self, out: &mut T, timeout: Duration) -> Result<()> {
        self.get_into_block(out, Block::timeout(timeout))
    }
}
