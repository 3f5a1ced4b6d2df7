//! shmq's own rows: `shmq-raw` (`RawQueue`), `shmq-loan` (`put_loan` / `get_loan`, in
//! place), `shmq-batch` (`put_many` / `get_many_into`), `shmq-typed` (`Queue<T>`, serde)
//! and `shmq-pod` (`PodQueue<T>`).

use shmq::{Batch, Options, PodQueue, Queue, RawQueue};

use super::{channel_names, Ends, Pending};
use crate::payloads::{ring_cap, with_payload, with_pod, zeroed_box, Payload};

/// Messages per `put_many` call on the batch path (at most; fewer for large payloads).
const BATCH: usize = 256;

/// Options of every shmq queue in the suite: the ring capacity for `size`-byte payloads.
pub fn shmq_opts(size: usize) -> Options {
    Options::new().capacity(ring_cap(size))
}

fn raw_ends(tx: RawQueue, rx: RawQueue, size: usize) -> Ends {
    let msg = vec![0xa5u8; size];
    let mut buf = Vec::with_capacity(size);
    (
        Box::new(move |n| {
            for _ in 0..n {
                tx.put(&msg).unwrap();
            }
        }),
        Box::new(move |n| {
            for _ in 0..n {
                let got = rx.get_into(&mut buf).unwrap();
                debug_assert_eq!(got, size);
            }
        }),
    )
}

/// What the loan row's consumer does with a lent message: read every byte once, in place
/// (a wrapping sum of its 8-byte words, which the compiler vectorises). The copying rows'
/// consumers read every byte once too, by copying it out of the ring; neither does more.
fn checksum(bytes: &[u8]) -> u64 {
    let mut words = bytes.chunks_exact(8);
    let sum = words.by_ref().fold(0u64, |a, w| {
        a.wrapping_add(u64::from_ne_bytes(w.try_into().unwrap()))
    });
    words
        .remainder()
        .iter()
        .fold(sum, |a, &b| a.wrapping_add(u64::from(b)))
}

/// `shmq-loan`: the producer reserves a write loan, fills it in place with the same copy of
/// the same message as `put` makes, and commits; the consumer borrows the message in place
/// with a read loan, reads every byte ([`checksum`]) and commits (removes) it.
fn loan_ends(tx: RawQueue, rx: RawQueue, size: usize) -> Ends {
    let msg = vec![0xa5u8; size];
    (
        Box::new(move |n| {
            for _ in 0..n {
                let mut loan = tx.put_loan(size).unwrap();
                loan.as_mut_slice().copy_from_slice(&msg);
                loan.commit().unwrap();
            }
        }),
        Box::new(move |n| {
            for _ in 0..n {
                let loan = rx.get_loan().unwrap();
                debug_assert_eq!(loan.len(), size);
                std::hint::black_box(checksum(loan.bytes()));
                loan.commit();
            }
        }),
    )
}

fn batch_ends(tx: RawQueue, rx: RawQueue, size: usize) -> Ends {
    let msg = vec![0xa5u8; size];
    let per = (BATCH * 8 / size).clamp(1, BATCH);
    let mut batch = Batch::new();
    (
        Box::new(move |n| {
            let msgs: Vec<&[u8]> = vec![&msg[..]; per];
            let mut left = n as usize;
            while left > 0 {
                let k = left.min(per);
                tx.put_many(&msgs[..k]).unwrap();
                left -= k;
            }
        }),
        Box::new(move |n| {
            let mut left = n as usize;
            while left > 0 {
                left -= rx.get_many_into(&mut batch, left).unwrap();
            }
        }),
    )
}

fn typed_ends<P: Payload>(tx: Queue<P>, rx: Queue<P>, size: usize) -> Ends {
    let msg = P::make(size);
    (
        Box::new(move |n| {
            for _ in 0..n {
                tx.put(&msg).unwrap();
            }
        }),
        Box::new(move |n| {
            for _ in 0..n {
                let m = rx.get().unwrap();
                debug_assert_eq!(m.size(), size);
                std::hint::black_box(m);
            }
        }),
    )
}

