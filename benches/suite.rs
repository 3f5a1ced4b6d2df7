//! The shmq benchmark suite (issue 4): shmq against its peers, side by side, in one run.
//!
//! `cargo bench -p shmq-benches --bench suite` runs every case with criterion and writes the raw figures to
//! `target/shmq-bench/results.json`; `scripts/bench.sh` runs it and then
//! `scripts/bench_report.py`, which turns them into `BENCHMARKS.md` and the plot. See
//! `docs/performance.md`.
//!
//! Cross-process cases re-execute this binary as the peer process (the environment
//! variable `SHMQ_BENCH_CHILD` selects its role). The peer is spawned once per case; for
//! each criterion sample the parent writes a message count to the child's stdin, moves that
//! many messages (or round trips), and waits for the child's one-byte acknowledgement on
//! its stdout. The parent always runs on CPU 0; the child on CPU 1 (`diff`) or CPU 0
//! (`same`).
//!
//! `SHMQ_BENCH_QUICK=1` makes every case tiny (CI); `cargo test -p shmq-benches --benches`
//! runs the suite in criterion's test mode, which is just as quick.

use std::io::{BufReader, IoSlice, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, SamplingMode, Throughput};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_bytes::ByteBuf;
use shmq::Batch;
use shmq::{Options, PodQueue, Queue, RawQueue};

/// Payload sizes of the throughput workloads.
const SIZES: [usize; 5] = [8, 64, 1024, 64 << 10, 1 << 20];
/// Payload sizes of the latency workloads.
const LAT_SIZES: [usize; 2] = [8, 4096];
/// Payload size of the MPMC workloads.
const MPMC_SIZE: usize = 64;
/// Messages per `put_many` call on the batch path (at most; fewer for large payloads).
const BATCH: usize = 256;

/// Where the two processes (or threads) of a case run.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Place {
    /// Parent on CPU 0, peer on CPU 1.
    Diff,
    /// Both on CPU 0.
    Same,
}

impl Place {
    fn name(self) -> &'static str {
        match self {
            Place::Diff => "diff",
            Place::Same => "same",
        }
    }
    fn peer_cpu(self) -> usize {
        match self {
            Place::Diff => 1 % ncpus(),
            Place::Same => 0,
        }
    }
}

/// Online CPUs of the machine (not of our affinity mask, which pinning narrows).
fn ncpus() -> usize {
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    n.max(1) as usize
}

/// Pin the calling thread to `cpu` (`None`: allow every CPU).
fn pin(cpu: Option<usize>) {
    // SAFETY: cpu_set_t is plain data; zeroed is a valid empty set, CPU_SET writes inside it,
    // and sched_setaffinity only reads it. Pid 0 means the calling thread.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        match cpu {
            Some(c) => libc::CPU_SET(c, &mut set),
            None => {
                for c in 0..ncpus() {
                    libc::CPU_SET(c, &mut set);
                }
            }
        }
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

/// Ring capacity used by every ring-based transport for payloads of `size` bytes.
fn ring_cap(size: usize) -> usize {
    (size * 4 + 64).next_power_of_two().max(256 << 10)
}

fn unique_key() -> String {
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "shmqbench-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

// ---------------------------------------------------------------------------------------
// Payload types

/// A serde message of a given size: a `u64` for 8 bytes, else bytes via `serde_bytes`.
trait Payload: Serialize + DeserializeOwned + Clone + Send + 'static {
    fn make(size: usize) -> Self;
    fn size(&self) -> usize;
}

impl Payload for u64 {
    fn make(_: usize) -> u64 {
        0x0123_4567_89ab_cdef
    }
    fn size(&self) -> usize {
        8
    }
}

impl Payload for ByteBuf {
    fn make(size: usize) -> ByteBuf {
        ByteBuf::from(vec![0xa5; size])
    }
    fn size(&self) -> usize {
        self.len()
    }
}

macro_rules! with_payload {
    ($size:expr, $P:ident => $body:expr) => {
        if $size == 8 {
            type $P = u64;
            $body
        } else {
            type $P = ByteBuf;
            $body
        }
    };
}

macro_rules! with_pod {
    ($size:expr, $P:ident => $body:expr) => {
        match $size {
            8 => {
                type $P = u64;
                $body
            }
            64 => {
                type $P = [u8; 64];
                $body
            }
            1024 => {
                type $P = [u8; 1024];
                $body
            }
            4096 => {
                type $P = [u8; 4096];
                $body
            }
            65536 => {
                type $P = [[u8; 4096]; 16];
                $body
            }
            1048576 => {
                type $P = [[u8; 4096]; 256];
                $body
            }
            s => panic!("no Pod type for {s} bytes"),
        }
    };
}

// ---------------------------------------------------------------------------------------
// Transports: each gives a pair of "send n messages" / "receive n messages" closures, one
// pair in the parent (send = down, receive = up) and one in the child (send = up, receive =
// down).

type Ends = (Box<dyn FnMut(u64)>, Box<dyn FnMut(u64)>);

/// Rows of the cross-process tables.
const ROWS: [&str; 9] = [
    "shmq-raw",
    "shmq-typed",
    "shmq-pod",
    "shmq-batch",
    "ipmpsc-serde",
    "ipmpsc-zc",
    "ipc-typed",
    "ipc-bytes",
    "uds",
];

