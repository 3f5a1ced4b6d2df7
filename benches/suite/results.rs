//! Results: the figure each case contributes, collected for `target/shmq-bench/results.json`
//! (which `scripts/bench_report.py` turns into `BENCHMARKS.md`).
//!
//! A run measures every case once per round (`SHMQ_BENCH_ROUNDS`, see `main.rs`): each
//! figure carries its round, and the report takes the median over the rounds of a case.

use std::path::PathBuf;
use std::time::Duration;

use crate::cond::{has_ring, Cond};
use crate::stat::CpuTimes;

/// The condition part of a result: ring (`ring256K`, `ring16M` or `-`), its capacity in
/// bytes (0 for `-`), and call style (`block`, `timeout` or `-`), as in the case's ID.
pub struct CondFields {
    pub ring: &'static str,
    pub ring_bytes: usize,
    pub style: &'static str,
}

impl CondFields {
    /// The fields of `row` at `size` bytes in `cond` (`None`: a case outside the
    /// conditions, such as `memcpy` or `mpmc`).
    pub fn of(row: &str, size: usize, cond: Option<Cond>) -> CondFields {
        let ring = cond.filter(|_| has_ring(row));
        let style = cond.filter(|_| row.starts_with("shmq"));
        CondFields {
            ring: ring.map_or("-", |c| c.ring.name()),
            ring_bytes: ring.map_or(0, |c| c.ring.cap(size)),
            style: style.map_or("-", |c| c.style.name()),
        }
    }

    fn json(&self) -> String {
        format!(
            "\"ring\": \"{}\", \"ring_bytes\": {}, \"style\": \"{}\"",
            self.ring, self.ring_bytes, self.style
        )
    }
}

/// One throughput-like figure: group, row, size, place, condition, ns per message (or round
/// trip), the round (from 1) it was measured in, and the share of CPU time the hypervisor
/// stole while the case ran (percent, `/proc/stat`; from the end of the previous case).
pub struct Case {
    pub group: String,
    pub row: String,
    pub size: usize,
    pub place: String,
    pub cond: CondFields,
    pub ns: f64,
    pub round: usize,
    pub steal_pct: f64,
}

/// One round-trip distribution: row, size, place, condition, p50 / p99 / p99.9 in ns, how
/// many round trips, and the round.
pub struct Latency {
    pub row: String,
    pub size: usize,
    pub place: String,
    pub cond: CondFields,
    pub p50: u64,
    pub p99: u64,
    pub p999: u64,
    pub n: usize,
    pub round: usize,
}

/// One idle-CPU figure: what, CPU time and wall time in µs, round.
pub struct Idle {
    pub what: String,
    pub cpu_us: u64,
    pub wall_us: u64,
    pub round: usize,
}

/// One round of the run: its number, wall time in seconds, the share of CPU time stolen by
/// the hypervisor during it (percent), and `/proc/loadavg` when it started.
pub struct Round {
    pub round: usize,
    pub seconds: f64,
    pub steal_pct: f64,
    pub load_start: String,
}

/// Everything the run measured, in the order the cases ran.
#[derive(Default)]
pub struct Results {
    pub cases: Vec<Case>,
    pub latency: Vec<Latency>,
    pub idle: Vec<Idle>,
    /// `benches/mp_queue.py`'s JSON output, one per round.
    pub python: Vec<String>,
    pub sample_size: usize,
    /// The rounds finished so far.
    pub rounds: Vec<Round>,
    /// The round being measured (from 1).
    pub round: usize,
    /// CPU times at the end of the previous case (or the round's start): the start of the
    /// next case's steal interval.
    pub last_stat: CpuTimes,
}

impl Results {
    /// Start round `round`: the next case's steal interval starts now.
    pub fn start_round(&mut self, round: usize) {
        self.round = round;
        self.last_stat = CpuTimes::now();
    }

    /// Record a case from the (iterations, elapsed) pairs of its iter_custom calls: the
    /// median per-iteration time over the last `sample_size` calls (criterion's samples).
    pub fn add(
        &mut self,
        group: &str,
        row: &str,
        size: usize,
        place: &str,
        cond: Option<Cond>,
        s: &[(u64, Duration)],
    ) {
        if s.is_empty() {
            return;
        }
        let take = s.len().min(self.sample_size);
        let mut per: Vec<f64> = s[s.len() - take..]
            .iter()
            .map(|(i, d)| d.as_nanos() as f64 / (*i).max(1) as f64)
            .collect();
        per.sort_by(|a, b| a.partial_cmp(b).unwrap());
        let med = per[per.len() / 2];
        let now = CpuTimes::now();
        let steal_pct = now.steal_pct_since(self.last_stat);
        self.last_stat = now;
        self.cases.push(Case {
            group: group.into(),
            row: row.into(),
            size,
            place: place.into(),
            cond: CondFields::of(row, size, cond),
            ns: med,
            round: self.round,
            steal_pct,
        });
    }

