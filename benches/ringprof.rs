//! `ringprof`: one shmq queue between two pinned processes, with the ring size, the payload
//! size and the call style chosen on the command line, for `perf stat`, `perf record`,
//! `strace -c` and callgrind (issue 14's profiling; see docs/performance.md, "Where the time
//! goes"). Unlike the criterion suite it runs one case once and prints what a profile needs
//! beside the rate: each side's CPU time and context switches, and the queue's
//! `full_events` / `empty_events` (how often a side was about to sleep in the kernel).
//!
//! ```text
//! ringprof tput  <size> <cap> <n> [same] [timeout] [spin=<us>]   # parent puts, child gets
//! ringprof rtt   <size> <cap> <n> [same] [timeout] [spin=<us>]   # ping-pong, percentiles
//! ringprof floor <size> <cap> <n> [same] [cas] [pfw] [lag=<bytes>]   # a bare SPSC ring
//! ringprof solo  <size> <cap> <n> [timeout]   # one thread: put + get (callgrind)
//! ringprof pingpong <size> <cap> <n>   # round-trip floor: two threads, one word (cap unused)
//! ```
//! `<cap>` accepts `K`/`M` suffixes (`256K`, `16M`). The parent runs on CPU 0, the peer on
//! CPU 1 (`same`: CPU 0). `timeout` uses `put_timeout` / `get_into_timeout` (10 s) instead
//! of the blocking calls; `spin=` sets `Options::spin`. `floor` moves the same records
//! (8-byte length + payload, 8-byte aligned) between two threads through a plain byte ring
//! with one `head` and one `tail` word on separate cache lines and nothing else: no locks,
//! counters, validation or wake-ups. It is the memory system's floor for that stream.
//!
//! Run: `cargo bench -p shmq-benches --bench ringprof -- tput 1024 16M 2000000`
//! (or the binary under `target/release/deps/ringprof-*` directly, e.g. under
//! `perf stat -e task-clock,context-switches,syscalls:sys_enter_futex`).

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use shmq::{Options, RawQueue};

/// Environment variable that marks the peer process (holds its arguments).
const CHILD_ENV: &str = "RINGPROF_CHILD";
/// Timeout of the `*_timeout` call style: never reached in a run.
const TIMEOUT: Duration = Duration::from_secs(10);

/// One run's parameters.
#[derive(Clone)]
struct Spec {
    mode: String,
    size: usize,
    cap: usize,
    n: u64,
    same: bool,
    timeout: bool,
    spin: Option<Duration>,
    /// `floor` variants (see [`floor`]).
    cas: bool,
    pfw: bool,
    lag: u64,
}

fn parse_cap(s: &str) -> usize {
    let (num, mul) = match s.as_bytes().last() {
        Some(b'K' | b'k') => (&s[..s.len() - 1], 1 << 10),
        Some(b'M' | b'm') => (&s[..s.len() - 1], 1 << 20),
        _ => (s, 1),
    };
    num.parse::<usize>().expect("capacity") * mul
}

fn parse(args: &[String]) -> Option<Spec> {
    if args.len() < 4 {
        return None;
    }
    let mut s = Spec {
        mode: args[0].clone(),
        size: args[1].parse().ok()?,
        cap: parse_cap(&args[2]),
        n: args[3].parse().ok()?,
        same: false,
        timeout: false,
        spin: None,
        cas: false,
        pfw: false,
        lag: 0,
    };
    for a in &args[4..] {
        match a.as_str() {
            "same" => s.same = true,
            "timeout" => s.timeout = true,
            "cas" => s.cas = true,
            "pfw" => s.pfw = true,
            x if x.starts_with("lag=") => s.lag = parse_cap(&x[4..]) as u64,
            x if x.starts_with("spin=") => {
                s.spin = Some(Duration::from_micros(x[5..].parse().ok()?));
            }
            _ => return None,
        }
    }
    Some(s)
}

fn pin(cpu: usize) {
    // SAFETY: cpu_set_t is plain data; zeroed is a valid empty set, CPU_SET writes inside it,
    // and sched_setaffinity only reads it. Pid 0 means the calling thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

/// CPU time (user, system, in µs) and context switches (voluntary, involuntary) of the
/// calling process so far.
fn usage() -> [i64; 4] {
    // SAFETY: rusage is plain data; getrusage fills it.
    let ru = unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut ru);
        ru
    };
    let us = |t: libc::timeval| t.tv_sec * 1_000_000 + t.tv_usec;
    [us(ru.ru_utime), us(ru.ru_stime), ru.ru_nvcsw, ru.ru_nivcsw]
}

