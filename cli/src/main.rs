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

use clap::{Args, CommandFactory, Parser, Subcommand};
use serde::Serialize;
use shmq::internal::Ring;
use shmq::internal::{self as segment, Segment};
use shmq::Location;
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
  shmq ls                               # your queues on this machine (--all: everyone's)
  shmq watch jobs                       # live messages/s and bytes/s
  shmq get jobs --follow                # print messages as they arrive
  shmq rm jobs                          # remove it (attached processes keep working)
  shmq completions bash                 # shell completions; `shmq man` prints the man page";

/// See, tap, clean up and benchmark shmq shared-memory queues.
#[derive(Parser, Debug)]
#[command(name = "shmq", version, after_help = AFTER_HELP)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// List your shmq queues on this machine (every user's with --all).
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
    /// Print a shell completion script (e.g. `shmq completions bash > /etc/bash_completion.d/shmq`).
    Completions(CompletionsArgs),
    /// Print the manual page in roff, or write one page per command into a directory.
    Man(ManArgs),
    /// Internal: the other process of `shmq bench`.
    #[command(name = "__bench-peer", hide = true)]
    BenchPeer(bench::PeerArgs),
}

#[derive(Args, Debug)]
#[command(after_help = "\
Columns: CAPACITY of the ring; USED bytes (records and framing); MSGS queued; PUT-WAIT / \
GET-WAIT producers / consumers asleep because the queue is full / empty; CLOSED; CREATOR \
pid and whether it is ALIVE; PROCS that have the queue mapped now; OWNER (with --all) the \
user who owns the object. Objects whose header cannot be read show `?` and a note on stderr \
explaining why. Only your own queues are listed unless --all.")]
struct LsArgs {
    /// Only queues whose name matches: a glob (`jobs-*`), or text the name contains.
    pattern: Option<String>,
    /// Every user's queues, with an OWNER column (default: only yours).
    #[arg(short, long)]
    all: bool,
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
    /// If a stale queue of that name exists (no process maps it), replace it.
    #[arg(long)]
    replace_stale: bool,
}

#[derive(Args, Debug)]
#[command(after_help = "\
Without MESSAGE arguments, stdin is read until EOF: one message per line (the newline is \
not part of the message), per NUL-terminated record with -0, or all of it as one message \
with --raw (--chunk splits raw input into messages of at most that size). Blocks while the \
queue is full, unless --timeout. A queue made by Queue<T> or PodQueue<T> holds encoded \
values: put refuses text into it unless --hex (encoded bytes in hex) or --raw says so.")]
struct PutArgs {
    /// Queue name.
    #[arg(value_parser = parse_name)]
    name: String,
    /// Messages to put (instead of reading stdin).
    messages: Vec<OsString>,
    /// Read stdin as raw bytes: all of it is one message (see --chunk). Also what lets
    /// text into a typed (postcard/pod) queue.
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
until the queue is closed or its name removed; a queue created again under the name is \
followed on. --timeout bounds each wait: with --count it is an error (exit 1) if fewer \
than N arrived; with --follow alone it just ends the command. Messages are taken \
(consumed), not peeked. Messages of a typed queue (Queue<T>, PodQueue<T>: encoded values) \
are printed as hex unless --raw.")]
struct GetArgs {
    /// Queue name.
    #[arg(value_parser = parse_name)]
    name: String,
    /// Take exactly this many messages, waiting for them.
    #[arg(short = 'n', long)]
    count: Option<u64>,
    /// Keep taking messages as they arrive, until the queue is closed or removed.
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
#[command(after_help = "\
bash: `shmq completions bash > ~/.local/share/bash-completion/completions/shmq`; \
zsh: `shmq completions zsh > ~/.zfunc/_shmq` (with ~/.zfunc in $fpath); \
fish: `shmq completions fish > ~/.config/fish/completions/shmq.fish`.")]
struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_enum)]
    shell: clap_complete::Shell,
}

