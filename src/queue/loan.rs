//! Zero-copy loans: write a message in place in the ring, or read it in place and remove it
//! only when done with it ([`WriteLoan`], [`TypedWriteLoan`], [`ReadLoan`], [`ReadLoans`]).
//!
//! A loan holds its side's lock (the producer lock for a write loan, the consumer lock for
//! a read loan) for as long as it lives: other producers (consumers) of the queue wait
//! meanwhile, so keep loans short. The lock is the same robust lock a put or get takes: a
//! process killed while holding a loan is recovered from like one killed mid-put or mid-get.
//!
//! A loan is not `Send`: it ends on the thread that took it. That thread may not `put`
//! (while it holds a write loan) or `get` (while it holds a read loan) on the same queue:
//! the call would wait for the loan's own lock, so it fails at once with
//! [`Error::InvalidArgument`](crate::Error::InvalidArgument). Other threads and processes wait for the loan to end.
//!
//! Delivery and the guarantee about lent bytes: see [`ReadLoan`].
//!
//! # Loans across `fork`
//! A process that forks (without `exec`) while holding a loan keeps it: the loan, and the
//! lock it holds, are the parent's. The child inherits a copy of the loan object, which it
//! can neither end nor use to publish:
//! * dropping it in the child does nothing to shared memory (the lock stays the parent's);
//! * [`WriteLoan::commit`] (and [`commit_len`](WriteLoan::commit_len),
//!   [`TypedWriteLoan::commit`]) in the child fails with
//!   [`Error::InvalidArgument`](crate::Error::InvalidArgument) ("a loan taken before fork
//!   belongs to the parent process") and publishes nothing;
//! * [`ReadLoan::commit`] and [`ReadLoans::commit`]/[`commit_first`](ReadLoans::commit_first)
//!   in the child remove nothing (they return no error: their signature has none);
//! * the child is not "the thread holding a loan": its own `put`/`get` on the queue wait
//!   for the parent's loan to end like any other process's, instead of failing at once.
//!
//! The child never gets a slice of ring memory through an inherited loan: a write loan's
//! `as_mut_slice` there is a private buffer of the same size (never published), and a read
//! loan's bytes are a private copy taken at the child's first look (what the ring held then:
//! the parent may have ended the loan and producers may be writing over the message).
//! Leave inherited loans alone in the child (or `exec`). The lock is recorded with the fork generation the loan was taken in;
//! see "Guards and loans across fork" in `docs/design.md`.

use std::cell::OnceCell;
use std::fmt;
use std::ops::Deref;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::{Codec, Postcard, Queue, RawQueue, TypedQueue};
use crate::error::{Error, Result};
use crate::ring::{Block, ReadLease, WriteLease};
use crate::segment::Segment;

/// Room for one message reserved in the ring, to fill in place
/// ([`RawQueue::put_loan`]). [`commit`](Self::commit) publishes it; dropping it publishes
/// nothing.
///
/// The loan holds the queue's producer lock while it lives (other producers wait; a holder
/// killed mid-loan is recovered from like one killed mid-put: nothing of the loan is
/// published). It is not `Send`, and a `put` on the same queue from the thread holding it
/// fails at once with [`Error::InvalidArgument`](crate::Error::InvalidArgument) instead of waiting for the loan's own lock.
///
/// # Across fork
/// A loan taken before `fork` (without `exec`) belongs to the parent process, which holds
/// the producer lock and ends the loan. In the child, [`commit`](Self::commit) fails with
/// [`Error::InvalidArgument`](crate::Error::InvalidArgument) ("a loan taken before fork
/// belongs to the parent process") and publishes nothing, dropping the loan does nothing to
/// the queue, and the child's own `put` waits for the parent's loan to end like any other
/// process's. [`as_mut_slice`](Self::as_mut_slice) in the child is a private buffer of the
/// loan's size, not the ring (the parent may have published the reservation and the space
/// been reused since): what the child writes there goes nowhere.
///
/// ```
/// # let name = format!("doc-wloan-{}", std::process::id());
/// let q = shmq::RawQueue::create(&name, 4096)?;
/// let mut loan = q.put_loan(5)?;
/// loan.as_mut_slice().copy_from_slice(b"hello");
/// loan.commit()?;
/// assert_eq!(q.get_vec()?, b"hello");
/// # Ok::<(), shmq::Error>(())
/// ```
pub struct WriteLoan<'q> {
    lease: WriteLease<'q, Segment>,
}

