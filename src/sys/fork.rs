//! `pthread_atfork`: handlers run around every `fork` of the process (`libc`: no safe
//! wrapper exists; the handlers' obligations are the caller's, hence an `unsafe fn`).

/// Register `prepare` (run in the parent before `fork`), `parent` (in the parent after
/// it) and `child` (in the new child, where only the forking thread exists).
///
/// # Safety
/// The handlers must be valid around `fork` and in a freshly forked child of a
/// multi-threaded process: async-signal-safe calls and atomics only, and no lock that a
/// thread which does not exist in the child could hold.
pub(crate) unsafe fn at_fork(
    prepare: extern "C" fn(),
    parent: extern "C" fn(),
    child: extern "C" fn(),
) {
    // SAFETY: the handlers meet pthread_atfork's requirements (see # Safety).
    unsafe {
        libc::pthread_atfork(Some(prepare), Some(parent), Some(child));
    }
}
