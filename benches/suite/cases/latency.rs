//! `rtt/<row>/<place>/<size>`: round trips (ping-pong); the parent times every round trip
//! and the results keep its p50, p99 and p99.9 besides criterion's figure.

use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, SamplingMode};

use super::Ctx;
use crate::payloads::LAT_SIZES;
use crate::peer::Peer;
use crate::place::{pin, Place, PARENT_CPU};
use crate::results::percentiles;
use crate::transports::{crossbeam, floor, parent_link};

/// Rows of the round-trip table.
const LAT_ROWS: [&str; 6] = [
    "shmq-raw",
    "ipmpsc-zc",
    "ipc-bytes",
    "uds",
    "crossbeam",
    "floor",
];

/// The `rtt` group.
pub fn run(c: &mut Criterion, cx: &mut Ctx) {
    let mut g = c.benchmark_group("rtt");
    g.sampling_mode(SamplingMode::Flat);
    for &size in &LAT_SIZES {
        for place in Place::ALL {
            for row in LAT_ROWS {
                let id = format!("rtt/{row}/{}/{size}", place.name());
                if !cx.wants(&id) {
                    continue;
                }
                pin(Some(PARENT_CPU));
                let mut samples = Vec::new();
                let mut lat: Vec<u64> = Vec::new();
                let bid = BenchmarkId::new(format!("{row}/{}", place.name()), size);
                if row == "floor" {
                    if place == Place::Same {
                        pin(None);
                        continue;
                    }
                    floor::round_trips(&mut g, bid, size, place.peer_cpu(), &mut samples, &mut lat);
                } else if row == "crossbeam" {
                    crossbeam::round_trips(
                        &mut g,
                        bid,
                        size,
                        place.peer_cpu(),
                        &mut samples,
                        &mut lat,
                    );
                } else {
                    let pending = parent_link(row, size);
                    let mut peer = Peer::spawn("echo", place.peer_cpu(), &pending.spec);
                    let (mut send, mut recv) = (pending.finish)();
                    assert_eq!(peer.ack(), b'r');
                    g.bench_with_input(bid, &size, |b, _| {
                        b.iter_custom(|iters| {
                            peer.go(iters);
                            let mut total = Duration::ZERO;
                            for _ in 0..iters {
                                let t = Instant::now();
                                send(1);
                                recv(1);
                                let e = t.elapsed();
                                lat.push(e.as_nanos() as u64);
                                total += e;
                            }
                            assert_eq!(peer.ack(), b'k');
                            samples.push((iters, total));
                            total
                        })
                    });
                }
                cx.res.add("rtt", row, size, place.name(), &samples);
                if !lat.is_empty() {
                    let (p50, p99, p999) = percentiles(&mut lat);
                    cx.res.latency.push((
                        row.into(),
                        size,
                        place.name().into(),
                        p50,
                        p99,
                        p999,
                        lat.len(),
                    ));
                }
                pin(None);
            }
        }
    }
    g.finish();
}
