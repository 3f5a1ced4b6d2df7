//! The dispatcher thread: owns the workers and every task in flight. It hands tasks to
//! the least loaded worker, routes results back to their sinks, replaces workers that die
//! or retire, and stops them on `close` / `terminate`.

use std::collections::{HashMap, VecDeque};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use super::reply::Sink;
use super::worker::{worker_main, WorkerArgs};
use super::{Cmd, PoolBuilder, Submitted};
use crate::error::{Error, Result};
use crate::process::handle::{describe_status, Child};
use crate::process::wire::{self, Call, PoolMsg, Task};
use crate::process::{Builder, ProcessError};
use crate::{Options, RawQueue};

struct Worker {
    child: Child<()>,
    tasks: RawQueue,
    /// Tasks handed to this worker, oldest first.
    assigned: VecDeque<u64>,
    /// Tasks handed to it in its life (for `maxtasksperchild`).
    given: u64,
    /// Results it sent back.
    completed: u64,
}

/// A task handed to a worker: where its reply goes, and which worker holds it.
struct Pending {
    sink: Sink,
    worker: usize,
}

pub(super) struct Dispatcher {
    rx: Option<mpsc::Receiver<Cmd>>,
    results: RawQueue,
    workers: Vec<Worker>,
    /// Workers replaced after `maxtasksperchild`, until they are reaped.
    retired: Vec<Child<()>>,
    backlog: VecDeque<Submitted>,
    pending: HashMap<u64, Pending>,
    opts: Options,
    prefix: String,
    generation: u64,
    builder: Builder,
    prefetch: usize,
    /// The initializer's call.
    init: Option<Call>,
    max_tasks: u64,
    pids: Arc<Mutex<Vec<u32>>>,
    /// Set when workers can no longer be started: every task fails with it.
    fatal: Option<String>,
    /// Workers in a row that died before being handed any task.
    startup_failures: u32,
    /// `close()` was called: stop once the backlog and the pending tasks are done.
    closing: bool,
}

/// How often the dispatcher looks at its workers (and at most how long it sleeps on the
/// result queue).
const CHECK_EVERY: Duration = Duration::from_millis(50);
/// How long `terminate` (and dropping the pool) lets workers exit before killing them.
const TERMINATE_GRACE: Duration = Duration::from_secs(5);
/// How long `close` + `join` lets idle workers exit before killing them.
const CLOSE_GRACE: Duration = Duration::from_secs(10);
/// How long reaping a worker that was told to exit, or killed, may take.
const REAP_TIMEOUT: Duration = Duration::from_secs(5);

/// How a worker died, with its panic message when the worker itself panicked (in the
/// initializer, or reading its queues: a task's panic is caught and does not kill it), and
/// whether it did.
fn death_cause(child: &mut Child<()>, status: std::process::ExitStatus) -> (String, bool) {
    match child.try_join() {
        Err(Error::Process(ProcessError::Panicked { message, .. })) => {
            (format!("panicked: {message}"), true)
        }
        Err(Error::Process(ProcessError::Failed { message, .. })) => {
            (format!("failed: {message}"), true)
        }
        _ => (describe_status(status), false),
    }
}

impl Dispatcher {
    /// The dispatcher of a new pool, with its workers started: it reads commands from `rx`
    /// and creates the workers' task queues (named `<prefix>-w<n>`) with `opts`.
    pub(super) fn new(
        b: PoolBuilder,
        opts: Options,
        prefix: String,
        results: RawQueue,
        rx: mpsc::Receiver<Cmd>,
    ) -> Result<Dispatcher> {
        let mut d = Dispatcher {
            rx: Some(rx),
            results,
            workers: Vec::with_capacity(b.workers),
            retired: Vec::new(),
            backlog: VecDeque::new(),
            pending: HashMap::new(),
            opts,
            prefix,
            generation: 0,
            builder: Builder::new()
                .die_with_parent(b.die_with_parent)
                .name(b.name),
            prefetch: b.prefetch,
            init: b.init,
            max_tasks: b.max_tasks,
            pids: Arc::new(Mutex::new(Vec::new())),
            fatal: None,
            startup_failures: 0,
            closing: false,
        };
        for _ in 0..b.workers {
            let w = d.start_worker()?;
            d.workers.push(w);
        }
        d.publish_pids();
        Ok(d)
    }

    /// The current workers' pids, kept up to date as workers are replaced.
    pub(super) fn pids(&self) -> Arc<Mutex<Vec<u32>>> {
        self.pids.clone()
    }

    fn start_worker(&mut self) -> Result<Worker> {
        let name = format!("{}-w{}", self.prefix, self.generation);
        self.generation += 1;
        let tasks = RawQueue::create_with(name, &self.opts)?;
        let child = self.builder.start(
            worker_main,
            WorkerArgs {
                tasks: tasks.clone(),
                results: self.results.clone(),
                init: self.init.clone(),
                max_tasks: self.max_tasks,
            },
        )?;
        Ok(Worker {
            child,
            tasks,
            assigned: VecDeque::new(),
            given: 0,
            completed: 0,
        })
    }

