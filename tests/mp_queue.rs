//! Queue behaviour from CPython's `_TestQueue` (Lib/test/_test_multiprocessing.py), ported
//! to shmq across real processes, and the message bound (`Options::max_messages`).

use std::time::{Duration, Instant};

use shmq::process;
use shmq::{Error, Options, Queue};

shmq::enable_test_support!();

fn uniq(tag: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "mpq-{tag}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

const LONG: Duration = Duration::from_secs(60);

/// `Queue(maxsize=6)`: a producer in another process blocks on the seventh put until the
/// parent takes one; `full()` / `empty()` / `qsize()` follow.
#[test]
fn max_messages_bounds_puts_across_processes() {
    let name = uniq("max");
    let q: Queue<u32> = Queue::create_with(name.as_str(), &Options::new().max_messages(6)).unwrap();
    assert_eq!(q.raw().max_messages(), 6);
    assert!(q.is_empty() && !q.is_full());
    let mut child = process::start(
        |q: Queue<u32>| {
            for i in 0..6 {
                q.try_put(&i).unwrap();
            }
            // Full by count, with the ring almost empty in bytes.
            assert!(q.is_full());
            assert!(matches!(q.try_put(&6), Err(Error::Full)));
            assert!(matches!(
                q.put_timeout(&6, Duration::from_millis(10)),
                Err(Error::Timeout)
            ));
            let t = Instant::now();
            q.put(&6).unwrap(); // blocks until the parent gets one
            t.elapsed()
        },
        q.clone(),
    )
    .unwrap();
    let start = Instant::now();
    while q.len() < 6 {
        assert!(start.elapsed() < LONG);
        std::thread::sleep(Duration::from_millis(1));
    }
    assert!(q.is_full());
    std::thread::sleep(Duration::from_millis(100));
    assert!(child.is_alive(), "the seventh put did not wait");
    assert_eq!(q.len(), 6);
    assert_eq!(q.get().unwrap(), 0);
    let waited = child.join_timeout(LONG).unwrap();
    assert!(waited >= Duration::from_millis(50), "{waited:?}");
    assert_eq!(q.drain().unwrap(), vec![1, 2, 3, 4, 5, 6]);
    assert!(q.is_empty() && !q.is_full());
    // The bound is the creator's: an opener cannot change it.
    let o: Queue<u32> = Queue::open_with(name.as_str(), &Options::new().max_messages(1)).unwrap();
    assert_eq!(o.raw().max_messages(), 6);
}
