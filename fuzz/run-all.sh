#!/usr/bin/env bash
# Run every cargo-fuzz target for a fixed time each, on stable Rust (RUSTC_BOOTSTRAP=1),
# with AddressSanitizer. Usage: fuzz/run-all.sh [SECONDS_PER_TARGET] [TARGET...]
#
# Committed seeds (fuzz/corpus/<target>) are read-only inputs; new corpus entries go to
# fuzz/target/corpus/<target> (git-ignored) and crashes to fuzz/artifacts/<target>/.
# Installs cargo-fuzz if it is missing. Exits non-zero if any target crashed, hung
# (-timeout) or leaked past the RSS limit. Prints executions per target at the end.
set -euo pipefail
cd "$(dirname "$0")"
secs="${1:-60}"
shift || true
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    targets=(ring_ops hostile_segment codec)
fi
export RUSTC_BOOTSTRAP=1
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "== installing cargo-fuzz"
    cargo install cargo-fuzz --locked
fi
echo "== building fuzz targets (release, ASan)"
cargo fuzz build -O
mkdir -p target/logs
status=0
summary=""
for t in "${targets[@]}"; do
    maxlen=4096
    [ "$t" = hostile_segment ] && maxlen=12288
    mkdir -p "target/corpus/$t" "artifacts/$t"
    log="target/logs/$t.log"
    echo "== fuzz $t for ${secs}s (log: fuzz/$log)"
    set +e
    cargo fuzz run -O "$t" "target/corpus/$t" "corpus/$t" -- \
        -max_total_time="$secs" -max_len="$maxlen" -timeout=60 -rss_limit_mb=2048 \
        -print_final_stats=1 >"$log" 2>&1
    rc=$?
    set -e
    runs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1)

    if [ $rc -ne 0 ]; then
        status=1
        echo "!! $t failed (exit $rc); last lines of the log:"
        tail -40 "$log"
    fi
    summary+=$(printf '%-16s exit=%-3s executions=%s\n' "$t" "$rc" "${runs:-?}")$'\n'
done
echo "== fuzz summary (${secs}s per target)"
printf '%s' "$summary"
exit $status
