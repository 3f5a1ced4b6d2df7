//! `Condition` across processes — Python's `multiprocessing.Condition`: a bounded
//! buffer in an `Array`, a producer process and two consumer processes.
//!
//! Run: `cargo run --example condition`

use shmq::process;
use shmq::{Array, Condition};

const CAP: usize = 4;
/// `state[0]`: items in the buffer; `state[1]`: items produced; `state[2]`: done flag.
type Shared = (Condition, Array<u64>, Array<u64>);

fn producer((cond, buf, state): Shared) {
    for item in 1..=20u64 {
        let mut g = cond.lock().unwrap();
        g.wait_for(|| (state.get(0).unwrap() as usize) < CAP, None)
            .unwrap();
        let n = state.get(0).unwrap();
        buf.set(n as usize, item).unwrap();
        state.set(0, n + 1).unwrap();
        state.set(1, item).unwrap();
        g.notify_all();
    }
    let g = cond.lock().unwrap();
    state.set(2, 1).unwrap();
    g.notify_all();
}

fn consumer((cond, buf, state): Shared) -> u64 {
    let mut sum = 0;
    loop {
        let mut g = cond.lock().unwrap();
        g.wait_for(
            || state.get(0).unwrap() > 0 || state.get(2).unwrap() == 1,
            None,
        )
        .unwrap();
        let n = state.get(0).unwrap();
        if n == 0 {
            return sum; // done and drained
        }
        sum += buf.get(n as usize - 1).unwrap();
        state.set(0, n - 1).unwrap();
        g.notify_all();
    }
}

fn main() -> shmq::Result<()> {
    process::init();
    let tag = std::process::id();
    let cond = Condition::create(&format!("example-cond-{tag}"))?;
    let buf: Array<u64> = Array::create_zeroed(&format!("example-cond-buf-{tag}"), CAP)?;
    let state: Array<u64> = Array::create_zeroed(&format!("example-cond-state-{tag}"), 3)?;
    let shared = (cond, buf, state);
    let consumers = (0..2)
        .map(|_| process::start(consumer, shared.clone()))
        .collect::<shmq::Result<Vec<_>>>()?;
    process::start(producer, shared.clone())?.join()?;
    let sums = consumers
        .into_iter()
        .map(|c| c.join())
        .collect::<shmq::Result<Vec<u64>>>()?;
    println!(
        "consumers got sums {sums:?}, total {}",
        sums.iter().sum::<u64>()
    );
    assert_eq!(sums.iter().sum::<u64>(), (1..=20).sum::<u64>());
    Ok(())
}
