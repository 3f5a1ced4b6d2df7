#!/usr/bin/env python3
"""Turn target/shmq-bench/results.json (written by `cargo bench -p shmq-benches --bench suite`) into
BENCHMARKS.md and benches/throughput.png.

Usage: python3 scripts/bench_report.py [results.json] [--out FILE]
Without --out the report goes to BENCHMARKS.md for a full run, and next to the results file
for any other (BENCHMARKS.quick.md for a quick run, BENCHMARKS.partial.md for a filtered one),
so that a partial run never overwrites the committed report.

Manual sections: everything in the existing output file from its first line that is exactly
`---` (a horizontal rule) to its end is hand-written and kept as it is, after the generated
part (which never writes such a line). With no such line, nothing is kept.

Conditions (issue 14): every throughput case ran at two ring sizes (`ring256K`: the suite's
rings before issue 14, max(256 KiB, next_power_of_two(4 x size + 64)); `ring16M`: 16 MiB) and
shmq's rows in two call styles (`block`: put / get_into; `timeout`: put_timeout /
get_into_timeout). The report writes one table per condition, with ratios against the peers
in the same condition of the same run; the headline and the targets use the less flattering
condition and say which.

Rounds: a run measures the whole case list R times, one round after the other (results.json
gives each figure its `round`; files from before the rounds have one). Every figure here is
the median over the rounds of its case, every ratio one of such medians; each figure shows its
spread (max / min over the rounds, "↕"), and a case whose rounds differ by more than 2x is
flagged "⚠" and listed with its rounds and the host's steal time during each.

The plot needs matplotlib: if it is not importable, the script creates a virtualenv in
<target>/bench-venv, installs matplotlib from PyPI there and re-runs itself with it (set
SHMQ_BENCH_NO_PLOT=1 to skip the plot instead).
"""
import json
import math
import os
import statistics
import subprocess
import sys
from collections import defaultdict

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIZES = [8, 64, 1024, 64 << 10, 1 << 20]
LAT_SIZES = [8, 4096]
RINGS = ["ring256K", "ring16M"]
STYLES = ["block", "timeout"]
CONDS = [(r, s) for r in RINGS for s in STYLES]
PEERS = ["ipmpsc-serde", "ipmpsc-zc", "ipc-typed", "ipc-bytes", "uds", "crossbeam",
         "python-mp.Queue", "memcpy-hot", "memcpy-stream"]
SHMQ = ["shmq-raw", "shmq-loan", "shmq-typed", "shmq-pod", "shmq-batch"]
# Rows whose buffer size the suite sets (they ran at both ring sizes).
RING_ROWS = set(SHMQ) | {"ipmpsc-serde", "ipmpsc-zc", "crossbeam"}
# A case whose rounds differ by more than this factor (max / min) is flagged as noisy.
NOISY = 2.0
# At most this many noisy cases are listed one by one.
NOISY_LIST = 40
# Steal time (percent of all CPU time) above which the report calls it out.
STEAL_NOTE = 2.0
DESC = {
    "shmq-raw": "shmq `RawQueue::put` / `get_into` (`timeout`: `put_timeout` / `get_into_timeout`)",
    "shmq-loan": "shmq `put_loan` + fill in place + `commit` / `get_loan` + read every byte in place + "
                 "`commit` (`timeout`: `put_loan_timeout` / `get_loan_timeout`)",
    "shmq-typed": "shmq `Queue<T>` (postcard; u64 at 8 B, `serde_bytes::ByteBuf` above; `timeout`: "
                  "`put_timeout` / `get_timeout`)",
    "shmq-pod": "shmq `PodQueue<T>` `put` / `get_into` (u64, `[u8; N]`; `timeout`: `put_timeout` / "
                "`get_into_timeout`)",
    "shmq-batch": "shmq `put_many` / `get_many_into` (up to 256 messages per call; blocking only: the "
                  "API has no `put_many_timeout`)",
    "ipmpsc-serde": "ipmpsc 0.5 `send`/`recv` (bincode; u64 / `ByteBuf`), ring as shmq's",
    "ipmpsc-zc": "ipmpsc 0.5 `zero_copy_context().recv::<&Bytes>()` (its fastest path; the consumer reads every byte in place, as shmq-loan's does), ring as shmq's",
    "ipc-typed": "ipc-channel 0.23 `IpcSender<T>` (u64 / `ByteBuf`)",
    "ipc-bytes": "ipc-channel 0.23 `IpcBytesSender`",
    "uds": "Unix stream socket, u32 length prefix, one `writev` per message",
    "crossbeam": "crossbeam-channel `bounded` between two threads (u64 / `Vec<u8>`), as many bytes in "
                 "slots as the ring of the condition, the consumer reads every byte of what it receives "
                 "(round trips: bounded to one message)",
    "python-mp.Queue": "Python `multiprocessing.Queue` (int / bytes), benches/mp_queue.py",
    "memcpy-hot": "`copy_from_slice` on one core, cache-hot buffers",
    "memcpy-stream": "`copy_from_slice` on one core, streaming through 1 GiB buffers",
    "floor": "round-trip floor: two spinning threads, one shared word, four copies, no queue",
}


