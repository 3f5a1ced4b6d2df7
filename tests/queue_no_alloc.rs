//! The steady-state `RawQueue::put` / `get_into` path (and the batch and Pod paths) make no
//! heap allocation: counted with a global allocator wrapper.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

struct Counting;

static COUNTING: AtomicBool = AtomicBool::new(false);
static ALLOCS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every method forwards to the system allocator unchanged; the counter is an atomic.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: forwarded with the caller's layout.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System.alloc` with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if COUNTING.load(Ordering::Relaxed) {
            ALLOCS.fetch_add(1, Ordering::Relaxed);
        }
        // SAFETY: forwarded unchanged.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn count(f: impl FnOnce()) -> usize {
    ALLOCS.store(0, Ordering::SeqCst);
    COUNTING.store(true, Ordering::SeqCst);
    f();
    COUNTING.store(false, Ordering::SeqCst);
    ALLOCS.load(Ordering::SeqCst)
}

// One test function only: the counter is process-global, so parallel tests would count
// each other's allocations.
#[test]
fn steady_state_paths_do_not_allocate() {
    let name = format!("it-noalloc-{}", std::process::id());
    let q = shmq::RawQueue::create(&name, 1 << 16).unwrap();
    let msg = [7u8; 64];
    let mut buf = Vec::with_capacity(1024);
    // Warm up (thread-local TID cache, buffer growth).
    q.put(&msg).unwrap();
    q.get_into(&mut buf).unwrap();

    let n = count(|| {
        for _ in 0..10_000 {
            q.put(&msg).unwrap();
            assert_eq!(q.get_into(&mut buf).unwrap(), 64);
        }
    });
    assert_eq!(n, 0, "RawQueue put/get_into allocated {n} times");

    let mut batch = shmq::Batch::new();
    let msgs = [msg; 16];
    q.put_many(&msgs).unwrap();
    q.get_many_into(&mut batch, 16).unwrap();
    let n = count(|| {
        for _ in 0..1_000 {
            q.put_many(&msgs).unwrap();
            assert_eq!(q.get_many_into(&mut batch, 16).unwrap(), 16);
        }
    });
    assert_eq!(n, 0, "batch path allocated {n} times");

    let pq: shmq::PodQueue<[u64; 4]> =
        shmq::PodQueue::create(&format!("{name}-pod"), 4096).unwrap();
    pq.put(&[1, 2, 3, 4]).unwrap();
    pq.get().unwrap();
    let n = count(|| {
        for i in 0..10_000u64 {
            pq.put(&[i, 0, 0, 0]).unwrap();
            assert_eq!(pq.get().unwrap()[0], i);
        }
    });
    assert_eq!(n, 0, "Pod path allocated {n} times");

    let tq: shmq::Queue<(u64, u32)> = shmq::Queue::create(&format!("{name}-typed"), 4096).unwrap();
    tq.put(&(1, 2)).unwrap();
    tq.get().unwrap();
    let n = count(|| {
        for i in 0..10_000u64 {
            tq.put(&(i, 3)).unwrap();
            assert_eq!(tq.get().unwrap(), (i, 3));
        }
    });
    assert_eq!(
        n, 0,
        "postcard path allocated {n} times for allocation-free types"
    );
}