impl WriteLoan<'_> {
    /// Length of the reservation in bytes.
    pub fn len(&self) -> usize {
        self.lease.len()
    }

    /// Whether the reservation is empty (a zero-length message).
    pub fn is_empty(&self) -> bool {
        self.lease.is_empty()
    }

    /// The reserved bytes, to fill in place. Their content before you write is whatever
    /// the ring held there (not zeroes).
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        self.lease.as_mut_slice()
    }

    /// Publish the whole reservation as one message. Errors: [`Error::Closed`](crate::Error::Closed) (nothing
    /// published) if the queue was closed while the loan was held;
    /// [`Error::InvalidArgument`](crate::Error::InvalidArgument) (nothing published) in a
    /// `fork` child of the process that took the loan (see [`WriteLoan`], *Across fork*).
    pub fn commit(self) -> Result<()> {
        let len = self.lease.len();
        self.lease.commit(len)
    }

    /// Publish only the first `len` bytes (reserve the most a message can take, write it,
    /// then commit what it took). Errors: [`Error::InvalidArgument`](crate::Error::InvalidArgument) if `len` exceeds the
    /// reservation or in a `fork` child (as for [`commit`](Self::commit)),
    /// [`Error::Closed`](crate::Error::Closed) as for [`commit`](Self::commit).
    pub fn commit_len(self, len: usize) -> Result<()> {
        self.lease.commit(len)
    }
}

impl fmt::Debug for WriteLoan<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WriteLoan")
            .field("len", &self.lease.len())
            .finish()
    }
}

/// The oldest message, lent in place ([`RawQueue::get_loan`]): dereferences to its bytes.
/// [`commit`](Self::commit) removes it from the queue; dropping the loan (or dying while
/// holding it) leaves it for the next consumer.
///
/// The loan holds the queue's consumer lock while it lives (other consumers wait). It is not
/// `Send`, and a `get` on the same queue from the thread holding it fails at once with
/// [`Error::InvalidArgument`](crate::Error::InvalidArgument) instead of waiting for the loan's own lock.
///
/// ```
/// # let name = format!("doc-rloan-{}", std::process::id());
/// let q = shmq::RawQueue::create(&name, 4096)?;
/// q.put(b"job 1")?;
/// let loan = q.get_loan()?;
/// assert_eq!(&*loan, b"job 1");
/// drop(loan); // not committed: still queued
/// let loan = q.get_loan()?;
/// // ... hand it on, and only then:
/// loan.commit();
/// assert!(q.is_empty());
/// # Ok::<(), shmq::Error>(())
/// ```
///
/// # Delivery
/// A read loan that is dropped, or whose holder dies, leaves its messages at the head of the
/// queue for the next consumer: taking a message with a read loan and committing it after
/// it has been handled gives **at-least-once** delivery (a consumer killed between handling
/// and commit hands the message to the next one again), where a plain `get` gives
/// at-most-once (a consumer killed after `get` returned has taken the message with it).
///
/// # Across fork
/// A loan taken before `fork` (without `exec`) belongs to the parent process, which holds
/// the consumer lock and ends the loan. In the child, [`commit`](Self::commit) removes
/// nothing (as do [`ReadLoans::commit`] and [`ReadLoans::commit_first`]), dropping the loan
/// does nothing to the queue, and the child's own `get` waits for the parent's loan to end
/// like any other process's. The bytes the child sees are a private copy taken at its first
/// look: the parent's message, or, if the parent had ended the loan by then, whatever the
/// ring held there at that moment.
///
/// # What a loan guarantees about the bytes
/// A read loan validates the record before lending it: its frame lies inside the ring and
/// inside the published region, so the lent slice lies inside the mapping. Against every
/// process that follows the queue's protocol the lent bytes do not change while lent:
/// producers write only between the published tail and the head, and the head moves only
/// under the consumer lock this loan holds. A process that maps the segment writable and
/// ignores the protocol can write anywhere in it at any time, lent bytes included; then:
/// * [`bytes`](Self::bytes) / `Deref` may show wrong data (never bytes outside the slice);
/// * [`decode`](Self::decode) is unaffected beyond wrong data or
///   [`Error::Codec`](crate::Error::Codec): it decodes from a private copy it takes once;
/// * [`decode_in_place`](Self::decode_in_place), the zero-copy decode, is `unsafe` for
///   exactly this reason: a `&str` it returned was valid UTF-8 when decoded, and a writer
///   who breaks that afterwards makes string code read past the string's end.
///
/// (Rust's `&[u8]` promises the compiler that the bytes do not change while borrowed; like
/// every crate that lends shared memory as a slice — iceoryx2, shared_memory — shmq can keep
/// that promise only for processes that follow the protocol. Use `get_into`, which copies,
/// when peers are not trusted.)
pub struct ReadLoan<'q> {
    lease: ReadLease<'q, Segment>,
    /// The private copy `decode` takes on first use.
    copy: OnceCell<Vec<u8>>,
}

