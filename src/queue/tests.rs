use std::sync::atomic::Ordering;

use super::*;
use crate::error::Error;

fn uniq(tag: &str) -> String {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    format!(
        "unit-{tag}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

#[test]
fn typed_roundtrip_and_type_check() {
    let n = uniq("typed");
    let q: Queue<(String, u32)> = Queue::create(&n, 4096).unwrap();
    q.put(&("a".into(), 1)).unwrap();
    let o: Queue<(String, u32)> = Queue::open(&n).unwrap();
    assert_eq!(o.get().unwrap(), ("a".to_string(), 1));
    assert!(matches!(
        PodQueue::<u64>::open(&n),
        Err(Error::Incompatible { .. })
    ));
    let lax: Queue<Vec<u8>> =
        Queue::open_with(n.as_str(), &Options::new().check_type(false)).unwrap();
    assert_eq!(lax.len(), 0);
}

#[test]
fn pod_get_into_copies_straight_and_checks_length() {
    let n = uniq("podinto");
    let q: PodQueue<[u32; 4]> = PodQueue::create(&n, 4096).unwrap();
    let mut out = [0u32; 4];
    assert!(matches!(q.try_get_into(&mut out), Err(Error::Empty)));
    q.put(&[1, 2, 3, 4]).unwrap();
    q.get_into(&mut out).unwrap();
    assert_eq!(out, [1, 2, 3, 4]);
    // A record of the wrong size (written through the raw view) is a codec error and
    // leaves `out` untouched.
    q.raw().put(&[9u8; 3]).unwrap();
    assert!(matches!(q.get_into(&mut out), Err(Error::Codec(_))));
    assert_eq!(out, [1, 2, 3, 4]);
}

#[test]
fn pod_size_checked() {
    let n = uniq("pod");
    let _q: PodQueue<u64> = PodQueue::create(&n, 4096).unwrap();
    let r = TypedQueue::<u32, Pod>::open_with(n.as_str(), &Options::new().check_type(false));
    assert!(matches!(r, Err(Error::Incompatible { .. })));
}

#[test]
fn too_large_is_immediate() {
    let n = uniq("big");
    let q = RawQueue::create(&n, 128).unwrap();
    let e = q.put(&[0u8; 121]).unwrap_err();
    assert!(
        matches!(
            e,
            Error::TooLarge {
                size: 121,
                max: 120
            }
        ),
        "{e}"
    );
    q.put(&[0u8; 120]).unwrap();
}

#[test]
fn handle_serializes_as_location() {
    let n = uniq("ser");
    let q: Queue<u8> = Queue::create(&n, 4096).unwrap();
    let bytes = postcard::to_allocvec(&q).unwrap();
    let q2: Queue<u8> = postcard::from_bytes(&bytes).unwrap();
    q.put(&9).unwrap();
    assert_eq!(q2.get().unwrap(), 9);
}

#[test]
fn codec_error_on_garbage() {
    let n = uniq("garbage");
    let q: Queue<String> = Queue::create(&n, 4096).unwrap();
    q.raw().put(&[0xff, 0xff, 0xff]).unwrap();
    assert!(matches!(q.get(), Err(Error::Codec(_))));
    q.put(&"fine".to_string()).unwrap();
    assert_eq!(q.get().unwrap(), "fine");
}
