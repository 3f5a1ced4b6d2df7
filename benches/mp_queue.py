#!/usr/bin/env python3
"""Python's multiprocessing.Queue on the shmq suite's workloads (stdlib only).

Prints one JSON object on stdout:
  {"version": ..., "tput": [{"size", "place", "ns"}], "rtt": [{"size", "place", "p50", "p99", "p999", "n"}]}
`ns` is nanoseconds per message. Payloads: an int for 8 B, bytes otherwise. Run by the suite
(benches/suite/cases/python.rs) when python3 exists; the suite passes the payload sizes and
the placement (the parent's CPU, and each place's peer CPU), so that they have one
definition, in benches/suite/payloads.rs and benches/suite/place.rs:
  mp_queue.py [--quick] --sizes 8,64,... --lat-sizes 8,4096 --parent-cpu 0 --place diff=1 --place same=0
`--quick` makes every case tiny.
"""
import argparse
import json
import multiprocessing as mp
import os
import platform
import sys
import time


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


def parse_sizes(text):
    return [int(x) for x in text.split(",")]


def parse_place(text):
    name, cpu = text.split("=")
    return name, int(cpu)


def main():
    ap = argparse.ArgumentParser(description="multiprocessing.Queue on the shmq suite's workloads")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--sizes", type=parse_sizes, required=True, help="throughput payload sizes, comma-separated")
    ap.add_argument("--lat-sizes", type=parse_sizes, required=True, help="round-trip payload sizes")
    ap.add_argument("--parent-cpu", type=int, required=True)
    ap.add_argument("--place", type=parse_place, action="append", required=True, help="NAME=CPU of the child, in order")
    args = ap.parse_args()
    quick = args.quick
    places = args.place
    pin(args.parent_cpu)
    out = {"version": platform.python_version(), "tput": [], "rtt": []}
    budget = 0.02 if quick else 0.6
    for size in args.sizes:
        for place, cpu in places:
            ns = tput(size, cpu, budget)
            out["tput"].append({"size": size, "place": place, "ns": ns})
            print(f"python mp.Queue tput {size} B {place}: {1e9 / ns:,.0f} msg/s", file=sys.stderr)
    for size in args.lat_sizes:
        for place, cpu in places:
            p50, p99, p999, n = rtt(size, cpu, 200 if quick else 5000)
            out["rtt"].append({"size": size, "place": place, "p50": p50, "p99": p99, "p999": p999, "n": n})
            print(f"python mp.Queue rtt {size} B {place}: p50 {p50 / 1000:.1f} us", file=sys.stderr)
    print(json.dumps(out))


if __name__ == "__main__":
    mp.set_start_method("fork")
    main()
