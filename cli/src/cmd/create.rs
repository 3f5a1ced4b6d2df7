//! `shmq create NAME`: a queue of raw byte messages that stays after this command exits.

use clap::Args;
use shmq::{Error, Options, RawQueue};

use crate::error::{CliError, CliResult};
use crate::format::bytes;
use crate::parse::{parse_mode, parse_name, parse_size};

#[derive(Args, Debug)]
#[command(after_help = "\
The queue keeps its name after this command exits (Options::keep_on_drop) and is recorded as \
persistent: its recorded creator is this short-lived command, so `shmq ls` shows the creator \
as dead, but `shmq rm --stale` leaves it alone. Remove it with `shmq rm NAME`.")]
pub struct CreateArgs {
    /// Queue name: ASCII letters, digits, '_', '-' and '.', not starting with '.'.
    #[arg(value_parser = parse_name)]
    name: String,
    /// Ring capacity in bytes (suffixes K, M, G); the largest message is a little less
    /// (the ring frames each message), as the command prints.
    #[arg(short, long, default_value_t = shmq::internal::DEFAULT_CAPACITY as u64, value_parser = parse_size)]
    capacity: u64,
    /// Permission bits in octal, e.g. 660 to let your group attach too (default: shmq's,
    /// which lets only your user attach).
    #[arg(short, long, value_parser = parse_mode)]
    mode: Option<u32>,
    /// If a stale queue of that name exists (no process maps it), replace it.
    #[arg(long)]
    replace_stale: bool,
}

pub fn run(a: CreateArgs) -> CliResult<()> {
    let mut opts = Options::new()
        .capacity(a.capacity as usize)
        .keep_on_drop(true)
        .replace_stale(a.replace_stale);
    if let Some(mode) = a.mode {
        opts = opts.mode(mode);
    }
    let q = RawQueue::create_with(a.name.as_str(), &opts).map_err(|e| {
        // (An out-of-range capacity is `InvalidArgument`, whose message gives the range.)
        let hint = match &e {
            Error::AlreadyExists { stale: true, .. } => Some(format!(
                "`shmq rm {0}` or `shmq create {0} --replace-stale`",
                a.name
            )),
            Error::AlreadyExists { .. } => Some(format!("see it with `shmq stat {}`", a.name)),
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
        q.location().object_path().display(),
        a.name
    );
    Ok(())
}
