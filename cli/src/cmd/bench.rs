//! `shmq bench`: throughput and latency between two processes, with a progress bar.
//!
//! The measuring process (this one) creates the queues and starts the other side with
//! `shmq::process` (this binary, re-executed; `main` calls `shmq::process::init` first):
//! * throughput: the peer puts messages of one size as fast as it can for `--duration`,
//!   then closes the queue; this process takes them and counts.
//! * latency: ping-pong over two queues; the peer echoes every message it gets, this
//!   process times each round trip.
//!
//! The full suite (against other IPC crates) is in `benches/`.

use std::time::{Duration, Instant};

use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use serde::{Deserialize, Serialize};
use shmq::process::Child;
use shmq::{Error, Options, RawQueue};

use crate::error::{CliError, CliResult};
use crate::format;
use crate::parse::{parse_duration, parse_size};

#[derive(Args, Debug)]
#[command(after_help = "\
Each case runs a second process (this binary, re-executed by shmq::process) as producer or \
echo peer. Numbers depend on load: on a busy machine, run it twice. For comparisons with \
other IPC mechanisms use the criterion suite: `cargo bench -p shmq-benches` in the repository.")]
pub struct BenchArgs {
    /// How long each case runs (e.g. 500ms, 2s).
    #[arg(short, long, default_value = "1s", value_parser = parse_duration)]
    duration: Duration,
    /// Message sizes of the throughput cases, comma-separated (suffixes K, M).
    #[arg(
        short,
        long,
        value_delimiter = ',',
        default_value = "64,4K,64K",
        value_parser = parse_size
    )]
    sizes: Vec<u64>,
    /// Ring capacity of the benchmark queues.
    #[arg(short, long, default_value = "1M", value_parser = parse_size)]
    capacity: u64,
    /// Message size of the latency (ping-pong) case.
    #[arg(long, default_value = "64", value_parser = parse_size)]
    latency_size: u64,
    /// Skip the latency case.
    #[arg(long)]
    no_latency: bool,
    /// Print results as JSON instead of tables.
    #[arg(long)]
    json: bool,
}

/// What the peer process does (sent to it by `shmq::process`; a queue travels as its name).
#[derive(Debug, Serialize, Deserialize)]
enum Role {
    /// Put messages of `size` bytes into `queue` for `duration`, then close it.
    Produce {
        queue: RawQueue,
        size: u64,
        duration: Duration,
    },
    /// Echo every message of `queue` into `reply` until `queue` is closed.
    Echo { queue: RawQueue, reply: RawQueue },
}

/// What the peer's function returns: its error in words.
type PeerResult = Result<(), String>;

/// How long either side waits for the other before deciding it is gone.
const PEER_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Serialize)]
struct Throughput {
    size: u64,
    messages: u64,
    seconds: f64,
    msgs_per_sec: f64,
    bytes_per_sec: f64,
}

#[derive(Serialize)]
struct Latency {
    size: u64,
    round_trips: u64,
    rtt_p50_ns: u64,
    rtt_p99_ns: u64,
    rtt_p999_ns: u64,
    rtt_max_ns: u64,
}

#[derive(Serialize)]
struct Report {
    cpus: usize,
    /// 1-minute load average when the run started (Linux), to judge noisy numbers.
    load_average: Option<f64>,
    capacity: u64,
    duration_secs: f64,
    throughput: Vec<Throughput>,
    latency: Option<Latency>,
}

/// The progress of the whole run: one unit per millisecond of planned case time.
struct Progress {
    bar: ProgressBar,
    case_ms: u64,
    case: u64,
}

impl Progress {
    fn tick(&self, started: Instant) {
        let ms = (started.elapsed().as_millis() as u64).min(self.case_ms);
        self.bar.set_position(self.case * self.case_ms + ms);
    }
}

pub fn run(a: BenchArgs) -> CliResult<()> {
    if a.duration.is_zero() {
        return Err(CliError::new("--duration must be greater than 0"));
    }
    let cases = a.sizes.len() as u64 + u64::from(!a.no_latency);
    if cases == 0 {
        return Err(CliError::new(
            "nothing to run: give --sizes or drop --no-latency",
        ));
    }
    let case_ms = (a.duration.as_millis() as u64).max(1);
    let bar = ProgressBar::new(cases * case_ms);
    bar.set_style(
        ProgressStyle::with_template("{spinner} {msg:<24} [{bar:30}] {percent:>3}%")
            .expect("valid template")
            .progress_chars("=> "),
    );
    bar.enable_steady_tick(Duration::from_millis(100));
    let mut p = Progress {
        bar,
        case_ms,
        case: 0,
    };
    let mut report = Report {
        cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
        load_average: std::fs::read_to_string("/proc/loadavg")
            .ok()
            .and_then(|s| s.split_whitespace().next()?.parse().ok()),
        capacity: a.capacity,
        duration_secs: a.duration.as_secs_f64(),
        throughput: Vec::new(),
        latency: None,
    };
    for &size in &a.sizes {
        p.bar
            .set_message(format!("throughput {}", format::bytes(size)));
        let r = throughput(size, &a, &p);
        report.throughput.push(r.inspect_err(|_| p.bar.abandon())?);
        p.case += 1;
    }
    if !a.no_latency {
        p.bar
            .set_message(format!("latency {}", format::bytes(a.latency_size)));
        let r = latency(&a, &p);
        report.latency = Some(r.inspect_err(|_| p.bar.abandon())?);
    }
    p.bar.finish_and_clear();
    if a.json {
        outln!(
            "{}",
            serde_json::to_string_pretty(&report).map_err(std::io::Error::from)?
        );
    } else {
        print_report(&report)?;
    }
    Ok(())
}

