//! Records in the ring: the frame format, position arithmetic, and the two record handles
//! through which payload bytes are written ([`Slot`]) and read ([`Record`]). Every raw
//! pointer copy of payload bytes in the crate is in this file.

use std::marker::PhantomData;
use std::sync::atomic::Ordering;

use super::{Ring, UNSET};
use crate::error::{Error, Result};
use crate::mapping::Memory;

/// Frame tag of a message record.
pub const MSG: u32 = 0x5153_4D31;
/// Frame tag of a skip record (padding up to the end of the ring).
pub const SKIP: u32 = 0x5153_4B50;
/// Frame header size in bytes.
pub const FRAME: u64 = 8;
/// Bit of the `tail` word that marks the queue closed.
pub const CLOSED: u64 = 1;
/// Largest valid position (2^62): a queue would need decades at memory speed to get here,
/// and keeping positions below it makes every `position + length` sum overflow-free.
pub const MAX_POS: u64 = 1 << 62;

/// The length field of a [`SKIP`] record that pads `to_end` bytes to the end of the ring:
/// `to_end - 8`, kept to 32 bits (rings above 4 GiB pad more than a `u32` holds; both the
/// writer and the reader compare the same truncated value, and the record's extent comes
/// from its offset, never from this field).
#[inline]
pub(super) fn skip_len(to_end: u64) -> u32 {
    (to_end - FRAME) as u32
}

/// `n` rounded up to a multiple of 8.
#[inline]
pub(super) fn align8(n: u64) -> u64 {
    (n + 7) & !7
}

/// Bytes a record with a payload of `len` bytes takes in the ring.
#[inline]
pub(super) fn record_size(len: u64) -> u64 {
    align8(FRAME + len)
}

impl<M: Memory> Ring<M> {
    /// Check the invariants between `head` and a `tail` position; return the bytes in use.
    #[inline]
    pub(super) fn positions(&self, head: u64, tail: u64) -> Result<u64> {
        match self.used(head, tail) {
            Some(used) => Ok(used),
            None => Err(self.positions_error(head, tail)),
        }
    }

    /// [`positions`](Self::positions) without the error: `None` when they are corrupt.
    #[inline(always)]
    pub(super) fn used(&self, head: u64, tail: u64) -> Option<u64> {
        let used = tail.wrapping_sub(head);
        (used <= self.cap && tail <= MAX_POS && (head | tail).is_multiple_of(8)).then_some(used)
    }

    #[cold]
    pub(super) fn positions_error(&self, head: u64, tail: u64) -> Error {
        Error::corrupt(format!(
            "ring positions out of range (head {head}, tail {tail}, capacity {})",
            self.cap
        ))
    }

    #[inline]
    pub(super) fn write_frame(&self, off: u64, len: u32, tag: u32) {
        let word = (len as u64) | ((tag as u64) << 32);
        self.race.write(off, FRAME);
        // SAFETY: callers pass `off` with off % 8 == 0 and off + 8 <= cap, so the 8 bytes are
        // inside the ring and aligned; this region is free space owned by the producer lock.
        unsafe { std::ptr::write_volatile(self.data.add(off as usize) as *mut u64, word.to_le()) }
    }

    #[inline]
    pub(super) fn read_frame(&self, off: u64) -> (u32, u32) {
        self.race.read(off, FRAME);
        // SAFETY: callers pass off % 8 == 0 and off < cap (cap % 8 == 0), so off + 8 <= cap;
        // the volatile read takes one snapshot that is validated before use.
        let word = u64::from_le(unsafe {
            std::ptr::read_volatile(self.data.add(off as usize) as *const u64)
        });
        (word as u32, (word >> 32) as u32)
    }

    /// Ring offset of position `pos`: a mask for power-of-two capacities (the common
    /// case), which spares a 64-bit division on every put and get.
    #[inline]
    pub(super) fn offset(&self, pos: u64) -> u64 {
        if self.mask != 0 {
            pos & self.mask
        } else {
            pos % self.cap
        }
    }

    /// Free bytes for a producer at `tail`. Uses the cached head when that already shows
    /// `want` free bytes; otherwise reads (and validates) the shared head and caches it.
    #[inline]
    pub(super) fn free_space(&self, tail: u64, want: u64) -> Result<u64> {
        match self.room(tail, want) {
            Some(free) => Ok(free),
            None => {
                let head = self.h().cons.head.load(Ordering::Acquire);
                Err(self.positions_error(head, tail))
            }
        }
    }

