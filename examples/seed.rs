//! The two snippets of the seed article, in Rust with shmq.
//!
//! (a) `multiprocessing.Process(target=f).start()`: a child sleeps briefly and prints
//!     "my multiprocessing test", its parent's pid and its own pid.
//! (b) A parent creates a queue, starts a child that puts
//!     `("multiprocess queue test", "zsq")`, and prints what it gets.
//!
//! Run: `cargo run --example seed`

use std::time::Duration;

use shmq::{process, Queue};

fn main() -> shmq::Result<()> {
    // First statement of main: in a child process this runs the function and exits.
    process::init();
    // Ctrl-C or SIGTERM: remove the queues this process created before dying.
    shmq::cleanup_on_signals()?;

    // (a) a child that prints its parent's pid and its own.
    let child = process::start(
        |()| {
            std::thread::sleep(Duration::from_millis(200));
            // SAFETY: getppid has no preconditions and cannot fail.
            let ppid = unsafe { libc::getppid() };
            println!("my multiprocessing test {} {}", ppid, std::process::id());
        },
        (),
    )?;
    println!(
        "parent {} started child {}",
        std::process::id(),
        child.pid()
    );
    child.join()?;

    // (b) a child that puts a tuple on a queue the parent created.
    let name = format!("seed-{}", std::process::id());
    let q: Queue<(String, String)> = Queue::create(&name, 1 << 16)?;
    let child = process::start(
        |(q, who): (Queue<(String, String)>, String)| {
            // A panic here (e.g. the queue is closed) reaches the parent's join().
            q.put(&("multiprocess queue test".to_string(), who))
                .expect("put");
        },
        (q.clone(), "zsq".to_string()),
    )?;
    let got = q.get()?;
    println!("{got:?}");
    child.join()?;
    Ok(())
}
