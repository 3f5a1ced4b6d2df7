//! `shmq` — see, tap, clean up and benchmark shmq queues from the shell.
//!
//! Run `shmq --help` (or `shmq <command> --help`) for the commands; `docs/cli.md` has a
//! walkthrough. Exit status: 0 success, 1 error (message on stderr), 2 usage error.

use std::ffi::OsString;
use std::io::{self, BufRead, BufWriter, IsTerminal, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::process::ExitCode;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use clap::{Args, Parser, Subcommand};
use serde::Serialize;
use shmq::ring::Ring;
use shmq::segment::{self, Location, Segment};
use shmq::{Error, Options, RawQueue, Stats};

#[macro_use]
mod util;
mod bench;

use util::{bytes, count, parse_duration, parse_mode, parse_name, parse_size, CliError, CliResult};

const AFTER_HELP: &str = "\
Queues live in /dev/shm as shmq.<NAME>. A queue made by a program disappears when its \
creator drops it; one made by `shmq create` stays until `shmq rm`.

Exit status: 0 success, 1 error (what went wrong and what to do is printed on stderr), \
2 usage error.

Examples:
  shmq create jobs --capacity 4M        # a queue that outlives this command
  printf 'a\\nb\\n' | shmq put jobs       # one message per line
  shmq ls                               # every queue on the machine
  shmq watch jobs                       # live messages/s and bytes/s
  shmq get jobs --follow                # print messages as they arrive
  shmq rm jobs                          # remove it (attached processes keep working)";

/// See, tap, clean up and benchmark shmq shared-memory queues.
#[derive(Parser, Debug)]
#[command(name = "shmq", version, after_help = AFTER_HELP)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// List every shmq queue on this machine.
    #[command(visible_alias = "list")]
    Ls(LsArgs),
    /// Show one queue in detail: state, owner, attached processes and lifetime counters.
    Stat(StatArgs),
    /// Show live messages/s and bytes/s of a queue, refreshed in place.
    Watch(WatchArgs),
    /// Create a queue of raw byte messages that stays after this command exits.
    Create(CreateArgs),
    /// Put messages into a queue: the arguments, or lines / raw bytes from stdin.
    Put(PutArgs),
    /// Take messages out of a queue and write them to stdout.
    Get(GetArgs),
    /// Close a queue: puts fail from now on, gets drain what is left, waiters wake up.
    Close(CloseArgs),
    /// Remove queues by name, or every stale one (--stale).
    #[command(visible_alias = "remove")]
    Rm(RmArgs),
    /// Measure throughput and latency between two processes on this machine.
    Bench(bench::BenchArgs),
    /// Internal: the other process of `shmq bench`.
    #[command(name = "__bench-peer", hide = true)]
    BenchPeer(bench::PeerArgs),
}

