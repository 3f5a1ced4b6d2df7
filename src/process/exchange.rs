//! The file a child process reads its call from and writes its outcome to: an anonymous
//! `memfd` that the parent creates, fills with the [`Boot`] record and hands to the child
//! (by descriptor number, like a pipe end).
//!
//! Layout: `state: u32` at 0, `len: u64` at 8, `len` bytes of data at 16. The parent writes
//! [`CALL`] and the postcard [`Boot`]; the child reads it, writes [`RUNNING`] before it
//! calls the function, and at the end writes the postcard [`Outcome`], then its length,
//! then [`DONE`]. Nothing ever blocks: the child writes a result of any size and exits (a
//! pipe would keep it alive until the parent read it), and the parent reads the file once
//! it knows the child has exited. A child killed on the way leaves `RUNNING` (the function
//! started and did not finish) or `CALL` (it never started).
//!
//! The two header words are a fixed layout, not serde, on purpose: they are rewritten in
//! place one at a time (the state word last), so that a child killed between two writes
//! leaves a state the parent can still read. Only the data is postcard ([`wire`]).

use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::FileExt;

use rustix::fs::MemfdFlags;

use super::error::os_error;
use super::wire::{self, Boot, Outcome};
use crate::error::Result;

/// The states of the file.
const CALL: u32 = 0;
const RUNNING: u32 = 1;
const DONE: u32 = 2;
/// Offsets of the state word (`u32`), of the data's length (`u64`) and of the data.
const STATE: u64 = 0;
const LEN: u64 = 8;
const DATA: u64 = 16;

/// Move `fd` to a number of at least 3 (close-on-exec), so that it can never take the
/// place of a standard stream that this process has closed: a child would then read or
/// write it as stdin/stdout/stderr.
pub(super) fn above_stdio(fd: OwnedFd) -> Result<OwnedFd> {
    if fd.as_raw_fd() > 2 {
        return Ok(fd);
    }
    // `fd` is closed on drop.
    rustix::io::fcntl_dupfd_cloexec(&fd, 3).map_err(|e| os_error("fcntl(F_DUPFD_CLOEXEC)", e))
}

/// Whether descriptor `fd` of this process is open and is an exchange file (a memfd named
/// by [`create`]), asked of `/proc/self/fd` without touching the descriptor.
pub(super) fn is_call_file(fd: RawFd) -> bool {
    std::fs::read_link(format!("/proc/self/fd/{fd}")).is_ok_and(|p| {
        p.as_os_str()
            .as_encoded_bytes()
            .starts_with(MEMFD_LINK.as_bytes())
    })
}

/// How `/proc/self/fd/<n>` shows an exchange file (the kernel prefixes memfd names with
/// `memfd:`).
const MEMFD_LINK: &str = "/memfd:shmq-call";

/// A new exchange file holding `boot`.
pub(super) fn create(boot: &Boot) -> Result<File> {
    let call = wire::encode(boot, "the child's bootstrap record")?;
    let fd = rustix::fs::memfd_create(c"shmq-call", MemfdFlags::CLOEXEC)
        .map_err(|e| os_error("memfd_create", e))?;
    let file = File::from(above_stdio(fd)?);
    file.write_all_at(&CALL.to_le_bytes(), STATE)?;
    file.write_all_at(&(call.len() as u64).to_le_bytes(), LEN)?;
    file.write_all_at(&call, DATA)?;
    Ok(file)
}

fn read_u32(f: &File, at: u64) -> io::Result<u32> {
    let mut b = [0u8; 4];
    f.read_exact_at(&mut b, at)?;
    Ok(u32::from_le_bytes(b))
}

fn read_data(f: &File) -> io::Result<Vec<u8>> {
    let mut b = [0u8; 8];
    f.read_exact_at(&mut b, LEN)?;
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
pub(super) unsafe fn adopt(fd: RawFd) -> File {
    // SAFETY: per the contract.
    unsafe { File::from_raw_fd(fd) }
}

/// In the child: the boot record (checked: see [`Boot::decode`]).
pub(super) fn read_boot(f: &File) -> io::Result<std::result::Result<Boot, String>> {
    Ok(Boot::decode(&read_data(f)?))
}

/// In the child: the function is about to run.
pub(super) fn mark_running(f: &File) -> io::Result<()> {
    f.write_all_at(&RUNNING.to_le_bytes(), STATE)
}

/// In the child: the function's outcome (data, then its length, then the state word).
pub(super) fn write_outcome(f: &File, o: &Outcome) -> io::Result<()> {
    let buf = wire::encode(o, "the outcome").map_err(io::Error::other)?;
    f.set_len(DATA)?;
    f.write_all_at(&buf, DATA)?;
    f.write_all_at(&(buf.len() as u64).to_le_bytes(), LEN)?;
    f.write_all_at(&DONE.to_le_bytes(), STATE)
}

/// What the parent finds once the child has exited.
pub(super) enum Report {
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
pub(super) fn read_report(f: &File) -> Report {
    match read_u32(f, STATE) {
        Ok(CALL) => Report::NotStarted,
        Ok(RUNNING) => Report::Started,
        Ok(DONE) => match read_data(f) {
            Ok(b) => match postcard::from_bytes::<Outcome>(&b) {
                Ok(o) => Report::Done(o),
                Err(_) => Report::Bad("the child's result record is malformed".into()),
            },
            Err(e) => Report::Bad(format!("reading the child's result: {e}")),
        },
        Ok(s) => Report::Bad(format!("the child's result record has state {s}")),
        Err(e) => Report::Bad(format!("reading the child's result: {e}")),
    }
}
