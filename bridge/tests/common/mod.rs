//! A real `nats-server -js` on a loopback port with a temporary store, for the bridge tests
//! and the benchmark. No mocks: when `nats-server` is not installed the caller FAILS with a
//! message that says how to install it.

#![allow(dead_code)] // each test binary uses its own part

use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A running nats-server; stopped (SIGTERM, then SIGKILL) on drop.
pub struct NatsServer {
    child: Option<Child>,
    pub port: u16,
    dir: tempfile::TempDir,
    conf: Option<PathBuf>,
}

/// The `nats-server` binary: `$NATS_SERVER`, else `nats-server` on PATH, else
/// /usr/sbin/nats-server (where Debian's package puts it, not on a user's PATH).
pub fn nats_server_binary() -> PathBuf {
    if let Some(p) = std::env::var_os("NATS_SERVER") {
        return PathBuf::from(p);
    }
    if let Some(paths) = std::env::var_os("PATH") {
        for d in std::env::split_paths(&paths) {
            let p = d.join("nats-server");
            if p.is_file() {
                return p;
            }
        }
    }
    let p = PathBuf::from("/usr/sbin/nats-server");
    if p.is_file() {
        return p;
    }
    panic!(
        "nats-server is not installed: the shmq-bridge tests need a real NATS server \
         (JetStream, 2.9 or later). Install it with `apt-get install -y nats-server` \
         (Debian/Ubuntu; .ci/run does this), or set NATS_SERVER=/path/to/nats-server"
    );
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

impl NatsServer {
    /// Start a server with JetStream on a free loopback port.
    pub fn start() -> NatsServer {
        Self::start_with_config("")
    }

    /// Start with extra configuration-file lines (e.g. `max_payload: 8192`).
    pub fn start_with_config(extra: &str) -> NatsServer {
        let dir = tempfile::Builder::new()
            .prefix("shmq-bridge-nats")
            .tempdir()
            .expect("temp dir");
        let conf = if extra.is_empty() {
            None
        } else {
            let p = dir.path().join("nats.conf");
            std::fs::File::create(&p)
                .and_then(|mut f| f.write_all(extra.as_bytes()))
                .expect("write nats.conf");
            Some(p)
        };
        let mut s = NatsServer {
            child: None,
            port: free_port(),
            dir,
            conf,
        };
        s.launch();
        s
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    pub fn store_dir(&self) -> &Path {
        self.dir.path()
    }

    fn launch(&mut self) {
        let bin = nats_server_binary();
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("nats.log"))
            .expect("nats log file");
        let mut cmd = Command::new(&bin);
        if let Some(c) = &self.conf {
            cmd.arg("-c").arg(c);
        }
        cmd.args(["-js", "-a", "127.0.0.1", "-p"])
            .arg(self.port.to_string())
            .arg("-sd")
            .arg(self.dir.path().join("store"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", bin.display()));
        self.child = Some(child);
        self.wait_ready();
    }

    /// Until the port answers and JetStream is up (the log says "Server is ready").
    fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        let log = self.dir.path().join("nats.log");
        loop {
            if let Some(c) = self.child.as_mut() {
                if let Ok(Some(st)) = c.try_wait() {
                    panic!(
                        "nats-server exited at start ({st}); its log:\n{}",
                        std::fs::read_to_string(&log).unwrap_or_default()
                    );
                }
            }
            let ready = std::fs::read_to_string(&log)
                .map(|l| l.matches("Server is ready").count())
                .unwrap_or(0);
            let starts = self.starts();
            if ready >= starts && TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "nats-server did not become ready on port {} within 20 s; its log:\n{}",
                self.port,
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn starts(&self) -> usize {
        std::fs::read_to_string(self.dir.path().join("nats.log"))
            .map(|l| l.matches("Starting nats-server").count())
            .unwrap_or(1)
    }

    /// Stop the server (SIGTERM: a clean shutdown, the store flushed) and wait for it.
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            // SAFETY: kill(2) on our own child's pid; no memory is involved.
            unsafe { libc::kill(c.id() as i32, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(10);
            loop {
                if let Ok(Some(_)) = c.try_wait() {
                    break;
                }
                if Instant::now() > deadline {
                    let _ = c.kill();
                    let _ = c.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    /// Start it again on the same port with the same store.
    pub fn restart(&mut self) {
        self.stop();
        self.launch();
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Print the bridges' log to stderr at the level in `SHMQ_BRIDGE_TEST_LOG` (`debug`,
/// `info`, ...; unset: nothing), e.g. the out bridge's time split, logged at debug level
/// every 10 s. Once per test binary; later calls do nothing.
pub fn init_log() {
    let Some(level) = std::env::var("SHMQ_BRIDGE_TEST_LOG")
        .ok()
        .and_then(|l| l.parse::<tracing_subscriber::filter::LevelFilter>().ok())
    else {
        return;
    };
    let _ = tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(std::io::stderr)
        .try_init();
}
