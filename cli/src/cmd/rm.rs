//! `shmq rm NAME...` and `shmq rm --stale`: remove queues by name, or every stale one.

use clap::Args;
use shmq::internal::UNINIT_GRACE;
use shmq::Error;

use crate::error::{CliError, CliResult};
use crate::filter::Filter;
use crate::format::bytes;
use crate::object;
use crate::parse::parse_name;
use crate::users::user_name;

/// The help's closing paragraph. The grace period of an uninitialised queue is the
/// library's ([`UNINIT_GRACE`]), not restated here.
fn after_help() -> String {
    format!(
        "\
Removing a name does not disturb processes that have the queue open: they keep working, \
but nobody can open it by name any more. A queue is stale when no process (in any PID \
namespace) has it mapped, as the kernel reports through the queue's attach marker, and it \
is not persistent (e.g. left behind by a crash; queues made by `shmq create` or with \
keep_on_drop are persistent and never stale); one that never finished initialising is \
stale once nobody maps it and its creator had written its header or it is over {} old. \
`rm --stale` considers only your own queues unless --all. An object under a queue's name \
that is not a shmq queue (another program's) is only removed with --force.",
        humantime::format_duration(UNINIT_GRACE)
    )
}

#[derive(Args, Debug)]
#[command(after_help = after_help())]
pub struct RmArgs {
    /// Queue names to remove (with --stale: only consider these).
    #[arg(value_parser = parse_name, required_unless_present = "stale")]
    names: Vec<String>,
    /// Remove stale queues: not persistent and mapped by no process.
    #[arg(long)]
    stale: bool,
    /// With --stale: only print what would be removed.
    #[arg(short = 'n', long, requires = "stale")]
    dry_run: bool,
    /// With --stale and no names: every user's stale queues (default: only yours).
    #[arg(short, long, requires = "stale")]
    all: bool,
    /// Also remove objects under a queue's name that are not shmq queues.
    #[arg(short, long)]
    force: bool,
}

pub fn run(a: RmArgs) -> CliResult<()> {
    if a.stale {
        return rm_stale(&a);
    }
    if let [name] = a.names.as_slice() {
        refuse_foreign(name, a.force)?;
        let attached = attached(name);
        shmq::remove(name)?;
        say!("removed {name}");
        note_attached(name, &attached);
        return Ok(());
    }
    let mut failed = 0;
    for name in &a.names {
        let attached = attached(name);
        match refuse_foreign(name, a.force).and_then(|()| Ok(shmq::remove(name)?)) {
            Ok(()) => {
                say!("removed {name}");
                note_attached(name, &attached);
            }
            Err(e) => {
                failed += 1;
                e.report();
            }
        }
    }
    if failed > 0 {
        return Err(CliError::new(format!(
            "{failed} of {} queues could not be removed",
            a.names.len()
        )));
    }
    Ok(())
}

/// An object named `shmq.NAME` that is not a shmq queue (its first word is not shmq's
/// magic) is someone else's: say what it is, and remove it only with `--force`.
fn refuse_foreign(name: &str, force: bool) -> CliResult<()> {
    if force {
        return Ok(());
    }
    let p = match shmq::internal::peek(name) {
        Ok(p) => p,
        // Not a regular file (a FIFO, socket, directory or symlink someone put there):
        // certainly not a shmq queue.
        Err(shmq::Error::Incompatible { reason, .. }) => {
            return Err(CliError::new(format!(
                "{} is not a shmq queue: {reason}",
                object::path(name).display()
            ))
            .hint(format!(
                "another program may use it; remove it anyway with `shmq rm --force {name}`"
            )))
        }
        // Missing, or unreadable (another user's): `remove` reports what it can.
        Err(_) => return Ok(()),
    };
    if !p.foreign {
        return Ok(());
    }
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let path = object::path(name);
    let meta = std::fs::metadata(&path)?;
    let mut head = [0u8; 16];
    let n = {
        use std::os::unix::fs::FileExt;
        std::fs::File::open(&path)?.read_at(&mut head, 0)?
    };
    Err(CliError::new(format!(
        "{} is not a shmq queue: a {} object owned by {}, mode {:o}, modified {} ago, starting with \"{}\" (a shmq queue starts with \"{}\")",
        path.display(),
        bytes(meta.len()),
        user_name(meta.uid()),
        meta.permissions().mode() & 0o7777,
        crate::format::age(p.age.as_secs()),
        head[..n].escape_ascii(),
        shmq::internal::MAGIC.to_le_bytes().escape_ascii(),
    ))
    .hint(format!(
        "another program may use it; remove it anyway with `shmq rm --force {name}`"
    )))
}

/// The pids that map a queue now, as `/proc` shows them (informational: processes of
/// other users or PID namespaces may be missing).
fn attached(name: &str) -> Vec<u32> {
    shmq::inspect(name).map_or_else(|_| Vec::new(), |i| i.attached)
}

fn note_attached(name: &str, attached: &[u32]) {
    if !attached.is_empty() {
        let list: Vec<String> = attached.iter().map(|p| p.to_string()).collect();
        eprintln!(
            "note: {name} is still mapped by pid {} (as /proc shows); they keep using it, but it can no longer be opened by name",
            list.join(", ")
        );
    }
}

fn rm_stale(a: &RmArgs) -> CliResult<()> {
    let infos = if a.names.is_empty() {
        let filter = Filter::new(a.all, None)?;
        shmq::list()?
            .into_iter()
            .filter(|i| filter.wants(&i.name))
            .collect()
    } else {
        let mut v = Vec::new();
        for name in &a.names {
            v.push(shmq::inspect(name)?);
        }
        v
    };
    let mut removed = 0;
    for info in infos {
        let creator = info
            .creator()
            .map_or("unknown".to_string(), |p| format!("pid {p}"));
        if !info.is_stale() {
            if !a.names.is_empty() {
                let why = if info.mapped {
                    "mapped by a process".to_string()
                } else if let Some(p) = info.problem() {
                    p
                } else {
                    "persistent".to_string()
                };
                eprintln!("kept {}: not stale ({why})", info.name);
            }
            continue;
        }
        let why = match info.problem() {
            Some(p) => p,
            None => format!("no process maps it; creator {creator}"),
        };
        if a.dry_run {
            say!("would remove {} ({why})", info.name);
            removed += 1;
            continue;
        }
        // Narrow the window between the scan and the unlink: someone may have attached
        // (the same re-check as `shmq::remove_stale`).
        if shmq::internal::is_attached(&info.name) {
            eprintln!("kept {}: a process attached to it just now", info.name);
            continue;
        }
        // Only the object examined above: a queue created since under the same name stays.
        match info.remove_if_unchanged() {
            Ok(true) => {
                say!("removed {} ({why})", info.name);
                removed += 1;
            }
            Ok(false) => eprintln!("kept {}: the name now refers to another object", info.name),
            Err(Error::NotFound(_)) => {}
            Err(e) => return Err(e.into()),
        }
    }
    if removed == 0 {
        eprintln!("no stale queues");
    }
    Ok(())
}
