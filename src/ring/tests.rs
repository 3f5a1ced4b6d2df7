//! Unit tests of the ring on heap images: every position, padding, close, corruption.
use super::frame::{skip_len, MAX_POS};
use super::*;
use crate::segment;
use std::collections::VecDeque;

fn put(r: &HeapRing, msg: &[u8], block: Block) -> Result<usize> {
    r.put_batch(1, block, |_| Ok(msg.len()), |_, slot| slot.write(msg))
}

fn get(r: &HeapRing, block: Block) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    r.get_batch(1, block, |rec| rec.extend_vec(&mut out))?;
    Ok(out)
}

#[test]
fn header_offsets_match_struct() {
    let r = Ring::in_memory(256).unwrap();
    assert_eq!(r.capacity(), 256);
    assert_eq!(
        r.header().id.init.load(Ordering::Relaxed),
        segment::INIT_DONE
    );
}

#[test]
fn model_check_wraparound_sizes() {
    let r = Ring::in_memory(256).unwrap();
    let mut model = VecDeque::new();
    let mut seed = 12345u64;
    // Under Miri (some 1000 times slower) fewer steps: still dozens of wraps.
    let steps = if cfg!(miri) { 1_000 } else { 20_000u32 };
    for step in 0..steps {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let len = (seed >> 33) as usize % 120;
        if (seed >> 20).is_multiple_of(2) {
            let msg: Vec<u8> = (0..len).map(|i| (i as u32 + step) as u8).collect();
            match put(&r, &msg, Block::No) {
                Ok(1) => model.push_back(msg),
                Err(Error::Full) => {}
                other => panic!("{other:?}"),
            }
        } else {
            match get(&r, Block::No) {
                Ok(m) => assert_eq!(Some(m), model.pop_front()),
                Err(Error::Empty) => assert!(model.is_empty()),
                other => panic!("{other:?}"),
            }
        }
        assert_eq!(r.len(), model.len());
    }
}

/// On a closed ring a too-large message is `Closed` on the single path as on the batch
/// path (found by the ring_ops fuzz target after the single path took its own too-large
/// check).
#[test]
fn closed_wins_over_too_large_on_both_paths() {
    let r = Ring::in_memory(512).unwrap();
    let big = vec![7u8; r.max_message() + 1];
    assert!(matches!(
        put(&r, &big, Block::No),
        Err(Error::TooLarge { .. })
    ));
    r.close();
    assert!(matches!(put(&r, &big, Block::No), Err(Error::Closed)));
    let two = [big.clone(), big];
    let got = r.put_batch(2, Block::No, |i| Ok(two[i].len()), |i, s| s.write(&two[i]));
    assert!(matches!(got, Err(Error::Closed)), "{got:?}");
}

/// A corrupt put counter on a queue with a message bound is `Corrupt`, not `Full` for ever
/// (a trial found every put refused as full on an empty ring).
#[test]
fn corrupt_counter_under_a_message_bound_is_corrupt_not_full() {
    let mut img = Ring::in_memory(256).unwrap().to_bytes();
    let off =
        std::mem::offset_of!(Header, tasks) + std::mem::offset_of!(segment::Tasks, max_messages);
    img[off..off + 8].copy_from_slice(&4u64.to_ne_bytes());
    let pc =
        std::mem::offset_of!(Header, prod) + std::mem::offset_of!(segment::ProducerSide, put_count);
    img[pc..pc + 8].copy_from_slice(&0x0000_1000_0000_0000u64.to_ne_bytes());
    let r = Ring::from_bytes(&img).unwrap();
    for block in [
        Block::No,
        Block::timeout(Duration::from_millis(20)),
        Block::Until(None),
    ] {
        let e = put(&r, b"abc", block).unwrap_err();
        assert!(matches!(e, Error::Corrupt(_)), "{e:?}");
    }
}

