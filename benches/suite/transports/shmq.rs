//! shmq's own rows: `shmq-raw` (`RawQueue`), `shmq-loan` (`put_loan` / `get_loan`, in
//! place), `shmq-batch` (`put_many` / `get_many_into`), `shmq-typed` (`Queue<T>`, serde)
//! and `shmq-pod` (`PodQueue<T>`). Each in both call styles ([`Style`]): the blocking calls
//! or their `*_timeout` forms with a deadline of [`TIMEOUT`] (`shmq-batch`: blocking only,
//! the API has no `put_many_timeout`).

use shmq::{Batch, Options, PodQueue, Queue, RawQueue};

use super::{channel_names, Ends, Pending};
use crate::cond::{Cond, Style, TIMEOUT};
use crate::payloads::{ring_cap, with_payload, with_pod, zeroed_box, Payload};

/// Messages per `put_many` call on the batch path (at most; fewer for large payloads).
const BATCH: usize = 256;

/// Options of the suite's shmq queues outside the conditions (MPMC): the ring capacity for
/// `size`-byte payloads.
pub fn shmq_opts(size: usize) -> Options {
    Options::new().capacity(ring_cap(size))
}

/// Options of a shmq queue in condition `cond`: its ring capacity for `size`-byte payloads.
fn cond_opts(size: usize, cond: Cond) -> Options {
    Options::new().capacity(cond.ring.cap(size))
}

fn raw_ends(tx: RawQueue, rx: RawQueue, size: usize, style: Style) -> Ends {
    let msg = vec![0xa5u8; size];
    let mut buf = Vec::with_capacity(size);
    match style {
        Style::Block => (
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
        ),
        Style::Timeout => (
            Box::new(move |n| {
                for _ in 0..n {
                    tx.put_timeout(&msg, TIMEOUT).unwrap();
                }
            }),
            Box::new(move |n| {
                for _ in 0..n {
                    let got = rx.get_into_timeout(&mut buf, TIMEOUT).unwrap();
                    debug_assert_eq!(got, size);
                }
            }),
        ),
    }
}

