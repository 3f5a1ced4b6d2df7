//! Queues on the machine: [`list`], [`inspect`], [`remove`] and [`remove_stale`], with
//! what they report ([`QueueInfo`], [`QueueState`]).

use std::time::Duration;

use crate::error::{Error, Result};
use crate::ring::{Ring, Stats};
use crate::segment::{self, Location, Segment};

/// Remove the named queue's segment. Processes attached to it keep working; new `open`s
/// fail with [`Error::NotFound`].
///
/// ```
/// # let name = format!("doc-rm-{}", std::process::id());
/// let q = shmq::RawQueue::create_with(name.as_str(), &shmq::Options::new().keep_on_drop(true))?;
/// drop(q);
/// shmq::remove(&name)?;
/// assert!(matches!(shmq::remove(&name), Err(shmq::Error::NotFound(_))));
/// # Ok::<(), shmq::Error>(())
/// ```
pub fn remove(name: &str) -> Result<()> {
    segment::remove(name)
}

/// What [`list`] and [`inspect`] found in one `/dev/shm/shmq.*` object.
#[derive(Clone, Debug)]
pub enum QueueState {
    /// A readable shmq queue, with its state and counters.
    Ready(Box<Stats>),
    /// The header was never published: its creator is still initialising it, or died
    /// doing so.
    Uninit {
        /// Creator pid recorded in the header, if it got that far.
        creator: Option<u32>,
        /// Whether that creator is still running, as seen from this PID namespace
        /// (informational: staleness does not depend on it).
        creator_alive: bool,
    },
    /// Not readable as a queue: another user's, a foreign object, another layout version…
    Unreadable(String),
}

/// One shmq segment found by [`list`] or [`inspect`].
#[derive(Clone, Debug)]
pub struct QueueInfo {
    /// Queue name.
    pub name: String,
    /// Size of the object in bytes.
    pub size: u64,
    /// Time since the object was last modified.
    pub age: Duration,
    /// Pids that have it mapped now, from `/proc/*/maps` (informational: processes of
    /// other users may be invisible, and those of other PID namespaces always are; see
    /// [`QueueInfo::mapped`] for what staleness is decided on).
    pub attached: Vec<u32>,
    /// Some process (in any PID namespace; this one's other handles included) maps the
    /// object: its attach marker is held (see `MAPPED_BYTE` in docs/design.md). `false` when the
    /// object could not be opened to ask.
    pub mapped: bool,
    /// Header state.
    pub state: QueueState,
    /// The object examined (device and inode), if it could be opened.
    object: Option<segment::ObjectId>,
    /// The segment's one staleness predicate, asked of the object examined
    /// ([`Segment::is_stale`], or [`segment::Peek::is_abandoned`] for a header never
    /// published); `false` for anything unreadable.
    stale: bool,
}

impl QueueInfo {
    /// The queue's state and counters, if its header is readable.
    pub fn stats(&self) -> Option<&Stats> {
        match &self.state {
            QueueState::Ready(s) => Some(s),
            _ => None,
        }
    }

    /// The creator pid recorded in the header, if any.
    pub fn creator(&self) -> Option<u32> {
        match &self.state {
            QueueState::Ready(s) => Some(s.creator_pid),
            QueueState::Uninit { creator, .. } => *creator,
            QueueState::Unreadable(_) => None,
        }
    }

    /// Stale: no process maps it (its attach marker is free: [`QueueInfo::mapped`], right
    /// across PID namespaces), and either it was not created to outlive its creator (see
    /// [`Options::keep_on_drop`](crate::Options::keep_on_drop)), or it was abandoned while
    /// being created (its creator wrote the header and is gone, or it is older than a
    /// creator can take to size it). No pid is consulted. Unreadable objects are never
    /// stale. This is the same judgement that
    /// [`Options::replace_stale`](crate::Options::replace_stale) and [`remove_stale`] act
    /// on, made when [`list`] or [`inspect`] examined the object.
    pub fn is_stale(&self) -> bool {
        self.stale
    }

    /// Remove the name if it still refers to the object this info describes (same device
    /// and inode as when [`list`] or [`inspect`] examined it): `Ok(true)` if removed,
    /// `Ok(false)` if the name now holds another object (left alone, e.g. a queue created
    /// after the scan) or the object could not be opened when examined,
    /// [`Error::NotFound`] if the name is gone. This is what [`remove_stale`] does for each
    /// stale queue; the caller judges staleness (and, as `remove_stale` does, checks again
    /// that no process maps the object if time has passed). A small window remains between the check and the unlink (see
    /// `unlink_if_same`).
    pub fn remove_if_unchanged(&self) -> Result<bool> {
        match self.object {
            Some(object) => segment::unlink_if_same(&Location::Name(self.name.clone()), object),
            None => Ok(false),
        }
    }

