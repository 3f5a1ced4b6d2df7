//! Loans across processes (issue 13): a read loan's messages survive the death of its
//! holder (at-least-once), a write loan's holder killed mid-fill publishes nothing, and
//! both locks are recovered; typed read loans decode borrowing types in place.

mod common;

use std::time::Duration;

use common::{child, say, uniq};
use shmq::{Error, Queue, RawQueue, TypedWriteLoan};

/// How long a child may take before it counts as hung.
const LIMIT: Duration = Duration::from_secs(60);

common::child_roles!(lend_and_hang, reserve_and_hang, encode_and_hang);

/// lend_and_hang:<queue>:<max> — lends up to `max` messages, says how many and their
/// bytes, then waits to be killed without committing.
fn lend_and_hang(args: &[String]) {
    let q = RawQueue::open(&args[0]).unwrap();
    let loans = q.get_loans(args[1].parse().unwrap()).unwrap();
    for (_, m) in loans.iter() {
        say(String::from_utf8_lossy(m));
    }
    say("lent");
    std::thread::sleep(LIMIT);
}

/// reserve_and_hang:<queue>:<len> — reserves a write loan, fills half of it, says so,
/// then waits to be killed without committing.
fn reserve_and_hang(args: &[String]) {
    let q = RawQueue::open(&args[0]).unwrap();
    let mut loan = q.put_loan(args[1].parse().unwrap()).unwrap();
    let half = loan.len() / 2;
    loan.as_mut_slice()[..half].fill(b'x');
    say("reserved");
    std::thread::sleep(LIMIT);
}

/// encode_and_hang:<queue>:<text> — encodes `(7, text)` into a typed write loan on a
/// `Queue<(u32, String)>`, says so, then waits to be killed without committing.
fn encode_and_hang(args: &[String]) {
    let q: Queue<(u32, String)> = Queue::open(&args[0]).unwrap();
    let loan = q.put_loan(&(7, args[1].clone())).unwrap();
    say(format!("encoded {}", loan.len()));
    std::thread::sleep(LIMIT);
}

/// A consumer killed (SIGKILL) while holding a read loan of three messages: all three go
/// to the next consumer, in order, and nothing else was taken (at-least-once).
#[test]
fn read_loan_holder_killed_hands_messages_to_the_next_consumer() {
    let name = uniq("loan-r");
    let q = RawQueue::create(&name, 4096).unwrap();
    q.put_many(&[b"m1".as_slice(), b"m2", b"m3", b"m4"])
        .unwrap();
    let mut kid = child!(lend_and_hang).arg(&name).arg(3).spawn();
    let lent: Vec<String> = (0..4).map(|_| kid.line(LIMIT, "lend")).collect();
    assert_eq!(lent, ["m1", "m2", "m3", "lent"]);
    // The holder keeps the consumer lock: a try_get gives up meanwhile.
    assert!(matches!(q.try_get_into(&mut Vec::new()), Err(Error::Empty)));
    kid.kill();
    kid.wait(LIMIT);
    {
        let loans = q.get_loans_timeout(10, LIMIT).unwrap();
        let got: Vec<&[u8]> = loans.iter().map(|(_, m)| m).collect();
        assert_eq!(got, [b"m1".as_slice(), b"m2", b"m3", b"m4"]);
    }
    assert_eq!(q.len(), 4);
    for want in [b"m1", b"m2", b"m3", b"m4"] {
        let l = q.get_loan_timeout(LIMIT).unwrap();
        assert_eq!(&*l, want);
        l.commit();
    }
    assert!(q.is_empty());
}

/// A producer killed while filling a write loan: nothing of it is published, the
/// producer lock is recovered, and the next put (of the whole ring's worth) goes through.
#[test]
fn write_loan_holder_killed_publishes_nothing() {
    let name = uniq("loan-w");
    let q = RawQueue::create(&name, 4096).unwrap();
    q.put(b"before").unwrap();
    let mut kid = child!(reserve_and_hang).arg(&name).arg(3000).spawn();
    assert_eq!(kid.line(LIMIT, "reserve"), "reserved");
    kid.kill();
    kid.wait(LIMIT);
    q.put_timeout(b"after", LIMIT).unwrap();
    assert_eq!(q.get_vec().unwrap(), b"before");
    assert_eq!(q.get_vec().unwrap(), b"after");
    assert!(q.is_empty());
    let big = vec![7u8; q.max_message()];
    q.put_timeout(&big, LIMIT).unwrap();
    assert_eq!(q.get_vec().unwrap(), big);
}

