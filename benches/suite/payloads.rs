//! The messages every case moves: the payload sizes, the ring capacity each size gets, and
//! the Rust types that carry a payload of a given size (serde and `Pod`).

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_bytes::ByteBuf;

/// Payload sizes of the throughput workloads.
pub const SIZES: [usize; 5] = [8, 64, 1024, 64 << 10, 1 << 20];
/// Payload sizes of the latency workloads.
pub const LAT_SIZES: [usize; 2] = [8, 4096];
/// Payload size of the MPMC workloads.
pub const MPMC_SIZE: usize = 64;

/// Ring capacity used by every ring-based transport for payloads of `size` bytes.
pub fn ring_cap(size: usize) -> usize {
    (size * 4 + 64).next_power_of_two().max(256 << 10)
}

/// A serde message of a given size: a `u64` for 8 bytes, else bytes via `serde_bytes`.
pub trait Payload: Serialize + DeserializeOwned + Clone + Send + 'static {
    fn make(size: usize) -> Self;
    fn size(&self) -> usize;
    /// Read every byte once (what a consumer that received the message by move does with
    /// it; see `transports::checksum`).
    fn touch(&self) -> u64;
}

impl Payload for u64 {
    fn make(_: usize) -> u64 {
        0x0123_4567_89ab_cdef
    }
    fn size(&self) -> usize {
        8
    }
    fn touch(&self) -> u64 {
        *self
    }
}

impl Payload for ByteBuf {
    fn make(size: usize) -> ByteBuf {
        ByteBuf::from(vec![0xa5; size])
    }
    fn size(&self) -> usize {
        self.len()
    }
    fn touch(&self) -> u64 {
        crate::transports::checksum(self)
    }
}

/// Evaluate `$body` with `$P` the [`Payload`] type for `$size` bytes.
macro_rules! with_payload {
    ($size:expr, $P:ident => $body:expr) => {
        if $size == 8 {
            type $P = u64;
            $body
        } else {
            type $P = ::serde_bytes::ByteBuf;
            $body
        }
    };
}

/// Evaluate `$body` with `$P` a `Pod` type of exactly `$size` bytes (one arm per size in
/// [`SIZES`] and [`LAT_SIZES`]).
macro_rules! with_pod {
    ($size:expr, $P:ident => $body:expr) => {
        match $size {
            8 => {
                type $P = u64;
                $body
            }
            64 => {
                type $P = [u8; 64];
                $body
            }
            1024 => {
                type $P = [u8; 1024];
                $body
            }
            4096 => {
                type $P = [u8; 4096];
                $body
            }
            65536 => {
                type $P = [[u8; 4096]; 16];
                $body
            }
            1048576 => {
                type $P = [[u8; 4096]; 256];
                $body
            }
            s => panic!("no Pod type for {s} bytes"),
        }
    };
}

pub(crate) use {with_payload, with_pod};

/// A zeroed `Box<P>` allocated directly on the heap (`Box::new(P::zeroed())` would build
/// the up-to-1 MiB value on the stack first).
pub fn zeroed_box<P: bytemuck::Pod>() -> Box<P> {
    let layout = std::alloc::Layout::new::<P>();
    assert!(layout.size() > 0);
    // SAFETY: the layout has a non-zero size; all-zero bytes are a valid `P` (Pod), and the
    // pointer comes from the global allocator with `P`'s layout, as Box::from_raw requires.
    unsafe {
        let p = std::alloc::alloc_zeroed(layout) as *mut P;
        if p.is_null() {
            std::alloc::handle_alloc_error(layout);
        }
        Box::from_raw(p)
    }
}

/// Check that [`with_pod!`] has a type of exactly the right size for every payload size the
/// cases use (the match arms repeat the sizes; this ties them to [`SIZES`] and [`LAT_SIZES`]).
pub fn check_pod_types() {
    for &size in SIZES.iter().chain(&LAT_SIZES) {
        with_pod!(size, P => assert_eq!(std::mem::size_of::<P>(), size));
    }
}
