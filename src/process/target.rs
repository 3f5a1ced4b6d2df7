//! Identifying the function: a [`Target`] names a user function and the monomorphised
//! trampoline that calls it by their offsets from a known symbol of the executable, which a
//! re-execution of the same file (with ASLR) loads at the same offsets; and the trampolines
//! themselves, which decode the arguments, call the function under `catch_unwind` and
//! encode its [`Outcome`].

use std::ffi::OsStr;
use std::panic::{self, AssertUnwindSafe};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::wire::{self, Call, Outcome};
use crate::error::{Error, Result};

/// The monomorphised trampoline a child calls: turn the function's offset back into the
/// function, decode the args, call it, encode the result.
///
/// # Safety
/// The offset must be that of a `fn(A) -> R` of this executable, for the `A` and `R` the
/// trampoline was instantiated with (as a [`Target`] pairs them).
type Entry = unsafe fn(i64, &[u8]) -> Outcome;

pub(super) fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = p.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = p.downcast_ref::<String>() {
        s.clone()
    } else {
        "<non-string panic payload>".to_string()
    }
}

fn decode_args<A: DeserializeOwned>(args: &[u8]) -> std::result::Result<A, String> {
    postcard::from_bytes(args).map_err(|e| {
        format!(
            "decoding the arguments ({}) failed: {e} (if they contain queues: each must \
             still exist when the child starts, so keep the creating handle alive until \
             the child has attached)",
            std::any::type_name::<A>()
        )
    })
}

/// Run `f(a)`, catching a panic, and encode the return value (keeping a `Serialize`
/// impl's own error message).
fn call_one<A, R: Serialize>(f: fn(A) -> R, a: A) -> Outcome {
    match panic::catch_unwind(AssertUnwindSafe(move || f(a))) {
        Ok(r) => match postcard::to_allocvec(&r) {
            Ok(b) => Outcome::Ok(b),
            Err(e) => Outcome::Error(format!(
                "encoding the return value ({}) failed: {}",
                std::any::type_name::<R>(),
                crate::encode::describe(&r, &e)
            )),
        },
        Err(p) => Outcome::Panic(panic_message(&*p)),
    }
}

/// The trampoline of one call: the arguments are an `A`.
///
/// # Safety
/// As for [`Entry`]: `func` is the offset of a `fn(A) -> R` of this executable.
unsafe fn entry<A, R>(func: i64, args: &[u8]) -> Outcome
where
    A: DeserializeOwned,
    R: Serialize,
{
    // SAFETY: per the contract, which `Target::new::<A, R>` set up: it pairs this
    // trampoline with the offset of a `fn(A) -> R`.
    let f = unsafe { func_at::<A, R>(func) };
    match decode_args::<A>(args) {
        Ok(a) => call_one(f, a),
        Err(m) => Outcome::Error(m),
    }
}

/// The trampoline of a chunk of pool tasks: the arguments are a `Vec<A>`; each item is run
/// on its own (a panic fails only its item), and the outcomes come back as one `Outcome`
/// per item, encoded in one `Outcome::Ok`.
///
/// # Safety
/// As for [`entry`].
unsafe fn entry_chunk<A, R>(func: i64, args: &[u8]) -> Outcome
where
    A: DeserializeOwned,
    R: Serialize,
{
    // SAFETY: as in `entry`, for `entry_chunk::<A, R>` (from `Target::chunk::<A, R>`).
    let f = unsafe { func_at::<A, R>(func) };
    let items = match decode_args::<Vec<A>>(args) {
        Ok(v) => v,
        Err(m) => return Outcome::Error(m),
    };
    let outcomes: Vec<Outcome> = items.into_iter().map(|a| call_one(f, a)).collect();
    match wire::encode(&outcomes, "the outcomes of a chunk of tasks") {
        Ok(b) => Outcome::Ok(b),
        Err(e) => Outcome::Error(e.to_string()),
    }
}

/// What a child process or pool worker runs: a trampoline for `(A, R)` and the user's
/// function, both as offsets from [`base_addr`] (stable across a re-exec with ASLR).
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub(super) struct Target {
    /// Offset of `entry::<A, R>` (or `entry_chunk::<A, R>`).
    entry: i64,
    /// Offset of the `fn(A) -> R`.
    func: i64,
}

impl Target {
    /// The target that runs `f` on one argument. Fails when `f` lives in a shared library
    /// rather than in this executable: its offset would mean nothing in the re-executed
    /// child.
    pub(super) fn new<A, R>(f: fn(A) -> R) -> Result<Target>
    where
        A: DeserializeOwned,
        R: Serialize,
    {
        Self::with_entry(entry::<A, R>, f as usize)
    }

    /// The target that runs `f` on each of a chunk (a `Vec<A>`) of arguments.
    pub(super) fn chunk<A, R>(f: fn(A) -> R) -> Result<Target>
    where
        A: DeserializeOwned,
        R: Serialize,
    {
        Self::with_entry(entry_chunk::<A, R>, f as usize)
    }

    fn with_entry(entry: Entry, func: usize) -> Result<Target> {
        let entry = entry as usize;
        if !same_object(func, base_addr()) || !same_object(entry, base_addr()) {
            return Err(Error::InvalidArgument(
                "shmq::process runs functions of the executable itself; this one is in a \
                 shared library (wrap it in a fn or closure of your program)"
                    .into(),
            ));
        }
        Ok(Target {
            entry: entry.wrapping_sub(base_addr()) as i64,
            func: func.wrapping_sub(base_addr()) as i64,
        })
    }

