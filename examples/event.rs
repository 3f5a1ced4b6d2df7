//! `Event` across processes — Python's `multiprocessing.Event`.
//!
//! Three workers get ready (slowly, one by one), then all wait for the parent's "go".
//!
//! Run: `cargo run --example event`

use std::time::{Duration, Instant};

use shmq::process;
use shmq::{Event, Semaphore};

fn worker((go, ready, id): (Event, Semaphore, u32)) -> u128 {
    std::thread::sleep(Duration::from_millis(50 * id as u64)); // getting ready
    ready.release().unwrap();
    let t = Instant::now();
    go.wait();
    t.elapsed().as_millis()
}

fn main() -> shmq::Result<()> {
    process::init();
    let tag = std::process::id();
    let go = Event::create(&format!("example-event-{tag}"))?;
    let ready = Semaphore::create(&format!("example-event-ready-{tag}"), 0)?;
    let workers = (0..3)
        .map(|id| process::start(worker, (go.clone(), ready.clone(), id)))
        .collect::<shmq::Result<Vec<_>>>()?;
    for _ in 0..3 {
        ready.acquire()?;
    }
    println!("all 3 workers ready; go!");
    go.set();
    for (id, w) in workers.into_iter().enumerate() {
        println!("worker {id} waited {} ms for the go", w.join()?);
    }
    assert!(go.is_set());
    Ok(())
}
