//! The synchronisation primitives and shared values across real processes: CPython's
//! `_TestLock`, `_TestSemaphore`, `_TestCondition`, `_TestEvent`, `_TestBarrier`,
//! `_TestValue` and `_TestArray` (Lib/test/_test_multiprocessing.py) ported to shmq, plus
//! what shmq adds: a killed holder is recovered, the objects follow the queues' naming,
//! permission, stale and removal rules.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::time::{Duration, Instant};

use common::{eventually, uniq, RemoveOnDrop};

use shmq::process::{self, ProcessError};
use shmq::{Array, Barrier, Condition, Error, Event, Lock, Options, RLock, Semaphore, Value};

shmq::enable_test_support!();

const LONG: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------------------
// Lock, RLock

#[test]
fn lock_excludes_other_processes() {
    // _TestLock.test_lock, across processes.
    let lock = Lock::create(&uniq("lock")).unwrap();
    let held = Event::create(&uniq("held")).unwrap();
    let go = Event::create(&uniq("go")).unwrap();
    let child = process::start(
        |(lock, held, go): (Lock, Event, Event)| {
            let _g = lock.lock().unwrap();
            held.set();
            go.wait_timeout(Duration::from_secs(60))
        },
        (lock.clone(), held.clone(), go.clone()),
    )
    .unwrap();
    assert!(held.wait_timeout(LONG));
    assert!(lock.is_locked());
    assert!(lock.try_lock().unwrap().is_none()); // acquire(False) -> False
    let t = Instant::now();
    assert!(matches!(
        lock.lock_timeout(Duration::from_millis(100)),
        Err(Error::Timeout)
    ));
    assert!(t.elapsed() >= Duration::from_millis(100));
    go.set();
    let g = lock.lock_timeout(LONG).unwrap();
    assert!(!g.recovered());
    drop(g);
    assert!(child.join().unwrap());
    assert!(!lock.is_locked());
}

#[test]
fn lock_makes_read_modify_write_atomic() {
    let lock = Lock::create(&uniq("rmw")).unwrap();
    let total: Value<u64> = Value::create(&uniq("rmw-total"), 0).unwrap();
    let kids: Vec<_> = (0..4)
        .map(|_| {
            process::start(
                |(lock, total): (Lock, Value<u64>)| {
                    for _ in 0..200 {
                        let _g = lock.lock().unwrap();
                        let v = total.get().unwrap();
                        std::hint::spin_loop();
                        total.set(v + 1).unwrap();
                    }
                },
                (lock.clone(), total.clone()),
            )
            .unwrap()
        })
        .collect();
    for k in kids {
        k.join().unwrap();
    }
    assert_eq!(total.get().unwrap(), 800);
}

#[test]
fn a_lock_held_by_a_killed_process_is_recovered() {
    let lock = Lock::create(&uniq("dead")).unwrap();
    let held = Event::create(&uniq("dead-held")).unwrap();
    let mut child = process::start(
        |(lock, held): (Lock, Event)| {
            let _g = lock.lock().unwrap();
            held.set();
            std::thread::sleep(Duration::from_secs(600));
        },
        (lock.clone(), held.clone()),
    )
    .unwrap();
    assert!(held.wait_timeout(LONG));
    child.kill().unwrap();
    let _ = child.join_timeout(LONG);
    let g = lock.lock_timeout(LONG).unwrap();
    assert!(g.recovered());
    drop(g);
    assert!(!lock.lock().unwrap().recovered());
}

#[test]
fn rlock_is_recursive_for_its_owner_only() {
    // _TestLock.test_rlock
    let r = RLock::create(&uniq("rlock")).unwrap();
    let a = r.lock().unwrap();
    let b = r.lock().unwrap();
    let c = r.try_lock().unwrap().unwrap();
    assert_eq!(r.depth(), 3);
    // Another process cannot take it.
    let other = process::start(|r: RLock| r.try_lock().unwrap().is_some(), r.clone()).unwrap();
    assert!(!other.join().unwrap());
    // Nor another thread of this process.
    std::thread::scope(|s| {
        let r2 = r.clone();
        assert!(s
            .spawn(move || r2.try_lock().unwrap().is_none())
            .join()
            .unwrap());
    });
    drop((c, b));
    assert!(r.is_locked());
    drop(a);
    assert!(!r.is_locked());
    let other = process::start(|r: RLock| r.try_lock().unwrap().is_some(), r.clone()).unwrap();
    assert!(other.join().unwrap());
}

