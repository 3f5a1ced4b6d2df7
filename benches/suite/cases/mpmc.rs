//! `mpmc/shmq-raw-<n>x<n>/<place>/64`: N producer and N consumer peers on one `RawQueue`
//! (producers on the parent's CPU, consumers on the place's peer CPU); the parent only
//! coordinates.

use std::time::Instant;

use criterion::{BenchmarkId, Criterion, SamplingMode, Throughput};
use shmq::RawQueue;

use super::Ctx;
use crate::payloads::MPMC_SIZE;
use crate::peer::{next_cmd, send_byte, Peer};
use crate::place::{Place, PARENT_CPU};
use crate::transports::shmq::shmq_opts;
use crate::transports::unique_key;

/// The `mpmc` group.
pub fn run(c: &mut Criterion, cx: &mut Ctx) {
    let mut g = c.benchmark_group("mpmc");
    g.sampling_mode(SamplingMode::Flat);
    g.throughput(Throughput::Elements(1));
    for place in Place::ALL {
        for n in [1usize, 2, 4] {
            let row = format!("shmq-raw-{n}x{n}");
            let id = format!("mpmc/{row}/{}/{MPMC_SIZE}", place.name());
            if !cx.wants(&id) {
                continue;
            }
            let key = unique_key();
            let q = RawQueue::create_with(key.as_str(), &shmq_opts(MPMC_SIZE)).unwrap();
            let args = format!("{MPMC_SIZE} {key}");
            let mut prods: Vec<Peer> = (0..n)
                .map(|_| Peer::spawn("mprod", PARENT_CPU, &args))
                .collect();
            let mut cons: Vec<Peer> = (0..n)
                .map(|_| Peer::spawn("mcons", place.peer_cpu(), &args))
                .collect();
            for p in prods.iter_mut().chain(cons.iter_mut()) {
                assert_eq!(p.ack(), b'r');
            }
            let mut samples = Vec::new();
            g.bench_with_input(
                BenchmarkId::new(format!("{row}/{}", place.name()), MPMC_SIZE),
                &MPMC_SIZE,
                |b, _| {
                    b.iter_custom(|iters| {
                        let per = iters.div_ceil(n as u64).max(1);
                        let t = Instant::now();
                        for p in prods.iter_mut().chain(cons.iter_mut()) {
                            p.go(per);
                        }
                        for p in prods.iter_mut().chain(cons.iter_mut()) {
                            assert_eq!(p.ack(), b'k');
                        }
                        let e = t.elapsed();
                        // Scale to the requested count (per * n >= iters messages moved).
                        let e = e.mul_f64(iters as f64 / (per * n as u64) as f64);
                        samples.push((iters, e));
                        e
                    })
                },
            );
            drop(prods);
            drop(cons);
            drop(q);
            cx.res
                .add("mpmc", &row, MPMC_SIZE, place.name(), None, &samples);
        }
    }
    g.finish();
}

/// A producer (`mprod`) or consumer (`mcons`) peer; args `<size> <queue name>`.
pub fn peer(kind: &str, args: &[&str]) {
    let (size, key) = (args[0].parse::<usize>().unwrap(), args[1]);
    let q = RawQueue::open(key).unwrap();
    let msg = vec![0xa5u8; size];
    let mut buf = Vec::with_capacity(size);
    send_byte(b'r');
    while let Some(n) = next_cmd() {
        for _ in 0..n {
            if kind == "mprod" {
                q.put(&msg).unwrap();
            } else {
                q.get_into(&mut buf).unwrap();
            }
        }
        send_byte(b'k');
    }
}