impl ReadLoan<'_> {
    /// The message's sequence number: the position of its record in the ring, unique for
    /// the life of the queue and strictly increasing in queue order (not dense: it grows by
    /// the record's size). With [`RawQueue::uid`] it names the message across restarts of
    /// the consumer (the bridge's deduplication id).
    pub fn seq(&self) -> u64 {
        self.lease.get(0).map_or(0, |(s, _)| s)
    }

    /// The message's bytes in place.
    pub fn bytes(&self) -> &[u8] {
        self.lease.get(0).map_or(&[], |(_, b)| b)
    }

    /// Decode the message with postcard. Borrowing types (`&str`, `&[u8]`,
    /// `serde_bytes::Bytes`, structs of them) borrow from a private copy of the message the
    /// loan takes once (one `memcpy`, no per-field allocation), so nothing another process
    /// writes can break them. The whole message must be one value
    /// ([`Error::Codec`](crate::Error::Codec) otherwise).
    ///
    /// ```
    /// # let name = format!("doc-rdec-{}", std::process::id());
    /// let q: shmq::Queue<String> = shmq::Queue::create(&name, 4096)?;
    /// q.put(&"borrowed".to_string())?;
    /// let loan = q.get_loan()?;
    /// let s: &str = loan.decode()?;
    /// assert_eq!(s, "borrowed");
    /// # Ok::<(), shmq::Error>(())
    /// ```
    pub fn decode<'a, U: Deserialize<'a>>(&'a self) -> Result<U> {
        crate::queue::decode_whole(self.copy.get_or_init(|| self.bytes().to_vec()))
    }

    /// Decode the message with postcard straight from the ring: borrowing types borrow the
    /// ring's bytes, with no copy at all (the zero-copy path).
    ///
    /// # Safety
    /// No process may write the segment outside shmq's protocol while the result lives
    /// (every process with write access to it is trusted). A process that rewrites lent
    /// bytes can turn a returned `&str` into invalid UTF-8 after it was checked, and string
    /// code then reads past its end. [`decode`](Self::decode) has no such condition.
    ///
    /// ```
    /// # let name = format!("doc-rdip-{}", std::process::id());
    /// let q: shmq::Queue<String> = shmq::Queue::create(&name, 4096)?;
    /// q.put(&"in place".to_string())?;
    /// let loan = q.get_loan()?;
    /// // SAFETY: only this process (and shmq's own protocol) writes this queue.
    /// let s: &str = unsafe { loan.decode_in_place()? };
    /// assert_eq!(s, "in place");
    /// # Ok::<(), shmq::Error>(())
    /// ```
    pub unsafe fn decode_in_place<'a, U: Deserialize<'a>>(&'a self) -> Result<U> {
        crate::queue::decode_whole(self.bytes())
    }

    /// Remove the message from the queue. (In a `fork` child of the process that took the
    /// loan: nothing, the loan is the parent's; see [`ReadLoan`], *Across fork*.)
    pub fn commit(self) {
        self.lease.commit_first(1)
    }
}