fn print_report(r: &Report) -> CliResult<()> {
    outln!(
        "shmq bench: producer and consumer in separate processes, {} CPUs{}, ring {}, {} per case",
        r.cpus,
        r.load_average
            .map_or(String::new(), |l| format!(" (load average {l:.2})")),
        format::bytes(r.capacity),
        format::latency(Duration::from_secs_f64(r.duration_secs))
    );
    if !r.throughput.is_empty() {
        outln!();
        outln!(
            "{:<12} {:>14} {:>12} {:>14}",
            "THROUGHPUT",
            "MESSAGES",
            "MSG/S",
            "BYTES/S"
        );
        for t in &r.throughput {
            outln!(
                "{:<12} {:>14} {:>12} {:>14}",
                format::bytes(t.size),
                format::thousands(t.messages),
                format::count(t.msgs_per_sec),
                format::byte_rate(t.bytes_per_sec)
            );
        }
    }
    if let Some(l) = &r.latency {
        let d = Duration::from_nanos;
        outln!();
        outln!(
            "{:<12} {:>14} {:>12} {:>12} {:>12} {:>12}",
            "LATENCY",
            "ROUND TRIPS",
            "RTT P50",
            "RTT P99",
            "RTT P99.9",
            "RTT MAX"
        );
        outln!(
            "{:<12} {:>14} {:>12} {:>12} {:>12} {:>12}",
            format!("{} ping", format::bytes(l.size)),
            format::thousands(l.round_trips),
            format::latency(d(l.rtt_p50_ns)),
            format::latency(d(l.rtt_p99_ns)),
            format::latency(d(l.rtt_p999_ns)),
            format::latency(d(l.rtt_max_ns))
        );
        outln!("(one-way latency is about half the round trip)");
    }
    Ok(())
}

fn bench_name(tag: &str) -> String {
    format!("bench-{}-{tag}", std::process::id())
}

/// The peer process; killed and reaped if the measuring side bails out early.
struct Peer(Option<Child<PeerResult>>);

impl Peer {
    fn start(role: Role) -> CliResult<Peer> {
        shmq::process::start(peer, role)
            .map(|c| Peer(Some(c)))
            .map_err(|e| CliError::new(format!("cannot start the benchmark peer process: {e}")))
    }

    /// Whether the peer has exited (so waiting for it is pointless); an error if it failed.
    fn exited(&mut self) -> CliResult<bool> {
        let Some(child) = self.0.as_mut() else {
            return Ok(true);
        };
        let r = match child.try_join() {
            Ok(None) => return Ok(false),
            Ok(Some(r)) => Ok(r),
            Err(e) => Err(e),
        };
        self.0 = None;
        outcome(r).map(|()| true)
    }

    fn join(mut self) -> CliResult<()> {
        match self.0.take() {
            Some(child) => outcome(child.join()),
            // Joined by `exited` already.
            None => Ok(()),
        }
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.join();
        }
    }
}

/// The peer's end: its function's result, or how its process failed.
fn outcome(r: shmq::Result<PeerResult>) -> CliResult<()> {
    let e = match r {
        Ok(Ok(())) => return Ok(()),
        Ok(Err(e)) => e,
        Err(e) => e.to_string(),
    };
    Err(CliError::new(format!(
        "the benchmark peer process failed: {e}"
    )))
}

fn check_fits(q: &RawQueue, size: u64) -> CliResult<()> {
    if size as usize > q.max_message() {
        return Err(CliError::new(format!(
            "messages of {} do not fit a ring of {} (largest message {} bytes)",
            format::bytes(size),
            format::bytes(q.capacity() as u64),
            q.max_message()
        ))
        .hint("raise --capacity or lower the message size"));
    }
    Ok(())
}

