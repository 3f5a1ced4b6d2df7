//! `hostile_segment`: arbitrary bytes as a whole segment image (header, lock words,
//! positions, counters, frames), then open it and use it. Any `Err` is fine; a panic, an
//! out-of-bounds access (AddressSanitizer), an infinite loop or a hang (libFuzzer
//! `-timeout`) is a bug.
//!
//! Input layout: byte 0 = flags, byte 1 = number of operations `n` (mod 32), the next `n`
//! bytes = operation codes, the rest = the segment image (`RING_OFFSET + capacity` bytes
//! or more; the seeds in `corpus/hostile_segment` are real images).
//!
//! * flags bit 0: also write the image to a file in /dev/shm and go through the real
//!   `Segment::open` validation (`RawQueue::open_at`) instead of `Ring::from_bytes`.
//! * Lock words are kept as the input has them: a lock word names a holder id, and an id
//!   is alive only while some handle holds its liveness lock (see `shmq::internal::Holder`),
//!   which no id in an input image does. So every non-zero lock word is a dead holder and
//!   recovery and repair run on hostile state.
#![no_main]

use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use shmq::internal::{Block, HeapRing, Ring};
use shmq::internal::{INIT_DONE, MAGIC, RING_OFFSET};

fn short() -> Block {
    Block::Until(Some(Instant::now() + Duration::from_millis(2)))
}

fn ops_on_ring(r: &HeapRing, ops: &[u8]) {
    let mut buf = Vec::new();
    for &op in ops {
        let arg = (op >> 3) as usize;
        let _ = match op & 7 {
            0 => r.get_batch(1 + arg % 4, Block::No, |rec| {
                buf.clear();
                rec.extend_vec(&mut buf);
            }),
            1 => r.get_batch(1, short(), |rec| {
                buf.clear();
                rec.extend_vec(&mut buf);
            }),
            2 | 3 => {
                let len = arg * 13;
                let block = if op & 7 == 2 { Block::No } else { short() };
                r.put_batch(
                    1 + arg % 3,
                    block,
                    |_| Ok(len),
                    |_, slot| slot.write(&vec![op; len]),
                )
            }
            4 => {
                let _ = r.stats();
                Ok(r.len())
            }
            5 => {
                r.close();
                Ok(0)
            }
            _ => Ok(r.is_empty() as usize),
        };
    }
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let flags = data[0];
    let n = (data[1] % 32) as usize;
    if data.len() < 2 + n {
        return;
    }
    let ops = &data[2..2 + n];
    let img = data[2 + n..].to_vec();

    if flags & 1 == 1 && img.len() >= RING_OFFSET as usize {
        // Only images that `open` answers at once: an uninitialised header makes `open` wait
        // for a creator (bounded, 2 s), which is covered by tests/hardening.rs instead.
        let magic = u64::from_le_bytes(img[0..8].try_into().unwrap());
        let init = u32::from_le_bytes(img[36..40].try_into().unwrap());
        if init == INIT_DONE || (magic != 0 && magic != MAGIC) {
            let path = std::path::Path::new("/dev/shm")
                .join(format!("shmq-fuzz-{}.seg", std::process::id()));
            let _ = std::fs::remove_file(&path);
            std::fs::write(&path, &img).unwrap();
            if let Ok(q) = shmq::RawQueue::open_at(&path) {
                let mut buf = Vec::new();
                for &op in ops {
                    let _ = match op & 3 {
                        0 => q.try_get_into(&mut buf),
                        1 => q.get_into_timeout(&mut buf, Duration::from_millis(2)),
                        2 => q.try_put(&vec![op; (op as usize) * 3]).map(|_| 0),
                        _ => q.put_timeout(&[op; 5], Duration::from_millis(2)).map(|_| 0),
                    };
                    let _ = q.stats();
                }
            }
            let _ = std::fs::remove_file(&path);
            return;
        }
    }

    let Ok(mut r) = Ring::from_bytes(&img) else {
        return;
    };
    r.set_spin(Duration::ZERO);
    ops_on_ring(&r, ops);
});
