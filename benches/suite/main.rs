//! The shmq benchmark suite (issue 4): shmq against its peers, side by side, in one run.
//!
//! `cargo bench -p shmq-benches --bench suite` runs every case with criterion and writes the raw figures to
//! `target/shmq-bench/results.json`; `scripts/bench.sh` runs it and then
//! `scripts/bench_report.py`, which turns them into `BENCHMARKS.md` and the plot. See
//! `docs/performance.md`.
//!
//! Cross-process cases re-execute this binary as the peer process (the environment
//! variable `SHMQ_BENCH_CHILD` selects its role). The peer is spawned once per case; for
//! each criterion sample the parent writes a message count to the child's stdin, moves that
//! many messages (or round trips), and waits for the child's one-byte acknowledgement on
//! its stdout. The parent always runs on CPU 0; the child on CPU 1 (`diff`) or CPU 0
//! (`same`).
//!
//! `SHMQ_BENCH_QUICK=1` makes every case tiny (CI); `cargo test -p shmq-benches --benches`
//! runs the suite in criterion's test mode, which is just as quick.
//!
//! Layout: [`cases`] (one file per benchmark group), [`transports`] (one file per peer
//! family), [`peer`] (the re-executed peer process), [`payloads`] (sizes, types, ring
//! capacities), [`place`] (CPU pinning), [`results`] (results.json), [`profile`]
//! (`SHMQ_BENCH_PROFILE`).

mod args;
mod cases;
mod cond;
mod payloads;
mod peer;
mod place;
mod profile;
mod results;
mod transports;

use std::process::Command;
use std::time::{Duration, Instant};

use criterion::Criterion;

use crate::args::Args;
use crate::cases::Ctx;
use crate::place::ncpus;
use crate::results::Results;

/// Criterion samples per case (a figure is their median); `--sample-size` overrides it.
const SAMPLES: usize = 10;
/// Warm-up and measurement time per case; `--warm-up-time` / `--measurement-time` override
/// them.
const TIMES: (Duration, Duration) = (Duration::from_millis(300), Duration::from_millis(1000));
/// The same in quick mode (`SHMQ_BENCH_QUICK=1`, or criterion's test mode).
const QUICK_TIMES: (Duration, Duration) = (Duration::from_millis(1), Duration::from_millis(20));

/// The trimmed stdout of a shell command, for the run's metadata (empty on failure).
fn sh(cmd: &str) -> String {
    Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

fn main() {
    if let Ok(spec) = std::env::var(peer::ROLE_ENV) {
        peer::run(spec);
        return;
    }
    if let Ok(spec) = std::env::var(profile::PROFILE_ENV) {
        profile::run(&spec);
        return;
    }
    payloads::check_pod_types();
    args::check();
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let args = Args::parse(&argv);
    let bench_mode = args.bench;
    let quick = !bench_mode || std::env::var("SHMQ_BENCH_QUICK").is_ok_and(|v| v == "1");
    let started = Instant::now();
    let load_before = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let sample_size = args.sample_size.unwrap_or(SAMPLES);
    // The suite's defaults first, then the command line (`--warm-up-time`,
    // `--measurement-time`, `--sample-size`, the filter, ...), which overrides them.
    let (mut warm_up, mut measure) = if quick { QUICK_TIMES } else { TIMES };
    if bench_mode {
        // What criterion will use (it reads the same options in configure_from_args).
        warm_up = args.warm_up.map_or(warm_up, Duration::from_secs_f64);
        measure = args.measurement.map_or(measure, Duration::from_secs_f64);
    }
    let mut c = Criterion::default()
        .sample_size(sample_size)
        .warm_up_time(warm_up)
        .measurement_time(measure)
        .without_plots()
        .configure_from_args();
    let mut cx = Ctx {
        quick,
        res: Results {
            sample_size,
            ..Default::default()
        },
        args,
    };
    cases::throughput::run(&mut c, &mut cx);
    cases::memcpy::run(&mut c, &mut cx);
    cases::latency::run(&mut c, &mut cx);
    cases::mpmc::run(&mut c, &mut cx);
    cases::idle::run(&mut cx);
    if bench_mode {
        cases::python::run(&mut cx);
    }
    c.final_summary();
    if !bench_mode {
        return;
    }
    let load_after = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let meta = [
        (
            "cpu",
            sh("grep -m1 'model name' /proc/cpuinfo | cut -d: -f2"),
        ),
        ("cores", ncpus().to_string()),
        ("kernel", sh("uname -sr")),
        ("rustc", sh("rustc --version")),
        ("commit", sh("git rev-parse --short HEAD")),
        ("dirty", sh("git -C .. status -s -- src benches | wc -l")),
        ("date", sh("date -u '+%Y-%m-%d %H:%M UTC'")),
        ("load_before", load_before),
        ("load_after", load_after),
        ("quick", quick.to_string()),
        ("filter", cx.args.filter.clone().unwrap_or_default()),
        ("exact", cx.args.exact.to_string()),
        ("sample_size", sample_size.to_string()),
        ("warm_up_s", format!("{}", warm_up.as_secs_f64())),
        ("measurement_s", format!("{}", measure.as_secs_f64())),
        ("seconds", format!("{:.0}", started.elapsed().as_secs_f64())),
    ];
    let file = results::results_file(quick);
    std::fs::create_dir_all(file.parent().unwrap()).unwrap();
    std::fs::write(&file, cx.res.to_json(&meta)).unwrap();
    println!(
        "shmq bench: results in {} ({:.0} s)",
        file.display(),
        started.elapsed().as_secs_f64()
    );
}
