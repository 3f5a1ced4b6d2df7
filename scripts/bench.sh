#!/usr/bin/env bash
# Regenerate BENCHMARKS.md and benches/throughput.png: run the criterion suite (shmq against
# its peers, cross-process, every throughput case at two ring sizes and shmq's rows in two
# call styles; the whole case list once per round, 3 rounds: ~9-10 minutes on 2 vCPUs), then
# the report step (the median over the rounds per case, with the spread of the rounds).
#   scripts/bench.sh                      full run; writes BENCHMARKS.md (keeping its manual
#                                         sections, from the first line that is `---`)
#   SHMQ_BENCH_ROUNDS=5 scripts/bench.sh  another number of rounds (default 3)
#   SHMQ_BENCH_QUICK=1 scripts/bench.sh   tiny cases, one round (CI smoke test); report goes
#                                         to <target>/shmq-bench/BENCHMARKS.quick.md
#   scripts/bench.sh tput/shmq-raw/diff/1024
#                                         a filtered (partial) run; report goes to
#                                         <target>/shmq-bench/BENCHMARKS.partial.md
# Extra arguments go to the suite: a criterion filter such as `tput/`, `rtt/`, `ring16M`,
# and criterion's options (`--warm-up-time 1 --measurement-time 3 --sample-size 20`).
# The suite's results land in $CARGO_TARGET_DIR/shmq-bench/ (default target/shmq-bench/).
set -euo pipefail
cd "$(dirname "$0")/.."
# An absolute target directory, so that cargo, the suite (run from benches/) and the report
# agree on it.
TARGET_DIR="$(realpath -m "${CARGO_TARGET_DIR:-target}")"
export CARGO_TARGET_DIR="$TARGET_DIR"
# The report judges the machine's load from this moment only: during the run the suite's own
# two busy processes are in the load average.
echo "load before: $(cat /proc/loadavg)"
cargo bench -p shmq-benches --bench suite -- "$@"
if [ "${SHMQ_BENCH_QUICK:-0}" = "1" ]; then
    results="$TARGET_DIR/shmq-bench/results-quick.json"
else
    results="$TARGET_DIR/shmq-bench/results.json"
fi
# The report picks its output from the run: BENCHMARKS.md only for a full, non-quick run.
python3 scripts/bench_report.py "$results"
