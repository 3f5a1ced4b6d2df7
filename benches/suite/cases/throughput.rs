//! `tput/<row>/<place>/<size>[/<ring>][/<style>]`: throughput, parent = producer, peer =
//! consumer, one message per iteration, for every cross-process row plus `crossbeam`; every
//! row at both ring sizes if it has a ring, and shmq's rows in both call styles
//! ([`crate::cond`]). The conditions of one row and size run one after the other, so that
//! they meet about the same load.

use std::time::Instant;

use criterion::{BenchmarkId, Criterion, SamplingMode, Throughput};

use super::Ctx;
use crate::cond::Cond;
use crate::payloads::SIZES;
use crate::peer::Peer;
use crate::place::{pin, Place, PARENT_CPU};
use crate::transports::{crossbeam, parent_link, ROWS};

/// The `tput` group.
pub fn run(c: &mut Criterion, cx: &mut Ctx) {
    let mut g = c.benchmark_group("tput");
    g.sampling_mode(SamplingMode::Flat);
    for &size in &SIZES {
        g.throughput(Throughput::Bytes(size as u64));
        for place in Place::ALL {
            for row in ROWS.iter().copied().chain(["crossbeam"]) {
                for cond in Cond::all_for(row) {
                    let suffix = cond.suffix(row);
                    let id = format!("tput/{row}/{}/{size}{suffix}", place.name());
                    if !cx.wants(&id) {
                        continue;
                    }
                    let bid = BenchmarkId::new(
                        format!("{row}/{}", place.name()),
                        format!("{size}{suffix}"),
                    );
                    pin(Some(PARENT_CPU));
                    let mut samples = Vec::new();
                    if row == "crossbeam" {
                        crossbeam::tput(
                            &mut g,
                            bid,
                            size,
                            cond.ring.cap(size),
                            place,
                            &mut samples,
                        );
                    } else {
                        let pending = parent_link(row, size, cond);
                        let mut peer = Peer::spawn("tput", place.peer_cpu(), &pending.spec);
                        let (mut send, _recv) = (pending.finish)();
                        assert_eq!(peer.ack(), b'r');
                        g.bench_with_input(bid, &size, |b, _| {
                            b.iter_custom(|iters| {
                                peer.go(iters);
                                let t = Instant::now();
                                send(iters);
                                assert_eq!(peer.ack(), b'k');
                                let e = t.elapsed();
                                samples.push((iters, e));
                                e
                            })
                        });
                    }
                    cx.res
                        .add("tput", row, size, place.name(), Some(cond), &samples);
                    pin(None);
                }
            }
        }
    }
    g.finish();
}
