//! `Barrier` across processes — Python's `multiprocessing.Barrier`: four workers compute
//! in rounds; nobody starts round n+1 before all finished round n.
//!
//! Run: `cargo run --example barrier`

use std::time::Duration;

use shmq::process;
use shmq::{Array, Barrier};

fn worker((b, cells, id): (Barrier, Array<u64>, usize)) {
    for round in 1..=3u64 {
        // Each worker writes its own cell...
        cells.set(id, round * 10 + id as u64).unwrap();
        std::thread::sleep(Duration::from_millis(10 * id as u64));
        // ...and waits for the others before reading theirs.
        let i = b.wait().unwrap();
        let all = cells.to_vec().unwrap();
        assert!(all.iter().all(|&c| c / 10 >= round), "{all:?}");
        if i == 0 {
            println!("round {round}: {all:?}"); // once per round, like Python's action=
        }
        b.wait().unwrap(); // nobody overwrites before everyone has read
    }
}

fn main() -> shmq::Result<()> {
    process::init();
    let tag = std::process::id();
    let b = Barrier::create(&format!("example-barrier-{tag}"), 4)?;
    let cells: Array<u64> = Array::create_zeroed(&format!("example-barrier-cells-{tag}"), 4)?;
    let workers = (0..4)
        .map(|id| process::start(worker, (b.clone(), cells.clone(), id)))
        .collect::<shmq::Result<Vec<_>>>()?;
    for w in workers {
        w.join()?;
    }
    println!("final: {:?}", cells.to_vec()?);
    Ok(())
}
