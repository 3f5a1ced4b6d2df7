//! `shmq put NAME [MESSAGE...]`: put the arguments, or lines / records / raw bytes from
//! stdin, into a queue.

use std::ffi::OsString;
use std::io::{self, BufRead, Read};
use std::os::unix::ffi::OsStrExt;
use std::time::Duration;

use clap::Args;
use shmq::{Error, RawQueue};

use crate::error::{CliError, CliResult};
use crate::hex::from_hex;
use crate::kind::Kind;
use crate::parse::{parse_duration, parse_name, parse_size};

#[derive(Args, Debug)]
#[command(after_help = "\
Without MESSAGE arguments, stdin is read until EOF: one message per line (the newline is \
not part of the message), per NUL-terminated record with -0, or all of it as one message \
with --raw (--chunk splits raw input into messages of at most that size). Blocks while the \
queue is full, unless --timeout. A queue made by Queue<T> or PodQueue<T> holds encoded \
values: put refuses text into it unless --hex (encoded bytes in hex) or --raw says so.")]
pub struct PutArgs {
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

pub fn run(a: PutArgs) -> CliResult<()> {
    let q = RawQueue::open(&a.name)?;
    if let (Some(what), false, false) = (Kind::of(&q.stats()).encoded(), a.raw, a.hex) {
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
        from_hex(text).map_err(|e| {
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