#[test]
fn message_bound_is_enforced_and_a_get_wakes_a_blocked_put() {
    let mut img = Ring::in_memory(4096).unwrap().to_bytes();
    let off =
        std::mem::offset_of!(Header, tasks) + std::mem::offset_of!(segment::Tasks, max_messages);
    img[off..off + 8].copy_from_slice(&2u64.to_ne_bytes());
    let r = Ring::from_bytes(&img).unwrap();
    assert_eq!(r.max_messages(), 2);
    assert!(!r.is_full());
    put(&r, b"a", Block::No).unwrap();
    put(&r, b"b", Block::No).unwrap();
    assert!(r.is_full());
    assert!(matches!(put(&r, b"c", Block::No), Err(Error::Full)));
    assert!(matches!(
        put(&r, b"c", Block::timeout(Duration::from_millis(20))),
        Err(Error::Timeout)
    ));
    std::thread::scope(|s| {
        let t = s.spawn(|| put(&r, b"c", Block::Until(None)));
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(get(&r, Block::No).unwrap(), b"a");
        assert_eq!(t.join().unwrap().unwrap(), 1);
    });
    assert_eq!(r.len(), 2);
    assert_eq!(get(&r, Block::No).unwrap(), b"b");
    assert_eq!(get(&r, Block::No).unwrap(), b"c");
    assert!(!r.is_full());
}

#[test]
fn is_full_by_bytes() {
    let r = Ring::in_memory(64).unwrap();
    assert!(!r.is_full());
    put(&r, &[0; 56], Block::No).unwrap();
    assert!(r.is_full());
    get(&r, Block::No).unwrap();
    assert!(!r.is_full());
}

#[test]
fn whole_ring_message_fits_and_larger_is_too_large() {
    let r = Ring::in_memory(256).unwrap();
    put(&r, &[1; 100], Block::No).unwrap();
    get(&r, Block::No).unwrap();
    // A message of capacity - 8 bytes needs the whole ring: the producer removes the
    // padding it needs itself, since nothing else is queued.
    let big = vec![7u8; 248];
    put(&r, &big, Block::No).unwrap();
    assert_eq!(get(&r, Block::No).unwrap(), big);
    assert!(matches!(
        put(&r, &[0; 249], Block::No),
        Err(Error::TooLarge {
            size: 249,
            max: 248
        })
    ));
    assert!(matches!(put(&r, &[], Block::No), Ok(1)));
    assert_eq!(get(&r, Block::No).unwrap(), b"");
}

#[test]
fn corrupt_positions_and_frames_are_errors() {
    let r = Ring::in_memory(256).unwrap();
    put(&r, b"hello", Block::No).unwrap();
    let mut img = r.to_bytes();
    // Corrupt the frame tag.
    img[segment::RING_OFFSET as usize + 4] ^= 0xff;
    let bad = Ring::from_bytes(&img).unwrap();
    assert!(matches!(get(&bad, Block::No), Err(Error::Corrupt(_))));
    // Tail far beyond head.
    let r2 = Ring::in_memory(256).unwrap();
    r2.header().prod.tail.store(1 << 40, Ordering::Relaxed);
    assert!(matches!(get(&r2, Block::No), Err(Error::Corrupt(_))));
    assert!(matches!(put(&r2, b"x", Block::No), Err(Error::Corrupt(_))));
}

/// Run `f` while another thread of this process holds the consumer lock, and the
/// producer lock too if `producer`, as a stopped process would.
fn with_locks_held<T>(r: &HeapRing, producer: bool, f: impl FnOnce() -> T) -> T {
    let (held_tx, held_rx) = std::sync::mpsc::channel();
    let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
    std::thread::scope(|s| {
        s.spawn(move || {
            let _p = producer.then(|| r.hold_lock(true).unwrap());
            let _c = r.hold_lock(false).unwrap();
            held_tx.send(()).unwrap();
            let _ = done_rx.recv();
        });
        held_rx.recv().unwrap();
        let out = f();
        done_tx.send(()).unwrap();
        out
    })
}