// ---------------------------------------------------------------------------------------
// Semaphore

#[test]
fn semaphore_counts() {
    // _TestSemaphore.test_semaphore / test_bounded_semaphore / test_timeout
    let s = Semaphore::create(&uniq("sem"), 2).unwrap();
    s.acquire().unwrap();
    assert_eq!(s.value(), 1);
    s.acquire().unwrap();
    assert_eq!(s.value(), 0);
    assert!(!s.try_acquire());
    let t = Instant::now();
    assert!(matches!(
        s.acquire_timeout(Duration::from_millis(100)),
        Err(Error::Timeout)
    ));
    assert!(t.elapsed() >= Duration::from_millis(100));
    s.release().unwrap();
    assert_eq!(s.value(), 1);
    s.release().unwrap();
    s.release().unwrap(); // unbounded: fine
    assert_eq!(s.value(), 3);
    let b = Semaphore::create_bounded(&uniq("bsem"), 2).unwrap();
    assert!(b.is_bounded());
    b.acquire().unwrap();
    b.release().unwrap();
    assert!(matches!(b.release(), Err(Error::InvalidArgument(_))));
    assert_eq!(b.value(), 2);
}

#[test]
fn semaphore_release_in_one_process_wakes_another() {
    let s = Semaphore::create(&uniq("sem-x"), 0).unwrap();
    let waiter = process::start(
        |s: Semaphore| s.acquire_timeout(Duration::from_secs(60)).is_ok(),
        s.clone(),
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(50));
    s.release().unwrap();
    assert!(waiter.join().unwrap());
    assert_eq!(s.value(), 0);
}

#[test]
fn a_semaphore_bounds_concurrency() {
    let s = Semaphore::create_bounded(&uniq("slots"), 2).unwrap();
    let inside: Value<u32> = Value::create(&uniq("inside"), 0).unwrap();
    let most: Value<u32> = Value::create(&uniq("most"), 0).unwrap();
    let kids: Vec<_> = (0..5)
        .map(|_| {
            process::start(
                |(s, inside, most): (Semaphore, Value<u32>, Value<u32>)| {
                    for _ in 0..5 {
                        let _unit = s.access().unwrap();
                        let now = inside.update(|v| v + 1).unwrap();
                        most.update(|m| m.max(now)).unwrap();
                        std::thread::sleep(Duration::from_millis(2));
                        inside.update(|v| v - 1).unwrap();
                    }
                },
                (s.clone(), inside.clone(), most.clone()),
            )
            .unwrap()
        })
        .collect();
    for k in kids {
        k.join().unwrap();
    }
    let m = most.get().unwrap();
    assert!((1..=2).contains(&m), "{m} inside at once");
    assert_eq!(s.value(), 2);
}

// ---------------------------------------------------------------------------------------
// Condition

/// A waiter process: counts itself in `sleeping` under the lock, waits, counts itself in
/// `woken`.
fn cond_waiter((cond, sleeping, woken): (Condition, Value<u32>, Value<u32>)) -> bool {
    let mut g = cond.lock().unwrap();
    sleeping.update(|v| v + 1).unwrap();
    let notified = g.wait_timeout(Duration::from_secs(60)).unwrap();
    woken.update(|v| v + 1).unwrap();
    notified
}

fn cond_setup(
    tag: &str,
    waiters: usize,
) -> (Condition, Value<u32>, Value<u32>, Vec<process::Child<bool>>) {
    let cond = Condition::create(&uniq(tag)).unwrap();
    let sleeping: Value<u32> = Value::create(&uniq(&format!("{tag}-s")), 0).unwrap();
    let woken: Value<u32> = Value::create(&uniq(&format!("{tag}-w")), 0).unwrap();
    let kids = (0..waiters)
        .map(|_| {
            process::start(cond_waiter, (cond.clone(), sleeping.clone(), woken.clone())).unwrap()
        })
        .collect();
    // Once we hold the lock and see them all counted, they all wait (the count is made
    // under the lock, which `wait` releases).
    assert!(eventually(LONG, || {
        let _g = cond.lock().unwrap();
        sleeping.get().unwrap() as usize == waiters
    }));
    (cond, sleeping, woken, kids)
}

