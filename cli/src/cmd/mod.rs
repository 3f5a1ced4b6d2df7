//! One module per subcommand: its arguments (`clap::Args`) and its `run`.

pub mod bench;
pub mod close;
pub mod completions;
pub mod create;
pub mod get;
pub mod ls;
pub mod man;
pub mod put;
pub mod rm;
pub mod stat;
pub mod watch;