#[test]
fn try_calls_do_not_wait_for_a_live_lock_holder() {
    let r = Ring::in_memory(256).unwrap();
    put(&r, b"x", Block::No).unwrap();
    with_locks_held(&r, true, || {
        let t = Instant::now();
        assert!(matches!(put(&r, b"y", Block::No), Err(Error::Full)));
        assert!(matches!(get(&r, Block::No), Err(Error::Empty)));
        assert!(matches!(
            get(&r, Block::timeout(Duration::from_millis(20))),
            Err(Error::Timeout)
        ));
        assert!(t.elapsed() < Duration::from_secs(5));
    });
    assert_eq!(get(&r, Block::No).unwrap(), b"x");
}

/// Issue 9, fault 1: a message that fits an empty ring is accepted at once, wherever
/// the positions stand (padding is removed by the producer itself).
#[test]
fn max_message_fits_an_empty_ring_at_any_position() {
    for (cap, first, big) in [
        (4096, 100, 4088),
        (4096, 2048, 2100),
        (4096, 2992, 3500),
        (4096, 4000, 4088),
        (4160, 100, 4152),
    ] {
        let r = Ring::in_memory(cap).unwrap();
        put(&r, &vec![1; first], Block::No).unwrap();
        assert_eq!(get(&r, Block::No).unwrap().len(), first);
        let msg = vec![9u8; big];
        put(&r, &msg, Block::timeout(Duration::ZERO)).unwrap();
        assert_eq!(get(&r, Block::No).unwrap(), msg);
        // And again, now that the ring has wrapped.
        put(&r, &msg, Block::No).unwrap();
        assert_eq!(get(&r, Block::No).unwrap(), msg);
        assert!(r.is_empty());
    }
}

/// Padding published by a producer that then gave up is removed by the next one.
#[test]
fn leftover_padding_does_not_block_a_later_put() {
    let r = Ring::in_memory(4096).unwrap();
    put(&r, &[1; 100], Block::No).unwrap();
    // A message is queued: the big one cannot fit; its padding gets published.
    assert!(matches!(put(&r, &[2; 4088], Block::No), Err(Error::Full)));
    assert_eq!(get(&r, Block::No).unwrap(), vec![1; 100]);
    put(&r, &[3; 4088], Block::No).unwrap();
    assert_eq!(get(&r, Block::No).unwrap(), vec![3; 4088]);
}

/// Issue 9, fault 1 across threads: a consumer asleep in an untimed get wakes for a
/// message whose put first had to publish padding.
#[test]
fn sleeping_consumer_wakes_after_padding() {
    let r = Ring::in_memory(4096).unwrap();
    put(&r, &[1; 100], Block::No).unwrap();
    get(&r, Block::No).unwrap();
    std::thread::scope(|s| {
        let c = s.spawn(|| get(&r, Block::timeout(Duration::from_secs(30))));
        std::thread::sleep(Duration::from_millis(50));
        put(&r, &[5; 4088], Block::timeout(Duration::from_secs(30))).unwrap();
        assert_eq!(c.join().unwrap().unwrap(), vec![5; 4088]);
    });
}

/// A producer that needs padding removed while a live consumer holds the consumer lock
/// does not wait on that lock for ever: `close` still wakes it.
#[test]
fn close_wakes_a_producer_waiting_for_padding_behind_a_busy_consumer_lock() {
    let r = Ring::in_memory(4096).unwrap();
    put(&r, &[1; 100], Block::No).unwrap();
    get(&r, Block::No).unwrap();
    with_locks_held(&r, false, || {
        std::thread::scope(|s| {
            let p = s.spawn(|| put(&r, &[2; 4088], Block::Until(None)));
            std::thread::sleep(Duration::from_millis(200));
            let t = Instant::now();
            r.close();
            assert!(matches!(p.join().unwrap(), Err(Error::Closed)));
            assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
        })
    });
}

/// `close` frees a producer waiting for the producer lock that a live, stuck holder
/// keeps, and a consumer waiting for the consumer lock once nothing is left to drain.
#[test]
fn close_frees_callers_waiting_for_a_held_lock() {
    let r = Ring::in_memory(256).unwrap();
    with_locks_held(&r, true, || {
        std::thread::scope(|s| {
            let p = s.spawn(|| put(&r, b"x", Block::Until(None)));
            let g = s.spawn(|| get(&r, Block::Until(None)));
            std::thread::sleep(Duration::from_millis(100));
            let t = Instant::now();
            r.close();
            assert!(matches!(p.join().unwrap(), Err(Error::Closed)));
            assert!(matches!(g.join().unwrap(), Err(Error::Closed)));
            assert!(t.elapsed() < Duration::from_secs(5), "{:?}", t.elapsed());
        })
    });
}