#[derive(Args, Debug)]
#[command(after_help = "\
`shmq man > shmq.1` writes the main page; `shmq man --dir ~/.local/share/man/man1` writes \
shmq.1 and a page per command (shmq-ls.1, shmq-get.1, ...), for `man shmq-get`.")]
struct ManArgs {
    /// Write shmq.1 and shmq-COMMAND.1 for every command into this directory.
    #[arg(long, value_name = "DIR")]
    dir: Option<std::path::PathBuf>,
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
but nobody can open it by name any more. A queue is stale when no process (in any PID \
namespace) has it mapped, as the kernel reports through the queue's attach marker, and it \
is not persistent (e.g. left behind by a crash; queues made by `shmq create` or with \
keep_on_drop are persistent and never stale); one that never finished initialising is \
stale once nobody maps it and its creator had written its header or it is over 30 s old. \
`rm --stale` considers only your own queues unless --all. An object named \
shmq.NAME that is not a shmq queue (another program's) is only removed with --force.")]
struct RmArgs {
    /// Queue names to remove (with --stale: only consider these).
    #[arg(value_parser = parse_name, required_unless_present = "stale")]
    names: Vec<String>,
    /// Remove stale queues: not persistent and mapped by no process.
    #[arg(long)]
    stale: bool,
    /// With --stale: only print what would be removed.
    #[arg(short = 'n', long, requires = "stale")]
    dry_run: bool,
    /// With --stale and no names: every user's stale queues (default: only yours).
    #[arg(short, long, requires = "stale")]
    all: bool,
    /// Also remove objects named shmq.NAME that are not shmq queues.
    #[arg(short, long)]
    force: bool,
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
        Cmd::Completions(a) => {
            let mut out = Vec::new();
            clap_complete::generate(a.shell, &mut Cli::command(), "shmq", &mut out);
            io::stdout().write_all(&out).map_err(CliError::from)
        }
        Cmd::Man(ManArgs { dir: Some(dir) }) => clap_mangen::generate_to(Cli::command(), &dir)
            .map_err(|e| CliError::new(format!("writing man pages to {}: {e}", dir.display()))),
        Cmd::Man(ManArgs { dir: None }) => {
            let mut out = Vec::new();
            clap_mangen::Man::new(Cli::command())
                .render(&mut out)
                .map_err(CliError::from)
                .and_then(|()| io::stdout().write_all(&out).map_err(CliError::from))
        }
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
    Ok(Ring::new(Segment::open(Location::Name(name.to_string()))?)?)
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
    owner_uid: Option<u32>,
    size: u64,
    attached: Vec<u32>,
    stale: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    #[serde(flatten)]
    stats: Option<&'a Stats>,
}

/// Which queues a listing (`ls`, `rm --stale`) covers: the caller's own unless `--all`,
/// and those whose name matches the filter.
struct Filter {
    uid: Option<u32>,
    pattern: Option<glob::Pattern>,
}

impl Filter {
    fn new(all: bool, pattern: Option<&str>) -> CliResult<Filter> {
        let pattern = pattern
            .map(|p| {
                // Without wildcards, a pattern matches names that contain it.
                let p = if p.contains(['*', '?', '[']) {
                    p.to_string()
                } else {
                    format!("*{}*", glob::Pattern::escape(p))
                };
                glob::Pattern::new(&p)
            })
            .transpose()
            .map_err(|e| CliError::new(format!("bad name pattern: {e}")))?;
        Ok(Filter {
            uid: (!all).then(util::euid),
            pattern,
        })
    }

    fn wants(&self, name: &str) -> bool {
        self.pattern.as_ref().is_none_or(|p| p.matches(name))
            && self
                .uid
                .is_none_or(|uid| util::owner(name).is_none_or(|o| o == uid))
    }
}

