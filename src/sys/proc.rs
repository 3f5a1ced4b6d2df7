//! What `/proc` says about processes: whether one runs, when it started, which shmq
//! objects it maps. Informational only, and right only inside the caller's PID namespace
//! (processes of other users may be invisible without privileges, those of other PID
//! namespaces always are): no decision (lock takeover, staleness) rests on it; those ask
//! the kernel through OFD locks (`crate::sys::ofd`).

use std::collections::HashMap;

/// Whether the thread (or process) `tid` still exists and is not a zombie.
///
/// Uses `/proc/<tid>/stat` (works for thread ids too); falls back to `kill(tid, 0)` when
/// `/proc` is unavailable. Only meaningful in the caller's PID namespace: the locks do not
/// use it (see `crate::sync::Holder`); it serves informational fields such as a creator's
/// liveness.
pub fn tid_alive(tid: u32) -> bool {
    if tid == 0 || tid > i32::MAX as u32 {
        return false;
    }
    match std::fs::read(format!("/proc/{tid}/stat")) {
        Ok(stat) => {
            // The state is the first field after the last ')'.
            let state = stat
                .iter()
                .rposition(|&b| b == b')')
                .and_then(|i| stat.get(i + 2).copied());
            !matches!(state, Some(b'Z') | Some(b'X') | Some(b'x'))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => false,
        // kill with signal 0 only checks for existence and permission (EPERM: it exists).
        Err(_) => match rustix::process::Pid::from_raw(tid as i32) {
            Some(pid) => !matches!(
                rustix::process::test_kill_process(pid),
                Err(rustix::io::Errno::SRCH)
            ),
            None => false,
        },
    }
}

/// Start time of process `pid` in clock ticks since boot (field 22 of `/proc/<pid>/stat`),
/// used together with the pid to recognise a creator even after pid reuse.
pub(crate) fn process_start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    // rest starts at field 3 (state); starttime is field 22.
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// Whether the process that recorded (`pid`, `start`) is still running. Informational only,
/// and right only inside the caller's PID namespace: no decision (lock takeover, staleness)
/// rests on it.
pub(crate) fn process_alive(pid: u32, start: u64) -> bool {
    if !tid_alive(pid) {
        return false;
    }
    match process_start_time(pid) {
        Some(s) => start == 0 || s == start,
        None => true,
    }
}

/// For every mapped file whose path starts with `prefix`: the rest of the path, and the
/// pids mapping it, from one pass over `/proc/*/maps`.
pub(crate) fn mapped_with_prefix(prefix: &str) -> HashMap<String, Vec<u32>> {
    let mut out: HashMap<String, Vec<u32>> = Default::default();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return out;
    };
    for entry in dir.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(maps) = std::fs::read_to_string(format!("/proc/{pid}/maps")) else {
            continue;
        };
        let mut seen: Vec<&str> = Vec::new();
        for line in maps.lines() {
            let path = line.split_whitespace().nth(5);
            if let Some(name) = path.and_then(|p| p.strip_prefix(prefix)) {
                if !seen.contains(&name) {
                    seen.push(name);
                    out.entry(name.to_string()).or_default().push(pid);
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[cfg_attr(miri, ignore = "reads /proc: Miri runs isolated from the file system")]
    fn own_process_is_alive_and_start_time_known() {
        let pid = std::process::id();
        assert!(tid_alive(pid));
        let st = process_start_time(pid).expect("start time");
        assert!(process_alive(pid, st));
        assert!(!process_alive(pid, st + 1));
        assert!(!tid_alive(0));
    }
}
