//! `rtt/<row>/<place>/<size>[/<ring>][/<style>]`: round trips (ping-pong); the parent times
//! every round trip and the results keep its p50, p99 and p99.9 besides criterion's figure.
//! The rings are the small ones ([`Ring::Small`]: a round trip has one message in flight, so
//! the ring's size does not come into it); shmq's row runs in both call styles.
//! `crossbeam` (a channel bounded to one message) and `floor` have no ring.

use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, SamplingMode};

use super::Ctx;
use crate::cond::{styles, Cond, Ring};
use crate::payloads::LAT_SIZES;
use crate::peer::Peer;
use crate::place::{pin, Place, PARENT_CPU};
use crate::results::{percentiles, CondFields, Latency};
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

/// The conditions of `row` in the round-trip group (`None`: a row without a ring).
fn rtt_conds(row: &str) -> Vec<Option<Cond>> {
    if row == "crossbeam" || row == "floor" {
        return vec![None];
    }
    styles(row)
        .iter()
        .map(|&style| {
            Some(Cond {
                ring: Ring::Small,
                style,
            })
        })
        .collect()
}

/// The `rtt` group.
pub fn run(c: &mut Criterion, cx: &mut Ctx) {
    let mut g = c.benchmark_group("rtt");
    g.sampling_mode(SamplingMode::Flat);
    for &size in &LAT_SIZES {
        for place in Place::ALL {
            for (row, cond) in LAT_ROWS
                .into_iter()
                .flat_map(|r| rtt_conds(r).into_iter().map(move |c| (r, c)))
            {
                let suffix = cond.map_or(String::new(), |c| c.suffix(row));
                let id = format!("rtt/{row}/{}/{size}{suffix}", place.name());
                if !cx.wants(&id) {
                    continue;
                }
                pin(Some(PARENT_CPU));
                let mut samples = Vec::new();
                let mut lat: Vec<u64> = Vec::new();
                let bid =
                    BenchmarkId::new(format!("{row}/{}", place.name()), format!("{size}{suffix}"));
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
                    let pending = parent_link(row, size, cond.unwrap_or(Cond::DEFAULT));
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
                cx.res.add("rtt", row, size, place.name(), cond, &samples);
                if !lat.is_empty() {
                    let (p50, p99, p999) = percentiles(&mut lat);
                    let round = cx.res.round;
                    cx.res.latency.push(Latency {
                        row: row.into(),
                        size,
                        place: place.name().into(),
                        cond: CondFields::of(row, size, cond),
                        p50,
                        p99,
                        p999,
                        n: lat.len(),
                        round,
                    });
                }
                pin(None);
            }
        }
    }
    g.finish();
}
