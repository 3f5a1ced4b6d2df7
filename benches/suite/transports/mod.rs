//! Transports: each gives a pair of "send n messages" / "receive n messages" closures, one
//! pair in the parent (send = down, receive = up) and one in the child (send = up, receive =
//! down).
//!
//! The cross-process rows ([`ROWS`]) connect through [`parent_link`] in the parent and
//! [`child_link`] in the peer, one file per family; `crossbeam` and `floor` are the
//! in-process reference rows (two threads), driven by the cases themselves.

pub mod crossbeam;
pub mod floor;
mod ipc;
mod ipmpsc;
pub mod shmq;
mod uds;

use std::sync::atomic::{AtomicU64, Ordering};

use crate::cond::{Cond, Style};

pub type Ends = (Box<dyn FnMut(u64)>, Box<dyn FnMut(u64)>);

/// Rows of the cross-process tables.
pub const ROWS: [&str; 10] = [
    "shmq-raw",
    "shmq-loan",
    "shmq-typed",
    "shmq-pod",
    "shmq-batch",
    "ipmpsc-serde",
    "ipmpsc-zc",
    "ipc-typed",
    "ipc-bytes",
    "uds",
];

/// A name no other case (or concurrent suite) uses, for the resources of one case.
pub fn unique_key() -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "shmqbench-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Names of the two channels of a link made under `key`: down (parent to peer) and up.
fn channel_names(key: &str) -> (String, String) {
    (format!("{key}-d"), format!("{key}-u"))
}

/// Parent side of a transport: resources created before the child is spawned, the spec
/// passed to it, and the step that completes the connection once it runs.
pub struct Pending {
    pub spec: String,
    pub finish: Box<dyn FnOnce() -> Ends>,
}

impl Pending {
    /// The spec is `<row> <size> <rendezvous>`, which [`child_link`] reads back; the
    /// rendezvous is whatever the family's child needs to find the parent (a key, a name, a
    /// path).
    fn new(
        row: &str,
        size: usize,
        cond: Cond,
        rendezvous: &str,
        finish: Box<dyn FnOnce() -> Ends>,
    ) -> Self {
        Pending {
            spec: format!(
                "{row} {size} {} {} {rendezvous}",
                cond.ring.name(),
                cond.style.name()
            ),
            finish,
        }
    }
}

/// Parent side of the cross-process row `row` in condition `cond` (the ring size of shmq and
/// ipmpsc, the call style of shmq; the other rows ignore it): its resources, made under a
/// fresh key before the peer starts, and the spec that tells the peer how to reach them.
pub fn parent_link(row: &str, size: usize, cond: Cond) -> Pending {
    let key = unique_key();
    match row {
        "shmq-raw" | "shmq-loan" | "shmq-batch" | "shmq-typed" | "shmq-pod" => {
            shmq::parent(row, size, cond, &key)
        }
        "ipmpsc-serde" | "ipmpsc-zc" => ipmpsc::parent(row, size, cond, &key),
        "ipc-typed" | "ipc-bytes" => ipc::parent(row, size, cond),
        "uds" => uds::parent(row, size, cond, &key),
        other => panic!("unknown row {other}"),
    }
}

/// Child side of [`parent_link`], given the words of its spec
/// (`<row> <size> <ring> <style> <rendezvous>`): returns (send up, receive down).
pub fn child_link(spec: &[&str]) -> Ends {
    let (row, size, key) = (spec[0], spec[1].parse().unwrap(), spec[4]);
    let style = Style::parse(spec[3]).expect("call style in the peer's spec");
    match row {
        "shmq-raw" | "shmq-loan" | "shmq-batch" | "shmq-typed" | "shmq-pod" => {
            shmq::child(row, size, style, key)
        }
        "ipmpsc-serde" | "ipmpsc-zc" => ipmpsc::child(row, size, key),
        "ipc-typed" | "ipc-bytes" => ipc::child(row, size, key),
        "uds" => uds::child(size, key),
        other => panic!("unknown row {other}"),
    }
}

/// What a zero-copy consumer (`shmq-loan`, `ipmpsc-zc`) does with a message it borrows in
/// place: read every byte once (a wrapping sum of its 8-byte words, which the compiler
/// vectorises). The copying rows' consumers read every byte once too, by copying it out of
/// the ring; none does more, none less.
pub(crate) fn checksum(bytes: &[u8]) -> u64 {
    let mut words = bytes.chunks_exact(8);
    let sum = words.by_ref().fold(0u64, |a, w| {
        a.wrapping_add(u64::from_ne_bytes(w.try_into().unwrap()))
    });
    words
        .remainder()
        .iter()
        .fold(sum, |a, &b| a.wrapping_add(u64::from(b)))
}