#[derive(Args, Debug)]
#[command(after_help = "\
Columns: CAPACITY of the ring; USED bytes (records and framing); MSGS queued; PUT-WAIT / \
GET-WAIT producers / consumers asleep because the queue is full / empty; CLOSED; CREATOR \
pid and whether it is ALIVE; PROCS that have the queue mapped now. Objects whose header \
cannot be read show `?` and a note on stderr explaining why.")]
struct LsArgs {
    /// Print a JSON array instead of a table (sizes in bytes, all counters).
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
struct StatArgs {
    /// Queue name (or its path, /dev/shm/shmq.NAME).
    #[arg(value_parser = parse_name)]
    name: String,
    /// Print a JSON object instead of text.
    #[arg(long)]
    json: bool,
}

#[derive(Args, Debug)]
struct WatchArgs {
    /// Queue name.
    #[arg(value_parser = parse_name)]
    name: String,
    /// Time between samples (e.g. 500ms, 2s).
    #[arg(short, long, default_value = "1s", value_parser = parse_duration)]
    interval: Duration,
    /// Stop after this many samples (default: until interrupted or the queue is removed).
    #[arg(short = 'n', long)]
    count: Option<u64>,
}

#[derive(Args, Debug)]
#[command(after_help = "\
The queue keeps its name after this command exits (Options::keep_on_drop) and is recorded as \
persistent: its recorded creator is this short-lived command, so `shmq ls` shows the creator \
as dead, but `shmq rm --stale` leaves it alone. Remove it with `shmq rm NAME`.")]
struct CreateArgs {
    /// Queue name: ASCII letters, digits, '_', '-' and '.', not starting with '.'.
    #[arg(value_parser = parse_name)]
    name: String,
    /// Ring capacity in bytes (suffixes K, M, G); the largest message is 8 bytes less.
    #[arg(short, long, default_value = "1M", value_parser = parse_size)]
    capacity: u64,
    /// Permission bits in octal (0600: only your user may attach; 0660: also your group).
    #[arg(short, long, default_value = "600", value_parser = parse_mode)]
    mode: u32,
    /// If a queue of that name exists and its creator is dead, replace it.
    #[arg(long)]
    replace_stale: bool,
}

#[derive(Args, Debug)]
#[command(after_help = "\
Without MESSAGE arguments, stdin is read until EOF: one message per line (the newline is \
not part of the message), per NUL-terminated record with -0, or all of it as one message \
with --raw (--chunk splits raw input into messages of at most that size). Blocks while the \
queue is full, unless --timeout.")]
struct PutArgs {
    /// Queue name.
    #[arg(value_parser = parse_name)]
    name: String,
    /// Messages to put (instead of reading stdin).
    messages: Vec<OsString>,
    /// Read stdin as raw bytes: all of it is one message (see --chunk).
    #[arg(long, conflicts_with = "null")]
    raw: bool,
    /// With --raw: split stdin into messages of at most this many bytes (e.g. 64K).
    #[arg(long, requires = "raw", value_parser = parse_size)]
    chunk: Option<u64>,
    /// Records on stdin end with NUL instead of newline.
    #[arg(short = '0', long)]
    null: bool,
    /// Each line (or argument) is a message in hex, as `shmq get --hex` prints it.
    #[arg(long, conflicts_with_all = ["raw", "null"])]
    hex: bool,
    /// Put at most this many messages, then stop.
    #[arg(short = 'n', long)]
    count: Option<u64>,
    /// Fail (exit 1) if the queue stays full this long (e.g. 2s).
    #[arg(short, long, value_parser = parse_duration)]
    timeout: Option<Duration>,
    /// Close the queue after the last message, so consumers drain it and stop.
    #[arg(long)]
    close: bool,
}

#[derive(Args, Debug)]
#[command(after_help = "\
Without --count or --follow, prints the messages queued now and exits (nothing if empty). \
With --count N, waits until N messages were taken. With --follow, keeps taking messages \
until the queue is closed. --timeout bounds each wait: with --count it is an error (exit 1) \
if fewer than N arrived; with --follow alone it just ends the command. Messages are taken \
(consumed), not peeked.")]
struct GetArgs {
    /// Queue name.
    #[arg(value_parser = parse_name)]
    name: String,
    /// Take exactly this many messages, waiting for them.
    #[arg(short = 'n', long)]
    count: Option<u64>,
    /// Keep taking messages as they arrive, until the queue is closed.
    #[arg(short, long)]
    follow: bool,
    /// Wait at most this long for each message (e.g. 500ms, 5s).
    #[arg(short, long, value_parser = parse_duration)]
    timeout: Option<Duration>,
    /// Write messages as they are, with nothing after each.
    #[arg(long, conflicts_with = "null")]
    raw: bool,
    /// End each message with NUL instead of newline.
    #[arg(short = '0', long)]
    null: bool,
    /// Print each message as one line of hex (for binary or typed messages).
    #[arg(long, conflicts_with_all = ["raw", "null"])]
    hex: bool,
}

#[derive(Args, Debug)]
struct CloseArgs {
    /// Queue names.
    #[arg(required = true, value_parser = parse_name)]
    names: Vec<String>,
}

#[derive(Args, Debug)]
#[command(after_help = "\
Removing a name does not disturb processes that have the queue open: they keep working, \
but nobody can open it by name any more. A queue is stale when no process has it mapped \
and the process that created it is dead (e.g. left behind by a crash; queues made by \
`shmq create` or with keep_on_drop are persistent and never stale), or when it never finished initialising and its creator is dead (with no \
creator recorded: once it is a minute old).")]
struct RmArgs {
    /// Queue names to remove (with --stale: only consider these).
    #[arg(value_parser = parse_name, required_unless_present = "stale")]
    names: Vec<String>,
    /// Remove stale queues: creator dead and mapped by no process.
    #[arg(long)]
    stale: bool,
    /// With --stale: only print what would be removed.
    #[arg(short = 'n', long, requires = "stale")]
    dry_run: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let r = match cli.cmd {
        Cmd::Ls(a) => cmd_ls(a),
        Cmd::Stat(a) => cmd_stat(a),
        Cmd::Watch(a) => cmd_watch(a),
        Cmd::Create(a) => cmd_create(a),
        Cmd::Put(a) => cmd_put(a),
        Cmd::Get(a) => cmd_get(a),
        Cmd::Close(a) => cmd_close(a),
        Cmd::Rm(a) => cmd_rm(a),
        Cmd::Bench(a) => bench::run(a),
        Cmd::BenchPeer(a) => bench::peer(a),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        // The reader of our stdout went away (`shmq ls | head -1`): nothing to report.
        Err(e) if e.broken_pipe => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("shmq: error: {}", e.msg);
            if let Some(h) = e.hint {
                eprintln!("  hint: {h}");
            }
            ExitCode::FAILURE
        }
    }
}

