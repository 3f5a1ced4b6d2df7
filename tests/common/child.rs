//! Child processes that play a role: the test binary runs itself again, as
//! `<exe> child_entry --exact --ignored --nocapture --test-threads=1 -q`, with the role and
//! its arguments in the environment variable [`ROLE_VAR`].
//!
//! A test file declares its roles once, at its top level, and spawns them by name:
//!
//! ```ignore
//! mod common;
//! use common::{child, say};
//!
//! common::child_roles!(echo);
//!
//! /// echo:<text> — says its argument.
//! fn echo(args: &[String]) {
//!     say(&args[0]);
//! }
//!
//! #[test]
//! fn echoes() {
//!     let kid = child!(echo).arg("hi").spawn();
//!     assert_eq!(kid.line(LIMIT, "echo"), "hi");
//! }
//! ```
//!
//! A role is a `fn(&[String])`; [`child_roles!`] generates the (ignored) `child_entry` test
//! that dispatches on the role's name, and [`child!`] checks at compile time that the role
//! is such a function and, when spawning, that the table lists it. [`Role::under`] runs
//! the child under a [`Wrapper`] command (a new PID namespace, a private `/dev/shm`,
//! another uid). The child prints lines for its parent with [`say`]; the parent reads them
//! from the [`RoleChild`], with a limit on every wait, and the child is killed and reaped
//! when the `RoleChild` is dropped (also when the test fails).
//!
//! The library's own way to run a function in a child, `shmq::process::start` (after
//! `shmq::enable_test_support!()`), is the better fit for a test that only needs a
//! function's result from another process, and it is what the `mp_*` and `process` tests
//! exercise. Roles are for the rest: a child under `unshare` or as another user, a child
//! whose progress the parent follows line by line while it runs, and the core tests, which
//! must not depend on the library's process machinery working.

use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

/// Environment variable carrying the role and its arguments, separated by [`SEP`].
pub const ROLE_VAR: &str = "SHMQ_TEST_ROLE";

/// Separator of the role and its arguments in [`ROLE_VAR`] (ASCII unit separator: paths
/// and names may contain `:`).
const SEP: char = '\u{1f}';

/// The test that [`child_roles!`] generates, and that children run.
pub const ENTRY: &str = "child_entry";

/// Declare the roles the children of this test file can play: `child_roles!(a, b, c);`
/// at the file's top level, each name a `fn(&[String])` of the file.
///
/// Generates the ignored test `child_entry` that children run (it does nothing when run
/// without a role, e.g. by `cargo test -- --include-ignored`) and the table [`child!`]
/// checks against.
macro_rules! child_roles {
    ($($role:ident),+ $(,)?) => {
        /// The roles this file's child processes can play.
        const CHILD_ROLES: &[&str] = &[$(stringify!($role)),+];

        /// Entry point of the child processes; ignored when the suite runs normally.
        #[test]
        #[ignore = "entry point for child processes started by the other tests"]
        fn child_entry() {
            let Some((role, args)) = $crate::common::child::this_role() else {
                return;
            };
            match role.as_str() {
                $(stringify!($role) => $role(&args),)+
                other => panic!("unknown child role {other:?}"),
            }
        }
    };
}
pub(crate) use child_roles;

/// A [`Role`] to spawn: `child!(hold).arg(&name).under(&NEW_PID_NS).spawn()`. The name
/// must be a `fn(&[String])` (else a compile error) listed in the file's [`child_roles!`]
/// (else a panic before anything is spawned).
macro_rules! child {
    ($role:ident) => {{
        let _: fn(&[String]) = $role;
        $crate::common::Role::new(stringify!($role), $crate::CHILD_ROLES)
    }};
}
pub(crate) use child;

/// The role and arguments this process was started with, if it is a role child.
pub fn this_role() -> Option<(String, Vec<String>)> {
    let spec = std::env::var(ROLE_VAR).ok()?;
    let mut parts = spec.split(SEP).map(str::to_string);
    let role = parts.next()?;
    Some((role, parts.collect()))
}

/// A command line that ends by executing the rest of its arguments (the test binary), and
/// what it needs to work here.
pub struct Wrapper {
    /// The command line before the test binary's path.
    pub argv: &'static [&'static str],
    /// What it needs, for the message of a skipped test.
    pub needs: &'static str,
}

impl Wrapper {
    /// Whether the wrapper works here (root, the tools, namespaces allowed).
    pub fn works(&self) -> bool {
        let mut cmd = self.argv.to_vec();
        cmd.push("true");
        is_root() && command_works(&cmd)
    }
}

/// Runs the rest of the command line as PID 1 of a new PID namespace with its own /proc,
/// killed when the `unshare` process dies.
pub static NEW_PID_NS: Wrapper = Wrapper {
    argv: &["unshare", "--pid", "--fork", "--mount-proc", "--kill-child"],
    needs: "root and `unshare --pid --fork --mount-proc`",
};

