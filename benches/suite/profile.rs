//! Profiling without criterion (`SHMQ_BENCH_PROFILE`): one transport, one run, one figure.

use std::time::Instant;

use crate::peer::Peer;
use crate::place::{pin, Place, PARENT_CPU};
use crate::transports::{parent_link, shmq, unique_key};

/// Environment variable that selects a profile run instead of the suite.
pub const PROFILE_ENV: &str = "SHMQ_BENCH_PROFILE";

/// `SHMQ_BENCH_PROFILE="<tput|echo> <row> <size> <count> [same]"`: move `count` messages
/// (or round trips) once, without criterion, and print the rate. For `perf stat` and
/// `valgrind --tool=callgrind --trace-children=yes` (instruction counts per message).
///
/// `SHMQ_BENCH_PROFILE="solo <row> <size> <count>"` (rows `shmq-raw`, `shmq-loan`,
/// `shmq-batch`): one thread, one queue, one message put and then taken, `count` times. No
/// peer and no waiting, so under callgrind the instruction count is deterministic: run two
/// counts and subtract to get the instructions of one put + get.
pub fn run(spec: &str) {
    let p: Vec<&str> = spec.split_whitespace().collect();
    let (kind, row, size, n) = (p[0], p[1], p[2].parse().unwrap(), p[3].parse().unwrap());
    if kind == "solo" {
        let (mut send, mut recv) = shmq::solo(row, size, &unique_key());
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
    let place = if p.get(4) == Some(&"same") {
        Place::Same
    } else {
        Place::Diff
    };
    pin(Some(PARENT_CPU));
    let pending = parent_link(row, size);
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
