//! Profiling without criterion (`SHMQ_BENCH_PROFILE`): one transport, one run, one figure.

use std::time::Instant;

use crate::cond::{Cond, Ring, Style};
use crate::peer::Peer;
use crate::place::{pin, Place, PARENT_CPU};
use crate::transports::{parent_link, shmq, unique_key};

/// Environment variable that selects a profile run instead of the suite.
pub const PROFILE_ENV: &str = "SHMQ_BENCH_PROFILE";

/// `SHMQ_BENCH_PROFILE="<tput|echo> <row> <size> <count> [same] [ring16M] [timeout]"`: move
/// `count` messages (or round trips) once, without criterion, and print the rate. For
/// `perf stat` and `valgrind --tool=callgrind --trace-children=yes` (instruction counts per
/// message). The optional words, in any order, choose the placement (`same`; default
/// `diff`), the ring (`ring16M`; default `ring256K`) and shmq's call style (`timeout`;
/// default `block`), as in the suite's IDs.
///
/// `SHMQ_BENCH_PROFILE="solo <row> <size> <count> [ring16M] [timeout]"` (rows `shmq-raw`,
/// `shmq-loan`, `shmq-batch`): one thread, one queue, one message put and then taken,
/// `count` times. No peer and no waiting, so under callgrind the instruction count is
/// deterministic: run two counts and subtract to get the instructions of one put + get.
pub fn run(spec: &str) {
    let p: Vec<&str> = spec.split_whitespace().collect();
    let (kind, row, size, n) = (p[0], p[1], p[2].parse().unwrap(), p[3].parse().unwrap());
    let mut cond = Cond::DEFAULT;
    let mut place = Place::Diff;
    for &w in &p[4..] {
        if let Some(r) = Ring::parse(w) {
            cond.ring = r;
        } else if let Some(s) = Style::parse(w) {
            cond.style = s;
        } else if w == "same" {
            place = Place::Same;
        } else if w != "diff" {
            panic!("unknown word {w:?} in {PROFILE_ENV} (same, diff, ring256K, ring16M, block, timeout)");
        }
    }
    if kind == "solo" {
        let (mut send, mut recv) = shmq::solo(row, size, cond, &unique_key());
        let t = Instant::now();
        for _ in 0..n {
            send(1);
            recv(1);
        }
        let e = t.elapsed();
        println!(
            "solo {row} {size} B x {n}: {:.1} ns per put + get",
            e.as_nanos() as f64 / n as f64
        );
        return;
    }
    pin(Some(PARENT_CPU));
    let pending = parent_link(row, size, cond);
    let mut peer = Peer::spawn(kind, place.peer_cpu(), &pending.spec);
    let (mut send, mut recv) = (pending.finish)();
    assert_eq!(peer.ack(), b'r');
    peer.go(n);
    let t = Instant::now();
    if kind == "tput" {
        send(n);
    } else {
        for _ in 0..n {
            send(1);
            recv(1);
        }
    }
    assert_eq!(peer.ack(), b'k');
    let e = t.elapsed();
    println!(
        "{kind} {row} {size} B x {n}: {:.1} ns per message",
        e.as_nanos() as f64 / n as f64
    );
}
