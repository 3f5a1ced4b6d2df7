//! Writes the seed corpora under `fuzz/corpus/` (run from `fuzz/`:
//! `cargo run --example gen_seeds`). The seeds are committed; rerun after a layout change.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::atomic::Ordering;

use shmq::internal::{Block, HeapRing, Ring};

fn put(r: &HeapRing, msg: &[u8]) {
    r.put_batch(1, Block::No, |_| Ok(msg.len()), |_, slot| slot.write(msg))
        .unwrap();
}

fn get(r: &HeapRing) {
    r.get_batch(1, Block::No, |_| {}).unwrap();
}

fn write(dir: &Path, name: &str, bytes: &[u8]) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join(name), bytes).unwrap();
}

fn hostile(dir: &Path, name: &str, flags: u8, ops: &[u8], img: &[u8]) {
    let mut v = vec![flags, ops.len() as u8];
    v.extend_from_slice(ops);
    v.extend_from_slice(img);
    write(dir, name, &v);
}

fn main() {
    let base = Path::new("corpus");
    // --- hostile_segment: real images in several states.
    let d = base.join("hostile_segment");
    let ops = [0u8, 8, 2, 3, 1, 4, 0x12, 0x21, 5, 0, 1, 2];
    let r = Ring::in_memory(256).unwrap();
    hostile(&d, "empty", 0, &ops, &r.to_bytes());
    hostile(&d, "empty-file", 1, &ops, &r.to_bytes());
    for i in 0..5u8 {
        put(&r, &vec![i; 20 + i as usize * 7]);
    }
    hostile(&d, "five", 0, &ops, &r.to_bytes());
    hostile(&d, "five-file", 1, &ops, &r.to_bytes());
    for _ in 0..4 {
        get(&r);
    }
    put(&r, &[9; 150]); // wraps: skip record + message at 0
    hostile(&d, "wrapped", 0, &ops, &r.to_bytes());
    hostile(&d, "wrapped-file", 1, &ops, &r.to_bytes());
    // Dead lock holders with a half-done put (pending words ahead of tail).
    let h = r.header();
    h.prod.lock.store(4_194_305 | (1 << 31), Ordering::Relaxed);
    h.cons.lock.store(4_194_306, Ordering::Relaxed);
    h.prod
        .pending_tail
        .store(h.prod.tail.load(Ordering::Relaxed) + 64, Ordering::Relaxed);
    hostile(&d, "dead-holders", 0, &ops, &r.to_bytes());
    r.close();
    hostile(&d, "closed", 0, &ops, &r.to_bytes());
    let big = Ring::in_memory(4096).unwrap();
    for i in 0..30u8 {
        put(&big, &vec![i; i as usize * 5]);
    }
    hostile(&d, "big", 0, &ops, &big.to_bytes());
    // --- codec: valid encodings of each selectable type.
    let d = base.join("codec");
    write(
        &d,
        "u64",
        &[&[0u8][..], &postcard::to_allocvec(&123456789u64).unwrap()].concat(),
    );
    write(
        &d,
        "string",
        &[&[1u8][..], &postcard::to_allocvec("héllo").unwrap()].concat(),
    );
    write(
        &d,
        "vec",
        &[
            &[2u8][..],
            &postcard::to_allocvec(&vec![1u8, 2, 3]).unwrap(),
        ]
        .concat(),
    );
    write(
        &d,
        "tuple",
        &[&[3u8][..], &postcard::to_allocvec(&("ab", 7u32)).unwrap()].concat(),
    );
    write(&d, "event", &[4u8, 0, 5, 3, b'a', b'b', b'c']);
    write(&d, "event-nested", &[4u8, 3, 1, 2, 1, b'x', 1, 7, 0, 1]);
    write(&d, "job", &[5u8, 1, 1, b'u', 1, 1, b't', 0, 0, 128, 63, 0]);
    let mut m = BTreeMap::new();
    m.insert("k".to_string(), vec![-1i64, 300]);
    write(
        &d,
        "map",
        &[&[7u8][..], &postcard::to_allocvec(&m).unwrap()].concat(),
    );
    write(
        &d,
        "opt",
        &[
            &[8u8][..],
            &postcard::to_allocvec(&Some(('é', true, -5i128))).unwrap(),
        ]
        .concat(),
    );
    write(&d, "pod-u64", &[9u8, 1, 2, 3, 4, 5, 6, 7, 8]);
    write(&d, "pod-u32x3", &[10u8; 13]);
    write(&d, "ring-event", &[0x84, 1, 2, 0, 1, 0, 0, 0]);
    // --- ring_ops: arbitrary-encoded op sequences (any bytes decode to some sequence).
    let d = base.join("ring_ops");
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    for i in 0..8 {
        let n = 64 << (i % 4);
        let v: Vec<u8> = (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect();
        write(&d, &format!("random-{i}"), &v);
    }
    println!("seeds written under {}", base.display());
}
