//! ipmpsc's rows: `ipmpsc-serde` (its bincode path) and `ipmpsc-zc` (its zero-copy receive
//! of `serde_bytes::Bytes`).

use super::{channel_names, Ends, Pending};
use crate::cond::Cond;
use crate::payloads::{with_payload, Payload};

/// The ring files of the down and up channels under `key`.
fn ipmpsc_paths(key: &str) -> (String, String) {
    let (d, u) = channel_names(key);
    (format!("/dev/shm/{d}"), format!("/dev/shm/{u}"))
}

/// Removes files when dropped (ipmpsc's ring files, once the case is over).
struct RemoveOnDrop(Vec<String>);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        for f in &self.0 {
            let _ = std::fs::remove_file(f);
        }
    }
}

fn ipmpsc_ends(row: &str, tx: ipmpsc::Sender, mut rx: ipmpsc::Receiver, size: usize) -> Ends {
    if row == "ipmpsc-zc" {
        let msg = vec![0xa5u8; size];
        (
            Box::new(move |n| {
                for _ in 0..n {
                    tx.send(&serde_bytes::Bytes::new(&msg)).unwrap();
                }
            }),
            Box::new(move |n| {
                for _ in 0..n {
                    let mut ctx = rx.zero_copy_context();
                    let m: &serde_bytes::Bytes = ctx.recv().unwrap();
                    debug_assert_eq!(m.len(), size);
                    // Read every byte once, as every other row's consumer does (before
                    // session 5 this row read none: at 64 KiB and 1 MiB it measured a
                    // consumer that never touched the payload).
                    std::hint::black_box(super::checksum(m));
                }
            }),
        )
    } else {
        with_payload!(size, P => {
            let msg = P::make(size);
            (
                Box::new(move |n| {
                    for _ in 0..n {
                        tx.send(&msg).unwrap();
                    }
                }),
                Box::new(move |n| {
                    for _ in 0..n {
                        let m: P = rx.recv().unwrap();
                        debug_assert_eq!(m.size(), size);
                        std::hint::black_box(m);
                    }
                }),
            )
        })
    }
}

/// Parent side: create the down and up ring files under `key` (removed once the case is
/// over), each with the ring capacity of `cond` (the same as shmq's in that condition).
pub fn parent(row: &str, size: usize, cond: Cond, key: &str) -> Pending {
    let cap = (cond.ring.cap(size) + 64) as u32;
    let (pd, pu) = ipmpsc_paths(key);
    let tx = ipmpsc::Sender::new(ipmpsc::SharedRingBuffer::create(&pd, cap).unwrap());
    let rx = ipmpsc::Receiver::new(ipmpsc::SharedRingBuffer::create(&pu, cap).unwrap());
    let which = row.to_string();
    let finish: Box<dyn FnOnce() -> Ends> = Box::new(move || {
        let (mut send, recv) = ipmpsc_ends(&which, tx, rx, size);
        let files = RemoveOnDrop(vec![pd, pu]);
        (
            Box::new(move |n| {
                let _ = &files;
                send(n)
            }),
            recv,
        )
    });
    Pending::new(row, size, cond, key, finish)
}

/// Child side: open the ring files the parent created (send up, receive down).
pub fn child(row: &str, size: usize, key: &str) -> Ends {
    let (pd, pu) = ipmpsc_paths(key);
    let tx = ipmpsc::Sender::new(ipmpsc::SharedRingBuffer::open(&pu).unwrap());
    let rx = ipmpsc::Receiver::new(ipmpsc::SharedRingBuffer::open(&pd).unwrap());
    ipmpsc_ends(row, tx, rx, size)
}