    /// The results file's contents, with the run's `meta` (machine, commit, load, ...).
    ///
    /// Every entry of `cases`, `latency` and `idle` has a `round` field; `python` is a list
    /// with one entry per round; `rounds` describes each round. (Files from before the
    /// rounds have none of these: one round, `python` a single object or null; the report
    /// reads both.)
    pub fn to_json(&self, meta: &[(&str, String)]) -> String {
        let esc = |s: &str| s.replace('\\', "\\\\").replace('"', "\\\"");
        let mut o = String::from("{\n  \"meta\": {");
        let m: Vec<String> = meta
            .iter()
            .map(|(k, v)| format!("\"{k}\": \"{}\"", esc(v.trim())))
            .collect();
        o += &m.join(", ");
        o += "},\n  \"cases\": [\n";
        let c: Vec<String> = self
            .cases
            .iter()
            .map(|c| {
                format!(
                    "    {{\"group\": \"{}\", \"row\": \"{}\", \"size\": {}, \"place\": \"{}\", {}, \"ns\": {:.3}, \"round\": {}, \"steal_pct\": {:.2}}}",
                    c.group, c.row, c.size, c.place, c.cond.json(), c.ns, c.round, c.steal_pct
                )
            })
            .collect();
        o += &c.join(",\n");
        o += "\n  ],\n  \"latency\": [\n";
        let l: Vec<String> = self
            .latency
            .iter()
            .map(|l| {
                format!(
                    "    {{\"row\": \"{}\", \"size\": {}, \"place\": \"{}\", {}, \"p50\": {}, \"p99\": {}, \"p999\": {}, \"n\": {}, \"round\": {}}}",
                    l.row, l.size, l.place, l.cond.json(), l.p50, l.p99, l.p999, l.n, l.round
                )
            })
            .collect();
        o += &l.join(",\n");
        o += "\n  ],\n  \"idle\": [\n";
        let i: Vec<String> = self
            .idle
            .iter()
            .map(|i| {
                format!(
                    "    {{\"what\": \"{}\", \"cpu_us\": {}, \"wall_us\": {}, \"round\": {}}}",
                    i.what, i.cpu_us, i.wall_us, i.round
                )
            })
            .collect();
        o += &i.join(",\n");
        o += "\n  ],\n  \"python\": [";
        let p: Vec<&str> = self.python.iter().map(|p| p.trim()).collect();
        o += &p.join(",\n    ");
        o += "],\n  \"rounds\": [\n";
        let r: Vec<String> = self
            .rounds
            .iter()
            .map(|r| {
                format!(
                    "    {{\"round\": {}, \"seconds\": {:.1}, \"steal_pct\": {:.2}, \"load_start\": \"{}\"}}",
                    r.round,
                    r.seconds,
                    r.steal_pct,
                    esc(r.load_start.trim())
                )
            })
            .collect();
        o += &r.join(",\n");
        o += "\n  ]\n}\n";
        o
    }
}

/// The p50, p99 and p99.9 of the round-trip times `lat` (sorts it).
pub fn percentiles(lat: &mut [u64]) -> (u64, u64, u64) {
    lat.sort_unstable();
    let at = |q: f64| lat[((lat.len() as f64 * q) as usize).min(lat.len() - 1)];
    (at(0.5), at(0.99), at(0.999))
}

/// Where a run writes its results: `<target dir>/shmq-bench/results.json`, or
/// `results-quick.json` for a quick run (`scripts/bench.sh` reads them there).
///
/// The target directory is `CARGO_TARGET_DIR` when that is an absolute path; when it is a
/// relative one (cargo resolved it against the directory cargo ran in, which this binary,
/// run from `benches/`, does not know), the one this binary was built into
/// (`<target>/<profile>/deps/suite-*`); else the workspace's `target/`.
pub fn results_file(quick: bool) -> PathBuf {
    let built_into = || {
        let exe = std::env::current_exe().ok()?;
        Some(exe.parent()?.parent()?.parent()?.to_path_buf())
    };
    match std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from) {
        Some(d) if d.is_absolute() => d,
        Some(d) => built_into().unwrap_or(d),
        None => PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../target")),
    }
    .join("shmq-bench")
    .join(if quick {
        "results-quick.json"
    } else {
        "results.json"
    })
}
