//! `python/`: Python's `multiprocessing.Queue` on the same workloads (`benches/mp_queue.py`),
//! when python3 exists. The script gets the sizes and the placement from here, so that they
//! have one definition.

use std::process::{Command, Stdio};

use super::Ctx;
use crate::payloads::{LAT_SIZES, SIZES};
use crate::place::{Place, PARENT_CPU};

/// `8,64,...`
fn list(sizes: &[usize]) -> String {
    sizes
        .iter()
        .map(|s| s.to_string())
        .collect::<Vec<_>>()
        .join(",")
}

/// Python's multiprocessing.Queue on the same workloads, when python3 exists.
pub fn run(cx: &mut Ctx) {
    if !cx.wants("python/") {
        return;
    }
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/mp_queue.py");
    let mut cmd = Command::new("python3");
    cmd.arg(script);
    if cx.quick {
        cmd.arg("--quick");
    }
    cmd.arg("--sizes").arg(list(&SIZES));
    cmd.arg("--lat-sizes").arg(list(&LAT_SIZES));
    cmd.arg("--parent-cpu").arg(PARENT_CPU.to_string());
    for place in Place::ALL {
        cmd.arg("--place")
            .arg(format!("{}={}", place.name(), place.peer_cpu()));
    }
    match cmd.stderr(Stdio::inherit()).output() {
        Ok(out) if out.status.success() => {
            let json = String::from_utf8_lossy(&out.stdout).trim().to_string();
            if json.starts_with('{') {
                cx.res.python.push(json);
            } else {
                eprintln!("python benchmark printed no JSON object: skipped");
            }
        }
        Ok(out) => eprintln!("python benchmark failed: {}", out.status),
        Err(e) => eprintln!("python3 not available ({e}): skipping mp.Queue"),
    }
}