fn shmq_opts(size: usize) -> Options {
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

/// A zeroed `Box<P>` allocated directly on the heap (`Box::new(P::zeroed())` would build
/// the up-to-1 MiB value on the stack first).
fn zeroed_box<P: bytemuck::Pod>() -> Box<P> {
    let layout = std::alloc::Layout::new::<P>();
    assert!(layout.size() > 0);
    // SAFETY: the layout has a non-zero size; all-zero bytes are a valid `P` (Pod), and the
    // pointer comes from the global allocator with `P`'s layout, as Box::from_raw requires.
    unsafe {
        let p = std::alloc::alloc_zeroed(layout) as *mut P;
        if p.is_null() {
            std::alloc::handle_alloc_error(layout);
        }
        Box::from_raw(p)
    }
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

fn ipmpsc_path(key: &str, dir: &str) -> String {
    format!("/dev/shm/{key}-{dir}")
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
                    std::hint::black_box(m);
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

fn ipc_typed_ends<P: Payload>(
    tx: ipc_channel::ipc::IpcSender<P>,
    rx: ipc_channel::ipc::IpcReceiver<P>,
    size: usize,
) -> Ends {
    let msg = P::make(size);
    (
        Box::new(move |n| {
            for _ in 0..n {
                tx.send(msg.clone()).unwrap();
            }
        }),
        Box::new(move |n| {
            for _ in 0..n {
                let m = rx.recv().unwrap();
                debug_assert_eq!(m.size(), size);
                std::hint::black_box(m);
            }
        }),
    )
}

fn ipc_bytes_ends(
    tx: ipc_channel::ipc::IpcBytesSender,
    rx: ipc_channel::ipc::IpcBytesReceiver,
    size: usize,
) -> Ends {
    let msg = vec![0xa5u8; size];
    (
        Box::new(move |n| {
            for _ in 0..n {
                tx.send(&msg).unwrap();
            }
        }),
        Box::new(move |n| {
            for _ in 0..n {
                let m = rx.recv().unwrap();
                debug_assert_eq!(m.len(), size);
                std::hint::black_box(m);
            }
        }),
    )
}

/// Write all of `parts` with as few `writev` calls as possible.
fn write_all_vectored(s: &mut UnixStream, parts: [&[u8]; 2]) {
    let total = parts[0].len() + parts[1].len();
    let mut done = s
        .write_vectored(&[IoSlice::new(parts[0]), IoSlice::new(parts[1])])
        .unwrap();
    while done < total {
        if done < parts[0].len() {
            done += s.write(&parts[0][done..]).unwrap();
        } else {
            let off = done - parts[0].len();
            s.write_all(&parts[1][off..]).unwrap();
            done = total;
        }
    }
}

fn uds_ends(s: UnixStream, size: usize) -> Ends {
    let mut w = s.try_clone().unwrap();
    let mut r = BufReader::with_capacity(256 << 10, s);
    let msg = vec![0xa5u8; size];
    let hdr = (size as u32).to_le_bytes();
    let mut buf = vec![0u8; size];
    (
        Box::new(move |n| {
            for _ in 0..n {
                write_all_vectored(&mut w, [&hdr, &msg]);
            }
        }),
        Box::new(move |n| {
            for _ in 0..n {
                let mut h = [0u8; 4];
                r.read_exact(&mut h).unwrap();
                let len = u32::from_le_bytes(h) as usize;
                buf.resize(len, 0);
                r.read_exact(&mut buf).unwrap();
            }
        }),
    )
}

/// Parent side of a transport: resources created before the child is spawned, the spec
/// passed to it, and the step that completes the connection once it runs.
struct Pending {
    spec: String,
    finish: Box<dyn FnOnce() -> Ends>,
}

fn parent_link(row: &str, size: usize) -> Pending {
    let key = unique_key();
    let spec = format!("{row} {size} {key}");
    let (d, u) = (format!("{key}-d"), format!("{key}-u"));
    let finish: Box<dyn FnOnce() -> Ends> = match row {
        "shmq-raw" | "shmq-batch" => {
            let tx = RawQueue::create_with(d.as_str(), &shmq_opts(size)).unwrap();
            let rx = RawQueue::create_with(u.as_str(), &shmq_opts(size)).unwrap();
            if row == "shmq-raw" {
                Box::new(move || raw_ends(tx, rx, size))
            } else {
                Box::new(move || batch_ends(tx, rx, size))
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
        "ipmpsc-serde" | "ipmpsc-zc" => {
            let cap = (ring_cap(size) + 64) as u32;
            let (pd, pu) = (ipmpsc_path(&key, "d"), ipmpsc_path(&key, "u"));
            let tx = ipmpsc::Sender::new(ipmpsc::SharedRingBuffer::create(&pd, cap).unwrap());
            let rx = ipmpsc::Receiver::new(ipmpsc::SharedRingBuffer::create(&pu, cap).unwrap());
            let row = row.to_string();
            Box::new(move || {
                let (mut send, recv) = ipmpsc_ends(&row, tx, rx, size);
                let files = RemoveOnDrop(vec![pd, pu]);
                (
                    Box::new(move |n| {
                        let _ = &files;
                        send(n)
                    }),
                    recv,
                )
            })
        }
        "ipc-typed" => with_payload!(size, P => {
            type Boot = (ipc_channel::ipc::IpcSender<P>, ipc_channel::ipc::IpcReceiver<P>);
            let (server, name) = ipc_channel::ipc::IpcOneShotServer::<Boot>::new().unwrap();
            return Pending {
                spec: format!("{row} {size} {name}"),
                finish: Box::new(move || {
                    let (_, (tx, rx)) = server.accept().unwrap();
                    ipc_typed_ends(tx, rx, size)
                }),
            };
        }),
        "ipc-bytes" => {
            type Boot = (
                ipc_channel::ipc::IpcBytesSender,
                ipc_channel::ipc::IpcBytesReceiver,
            );
            let (server, name) = ipc_channel::ipc::IpcOneShotServer::<Boot>::new().unwrap();
            return Pending {
                spec: format!("{row} {size} {name}"),
                finish: Box::new(move || {
                    let (_, (tx, rx)) = server.accept().unwrap();
                    ipc_bytes_ends(tx, rx, size)
                }),
            };
        }
        "uds" => {
            let path = std::env::temp_dir().join(format!("{key}.sock"));
            let listener = UnixListener::bind(&path).unwrap();
            let spec = format!("{row} {size} {}", path.display());
            return Pending {
                spec,
                finish: Box::new(move || {
                    let (s, _) = listener.accept().unwrap();
                    let _ = std::fs::remove_file(&path);
                    uds_ends(s, size)
                }),
            };
        }
        other => panic!("unknown row {other}"),
    };
    Pending { spec, finish }
}

/// Child side of [`parent_link`]: returns (send up, receive down).
fn child_link(row: &str, size: usize, key: &str) -> Ends {
    let (d, u) = (format!("{key}-d"), format!("{key}-u"));
    match row {
        "shmq-raw" => raw_ends(
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
        "ipmpsc-serde" | "ipmpsc-zc" => {
            let tx = ipmpsc::Sender::new(
                ipmpsc::SharedRingBuffer::open(&ipmpsc_path(key, "u")).unwrap(),
            );
            let rx = ipmpsc::Receiver::new(
                ipmpsc::SharedRingBuffer::open(&ipmpsc_path(key, "d")).unwrap(),
            );
            ipmpsc_ends(row, tx, rx, size)
        }
        "ipc-typed" => with_payload!(size, P => {
            let (dtx, drx) = ipc_channel::ipc::channel::<P>().unwrap();
            let (utx, urx) = ipc_channel::ipc::channel::<P>().unwrap();
            let boot = ipc_channel::ipc::IpcSender::connect(key.to_string()).unwrap();
            boot.send((dtx, urx)).unwrap();
            ipc_typed_ends(utx, drx, size)
        }),
        "ipc-bytes" => {
            let (dtx, drx) = ipc_channel::ipc::bytes_channel().unwrap();
            let (utx, urx) = ipc_channel::ipc::bytes_channel().unwrap();
            let boot = ipc_channel::ipc::IpcSender::connect(key.to_string()).unwrap();
            boot.send((dtx, urx)).unwrap();
            ipc_bytes_ends(utx, drx, size)
        }
        "uds" => uds_ends(UnixStream::connect(key).unwrap(), size),
        other => panic!("unknown row {other}"),
    }
}

// ---------------------------------------------------------------------------------------
// Peer processes

/// A child process re-executing this binary in a role, driven over its stdin/stdout.
struct Peer {
    child: Child,
    cin: ChildStdin,
    cout: ChildStdout,
}

impl Peer {
    fn spawn(spec: &str) -> Peer {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .env("SHMQ_BENCH_CHILD", spec)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn bench peer");
        let cin = child.stdin.take().unwrap();
        let cout = child.stdout.take().unwrap();
        Peer { child, cin, cout }
    }

    /// Tell the peer to handle `n` messages.
    fn go(&mut self, n: u64) {
        self.cin.write_all(&n.to_le_bytes()).unwrap();
        self.cin.flush().unwrap();
    }

    /// Wait for the peer's acknowledgement byte.
    fn ack(&mut self) -> u8 {
        let mut b = [0u8; 1];
        self.cout
            .read_exact(&mut b)
            .expect("bench peer died (see its stderr)");
        b[0]
    }

    fn read_u64(&mut self) -> u64 {
        let mut b = [0u8; 8];
        self.cout.read_exact(&mut b).unwrap();
        u64::from_le_bytes(b)
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.cin.write_all(&0u64.to_le_bytes());
        let _ = self.cin.flush();
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match self.child.try_wait() {
                Ok(Some(_)) => return,
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(2))
                }
                _ => {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    return;
                }
            }
        }
    }
}

/// Read the next command (message count) from stdin; `None` on 0 or end of input.
fn next_cmd() -> Option<u64> {
    let mut b = [0u8; 8];
    std::io::stdin().lock().read_exact(&mut b).ok()?;
    Some(u64::from_le_bytes(b)).filter(|&n| n > 0)
}

fn send_byte(b: u8) {
    let mut out = std::io::stdout().lock();
    out.write_all(&[b]).unwrap();
    out.flush().unwrap();
}

fn send_u64(v: u64) {
    let mut out = std::io::stdout().lock();
    out.write_all(&v.to_le_bytes()).unwrap();
    out.flush().unwrap();
}

/// Entry point of a peer process. Spec: `<kind> <cpu> <row> <size> <key>`.
fn child_main(spec: &str) {
    // SAFETY: prctl(PR_SET_PDEATHSIG) only sets a flag of this process: a peer blocked in
    // some transport's receive must not outlive an interrupted suite.
    unsafe {
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
    }
    let parts: Vec<&str> = spec.split(' ').collect();
    let (kind, cpu) = (parts[0], parts[1]);
    if let Ok(c) = cpu.parse::<usize>() {
        pin(Some(c));
    }
    match kind {
        "tput" | "echo" => {
            let (row, size, key) = (parts[2], parts[3].parse().unwrap(), parts[4]);
            let (mut send_up, mut recv_down) = child_link(row, size, key);
            send_byte(b'r');
            while let Some(n) = next_cmd() {
                if kind == "tput" {
                    recv_down(n);
                } else {
                    for _ in 0..n {
                        recv_down(1);
                        send_up(1);
                    }
                }
                send_byte(b'k');
            }
        }
        "mprod" | "mcons" => {
            let (size, key) = (parts[2].parse::<usize>().unwrap(), parts[3]);
            let q = RawQueue::open(key).unwrap();
            let msg = vec![0xa5u8; size];
            let mut buf = Vec::with_capacity(size);
            send_byte(b'r');
            while let Some(n) = next_cmd() {
                for _ in 0..n {
                    if kind == "mprod" {
                        q.put(&msg).unwrap();
                    } else {
                        q.get_into(&mut buf).unwrap();
                    }
                }
                send_byte(b'k');
            }
        }
        "idle" => {
            let (key, wait_ms) = (parts[2], parts[3].parse::<u64>().unwrap());
            let q = RawQueue::open(key).unwrap();
            let mut buf = Vec::new();
            send_byte(b'r');
            // Phase 1: a get that times out on an empty queue.
            let t0 = cpu_time_us();
            let w0 = Instant::now();
            let r = q.get_into_timeout(&mut buf, Duration::from_millis(wait_ms));
            assert!(matches!(r, Err(shmq::Error::Timeout)), "{r:?}");
            send_u64(cpu_time_us() - t0);
            send_u64(w0.elapsed().as_micros() as u64);
            // Phase 2: a blocking get woken by the parent's put after `wait_ms`.
            let t0 = cpu_time_us();
            let w0 = Instant::now();
            send_byte(b'g');
            q.get_into(&mut buf).unwrap();
            send_u64(cpu_time_us() - t0);
            send_u64(w0.elapsed().as_micros() as u64);
            let _ = next_cmd();
        }
        other => panic!("unknown child kind {other}"),
    }
}

/// User + system CPU time of this process, in microseconds.
fn cpu_time_us() -> u64 {
    // SAFETY: getrusage fills the zeroed struct we own.
    let ru = unsafe {
        let mut ru: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut ru);
        ru
    };
    let us = |t: libc::timeval| t.tv_sec as u64 * 1_000_000 + t.tv_usec as u64;
    us(ru.ru_utime) + us(ru.ru_stime)
}

// ---------------------------------------------------------------------------------------
// Results

#[derive(Default)]
struct Results {
    /// (group, row, size, place, ns per message or round trip)
    cases: Vec<(String, String, usize, String, f64)>,
    /// (row, size, place, p50, p99, p99.9 in ns, samples)
    latency: Vec<(String, usize, String, u64, u64, u64, usize)>,
    idle: Vec<(String, u64, u64)>,
    python: Option<String>,
    sample_size: usize,
}

impl Results {
    /// Record a case from the (iterations, elapsed) pairs of its iter_custom calls: the
    /// median per-iteration time over the last `sample_size` calls (criterion's samples).
    fn add(&mut self, group: &str, row: &str, size: usize, place: &str, s: &[(u64, Duration)]) {
        if s.is_empty() {
            return;
        }
        let take = s.len().min(self.sample_size);
        let mut per: Vec<f64> = s[s.len() - take..]
            .iter()
            .map(|(i, d)| d.as_nanos() as f64 / (*i).max(1) as f64)
            .collect();
        per.sort_by(|a, b| a.partial_cmp(b).unwrap());
        let med = per[per.len() / 2];
        self.cases
            .push((group.into(), row.into(), size, place.into(), med));
    }

    fn to_json(&self, meta: &[(&str, String)]) -> String {
        let esc = |s: &str| s.replace('\\', "\\\\").replace('"', "\\\"");
        let mut o = String::from("{\n  \"meta\": {");
        let m: Vec<String> = meta
            .iter()
            .map(|(k, v)| format!("\"{k}\": \"{}\"", esc(v.trim())))
            .collect();
        o += &m.join(", ");
        o += "},\n  \"cases\": [\n";
        let c: Vec<String> = self
            .cases
            .iter()
            .map(|(g, r, s, p, ns)| {
                format!(
                    "    {{\"group\": \"{g}\", \"row\": \"{r}\", \"size\": {s}, \"place\": \"{p}\", \"ns\": {ns:.3}}}"
                )
            })
            .collect();
        o += &c.join(",\n");
        o += "\n  ],\n  \"latency\": [\n";
        let l: Vec<String> = self
            .latency
            .iter()
            .map(|(r, s, p, p50, p99, p999, n)| {
                format!(
                    "    {{\"row\": \"{r}\", \"size\": {s}, \"place\": \"{p}\", \"p50\": {p50}, \"p99\": {p99}, \"p999\": {p999}, \"n\": {n}}}"
                )
            })
            .collect();
        o += &l.join(",\n");
        o += "\n  ],\n  \"idle\": [\n";
        let i: Vec<String> = self
            .idle
            .iter()
            .map(|(what, cpu, wall)| {
                format!("    {{\"what\": \"{what}\", \"cpu_us\": {cpu}, \"wall_us\": {wall}}}")
            })
            .collect();
        o += &i.join(",\n");
        o += "\n  ],\n  \"python\": ";
        o += self.python.as_deref().unwrap_or("null").trim();
        o += "\n}\n";
        o
    }
}

// ---------------------------------------------------------------------------------------
// Cases

struct Ctx {
    quick: bool,
    res: Results,
    /// Positional filter given to the bench binary, if any.
    filter: Option<String>,
}

impl Ctx {
    fn wants(&self, id: &str) -> bool {
        self.filter.as_deref().is_none_or(|f| id.contains(f))
    }
}

fn bench_memcpy(c: &mut Criterion, cx: &mut Ctx) {
    let mut g = c.benchmark_group("memcpy");
    g.sampling_mode(SamplingMode::Flat);
    // Streaming: source and destination much larger than every cache.
    let big = if cx.quick { 16 << 20 } else { 1 << 30 };
    let mut src: Vec<u8> = Vec::new();
    let mut dst: Vec<u8> = Vec::new();
    for &size in &SIZES {
        g.throughput(Throughput::Bytes(size as u64));
        for row in ["memcpy-hot", "memcpy-stream"] {
            let id = format!("memcpy/{row}/{size}");
            if !cx.wants(&id) {
                continue;
            }
            pin(Some(0));
            let mut samples = Vec::new();
            if row == "memcpy-hot" {
                let s = vec![0xa5u8; size];
                let mut d = vec![0u8; size];
                g.bench_with_input(BenchmarkId::new(row, size), &size, |b, _| {
                    b.iter_custom(|iters| {
                        let t = Instant::now();
                        for _ in 0..iters {
                            d.copy_from_slice(std::hint::black_box(&s));
                            std::hint::black_box(&mut d);
                        }
                        let e = t.elapsed();
                        samples.push((iters, e));
                        e
                    })
                });
            } else {
                if src.is_empty() {
                    src = vec![0xa5u8; big];
                    dst = vec![1u8; big];
                }
                let mut pos = 0usize;
                g.bench_with_input(BenchmarkId::new(row, size), &size, |b, _| {
                    b.iter_custom(|iters| {
                        let t = Instant::now();
                        for _ in 0..iters {
                            if pos + size > big {
                                pos = 0;
                            }
                            dst[pos..pos + size].copy_from_slice(&src[pos..pos + size]);
                            std::hint::black_box(&mut dst);
                            pos += size;
                        }
                        let e = t.elapsed();
                        samples.push((iters, e));
                        e
                    })
                });
            }
            cx.res.add("tput", row, size, "-", &samples);
            pin(None);
        }
    }
    g.finish();
}

// With an 8-byte payload `P` is `u64`, whose `clone` clippy would rather see as a copy.
#[allow(clippy::clone_on_copy)]
fn bench_crossbeam_tput(
    g: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    size: usize,
    place: Place,
    samples: &mut Vec<(u64, Duration)>,
) {
    let slots = (ring_cap(size) / size.max(16)).max(4);
    with_payload!(size, P => {
        let (tx, rx) = crossbeam_channel::bounded::<P>(slots);
        let (ctl, ctl_rx) = crossbeam_channel::bounded::<u64>(1);
        let (ack_tx, ack) = crossbeam_channel::bounded::<()>(1);
        let cpu = place.peer_cpu();
        let t = std::thread::spawn(move || {
            pin(Some(cpu));
            while let Ok(n) = ctl_rx.recv() {
                for _ in 0..n {
                    std::hint::black_box(rx.recv().unwrap());
                }
                ack_tx.send(()).unwrap();
            }
        });
        let msg = P::make(size);
        g.bench_with_input(BenchmarkId::new(format!("crossbeam/{}", place.name()), size), &size, |b, _| {
            b.iter_custom(|iters| {
                ctl.send(iters).unwrap();
                let t = Instant::now();
                for _ in 0..iters {
                    tx.send(msg.clone()).unwrap();
                }
                ack.recv().unwrap();
                let e = t.elapsed();
                samples.push((iters, e));
                e
            })
        });
        drop(ctl);
        t.join().unwrap();
    })
}

fn bench_throughput(c: &mut Criterion, cx: &mut Ctx) {
    let mut g = c.benchmark_group("tput");
    g.sampling_mode(SamplingMode::Flat);
    for &size in &SIZES {
        g.throughput(Throughput::Bytes(size as u64));
        for place in [Place::Diff, Place::Same] {
            for row in ROWS.iter().copied().chain(["crossbeam"]) {
                let id = format!("tput/{row}/{}/{size}", place.name());
                if !cx.wants(&id) {
                    continue;
                }
                pin(Some(0));
                let mut samples = Vec::new();
                if row == "crossbeam" {
                    bench_crossbeam_tput(&mut g, size, place, &mut samples);
                } else {
                    let pending = parent_link(row, size);
                    let mut peer =
                        Peer::spawn(&format!("tput {} {}", place.peer_cpu(), pending.spec));
                    let (mut send, _recv) = (pending.finish)();
                    assert_eq!(peer.ack(), b'r');
                    g.bench_with_input(
                        BenchmarkId::new(format!("{row}/{}", place.name()), size),
                        &size,
                        |b, _| {
                            b.iter_custom(|iters| {
                                peer.go(iters);
                                let t = Instant::now();
                                send(iters);
                                assert_eq!(peer.ack(), b'k');
                                let e = t.elapsed();
                                samples.push((iters, e));
                                e
                            })
                        },
                    );
                }
                cx.res.add("tput", row, size, place.name(), &samples);
                pin(None);
            }
        }
    }
    g.finish();
}

fn percentiles(lat: &mut [u64]) -> (u64, u64, u64) {
    lat.sort_unstable();
    let at = |q: f64| lat[((lat.len() as f64 * q) as usize).min(lat.len() - 1)];
    (at(0.5), at(0.99), at(0.999))
}

const LAT_ROWS: [&str; 6] = [
    "shmq-raw",
    "ipmpsc-zc",
    "ipc-bytes",
    "uds",
    "crossbeam",
    "floor",
];

/// Two buffers and a sequence word shared by the two threads of the `floor` row.
struct Floor {
    seq: AtomicU64,
    down: std::cell::UnsafeCell<Vec<u8>>,
    up: std::cell::UnsafeCell<Vec<u8>>,
}

// SAFETY: `down` is written only by the pinger while `seq` is even and read only by the
// echoer while it is odd (and `up` the other way round); the Release stores and Acquire
// loads of `seq` order those accesses, so they never overlap.
unsafe impl Sync for Floor {}

/// The physical floor of a round trip: two threads spinning on one word, each copying the
/// payload into a shared buffer and out again (the same four copies as a queue round
/// trip), with no locks, counters, validation or yields. Only meaningful on two CPUs.
fn floor_round_trips(
    g: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    bid: BenchmarkId,
    size: usize,
    cpu: usize,
    samples: &mut Vec<(u64, Duration)>,
    lat: &mut Vec<u64>,
) {
    let f = std::sync::Arc::new(Floor {
        seq: AtomicU64::new(0),
        down: std::cell::UnsafeCell::new(vec![0u8; size]),
        up: std::cell::UnsafeCell::new(vec![0u8; size]),
    });
    const STOP: u64 = u64::MAX;
    let f2 = f.clone();
    let t = std::thread::spawn(move || {
        pin(Some(cpu));
        let mut local = vec![0u8; size];
        let mut want = 1u64;
        loop {
            let s = f2.seq.load(Ordering::Acquire);
            if s == STOP {
                break;
            }
            if s != want {
                std::hint::spin_loop();
                continue;
            }
            // SAFETY: seq is odd (our turn): the pinger does not touch the buffers now.
            unsafe {
                local.copy_from_slice(&*f2.down.get());
                (*f2.up.get()).copy_from_slice(&local);
            }
            f2.seq.store(want + 1, Ordering::Release);
            want += 2;
        }
    });
    let msg = vec![0xa5u8; size];
    let mut back = vec![0u8; size];
    let mut next = 0u64;
    g.bench_with_input(bid, &size, |b, _| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let t = Instant::now();
                // SAFETY: seq is even (our turn): the echoer does not touch the buffers.
                unsafe { (*f.down.get()).copy_from_slice(&msg) };
                f.seq.store(next + 1, Ordering::Release);
                while f.seq.load(Ordering::Acquire) != next + 2 {
                    std::hint::spin_loop();
                }
                // SAFETY: seq is even again: the echoer is done with `up`.
                unsafe { back.copy_from_slice(&*f.up.get()) };
                next += 2;
                let e = t.elapsed();
                lat.push(e.as_nanos() as u64);
                total += e;
            }
            samples.push((iters, total));
            total
        })
    });
    f.seq.store(STOP, Ordering::Release);
    t.join().unwrap();
}

