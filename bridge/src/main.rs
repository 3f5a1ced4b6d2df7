//! `shmq-bridge`: run one bridge between a local shmq queue and NATS JetStream, printing
//! its rates and lag.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Args, Parser, Subcommand};
use shmq_bridge::{Control, Error, In, Out, Progress};

/// Bridge a local shmq queue to NATS JetStream (out) or JetStream to a local queue (in).
#[derive(Parser, Debug)]
#[command(name = "shmq-bridge", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Local queue -> JetStream subject: loan, publish with Nats-Msg-Id, await acks, commit.
    Out {
        #[command(flatten)]
        common: Common,
        /// Dedupe window of a stream the bridge creates (e.g. 2m, 10m).
        #[arg(long, value_parser = humantime::parse_duration, default_value = "2m")]
        dedupe_window: Duration,
        /// How long to wait for JetStream's ack before retrying the batch.
        #[arg(long, value_parser = humantime::parse_duration, default_value = "5s")]
        ack_timeout: Duration,
        /// Publish without the ordering condition (Nats-Expected-Last-Msg-Id), for a stream
        /// other publishers write into at the same time; a lost connection can then store
        /// two messages in swapped order.
        #[arg(long)]
        unordered: bool,
    },
    /// JetStream subject -> local queue, through a durable pull consumer: put, then ack.
    In {
        #[command(flatten)]
        common: Common,
        /// Durable consumer name [default: shmq-in-<queue>-<subject>, each character other
        /// than A-Z a-z 0-9 - _ replaced by _, and when the subject held any, a hash of it
        /// appended: -<8 hex digits>]. One bridge per durable.
        #[arg(long)]
        durable: Option<String>,
        /// State file: the last stream sequence put
        /// [default: /dev/shm/shmq-bridge.<queue>.<stream>.<durable>.in, '/' and '\' replaced
        /// by _ in each part; <stream>: the stream that captures the subject, or --stream].
        #[arg(long)]
        state: Option<std::path::PathBuf>,
        /// ack_wait of a consumer the bridge creates.
        #[arg(long, value_parser = humantime::parse_duration, default_value = "30s")]
        ack_wait: Duration,
    },
}

