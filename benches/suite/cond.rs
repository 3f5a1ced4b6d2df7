//! The conditions every throughput case runs under (issue 14, "Honest conditions"): the ring
//! size ([`Ring`]) and, for shmq's rows, the call style ([`Style`]); and the benchmark IDs
//! that name them.
//!
//! A case's ID is `<group>/<row>/<place>/<size>[/<ring>][/<style>]`: the ring part only for
//! transports with a bounded buffer whose size the suite chooses (shmq, ipmpsc, crossbeam's
//! bounded channel), the style part only for shmq's rows. `tput/shmq-raw/diff/8/ring256K/block`
//! is what the suite measured as `tput/shmq-raw/diff/8` before the conditions existed.

use std::time::Duration;

use crate::payloads::ring_cap;

/// The ring capacity a case gives every ring-based transport (shmq and ipmpsc alike).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Ring {
    /// `max(256 KiB, next_power_of_two(4 × size + 64))` ([`ring_cap`]): 256 KiB up to 32 KiB
    /// payloads, 512 KiB at 64 KiB, 8 MiB at 1 MiB. The suite's only size before issue 14.
    Small,
    /// 16 MiB at every payload size: what an independent harness gives ipmpsc (and shmq).
    Big,
}

/// The ring size of [`Ring::Big`].
pub const BIG_RING: usize = 16 << 20;

impl Ring {
    /// Every ring size, in the order the cases run them.
    pub const ALL: [Ring; 2] = [Ring::Small, Ring::Big];

    /// The ring's part of a benchmark ID.
    pub fn name(self) -> &'static str {
        match self {
            Ring::Small => "ring256K",
            Ring::Big => "ring16M",
        }
    }

    /// The ring capacity in bytes for `size`-byte payloads.
    pub fn cap(self, size: usize) -> usize {
        match self {
            Ring::Small => ring_cap(size),
            Ring::Big => BIG_RING.max(ring_cap(size)),
        }
    }

    /// The condition whose ID part is `name` (`ring256K`, `ring16M`).
    pub fn parse(name: &str) -> Option<Ring> {
        Ring::ALL.into_iter().find(|r| r.name() == name)
    }
}

/// How shmq's rows call the queue.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Style {
    /// `put` / `get_into` (and `put_loan` / `get_loan`, `Queue::get`, ...): wait without a
    /// deadline.
    Block,
    /// `put_timeout` / `get_into_timeout` (and the other `*_timeout` forms) with a deadline of
    /// [`TIMEOUT`], which never expires in a healthy run.
    Timeout,
}

/// The deadline of every `*_timeout` call in [`Style::Timeout`].
pub const TIMEOUT: Duration = Duration::from_secs(60);

impl Style {
    /// Every call style, in the order the cases run them.
    pub const ALL: [Style; 2] = [Style::Block, Style::Timeout];

    /// The style's part of a benchmark ID.
    pub fn name(self) -> &'static str {
        match self {
            Style::Block => "block",
            Style::Timeout => "timeout",
        }
    }

    /// The style whose ID part is `name` (`block`, `timeout`).
    pub fn parse(name: &str) -> Option<Style> {
        Style::ALL.into_iter().find(|s| s.name() == name)
    }
}

/// Whether `row` has a ring whose size the suite sets (so its cases run at both ring sizes).
pub fn has_ring(row: &str) -> bool {
    row.starts_with("shmq") || row.starts_with("ipmpsc") || row == "crossbeam"
}

/// The call styles `row` runs with: both for shmq's rows, except `shmq-batch` (the API has
/// no `put_many_timeout`); none (one run) for the peers.
pub fn styles(row: &str) -> &'static [Style] {
    match row {
        "shmq-batch" => &[Style::Block],
        r if r.starts_with("shmq") => &Style::ALL,
        _ => &[Style::Block],
    }
}

/// The condition of one case: ring size and call style, as they appear in its ID.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct Cond {
    pub ring: Ring,
    pub style: Style,
}

impl Cond {
    /// The condition of every case before issue 14 (and of the peers' single runs).
    pub const DEFAULT: Cond = Cond {
        ring: Ring::Small,
        style: Style::Block,
    };

    /// The ID suffix of `row` in this condition (`/ring16M/timeout`, `/ring16M`, or empty).
    pub fn suffix(self, row: &str) -> String {
        let mut s = String::new();
        if has_ring(row) {
            s += "/";
            s += self.ring.name();
        }
        if row.starts_with("shmq") {
            s += "/";
            s += self.style.name();
        }
        s
    }

    /// Every condition `row` runs under in the throughput group, in order.
    pub fn all_for(row: &str) -> Vec<Cond> {
        let rings: &[Ring] = if has_ring(row) {
            &Ring::ALL
        } else {
            &[Ring::Small]
        };
        let mut v = Vec::new();
        for &ring in rings {
            for &style in styles(row) {
                v.push(Cond { ring, style });
            }
        }
        v
    }
}
