//! The in bridge's memory of what it has put: the JetStream stream sequence of the last
//! message put into the local queue, in a small memory-mapped file (by default in /dev/shm,
//! beside the queue, so it lives exactly as long as the queue's own contents: a process
//! death keeps both, a reboot loses both).
//!
//! A message redelivered by JetStream (its ack was lost with a killed bridge or a dropped
//! connection) whose sequence is not above the recorded one is acknowledged and not put
//! again. The record is one 8-byte store right after the put returns; only a death between
//! the put and that store (a few instructions) can duplicate a message, and then one.

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use memmap2::MmapMut;

use crate::error::{Error, Result};

const MAGIC: u64 = 0x5348_4d51_4252_4931; // "SHMQBRI1"
const LEN: usize = 64;

/// Word offsets in the file.
const W_MAGIC: usize = 0;
const W_QUEUE: usize = 1;
const W_STREAM: usize = 2;
const W_LAST: usize = 3;

pub(crate) struct State {
    map: MmapMut,
    path: PathBuf,
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("State")
            .field("path", &self.path)
            .field("last", &self.last())
            .finish()
    }
}

/// The default place: `/dev/shm/shmq-bridge.<queue>.<durable>.in` (a queue path's `/`
/// become `_`).
pub(crate) fn default_path(queue: &str, durable: &str) -> PathBuf {
    let clean = |s: &str| s.replace(['/', '\\'], "_");
    PathBuf::from(format!(
        "/dev/shm/shmq-bridge.{}.{}.in",
        clean(queue),
        clean(durable)
    ))
}

impl State {
    /// Open or create the file at `path`. When it was written for another queue (`queue`
    /// uid) or another incarnation of the stream (`stream` id), it starts over at 0.
    pub(crate) fn open(path: &Path, queue: u64, stream: u64) -> Result<State> {
        let io =
            |e: std::io::Error| Error::Config(format!("bridge state file {}: {e}", path.display()));
        let f = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(io)?;
        if f.metadata().map_err(io)?.len() < LEN as u64 {
            f.set_len(LEN as u64).map_err(io)?;
        }
        // SAFETY: the file is this bridge's own (one in bridge per queue and durable, as
        // documented); every access below goes through atomics on the mapping, so a
        // concurrent writer could give a wrong number, never undefined behaviour.
        let map = unsafe { MmapMut::map_mut(&f) }.map_err(io)?;
        let s = State {
            map,
            path: path.to_path_buf(),
        };
        if s.word(W_MAGIC).load(Ordering::Acquire) != MAGIC
            || s.word(W_QUEUE).load(Ordering::Relaxed) != queue
            || s.word(W_STREAM).load(Ordering::Relaxed) != stream
        {
            s.word(W_MAGIC).store(0, Ordering::Release);
            s.word(W_QUEUE).store(queue, Ordering::Relaxed);
            s.word(W_STREAM).store(stream, Ordering::Relaxed);
            s.word(W_LAST).store(0, Ordering::Relaxed);
            s.word(W_MAGIC).store(MAGIC, Ordering::Release);
        }
        Ok(s)
    }

    fn word(&self, i: usize) -> &AtomicU64 {
        assert!(i < LEN / 8);
        // SAFETY: the mapping is LEN bytes, page aligned, and lives as long as `self`;
        // word `i` is in bounds (asserted) and 8-aligned. Shared memory is only touched
        // through this atomic.
        unsafe { &*(self.map.as_ptr().add(i * 8) as *const AtomicU64) }
    }

    /// Stream sequence of the last message put into the queue (0: none yet).
    pub(crate) fn last(&self) -> u64 {
        self.word(W_LAST).load(Ordering::Acquire)
    }

    /// Record that the message with stream sequence `seq` is in the queue.
    pub(crate) fn set_last(&self, seq: u64) {
        self.word(W_LAST).store(seq, Ordering::Release);
    }
}