    /// [`free_space`](Self::free_space) without the error: `None` when the shared `head`
    /// it had to read is corrupt.
    #[inline(always)]
    pub(super) fn room(&self, tail: u64, want: u64) -> Option<u64> {
        // Acquire pairs with the Release store below, which follows an Acquire load of the
        // shared head: the consumer's reads of the freed bytes happen before our writes.
        let cached = self.cached_head.load(Ordering::Acquire);
        let used = tail.wrapping_sub(cached);
        if cached != UNSET
            && used <= self.cap
            && self.cap - used >= want
            && (cached | tail).is_multiple_of(8)
        {
            return Some(self.cap - used);
        }
        let head = self.h().cons.head.load(Ordering::Acquire);
        let used = self.used(head, tail)?;
        self.cached_head.store(head, Ordering::Release);
        Some(self.cap - used)
    }

    /// A `tail` position for a consumer at `head`: the cached one when it shows published
    /// records after `head` (it may lag behind other processes' consumers: then it is
    /// ignored), else the shared one, which is cached.
    #[inline]
    pub(super) fn published_tail(&self, head: u64) -> u64 {
        let cached = self.cached_tail.load(Ordering::Acquire);
        let ahead = cached.wrapping_sub(head);
        if cached != UNSET && ahead != 0 && ahead <= self.cap {
            return cached;
        }
        let tail = self.h().prod.tail.load(Ordering::Acquire) & !super::CLOSED;
        self.cached_tail.store(tail, Ordering::Release);
        tail
    }

    /// The write handle for the payload of a record whose frame is at ring offset `off`
    /// (`off + record_size(len) <= cap`, in free space, producer lock held).
    #[inline]
    pub(super) fn slot(&self, off: u64, len: usize) -> Slot<'_> {
        debug_assert!(off + record_size(len as u64) <= self.cap);
        self.race.write(off + FRAME, len as u64);
        Slot {
            // SAFETY: off + 8 + len <= cap (the caller's contract), so the pointer stays in
            // the ring.
            ptr: unsafe { self.data.add((off + FRAME) as usize) },
            len,
            pos: 0,
            _ring: PhantomData,
        }
    }

    /// The read handle for the payload of a validated record whose frame is at ring offset
    /// `off` (`off + record_size(len) <= cap`, published, consumer lock held).
    #[inline]
    pub(super) fn record(&self, off: u64, len: usize) -> Record<'_> {
        debug_assert!(off + record_size(len as u64) <= self.cap);
        self.race.read(off + FRAME, len as u64);
        Record {
            // SAFETY: off + 8 + len <= cap (the caller's contract).
            ptr: unsafe { self.data.add((off + FRAME) as usize) },
            len,
            _ring: PhantomData,
        }
    }
}

/// Copy `len` bytes from `src` to `dst`. A payload of 8 to 16 bytes is two (overlapping)
/// unaligned 8-byte loads and stores instead of a call of `memcpy`, which costs more than
/// the copy at these sizes.
///
/// # Safety
/// `src` valid for `len` bytes of reads, `dst` for `len` bytes of writes, not overlapping.
#[inline(always)]
unsafe fn copy_payload(src: *const u8, dst: *mut u8, len: usize) {
    if (8..=16).contains(&len) {
        // SAFETY: 8 <= len, so both 8-byte windows, [0, 8) and [len - 8, len), lie within
        // the `len` bytes the caller vouches for; unaligned accesses are allowed.
        unsafe {
            let a = std::ptr::read_unaligned(src as *const u64);
            let b = std::ptr::read_unaligned(src.add(len - 8) as *const u64);
            std::ptr::write_unaligned(dst as *mut u64, a);
            std::ptr::write_unaligned(dst.add(len - 8) as *mut u64, b);
        }
    } else {
        // SAFETY: the caller's contract.
        unsafe { std::ptr::copy_nonoverlapping(src, dst, len) }
    }
}

