//! Process behaviour from CPython's `_TestProcess` and `_TestSubclassingProcess`
//! (Lib/test/_test_multiprocessing.py), ported to shmq, and the process repros of issue 11.

mod common;

use std::io::Read;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use common::{eventually, uniq, Unsendable};
use shmq::process::{self, Builder, ProcessError, Waitable};
use shmq::Error;

shmq::enable_test_support!();

const LONG: Duration = Duration::from_secs(60);

fn sleep_ms(ms: u64) {
    std::thread::sleep(Duration::from_millis(ms));
}

#[test]
fn process_lifecycle() {
    // test_process: start, is_alive, pid, name, join, exitcode.
    assert_eq!(process::current_name(), None);
    let go = shmq::Event::create(&uniq("mpproc-go")).unwrap();
    let mut p = Builder::new()
        .name("sleeper")
        .start(
            |(go, tag): (shmq::Event, String)| {
                go.wait_timeout(Duration::from_secs(60));
                // SAFETY: getppid has no preconditions.
                let ppid = unsafe { libc::getppid() } as u32;
                (tag, process::current_name(), ppid)
            },
            (go.clone(), "x".to_string()),
        )
        .unwrap();
    assert_eq!(p.name(), Some("sleeper"));
    assert!(p.is_alive());
    assert_eq!(p.exit_status(), None);
    assert_eq!(p.exit_code(), None);
    assert!(process::active_children().contains(&p.pid()));
    let pid = p.pid();
    go.set();
    // test_parent_process: the child sees this process as its parent.
    assert_eq!(
        p.join_timeout(LONG).unwrap(),
        (
            "x".to_string(),
            Some("sleeper".to_string()),
            std::process::id()
        )
    );
    assert!(!p.is_alive());
    assert_eq!(p.exit_code(), Some(0));
    assert!(!process::active_children().contains(&pid));
}

#[test]
fn terminate_and_kill_give_negative_exit_codes() {
    // test_terminate / test_kill
    for sig in [libc::SIGTERM, libc::SIGKILL] {
        let mut p = process::start(|()| sleep_ms(600_000), ()).unwrap();
        assert!(p.is_alive());
        if sig == libc::SIGTERM {
            p.terminate().unwrap();
        } else {
            p.kill().unwrap();
        }
        match p.join_timeout(LONG) {
            Err(Error::Process(ProcessError::Signaled { signal, .. })) => assert_eq!(signal, sig),
            other => panic!("{other:?}"),
        }
        assert_eq!(p.exit_code(), Some(-sig));
        assert!(!p.is_alive());
    }
}