/// `shmq-loan`: the producer reserves a write loan, fills it in place with the same copy of
/// the same message as `put` makes, and commits; the consumer borrows the message in place
/// with a read loan, reads every byte ([`checksum`]) and commits (removes) it.
/// With [`Style::Timeout`], `put_loan_timeout` / `get_loan_timeout`.
fn loan_ends(tx: RawQueue, rx: RawQueue, size: usize, style: Style) -> Ends {
    let msg = vec![0xa5u8; size];
    let timeout = style == Style::Timeout;
    (
        Box::new(move |n| {
            for _ in 0..n {
                let mut loan = if timeout {
                    tx.put_loan_timeout(size, TIMEOUT).unwrap()
                } else {
                    tx.put_loan(size).unwrap()
                };
                loan.as_mut_slice().copy_from_slice(&msg);
                loan.commit().unwrap();
            }
        }),
        Box::new(move |n| {
            for _ in 0..n {
                let loan = if timeout {
                    rx.get_loan_timeout(TIMEOUT).unwrap()
                } else {
                    rx.get_loan().unwrap()
                };
                debug_assert_eq!(loan.len(), size);
                std::hint::black_box(super::checksum(loan.bytes()));
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

/// With [`Style::Timeout`], `put_timeout` / `get_timeout`.
fn typed_ends<P: Payload>(tx: Queue<P>, rx: Queue<P>, size: usize, style: Style) -> Ends {
    let msg = P::make(size);
    let timeout = style == Style::Timeout;
    (
        Box::new(move |n| {
            for _ in 0..n {
                if timeout {
                    tx.put_timeout(&msg, TIMEOUT).unwrap();
                } else {
                    tx.put(&msg).unwrap();
                }
            }
        }),
        Box::new(move |n| {
            for _ in 0..n {
                let m = if timeout {
                    rx.get_timeout(TIMEOUT).unwrap()
                } else {
                    rx.get().unwrap()
                };
                debug_assert_eq!(m.size(), size);
                std::hint::black_box(m);
            }
        }),
    )
}

/// With [`Style::Timeout`], `put_timeout` / `get_into_timeout`.
fn pod_ends<P: bytemuck::Pod + Send + Sync>(
    tx: PodQueue<P>,
    rx: PodQueue<P>,
    style: Style,
) -> Ends {
    let msg: Box<P> = zeroed_box();
    let timeout = style == Style::Timeout;
    (
        Box::new(move |n| {
            for _ in 0..n {
                if timeout {
                    tx.put_timeout(&msg, TIMEOUT).unwrap();
                } else {
                    tx.put(&msg).unwrap();
                }
            }
        }),
        Box::new(move |n| {
            // `get_into` copies straight from the ring into the caller's value (a `get`
            // returns `P` by value, through the stack: an extra copy at large sizes).
            let mut out: Box<P> = zeroed_box();
            for _ in 0..n {
                if timeout {
                    rx.get_into_timeout(&mut out, TIMEOUT).unwrap();
                } else {
                    rx.get_into(&mut out).unwrap();
                }
                std::hint::black_box(&out);
            }
        }),
    )
}

/// Panics on `shmq-batch` with [`Style::Timeout`], which the API does not have.
fn check_style(row: &str, style: Style) {
    assert!(
        row != "shmq-batch" || style == Style::Block,
        "shmq-batch runs only with blocking calls (the API has no put_many_timeout)"
    );
}

/// Parent side: create the down and up queues under `key`, with the ring capacity of
/// `cond`.
pub fn parent(row: &str, size: usize, cond: Cond, key: &str) -> Pending {
    let (d, u) = channel_names(key);
    let (opts, style) = (cond_opts(size, cond), cond.style);
    check_style(row, style);
    let finish: Box<dyn FnOnce() -> Ends> = match row {
        "shmq-raw" | "shmq-loan" | "shmq-batch" => {
            let tx = RawQueue::create_with(d.as_str(), &opts).unwrap();
            let rx = RawQueue::create_with(u.as_str(), &opts).unwrap();
            match row {
                "shmq-raw" => Box::new(move || raw_ends(tx, rx, size, style)),
                "shmq-loan" => Box::new(move || loan_ends(tx, rx, size, style)),
                _ => Box::new(move || batch_ends(tx, rx, size)),
            }
        }
        "shmq-typed" => with_payload!(size, P => {
            let tx = Queue::<P>::create_with(d.as_str(), &opts).unwrap();
            let rx = Queue::<P>::create_with(u.as_str(), &opts).unwrap();
            Box::new(move || typed_ends(tx, rx, size, style))
        }),
        "shmq-pod" => with_pod!(size, P => {
            let tx = PodQueue::<P>::create_with(d.as_str(), &opts).unwrap();
            let rx = PodQueue::<P>::create_with(u.as_str(), &opts).unwrap();
            Box::new(move || pod_ends(tx, rx, style))
        }),
        other => panic!("unknown row {other}"),
    };
    Pending::new(row, size, cond, key, finish)
}

/// Child side: open the queues the parent created (send up, receive down), and call them in
/// `style`.
pub fn child(row: &str, size: usize, style: Style, key: &str) -> Ends {
    let (d, u) = channel_names(key);
    check_style(row, style);
    match row {
        "shmq-raw" => raw_ends(
            RawQueue::open(&u).unwrap(),
            RawQueue::open(&d).unwrap(),
            size,
            style,
        ),
        "shmq-loan" => loan_ends(
            RawQueue::open(&u).unwrap(),
            RawQueue::open(&d).unwrap(),
            size,
            style,
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
            style,
        )),
        "shmq-pod" => with_pod!(size, P => pod_ends(
            PodQueue::<P>::open(&u).unwrap(),
            PodQueue::<P>::open(&d).unwrap(),
            style,
        )),
        other => panic!("unknown row {other}"),
    }
}

/// Both ends of the row `row` on one queue in this process, in condition `cond`, for the
/// one-thread profile (`SHMQ_BENCH_PROFILE="solo ..."`): what `send` puts, `recv` takes.
pub fn solo(row: &str, size: usize, cond: Cond, key: &str) -> Ends {
    check_style(row, cond.style);
    let tx = RawQueue::create_with(key, &cond_opts(size, cond)).unwrap();
    let rx = RawQueue::open(key).unwrap();
    match row {
        "shmq-raw" => raw_ends(tx, rx, size, cond.style),
        "shmq-loan" => loan_ends(tx, rx, size, cond.style),
        "shmq-batch" => batch_ends(tx, rx, size),
        other => panic!("no solo mode for row {other} (shmq-raw, shmq-loan, shmq-batch)"),
    }
}
