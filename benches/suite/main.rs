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
//! **Rounds**: a run measures the whole case list `SHMQ_BENCH_ROUNDS` times (default
//! [`ROUNDS`]), one round after the other (round 1 every case, then round 2 every case, ...),
//! with short windows per case ([`TIMES`]); the report takes each case's median over the
//! rounds and shows their spread. On the 2-vCPU KVM guest the host takes a vCPU away for
//! seconds at a time, so one long window per case let a single bad stretch decide a figure
//! (the 00:13 run of session 4: identical code 2-8× apart between two conditions run
//! back to back); rounds a few minutes apart put one bad stretch into one round of a case,
//! not into all of them. Each round and case also records the CPU time the host stole
//! (`/proc/stat`, [`stat`]).
//!
//! `SHMQ_BENCH_QUICK=1` makes every case tiny and runs one round unless `SHMQ_BENCH_ROUNDS`
//! says otherwise (CI); `cargo test -p shmq-benches --benches` runs the suite once in
//! criterion's test mode, which is just as quick.
//!
//! Layout: [`cases`] (one file per benchmark group), [`transports`] (one file per peer
//! family), [`peer`] (the re-executed peer process), [`payloads`] (sizes, types, ring
//! capacities), [`place`] (CPU pinning), [`results`] (results.json), [`stat`] (steal time),
//! [`profile`] (`SHMQ_BENCH_PROFILE`).

mod args;
mod cases;
mod cond;
mod payloads;
mod peer;
mod place;
mod profile;
mod results;
mod stat;
mod transports;

use std::process::Command;
use std::time::{Duration, Instant};

use criterion::Criterion;

use crate::args::Args;
use crate::cases::Ctx;
use crate::place::ncpus;
use crate::results::{Results, Round};
use crate::stat::CpuTimes;

/// Criterion samples per case and round (a round's figure is their median);
/// `--sample-size` overrides it.
const SAMPLES: usize = 10;
/// Warm-up and measurement time per case and round; `--warm-up-time` / `--measurement-time`
/// override them. Short, because every case runs once per round: 312 cases × 3 rounds at
/// ~0.6 s each (with the peer's start and criterion's analysis) is ~10 minutes on 2 vCPUs.
/// At 1 MiB a message takes ~0.1-0.3 ms, so each of the 10 flat samples still moves
/// over a hundred messages.
const TIMES: (Duration, Duration) = (Duration::from_millis(100), Duration::from_millis(400));
/// Rounds in a measuring run (`SHMQ_BENCH_ROUNDS` overrides it; a quick run makes one).
const ROUNDS: usize = 3;
/// Criterion's bootstrap resamples for its own printed statistics (its default is 100 000,
/// ~0.1 s of analysis per case here); the suite's figures do not use them. `--nresamples`
/// overrides it.
const NRESAMPLES: usize = 1000;
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
    stat::check();
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let args = Args::parse(&argv);
    let bench_mode = args.bench;
    let quick = !bench_mode || std::env::var("SHMQ_BENCH_QUICK").is_ok_and(|v| v == "1");
    let rounds = match std::env::var("SHMQ_BENCH_ROUNDS") {
        Ok(v) => v
            .parse::<usize>()
            .ok()
            .filter(|&n| n >= 1)
            .unwrap_or_else(|| panic!("SHMQ_BENCH_ROUNDS={v:?}: want a whole number >= 1")),
        Err(_) if quick => 1,
        Err(_) => ROUNDS,
    };
    // Criterion's test mode runs each case once: one round.
    let rounds = if bench_mode { rounds } else { 1 };
    let started = Instant::now();
    let stat_before = CpuTimes::now();
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
        .nresamples(NRESAMPLES)
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
    for round in 1..=rounds {
        if rounds > 1 {
            // Criterion names a repeated ID's later measurements `<id> #2`, `#3`, ...
            println!("shmq bench: round {round} of {rounds}");
        }
        let t0 = Instant::now();
        let load_start = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
        cx.res.start_round(round);
        let stat0 = cx.res.last_stat;
        cases::throughput::run(&mut c, &mut cx);
        cases::memcpy::run(&mut c, &mut cx);
        cases::latency::run(&mut c, &mut cx);
        cases::mpmc::run(&mut c, &mut cx);
        cases::idle::run(&mut cx);
        if bench_mode {
            cases::python::run(&mut cx);
        }
        let steal_pct = CpuTimes::now().steal_pct_since(stat0);
        let seconds = t0.elapsed().as_secs_f64();
        if rounds > 1 {
            println!("shmq bench: round {round} took {seconds:.0} s, steal {steal_pct:.1}%");
        }
        cx.res.rounds.push(Round {
            round,
            seconds,
            steal_pct,
            load_start,
        });
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
        ("rounds", rounds.to_string()),
        (
            "steal_pct",
            format!("{:.2}", CpuTimes::now().steal_pct_since(stat_before)),
        ),
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