fn bench_latency(c: &mut Criterion, cx: &mut Ctx) {
    let mut g = c.benchmark_group("rtt");
    g.sampling_mode(SamplingMode::Flat);
    for &size in &LAT_SIZES {
        for place in [Place::Diff, Place::Same] {
            for row in LAT_ROWS {
                let id = format!("rtt/{row}/{}/{size}", place.name());
                if !cx.wants(&id) {
                    continue;
                }
                pin(Some(0));
                let mut samples = Vec::new();
                let mut lat: Vec<u64> = Vec::new();
                let bid = BenchmarkId::new(format!("{row}/{}", place.name()), size);
                if row == "floor" {
                    if place == Place::Same {
                        pin(None);
                        continue;
                    }
                    floor_round_trips(&mut g, bid, size, place.peer_cpu(), &mut samples, &mut lat);
                } else if row == "crossbeam" {
                    let (dtx, drx) = crossbeam_channel::bounded::<Vec<u8>>(1);
                    let (utx, urx) = crossbeam_channel::bounded::<Vec<u8>>(1);
                    let cpu = place.peer_cpu();
                    let t = std::thread::spawn(move || {
                        pin(Some(cpu));
                        let mut buf = vec![0u8; size];
                        while let Ok(m) = drx.recv() {
                            buf.copy_from_slice(&m);
                            if utx.send(m).is_err() {
                                break;
                            }
                        }
                    });
                    let mut msg = vec![0xa5u8; size];
                    g.bench_with_input(bid, &size, |b, _| {
                        b.iter_custom(|iters| {
                            let mut total = Duration::ZERO;
                            for _ in 0..iters {
                                let t = Instant::now();
                                dtx.send(std::mem::take(&mut msg)).unwrap();
                                msg = urx.recv().unwrap();
                                let e = t.elapsed();
                                lat.push(e.as_nanos() as u64);
                                total += e;
                            }
                            samples.push((iters, total));
                            total
                        })
                    });
                    drop(dtx);
                    t.join().unwrap();
                } else {
                    let pending = parent_link(row, size);
                    let mut peer =
                        Peer::spawn(&format!("echo {} {}", place.peer_cpu(), pending.spec));
                    let (mut send, mut recv) = (pending.finish)();
                    assert_eq!(peer.ack(), b'r');
                    g.bench_with_input(bid, &size, |b, _| {
                        b.iter_custom(|iters| {
                            peer.go(iters);
                            let mut total = Duration::ZERO;
                            for _ in 0..iters {
                                let t = Instant::now();
                                send(1);
                                recv(1);
                                let e = t.elapsed();
                                lat.push(e.as_nanos() as u64);
                                total += e;
                            }
                            assert_eq!(peer.ack(), b'k');
                            samples.push((iters, total));
                            total
                        })
                    });
                }
                cx.res.add("rtt", row, size, place.name(), &samples);
                if !lat.is_empty() {
                    let (p50, p99, p999) = percentiles(&mut lat);
                    cx.res.latency.push((
                        row.into(),
                        size,
                        place.name().into(),
                        p50,
                        p99,
                        p999,
                        lat.len(),
                    ));
                }
                pin(None);
            }
        }
    }
    g.finish();
}

