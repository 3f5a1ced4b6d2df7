//! File calls that `std::fs` does not make: opening without blocking or following a link,
//! clearing `O_NONBLOCK`, reserving a file's blocks, `fstat` of a borrowed descriptor, and
//! re-opening a descriptor's file as a new open file description through `/proc/self/fd`.

use std::fs::File;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use rustix::fs::{FallocateFlags, Mode, OFlags};

/// Open options for a path in a directory other users may write. `O_NONBLOCK`: a FIFO
/// swapped in after an `lstat` does not block the open, nor does a file lease held by
/// another process. `O_NOFOLLOW`: a symlink swapped in is `ELOOP`. `O_NOCTTY`: a terminal
/// swapped in does not become our controlling terminal. (std adds `O_CLOEXEC`.) Clear
/// `O_NONBLOCK` afterwards with [`clear_nonblock`].
fn untrusted() -> std::fs::OpenOptions {
    let mut o = std::fs::OpenOptions::new();
    o.custom_flags((OFlags::NONBLOCK | OFlags::NOFOLLOW | OFlags::NOCTTY).bits() as i32);
    o
}

/// Open the existing file at `path` read-only or (`write`) read-write, with the flags of
/// [`untrusted`].
pub(crate) fn open_untrusted(path: &Path, write: bool) -> std::io::Result<File> {
    untrusted().read(true).write(write).open(path)
}

/// Create a new file at `path` read-write with permission bits `mode` (narrowed by the
/// umask), `O_CREAT | O_EXCL` (which never follows a link and fails on any existing
/// object, whatever its type), with the flags of [`untrusted`].
pub(crate) fn create_untrusted(path: &Path, mode: u32) -> std::io::Result<File> {
    untrusted()
        .read(true)
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
}

/// Clear `O_NONBLOCK` on `file` (it makes no difference to a regular file, but the
/// descriptor is handed to code that may assume blocking mode).
pub(crate) fn clear_nonblock(file: &File) -> std::io::Result<()> {
    let fl = rustix::fs::fcntl_getfl(file)?;
    if fl.contains(OFlags::NONBLOCK) {
        rustix::fs::fcntl_setfl(file, fl - OFlags::NONBLOCK)?;
    }
    Ok(())
}

/// Reserve the blocks of `file`'s first `len` bytes (`fallocate(2)`, mode 0), so that a
/// full file system fails here rather than with `SIGBUS` on a later write to the mapping.
/// A file system that cannot reserve (`EOPNOTSUPP`, `EINVAL`) is not an error: the file
/// stays sparse there, as it was before this call.
pub(crate) fn reserve(file: &File, len: u64) -> std::io::Result<()> {
    match rustix::fs::fallocate(file, FallocateFlags::empty(), 0, len) {
        Ok(()) => Ok(()),
        Err(e) if e == rustix::io::Errno::OPNOTSUPP || e == rustix::io::Errno::INVAL => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Device and inode of the file `fd` refers to (`fstat`).
pub(crate) fn dev_ino(fd: BorrowedFd<'_>) -> std::io::Result<(u64, u64)> {
    let st = rustix::fs::fstat(fd)?;
    Ok((st.st_dev, st.st_ino))
}

/// `open("/proc/self/fd/<fd>", O_RDWR | O_CLOEXEC)`: the very file `fd` refers to (even
/// after its name was removed), as a new open file description. Allocates nothing and
/// makes only the `open` system call, so a `fork` child handler may call it.
pub(crate) fn reopen(fd: BorrowedFd<'_>) -> std::io::Result<OwnedFd> {
    use std::os::fd::AsRawFd;
    let mut buf = [0u8; 32];
    let prefix = b"/proc/self/fd/";
    buf[..prefix.len()].copy_from_slice(prefix);
    let mut digits = [0u8; 11];
    let (mut n, mut v) = (0, fd.as_raw_fd() as u32);
    loop {
        digits[n] = b'0' + (v % 10) as u8;
        n += 1;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    for k in 0..n {
        buf[prefix.len() + k] = digits[n - 1 - k];
    }
    // buf[prefix.len() + n] is 0: the terminator.
    let path = std::ffi::CStr::from_bytes_until_nul(&buf).map_err(std::io::Error::other)?;
    Ok(rustix::fs::open(
        path,
        OFlags::RDWR | OFlags::CLOEXEC,
        Mode::empty(),
    )?)
}

/// [`reopen`] as a [`File`].
pub(crate) fn reopen_file(file: &impl AsFd) -> std::io::Result<File> {
    reopen(file.as_fd()).map(File::from)
}

/// Close the descriptor `fd`. Makes only the `close` system call (a `fork` child handler
/// may call it).
///
/// # Safety
/// The caller owns `fd` (no `File` or `OwnedFd` will close it too) and uses it no more.
pub(crate) unsafe fn close(fd: RawFd) {
    // SAFETY: the caller passes a descriptor it owns and gives up (see # Safety).
    unsafe { rustix::io::close(fd) }
}