/// A frame records its length in 32 bits: a larger message is `TooLarge`, never torn.
#[test]
fn max_message_fits_a_frame() {
    assert_eq!(skip_len(FRAME + (1u64 << 33)), 0);
    let r = Ring::in_memory(256).unwrap();
    assert_eq!(r.max_message(), 248);
}

#[test]
fn hostile_positions_are_corrupt_not_overflow() {
    let r = Ring::in_memory(256).unwrap();
    let h = r.header();
    h.cons.head.store(u64::MAX - 7, Ordering::Relaxed);
    h.prod.tail.store(u64::MAX - 7, Ordering::Relaxed);
    assert!(matches!(put(&r, b"x", Block::No), Err(Error::Corrupt(_))));
    assert!(matches!(
        get(&r, Block::timeout(Duration::ZERO)),
        Err(Error::Corrupt(_)) | Err(Error::Timeout)
    ));
    h.prod.tail.store(MAX_POS - 8, Ordering::Relaxed);
    h.cons.head.store(MAX_POS - 8, Ordering::Relaxed);
    // Near the limit a put of padding + record lands past it: refused, no panic.
    let _ = put(&r, &[0; 200], Block::No);
    let _ = put(&r, &[0; 200], Block::No);
    let _ = get(&r, Block::No);
    h.prod.put_count.store(u64::MAX, Ordering::Relaxed);
    h.prod.put_bytes.store(u64::MAX, Ordering::Relaxed);
    h.prod.tail.store(0, Ordering::Relaxed);
    h.cons.head.store(0, Ordering::Relaxed);
    put(&r, b"counters wrap", Block::No).unwrap();
}

#[test]
fn close_is_one_bit_and_refuses_a_publish_in_flight() {
    let r = Ring::in_memory(256).unwrap();
    put(&r, b"a", Block::No).unwrap();
    let from = r.header().prod.tail.load(Ordering::Relaxed);
    r.close();
    assert!(r.is_closed());
    // A producer that found the queue open under its lock and publishes after close:
    // the compare-and-swap refuses.
    assert!(matches!(
        r.publish_tail(from, from + 16, 2, 2),
        Err(Error::Closed)
    ));
    assert_eq!(r.len(), 1);
    assert_eq!(get(&r, Block::No).unwrap(), b"a");
    assert!(matches!(get(&r, Block::No), Err(Error::Closed)));
    assert!(r.stats().closed);
}

#[test]
fn close_drains_then_fails() {
    let r = Ring::in_memory(256).unwrap();
    put(&r, b"a", Block::No).unwrap();
    r.close();
    assert!(matches!(put(&r, b"b", Block::No), Err(Error::Closed)));
    assert_eq!(get(&r, Block::No).unwrap(), b"a");
    assert!(matches!(get(&r, Block::Until(None)), Err(Error::Closed)));
}

#[test]
fn crash_repair_restores_counts() {
    let r = Ring::in_memory(256).unwrap();
    put(&r, b"abc", Block::No).unwrap();
    let h = r.header();
    // Simulate a producer that died after publishing tail but before updating put_count,
    // while holding the lock (a TID that cannot exist).
    h.prod.put_count.store(0, Ordering::Relaxed);
    h.prod.lock.store(4_194_305, Ordering::Relaxed);
    put(&r, b"def", Block::timeout(Duration::from_secs(5))).unwrap();
    assert_eq!(r.len(), 2);
}

