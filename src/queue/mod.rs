//! The queues: [`RawQueue`] (bytes), [`Queue<T>`] (serde, postcard) and [`PodQueue<T>`]
//! (`bytemuck::Pod`, copied without serialisation), all over the same ring.
//!
//! A `Queue<T>`, a `PodQueue<T>` and a `RawQueue` opened on the same name are the same ring:
//! the typed queues are the raw queue plus a [`Codec`]. The creator records its codec, the
//! message type's name and (for `Pod`) the item size in the header; a typed `open` that does
//! not match gets [`Error::Incompatible`](crate::Error::Incompatible). A `RawQueue` may open
//! any queue (not a primitive's segment).
//!
//! Handles are `Send + Sync + Clone` (clones share one mapping). A handle serialises (serde)
//! as its [`Location`](crate::Location) and deserialises by opening it, so a queue passed to
//! a child process as an argument attaches there by name — like Python pickling a
//! `multiprocessing.Queue`.
//!
//! Private: every user-facing item is re-exported at the crate root. One idea per file:
//! * `options` — [`Options`], and the `Location` conversions `create_with` / `open_with` take.
//! * `raw` — [`RawQueue`] and its batch buffer [`Batch`]; a handle serialises as its location.
//! * `kind` — what the creator records (codec, item size, type name), the check on open,
//!   and the one table of codec names ([`codec_name`]).
//! * `codec` — the [`Codec`] trait, the [`Slot`] a codec writes into, and [`Postcard`].
//! * `typed` — [`TypedQueue`] and [`Queue<T>`] (a `RawQueue` plus a codec).
//! * `pod` — the [`Pod`] codec, [`PodQueue<T>`] and its copy-straight-in `get_into`.
//! * `loan` — zero-copy loans: [`WriteLoan`], [`TypedWriteLoan`], [`ReadLoan`],
//!   [`ReadLoans`] and the `put_loan` / `get_loan` / `get_loans` calls on the queues.
//!
//! Listing, inspecting and removing queues by name is `crate::admin`.

mod codec;
mod kind;
mod loan;
mod options;
mod pod;
mod raw;
mod typed;

pub(crate) use codec::decode_whole;
pub use codec::{Codec, Postcard, Slot};
pub use kind::codec_name;
pub use loan::{ReadLoan, ReadLoans, TypedWriteLoan, WriteLoan};
pub use options::Options;
pub use options::DEFAULT_CAPACITY;
pub use pod::{Pod, PodQueue};
pub use raw::{Batch, RawQueue};
pub use typed::{Queue, TypedQueue};

#[cfg(test)]
mod tests;
