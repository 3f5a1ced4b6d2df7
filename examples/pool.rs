//! A pool of worker processes: `map` in input order, streaming `imap`, single `apply`
//! tasks, a crashing task that fails alone while its worker is replaced, and the cost of
//! one bare spawn + join.
//!
//! Run: `cargo run --release --example pool`

use std::time::Instant;

use shmq::process::{self, Pool};

/// Count the primes in `lo..hi` (deliberately naive: CPU work for the workers).
fn count_primes((lo, hi): (u64, u64)) -> (u64, u64, u32) {
    let is_prime = |n: u64| {
        n >= 2
            && (2..)
                .take_while(|d| d * d <= n)
                .all(|d| !n.is_multiple_of(d))
    };
    let count = (lo..hi).filter(|&n| is_prime(n)).count() as u32;
    (lo, hi, count)
}

fn main() -> shmq::Result<()> {
    process::init(); // first: in a worker this never returns

    let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
    let pool = Pool::new(workers)?;
    println!("pool of {workers} workers: pids {:?}", pool.pids());

    // map: results in input order, whatever order the workers finish in.
    let chunks: Vec<(u64, u64)> = (0..16).map(|i| (i * 50_000, (i + 1) * 50_000)).collect();
    let t = Instant::now();
    let counts = pool.map(count_primes, chunks.clone())?;
    let total: u32 = counts.iter().map(|c| c.2).sum();
    println!("map: {total} primes below 800000 in {:?}", t.elapsed());
    let t = Instant::now();
    let serial: u32 = chunks.iter().map(|&c| count_primes(c).2).sum();
    println!(
        "     same work in this process: {serial} in {:?}",
        t.elapsed()
    );

    // imap: stream results while later inputs are still being computed.
    for r in pool.imap(|x: u64| (x, x.pow(3)), 1..=5u64) {
        let (x, cube) = r?;
        println!("imap: {x}^3 = {cube}");
    }

    // apply: one task; any serde value in and out.
    let words = vec!["multiprocess".to_string(), "queue".into(), "test".into()];
    let joined: String = pool.apply(|w: Vec<String>| w.join(" "), words)?;
    println!("apply: {joined:?}");

    // A task that crashes its worker fails alone; the worker is replaced.
    let before = pool.pids();
    let results: Vec<_> = pool
        .imap(
            |x: i32| {
                if x == 2 {
                    std::process::abort(); // SIGABRT: the worker dies
                }
                x * 10
            },
            0..4,
        )
        .collect();
    for (i, r) in results.iter().enumerate() {
        match r {
            Ok(v) => println!("task {i}: {v}"),
            Err(e) => println!("task {i}: error: {e}"),
        }
    }
    println!("workers before {before:?}, after {:?}", pool.pids());
    pool.close();
    pool.join()?;

    // What one process costs: spawn + join of a trivial function, re-executing this binary.
    let n = 20;
    let t = Instant::now();
    for i in 0..n {
        let c = process::start(|i: u32| i + 1, i)?;
        assert_eq!(c.join()?, i + 1);
    }
    let per = t.elapsed() / n;
    println!(
        "spawn + join of a trivial function: {:.2} ms each (mean of {n})",
        per.as_secs_f64() * 1e3
    );
    Ok(())
}