/// Runs the rest of the command line as uid/gid `nobody` in a mount namespace whose
/// `/proc` is a fresh proc instance mounted `hidepid=invisible` (same PID namespace).
pub static HIDEPID_NOBODY: Wrapper = Wrapper {
    argv: &[
        "unshare",
        "--mount",
        "--",
        "sh",
        "-c",
        "mount -t proc -o hidepid=invisible proc /proc && \
         exec setpriv --reuid=65534 --regid=65534 --clear-groups -- \"$0\" \"$@\"",
    ],
    needs: "root, `unshare --mount`, a proc mount with hidepid=invisible and setpriv",
};

/// Runs the rest of the command line in a new mount namespace with a fresh, private tmpfs
/// on `/dev/shm` (same PID namespace).
pub static PRIVATE_SHM: Wrapper = Wrapper {
    argv: &[
        "unshare",
        "--mount",
        "--propagation",
        "private",
        "--",
        "sh",
        "-c",
        "mount -t tmpfs tmpfs /dev/shm && exec \"$0\" \"$@\"",
    ],
    needs: "root and `unshare --mount` with tmpfs",
};

/// Whether every one of `wrappers` works here; if one does not, says on stderr that `test`
/// is skipped and why (the caller then returns).
pub fn can_run(test: &str, wrappers: &[&Wrapper]) -> bool {
    for w in wrappers {
        if !w.works() {
            eprintln!("SKIPPED {test}: needs {}", w.needs);
            return false;
        }
    }
    true
}

/// A child process to start: a role of this test file, its arguments, and a wrapper.
#[must_use = "a Role does nothing until spawned"]
pub struct Role {
    name: &'static str,
    args: Vec<String>,
    wrapper: Option<&'static Wrapper>,
}

impl Role {
    /// The role `name`, which must be one of `known` (use [`child!`]).
    pub fn new(name: &'static str, known: &[&str]) -> Role {
        assert!(
            known.contains(&name),
            "role {name} is not in this file's child_roles!"
        );
        Role {
            name,
            args: Vec::new(),
            wrapper: None,
        }
    }

    /// One more argument.
    pub fn arg(mut self, a: impl ToString) -> Role {
        let a = a.to_string();
        assert!(!a.contains(SEP), "a role argument contains the separator");
        self.args.push(a);
        self
    }

    /// More arguments.
    pub fn args<I>(self, args: I) -> Role
    where
        I: IntoIterator,
        I::Item: ToString,
    {
        args.into_iter().fold(self, Role::arg)
    }

    /// Start the child under `wrapper` (see [`Wrapper::works`]).
    pub fn under(mut self, wrapper: &'static Wrapper) -> Role {
        self.wrapper = Some(wrapper);
        self
    }

    /// Start the child. Its lines (see [`say`]) are read on a thread of their own.
    pub fn spawn(self) -> RoleChild {
        let mut spec = self.name.to_string();
        for a in &self.args {
            spec.push(SEP);
            spec.push_str(a);
        }
        let mut cmd = match self.wrapper {
            // /proc/self/exe, not current_exe(): it still works when cargo rebuilds the
            // binary (replacing the file) while the test runs.
            None => Command::new("/proc/self/exe"),
            // The wrapper executes a path of its own choosing: /proc/self/exe would be the
            // wrapper itself.
            Some(w) => {
                let mut c = Command::new(w.argv[0]);
                c.args(&w.argv[1..])
                    .arg(std::env::current_exe().expect("current exe"));
                c
            }
        };
        let mut child = cmd
            .args([
                ENTRY,
                "--exact",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
                "-q",
            ])
            .env(ROLE_VAR, spec)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "spawn child {} (under {:?}): {e}",
                    self.name,
                    self.wrapper.map(|w| w.argv)
                )
            });
        let out = child.stdout.take().expect("child stdout is piped");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for l in lines(out) {
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        RoleChild {
            child: Reap(child),
            role: self.name,
            lines: rx,
        }
    }

    /// Start the child, wait (at most `limit`) for it to exit, assert that it succeeded,
    /// and return all its lines.
    pub fn run(self, limit: Duration) -> Vec<String> {
        let mut child = self.spawn();
        let st = child.wait(limit);
        assert!(st.success(), "child {} failed: {st}", child.role);
        child.rest(limit)
    }
}

/// A running role child. Dropping it kills (SIGKILL) and reaps the process.
pub struct RoleChild {
    child: Reap,
    role: &'static str,
    lines: Receiver<String>,
}

impl RoleChild {
    /// The child's pid (the wrapper's, for a child started under one).
    pub fn id(&self) -> u32 {
        self.child.id()
    }