impl Deref for ReadLoan<'_> {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        self.bytes()
    }
}

impl fmt::Debug for ReadLoan<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReadLoan")
            .field("seq", &self.seq())
            .field("len", &self.bytes().len())
            .finish()
    }
}

/// Up to `max` of the oldest messages, lent in place ([`RawQueue::get_loans`]), in queue
/// order. [`commit`](Self::commit) removes them all, [`commit_first`](Self::commit_first)
/// the first `k`; the rest, and all of them if the loan is dropped or its holder dies, stay
/// for the next consumer. The way to forward messages at least once in batches: lend,
/// send, wait for the other side's acknowledgement, commit.
///
/// ```
/// # let name = format!("doc-rloans-{}", std::process::id());
/// let q = shmq::RawQueue::create(&name, 4096)?;
/// q.put_many(&[b"a".as_slice(), b"b", b"c"])?;
/// let loans = q.get_loans(2)?;
/// let got: Vec<&[u8]> = loans.iter().map(|(_seq, m)| m).collect();
/// assert_eq!(got, [b"a".as_slice(), b"b"]);
/// loans.commit_first(1); // "a" is gone, "b" stays
/// assert_eq!(q.get_vec()?, b"b");
/// # Ok::<(), shmq::Error>(())
/// ```
pub struct ReadLoans<'q> {
    lease: ReadLease<'q, Segment>,
    /// The private copies `decode` takes on first use, one per message (made on the first
    /// `decode`: a loan that is only read allocates nothing for them).
    copies: OnceCell<Box<[OnceCell<Vec<u8>>]>>,
}

impl ReadLoans<'_> {
    /// Number of lent messages (at least 1).
    pub fn len(&self) -> usize {
        self.lease.len()
    }

    /// Always `false`: a loan lends at least one message.
    pub fn is_empty(&self) -> bool {
        self.lease.is_empty()
    }

    /// Message `i` as `(sequence number, bytes)` (see [`ReadLoan::seq`]).
    pub fn get(&self, i: usize) -> Option<(u64, &[u8])> {
        self.lease.get(i)
    }

    /// The lent messages in queue order, as `(sequence number, bytes)`.
    pub fn iter(&self) -> impl Iterator<Item = (u64, &[u8])> + '_ {
        (0..self.len()).filter_map(move |i| self.get(i))
    }

    /// Decode message `i` with postcard from a private copy, borrowing types borrowing from
    /// it (as [`ReadLoan::decode`]). `None` if there is no message `i`.
    pub fn decode<'a, U: Deserialize<'a>>(&'a self, i: usize) -> Option<Result<U>> {
        let (_, b) = self.get(i)?;
        let copies = self
            .copies
            .get_or_init(|| (0..self.len()).map(|_| OnceCell::new()).collect());
        let copy = copies.get(i)?.get_or_init(|| b.to_vec());
        Some(crate::queue::decode_whole(copy))
    }

    /// Decode message `i` straight from the ring (as [`ReadLoan::decode_in_place`]).
    ///
    /// # Safety
    /// As for [`ReadLoan::decode_in_place`].
    pub unsafe fn decode_in_place<'a, U: Deserialize<'a>>(&'a self, i: usize) -> Option<Result<U>> {
        self.get(i).map(|(_, b)| crate::queue::decode_whole(b))
    }

    /// Remove every lent message from the queue (in a `fork` child of the process that took
    /// the loan: nothing, see [`ReadLoan`], *Across fork*).
    pub fn commit(self) {
        let n = self.len();
        self.lease.commit_first(n)
    }

    /// Remove the first `k` lent messages (all if `k` is larger); the rest stay queued. (In a
    /// `fork` child of the process that took the loan: nothing.)
    pub fn commit_first(self, k: usize) {
        self.lease.commit_first(k)
    }
}

