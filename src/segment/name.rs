//! Names and the objects they refer to.
//!
//! # Names
//! A queue name is 1 to [`MAX_NAME_LEN`] bytes of ASCII letters, digits, `_`, `-` and `.`,
//! not starting with `.`. The object is created as `/shmq.<name>` (visible as
//! `/dev/shm/shmq.<name>` on Linux). Anything else is [`Error::InvalidName`].
//!
//! # Who removes a name
//! A name belongs to the object that holds it. A [`Segment`](super::Segment) made by
//! [`Segment::create`](super::Segment::create) records, in process memory, the creating
//! process's pid and the device and inode of the object it created. Its drop unlinks the
//! name only in that process (not in a `fork`ed child that drops its copy) and only if the
//! name still refers to that object (not after someone removed it and created another queue
//! under the same name). Every other removal that follows an examination (`replace_stale`,
//! [`crate::remove_stale`], [`crate::QueueInfo::remove_if_unchanged`]) applies the same
//! device-and-inode check ([`unlink_if_same`]). Linux has no unlink-by-descriptor, so a
//! window remains between the `lstat` of the name and the `unlink`: a process that removes
//! the name and creates a new object under it in exactly that window loses its new name.
//! Only a process allowed to write `/dev/shm` (or the file's directory) can do that, and it
//! could as well unlink the name directly.

use std::fs::Metadata;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Longest queue name accepted, in bytes.
pub(crate) const MAX_NAME_LEN: usize = 200;
/// Prefix of shmq objects in the shared-memory namespace.
pub const PREFIX: &str = "shmq.";
/// Where Linux keeps the shared-memory namespace (where glibc's `shm_open` puts objects).
pub(crate) const SHM_DIR: &str = "/dev/shm";

/// Where a segment lives.
#[derive(Clone, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub enum Location {
    /// A named POSIX shared-memory object `/shmq.<name>`.
    Name(String),
    /// A file at this path (a persistent queue).
    Path(PathBuf),
}

impl Location {
    /// Human-readable name: the queue name, or the path.
    pub fn display_name(&self) -> String {
        match self {
            Location::Name(n) => n.clone(),
            Location::Path(p) => p.display().to_string(),
        }
    }

    /// The object's path in the file system: `/dev/shm/shmq.<name>` for a named queue
    /// (where glibc's `shm_open` puts it), the path itself for a file-backed one.
    pub fn object_path(&self) -> PathBuf {
        match self {
            Location::Name(n) => shm_path(n),
            Location::Path(p) => p.clone(),
        }
    }
}

/// Check a queue name against the naming rules (see the module docs).
///
/// ```
/// assert!(shmq::internal::validate_name("jobs-1.v2").is_ok());
/// assert!(shmq::internal::validate_name("a/b").is_err());
/// assert!(shmq::internal::validate_name("").is_err());
/// ```
pub fn validate_name(name: &str) -> Result<()> {
    let bad = |reason| {
        Err(Error::InvalidName {
            name: name.to_string(),
            reason,
        })
    };
    if name.is_empty() {
        return bad("empty");
    }
    if name.len() > MAX_NAME_LEN {
        return bad("longer than 200 bytes");
    }
    if name.starts_with('.') {
        return bad("starts with '.'");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
    {
        return bad("only ASCII letters, digits, '_', '-' and '.' are allowed");
    }
    Ok(())
}

/// Path of a named queue's object in `/dev/shm` (Linux).
pub fn shm_path(name: &str) -> PathBuf {
    Path::new(SHM_DIR).join(format!("{PREFIX}{name}"))
}

/// Which file-system object a name referred to when it was examined: its device and inode.
/// Two names with the same `ObjectId` are the same object; a name removed and created
/// again gets a different one (the old object is alive while anyone has it open or mapped,
/// so its inode number cannot be reused meanwhile).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ObjectId {
    /// `st_dev`.
    pub dev: u64,
    /// `st_ino`.
    pub ino: u64,
}

impl ObjectId {
    /// The object `meta` describes.
    pub(crate) fn of(meta: &Metadata) -> ObjectId {
        ObjectId {
            dev: meta.dev(),
            ino: meta.ino(),
        }
    }
}

