//! Run Rust functions in child processes that attach to queues by name — the counterpart
//! of Python's `multiprocessing.Process`, `Pool` and `JoinableQueue` (the locks, events,
//! semaphores, barriers, conditions and shared values are in [`crate::primitives`]).
//!
//! ```
//! use shmq::{process, Queue};
//!
//! fn main() -> shmq::Result<()> {
//!     process::init(); // FIRST line of main: in a child, this runs the function and exits
//!
//!     let name = format!("seed-demo-{}", std::process::id());
//!     let q: Queue<(String, String)> = Queue::create(&name, 1 << 16)?;
//!     let child = process::start(|(q, who)| {
//!         q.put(&("multiprocess queue test".to_string(), who)).unwrap();
//!         std::process::id()
//!     }, (q.clone(), "zsq".to_string()))?;
//!     println!("{:?}", q.get()?);
//!     let child_pid: u32 = child.join()?; // the function's return value
//!     println!("child {child_pid} done");
//!     Ok(())
//! }
//! ```
//!
//! # Python → shmq
//! | Python `multiprocessing` | shmq |
//! |---|---|
//! | `if __name__ == "__main__":` guard | [`init()`](init) as the first statement of `main` |
//! | `p = Process(target=f, args=(q, "x")); p.start()` | `let p = start(f, (q.clone(), "x".to_string()))?` |
//! | `Process(name=...)`, `current_process().name` | [`Builder::name`], [`current_name`] |
//! | `p.join()`, `p.join(timeout)`, `p.exitcode` | [`Child::join`] (returns `f`'s value), [`Child::join_timeout`], [`Child::exit_code`] / [`Child::exit_status`] |
//! | `p.is_alive()`, `p.kill()`, `p.terminate()`, `p.pid` | [`Child::is_alive`], [`Child::kill`], [`Child::terminate`], [`Child::pid`] |
//! | `p.sentinel`, `connection.wait(sentinels)` | [`Child::pidfd`], [`wait_any`] |
//! | `active_children()` | [`active_children`] |
//! | `p.daemon = True` (killed with the parent) | the default; [`Builder::die_with_parent`]`(false)` opts out |
//! | `Pool(n, initializer, initargs, maxtasksperchild)` | [`Pool::builder`] with [`PoolBuilder::initializer`], [`PoolBuilder::max_tasks_per_child`] |
//! | `pool.map / imap / imap_unordered / starmap / apply` | [`Pool::map`], [`Pool::imap`], [`Pool::imap_unordered`], [`Pool::starmap`], [`Pool::apply`] |
//! | `pool.apply_async / map_async / starmap_async`, `callback=`, `error_callback=` | [`Pool::apply_async`], [`Pool::map_async`], [`Pool::starmap_async`], their `_with` forms taking [`Callbacks`] |
//! | `chunksize=` | [`Pool::chunked`] |
//! | `pool.close(); pool.join()`, `pool.terminate()` | [`Pool::close`], [`Pool::join`], [`Pool::terminate`] (and drop) |
//! | `JoinableQueue`: `task_done()`, `join()` | [`JoinableQueue::task_done`], [`JoinableQueue::join`], [`JoinableQueue::shutdown`] |
//! | `Lock`, `RLock`, `Event`, `Semaphore`, `Barrier`, `Condition`, `Value`, `Array` | [`crate::primitives`] |
//! | `subprocess.Popen(cmd, env=...)` | [`Command`] with [`Command::queue`] |
//!
//! The function comes first, then its arguments, everywhere: [`start`]`(f, args)`,
//! [`Pool::map`]`(f, inputs)`. ([`spawn`]`(args, f)` is the deprecated old order.)
//!
//! A start + join of a trivial function costs about 1.5–3 ms (it is a `fork` + `exec` of
//! the binary); a [`Pool`] task round trip costs tens of microseconds.
//!
//! # How it works
//! [`start`] re-executes the current executable (`/proc/self/exe`) with an environment
//! variable that tells [`init`] "you are a child". The function is identified by its
//! address relative to a known symbol of the same binary (stable across a re-exec even with
//! ASLR); its arguments are serialised with serde (postcard) into an anonymous memory file
//! (memfd) the child inherits, and the return value, or the panic message, comes back
//! through the same file. A [`Queue`] or
//! [`RawQueue`] among the arguments travels as its name and the child attaches on arrival.
//!
//! The function is a plain `fn(A) -> R` pointer: a `fn` item or a **non-capturing**
//! closure. A capturing closure is a type error that `cargo check` reports ("expected fn
//! pointer, found closure"). Pass everything the function needs as the `args` value.
//!
//! # ⚠ The rule: call [`init`] first in `main`
//! A child is a fresh run of the same program. **Everything `main` does before
//! [`init`] runs again in every child** — parsing arguments, opening files, printing a
//! banner, creating a queue (which then fails with `AlreadyExists` in the child). [`init`]
//! never returns in a child: it runs the function and exits, so code after it runs only in
//! the parent. Therefore make `shmq::process::init()` the first statement of `main`. Static
//! initialisers (`LazyLock`, `thread_local!`) are per process and simply run again when
//! first used in the child; that is normally what you want.
//!
//! [`start`] refuses to start a child when [`init`] has not been called in this process
//! ([`ProcessError::NotInitialized`]), so forgetting it is an error, not a silent
//! double run of your program — except in `cargo test` binaries, see below.
//!
//! # In `cargo test`
//! Integration tests have no `main` of their own. Put [`enable_test_support!()`](crate::enable_test_support)
//! at the top level of the test file: it adds a test named `shmq_process_test_support`.
//! In a test binary (one that cargo placed in a `deps` directory) a child is started as
//! `<test binary> shmq_process_test_support --nocapture --test-threads=1 -q`, so the
//! harness runs only that helper test, which calls [`init`] and runs the function. No other
//! test runs in the child. Without the macro the child runs no test at all and `join`
//! reports [`ProcessError::NoResult`] with a hint.
//!
//! # Children and their parent
//! * Every child is reaped: [`Child::join`] waits for it, and dropping an unjoined
//!   [`Child`] hands it to a small background thread that waits for it (no zombies).
//! * By default a child is killed (SIGKILL) when its parent process dies (Linux
//!   `PR_SET_PDEATHSIG`); [`Builder::die_with_parent`] turns that off. Children are forked
//!   from one long-lived helper thread, so the signal follows the parent *process*, not
//!   the thread that happened to call [`start`].
//! * stdin, stdout and stderr are inherited (a standard stream this process has closed is
//!   `/dev/null` in the child).
//! * [`active_children`] lists the children still running; [`wait_any`] waits for the
//!   first of several to end.
//!
//! # External programs
//! [`Command`] starts any program and hands it queue names in its environment
//! (`SHMQ_QUEUE_<KEY>=<name>`); the program attaches with [`queue_from_env`] (or by
//! reading the variable itself).
//!
//! # Pools and joinable queues
//! [`Pool`] keeps N worker processes and runs `map`/`imap`/`starmap`/`apply` tasks (and
//! their async forms) on them; a worker that crashes fails its task with
//! [`ProcessError::WorkerDied`] and is replaced. [`JoinableQueue`] adds `task_done` /
//! `join` across processes, with its counters in the queue's own header.
//!
//! [`Queue`]: crate::Queue
//! [`RawQueue`]: crate::RawQueue