/// Issue 13: a read lease lends in place without removing; drop leaves, commit removes.
#[test]
fn read_lease_commit_and_drop() {
    let r = Ring::in_memory(256).unwrap();
    for m in [&b"one"[..], b"two", b"three"] {
        put(&r, m, Block::No).unwrap();
    }
    {
        let l = r.lease_read(10, Block::No).unwrap();
        assert_eq!(l.len(), 3);
        let got: Vec<&[u8]> = (0..3).map(|i| l.get(i).unwrap().1).collect();
        assert_eq!(got, [&b"one"[..], b"two", b"three"]);
        let seqs: Vec<u64> = (0..3).map(|i| l.get(i).unwrap().0).collect();
        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
        assert!(l.get(3).is_none());
        // A get from the thread holding the lease would wait for its own lock: refused.
        assert!(matches!(
            get(&r, Block::Until(None)),
            Err(Error::InvalidArgument(_))
        ));
        // Another thread waits meanwhile: its try_get gives up.
        std::thread::scope(|s| {
            let t = s.spawn(|| get(&r, Block::No));
            assert!(matches!(t.join().unwrap(), Err(Error::Empty)));
        });
    }
    assert_eq!(r.len(), 3);
    let l = r.lease_read(2, Block::No).unwrap();
    assert_eq!(l.len(), 2);
    l.commit_first(1);
    assert_eq!(r.len(), 2);
    assert_eq!(get(&r, Block::No).unwrap(), b"two");
    let l = r.lease_read(1, Block::No).unwrap();
    assert_eq!(l.get(0).unwrap().1, b"three");
    l.commit_first(0);
    assert_eq!(r.len(), 1);
    r.lease_read(5, Block::No).unwrap().commit_first(usize::MAX);
    assert!(r.is_empty());
    assert!(matches!(r.lease_read(1, Block::No), Err(Error::Empty)));
    assert!(matches!(
        r.lease_read(1, Block::timeout(Duration::ZERO)),
        Err(Error::Timeout)
    ));
    r.close();
    assert!(matches!(
        r.lease_read(1, Block::Until(None)),
        Err(Error::Closed)
    ));
}

/// Sequence numbers stay unique and increasing across wrap-around and padding.
#[test]
fn read_lease_seq_is_unique_across_wraps() {
    let r = Ring::in_memory(256).unwrap();
    let mut last = None;
    for i in 0..200u32 {
        let msg = vec![i as u8; (i as usize * 7) % 100];
        put(&r, &msg, Block::No).unwrap();
        let l = r.lease_read(1, Block::No).unwrap();
        let (seq, bytes) = l.get(0).unwrap();
        assert_eq!(bytes, &msg[..]);
        assert!(last.is_none_or(|p| seq > p), "{last:?} then {seq}");
        last = Some(seq);
        l.commit_first(1);
    }
}

/// A write lease publishes on commit only, and what it commits; drop publishes nothing,
/// also after it had to write padding before its record.
#[test]
fn write_lease_commit_and_drop() {
    let r = Ring::in_memory(256).unwrap();
    let mut w = r.lease_write(10, Block::No).unwrap();
    assert_eq!(w.len(), 10);
    w.as_mut_slice().copy_from_slice(b"0123456789");
    // A put from the thread holding the lease is refused (it would wait for its own
    // lock); a get is fine.
    assert!(matches!(
        put(&r, b"x", Block::Until(None)),
        Err(Error::InvalidArgument(_))
    ));
    assert!(matches!(get(&r, Block::No), Err(Error::Empty)));
    assert!(r.is_empty());
    w.commit(4).unwrap();
    assert_eq!(get(&r, Block::No).unwrap(), b"0123");
    // Dropped: nothing published, the room is free again.
    drop(r.lease_write(200, Block::No).unwrap());
    assert!(r.is_empty());
    // Near the end of the ring (padding needed) and dropped, then used.
    put(&r, &[1; 150], Block::No).unwrap();
    get(&r, Block::No).unwrap();
    drop(r.lease_write(120, Block::No).unwrap());
    assert!(r.is_empty());
    let mut w = r.lease_write(120, Block::No).unwrap();
    w.as_mut_slice().fill(7);
    assert!(matches!(w.commit(121), Err(Error::InvalidArgument(_))));
    let mut w = r.lease_write(120, Block::No).unwrap();
    w.as_mut_slice().fill(7);
    w.commit(120).unwrap();
    assert_eq!(get(&r, Block::No).unwrap(), vec![7; 120]);
    assert!(matches!(
        r.lease_write(249, Block::No),
        Err(Error::TooLarge {
            size: 249,
            max: 248
        })
    ));
    // Full: try gives Full, a timeout Timeout.
    put(&r, &[0; 200], Block::No).unwrap();
    assert!(matches!(r.lease_write(100, Block::No), Err(Error::Full)));
    assert!(matches!(
        r.lease_write(100, Block::timeout(Duration::from_millis(10))),
        Err(Error::Timeout)
    ));
    // Closed while held: commit publishes nothing.
    get(&r, Block::No).unwrap();
    let w = r.lease_write(8, Block::No).unwrap();
    r.close();
    assert!(matches!(w.commit(8), Err(Error::Closed)));
    assert!(matches!(get(&r, Block::No), Err(Error::Closed)));
}