#[test]
fn condition_notify_wakes_one_at_a_time() {
    // _TestCondition.test_notify
    let (cond, _, woken, kids) = cond_setup("notify", 2);
    assert_eq!(woken.get().unwrap(), 0);
    cond.lock().unwrap().notify(1);
    assert!(eventually(LONG, || woken.get().unwrap() == 1));
    // Exactly one: the other still sleeps (far longer than a futex slice).
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(woken.get().unwrap(), 1);
    cond.lock().unwrap().notify(1);
    assert!(eventually(LONG, || woken.get().unwrap() == 2));
    for k in kids {
        assert!(k.join().unwrap());
    }
}

#[test]
fn condition_notify_n_and_notify_all() {
    // _TestCondition.test_notify_n / test_notify_all
    let (cond, _, woken, kids) = cond_setup("notify-n", 3);
    cond.lock().unwrap().notify(2);
    assert!(eventually(LONG, || woken.get().unwrap() == 2));
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(woken.get().unwrap(), 2);
    cond.lock().unwrap().notify_all();
    assert!(eventually(LONG, || woken.get().unwrap() == 3));
    for k in kids {
        assert!(k.join().unwrap());
    }
    // A notify with nobody waiting is not kept for a later waiter.
    cond.lock().unwrap().notify(5);
    let mut g = cond.lock().unwrap();
    assert!(!g.wait_timeout(Duration::from_millis(100)).unwrap());
}

#[test]
fn condition_wait_timeout_and_wait_for() {
    // _TestCondition.test_timeout / test_waitfor / test_waitfor_timeout
    let cond = Condition::create(&uniq("waitfor")).unwrap();
    let state: Value<u32> = Value::create(&uniq("waitfor-v"), 0).unwrap();
    {
        let mut g = cond.lock().unwrap();
        let t = Instant::now();
        assert!(!g.wait_timeout(Duration::from_millis(100)).unwrap());
        assert!(t.elapsed() >= Duration::from_millis(100));
        assert!(!g
            .wait_for(|| false, Some(Duration::from_millis(100)))
            .unwrap());
    }
    let child = process::start(
        |(cond, state): (Condition, Value<u32>)| {
            let mut g = cond.lock().unwrap();
            let ok = g
                .wait_for(|| state.get().unwrap() == 4, Some(Duration::from_secs(60)))
                .unwrap();
            (ok, state.get().unwrap())
        },
        (cond.clone(), state.clone()),
    )
    .unwrap();
    for i in 1..=4 {
        std::thread::sleep(Duration::from_millis(10));
        let g = cond.lock().unwrap();
        state.set(i).unwrap();
        g.notify_all();
    }
    assert_eq!(child.join().unwrap(), (true, 4));
}

// ---------------------------------------------------------------------------------------
// Event

#[test]
fn event_set_clear_wait() {
    // _TestEvent.test_event
    let e = Event::create(&uniq("event")).unwrap();
    assert!(!e.is_set());
    assert!(!e.wait_timeout(Duration::ZERO));
    let t = Instant::now();
    assert!(!e.wait_timeout(Duration::from_millis(100)));
    assert!(t.elapsed() >= Duration::from_millis(100));
    e.set();
    assert!(e.is_set());
    assert!(e.wait_timeout(Duration::ZERO));
    e.wait();
    e.clear();
    assert!(!e.is_set());
    // Set from another process while we wait.
    let child = process::start(
        |e: Event| {
            std::thread::sleep(Duration::from_millis(50));
            e.set();
        },
        e.clone(),
    )
    .unwrap();
    assert!(e.wait_timeout(LONG));
    child.join().unwrap();
    // Several waiting processes all wake.
    e.clear();
    let kids: Vec<_> = (0..3)
        .map(|_| {
            process::start(
                |e: Event| e.wait_timeout(Duration::from_secs(60)),
                e.clone(),
            )
            .unwrap()
        })
        .collect();
    std::thread::sleep(Duration::from_millis(50));
    e.set();
    for k in kids {
        assert!(k.join().unwrap());
    }
}

