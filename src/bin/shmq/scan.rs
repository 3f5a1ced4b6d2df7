//! Finding every shmq segment on the machine quickly, even when there are thousands of them
//! and some never finished initialising.
//!
//! `shmq::list()` opens each segment with `Segment::open`, which waits up to two seconds
//! for a creator that is still initialising, and `segment::mapped_by` reads every
//! `/proc/<pid>/maps` once per segment. Both are fine for one queue and too slow for a
//! machine littered with crashed tests' segments, so the CLI first peeks at the `init` word
//! with a plain `pread` (no mapping, so never a reference into shared memory) and reads the
//! process maps once for all segments.

use std::collections::HashMap;
use std::fs::File;
use std::mem::offset_of;
use std::os::unix::fs::FileExt;
use std::sync::atomic::AtomicU32;

use shmq::ring::Ring;
use shmq::segment::{self, Header, Identity, Location, Segment};
use shmq::Stats;

/// How old an object without any recorded creator must be before `rm --stale` removes it
/// (a creator may be between `shm_open` and writing its pid).
pub const UNINIT_GRACE_SECS: u64 = 60;

/// One `/dev/shm/shmq.*` object.
pub struct Entry {
    pub name: String,
    /// Size of the object in bytes.
    pub size: u64,
    /// Pids that have it mapped now.
    pub attached: Vec<u32>,
    pub state: State,
}

pub enum State {
    /// A readable shmq queue.
    Ready(Box<Stats>),
    /// The header was never completed: the creator is still initialising it, or died while
    /// doing so.
    Uninit {
        creator: Option<u32>,
        creator_alive: bool,
        age_secs: u64,
    },
    /// Not readable: another user's, a foreign object, another layout version...
    Error(String),
}

impl Entry {
    /// Stale: its creator is dead, it was not created to outlive it (persistent), and no
    /// process has it mapped. An object that never
    /// finished initialising and records no creator is stale once it is
    /// [`UNINIT_GRACE_SECS`] old. Unreadable objects are never stale (not ours to judge).
    pub fn is_stale(&self) -> bool {
        if !self.attached.is_empty() {
            return false;
        }
        match &self.state {
            State::Ready(s) => !s.creator_alive && !s.persistent,
            State::Uninit {
                creator,
                creator_alive,
                age_secs,
            } => match creator {
                Some(_) => !creator_alive,
                None => *age_secs >= UNINIT_GRACE_SECS,
            },
            State::Error(_) => false,
        }
    }

    pub fn stats(&self) -> Option<&Stats> {
        match &self.state {
            State::Ready(s) => Some(s),
            _ => None,
        }
    }

    pub fn creator(&self) -> Option<u32> {
        match &self.state {
            State::Ready(s) => Some(s.creator_pid),
            State::Uninit { creator, .. } => *creator,
            State::Error(_) => None,
        }
    }

    /// Why the header could not be read, in words, or `None` for a ready queue.
    pub fn problem(&self) -> Option<String> {
        match &self.state {
            State::Ready(_) => None,
            State::Uninit {
                creator: Some(pid),
                creator_alive: true,
                ..
            } => Some(format!("being created by pid {pid} (not initialised yet)")),
            State::Uninit {
                creator: Some(pid), ..
            } => Some(format!(
                "never initialised: creator pid {pid} died while creating it"
            )),
            State::Uninit { age_secs, .. } => Some(format!(
                "never initialised, no creator recorded ({} old{})",
                crate::util::age(*age_secs),
                if *age_secs < UNINIT_GRACE_SECS {
                    "; stale once 1m old"
                } else {
                    ""
                }
            )),
            State::Error(e) => Some(e.clone()),
        }
    }
}

/// Pids that map each shmq object, from one pass over `/proc/*/maps`.
pub fn attached_all() -> HashMap<String, Vec<u32>> {
    let mut out: HashMap<String, Vec<u32>> = HashMap::new();
    let prefix = format!("/dev/shm/{}", segment::PREFIX);
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(maps) = std::fs::read_to_string(format!("/proc/{pid}/maps")) else {
            continue;
        };
        let mut seen: Vec<&str> = Vec::new();
        for line in maps.lines() {
            if let Some(name) = line
                .split_whitespace()
                .nth(5)
                .and_then(|p| p.strip_prefix(prefix.as_str()))
            {
                if !seen.contains(&name) {
                    seen.push(name);
                    out.entry(name.to_string()).or_default().push(pid);
                }
            }
        }
    }
    out
}

/// Whether the header's `init` word says "complete", read with `pread` (no waiting), and
/// the creator pid if one was recorded.
fn peek(file: &File) -> std::io::Result<(bool, Option<u32>)> {
    let base = offset_of!(Header, id);
    let mut w4 = [0u8; 4];
    let read_u32 = |off: usize, buf: &mut [u8; 4]| -> std::io::Result<Option<u32>> {
        match file.read_at(buf, off as u64)? {
            4 => Ok(Some(u32::from_ne_bytes(*buf))),
            _ => Ok(None),
        }
    };
    let init = read_u32(base + offset_of!(Identity, init), &mut w4)?;
    let pid = read_u32(base + offset_of!(Identity, creator_pid), &mut w4)?.filter(|&p| p != 0);
    Ok((init == Some(segment::INIT_DONE), pid))
}

/// Inspect one named object.
pub fn inspect(name: &str, attached: Vec<u32>) -> Entry {
    let path = segment::shm_path(name);
    let meta = std::fs::metadata(&path).ok();
    let size = meta.as_ref().map_or(0, |m| m.len());
    let age_secs = meta
        .and_then(|m| m.modified().ok())
        .and_then(|t| t.elapsed().ok())
        .map_or(0, |d| d.as_secs());
    let state = match File::open(&path).and_then(|f| peek(&f)) {
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => State::Error(format!(
            "permission denied (another user's queue? run as its owner or root): {e}"
        )),
        Err(e) => State::Error(e.to_string()),
        Ok((false, creator)) => State::Uninit {
            creator,
            creator_alive: creator.is_some_and(|p| shmq::sync::process_alive(p, 0)),
            age_secs,
        },
        Ok((true, _)) => match Segment::open(Location::Name(name.to_string())) {
            Ok(seg) => State::Ready(Box::new(Ring::new(seg).stats())),
            Err(e) => State::Error(e.to_string()),
        },
    };
    Entry {
        name: name.to_string(),
        size,
        attached,
        state,
    }
}

/// Every shmq object in `/dev/shm`, sorted by name.
pub fn scan() -> shmq::Result<Vec<Entry>> {
    let names = segment::list_names()?;
    let mut attached = attached_all();
    Ok(names
        .into_iter()
        .filter(|n| segment::shm_path(n).exists())
        .map(|n| {
            let pids = attached.remove(&n).unwrap_or_default();
            inspect(&n, pids)
        })
        .collect())
}

// The peeked words are 32-bit atomics in the library's header; fail to build if that changes.
const _: for<'a> fn(&'a Identity) -> [&'a AtomicU32; 2] = |i| [&i.init, &i.creator_pid];