    /// Why the header could not be read, in words (`None` for a readable queue).
    pub fn problem(&self) -> Option<String> {
        match &self.state {
            QueueState::Ready(_) => None,
            QueueState::Uninit {
                creator: Some(pid), ..
            } if self.mapped => Some(format!("being created by pid {pid} (not initialised yet)")),
            QueueState::Uninit {
                creator: Some(pid), ..
            } => Some(format!(
                "never initialised: creator pid {pid} died while creating it"
            )),
            QueueState::Uninit { creator: None, .. } => Some(format!(
                "never initialised, no creator recorded ({} s old{})",
                self.age.as_secs(),
                if self.age > segment::UNINIT_GRACE {
                    String::new()
                } else {
                    format!(
                        "; stale once older than {} s",
                        segment::UNINIT_GRACE.as_secs()
                    )
                }
            )),
            QueueState::Unreadable(e) => Some(e.clone()),
        }
    }
}

fn inspect_with(name: &str, attached: Vec<u32>) -> Result<QueueInfo> {
    let mut mapped = false;
    // Staleness is the segment's predicate, asked of the object examined; every branch
    // that does not ask it leaves the object not stale.
    let mut stale = false;
    let (state, size, age, object) = match segment::peek(name) {
        Err(Error::NotFound(n)) => return Err(Error::NotFound(n)),
        // Not a regular file (a FIFO, a directory, a symlink...): not a queue at all.
        Err(e @ Error::Incompatible { .. }) => return Err(e),
        Err(Error::Io(e)) if e.kind() == std::io::ErrorKind::PermissionDenied => (
            QueueState::Unreadable(format!(
                "permission denied (another user's queue? run as its owner or root): {e}"
            )),
            0,
            Duration::ZERO,
            None,
        ),
        Err(e) => (
            QueueState::Unreadable(e.to_string()),
            0,
            Duration::ZERO,
            None,
        ),
        Ok(p) if p.foreign => (
            // (`mapped` stays false: a foreign object is never stale anyway.)
            QueueState::Unreadable("not a shmq segment (bad magic)".into()),
            p.size,
            p.age,
            Some(p.object),
        ),
        Ok(p) if !p.initialised => {
            mapped = p.attached;
            stale = p.is_abandoned();
            (
                QueueState::Uninit {
                    creator: p.creator_pid,
                    creator_alive: p.creator_pid.is_some_and(crate::sync::tid_alive),
                },
                p.size,
                p.age,
                Some(p.object),
            )
        }
        // Initialised: opening does not wait.
        Ok(p) => match Segment::open(Location::Name(name.to_string())) {
            // The state describes the object opened (the name may have moved on since the
            // peek), so that is the object a later removal may remove.
            Ok(seg) => {
                let object = seg.object_id();
                // Asked before the ring takes the mapped descriptor. The marker is asked
                // once more for `mapped` only when the object is not stale, so that a stale
                // object is never reported as mapped.
                stale = seg.is_stale();
                mapped = !stale && seg.attached_by_others();
                match Ring::new(seg) {
                    Ok(ring) => (
                        QueueState::Ready(Box::new(ring.stats())),
                        p.size,
                        p.age,
                        Some(object),
                    ),
                    Err(e) => (
                        QueueState::Unreadable(e.to_string()),
                        p.size,
                        p.age,
                        Some(object),
                    ),
                }
            }
            Err(Error::NotFound(n)) => return Err(Error::NotFound(n)),
            Err(e) => {
                mapped = p.attached;
                (
                    QueueState::Unreadable(e.to_string()),
                    p.size,
                    p.age,
                    Some(p.object),
                )
            }
        },
    };
    Ok(QueueInfo {
        name: name.to_string(),
        size,
        age,
        attached,
        mapped,
        state,
        object,
        stale,
    })
}

/// Look at one named queue without waiting for a creator still at work on it
/// ([`Error::NotFound`] if there is none). Never blocks on a foreign object: a FIFO,
/// socket, directory or symlink under the name is [`Error::Incompatible`] ("not a regular
/// file (a FIFO)"); a regular file that is not a shmq segment is
/// [`QueueState::Unreadable`].
///
/// ```
/// # let name = format!("doc-inspect-{}", std::process::id());
/// let q = shmq::RawQueue::create(&name, 4096)?;
/// q.put(b"x")?;
/// let info = shmq::inspect(&name)?;
/// assert_eq!(info.stats().unwrap().len, 1);
/// assert!(info.mapped);
/// assert!(info.attached.contains(&std::process::id()));
/// assert!(!info.is_stale());
/// # Ok::<(), shmq::Error>(())
/// ```
pub fn inspect(name: &str) -> Result<QueueInfo> {
    segment::validate_name(name)?;
    inspect_with(name, segment::mapped_by(name))
}

