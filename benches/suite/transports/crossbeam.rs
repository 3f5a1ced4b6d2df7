//! The `crossbeam` row: crossbeam-channel between two threads of this process, the
//! in-process reference for throughput and round trips.

use std::time::{Duration, Instant};

use criterion::BenchmarkId;

use crate::payloads::{with_payload, Payload};
use crate::place::{pin, Place};

/// Throughput of `size`-byte messages to a consumer thread placed by `place`; the channel
/// holds about as many bytes in slots as a ring of `ring_cap` bytes (the rings of the other
/// rows in the same condition).
//
// With an 8-byte payload `P` is `u64`, whose `clone` clippy would rather see as a copy.
#[allow(clippy::clone_on_copy)]
pub fn tput(
    g: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    bid: BenchmarkId,
    size: usize,
    ring_cap: usize,
    place: Place,
    samples: &mut Vec<(u64, Duration)>,
) {
    let slots = (ring_cap / size.max(16)).max(4);
    with_payload!(size, P => {
        let (tx, rx) = crossbeam_channel::bounded::<P>(slots);
        let (ctl, ctl_rx) = crossbeam_channel::bounded::<u64>(1);
        let (ack_tx, ack) = crossbeam_channel::bounded::<()>(1);
        let cpu = place.peer_cpu();
        let t = std::thread::spawn(move || {
            pin(Some(cpu));
            while let Ok(n) = ctl_rx.recv() {
                for _ in 0..n {
                    // Read the message, as every other row's consumer does (before session
                    // 5 this row dropped it unread: at 64 KiB and 1 MiB the payload never
                    // crossed to the consumer's CPU).
                    std::hint::black_box(rx.recv().unwrap().touch());
                }
                ack_tx.send(()).unwrap();
            }
        });
        let msg = P::make(size);
        g.bench_with_input(bid, &size, |b, _| {
            b.iter_custom(|iters| {
                ctl.send(iters).unwrap();
                let t = Instant::now();
                for _ in 0..iters {
                    tx.send(msg.clone()).unwrap();
                }
                ack.recv().unwrap();
                let e = t.elapsed();
                samples.push((iters, e));
                e
            })
        });
        drop(ctl);
        t.join().unwrap();
    })
}

/// Round trips of one `size`-byte `Vec` to an echo thread on `cpu` and back; every round
/// trip's time goes to `lat`.
pub fn round_trips(
    g: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    bid: BenchmarkId,
    size: usize,
    cpu: usize,
    samples: &mut Vec<(u64, Duration)>,
    lat: &mut Vec<u64>,
) {
    let (dtx, drx) = crossbeam_channel::bounded::<Vec<u8>>(1);
    let (utx, urx) = crossbeam_channel::bounded::<Vec<u8>>(1);
    let t = std::thread::spawn(move || {
        pin(Some(cpu));
        let mut buf = vec![0u8; size];
        while let Ok(m) = drx.recv() {
            buf.copy_from_slice(&m);
            if utx.send(m).is_err() {
                break;
            }
        }
    });
    let mut msg = vec![0xa5u8; size];
    g.bench_with_input(bid, &size, |b, _| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let t = Instant::now();
                dtx.send(std::mem::take(&mut msg)).unwrap();
                msg = urx.recv().unwrap();
                let e = t.elapsed();
                lat.push(e.as_nanos() as u64);
                total += e;
            }
            samples.push((iters, total));
            total
        })
    });
    drop(dtx);
    t.join().unwrap();
}
