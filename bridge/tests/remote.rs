//! RemoteQueue<T> against a real `nats-server -js` on a loopback port: every put carries a
//! unique Nats-Msg-Id, a maybe-stored put is reported as such and its retry deduplicated,
//! the try/timeout semantics (Duration::ZERO and MAX), and permanent configuration errors
//! failing fast (also for the library bridges).

mod common;
#[path = "common/s3remote.rs"]
mod helpers;

use std::collections::HashSet;
use std::io::ErrorKind;
use std::time::{Duration, Instant};

use async_nats::jetstream;
use common::NatsServer;
use helpers::Paused;
use shmq::Error as QErr;
use shmq_bridge::{Error, In, Out, RemoteQueue};

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn js(rt: &tokio::runtime::Runtime, url: &str) -> jetstream::Context {
    rt.block_on(async {
        let c = async_nats::connect(url).await.expect("connect");
        jetstream::new(c)
    })
}

/// Every message of `stream`: (payload, Nats-Msg-Id).
fn stored(url: &str, stream: &str) -> Vec<(Vec<u8>, Option<String>)> {
    let r = rt();
    let j = js(&r, url);
    r.block_on(async {
        let mut s = j.get_stream(stream).await.expect("stream");
        let n = s.info().await.expect("info").state.last_sequence;
        let mut out = Vec::new();
        for seq in 1..=n {
            if let Ok(m) = s.get_raw_message(seq).await {
                let id = m.headers.get("Nats-Msg-Id").map(|v| v.as_str().to_string());
                out.push((m.payload.to_vec(), id));
            }
        }
        out
    })
}

fn io_kind(r: &shmq::Result<()>) -> Option<ErrorKind> {
    match r {
        Err(QErr::Io(e)) => Some(e.kind()),
        _ => None,
    }
}

/// Each put carries its own Nats-Msg-Id (two handles never share one), and a put that was
/// published but not acknowledged in time is reported as "maybe stored"; putting the same
/// value again reuses its id, so the stream keeps one copy.
#[test]
fn unique_msg_ids_and_a_maybe_stored_put_retried_once() {
    let srv = NatsServer::start();
    let a: RemoteQueue<u64> = RemoteQueue::connect(&srv.url(), "rq.ids", "r").unwrap();
    let b: RemoteQueue<u64> = RemoteQueue::connect(&srv.url(), "rq.ids", "r").unwrap();
    a.put(&1).unwrap();
    a.put(&1).unwrap(); // the same value twice, both acknowledged: two messages
    b.put(&2).unwrap();
    let s = stored(&srv.url(), "SHMQ_rq_ids");
    assert_eq!(s.len(), 3, "{s:?}");
    let ids: HashSet<_> = s
        .iter()
        .map(|(_, id)| id.clone().expect("every put has a Nats-Msg-Id"))
        .collect();
    assert_eq!(ids.len(), 3, "ids must be unique: {s:?}");

    // The server paused (SIGSTOP): the connection stays up, the publish is written, no ack.
    let paused = Paused::new(srv.store_dir());
    let t0 = Instant::now();
    let r = a.put_timeout(&7, Duration::from_millis(500));
    let took = t0.elapsed();
    assert_eq!(io_kind(&r), Some(ErrorKind::TimedOut), "{r:?}");
    let msg = r.unwrap_err().to_string();
    assert!(msg.contains("may have been stored"), "{msg}");
    assert!(
        took < Duration::from_secs(4),
        "put_timeout(500ms) took {took:?}"
    );
    drop(paused); // SIGCONT: the server reads and stores the buffered publish
                  // The retry of the same value: the same id, JetStream answers "duplicate".
    a.put(&7).unwrap();
    let s = stored(&srv.url(), "SHMQ_rq_ids");
    let sevens: Vec<_> = s.iter().filter(|(p, _)| p == &[7u8]).collect();
    assert_eq!(sevens.len(), 1, "the retried put is stored once: {s:?}");
    // And a later put of 7 is a new message again.
    a.put(&7).unwrap();
    assert_eq!(
        stored(&srv.url(), "SHMQ_rq_ids")
            .iter()
            .filter(|(p, _)| p == &[7u8])
            .count(),
        2
    );
    // Nothing lost or doubled for the consumer.
    let mut got = Vec::new();
    while let Ok(v) = a.get_timeout(Duration::from_millis(500)) {
        got.push(v);
    }
    got.sort();
    assert_eq!(got, vec![1, 1, 2, 7, 7]);
}