impl fmt::Debug for ReadLoans<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReadLoans")
            .field("len", &self.len())
            .finish()
    }
}

/// Loans on the byte queue.
impl RawQueue {
    fn put_loan_block(&self, len: usize, block: Block) -> Result<WriteLoan<'_>> {
        Ok(WriteLoan {
            lease: self.ring().lease_write(len, block)?,
        })
    }

    /// Reserve room for a message of `len` bytes to fill in place, waiting while the queue
    /// is full; the producer lock is held until the loan is committed or dropped.
    /// Errors: [`Error::TooLarge`](crate::Error::TooLarge) at once if `len` exceeds
    /// [`max_message`](Self::max_message), [`Error::Closed`](crate::Error::Closed).
    pub fn put_loan(&self, len: usize) -> Result<WriteLoan<'_>> {
        self.put_loan_block(len, Block::Until(None))
    }

    /// [`put_loan`](Self::put_loan) if there is room now, else [`Error::Full`](crate::Error::Full).
    pub fn try_put_loan(&self, len: usize) -> Result<WriteLoan<'_>> {
        self.put_loan_block(len, Block::No)
    }

    /// [`put_loan`](Self::put_loan), waiting at most `timeout` ([`Error::Timeout`](crate::Error::Timeout)).
    pub fn put_loan_timeout(&self, len: usize, timeout: Duration) -> Result<WriteLoan<'_>> {
        self.put_loan_block(len, Block::timeout(timeout))
    }

    fn get_loan_block(&self, block: Block) -> Result<ReadLoan<'_>> {
        Ok(ReadLoan {
            lease: self.ring().lease_read(1, block)?,
            copy: OnceCell::new(),
        })
    }

    fn get_loans_block(&self, max: usize, block: Block) -> Result<ReadLoans<'_>> {
        let lease = self.ring().lease_read(max, block)?;
        Ok(ReadLoans {
            lease,
            copies: OnceCell::new(),
        })
    }

    /// Lend the oldest message in place, waiting while the queue is empty; the consumer
    /// lock is held until the loan is committed or dropped. Errors: [`Error::Closed`](crate::Error::Closed) once
    /// the queue is closed and drained, [`Error::Corrupt`](crate::Error::Corrupt).
    pub fn get_loan(&self) -> Result<ReadLoan<'_>> {
        self.get_loan_block(Block::Until(None))
    }

    /// [`get_loan`](Self::get_loan) if a message is queued now, else [`Error::Empty`](crate::Error::Empty).
    pub fn try_get_loan(&self) -> Result<ReadLoan<'_>> {
        self.get_loan_block(Block::No)
    }

    /// [`get_loan`](Self::get_loan), waiting at most `timeout` ([`Error::Timeout`](crate::Error::Timeout)).
    pub fn get_loan_timeout(&self, timeout: Duration) -> Result<ReadLoan<'_>> {
        self.get_loan_block(Block::timeout(timeout))
    }

    /// Lend up to `max` of the oldest messages in place (at least one: waits while the
    /// queue is empty; takes what is queued now up to `max`, without waiting for more;
    /// `max` 0 counts as 1).
    /// Errors as for [`get_loan`](Self::get_loan).
    pub fn get_loans(&self, max: usize) -> Result<ReadLoans<'_>> {
        self.get_loans_block(max, Block::Until(None))
    }

    /// [`get_loans`](Self::get_loans) if a message is queued now, else [`Error::Empty`](crate::Error::Empty).
    pub fn try_get_loans(&self, max: usize) -> Result<ReadLoans<'_>> {
        self.get_loans_block(max, Block::No)
    }

    /// [`get_loans`](Self::get_loans), waiting at most `timeout` ([`Error::Timeout`](crate::Error::Timeout)).
    pub fn get_loans_timeout(&self, max: usize, timeout: Duration) -> Result<ReadLoans<'_>> {
        self.get_loans_block(max, Block::timeout(timeout))
    }
}

