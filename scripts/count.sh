#!/usr/bin/env bash
# Instructions per message: runs benches/count.rs under callgrind (gungraun; needs valgrind and
# the gungraun-runner of the gungraun version in Cargo.lock on PATH) and prints one table of
# instructions per message, with the previous run (or the --baseline) beside it.
#   scripts/count.sh                          every case; compares with the previous run
#   scripts/count.sh '*::raw_put_get*'        only the matching cases (a wildcard on
#                                             count::GROUP::FUNCTION::ID; --list lists them)
#   scripts/count.sh --save-baseline=main     keep this run as baseline "main"
#   scripts/count.sh --baseline=main          compare with baseline "main" (kept unchanged)
# Other arguments go to gungraun-runner (`cargo bench -p shmq-benches --bench count -- --help`).
# About 10 s once built: each case is one short valgrind run. See docs/performance.md.
set -euo pipefail
cd "$(dirname "$0")/.."
out="${GUNGRAUN_HOME:-${CARGO_TARGET_DIR:-target}/gungraun}/shmq-benches/count"
# Only this run's cases in the table: earlier summaries (other filters) are removed first.
[ -d "$out" ] && find "$out" -name summary.json -delete
cargo bench -p shmq-benches --bench count -- --save-summary=json "$@"
python3 - "$out" <<'EOF'
import json, pathlib, re, sys

rows = []
for f in sorted(pathlib.Path(sys.argv[1]).glob("*/*/summary.json")):
    s = json.load(open(f))
    ir = s["profiles"][0]["data"]["total"]["metrics"]["Ir"]["values"]
    msgs = int(re.search(r"msgs_(\d+)", s["id"] or "").group(1))
    rows.append((s["group"], s["function_name"], msgs, ir.get("new"), ir.get("old")))
# The order of benches/count.rs; a case not listed here goes last.
order = ["raw_put_get", "raw_put_get_timeout", "raw_try_put_get", "raw_put_only",
         "raw_get_only", "raw_batch64", "loan_write", "loan_read", "loan_both", "typed_u64",
         "pod_u64", "crossbeam_vec8"]
rows.sort(key=lambda r: (order.index(r[1]) if r[1] in order else len(order), r[1]))
print("\ninstructions per 8-byte message (callgrind Ir / messages; put + get unless the name says)")
print(f"{'case':<34}{'msgs':>6}{'Ir/msg':>10}{'before':>10}{'change':>9}")
per = {}
for group, name, msgs, new, old in rows:
    n = new / msgs
    per[name] = n
    o = f"{old / msgs:10.1f}" if old is not None else f"{'-':>10}"
    c = f"{(new - old) / old * 100:+8.1f}%" if old else f"{'':>9}"
    print(f"{group + '/' + name:<34}{msgs:>6}{n:10.1f}{o}{c}")
checks = [
    ("put + get_into <= 150", "raw_put_get", lambda v: v <= 150),
    ("batches of 64 <= 120 per message", "raw_batch64", lambda v: v <= 120),
]
print("\nissue 14 targets:")
for label, name, ok in checks:
    if name in per:
        print(f"  {label}: {per[name]:.1f} {'met' if ok(per[name]) else 'NOT met'}")
if "raw_put_get" in per and "raw_put_get_timeout" in per:
    d = per["raw_put_get_timeout"] - per["raw_put_get"]
    print(f"  *_timeout equal to blocking: {d:+.1f} per message {'met' if d <= 0 else 'NOT met'}")
EOF
