//! The bridges against a real nats-server (tests/common): round trips, kill -9, a server
//! restart, back-pressure, oversized and malformed messages, RemoteQueue.
//!
//! Each test starts its own server on a free loopback port with a temporary store.
//! `nats-server` missing is a FAILURE, with the command that installs it.

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream;
use common::NatsServer;
use serde::{Deserialize, Serialize};
use shmq::{Error as QErr, Options, Queue, RawQueue};
use shmq_bridge::{In, Out, RemoteQueue};

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq)]
struct Msg {
    producer: u32,
    n: u64,
    note: String,
}

fn name(tag: &str) -> String {
    format!("brt-{tag}-{}", std::process::id())
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap()
}

/// A JetStream context on `url`, for publishing and inspecting directly.
fn js(rt: &tokio::runtime::Runtime, url: &str) -> jetstream::Context {
    rt.block_on(async {
        let c = async_nats::connect(url).await.expect("connect");
        jetstream::new(c)
    })
}

fn stream_messages(rt: &tokio::runtime::Runtime, js: &jetstream::Context, stream: &str) -> u64 {
    rt.block_on(async {
        let mut s = js.get_stream(stream).await.expect("stream");
        s.info().await.expect("stream info").state.messages
    })
}

/// Where the stream holds the messages `wanted` (`(producer, n)`): one line per copy with
/// its stream sequence and `Nats-Msg-Id`, to tell a duplicate in the stream (out side) from
/// one the in bridge put twice.
fn stream_copies(url: &str, stream: &str, wanted: &[(u32, u64)]) -> String {
    use futures_util::StreamExt;
    let r = rt();
    let j = js(&r, url);
    r.block_on(async {
        let s = j.get_stream(stream).await.expect("stream");
        let c = s
            .create_consumer(jetstream::consumer::pull::OrderedConfig::default())
            .await
            .expect("ordered consumer");
        let mut msgs = c.messages().await.expect("messages");
        let mut lines = String::new();
        let total = s.cached_info().state.messages;
        let mut got = 0;
        while got < total {
            let m = tokio::time::timeout(Duration::from_secs(10), msgs.next())
                .await
                .expect("stream dump stalled")
                .expect("stream dump ended")
                .expect("stream dump");
            got += 1;
            let info = m.info().expect("info");
            let Ok(v) = postcard::from_bytes::<Msg>(&m.payload) else {
                continue;
            };
            if wanted.contains(&(v.producer, v.n)) {
                let id = m
                    .headers
                    .as_ref()
                    .and_then(|h| h.get("Nats-Msg-Id"))
                    .map(|v| v.to_string())
                    .unwrap_or_default();
                lines += &format!(
                    "  ({}, {}) at stream seq {} id {id}\n",
                    v.producer, v.n, info.stream_sequence
                );
            }
        }
        lines
    })
}