fn bench_mpmc(c: &mut Criterion, cx: &mut Ctx) {
    let mut g = c.benchmark_group("mpmc");
    g.sampling_mode(SamplingMode::Flat);
    g.throughput(Throughput::Elements(1));
    for place in [Place::Diff, Place::Same] {
        for n in [1usize, 2, 4] {
            let row = format!("shmq-raw-{n}x{n}");
            let id = format!("mpmc/{row}/{}/{MPMC_SIZE}", place.name());
            if !cx.wants(&id) {
                continue;
            }
            let key = unique_key();
            let q = RawQueue::create_with(key.as_str(), &shmq_opts(MPMC_SIZE)).unwrap();
            let (pcpu, ccpu) = match place {
                Place::Diff => (0, 1 % ncpus()),
                Place::Same => (0, 0),
            };
            let mut prods: Vec<Peer> = (0..n)
                .map(|_| Peer::spawn(&format!("mprod {pcpu} {MPMC_SIZE} {key}")))
                .collect();
            let mut cons: Vec<Peer> = (0..n)
                .map(|_| Peer::spawn(&format!("mcons {ccpu} {MPMC_SIZE} {key}")))
                .collect();
            for p in prods.iter_mut().chain(cons.iter_mut()) {
                assert_eq!(p.ack(), b'r');
            }
            let mut samples = Vec::new();
            g.bench_with_input(
                BenchmarkId::new(format!("{row}/{}", place.name()), MPMC_SIZE),
                &MPMC_SIZE,
                |b, _| {
                    b.iter_custom(|iters| {
                        let per = iters.div_ceil(n as u64).max(1);
                        let t = Instant::now();
                        for p in prods.iter_mut().chain(cons.iter_mut()) {
                            p.go(per);
                        }
                        for p in prods.iter_mut().chain(cons.iter_mut()) {
                            assert_eq!(p.ack(), b'k');
                        }
                        let e = t.elapsed();
                        // Scale to the requested count (per * n >= iters messages moved).
                        let e = e.mul_f64(iters as f64 / (per * n as u64) as f64);
                        samples.push((iters, e));
                        e
                    })
                },
            );
            drop(prods);
            drop(cons);
            drop(q);
            cx.res.add("mpmc", &row, MPMC_SIZE, place.name(), &samples);
        }
    }
    g.finish();
}

