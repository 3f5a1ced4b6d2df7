//! `shmq get NAME`: take messages out of a queue and write them to stdout, following the
//! name across removal and re-creation with `--follow`.

use std::io::{self, BufWriter, Write};
use std::time::{Duration, Instant};

use clap::Args;
use shmq::{Error, RawQueue};

use crate::error::{CliError, CliResult};
use crate::hex::to_hex;
use crate::kind::Kind;
use crate::object;
use crate::parse::{parse_duration, parse_name};

#[derive(Args, Debug)]
#[command(after_help = "\
Without --count or --follow, prints the messages queued now and exits (nothing if empty). \
With --count N, waits until N messages were taken. With --follow, keeps taking messages \
until the queue is closed or its name removed; a queue created again under the name is \
followed on. --timeout bounds each wait: with --count it is an error (exit 1) if fewer \
than N arrived; with --follow alone it just ends the command. Messages are taken \
(consumed), not peeked. Messages of a typed queue (Queue<T>, PodQueue<T>: encoded values) \
are printed as hex unless --raw.")]
pub struct GetArgs {
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
        let id = object::id(name);
        let typed = Kind::of(&q.stats()).encoded();
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
            match object::id(&self.name) {
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

pub fn run(a: GetArgs) -> CliResult<()> {
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
                    to_hex(&buf, &mut hexbuf);
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
