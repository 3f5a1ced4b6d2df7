//! `Value` and `Array` across processes — Python's `multiprocessing.Value` / `Array`.
//!
//! Mirrors the Python documentation's example:
//!
//! ```python
//! def f(n, a):
//!     n.value = 3.1415927
//!     for i in range(len(a)):
//!         a[i] = -a[i]
//!
//! num = Value('d', 0.0)
//! arr = Array('i', range(10))
//! p = Process(target=f, args=(num, arr)); p.start(); p.join()
//! ```
//!
//! Run: `cargo run --example value`

use shmq::process;
use shmq::{Array, Value};

fn f((n, a): (Value<f64>, Array<i32>)) {
    n.set(std::f64::consts::PI).unwrap();
    let mut g = a.lock().unwrap(); // one lock for the whole loop
    for i in 0..g.len() {
        let v = g.get(i).unwrap();
        g.set(i, -v).unwrap();
    }
}

fn main() -> shmq::Result<()> {
    process::init();
    let tag = std::process::id();
    let num: Value<f64> = Value::create(&format!("example-num-{tag}"), 0.0)?;
    let arr: Array<i32> = Array::create(
        &format!("example-arr-{tag}"),
        &(0..10).collect::<Vec<i32>>(),
    )?;
    process::start(f, (num.clone(), arr.clone()))?.join()?;
    println!("{}", num.get()?);
    println!("{:?}", arr.to_vec()?);

    // A counter incremented by four processes at once.
    let counter: Value<u64> = Value::create(&format!("example-counter-{tag}"), 0)?;
    let kids = (0..4)
        .map(|_| {
            process::start(
                |c: Value<u64>| {
                    for _ in 0..1000 {
                        c.update(|v| v + 1).unwrap(); // with c.get_lock(): c.value += 1
                    }
                },
                counter.clone(),
            )
        })
        .collect::<shmq::Result<Vec<_>>>()?;
    for k in kids {
        k.join()?;
    }
    println!("counter = {}", counter.get()?);
    assert_eq!(counter.get()?, 4000);
    Ok(())
}