#[test]
fn exit_codes() {
    // _TestSubclassingProcess.test_sys_exit: exit(code) reaches the parent.
    for code in [1, 3, 255] {
        let p = process::start(|c: i32| -> u8 { std::process::exit(c) }, code).unwrap();
        match p.join() {
            Err(Error::Process(ProcessError::Exited { code: c, .. })) => assert_eq!(c, code),
            other => panic!("{other:?}"),
        }
    }
    // exit(0) without returning: a success for a function that returns ().
    let p = process::start(|()| -> () { std::process::exit(0) }, ()).unwrap();
    p.join().unwrap();
    // ...but a function that owes a value did not deliver it.
    let p = process::start(|()| -> u8 { std::process::exit(0) }, ()).unwrap();
    match p.join() {
        Err(Error::Process(ProcessError::NoResult { hint, .. })) => {
            assert!(hint.contains("exit(0)"), "{hint}")
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn exit_status_is_known_before_reaping() {
    let p = process::start(|()| -> u8 { std::process::exit(7) }, ()).unwrap();
    assert!(eventually(LONG, || p.exit_status().is_some()));
    assert_eq!(p.exit_code(), Some(7));
    // Not reaped by the peek: still an active (zombie) child? No: exited ones are not
    // active, whether reaped or not.
    assert!(!process::active_children().contains(&p.pid()));
    assert!(p.join().is_err());
}

#[test]
fn many_processes() {
    // test_many_processes (20 instead of 100 on a 2-core machine).
    let mut kids: Vec<_> = (0..20u64)
        .map(|i| process::start(|i: u64| i * 2, i).unwrap())
        .collect();
    let mut sum = 0;
    while !kids.is_empty() {
        let i = process::wait_any(&mut kids, Some(LONG)).unwrap();
        sum += kids.swap_remove(i).join().unwrap();
    }
    assert_eq!(sum, (0..20).map(|i| i * 2).sum::<u64>());
    // ...and all terminated at once.
    let mut kids: Vec<_> = (0..20)
        .map(|_| process::start(|()| sleep_ms(600_000), ()).unwrap())
        .collect();
    for k in &mut kids {
        k.terminate().unwrap();
    }
    for mut k in kids {
        assert!(matches!(
            k.join_timeout(LONG),
            Err(Error::Process(ProcessError::Signaled {
                signal: libc::SIGTERM,
                ..
            }))
        ));
        assert_eq!(k.exit_code(), Some(-libc::SIGTERM));
    }
}

#[test]
fn wait_any_returns_the_first_to_end() {
    let mut kids = vec![
        process::start(sleep_ms, 600_000).unwrap(),
        process::start(sleep_ms, 600_000).unwrap(),
        process::start(sleep_ms, 100).unwrap(),
    ];
    assert_eq!(process::wait_any(&mut kids, Some(LONG)).unwrap(), 2);
    assert!(matches!(
        process::wait_any(&mut kids[..2], Some(Duration::from_millis(50))),
        Err(Error::Timeout)
    ));
    kids[1].kill().unwrap();
    assert_eq!(process::wait_any(&mut kids[..2], Some(LONG)).unwrap(), 1);
    kids[0].kill().unwrap();
    // Children with different result types.
    let mut a = process::start(|()| sleep_ms(600_000), ()).unwrap();
    let mut b = process::start(|()| "done".to_string(), ()).unwrap();
    let i = process::wait_any(&mut [&mut a as &mut dyn Waitable, &mut b], None).unwrap();
    assert_eq!(i, 1);
    assert_eq!(b.join().unwrap(), "done");
    a.kill().unwrap();
    assert!(matches!(
        process::wait_any::<process::Child<()>>(&mut [], None),
        Err(Error::InvalidArgument(_))
    ));
}

#[test]
fn the_pidfd_is_a_sentinel() {
    // test_sentinel: not readable while the child runs, readable once it has exited.
    let go = shmq::Event::create(&uniq("mpproc-sentinel")).unwrap();
    let mut p = process::start(
        |go: shmq::Event| {
            go.wait_timeout(Duration::from_secs(60));
        },
        go.clone(),
    )
    .unwrap();
    let fd = p.pidfd().expect("Linux 5.3 or newer").as_raw_fd();
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    assert_eq!(unsafe { libc::poll(&mut pfd, 1, 0) }, 0);
    go.set();
    // SAFETY: as above.
    assert_eq!(unsafe { libc::poll(&mut pfd, 1, 60_000) }, 1);
    assert!(p.try_wait().unwrap().is_some());
}

#[test]
fn a_result_larger_than_a_pipe_does_not_keep_the_child_alive() {
    // The repro: `while c.is_alive() {}` must end although nobody reads yet.
    let mut c = process::start(|n: usize| vec![7u8; n], 1 << 20).unwrap();
    let t = Instant::now();
    while c.is_alive() {
        assert!(t.elapsed() < LONG, "still alive after a minute");
        std::thread::sleep(Duration::from_millis(1));
    }
    let v = c.join_timeout(LONG).unwrap();
    assert_eq!(v.len(), 1 << 20);
    assert!(v.iter().all(|&b| b == 7));
}

#[test]
fn a_closed_stdout_in_the_parent_does_not_leak_into_a_childs_files() {
    // The repro, one level down so that the test's own stdout stays open: a
    // process closes fd 1 and starts a child that creates a file, writes "data" to it and
    // prints "noise". The file must hold "data" only.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("out");
    let c = process::start(
        |path: std::path::PathBuf| {
            // SAFETY: closing our own stdout; nothing in this process uses it afterwards.
            unsafe { libc::close(1) };
            let g = process::start(
                |path: std::path::PathBuf| {
                    use std::io::Write;
                    let mut f = std::fs::File::create(&path).unwrap();
                    f.write_all(b"data").unwrap();
                    println!("noise");
                    let _ = std::io::stdout().flush();
                    f.as_raw_fd()
                },
                path.clone(),
            )
            .unwrap();
            let fd = g.join().unwrap();
            (std::fs::read_to_string(&path).unwrap(), fd)
        },
        path,
    )
    .unwrap();
    let (content, fd) = c.join().unwrap();
    assert_eq!(content, "data");
    assert!(
        fd > 2,
        "the child's file took a standard stream's number: {fd}"
    );
}

#[test]
fn a_serializers_own_reason_is_kept() {
    // Arguments: refused in the parent.
    match process::start(|_: Unsendable| (), Unsendable) {
        Err(Error::Codec(m)) => assert!(m.contains(Unsendable::REASON), "{m}"),
        other => panic!("{other:?}"),
    }
    // Return value: reported by the child.
    let c = process::start(|()| Unsendable, ()).unwrap();
    match c.join() {
        Err(Error::Process(ProcessError::Failed { message, .. })) => {
            assert!(message.contains(Unsendable::REASON), "{message}")
        }
        other => panic!("{other:?}"),
    }
    // Queue puts.
    let q: shmq::Queue<Unsendable> = shmq::Queue::create(&uniq("mpproc-ser"), 4096).unwrap();
    match q.put(&Unsendable) {
        Err(Error::Codec(m)) => assert!(m.contains(Unsendable::REASON), "{m}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_named_child_is_visible_to_ps() {
    let mut c = Builder::new()
        .name("shmq-named-test")
        .start(|()| sleep_ms(600_000), ())
        .unwrap();
    let pid = c.pid();
    // The kernel keeps 15 bytes of a name.
    assert!(eventually(LONG, || {
        std::fs::read_to_string(format!("/proc/{pid}/comm"))
            .is_ok_and(|s| s.trim_end() == "shmq-named-test")
    }));
    let mut cmdline = Vec::new();
    std::fs::File::open(format!("/proc/{pid}/cmdline"))
        .unwrap()
        .read_to_end(&mut cmdline)
        .unwrap();
    assert!(cmdline.starts_with(b"shmq-named-test\0"), "{cmdline:?}");
    // pgrep finds it by name.
    if let Ok(out) = std::process::Command::new("pgrep")
        .args(["-x", "shmq-named-test"])
        .output()
    {
        if out.status.code() != Some(127) {
            let found = String::from_utf8_lossy(&out.stdout);
            assert!(found.lines().any(|l| l == pid.to_string()), "{found}");
        }
    }
    c.kill().unwrap();
    let _ = c.join_timeout(LONG);
}

#[test]
fn a_long_name_is_cut_to_15_bytes_for_the_kernel() {
    let c = Builder::new()
        .name("a-rather-long-process-name")
        .start(|()| std::fs::read_to_string("/proc/self/comm").unwrap(), ())
        .unwrap();
    assert_eq!(c.name(), Some("a-rather-long-process-name"));
    assert_eq!(c.join().unwrap().trim_end(), "a-rather-long-p");
}
