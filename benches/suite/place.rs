//! Placement: which CPU each process (or thread) of a case runs on. The parent always runs on
//! [`PARENT_CPU`]; its peer on the CPU its [`Place`] names.

/// The CPU the parent (the measuring side) pins itself to in every case.
pub const PARENT_CPU: usize = 0;

/// Where the two processes (or threads) of a case run.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Place {
    /// Parent on CPU 0, peer on CPU 1.
    Diff,
    /// Both on CPU 0.
    Same,
}

impl Place {
    /// Every placement, in the order the cases run them.
    pub const ALL: [Place; 2] = [Place::Diff, Place::Same];

    /// The placement's part of a benchmark ID (`tput/<row>/<place>/<size>`).
    pub fn name(self) -> &'static str {
        match self {
            Place::Diff => "diff",
            Place::Same => "same",
        }
    }
    /// The CPU the peer process (or thread) pins itself to.
    pub fn peer_cpu(self) -> usize {
        match self {
            Place::Diff => (PARENT_CPU + 1) % ncpus(),
            Place::Same => PARENT_CPU,
        }
    }
}

/// Online CPUs of the machine (not of our affinity mask, which pinning narrows).
pub fn ncpus() -> usize {
    // SAFETY: sysconf has no preconditions.
    let n = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    n.max(1) as usize
}

/// Pin the calling thread to `cpu` (`None`: allow every CPU).
pub fn pin(cpu: Option<usize>) {
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
