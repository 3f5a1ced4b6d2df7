//! What the integration tests share: one home for each helper.
//!
//! * [`child`]: child processes that re-run this test binary in a role (declared once per
//!   file with [`child_roles!`], spawned with [`child!`]), optionally under a wrapper
//!   command (a new PID namespace, a private `/dev/shm`, another uid).
//! * [`wait`]: bounded waiting — polling a condition, a call on a helper thread, a
//!   process's state — so that a hang fails a test instead of hanging the suite.
//! * [`cleanup`]: guards that remove what a test created, also when it fails.
//! * [`data`]: unique names, checksums and deterministic payloads.
//! * [`forge`]: direct access to a segment's bytes and header, for hostile-segment tests.
//!
//! Each test file compiles its own copy (`mod common;`) and uses only part of it.
#![allow(dead_code, unused_imports, unused_macros)]

pub mod child;
pub mod cleanup;
pub mod data;
pub mod forge;
pub mod wait;

pub use child::{
    can_run, children_of, is_root, say, signal, Reap, Release, Role, RoleChild, Wrapper,
    HIDEPID_NOBODY, NEW_PID_NS, PRIVATE_SHM,
};
pub(crate) use child::{child, child_roles};
pub use cleanup::{stale_lock, RemoveOnDrop, RemovePath};
pub use data::{fnv, is_pattern, mix64, pattern, uniq, Unsendable};
pub use forge::{segment, write_at};
pub use wait::{bounded, eventually, panic_text, wait_for_file, wait_stopped};
