//! `memcpy/<row>/<size>`: the copy floor on the parent's CPU, `memcpy-hot` (source and
//! destination in cache, a quarter page apart modulo a page: see [`hot_pair`]) and
//! `memcpy-stream` (both much larger than every cache).

use std::time::Instant;

use criterion::{BenchmarkId, Criterion, SamplingMode, Throughput};

use super::Ctx;
use crate::payloads::SIZES;
use crate::place::{pin, PARENT_CPU};

/// A page: the period of the address aliasing that [`hot_pair`] steers clear of.
const PAGE: usize = 4096;

/// The hot copy's source and destination, `size` bytes each inside `s` and `d` (which have
/// `PAGE` bytes to spare), placed so that `dst - src ≡ PAGE / 4 (mod PAGE)`.
///
/// Two equal allocations made one after the other put the destination 16 bytes past the
/// source modulo 4 KiB, and there `rep movsb` (glibc's copy for these sizes) on the suite's
/// AMD EPYC VM runs at 1-2 GB/s instead of 20-50 GB/s: measured with `dst - src` from 8 to
/// 24 bytes (mod 4 KiB) slow, 0 and 32 and up normal, 64 KiB taking ~40 µs instead of ~2 µs.
/// A floor should not measure that accident of the allocator.
fn hot_pair<'a>(s: &'a [u8], d: &'a mut [u8], size: usize) -> (&'a [u8], &'a mut [u8]) {
    let (sa, da) = (s.as_ptr() as usize, d.as_ptr() as usize);
    let doff = (sa + PAGE / 4).wrapping_sub(da) % PAGE;
    let dst = &mut d[doff..doff + size];
    debug_assert_eq!((dst.as_ptr() as usize).wrapping_sub(sa) % PAGE, PAGE / 4);
    (&s[..size], dst)
}

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
                let (s, mut d) = (vec![0xa5u8; size + PAGE], vec![0u8; size + PAGE]);
                let (src, dst) = hot_pair(&s, &mut d, size);
                g.bench_with_input(BenchmarkId::new(row, size), &size, |b, _| {
                    b.iter_custom(|iters| {
                        let t = Instant::now();
                        for _ in 0..iters {
                            dst.copy_from_slice(std::hint::black_box(src));
                            std::hint::black_box(&mut *dst);
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
            cx.res.add("tput", row, size, "-", None, &samples);
            pin(None);
        }
    }
    g.finish();
}
