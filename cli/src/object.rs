//! Where a named queue lives in the file system, and which object the name leads to now.
//! The path comes from the library ([`shmq::Location::object_path`]): the CLI restates no
//! directory or prefix.

use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

/// The object a queue name stands for: `/dev/shm/shmq.NAME`.
pub fn path(name: &str) -> PathBuf {
    shmq::Location::Name(name.to_string()).object_path()
}

/// The directory the named objects live in (`/dev/shm`).
pub fn dir() -> PathBuf {
    let p = path("x");
    p.parent().map_or(p.clone(), |d| d.to_path_buf())
}

/// What identifies the object behind a queue name: a queue removed and created again under
/// the same name is another object.
pub fn id(name: &str) -> Option<(u64, u64)> {
    std::fs::metadata(path(name))
        .ok()
        .map(|m| (m.dev(), m.ino()))
}

/// The user who owns a named queue's object, if it exists.
pub fn owner(name: &str) -> Option<u32> {
    std::fs::metadata(path(name)).ok().map(|m| m.uid())
}