/// A corrupt frame behind good ones: the good ones are lent, the error comes next time.
#[test]
fn read_lease_stops_before_a_corrupt_frame() {
    let r = Ring::in_memory(256).unwrap();
    put(&r, b"good", Block::No).unwrap();
    put(&r, b"bad", Block::No).unwrap();
    let mut img = r.to_bytes();
    // The second record's frame tag (first record: 8 + 8 bytes).
    img[segment::RING_OFFSET as usize + 16 + 4] ^= 0xff;
    let r = Ring::from_bytes(&img).unwrap();
    let l = r.lease_read(10, Block::No).unwrap();
    assert_eq!(l.len(), 1);
    assert_eq!(l.get(0).unwrap().1, b"good");
    l.commit_first(1);
    assert!(matches!(
        r.lease_read(10, Block::No),
        Err(Error::Corrupt(_))
    ));
    assert!(matches!(get(&r, Block::No), Err(Error::Corrupt(_))));
}

/// The single-message path (issue 14) at the edges: from every position of a 256-byte
/// ring, messages of 0 bytes, around 8, half the ring and the whole ring, alone and behind
/// a queued message; each arrives intact through `put_one`/`get_one` (falling back to the
/// rounds where padding or a full ring needs them), and the counters agree.
#[test]
fn single_path_at_every_position_and_size() {
    let sizes = [0usize, 1, 7, 8, 9, 15, 16, 17, 119, 120, 121, 240, 248];
    // Under Miri (some 1000 times slower) every fifth position.
    for start in (0..256).step_by(if cfg!(miri) { 40 } else { 8 }) {
        for &len in &sizes {
            let r = Ring::in_memory(256).unwrap();
            if start > 0 {
                put(&r, &vec![0xEE; start - FRAME as usize], Block::No).unwrap();
                get(&r, Block::No).unwrap();
            }
            let m: Vec<u8> = (0..len).map(|i| (i * 7 + start) as u8).collect();
            r.put_one(len, Block::No, |s| s.write(&m)).unwrap();
            let got = r.get_one(Block::No, |rec| {
                let mut v = Vec::new();
                rec.extend_vec(&mut v);
                v
            });
            assert_eq!(got.unwrap(), m, "start {start}, len {len}");
            // Behind a queued 8-byte message: fits or is Full, never anything else.
            r.put_one(8, Block::No, |s| s.write(&[1; 8])).unwrap();
            match r.put_one(len, Block::No, |s| s.write(&m)) {
                Ok(()) => {
                    assert_eq!(get(&r, Block::No).unwrap(), [1; 8]);
                    assert_eq!(get(&r, Block::No).unwrap(), m);
                }
                Err(Error::Full) => {
                    assert!(len > 256 - 16 - 8, "start {start}, len {len}");
                    assert_eq!(get(&r, Block::No).unwrap(), [1; 8]);
                }
                Err(e) => panic!("start {start}, len {len}: {e:?}"),
            }
            assert!(matches!(get(&r, Block::No), Err(Error::Empty)));
            let h = r.header();
            assert_eq!(
                h.prod.put_count.load(Ordering::Relaxed),
                h.cons.get_count.load(Ordering::Relaxed)
            );
        }
    }
}