def target_dir():
    d = os.environ.get("CARGO_TARGET_DIR")
    return os.path.abspath(d) if d else os.path.join(ROOT, "target")


def ensure_matplotlib():
    if os.environ.get("SHMQ_BENCH_NO_PLOT") == "1":
        return None
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        return plt
    except ImportError:
        pass
    if os.environ.get("SHMQ_BENCH_IN_VENV") == "1":
        print("matplotlib unavailable: no plot", file=sys.stderr)
        return None
    venv = os.path.join(target_dir(), "bench-venv")
    py = os.path.join(venv, "bin", "python3")
    try:
        if not os.path.exists(py):
            subprocess.run([sys.executable, "-m", "venv", venv], check=True)
        subprocess.run([py, "-m", "pip", "install", "-q", "matplotlib"], check=True)
    except (subprocess.CalledProcessError, OSError) as e:
        print(f"cannot install matplotlib ({e}): no plot", file=sys.stderr)
        return None
    env = dict(os.environ, SHMQ_BENCH_IN_VENV="1")
    os.execve(py, [py] + sys.argv, env)


def fmt_rate(x):
    for unit, div in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if x >= div:
            return f"{x / div:.3g} {unit}"
    return f"{x:.3g} "


def fmt_size(s):
    if s >= 1 << 20:
        return f"{s >> 20} MiB"
    if s >= 1024:
        return f"{s >> 10} KiB"
    return f"{s} B"


def fmt_ns(ns):
    if ns >= 1e6:
        return f"{ns / 1e6:.2f} ms"
    if ns >= 1e3:
        return f"{ns / 1e3:.2f} µs"
    return f"{ns:.0f} ns"


def cond_name(cond):
    return f"{cond[0]}/{cond[1]}"


def cond_words(cond):
    ring = "16 MiB rings" if cond[0] == "ring16M" else "256 KiB rings (more for big payloads)"
    calls = "`*_timeout` calls" if cond[1] == "timeout" else "blocking calls"
    return f"{ring}, {calls}"


def geomean(xs):
    xs = [x for x in xs if x and x > 0]
    return math.exp(sum(math.log(x) for x in xs) / len(xs)) if xs else None


def case_cond(c):
    """(ring, style) of a results entry; entries from before issue 14 have neither field and
    were measured at ring256K with the blocking calls."""
    row = c["row"]
    ring = c.get("ring") or ("ring256K" if row in RING_ROWS else "-")
    style = c.get("style") or ("block" if row.startswith("shmq") else "-")
    return ring, style


def spread_of(xs):
    """max / min of the positive values `xs` (None for fewer than two)."""
    xs = [x for x in xs if x and x > 0]
    return max(xs) / min(xs) if len(xs) > 1 else None


def python_runs(res):
    """The Python figures of each round: results.json holds a list (one object per round);
    files from before the rounds hold one object, or null."""
    py = res.get("python")
    if py is None:
        return []
    return py if isinstance(py, list) else [py]


def case_id(group, row, size, place, ring="-", style="-"):
    """The suite's ID of a case (as the benchmark filter reads it)."""
    if row.startswith("memcpy"):
        return f"memcpy/{row}/{size}"
    if row == "python-mp.Queue":
        return f"python/{group}/{place}/{size}"
    tail = "".join(f"/{x}" for x in (ring, style) if x != "-")
    return f"{group}/{row}/{place}/{size}{tail}"


