//! Open-file-description locks on single bytes of a file (`fcntl(F_OFD_SETLK)` and
//! `fcntl(F_OFD_GETLK)`): the kernel's answer to "does anybody still hold this?", used by
//! the holders' liveness bytes (`crate::sync::Holder`) and the segment's attach marker
//! (`crate::segment::MAPPED_BYTE`).
//!
//! An OFD lock belongs to an open file description, not to a process: it is released when
//! the last descriptor of that description closes (however its process dies), and a
//! query through one description ignores that description's own locks.
//!
//! `libc`, not `rustix`: `rustix::fs::fcntl_lock` takes only whole-file, process-associated
//! `F_SETLK(W)` locks; it has no OFD commands, no byte ranges and no `F_GETLK`. This file is
//! the one `fcntl` call that needs them, with its one `unsafe` block.

use std::os::fd::{AsRawFd, BorrowedFd};

/// The kind of lock taken or asked about.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    /// `F_RDLCK`: shared with other read locks.
    Read,
    /// `F_WRLCK`: exclusive.
    Write,
}

impl Kind {
    fn l_type(self) -> libc::c_short {
        match self {
            Kind::Read => libc::F_RDLCK as libc::c_short,
            Kind::Write => libc::F_WRLCK as libc::c_short,
        }
    }
}

/// Take a `kind` lock on the byte at `offset` of `fd`'s open file description, without
/// waiting (`F_OFD_SETLK`). `Ok(true)`: taken (or already held by this description);
/// `Ok(false)`: another description holds a conflicting lock (`EAGAIN` / `EACCES`);
/// `Err`: the kernel refused (e.g. a file system without OFD locks).
pub(crate) fn try_lock(fd: BorrowedFd<'_>, kind: Kind, offset: i64) -> std::io::Result<bool> {
    match fcntl(fd, libc::F_OFD_SETLK, kind, offset) {
        Ok(_) => Ok(true),
        Err(e) if matches!(e.raw_os_error(), Some(libc::EAGAIN) | Some(libc::EACCES)) => Ok(false),
        Err(e) => Err(e),
    }
}

/// Whether an open file description other than `fd`'s holds a lock on the byte at
/// `offset` that conflicts with a `kind` lock (`F_OFD_GETLK`: only a write lock conflicts
/// with a read lock; any lock conflicts with a write lock). `fd` may be read-only.
pub(crate) fn conflicts(fd: BorrowedFd<'_>, kind: Kind, offset: i64) -> std::io::Result<bool> {
    let l_type = fcntl(fd, libc::F_OFD_GETLK, kind, offset)?;
    Ok(l_type != libc::F_UNLCK as libc::c_short)
}

/// The request `cmd` (`F_OFD_SETLK` or `F_OFD_GETLK`) of type `kind` on the one byte at
/// `offset`. Returns the `l_type` the kernel leaves in the request (for `F_OFD_GETLK`:
/// `F_UNLCK` if nothing conflicts).
fn fcntl(
    fd: BorrowedFd<'_>,
    cmd: libc::c_int,
    kind: Kind,
    offset: i64,
) -> std::io::Result<libc::c_short> {
    let mut fl = libc::flock {
        l_type: kind.l_type(),
        l_whence: libc::SEEK_SET as libc::c_short,
        l_start: offset,
        l_len: 1,
        // Must be 0 for the OFD commands.
        l_pid: 0,
    };
    // SAFETY: `fd` is an open descriptor (a borrowed one stays open for the call); `fl` is a
    // valid flock the kernel reads and, for F_OFD_GETLK, writes.
    let r = unsafe { libc::fcntl(fd.as_raw_fd(), cmd, &mut fl as *mut libc::flock) };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(fl.l_type)
}
