//! Results: the figure each case contributes, collected for `target/shmq-bench/results.json`
//! (which `scripts/bench_report.py` turns into `BENCHMARKS.md`).

use std::path::PathBuf;
use std::time::Duration;

/// Everything the run measured, in the order the cases ran.
#[derive(Default)]
pub struct Results {
    /// (group, row, size, place, ns per message or round trip)
    pub cases: Vec<(String, String, usize, String, f64)>,
    /// (row, size, place, p50, p99, p99.9 in ns, samples)
    pub latency: Vec<(String, usize, String, u64, u64, u64, usize)>,
    pub idle: Vec<(String, u64, u64)>,
    pub python: Option<String>,
    pub sample_size: usize,
}

impl Results {
    /// Record a case from the (iterations, elapsed) pairs of its iter_custom calls: the
    /// median per-iteration time over the last `sample_size` calls (criterion's samples).
    pub fn add(&mut self, group: &str, row: &str, size: usize, place: &str, s: &[(u64, Duration)]) {
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
        self.cases
            .push((group.into(), row.into(), size, place.into(), med));
    }

    /// The results file's contents, with the run's `meta` (machine, commit, load, ...).
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
            .map(|(g, r, s, p, ns)| {
                format!(
                    "    {{\"group\": \"{g}\", \"row\": \"{r}\", \"size\": {s}, \"place\": \"{p}\", \"ns\": {ns:.3}}}"
                )
            })
            .collect();
        o += &c.join(",\n");
        o += "\n  ],\n  \"latency\": [\n";
        let l: Vec<String> = self
            .latency
            .iter()
            .map(|(r, s, p, p50, p99, p999, n)| {
                format!(
                    "    {{\"row\": \"{r}\", \"size\": {s}, \"place\": \"{p}\", \"p50\": {p50}, \"p99\": {p99}, \"p999\": {p999}, \"n\": {n}}}"
                )
            })
            .collect();
        o += &l.join(",\n");
        o += "\n  ],\n  \"idle\": [\n";
        let i: Vec<String> = self
            .idle
            .iter()
            .map(|(what, cpu, wall)| {
                format!("    {{\"what\": \"{what}\", \"cpu_us\": {cpu}, \"wall_us\": {wall}}}")
            })
            .collect();
        o += &i.join(",\n");
        o += "\n  ],\n  \"python\": ";
        o += self.python.as_deref().unwrap_or("null").trim();
        o += "\n}\n";
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
pub fn results_file(quick: bool) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../target")))
        .join("shmq-bench")
        .join(if quick {
            "results-quick.json"
        } else {
            "results.json"
        })
}
