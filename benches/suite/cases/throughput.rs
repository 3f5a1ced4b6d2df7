//! `tput/<row>/<place>/<size>`: throughput, parent = producer, peer = consumer, one message
//! per iteration, for every cross-process row plus `crossbeam`.

use std::time::Instant;

use criterion::{BenchmarkId, Criterion, SamplingMode, Throughput};

use super::Ctx;
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
                let id = format!("tput/{row}/{}/{size}", place.name());
                if !cx.wants(&id) {
                    continue;
                }
                pin(Some(PARENT_CPU));
                let mut samples = Vec::new();
                if row == "crossbeam" {
                    crossbeam::tput(&mut g, size, place, &mut samples);
                } else {
                    let pending = parent_link(row, size);
                    let mut peer = Peer::spawn("tput", place.peer_cpu(), &pending.spec);
                    let (mut send, _recv) = (pending.finish)();
                    assert_eq!(peer.ack(), b'r');
                    g.bench_with_input(
                        BenchmarkId::new(format!("{row}/{}", place.name()), size),
                        &size,
                        |b, _| {
                            b.iter_custom(|iters| {
                                peer.go(iters);
                                let t = Instant::now();
                                send(iters);
                                assert_eq!(peer.ack(), b'k');
                                let e = t.elapsed();
                                samples.push((iters, e));
                                e
                            })
                        },
                    );
                }
                cx.res.add("tput", row, size, place.name(), &samples);
                pin(None);
            }
        }
    }
    g.finish();
}
