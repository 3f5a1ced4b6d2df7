//! TEMPORARY SHIM — delete this file when `shmq::RawQueue` has its read loans on main.
//!
//! It gives `RawQueue` the loan API of issue 13 (`uid`, `get_loans`, `try_get_loans`,
//! `get_loans_timeout`, `ReadLoans::{len, iter, commit, commit_first}`) with the same
//! signatures, implemented with the copying `*_get_many_into` calls. Once the real inherent
//! methods exist they take precedence over this extension trait's, so switching is: delete
//! this file, its `mod` line and the `use crate::loans::...` lines, and import
//! `shmq::ReadLoans` instead.
//!
//! What the shim does NOT give: messages lent and not committed survive a `drop` of the loan
//! (they go to a per-process stash that the next loan serves first), but NOT the death of
//! the process: a bridge killed between taking a batch and committing it loses that batch.
//! The real loans leave uncommitted messages in the ring. The sequence numbers are the
//! queue's `gets` counter, exact only while the bridge is the queue's one consumer.

#![allow(dead_code)] // the whole API, used or not

use std::collections::{HashMap, VecDeque};
use std::hash::{Hash, Hasher};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use shmq::Batch;
use shmq::{Error, RawQueue, Result};

type Stash = VecDeque<(u64, Vec<u8>)>;

fn stashes() -> &'static Mutex<HashMap<u64, Stash>> {
    static S: OnceLock<Mutex<HashMap<u64, Stash>>> = OnceLock::new();
    S.get_or_init(Default::default)
}

/// Messages lent by [`LoanExt::get_loans`] (shim).
#[derive(Debug)]
pub struct ReadLoans<'a> {
    q: &'a RawQueue,
    msgs: Vec<(u64, Vec<u8>)>,
    committed: usize,
}

impl ReadLoans<'_> {
    /// How many messages are lent.
    pub fn len(&self) -> usize {
        self.msgs.len()
    }

    /// Whether no message is lent (never, for a loan returned `Ok`).
    pub fn is_empty(&self) -> bool {
        self.msgs.is_empty()
    }

    /// The lent messages with their sequence numbers, in queue order.
    pub fn iter(&self) -> impl Iterator<Item = (u64, &[u8])> {
        self.msgs.iter().map(|(s, m)| (*s, m.as_slice()))
    }

    /// Remove every lent message.
    pub fn commit(mut self) {
        self.committed = self.msgs.len();
    }

    /// Remove the first `k` lent messages; leave the rest for the next loan.
    pub fn commit_first(mut self, k: usize) {
        self.committed = k.min(self.msgs.len());
    }
}

impl Drop for ReadLoans<'_> {
    fn drop(&mut self) {
        if self.committed < self.msgs.len() {
            let rest = self.msgs.split_off(self.committed);
            let mut all = stashes().lock().unwrap_or_else(|p| p.into_inner());
            let stash = all.entry(self.q.uid()).or_default();
            for m in rest.into_iter().rev() {
                stash.push_front(m);
            }
        }
    }
}

/// The loan API of issue 13 on `RawQueue` (shim; see the module docs).
pub trait LoanExt {
    /// Random-ish 64-bit id of the queue (shim: a hash of its name and creation record).
    fn uid(&self) -> u64;
    /// Loan of up to `max` messages, waiting for at least one.
    fn get_loans(&self, max: usize) -> Result<ReadLoans<'_>>;
    /// Loan of up to `max` messages, `Err(Empty)` if there is none.
    fn try_get_loans(&self, max: usize) -> Result<ReadLoans<'_>>;
    /// Loan of up to `max` messages, `Err(Timeout)` after `t`.
    fn get_loans_timeout(&self, max: usize, t: Duration) -> Result<ReadLoans<'_>>;
}

fn take<'a>(
    q: &'a RawQueue,
    max: usize,
    f: impl FnOnce(&mut Batch, usize) -> Result<usize>,
) -> Result<ReadLoans<'a>> {
    let uid = q.uid();
    {
        let mut all = stashes().lock().unwrap_or_else(|p| p.into_inner());
        if let Some(stash) = all.get_mut(&uid) {
            if !stash.is_empty() {
                let n = max.min(stash.len());
                let msgs = stash.drain(..n).collect();
                return Ok(ReadLoans {
                    q,
                    msgs,
                    committed: 0,
                });
            }
        }
    }
    let first = q.stats().gets;
    let mut batch = Batch::new();
    f(&mut batch, max.max(1))?;
    let msgs = batch
        .iter()
        .enumerate()
        .map(|(i, m)| (first + i as u64, m.to_vec()))
        .collect();
    Ok(ReadLoans {
        q,
        msgs,
        committed: 0,
    })
}

impl LoanExt for RawQueue {
    fn uid(&self) -> u64 {
        let s = self.stats();
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (self.name(), s.creator_pid, s.created_unix, s.capacity).hash(&mut h);
        h.finish()
    }

    fn get_loans(&self, max: usize) -> Result<ReadLoans<'_>> {
        take(self, max, |b, m| self.get_many_into(b, m))
    }

    fn try_get_loans(&self, max: usize) -> Result<ReadLoans<'_>> {
        take(self, max, |b, m| self.try_get_many_into(b, m))
    }

    fn get_loans_timeout(&self, max: usize, t: Duration) -> Result<ReadLoans<'_>> {
        take(self, max, |b, m| {
            match self.get_many_into_timeout(b, m, t) {
                Err(Error::Empty) => Err(Error::Timeout),
                r => r,
            }
        })
    }
}