// The map of this module, one idea per file:
//
//   error.rs         ProcessError, signal_name, os_error
//   wire.rs          what crosses to a child or pool worker (Boot, Call, Outcome, pool
//                    messages, the child marker variable): serde structs, one home each
//   target.rs        the function's identity (offsets from a known symbol) and the
//                    trampolines that call it in the child
//   exchange.rs      the memfd a child reads its Boot from and writes its Outcome to
//   child.rs         the child side: init, run the call, exit
//   spawn.rs         the parent side: Builder, start
//   spawner.rs       how every child is forked (spawner thread, pre_exec hook)
//   command.rs       external programs: Command, queue_from_env
//   handle.rs        Child<R>, the parent's handle on a child
//   registry.rs      children not yet reaped: active_children
//   wait.rs          waiting for children: wait_any, Waitable
//   test_support.rs  children inside `cargo test`: enable_test_support!
//   pool/            Pool (see pool/mod.rs for its own map)
//   joinable.rs      JoinableQueue

mod child;
mod command;
mod error;
mod exchange;
mod handle;
mod joinable;
mod pool;
mod registry;
mod spawn;
mod spawner;
mod target;
mod test_support;
mod wait;
mod wire;

pub use child::{current_name, init, is_child};
pub use command::{queue_from_env, raw_queue_from_env, Command, ENV_QUEUE_PREFIX};
pub use error::{signal_name, ProcessError};
pub use handle::Child;
pub use joinable::JoinableQueue;
pub use pool::{AsyncResult, Callbacks, Chunked, Imap, ImapUnordered, Pool, PoolBuilder, StarFn};
pub use registry::active_children;
#[allow(deprecated)]
pub use spawn::{spawn, start, Builder};
#[doc(hidden)]
pub use test_support::__test_support_init;
pub use test_support::TEST_SUPPORT_NAME;
pub use wait::{wait_any, Waitable};