fn delta(a: [i64; 4], b: [i64; 4]) -> String {
    format!(
        "user {} us, sys {} us, vol cs {}, invol cs {}",
        b[0] - a[0],
        b[1] - a[1],
        b[2] - a[2],
        b[3] - a[3]
    )
}

fn opts(s: &Spec) -> Options {
    let o = Options::new().capacity(s.cap);
    match s.spin {
        Some(d) => o.spin(d),
        None => o,
    }
}

/// `put` or `put_timeout`, per the spec.
fn put(q: &RawQueue, msg: &[u8], timeout: bool) {
    if timeout {
        q.put_timeout(msg, TIMEOUT).unwrap();
    } else {
        q.put(msg).unwrap();
    }
}

/// `get_into` or `get_into_timeout`, per the spec.
fn get(q: &RawQueue, buf: &mut Vec<u8>, timeout: bool) -> usize {
    if timeout {
        q.get_into_timeout(buf, TIMEOUT).unwrap()
    } else {
        q.get_into(buf).unwrap()
    }
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn parent(s: &Spec, args: &[String]) {
    pin(0);
    let key = format!("ringprof-{}", std::process::id());
    let down_name = format!("{key}-d");
    let up_name = format!("{key}-u");
    let down = RawQueue::create_with(down_name.as_str(), &opts(s)).unwrap();
    let up = RawQueue::create_with(up_name.as_str(), &opts(s)).unwrap();
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(args)
        .env(CHILD_ENV, format!("{down_name} {up_name}"))
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let msg = vec![0xa5u8; s.size];
    let mut buf = Vec::with_capacity(s.size.max(8));
    // The child's "ready".
    get(&up, &mut buf, false);
    let (st0, u0) = (down.stats(), usage());
    let t = Instant::now();
    let mut lat = Vec::new();
    if s.mode == "tput" {
        for _ in 0..s.n {
            put(&down, &msg, s.timeout);
        }
        get(&up, &mut buf, false);
    } else {
        lat.reserve(s.n as usize);
        for _ in 0..s.n {
            let t1 = Instant::now();
            put(&down, &msg, s.timeout);
            get(&up, &mut buf, s.timeout);
            lat.push(t1.elapsed().as_nanos() as u64);
        }
    }
    let e = t.elapsed();
    let (st1, u1) = (down.stats(), usage());
    let mut report = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut report)
        .unwrap();
    child.wait().unwrap();
    let ns = e.as_nanos() as f64 / s.n as f64;
    let place = if s.same { "same" } else { "diff" };
    let style = if s.timeout { "timeout" } else { "blocking" };
    if s.mode == "tput" {
        println!(
            "tput {} B cap {} {place} {style}: {ns:.1} ns/msg, {:.2} M msg/s, {:.2} GB/s",
            s.size,
            s.cap,
            1e3 / ns,
            s.size as f64 / ns
        );
    } else {
        lat.sort_unstable();
        println!(
            "rtt {} B cap {} {place} {style}: mean {ns:.0} ns, p50 {} p99 {} p99.9 {} ns",
            s.size,
            s.cap,
            percentile(&lat, 0.5),
            percentile(&lat, 0.99),
            percentile(&lat, 0.999)
        );
    }
    println!(
        "  queue: full_events {} empty_events {} (per 1000 msgs: {:.3} / {:.3})",
        st1.full_events - st0.full_events,
        st1.empty_events - st0.empty_events,
        (st1.full_events - st0.full_events) as f64 * 1e3 / s.n as f64,
        (st1.empty_events - st0.empty_events) as f64 * 1e3 / s.n as f64,
    );
    println!("  parent (CPU 0): {}", delta(u0, u1));
    print!("  child: {report}");
}

