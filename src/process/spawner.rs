//! How every child is forked, function children and external commands alike: from one
//! long-lived spawner thread, with a `pre_exec` hook that ties the child's life to this
//! process and lets the descriptors it needs survive the `exec`.

use std::io;
use std::os::fd::{BorrowedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::sync::{mpsc, OnceLock};

use rustix::io::FdFlags;
use rustix::process::Signal;

/// Children are killed with their parent unless told otherwise ([`Builder::die_with_parent`],
/// [`Command::die_with_parent`], [`PoolBuilder::die_with_parent`]).
///
/// [`Builder::die_with_parent`]: super::Builder::die_with_parent
/// [`Command::die_with_parent`]: super::Command::die_with_parent
/// [`PoolBuilder::die_with_parent`]: super::PoolBuilder::die_with_parent
pub(super) const DIE_WITH_PARENT: bool = true;

/// A job for the spawner thread.
type SpawnJob = (
    std::process::Command,
    mpsc::SyncSender<io::Result<std::process::Child>>,
);

/// Fork every child from one long-lived thread, so that `PR_SET_PDEATHSIG` (which fires
/// when the *thread* that forked exits) follows the lifetime of the whole process.
pub(super) fn spawn_from_spawner_thread(
    cmd: std::process::Command,
) -> io::Result<std::process::Child> {
    static SPAWNER: OnceLock<mpsc::Sender<SpawnJob>> = OnceLock::new();
    let tx = SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<SpawnJob>();
        std::thread::Builder::new()
            .name("shmq-spawner".into())
            .spawn(move || {
                for (mut cmd, reply) in rx {
                    let _ = reply.send(cmd.spawn());
                }
            })
            .expect("starting the shmq spawner thread");
        tx
    });
    let (rtx, rrx) = mpsc::sync_channel(1);
    tx.send((cmd, rtx))
        .map_err(|_| io::Error::other("shmq spawner thread is gone"))?;
    rrx.recv()
        .map_err(|_| io::Error::other("shmq spawner thread is gone"))?
}

/// Prepare the `pre_exec` hook: optionally die with the parent, and let `keep` fds
/// survive the exec. The caller keeps the `keep` descriptors open until the spawn returned.
pub(super) fn install_pre_exec(
    cmd: &mut std::process::Command,
    die_with_parent: bool,
    keep: Vec<RawFd>,
) {
    let parent = rustix::process::getpid();
    // SAFETY: the closure runs between fork and exec and only makes async-signal-safe
    // system calls (prctl, getppid, fcntl, _exit) on plain integers — rustix's are direct
    // system calls — and allocates nothing (an `Errno` becomes an `io::Error` without
    // allocating). Each `keep` descriptor is open in the parent until the spawn returns,
    // so it is open in the forked child's copy of the descriptor table for the whole hook.
    unsafe {
        cmd.pre_exec(move || {
            if die_with_parent {
                rustix::process::set_parent_process_death_signal(Some(Signal::KILL))?;
                // The parent may have died before prctl took effect. (No safe `_exit`
                // exists: rustix has none outside its unstable runtime API.)
                if rustix::process::getppid() != Some(parent) {
                    libc::_exit(1);
                }
            }
            for &fd in &keep {
                let fd = BorrowedFd::borrow_raw(fd);
                let flags = rustix::io::fcntl_getfd(fd)?;
                rustix::io::fcntl_setfd(fd, flags - FdFlags::CLOEXEC)?;
            }
            Ok(())
        });
    }
}
