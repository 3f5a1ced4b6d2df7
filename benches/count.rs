//! Instruction counts of one message (issue 14): deterministic benchmarks that run under
//! Valgrind's callgrind through `gungraun`, so the figures do not depend on the machine's
//! load.
//!
//! Every case is one thread on one queue with no peer and no waiting: a queue of 1 MiB is
//! created (and warmed with one message) in `setup`, outside the count; the counted function
//! moves `N` messages of 8 bytes (or `ROUNDS` batches of `BATCH`); `teardown` drops the
//! queue, which removes its `/dev/shm` object. The id of each case carries the number of
//! messages it moves (`msgs_1000`): instructions per message = the reported count / that
//! number (`scripts/count.sh` prints the division). See docs/performance.md, "Instruction
//! counts".
//!
//! Run: `cargo bench -p shmq-benches --bench count` (needs valgrind and a `gungraun-runner`
//! of the same version as the `gungraun` crate on PATH). `cargo test -p shmq-benches --bench
//! count` runs each case once, natively, without valgrind.

use std::hint::black_box;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use gungraun::{library_benchmark, library_benchmark_group, main};
use shmq::{Batch, Options, PodQueue, Queue, RawQueue};

/// Messages per single-message case: the reported count / 1000 is the count per message.
const N: usize = 1000;
/// Messages per `put_many` / `get_many_into` call.
const BATCH: usize = 64;
/// Batches per batch case (`ROUNDS * BATCH` = 1024 messages).
const ROUNDS: usize = 16;
/// Ring capacity of every queue, in bytes.
const RING: usize = 1 << 20;
/// The 8-byte payload.
const MSG: [u8; 8] = *b"shmq-8B!";
/// The deadline of the `*_timeout` calls: never reached (no call waits).
const WAIT: Duration = Duration::from_secs(60);