class Data:
    """The run's figures, looked up by row, size, placement and condition: for each case the
    median over the rounds, and the rounds themselves."""

    def __init__(self, res):
        rounds = defaultdict(list)  # (row, size, place, ring, style) -> [(round, ns, steal %)]
        self.ids = {}  # the same key -> case ID
        mpmc = defaultdict(list)
        lat = defaultdict(list)  # (row, size, place, style) -> [latency entries]
        self.all_rounds = {}  # case ID -> [(round, ns, steal %)], every group
        for c in res["cases"]:
            r = (c.get("round", 1), c["ns"], c.get("steal_pct"))
            cid = case_id(c["group"], c["row"], c["size"], c["place"], *case_cond(c))
            self.all_rounds.setdefault(cid, []).append(r)
            if c["group"] == "tput":
                key = (c["row"], c["size"], c["place"]) + case_cond(c)
                rounds[key].append(r)
                self.ids[key] = cid
            elif c["group"] == "mpmc":
                mpmc[(c["row"], c["place"])].append(c["ns"])
        self.py = python_runs(res)
        for i, py in enumerate(self.py):
            for c in py.get("tput", []):
                key = ("python-mp.Queue", c["size"], c["place"], "-", "-")
                rounds[key].append((i + 1, c["ns"], None))
                cid = case_id("tput", *key[:3])
                self.ids[key] = cid
                self.all_rounds.setdefault(cid, []).append((i + 1, c["ns"], None))
            for x in py.get("rtt", []):
                lat[("python-mp.Queue", x["size"], x["place"], "-")].append(dict(x, round=i + 1))
        self.rounds = dict(rounds)
        self.tput = {k: statistics.median(ns for _, ns, _ in v) for k, v in rounds.items()}
        self.spread = {k: spread_of([ns for _, ns, _ in v]) for k, v in rounds.items()}
        for x in res["latency"]:
            lat[(x["row"], x["size"], x["place"], case_cond(x)[1])].append(x)
        self.lat = {}  # (row, size, place, style) -> latency entry, medians over the rounds
        for k, xs in lat.items():
            m = dict(xs[0])
            for f in ("p50", "p99", "p999"):
                m[f] = statistics.median(x[f] for x in xs)
            m["n"] = sum(x["n"] for x in xs)
            m["spread"] = spread_of([x["p50"] for x in xs])
            m["rounds"] = len(xs)
            self.lat[k] = m
        self.mpmc = {k: statistics.median(v) for k, v in mpmc.items()}
        self.mpmc_spread = {k: spread_of(v) for k, v in mpmc.items()}
        idle = defaultdict(list)
        for i in res["idle"]:
            idle[i["what"]].append(i)
        self.idle = [{"what": w, "cpu_us": statistics.median(x["cpu_us"] for x in xs),
                      "wall_us": statistics.median(x["wall_us"] for x in xs),
                      "cpu_max_us": max(x["cpu_us"] for x in xs), "rounds": len(xs)}
                     for w, xs in idle.items()]
        self.n_rounds = max([len(v) for v in self.all_rounds.values()] + [1])

    def key(self, row, size, place, cond):
        """(key of `row`'s figure in condition `cond`, note): rows without a ring were
        measured once per round (the same figure in every condition); shmq-batch has only
        the blocking style (note "†" in a timeout condition)."""
        ring = cond[0] if row in RING_ROWS else "-"
        style = cond[1] if row.startswith("shmq") else "-"
        note = ""
        if row == "shmq-batch" and style == "timeout":
            style, note = "block", "†"
        for k in ((row, size, place, ring, style), (row, size, "-", ring, style)):
            if k in self.tput:
                return k, note
        return None, note

    def rate_ex(self, row, size, place, cond):
        """(msg/s, note) of `row` in condition `cond` (see `key`)."""
        k, note = self.key(row, size, place, cond)
        return (None, "") if k is None else (1e9 / self.tput[k], note)

    def rate(self, row, size, place, cond):
        return self.rate_ex(row, size, place, cond)[0]

    def spread_at(self, row, size, place, cond):
        """max / min of the figure's rounds (None for one round)."""
        k, _ = self.key(row, size, place, cond)
        return None if k is None else self.spread.get(k)

    def noisy(self, row, size, place, cond):
        sp = self.spread_at(row, size, place, cond)
        return sp is not None and sp > NOISY

    def ipmpsc_best_row(self, size, place, cond):
        rs = [(self.rate(r, size, place, cond), r) for r in ("ipmpsc-serde", "ipmpsc-zc")]
        rs = [x for x in rs if x[0]]
        return max(rs) if rs else (None, None)

    def ipmpsc_best(self, size, place, cond):
        return self.ipmpsc_best_row(size, place, cond)[0]

    def noisy_cases(self):
        """[(case ID, spread, rounds sorted by round)] of the cases whose rounds differ by
        more than NOISY×, largest spread first."""
        out = []
        for cid, rs in self.all_rounds.items():
            sp = spread_of([ns for _, ns, _ in rs])
            if sp and sp > NOISY:
                out.append((cid, sp, sorted(rs, key=lambda r: r[0])))
        return sorted(out, key=lambda x: -x[1])

    def conds_present(self):
        have = {(k[3], k[4]) for k in self.tput if k[0] == "shmq-raw"}
        return [c for c in CONDS if c in have]


def rounds_section(d, run_rounds, w):
    """The rounds of the run, and every case whose rounds differ by more than NOISY×."""
    if d.n_rounds < 2:
        return
    w("## Rounds and noise\n")
    w(f"The run measured every case once per round, {d.n_rounds} rounds one after the other, so "
      "that a disturbed stretch of the run (on this KVM guest the host takes a vCPU away for "
      "seconds at a time) falls into one round of a case, not all of them; the figures above "
      "are medians over the rounds. Steal: the share of all CPU time the host took (`steal` "
      "in `/proc/stat`), for a round as a whole and for each case (from the end of the "
      "previous case, so including its peer's start). *Slowest in*: the cases whose slowest "
      "round this was.\n")
    slowest = defaultdict(int)
    for rs in d.all_rounds.values():
        if len(rs) > 1:
            slowest[max(rs, key=lambda r: r[1])[0]] += 1
    w("| round | wall time | steal | 1-min load at its start | slowest in |")
    w("|---|---|---|---|---|")
    for r in run_rounds:
        load = (r.get("load_start", "").split() or ["–"])[0]
        w(f"| {r['round']} | {r['seconds']:.0f} s | {r['steal_pct']:.1f} % | {load} | "
          f"{slowest.get(r['round'], 0)} of {sum(slowest.values())} cases |")
    w("")
    noisy = d.noisy_cases()
    spreads = sorted(sp for sp in (spread_of([x[1] for x in rs]) for rs in d.all_rounds.values())
                     if sp)
    if spreads:
        med = statistics.median(spreads)
        w(f"Spread over the rounds (largest ÷ smallest figure of a case): median {med:.2f}×, "
          f"largest {spreads[-1]:.2f}×; {len(noisy)} of {len(spreads)} cases above {NOISY:g}×.\n")
    if not noisy:
        return
    w(f"Cases whose rounds differ by more than {NOISY:g}× (ns per message, or per round trip; "
      "largest spread first):\n")
    w("| case | spread | each round | steal during it |")
    w("|---|---|---|---|")
    for cid, sp, rs in noisy[:NOISY_LIST]:
        figs = " / ".join(fmt_ns(ns) for _, ns, _ in rs)
        steal = " / ".join("–" if st is None else f"{st:.1f} %" for _, _, st in rs)
        w(f"| `{cid}` | {sp:.2f}× | {figs} | {steal} |")
    if len(noisy) > NOISY_LIST:
        w(f"| … and {len(noisy) - NOISY_LIST} more | | | |")
    w("")