/// Read loans on a typed queue: the message's bytes in place. [`ReadLoan::decode`] decodes
/// postcard (a [`Queue<T>`](crate::Queue)); for a [`PodQueue<T>`](crate::PodQueue) read the
/// bytes with `bytemuck` (`bytemuck::try_pod_read_unaligned(loan.bytes())`).
impl<T, C: Codec<T>> TypedQueue<T, C> {
    /// [`RawQueue::get_loan`] on this queue.
    pub fn get_loan(&self) -> Result<ReadLoan<'_>> {
        self.raw().get_loan()
    }

    /// [`RawQueue::try_get_loan`] on this queue.
    pub fn try_get_loan(&self) -> Result<ReadLoan<'_>> {
        self.raw().try_get_loan()
    }

    /// [`RawQueue::get_loan_timeout`] on this queue.
    pub fn get_loan_timeout(&self, timeout: Duration) -> Result<ReadLoan<'_>> {
        self.raw().get_loan_timeout(timeout)
    }
}

/// A message of a [`Queue<T>`](crate::Queue) encoded straight into the ring and not yet
/// published ([`Queue::put_loan`]): [`commit`](Self::commit) publishes it, dropping the loan
/// publishes nothing.
///
/// The typed face of [`WriteLoan`]: the message is postcard-encoded in place (no
/// intermediate buffer, exactly as [`put`](crate::TypedQueue::put) does), and the loan lends
/// no bytes to write, so what a typed queue holds is always a `T` its readers can decode.
/// Like every write loan it holds the queue's producer lock while it lives (other producers
/// wait; a holder killed mid-loan is recovered from like one killed mid-put, and nothing of
/// the loan is published), it is not `Send`, and a `put` on the same queue from the thread
/// holding it fails at once with [`Error::InvalidArgument`] instead of waiting for the loan's
/// own lock.
///
/// What it is for: a message whose place in the queue is taken (room reserved, order fixed
/// behind everything published before) and that is published only once something else has
/// happened, or not at all.
///
/// ```
/// # let name = format!("doc-twloan-{}", std::process::id());
/// let q: shmq::Queue<(u32, String)> = shmq::Queue::create(&name, 4096)?;
/// let loan = q.put_loan(&(1, "first".to_string()))?;
/// assert_eq!(loan.len(), 7); // postcard: 1 byte for 1u32, 1 length byte, 5 bytes of text
/// assert!(q.is_empty()); // reserved and encoded, not published yet
/// loan.commit()?;
/// drop(q.put_loan(&(2, "dropped".to_string()))?); // publishes nothing
/// assert_eq!(q.drain()?, vec![(1, "first".to_string())]);
/// # Ok::<(), shmq::Error>(())
/// ```
pub struct TypedWriteLoan<'q, T> {
    loan: WriteLoan<'q>,
    /// Bytes the encoding took (the whole reservation unless a `Serialize` impl wrote less
    /// the second time than it measured the first).
    len: usize,
    _t: std::marker::PhantomData<fn(&T)>,
}