/// Every shmq segment in `/dev/shm`, sorted by name. Fast even on a machine littered with
/// crashed programs' segments: headers are peeked with `pread` (no waiting for creators)
/// and the process maps are read once. Never blocks on a foreign object: a FIFO, socket,
/// directory or symlink under a `shmq.` name is listed as
/// [`QueueState::Unreadable`] ("not a regular file (a FIFO)") and is never stale.
///
/// ```
/// # let name = format!("doc-ls-{}", std::process::id());
/// let _q = shmq::RawQueue::create(&name, 4096)?;
/// assert!(shmq::list()?.iter().any(|i| i.name == name));
/// # Ok::<(), shmq::Error>(())
/// ```
pub fn list() -> Result<Vec<QueueInfo>> {
    let mut attached = segment::mapped_all();
    let mut out = Vec::new();
    for name in segment::list_names()? {
        let pids = attached.remove(&name).unwrap_or_default();
        match inspect_with(&name, pids.clone()) {
            Ok(info) => out.push(info),
            Err(Error::NotFound(_)) => {} // removed meanwhile
            Err(e @ Error::Incompatible { .. }) => out.push(QueueInfo {
                size: std::fs::symlink_metadata(segment::shm_path(&name))
                    .map(|m| m.len())
                    .unwrap_or(0),
                name,
                age: Duration::ZERO,
                attached: pids,
                mapped: false,
                state: QueueState::Unreadable(e.to_string()),
                object: None,
                stale: false,
            }),
            Err(e) => return Err(e),
        }
    }
    Ok(out)
}

/// Remove every stale segment ([`QueueInfo::is_stale`]); returns the names removed. A name
/// is removed only if it still refers to the object found stale
/// ([`QueueInfo::remove_if_unchanged`]); foreign objects are never stale, so never removed.
///
/// ```
/// let removed = shmq::remove_stale()?;
/// println!("removed {} stale queues", removed.len());
/// # Ok::<(), shmq::Error>(())
/// ```
pub fn remove_stale() -> Result<Vec<String>> {
    let mut removed = Vec::new();
    for info in list()? {
        // Re-check the attach marker right before removing: a process may have attached
        // since (the object examined, or one created since under the name, which
        // `remove_if_unchanged` leaves alone anyway).
        if info.is_stale() && !segment::is_attached(&info.name) {
            match info.remove_if_unchanged() {
                Ok(true) => removed.push(info.name),
                Ok(false) | Err(Error::NotFound(_)) => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::Ordering;

    use super::*;
    use crate::segment::FLAG_PERSISTENT;
    use crate::{Options, RawQueue};

    fn uniq(tag: &str) -> String {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        format!(
            "unit-admin-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        )
    }

    /// Issue 10: `create(replace_stale)` once replaced a queue that a live process still
    /// used. A queue that some handle maps is not stale, whether its creator lives or not:
    /// `replace_stale` leaves it (and its messages) alone and `inspect` agrees; once the last
    /// handle is gone, both call it stale.
    #[test]
    fn replace_stale_never_replaces_a_queue_in_use() {
        let n = uniq("inuse");
        // What a crashed creator leaves: the name stays, the queue is not persistent. (The
        // creator keeps the name on drop; its persistent flag is then cleared.)
        let creator =
            RawQueue::create_with(n.as_str(), &Options::new().keep_on_drop(true)).unwrap();
        let user = RawQueue::open(&n).unwrap();
        drop(creator);
        let flags = &user.ring().header().shared.flags;
        flags.fetch_and(!FLAG_PERSISTENT, Ordering::Relaxed);
        user.put(b"still here").unwrap();

        let info = inspect(&n).unwrap();
        assert!(info.mapped, "{info:?}");
        assert!(!info.is_stale(), "{info:?}");
        let again = RawQueue::create_with(n.as_str(), &Options::new().replace_stale(true));
        assert!(
            matches!(again, Err(Error::AlreadyExists { stale: false, .. })),
            "{again:?}"
        );
        // The name still holds the user's queue, message and all.
        user.put(b"and more").unwrap();
        assert_eq!(inspect(&n).unwrap().stats().unwrap().len, 2);

        drop(user);
        let info = inspect(&n).unwrap();
        assert!(!info.mapped, "{info:?}");
        assert!(info.is_stale(), "{info:?}");
        let fresh = RawQueue::create_with(n.as_str(), &Options::new().replace_stale(true));
        let fresh = fresh.unwrap();
        assert_eq!(fresh.len(), 0);
        assert!(!inspect(&n).unwrap().is_stale());
    }

    /// A persistent queue nobody maps is not stale (its creator's death does not make it
    /// so), for `inspect` and for `replace_stale` alike.
    #[test]
    fn persistent_queue_is_never_stale() {
        let n = uniq("persist");
        let q = RawQueue::create_with(n.as_str(), &Options::new().keep_on_drop(true)).unwrap();
        drop(q);
        let info = inspect(&n).unwrap();
        assert!(!info.mapped && !info.is_stale(), "{info:?}");
        let again = RawQueue::create_with(n.as_str(), &Options::new().replace_stale(true));
        assert!(
            matches!(again, Err(Error::AlreadyExists { stale: false, .. })),
            "{again:?}"
        );
        remove(&n).unwrap();
    }
}