// ---------------------------------------------------------------------------------------
// Barrier

#[test]
fn barrier_rounds() {
    // _TestBarrier.test_barrier / test_action / test_single_thread
    let parties = 3u32;
    let b = Barrier::create(&uniq("barrier"), parties).unwrap();
    assert_eq!(b.parties(), 3);
    let rounds = 5;
    let kids: Vec<_> = (0..parties)
        .map(|_| {
            process::start(
                |(b, rounds): (Barrier, u32)| {
                    (0..rounds)
                        .map(|_| b.wait_timeout(Duration::from_secs(60)).unwrap())
                        .collect::<Vec<u32>>()
                },
                (b.clone(), rounds),
            )
            .unwrap()
        })
        .collect();
    let all: Vec<Vec<u32>> = kids.into_iter().map(|k| k.join().unwrap()).collect();
    for r in 0..rounds as usize {
        let mut idx: Vec<u32> = all.iter().map(|v| v[r]).collect();
        idx.sort();
        assert_eq!(idx, [0, 1, 2], "round {r}");
    }
    assert_eq!(b.n_waiting(), 0);
    assert!(!b.is_broken());
    let one = Barrier::create(&uniq("barrier1"), 1).unwrap();
    assert_eq!(one.wait().unwrap(), 0);
    assert_eq!(one.wait().unwrap(), 0);
    assert!(matches!(
        Barrier::create(&uniq("barrier0"), 0),
        Err(Error::InvalidArgument(_))
    ));
}

fn barrier_waiter(b: Barrier) -> String {
    match b.wait_timeout(Duration::from_secs(60)) {
        Ok(i) => format!("ok {i}"),
        Err(Error::Process(ProcessError::BrokenBarrier { .. })) => "broken".into(),
        Err(e) => format!("error {e}"),
    }
}

#[test]
fn barrier_abort_reset_and_timeout_break_it() {
    // _TestBarrier.test_abort
    let b = Barrier::create(&uniq("abort"), 3).unwrap();
    let kids: Vec<_> = (0..2)
        .map(|_| process::start(barrier_waiter, b.clone()).unwrap())
        .collect();
    assert!(eventually(LONG, || b.n_waiting() == 2));
    b.abort().unwrap();
    assert!(b.is_broken());
    for k in kids {
        assert_eq!(k.join().unwrap(), "broken");
    }
    assert!(matches!(
        b.wait(),
        Err(Error::Process(ProcessError::BrokenBarrier { .. }))
    ));
    // test_reset: a reset with waiters breaks their round; the barrier works afterwards.
    b.reset().unwrap();
    assert!(!b.is_broken());
    let kids: Vec<_> = (0..2)
        .map(|_| process::start(barrier_waiter, b.clone()).unwrap())
        .collect();
    assert!(eventually(LONG, || b.n_waiting() == 2));
    b.reset().unwrap();
    for k in kids {
        assert_eq!(k.join().unwrap(), "broken");
    }
    let kids: Vec<_> = (0..2)
        .map(|_| process::start(barrier_waiter, b.clone()).unwrap())
        .collect();
    b.wait_timeout(LONG).unwrap();
    for k in kids {
        assert!(k.join().unwrap().starts_with("ok "));
    }
    // test_timeout: the one that times out gets Timeout, the others BrokenBarrier.
    let other = process::start(barrier_waiter, b.clone()).unwrap();
    assert!(eventually(LONG, || b.n_waiting() == 1));
    assert!(matches!(
        b.wait_timeout(Duration::from_millis(100)),
        Err(Error::Timeout)
    ));
    assert_eq!(other.join().unwrap(), "broken");
    assert!(b.is_broken());
}

// ---------------------------------------------------------------------------------------
// Value, Array