/// A message too large for the ring names its size and the limit, on the single path,
/// the batch path and a write loan alike (issue 14: never a position or a batch index).
#[test]
fn too_large_names_the_size_and_the_limit() {
    let r = Ring::in_memory(256).unwrap();
    let e = r.put_one(300, Block::No, |_| Ok(())).unwrap_err();
    assert!(
        matches!(
            e,
            Error::TooLarge {
                size: 300,
                max: 248
            }
        ),
        "{e:?}"
    );
    let text = e.to_string();
    assert!(
        text.contains("300 bytes") && text.contains("248 bytes"),
        "{text}"
    );
    let sizes = [8usize, 300];
    let e = r
        .put_batch(2, Block::No, |i| Ok(sizes[i]), |_, _| Ok(()))
        .unwrap_err();
    assert!(
        matches!(
            e,
            Error::TooLarge {
                size: 300,
                max: 248
            }
        ),
        "{e:?}"
    );
    assert!(matches!(
        r.lease_write(249, Block::No),
        Err(Error::TooLarge {
            size: 249,
            max: 248
        })
    ));
}

/// An error of the payload writer on the single path publishes nothing and leaves the
/// lock free; a closed queue refuses the put and, once drained, the get.
#[test]
fn single_path_writer_error_and_close() {
    let r = Ring::in_memory(256).unwrap();
    let e = r
        .put_one(8, Block::No, |s| {
            s.write(&[1; 4])?;
            Err(Error::Codec("no".into()))
        })
        .unwrap_err();
    assert!(matches!(e, Error::Codec(_)));
    assert!(r.is_empty());
    r.put_one(3, Block::No, |s| s.write(b"abc")).unwrap();
    r.close();
    assert!(matches!(
        r.put_one(1, Block::No, |s| s.write(b"x")),
        Err(Error::Closed)
    ));
    assert_eq!(get(&r, Block::No).unwrap(), b"abc");
    assert!(matches!(
        r.get_one(Block::timeout(Duration::from_secs(5)), |_| ()),
        Err(Error::Closed)
    ));
}

/// Untrusted bytes on the single path: a bad frame at `head`, a misaligned or huge
/// `tail`, a corrupt `head` are `Corrupt` (never a panic or a read past the ring).
#[test]
fn single_path_corrupt_header_and_frames() {
    let r = Ring::in_memory(256).unwrap();
    put(&r, b"12345678", Block::No).unwrap();
    let mut img = r.to_bytes();
    let ring_off = img.len() - 256;
    // Frame at position 0: length far past the ring.
    img[ring_off..ring_off + 4].copy_from_slice(&1000u32.to_le_bytes());
    let bad = Ring::from_bytes(&img).unwrap();
    assert!(matches!(
        bad.get_one(Block::No, |_| ()),
        Err(Error::Corrupt(_))
    ));
    // Unknown tag.
    let mut img2 = r.to_bytes();
    img2[ring_off + 4..ring_off + 8].copy_from_slice(&7u32.to_le_bytes());
    let bad = Ring::from_bytes(&img2).unwrap();
    assert!(matches!(
        bad.get_one(Block::No, |_| ()),
        Err(Error::Corrupt(_))
    ));
    // Positions.
    let h = r.header();
    h.prod.tail.store(20, Ordering::Relaxed);
    assert!(matches!(
        r.put_one(1, Block::No, |s| s.write(b"x")),
        Err(Error::Corrupt(_))
    ));
    assert!(matches!(
        r.get_one(Block::No, |_| ()),
        Err(Error::Corrupt(_))
    ));
    h.prod.tail.store(16, Ordering::Relaxed);
    h.cons.head.store(1 << 40, Ordering::Relaxed);
    assert!(matches!(
        r.get_one(Block::No, |_| ()),
        Err(Error::Corrupt(_))
    ));
    // A fresh handle has no cached `head`: its put reads the corrupt one.
    let fresh = Ring::from_bytes(&r.to_bytes()).unwrap();
    assert!(matches!(
        fresh.put_one(1, Block::No, |s| s.write(b"x")),
        Err(Error::Corrupt(_))
    ));
}