def fmt_spread(sp):
    """" ↕1.3" (" ↕2.6 ⚠" above NOISY); "" for a single round."""
    if sp is None:
        return ""
    return f" ↕{sp:.2f}" + (" ⚠" if sp > NOISY else "")


def headline_cond(d):
    """The less flattering condition: the lowest geometric mean, over the sizes, of shmq-raw's
    ratio to ipmpsc's fastest path between two CPUs (shmq-raw's own rate when ipmpsc is
    missing). Returns (condition, {condition: score}, what the score is)."""
    conds = d.conds_present()
    if not conds:
        return None, {}, ""
    scores = {}
    for cond in conds:
        ratios = []
        for s in SIZES:
            a, b = d.rate("shmq-raw", s, "diff", cond), d.ipmpsc_best(s, "diff", cond)
            if a and b:
                ratios.append(a / b)
        scores[cond] = geomean(ratios)
    what = "geometric mean over the sizes of shmq-raw ÷ ipmpsc's fastest path, `diff`"
    if any(v is None for v in scores.values()):
        scores = {c: geomean([d.rate("shmq-raw", s, "diff", c) for s in SIZES]) for c in conds}
        what = "geometric mean over the sizes of shmq-raw's msg/s, `diff`"
    scored = [c for c in conds if scores[c] is not None]
    if not scored:
        return conds[0], scores, what
    return min(scored, key=lambda c: scores[c]), scores, what


def ok(b):
    return "yes" if b else "**no**"


def worst(values):
    """values: [(condition, value)], lower is worse: (worst condition, its value, range text)."""
    values = [(c, v) for c, v in values if v is not None]
    if not values:
        return None, None, ""
    c, v = min(values, key=lambda x: x[1])
    return c, v, values