impl<T> TypedWriteLoan<'_, T> {
    /// Size of the encoded message in bytes (what [`commit`](Self::commit) publishes).
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the message encodes to no bytes at all (e.g. `()`, or a unit struct).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Publish the message. Errors: [`Error::Closed`] (nothing published) if the queue was
    /// closed while the loan was held; [`Error::InvalidArgument`] (nothing published) in a
    /// `fork` child of the process that took the loan (see [`WriteLoan`], *Across fork*).
    pub fn commit(self) -> Result<()> {
        self.loan.commit_len(self.len)
    }
}

impl<T> fmt::Debug for TypedWriteLoan<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TypedWriteLoan")
            .field("type", &std::any::type_name::<T>())
            .field("len", &self.len)
            .finish()
    }
}

/// Write loans on a serde queue: the message encoded straight into the ring, published on
/// commit.
impl<T: Serialize + DeserializeOwned> Queue<T> {
    fn put_loan_block(&self, msg: &T, block: Block) -> Result<TypedWriteLoan<'_, T>> {
        // The size first (postcard's size flavour, as `put` does), then the reservation.
        let len = <Postcard as Codec<T>>::encoded_len(msg)?;
        let mut loan = self.raw().put_loan_block(len, block)?;
        // A failed encoding drops the loan: nothing is published.
        let len = postcard::to_slice(msg, loan.as_mut_slice())
            .map_err(|e| match e {
                postcard::Error::SerializeBufferFull => Error::Codec(format!(
                    "{} encoded to more than the {len} bytes it measured (a Serialize impl \
                     that is not deterministic?)",
                    std::any::type_name::<T>()
                )),
                e => Error::Codec(crate::encode::describe(msg, &e)),
            })?
            .len();
        Ok(TypedWriteLoan {
            loan,
            len,
            _t: std::marker::PhantomData,
        })
    }

    /// Encode `msg` straight into room reserved in the ring and return it unpublished,
    /// waiting while the queue is full; [`TypedWriteLoan::commit`] publishes it, dropping the
    /// loan publishes nothing. The producer lock is held until then.
    ///
    /// Shapes: the reservation is exactly the message's postcard encoding
    /// ([`TypedWriteLoan::len`]; measured first with postcard's size flavour, then encoded
    /// in place, the two passes a [`put`](crate::TypedQueue::put) makes). Errors:
    /// [`Error::TooLarge`] at once if the encoding exceeds
    /// [`RawQueue::max_message`] (nothing reserved), [`Error::Codec`] if `msg` does not
    /// serialise, [`Error::Closed`], and [`Error::InvalidArgument`] if this thread already
    /// holds a write loan on the queue.
    ///
    /// ```
    /// # let name = format!("doc-tputloan-{}", std::process::id());
    /// let q: shmq::Queue<Vec<u64>> = shmq::Queue::create(&name, 4096)?;
    /// let loan = q.put_loan(&vec![1, 2, 3])?;
    /// // ... the message has its place; publish it once the rest is done:
    /// loan.commit()?;
    /// assert_eq!(q.get()?, vec![1, 2, 3]);
    /// let huge = vec![u64::MAX; 1000]; // 10 bytes each: more than the ring holds
    /// assert!(matches!(q.put_loan(&huge), Err(shmq::Error::TooLarge { .. })));
    /// # Ok::<(), shmq::Error>(())
    /// ```
    pub fn put_loan(&self, msg: &T) -> Result<TypedWriteLoan<'_, T>> {
        self.put_loan_block(msg, Block::Until(None))
    }

    /// [`put_loan`](Self::put_loan) if there is room now, else [`Error::Full`].
    pub fn try_put_loan(&self, msg: &T) -> Result<TypedWriteLoan<'_, T>> {
        self.put_loan_block(msg, Block::No)
    }

    /// [`put_loan`](Self::put_loan), waiting at most `timeout` for room
    /// ([`Error::Timeout`]).
    pub fn put_loan_timeout(&self, msg: &T, timeout: Duration) -> Result<TypedWriteLoan<'_, T>> {
        self.put_loan_block(msg, Block::timeout(timeout))
    }
}
