//! Peer processes: the suite re-executes its own binary as the other end of every
//! cross-process case, with the peer's role in the environment variable [`ROLE_ENV`].
//!
//! The role spec is `<role> <cpu> <args...>`: the peer pins itself to `<cpu>` and runs the
//! role. The peer is spawned once per case; for each criterion sample the parent writes a
//! message count to the peer's stdin ([`Peer::go`]), moves that many messages (or round
//! trips), and waits for the peer's one-byte acknowledgement on its stdout ([`Peer::ack`]).
//! A count of 0, or the end of stdin, ends the peer.
//!
//! This is the suite's one way to start a child. (`shmq::process` runs a function in a child
//! too, but its children inherit stdin and stdout, and this pipe protocol is part of what
//! some cases time; `benches/spawn.rs` measures `shmq::process` itself.)

use std::io::{Read, Write};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::time::{Duration, Instant};

use crate::cases::{idle, mpmc};
use crate::place::pin;
use crate::transports::child_link;

/// Environment variable that makes the bench binary a peer, holding its role spec.
pub const ROLE_ENV: &str = "SHMQ_BENCH_CHILD";

/// A child process re-executing this binary in a role, driven over its stdin/stdout.
pub struct Peer {
    child: Child,
    cin: ChildStdin,
    cout: ChildStdout,
}

impl Peer {
    /// Start a peer in `role`, pinned to `cpu`, with the role's `args` (space-separated).
    pub fn spawn(role: &str, cpu: usize, args: &str) -> Peer {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .env(ROLE_ENV, format!("{role} {cpu} {args}"))
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
    pub fn go(&mut self, n: u64) {
        self.cin.write_all(&n.to_le_bytes()).unwrap();
        self.cin.flush().unwrap();
    }

    /// Wait for the peer's acknowledgement byte.
    pub fn ack(&mut self) -> u8 {
        let mut b = [0u8; 1];
        self.cout
            .read_exact(&mut b)
            .expect("bench peer died (see its stderr)");
        b[0]
    }

    /// Read a `u64` the peer sent with [`send_u64`].
    pub fn read_u64(&mut self) -> u64 {
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

/// Entry point of a peer process (`ROLE_ENV` is set): run the role on a thread with a big
/// stack.
pub fn run(spec: String) {
    // A big stack: `PodQueue::get` returns up to 1 MiB by value, and unoptimised
    // builds (`cargo test --all-targets`) keep several copies of it on the stack.
    std::thread::Builder::new()
        .stack_size(64 << 20)
        .spawn(move || child_main(&spec))
        .unwrap()
        .join()
        .unwrap();
}

/// Read the next command (message count) from stdin; `None` on 0 or end of input.
pub fn next_cmd() -> Option<u64> {
    let mut b = [0u8; 8];
    std::io::stdin().lock().read_exact(&mut b).ok()?;
    Some(u64::from_le_bytes(b)).filter(|&n| n > 0)
}

/// Send the parent a one-byte acknowledgement (`r`eady, o`k`, ...).
pub fn send_byte(b: u8) {
    let mut out = std::io::stdout().lock();
    out.write_all(&[b]).unwrap();
    out.flush().unwrap();
}

/// Send the parent a `u64` (read with [`Peer::read_u64`]).
pub fn send_u64(v: u64) {
    let mut out = std::io::stdout().lock();
    out.write_all(&v.to_le_bytes()).unwrap();
    out.flush().unwrap();
}

/// A peer's life: `<role> <cpu> <args...>`.
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
            let (mut send_up, mut recv_down) = child_link(&parts[2..]);
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
        "mprod" | "mcons" => mpmc::peer(kind, &parts[2..]),
        "idle" => idle::peer(&parts[2..]),
        other => panic!("unknown child kind {other}"),
    }
}
