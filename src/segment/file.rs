//! Opening the object behind a name or path, which may be anything.
//!
//! # Opening a path in a shared directory
//! `/dev/shm` is writable by every local user, so a name may hold anything: a FIFO, a
//! socket, a directory, a symbolic link, a device node. Every open of an existing name or
//! path goes through one function (`open_existing`) that never blocks and never follows a
//! link: `lstat` first (anything but a regular file is refused without being opened), then
//! `open` with `O_NONBLOCK | O_NOFOLLOW | O_NOCTTY | O_CLOEXEC` (a FIFO swapped in after the
//! `lstat` cannot block the open), then `fstat` on the descriptor (the authoritative check),
//! then `O_NONBLOCK` is cleared. A non-regular object is [`Error::Incompatible`]
//! ("not a regular file (a FIFO)"). Named objects are opened as the files
//! `/dev/shm/shmq.<name>`, exactly where glibc's `shm_open` puts them, so that these flags
//! and checks apply to them too.

use std::fs::{File, FileType, Metadata};
use std::os::unix::fs::FileTypeExt;

use super::name::{not_found, unlink_if_same, Location, ObjectId};
use crate::error::{Error, Result};
use crate::sys;

/// What kind of object a file type is, in words ("a FIFO", "a directory", ...).
fn kind_of(ft: FileType) -> &'static str {
    if ft.is_file() {
        "a regular file"
    } else if ft.is_dir() {
        "a directory"
    } else if ft.is_symlink() {
        "a symbolic link"
    } else if ft.is_fifo() {
        "a FIFO"
    } else if ft.is_socket() {
        "a socket"
    } else if ft.is_char_device() {
        "a character device"
    } else if ft.is_block_device() {
        "a block device"
    } else {
        "an object of unknown type"
    }
}

fn not_regular(display: &str, ft: FileType) -> Error {
    Error::Incompatible {
        name: display.to_string(),
        reason: format!("not a regular file ({})", kind_of(ft)),
    }
}

/// Open the existing object at `loc` without ever blocking and without following a symbolic
/// link at the last path component; refuse anything but a regular file (see the [module
/// docs](self)). `write`: open read-write, else read-only. Returns the file and its
/// `fstat`.
pub(crate) fn open_existing(loc: &Location, write: bool) -> Result<(File, Metadata)> {
    let path = loc.object_path();
    let display = loc.display_name();
    // 1. Refuse a non-regular object without opening it at all (opening a device node
    //    may have side effects).
    match std::fs::symlink_metadata(&path) {
        Ok(m) if !m.file_type().is_file() => return Err(not_regular(&display, m.file_type())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(not_found(loc)),
        // Anything else (e.g. a directory we may not search): let `open` report it.
        _ => {}
    }
    // 2. Open without blocking and without following a link (O_NONBLOCK | O_NOFOLLOW |
    //    O_NOCTTY: see `sys::fs::open_untrusted` for what each one stops).
    let file = sys::fs::open_untrusted(&path, write).map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            return not_found(loc);
        }
        // ELOOP (symlink), ENXIO (socket), EISDIR, EWOULDBLOCK...: say what is there
        // if it is not a regular file.
        match std::fs::symlink_metadata(&path) {
            Ok(m) if !m.file_type().is_file() => not_regular(&display, m.file_type()),
            _ => Error::io_at("open", &path, e),
        }
    })?;
    // 3. The authoritative check, on what was actually opened.
    let meta = file
        .metadata()
        .map_err(|e| Error::io_at("fstat", &path, e))?;
    if !meta.file_type().is_file() {
        return Err(not_regular(&display, meta.file_type()));
    }
    // 4. Back to blocking mode (it makes no difference to a regular file, but the
    //    descriptor is handed to code that may assume it).
    sys::fs::clear_nonblock(&file).map_err(|e| Error::io_at("fcntl", &path, e))?;
    Ok((file, meta))
}

/// Create a new object at `loc` (`O_CREAT | O_EXCL`, which never follows a link and fails
/// on any existing object, whatever its type). `EEXIST` is returned as the raw io error
/// for the caller to judge; other errors name the path.
pub(super) fn create_new(
    loc: &Location,
    mode: u32,
) -> std::result::Result<(File, Metadata), CreateError> {
    let path = loc.object_path();
    let file = sys::fs::create_untrusted(&path, mode).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            CreateError::Exists
        } else {
            CreateError::Other(Error::io_at("create", &path, e))
        }
    })?;
    let fail = |e: Error| {
        // The object is ours (O_EXCL); remove it unless the name moved on already.
        if let Ok(m) = file.metadata() {
            let _ = unlink_if_same(loc, ObjectId::of(&m));
        }
        CreateError::Other(e)
    };
    let meta = file
        .metadata()
        .map_err(|e| fail(Error::io_at("fstat", &path, e)))?;
    if !meta.file_type().is_file() {
        // Cannot happen with O_CREAT | O_EXCL; checked anyway.
        return Err(fail(not_regular(&loc.display_name(), meta.file_type())));
    }
    sys::fs::clear_nonblock(&file).map_err(|e| fail(Error::io_at("fcntl", &path, e)))?;
    Ok((file, meta))
}

/// Why [`create_new`] failed: the name exists (for the caller to judge), or anything else.
pub(super) enum CreateError {
    Exists,
    Other(Error),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_existing_refuses_what_is_not_a_regular_file_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        rustix::fs::mkfifoat(
            rustix::fs::CWD,
            &fifo,
            rustix::fs::Mode::from_raw_mode(0o600),
        )
        .unwrap();
        let sub = dir.path().join("dir");
        std::fs::create_dir(&sub).unwrap();
        let file = dir.path().join("file");
        std::fs::write(&file, b"x").unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&file, &link).unwrap();
        for (p, kind) in [
            (&fifo, "a FIFO"),
            (&sub, "a directory"),
            (&link, "a symbolic link"),
        ] {
            for write in [false, true] {
                match open_existing(&Location::Path(p.clone()), write) {
                    Err(Error::Incompatible { reason, .. }) => {
                        assert_eq!(reason, format!("not a regular file ({kind})"))
                    }
                    other => panic!("{p:?}: {other:?}"),
                }
            }
        }
        assert!(open_existing(&Location::Path(file), true).is_ok());
        assert!(matches!(
            open_existing(&Location::Path(dir.path().join("none")), false),
            Err(Error::NotFound(s)) if s.ends_with("/none")
        ));
    }
}