// ---------------------------------------------------------------------------------------
// Reading a queue's header

/// Everything the CLI shows about one queue.
struct Snapshot {
    name: String,
    size: u64,
    item_size: u32,
    max_message: usize,
    stats: Stats,
    attached: Vec<u32>,
}

fn open_ring(name: &str) -> CliResult<Ring> {
    Ok(Ring::new(Segment::open(Location::Name(name.to_string()))?))
}

fn snapshot(name: &str) -> CliResult<Snapshot> {
    let ring = open_ring(name)?;
    let item_size = ring.header().id.item_size.load(Ordering::Relaxed);
    let max_message = ring.max_message();
    let stats = ring.stats();
    drop(ring);
    Ok(Snapshot {
        name: name.to_string(),
        size: std::fs::metadata(segment::shm_path(name))
            .map(|m| m.len())
            .unwrap_or(0),
        item_size,
        max_message,
        stats,
        attached: segment::mapped_by(name),
    })
}

fn yes_no(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}

fn percent(part: u64, whole: u64) -> String {
    if whole == 0 {
        return "0%".into();
    }
    let p = part as f64 * 100.0 / whole as f64;
    if p > 0.0 && p < 1.0 {
        "<1%".into()
    } else {
        format!("{p:.0}%")
    }
}

// ---------------------------------------------------------------------------------------
// ls

#[derive(Serialize)]
struct LsJson<'a> {
    name: &'a str,
    object: String,
    size: u64,
    attached: Vec<u32>,
    stale: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    #[serde(flatten)]
    stats: Option<&'a Stats>,
}

fn cmd_ls(a: LsArgs) -> CliResult<()> {
    let infos = shmq::list()
        .map_err(|e| CliError::from(e).hint("shmq lists /dev/shm; is it mounted and readable?"))?;
    let out = io::stdout();
    let mut out = out.lock();
    if a.json {
        let rows: Vec<LsJson> = infos
            .iter()
            .map(|i| LsJson {
                name: &i.name,
                object: segment::shm_path(&i.name).display().to_string(),
                size: i.size,
                attached: i.attached.clone(),
                stale: i.is_stale(),
                error: i.problem(),
                stats: i.stats(),
            })
            .collect();
        serde_json::to_writer_pretty(&mut out, &rows).map_err(io::Error::from)?;
        writeln!(out)?;
        return Ok(());
    }
    if infos.is_empty() {
        eprintln!(
            "no shmq queues on this machine (create one from a program, or with `shmq create NAME`)"
        );
        return Ok(());
    }
    let header = [
        "NAME", "CAPACITY", "USED", "MSGS", "PUT-WAIT", "GET-WAIT", "CLOSED", "CREATOR", "ALIVE",
        "PROCS",
    ];
    let mut rows: Vec<Vec<String>> = Vec::new();
    let mut notes = Vec::new();
    let mut stale = 0;
    for i in &infos {
        let procs = i.attached.len().to_string();
        stale += usize::from(i.is_stale());
        match (i.stats(), i.problem()) {
            (Some(s), _) => rows.push(vec![
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
            ]),
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
                rows.push(r);
                notes.push(format!("{}: {}", i.name, problem.unwrap_or_default()));
            }
        }
    }
    // Column widths; numbers are right-aligned.
    let mut w: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in &rows {
        for (c, cell) in r.iter().enumerate() {
            w[c] = w[c].max(cell.chars().count());
        }
    }
    let right = [
        false, true, true, true, true, true, false, true, false, true,
    ];
    let line = |cells: &[String]| -> String {
        let mut s = String::new();
        for (c, cell) in cells.iter().enumerate() {
            let pad = w[c] - cell.chars().count();
            if c > 0 {
                s.push_str("  ");
            }
            if right[c] {
                s.push_str(&" ".repeat(pad));
                s.push_str(cell);
            } else {
                s.push_str(cell);
                if c + 1 < cells.len() {
                    s.push_str(&" ".repeat(pad));
                }
            }
        }
        s
    };
    let h: Vec<String> = header.iter().map(|s| s.to_string()).collect();
    writeln!(out, "{}", line(&h))?;
    for r in &rows {
        writeln!(out, "{}", line(r))?;
    }
    for n in notes {
        eprintln!("note: {n}");
    }
    if stale > 0 {
        eprintln!(
            "note: {stale} stale (creator dead, no process attached); remove them with `shmq rm --stale`"
        );
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// stat

#[derive(Serialize)]
struct StatJson<'a> {
    name: &'a str,
    object: String,
    size: u64,
    codec_name: &'static str,
    item_size: u32,
    max_message: usize,
    attached: &'a [u32],
    stale: bool,
    #[serde(flatten)]
    stats: &'a Stats,
}

