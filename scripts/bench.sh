#!/usr/bin/env bash
# Regenerate BENCHMARKS.md and benches/throughput.png: run the criterion suite (shmq against
# its peers, cross-process, ~8 minutes on 2 cores), then the report step.
#   scripts/bench.sh              full run; writes BENCHMARKS.md
#   SHMQ_BENCH_QUICK=1 scripts/bench.sh   tiny cases (CI smoke test); report goes to
#                                         target/shmq-bench/BENCHMARKS.quick.md
# Extra arguments go to the suite (a criterion filter such as `tput/` or `rtt/`).
set -euo pipefail
cd "$(dirname "$0")/.."
echo "load before: $(cat /proc/loadavg)"
cargo bench -p shmq-benches --bench suite -- "$@"
if [ "${SHMQ_BENCH_QUICK:-0}" = "1" ]; then
    python3 scripts/bench_report.py target/shmq-bench/results-quick.json \
        --out target/shmq-bench/BENCHMARKS.quick.md
else
    python3 scripts/bench_report.py target/shmq-bench/results.json
fi
