//! The file a child process reads its call from and writes its outcome to: an anonymous
//! `memfd` that the parent creates, fills with the bootstrap record and hands to the child
//! (by descriptor number, like a pipe end).
//!
//! Layout: `state: u32` at 0, `len: u64` at 8, `len` bytes of data at 16. The parent writes
//! [`CALL`] and the bootstrap; the child reads it, writes [`RUNNING`] before it calls the
//! function, and at the end writes the encoded [`Outcome`], then its length, then
//! [`DONE`]. Nothing ever blocks: the child writes a result of any size and exits (a pipe
//! would keep it alive until the parent read it), and the parent reads the file once it
//! knows the child has exited. A child killed on the way leaves `RUNNING` (the function
//! started and did not finish) or `CALL` (it never started).

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::FileExt;

use super::Outcome;
use crate::error::{Error, Result};

const CALL: u32 = 0;
const RUNNING: u32 = 1;
const DONE: u32 = 2;
const DATA: u64 = 16;

/// Move `fd` to a number of at least 3 (close-on-exec), so that it can never take the
/// place of a standard stream that this process has closed: a child would then read or
/// write it as stdin/stdout/stderr.
pub(crate) fn above_stdio(fd: OwnedFd) -> Result<OwnedFd> {
    if fd.as_raw_fd() > 2 {
        return Ok(fd);
    }
    // SAFETY: F_DUPFD_CLOEXEC on a descriptor we own creates a new one (or fails).
    let n = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 3) };
    if n < 0 {
        return Err(Error::last_os("fcntl(F_DUPFD_CLOEXEC)"));
    }
    // SAFETY: `n` was just created and nothing else owns it; `fd` is closed on drop.
    Ok(unsafe { OwnedFd::from_raw_fd(n) })
}

/// A new exchange file holding `call` (the bootstrap record).
pub(crate) fn create(call: &[u8]) -> Result<File> {
    // SAFETY: a valid NUL-terminated name; memfd_create only reads it.
    let fd = unsafe { libc::memfd_create(c"shmq-call".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(Error::last_os("memfd_create"));
    }
    // SAFETY: memfd_create returned a new descriptor that nothing else owns.
    let file = File::from(above_stdio(unsafe { OwnedFd::from_raw_fd(fd) })?);
    let mut head = [0u8; DATA as usize];
    head[0..4].copy_from_slice(&CALL.to_le_bytes());
    head[8..16].copy_from_slice(&(call.len() as u64).to_le_bytes());
    file.write_all_at(&head, 0)?;
    file.write_all_at(call, DATA)?;
    Ok(file)
}

fn read_u32(f: &File, at: u64) -> io::Result<u32> {
    let mut b = [0u8; 4];
    f.read_exact_at(&mut b, at)?;
    Ok(u32::from_le_bytes(b))
}

fn read_data(f: &File) -> io::Result<Vec<u8>> {
    let mut b = [0u8; 8];
    f.read_exact_at(&mut b, 8)?;
    let len = u64::from_le_bytes(b);
    let size = f.metadata()?.len();
    if len > size.saturating_sub(DATA) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("exchange file of {size} bytes says {len} bytes of data"),
        ));
    }
    let mut v = vec![0u8; len as usize];
    f.read_exact_at(&mut v, DATA)?;
    Ok(v)
}

/// In the child: the exchange file at descriptor `fd` (given by the parent).
///
/// # Safety
/// `fd` must be an open descriptor that nothing else in this process owns.
pub(crate) unsafe fn adopt(fd: RawFd) -> File {
    // SAFETY: per the contract.
    unsafe { File::from_raw_fd(fd) }
}

/// In the child: the call record.
pub(crate) fn read_call(f: &File) -> io::Result<Vec<u8>> {
    read_data(f)
}

/// In the child: the function is about to run.
pub(crate) fn mark_running(f: &File) -> io::Result<()> {
    f.write_all_at(&RUNNING.to_le_bytes(), 0)
}

/// In the child: the function's outcome (data, then its length, then the state word).
pub(crate) fn write_outcome(f: &File, o: &Outcome) -> io::Result<()> {
    let mut buf = Vec::new();
    o.encode(&mut buf);
    f.set_len(DATA)?;
    f.write_all_at(&buf, DATA)?;
    f.write_all_at(&(buf.len() as u64).to_le_bytes(), 8)?;
    f.write_all_at(&DONE.to_le_bytes(), 0)
}

/// What the parent finds once the child has exited.
pub(crate) enum Report {
    /// The child never got to the function (it died first, or it was not a shmq child).
    NotStarted,
    /// The function started and never returned (it exited, or the child was killed).
    Started,
    /// The function's outcome.
    Done(Outcome),
    /// The file makes no sense (the child wrote garbage).
    Bad(String),
}

/// In the parent: read the child's report.
pub(crate) fn read_report(f: &File) -> Report {
    match read_u32(f, 0) {
        Ok(CALL) => Report::NotStarted,
        Ok(RUNNING) => Report::Started,
        Ok(DONE) => match read_data(f) {
            Ok(b) => match Outcome::decode(&b) {
                Some(o) => Report::Done(o),
                None => Report::Bad("the child's result record is malformed".into()),
            },
            Err(e) => Report::Bad(format!("reading the child's result: {e}")),
        },
        Ok(s) => Report::Bad(format!("the child's result record has state {s}")),
        Err(e) => Report::Bad(format!("reading the child's result: {e}")),
    }
}