def generate(res, d, plt, png, link):
    meta = res["meta"]
    py = d.py[0] if d.py else {}
    run_rounds = res.get("rounds") or []
    lines = []
    w = lines.append
    w("# shmq benchmarks\n")
    w("Generated by `scripts/bench.sh` (runs `cargo bench -p shmq-benches --bench suite`, then "
      "`scripts/bench_report.py`); `docs/performance.md` explains the suite, its conditions and "
      "the profile behind the numbers. Sections after the horizontal rule at the end are written "
      "by hand and kept by the report.\n")
    w("| | |\n|---|---|")
    w(f"| CPU | {meta['cpu']} ({meta['cores']} vCPUs, KVM guest) |")
    w(f"| kernel | {meta['kernel']} |")
    w(f"| rustc | {meta['rustc']} |")
    dirty = "" if meta.get("dirty", "0") == "0" else " plus uncommitted changes in src/ or benches/"
    w(f"| commit | `{meta['commit']}`{dirty} |")
    w(f"| date | {meta['date']} |")
    w(f"| load average (1/5/15 min) before / after | {' '.join(meta['load_before'].split()[:3])} / "
      f"{' '.join(meta['load_after'].split()[:3])} (after: the suite's own two busy processes "
      "included) |")
    quick = " (quick mode: tiny cases, not comparable)" if meta["quick"] == "true" else ""
    w(f"| suite wall time | {meta['seconds']} s{quick} |")
    if run_rounds:
        per = " / ".join(f"{r['seconds']:.0f}" for r in run_rounds)
        w(f"| rounds | {len(run_rounds)} (wall time {per} s) |")
    if meta.get("steal_pct") not in (None, ""):
        per = " / ".join(f"{r['steal_pct']:.1f}" for r in run_rounds)
        per = f" (per round: {per} %)" if len(run_rounds) > 1 else ""
        w(f"| CPU time stolen by the host (`/proc/stat` steal) | {float(meta['steal_pct']):.1f} %{per} |")
    if meta.get("filter"):
        w(f"| filter | `{meta['filter']}` (a partial run) |")
    if py:
        w(f"| Python | {py.get('version')} |")
    w("")
    # The load is judged before the run only: during and after it, the load average counts
    # the suite's own two busy processes. What the guest cannot see, the host taking a vCPU
    # away, is the steal time.
    load1 = float((meta["load_before"].split() or ["0"])[0])
    if load1 > 1.0:
        w(f"**Taken under load** (1-minute load average {load1:.1f} before the run, on "
          f"{meta['cores']} vCPUs shared with other work): cross-CPU figures suffer most, because a "
          "peer that loses its CPU to another process stalls the pipeline; ratios within the run "
          "remain comparable, absolute figures are pessimistic.\n")
    steal = float(meta.get("steal_pct") or 0)
    if steal > STEAL_NOTE:
        w(f"**The host took {steal:.1f} % of the vCPUs' time during the run** (`steal` in "
          "`/proc/stat`): a vCPU taken away stalls a cross-CPU pipeline outright, whatever the "
          "guest's own load. See the rounds and the noisy cases below.\n")
    samples = meta.get("sample_size", "10")
    warm, meas = meta.get("warm_up_s", "0.3"), meta.get("measurement_s", "1")
    nr = d.n_rounds
    if nr > 1:
        w("Placement: `diff` = the two processes (or threads) pinned to CPU 0 and CPU 1; "
          f"`same` = both pinned to CPU 0. The run measured the whole case list {nr} times, one "
          f"round after the other; every figure is the **median over the {nr} rounds** of a "
          f"round's figure, the median of {samples} criterion samples (mean per message within a "
          f"sample; {warm} s warm-up and {meas} s measurement per case and round). `↕` gives "
          "the spread, the largest ÷ the smallest of the rounds; **⚠** marks a figure whose "
          f"rounds differ by more than {NOISY:g}× (a ratio: either of its figures), listed under "
          "[Rounds and noise](#rounds-and-noise). All ratios compare medians of this one run.\n")
    else:
        w("Placement: `diff` = the two processes (or threads) pinned to CPU 0 and CPU 1; "
          f"`same` = both pinned to CPU 0. Every figure is the median of {samples} criterion "
          f"samples (mean per message within a sample; {warm} s warm-up and {meas} s measurement "
          "per case), from a single round: no spread to show, and one disturbed stretch of the "
          "run decides a figure. All ratios compare figures of this one run.\n")
    w("**Conditions.** Every throughput case ran at two ring sizes and shmq's rows in two call "
      "styles, one right after the other (in each round):\n")
    w("- `ring256K`: shmq's and ipmpsc's rings are `max(256 KiB, next_power_of_two(4 × size + 64))` "
      "(256 KiB up to 32 KiB payloads, 512 KiB at 64 KiB, 8 MiB at 1 MiB), the suite's only size "
      "before issue 14; `ring16M`: 16 MiB for both, at every size (what an independent harness "
      "gives ipmpsc). crossbeam's channel holds about as many bytes in slots as the ring.")
    w("- `block`: shmq's blocking calls (`put` / `get_into`, and the same for the other rows); "
      "`timeout`: their `*_timeout` forms (`put_timeout` / `get_into_timeout`, ...) with a "
      "deadline that never expires.")
    w("- ipc-channel, the Unix socket, Python and memcpy have neither a ring the suite sizes nor "
      "a call style: they ran once (per round), and the same figure stands in every condition. shmq-batch "
      "ran blocking only (†: the blocking figure in a `timeout` table).\n")

    hc, scores, what = headline_cond(d)
    conds = d.conds_present()

    def noisy_pair(a, b, size, place, cond):
        """Whether either figure of the ratio a ÷ b varied more than NOISY× over the rounds."""
        return any(r and d.noisy(r, size, place, cond) for r in (a, b))

    # Targets ------------------------------------------------------------------------------
    w("## Targets\n")
    if hc:
        w("Each throughput and round-trip target is judged in its **least flattering condition** "
          "(the lowest figure over the conditions that ran); the *measured* column names that "
          "condition and gives the range over all of them. `diff` placement, shmq-raw, against "
          "the peers in the same condition.\n")
    w("| target | measured (worst condition; range over conditions) | met |\n|---|---|---|")

    def ratio_target(label, size, peer, goal, fmt="{:.2f}×"):
        """peer(size, cond): the row shmq-raw is compared with."""
        vals = []
        for cond in conds:
            row = peer(size, cond)
            a, b = d.rate("shmq-raw", size, "diff", cond), row and d.rate(row, size, "diff", cond)
            if a and b:
                vals.append((cond, a / b))
        c, v, allv = worst(vals)
        if c is None:
            return
        lo, hi = min(x for _, x in allv), max(x for _, x in allv)
        rng = f"; {fmt.format(lo)}–{fmt.format(hi)}" if len(allv) > 1 else ""
        flag = " ⚠" if noisy_pair("shmq-raw", peer(size, c), size, "diff", c) else ""
        w(f"| {label}, {fmt_size(size)} | {fmt.format(v)}{flag} (`{cond_name(c)}`{rng}) | "
          f"{ok(v >= goal)} |")

    for size in SIZES:
        ratio_target("issue 14: cross-process ≥ 1× crossbeam between two threads", size,
                     lambda s, c: "crossbeam", 1.0)
    for size in [8, 64, 1024, 64 << 10]:
        ratio_target("issue 14: ≥ 2× ipmpsc's fastest path", size,
                     lambda s, c: d.ipmpsc_best_row(s, "diff", c)[1], 2.0)
    for size in [8, 64, 1024]:
        ratio_target("issue 14: ≥ 50× Python mp.Queue", size,
                     lambda s, c: "python-mp.Queue", 50.0, "{:.0f}×")

    def rtt_target(label, size, ok_fn):
        vals = [(st, d.lat.get(("shmq-raw", size, "diff", st))) for st in STYLES]
        vals = [(st, x) for st, x in vals if x]
        if not vals:
            return
        st, x = max(vals, key=lambda v: (v[1]["p50"], v[1]["p99"]))
        fl = d.lat.get(("floor", size, "diff", "-"))
        floor = f"; floor p50 {fmt_ns(fl['p50'])}" if fl else ""
        others = "".join(f"; `{s2}` p50 {fmt_ns(y['p50'])}, p99 {fmt_ns(y['p99'])}"
                         for s2, y in vals if s2 != st)
        flag = " ⚠" if (x.get("spread") or 0) > NOISY else ""
        w(f"| {label} | p50 {fmt_ns(x['p50'])}{flag}, p99 {fmt_ns(x['p99'])} (`{st}`{others}{floor}) | "
          f"{ok(ok_fn(x))} |")

    rtt_target("issue 14: round trip p50 ≤ 2 µs and p99 ≤ 20 µs, 4 KiB, diff", 4096,
               lambda x: x["p50"] <= 2000 and x["p99"] <= 20000)
    rtt_target("issue 14: round trip p50 < 1 µs, 8 B, diff", 8, lambda x: x["p50"] < 1000)

    vals = []
    for cond in conds:
        s, m = d.rate("shmq-raw", 1 << 20, "diff", cond), d.rate("memcpy-stream", 1 << 20, "-", cond)
        if s and m:
            vals.append((cond, s / m))
    c, v, allv = worst(vals)
    if c:
        w(f"| issue 4: throughput ≥ 0.8× streaming memcpy, 1 MiB | {v:.2f}× (`{cond_name(c)}`; "
          f"{min(x for _, x in allv):.2f}–{max(x for _, x in allv):.2f}×) | {ok(v >= 0.8)} |")
    vals = []
    for cond in conds:
        b, cb = d.rate("shmq-batch", 8, "diff", cond), d.rate("crossbeam", 8, "diff", cond)
        if b and cb:
            vals.append((cond, b / cb))
    c, v, allv = worst(vals)
    if c:
        w(f"| issue 4: batch path ≥ crossbeam between threads, 8 B | {v:.2f}× (`{cond_name(c)}`; "
          f"{min(x for _, x in allv):.2f}–{max(x for _, x in allv):.2f}×) | {ok(v >= 1)} |")
    for size in LAT_SIZES:
        xs = [d.lat.get(("shmq-raw", size, "same", st)) for st in STYLES]
        xs = [x for x in xs if x]
        u = d.lat.get(("uds", size, "same", "-"))
        if xs and u:
            x = max(xs, key=lambda v: v["p50"])
            w(f"| issue 4: same-CPU round trip no worse than a Unix socket, {fmt_size(size)} | "
              f"p50 {fmt_ns(x['p50'])} vs {fmt_ns(u['p50'])}; p99 {fmt_ns(x['p99'])} vs "
              f"{fmt_ns(u['p99'])} (`{x.get('style', 'block')}`) | {ok(x['p50'] <= u['p50'])} |")
    for i in d.idle:
        secs = max(i["wall_us"] / 1e6, 0.1)
        w(f"| issue 4: consumer blocked on an empty queue for 1 s uses < 10 ms CPU ({i['what']}) | "
          f"{i['cpu_us'] / 1000:.2f} ms CPU in {secs:.2f} s | {ok(i['cpu_us'] < 10000 * secs)} |")
    w("")
    if d.n_rounds > 1:
        noisy = d.noisy_cases()
        w(f"{len(noisy)} of {len(d.all_rounds)} cases varied by more than {NOISY:g}× between "
          "rounds (⚠ in the tables; listed under [Rounds and noise](#rounds-and-noise)); a ⚠ in "
          "this table marks a target whose figures are among them.\n")

    rows_all = SHMQ + PEERS

    def rate_table(place, cond):
        w("| row | " + " | ".join(fmt_size(s) for s in SIZES) + " |")
        w("|---|" + "---|" * len(SIZES))
        for row in rows_all:
            cells = []
            for s in SIZES:
                r, note = d.rate_ex(row, s, place, cond)
                sp = fmt_spread(d.spread_at(row, s, place, cond))
                cells.append("–" if r is None else f"{fmt_rate(r)}/s ({fmt_rate(r * s)}B/s){note}{sp}")
            if any(c != "–" for c in cells):
                w(f"| {row} | " + " | ".join(cells) + " |")
        w("")

    def ratio_table(me, place, cond):
        w(f"Ratio {me} ÷ row (`{place}`, `{cond_name(cond)}`; above 1 means {me} is faster):\n")
        w("| row | " + " | ".join(fmt_size(s) for s in SIZES) + " |")
        w("|---|" + "---|" * len(SIZES))
        for row in PEERS + [r for r in SHMQ if r != me]:
            cells = []
            for s in SIZES:
                a, b = d.rate(me, s, place, cond), d.rate(row, s, place, cond)
                flag = " ⚠" if noisy_pair(me, row, s, place, cond) else ""
                cells.append("–" if not a or not b else f"{a / b:.2f}×{flag}")
            if any(c != "–" for c in cells):
                w(f"| {row} | " + " | ".join(cells) + " |")
        w("")

    # Headline -----------------------------------------------------------------------------
    if hc:
        which = "the less flattering condition" if len(conds) > 1 else "the only condition in this run"
        w(f"## Headline: throughput between two CPUs, `{cond_name(hc)}` ({which})\n")
        sc = "; ".join(f"`{cond_name(c)}` {scores[c]:.3g}" for c in conds if scores.get(c) is not None)
        w(f"One producer process → one consumer process, `diff`, {cond_words(hc)}: the condition "
          f"with the lowest {what} ({sc}). Messages per second (payload bytes per second).\n")
        rate_table("diff", hc)
        ratio_table("shmq-raw", "diff", hc)
        w("shmq-raw ÷ the main peers in every condition (`diff`):\n")
        w("| peer | condition | " + " | ".join(fmt_size(s) for s in SIZES) + " |")
        w("|---|---|" + "---|" * len(SIZES))
        for peer in ["ipmpsc-zc", "ipmpsc-serde", "crossbeam", "uds", "python-mp.Queue"]:
            for cond in conds:
                cells = []
                for s in SIZES:
                    a, b = d.rate("shmq-raw", s, "diff", cond), d.rate(peer, s, "diff", cond)
                    flag = " ⚠" if noisy_pair("shmq-raw", peer, s, "diff", cond) else ""
                    cells.append("–" if not a or not b else f"{a / b:.2f}×{flag}")
                if any(c != "–" for c in cells):
                    mark = " (headline)" if cond == hc else ""
                    w(f"| {peer} | `{cond_name(cond)}`{mark} | " + " | ".join(cells) + " |")
        w("")
        w("What each condition costs shmq's rows (`diff`): the figure ÷ the same row's "
          "`ring256K/block` figure.\n")
        w("| row | condition | " + " | ".join(fmt_size(s) for s in SIZES) + " |")
        w("|---|---|" + "---|" * len(SIZES))
        base = ("ring256K", "block")
        for row in SHMQ + ["ipmpsc-zc", "crossbeam"]:
            for cond in conds:
                if cond == base or (row not in RING_ROWS) or (not row.startswith("shmq") and cond[1] == "timeout"):
                    continue
                if row == "shmq-batch" and cond[1] == "timeout":
                    continue
                cells = []
                for s in SIZES:
                    a, b = d.rate(row, s, "diff", cond), d.rate(row, s, "diff", base)
                    flag = (" ⚠" if d.noisy(row, s, "diff", cond) or d.noisy(row, s, "diff", base)
                            else "")
                    cells.append("–" if not a or not b else f"{a / b:.2f}×{flag}")
                if any(c != "–" for c in cells):
                    w(f"| {row} | `{cond_name(cond)}` | " + " | ".join(cells) + " |")
        w("")

    # Per condition ------------------------------------------------------------------------
    for place in ["diff", "same"]:
        for cond in conds:
            w(f"## Throughput, placement `{place}`, `{cond_name(cond)}`\n")
            w(f"One producer → one consumer, {cond_words(cond)}. Messages per second (payload "
              "bytes per second).\n")
            rate_table(place, cond)
            ratio_table("shmq-raw", place, cond)

    # Round trips --------------------------------------------------------------------------
    w("## Round-trip latency (ping-pong)\n")
    rounds_note = (f" Percentiles: the median over the rounds of each round's percentile (every "
                   f"round trip of the case in that round); round trips: all rounds together." if
                   d.n_rounds > 1 else "")
    w("Rings `ring256K` (one message in flight: the ring's size does not come into it); shmq-raw "
      f"with both call styles.{rounds_note}\n")
    w("| row | size | place | p50 | p99 | p99.9 | round trips | shmq-raw p50 ÷ row p50 (block / timeout) |")
    w("|---|---|---|---|---|---|---|---|")
    lat_rows = [("shmq-raw", "block"), ("shmq-raw", "timeout"), ("ipmpsc-zc", "-"), ("ipc-bytes", "-"),
                ("uds", "-"), ("crossbeam", "-"), ("python-mp.Queue", "-"), ("floor", "-")]
    for size in LAT_SIZES:
        for place in ["diff", "same"]:
            mes = [d.lat.get(("shmq-raw", size, place, st)) for st in STYLES]
            for row, st in lat_rows:
                x = d.lat.get((row, size, place, st))
                if not x:
                    continue
                ratio = " / ".join(f"{me['p50'] / x['p50']:.3f}" if me else "–" for me in mes)
                label = f"{row} (`{st}`)" if st != "-" else row
                sp = fmt_spread(x.get("spread"))
                w(f"| {label} | {fmt_size(size)} | {place} | {fmt_ns(x['p50'])}{sp} | {fmt_ns(x['p99'])} | "
                  f"{fmt_ns(x['p999'])} | {x['n']} | {ratio} |")
    w("\n(crossbeam runs between two threads of one process; the others between two processes. "
      "**floor** is the physical limit: two threads spinning on one word with no queue at all, "
      "each copying the payload into a shared buffer and out again, the same four copies as a "
      "queue round trip; diff placement only.)\n")

    if d.mpmc:
        w("## MPMC: N producer processes × N consumer processes on one shmq queue, 64 B\n")
        w("`diff`: producers pinned to CPU 0, consumers to CPU 1; `same`: all on CPU 0. "
          "`ring256K`, blocking calls.\n")
        w("| processes | diff: total msg/s | same: total msg/s | diff ÷ SPSC (1×1, diff) |")
        w("|---|---|---|---|")
        base = d.mpmc.get(("shmq-raw-1x1", "diff"))

        def mp_cell(row, place):
            ns = d.mpmc.get((row, place))
            return "–" if not ns else fmt_rate(1e9 / ns) + fmt_spread(d.mpmc_spread.get((row, place)))
        for n in [1, 2, 4]:
            row = f"shmq-raw-{n}x{n}"
            dd = d.mpmc.get((row, "diff"))
            ratio = f"{base / dd:.2f}" if dd and base else "–"
            w(f"| {n}×{n} | {mp_cell(row, 'diff')} | {mp_cell(row, 'same')} | {ratio} |")
        w("")

    if d.idle:
        w("## CPU used by a blocked consumer (getrusage in the child)\n")
        many = d.n_rounds > 1
        w("| case | CPU time" + (" (median; largest round)" if many else "") + " | wall time |")
        w("|---|---|---|")
        for i in d.idle:
            top = f"; {i['cpu_max_us'] / 1000:.2f} ms" if many else ""
            w(f"| {i['what']} | {i['cpu_us'] / 1000:.2f} ms{top} | {i['wall_us'] / 1000:.0f} ms |")
        w("")

    rounds_section(d, run_rounds, w)

    w("## Rows\n")
    for k, v in DESC.items():
        w(f"- **{k}**: {v}")
    w("")

    if plt is not None and hc:
        fig, axes = plt.subplots(1, 2, figsize=(14, 6), sharey=True)
        for ax, place in zip(axes, ["diff", "same"]):
            for row in rows_all:
                xs, ys = [], []
                for s in SIZES:
                    r = d.rate(row, s, place, hc)
                    if r:
                        xs.append(s)
                        ys.append(r * s / 1e9)
                if xs:
                    shm = row.startswith("shmq")
                    style = "-" if shm else ("--" if row.startswith("memcpy") else ":")
                    color = plt.get_cmap("tab20")(rows_all.index(row) % 20)
                    ax.plot(xs, ys, style, marker="o", label=row, color=color,
                            linewidth=2.5 if shm else 1.2)
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_xticks(SIZES, [fmt_size(s) for s in SIZES])
            ax.set_xlabel("payload size")
            ax.set_title(f"one producer → one consumer, placement {place}, {cond_name(hc)}")
            ax.grid(True, which="both", alpha=0.3)
        axes[0].set_ylabel("payload GB/s")
        axes[1].legend(loc="lower right", fontsize=8)
        fig.suptitle(f"shmq vs peers: {meta['cpu']}, {meta['date']}, commit {meta['commit']}")
        fig.tight_layout()
        fig.savefig(png, dpi=90)
        w("## Plot\n")
        w(f"![throughput against payload size, {cond_name(hc)}]({link})\n")
    return lines


