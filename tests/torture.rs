//! kill -9 torture: producer and consumer processes are SIGKILLed at random moments (half
//! of the kills aimed at a process while it holds the producer or consumer lock) and
//! replaced, round after round. After each kill the survivors must make progress on both
//! sides; at the end every message is accounted for.
//!
//! * `SHMQ_TORTURE_ROUNDS` — number of kills (default 300: one to two minutes on a busy 2-core
//!   machine). Use 1000+ for the long run:
//!   `SHMQ_TORTURE_ROUNDS=1000 cargo test --release --test torture -- --nocapture`.
//! * `SHMQ_TORTURE_SEED` — RNG seed (default: time based; printed).
//!
//! The load includes the inputs that found lost wake-ups (issue 9 §1): one message in
//! eight is larger than half the ring (up to `max_message()`), producers pause now and
//! then so that consumers drain the ring and fall asleep, and half of the single puts and
//! of the gets are untimed (a missed wake-up then shows as a deadlock, not as a delay).
//!
//! Counted (all must be 0): deadlocks (no progress on a side for 10 s after a kill, or
//! children that do not finish after close), torn messages, duplicates, out-of-order
//! messages per producer, and messages whose `put` returned `Ok` but were never delivered
//! — except those attributable to a consumer killed between taking a message and logging
//! it (at most one per consumer kill; counted separately).
//!
//! Children are the roles `producer` and `consumer` (`<queue>:<id>:<log path>`, see
//! `common::child`). Producers append `(id, seq)` records to their log after each `put` returns `Ok`; consumers append what
//! they received (and a torn-message marker when validation fails). Plain `write(2)` to a
//! file survives SIGKILL of the writer, so no fsync is needed.

mod common;

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::Write;
use std::time::{Duration, Instant};

use common::{child, eventually, mix64, uniq, wait_stopped, RoleChild};
use shmq::{Error, Options, RawQueue};

/// Log record: `[id: u32][kind: u32][seq: u64]`.
const REC: usize = 16;
const KIND_OK: u32 = 0;
const KIND_TORN: u32 = 1;
const CAPACITY: usize = 4096;
/// No progress for this long after a kill counts as a deadlock.
const STUCK: Duration = Duration::from_secs(10);

/// Largest message body: the message (`12 + body + 8` bytes) is then `max_message()`.
const MAX_BODY: u64 = CAPACITY as u64 - 8 - 20;

/// Message for (producer id, seq): `id u32 | seq u64 | body | checksum u64`, variable size
/// so that records wrap around the 4 KiB ring at every offset. One in eight is larger than
/// half the ring (up to `max_message()`): those need a SKIP record and most of the ring,
/// the case that lost wake-ups after SKIP records (issue 9 §1) stall on.
fn message(id: u32, seq: u64) -> Vec<u8> {
    let h = mix64(((id as u64) << 40) ^ seq);
    let half = CAPACITY as u64 / 2;
    let body = if h.is_multiple_of(8) {
        (half + (h >> 8) % (MAX_BODY - half + 1)) as usize
    } else {
        (h % 700) as usize
    };
    let mut m = Vec::with_capacity(12 + body + 8);
    m.extend_from_slice(&id.to_le_bytes());
    m.extend_from_slice(&seq.to_le_bytes());
    m.extend((0..body).map(|i| (h >> (i % 8 * 8)) as u8 ^ i as u8));
    let sum = m.iter().fold(h, |a, &b| mix64(a ^ b as u64));
    m.extend_from_slice(&sum.to_le_bytes());
    m
}

/// `Some((id, seq))` if `m` is exactly a message this test produces.
fn check(m: &[u8]) -> Option<(u32, u64)> {
    if m.len() < 20 {
        return None;
    }
    let id = u32::from_le_bytes(m[0..4].try_into().unwrap());
    let seq = u64::from_le_bytes(m[4..12].try_into().unwrap());
    (message(id, seq) == m).then_some((id, seq))
}

fn append(log: &mut File, id: u32, kind: u32, seq: u64) {
    let mut r = [0u8; REC];
    r[0..4].copy_from_slice(&id.to_le_bytes());
    r[4..8].copy_from_slice(&kind.to_le_bytes());
    r[8..16].copy_from_slice(&seq.to_le_bytes());
    log.write_all(&r).expect("log write");
}

fn read_log(path: &std::path::Path) -> Vec<(u32, u32, u64)> {
    let bytes = std::fs::read(path).unwrap_or_default();
    // A kill can never split a 16-byte write(2) to a regular file, but be lenient.
    bytes
        .chunks_exact(REC)
        .map(|r| {
            (
                u32::from_le_bytes(r[0..4].try_into().unwrap()),
                u32::from_le_bytes(r[4..8].try_into().unwrap()),
                u64::from_le_bytes(r[8..16].try_into().unwrap()),
            )
        })
        .collect()
}

