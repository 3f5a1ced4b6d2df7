//! `shmq man [--dir DIR]`: the manual page(s) in roff.

use std::io::{self, Write};

use clap::Args;

use crate::error::{CliError, CliResult};

#[derive(Args, Debug)]
#[command(after_help = "\
`shmq man > shmq.1` writes the main page; `shmq man --dir ~/.local/share/man/man1` writes \
shmq.1 and a page per command (shmq-ls.1, shmq-get.1, ...), for `man shmq-get`.")]
pub struct ManArgs {
    /// Write shmq.1 and shmq-COMMAND.1 for every command into this directory.
    #[arg(long, value_name = "DIR")]
    dir: Option<std::path::PathBuf>,
}

/// Render the pages of the command line `cli` (the whole `shmq` command).
pub fn run(a: ManArgs, cli: clap::Command) -> CliResult<()> {
    match a.dir {
        Some(dir) => clap_mangen::generate_to(cli, &dir)
            .map_err(|e| CliError::new(format!("writing man pages to {}: {e}", dir.display()))),
        None => {
            let mut out = Vec::new();
            clap_mangen::Man::new(cli)
                .render(&mut out)
                .map_err(CliError::from)
                .and_then(|()| io::stdout().write_all(&out).map_err(CliError::from))
        }
    }
}
