//! The names this process created and will remove when its handle drops: the registry
//! behind [`remove_own_queues`](crate::remove_own_queues).
//!
//! A name is entered when [`Segment::create`](super::Segment::create) makes it (with the
//! object it refers to and the creating pid) and leaves when the creating handle drops or
//! is told to keep its name. [`owned_names`] lists the entries of the calling process:
//! after a `fork` without `exec` the child inherits the parent's entries, and their pid
//! (the parent's) keeps them out of the child's list.
//!
//! Why a registry and not a scan of `/dev/shm` for headers that name this pid: a pid is not
//! an identity across PID namespaces. Two containers' PID-1 processes, both started at
//! boot tick 0 of their namespace, look the same in a header, and a scan made one of them
//! remove the other's live queue. The registry only knows objects this process made; the
//! removal still checks that the name refers to that object ([`unlink_if_same`]).

use std::collections::HashMap;
use std::sync::Mutex;

use super::name::{unlink_if_same, Location, ObjectId};

/// Object → (name, creating pid).
static OWNED: Mutex<Option<HashMap<ObjectId, (String, u32)>>> = Mutex::new(None);

fn with<R>(f: impl FnOnce(&mut HashMap<ObjectId, (String, u32)>) -> R) -> R {
    // A panic while the lock was held cannot leave the map half-updated (each use is one
    // insert, remove or scan), so a poisoned lock is still usable.
    let mut g = OWNED.lock().unwrap_or_else(|p| p.into_inner());
    f(g.get_or_insert_with(HashMap::new))
}

/// `name` (a named segment just created by this process as `object`) will be removed by
/// its handle: enter it.
pub(crate) fn enter(name: &str, object: ObjectId) {
    let pid = std::process::id();
    with(|m| m.insert(object, (name.to_string(), pid)));
}

/// The handle of `object` dropped, or keeps its name: forget it.
pub(crate) fn leave(object: ObjectId) {
    with(|m| m.remove(&object));
}

/// The names the calling process created and has not yet removed or marked to be kept.
pub(crate) fn owned_names() -> Vec<(String, ObjectId)> {
    let me = std::process::id();
    with(|m| {
        m.iter()
            .filter(|(_, (_, pid))| *pid == me)
            .map(|(o, (n, _))| (n.clone(), *o))
            .collect()
    })
}

/// Remove `name` if it still refers to `object`: `Ok(true)` when removed, `Ok(false)` when
/// the name refers to another object by now or is gone.
pub(crate) fn remove_owned(name: &str, object: ObjectId) -> crate::Result<bool> {
    match unlink_if_same(&Location::Name(name.to_string()), object) {
        Ok(removed) => {
            if removed {
                leave(object);
            }
            Ok(removed)
        }
        Err(crate::Error::NotFound(_)) => {
            leave(object);
            Ok(false)
        }
        Err(e) => Err(e),
    }
}
