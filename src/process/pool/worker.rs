//! The worker process: what it is started with ([`WorkerArgs`]) and its main loop — run the
//! initializer, then read tasks from its own queue and put their outcomes on the pool's
//! result queue.

use serde::{Deserialize, Serialize};

use crate::error::Error;
use crate::process::wire::{Call, Outcome, PoolMsg, Task};
use crate::RawQueue;

/// What a worker process is started with (the queues travel as their names).
#[derive(Serialize, Deserialize)]
pub(super) struct WorkerArgs {
    /// This worker's task queue.
    pub(super) tasks: RawQueue,
    /// The pool's result queue.
    pub(super) results: RawQueue,
    /// The initializer's call.
    pub(super) init: Option<Call>,
    /// `maxtasksperchild` (0: none).
    pub(super) max_tasks: u64,
}

/// `msg` as postcard bytes, in `out` (its old contents replaced, its allocation reused).
fn encode_into(msg: &PoolMsg, out: &mut Vec<u8>) {
    out.clear();
    *out = postcard::to_extend(msg, std::mem::take(out))
        .expect("postcard encodes a PoolMsg into a Vec");
}

/// The worker process's main loop.
pub(super) fn worker_main(args: WorkerArgs) {
    let WorkerArgs {
        tasks,
        results,
        init,
        max_tasks,
    } = args;
    if let Some(call) = init {
        // SAFETY: the call was made by `Call::new` in the parent, which runs this same
        // executable (the worker was started by re-executing it and passed the bootstrap's
        // binary check).
        match unsafe { call.run() } {
            Outcome::Ok(_) => {}
            Outcome::Panic(m) => panic!("the pool's initializer panicked: {m}"),
            Outcome::Error(m) => panic!("the pool's initializer could not run: {m}"),
        }
    }
    let mut buf = Vec::new();
    let mut out = Vec::new();
    let mut done = 0u64;
    while max_tasks == 0 || done < max_tasks {
        match tasks.get_into(&mut buf) {
            Ok(_) => {}
            Err(Error::Closed) => return,
            Err(e) => panic!("pool worker: reading its task queue failed: {e}"),
        }
        let Ok(Task { id, call }) = postcard::from_bytes::<Task>(&buf) else {
            panic!("pool worker: malformed task record");
        };
        // SAFETY: as for the initializer: a call made by `Target::call` in the parent,
        // which runs this same executable.
        let outcome = unsafe { call.run() };
        encode_into(&PoolMsg::Done { id, outcome }, &mut out);
        let r = match results.put(&out) {
            Err(Error::TooLarge { size, max }) => {
                let m = format!("the task's result ({size} bytes encoded) is larger than the pool's result queue accepts ({max} bytes); raise PoolBuilder::capacity");
                let outcome = Outcome::Error(m);
                encode_into(&PoolMsg::Done { id, outcome }, &mut out);
                results.put(&out)
            }
            r => r,
        };
        if let Err(Error::Closed) = r {
            return;
        }
        r.expect("pool worker: writing a result failed");
        done += 1;
    }
}
