//! `shmq watch NAME`: live messages/s and bytes/s of a queue, refreshed in place.

use std::io::{self, IsTerminal, Write};
use std::time::{Duration, Instant};

use clap::Args;
use shmq::RawQueue;

use crate::error::{CliError, CliResult};
use crate::format::{self, bytes, count, percent};
use crate::object;
use crate::parse::{parse_duration, parse_name};

#[derive(Args, Debug)]
pub struct WatchArgs {
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

pub fn run(a: WatchArgs) -> CliResult<()> {
    if a.interval.is_zero() {
        return Err(CliError::new("--interval must be greater than 0"));
    }
    let q = RawQueue::open(&a.name)?;
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
    let mut prev = q.stats();
    let mut t_prev = Instant::now();
    let mut n = 0u64;
    loop {
        if a.count.is_some_and(|c| n >= c) {
            break;
        }
        std::thread::sleep(a.interval);
        let s = q.stats();
        let now = Instant::now();
        let dt = now.duration_since(t_prev).as_secs_f64().max(1e-9);
        let rate = |new: u64, old: u64| new.saturating_sub(old) as f64 / dt;
        let removed = !object::path(&a.name).exists();
        let state = if removed {
            "removed"
        } else if s.closed {
            "closed"
        } else {
            "open"
        };
        let line = cols([
            &format::clock(),
            &count(rate(s.puts, prev.puts)),
            &count(rate(s.gets, prev.gets)),
            &format::byte_rate(rate(s.put_bytes, prev.put_bytes)),
            &format::byte_rate(rate(s.get_bytes, prev.get_bytes)),
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