/// CPU used by a consumer blocked on an empty queue (getrusage in the child).
fn idle_cpu(cx: &mut Ctx) {
    if !cx.wants("idle/") {
        return;
    }
    let wait_ms = if cx.quick { 100 } else { 1000 };
    let key = unique_key();
    let q = RawQueue::create(&key, 4096).unwrap();
    let mut peer = Peer::spawn(&format!("idle 1 {key} {wait_ms}"));
    assert_eq!(peer.ack(), b'r');
    let (cpu, wall) = (peer.read_u64(), peer.read_u64());
    cx.res.idle.push(("get_timeout on empty".into(), cpu, wall));
    assert_eq!(peer.ack(), b'g');
    std::thread::sleep(Duration::from_millis(wait_ms));
    q.put(b"wake").unwrap();
    let (cpu, wall) = (peer.read_u64(), peer.read_u64());
    cx.res.idle.push(("get woken by a put".into(), cpu, wall));
    println!(
        "idle: blocked consumer CPU over {wait_ms} ms: {:?}",
        cx.res.idle
    );
}

/// Python's multiprocessing.Queue on the same workloads, when python3 exists.
fn python(cx: &mut Ctx) {
    if !cx.wants("python/") {
        return;
    }
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/mp_queue.py");
    let mut cmd = Command::new("python3");
    cmd.arg(script);
    if cx.quick {
        cmd.arg("--quick");
    }
    match cmd.stderr(Stdio::inherit()).output() {
        Ok(out) if out.status.success() => {
            cx.res.python = Some(String::from_utf8_lossy(&out.stdout).into_owned());
        }
        Ok(out) => eprintln!("python benchmark failed: {}", out.status),
        Err(e) => eprintln!("python3 not available ({e}): skipping mp.Queue"),
    }
}