/// A writable window of ring memory: the payload of one record being put, handed to
/// [`Codec::encode`](crate::Codec::encode). Writes go through bounds-checked raw-pointer
/// copies (only a write loan's `as_mut_slice` lends the reserved bytes as `&mut [u8]`); the record publishes the bytes
/// written, [`written`](Slot::written).
pub struct Slot<'a> {
    ptr: *mut u8,
    len: usize,
    pos: usize,
    _ring: PhantomData<&'a ()>,
}

impl Slot<'_> {
    /// Append `bytes`; [`Error::Codec`] if they do not fit in the slot.
    #[inline]
    pub fn write(&mut self, bytes: &[u8]) -> Result<()> {
        if bytes.len() > self.len - self.pos {
            return Err(Error::Codec(format!(
                "encoder wrote past its {}-byte slot",
                self.len
            )));
        }
        // SAFETY: `ptr` is valid for `len` bytes of writes (the slot lies in free ring space
        // that only the producer-lock holder writes) and `pos + bytes.len() <= len`; `bytes`
        // is process-local, so they do not overlap.
        unsafe { copy_payload(bytes.as_ptr(), self.ptr.add(self.pos), bytes.len()) };
        self.pos += bytes.len();
        Ok(())
    }

    /// Bytes written so far.
    pub fn written(&self) -> usize {
        self.pos
    }

    /// Size of the slot in bytes.
    pub fn capacity(&self) -> usize {
        self.len
    }

    /// The slot's bytes as a mutable slice, to fill in place (the write loan's zero-copy
    /// path); marks the whole slot written.
    ///
    /// Sound against every process that follows the ring's protocol: the slot lies between
    /// the published `tail` and `head`, which no consumer reads and no other producer
    /// writes while this one holds the producer lock. A process that ignores the protocol
    /// and writes here can change what gets published, nothing else.
    pub(crate) fn as_mut_slice(&mut self) -> &mut [u8] {
        self.pos = self.len;
        // SAFETY: `ptr` is valid for `len` bytes (see above) of initialised memory (the
        // mapping is zero-filled at creation and only ever holds bytes), and no one else
        // accesses them while the slot is borrowed mutably (the argument above).
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.len) }
    }
}

impl postcard::ser_flavors::Flavor for &mut Slot<'_> {
    type Output = usize;

    #[inline]
    fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
        self.write(data)
            .map_err(|_| postcard::Error::SerializeBufferFull)
    }

    #[inline]
    fn try_push(&mut self, data: u8) -> postcard::Result<()> {
        self.write(&[data])
            .map_err(|_| postcard::Error::SerializeBufferFull)
    }

    fn finalize(self) -> postcard::Result<usize> {
        Ok(self.pos)
    }
}

/// The payload of one validated record at the head of the ring, while the consumer lock is
/// held: copied out through raw-pointer copies.
pub struct Record<'a> {
    ptr: *const u8,
    len: usize,
    _ring: PhantomData<&'a ()>,
}

impl<'a> Record<'a> {
    /// Payload length in bytes.
    #[inline]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the payload is empty.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Copy the payload into `dst`, which must be exactly [`len`](Self::len) bytes long.
    #[inline]
    pub fn copy_to(&self, dst: &mut [u8]) {
        assert_eq!(dst.len(), self.len, "Record::copy_to: destination size");
        // SAFETY: `ptr` is valid for `len` bytes of reads (a validated, published record that
        // producers do not write while the consumer lock is held); `dst` is process-local.
        unsafe { copy_payload(self.ptr, dst.as_mut_ptr(), self.len) }
    }

    /// Append the payload to `out`.
    #[inline]
    pub fn extend_vec(&self, out: &mut Vec<u8>) {
        out.reserve(self.len);
        let start = out.len();
        // SAFETY: as in `copy_to`; `out` has `len` bytes of spare capacity after `start`,
        // which the copy initialises before `set_len`.
        unsafe {
            copy_payload(self.ptr, out.as_mut_ptr().add(start), self.len);
            out.set_len(start + self.len);
        }
    }

    /// The payload in place for as long as the ring is borrowed (read loans, which hold
    /// the consumer lock at least that long).
    ///
    /// Sound against every process that follows the ring's protocol: a published record is
    /// not written by producers until `head` passes it, and `head` moves only under the
    /// consumer lock that the borrower holds for the life of the slice.
    pub(crate) fn into_slice(self) -> &'a [u8] {
        // SAFETY: valid for `len` bytes of reads, not written while lent (argued above).
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
}
