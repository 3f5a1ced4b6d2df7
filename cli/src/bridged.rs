//! Which queues a JetStream bridge (`shmq-bridge`) runs on, for `shmq ls` and `shmq stat`.
//! The facts come from the library (`shmq::internal::bridged`: the marks running bridges
//! hold in /dev/shm); this file only groups and words them.

use std::collections::HashMap;

use serde::Serialize;
use shmq::internal::bridged::{self, Bridged, MarkCounters};
use shmq::Location;

use crate::format;

/// The live bridges of every named queue, by queue name. Only bridges of the object now
/// under the name count: a queue created again after a bridge attached is not bridged.
pub fn by_queue() -> HashMap<String, Vec<Bridged>> {
    let mut m: HashMap<String, Vec<Bridged>> = HashMap::new();
    for b in bridged::list() {
        if let Location::Name(n) = &b.queue {
            if b.is_current() {
                m.entry(n.clone()).or_default().push(b);
            }
        }
    }
    m
}

/// The live bridges of the named queue.
pub fn of(name: &str) -> Vec<Bridged> {
    bridged::of_queue(name)
}

/// The `BRIDGE` cell of `shmq ls`: the directions (`out`, `in`, `out,in`), `-` for none.
pub fn cell(bs: &[Bridged]) -> String {
    if bs.is_empty() {
        return "-".into();
    }
    bs.iter()
        .map(|b| b.info.direction.label())
        .collect::<Vec<_>>()
        .join(",")
}

/// One bridge in JSON (`bridges` of `shmq ls --json` and `shmq stat --json`).
#[derive(Serialize)]
pub struct BridgeJson<'a> {
    direction: &'static str,
    server: &'a str,
    stream: &'a str,
    subject: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    durable: Option<&'a str>,
    pid: u32,
    started_unix: u64,
    queue_uid: String,
    mark: String,
    #[serde(flatten)]
    counters: &'a MarkCounters,
}

pub fn json(bs: &[Bridged]) -> Vec<BridgeJson<'_>> {
    bs.iter()
        .map(|b| BridgeJson {
            direction: b.info.direction.label(),
            server: &b.info.server,
            stream: &b.info.stream,
            subject: &b.info.subject,
            durable: b.info.durable.as_deref(),
            pid: b.pid,
            started_unix: b.started_unix,
            queue_uid: format!("{:016x}", b.queue_uid),
            mark: b.mark.display().to_string(),
            counters: &b.counters,
        })
        .collect()
}

/// `shmq stat`'s lines for one bridge: where it goes, then its counters.
pub fn describe(b: &Bridged) -> Vec<String> {
    let i = &b.info;
    let route = match i.durable.as_deref() {
        None => format!(
            "out -> {} stream {} subject {}",
            i.server, i.stream, i.subject
        ),
        Some(d) => format!(
            "in <- {} stream {} subject {} durable {d}",
            i.server, i.stream, i.subject
        ),
    };
    let c = &b.counters;
    let since = |t: u64| {
        if t == 0 {
            "never".to_string()
        } else {
            format!("{} ago", format::age(format::secs_since(t)))
        }
    };
    let mut counts = format!(
        "{} messages ({}), lag {}, last forward {}",
        format::thousands(c.messages),
        format::bytes(c.bytes),
        format::thousands(c.lag),
        since(c.last_forward_unix),
    );
    let problems = [
        (c.duplicates, "duplicates"),
        (c.malformed, "malformed"),
        (c.retries, "retries"),
        (c.disconnects, "disconnects"),
    ];
    for (n, what) in problems {
        if n > 0 {
            counts.push_str(&format!(", {} {what}", format::thousands(n)));
        }
    }
    vec![
        route,
        format!(
            "pid {}, started {} ago, NATS {}",
            b.pid,
            format::age(format::secs_since(b.started_unix)),
            if c.connected {
                "connected"
            } else {
                "disconnected"
            }
        ),
        format!("{counts} (updated {})", since(c.updated_unix)),
    ]
}