    fn publish_pids(&self) {
        if let Ok(mut p) = self.pids.lock() {
            *p = self.workers.iter().map(|w| w.child.pid()).collect();
        }
    }

    pub(super) fn run(mut self) {
        let rx = self.rx.take().expect("command channel");
        let mut buf = Vec::new();
        let mut last_check = Instant::now();
        loop {
            loop {
                match rx.try_recv() {
                    Ok(Cmd::Submit(t)) => self.backlog.push_back(t),
                    Ok(Cmd::Close) => self.closing = true,
                    Ok(Cmd::Terminate) | Err(mpsc::TryRecvError::Disconnected) => {
                        return self.terminate(&rx);
                    }
                    Err(mpsc::TryRecvError::Empty) => break,
                }
            }
            self.dispatch();
            if self.closing && self.backlog.is_empty() && self.pending.is_empty() {
                return self.finish();
            }
            match self.results.get_into_timeout(&mut buf, CHECK_EVERY) {
                Ok(_) => {
                    self.handle_result(&buf);
                    self.drain_results(&mut buf);
                }
                Err(Error::Timeout) => {}
                Err(e) => {
                    self.fatal = Some(format!("the pool's result queue failed: {e}"));
                }
            }
            if last_check.elapsed() >= CHECK_EVERY {
                self.check_workers(&mut buf);
                last_check = Instant::now();
            }
        }
    }

    fn drain_results(&mut self, buf: &mut Vec<u8>) {
        while self.results.try_get_into(buf).is_ok() {
            self.handle_result(buf);
        }
    }

    fn handle_result(&mut self, b: &[u8]) {
        // A wake-up (or garbage) carries no result.
        let Ok(PoolMsg::Done { id, outcome }) = postcard::from_bytes::<PoolMsg>(b) else {
            return;
        };
        let Some(p) = self.pending.remove(&id) else {
            return;
        };
        let i = p.worker;
        let w = &mut self.workers[i];
        if let Some(pos) = w.assigned.iter().position(|&t| t == id) {
            w.assigned.remove(pos);
        }
        w.completed += 1;
        let pid = w.child.pid();
        p.sink.send(pid, outcome.into_reply(pid));
        let w = &self.workers[i];
        if self.max_tasks != 0 && w.given >= self.max_tasks && w.assigned.is_empty() {
            // It exits by itself now: start its successor at once.
            self.retire(i);
        }
    }

    /// Replace worker `i`, which finished its `maxtasksperchild` tasks and exits by itself.
    fn retire(&mut self, i: usize) {
        match self.start_worker() {
            Ok(w) => {
                let old = std::mem::replace(&mut self.workers[i], w);
                self.retired.push(old.child);
                self.publish_pids();
            }
            Err(e) => self.fatal = Some(format!("starting a pool worker failed: {e}")),
        }
    }

    fn dispatch(&mut self) {
        if let Some(msg) = &self.fatal {
            for t in self.backlog.drain(..) {
                t.sink
                    .send(0, Err(Error::Io(std::io::Error::other(msg.clone()))));
            }
            return;
        }
        let mut full = vec![false; self.workers.len()];
        while let Some(task) = self.backlog.front() {
            // The least loaded worker with room.
            let max = self.max_tasks;
            let Some(i) = (0..self.workers.len())
                .filter(|&i| {
                    let w = &self.workers[i];
                    !full[i] && w.assigned.len() < self.prefetch && (max == 0 || w.given < max)
                })
                .min_by_key(|&i| self.workers[i].assigned.len())
            else {
                return;
            };
            let put = wire::encode(&task.msg, "a task")
                .and_then(|rec| self.workers[i].tasks.try_put(&rec));
            match put {
                Ok(()) => {
                    let task = self.backlog.pop_front().expect("front exists");
                    let id = task.msg.id;
                    let w = &mut self.workers[i];
                    w.assigned.push_back(id);
                    w.given += 1;
                    self.pending.insert(
                        id,
                        Pending {
                            sink: task.sink,
                            worker: i,
                        },
                    );
                }
                Err(Error::Full) => full[i] = true,
                Err(e) => {
                    // TooLarge (or a broken queue): this task can never be handed out.
                    let task = self.backlog.pop_front().expect("front exists");
                    task.sink.send(0, Err(e));
                }
            }
        }
    }

