//! [`Value`] and [`Array`]: Python's `multiprocessing.Value` and `Array`, for
//! `bytemuck::Pod` types.

use std::marker::PhantomData;
use std::sync::atomic::{AtomicU16, AtomicU32, AtomicU64, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytemuck::Pod;

use super::{Kind, Object, DATA, WORDS};
use crate::error::{Error, Result};
use crate::segment::Location;
use crate::sync::Deadline;
use crate::Options;

/// An `Array`'s length.
const LEN: usize = WORDS;

/// Items must not need more alignment than the data area has.
fn check_align<T>() -> Result<()> {
    if std::mem::align_of::<T>() > DATA {
        return Err(Error::InvalidArgument(format!(
            "{} needs {}-byte alignment; shared values support at most {DATA}",
            std::any::type_name::<T>(),
            std::mem::align_of::<T>()
        )));
    }
    Ok(())
}

fn item<T>() -> (u32, &'static str) {
    (std::mem::size_of::<T>() as u32, std::any::type_name::<T>())
}

/// Read a `T` at `p` with one atomic load, if `T` has the size of an atomic (1, 2, 4 or
/// 8 bytes); `p` is aligned to that size.
///
/// # Safety
/// `p` must be valid for `size_of::<T>()` bytes, aligned to that size, and only accessed
/// atomically (or under the lock) by everyone.
unsafe fn atomic_load<T: Pod>(p: *const u8) -> Option<T> {
    // SAFETY: (all arms) per the contract, `p` is valid and aligned for the atomic of
    // `T`'s size, and other processes access it only atomically.
    unsafe {
        Some(match std::mem::size_of::<T>() {
            1 => bytemuck::pod_read_unaligned(
                &(*(p as *const AtomicU8))
                    .load(Ordering::Acquire)
                    .to_ne_bytes(),
            ),
            2 => bytemuck::pod_read_unaligned(
                &(*(p as *const AtomicU16))
                    .load(Ordering::Acquire)
                    .to_ne_bytes(),
            ),
            4 => bytemuck::pod_read_unaligned(
                &(*(p as *const AtomicU32))
                    .load(Ordering::Acquire)
                    .to_ne_bytes(),
            ),
            8 => bytemuck::pod_read_unaligned(
                &(*(p as *const AtomicU64))
                    .load(Ordering::Acquire)
                    .to_ne_bytes(),
            ),
            _ => return None,
        })
    }
}

/// Write `v` at `p`: one atomic store for atomic-sized `T`, else a plain copy (the caller
/// holds the lock).
///
/// # Safety
/// As for [`atomic_load`]; for other sizes the caller holds the lock.
unsafe fn store<T: Pod>(p: *mut u8, v: T) {
    let b = bytemuck::bytes_of(&v);
    // SAFETY: (all arms) as in `atomic_load`; the plain copy writes `size_of::<T>()` bytes
    // that only lock holders write.
    unsafe {
        match b.len() {
            1 => (*(p as *const AtomicU8)).store(b[0], Ordering::Release),
            2 => (*(p as *const AtomicU16))
                .store(u16::from_ne_bytes([b[0], b[1]]), Ordering::Release),
            4 => (*(p as *const AtomicU32)).store(
                u32::from_ne_bytes(b.try_into().expect("4 bytes")),
                Ordering::Release,
            ),
            8 => (*(p as *const AtomicU64)).store(
                u64::from_ne_bytes(b.try_into().expect("8 bytes")),
                Ordering::Release,
            ),
            n => std::ptr::copy_nonoverlapping(b.as_ptr(), p, n),
        }
    }
}

/// Read a `T` at `p`: one atomic load for atomic-sized `T`, else a plain copy (the caller
/// holds the lock).
///
/// # Safety
/// As for [`store`].
unsafe fn load<T: Pod>(p: *const u8) -> T {
    // SAFETY: per the contract.
    if let Some(v) = unsafe { atomic_load::<T>(p) } {
        return v;
    }
    let mut v = T::zeroed();
    // SAFETY: `p` is valid for size_of::<T>() bytes of reads, which only lock holders
    // write (and the caller holds the lock); `v` is a local.
    unsafe {
        std::ptr::copy_nonoverlapping(
            p,
            bytemuck::bytes_of_mut(&mut v).as_mut_ptr(),
            std::mem::size_of::<T>(),
        )
    };
    v
}

fn atomic_sized<T>() -> bool {
    matches!(std::mem::size_of::<T>(), 1 | 2 | 4 | 8)
}

/// A value of a plain-old-data type shared by processes, with a lock — Python's
/// `multiprocessing.Value`, in a named segment.
///
/// [`get`](Value::get) of a type of 1, 2, 4 or 8 bytes (integers, floats, small arrays)
/// is one atomic load and takes no lock; other sizes are read under the lock, so a reader
/// never sees half of a write. [`set`](Value::set) and [`update`](Value::update) take the
/// lock; [`lock`](Value::lock) holds it for a read-modify-write spanning several steps
/// (Python's `with v.get_lock(): v.value += 1`). A process killed while holding the lock
/// leaves at worst a half-written value of a large type, which the next guard's
/// [`recovered`](ValueGuard::recovered) reports.
///
/// ```
/// # shmq::process::init();
/// use shmq::{process, Value};
/// # let name = format!("doc-value-{}", std::process::id());
/// let counter: Value<u64> = Value::create(&name, 0)?;
/// let kids: Vec<_> = (0..3)
///     .map(|_| {
///         process::start(
///             |c: Value<u64>| {
///                 for _ in 0..100 {
///                     c.update(|v| v + 1).unwrap(); // with c.get_lock(): c.value += 1
///                 }
///             },
///             counter.clone(),
///         )
///     })
///     .collect::<shmq::Result<_>>()?;
/// for k in kids {
///     k.join()?;
/// }
/// assert_eq!(counter.get()?, 300);
/// # Ok::<(), shmq::Error>(())
/// ```
pub struct Value<T> {
    obj: Arc<Object>,
    _t: PhantomData<fn() -> T>,
}

impl<T> Clone for Value<T> {
    fn clone(&self) -> Self {
        Value {
            obj: self.obj.clone(),
            _t: PhantomData,
        }
    }
}

impl<T: Pod + std::fmt::Debug> std::fmt::Debug for Value<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Value")
            .field("name", &self.obj.name())
            .field("value", &self.get().ok())
            .finish()
    }
}

