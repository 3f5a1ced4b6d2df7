//! A pool of worker processes: `map` in input order, streaming `imap` and
//! `imap_unordered`, `starmap`, single `apply` tasks, `map_async` with a callback, an
//! initializer, a crashing task that fails alone while its worker is replaced, `close` +
//! `join`, and the cost of one bare start + join.
//!
//! Run: `cargo run --release --example pool`

use std::time::Instant;

use shmq::process::{self, Callbacks, Pool};

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
    shmq::cleanup_on_signals()?; // Ctrl-C leaves no /dev/shm objects behind

    let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
    let pool = Pool::builder(workers)
        .initializer(|()| eprintln!("worker {} ready", std::process::id()), ())
        .build()?;
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

    // imap_unordered: results as they finish, not in input order.
    let order: Vec<u64> = pool
        .imap_unordered(
            |ms: u64| {
                std::thread::sleep(std::time::Duration::from_millis(ms));
                ms
            },
            [300, 0, 0, 0],
        )
        .collect::<shmq::Result<_>>()?;
    println!("imap_unordered: {order:?}");

    // starmap: a function of several arguments, one tuple per call.
    fn power(base: u64, exp: u32) -> u64 {
        base.pow(exp)
    }
    println!(
        "starmap: {:?}",
        pool.starmap(power, [(2, 10), (3, 4), (10, 3)])?
    );

    // map_async with a callback that runs in this process when the list is complete.
    let r = pool.map_async_with(
        |x: u64| x * 2,
        0..5u64,
        Callbacks::new().on_success(|v: Vec<u64>| println!("map_async callback: {v:?}")),
    )?;
    r.wait();

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

    // What one process costs: start + join of a trivial function, re-executing this binary.
    let n = 20;
    let t = Instant::now();
    for i in 0..n {
        let c = process::start(|i: u32| i + 1, i)?;
        assert_eq!(c.join()?, i + 1);
    }
    let per = t.elapsed() / n;
    println!(
        "start + join of a trivial function: {:.2} ms each (mean of {n})",
        per.as_secs_f64() * 1e3
    );
    Ok(())
}