common::child_roles!(producer, consumer);

/// The start of both roles (`<queue>:<id>:<log path>`): die with the parent, open the log
/// and the queue, and tell the parent which holder id is ours.
fn attach(args: &[String]) -> (u32, File, RawQueue) {
    // Die with the parent, so a failed run leaves no orphans.
    // SAFETY: prctl(PR_SET_PDEATHSIG) only sets a flag on this process.
    unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) };
    let (name, log_path) = (&args[0], &args[2]);
    let id: u32 = args[1].parse().unwrap();
    let log = File::options()
        .create(true)
        .append(true)
        .open(log_path)
        .unwrap();
    let q = RawQueue::open(name).unwrap();
    // The parent aims kills at lock holders: tell it which holder id is ours.
    std::fs::write(
        format!("{log_path}.holder"),
        q.holder_id_for_test().unwrap().to_string(),
    )
    .unwrap();
    (id, log, q)
}

/// producer:<queue>:<id>:<log path> — puts messages (id, 0..) for ever, logging each put
/// that returned `Ok`; returns when the queue is closed.
fn producer(args: &[String]) {
    let (id, mut log, q) = attach(args);
    let mut seq = 0u64;
    let mut rng = mix64(id as u64);
    loop {
        rng = mix64(rng);
        // Now and then pause, so that the consumers drain the ring and fall asleep in get:
        // the next (possibly large, wrapping) put must wake them.
        if (rng >> 16).is_multiple_of(16) {
            std::thread::sleep(Duration::from_micros((rng >> 24) % 2000));
        }
        // Mostly single puts, sometimes a batch (published under one lock hold).
        let n = if rng.is_multiple_of(4) {
            1 + (rng >> 8) % 4
        } else {
            1
        };
        let msgs: Vec<Vec<u8>> = (seq..seq + n).map(|s| message(id, s)).collect();
        let r = if n == 1 && (rng >> 32).is_multiple_of(2) {
            q.put_timeout(&msgs[0], Duration::from_millis(200))
        } else if n == 1 {
            // Untimed: a lost wake-up would block it for good.
            q.put(&msgs[0])
        } else {
            q.put_many(&msgs)
        };
        match r {
            Ok(()) => {
                for s in seq..seq + n {
                    append(&mut log, id, KIND_OK, s);
                }
                seq += n;
            }
            Err(Error::Timeout) => {}
            Err(Error::Closed) => return,
            Err(e) => panic!("producer {id}: {e}"),
        }
    }
}

/// consumer:<queue>:<id>:<log path> — gets messages, logging each (or a torn-message
/// marker); returns when the queue is closed and drained.
fn consumer(args: &[String]) {
    let (id, mut log, q) = attach(args);
    let mut buf = Vec::new();
    let mut rng = mix64(!(id as u64));
    loop {
        rng = mix64(rng);
        // Half of the gets are untimed: a consumer asleep in get() must be woken by every
        // put it could take (a lost wake-up is then a deadlock, not a delay).
        let r = if rng.is_multiple_of(2) {
            q.get_into(&mut buf)
        } else {
            q.get_into_timeout(&mut buf, Duration::from_millis(200))
        };
        match r {
            Ok(_) => match check(&buf) {
                Some((pid, seq)) => append(&mut log, pid, KIND_OK, seq),
                None => append(&mut log, u32::MAX, KIND_TORN, buf.len() as u64),
            },
            Err(Error::Timeout) => {}
            Err(Error::Closed) => return,
            Err(e) => panic!("consumer {id}: {e}"),
        }
    }
}

struct Proc {
    child: RoleChild,
    producer: bool,
    log: std::path::PathBuf,
}

fn spawn(name: &str, is_producer: bool, id: u32, dir: &std::path::Path) -> Proc {
    let kind = if is_producer { "producer" } else { "consumer" };
    let log = dir.join(format!("{kind}-{id}.log"));
    let role = if is_producer {
        child!(producer)
    } else {
        child!(consumer)
    };
    let child = role.arg(name).arg(id).arg(log.display()).spawn();
    Proc {
        child,
        producer: is_producer,
        log,
    }
}

