//! Issue 13, attacker trial (session 3): a local queue removed and created again after a
//! pause under running bridges (F4), and bridges that must not run together (F1: an in and
//! an out bridge looping on one queue and stream; F6: two in bridges sharing a durable
//! consumer), all against a real nats-server (tests/common).

mod common;

use std::time::{Duration, Instant};

use async_nats::jetstream;
use common::NatsServer;
use shmq::internal::bridged;
use shmq::{Error as QErr, RawQueue};
use shmq_bridge::{Error, In, Out, Running};

fn name(tag: &str) -> String {
    format!("brg-{tag}-{}", std::process::id())
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap()
}

fn js(rt: &tokio::runtime::Runtime, url: &str) -> jetstream::Context {
    rt.block_on(async { jetstream::new(async_nats::connect(url).await.expect("connect")) })
}

fn wait_for(secs: u64, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !f() {
        assert!(
            Instant::now() < deadline,
            "timed out after {secs} s: {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

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

fn stream_messages(rt: &tokio::runtime::Runtime, js: &jetstream::Context, stream: &str) -> u64 {
    rt.block_on(async {
        let mut s = js.get_stream(stream).await.expect("stream");
        s.info().await.expect("stream info").state.messages
    })
}

fn next_number(q: &RawQueue, what: &str) -> u64 {
    let mut buf = Vec::new();
    q.get_into_timeout(&mut buf, Duration::from_secs(30))
        .unwrap_or_else(|e| panic!("{what}: {e}"));
    u64::from_le_bytes(buf[..8].try_into().unwrap())
}

/// Wait until `queue` carries a live mark of the bridge going `dir` (it is set up).
fn wait_marked(queue: &str, dir: bridged::Direction) {
    wait_for(30, "the bridge's mark", || {
        bridged::of_queue(queue)
            .iter()
            .any(|m| m.info.direction == dir)
    });
}

/// Remove `q`'s name, leave it empty for 0.3 s, create it again.
fn remove_and_recreate(q: &str) -> RawQueue {
    shmq::remove(q).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    RawQueue::create(q, 1 << 16).unwrap()
}

/// Removed for good: the bridge stops after its 1 s grace with `Queue`/`NotFound`, which
/// says the queue was removed while it ran (not "create it first"); exit status 1.
fn stops_as_removed(b: Running, q: &str) {
    shmq::remove(q).unwrap();
    wait_for(30, "the bridge to stop", || b.is_finished());
    let err = b.join().expect_err("a removed queue stops the bridge");
    assert!(
        matches!(
            &err,
            Error::Queue {
                source: QErr::NotFound(_),
                ..
            }
        ),
        "{err:?}"
    );
    assert!(!err.is_config(), "exit status 1, not 2: {err}");
    let text = err.to_string();
    assert!(text.contains("was removed while the bridge ran"), "{text}");
    assert!(!text.contains("create it first"), "{text}");
}

/// F4: `shmq rm q; sleep 0.3; shmq create q` under an idle in bridge, a busy in bridge and
/// an out bridge: each follows the new queue (it used to stop at once with QueueMissing,
/// exit 2); removed for good, each stops as documented and the in bridge's state file goes.
#[test]
fn queue_recreated_after_a_pause_is_followed() {
    let srv = NatsServer::start();
    let r = rt();
    let j = js(&r, &srv.url());
    let dir = tempfile::tempdir().unwrap();

    // Idle in bridge.
    let b = name("idle");
    let qb = RawQueue::create(&b, 1 << 16).unwrap();
    let state = dir.path().join("idle.state");
    let inb = In::new(&b, "grd.idle")
        .server(srv.url())
        .state_file(&state)
        .spawn()
        .unwrap();
    wait_marked(&b, bridged::Direction::In);
    let qb2 = remove_and_recreate(&b);
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        !inb.is_finished(),
        "the idle in bridge stopped: {:?}",
        inb.progress()
    );
    publish_numbers(&r, &j, "grd.idle", 0..5);
    for n in 0..5 {
        assert_eq!(next_number(&qb2, "in the new queue"), n);
    }
    assert!(qb.is_empty());
    stops_as_removed(inb, &b);
    assert!(
        !state.exists(),
        "the state file of a removed queue is removed"
    );
    drop((qb, qb2));

    // Busy in bridge: messages flowing while the queue is removed and created again.
    let b = name("busy");
    let qb = RawQueue::create(&b, 1 << 16).unwrap();
    let inb = In::new(&b, "grd.busy")
        .server(srv.url())
        .state_file(dir.path().join("busy.state"))
        .spawn()
        .unwrap();
    wait_marked(&b, bridged::Direction::In);
    let url = srv.url();
    let publisher = std::thread::spawn(move || {
        let r = rt();
        let j = js(&r, &url);
        publish_numbers(&r, &j, "grd.busy", 0..400);
    });
    wait_for(30, "messages flowing", || inb.progress().messages >= 20);
    let qb2 = remove_and_recreate(&b);
    publisher.join().unwrap();
    // Everything not put into the removed queue goes into the new one, in order, up to 399.
    let mut last = None;
    while last != Some(399) {
        let n = next_number(&qb2, "the rest in the new queue");
        assert!(last.is_none_or(|l| n > l), "{n} after {last:?}");
        last = Some(n);
    }
    assert!(!inb.is_finished());
    stops_as_removed(inb, &b);
    drop((qb, qb2));

    // Out bridge.
    let a = name("out");
    let qa = RawQueue::create(&a, 1 << 16).unwrap();
    let subject = "grd.out";
    let stream = shmq_bridge::default_stream_name(subject);
    let out = Out::new(&a, subject).server(srv.url()).spawn().unwrap();
    wait_marked(&a, bridged::Direction::Out);
    qa.put(&0u64.to_le_bytes()).unwrap();
    wait_for(30, "the first in the stream", || {
        stream_messages(&r, &j, &stream) == 1
    });
    let qa2 = remove_and_recreate(&a);
    std::thread::sleep(Duration::from_millis(1500));
    assert!(!out.is_finished(), "the out bridge stopped");
    for n in 1..5u64 {
        qa2.put(&n.to_le_bytes()).unwrap();
    }
    wait_for(30, "all 5 in the stream", || {
        qa2.is_empty() && stream_messages(&r, &j, &stream) == 5
    });
    stops_as_removed(out, &a);
    drop((qa, qa2));
}

/// F1: an in and an out bridge on one local queue and one subject would loop for ever;
/// the second one (either way round) is refused with a configuration error.
#[test]
fn in_and_out_on_one_queue_and_subject_refused() {
    let srv = NatsServer::start();
    let q = name("loop");
    let rq = RawQueue::create(&q, 1 << 16).unwrap();
    let out = Out::new(&q, "grd.loop").server(srv.url()).spawn().unwrap();
    // Past its own check once it publishes.
    rq.put(b"first").unwrap();
    wait_for(30, "the out bridge to publish", || rq.is_empty());
    let dir = tempfile::tempdir().unwrap();
    let inb = In::new(&q, "grd.loop")
        .server(srv.url())
        .state_file(dir.path().join("loop.state"))
        .spawn()
        .unwrap();
    let err = inb.join().expect_err("the in bridge must be refused");
    assert!(err.is_config(), "{err:?}");
    assert!(
        matches!(&err, Error::Config(m) if m.contains("loop")),
        "{err}"
    );
    // The out bridge is unharmed.
    rq.put(b"second").unwrap();
    wait_for(30, "the out bridge to publish", || rq.is_empty());
    out.stop().unwrap();

    // The other way round.
    let inb = In::new(&q, "grd.loop")
        .server(srv.url())
        .state_file(dir.path().join("loop2.state"))
        .spawn()
        .unwrap();
    // Past its own check once it puts (the two messages already in the stream).
    for _ in 0..2 {
        rq.get_into_timeout(&mut Vec::new(), Duration::from_secs(30))
            .unwrap();
    }
    let out = Out::new(&q, "grd.loop").server(srv.url()).spawn().unwrap();
    let err = out.join().expect_err("the out bridge must be refused");
    assert!(
        matches!(&err, Error::Config(m) if m.contains("loop")),
        "{err}"
    );
    assert!(!inb.is_finished());
    inb.stop().unwrap();
    drop(rq);
}

/// F6: two in bridges on one stream and one --durable, with different state files, would
/// split the consumer's messages, duplicate and reorder; the second is refused.
#[test]
fn two_in_bridges_sharing_a_durable_refused() {
    let srv = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let (b1, b2) = (name("dur1"), name("dur2"));
    let q1 = RawQueue::create(&b1, 1 << 16).unwrap();
    let q2 = RawQueue::create(&b2, 1 << 16).unwrap();
    let first = In::new(&b1, "grd.dur")
        .server(srv.url())
        .durable("shared")
        .state_file(dir.path().join("1.state"))
        .spawn()
        .unwrap();
    // Past its own check once it puts (the stream exists once it is marked).
    wait_marked(&b1, bridged::Direction::In);
    let r = rt();
    let j = js(&r, &srv.url());
    publish_numbers(&r, &j, "grd.dur", 0..1);
    assert_eq!(next_number(&q1, "through the first"), 0);
    let second = In::new(&b2, "grd.dur")
        .server(srv.url())
        .durable("shared")
        .state_file(dir.path().join("2.state"))
        .spawn()
        .unwrap();
    let err = second.join().expect_err("the second must be refused");
    assert!(err.is_config(), "{err:?}");
    assert!(
        matches!(&err, Error::Config(m) if m.contains("durable consumer \"shared\"")),
        "{err}"
    );
    assert!(!first.is_finished());
    // Another durable on the same stream is fine (its own consumer).
    let other = In::new(&b2, "grd.dur")
        .server(srv.url())
        .durable("own")
        .state_file(dir.path().join("3.state"))
        .spawn()
        .unwrap();
    wait_marked(&b2, bridged::Direction::In);
    assert!(!other.is_finished());
    other.stop().unwrap();
    first.stop().unwrap();
    drop((q1, q2));
}

/// A state file that is a symbolic link is refused with a message that says so (it used to
/// be only "Too many levels of symbolic links (os error 40)").
#[test]
fn symlinked_state_file_refused_clearly() {
    let srv = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let b = name("link");
    let qb = RawQueue::create(&b, 1 << 16).unwrap();
    let link = dir.path().join("in.state");
    std::os::unix::fs::symlink(dir.path().join("elsewhere"), &link).unwrap();
    let inb = In::new(&b, "grd.link")
        .server(srv.url())
        .state_file(&link)
        .spawn()
        .unwrap();
    let err = inb.join().expect_err("a symlinked state file is refused");
    assert!(err.is_config(), "{err:?}");
    assert!(err.to_string().contains("is a symbolic link"), "{err}");
    assert!(!dir.path().join("elsewhere").exists());
    drop(qb);
}