fn child(s: &Spec, names: &str) {
    pin(if s.same { 0 } else { 1 });
    let mut it = names.split(' ');
    let down = RawQueue::open_with(it.next().unwrap(), &opts(s)).unwrap();
    let up = RawQueue::open_with(it.next().unwrap(), &opts(s)).unwrap();
    let mut buf = Vec::with_capacity(s.size.max(8));
    let u0 = usage();
    up.put(b"ready").unwrap();
    if s.mode == "tput" {
        for _ in 0..s.n {
            get(&down, &mut buf, s.timeout);
        }
        up.put(b"done").unwrap();
    } else {
        for _ in 0..s.n {
            get(&down, &mut buf, s.timeout);
            put(&up, &buf, s.timeout);
        }
    }
    let u1 = usage();
    let cpu = if s.same { 0 } else { 1 };
    println!("(CPU {cpu}): {}", delta(u0, u1));
    std::io::stdout().flush().unwrap();
}

/// The bare SPSC ring of the `floor` mode: `tail`, `head` and the stand-in lock words on
/// lines of their own.
#[repr(C, align(128))]
struct Word(AtomicU64);

struct Bare {
    tail: Word,
    head: Word,
    plock: Word,
    clock: Word,
    ring: *mut u8,
    cap: u64,
}

// SAFETY: the producer writes ring bytes only between `tail` and `head + cap` and the
// consumer reads them only between `head` and `tail`; the Release stores and Acquire loads
// of the two words order those accesses, so they never overlap.
unsafe impl Sync for Bare {}
// SAFETY: as above; the ring pointer is owned by `floor`, which outlives both threads.
unsafe impl Send for Bare {}

/// Ask for ownership of the cache lines of `len` bytes at `p` (x86 `prefetchw`: a hint,
/// never a fault, whatever the address).
#[inline(always)]
fn prefetch_write(p: *const u8, len: usize) {
    #[cfg(target_arch = "x86_64")]
    {
        let mut a = (p as usize) & !63;
        while a < p as usize + len {
            // SAFETY: prefetchw is a hint; it does not fault on any address.
            unsafe {
                std::arch::asm!("prefetchw [{0}]", in(reg) a, options(nostack, preserves_flags))
            };
            a += 64;
        }
    }
}

