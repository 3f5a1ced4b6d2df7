//! `shmq` — see, tap, clean up and benchmark shmq queues from the shell.
//!
//! Run `shmq --help` (or `shmq <command> --help`) for the commands; `docs/cli.md` has a
//! walkthrough. Exit status: 0 success, 1 error (message on stderr), 2 usage error.
//!
//! This file is the command line's top level and the dispatch; each subcommand is a module
//! of [`cmd`].

use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

#[macro_use]
mod output;
mod bridged;
mod cmd;
mod error;
mod filter;
mod format;
mod hex;
mod kind;
mod object;
mod parse;
mod users;

/// The help's closing paragraph (where queues live comes from the library).
fn after_help() -> String {
    format!(
        "\
Queues live in {} (Lock, Event and the other shmq::primitives too). A queue made by a \
program disappears when its creator drops it; one made by `shmq create` stays until \
`shmq rm`.

Exit status: 0 success, 1 error (what went wrong and what to do is printed on stderr), \
2 usage error.

Examples:
  shmq create jobs --capacity 4M        # a queue that outlives this command
  printf 'a\\nb\\n' | shmq put jobs       # one message per line
  shmq ls                               # your queues on this machine (--all: everyone's)
  shmq watch jobs                       # live messages/s and bytes/s
  shmq get jobs --follow                # print messages as they arrive
  shmq rm jobs                          # remove it (attached processes keep working)
  shmq completions bash                 # shell completions; `shmq man` prints the man page",
        object::path("<NAME>").display()
    )
}

/// See, tap, clean up and benchmark shmq shared-memory queues.
#[derive(Parser, Debug)]
#[command(name = "shmq", version, after_help = after_help())]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// List your shmq queues on this machine (every user's with --all).
    #[command(visible_alias = "list")]
    Ls(cmd::ls::LsArgs),
    /// Show one queue in detail: state, owner, attached processes and lifetime counters.
    Stat(cmd::stat::StatArgs),
    /// Show live messages/s and bytes/s of a queue, refreshed in place.
    Watch(cmd::watch::WatchArgs),
    /// Create a queue of raw byte messages that stays after this command exits.
    Create(cmd::create::CreateArgs),
    /// Put messages into a queue: the arguments, or lines / raw bytes from stdin.
    Put(cmd::put::PutArgs),
    /// Take messages out of a queue and write them to stdout.
    Get(cmd::get::GetArgs),
    /// Close a queue: puts fail from now on, gets drain what is left, waiters wake up.
    Close(cmd::close::CloseArgs),
    /// Remove queues by name, or every stale one (--stale).
    #[command(visible_alias = "remove")]
    Rm(cmd::rm::RmArgs),
    /// Measure throughput and latency between two processes on this machine.
    Bench(cmd::bench::BenchArgs),
    /// Print a shell completion script (e.g. `shmq completions bash > /etc/bash_completion.d/shmq`).
    Completions(cmd::completions::CompletionsArgs),
    /// Print the manual page in roff, or write one page per command into a directory.
    Man(cmd::man::ManArgs),
}

fn main() -> ExitCode {
    // First: in the peer process of `shmq bench` (started with shmq::process), this runs
    // the peer's function and exits.
    shmq::process::init();
    let cli = Cli::parse();
    let r = match cli.cmd {
        Cmd::Ls(a) => cmd::ls::run(a),
        Cmd::Stat(a) => cmd::stat::run(a),
        Cmd::Watch(a) => cmd::watch::run(a),
        Cmd::Create(a) => cmd::create::run(a),
        Cmd::Put(a) => cmd::put::run(a),
        Cmd::Get(a) => cmd::get::run(a),
        Cmd::Close(a) => cmd::close::run(a),
        Cmd::Rm(a) => cmd::rm::run(a),
        Cmd::Bench(a) => cmd::bench::run(a),
        Cmd::Completions(a) => cmd::completions::run(a, Cli::command()),
        Cmd::Man(a) => cmd::man::run(a, Cli::command()),
    };
    match r {
        Ok(()) => ExitCode::SUCCESS,
        // The reader of our stdout went away (`shmq ls | head -1`): nothing to report.
        Err(e) if e.broken_pipe => ExitCode::SUCCESS,
        Err(e) => {
            e.report();
            ExitCode::FAILURE
        }
    }
}