/// A queue name unique to this process and case; the queue removes it when dropped.
fn unique(case: &str) -> String {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    format!(
        "count-{case}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    )
}

fn opts() -> Options {
    Options::new().capacity(RING)
}

/// A byte queue, warmed with one message in and out (the cached positions are set and the
/// receive buffer has its capacity), and the number of messages the case moves.
struct Raw {
    q: RawQueue,
    name: String,
    buf: Vec<u8>,
    batch: Batch,
    msgs: usize,
}

fn raw(msgs: usize) -> Raw {
    let name = unique("raw");
    let q = RawQueue::create_with(name.as_str(), &opts()).expect("create the queue");
    let mut buf = Vec::with_capacity(64);
    q.put(&MSG).unwrap();
    q.get_into(&mut buf).unwrap();
    let mut batch = Batch::new();
    let warm = [MSG; BATCH];
    q.put_many(&warm).unwrap();
    assert_eq!(q.get_many_into(&mut batch, BATCH).unwrap(), BATCH);
    Raw {
        q,
        name,
        buf,
        batch,
        msgs,
    }
}

/// [`raw`] with `msgs` messages already queued, for the get-only case.
fn raw_filled(msgs: usize) -> Raw {
    let f = raw(msgs);
    for _ in 0..msgs {
        f.q.put(&MSG).unwrap();
    }
    f
}

fn raw_done(f: Raw) {
    assert!(f.q.is_empty(), "a case left messages behind");
    drop(f.q);
    let _ = shmq::remove(&f.name);
}

// `put` + `get_into`: the blocking calls, one message at a time.
#[library_benchmark(setup = raw, teardown = raw_done)]
#[bench::msgs_1000(N)]
fn raw_put_get(mut f: Raw) -> Raw {
    for _ in 0..f.msgs {
        f.q.put(black_box(&MSG)).unwrap();
        black_box(f.q.get_into(&mut f.buf).unwrap());
    }
    f
}

// `put_timeout` + `get_into_timeout` (deadline never reached).
#[library_benchmark(setup = raw, teardown = raw_done)]
#[bench::msgs_1000(N)]
fn raw_put_get_timeout(mut f: Raw) -> Raw {
    for _ in 0..f.msgs {
        f.q.put_timeout(black_box(&MSG), WAIT).unwrap();
        black_box(f.q.get_into_timeout(&mut f.buf, WAIT).unwrap());
    }
    f
}

// `try_put` + `try_get_into`.
#[library_benchmark(setup = raw, teardown = raw_done)]
#[bench::msgs_1000(N)]
fn raw_try_put_get(mut f: Raw) -> Raw {
    for _ in 0..f.msgs {
        f.q.try_put(black_box(&MSG)).unwrap();
        black_box(f.q.try_get_into(&mut f.buf).unwrap());
    }
    f
}

// `put` alone: `N` messages into an empty 1 MiB ring (16 KB of records: never full).
#[library_benchmark(setup = raw, teardown = raw_drain)]
#[bench::msgs_1000(N)]
fn raw_put_only(f: Raw) -> Raw {
    for _ in 0..f.msgs {
        f.q.put(black_box(&MSG)).unwrap();
    }
    f
}

fn raw_drain(mut f: Raw) {
    for _ in 0..f.msgs {
        f.q.get_into(&mut f.buf).unwrap();
    }
    raw_done(f)
}

// `get_into` alone: `N` messages queued in `setup`.
#[library_benchmark(setup = raw_filled, teardown = raw_done)]
#[bench::msgs_1000(N)]
fn raw_get_only(mut f: Raw) -> Raw {
    for _ in 0..f.msgs {
        black_box(f.q.get_into(&mut f.buf).unwrap());
    }
    f
}

// `put_many` of 64 messages + `get_many_into(64)`, `ROUNDS` times.
#[library_benchmark(setup = raw, teardown = raw_done)]
#[bench::msgs_1024(ROUNDS * BATCH)]
fn raw_batch64(mut f: Raw) -> Raw {
    let msgs = [MSG; BATCH];
    for _ in 0..f.msgs / BATCH {
        f.q.put_many(black_box(&msgs)).unwrap();
        black_box(f.q.get_many_into(&mut f.batch, BATCH).unwrap());
    }
    f
}

// `put_loan(8)`, fill, `commit` + `get_into`: the write loan.
#[library_benchmark(setup = raw, teardown = raw_done)]
#[bench::msgs_1000(N)]
fn loan_write(mut f: Raw) -> Raw {
    for _ in 0..f.msgs {
        let mut loan = f.q.put_loan(MSG.len()).unwrap();
        loan.as_mut_slice().copy_from_slice(black_box(&MSG));
        loan.commit().unwrap();
        black_box(f.q.get_into(&mut f.buf).unwrap());
    }
    f
}

// `put` + `get_loan`, read the bytes in place, `commit`: the read loan.
#[library_benchmark(setup = raw, teardown = raw_done)]
#[bench::msgs_1000(N)]
fn loan_read(f: Raw) -> Raw {
    for _ in 0..f.msgs {
        f.q.put(black_box(&MSG)).unwrap();
        let loan = f.q.get_loan().unwrap();
        black_box(loan.bytes());
        loan.commit();
    }
    f
}

// Both loans: `put_loan` + fill + `commit`, then `get_loan` + read + `commit`.
#[library_benchmark(setup = raw, teardown = raw_done)]
#[bench::msgs_1000(N)]
fn loan_both(f: Raw) -> Raw {
    for _ in 0..f.msgs {
        let mut loan = f.q.put_loan(MSG.len()).unwrap();
        loan.as_mut_slice().copy_from_slice(black_box(&MSG));
        loan.commit().unwrap();
        let loan = f.q.get_loan().unwrap();
        black_box(loan.bytes());
        loan.commit();
    }
    f
}

/// A typed queue (postcard or `Pod`), warmed with one message.
struct Typed<Q> {
    q: Q,
    name: String,
    msgs: usize,
}

fn typed(msgs: usize) -> Typed<Queue<u64>> {
    let name = unique("typed");
    let q = Queue::<u64>::create_with(name.as_str(), &opts()).expect("create the queue");
    q.put(&1).unwrap();
    assert_eq!(q.get().unwrap(), 1);
    Typed { q, name, msgs }
}

fn typed_done(f: Typed<Queue<u64>>) {
    assert!(f.q.is_empty(), "a case left messages behind");
    drop(f.q);
    let _ = shmq::remove(&f.name);
}

// `Queue<u64>` (postcard) `put` + `get`.
#[library_benchmark(setup = typed, teardown = typed_done)]
#[bench::msgs_1000(N)]
fn typed_u64(f: Typed<Queue<u64>>) -> Typed<Queue<u64>> {
    for i in 0..f.msgs as u64 {
        f.q.put(black_box(&i)).unwrap();
        black_box(f.q.get().unwrap());
    }
    f
}

fn pod(msgs: usize) -> Typed<PodQueue<u64>> {
    let name = unique("pod");
    let q = PodQueue::<u64>::create_with(name.as_str(), &opts()).expect("create the queue");
    q.put(&1).unwrap();
    assert_eq!(q.get().unwrap(), 1);
    Typed { q, name, msgs }
}

fn pod_done(f: Typed<PodQueue<u64>>) {
    assert!(f.q.is_empty(), "a case left messages behind");
    drop(f.q);
    let _ = shmq::remove(&f.name);
}

// `PodQueue<u64>` `put` + `get`.
#[library_benchmark(setup = pod, teardown = pod_done)]
#[bench::msgs_1000(N)]
fn pod_u64(f: Typed<PodQueue<u64>>) -> Typed<PodQueue<u64>> {
    for i in 0..f.msgs as u64 {
        f.q.put(black_box(&i)).unwrap();
        black_box(f.q.get().unwrap());
    }
    f
}

/// The in-process reference: a bounded crossbeam channel, one thread.
struct Channel {
    tx: crossbeam_channel::Sender<Vec<u8>>,
    rx: crossbeam_channel::Receiver<Vec<u8>>,
    msgs: usize,
}

fn channel(msgs: usize) -> Channel {
    let (tx, rx) = crossbeam_channel::bounded(1024);
    tx.send(MSG.to_vec()).unwrap();
    rx.recv().unwrap();
    Channel { tx, rx, msgs }
}

// crossbeam-channel `send` + `recv` of an 8-byte `Vec<u8>`, its allocation and free included.
#[library_benchmark(setup = channel)]
#[bench::msgs_1000(N)]
fn crossbeam_vec8(c: Channel) -> Channel {
    for _ in 0..c.msgs {
        c.tx.send(black_box(&MSG).to_vec()).unwrap();
        drop(black_box(c.rx.recv().unwrap()));
    }
    c
}

library_benchmark_group!(
    name = raw_single,
    benchmarks = [
        raw_put_get,
        raw_put_get_timeout,
        raw_try_put_get,
        raw_put_only,
        raw_get_only
    ]
);
library_benchmark_group!(name = raw_batch, benchmarks = [raw_batch64]);
library_benchmark_group!(
    name = loans,
    benchmarks = [loan_write, loan_read, loan_both]
);
library_benchmark_group!(name = typed_queues, benchmarks = [typed_u64, pod_u64]);
library_benchmark_group!(name = reference, benchmarks = [crossbeam_vec8]);

main!(
    library_benchmark_groups = raw_single,
    raw_batch,
    loans,
    typed_queues,
    reference
);