/// `floor`: `n` records of `size` bytes through a bare ring of `cap` bytes, producer on
/// CPU 0, consumer on CPU 1 (or 0). Records never straddle the end (like shmq's, a record
/// that would is preceded by a jump to offset 0, here implicit). Variants, to test one
/// cost at a time:
/// * `cas`: the producer takes and releases a lock word of its own with a
///   compare-and-swap each and publishes `tail` with a compare-and-swap (shmq's three
///   locked instructions per put; each waits for the stores before it to drain), the
///   consumer likewise takes and releases a lock word of its own around each get.
/// * `pfw`: after publishing, the producer asks for ownership (`prefetchw`) of the lines of
///   the next record, so that their transfer overlaps the rest of the put.
/// * `lag=<bytes>`: the consumer takes a record only once `tail` is that far past it (or
///   the producer is done): it never reads lines the producer is still writing.
fn floor(s: &Spec) {
    let rec = (8 + s.size as u64 + 7) & !7;
    assert!(rec <= s.cap as u64);
    let layout = std::alloc::Layout::from_size_align(s.cap, 4096).unwrap();
    // SAFETY: the layout has a non-zero size; freed below with the same layout.
    let ring = unsafe { std::alloc::alloc_zeroed(layout) };
    let b = Arc::new(Bare {
        tail: Word(AtomicU64::new(0)),
        head: Word(AtomicU64::new(0)),
        plock: Word(AtomicU64::new(0)),
        clock: Word(AtomicU64::new(0)),
        ring,
        cap: s.cap as u64,
    });
    // Position of a record written at `pos`: records that would straddle the end start at
    // the next multiple of the capacity instead.
    let place = move |pos: u64, cap: u64| -> u64 {
        if pos % cap + rec > cap {
            pos + (cap - pos % cap)
        } else {
            pos
        }
    };
    let (n, size, same, cas, pfw) = (s.n, s.size, s.same, s.cas, s.pfw);
    let lag = s.lag.min(s.cap as u64 / 2);
    let end = {
        let mut p = 0;
        for _ in 0..n {
            p = place(p, b.cap) + rec;
        }
        p
    };
    let relax = move || {
        if same {
            std::thread::yield_now();
        } else {
            std::hint::spin_loop();
        }
    };
    // The stand-in locks (producer 1, consumer 2): one compare-and-swap to take, one to
    // release; uncontended, as in a one-producer one-consumer run of shmq.
    let word = |b: &Bare, me: u64| -> *const AtomicU64 {
        if me == 1 {
            &b.plock.0
        } else {
            &b.clock.0
        }
    };
    let lock = move |b: &Bare, me: u64| {
        // SAFETY: `word` points into `b`, alive for this call.
        let w = unsafe { &*word(b, me) };
        while w
            .compare_exchange(0, me, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            relax();
        }
    };
    let unlock = move |b: &Bare, me: u64| {
        // SAFETY: as above.
        let w = unsafe { &*word(b, me) };
        let _ = w.compare_exchange(me, 0, Ordering::Release, Ordering::Relaxed);
    };
    let b2 = b.clone();
    let consumer = std::thread::spawn(move || {
        pin(if same { 0 } else { 1 });
        let mut buf = vec![0u8; size];
        let mut head = 0u64;
        let mut tail = 0u64;
        for _ in 0..n {
            let at = place(head, b2.cap);
            let want = (at + lag).min(end - 1);
            while tail <= want {
                tail = b2.tail.0.load(Ordering::Acquire);
                if tail <= want {
                    relax();
                }
            }
            if cas {
                lock(&b2, 2);
            }
            let off = (at % b2.cap) as usize;
            // SAFETY: the record at `at` is published (`tail` > `at`) and inside the ring.
            unsafe {
                let len = std::ptr::read_volatile(b2.ring.add(off) as *const u64) as usize;
                std::ptr::copy_nonoverlapping(b2.ring.add(off + 8), buf.as_mut_ptr(), len);
            }
            head = at + rec;
            b2.head.0.store(head, Ordering::Release);
            if cas {
                unlock(&b2, 2);
            }
        }
        std::hint::black_box(&buf);
    });
    pin(0);
    let msg = vec![0xa5u8; size];
    let mut tail = 0u64;
    let mut head = 0u64;
    let t = Instant::now();
    for _ in 0..n {
        if cas {
            lock(&b, 1);
        }
        let at = place(tail, b.cap);
        while at + rec - head > b.cap {
            head = b.head.0.load(Ordering::Acquire);
            if at + rec - head > b.cap {
                relax();
            }
        }
        let off = (at % b.cap) as usize;
        // SAFETY: `at .. at + rec` is free (the consumer's head is at most `cap` behind) and
        // inside the ring.
        unsafe {
            std::ptr::copy_nonoverlapping(msg.as_ptr(), b.ring.add(off + 8), size);
            std::ptr::write_volatile(b.ring.add(off) as *mut u64, size as u64);
        }
        let from = tail;
        tail = at + rec;
        if cas {
            let _ = b
                .tail
                .0
                .compare_exchange(from, tail, Ordering::Release, Ordering::Relaxed);
            unlock(&b, 1);
        } else {
            b.tail.0.store(tail, Ordering::Release);
        }
        if pfw {
            let next = (place(tail, b.cap) % b.cap) as usize;
            // A hint only: the lines may still hold records the consumer has not read
            // (then the prefetch merely moves them early).
            prefetch_write(b.ring.wrapping_add(next), rec as usize);
        }
    }
    consumer.join().unwrap();
    let e = t.elapsed();
    let ns = e.as_nanos() as f64 / n as f64;
    println!(
        "floor {size} B cap {} {}{}{}{}: {ns:.1} ns/msg, {:.2} M msg/s, {:.2} GB/s",
        s.cap,
        if same { "same" } else { "diff" },
        if cas { " cas" } else { "" },
        if pfw { " pfw" } else { "" },
        if lag > 0 {
            format!(" lag={lag}")
        } else {
            String::new()
        },
        1e3 / ns,
        size as f64 / ns
    );
    // SAFETY: allocated above with this layout; both threads are done with it.
    unsafe { std::alloc::dealloc(ring, layout) };
}

