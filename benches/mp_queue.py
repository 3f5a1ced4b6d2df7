#!/usr/bin/env python3
"""Python's multiprocessing.Queue on the shmq suite's workloads (stdlib only).

Prints one JSON object on stdout:
  {"version": ..., "tput": [{"size", "place", "ns"}], "rtt": [{"size", "place", "p50", "p99", "p999", "n"}]}
`ns` is nanoseconds per message. Payloads: an int for 8 B, bytes otherwise. The parent runs
on CPU 0, the child on CPU 1 ("diff") or CPU 0 ("same"), as in benches/suite.rs.
Run by the suite when python3 exists; `--quick` makes every case tiny.
"""
import json
import multiprocessing as mp
import os
import platform
import sys
import time

SIZES = [8, 64, 1024, 64 << 10, 1 << 20]
LAT_SIZES = [8, 4096]


def pin(cpu):
    if hasattr(os, "sched_setaffinity"):
        try:
            os.sched_setaffinity(0, {cpu})
        except OSError:
            pass


def payload(size):
    return 0x0123456789ABCDEF if size == 8 else b"\xa5" * size


def consumer(q, ack, cpu, n):
    pin(cpu)
    for _ in range(n):
        q.get()
    ack.put(True)


def echo(q, back, cpu, n):
    pin(cpu)
    for _ in range(n):
        back.put(q.get())


def tput(size, cpu, budget):
    msg = payload(size)
    # Calibrate: a short first run sets the count for the timed one.
    n = 200
    while True:
        q, ack = mp.Queue(), mp.Queue()
        p = mp.Process(target=consumer, args=(q, ack, cpu, n))
        p.start()
        t = time.perf_counter()
        for _ in range(n):
            q.put(msg)
        ack.get()
        e = time.perf_counter() - t
        p.join()
        if e >= budget / 4 or n >= 2_000_000:
            return e * 1e9 / n
        n = int(min(n * max(2.0, budget / max(e, 1e-6)), 2_000_000))


def rtt(size, cpu, n):
    msg = payload(size)
    q, back = mp.Queue(), mp.Queue()
    p = mp.Process(target=echo, args=(q, back, cpu, n + 100))
    p.start()
    lat = []
    for i in range(n + 100):
        t = time.perf_counter_ns()
        q.put(msg)
        back.get()
        if i >= 100:
            lat.append(time.perf_counter_ns() - t)
    p.join()
    lat.sort()

    def at(x):
        return lat[min(int(len(lat) * x), len(lat) - 1)]

    return at(0.5), at(0.99), at(0.999), len(lat)


def main():
    quick = "--quick" in sys.argv
    ncpu = os.cpu_count() or 1
    places = [("diff", 1 % ncpu), ("same", 0)]
    pin(0)
    out = {"version": platform.python_version(), "tput": [], "rtt": []}
    budget = 0.02 if quick else 0.6
    for size in SIZES:
        for place, cpu in places:
            ns = tput(size, cpu, budget)
            out["tput"].append({"size": size, "place": place, "ns": ns})
            print(f"python mp.Queue tput {size} B {place}: {1e9 / ns:,.0f} msg/s", file=sys.stderr)
    for size in LAT_SIZES:
        for place, cpu in places:
            p50, p99, p999, n = rtt(size, cpu, 200 if quick else 5000)
            out["rtt"].append({"size": size, "place": place, "p50": p50, "p99": p99, "p999": p999, "n": n})
            print(f"python mp.Queue rtt {size} B {place}: p50 {p50 / 1000:.1f} us", file=sys.stderr)
    print(json.dumps(out))


if __name__ == "__main__":
    mp.set_start_method("fork")
    main()
