//! The memory a ring runs over: a mapped shared segment ([`Segment`]), or, for tests and
//! fuzzing, a process-private heap image laid out the same way ([`HeapImage`]), or, under
//! the loom model, a typed header beside a byte buffer (`ModelMemory`).
//!
//! The ring does not care which: it reads the header and the ring's bytes through the two
//! raw pointers a [`Memory`] gives, and claims its lock identity from it.

use crate::error::Result;
use crate::segment::{Header, Segment};
use crate::sync::Holder;
#[cfg(not(loom))]
use crate::{error::Error, segment};

/// Memory laid out as a segment: a [`Header`] and a ring of `capacity` bytes.
///
/// # Safety
/// Implementors promise that `header()` points at a 64-byte aligned [`Header`] and that
/// `data()` returns a pointer valid for reads and writes of its `capacity` bytes, both for
/// as long as `self` lives and unchanged when `self` is moved (the ring caches them); that
/// `capacity` is a validated ring size (at least `MIN_CAPACITY`, a multiple of 8, and not
/// re-read from shared memory); and that the header's words are only ever accessed as
/// atomics.
pub unsafe trait Memory: Send + Sync {
    /// The header.
    fn header(&self) -> *const Header;
    /// The ring's first byte and its capacity in bytes.
    fn data(&self) -> (*mut u8, u64);
    /// This handle's identity for the locks; `in_use(id)` says whether `id` stands in one
    /// of the header's lock words (an id not to take).
    fn claim_holder(&mut self, in_use: &dyn Fn(u32) -> bool) -> Result<Holder>;
    /// What makes two mappings the same memory: a segment's device and inode (two handles
    /// of one process on one queue map it twice), else the header's address.
    fn identity(&self) -> (u64, u64) {
        (0, self.header() as usize as u64)
    }
}

// SAFETY: a Segment's mapping is validated at create/open (header alignment and size,
// `ring_offset + capacity` within the mapping), lives as long as the Segment, and does not
// move with it (it is an mmap, not an inline buffer).
unsafe impl Memory for Segment {
    fn header(&self) -> *const Header {
        Segment::header(self) as *const Header
    }
    fn data(&self) -> (*mut u8, u64) {
        self.ring()
    }
    fn claim_holder(&mut self, in_use: &dyn Fn(u32) -> bool) -> Result<Holder> {
        Segment::claim_holder(self, in_use)
    }
    fn identity(&self) -> (u64, u64) {
        let o = self.object_id();
        // Device 0 is never a real one for /dev/shm: no clash with the address form.
        (o.dev.max(1), o.ino)
    }
}

/// A segment image in process-private heap memory. Allocated once as raw memory and only
/// ever reached through the raw pointer: no `Box` or reference to it is moved or
/// re-borrowed while pointers derived from it are in use.
#[cfg(not(loom))]
pub struct HeapImage {
    ptr: *mut u8,
    layout: std::alloc::Layout,
    cap: u64,
}

// SAFETY: the image is plain bytes owned by this value; all access goes through raw pointers
// under the ring's protocol (atomics for the header, locks for the ring's bytes).
#[cfg(not(loom))]
unsafe impl Send for HeapImage {}
// SAFETY: as for Send; `&HeapImage` gives out only raw pointers.
#[cfg(not(loom))]
unsafe impl Sync for HeapImage {}

#[cfg(not(loom))]
impl HeapImage {
    /// A fresh, initialised image with a ring of `capacity` bytes (rounded as
    /// `Segment::create` rounds it).
    pub fn new(capacity: usize) -> Result<HeapImage> {
        let cap = segment::normalize_capacity(capacity)?;
        let mut bytes = vec![0u8; (segment::RING_OFFSET + cap) as usize];
        let h = segment::header_image(cap);
        bytes[..h.len()].copy_from_slice(&h);
        Self::from_bytes(&bytes)
    }

