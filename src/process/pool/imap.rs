//! The lazy maps: [`Imap`] (results in input order) and [`ImapUnordered`] (in the order
//! they finish). Both are one [`Stream`] — pull inputs a chunk at a time, keep at most the
//! pool's window of chunks in flight, hand out the replies — that differs only in how
//! replies arrive ([`Arrivals`]): a channel per chunk, waited for oldest first, or one
//! channel for all, waited for as they come.

use std::collections::VecDeque;
use std::marker::PhantomData;
use std::sync::mpsc;

use serde::de::DeserializeOwned;
use serde::Serialize;

use super::reply::{decode_reply, fail_all, Reply};
use super::Pool;
use crate::error::{Error, Result};
use crate::process::target::Target;
use crate::process::ProcessError;

/// What completes a chunk: its replies, one per item.
type ChunkSink = Box<dyn FnOnce(Vec<Reply>) + Send>;

/// How the replies of the chunks in flight come back.
trait Arrivals {
    /// What the stream keeps of a chunk submitted with the sink [`sink`](Self::sink) made.
    type Ticket;
    /// A sink for the next chunk, and its ticket.
    fn sink(&self) -> (ChunkSink, Self::Ticket);
    /// The chunk of `ticket` was submitted.
    fn sent(&mut self, ticket: Self::Ticket);
    /// A chunk could not be submitted: these are its replies (to hand out in its turn).
    fn refused(&mut self, replies: Vec<Reply>, ready: &mut VecDeque<Reply>);
    /// Chunks in flight (refused ones waiting for their turn included).
    fn inflight(&self) -> usize;
    /// Wait for the next chunk's replies; `None` when none is in flight.
    fn wait(&mut self) -> Option<Vec<Reply>>;
}

/// In input order: a channel per chunk, oldest first.
struct InOrder {
    /// Chunks submitted, oldest first: their reply channel, or their submission errors.
    inflight: VecDeque<std::result::Result<mpsc::Receiver<Vec<Reply>>, Vec<Reply>>>,
}

impl Arrivals for InOrder {
    type Ticket = mpsc::Receiver<Vec<Reply>>;

    fn sink(&self) -> (ChunkSink, Self::Ticket) {
        let (tx, rx) = mpsc::channel();
        let sink = move |r| {
            let _ = tx.send(r);
        };
        (Box::new(sink), rx)
    }

    fn sent(&mut self, rx: Self::Ticket) {
        self.inflight.push_back(Ok(rx));
    }

    fn refused(&mut self, replies: Vec<Reply>, _: &mut VecDeque<Reply>) {
        self.inflight.push_back(Err(replies));
    }

    fn inflight(&self) -> usize {
        self.inflight.len()
    }

    fn wait(&mut self) -> Option<Vec<Reply>> {
        Some(match self.inflight.pop_front()? {
            Err(replies) => replies,
            Ok(rx) => rx
                .recv()
                .unwrap_or_else(|_| vec![Err(ProcessError::PoolClosed.into())]),
        })
    }
}

/// As they finish: one channel for every chunk.
struct AsDone {
    tx: mpsc::Sender<Vec<Reply>>,
    rx: mpsc::Receiver<Vec<Reply>>,
    /// Chunks submitted and not yet received.
    inflight: usize,
}

impl Arrivals for AsDone {
    type Ticket = ();

    fn sink(&self) -> (ChunkSink, ()) {
        let tx = self.tx.clone();
        let sink = move |r| {
            let _ = tx.send(r);
        };
        (Box::new(sink), ())
    }

    fn sent(&mut self, (): ()) {
        self.inflight += 1;
    }

    fn refused(&mut self, replies: Vec<Reply>, ready: &mut VecDeque<Reply>) {
        ready.extend(replies);
    }

    fn inflight(&self) -> usize {
        self.inflight
    }

    fn wait(&mut self) -> Option<Vec<Reply>> {
        if self.inflight == 0 {
            return None;
        }
        // Every submitted chunk's sink sends exactly once (a dropped sink reports
        // `Terminated`), so this cannot wait for a reply that never comes.
        let replies = self.rx.recv().expect("the iterator holds a sender");
        self.inflight -= 1;
        Some(replies)
    }
}

