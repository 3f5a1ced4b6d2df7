//! A three-stage pipeline across processes: producer processes → worker processes → a
//! collector process, connected by shmq queues passed to the children as arguments.
//!
//! ```text
//!  producer 0 ┐                 ┌ worker 0 ┐
//!  producer 1 ┼─> jobs queue ─> ┼ worker 1 ┼─> results queue ─> collector ─> join() value
//!                               └ worker 2 ┘
//! ```
//! Each producer puts its share of jobs; when all producers are done the parent closes the
//! jobs queue, workers drain it and exit; the parent then closes the results queue and the
//! collector returns its summary through `join`.
//!
//! Run: `cargo run --example pipeline`

use std::time::Instant;

use serde::{Deserialize, Serialize};
use shmq::{process, Error, Queue};

#[derive(Serialize, Deserialize, Debug)]
struct Job {
    producer: u32,
    seq: u32,
    text: String,
}

#[derive(Serialize, Deserialize, Debug)]
struct Done {
    producer: u32,
    seq: u32,
    words: u32,
    worker: u32,
}

#[derive(Serialize, Deserialize, Debug)]
struct Summary {
    results: u32,
    words: u64,
    per_worker: Vec<(u32, u32)>,
}

fn producer((id, n, jobs): (u32, u32, Queue<Job>)) -> u32 {
    for seq in 0..n {
        let text = format!(
            "producer {id} says hello number {seq} {}",
            "word ".repeat((seq % 7) as usize)
        );
        jobs.put(&Job {
            producer: id,
            seq,
            text,
        })
        .expect("jobs queue closed early");
    }
    n
}

fn worker((jobs, results): (Queue<Job>, Queue<Done>)) -> u32 {
    let me = std::process::id();
    let mut handled = 0;
    loop {
        match jobs.get() {
            Ok(job) => {
                let words = job.text.split_whitespace().count() as u32;
                results
                    .put(&Done {
                        producer: job.producer,
                        seq: job.seq,
                        words,
                        worker: me,
                    })
                    .expect("results queue closed early");
                handled += 1;
            }
            Err(Error::Closed) => return handled, // closed and drained
            Err(e) => panic!("worker: {e}"),
        }
    }
}

fn collector(results: Queue<Done>) -> Summary {
    let mut s = Summary {
        results: 0,
        words: 0,
        per_worker: Vec::new(),
    };
    for done in results.iter() {
        let done = done.expect("decoding a result");
        s.results += 1;
        s.words += done.words as u64;
        match s.per_worker.iter_mut().find(|(w, _)| *w == done.worker) {
            Some((_, n)) => *n += 1,
            None => s.per_worker.push((done.worker, 1)),
        }
        let _ = (done.producer, done.seq);
    }
    s
}

fn main() -> shmq::Result<()> {
    process::init();
    // Ctrl-C or SIGTERM: remove the queues this process created before dying.
    shmq::cleanup_on_signals()?;

    let tag = std::process::id();
    let jobs: Queue<Job> = Queue::create(&format!("pipeline-jobs-{tag}"), 1 << 16)?;
    let results: Queue<Done> = Queue::create(&format!("pipeline-results-{tag}"), 1 << 16)?;
    let t = Instant::now();

    let collector = process::start(collector, results.clone())?;
    let workers = (0..3)
        .map(|_| process::start(worker, (jobs.clone(), results.clone())))
        .collect::<shmq::Result<Vec<_>>>()?;
    let producers = (0..2)
        .map(|id| process::start(producer, (id, 5_000, jobs.clone())))
        .collect::<shmq::Result<Vec<_>>>()?;

    let produced: u32 = producers
        .into_iter()
        .map(|p| p.join())
        .sum::<shmq::Result<u32>>()?;
    jobs.close(); // workers finish what is queued, then see Closed
    let handled: u32 = workers
        .into_iter()
        .map(|w| w.join())
        .sum::<shmq::Result<u32>>()?;
    results.close(); // the collector drains, then its iterator ends
    let summary = collector.join()?;

    println!(
        "produced {produced}, handled {handled}, collected {}",
        summary.results
    );
    println!("words counted: {}", summary.words);
    for (pid, n) in &summary.per_worker {
        println!("  worker {pid}: {n} jobs");
    }
    println!("pipeline took {:?}", t.elapsed());
    assert_eq!(produced, handled);
    assert_eq!(handled, summary.results);
    Ok(())
}