def manual_part(path):
    """The hand-written tail of an existing report: from its first line that is exactly `---`
    to the end ("" when the file or the line does not exist)."""
    try:
        with open(path) as f:
            text = f.read()
    except FileNotFoundError:
        return ""
    lines = text.split("\n")
    for i, line in enumerate(lines):
        if line.strip() == "---":
            return "\n".join(lines[i:])
    return ""


def main():
    argv = sys.argv[1:]
    out = None
    if "--out" in argv:
        i = argv.index("--out")
        out = argv[i + 1]
        argv = argv[:i] + argv[i + 2:]
    args = [a for a in argv if not a.startswith("--")]
    src = args[0] if args else os.path.join(target_dir(), "shmq-bench", "results.json")
    with open(src) as f:
        res = json.load(f)
    meta = res["meta"]
    if out is None:
        if meta.get("quick") == "true":
            out = os.path.join(os.path.dirname(os.path.abspath(src)), "BENCHMARKS.quick.md")
        elif meta.get("filter"):
            out = os.path.join(os.path.dirname(os.path.abspath(src)), "BENCHMARKS.partial.md")
        else:
            out = os.path.join(ROOT, "BENCHMARKS.md")
    plt = ensure_matplotlib()
    d = Data(res)

    # The committed report's plot lives in benches/; any other report gets its own.
    if os.path.abspath(out) == os.path.join(ROOT, "BENCHMARKS.md"):
        png, link = os.path.join(ROOT, "benches", "throughput.png"), "benches/throughput.png"
    else:
        png = os.path.splitext(out)[0] + ".png"
        link = os.path.basename(png)
    lines = generate(res, d, plt, png, link)
    for i, line in enumerate(lines):
        assert line.strip() != "---", f"generated line {i} would be taken for the manual part"
    # Keep the hand-written sections of the file being replaced (or, for a report written
    # elsewhere, of BENCHMARKS.md, so that a trial report shows the whole page).
    manual = manual_part(out) or manual_part(os.path.join(ROOT, "BENCHMARKS.md"))
    text = "\n".join(lines)
    if manual:
        text = text.rstrip("\n") + "\n\n" + manual
    with open(out, "w") as f:
        f.write(text)
    print(f"wrote {out}" + (f" and {png}" if plt is not None else "")
          + (" (manual sections kept)" if manual else ""))


if __name__ == "__main__":
    main()