/// The lock of a [`Value`], held: read and write the value in several steps.
///
/// Across `fork` (without exec): the child's copy of a guard is not a hold of the lock (the
/// parent's is); dropping it there releases nothing, and `get`/`set` through it race with
/// the parent's critical section, as plain reads and writes of the shared value do in a
/// Python child. Take the lock anew in the child ([`Value::lock`]).
pub struct ValueGuard<'a, T> {
    value: &'a Value<T>,
    /// Released on drop, except in a `fork` child (the hold is the parent's).
    _g: super::Held<'a>,
    recovered: bool,
}

impl<T: Pod> ValueGuard<'_, T> {
    /// The value.
    pub fn get(&self) -> T {
        // SAFETY: the data area holds a T (checked at create/open), 64-byte aligned; we
        // hold the lock.
        unsafe { load(self.value.ptr()) }
    }

    /// Replace the value.
    pub fn set(&mut self, v: T) {
        // SAFETY: as in `get`.
        unsafe { store(self.value.ptr(), v) }
    }

    /// Whether the previous holder died holding the lock (a large value may be
    /// half-written).
    pub fn recovered(&self) -> bool {
        self.recovered
    }
}

impl<T: Pod> Value<T> {
    /// Create the value `name` holding `init` (Python's `Value(typecode, init)`).
    pub fn create(name: &str, init: T) -> Result<Value<T>> {
        Self::create_with(name, init, &Options::new())
    }

    /// Create with [`Options`], by name or at a path.
    pub fn create_with(loc: impl Into<Location>, init: T, opts: &Options) -> Result<Value<T>> {
        check_align::<T>()?;
        let len = DATA + std::mem::size_of::<T>();
        let obj = Object::create(loc.into(), Kind::Value, len, item::<T>(), opts, |o| {
            // SAFETY: the data area is at least size_of::<T>() bytes, not yet published.
            unsafe { store(o.data().0, init) }
        })?;
        Ok(Value {
            obj: Arc::new(obj),
            _t: PhantomData,
        })
    }

