//! `Lock` and `RLock` across processes — Python's `multiprocessing.Lock` / `RLock`.
//!
//! Four worker processes append lines to one file; the lock keeps each worker's three
//! lines together. Then a worker is killed while it holds the lock, and the parent still
//! gets it (the guard says the previous holder died).
//!
//! Run: `cargo run --example lock`

use std::io::Write;
use std::time::Duration;

use shmq::process;
use shmq::{Event, Lock, RLock};

fn writer((lock, path, id): (Lock, String, u32)) {
    for round in 0..3 {
        let _g = lock.lock().expect("lock"); // with lock:
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .expect("open");
        for line in 0..3 {
            writeln!(f, "worker {id} round {round} line {line}").expect("write");
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

fn main() -> shmq::Result<()> {
    process::init();
    let tag = std::process::id();
    let lock = Lock::create(&format!("example-lock-{tag}"))?;
    let path = std::env::temp_dir().join(format!("shmq-lock-example-{tag}.txt"));
    std::fs::write(&path, "")?;
    let path_s = path.display().to_string();

    let workers = (0..4)
        .map(|id| process::start(writer, (lock.clone(), path_s.clone(), id)))
        .collect::<shmq::Result<Vec<_>>>()?;
    for w in workers {
        w.join()?;
    }
    let text = std::fs::read_to_string(&path)?;
    let lines: Vec<&str> = text.lines().collect();
    // Every block of three lines comes from one worker and one round.
    for block in lines.chunks(3) {
        let head: Vec<&str> = block
            .iter()
            .map(|l| &l[..l.rfind(" line").unwrap()])
            .collect();
        assert!(head.iter().all(|h| *h == head[0]), "interleaved: {block:?}");
    }
    println!("{} lines, never interleaved", lines.len());
    std::fs::remove_file(&path)?;

    // A holder killed inside its critical section.
    let held = Event::create(&format!("example-lock-held-{tag}"))?;
    let mut victim = process::start(
        |(lock, held): (Lock, Event)| {
            let _g = lock.lock().unwrap();
            held.set();
            std::thread::sleep(Duration::from_secs(600));
        },
        (lock.clone(), held.clone()),
    )?;
    held.wait();
    victim.kill()?;
    let g = lock.lock_timeout(Duration::from_secs(10))?;
    println!(
        "took the lock of killed pid {}: previous holder died inside = {}",
        victim.pid(),
        g.recovered()
    );
    drop(g);
    let _ = victim.join_timeout(Duration::from_secs(10));

    // RLock: the owner may take it again.
    let r = RLock::create(&format!("example-rlock-{tag}"))?;
    let outer = r.lock()?;
    let inner = r.lock()?;
    println!("RLock depth {}", r.depth());
    drop((inner, outer));
    Ok(())
}
