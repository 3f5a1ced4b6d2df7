//! Waiting for children to exit: [`wait_any`] over several ([`Waitable`]), and the loop
//! behind it and [`Child::join_timeout`](super::Child::join_timeout) — `poll(2)` on the
//! children's pidfds, or short naps on kernels without pidfds.

use std::os::fd::BorrowedFd;
use std::time::{Duration, Instant};

use rustix::event::{PollFd, PollFlags, Timespec};

use crate::error::{Error, Result};

/// An instant no deadline of a caller reaches ("wait for ever", when a `timeout` added to
/// now overflows).
pub(super) fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(100 * 365 * 24 * 3600)
}

/// `poll` the descriptors for readability for at most `timeout` (`None`: for ever).
fn poll_fds(fds: &[BorrowedFd<'_>], timeout: Option<Duration>) -> Result<()> {
    let mut pfds: Vec<PollFd<'_>> = fds
        .iter()
        .map(|fd| PollFd::from_borrowed_fd(*fd, PollFlags::IN))
        .collect();
    // At most i32::MAX ms (about 24 days) at a time, as poll(2) takes; callers loop.
    let timeout = timeout.map(|t| {
        let t = t.min(Duration::from_millis(i32::MAX as u64));
        Timespec::try_from(t).expect("a duration of at most 24 days fits a timespec")
    });
    match rustix::event::poll(&mut pfds, timeout.as_ref()) {
        Ok(_) | Err(rustix::io::Errno::INTR) => Ok(()),
        Err(e) => Err(std::io::Error::from(e).into()),
    }
}

/// Something [`wait_any`] can wait for: a [`Child`](super::Child) of any result type
/// (or a `&mut` to one, or a `&mut dyn Waitable` to mix result types).
pub trait Waitable {
    /// Reap if exited; whether it has.
    fn has_exited(&mut self) -> Result<bool>;
    /// The pidfd to poll, if the kernel gave one.
    fn sentinel(&self) -> Option<BorrowedFd<'_>>;
}

impl<W: Waitable + ?Sized> Waitable for &mut W {
    fn has_exited(&mut self) -> Result<bool> {
        (**self).has_exited()
    }
    fn sentinel(&self) -> Option<BorrowedFd<'_>> {
        (**self).sentinel()
    }
}

/// Wait until one of `children` has exited: its index (the lowest, if several have), or
/// `None` once `deadline` has passed (`None`: no deadline).
pub(super) fn wait_first<W: Waitable>(
    children: &mut [W],
    deadline: Option<Instant>,
) -> Result<Option<usize>> {
    let mut nap = Duration::from_micros(200);
    loop {
        for (i, c) in children.iter_mut().enumerate() {
            if c.has_exited()? {
                return Ok(Some(i));
            }
        }
        let left = match deadline {
            None => None,
            Some(d) => {
                let now = Instant::now();
                if now >= d {
                    return Ok(None);
                }
                Some(d - now)
            }
        };
        let fds: Vec<BorrowedFd<'_>> = children.iter().filter_map(|c| c.sentinel()).collect();
        if fds.len() == children.len() {
            poll_fds(&fds, left)?;
        } else {
            let t = left.map_or(nap, |l| l.min(nap));
            std::thread::sleep(t);
            nap = (nap * 2).min(Duration::from_millis(10));
        }
    }
}

/// Wait until one of `children` has exited and return its index (the lowest, if several
/// have) — Python's `multiprocessing.connection.wait([p.sentinel, …])`. The child is reaped;
/// its result stays available to `join`. [`Error::Timeout`] if none exits within `timeout`
/// (`None`: wait for ever); [`Error::InvalidArgument`] for an empty slice.
///
/// It sleeps in `poll(2)` on the children's pidfds (no polling loop; on kernels without
/// pidfds it checks every few milliseconds instead).
///
/// ```
/// # shmq::process::init();
/// use std::time::Duration;
/// use shmq::process::{self, Waitable};
/// let mut kids = vec![
///     process::start(|ms| std::thread::sleep(Duration::from_millis(ms)), 60_000u64)?,
///     process::start(|ms| std::thread::sleep(Duration::from_millis(ms)), 10u64)?,
/// ];
/// assert_eq!(process::wait_any(&mut kids, Some(Duration::from_secs(60)))?, 1);
/// kids[0].kill()?;
/// // Children with different result types:
/// let mut a = process::start(|()| 1u8, ())?;
/// let mut b = process::start(|()| "two".to_string(), ())?;
/// let i = process::wait_any(&mut [&mut a as &mut dyn Waitable, &mut b], None)?;
/// assert!(i < 2);
/// # Ok::<(), shmq::Error>(())
/// ```
pub fn wait_any<W: Waitable>(children: &mut [W], timeout: Option<Duration>) -> Result<usize> {
    if children.is_empty() {
        return Err(Error::InvalidArgument(
            "wait_any needs at least one child".into(),
        ));
    }
    let deadline = timeout.map(|t| Instant::now().checked_add(t).unwrap_or_else(far_future));
    wait_first(children, deadline)?.ok_or(Error::Timeout)
}