/// try_put/try_get do not wait for a connection: with the server down they fail at once
/// with NotConnected (nothing published); put_timeout/get_timeout give up with Timeout;
/// put waits for the server to come back; none of the failed puts is stored.
#[test]
fn try_calls_do_not_wait_for_a_lost_connection() {
    let mut srv = NatsServer::start();
    let q: RemoteQueue<u32> = RemoteQueue::connect(&srv.url(), "rq.down", "r").unwrap();
    q.put(&1).unwrap();
    srv.stop();
    // Until the client has noticed, a call may still try the old connection.
    // Those are "maybe stored" (TimedOut) at worst, and counted: only they may be stored.
    let mut maybe = 0;
    helpers::wait_until(20, "NotConnected from try_put", || {
        let k = io_kind(&q.try_put(&99));
        maybe += usize::from(k == Some(ErrorKind::TimedOut));
        k == Some(ErrorKind::NotConnected)
    });
    let t0 = Instant::now();
    let r = q.try_put(&99);
    assert_eq!(io_kind(&r), Some(ErrorKind::NotConnected), "{r:?}");
    assert!(
        r.unwrap_err().to_string().contains("not published"),
        "the error says nothing was published"
    );
    assert!(matches!(q.try_get(), Err(QErr::Io(e)) if e.kind() == ErrorKind::NotConnected));
    assert!(
        // Before the fix each waited 5 s or more; 4 s for both leaves a busy machine room.
        t0.elapsed() < Duration::from_secs(4),
        "try_put + try_get while disconnected took {:?} (must not wait)",
        t0.elapsed()
    );
    assert!(matches!(
        q.put_timeout(&99, Duration::from_millis(300)),
        Err(QErr::Timeout)
    ));
    assert!(matches!(
        q.get_timeout(Duration::from_millis(300)),
        Err(QErr::Timeout)
    ));
    assert!(matches!(
        q.put_timeout(&99, Duration::ZERO),
        Err(QErr::Timeout)
    ));
    // put waits for the connection to come back.
    let port = srv.port;
    let putter = std::thread::spawn(move || {
        q.put(&2).unwrap();
        q
    });
    std::thread::sleep(Duration::from_millis(300));
    srv.restart();
    assert_eq!(srv.port, port);
    let q = putter.join().unwrap();
    let mut got = vec![q.get_timeout(Duration::from_secs(30)).unwrap()];
    while let Ok(v) = q.get_timeout(Duration::from_secs(2)) {
        got.push(v);
    }
    got.retain(|&v| v != 99);
    assert_eq!(got, vec![1, 2]);
    assert!(matches!(q.try_get(), Err(QErr::Empty)));
    let s = stored(&srv.url(), "SHMQ_rq_down");
    let nines = s.iter().filter(|(p, _)| p == &[99u8]).count();
    assert!(
        nines <= maybe,
        "only a put reported as maybe stored may be stored: {nines} stored, {maybe} maybe"
    );
    assert_eq!(s.len() - nines, 2, "{s:?}");
}

/// Duration::ZERO is one attempt, Duration::MAX waits like put/get (no overflow panic);
/// a full `discard: new` stream gives Full (try) and Timeout (timeout), never "maybe".
#[test]
fn zero_max_and_a_full_stream() {
    let srv = NatsServer::start();
    let r = rt();
    let j = js(&r, &srv.url());
    r.block_on(async {
        j.create_stream(jetstream::stream::Config {
            name: "SMALL".into(),
            subjects: vec!["rq.small".into()],
            max_messages: 2,
            discard: jetstream::stream::DiscardPolicy::New,
            ..Default::default()
        })
        .await
        .expect("stream")
    });
    let q: RemoteQueue<u32> = RemoteQueue::connect(&srv.url(), "rq.small", "r").unwrap();
    assert!(matches!(q.get_timeout(Duration::ZERO), Err(QErr::Timeout)));
    q.put_timeout(&1, Duration::ZERO).unwrap();
    q.put_timeout(&2, Duration::MAX).unwrap();
    assert!(matches!(q.try_put(&3), Err(QErr::Full)));
    assert!(matches!(
        q.put_timeout(&3, Duration::from_millis(200)),
        Err(QErr::Timeout)
    ));
    assert!(matches!(
        q.put_timeout(&3, Duration::ZERO),
        Err(QErr::Timeout)
    ));
    assert_eq!(q.get_timeout(Duration::MAX).unwrap(), 1);
    assert_eq!(q.get_timeout(Duration::ZERO).unwrap(), 2);
    // The stream's limit counts stored messages, acknowledged or not (limits retention).
    assert!(matches!(q.try_put(&3), Err(QErr::Full)));
    assert_eq!(stored(&srv.url(), "SMALL").len(), 2);
}