fn cmd_stat(a: StatArgs) -> CliResult<()> {
    if !segment::shm_path(&a.name).exists() {
        return Err(shmq::Error::NotFound(a.name.clone()).into());
    }
    let entry = shmq::queue::inspect(&a.name)?;
    if let (None, Some(problem)) = (entry.stats(), entry.problem()) {
        let e = CliError::new(format!("cannot read queue {:?}: {problem}", a.name));
        return Err(if matches!(entry.state, shmq::QueueState::Uninit { .. }) {
            e.hint(format!(
                "if its creator crashed, remove it with `shmq rm {}` or `shmq rm --stale`",
                a.name
            ))
        } else {
            e
        });
    }
    let snap = snapshot(&a.name)?;
    let s = &snap.stats;
    let stale = !s.creator_alive && !s.persistent && snap.attached.is_empty();
    let out = io::stdout();
    let mut out = out.lock();
    if a.json {
        let j = StatJson {
            name: &snap.name,
            object: segment::shm_path(&snap.name).display().to_string(),
            size: snap.size,
            codec_name: util::codec_name(s.codec),
            item_size: snap.item_size,
            max_message: snap.max_message,
            attached: &snap.attached,
            stale,
            stats: s,
        };
        serde_json::to_writer_pretty(&mut out, &j).map_err(io::Error::from)?;
        writeln!(out)?;
        return Ok(());
    }
    let mut codec = util::codec_name(s.codec).to_string();
    if !s.type_name.is_empty() {
        codec.push_str(&format!(", message type {}", s.type_name));
    }
    if s.codec == segment::codec_id::POD {
        codec.push_str(&format!(", {} bytes per item", snap.item_size));
    }
    let lock = |tid: u32| {
        if tid == 0 {
            "free".to_string()
        } else {
            format!("held by tid {tid}")
        }
    };
    let pids = |v: &[u32]| {
        if v.is_empty() {
            "none".to_string()
        } else {
            let list: Vec<String> = v.iter().map(|p| p.to_string()).collect();
            format!("{} (pids {})", v.len(), list.join(", "))
        }
    };
    let ago = util::now_unix().saturating_sub(s.created_unix);
    let rows: Vec<(&str, String)> = vec![
        ("name", snap.name.clone()),
        (
            "object",
            format!(
                "{} ({})",
                segment::shm_path(&snap.name).display(),
                bytes(snap.size)
            ),
        ),
        ("codec", codec),
        (
            "capacity",
            format!(
                "{} ({} bytes); largest message {} bytes",
                bytes(s.capacity),
                s.capacity,
                snap.max_message
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
            format!("{} ({} ago)", util::utc(s.created_unix), util::age(ago)),
        ),
        ("attached", pids(&snap.attached)),
        ("stale", yes_no(stale).into()),
        (
            "waiting",
            format!(
                "{} producers (queue full), {} consumers (queue empty)",
                s.producers_waiting, s.consumers_waiting
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
                util::thousands(s.puts),
                bytes(s.put_bytes)
            ),
        ),
        (
            "gets",
            format!(
                "{} messages, {}",
                util::thousands(s.gets),
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
    ];
    for (k, v) in rows {
        writeln!(out, "{k:<10} {v}")?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// watch

fn cmd_watch(a: WatchArgs) -> CliResult<()> {
    if a.interval.is_zero() {
        return Err(CliError::new("--interval must be greater than 0"));
    }
    let ring = open_ring(&a.name)?;
    let tty = io::stdout().is_terminal();
    let out = io::stdout();
    let mut out = out.lock();
    let cols = |c: [&str; 9]| {
        format!(
            "{:<8}  {:>8}  {:>8}  {:>11}  {:>11}  {:>7}  {:>13}  {:>7}  {}",
            c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7], c[8]
        )
    };
    writeln!(
        out,
        "{}",
        cols(["TIME", "PUT/s", "GET/s", "IN/s", "OUT/s", "QUEUED", "USED", "WAIT P/C", "STATE"])
    )?;
    out.flush()?;
    let mut prev = ring.stats();
    let mut t_prev = Instant::now();
    let mut n = 0u64;
    loop {
        if a.count.is_some_and(|c| n >= c) {
            break;
        }
        std::thread::sleep(a.interval);
        let s = ring.stats();
        let now = Instant::now();
        let dt = now.duration_since(t_prev).as_secs_f64().max(1e-9);
        let rate = |new: u64, old: u64| new.saturating_sub(old) as f64 / dt;
        let removed = !segment::shm_path(&a.name).exists();
        let state = if removed {
            "removed"
        } else if s.closed {
            "closed"
        } else {
            "open"
        };
        let line = cols([
            &util::clock(),
            &count(rate(s.puts, prev.puts)),
            &count(rate(s.gets, prev.gets)),
            &util::byte_rate(rate(s.put_bytes, prev.put_bytes)),
            &util::byte_rate(rate(s.get_bytes, prev.get_bytes)),
            &s.len.to_string(),
            &format!(
                "{} {}",
                bytes(s.used_bytes),
                percent(s.used_bytes, s.capacity)
            ),
            &format!("{}/{}", s.producers_waiting, s.consumers_waiting),
            state,
        ]);
        if tty {
            write!(out, "\r{line}\x1b[K")?;
        } else {
            writeln!(out, "{line}")?;
        }
        out.flush()?;
        prev = s;
        t_prev = now;
        n += 1;
        if removed {
            if tty {
                writeln!(out)?;
            }
            eprintln!(
                "shmq: queue {:?} was removed; processes that have it open may still use it",
                a.name
            );
            return Ok(());
        }
    }
    if tty {
        writeln!(out)?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// create / close / rm

fn cmd_create(a: CreateArgs) -> CliResult<()> {
    let opts = Options::new()
        .capacity(a.capacity as usize)
        .mode(a.mode)
        .keep_on_drop(true)
        .replace_stale(a.replace_stale);
    let q = RawQueue::create_with(a.name.as_str(), &opts).map_err(|e| {
        let hint = match &e {
            Error::AlreadyExists { stale: true, .. } => Some(format!(
                "`shmq rm {0}` or `shmq create {0} --replace-stale`",
                a.name
            )),
            Error::AlreadyExists { .. } => Some(format!("see it with `shmq stat {}`", a.name)),
            Error::InvalidArgument(_) => Some("use a capacity between 64 B and 1 TiB".into()),
            _ => None,
        };
        let mut c = CliError::from(e);
        if hint.is_some() {
            c.hint = hint;
        }
        c
    })?;
    outln!(
        "created queue {} ({}, largest message {} bytes) at {}; remove it with `shmq rm {}`",
        q.name(),
        bytes(q.capacity() as u64),
        q.max_message(),
        segment::shm_path(&a.name).display(),
        a.name
    );
    Ok(())
}

fn cmd_close(a: CloseArgs) -> CliResult<()> {
    for name in &a.names {
        RawQueue::open(name)?.close();
    }
    Ok(())
}

fn cmd_rm(a: RmArgs) -> CliResult<()> {
    if a.stale {
        return rm_stale(&a);
    }
    if let [name] = a.names.as_slice() {
        let attached = segment::mapped_by(name);
        shmq::remove(name)?;
        say!("removed {name}");
        note_attached(name, &attached);
        return Ok(());
    }
    let mut failed = 0;
    for name in &a.names {
        let attached = segment::mapped_by(name);
        match shmq::remove(name) {
            Ok(()) => {
                say!("removed {name}");
                note_attached(name, &attached);
            }
            Err(e) => {
                failed += 1;
                let e = CliError::from(e);
                eprintln!("shmq: error: {}", e.msg);
                if let Some(h) = e.hint {
                    eprintln!("  hint: {h}");
                }
            }
        }
    }
    if failed > 0 {
        return Err(CliError::new(format!(
            "{failed} of {} queues could not be removed",
            a.names.len()
        )));
    }
    Ok(())
}

fn note_attached(name: &str, attached: &[u32]) {
    if !attached.is_empty() {
        let list: Vec<String> = attached.iter().map(|p| p.to_string()).collect();
        eprintln!(
            "note: {name} is still mapped by pid {}; they keep using it, but it can no longer be opened by name",
            list.join(", ")
        );
    }
}

fn rm_stale(a: &RmArgs) -> CliResult<()> {
    let infos = if a.names.is_empty() {
        shmq::list()?
    } else {
        let mut v = Vec::new();
        for name in &a.names {
            if !segment::shm_path(name).exists() {
                return Err(shmq::Error::NotFound(name.clone()).into());
            }
            v.push(shmq::queue::inspect(name)?);
        }
        v
    };
    let mut removed = 0;
    for info in infos {
        let creator = info
            .creator()
            .map_or("unknown".to_string(), |p| format!("pid {p}"));
        if !info.is_stale() {
            if !a.names.is_empty() {
                let why = if !info.attached.is_empty() {
                    format!("mapped by {} process(es)", info.attached.len())
                } else if let Some(p) = info.problem() {
                    p
                } else {
                    format!("its creator {creator} is alive")
                };
                eprintln!("kept {}: not stale ({why})", info.name);
            }
            continue;
        }
        let why = match info.problem() {
            Some(p) => p,
            None => format!("creator {creator} is dead"),
        };
        if a.dry_run {
            say!("would remove {} ({why})", info.name);
            removed += 1;
            continue;
        }
        // Narrow the window between the scan and the unlink: someone may have attached.
        if !segment::mapped_by(&info.name).is_empty() {
            eprintln!("kept {}: a process attached to it just now", info.name);
            continue;
        }
        match shmq::remove(&info.name) {
            Ok(()) => {
                say!("removed {} ({why})", info.name);
                removed += 1;
            }
            Err(Error::NotFound(_)) => {}
            Err(e) => return Err(e.into()),
        }
    }
    if removed == 0 {
        eprintln!("no stale queues");
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// put / get

fn cmd_put(a: PutArgs) -> CliResult<()> {
    let q = RawQueue::open(&a.name)?;
    let limit = a.count.unwrap_or(u64::MAX);
    let mut n = 0u64;
    let put = |msg: &[u8], n: u64| -> CliResult<()> {
        let r = match a.timeout {
            Some(t) => q.put_timeout(msg, t),
            None => q.put(msg),
        };
        r.map_err(|e| match e {
            Error::Timeout => CliError::new(format!(
                "queue {} stayed full for {:?}; {n} messages were put",
                a.name,
                a.timeout.unwrap_or_default()
            ))
            .hint(format!(
                "is a consumer running? check with `shmq stat {}`",
                a.name
            )),
            Error::Closed => {
                CliError::new(format!("queue {} is closed; {n} messages were put", a.name))
            }
            e @ Error::TooLarge { .. } => {
                let h = if a.raw {
                    "split the input with --chunk SIZE"
                } else {
                    "use a queue with a larger --capacity"
                };
                CliError::from(e).hint(h)
            }
            e => e.into(),
        })
    };
    let hex = |text: &[u8], n: u64| -> CliResult<Vec<u8>> {
        util::from_hex(text).map_err(|e| {
            CliError::new(format!("message {} is not hex: {e}", n + 1))
                .hint("--hex expects what `shmq get --hex` prints, e.g. 0a1bff")
        })
    };
    if !a.messages.is_empty() {
        for m in &a.messages {
            if n >= limit {
                break;
            }
            if a.hex {
                put(&hex(m.as_bytes(), n)?, n)?;
            } else {
                put(m.as_bytes(), n)?;
            }
            n += 1;
        }
    } else if a.raw {
        let mut stdin = io::stdin().lock();
        match a.chunk {
            None => {
                let mut all = Vec::new();
                stdin.read_to_end(&mut all)?;
                if limit > 0 {
                    put(&all, n)?;
                }
            }
            Some(chunk) => {
                if chunk == 0 {
                    return Err(CliError::new("--chunk must be at least 1 byte"));
                }
                let mut buf = vec![0u8; chunk as usize];
                while n < limit {
                    let len = read_full(&mut stdin, &mut buf)?;
                    if len == 0 {
                        break;
                    }
                    put(&buf[..len], n)?;
                    n += 1;
                }
            }
        }
    } else {
        let delim = if a.null { 0 } else { b'\n' };
        let mut stdin = io::stdin().lock();
        let mut line = Vec::new();
        while n < limit {
            line.clear();
            if stdin.read_until(delim, &mut line)? == 0 {
                break;
            }
            if line.last() == Some(&delim) {
                line.pop();
            }
            if a.hex {
                put(&hex(&line, n)?, n)?;
            } else {
                put(&line, n)?;
            }
            n += 1;
        }
    }
    if a.close {
        q.close();
    }
    Ok(())
}

/// Read until `buf` is full or EOF; returns the number of bytes read.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut len = 0;
    while len < buf.len() {
        match r.read(&mut buf[len..]) {
            Ok(0) => break,
            Ok(k) => len += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(len)
}

fn cmd_get(a: GetArgs) -> CliResult<()> {
    let q = RawQueue::open(&a.name)?;
    let wait = a.follow || a.count.is_some();
    let delim: Option<u8> = if a.raw {
        None
    } else if a.null {
        Some(0)
    } else {
        Some(b'\n')
    };
    let out = io::stdout();
    let mut out = BufWriter::with_capacity(64 << 10, out.lock());
    let pipe_err = |e: io::Error| {
        if e.kind() == io::ErrorKind::BrokenPipe {
            CliError::new(
                "stdout was closed; messages taken from the queue since the last write were lost",
            )
            .hint("use --count N to take only what the reader wants")
        } else {
            e.into()
        }
    };
    let mut buf = Vec::new();
    let mut hexbuf = Vec::new();
    let mut got = 0u64;
    loop {
        if a.count.is_some_and(|c| got >= c) {
            break;
        }
        let r = match q.try_get_into(&mut buf) {
            Err(Error::Empty) if wait => {
                out.flush().map_err(pipe_err)?;
                match a.timeout {
                    Some(t) => q.get_into_timeout(&mut buf, t),
                    None => q.get_into(&mut buf),
                }
            }
            r => r,
        };
        match r {
            Ok(_) => {
                got += 1;
                if a.hex {
                    util::to_hex(&buf, &mut hexbuf);
                    out.write_all(&hexbuf).map_err(pipe_err)?;
                } else {
                    out.write_all(&buf).map_err(pipe_err)?;
                }
                if let Some(d) = delim {
                    out.write_all(&[d]).map_err(pipe_err)?;
                }
                if a.follow {
                    out.flush().map_err(pipe_err)?;
                }
            }
            Err(Error::Empty) => break,
            Err(Error::Closed) => {
                if let Some(c) = a.count {
                    out.flush().map_err(pipe_err)?;
                    return Err(CliError::new(format!(
                        "queue {} was closed and drained after {got} of {c} messages",
                        a.name
                    )));
                }
                break;
            }
            Err(Error::Timeout) => {
                if let Some(c) = a.count {
                    out.flush().map_err(pipe_err)?;
                    return Err(CliError::new(format!(
                        "timed out after {:?} waiting for a message; got {got} of {c}",
                        a.timeout.unwrap_or_default()
                    ))
                    .hint(format!(
                        "is a producer running? check with `shmq watch {}`",
                        a.name
                    )));
                }
                break;
            }
            Err(e) => {
                out.flush().map_err(pipe_err)?;
                return Err(e.into());
            }
        }
    }
    out.flush().map_err(pipe_err)?;
    Ok(())
}
