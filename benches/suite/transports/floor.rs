//! The `floor` row: the physical floor of a round trip, two threads spinning on one word.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use criterion::BenchmarkId;

use crate::place::pin;

/// Two buffers and a sequence word shared by the two threads of the `floor` row.
struct Floor {
    seq: AtomicU64,
    down: std::cell::UnsafeCell<Vec<u8>>,
    up: std::cell::UnsafeCell<Vec<u8>>,
}

// SAFETY: `down` is written only by the pinger while `seq` is even and read only by the
// echoer while it is odd (and `up` the other way round); the Release stores and Acquire
// loads of `seq` order those accesses, so they never overlap.
unsafe impl Sync for Floor {}

/// The physical floor of a round trip: two threads spinning on one word, each copying the
/// payload into a shared buffer and out again (the same four copies as a queue round
/// trip), with no locks, counters, validation or yields. Only meaningful on two CPUs.
pub fn round_trips(
    g: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    bid: BenchmarkId,
    size: usize,
    cpu: usize,
    samples: &mut Vec<(u64, Duration)>,
    lat: &mut Vec<u64>,
) {
    let f = std::sync::Arc::new(Floor {
        seq: AtomicU64::new(0),
        down: std::cell::UnsafeCell::new(vec![0u8; size]),
        up: std::cell::UnsafeCell::new(vec![0u8; size]),
    });
    const STOP: u64 = u64::MAX;
    let f2 = f.clone();
    // The echoer says when it is on its CPU, and this thread sleeps until then: it inherits
    // this thread's CPU, and under a real-time policy (`chrt -f`) a spinning pinger of the
    // same priority would never let it run there to move itself.
    let (pinned_tx, pinned_rx) = std::sync::mpsc::channel();
    let t = std::thread::spawn(move || {
        pin(Some(cpu));
        let _ = pinned_tx.send(());
        let mut local = vec![0u8; size];
        let mut want = 1u64;
        loop {
            let s = f2.seq.load(Ordering::Acquire);
            if s == STOP {
                break;
            }
            if s != want {
                std::hint::spin_loop();
                continue;
            }
            // SAFETY: seq is odd (our turn): the pinger does not touch the buffers now.
            unsafe {
                local.copy_from_slice(&*f2.down.get());
                (*f2.up.get()).copy_from_slice(&local);
            }
            f2.seq.store(want + 1, Ordering::Release);
            want += 2;
        }
    });
    let _ = pinned_rx.recv();
    let msg = vec![0xa5u8; size];
    let mut back = vec![0u8; size];
    let mut next = 0u64;
    g.bench_with_input(bid, &size, |b, _| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let t = Instant::now();
                // SAFETY: seq is even (our turn): the echoer does not touch the buffers.
                unsafe { (*f.down.get()).copy_from_slice(&msg) };
                f.seq.store(next + 1, Ordering::Release);
                while f.seq.load(Ordering::Acquire) != next + 2 {
                    std::hint::spin_loop();
                }
                // SAFETY: seq is even again: the echoer is done with `up`.
                unsafe { back.copy_from_slice(&*f.up.get()) };
                next += 2;
                let e = t.elapsed();
                lat.push(e.as_nanos() as u64);
                total += e;
            }
            samples.push((iters, total));
            total
        })
    });
    f.seq.store(STOP, Ordering::Release);
    t.join().unwrap();
}
