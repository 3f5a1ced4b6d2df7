//! [`PoolBuilder`]: a pool's options and their defaults.

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::Pool;
use crate::error::Result;
use crate::process::spawner::DIE_WITH_PARENT;
use crate::process::wire::Call;

/// Options for a [`Pool`] — the arguments of Python's `Pool(processes, initializer,
/// initargs, maxtasksperchild)` and a few more.
///
/// ```
/// # shmq::process::init();
/// let pool = shmq::process::Pool::builder(2)
///     .capacity(1 << 22)
///     .prefetch(2)
///     .initializer(|greeting: String| std::env::set_var("GREETING", greeting), "hi".to_string())
///     .max_tasks_per_child(100)
///     .build()?;
/// assert_eq!(pool.apply(|()| std::env::var("GREETING").unwrap(), ())?, "hi");
/// # Ok::<(), shmq::Error>(())
/// ```
#[derive(Clone, Debug)]
pub struct PoolBuilder {
    pub(super) workers: usize,
    pub(super) capacity: usize,
    pub(super) prefetch: usize,
    pub(super) die_with_parent: bool,
    /// The initializer's call.
    pub(super) init: Option<Call>,
    /// Why the initializer cannot be run (reported by `build`).
    pub(super) init_error: Option<String>,
    /// `maxtasksperchild` (0: none).
    pub(super) max_tasks: u64,
    pub(super) name: String,
}

impl PoolBuilder {
    /// The defaults, for `workers` processes.
    pub(super) fn new(workers: usize) -> PoolBuilder {
        PoolBuilder {
            workers,
            capacity: crate::queue::DEFAULT_CAPACITY,
            prefetch: 2,
            die_with_parent: DIE_WITH_PARENT,
            init: None,
            init_error: None,
            max_tasks: 0,
            name: "shmq-worker".into(),
        }
    }

    /// Ring capacity of each worker's task queue and of the result queue (default 1 MiB);
    /// bounds the size of one task's arguments and of one result.
    pub fn capacity(mut self, bytes: usize) -> Self {
        self.capacity = bytes;
        self
    }

    /// Tasks handed to a worker ahead of time (default 2; at least 1). More hides the
    /// dispatch round trip for tiny tasks; fewer balances long tasks better.
    pub fn prefetch(mut self, n: usize) -> Self {
        self.prefetch = n.max(1);
        self
    }

    /// Kill workers when this process dies (default `true`).
    pub fn die_with_parent(mut self, yes: bool) -> Self {
        self.die_with_parent = yes;
        self
    }

    /// Run `f(args)` once in every worker when it starts, before its first task (Python's
    /// `initializer` and `initargs`): open files, set up logging, warm a cache. A worker
    /// whose initializer panics dies; the pool starts another, and gives up (every task
    /// fails) after three workers in a row died that way.
    pub fn initializer<A>(mut self, f: fn(A), args: A) -> Self
    where
        A: Serialize + DeserializeOwned,
    {
        match Call::new(f, &args, "the pool initializer's arguments") {
            Ok(c) => {
                self.init = Some(c);
                self.init_error = None;
            }
            Err(e) => self.init_error = Some(e.to_string()),
        }
        self
    }

    /// Replace a worker by a fresh process after it has run `n` tasks (Python's
    /// `maxtasksperchild`; default 0: never). Frees what a long-lived worker would leak.
    /// A chunk of tasks ([`Pool::chunked`]) counts as one.
    pub fn max_tasks_per_child(mut self, n: u64) -> Self {
        self.max_tasks = n;
        self
    }

    /// The workers' process name, as `ps`, `top` and `pgrep` show it (default
    /// `"shmq-worker"`; see [`Builder::name`](crate::process::Builder::name)).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Start the workers.
    pub fn build(self) -> Result<Pool> {
        Pool::start(self)
    }
}
