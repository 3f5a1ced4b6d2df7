//! A frame records a message's length in 32 bits: on a ring above 4 GiB a message longer
//! than `u32::MAX` bytes is `TooLarge` at once (it was published torn and wedged the ring).

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
