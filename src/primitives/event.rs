//! [`Event`]: Python's `multiprocessing.Event`.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use super::{by_name, Kind, Object, WORDS};
use crate::error::{Error, Result};
use crate::segment::Location;
use crate::sync::Deadline;
use crate::Options;

/// The flag word.
const FLAG: usize = WORDS;

/// A flag that processes can set, clear and wait for — Python's `multiprocessing.Event`,
/// in a named segment.
///
/// ```
/// # shmq::process::init();
/// use shmq::{process, Event};
/// use std::time::Duration;
/// # let name = format!("doc-event-{}", std::process::id());
/// let go = Event::create(&name)?;
/// let child = process::start(
///     |go: Event| go.wait_timeout(Duration::from_secs(60)),
///     go.clone(),
/// )?;
/// go.set();
/// assert!(child.join()?);
/// # Ok::<(), shmq::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct Event {
    obj: Arc<Object>,
}

impl Event {
    /// Create the event `name`, not set.
    pub fn create(name: &str) -> Result<Event> {
        Self::create_with(name, &Options::new())
    }

    /// Create with [`Options`], by name or at a path.
    pub fn create_with(loc: impl Into<Location>, opts: &Options) -> Result<Event> {
        Ok(Event {
            obj: Arc::new(Object::create(
                loc.into(),
                Kind::Event,
                0,
                (0, ""),
                opts,
                |_| {},
            )?),
        })
    }

    /// Attach to the event `name`.
    pub fn open(name: &str) -> Result<Event> {
        Self::open_at(name)
    }

    /// Attach by name or path.
    pub fn open_at(loc: impl Into<Location>) -> Result<Event> {
        Self::open_at_location(loc.into())
    }

    fn open_at_location(loc: Location) -> Result<Event> {
        Ok(Event {
            obj: Arc::new(Object::open(loc, Kind::Event, 0, (0, ""))?),
        })
    }

    /// Set the flag and wake every waiter, in every process.
    pub fn set(&self) {
        self.obj.u32_at(FLAG).store(1, Ordering::SeqCst);
        self.obj.notify(i32::MAX);
    }

    /// Clear the flag.
    pub fn clear(&self) {
        self.obj.u32_at(FLAG).store(0, Ordering::SeqCst);
    }

    /// Whether the flag is set.
    pub fn is_set(&self) -> bool {
        self.obj.u32_at(FLAG).load(Ordering::SeqCst) != 0
    }

    fn wait_until(&self, deadline: &Deadline) -> bool {
        loop {
            if self.is_set() {
                return true;
            }
            match self.obj.wait(deadline, || self.is_set()) {
                Ok(()) => {}
                Err(Error::Timeout) => return self.is_set(),
                Err(_) => return self.is_set(),
            }
        }
    }

    /// Wait until the flag is set (at once if it is).
    pub fn wait(&self) {
        self.wait_until(&Deadline::never());
    }

    /// Wait at most `timeout` for the flag; whether it is set (Python's `wait(timeout)`).
    pub fn wait_timeout(&self, timeout: Duration) -> bool {
        self.wait_until(&Deadline::after(timeout))
    }

    /// The event's name (or path).
    pub fn name(&self) -> &str {
        self.obj.name()
    }
}

by_name!(Event);
