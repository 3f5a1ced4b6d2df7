//! The machine's CPU time by kind, from the `cpu` line of `/proc/stat`: how much of the
//! vCPUs' time the hypervisor took (`steal`) while a round or a case ran.
//!
//! On a KVM guest `steal` is time a vCPU was ready to run but the host ran something else:
//! neither process of a case can see it, and it stalls a cross-CPU pipeline outright. The
//! load average cannot show it (the guest's own load is the suite's two busy processes), so
//! the results record steal per round and per case, and the report shows it next to the
//! spread of the rounds.

/// Cumulative CPU time over all CPUs, in clock ticks (`USER_HZ`).
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
pub struct CpuTimes {
    /// Every kind of time but `guest`/`guest_nice` (already inside `user`/`nice`).
    pub total: u64,
    /// The `steal` column.
    pub steal: u64,
}

impl CpuTimes {
    /// The counters now (all zero when `/proc/stat` cannot be read).
    pub fn now() -> CpuTimes {
        std::fs::read_to_string("/proc/stat")
            .ok()
            .and_then(|s| CpuTimes::parse(&s))
            .unwrap_or_default()
    }

    /// The `cpu ` line of a `/proc/stat` text: `cpu user nice system idle iowait irq softirq
    /// steal guest guest_nice` (kernels before 2.6.11 lack `steal`: it then reads 0).
    pub fn parse(stat: &str) -> Option<CpuTimes> {
        let line = stat.lines().find(|l| l.starts_with("cpu "))?;
        let v: Vec<u64> = line
            .split_whitespace()
            .skip(1)
            .take(8)
            .map(|x| x.parse().ok())
            .collect::<Option<_>>()?;
        Some(CpuTimes {
            total: v.iter().sum(),
            steal: v.get(7).copied().unwrap_or(0),
        })
    }

    /// The share of all CPU time between `earlier` and `self` that was stolen, in percent
    /// (0 when no tick passed or the counters are unavailable).
    pub fn steal_pct_since(self, earlier: CpuTimes) -> f64 {
        let total = self.total.saturating_sub(earlier.total);
        if total == 0 {
            return 0.0;
        }
        100.0 * self.steal.saturating_sub(earlier.steal) as f64 / total as f64
    }
}

/// Check [`CpuTimes::parse`] and [`CpuTimes::steal_pct_since`] (run at the suite's start,
/// like `args::check`).
pub fn check() {
    let a = CpuTimes::parse("cpu  100 0 50 800 0 0 0 50 0 0\ncpu0 1 2 3 4 5 6 7 8 0 0\n");
    assert_eq!(
        a,
        Some(CpuTimes {
            total: 1000,
            steal: 50
        })
    );
    let b = CpuTimes::parse("cpu  150 0 50 850 0 0 0 150 7 0\n").unwrap();
    assert_eq!(b.steal_pct_since(a.unwrap()), 50.0);
    assert_eq!(b.steal_pct_since(b), 0.0);
    assert_eq!(CpuTimes::parse("intr 1 2 3"), None);
}