    /// Attach to the value `name` ([`Error::Incompatible`] if it holds another size of
    /// item).
    pub fn open(name: &str) -> Result<Value<T>> {
        Self::open_at(name)
    }

    /// Attach by name or path.
    pub fn open_at(loc: impl Into<Location>) -> Result<Value<T>> {
        Self::open_at_location(loc.into())
    }

    fn open_at_location(loc: Location) -> Result<Value<T>> {
        check_align::<T>()?;
        let len = DATA + std::mem::size_of::<T>();
        Ok(Value {
            obj: Arc::new(Object::open(loc, Kind::Value, len, item::<T>())?),
            _t: PhantomData,
        })
    }

    fn ptr(&self) -> *mut u8 {
        self.obj.data().0
    }

    fn guard(&self, deadline: &Deadline) -> Result<ValueGuard<'_, T>> {
        let (g, recovered) = self.obj.lock(deadline)?;
        Ok(ValueGuard {
            value: self,
            _g: super::Held::new(g),
            recovered,
        })
    }

    /// The value (Python's `v.value`): lock-free for 1-, 2-, 4- and 8-byte types.
    pub fn get(&self) -> Result<T> {
        // SAFETY: the data area holds a T (checked at create/open), 64-byte aligned.
        if let Some(v) = unsafe { atomic_load::<T>(self.ptr()) } {
            return Ok(v);
        }
        Ok(self.lock()?.get())
    }

    /// Replace the value (under the lock, so it never interleaves with an
    /// [`update`](Self::update)).
    pub fn set(&self, v: T) -> Result<()> {
        self.lock()?.set(v);
        Ok(())
    }

    /// Replace the value with `f(value)` under the lock; returns the new value.
    pub fn update(&self, f: impl FnOnce(T) -> T) -> Result<T> {
        let mut g = self.lock()?;
        let v = f(g.get());
        g.set(v);
        Ok(v)
    }

    /// Hold the lock (Python's `get_lock()`).
    pub fn lock(&self) -> Result<ValueGuard<'_, T>> {
        self.guard(&Deadline::never())
    }

    /// Hold the lock, waiting at most `timeout` ([`Error::Timeout`]).
    pub fn lock_timeout(&self, timeout: Duration) -> Result<ValueGuard<'_, T>> {
        self.guard(&Deadline::after(timeout))
    }

    /// Whether [`get`](Self::get) takes no lock for this `T`.
    pub fn is_lock_free(&self) -> bool {
        atomic_sized::<T>()
    }

    /// The value's name (or path).
    pub fn name(&self) -> &str {
        self.obj.name()
    }
}

impl<T> serde::Serialize for Value<T> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        self.obj.location().serialize(s)
    }
}

impl<'de, T: Pod> serde::Deserialize<'de> for Value<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let loc = Location::deserialize(d)?;
        Value::open_at_location(loc).map_err(serde::de::Error::custom)
    }
}

/// A fixed-length array of a plain-old-data type shared by processes, with a lock —
/// Python's `multiprocessing.Array`, in a named segment.
///
/// Element reads ([`get`](Array::get)) of 1-, 2-, 4- and 8-byte types are atomic and take
/// no lock; everything else takes the lock, and [`lock`](Array::lock) holds it across
/// several steps.
///
/// ```
/// # shmq::process::init();
/// use shmq::{process, Array};
/// # let name = format!("doc-array-{}", std::process::id());
/// let a: Array<f64> = Array::create(&name, &[1.0, 2.0, 3.0])?;
/// let child = process::start(
///     |a: Array<f64>| {
///         let mut g = a.lock().unwrap();
///         for i in 0..g.len() {
///             let v = g.get(i).unwrap();
///             g.set(i, -v).unwrap();
///         }
///     },
///     a.clone(),
/// )?;
/// child.join()?;
/// assert_eq!(a.to_vec()?, [-1.0, -2.0, -3.0]);
/// # Ok::<(), shmq::Error>(())
/// ```
pub struct Array<T> {
    obj: Arc<Object>,
    /// The length, read once at open and checked against the segment's size.
    len: usize,
    _t: PhantomData<fn() -> T>,
}

impl<T> Clone for Array<T> {
    fn clone(&self) -> Self {
        Array {
            obj: self.obj.clone(),
            len: self.len,
            _t: PhantomData,
        }
    }
}