    /// A copy of `bytes` taken as a whole segment image, validated the way `Segment::open`
    /// validates a mapped one (the same `validate_layout`). Any content is accepted as
    /// input: the result is an error or an image whose ring operations return errors.
    pub fn from_bytes(bytes: &[u8]) -> Result<HeapImage> {
        if (bytes.len() as u64) < segment::RING_OFFSET {
            return Err(Error::Incompatible {
                name: "<memory>".into(),
                reason: "shorter than the header".into(),
            });
        }
        let layout = std::alloc::Layout::from_size_align(bytes.len(), 4096)
            .map_err(|e| Error::corrupt(format!("image of {} bytes: {e}", bytes.len())))?;
        // SAFETY: the layout has a non-zero size (at least RING_OFFSET bytes).
        let ptr = unsafe { std::alloc::alloc_zeroed(layout) };
        if ptr.is_null() {
            std::alloc::handle_alloc_error(layout);
        }
        // SAFETY: `ptr` is valid for `bytes.len()` bytes, freshly allocated and exclusively
        // ours; the regions do not overlap.
        unsafe { std::ptr::copy_nonoverlapping(bytes.as_ptr(), ptr, bytes.len()) };
        let mut img = HeapImage {
            ptr,
            layout,
            cap: 0,
        };
        // SAFETY: `ptr` is 4096-aligned and at least RING_OFFSET bytes; Header is all atomics.
        let h = unsafe { &*(ptr as *const Header) };
        img.cap = segment::validate_layout(h, bytes.len() as u64, "<memory>")?;
        Ok(img)
    }

    /// A copy of the whole image (header and ring bytes).
    pub fn to_bytes(&self) -> Vec<u8> {
        let len = (segment::RING_OFFSET + self.cap) as usize;
        let mut v = vec![0u8; len];
        // SAFETY: the allocation holds at least `len` bytes (validated in `from_bytes`);
        // copying raw bytes out creates no reference to the image.
        unsafe { std::ptr::copy_nonoverlapping(self.ptr, v.as_mut_ptr(), len) };
        v
    }
}

#[cfg(not(loom))]
impl Drop for HeapImage {
    fn drop(&mut self) {
        // SAFETY: allocated in `from_bytes` with this layout, freed once.
        unsafe { std::alloc::dealloc(self.ptr, self.layout) }
    }
}

// SAFETY: `from_bytes` validated the header (alignment 4096, `RING_OFFSET + cap` within the
// allocation); the allocation lives as long as `self` and never moves.
#[cfg(not(loom))]
unsafe impl Memory for HeapImage {
    fn header(&self) -> *const Header {
        self.ptr as *const Header
    }
    fn data(&self) -> (*mut u8, u64) {
        // SAFETY: RING_OFFSET + cap <= the allocation's size (validated in `from_bytes`).
        (
            unsafe { self.ptr.add(segment::RING_OFFSET as usize) },
            self.cap,
        )
    }
    fn claim_holder(&mut self, _in_use: &dyn Fn(u32) -> bool) -> Result<Holder> {
        Ok(Holder::local())
    }
}

/// Memory of a ring under the loom model: loom's atomics cannot be conjured from zeroed
/// bytes, so the header is a typed value built with their constructors, and the ring's
/// bytes a separate buffer. Both are reached only through the raw pointers.
#[cfg(loom)]
pub struct ModelMemory {
    hdr: *mut Header,
    data: *mut u8,
    layout: std::alloc::Layout,
    cap: u64,
}

// SAFETY: as for HeapImage: owned memory reached only through raw pointers.
#[cfg(loom)]
unsafe impl Send for ModelMemory {}
// SAFETY: as for Send.
#[cfg(loom)]
unsafe impl Sync for ModelMemory {}

#[cfg(loom)]
impl ModelMemory {
    /// A fresh header and ring of `capacity` bytes (a multiple of 8, at least 64).
    pub fn new(capacity: u64) -> ModelMemory {
        let layout =
            std::alloc::Layout::from_size_align(capacity as usize, 64).expect("model ring size");
        // SAFETY: the layout has a non-zero size.
        let data = unsafe { std::alloc::alloc_zeroed(layout) };
        assert!(!data.is_null(), "model ring allocation failed");
        ModelMemory {
            hdr: Box::into_raw(Box::new(Header::for_model(capacity))),
            data,
            layout,
            cap: capacity,
        }
    }
}

#[cfg(loom)]
impl Drop for ModelMemory {
    fn drop(&mut self) {
        // SAFETY: `hdr` came from `Box::into_raw` and `data` from `alloc_zeroed` with this
        // layout in `new`; each is freed once.
        unsafe {
            drop(Box::from_raw(self.hdr));
            std::alloc::dealloc(self.data, self.layout);
        }
    }
}

// SAFETY: both allocations live as long as `self` and never move; `cap` is the size given
// to `new`.
#[cfg(loom)]
unsafe impl Memory for ModelMemory {
    fn header(&self) -> *const Header {
        self.hdr
    }
    fn data(&self) -> (*mut u8, u64) {
        (self.data, self.cap)
    }
    fn claim_holder(&mut self, _in_use: &dyn Fn(u32) -> bool) -> Result<Holder> {
        Ok(Holder::local())
    }
}
