//! `Semaphore` across processes — Python's `multiprocessing.Semaphore` /
//! `BoundedSemaphore`: at most two of six workers use a scarce resource at once.
//!
//! Run: `cargo run --example semaphore`

use std::time::Duration;

use shmq::process;
use shmq::{Semaphore, Value};

fn worker((slots, inside, id): (Semaphore, Value<u32>, u32)) -> u32 {
    let _slot = slots.access().unwrap(); // with slots:
    let now = inside.update(|n| n + 1).unwrap();
    println!("worker {id} in ({now} inside)");
    std::thread::sleep(Duration::from_millis(100));
    inside.update(|n| n - 1).unwrap();
    now
}

fn main() -> shmq::Result<()> {
    process::init();
    let tag = std::process::id();
    let slots = Semaphore::create_bounded(&format!("example-sem-{tag}"), 2)?;
    let inside: Value<u32> = Value::create(&format!("example-sem-inside-{tag}"), 0)?;
    let workers = (0..6)
        .map(|id| process::start(worker, (slots.clone(), inside.clone(), id)))
        .collect::<shmq::Result<Vec<_>>>()?;
    let most = workers
        .into_iter()
        .map(|w| w.join())
        .collect::<shmq::Result<Vec<u32>>>()?
        .into_iter()
        .max()
        .unwrap_or(0);
    println!("at most {most} workers were inside at once");
    assert!(most <= 2);
    // Bounded: giving back more than it holds is an error (Python's ValueError).
    assert!(slots.release().is_err());
    Ok(())
}