type Values = (
    Value<i32>,
    Value<f64>,
    Value<u16>,
    Value<u8>,
    Value<[u64; 5]>,
);

#[test]
fn values_of_several_types_change_in_a_child() {
    // _TestValue.test_value: a child changes values of several types.
    let i: Value<i32> = Value::create(&uniq("vi"), 25).unwrap();
    let d: Value<f64> = Value::create(&uniq("vd"), 1.25).unwrap();
    let h: Value<u16> = Value::create(&uniq("vh"), 7).unwrap();
    let c: Value<u8> = Value::create(&uniq("vc"), b'x').unwrap();
    let big: Value<[u64; 5]> = Value::create(&uniq("vbig"), [1, 2, 3, 4, 5]).unwrap();
    assert!(i.is_lock_free() && d.is_lock_free() && !big.is_lock_free());
    assert_eq!(
        (
            i.get().unwrap(),
            d.get().unwrap(),
            h.get().unwrap(),
            c.get().unwrap()
        ),
        (25, 1.25, 7, b'x')
    );
    let child = process::start(
        |(i, d, h, c, big): Values| {
            i.set(-5).unwrap();
            d.set(3.5).unwrap();
            h.set(65535).unwrap();
            c.set(b'y').unwrap();
            let mut g = big.lock().unwrap();
            let mut v = g.get();
            v.reverse();
            g.set(v);
        },
        (i.clone(), d.clone(), h.clone(), c.clone(), big.clone()),
    )
    .unwrap();
    child.join().unwrap();
    assert_eq!(
        (
            i.get().unwrap(),
            d.get().unwrap(),
            h.get().unwrap(),
            c.get().unwrap()
        ),
        (-5, 3.5, 65535, b'y')
    );
    assert_eq!(big.get().unwrap(), [5, 4, 3, 2, 1]);
    // Opening with another item size is refused.
    assert!(matches!(
        Value::<u64>::open(i.name()),
        Err(Error::Incompatible { .. })
    ));
    assert_eq!(Value::<i32>::open(i.name()).unwrap().get().unwrap(), -5);
}

#[test]
fn value_updates_from_many_processes_add_up() {
    let v: Value<u64> = Value::create(&uniq("count"), 0).unwrap();
    let kids: Vec<_> = (0..4)
        .map(|_| {
            process::start(
                |v: Value<u64>| {
                    for _ in 0..250 {
                        v.update(|x| x + 1).unwrap();
                    }
                },
                v.clone(),
            )
            .unwrap()
        })
        .collect();
    for k in kids {
        k.join().unwrap();
    }
    assert_eq!(v.get().unwrap(), 1000);
}

#[test]
fn arrays_are_shared() {
    // _TestArray.test_array / test_array_from_size / test_getobj_getlock
    let a: Array<i64> = Array::create(&uniq("arr"), &[1, 2, 3, 4, 5, 6, 7, 8, 9, 10]).unwrap();
    assert_eq!(a.len(), 10);
    let z: Array<f32> = Array::create_zeroed(&uniq("arr0"), 4).unwrap();
    assert_eq!(z.to_vec().unwrap(), [0.0; 4]);
    let child = process::start(
        |(a, z): (Array<i64>, Array<f32>)| {
            // f(seq): seq[i] += seq[i - 1]
            let mut g = a.lock().unwrap();
            for i in 1..g.len() {
                let prev = g.get(i - 1).unwrap();
                let cur = g.get(i).unwrap();
                g.set(i, cur + prev).unwrap();
            }
            drop(g);
            z.copy_from_slice(&[1.5, 2.5, 3.5, 4.5]).unwrap();
            a.len()
        },
        (a.clone(), z.clone()),
    )
    .unwrap();
    assert_eq!(child.join().unwrap(), 10);
    assert_eq!(a.to_vec().unwrap(), [1, 3, 6, 10, 15, 21, 28, 36, 45, 55]);
    assert_eq!(a.get(9).unwrap(), 55);
    assert_eq!(z.get(3).unwrap(), 4.5);
    assert!(matches!(a.get(10), Err(Error::InvalidArgument(_))));
    assert!(matches!(a.set(10, 0), Err(Error::InvalidArgument(_))));
    assert!(matches!(
        a.copy_from_slice(&[1, 2]),
        Err(Error::InvalidArgument(_))
    ));
    assert_eq!(a.update(0, |x| x * 100).unwrap(), 100);
    let reopened: Array<i64> = Array::open(a.name()).unwrap();
    assert_eq!(reopened.len(), 10);
    assert_eq!(reopened.get(0).unwrap(), 100);
    let big: Array<[u8; 3]> = Array::create(&uniq("arr3"), &[[1, 2, 3], [4, 5, 6]]).unwrap();
    assert_eq!(big.get(1).unwrap(), [4, 5, 6]);
    let empty: Array<u32> = Array::create(&uniq("arr-empty"), &[]).unwrap();
    assert!(empty.is_empty() && empty.to_vec().unwrap().is_empty());
}