/// `SHMQ_BENCH_PROFILE="<tput|echo> <row> <size> <count> [same]"`: move `count` messages
/// (or round trips) once, without criterion, and print the rate. For `perf stat` and
/// `valgrind --tool=callgrind --trace-children=yes` (instruction counts per message).
fn profile(spec: &str) {
    let p: Vec<&str> = spec.split_whitespace().collect();
    let (kind, row, size, n) = (p[0], p[1], p[2].parse().unwrap(), p[3].parse().unwrap());
    let place = if p.get(4) == Some(&"same") {
        Place::Same
    } else {
        Place::Diff
    };
    pin(Some(0));
    let pending = parent_link(row, size);
    let mut peer = Peer::spawn(&format!("{kind} {} {}", place.peer_cpu(), pending.spec));
    let (mut send, mut recv) = (pending.finish)();
    assert_eq!(peer.ack(), b'r');
    peer.go(n);
    let t = Instant::now();
    if kind == "tput" {
        send(n);
    } else {
        for _ in 0..n {
            send(1);
            recv(1);
        }
    }
    assert_eq!(peer.ack(), b'k');
    let e = t.elapsed();
    println!(
        "{kind} {row} {size} B x {n}: {:.1} ns per message",
        e.as_nanos() as f64 / n as f64
    );
}

