//! The cases: one file per benchmark group, each with its rows, placements and sizes. A
//! case's ID is `<group>/<row>/<place>/<size>[/<ring>][/<style>]`
//! (`tput/shmq-raw/diff/8/ring16M/timeout`, `tput/uds/diff/8`: see [`crate::cond`]); the
//! positional filter given to the bench binary selects cases by that ID (a substring, or a
//! regular expression as criterion reads it: [`Args::wants`]).

pub mod idle;
pub mod latency;
pub mod memcpy;
pub mod mpmc;
pub mod python;
pub mod throughput;

use crate::args::Args;
use crate::results::Results;

/// What every case gets: quick mode, the results so far, and the filter.
pub struct Ctx {
    pub quick: bool,
    pub res: Results,
    /// The command line: the filter, and what else the suite reads of it.
    pub args: Args,
}

impl Ctx {
    /// Whether the case (or group prefix) `id` passes the filter ([`Args::wants`]).
    pub fn wants(&self, id: &str) -> bool {
        self.args.wants(id)
    }
}