#[derive(Args, Debug)]
struct Common {
    /// Local queue name (or a path, for a file-backed queue).
    #[arg(long)]
    queue: String,
    /// JetStream subject.
    #[arg(long)]
    subject: String,
    /// NATS server URL(s), comma-separated.
    #[arg(long, default_value = shmq_bridge::DEFAULT_SERVER)]
    server: String,
    /// Stream name [default: the stream that captures the subject, else SHMQ_<subject>].
    #[arg(long)]
    stream: Option<String>,
    /// Messages per loan (out) or per pull (in).
    #[arg(long, default_value_t = 256)]
    batch: usize,
    /// Create the local queue with this capacity if it is missing (kept on exit), as
    /// `shmq create` takes it: 4096, 64K, 1M, 1GiB (binary multiples); without it a
    /// missing queue is an error (exit status 2).
    #[arg(long, value_parser = parse_capacity)]
    create: Option<usize>,
    /// How often to print rates and lag (0s: never).
    #[arg(long, value_parser = humantime::parse_duration, default_value = "5s")]
    every: Duration,
    /// Log at debug level.
    #[arg(long, short)]
    verbose: bool,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let common = match &cli.cmd {
        Cmd::Out { common, .. } | Cmd::In { common, .. } => common,
    };
    let level = if common.verbose {
        tracing::Level::DEBUG
    } else {
        tracing::Level::INFO
    };
    // async-nats logs every connection event itself ("event: disconnected", at INFO) and
    // hands it to the bridge's event callback, which logs it again with the bridge's name
    // and counts it; its connection errors come back to the bridge as `Err`s the bridge
    // logs. So its own lines would print each NATS event and error twice: they are shown
    // only with -v (at DEBUG, for diagnosing the client itself).
    let filter = tracing_subscriber::filter::Targets::new()
        .with_default(level)
        .with_target(
            "async_nats",
            if common.verbose {
                tracing_subscriber::filter::LevelFilter::DEBUG
            } else {
                tracing_subscriber::filter::LevelFilter::OFF
            },
        );
    {
        use tracing_subscriber::layer::SubscriberExt;
        use tracing_subscriber::util::SubscriberInitExt;
        tracing_subscriber::fmt()
            .with_writer(std::io::stderr)
            .with_target(false)
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .with_max_level(level)
            .finish()
            .with(filter)
            .init();
    }
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("shmq-bridge: cannot start the Tokio runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(run(cli));
    exit_code(result)
}

/// Exit status: 0 stopped (also before it was connected) or the queue closed and drained,
/// 2 a configuration error (a missing queue, an invalid subject or name, a request the
/// server refuses for good), 3 a message too large for the server, 1 anything else.
fn exit_code(result: shmq_bridge::Result<()>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(Error::Stopped(why)) => {
            tracing::info!("stopped before the bridge was connected ({why})");
            ExitCode::SUCCESS
        }
        Err(e @ Error::TooLargeForServer { .. }) => {
            eprintln!("shmq-bridge: {e}");
            ExitCode::from(3)
        }
        Err(e) if e.is_config() => {
            eprintln!("shmq-bridge: {e}");
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("shmq-bridge: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> shmq_bridge::Result<()> {
    let ctl = Control::new();
    let (label, every) = match &cli.cmd {
        Cmd::Out { common, .. } => (
            format!("out {} -> {}", common.queue, common.subject),
            common.every,
        ),
        Cmd::In { common, .. } => (
            format!("in {} -> {}", common.subject, common.queue),
            common.every,
        ),
    };
    // Both handlers are installed here, before the bridge starts connecting (creating a
    // `Signal` installs it; `ctrl_c()` would only do so when first polled, in the task), so
    // a signal at any time after this point stops the bridge cleanly.
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())
        .map_err(|e| Error::Config(format!("cannot handle SIGTERM: {e}")))?;
    let mut int = signal(SignalKind::interrupt())
        .map_err(|e| Error::Config(format!("cannot handle SIGINT: {e}")))?;
    let stopper = ctl.clone();
    tokio::spawn(async move {
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        tracing::info!("stopping ({name})");
        stopper.stop();
    });
    if !every.is_zero() {
        tokio::spawn(report(ctl.clone(), label, every));
    }
    let r = match cli.cmd {
        Cmd::Out {
            common,
            dedupe_window,
            ack_timeout,
            unordered,
        } => {
            let mut b = Out::new(common.queue, common.subject)
                .server(common.server)
                .batch(common.batch)
                .dedupe_window(dedupe_window)
                .ack_timeout(ack_timeout)
                .ordered(!unordered);
            if let Some(s) = common.stream {
                b = b.stream(s);
            }
            if let Some(c) = common.create {
                b = b.create(c);
            }
            b.run(&ctl).await
        }
        Cmd::In {
            common,
            durable,
            state,
            ack_wait,
        } => {
            let mut b = In::new(common.queue, common.subject)
                .server(common.server)
                .batch(common.batch)
                .ack_wait(ack_wait);
            if let Some(s) = common.stream {
                b = b.stream(s);
            }
            if let Some(c) = common.create {
                b = b.create(c);
            }
            if let Some(d) = durable {
                b = b.durable(d);
            }
            if let Some(s) = state {
                b = b.state_file(s);
            }
            b.run(&ctl).await
        }
    };
    // The summary only for a bridge that ran: not before a configuration error (the error
    // is the whole story) nor a stop before it was connected.
    if !matches!(&r, Err(e) if e.is_config() || matches!(e, Error::Stopped(_))) {
        let p = ctl.progress();
        eprintln!(
            "shmq-bridge: done: {} messages, {} bytes, {} duplicates, {} malformed, {} retries",
            p.messages, p.bytes, p.duplicates, p.malformed, p.retries
        );
    }
    r
}

/// Every `every`: messages/s and bytes/s over the interval, totals, lag.
async fn report(ctl: Control, label: String, every: Duration) {
    let mut last = ctl.progress();
    let mut at = Instant::now();
    loop {
        if ctl.sleep(every).await {
            return;
        }
        let now = ctl.progress();
        let dt = at.elapsed().as_secs_f64().max(1e-9);
        eprintln!("{}", line(&label, &last, &now, dt));
        last = now;
        at = Instant::now();
    }
}

fn line(label: &str, a: &Progress, b: &Progress, dt: f64) -> String {
    let rate = (b.messages - a.messages) as f64 / dt;
    let bps = (b.bytes - a.bytes) as f64 / dt;
    format!(
        "{label}: {rate:.0} msg/s {:.2} MiB/s | total {} | lag {} | dup {} | malformed {} | retries {} | full waits {} | disconnects {}{}",
        bps / (1024.0 * 1024.0),
        b.messages,
        b.lag,
        b.duplicates,
        b.malformed,
        b.retries,
        b.full_waits,
        b.disconnects,
        if b.connected { "" } else { " | NATS DISCONNECTED" }
    )
}

/// `--create`'s value: `4096`, `64K`, `1M`, `1MiB`, `1.5G` (K, M, G, T are binary multiples,
/// as in the shmq CLI).
fn parse_capacity(s: &str) -> Result<usize, String> {
    parse_size::Config::new()
        .with_binary()
        .parse_size(s.trim())
        .map_err(|e| format!("{s:?} is not a size ({e}; examples: 4096, 64K, 1M, 1GiB)"))
        .and_then(|n| usize::try_from(n).map_err(|_| format!("{s:?} is too large")))
}

#[cfg(test)]
mod tests {
    use super::parse_capacity;

    #[test]
    fn create_takes_sizes_like_the_shmq_cli() {
        assert_eq!(parse_capacity("4096"), Ok(4096));
        assert_eq!(parse_capacity("64K"), Ok(65536));
        assert_eq!(parse_capacity("1M"), Ok(1 << 20));
        assert_eq!(parse_capacity("1MiB"), Ok(1 << 20));
        assert!(parse_capacity("lots").unwrap_err().contains("examples"));
    }
}