fn cmd_ls(a: LsArgs) -> CliResult<()> {
    let filter = Filter::new(a.all, a.pattern.as_deref())?;
    let all = shmq::list()
        .map_err(|e| CliError::from(e).hint("shmq lists /dev/shm; is it mounted and readable?"))?;
    let total = all.len();
    let infos: Vec<_> = all.into_iter().filter(|i| filter.wants(&i.name)).collect();
    let out = io::stdout();
    let mut out = out.lock();
    if a.json {
        let rows: Vec<LsJson> = infos
            .iter()
            .map(|i| LsJson {
                name: &i.name,
                object: segment::shm_path(&i.name).display().to_string(),
                owner_uid: util::owner(&i.name),
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
    let mut header = vec![
        "NAME", "CAPACITY", "USED", "MSGS", "PUT-WAIT", "GET-WAIT", "CLOSED", "CREATOR", "ALIVE",
        "PROCS",
    ];
    let right = [
        false, true, true, true, true, true, false, true, false, true, false,
    ];
    if a.all {
        header.push("OWNER");
    }
    let mut table = util::table(&header, &right);
    let mut notes = Vec::new();
    let mut stale = 0;
    for i in &infos {
        let procs = i.attached.len().to_string();
        stale += usize::from(i.is_stale());
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
                notes.push(format!("{}: {}", i.name, problem.unwrap_or_default()));
                r
            }
        };
        if a.all {
            r.push(util::owner(&i.name).map_or("?".into(), util::user_name));
        }
        table.add_row(r);
    }
    for line in table.lines() {
        writeln!(out, "{}", line.trim_end())?;
    }
    for n in notes {
        eprintln!("note: {n}");
    }
    if stale > 0 {
        eprintln!(
            "note: {stale} stale (not persistent, no process attached); remove them with `shmq rm --stale`"
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
    let entry = shmq::inspect(&a.name)?;
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
    let stale = shmq::inspect(&a.name).is_ok_and(|i| i.is_stale());
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
        refuse_foreign(name, a.force)?;
        let attached = segment::mapped_by(name);
        shmq::remove(name)?;
        say!("removed {name}");
        note_attached(name, &attached);
        return Ok(());
    }
    let mut failed = 0;
    for name in &a.names {
        let attached = segment::mapped_by(name);
        match refuse_foreign(name, a.force).and_then(|()| Ok(shmq::remove(name)?)) {
            Ok(()) => {
                say!("removed {name}");
                note_attached(name, &attached);
            }
            Err(e) => {
                failed += 1;
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

/// An object named `shmq.NAME` that is not a shmq queue (its first word is not shmq's
/// magic) is someone else's: say what it is, and remove it only with `--force`.
fn refuse_foreign(name: &str, force: bool) -> CliResult<()> {
    if force {
        return Ok(());
    }
    let p = match segment::peek(name) {
        Ok(p) => p,
        // Not a regular file (a FIFO, socket, directory or symlink someone put there):
        // certainly not a shmq queue.
        Err(shmq::Error::Incompatible { reason, .. }) => {
            return Err(CliError::new(format!(
                "{} is not a shmq queue: {reason}",
                segment::shm_path(name).display()
            ))
            .hint(format!(
                "another program may use it; remove it anyway with `shmq rm --force {name}`"
            )))
        }
        // Missing, or unreadable (another user's): `remove` reports what it can.
        Err(_) => return Ok(()),
    };
    if !p.foreign {
        return Ok(());
    }
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let path = segment::shm_path(name);
    let meta = std::fs::metadata(&path)?;
    let mut head = [0u8; 16];
    let n = {
        use std::os::unix::fs::FileExt;
        std::fs::File::open(&path)?.read_at(&mut head, 0)?
    };
    Err(CliError::new(format!(
        "{} is not a shmq queue: a {} object owned by {}, mode {:o}, modified {} ago, starting with \"{}\" (a shmq queue starts with \"{}\")",
        path.display(),
        bytes(meta.len()),
        util::user_name(meta.uid()),
        meta.permissions().mode() & 0o7777,
        util::age(p.age.as_secs()),
        head[..n].escape_ascii(),
        segment::MAGIC.to_le_bytes().escape_ascii(),
    ))
    .hint(format!(
        "another program may use it; remove it anyway with `shmq rm --force {name}`"
    )))
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
        let filter = Filter::new(a.all, None)?;
        shmq::list()?
            .into_iter()
            .filter(|i| filter.wants(&i.name))
            .collect()
    } else {
        let mut v = Vec::new();
        for name in &a.names {
            if !segment::shm_path(name).exists() {
                return Err(shmq::Error::NotFound(name.clone()).into());
            }
            v.push(shmq::inspect(name)?);
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
                let why = if info.mapped {
                    "mapped by a process".to_string()
                } else if let Some(p) = info.problem() {
                    p
                } else {
                    "persistent".to_string()
                };
                eprintln!("kept {}: not stale ({why})", info.name);
            }
            continue;
        }
        let why = match info.problem() {
            Some(p) => p,
            None => format!("no process maps it; creator {creator}"),
        };
        if a.dry_run {
            say!("would remove {} ({why})", info.name);
            removed += 1;
            continue;
        }
        // Narrow the window between the scan and the unlink: someone may have attached.
        if segment::is_attached(&info.name) {
            eprintln!("kept {}: a process attached to it just now", info.name);
            continue;
        }
        // Only the object examined above: a queue created since under the same name stays.
        match info.remove_if_unchanged() {
            Ok(true) => {
                say!("removed {} ({why})", info.name);
                removed += 1;
            }
            Ok(false) => eprintln!("kept {}: the name now refers to another object", info.name),
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

/// The message type of a typed queue (`postcard`/`pod` codec), e.g. "postcard values of
/// type app::Job"; `None` for a queue of raw byte messages.
fn typed(q: &RawQueue) -> Option<String> {
    let s = q.stats();
    if s.codec == segment::codec_id::RAW {
        return None;
    }
    let mut what = format!("{} values", util::codec_name(s.codec));
    if !s.type_name.is_empty() {
        what.push_str(&format!(" of type {}", s.type_name));
    }
    Some(what)
}

fn cmd_put(a: PutArgs) -> CliResult<()> {
    let q = RawQueue::open(&a.name)?;
    if let (Some(what), false, false) = (typed(&q), a.raw, a.hex) {
        return Err(CliError::new(format!(
            "queue {} holds {what}: text put into it would not decode in its consumers",
            a.name
        ))
        .hint(format!(
            "put encoded messages with --hex (as `shmq get --hex {}` prints them), or bytes as they are with --raw",
            a.name
        )));
    }
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

/// What identifies the object behind a queue name: a queue removed and created again under
/// the same name is another object.
fn object_id(name: &str) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(segment::shm_path(name))
        .ok()
        .map(|m| (m.dev(), m.ino()))
}

/// How often a waiting `get` looks whether its queue's name still leads to the same object.
const NAME_CHECK: Duration = Duration::from_millis(250);

/// A queue followed by name: `get` notices when the name is removed or taken by a new queue.
struct Followed {
    name: String,
    q: RawQueue,
    id: Option<(u64, u64)>,
    /// Print messages as hex: asked for, or the queue holds encoded (typed) values.
    hex: bool,
    /// What the command line asked for: --hex, --raw.
    want_hex: bool,
    raw: bool,
}

enum Wait {
    Got,
    Closed,
    Timeout,
    Removed,
}

impl Followed {
    fn open(name: &str, hex: bool, raw: bool) -> shmq::Result<Followed> {
        let q = RawQueue::open(name)?;
        let id = object_id(name);
        let typed = typed(&q);
        if let (Some(what), false, false) = (&typed, hex, raw) {
            eprintln!("shmq: queue {name} holds {what}; printing them as hex (--raw for the bytes as they are)");
        }
        Ok(Followed {
            name: name.to_string(),
            q,
            id,
            hex: hex || (typed.is_some() && !raw),
            want_hex: hex,
            raw,
        })
    }

    /// Wait for a message (at most `timeout`), looking every [`NAME_CHECK`] whether the
    /// name was removed (then [`Wait::Removed`]) or now leads to a new queue (then follow
    /// that one).
    fn wait(&mut self, buf: &mut Vec<u8>, timeout: Option<Duration>) -> CliResult<Wait> {
        let deadline = timeout.map(|t| Instant::now() + t);
        loop {
            let slice = deadline.map_or(NAME_CHECK, |d| {
                d.saturating_duration_since(Instant::now()).min(NAME_CHECK)
            });
            match self.q.get_into_timeout(buf, slice) {
                Ok(_) => return Ok(Wait::Got),
                Err(Error::Closed) => return Ok(Wait::Closed),
                Err(Error::Timeout) => {}
                Err(e) => return Err(e.into()),
            }
            if deadline.is_some_and(|d| Instant::now() >= d) {
                return Ok(Wait::Timeout);
            }
            match object_id(&self.name) {
                id if id == self.id => {}
                None => return Ok(Wait::Removed),
                Some(_) => {
                    eprintln!(
                        "shmq: queue {} was removed and created again; following the new one",
                        self.name
                    );
                    match Followed::open(&self.name, self.want_hex, self.raw) {
                        Ok(f) => *self = f,
                        Err(Error::NotFound(_)) => return Ok(Wait::Removed),
                        Err(e) => return Err(e.into()),
                    }
                }
            }
        }
    }
}

fn cmd_get(a: GetArgs) -> CliResult<()> {
    let mut f = Followed::open(&a.name, a.hex, a.raw)?;
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
        let r = match f.q.try_get_into(&mut buf) {
            Ok(_) => Wait::Got,
            Err(Error::Empty) if wait => {
                out.flush().map_err(pipe_err)?;
                f.wait(&mut buf, a.timeout)?
            }
            Err(Error::Empty) => break,
            Err(Error::Closed) => Wait::Closed,
            Err(e) => {
                out.flush().map_err(pipe_err)?;
                return Err(e.into());
            }
        };
        match r {
            Wait::Got => {
                got += 1;
                if f.hex {
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
            Wait::Closed => {
                if let Some(c) = a.count {
                    out.flush().map_err(pipe_err)?;
                    return Err(CliError::new(format!(
                        "queue {} was closed and drained after {got} of {c} messages",
                        a.name
                    )));
                }
                break;
            }
            Wait::Timeout => {
                if let Some(c) = a.count {
                    out.flush().map_err(pipe_err)?;
                    return Err(CliError::new(format!(
                        "timed out after {} waiting for a message; got {got} of {c}",
                        humantime::format_duration(a.timeout.unwrap_or_default())
                    ))
                    .hint(format!(
                        "is a producer running? check with `shmq watch {}`",
                        a.name
                    )));
                }
                break;
            }
            Wait::Removed => {
                out.flush().map_err(pipe_err)?;
                let msg = format!(
                    "queue {} was removed; processes that have it open may still use it",
                    a.name
                );
                if let Some(c) = a.count {
                    return Err(CliError::new(format!("{msg}; got {got} of {c} messages")));
                }
                eprintln!("shmq: {msg}");
                break;
            }
        }
    }
    out.flush().map_err(pipe_err)?;
    Ok(())
}