/// How errors name a location: the queue name, or the path, always with a `/` in it so
/// that [`Error::NotFound`] and [`Error::AlreadyExists`] say "at `<path>`" rather than
/// "named `<name>`" (a queue name never contains `/`).
pub(super) fn error_place(loc: &Location) -> String {
    match loc {
        Location::Name(n) => n.clone(),
        Location::Path(p) => {
            let s = p.display().to_string();
            if s.contains('/') {
                s
            } else {
                format!("./{s}")
            }
        }
    }
}

pub(super) fn not_found(loc: &Location) -> Error {
    Error::NotFound(error_place(loc))
}

/// Unlink `loc`'s name if it still refers to `object` (same device and inode, by `lstat`
/// of the name). `Ok(true)`: removed; `Ok(false)`: the name now refers to another object,
/// which is left alone; [`Error::NotFound`]: there is no such name any more.
///
/// A window remains between the `lstat` and the `unlink` (Linux cannot unlink by
/// descriptor): if another process removes the name and creates a new object under it in
/// exactly that window, the new object's name is removed. See the
/// [module docs](self#who-removes-a-name).
pub(crate) fn unlink_if_same(loc: &Location, object: ObjectId) -> Result<bool> {
    let path = loc.object_path();
    let now = match std::fs::symlink_metadata(&path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(not_found(loc)),
        Err(e) => return Err(Error::io_at("stat", &path, e)),
    };
    if ObjectId::of(&now) != object {
        return Ok(false);
    }
    // The stat-then-unlink window described above is here.
    unlink(loc).map(|()| true)
}

/// Unlink `loc`'s name, whatever it refers to.
fn unlink(loc: &Location) -> Result<()> {
    let path = loc.object_path();
    std::fs::remove_file(&path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            not_found(loc)
        } else if e.kind() == std::io::ErrorKind::IsADirectory
            || std::fs::symlink_metadata(&path).is_ok_and(|m| m.is_dir())
        {
            // A directory is never a queue, and removing one (and what is in it) is not
            // this call's business.
            Error::Incompatible {
                name: error_place(loc),
                reason: format!(
                    "{} is a directory, not a queue; it is not removed (use rmdir or rm -r)",
                    path.display()
                ),
            }
        } else {
            Error::io_at("remove", &path, e)
        }
    })
}

/// Remove the named queue's shared-memory object, whatever it is (an explicit request: a
/// foreign object under a shmq name is removed too; nothing is opened, so this never
/// blocks). Processes that have it open keep working; new `open`s fail with
/// [`Error::NotFound`].
pub(crate) fn remove(name: &str) -> Result<()> {
    validate_name(name)?;
    unlink(&Location::Name(name.to_string()))
}

/// Names of every shmq segment in `/dev/shm` (whatever their state).
pub(crate) fn list_names() -> Result<Vec<String>> {
    let mut names = Vec::new();
    let dir = Path::new(SHM_DIR);
    let err = |e| Error::io_at("read directory", dir, e);
    for entry in std::fs::read_dir(dir).map_err(err)? {
        let entry = entry.map_err(err)?;
        if let Some(n) = entry.file_name().to_str() {
            if let Some(rest) = n.strip_prefix(PREFIX) {
                if validate_name(rest).is_ok() {
                    names.push(rest.to_string());
                }
            }
        }
    }
    names.sort();
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn name_rules() {
        assert!(validate_name("ok_name-1.2").is_ok());
        for bad in ["", ".hidden", "a/b", "sp ace", "é", &"x".repeat(201)] {
            assert!(
                matches!(validate_name(bad), Err(Error::InvalidName { .. })),
                "{bad:?}"
            );
        }
        assert!(validate_name(&"x".repeat(200)).is_ok());
    }

    #[test]
    fn unlink_if_same_leaves_another_object_alone() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x");
        let loc = Location::Path(p.clone());
        std::fs::write(&p, b"a").unwrap();
        let a = ObjectId::of(&std::fs::metadata(&p).unwrap());
        let _keep_a_alive = std::fs::File::open(&p).unwrap(); // so that b cannot reuse a's inode
        std::fs::remove_file(&p).unwrap();
        std::fs::write(&p, b"b").unwrap();
        assert!(!unlink_if_same(&loc, a).unwrap());
        assert!(p.exists());
        let b = ObjectId::of(&std::fs::metadata(&p).unwrap());
        assert!(unlink_if_same(&loc, b).unwrap());
        assert!(!p.exists());
        assert!(matches!(unlink_if_same(&loc, b), Err(Error::NotFound(_))));
    }
}