fn sh(cmd: &str) -> String {
    Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

fn main() {
    if let Ok(spec) = std::env::var("SHMQ_BENCH_CHILD") {
        // A big stack: `PodQueue::get` returns up to 1 MiB by value, and unoptimised
        // builds (`cargo test --all-targets`) keep several copies of it on the stack.
        std::thread::Builder::new()
            .stack_size(64 << 20)
            .spawn(move || child_main(&spec))
            .unwrap()
            .join()
            .unwrap();
        return;
    }
    if let Ok(spec) = std::env::var("SHMQ_BENCH_PROFILE") {
        profile(&spec);
        return;
    }
    let args: Vec<String> = std::env::args().skip(1).collect();
    let bench_mode = args.iter().any(|a| a == "--bench");
    let quick = !bench_mode || std::env::var("SHMQ_BENCH_QUICK").is_ok_and(|v| v == "1");
    let filter = args.iter().find(|a| !a.starts_with('-')).cloned();
    let started = Instant::now();
    let load_before = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let sample_size = 10;
    let mut c = Criterion::default()
        .sample_size(sample_size)
        .without_plots()
        .configure_from_args();
    c = if quick {
        c.warm_up_time(Duration::from_millis(1))
            .measurement_time(Duration::from_millis(20))
    } else {
        c.warm_up_time(Duration::from_millis(300))
            .measurement_time(Duration::from_millis(1000))
    };
    let mut cx = Ctx {
        quick,
        res: Results {
            sample_size,
            ..Default::default()
        },
        filter,
    };
    bench_throughput(&mut c, &mut cx);
    bench_memcpy(&mut c, &mut cx);
    bench_latency(&mut c, &mut cx);
    bench_mpmc(&mut c, &mut cx);
    idle_cpu(&mut cx);
    if bench_mode {
        python(&mut cx);
    }
    c.final_summary();
    if !bench_mode {
        return;
    }
    let load_after = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let meta = [
        (
            "cpu",
            sh("grep -m1 'model name' /proc/cpuinfo | cut -d: -f2"),
        ),
        ("cores", ncpus().to_string()),
        ("kernel", sh("uname -sr")),
        ("rustc", sh("rustc --version")),
        ("commit", sh("git rev-parse --short HEAD")),
        ("dirty", sh("git -C .. status -s -- src benches | wc -l")),
        ("date", sh("date -u '+%Y-%m-%d %H:%M UTC'")),
        ("load_before", load_before),
        ("load_after", load_after),
        ("quick", quick.to_string()),
        ("seconds", format!("{:.0}", started.elapsed().as_secs_f64())),
    ];
    let dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../target")))
        .join("shmq-bench");
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join(if quick {
        "results-quick.json"
    } else {
        "results.json"
    });
    std::fs::write(&file, cx.res.to_json(&meta)).unwrap();
    println!(
        "shmq bench: results in {} ({:.0} s)",
        file.display(),
        started.elapsed().as_secs_f64()
    );
}