/// The machinery of both lazy maps.
struct Stream<'p, I, R, W> {
    pool: &'p Pool,
    inputs: I,
    /// What runs the chunks (or why the function cannot be run).
    target: std::result::Result<Target, String>,
    chunksize: usize,
    arrivals: W,
    /// Replies received and not handed out yet.
    ready: VecDeque<Reply>,
    _r: PhantomData<fn() -> R>,
}

impl<'p, I, R, W> Stream<'p, I, R, W> {
    fn new(
        pool: &'p Pool,
        inputs: I,
        target: Result<Target>,
        chunksize: usize,
        arrivals: W,
    ) -> Self {
        Stream {
            pool,
            inputs,
            target: target.map_err(|e| e.to_string()),
            chunksize,
            arrivals,
            ready: VecDeque::new(),
            _r: PhantomData,
        }
    }
}

impl<I, A, R, W> Stream<'_, I, R, W>
where
    I: Iterator<Item = A>,
    A: Serialize,
    R: DeserializeOwned,
    W: Arrivals,
{
    /// Take the next chunk of inputs and submit it; `false` when the inputs are done.
    fn submit_next(&mut self) -> bool {
        let chunk: Vec<A> = self.inputs.by_ref().take(self.chunksize).collect();
        if chunk.is_empty() {
            return false;
        }
        let (sink, ticket) = self.arrivals.sink();
        let sub = match &self.target {
            Ok(t) => self.pool.submit_chunk(t, &chunk, sink),
            Err(m) => Err(Error::InvalidArgument(m.clone())),
        };
        match sub {
            Ok(()) => self.arrivals.sent(ticket),
            Err(e) => self
                .arrivals
                .refused(fail_all(chunk.len(), &e), &mut self.ready),
        }
        true
    }

    fn next_result(&mut self) -> Option<Result<R>> {
        loop {
            if let Some(r) = self.ready.pop_front() {
                return Some(r.and_then(|b| decode_reply(&b)));
            }
            while self.arrivals.inflight() < self.pool.window && self.submit_next() {}
            if !self.ready.is_empty() {
                continue;
            }
            let replies = self.arrivals.wait()?;
            self.ready.extend(replies);
        }
    }
}

/// Iterator returned by [`Pool::imap`]: results in input order.
pub struct Imap<'p, I, R>(Stream<'p, I, R, InOrder>);

impl<'p, I, R> Imap<'p, I, R> {
    pub(super) fn new(pool: &'p Pool, inputs: I, target: Result<Target>, chunksize: usize) -> Self {
        let arrivals = InOrder {
            inflight: VecDeque::new(),
        };
        Imap(Stream::new(pool, inputs, target, chunksize, arrivals))
    }
}

impl<I, A, R> Iterator for Imap<'_, I, R>
where
    I: Iterator<Item = A>,
    A: Serialize,
    R: DeserializeOwned,
{
    type Item = Result<R>;

    fn next(&mut self) -> Option<Result<R>> {
        self.0.next_result()
    }
}

/// Iterator returned by [`Pool::imap_unordered`]: results in the order they finish.
pub struct ImapUnordered<'p, I, R>(Stream<'p, I, R, AsDone>);

impl<'p, I, R> ImapUnordered<'p, I, R> {
    pub(super) fn new(pool: &'p Pool, inputs: I, target: Result<Target>, chunksize: usize) -> Self {
        let (tx, rx) = mpsc::channel();
        let arrivals = AsDone {
            tx,
            rx,
            inflight: 0,
        };
        ImapUnordered(Stream::new(pool, inputs, target, chunksize, arrivals))
    }
}

impl<I, A, R> Iterator for ImapUnordered<'_, I, R>
where
    I: Iterator<Item = A>,
    A: Serialize,
    R: DeserializeOwned,
{
    type Item = Result<R>;

    fn next(&mut self) -> Option<Result<R>> {
        self.0.next_result()
    }
}