// ---------------------------------------------------------------------------------------
// Names, permissions, staleness, removal, visibility

#[test]
fn primitives_follow_the_queue_rules() {
    let name = uniq("rules");
    let lock = Lock::create_with(name.as_str(), &Options::new().mode(0o640)).unwrap();
    let meta = std::fs::metadata(shmq::internal::shm_path(&name)).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o640);
    // Listed by `shmq ls` (shmq::list), as an empty closed object with its kind's name.
    let info = shmq::list()
        .unwrap()
        .into_iter()
        .find(|i| i.name == name)
        .expect("listed");
    let stats = info.stats().expect("readable");
    assert!(stats.closed && stats.len == 0);
    assert_eq!(stats.type_name, "shmq Lock");
    // Not a queue, not another primitive.
    assert!(matches!(
        shmq::RawQueue::open(&name),
        Err(Error::Incompatible { .. })
    ));
    assert!(matches!(
        shmq::Queue::<u8>::open(&name),
        Err(Error::Incompatible { .. })
    ));
    match Event::open(&name) {
        Err(Error::Incompatible { reason, .. }) => {
            assert_eq!(reason, "it is a shmq Lock, not a shmq Event")
        }
        other => panic!("{other:?}"),
    }
    let q: shmq::Queue<u8> = shmq::Queue::create(&uniq("rules-q"), 4096).unwrap();
    assert!(matches!(
        Lock::open(q.name()),
        Err(Error::Incompatible { .. })
    ));
    // Taken names and missing names.
    assert!(matches!(
        Lock::create(&name),
        Err(Error::AlreadyExists { stale: false, .. })
    ));
    assert!(matches!(
        Semaphore::open(&uniq("none")),
        Err(Error::NotFound(_))
    ));
    // Removed with the creating handle.
    drop(lock);
    assert!(matches!(Lock::open(&name), Err(Error::NotFound(_))));
    // keep_on_drop: outlives its creator, removed by shmq::remove.
    let kept = uniq("kept");
    let _rm = RemoveOnDrop(kept.clone());
    drop(Event::create_with(kept.as_str(), &Options::new().keep_on_drop(true)).unwrap());
    Event::open(&kept).unwrap().set();
    assert!(Event::open(&kept).unwrap().is_set());
    shmq::remove(&kept).unwrap();
}

#[test]
fn a_killed_creators_primitive_is_stale_and_replaceable() {
    let name = uniq("stale");
    let _rm = RemoveOnDrop(name.clone());
    let mut c = process::start(
        |name: String| {
            let _s = Semaphore::create(&name, 3).unwrap();
            std::thread::sleep(Duration::from_secs(600));
        },
        name.clone(),
    )
    .unwrap();
    assert!(eventually(LONG, || Semaphore::open(&name).is_ok()));
    assert_eq!(Semaphore::open(&name).unwrap().value(), 3);
    c.kill().unwrap();
    let _ = c.join_timeout(LONG);
    assert!(matches!(
        Semaphore::create(&name, 1),
        Err(Error::AlreadyExists { stale: true, .. })
    ));
    let s = Semaphore::create_with(name.as_str(), 1, false, &Options::new().replace_stale(true))
        .unwrap();
    assert_eq!(s.value(), 1);
}
