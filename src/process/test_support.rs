//! Starting children inside `cargo test` binaries: the [`enable_test_support!`] macro and
//! the helper test it adds, and the rule that decides how a child is launched (plain
//! re-execution, or through the test harness with only the helper test selected).
//!
//! [`enable_test_support!`]: crate::enable_test_support

use std::sync::atomic::{AtomicBool, Ordering};

use super::child::{dispatch_child, INIT_CALLED};
use super::ProcessError;
use crate::error::Result;

/// Name of the helper test that [`enable_test_support!`](crate::enable_test_support) adds.
pub const TEST_SUPPORT_NAME: &str = "shmq_process_test_support";

/// The test harness's command line that runs only the helper test, one thread, quietly.
pub(super) const HARNESS_ARGS: [&str; 4] =
    [TEST_SUPPORT_NAME, "--nocapture", "--test-threads=1", "-q"];

/// Set in children started through the test harness, so that their own children are too.
pub(super) const ENV_VIA_TEST: &str = "SHMQ_PROCESS_VIA_TEST";

/// Set when the helper test of [`enable_test_support!`](crate::enable_test_support) ran in
/// this process: children must then be started through the test harness too.
static TEST_SUPPORT: AtomicBool = AtomicBool::new(false);

/// Called by the helper test that [`enable_test_support!`](crate::enable_test_support)
/// adds; not for direct use.
#[doc(hidden)]
pub fn __test_support_init() {
    TEST_SUPPORT.store(true, Ordering::SeqCst);
    dispatch_child();
}

/// Whether this process is a cargo test (or bench) binary: cargo puts those in `deps/`.
fn in_cargo_test_binary() -> bool {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|d| d.ends_with("deps")))
        .unwrap_or(false)
}

/// How to start a child: `Ok(true)` through the test harness, `Ok(false)` as a plain
/// re-execution, or `NotInitialized` when neither is safe (a normal binary that never
/// called `init()` would run its whole `main` again in the child).
fn launch_mode(init_called: bool, test_support: bool, cargo_test_binary: bool) -> Result<bool> {
    if test_support || (!init_called && cargo_test_binary) {
        Ok(true)
    } else if init_called {
        Ok(false)
    } else {
        Err(ProcessError::NotInitialized.into())
    }
}

/// [`launch_mode`] of this process: test mode when the test-support helper ran here (we are
/// a child of a test binary, or a test binary whose helper test already ran), or when no
/// init() was called in a cargo test binary. Never re-exec a test binary without the helper
/// filter: that would run the whole test suite in the child.
pub(super) fn through_harness() -> Result<bool> {
    launch_mode(
        INIT_CALLED.load(Ordering::SeqCst),
        TEST_SUPPORT.load(Ordering::SeqCst) || std::env::var_os(ENV_VIA_TEST).is_some(),
        in_cargo_test_binary(),
    )
}

/// Make [`start`](crate::process::start) and [`Pool`](crate::process::Pool) work inside this test binary (`tests/*.rs`, or a
/// `#[cfg(test)]` module). Invoke once at the top level of the test file.
///
/// It adds a test named `shmq_process_test_support`; children re-run the test binary with
/// that test as the only filter, and the test calls [`init`](crate::process::init). In the
/// parent the helper test does nothing and passes.
///
/// A test file then uses the helpers like any program would:
///
/// ```text
/// // tests/workers.rs
/// shmq::enable_test_support!();
///
/// #[test]
/// fn square_in_a_child() {
///     let c = shmq::process::start(|x| x * x, 7u64).unwrap();
///     assert_eq!(c.join().unwrap(), 49);
/// }
/// ```
///
/// The invocation itself (here in a doctest, where it adds nothing that runs):
///
/// ```
/// shmq::enable_test_support!();
/// ```
#[macro_export]
macro_rules! enable_test_support {
    () => {
        #[test]
        fn shmq_process_test_support() {
            $crate::process::__test_support_init();
        }
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::Error;
    use crate::process::start;

    crate::enable_test_support!();

    #[test]
    fn launch_mode_rules() {
        // A binary that called init(): plain re-exec.
        assert!(!launch_mode(true, false, false).unwrap());
        // A bench with its own main in deps/ that called init(): plain too.
        assert!(!launch_mode(true, false, true).unwrap());
        // A test binary (helper ran, or no init in deps/): through the harness.
        assert!(launch_mode(false, true, true).unwrap());
        assert!(launch_mode(true, true, true).unwrap());
        assert!(launch_mode(false, false, true).unwrap());
        // A normal binary that forgot init(): refuse rather than re-run main.
        assert!(matches!(
            launch_mode(false, false, false),
            Err(Error::Process(ProcessError::NotInitialized))
        ));
    }

    #[test]
    fn spawn_in_unit_test() {
        let c = start(|x| x + 1, 5u8).unwrap();
        assert_eq!(c.join().unwrap(), 6u8);
        // The old argument order still works, deprecated.
        #[allow(deprecated)]
        let c = crate::process::spawn(5u8, |x| x + 2).unwrap();
        assert_eq!(c.join().unwrap(), 7u8);
    }
}
