//! `idle/`: the CPU a consumer blocked on an empty queue uses (getrusage in the peer), once
//! in a `get_into_timeout` that times out and once in a `get_into` woken by a put.

use std::time::{Duration, Instant};

use shmq::RawQueue;

use super::Ctx;
use crate::peer::{next_cmd, send_byte, send_u64, Peer};
use crate::place::Place;
use crate::results::Idle;
use crate::transports::unique_key;

/// CPU used by a consumer blocked on an empty queue (getrusage in the child).
pub fn run(cx: &mut Ctx) {
    if !cx.wants("idle/") {
        return;
    }
    let wait_ms = if cx.quick { 100 } else { 1000 };
    let key = unique_key();
    let q = RawQueue::create(&key, 4096).unwrap();
    let mut peer = Peer::spawn("idle", Place::Diff.peer_cpu(), &format!("{key} {wait_ms}"));
    assert_eq!(peer.ack(), b'r');
    let round = cx.res.round;
    let mut push = |what: &str, cpu_us, wall_us| {
        cx.res.idle.push(Idle {
            what: what.into(),
            cpu_us,
            wall_us,
            round,
        })
    };
    push("get_timeout on empty", peer.read_u64(), peer.read_u64());
    assert_eq!(peer.ack(), b'g');
    std::thread::sleep(Duration::from_millis(wait_ms));
    q.put(b"wake").unwrap();
    push("get woken by a put", peer.read_u64(), peer.read_u64());
    let n = cx.res.idle.len();
    let cpu: Vec<u64> = cx.res.idle[n - 2..].iter().map(|i| i.cpu_us).collect();
    println!("idle: blocked consumer CPU over {wait_ms} ms (timeout, woken): {cpu:?} µs");
}

/// The blocked consumer; args `<queue name> <wait ms>`.
pub fn peer(args: &[&str]) {
    let (key, wait_ms) = (args[0], args[1].parse::<u64>().unwrap());
    let q = RawQueue::open(key).unwrap();
    let mut buf = Vec::new();
    send_byte(b'r');
    // Phase 1: a get that times out on an empty queue.
    let t0 = cpu_time_us();
    let w0 = Instant::now();
    let r = q.get_into_timeout(&mut buf, Duration::from_millis(wait_ms));
    assert!(matches!(r, Err(shmq::Error::Timeout)), "{r:?}");
    send_u64(cpu_time_us() - t0);
    send_u64(w0.elapsed().as_micros() as u64);
    // Phase 2: a blocking get woken by the parent's put after `wait_ms`.
    let t0 = cpu_time_us();
    let w0 = Instant::now();
    send_byte(b'g');
    q.get_into(&mut buf).unwrap();
    send_u64(cpu_time_us() - t0);
    send_u64(w0.elapsed().as_micros() as u64);
    let _ = next_cmd();
}

/// User + system CPU time of this process, in microseconds.
fn cpu_time_us() -> u64 {
    // SAFETY: getrusage fills the zeroed struct we own.
    let ru = unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut ru);
        ru
    };
    let us = |t: libc::timeval| t.tv_sec as u64 * 1_000_000 + t.tv_usec as u64;
    us(ru.ru_utime) + us(ru.ru_stime)
}