fn pod_ends<P: bytemuck::Pod + Send + Sync>(tx: PodQueue<P>, rx: PodQueue<P>) -> Ends {
    let msg: Box<P> = zeroed_box();
    (
        Box::new(move |n| {
            for _ in 0..n {
                tx.put(&msg).unwrap();
            }
        }),
        Box::new(move |n| {
            // `get_into` copies straight from the ring into the caller's value (a `get`
            // returns `P` by value, through the stack: an extra copy at large sizes).
            let mut out: Box<P> = zeroed_box();
            for _ in 0..n {
                rx.get_into(&mut out).unwrap();
                std::hint::black_box(&out);
            }
        }),
    )
}

/// Parent side: create the down and up queues under `key`.
pub fn parent(row: &str, size: usize, key: &str) -> Pending {
    let (d, u) = channel_names(key);
    let finish: Box<dyn FnOnce() -> Ends> = match row {
        "shmq-raw" | "shmq-loan" | "shmq-batch" => {
            let tx = RawQueue::create_with(d.as_str(), &shmq_opts(size)).unwrap();
            let rx = RawQueue::create_with(u.as_str(), &shmq_opts(size)).unwrap();
            match row {
                "shmq-raw" => Box::new(move || raw_ends(tx, rx, size)),
                "shmq-loan" => Box::new(move || loan_ends(tx, rx, size)),
                _ => Box::new(move || batch_ends(tx, rx, size)),
            }
        }
        "shmq-typed" => with_payload!(size, P => {
            let tx = Queue::<P>::create_with(d.as_str(), &shmq_opts(size)).unwrap();
            let rx = Queue::<P>::create_with(u.as_str(), &shmq_opts(size)).unwrap();
            Box::new(move || typed_ends(tx, rx, size))
        }),
        "shmq-pod" => with_pod!(size, P => {
            let tx = PodQueue::<P>::create_with(d.as_str(), &shmq_opts(size)).unwrap();
            let rx = PodQueue::<P>::create_with(u.as_str(), &shmq_opts(size)).unwrap();
            Box::new(move || pod_ends(tx, rx))
        }),
        other => panic!("unknown row {other}"),
    };
    Pending::new(row, size, key, finish)
}

/// Child side: open the queues the parent created (send up, receive down).
pub fn child(row: &str, size: usize, key: &str) -> Ends {
    let (d, u) = channel_names(key);
    match row {
        "shmq-raw" => raw_ends(
            RawQueue::open(&u).unwrap(),
            RawQueue::open(&d).unwrap(),
            size,
        ),
        "shmq-loan" => loan_ends(
            RawQueue::open(&u).unwrap(),
            RawQueue::open(&d).unwrap(),
            size,
        ),
        "shmq-batch" => batch_ends(
            RawQueue::open(&u).unwrap(),
            RawQueue::open(&d).unwrap(),
            size,
        ),
        "shmq-typed" => with_payload!(size, P => typed_ends(
            Queue::<P>::open(&u).unwrap(),
            Queue::<P>::open(&d).unwrap(),
            size,
        )),
        "shmq-pod" => with_pod!(size, P => pod_ends(
            PodQueue::<P>::open(&u).unwrap(),
            PodQueue::<P>::open(&d).unwrap(),
        )),
        other => panic!("unknown row {other}"),
    }
}

/// Both ends of the row `row` on one queue in this process, for the one-thread profile
/// (`SHMQ_BENCH_PROFILE="solo ..."`): what `send` puts, `recv` takes.
pub fn solo(row: &str, size: usize, key: &str) -> Ends {
    let tx = RawQueue::create_with(key, &shmq_opts(size)).unwrap();
    let rx = RawQueue::open(key).unwrap();
    match row {
        "shmq-raw" => raw_ends(tx, rx, size),
        "shmq-loan" => loan_ends(tx, rx, size),
        "shmq-batch" => batch_ends(tx, rx, size),
        other => panic!("no solo mode for row {other} (shmq-raw, shmq-loan, shmq-batch)"),
    }
}