/// Invalid subjects and names are refused before any server is asked (no retry loop).
#[test]
fn remote_queue_refuses_a_bad_subject_or_durable_at_once() {
    let srv = NatsServer::start();
    for subject in ["", "a..b", ".a", "a.", "a b", "a.*", "a.>"] {
        let r = RemoteQueue::<u32>::connect(&srv.url(), subject, "ok");
        assert!(
            matches!(r, Err(QErr::InvalidArgument(_))),
            "subject {subject:?}: {r:?}"
        );
    }
    for durable in ["", "a.b", "a b", "a*", "a>", "a/b"] {
        let r = RemoteQueue::<u32>::connect(&srv.url(), "rq.ok", durable);
        assert!(
            matches!(r, Err(QErr::InvalidArgument(_))),
            "durable {durable:?}: {r:?}"
        );
    }
    RemoteQueue::<u32>::connect(&srv.url(), "rq.ok", "ok").unwrap();
}

/// Run a library bridge on its own thread; its result within `secs` seconds, or `None`
/// if it is still running then (retrying; it is stopped).
fn result_within(r: shmq_bridge::Result<shmq_bridge::Running>, secs: u64) -> Option<Error> {
    let running = match r {
        Ok(r) => r,
        Err(e) => return Some(e),
    };
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !running.is_finished() {
        if Instant::now() > deadline {
            running.stop().ok();
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    running.join().err()
}

/// The bridges fail fast with a typed error on a permanent configuration error instead of
/// retrying for ever: a bad subject, a bad durable name, a bad stream name, a stream whose
/// subjects overlap another's, and credentials the server refuses.
#[test]
fn bridges_fail_fast_on_permanent_configuration_errors() {
    let srv = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let q = dir.path().join("q");
    let q = q.to_str().unwrap();
    let create = 1 << 16;
    let e = result_within(
        Out::new(q, "a..b").server(srv.url()).create(create).spawn(),
        20,
    );
    assert!(
        matches!(e, Some(Error::Config(_))),
        "bad subject (out): {e:?}"
    );
    let e = result_within(
        In::new(q, "in. bad")
            .server(srv.url())
            .create(create)
            .spawn(),
        20,
    );
    assert!(
        matches!(e, Some(Error::Config(_))),
        "bad subject (in): {e:?}"
    );
    let e = result_within(
        In::new(q, "in.ok")
            .server(srv.url())
            .create(create)
            .durable("bad.durable")
            .state_file(dir.path().join("st"))
            .spawn(),
        20,
    );
    assert!(matches!(e, Some(Error::Config(_))), "bad durable: {e:?}");
    let e = result_within(
        Out::new(q, "out.ok")
            .server(srv.url())
            .create(create)
            .stream("bad.stream")
            .spawn(),
        20,
    );
    assert!(
        matches!(e, Some(Error::Config(_))),
        "bad stream name: {e:?}"
    );
    // A stream named explicitly whose subject another stream already captures.
    let r = rt();
    let j = js(&r, &srv.url());
    r.block_on(async {
        j.create_stream(jetstream::stream::Config {
            name: "OTHER".into(),
            subjects: vec!["taken.>".into()],
            ..Default::default()
        })
        .await
        .expect("stream")
    });
    let e = result_within(
        Out::new(q, "taken.x")
            .server(srv.url())
            .create(create)
            .stream("MINE")
            .spawn(),
        20,
    );
    assert!(
        matches!(&e, Some(Error::Refused { reason, .. }) if reason.contains("overlap")),
        "overlapping subjects: {e:?}"
    );
    assert!(e.unwrap().is_config());

    // A stream named explicitly that does not capture the subject.
    let e = result_within(
        Out::new(q, "elsewhere")
            .server(srv.url())
            .create(create)
            .stream("OTHER")
            .spawn(),
        20,
    );
    assert!(
        matches!(&e, Some(Error::Config(m)) if m.contains("does not capture")),
        "a stream without the subject: {e:?}"
    );

    // Credentials the server refuses.
    let auth = NatsServer::start_with_config("authorization { user: shmq, password: right }\n");
    let bad = format!("nats://shmq:s3cr3t-wr0ng@127.0.0.1:{}", auth.port);
    let e = result_within(Out::new(q, "auth.x").server(bad).create(create).spawn(), 20);
    assert!(
        matches!(&e, Some(Error::Refused { reason, .. }) if reason.contains("authorization")),
        "bad credentials: {e:?}"
    );
    let shown = format!("{e:?} {}", e.as_ref().unwrap());
    assert!(
        !shown.contains("s3cr3t"),
        "the password is not shown: {shown}"
    );
    // The credentials in the URL are used (the client alone ignores them), also by
    // RemoteQueue, and a list of servers is accepted.
    let both = format!(
        "nats://127.0.0.1:{},nats://shmq:right@127.0.0.1:{}",
        helpers::closed_port(),
        auth.port
    );
    let rq: RemoteQueue<u8> = RemoteQueue::connect(&both, "auth.rq", "r").unwrap();
    rq.put(&5).unwrap();
    assert_eq!(rq.get_timeout(Duration::from_secs(10)).unwrap(), 5);
    let good = format!("nats://shmq:right@127.0.0.1:{}", auth.port);
    let running = Out::new(q, "auth.x")
        .server(good)
        .create(create)
        .spawn()
        .unwrap();
    helpers::wait_until(20, "the bridge connected", || {
        running.progress().connected || running.is_finished()
    });
    assert!(!running.is_finished(), "{:?}", running.join());
    running.stop().unwrap();
}

/// Stopped while it cannot connect: the library's `Running::stop` is `Ok` (a clean stop),
/// and so is `run` of both bridges (before: `Err(Error::Stopped)`, against its docs).
#[test]
fn stop_while_connecting_is_clean() {
    let dir = tempfile::tempdir().unwrap();
    let q = dir.path().join("q");
    let url = format!("nats://127.0.0.1:{}", helpers::closed_port());
    let running = Out::new(q.to_str().unwrap(), "x")
        .server(url.clone())
        .create(1 << 16)
        .spawn()
        .unwrap();
    helpers::wait_until(20, "a connection retry", || running.progress().retries > 0);
    running.stop().unwrap();
    let r = rt();
    let ctl = shmq_bridge::Control::new();
    ctl.stop();
    let e = r.block_on(
        Out::new(q.to_str().unwrap(), "x")
            .server(url.clone())
            .run(&ctl),
    );
    assert!(e.is_ok(), "out: {e:?}");
    let e = r.block_on(
        shmq_bridge::In::new(q.to_str().unwrap(), "x")
            .server(url)
            .state_file(dir.path().join("in.state"))
            .run(&ctl),
    );
    assert!(e.is_ok(), "in: {e:?}");
}

/// Permanent refusals end the bridges at once instead of a retry for ever: an out bridge
/// on a wildcard subject (`Error::Config`, before the server is asked), an out bridge whose
/// user may not publish to the subject (the server's "Permissions Violation", then no ack:
/// `Error::Refused`, the message still in the queue), and an in bridge whose consumer the
/// server refuses (a stream at its consumer limit, status 400: `Error::Refused`).
#[test]
fn bridges_fail_fast_on_refused_publishes_and_consumers() {
    let dir = tempfile::tempdir().unwrap();
    let q = dir.path().join("q");
    let q = q.to_str().unwrap();
    let create = 1 << 16;
    let srv = NatsServer::start_with_config(
        "authorization { users = [ { user: shmq, password: pw, permissions: { publish: { \
         deny: [\"denied.x\"] } } } ] }\n",
    );
    let url = format!("nats://shmq:pw@127.0.0.1:{}", srv.port);
    for wild in ["wild.*", ">", "wild.>"] {
        let e = result_within(
            Out::new(q, wild).server(url.clone()).create(create).spawn(),
            20,
        );
        assert!(
            matches!(&e, Some(Error::Config(m)) if m.contains("wildcard")),
            "out on {wild:?}: {e:?}"
        );
    }

    // Publishing denied to this user.
    let named = format!("brr-denied-{}", std::process::id());
    let rq = shmq::RawQueue::create(&named, create).unwrap();
    rq.put(b"never published").unwrap();
    let e = result_within(
        Out::new(&named, "denied.x")
            .server(url.clone())
            .ack_timeout(Duration::from_secs(1))
            .spawn(),
        30,
    );
    assert!(
        matches!(&e, Some(Error::Refused { reason, .. })
            if reason.to_lowercase().contains("permissions violation")),
        "publish denied: {e:?}"
    );
    assert!(e.unwrap().is_config());
    assert_eq!(rq.len(), 1, "the refused message stays in the queue");

    // A stream that allows one consumer, already taken.
    let r = rt();
    r.block_on(async {
        let c = async_nats::ConnectOptions::with_user_and_password("shmq".into(), "pw".into())
            .connect(format!("127.0.0.1:{}", srv.port))
            .await
            .expect("connect");
        let s = jetstream::new(c)
            .create_stream(jetstream::stream::Config {
                name: "ONE_CONSUMER".into(),
                subjects: vec!["mc.a".into()],
                max_consumers: 1,
                ..Default::default()
            })
            .await
            .expect("stream");
        s.create_consumer(jetstream::consumer::pull::Config {
            durable_name: Some("other".into()),
            ..Default::default()
        })
        .await
        .expect("consumer");
    });
    let e = result_within(
        In::new(q, "mc.a")
            .server(url)
            .create(create)
            .state_file(dir.path().join("in.state"))
            .spawn(),
        30,
    );
    assert!(
        matches!(&e, Some(Error::Refused { reason, .. }) if reason.contains("maximum consumers")),
        "consumer refused: {e:?}"
    );
    drop(rq);
    // Gone with its creator's handle, or removed here.
    let _ = shmq::remove(&named);
    assert!(!std::path::Path::new(&format!("/dev/shm/shmq.{named}")).exists());
}
