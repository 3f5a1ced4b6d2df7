//! The cases: one file per benchmark group, each with its rows, placements and sizes. A
//! case's ID is `<group>/<row>/<place>/<size>` (`tput/shmq-raw/diff/8`); the positional
//! filter given to the bench binary selects cases by substring of that ID.

pub mod idle;
pub mod latency;
pub mod memcpy;
pub mod mpmc;
pub mod python;
pub mod throughput;

use crate::results::Results;

/// What every case gets: quick mode, the results so far, and the filter.
pub struct Ctx {
    pub quick: bool,
    pub res: Results,
    /// Positional filter given to the bench binary, if any.
    pub filter: Option<String>,
}

impl Ctx {
    /// Whether the case (or group prefix) `id` passes the filter.
    pub fn wants(&self, id: &str) -> bool {
        self.filter.as_deref().is_none_or(|f| id.contains(f))
    }
}