/// One line per child: pid, state and kernel wait channel (for stall reports).
fn describe(procs: &[Proc]) -> String {
    procs
        .iter()
        .map(|p| {
            let pid = p.child.id();
            let state = std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|s| {
                    s.rsplit_once(") ")
                        .map(|(_, r)| r.chars().next().unwrap_or('?'))
                })
                .unwrap_or('-');
            let mut wchans = Vec::new();
            if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
                for t in tasks.flatten() {
                    let tid = t.file_name().to_string_lossy().into_owned();
                    let w = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/wchan"))
                        .unwrap_or_default();
                    wchans.push(format!("{tid}:{w}"));
                }
            }
            let kind = if p.producer { "producer" } else { "consumer" };
            format!("  {kind} pid {pid} state {state} tasks {wchans:?}\n")
        })
        .collect()
}

/// The holder id the child with this log writes into the lock words (0 until it said).
fn holder_of(log: &std::path::Path) -> u32 {
    std::fs::read_to_string(log.with_extension("log.holder"))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

#[derive(Default, Debug)]
struct Counts {
    rounds: u64,
    producer_kills: u64,
    consumer_kills: u64,
    kills_holding_lock: u64,
    deadlocks: u64,
    child_failures: u64,
    slow_recoveries_over_1s: u64,
    max_recovery_ms: u128,
    torn: u64,
    duplicates: u64,
    out_of_order: u64,
    put_ok: u64,
    delivered: u64,
    lost: u64,
    lost_to_killed_consumers: u64,
    delivered_without_put_ok: u64,
}

#[test]
fn torture_kill9_producers_and_consumers() {
    let rounds: u64 = std::env::var("SHMQ_TORTURE_ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(300);
    let seed: u64 = std::env::var("SHMQ_TORTURE_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    eprintln!("torture: {rounds} rounds, SHMQ_TORTURE_SEED={seed}");
    let mut rng = mix64(seed);
    let mut next = move || {
        rng = mix64(rng.wrapping_add(0x9e37_79b9_7f4a_7c15));
        rng
    };
    let name = uniq("torture");
    let q = RawQueue::create_with(name.as_str(), &Options::new().capacity(CAPACITY)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut next_id = 0u32;
    let mut procs: Vec<Proc> = Vec::new();
    for producer in [true, true, false, false] {
        procs.push(spawn(&name, producer, next_id, dir.path()));
        next_id += 1;
    }
    let mut c = Counts::default();
    // Let everyone attach and start.
    let _ = eventually(STUCK, || q.stats().puts >= 10 && q.stats().gets >= 10);
    for _ in 0..rounds {
        c.rounds += 1;
        let victim = (next() % procs.len() as u64) as usize;
        let producer = procs[victim].producer;
        let pid = procs[victim].child.id();
        // Half of the kills are aimed at a victim that holds its side's lock: stop it with
        // SIGSTOP, look at the lock word, and kill it if it is the holder (else let it run
        // on a little and try again, a bounded number of times).
        let aim = next() % 2 == 0;
        let mut holder = 0;
        if aim {
            for _ in 0..300 {
                procs[victim].child.signal(libc::SIGSTOP);
                wait_stopped(pid, Duration::from_secs(2));
                let s = q.stats();
                let h = if producer {
                    s.producer_lock_holder
                } else {
                    s.consumer_lock_holder
                };
                if h != 0 && h == holder_of(&procs[victim].log) {
                    holder = h;
                    break;
                }
                procs[victim].child.signal(libc::SIGCONT);
                std::thread::sleep(Duration::from_micros(next() % 500));
            }
        } else {
            std::thread::sleep(Duration::from_micros(next() % 20_000));
        }
        let before = q.stats();
        procs[victim].child.kill();
        if producer {
            c.producer_kills += 1;
        } else {
            c.consumer_kills += 1;
        }
        let after = q.stats();
        let word = if producer {
            after.producer_lock_holder
        } else {
            after.consumer_lock_holder
        };
        if holder != 0 && word == holder {
            c.kills_holding_lock += 1;
        }
        // The survivors must make progress on both sides (a few messages each way).
        let t = Instant::now();
        let progressed = eventually(STUCK, || {
            let s = q.stats();
            s.puts >= before.puts + 3 && s.gets >= before.gets + 3
        });
        let took = t.elapsed();
        if !progressed {
            c.deadlocks += 1;
            eprintln!(
                "round {}: no progress for {STUCK:?} after killing {} {pid} (lock holder {holder}): {:?}\n{}",
                c.rounds,
                if producer { "producer" } else { "consumer" },
                q.stats(),
                describe(&procs),
            );
        }
        c.max_recovery_ms = c.max_recovery_ms.max(took.as_millis());
        if took > Duration::from_secs(1) {
            c.slow_recoveries_over_1s += 1;
        }
        procs[victim] = spawn(&name, producer, next_id, dir.path());
        next_id += 1;
        // A child must only ever die by our hand.
        for p in &mut procs {
            if let Some(st) = p.child.try_wait() {
                c.child_failures += 1;
                eprintln!(
                    "round {}: child {} exited on its own: {st}",
                    c.rounds,
                    p.child.id()
                );
                let producer = p.producer;
                *p = spawn(&name, producer, next_id, dir.path());
                next_id += 1;
            }
        }
        if c.deadlocks > 3 {
            break;
        }
    }
    // Wind down: close, let consumers drain, every child must exit on its own.
    std::thread::sleep(Duration::from_millis(50));
    q.close();
    let t = Instant::now();
    for p in &mut procs {
        loop {
            match p.child.try_wait() {
                Some(st) => {
                    assert!(st.success(), "child exited with {st}");
                    break;
                }
                None if t.elapsed() > Duration::from_secs(30) => {
                    c.deadlocks += 1;
                    p.child.kill();
                    break;
                }
                None => std::thread::sleep(Duration::from_millis(10)),
            }
        }
    }
    // Whatever the consumers left (nothing, normally) counts as delivered too.
    let mut leftovers = Vec::new();
    let mut buf = Vec::new();
    while q.try_get_into(&mut buf).is_ok() {
        leftovers.push(check(&buf));
    }

    // Accounting.
    let mut put_ok: HashSet<(u32, u64)> = HashSet::new();
    let mut got: HashMap<(u32, u64), u32> = HashMap::new();
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let path = entry.unwrap().path();
        let fname = path.file_name().unwrap().to_string_lossy().into_owned();
        let recs = read_log(&path);
        if fname.starts_with("producer") {
            put_ok.extend(recs.iter().map(|&(id, _, seq)| (id, seq)));
        } else {
            let mut last: HashMap<u32, u64> = HashMap::new();
            for (id, kind, seq) in recs {
                if kind == KIND_TORN {
                    c.torn += 1;
                    continue;
                }
                *got.entry((id, seq)).or_default() += 1;
                if let Some(&prev) = last.get(&id) {
                    if seq <= prev {
                        c.out_of_order += 1;
                    }
                }
                last.insert(id, seq);
            }
        }
    }
    for m in leftovers {
        match m {
            Some(k) => *got.entry(k).or_default() += 1,
            None => c.torn += 1,
        }
    }
    c.put_ok = put_ok.len() as u64;
    c.delivered = got.len() as u64;
    c.duplicates = got
        .values()
        .filter(|&&n| n > 1)
        .map(|&n| n as u64 - 1)
        .sum();
    c.delivered_without_put_ok = got.keys().filter(|k| !put_ok.contains(k)).count() as u64;
    let missing = put_ok.iter().filter(|k| !got.contains_key(k)).count() as u64;
    // A consumer killed after taking a message and before logging it loses at most that
    // one message.
    c.lost_to_killed_consumers = missing.min(c.consumer_kills);
    c.lost = missing - c.lost_to_killed_consumers;
    let s = q.stats();
    eprintln!("torture result: {c:#?}");
    eprintln!(
        "queue counters: puts {} gets {} len {} (closed {})",
        s.puts, s.gets, s.len, s.closed
    );
    assert!(c.put_ok > 0 && c.delivered > 0, "nothing flowed: {c:?}");
    assert_eq!(c.deadlocks, 0, "deadlocks: {c:?}");
    assert_eq!(c.child_failures, 0, "children failed: {c:?}");
    assert_eq!(c.torn, 0, "torn messages: {c:?}");
    assert_eq!(c.duplicates, 0, "duplicates: {c:?}");
    assert_eq!(c.out_of_order, 0, "FIFO violations: {c:?}");
    assert_eq!(c.lost, 0, "lost messages: {c:?}");
    assert_eq!(s.len, 0, "queue not drained: {s:?}");
    // Tighter: the ring's own get counter says how many messages it handed out; those not
    // in any consumer log were taken by consumers that were killed before logging them.
    // Every missing message must be among those, and there is at most one per such kill.
    let taken_unlogged = s
        .gets
        .checked_sub(c.delivered)
        .unwrap_or_else(|| panic!("ring get counter {} < delivered {}", s.gets, c.delivered));
    eprintln!("handed out by the ring but not logged (killed consumers): {taken_unlogged}");
    assert!(
        missing <= taken_unlogged,
        "{missing} missing, {taken_unlogged} taken unlogged"
    );
    assert!(
        taken_unlogged <= c.consumer_kills,
        "{taken_unlogged} > {c:?}"
    );
}