impl<T> std::fmt::Debug for Array<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Array")
            .field("name", &self.obj.name())
            .field("len", &self.len)
            .finish()
    }
}

/// The lock of an [`Array`], held: read and write elements in several steps.
///
/// Across `fork` (without exec): as for [`ValueGuard`], the child's copy holds nothing, and
/// reads and writes through it race with the parent's; take [`Array::lock`] in the child.
pub struct ArrayGuard<'a, T> {
    array: &'a Array<T>,
    /// Released on drop, except in a `fork` child (the hold is the parent's).
    _g: super::Held<'a>,
    recovered: bool,
}

fn out_of_range(i: usize, len: usize) -> Error {
    Error::InvalidArgument(format!("index {i} out of range for an Array of {len}"))
}

impl<T: Pod> ArrayGuard<'_, T> {
    /// Element `i` ([`Error::InvalidArgument`] out of range, Python's `IndexError`).
    pub fn get(&self, i: usize) -> Result<T> {
        // SAFETY: `at` checks the index; we hold the lock.
        Ok(unsafe { load(self.array.at(i)?) })
    }

    /// Replace element `i`.
    pub fn set(&mut self, i: usize, v: T) -> Result<()> {
        // SAFETY: as in `get`.
        unsafe { store(self.array.at(i)?, v) };
        Ok(())
    }

    /// Every element.
    pub fn to_vec(&self) -> Vec<T> {
        (0..self.array.len)
            // SAFETY: `i` < len; we hold the lock.
            .map(|i| unsafe { load(self.array.ptr().add(i * std::mem::size_of::<T>())) })
            .collect()
    }

    /// Replace every element ([`Error::InvalidArgument`] if the lengths differ).
    pub fn copy_from_slice(&mut self, src: &[T]) -> Result<()> {
        if src.len() != self.array.len {
            return Err(Error::InvalidArgument(format!(
                "{} values for an Array of {}",
                src.len(),
                self.array.len
            )));
        }
        for (i, &v) in src.iter().enumerate() {
            // SAFETY: `i` < len; we hold the lock.
            unsafe { store(self.array.ptr().add(i * std::mem::size_of::<T>()), v) };
        }
        Ok(())
    }

    /// The number of elements.
    pub fn len(&self) -> usize {
        self.array.len
    }

    /// Whether the array has no element.
    pub fn is_empty(&self) -> bool {
        self.array.len == 0
    }

    /// Whether the previous holder died holding the lock.
    pub fn recovered(&self) -> bool {
        self.recovered
    }
}

impl<T: Pod> Array<T> {
    /// Create the array `name` holding a copy of `init` (Python's
    /// `Array(typecode, init)`).
    pub fn create(name: &str, init: &[T]) -> Result<Array<T>> {
        Self::create_with(name, init, &Options::new())
    }

    /// Create the array `name` of `len` zeroed elements (Python's `Array(typecode, len)`).
    /// The segment starts zeroed: no copy of `len` elements is built on the heap.
    ///
    /// Errors: [`Error::InvalidArgument`] if `len` elements do not fit a segment.
    pub fn create_zeroed(name: &str, len: usize) -> Result<Array<T>> {
        Self::create_inner(name.into(), len, None, &Options::new())
    }

    /// Create with [`Options`], by name or at a path.
    pub fn create_with(loc: impl Into<Location>, init: &[T], opts: &Options) -> Result<Array<T>> {
        Self::create_inner(loc.into(), init.len(), Some(init), opts)
    }

    fn create_inner(
        loc: Location,
        len: usize,
        init: Option<&[T]>,
        opts: &Options,
    ) -> Result<Array<T>> {
        check_align::<T>()?;
        let too_big = || {
            Error::InvalidArgument(format!(
                "an array of {len} elements of {} bytes does not fit a segment",
                std::mem::size_of::<T>()
            ))
        };
        let bytes = len
            .checked_mul(std::mem::size_of::<T>())
            .ok_or_else(too_big)?;
        let total = DATA.checked_add(bytes).ok_or_else(too_big)?;
        let obj = Object::create(loc, Kind::Array, total, item::<T>(), opts, |o| {
            o.u64_at(LEN).store(len as u64, Ordering::Relaxed);
            if let Some(init) = init {
                // SAFETY: the data area holds at least `bytes` bytes (we sized it), not yet
                // published; `init` is process-local and `bytes` long.
                unsafe {
                    std::ptr::copy_nonoverlapping(init.as_ptr() as *const u8, o.data().0, bytes)
                };
            }
        })?;
        Ok(Array {
            obj: Arc::new(obj),
            len,
            _t: PhantomData,
        })
    }