    /// The child's lines for its parent, for `try_iter` or `recv_timeout`.
    pub fn lines(&self) -> &Receiver<String> {
        &self.lines
    }

    /// The child's next line, or a panic naming `what` if none comes within `limit`.
    pub fn line(&self, limit: Duration, what: &str) -> String {
        match self.lines.recv_timeout(limit) {
            Ok(l) => l,
            Err(RecvTimeoutError::Timeout) => {
                panic!(
                    "{what}: no answer from child {} within {limit:?}",
                    self.role
                )
            }
            Err(RecvTimeoutError::Disconnected) => {
                panic!("{what}: child {} exited without answering", self.role)
            }
        }
    }

    /// All the child's remaining lines, up to the end of its output (when it and any
    /// process it started exited); a panic if that does not come within `limit`.
    pub fn rest(&self, limit: Duration) -> Vec<String> {
        let end = Instant::now() + limit;
        let mut out = Vec::new();
        loop {
            match self
                .lines
                .recv_timeout(end.saturating_duration_since(Instant::now()))
            {
                Ok(l) => out.push(l),
                Err(RecvTimeoutError::Disconnected) => return out,
                Err(RecvTimeoutError::Timeout) => panic!(
                    "child {}: output not closed within {limit:?}; so far {out:?}",
                    self.role
                ),
            }
        }
    }

    /// Wait for the child at most `limit`; kill it and panic if it does not exit.
    pub fn wait(&mut self, limit: Duration) -> ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(st) = self.try_wait() {
                return st;
            }
            if start.elapsed() > limit {
                self.kill();
                panic!(
                    "child {} ({}) did not exit within {limit:?}",
                    self.role,
                    self.id()
                );
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// The child's exit status, if it exited.
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().expect("try_wait")
    }

    /// Kill the child (SIGKILL) and reap it.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        self.child.wait().expect("wait for a killed child");
    }

    /// Send `sig` to the child.
    pub fn signal(&self, sig: i32) {
        signal(self.id(), sig);
    }
}

/// A file whose creation releases the children waiting for it (a role polls with
/// [`wait_for_file`](super::wait_for_file)), so that no test depends on a sleep being long
/// enough. It lives in a temporary directory of its own, removed when this is dropped
/// (unreleased, when a test fails: its children are killed with their [`RoleChild`], and a
/// process they forked gives up after its own bound).
pub struct Release {
    dir: tempfile::TempDir,
    path: std::path::PathBuf,
}

impl Release {
    /// A release file that does not exist yet.
    pub fn new() -> Release {
        let dir = tempfile::tempdir().expect("temporary directory");
        let path = dir.path().join("release");
        Release { dir, path }
    }

    /// Its path, for the children's arguments.
    pub fn path(&self) -> &std::path::Path {
        &self.path
    }

    /// Create the file: the children waiting for it go on.
    pub fn release(&self) {
        std::fs::write(&self.path, b"").expect("create the release file");
    }
}

/// Prefix of the lines a child prints for its parent (libtest prints its own lines to the
/// same stdout).
const MARK: &str = "@@ ";

/// In a role child: print one line for the parent.
pub fn say(line: impl std::fmt::Display) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{MARK}{line}").unwrap();
    out.flush().unwrap();
}

/// The child's lines for its parent, without the libtest noise around them.
fn lines(out: impl std::io::Read) -> impl Iterator<Item = String> {
    use std::io::BufRead;
    std::io::BufReader::new(out)
        .lines()
        .map_while(|l| l.ok())
        .filter_map(|l| l.strip_prefix(MARK).map(str::to_string))
}

/// A child process that is killed (SIGKILL) and reaped when dropped.
pub struct Reap(pub Child);

impl Drop for Reap {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl std::ops::Deref for Reap {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for Reap {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

/// Send `sig` to process `pid`.
pub fn signal(pid: u32, sig: i32) {
    // SAFETY: kill(2) with a pid of one of our own children; no memory is involved.
    unsafe { libc::kill(pid as libc::pid_t, sig) };
}

/// Whether this process runs as root (needed for namespaces, mounts and other uids).
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// Whether `cmd` runs and exits successfully (to probe for namespace support).
fn command_works(cmd: &[&str]) -> bool {
    Command::new(cmd[0])
        .args(&cmd[1..])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false)
}

/// The pids of the children of process `pid` (from `/proc/<pid>/task/*/children`).
pub fn children_of(pid: u32) -> Vec<u32> {
    let mut out = Vec::new();
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for t in tasks.flatten() {
            if let Ok(s) = std::fs::read_to_string(t.path().join("children")) {
                out.extend(s.split_whitespace().filter_map(|x| x.parse::<u32>().ok()));
            }
        }
    }
    out
}