/// `solo`: one thread, one queue, `put` then `get_into` (or the `*_timeout` calls), `n`
/// times: no peer and no waiting, so callgrind's count is deterministic (two counts,
/// subtracted, give the instructions of one put + get at this ring size).
fn solo(s: &Spec) {
    let name = format!("ringprof-{}-s", std::process::id());
    let q = RawQueue::create_with(name.as_str(), &opts(s)).unwrap();
    let msg = vec![0xa5u8; s.size];
    let mut buf = Vec::with_capacity(s.size.max(8));
    let t = Instant::now();
    for _ in 0..s.n {
        put(&q, &msg, s.timeout);
        get(&q, &mut buf, s.timeout);
    }
    let ns = t.elapsed().as_nanos() as f64 / s.n as f64;
    println!("solo {} B cap {}: {ns:.1} ns per put + get", s.size, s.cap);
}

/// Two buffers and a sequence word shared by the two threads of the `pingpong` mode.
struct Floor {
    seq: Word,
    down: std::cell::UnsafeCell<Vec<u8>>,
    up: std::cell::UnsafeCell<Vec<u8>>,
}

// SAFETY: `down` is written only by the pinger while `seq` is even and read only by the
// echoer while it is odd (and `up` the other way round); the Release stores and Acquire
// loads of `seq` order those accesses, so they never overlap.
unsafe impl Sync for Floor {}

/// `pingpong`: the floor of a round trip (as the suite's `floor` row): two threads
/// spinning on one word, each copying the payload into a shared buffer and out again (the
/// four copies of a queue round trip), no locks, counters or yields. CPUs 0 and 1.
fn pingpong(s: &Spec) {
    let size = s.size;
    let f = Arc::new(Floor {
        seq: Word(AtomicU64::new(0)),
        down: std::cell::UnsafeCell::new(vec![0u8; size]),
        up: std::cell::UnsafeCell::new(vec![0u8; size]),
    });
    let n = s.n;
    let f2 = f.clone();
    let t = std::thread::spawn(move || {
        pin(1);
        let mut local = vec![0u8; size];
        for i in 0..n {
            let want = 2 * i + 1;
            while f2.seq.0.load(Ordering::Acquire) != want {
                std::hint::spin_loop();
            }
            // SAFETY: seq is odd (our turn): the pinger does not touch the buffers now.
            unsafe {
                local.copy_from_slice(&*f2.down.get());
                (*f2.up.get()).copy_from_slice(&local);
            }
            f2.seq.0.store(want + 1, Ordering::Release);
        }
    });
    pin(0);
    let msg = vec![0xa5u8; size];
    let mut local = vec![0u8; size];
    let mut lat = Vec::with_capacity(n as usize);
    for i in 0..n {
        let t1 = Instant::now();
        // SAFETY: seq is even (our turn): the echoer does not touch the buffers now.
        unsafe { (*f.down.get()).copy_from_slice(&msg) };
        f.seq.0.store(2 * i + 1, Ordering::Release);
        while f.seq.0.load(Ordering::Acquire) != 2 * i + 2 {
            std::hint::spin_loop();
        }
        // SAFETY: as above (seq even again).
        unsafe { local.copy_from_slice(&*f.up.get()) };
        lat.push(t1.elapsed().as_nanos() as u64);
    }
    t.join().unwrap();
    std::hint::black_box(&local);
    let mean = lat.iter().sum::<u64>() as f64 / n as f64;
    lat.sort_unstable();
    println!(
        "pingpong {size} B: mean {mean:.0} ns, p50 {} p99 {} p99.9 {} ns",
        percentile(&lat, 0.5),
        percentile(&lat, 0.99),
        percentile(&lat, 0.999)
    );
}

fn main() {
    // `cargo bench` passes `--bench`; `cargo test` passes nothing: print the usage then.
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    let Some(spec) = parse(&args) else {
        eprintln!(
            "usage: ringprof <tput|rtt|solo|floor|pingpong> <size> <cap[K|M]> <n> [same] [timeout] [spin=<us>] [cas] [pfw] [lag=<bytes>]"
        );
        return;
    };
    if let Ok(names) = std::env::var(CHILD_ENV) {
        return child(&spec, &names);
    }
    match spec.mode.as_str() {
        "tput" | "rtt" => parent(&spec, &args),
        "floor" => floor(&spec),
        "pingpong" => pingpong(&spec),
        "solo" => solo(&spec),
        m => eprintln!("unknown mode {m}"),
    }
}