/// Typed read loans decode borrowing types straight from the ring; a decode that does
/// not match is a `Codec` error and leaves the message queued.
#[test]
fn typed_read_loan_borrows_and_a_bad_decode_loses_nothing() {
    #[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
    struct Owned {
        id: u32,
        text: String,
        #[serde(with = "serde_bytes")]
        blob: Vec<u8>,
    }
    #[derive(serde::Deserialize, Debug, PartialEq)]
    struct Borrowed<'a> {
        id: u32,
        text: &'a str,
        #[serde(borrow)]
        blob: &'a serde_bytes::Bytes,
    }
    let name = uniq("loan-t");
    let q: Queue<Owned> = Queue::create(&name, 1 << 16).unwrap();
    let m = Owned {
        id: 7,
        text: "in place".into(),
        blob: vec![1, 2, 3, 250],
    };
    q.put(&m).unwrap();
    {
        let loan = q.get_loan().unwrap();
        assert!(matches!(
            loan.decode::<(u64, u64, u64, u64)>(),
            Err(Error::Codec(_))
        ));
        let ring = loan.bytes().as_ptr_range();
        // The safe decode borrows from the loan's private copy, not from the ring.
        let b: Borrowed<'_> = loan.decode().unwrap();
        assert_eq!(
            (b.id, b.text, &b.blob[..]),
            (7, "in place", &[1u8, 2, 3, 250][..])
        );
        assert!(!ring.contains(&b.text.as_ptr()));
        // The zero-copy decode borrows the ring's bytes themselves.
        // SAFETY: only this test's processes write this queue, all through shmq.
        let b: Borrowed<'_> = unsafe { loan.decode_in_place() }.unwrap();
        assert_eq!(
            (b.id, b.text, &b.blob[..]),
            (7, "in place", &[1u8, 2, 3, 250][..])
        );
        assert!(ring.contains(&b.text.as_ptr()));
    }
    assert_eq!(q.len(), 1);
    assert_eq!(q.get().unwrap(), m);
}

/// Zero-length and maximum-size messages through both loans; `put_loan` of more than the
/// largest message is `TooLarge` at once, and timeouts of zero and `Duration::MAX` work.
#[test]
fn loans_at_the_edges() {
    let name = uniq("loan-e");
    let q = RawQueue::create(&name, 4096).unwrap();
    let max = q.max_message();
    assert!(matches!(
        q.put_loan(max + 1),
        Err(Error::TooLarge { size, max: m }) if size == max + 1 && m == max
    ));
    q.put_loan(0).unwrap().commit().unwrap();
    let l = q.get_loan_timeout(Duration::ZERO).unwrap();
    assert!(l.is_empty());
    l.commit();
    let mut w = q.put_loan_timeout(max, Duration::MAX).unwrap();
    w.as_mut_slice().fill(9);
    // The same thread's put would wait for the loan's own lock: refused at once.
    assert!(matches!(q.try_put(b"x"), Err(Error::InvalidArgument(_))));
    w.commit().unwrap();
    assert!(matches!(q.try_put_loan(1), Err(Error::Full)));
    assert!(matches!(
        q.put_loan_timeout(1, Duration::ZERO),
        Err(Error::Timeout)
    ));
    let l = q.get_loan_timeout(Duration::MAX).unwrap();
    assert_eq!(l.len(), max);
    assert!(l.iter().all(|&b| b == 9));
    l.commit();
    assert!(matches!(q.try_get_loan(), Err(Error::Empty)));
    assert!(matches!(
        q.get_loan_timeout(Duration::ZERO),
        Err(Error::Timeout)
    ));
    q.close();
    assert!(matches!(q.get_loan(), Err(Error::Closed)));
    assert!(matches!(q.put_loan(1), Err(Error::Closed)));
}

/// `uid` is shared by every handle on one queue and differs for a queue re-created under
/// the same name (so the bridge's message ids never collide across re-creation).
#[test]
fn uid_names_the_queue_incarnation() {
    let name = uniq("loan-u");
    let a = RawQueue::create(&name, 4096).unwrap();
    let b = RawQueue::open(&name).unwrap();
    assert_eq!(a.uid(), b.uid());
    assert_ne!(a.uid(), 0);
    let first = a.uid();
    drop((a, b));
    let c = RawQueue::create(&name, 4096).unwrap();
    assert_ne!(c.uid(), first);
}

/// The thread holding a loan cannot deadlock on its own lock: a get under a read loan (or
/// a put under a write loan) on the same queue fails at once; the other side works, and so
/// does the same side on another queue.
#[test]
fn same_thread_calls_under_a_loan_fail_instead_of_waiting() {
    let a = RawQueue::create(&uniq("loan-sa"), 4096).unwrap();
    let b = RawQueue::create(&uniq("loan-sb"), 4096).unwrap();
    a.put(b"1").unwrap();
    b.put(b"2").unwrap();
    let la = a.get_loan().unwrap();
    assert!(matches!(a.get_vec(), Err(Error::InvalidArgument(_))));
    // Also through a second handle of this process on the same queue (another mapping).
    let a2 = RawQueue::open(a.name()).unwrap();
    assert!(matches!(a2.get_vec(), Err(Error::InvalidArgument(_))));
    assert!(matches!(a.get_loan(), Err(Error::InvalidArgument(_))));
    a.put(b"3").unwrap();
    let lb = b.get_loan().unwrap();
    assert_eq!(&*lb, b"2");
    drop(la);
    lb.commit();
    assert_eq!(a.get_vec().unwrap(), b"1");
    let w = a.put_loan(4).unwrap();
    assert!(matches!(a.put(b"x"), Err(Error::InvalidArgument(_))));
    assert_eq!(a.get_vec().unwrap(), b"3");
    drop(w);
    a.put(b"y").unwrap();
    assert_eq!(a.get_vec().unwrap(), b"y");
}

