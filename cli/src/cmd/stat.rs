//! `shmq stat NAME [--json]`: one queue in detail.

use std::io::{self, Write};
use std::sync::atomic::Ordering;

use clap::Args;
use serde::Serialize;
use shmq::internal::{codec_id, codec_name, Segment};
use shmq::{Location, RawQueue, Stats};

use crate::bridged;
use crate::error::{CliError, CliResult};
use crate::format::{self, bytes, percent, yes_no};
use crate::kind::Kind;
use crate::object;
use crate::parse::parse_name;

#[derive(Args, Debug)]
pub struct StatArgs {
    /// Queue name (or its path: the "object" of `shmq ls --json`).
    #[arg(value_parser = parse_name)]
    name: String,
    /// Print a JSON object instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Serialize)]
struct StatJson<'a> {
    name: &'a str,
    object: String,
    /// `queue`, or what else the object is (`shmq Lock`).
    kind: &'a str,
    size: u64,
    codec_name: &'static str,
    item_size: u32,
    /// `null` for an object that is not a queue.
    max_message: Option<usize>,
    attached: &'a [u32],
    stale: bool,
    /// The JetStream bridges running on the queue (empty: none).
    bridges: Vec<bridged::BridgeJson<'a>>,
    #[serde(flatten)]
    stats: &'a Stats,
}

pub fn run(a: StatArgs) -> CliResult<()> {
    let entry = shmq::inspect(&a.name)?;
    let s = match (entry.stats(), entry.problem()) {
        (Some(s), _) => s,
        (None, problem) => {
            let e = CliError::new(format!(
                "cannot read queue {:?}: {}",
                a.name,
                problem.unwrap_or_default()
            ));
            return Err(if matches!(entry.state, shmq::QueueState::Uninit { .. }) {
                e.hint(format!(
                    "if its creator crashed, remove it with `shmq rm {}` or `shmq rm --stale`",
                    a.name
                ))
            } else {
                e
            });
        }
    };
    let kind = Kind::of(s);
    // What the listing does not tell: the largest message (from a queue handle; objects
    // that are not queues have none) and the item size recorded in the header.
    let max_message = match kind.is_queue() {
        true => Some(RawQueue::open(&a.name)?.max_message()),
        false => None,
    };
    let item_size = Segment::open(Location::Name(a.name.clone()))?
        .header()
        .id
        .item_size
        .load(Ordering::Relaxed);
    let stale = entry.is_stale();
    let bridges = bridged::of(&a.name);
    let path = object::path(&a.name);
    let out = io::stdout();
    let mut out = out.lock();
    if a.json {
        let j = StatJson {
            name: &entry.name,
            object: path.display().to_string(),
            kind: kind.label(),
            size: entry.size,
            codec_name: codec_name(s.codec),
            item_size,
            max_message,
            attached: &entry.attached,
            stale,
            bridges: bridged::json(&bridges),
            stats: s,
        };
        serde_json::to_writer_pretty(&mut out, &j).map_err(io::Error::from)?;
        writeln!(out)?;
        return Ok(());
    }
    let mut codec = codec_name(s.codec).to_string();
    if !s.type_name.is_empty() {
        codec.push_str(&format!(", message type {}", s.type_name));
    }
    if s.codec == codec_id::POD {
        codec.push_str(&format!(", {item_size} bytes per item"));
    }
    let lock = |holder: u32| {
        if holder == 0 {
            "free".to_string()
        } else {
            format!("held by holder id {holder}")
        }
    };
    let pids = |v: &[u32]| {
        if v.is_empty() {
            "none".to_string()
        } else {
            let list: Vec<String> = v.iter().map(|p| p.to_string()).collect();
            format!("{} (pids {}; from /proc)", v.len(), list.join(", "))
        }
    };
    let ago = format::secs_since(s.created_unix);
    let mut rows: Vec<(&str, String)> = vec![
        ("name", entry.name.clone()),
        (
            "object",
            format!("{} ({})", path.display(), bytes(entry.size)),
        ),
    ];
    if let Some(max_message) = max_message {
        rows.extend([
            ("codec", codec),
            (
                "capacity",
                format!(
                    "{} ({} bytes); largest message {max_message} bytes",
                    bytes(s.capacity),
                    s.capacity,
                ),
            ),
            (
                "used",
                format!(
                    "{} ({} of capacity)",
                    bytes(s.used_bytes),
                    percent(s.used_bytes, s.capacity)
                ),
            ),
            ("messages", format!("{} queued", s.len)),
            ("closed", yes_no(s.closed).into()),
        ]);
    } else {
        rows.push(("kind", format!("{} (not a queue)", kind.label())));
    }
    rows.extend([
        (
            "creator",
            format!(
                "pid {} ({})",
                s.creator_pid,
                if s.creator_alive { "alive" } else { "dead" }
            ),
        ),
        (
            "created",
            format!("{} ({} ago)", format::utc(s.created_unix), format::age(ago)),
        ),
        ("attached", pids(&entry.attached)),
        ("stale", yes_no(stale).into()),
    ]);
    if max_message.is_some() {
        rows.extend([
            (
                "waiting",
                // Yes/no, not counts: the header keeps no count of sleepers (one killed
                // asleep must leave nothing behind that costs the others: docs/design.md).
                format!(
                    "producers {} (queue full), consumers {} (queue empty)",
                    yes_no(s.producers_waiting != 0),
                    yes_no(s.consumers_waiting != 0)
                ),
            ),
            (
                "locks",
                format!(
                    "producer {}, consumer {}",
                    lock(s.producer_lock_holder),
                    lock(s.consumer_lock_holder)
                ),
            ),
            (
                "puts",
                format!(
                    "{} messages, {}",
                    format::thousands(s.puts),
                    bytes(s.put_bytes)
                ),
            ),
            (
                "gets",
                format!(
                    "{} messages, {}",
                    format::thousands(s.gets),
                    bytes(s.get_bytes)
                ),
            ),
            (
                "full",
                format!("{} times a producer found it full", s.full_events),
            ),
            (
                "empty",
                format!("{} times a consumer found it empty", s.empty_events),
            ),
        ]);
    }
    if max_message.is_some() {
        if bridges.is_empty() {
            rows.push(("bridge", "none".into()));
        }
        for b in &bridges {
            for (n, line) in bridged::describe(b).into_iter().enumerate() {
                rows.push((if n == 0 { "bridge" } else { "" }, line));
            }
        }
    }
    for (k, v) in rows {
        writeln!(out, "{k:<10} {v}")?;
    }
    Ok(())
}
