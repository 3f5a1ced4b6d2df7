//! `shmq completions SHELL`: a shell completion script on stdout.

use std::io::{self, Write};

use clap::Args;

use crate::error::{CliError, CliResult};

#[derive(Args, Debug)]
#[command(after_help = "\
bash: `shmq completions bash > ~/.local/share/bash-completion/completions/shmq`; \
zsh: `shmq completions zsh > ~/.zfunc/_shmq` (with ~/.zfunc in $fpath); \
fish: `shmq completions fish > ~/.config/fish/completions/shmq.fish`.")]
pub struct CompletionsArgs {
    /// The shell to complete for.
    #[arg(value_enum)]
    shell: clap_complete::Shell,
}

/// Write the script for the command line `cli` (the whole `shmq` command).
pub fn run(a: CompletionsArgs, mut cli: clap::Command) -> CliResult<()> {
    let mut out = Vec::new();
    clap_complete::generate(a.shell, &mut cli, "shmq", &mut out);
    io::stdout().write_all(&out).map_err(CliError::from)
}
