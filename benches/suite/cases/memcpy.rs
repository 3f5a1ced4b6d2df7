//! `memcpy/<row>/<size>`: the copy floor on the parent's CPU, `memcpy-hot` (source and
//! destination in cache) and `memcpy-stream` (both much larger than every cache).

use std::time::Instant;

use criterion::{BenchmarkId, Criterion, SamplingMode, Throughput};

use super::Ctx;
use crate::payloads::SIZES;
use crate::place::{pin, PARENT_CPU};

/// The `memcpy` group.
pub fn run(c: &mut Criterion, cx: &mut Ctx) {
    let mut g = c.benchmark_group("memcpy");
    g.sampling_mode(SamplingMode::Flat);
    // Streaming: source and destination much larger than every cache.
    let big = if cx.quick { 16 << 20 } else { 1 << 30 };
    let mut src: Vec<u8> = Vec::new();
    let mut dst: Vec<u8> = Vec::new();
    for &size in &SIZES {
        g.throughput(Throughput::Bytes(size as u64));
        for row in ["memcpy-hot", "memcpy-stream"] {
            let id = format!("memcpy/{row}/{size}");
            if !cx.wants(&id) {
                continue;
            }
            pin(Some(PARENT_CPU));
            let mut samples = Vec::new();
            if row == "memcpy-hot" {
                let s = vec![0xa5u8; size];
                let mut d = vec![0u8; size];
                g.bench_with_input(BenchmarkId::new(row, size), &size, |b, _| {
                    b.iter_custom(|iters| {
                        let t = Instant::now();
                        for _ in 0..iters {
                            d.copy_from_slice(std::hint::black_box(&s));
                            std::hint::black_box(&mut d);
                        }
                        let e = t.elapsed();
                        samples.push((iters, e));
                        e
                    })
                });
            } else {
                if src.is_empty() {
                    src = vec![0xa5u8; big];
                    dst = vec![1u8; big];
                }
                let mut pos = 0usize;
                g.bench_with_input(BenchmarkId::new(row, size), &size, |b, _| {
                    b.iter_custom(|iters| {
                        let t = Instant::now();
                        for _ in 0..iters {
                            if pos + size > big {
                                pos = 0;
                            }
                            dst[pos..pos + size].copy_from_slice(&src[pos..pos + size]);
                            std::hint::black_box(&mut dst);
                            pos += size;
                        }
                        let e = t.elapsed();
                        samples.push((iters, e));
                        e
                    })
                });
            }
            cx.res.add("tput", row, size, "-", &samples);
            pin(None);
        }
    }
    g.finish();
}