fn throughput(size: u64, a: &BenchArgs, p: &Progress) -> CliResult<Throughput> {
    let name = bench_name(&format!("t{size}"));
    let q = RawQueue::create_with(name.as_str(), &Options::new().capacity(a.capacity as usize))?;
    check_fits(&q, size)?;
    let mut peer = Peer::start(Role::Produce {
        queue: q.clone(),
        size,
        duration: a.duration,
    })?;
    let mut buf = Vec::with_capacity(size as usize);
    let started = Instant::now();
    let mut first: Option<Instant> = None;
    let last;
    let mut n = 0u64;
    let mut total = 0u64;
    let mut idle = Duration::ZERO;
    loop {
        match q.get_into_timeout(&mut buf, Duration::from_millis(100)) {
            Ok(len) => {
                n += 1;
                total += len as u64;
                idle = Duration::ZERO;
                if n % 1024 == 1 {
                    let t0 = *first.get_or_insert_with(Instant::now);
                    p.tick(t0);
                }
            }
            Err(Error::Closed) => {
                last = Instant::now();
                break;
            }
            Err(Error::Timeout) => {
                p.tick(first.unwrap_or(started));
                idle += Duration::from_millis(100);
                if peer.exited()? && q.is_empty() && !q.is_closed() {
                    return Err(CliError::new(
                        "the benchmark peer exited without closing the queue",
                    ));
                }
                if idle > PEER_TIMEOUT {
                    return Err(CliError::new("the benchmark peer stopped sending"));
                }
            }
            Err(e) => return Err(e.into()),
        }
    }
    peer.join()?;
    let secs = last
        .duration_since(first.unwrap_or(started))
        .as_secs_f64()
        .max(1e-9);
    Ok(Throughput {
        size,
        messages: n,
        seconds: secs,
        msgs_per_sec: n as f64 / secs,
        bytes_per_sec: total as f64 / secs,
    })
}

fn latency(a: &BenchArgs, p: &Progress) -> CliResult<Latency> {
    let size = a.latency_size;
    let ping_name = bench_name("ping");
    let pong_name = bench_name("pong");
    let opts = Options::new().capacity(a.capacity as usize);
    let ping = RawQueue::create_with(ping_name.as_str(), &opts)?;
    let pong = RawQueue::create_with(pong_name.as_str(), &opts)?;
    check_fits(&ping, size)?;
    let mut peer = Peer::start(Role::Echo {
        queue: ping.clone(),
        reply: pong.clone(),
    })?;
    let msg = vec![0x5au8; size as usize];
    let mut buf = Vec::with_capacity(size as usize);
    let mut round_trip = |buf: &mut Vec<u8>| -> CliResult<()> {
        ping.put_timeout(&msg, PEER_TIMEOUT)?;
        let mut waited = Duration::ZERO;
        loop {
            match pong.get_into_timeout(buf, Duration::from_millis(100)) {
                Ok(_) => return Ok(()),
                Err(Error::Timeout) => {
                    waited += Duration::from_millis(100);
                    if peer.exited()? || waited > PEER_TIMEOUT {
                        return Err(CliError::new("the benchmark peer stopped answering"));
                    }
                }
                Err(e) => return Err(e.into()),
            }
        }
    };
    // Warm up: the first round trips include the peer's start-up.
    for _ in 0..200 {
        round_trip(&mut buf)?;
    }
    let mut rtts: Vec<u64> = Vec::with_capacity(1 << 16);
    let started = Instant::now();
    while started.elapsed() < a.duration {
        let t = Instant::now();
        round_trip(&mut buf)?;
        rtts.push(t.elapsed().as_nanos() as u64);
        if rtts.len().is_multiple_of(256) {
            p.tick(started);
        }
    }
    ping.close();
    peer.join()?;
    rtts.sort_unstable();
    let pct = |q: f64| rtts[((rtts.len() - 1) as f64 * q).round() as usize];
    Ok(Latency {
        size,
        round_trips: rtts.len() as u64,
        rtt_p50_ns: pct(0.50),
        rtt_p99_ns: pct(0.99),
        rtt_p999_ns: pct(0.999),
        rtt_max_ns: *rtts.last().expect("at least one round trip"),
    })
}

/// The peer process's function (`shmq::process` runs it in the child).
fn peer(role: Role) -> PeerResult {
    run_peer(role).map_err(|e| e.msg)
}

fn run_peer(role: Role) -> CliResult<()> {
    match role {
        Role::Produce {
            queue: q,
            size,
            duration,
        } => {
            let msg = vec![0xa5u8; size as usize];
            let deadline = Instant::now() + duration;
            'outer: loop {
                for _ in 0..64 {
                    match q.put_timeout(&msg, PEER_TIMEOUT) {
                        Ok(()) => {}
                        Err(Error::Closed) => break 'outer,
                        Err(e) => return Err(e.into()),
                    }
                }
                if Instant::now() >= deadline {
                    break;
                }
            }
            q.close();
        }
        Role::Echo { queue: q, reply } => {
            let mut buf = Vec::new();
            loop {
                match q.get_into_timeout(&mut buf, PEER_TIMEOUT) {
                    Ok(_) => reply.put_timeout(&buf, PEER_TIMEOUT)?,
                    Err(Error::Closed) => break,
                    Err(e) => return Err(e.into()),
                }
            }
        }
    }
    Ok(())
}
