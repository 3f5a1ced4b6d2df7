//! `shmq ls [PATTERN] [--all] [--json]`: the shmq objects on this machine, as a table.

use std::io::{self, Write};

use clap::Args;
use serde::Serialize;
use shmq::{QueueInfo, Stats};

use crate::error::{CliError, CliResult};
use crate::filter::Filter;
use crate::format::{bytes, percent, yes_no};
use crate::kind::Kind;
use crate::users::user_name;
use crate::{bridged, object, output};

#[derive(Args, Debug)]
#[command(after_help = "\
Columns: CAPACITY of the ring; USED bytes (records and framing); MSGS queued; PUT-WAIT / \
GET-WAIT producers / consumers asleep because the queue is full / empty; CLOSED; CREATOR \
pid and whether it is ALIVE; PROCS that have the queue mapped now (informational: read \
from /proc, so processes of other users or PID namespaces may not be counted); BRIDGE the \
JetStream bridges running on the queue (`out`, `in`, `out,in`; `-` for none; `shmq stat \
NAME` shows where they go and their counters); OWNER (with --all) the user who owns the \
object. Objects whose header cannot be read show `?` and a \
note on stderr explaining why. Locks, events, semaphores, barriers, conditions and shared \
values (shmq::primitives) are listed after the queues, with their KIND. Only your own \
objects are listed unless --all.")]
pub struct LsArgs {
    /// Only queues whose name matches: a glob (`jobs-*`), or text the name contains.
    pattern: Option<String>,
    /// Every user's queues, with an OWNER column (default: only yours).
    #[arg(short, long)]
    all: bool,
    /// Print a JSON array instead of a table (sizes in bytes, all counters).
    #[arg(long)]
    json: bool,
}

#[derive(Serialize)]
struct LsJson<'a> {
    name: &'a str,
    object: String,
    /// `queue`, or what else the object is (`shmq Lock`); absent if its header is unreadable.
    #[serde(skip_serializing_if = "Option::is_none")]
    kind: Option<&'a str>,
    owner_uid: Option<u32>,
    size: u64,
    attached: Vec<u32>,
    stale: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    /// The JetStream bridges running on the queue (empty: none).
    bridges: Vec<bridged::BridgeJson<'a>>,
    #[serde(flatten)]
    stats: Option<&'a Stats>,
}

pub fn run(a: LsArgs) -> CliResult<()> {
    let filter = Filter::new(a.all, a.pattern.as_deref())?;
    let all = shmq::list().map_err(|e| {
        CliError::from(e).hint(format!(
            "shmq lists {}; is it mounted and readable?",
            object::dir().display()
        ))
    })?;
    let total = all.len();
    let infos: Vec<_> = all.into_iter().filter(|i| filter.wants(&i.name)).collect();
    let kinds: Vec<Option<Kind>> = infos.iter().map(|i| i.stats().map(Kind::of)).collect();
    let bridges = bridged::by_queue();
    let none = Vec::new();
    let bridges_of = |name: &str| bridges.get(name).unwrap_or(&none);
    let out = io::stdout();
    let mut out = out.lock();
    if a.json {
        let rows: Vec<LsJson> = infos
            .iter()
            .zip(&kinds)
            .map(|(i, k)| LsJson {
                name: &i.name,
                object: object::path(&i.name).display().to_string(),
                kind: k.as_ref().map(Kind::label),
                owner_uid: object::owner(&i.name),
                size: i.size,
                attached: i.attached.clone(),
                stale: i.is_stale(),
                error: i.problem(),
                bridges: bridged::json(bridges_of(&i.name)),
                stats: i.stats(),
            })
            .collect();
        serde_json::to_writer_pretty(&mut out, &rows).map_err(io::Error::from)?;
        writeln!(out)?;
        return Ok(());
    }
    if infos.is_empty() {
        let hidden = total - infos.len();
        if hidden == 0 {
            eprintln!(
                "no shmq queues on this machine (create one from a program, or with `shmq create NAME`)"
            );
        } else {
            eprintln!(
                "no matching shmq queues ({hidden} not shown: other users' or other names; `shmq ls --all` lists every user's)"
            );
        }
        return Ok(());
    }
    // Queues (and objects whose header is unreadable: they may be queues) first, then the
    // other objects, which have no ring to show.
    let (queues, others): (Vec<_>, Vec<_>) = infos
        .iter()
        .zip(&kinds)
        .partition(|(_, k)| k.as_ref().is_none_or(Kind::is_queue));
    let mut notes = Vec::new();
    if !queues.is_empty() {
        let rows = queues
            .iter()
            .map(|(i, _)| queue_row(i, bridges_of(&i.name), a.all, &mut notes));
        print_table(&mut out, QUEUE_COLUMNS, a.all, rows.collect())?;
    }
    if !others.is_empty() {
        if !queues.is_empty() {
            writeln!(out)?;
        }
        let rows = others.iter().filter_map(|(i, k)| {
            let (s, k) = (i.stats()?, k.as_ref()?);
            let mut r = vec![
                i.name.clone(),
                k.label().to_string(),
                s.creator_pid.to_string(),
                yes_no(s.creator_alive).into(),
                i.attached.len().to_string(),
            ];
            if a.all {
                r.push(owner_name(i));
            }
            Some(r)
        });
        print_table(&mut out, OTHER_COLUMNS, a.all, rows.collect())?;
    }
    for n in notes {
        eprintln!("note: {n}");
    }
    let stale = infos.iter().filter(|i| i.is_stale()).count();
    if stale > 0 {
        eprintln!(
            "note: {stale} stale (not persistent, no process attached); remove them with `shmq rm --stale`"
        );
    }
    Ok(())
}

