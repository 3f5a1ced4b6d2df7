//! A frame records a message's length in 32 bits: on a ring above 4 GiB a message longer
//! than `u32::MAX` bytes is `TooLarge` at once (it was published torn and wedged the ring).

mod common;

use common::uniq;
use shmq::{Error, RawQueue};

#[test]
fn messages_past_u32_max_are_too_large_on_a_huge_ring() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("huge.q");
    let cap = (1usize << 32) + 64;
    let q = match RawQueue::create_at(&path, cap) {
        Ok(q) => q,
        Err(Error::Io(e)) => {
            println!("SKIPPED: no room for a 4 GiB file-backed ring here ({e})");
            return;
        }
        Err(e) => panic!("{e:?}"),
    };
    assert_eq!(q.max_message(), u32::MAX as usize);
    // calloc'd: the pages are never touched, since the put refuses before copying.
    let big = vec![0u8; u32::MAX as usize + 1];
    match q.try_put(&big) {
        Err(Error::TooLarge { size, max }) => {
            assert_eq!((size, max), (u32::MAX as usize + 1, u32::MAX as usize))
        }
        other => panic!("{other:?}"),
    }
    // The ring itself works as usual.
    q.put(&[1u8; 100]).unwrap();
    assert_eq!(q.get_vec().unwrap(), vec![1u8; 100]);
    assert!(q.is_empty());
}

#[test]
fn an_array_too_large_for_a_segment_is_an_error_not_a_panic() {
    let name = uniq("lim-arr");
    match shmq::Array::<u64>::create_zeroed(&name, usize::MAX / 4) {
        Err(Error::InvalidArgument(m)) => assert!(m.contains("does not fit"), "{m}"),
        other => panic!("{:?}", other.map(|_| ())),
    }
}

#[test]
fn a_typed_get_refuses_a_message_with_trailing_bytes() {
    let name = uniq("lim-trail");
    let q: shmq::Queue<u64> = shmq::Queue::create(&name, 4096).unwrap();
    let raw = RawQueue::open(&name).unwrap();
    raw.try_put(b"garbage that is not postcard").unwrap();
    match q.try_get() {
        Err(Error::Codec(m)) => assert!(m.contains("left over"), "{m}"),
        other => panic!("{other:?}"),
    }
    q.put(&103).unwrap();
    assert_eq!(q.get().unwrap(), 103);
}

/// A regular file smaller than a header, with garbage in it, is another program's object:
/// never "abandoned", so never removed as stale (a creator sizes its object in one go).
#[test]
fn a_tiny_foreign_file_is_foreign_not_abandoned() {
    let name = uniq("lim-tiny");
    let path = shmq::internal::shm_path(&name);
    std::fs::write(&path, b"garbage").unwrap();
    let p = shmq::internal::peek(&name);
    let _ = std::fs::remove_file(&path);
    let p = p.unwrap();
    assert!(p.foreign && !p.is_abandoned(), "{p:?}");
}

/// `put_many` with one message that can never fit queues nothing (a retry must not
/// duplicate the messages in front of it).
#[test]
fn put_many_with_a_too_large_message_queues_nothing() {
    let name = uniq("lim-many");
    let q = RawQueue::create(&name, 4096).unwrap();
    let big = vec![0u8; 5000];
    let r = q.put_many(&[b"a".as_slice(), b"b", &big]);
    assert!(
        matches!(r, Err(Error::TooLarge { size: 5000, .. })),
        "{r:?}"
    );
    assert!(q.is_empty());
}