    /// Attach to the array `name`.
    pub fn open(name: &str) -> Result<Array<T>> {
        Self::open_at(name)
    }

    /// Attach by name or path.
    pub fn open_at(loc: impl Into<Location>) -> Result<Array<T>> {
        Self::open_at_location(loc.into())
    }

    fn open_at_location(loc: Location) -> Result<Array<T>> {
        check_align::<T>()?;
        let obj = Object::open(loc, Kind::Array, DATA, item::<T>())?;
        let len = obj.u64_at(LEN).load(Ordering::Relaxed);
        let (_, room) = obj.data();
        let size = std::mem::size_of::<T>().max(1) as u64;
        if len > room as u64 / size {
            return Err(Error::Incompatible {
                name: obj.name().to_string(),
                reason: format!("an Array of {len} elements does not fit its {room} bytes"),
            });
        }
        Ok(Array {
            obj: Arc::new(obj),
            len: len as usize,
            _t: PhantomData,
        })
    }

    fn ptr(&self) -> *mut u8 {
        self.obj.data().0
    }

    fn at(&self, i: usize) -> Result<*mut u8> {
        if i >= self.len {
            return Err(out_of_range(i, self.len));
        }
        // SAFETY: i < len, and len elements fit the data area (checked at create/open).
        Ok(unsafe { self.ptr().add(i * std::mem::size_of::<T>()) })
    }

    fn guard(&self, deadline: &Deadline) -> Result<ArrayGuard<'_, T>> {
        let (g, recovered) = self.obj.lock(deadline)?;
        Ok(ArrayGuard {
            array: self,
            _g: super::Held::new(g),
            recovered,
        })
    }

    /// The number of elements.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the array has no element.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Element `i` (Python's `a[i]`): lock-free for 1-, 2-, 4- and 8-byte types.
    pub fn get(&self, i: usize) -> Result<T> {
        let p = self.at(i)?;
        // SAFETY: `p` is element i, aligned to its size (64-byte aligned base, power-of-two
        // stride) when it is atomic-sized.
        if let Some(v) = unsafe { atomic_load::<T>(p) } {
            return Ok(v);
        }
        self.lock()?.get(i)
    }

    /// Replace element `i` (under the lock).
    pub fn set(&self, i: usize, v: T) -> Result<()> {
        self.lock()?.set(i, v)
    }

    /// Replace element `i` with `f(element)` under the lock; returns the new element.
    pub fn update(&self, i: usize, f: impl FnOnce(T) -> T) -> Result<T> {
        let mut g = self.lock()?;
        let v = f(g.get(i)?);
        g.set(i, v)?;
        Ok(v)
    }

    /// Every element, read under the lock (Python's `a[:]`).
    pub fn to_vec(&self) -> Result<Vec<T>> {
        Ok(self.lock()?.to_vec())
    }

    /// Replace every element under the lock (Python's `a[:] = ...`).
    pub fn copy_from_slice(&self, src: &[T]) -> Result<()> {
        self.lock()?.copy_from_slice(src)
    }

    /// Hold the lock (Python's `get_lock()`).
    pub fn lock(&self) -> Result<ArrayGuard<'_, T>> {
        self.guard(&Deadline::never())
    }

    /// Hold the lock, waiting at most `timeout` ([`Error::Timeout`]).
    pub fn lock_timeout(&self, timeout: Duration) -> Result<ArrayGuard<'_, T>> {
        self.guard(&Deadline::after(timeout))
    }

    /// The array's name (or path).
    pub fn name(&self) -> &str {
        self.obj.name()
    }
}

impl<T> serde::Serialize for Array<T> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        self.obj.location().serialize(s)
    }
}

impl<'de, T: Pod> serde::Deserialize<'de> for Array<T> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let loc = Location::deserialize(d)?;
        Array::open_at_location(loc).map_err(serde::de::Error::custom)
    }
}