/// Column titles and whether each is right-aligned (OWNER, with --all, is added last).
type Columns = &'static [(&'static str, bool)];

const QUEUE_COLUMNS: Columns = &[
    ("NAME", false),
    ("CAPACITY", true),
    ("USED", true),
    ("MSGS", true),
    ("PUT-WAIT", true),
    ("GET-WAIT", true),
    ("CLOSED", false),
    ("CREATOR", true),
    ("ALIVE", false),
    ("PROCS", true),
    ("BRIDGE", false),
];

const OTHER_COLUMNS: Columns = &[
    ("NAME", false),
    ("KIND", false),
    ("CREATOR", true),
    ("ALIVE", false),
    ("PROCS", true),
];

fn print_table(
    out: &mut impl Write,
    columns: Columns,
    owner: bool,
    rows: Vec<Vec<String>>,
) -> CliResult<()> {
    let mut header: Vec<&str> = columns.iter().map(|c| c.0).collect();
    let right: Vec<bool> = columns.iter().map(|c| c.1).collect();
    if owner {
        header.push("OWNER");
    }
    let mut table = output::table(&header, &right);
    for r in rows {
        table.add_row(r);
    }
    for line in table.lines() {
        writeln!(out, "{}", line.trim_end())?;
    }
    Ok(())
}

fn owner_name(i: &QueueInfo) -> String {
    object::owner(&i.name).map_or("?".into(), user_name)
}

/// A queue's row; `?` for what an unreadable header hides, with a note saying why.
fn queue_row(
    i: &QueueInfo,
    bridges: &[shmq::internal::bridged::Bridged],
    owner: bool,
    notes: &mut Vec<String>,
) -> Vec<String> {
    let procs = i.attached.len().to_string();
    let mut r = match (i.stats(), i.problem()) {
        (Some(s), _) => vec![
            i.name.clone(),
            bytes(s.capacity),
            format!(
                "{} ({})",
                bytes(s.used_bytes),
                percent(s.used_bytes, s.capacity)
            ),
            s.len.to_string(),
            s.producers_waiting.to_string(),
            s.consumers_waiting.to_string(),
            yes_no(s.closed).into(),
            s.creator_pid.to_string(),
            yes_no(s.creator_alive).into(),
            procs,
            bridged::cell(bridges),
        ],
        (None, problem) => {
            let mut r = vec![i.name.clone()];
            r.extend(std::iter::repeat_n("?".to_string(), 6));
            match &i.state {
                shmq::QueueState::Uninit {
                    creator: Some(pid),
                    creator_alive,
                    ..
                } => {
                    r.push(pid.to_string());
                    r.push(yes_no(*creator_alive).into());
                }
                _ => r.extend(["?".to_string(), "?".to_string()]),
            }
            r.push(procs);
            r.push(bridged::cell(bridges));
            notes.push(format!("{}: {}", i.name, problem.unwrap_or_default()));
            r
        }
    };
    if owner {
        r.push(owner_name(i));
    }
    r
}