/// The typed write loan: the message is encoded in place and published by `commit` only;
/// a dropped loan publishes nothing; zero-size messages; a message larger than the ring is
/// `TooLarge` at once, with the sizes; the try/timeout forms; the loan's own put refused.
#[test]
fn typed_write_loan_commits_drops_and_edges() {
    let name = uniq("loan-tw");
    let q: Queue<(u32, String)> = Queue::create(&name, 4096).unwrap();
    let loan: TypedWriteLoan<'_, (u32, String)> = q.put_loan(&(1, "one".into())).unwrap();
    assert_eq!(loan.len(), 5);
    assert!(q.is_empty(), "nothing published before commit");
    // This thread holds the producer lock: its own put is refused, not a deadlock.
    assert!(matches!(
        q.try_put(&(9, "x".into())),
        Err(Error::InvalidArgument(_))
    ));
    loan.commit().unwrap();
    drop(q.put_loan(&(2, "dropped".into())).unwrap());
    q.put_loan_timeout(&(3, "three".into()), Duration::MAX)
        .unwrap()
        .commit()
        .unwrap();
    assert_eq!(q.drain().unwrap(), [(1, "one".into()), (3, "three".into())]);
    let s = q.stats();
    assert_eq!((s.puts, s.len), (2, 0));

    // Larger than the ring: TooLarge at once, with the encoded size and the largest.
    let max = q.raw().max_message();
    let big = (5u32, "x".repeat(max));
    match q.put_loan(&big) {
        Err(Error::TooLarge { size, max: m }) => assert_eq!((size, m), (max + 3, max)),
        other => panic!("{other:?}"),
    }
    // The largest message that fits: 1 + 2 length bytes + text.
    let fits = (5u32, "y".repeat(max - 3));
    let l = q.try_put_loan(&fits).unwrap();
    assert_eq!(l.len(), max);
    l.commit().unwrap();
    assert!(matches!(
        q.try_put_loan(&(0, String::new())),
        Err(Error::Full)
    ));
    assert!(matches!(
        q.put_loan_timeout(&(0, String::new()), Duration::ZERO),
        Err(Error::Timeout)
    ));
    assert_eq!(q.get().unwrap(), fits);

    // Zero-size messages.
    let unit_name = uniq("loan-tz");
    let u: Queue<()> = Queue::create(&unit_name, 4096).unwrap();
    let l = u.put_loan(&()).unwrap();
    assert!(l.is_empty());
    l.commit().unwrap();
    drop(u.put_loan(&()).unwrap());
    assert_eq!(u.len(), 1);
    u.get().unwrap();
    assert!(u.is_empty());

    // A message that does not serialise: Codec, nothing reserved or published.
    let m_name = uniq("loan-tm");
    let m: Queue<std::collections::HashMap<u8, Refuses>> = Queue::create(&m_name, 4096).unwrap();
    let mut bad = std::collections::HashMap::new();
    bad.insert(1u8, Refuses);
    match m.put_loan(&bad) {
        Err(Error::Codec(why)) => assert!(why.contains("refuses"), "{why}"),
        other => panic!("{other:?}"),
    }
    assert!(m.is_empty());
    m.put(&Default::default()).unwrap();

    q.close();
    assert!(matches!(
        q.put_loan(&(0, String::new())),
        Err(Error::Closed)
    ));
}

/// A value whose serialisation always fails.
#[derive(Debug, PartialEq)]
struct Refuses;
impl serde::Serialize for Refuses {
    fn serialize<S: serde::Serializer>(&self, _: S) -> Result<S::Ok, S::Error> {
        Err(serde::ser::Error::custom("Refuses refuses to be encoded"))
    }
}
impl<'de> serde::Deserialize<'de> for Refuses {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        <()>::deserialize(d).map(|_| Refuses)
    }
}

/// A producer killed holding a typed write loan (its message encoded in place, not
/// committed): nothing of it is published, the lock is recovered, the queue works on.
#[test]
fn typed_write_loan_holder_killed_publishes_nothing() {
    let name = uniq("loan-tk");
    let q: Queue<(u32, String)> = Queue::create(&name, 4096).unwrap();
    q.put(&(1, "before".into())).unwrap();
    let mut kid = child!(encode_and_hang)
        .arg(&name)
        .arg("never published")
        .spawn();
    assert_eq!(kid.line(LIMIT, "encode"), "encoded 17");
    assert_eq!(q.len(), 1);
    kid.kill();
    kid.wait(LIMIT);
    q.put_loan_timeout(&(2, "after".into()), LIMIT)
        .unwrap()
        .commit()
        .unwrap();
    assert_eq!(
        q.drain().unwrap(),
        [(1, "before".into()), (2, "after".into())]
    );
}
