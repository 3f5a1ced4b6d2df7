//! Bridge throughput beside plain async-nats JetStream, same server, same run.
//!
//! `cargo bench -p shmq-bridge --bench throughput` (needs `nats-server`; starts its own on
//! a free loopback port with a temporary store). For 64 B and 1 KiB messages:
//!
//! * publish: a plain async-nats publisher (Nats-Msg-Id header, acks awaited per window of
//!   256, like the bridge's batches) vs the out bridge draining a pre-filled local queue;
//! * consume: a plain durable pull consumer (ack each) vs the in bridge filling a local
//!   queue that a thread drains;
//! * end to end: queue A -> out bridge -> JetStream -> in bridge -> queue B, all at once.
//!
//! `SHMQ_BENCH_QUICK=1`: a few thousand messages, to check that it runs.

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer::pull, stream};
use futures_util::StreamExt;
use shmq::{Options, RawQueue};
use shmq_bridge::{In, Out};

fn main() {
    let quick = std::env::var_os("SHMQ_BENCH_QUICK").is_some();
    let srv = common::NatsServer::start();
    let url = srv.url();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let js = rt.block_on(async { jetstream::new(async_nats::connect(&url).await.unwrap()) });
    println!(
        "shmq-bridge throughput, nats-server {} on loopback, file store in {}",
        nats_version(),
        srv.store_dir().display()
    );
    println!(
        "{:>6} {:>8}  {:>22} {:>22} {:>22}",
        "size", "messages", "case", "msg/s", "MiB/s"
    );
    for (size, n) in [(64usize, 200_000u64), (1024, 100_000)] {
        let n = if quick { n / 50 } else { n };
        let payload = vec![0x5au8; size];
        let row = |case: &str, secs: f64| {
            println!(
                "{size:>6} {n:>8}  {case:>22} {:>22.0} {:>22.1}",
                n as f64 / secs,
                (n as f64 * size as f64) / secs / (1024.0 * 1024.0)
            );
        };
        // Plain publisher.
        let subj = format!("plain.{size}");
        let secs = rt.block_on(plain_publish(&js, &subj, &payload, n));
        row("plain publish", secs);
        // Plain consumer of what it published.
        let secs = rt.block_on(plain_consume(&js, &subj, n));
        row("plain consume", secs);
        // Out bridge draining a pre-filled queue.
        let qname = format!("bench-out-{size}-{}", std::process::id());
        let qa = RawQueue::create_with(
            qname.as_str(),
            &Options::new().capacity((n as usize) * (size + 16) + (1 << 20)),
        )
        .unwrap();
        for _ in 0..n {
            qa.put(&payload).unwrap();
        }
        let bsubj = format!("bridge.{size}");
        let t0 = Instant::now();
        let out = Out::new(&qname, &bsubj).server(&url).spawn().unwrap();
        while out.progress().messages < n {
            std::thread::sleep(Duration::from_millis(1));
        }
        row("out bridge publish", t0.elapsed().as_secs_f64());
        out.stop().unwrap();
        // In bridge filling a queue that a thread drains.
        let bname = format!("bench-in-{size}-{}", std::process::id());
        let qb = RawQueue::create(&bname, 8 << 20).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let t0 = Instant::now();
        let inb = In::new(&bname, &bsubj)
            .server(&url)
            .state_file(dir.path().join("state"))
            .spawn()
            .unwrap();
        let mut buf = Vec::new();
        for _ in 0..n {
            qb.get_into(&mut buf).unwrap();
        }
        row("in bridge consume", t0.elapsed().as_secs_f64());
        inb.stop().unwrap();
        // End to end, everything running at once.
        let esubj = format!("e2e.{size}");
        let out = Out::new(&qname, &esubj).server(&url).spawn().unwrap();
        let inb = In::new(&bname, &esubj)
            .server(&url)
            .state_file(dir.path().join("state2"))
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(500)); // both connected
        let t0 = Instant::now();
        let prod = {
            let qa = qa.clone();
            let payload = payload.clone();
            std::thread::spawn(move || {
                for _ in 0..n {
                    qa.put(&payload).unwrap();
                }
            })
        };
        for _ in 0..n {
            qb.get_into(&mut buf).unwrap();
        }
        row("bridge end to end", t0.elapsed().as_secs_f64());
        prod.join().unwrap();
        // Plain end to end: publisher and consumer at once.
        let psubj = format!("plaine2e.{size}");
        let secs = rt.block_on(async {
            let t0 = Instant::now();
            let (a, b) = tokio::join!(
                plain_publish(&js, &psubj, &payload, n),
                plain_consume(&js, &psubj, n)
            );
            let _ = (a, b);
            t0.elapsed().as_secs_f64()
        });
        row("plain end to end", secs);
        out.stop().unwrap();
        inb.stop().unwrap();
    }
}

fn nats_version() -> String {
    std::process::Command::new(common::nats_server_binary())
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

async fn ensure(js: &jetstream::Context, subject: &str) -> stream::Stream {
    js.get_or_create_stream(stream::Config {
        name: shmq_bridge::default_stream_name(subject),
        subjects: vec![subject.to_string()],
        duplicate_window: Duration::from_secs(120),
        ..Default::default()
    })
    .await
    .unwrap()
}

/// Publish `n` messages with ids, acks awaited per window of 256. Seconds taken.
async fn plain_publish(js: &jetstream::Context, subject: &str, payload: &[u8], n: u64) -> f64 {
    ensure(js, subject).await;
    let body = bytes::Bytes::copy_from_slice(payload);
    let t0 = Instant::now();
    let mut i = 0;
    while i < n {
        let end = (i + 256).min(n);
        let mut acks = Vec::with_capacity(256);
        for k in i..end {
            let p = jetstream::message::PublishMessage::build()
                .payload(body.clone())
                .message_id(format!("plain:{k}"));
            acks.push(js.send_publish(subject.to_string(), p).await.unwrap());
        }
        for a in
            futures_util::future::join_all(acks.into_iter().map(|a| async move { a.await })).await
        {
            a.unwrap();
        }
        i = end;
    }
    t0.elapsed().as_secs_f64()
}

/// Consume `n` messages with a durable pull consumer, acking each. Seconds taken.
async fn plain_consume(js: &jetstream::Context, subject: &str, n: u64) -> f64 {
    let s = ensure(js, subject).await;
    let c: jetstream::consumer::PullConsumer = s
        .get_or_create_consumer(
            "plain",
            pull::Config {
                durable_name: Some("plain".into()),
                ack_policy: jetstream::consumer::AckPolicy::Explicit,
                max_ack_pending: 512,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let t0 = Instant::now();
    let mut msgs = c
        .stream()
        .max_messages_per_batch(256)
        .messages()
        .await
        .unwrap();
    for _ in 0..n {
        let m = msgs.next().await.unwrap().unwrap();
        m.ack().await.unwrap();
    }
    t0.elapsed().as_secs_f64()
}
