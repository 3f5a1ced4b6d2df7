//! What a child process costs: `spawn` + `join` of a trivial function (re-executing this
//! bench binary), a `Pool::apply` round trip, and a `Pool::map` of 1000 tiny tasks.
//!
//! Run: `cargo bench -p shmq-benches --bench spawn`
//!
//! The bench has its own `main` because `shmq::process::init()` must run first: children
//! are re-executions of this binary.

use criterion::Criterion;
use shmq::process::{self, Pool};

fn bench(c: &mut Criterion) {
    let mut g = c.benchmark_group("process");
    g.sample_size(20);
    g.bench_function("spawn+join", |b| {
        b.iter(|| {
            process::start(|x: u32| x + 1, 7u32)
                .unwrap()
                .join()
                .unwrap()
        })
    });
    let pool = Pool::new(2).unwrap();
    g.bench_function("pool apply", |b| {
        b.iter(|| pool.apply(|x: u32| x + 1, 7u32).unwrap())
    });
    g.bench_function("pool map 1000", |b| {
        b.iter(|| pool.map(|x: u32| x + 1, 0..1000u32).unwrap())
    });
    g.finish();
}

fn main() {
    process::init(); // first: in a child this runs the function and exits
    let mut c = Criterion::default().configure_from_args();
    bench(&mut c);
    c.final_summary();
}