    /// The call of this target on `args` (a `Serialize` impl's own error message is kept;
    /// `what` names them in the error). `args` is an `A` of [`Target::new`], a slice or
    /// `Vec` of `A` of [`Target::chunk`].
    pub(super) fn call<A: Serialize + ?Sized>(&self, args: &A, what: &str) -> Result<Call> {
        Ok(Call {
            target: *self,
            args: wire::encode(args, what)?,
        })
    }

    /// Run the trampoline on `args`.
    ///
    /// # Safety
    /// `self` must have been made by [`Target::new`] or [`Target::chunk`] in a process
    /// running this very executable, and `args` be what [`Target::call`] encoded for it.
    /// (Bad argument bytes are an `Outcome::Error`, not undefined behaviour.)
    pub(super) unsafe fn run(&self, args: &[u8]) -> Outcome {
        // SAFETY: per the contract, `self.entry` is a trampoline of this executable and
        // `self.func` the function it was paired with.
        unsafe { entry_at(self.entry)(self.func, args) }
    }
}

/// Whether two code addresses are in the same loaded object (executable or shared
/// library), as far as the dynamic loader can tell; `true` when it cannot (a static
/// executable is one object).
fn same_object(a: usize, b: usize) -> bool {
    // No safe wrapper of `dladdr` exists (rustix has none): libc it is.
    fn base(addr: usize) -> Option<usize> {
        // SAFETY: Dl_info is plain data that dladdr fills in; an all-zero value is valid.
        let mut info: libc::Dl_info = unsafe { std::mem::zeroed() };
        // SAFETY: dladdr only reads the loader's tables for `addr` and writes `info`.
        let ok = unsafe { libc::dladdr(addr as *const libc::c_void, &mut info) };
        (ok != 0 && !info.dli_fbase.is_null()).then_some(info.dli_fbase as usize)
    }
    match (base(a), base(b)) {
        (Some(x), Some(y)) => x == y,
        _ => true,
    }
}

/// The user's function at `offset`.
///
/// # Safety
/// `offset` must have been produced by [`Target::new::<A, R>`] (or `Target::chunk`) in a
/// process running this very executable.
unsafe fn func_at<A, R>(offset: i64) -> fn(A) -> R {
    let addr = base_addr().wrapping_add(offset as usize);
    // SAFETY: per the contract, `addr` is the address of a function of type `fn(A) -> R`
    // in this executable; fn pointers and usize have the same size.
    unsafe { std::mem::transmute::<usize, fn(A) -> R>(addr) }
}

/// Compile-time check that `F` is zero-sized (a `fn` item or a non-capturing closure):
/// [`StarFn`](super::StarFn) turns such an `F` into a plain `fn` pointer.
const fn assert_zero_sized<F>() {
    const {
        assert!(
            std::mem::size_of::<F>() == 0,
            "shmq::process needs a fn item or a non-capturing closure: pass captured values through the arguments instead"
        )
    }
}

/// The value of the zero-sized `F`.
pub(super) fn conjure<F: Copy>() -> F {
    assert_zero_sized::<F>();
    // SAFETY: `F` is zero-sized (asserted at compile time by `assert_zero_sized`), so a
    // value of it has no bytes that could be invalid, and it is `Copy` (no drop glue, no
    // ownership to duplicate). The caller held a value of this exact type (`StarFn::into_fn`
    // takes one), so the type is inhabited: a `fn` item or a non-capturing closure, whose
    // every value is the same.
    unsafe { std::ptr::NonNull::<F>::dangling().as_ptr().read() }
}

/// Base symbol that offsets are taken from.
fn base_addr() -> usize {
    super::init as fn() as usize
}

/// A second symbol: parent and child compare its offset to check they run the same binary.
pub(super) fn check_offset() -> i64 {
    (super::child::run_child as fn(&OsStr) -> i32 as usize).wrapping_sub(base_addr()) as i64
}

/// The trampoline at `offset` (in the same binary as the process that computed it).
///
/// # Safety
/// `offset` must be a [`Target::entry`] made in a process running this very executable
/// (the bootstrap's check offset vouches for that).
unsafe fn entry_at(offset: i64) -> Entry {
    let addr = base_addr().wrapping_add(offset as usize);
    // SAFETY: per the contract, `addr` is the address of an `entry::<A, R>` or
    // `entry_chunk::<A, R>` function in this binary, whose type is `Entry`; fn pointers and
    // usize have the same size.
    unsafe { std::mem::transmute::<usize, Entry>(addr) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_runs_in_process() {
        fn double(x: u32) -> u32 {
            x * 2
        }
        let call = Call::new(double as fn(u32) -> u32, &21u32, "the arguments").unwrap();
        // SAFETY: the call was made by Call::new in this same process.
        match unsafe { call.run() } {
            Outcome::Ok(b) => assert_eq!(postcard::from_bytes::<u32>(&b).unwrap(), 42),
            o => panic!("unexpected outcome {o:?}"),
        }
    }

    #[test]
    fn chunk_runs_each_item() {
        fn halve(x: u32) -> u32 {
            assert_ne!(x, 3, "three");
            x / 2
        }
        let t = Target::chunk(halve as fn(u32) -> u32).unwrap();
        let call = t.call(&[4u32, 3, 8][..], "the arguments").unwrap();
        // SAFETY: made by Target::chunk and Target::call in this same process.
        let Outcome::Ok(b) = (unsafe { call.run() }) else {
            panic!("the chunk failed as a whole");
        };
        let items: Vec<Outcome> = postcard::from_bytes(&b).unwrap();
        let got: Vec<_> = items.into_iter().map(|o| o.into_result::<u32>(0)).collect();
        assert_eq!(got[0].as_ref().unwrap(), &2);
        assert!(got[1].is_err());
        assert_eq!(got[2].as_ref().unwrap(), &4);
    }
}
