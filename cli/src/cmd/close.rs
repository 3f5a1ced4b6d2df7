//! `shmq close NAME...`: puts fail from now on, gets drain what is left, waiters wake up.

use clap::Args;
use shmq::RawQueue;

use crate::error::CliResult;
use crate::parse::parse_name;

#[derive(Args, Debug)]
pub struct CloseArgs {
    /// Queue names.
    #[arg(required = true, value_parser = parse_name)]
    names: Vec<String>,
}

pub fn run(a: CloseArgs) -> CliResult<()> {
    for name in &a.names {
        RawQueue::open(name)?.close();
    }
    Ok(())
}