    fn check_workers(&mut self, buf: &mut Vec<u8>) {
        self.retired.retain_mut(|c| c.is_alive());
        let dead: Vec<(usize, u32, std::process::ExitStatus)> = self
            .workers
            .iter_mut()
            .enumerate()
            .filter_map(|(i, w)| match w.child.try_wait() {
                Ok(Some(s)) => Some((i, w.child.pid(), s)),
                _ => None,
            })
            .collect();
        if dead.is_empty() {
            return;
        }
        // Everything the dead workers finished is in the result queue already.
        self.drain_results(buf);
        for (i, pid, status) in dead {
            if self.workers[i].child.pid() != pid {
                continue; // retired (and replaced) while the results were drained
            }
            let (cause, own_panic) = death_cause(&mut self.workers[i].child, status);
            // Tasks it never read go back to the front of the backlog, in order.
            let mut unread = Vec::new();
            while self.workers[i].tasks.try_get_into(buf).is_ok() {
                if let Ok(msg) = postcard::from_bytes::<Task>(buf) {
                    if let Some(p) = self.pending.remove(&msg.id) {
                        unread.push(Submitted { msg, sink: p.sink });
                    }
                }
            }
            for t in unread.into_iter().rev() {
                self.backlog.push_front(t);
            }
            // What is left was being run when it died. Replace the worker first, so
            // that a caller who sees the failure also sees the new worker in `pids()`.
            let lost = std::mem::take(&mut self.workers[i].assigned);
            // A worker that never completed a task and died either before being handed
            // one or by a panic of its own (its initializer) failed to start; a worker
            // killed by its first task did not.
            let w = &self.workers[i];
            if w.completed == 0 && (w.given == 0 || own_panic) {
                self.startup_failures += 1;
            } else {
                self.startup_failures = 0;
            }
            let restart = if self.startup_failures >= 3 {
                Err(Error::InvalidArgument(format!(
                    "{} pool workers in a row died before running anything (the last {cause}); \
                     is the initializer failing, or is shmq::process::init() not the first \
                     statement of main (shmq::enable_test_support!() missing in a test file)?",
                    self.startup_failures
                )))
            } else {
                self.start_worker()
            };
            match restart {
                Ok(w) => {
                    self.workers[i] = w;
                    self.publish_pids();
                }
                Err(e) => self.fatal = Some(format!("restarting a dead pool worker failed: {e}")),
            }
            for id in lost {
                if let Some(p) = self.pending.remove(&id) {
                    p.sink.send(
                        pid,
                        Err(ProcessError::WorkerDied {
                            pid,
                            task: id,
                            cause: cause.clone(),
                        }
                        .into()),
                    );
                }
            }
            if self.fatal.is_some() {
                // Fail what is pending on the remaining workers too: nothing will replace
                // them if they die.
                return;
            }
        }
    }

    /// Wait (at most `grace`) for every worker to exit, reading results meanwhile so none
    /// blocks on a full result queue; kill those still running then, and reap them all.
    fn stop_workers(&mut self, grace: Duration) {
        for w in &self.workers {
            w.tasks.close();
        }
        let mut buf = Vec::new();
        let deadline = Instant::now() + grace;
        loop {
            self.drain_results(&mut buf);
            let running = self
                .workers
                .iter_mut()
                .map(|w| w.child.is_alive())
                .chain(self.retired.iter_mut().map(|c| c.is_alive()))
                .filter(|&alive| alive)
                .count();
            if running == 0 {
                break;
            }
            if Instant::now() >= deadline {
                for w in &mut self.workers {
                    let _ = w.child.kill();
                }
                for c in &mut self.retired {
                    let _ = c.kill();
                }
                break;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        for w in &mut self.workers {
            let _ = w.child.join_timeout(REAP_TIMEOUT);
        }
        for c in &mut self.retired {
            let _ = c.join_timeout(REAP_TIMEOUT);
        }
        self.drain_results(&mut buf);
    }

    /// After `close()`: every task is done; let the workers exit.
    fn finish(mut self) {
        self.stop_workers(CLOSE_GRACE);
        for (_, p) in self.pending.drain() {
            p.sink.send(0, Err(ProcessError::PoolClosed.into()));
        }
    }

    /// `terminate()`: idle workers exit, busy ones are killed; unfinished tasks fail.
    fn terminate(mut self, rx: &mpsc::Receiver<Cmd>) {
        while let Ok(cmd) = rx.try_recv() {
            if let Cmd::Submit(t) = cmd {
                self.backlog.push_back(t);
            }
        }
        for t in self.backlog.drain(..) {
            let id = t.msg.id;
            t.sink
                .send(0, Err(ProcessError::Terminated { task: id }.into()));
        }
        for w in &mut self.workers {
            if !w.assigned.is_empty() {
                let _ = w.child.kill();
            }
        }
        self.stop_workers(TERMINATE_GRACE);
        for (id, p) in self.pending.drain() {
            p.sink
                .send(0, Err(ProcessError::Terminated { task: id }.into()));
        }
    }
}