/// Wait until `f` holds, or fail after `secs` with `what`.
fn wait_for(secs: u64, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(
            Instant::now() < deadline,
            "timed out after {secs} s waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// One consumer's view of numbered messages from several producers: whether each
/// producer's messages all arrived, how many arrived twice, and how many first arrivals
/// came after a later message of the same producer (out of order).
#[derive(Default)]
struct Tally {
    seen: HashMap<u32, Vec<u32>>,
    last_first: HashMap<u32, u64>,
    dups: u64,
    /// `(producer, n)` of every message that arrived twice.
    dup_list: Vec<(u32, u64)>,
    out_of_order: u64,
    /// `(producer, n)` of every first arrival after a later message of its producer.
    ooo_list: Vec<(u32, u64)>,
    /// Distinct messages seen per producer, so that `complete` (called per message) is
    /// O(1) until everything arrived: a scan per message made the 100 000 test O(n^2), 10^10
    /// steps in a debug build (25 s became 200-440 s).
    distinct: HashMap<u32, u64>,
}

impl Tally {
    fn see(&mut self, producer: u32, n: u64) {
        let seen = self.seen.entry(producer).or_default();
        if seen.len() <= n as usize {
            seen.resize(n as usize + 1, 0);
        }
        seen[n as usize] += 1;
        if seen[n as usize] > 1 {
            self.dups += 1;
            self.dup_list.push((producer, n));
            return;
        }
        *self.distinct.entry(producer).or_default() += 1;
        let last = self.last_first.entry(producer).or_insert(u64::MAX);
        if *last != u64::MAX && n < *last {
            self.out_of_order += 1;
            self.ooo_list.push((producer, n));
        }
        *last = n;
    }

    /// Messages `0..per` of `producer` that have not arrived.
    fn missing(&self, producer: u32, per: u64) -> u64 {
        let seen = self.seen.get(&producer).map(Vec::as_slice).unwrap_or(&[]);
        (0..per as usize)
            .filter(|&i| seen.get(i).copied().unwrap_or(0) == 0)
            .count() as u64
    }

    fn complete(&self, producers: u32, per: u64) -> bool {
        (0..producers).all(|p| {
            self.distinct.get(&p).copied().unwrap_or(0) >= per && self.missing(p, per) == 0
        })
    }

    fn received(&self, producer: u32) -> u64 {
        self.seen
            .get(&producer)
            .map_or(0, |s| s.iter().filter(|&&c| c > 0).count() as u64)
    }
}

/// 100 000 numbered messages from two producers: queue A -> out bridge -> JetStream -> in
/// bridge -> queue B, both bridges through the library. 0 lost, 0 duplicated, in order per
/// producer, and the stream holds each message once.
#[test]
fn hundred_thousand_out_and_back_in() {
    common::init_log();
    let srv = NatsServer::start();
    let (a, b) = (name("rt-a"), name("rt-b"));
    let qa: Queue<Msg> = Queue::create(&a, 1 << 22).unwrap();
    let qb: Queue<Msg> = Queue::create(&b, 1 << 22).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let subject = "rt.hundred";
    let out = Out::new(&a, subject).server(srv.url()).spawn().unwrap();
    let inb = In::new(&b, subject)
        .server(srv.url())
        .state_file(dir.path().join("in.state"))
        .spawn()
        .unwrap();
    const PER: u64 = 50_000;
    let t0 = Instant::now();
    let producers: Vec<_> = (0..2u32)
        .map(|p| {
            let q = qa.clone();
            std::thread::spawn(move || {
                for n in 0..PER {
                    q.put(&Msg {
                        producer: p,
                        n,
                        note: "x".repeat((n % 7) as usize),
                    })
                    .unwrap();
                }
            })
        })
        .collect();
    let mut tally = Tally::default();
    while !tally.complete(2, PER) {
        match qb.get_timeout(Duration::from_secs(60)) {
            Ok(m) => {
                assert_eq!(m.note.len(), (m.n % 7) as usize);
                tally.see(m.producer, m.n);
            }
            Err(e) => panic!(
                "stalled: {e}; got {}; out {:?}; in {:?}",
                tally.received(0) + tally.received(1),
                out.progress(),
                inb.progress()
            ),
        }
    }
    let took = t0.elapsed();
    for p in producers {
        p.join().unwrap();
    }
    std::thread::sleep(Duration::from_millis(300));
    assert!(matches!(qb.try_get(), Err(QErr::Empty)), "an extra message");
    assert_eq!(tally.dups, 0, "duplicates");
    assert_eq!(tally.out_of_order, 0, "out of order");
    let (po, pi) = (out.progress(), inb.progress());
    assert_eq!(po.messages, 2 * PER);
    assert_eq!(pi.messages, 2 * PER);
    let r = rt();
    let j = js(&r, &srv.url());
    assert_eq!(
        stream_messages(&r, &j, &shmq_bridge::default_stream_name(subject)),
        2 * PER
    );
    out.stop().unwrap();
    inb.stop().unwrap();
    eprintln!(
        "100000 messages out and back in: {:.1} s ({:.0} msg/s end to end); out {po:?}; in {pi:?}",
        took.as_secs_f64(),
        (2 * PER) as f64 / took.as_secs_f64()
    );
}

/// A bridge process (the binary), killable with SIGKILL.
struct Proc {
    child: Child,
}

impl Proc {
    fn spawn(args: &[&str], log: &Path) -> Proc {
        let f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_shmq-bridge"))
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(f)
            .spawn()
            .expect("run shmq-bridge");
        Proc { child }
    }

    fn kill9(&mut self) {
        let _ = self.child.kill(); // SIGKILL
        let _ = self.child.wait();
    }

    /// SIGTERM and wait: the exit status.
    fn term(&mut self) -> std::process::ExitStatus {
        // SAFETY: kill(2) on our own child's pid; no memory is involved.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        self.child.wait().unwrap()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill9();
    }
}

/// A small xorshift for kill timings (deterministic, no dependency).
fn rand(seed: &mut u64) -> u64 {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    *seed
}

/// Each bridge process killed with SIGKILL 20 times mid-stream (alternating, at
/// pseudo-random moments) and restarted: 0 lost; the stream holds each message once
/// (JetStream dropped what the out bridge sent again); what the in bridge put twice is
/// counted (at most one per kill; 0 expected).
#[test]
fn kill9_each_bridge_20_times_mid_stream() {
    let srv = NatsServer::start();
    let (a, b) = (name("k9-a"), name("k9-b"));
    let qa = RawQueue::create(&a, 1 << 22).unwrap();
    let qb = RawQueue::create(&b, 1 << 22).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let subject = "k9.stream";
    let url = srv.url();
    let state = dir.path().join("in.state");
    let out_args = [
        "out",
        "--queue",
        &a,
        "--subject",
        subject,
        "--server",
        &url,
        "--every",
        "0s",
    ];
    let state_s = state.to_str().unwrap();
    let in_args = [
        "in",
        "--queue",
        &b,
        "--subject",
        subject,
        "--server",
        &url,
        "--every",
        "0s",
        "--state",
        state_s,
    ];
    let out_log = dir.path().join("out.log");
    let in_log = dir.path().join("in.log");
    let mut out = Proc::spawn(&out_args, &out_log);
    let mut inb = Proc::spawn(&in_args, &in_log);

    // The producer paces itself (~2 500 messages/s) until the kill loop says it is done,
    // then sends a fixed tail: however slowly a busy machine runs the kills, every one of
    // them lands while messages are still being produced and bridged. The count is known
    // only when the producer ends (`total`).
    const TAIL: u64 = 2_000;
    let kills_done = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let total = Arc::new(AtomicU64::new(u64::MAX));
    let producer = {
        let q = qa.clone();
        let (kills_done, sent, total) = (kills_done.clone(), sent.clone(), total.clone());
        std::thread::spawn(move || {
            let mut n = 0u64;
            let mut tail_end = u64::MAX;
            while n < tail_end {
                q.put(&n.to_le_bytes()).unwrap();
                n += 1;
                sent.store(n, Ordering::Relaxed);
                if n.is_multiple_of(250) {
                    std::thread::sleep(Duration::from_millis(100));
                }
                if tail_end == u64::MAX && kills_done.load(Ordering::Relaxed) {
                    tail_end = n + TAIL;
                }
            }
            total.store(n, Ordering::Relaxed);
            n
        })
    };
    let consumer = {
        let q = qb.clone();
        let total = total.clone();
        std::thread::spawn(move || {
            let mut seen: Vec<u32> = Vec::new();
            let mut distinct = 0u64;
            let mut order = Tally::default();
            let mut buf = Vec::new();
            // Generous: counted from the producer's end, not from the start, so that a
            // slow kill loop does not eat the time the bridges need to catch up.
            let mut deadline = None;
            let mut see = |buf: &[u8], seen: &mut Vec<u32>, distinct: &mut u64| {
                let n = u64::from_le_bytes(buf[..8].try_into().unwrap());
                if seen.len() <= n as usize {
                    seen.resize(n as usize + 1, 0);
                }
                seen[n as usize] += 1;
                if seen[n as usize] == 1 {
                    *distinct += 1;
                }
                order.see(0, n);
            };
            loop {
                let t = total.load(Ordering::Relaxed);
                if t != u64::MAX {
                    if distinct >= t {
                        break;
                    }
                    let d =
                        *deadline.get_or_insert_with(|| Instant::now() + Duration::from_secs(120));
                    if Instant::now() > d {
                        break;
                    }
                }
                match q.get_into_timeout(&mut buf, Duration::from_millis(200)) {
                    Ok(_) => see(&buf, &mut seen, &mut distinct),
                    Err(QErr::Timeout) => {}
                    Err(e) => panic!("{e}"),
                }
            }
            // Anything late (a duplicate) within a moment.
            while q
                .get_into_timeout(&mut buf, Duration::from_millis(500))
                .is_ok()
            {
                see(&buf, &mut seen, &mut distinct);
            }
            (seen, order.out_of_order)
        })
    };
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let (mut kills_out, mut kills_in) = (0, 0);
    // Messages produced when each kill happened: the guard below checks that the stream
    // was flowing across the whole kill loop.
    let mut sent_at_kill = Vec::with_capacity(40);
    for i in 0..40 {
        std::thread::sleep(Duration::from_millis(100 + rand(&mut seed) % 150));
        sent_at_kill.push(sent.load(Ordering::Relaxed));
        if i % 2 == 0 {
            out.kill9();
            kills_out += 1;
            out = Proc::spawn(&out_args, &out_log);
        } else {
            inb.kill9();
            kills_in += 1;
            inb = Proc::spawn(&in_args, &in_log);
        }
    }
    // Still producing: the producer only stops TAIL messages after this store.
    let producing_at_last_kill = total.load(Ordering::Relaxed) == u64::MAX;
    kills_done.store(true, Ordering::Relaxed);
    let n_sent = producer.join().unwrap();
    let (mut seen, out_of_order) = consumer.join().unwrap();
    seen.resize(seen.len().max(n_sent as usize), 0);
    let extra: Vec<usize> = (n_sent as usize..seen.len())
        .filter(|&i| seen[i] > 0)
        .collect();
    let lost: Vec<usize> = (0..n_sent as usize).filter(|&i| seen[i] == 0).collect();
    let dups: u32 = seen.iter().map(|&c| c.saturating_sub(1)).sum();
    let r = rt();
    let j = js(&r, &url);
    let in_stream = stream_messages(&r, &j, &shmq_bridge::default_stream_name(subject));
    assert_eq!(out.term().code(), Some(0), "out bridge exit");
    assert_eq!(inb.term().code(), Some(0), "in bridge exit");
    let logs = || {
        format!(
            "out log:\n{}\nin log:\n{}",
            std::fs::read_to_string(&out_log).unwrap_or_default(),
            std::fs::read_to_string(&in_log).unwrap_or_default()
        )
    };
    let (first, last) = (sent_at_kill[0], sent_at_kill[39]);
    eprintln!(
        "kill -9: out {kills_out}x, in {kills_in}x; lost {}, duplicates in queue B {dups}, \
         out of order {out_of_order}, stream holds {in_stream} (sent {n_sent}); produced \
         {first} at the first kill, {last} at the last",
        lost.len()
    );
    // Mid-stream: the producer had started before the first kill, went on producing
    // between the first and the last, and was still producing at the last (it sends
    // TAIL more only after it). Not a timing bet: the producer waits for the kill loop.
    assert!(
        first > 0 && last > first && producing_at_last_kill && n_sent >= last + TAIL,
        "the kills did not all happen mid-stream (produced {first} at the first kill, \
         {last} at the last, {n_sent} in all): the test proves nothing"
    );
    assert!(extra.is_empty(), "messages never sent arrived: {extra:?}");
    assert!(
        lost.is_empty(),
        "lost {} messages, first {:?}\n{}",
        lost.len(),
        &lost[..lost.len().min(10)],
        logs()
    );
    assert_eq!(
        in_stream,
        n_sent,
        "JetStream holds duplicates (dedupe failed)\n{}",
        logs()
    );
    assert!(
        dups <= kills_in,
        "{dups} duplicates for {kills_in} kills of the in bridge"
    );
    assert_eq!(out_of_order, 0, "messages out of order\n{}", logs());
}

/// The NATS server stopped (cleanly) for 2 s and restarted mid-stream: both bridges log
/// it, retry with backoff, and carry on: 0 lost, 0 duplicated, in order.
#[test]
fn nats_server_restarted_mid_stream() {
    let _ = tracing_subscriber::fmt()
        .with_test_writer()
        .with_max_level(tracing_subscriber::filter::LevelFilter::INFO)
        .try_init();
    let mut srv = NatsServer::start();
    let (a, b) = (name("rs-a"), name("rs-b"));
    let qa: Queue<Msg> = Queue::create(&a, 1 << 22).unwrap();
    let qb: Queue<Msg> = Queue::create(&b, 1 << 22).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let subject = "rs.stream";
    let out = Out::new(&a, subject)
        .server(srv.url())
        .ack_timeout(Duration::from_secs(2))
        .spawn()
        .unwrap();
    let inb = In::new(&b, subject)
        .server(srv.url())
        .state_file(dir.path().join("in.state"))
        .spawn()
        .unwrap();
    const N: u64 = 10_000;
    let producer = {
        let q = qa.clone();
        std::thread::spawn(move || {
            for n in 0..N {
                q.put(&Msg {
                    producer: 0,
                    n,
                    note: String::new(),
                })
                .unwrap();
                if n % 200 == 199 {
                    std::thread::sleep(Duration::from_millis(40));
                }
            }
        })
    };
    let mut tally = Tally::default();
    let mut restarted = false;
    let t0 = Instant::now();
    while !tally.complete(1, N) {
        if !restarted && tally.received(0) > N / 4 {
            srv.stop();
            std::thread::sleep(Duration::from_secs(2));
            srv.restart();
            restarted = true;
        }
        match qb.get_timeout(Duration::from_secs(60)) {
            Ok(m) => tally.see(m.producer, m.n),
            Err(e) => panic!(
                "stalled: {e}; got {}; out {:?}; in {:?}",
                tally.received(0) + tally.received(1),
                out.progress(),
                inb.progress()
            ),
        }
    }
    producer.join().unwrap();
    std::thread::sleep(Duration::from_millis(500));
    assert!(matches!(qb.try_get(), Err(QErr::Empty)), "an extra message");
    assert!(restarted);
    let (po, pi) = (out.progress(), inb.progress());
    if tally.dups > 0 || tally.out_of_order > 0 {
        let mut wanted = tally.dup_list.clone();
        for &(p, n) in &tally.ooo_list {
            wanted.extend([(p, n.saturating_sub(1)), (p, n), (p, n + 1)]);
        }
        panic!(
            "{} duplicates {:?}, {} out of order {:?}; out {po:?}; in {pi:?}; the stream \
             holds:\n{}",
            tally.dups,
            tally.dup_list,
            tally.out_of_order,
            tally.ooo_list,
            stream_copies(
                &srv.url(),
                &shmq_bridge::default_stream_name(subject),
                &wanted
            )
        );
    }
    eprintln!(
        "server restart: {N} messages in {:.1} s; out {po:?}; in {pi:?}",
        t0.elapsed().as_secs_f64()
    );
    assert!(
        po.disconnects >= 1 && pi.disconnects >= 1,
        "a bridge did not notice the restart: out {po:?}, in {pi:?}"
    );
    out.stop().unwrap();
    inb.stop().unwrap();
}

/// A full local queue: the in bridge stops acknowledging (the consumer's acknowledged
/// floor stays put, at most one pull is in hand) and resumes when there is room; all
/// messages arrive in order.
#[test]
fn full_local_queue_back_pressure() {
    let srv = NatsServer::start();
    let b = name("full-b");
    let qb = RawQueue::create_with(
        b.as_str(),
        &Options::new().capacity(1 << 16).max_messages(100),
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let subject = "full.stream";
    let r = rt();
    let j = js(&r, &srv.url());
    const N: u64 = 2_000;
    r.block_on(async {
        j.create_stream(jetstream::stream::Config {
            name: "FULL".into(),
            subjects: vec![subject.into()],
            ..Default::default()
        })
        .await
        .unwrap();
        for n in 0..N {
            j.publish(subject, n.to_le_bytes().to_vec().into())
                .await
                .unwrap()
                .await
                .unwrap();
        }
    });
    let inb = In::new(&b, subject)
        .server(srv.url())
        .durable("full")
        .batch(50)
        .state_file(dir.path().join("in.state"))
        .spawn()
        .unwrap();
    wait_for(30, "the queue to fill", || qb.len() == 100);
    std::thread::sleep(Duration::from_secs(1));
    let info = r.block_on(async {
        let s = j.get_stream("FULL").await.unwrap();
        let mut c: jetstream::consumer::PullConsumer = s.get_consumer("full").await.unwrap();
        c.info().await.unwrap().clone()
    });
    assert_eq!(qb.len(), 100, "the queue holds what it can, no more");
    assert!(
        info.ack_floor.stream_sequence <= 101,
        "acknowledged beyond what the queue holds: {info:?}"
    );
    assert!(
        info.num_ack_pending <= 100,
        "more than one pull in hand: {info:?}"
    );
    assert!(
        info.num_pending >= N - 200,
        "pulled too far ahead: {info:?}"
    );
    let p = inb.progress();
    assert!(p.full_waits >= 1, "{p:?}");
    assert!(p.messages <= 101, "{p:?}");
    // Now drain slowly: everything arrives, in order.
    let mut buf = Vec::new();
    for n in 0..N {
        qb.get_into_timeout(&mut buf, Duration::from_secs(30))
            .unwrap_or_else(|e| panic!("message {n}: {e}; {:?}", inb.progress()));
        assert_eq!(u64::from_le_bytes(buf[..8].try_into().unwrap()), n);
    }
    inb.stop().unwrap();
}

/// A message larger than the server's max_payload: the out bridge stops with a clear
/// error; the message and the one behind it stay in the local queue; the one before it
/// went out. The binary says the same and exits with status 3.
#[test]
fn message_over_server_max_payload() {
    let srv = NatsServer::start_with_config("max_payload: 8192\n");
    let a = name("big-a");
    let qa = RawQueue::create(&a, 1 << 20).unwrap();
    qa.put(b"small before").unwrap();
    qa.put(&vec![7u8; 20_000]).unwrap();
    qa.put(b"small after").unwrap();
    let subject = "big.stream";
    let out = Out::new(&a, subject).server(srv.url()).spawn().unwrap();
    wait_for(30, "the out bridge to stop", || out.is_finished());
    let err = out.join().expect_err("the bridge must stop");
    let text = err.to_string();
    assert!(
        matches!(err, shmq_bridge::Error::TooLargeForServer { max: 8192, .. }),
        "{err:?}"
    );
    assert!(text.contains("stays at the head of the queue"), "{text}");
    // The size counts the headers the bridge adds (the id of the message before it too:
    // ordered publishing), so it is above the limit it is compared with; the sequence is
    // named as one, not as a bare number that reads like a size.
    let shmq_bridge::Error::TooLargeForServer { seq, size, .. } = err else {
        unreachable!()
    };
    let id = |s: u64| format!("{a}:{:016x}:{s}", qa.uid());
    // "NATS/1.0\r\n", "Nats-Msg-Id: <id>\r\n", "Nats-Expected-Last-Msg-Id: <prev>\r\n",
    // "\r\n"; the previous message's sequence is below this one's (fewer digits or as many).
    let headers = |prev: &str| 10 + (11 + 2 + id(seq).len() + 2) + (25 + 2 + prev.len() + 2) + 2;
    assert!(
        (20_000 + headers(&id(0))..=20_000 + headers(&id(seq))).contains(&size),
        "{text}"
    );
    assert!(
        text.contains(&format!("the message at sequence {seq} ")),
        "{text}"
    );
    assert_eq!(qa.len(), 2, "nothing lost");
    let r = rt();
    let j = js(&r, &srv.url());
    assert_eq!(
        stream_messages(&r, &j, &shmq_bridge::default_stream_name(subject)),
        1
    );
    // The binary: same error, exit status 3, and it does not spin.
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("out.log");
    let url = srv.url();
    let mut p = Proc::spawn(
        &["out", "--queue", &a, "--subject", subject, "--server", &url],
        &log,
    );
    let t0 = Instant::now();
    let st = loop {
        if let Some(st) = p.child.try_wait().unwrap() {
            break st;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "the binary did not stop"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let text = std::fs::read_to_string(&log).unwrap();
    assert_eq!(st.code(), Some(3), "{text}");
    assert!(text.contains("max_payload"), "{text}");
    assert_eq!(qa.len(), 2, "nothing lost");
    let mut buf = Vec::new();
    qa.get_into(&mut buf).unwrap();
    assert_eq!(buf.len(), 20_000);
}

/// Malformed messages on the subject (one larger than the local queue can ever hold, one
/// that is not a postcard `Msg`): skipped, counted, terminated (never redelivered); the
/// good ones around them arrive in order; the bridge keeps running.
#[test]
fn malformed_messages_on_the_subject() {
    let srv = NatsServer::start();
    let b = name("bad-b");
    let qb: Queue<Msg> = Queue::create(&b, 4096).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let subject = "bad.stream";
    let r = rt();
    let j = js(&r, &srv.url());
    let good = |n: u64| {
        postcard::to_stdvec(&Msg {
            producer: 9,
            n,
            note: "ok".into(),
        })
        .unwrap()
    };
    let payloads: Vec<Vec<u8>> = vec![
        good(0),
        vec![1u8; 10_000], // larger than the queue's largest message (4088)
        good(1),
        vec![
            0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
        ], // not a Msg
        good(2),
    ];
    r.block_on(async {
        j.create_stream(jetstream::stream::Config {
            name: "BAD".into(),
            subjects: vec![subject.into()],
            ..Default::default()
        })
        .await
        .unwrap();
        for p in &payloads {
            j.publish(subject, p.clone().into())
                .await
                .unwrap()
                .await
                .unwrap();
        }
    });
    let inb = In::new(&b, subject)
        .server(srv.url())
        .durable("bad")
        .state_file(dir.path().join("in.state"))
        .validate(|bytes| {
            <shmq::Postcard as shmq::Codec<Msg>>::decode(bytes)
                .map(drop)
                .map_err(|e| e.to_string())
        })
        .spawn()
        .unwrap();
    for n in 0..3 {
        let m = qb.get_timeout(Duration::from_secs(30)).unwrap();
        assert_eq!(m.n, n);
    }
    wait_for(10, "the malformed count", || inb.progress().malformed == 2);
    std::thread::sleep(Duration::from_millis(300));
    let info = r.block_on(async {
        let s = j.get_stream("BAD").await.unwrap();
        let mut c: jetstream::consumer::PullConsumer = s.get_consumer("bad").await.unwrap();
        c.info().await.unwrap().clone()
    });
    assert_eq!(info.num_ack_pending, 0, "{info:?}");
    assert_eq!(info.num_pending, 0, "{info:?}");
    assert!(matches!(qb.try_get(), Err(QErr::Empty)));
    assert!(!inb.is_finished(), "the bridge must keep running");
    let p = inb.progress();
    assert_eq!((p.messages, p.malformed), (3, 2), "{p:?}");
    inb.stop().unwrap();
}

/// RemoteQueue<T>: the Queue<T> calls over JetStream, and the same T as a Queue<T> on the
/// other side of a bridge.
#[test]
fn remote_queue_and_bridged_queue_see_the_same_t() {
    let srv = NatsServer::start();
    let (a, b) = (name("rq-a"), name("rq-b"));
    let qa: Queue<Msg> = Queue::create(&a, 1 << 16).unwrap();
    let qb: Queue<Msg> = Queue::create(&b, 1 << 16).unwrap();
    let dir = tempfile::tempdir().unwrap();
    // Queue<T> on host A -> out bridge -> RemoteQueue<T>.
    let out = Out::new(&a, "rq.ab").server(srv.url()).spawn().unwrap();
    let remote: RemoteQueue<Msg> = RemoteQueue::connect(&srv.url(), "rq.ab", "readers").unwrap();
    assert!(matches!(remote.try_get(), Err(QErr::Empty)));
    assert!(matches!(
        remote.get_timeout(Duration::from_millis(50)),
        Err(QErr::Timeout)
    ));
    let m = Msg {
        producer: 1,
        n: 42,
        note: "über".into(),
    };
    qa.put(&m).unwrap();
    assert_eq!(remote.get_timeout(Duration::from_secs(30)).unwrap(), m);
    // RemoteQueue<T> -> in bridge -> Queue<T> on host B.
    let w: RemoteQueue<Msg> = RemoteQueue::connect(&srv.url(), "rq.ba", "unused").unwrap();
    let inb = In::new(&b, "rq.ba")
        .server(srv.url())
        .state_file(dir.path().join("in.state"))
        .spawn()
        .unwrap();
    for n in 0..10 {
        w.put(&Msg {
            producer: 2,
            n,
            note: String::new(),
        })
        .unwrap();
    }
    w.put_timeout(
        &Msg {
            producer: 2,
            n: 10,
            note: "last".into(),
        },
        Duration::from_secs(5),
    )
    .unwrap();
    for n in 0..=10 {
        assert_eq!(qb.get_timeout(Duration::from_secs(30)).unwrap().n, n);
    }
    // Undecodable bytes: Err(Codec), consumed like Queue<T>::get does.
    let r = rt();
    let j = js(&r, &srv.url());
    r.block_on(async {
        j.publish("rq.ab", vec![0xffu8; 12].into())
            .await
            .unwrap()
            .await
            .unwrap()
    });
    assert!(matches!(
        remote.get_timeout(Duration::from_secs(10)),
        Err(QErr::Codec(_))
    ));
    assert!(matches!(remote.try_get(), Err(QErr::Empty)));
    // Too large for the server: TooLarge, at once.
    let huge = Msg {
        producer: 0,
        n: 0,
        note: "x".repeat(2 << 20),
    };
    assert!(matches!(w.try_put(&huge), Err(QErr::TooLarge { .. })));
    out.stop().unwrap();
    inb.stop().unwrap();
}

/// The server behaviour the out bridge's ordering rests on (see docs/bridge.md, *Order*):
/// a publish whose `Nats-Expected-Last-Msg-Id` is not the stream's last id is refused, and a
/// duplicate id is acknowledged as a duplicate before that condition is checked.
#[test]
fn ordering_condition_refuses_a_successor_and_passes_duplicates() {
    use async_nats::jetstream::context::PublishErrorKind;
    use async_nats::jetstream::message::PublishMessage;
    let srv = NatsServer::start();
    let r = rt();
    let j = js(&r, &srv.url());
    r.block_on(async {
        j.create_stream(jetstream::stream::Config {
            name: "ORD".into(),
            subjects: vec!["ord".into()],
            ..Default::default()
        })
        .await
        .expect("stream");
        let send = |id: &str, after: Option<&str>| {
            let mut p = PublishMessage::build()
                .payload(id.to_string().into())
                .message_id(id);
            if let Some(a) = after {
                p = p.expected_last_message_id(a);
            }
            let j = j.clone();
            async move { j.send_publish("ord", p).await.expect("send").await }
        };
        assert!(!send("m1", None).await.expect("m1").duplicate);
        // m2 was lost: m3 must not be stored before it.
        let e = send("m3", Some("m2"))
            .await
            .expect_err("m3 after a lost m2");
        assert_eq!(e.kind(), PublishErrorKind::WrongLastMessageId);
        assert!(!send("m2", Some("m1")).await.expect("m2").duplicate);
        // m2 again (its ack was lost): a duplicate, although the condition no longer holds.
        assert!(send("m2", Some("m1")).await.expect("m2 again").duplicate);
        assert!(!send("m3", Some("m2")).await.expect("m3").duplicate);
    });
    assert_eq!(stream_messages(&r, &j, "ORD"), 3);
}

/// Create (or find) a file-backed stream `name` capturing `subject`.
fn make_stream(rt: &tokio::runtime::Runtime, js: &jetstream::Context, name: &str, subject: &str) {
    rt.block_on(async {
        js.get_or_create_stream(jetstream::stream::Config {
            name: name.into(),
            subjects: vec![subject.into()],
            ..Default::default()
        })
        .await
        .unwrap();
    });
}

/// Publish `ns` (8-byte little-endian numbers) to `subject`, each acknowledged.
fn publish_numbers(
    rt: &tokio::runtime::Runtime,
    js: &jetstream::Context,
    subject: &str,
    ns: std::ops::Range<u64>,
) {
    rt.block_on(async {
        for n in ns {
            js.publish(subject.to_string(), n.to_le_bytes().to_vec().into())
                .await
                .unwrap()
                .await
                .unwrap();
        }
    });
}

/// The consumers a stream has now (0 when it does not exist).
fn consumer_count(rt: &tokio::runtime::Runtime, js: &jetstream::Context, stream: &str) -> usize {
    rt.block_on(async {
        match js.get_stream(stream).await {
            Ok(mut s) => s.info().await.map_or(0, |i| i.state.consumer_count),
            Err(_) => 0,
        }
    })
}

/// The next message of `q` as a number (see `publish_numbers`), waiting up to 30 s.
fn next_number(q: &RawQueue, what: &str) -> u64 {
    let mut buf = Vec::new();
    q.get_into_timeout(&mut buf, Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    u64::from_le_bytes(buf[..8].try_into().unwrap())
}

/// The default state files of the in bridges into queue `q` (in /dev/shm).
fn default_state_files(q: &str) -> Vec<std::path::PathBuf> {
    let prefix = format!("shmq-bridge.{q}.");
    let mut v: Vec<_> = std::fs::read_dir("/dev/shm")
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with(&prefix))
        .map(|e| e.path())
        .collect();
    v.sort();
    v
}

/// Issue 13 attack 1: two in bridges from different streams into one queue used to share
/// the default state file (and durable name) and ack each other's messages as duplicates.
/// Now each has its own (mode 0600) file, and a third bridge on the same state is refused
/// with a clear error instead of sharing it.
#[test]
fn two_in_bridges_into_one_queue_keep_their_own_state() {
    use std::os::unix::fs::PermissionsExt;
    let srv = NatsServer::start();
    let r = rt();
    let j = js(&r, &srv.url());
    let b = name("two-b");
    let qb = RawQueue::create(&b, 1 << 20).unwrap();
    make_stream(&r, &j, "TWO_A", "two.a");
    make_stream(&r, &j, "TWO_B", "two.b");
    let in_a = In::new(&b, "two.a").server(srv.url()).spawn().unwrap();
    publish_numbers(&r, &j, "two.a", 0..100);
    for n in 0..100 {
        assert_eq!(next_number(&qb, "from two.a"), n);
    }
    let in_b = In::new(&b, "two.b").server(srv.url()).spawn().unwrap();
    wait_for(30, "the second bridge's consumer", || {
        consumer_count(&r, &j, "TWO_B") == 1
    });
    // Stream sequences 101..110 of TWO_A go in first, then 1..10 of TWO_B: with one shared
    // "last put" (110), the second ten were acknowledged as duplicates and lost.
    publish_numbers(&r, &j, "two.a", 100..110);
    for n in 100..110 {
        assert_eq!(next_number(&qb, "from two.a"), n);
    }
    publish_numbers(&r, &j, "two.b", 1000..1010);
    for n in 1000..1010 {
        assert_eq!(
            next_number(&qb, "from two.b (lost as a duplicate of two.a's?)"),
            n,
            "{:?}",
            in_b.progress()
        );
    }
    assert_eq!(in_b.progress().duplicates, 0);
    let files = default_state_files(&b);
    assert_eq!(files.len(), 2, "one state file per bridge: {files:?}");
    for f in &files {
        let mode = std::fs::metadata(f).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", f.display());
    }
    // A third bridge on the same queue, stream and (default) durable: refused, not shared.
    let third = In::new(&b, "two.a").server(srv.url()).spawn().unwrap();
    let err = third
        .join()
        .expect_err("a second bridge on one state file must fail");
    assert!(
        matches!(&err, shmq_bridge::Error::Config(m) if m.contains("in use by another in bridge")),
        "{err}"
    );
    // The first two are unharmed.
    publish_numbers(&r, &j, "two.a", 110..111);
    assert_eq!(next_number(&qb, "after the refused third bridge"), 110);
    in_a.stop().unwrap();
    in_b.stop().unwrap();
    for f in files {
        std::fs::remove_file(f).unwrap();
    }
}

/// Issue 13 attack 2 (in): the stream deleted and created again under a running in bridge
/// restarts its sequences below the recorded "last put"; the bridge used to acknowledge the
/// new messages as duplicates (lost). It now compares the stream's creation time at every
/// resync and starts its state over.
#[test]
fn stream_recreated_under_a_running_in_bridge() {
    let srv = NatsServer::start();
    let r = rt();
    let j = js(&r, &srv.url());
    let b = name("sre-b");
    let qb = RawQueue::create(&b, 1 << 20).unwrap();
    let dir = tempfile::tempdir().unwrap();
    make_stream(&r, &j, "SRE", "sre.in");
    let inb = In::new(&b, "sre.in")
        .server(srv.url())
        .state_file(dir.path().join("in.state"))
        .spawn()
        .unwrap();
    publish_numbers(&r, &j, "sre.in", 0..20);
    for n in 0..20 {
        assert_eq!(next_number(&qb, "first incarnation"), n);
    }
    r.block_on(async { j.delete_stream("SRE").await.unwrap() });
    make_stream(&r, &j, "SRE", "sre.in");
    publish_numbers(&r, &j, "sre.in", 20..35);
    for n in 20..35 {
        assert_eq!(
            next_number(&qb, "second incarnation (acked as duplicates?)"),
            n,
            "{:?}",
            inb.progress()
        );
    }
    assert_eq!(inb.progress().duplicates, 0);
    inb.stop().unwrap();
}

/// Issue 13 attack 2 (out): the stream deleted under a running out bridge; it used to retry
/// into nothing for ever. It now creates the stream again when a batch fails.
#[test]
fn out_bridge_recreates_a_vanished_stream() {
    let srv = NatsServer::start();
    let r = rt();
    let j = js(&r, &srv.url());
    let a = name("sro-a");
    let qa = RawQueue::create(&a, 1 << 20).unwrap();
    let subject = "sro.out";
    let stream = shmq_bridge::default_stream_name(subject);
    let out = Out::new(&a, subject).server(srv.url()).spawn().unwrap();
    for n in 0..20u64 {
        qa.put(&n.to_le_bytes()).unwrap();
    }
    wait_for(30, "the first 20 in the stream", || {
        qa.is_empty() && stream_messages(&r, &j, &stream) == 20
    });
    r.block_on(async { j.delete_stream(&stream).await.unwrap() });
    for n in 20..40u64 {
        qa.put(&n.to_le_bytes()).unwrap();
    }
    wait_for(60, "the next 20 in a new stream", || {
        qa.is_empty()
            && r.block_on(async {
                match j.get_stream(&stream).await {
                    Ok(mut s) => s.info().await.map_or(0, |i| i.state.messages),
                    Err(_) => 0,
                }
            }) == 20
    });
    assert!(!out.is_finished());
    assert!(out.progress().retries >= 1);
    out.stop().unwrap();
}

/// Issue 13 attack 3: the local queue removed and created again under running bridges. The
/// in bridge used to put (and ack) into the removed segment; it now checks after each put
/// that the queue is still the one at the name, and follows the new one. The out bridge
/// used to drain the removed segment for ever; it now publishes what is left in it, then
/// follows the new queue. A queue removed for good stops the in bridge with an error and
/// removes its state file.
#[test]
fn local_queue_recreated_under_running_bridges() {
    let srv = NatsServer::start();
    let r = rt();
    let j = js(&r, &srv.url());
    let dir = tempfile::tempdir().unwrap();
    // In: subject -> queue b.
    let b = name("qre-b");
    let qb = RawQueue::create(&b, 1 << 20).unwrap();
    make_stream(&r, &j, "QRE_IN", "qre.in");
    let state = dir.path().join("in.state");
    let inb = In::new(&b, "qre.in")
        .server(srv.url())
        .state_file(&state)
        .spawn()
        .unwrap();
    publish_numbers(&r, &j, "qre.in", 0..10);
    for n in 0..10 {
        assert_eq!(next_number(&qb, "before the removal"), n);
    }
    shmq::remove(&b).unwrap();
    let qb2 = RawQueue::create(&b, 1 << 20).unwrap();
    publish_numbers(&r, &j, "qre.in", 10..20);
    for n in 10..20 {
        assert_eq!(
            next_number(&qb2, "in the new queue (put into the removed one?)"),
            n,
            "{:?}",
            inb.progress()
        );
    }
    // At most the message in hand when the removal was noticed went into the removed queue
    // too (put, found removed, put again into the new one, then acknowledged).
    assert!(qb.len() <= 1, "{} messages in the removed queue", qb.len());
    // Removed for good: the bridge stops with an error, and removes its state file.
    shmq::remove(&b).unwrap();
    wait_for(30, "the in bridge to stop", || inb.is_finished());
    let err = inb.join().expect_err("a removed queue stops the in bridge");
    assert!(
        matches!(
            &err,
            shmq_bridge::Error::Queue {
                source: QErr::NotFound(_),
                ..
            }
        ),
        "{err:?}"
    );
    assert!(
        !state.exists(),
        "the state file of a removed queue is removed"
    );
    drop((qb, qb2));

    // Out: queue a -> subject.
    let a = name("qre-a");
    let qa = RawQueue::create(&a, 1 << 20).unwrap();
    let subject = "qre.out";
    let stream = shmq_bridge::default_stream_name(subject);
    let out = Out::new(&a, subject).server(srv.url()).spawn().unwrap();
    for n in 0..10u64 {
        qa.put(&n.to_le_bytes()).unwrap();
    }
    wait_for(30, "the first 10 in the stream", || {
        qa.is_empty() && stream_messages(&r, &j, &stream) == 10
    });
    shmq::remove(&a).unwrap();
    // A producer still holding the removed queue: what it put before the new queue
    // appeared is published before the bridge moves on.
    for n in 10..15u64 {
        qa.put(&n.to_le_bytes()).unwrap();
    }
    let qa2 = RawQueue::create(&a, 1 << 20).unwrap();
    for n in 15..20u64 {
        qa2.put(&n.to_le_bytes()).unwrap();
    }
    wait_for(30, "all 20 in the stream", || {
        qa.is_empty() && qa2.is_empty() && stream_messages(&r, &j, &stream) == 20
    });
    // In queue order: the removed queue's rest first.
    r.block_on(async {
        use futures_util::StreamExt;
        let s = j.get_stream(&stream).await.unwrap();
        let c = s
            .create_consumer(jetstream::consumer::pull::OrderedConfig::default())
            .await
            .unwrap();
        let mut msgs = c.messages().await.unwrap();
        for n in 0..20u64 {
            let m = tokio::time::timeout(Duration::from_secs(10), msgs.next())
                .await
                .unwrap()
                .unwrap()
                .unwrap();
            assert_eq!(u64::from_le_bytes(m.payload[..8].try_into().unwrap()), n);
        }
    });
    assert!(!out.is_finished());
    out.stop().unwrap();
}

/// Issue 13 attack 4: an idle in bridge used to notice a closed local queue only when a
/// message arrived. It now checks every 250 ms and stops (`Ok`).
#[test]
fn idle_in_bridge_stops_when_its_queue_is_closed() {
    let srv = NatsServer::start();
    let r = rt();
    let j = js(&r, &srv.url());
    let b = name("idle-b");
    let qb = RawQueue::create(&b, 1 << 20).unwrap();
    let dir = tempfile::tempdir().unwrap();
    make_stream(&r, &j, "IDLE", "idle.in");
    let inb = In::new(&b, "idle.in")
        .server(srv.url())
        .state_file(dir.path().join("in.state"))
        .spawn()
        .unwrap();
    wait_for(30, "the consumer", || consumer_count(&r, &j, "IDLE") == 1);
    qb.close();
    wait_for(30, "the idle in bridge to stop", || inb.is_finished());
    inb.join().unwrap();
}

/// The "bridged" mark follows the queue: after the local queue is removed and created
/// again under each running bridge, `shmq::internal::bridged::of_queue` names the new
/// queue (its uid, and the object now at the name) and no longer the removed one. Before:
/// the mark kept naming the removed queue, so `shmq ls` showed the new one as not bridged.
#[test]
fn mark_follows_a_recreated_local_queue() {
    use shmq::internal::bridged::{self, Direction};
    let srv = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let (a, b) = (name("mk-a"), name("mk-b"));
    let qa = RawQueue::create(&a, 1 << 16).unwrap();
    let qb = RawQueue::create(&b, 1 << 16).unwrap();
    let out = Out::new(&a, "mk.out").server(srv.url()).spawn().unwrap();
    let inb = In::new(&b, "mk.in")
        .server(srv.url())
        .state_file(dir.path().join("in.state"))
        .spawn()
        .unwrap();
    // The live mark of `queue` for `dir`, if it names the queue with uid `uid` and is
    // current (the object at the name is the one it names).
    let marked = |queue: &str, dir: Direction, uid: u64| {
        bridged::of_queue(queue)
            .iter()
            .any(|m| m.info.direction == dir && m.queue_uid == uid && m.is_current())
    };
    wait_for(30, "the out bridge's mark", || {
        marked(&a, Direction::Out, qa.uid())
    });
    wait_for(30, "the in bridge's mark", || {
        marked(&b, Direction::In, qb.uid())
    });

    shmq::remove(&a).unwrap();
    shmq::remove(&b).unwrap();
    let qa2 = RawQueue::create(&a, 1 << 16).unwrap();
    let qb2 = RawQueue::create(&b, 1 << 16).unwrap();
    assert_ne!(qa.uid(), qa2.uid());
    wait_for(30, "the out bridge's mark on the new queue", || {
        marked(&a, Direction::Out, qa2.uid())
    });
    wait_for(30, "the in bridge's mark on the new queue", || {
        marked(&b, Direction::In, qb2.uid())
    });
    for (q, old) in [(&a, qa.uid()), (&b, qb.uid())] {
        assert!(
            bridged::of_queue(q).iter().all(|m| m.queue_uid != old),
            "a mark still names the removed queue {q}"
        );
    }
    // And the bridges still work on the new queues.
    qa2.put(b"after").unwrap();
    let r = rt();
    let j = js(&r, &srv.url());
    wait_for(30, "the new queue's message in the stream", || {
        stream_messages(&r, &j, &shmq_bridge::default_stream_name("mk.out")) == 1
    });
    out.stop().unwrap();
    inb.stop().unwrap();
    assert!(bridged::of_queue(&a).is_empty() && bridged::of_queue(&b).is_empty());
    drop((qa, qb, qa2, qb2));
    for n in [&a, &b] {
        let _ = shmq::remove(n);
        assert!(
            !Path::new(&format!("/dev/shm/shmq.{n}")).exists(),
            "{n} left behind"
        );
    }
}
