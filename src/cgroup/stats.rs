//! Counters of a sandbox cgroup and the pure parsers/formatters of the cgroup files they come
//! from (v2 `memory.events`, `pids.events`, `cpu.stat`, `memory.peak`; v1
//! `memory.oom_control`, `memory.failcnt`, `memory.max_usage_in_bytes`, `cpuacct.usage`,
//! `cpu.stat`), plus `cpu.max` and weight conversions.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// What the kernel counted for a sandbox cgroup. `None` means "not measured" (the controller
/// is not in use, or the file does not exist on this kernel), never zero.
///
/// Every field is monotonic while the cgroup exists, so two readings combine with
/// [`Counters::merge`] (field-wise maximum).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counters {
    /// Times the memory limit was hit: v2 `memory.events` `max`; v1 `memory.failcnt` +
    /// `memory.memsw.failcnt`.
    pub memory_max: Option<u64>,
    /// Times the cgroup was under OOM: v2 `memory.events` `oom` (v1: not counted).
    pub oom: Option<u64>,
    /// Processes killed by the OOM killer: v2 `memory.events` `oom_kill`; v1
    /// `memory.oom_control` `oom_kill`.
    pub oom_kill: Option<u64>,
    /// Times the whole group was OOM-killed: v2 `memory.events` `oom_group_kill` (5.17+).
    pub oom_group_kill: Option<u64>,
    /// Peak memory use in bytes: v2 `memory.peak` (5.19+); v1 `memory.max_usage_in_bytes`.
    pub memory_peak: Option<u64>,
    /// Times a fork/clone failed on the pids limit: `pids.events` `max` (v1 and v2).
    pub pids_max: Option<u64>,
    /// CPU time used, in microseconds: v2 `cpu.stat` `usage_usec`; v1 `cpuacct.usage` / 1000.
    pub cpu_usage_usec: Option<u64>,
    /// Periods in which the CPU quota throttled the group: `cpu.stat` `nr_throttled`.
    pub nr_throttled: Option<u64>,
    /// Time spent throttled, in microseconds: v2 `cpu.stat` `throttled_usec`; v1 `cpu.stat`
    /// `throttled_time` / 1000.
    pub throttled_usec: Option<u64>,
}

impl Counters {
    /// Combines two readings field by field, keeping the larger known value (all counters
    /// are monotonic), so a failed late read never hides an earlier one.
    pub fn merge(&mut self, other: &Counters) {
        fn max(a: &mut Option<u64>, b: Option<u64>) {
            *a = match (*a, b) {
                (Some(x), Some(y)) => Some(x.max(y)),
                (x, y) => x.or(y),
            };
        }
        max(&mut self.memory_max, other.memory_max);
        max(&mut self.oom, other.oom);
        max(&mut self.oom_kill, other.oom_kill);
        max(&mut self.oom_group_kill, other.oom_group_kill);
        max(&mut self.memory_peak, other.memory_peak);
        max(&mut self.pids_max, other.pids_max);
        max(&mut self.cpu_usage_usec, other.cpu_usage_usec);
        max(&mut self.nr_throttled, other.nr_throttled);
        max(&mut self.throttled_usec, other.throttled_usec);
    }
}

/// The value of `key` in a flat-keyed cgroup file (`key value` per line), e.g. `oom_kill` in
/// `memory.events`. `None` when the key is absent or its value is not a number.
pub fn keyed(text: &str, key: &str) -> Option<u64> {
    text.lines().find_map(|line| {
        let mut it = line.split_whitespace();
        if it.next()? != key {
            return None;
        }
        it.next()?.parse().ok()
    })
}

/// A single-value cgroup file such as `memory.peak` or `memory.failcnt`; `max` is `None`.
pub fn single(text: &str) -> Option<u64> {
    text.trim().parse().ok()
}

/// Period of the CPU bandwidth limit, in microseconds (the kernel default).
pub const CPU_PERIOD_USEC: u64 = 100_000;

/// Smallest quota the kernel accepts, in microseconds.
pub const CPU_MIN_QUOTA_USEC: u64 = 1_000;

/// The CFS quota in microseconds for `cpus` CPUs per `period` microseconds, rounded, at least
/// [`CPU_MIN_QUOTA_USEC`].
pub fn cpu_quota_usec(cpus: f64, period: u64) -> u64 {
    let q = (cpus * period as f64).round();
    // `as` saturates for floats out of range; cpus is validated finite and positive.
    (q as u64).max(CPU_MIN_QUOTA_USEC)
}

/// The text written to v2 `cpu.max` for `cpus` CPUs: `"$QUOTA $PERIOD"`.
pub fn format_cpu_max(cpus: f64, period: u64) -> String {
    format!("{} {period}", cpu_quota_usec(cpus, period))
}

/// Converts a v2 `cpu.weight` (1..=10000, default 100) into a v1 `cpu.shares` (2..=262144,
/// default 1024); the inverse of the runc/crun conversion `weight = 1 + (shares - 2) * 9999 /
/// 262142`.
pub fn weight_to_shares(weight: u64) -> u64 {
    let w = weight.clamp(1, 10_000);
    2 + ((w - 1) * 262_142).div_ceil(9_999)
}

/// The files a sandbox's counters are read from. Paths only, so it can be cloned into the
/// watcher thread.
#[derive(Debug, Clone, Default)]
pub(crate) struct CounterSource {
    /// The v2 leaf directory (all files there).
    pub v2: Option<PathBuf>,
    /// v1 memory hierarchy leaf.
    pub memory: Option<PathBuf>,
    /// v1 pids hierarchy leaf.
    pub pids: Option<PathBuf>,
    /// v1 cpu hierarchy leaf.
    pub cpu: Option<PathBuf>,
    /// v1 cpuacct hierarchy leaf.
    pub cpuacct: Option<PathBuf>,
}

fn read(dir: &Path, file: &str) -> Option<String> {
    std::fs::read_to_string(dir.join(file)).ok()
}

impl CounterSource {
    /// Reads every counter now; unreadable files give `None`.
    pub fn read(&self) -> Counters {
        let mut c = Counters::default();
        if let Some(dir) = &self.v2 {
            read_v2(dir, &mut c);
        }
        if let Some(dir) = &self.memory {
            if let Some(t) = read(dir, "memory.oom_control") {
                c.oom_kill = keyed(&t, "oom_kill");
            }
            // A charge fails on memory.memsw first when swap is limited too, so the limit
            // hits are the sum of both counters.
            let fail = |f| read(dir, f).and_then(|t| single(&t));
            c.memory_max = match (fail("memory.failcnt"), fail("memory.memsw.failcnt")) {
                (Some(a), b) => Some(a + b.unwrap_or(0)),
                (None, b) => b,
            };
            c.memory_peak = read(dir, "memory.max_usage_in_bytes").and_then(|t| single(&t));
        }
        if let Some(dir) = &self.pids {
            c.pids_max = read(dir, "pids.events").and_then(|t| keyed(&t, "max"));
        }
        if let Some(dir) = &self.cpuacct {
            c.cpu_usage_usec = read(dir, "cpuacct.usage")
                .and_then(|t| single(&t))
                .map(|ns| ns / 1000);
        }
        if let Some(dir) = &self.cpu {
            if let Some(t) = read(dir, "cpu.stat") {
                c.nr_throttled = keyed(&t, "nr_throttled");
                c.throttled_usec = keyed(&t, "throttled_time").map(|ns| ns / 1000);
            }
        }
        c
    }
}

/// Reads the v2 counters of `dir` into `c`. Files of controllers that are not enabled do not
/// exist and stay `None`.
fn read_v2(dir: &Path, c: &mut Counters) {
    if let Some(t) = read(dir, "memory.events") {
        parse_memory_events(&t, c);
    }
    c.memory_peak = read(dir, "memory.peak").and_then(|t| single(&t));
    if let Some(t) = read(dir, "pids.events") {
        c.pids_max = keyed(&t, "max");
    }
    if let Some(t) = read(dir, "cpu.stat") {
        parse_cpu_stat_v2(&t, c);
    }
}

/// Parses v2 `memory.events` (`low high max oom oom_kill oom_group_kill`) into `c`.
pub(crate) fn parse_memory_events(text: &str, c: &mut Counters) {
    c.memory_max = keyed(text, "max");
    c.oom = keyed(text, "oom");
    c.oom_kill = keyed(text, "oom_kill");
    c.oom_group_kill = keyed(text, "oom_group_kill");
}

/// Parses v2 `cpu.stat` (`usage_usec`, `nr_throttled`, `throttled_usec`, ...) into `c`.
/// `cpu.stat` exists in every v2 cgroup (usage only); the throttling keys appear with the cpu
/// controller.
pub(crate) fn parse_cpu_stat_v2(text: &str, c: &mut Counters) {
    c.cpu_usage_usec = keyed(text, "usage_usec");
    c.nr_throttled = keyed(text, "nr_throttled");
    c.throttled_usec = keyed(text, "throttled_usec");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_events_v2() {
        let text = "low 0\nhigh 0\nmax 1543\noom 2\noom_kill 1\noom_group_kill 0\n";
        let mut c = Counters::default();
        parse_memory_events(text, &mut c);
        assert_eq!(c.memory_max, Some(1543));
        assert_eq!(c.oom, Some(2));
        assert_eq!(c.oom_kill, Some(1));
        assert_eq!(c.oom_group_kill, Some(0));
        // Older kernels (< 5.17) have no oom_group_kill line.
        let mut c = Counters::default();
        parse_memory_events("low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n", &mut c);
        assert_eq!(c.oom_group_kill, None);
        assert_eq!(c.oom_kill, Some(1));
    }

    #[test]
    fn pids_events() {
        assert_eq!(keyed("max 12\n", "max"), Some(12));
        // 6.x kernels may add more keys; only `max` is read.
        assert_eq!(keyed("max 0\nmax.imposed 5\n", "max"), Some(0));
        assert_eq!(keyed("", "max"), None);
        assert_eq!(keyed("max lots\n", "max"), None);
    }

    #[test]
    fn cpu_stat_v2_and_v1() {
        let v2 = "usage_usec 2043210\nuser_usec 2000000\nsystem_usec 43210\ncore_sched.force_idle_usec 0\n\
                  nr_periods 21\nnr_throttled 19\nthrottled_usec 1601234\nnr_bursts 0\nburst_usec 0\n";
        let mut c = Counters::default();
        parse_cpu_stat_v2(v2, &mut c);
        assert_eq!(c.cpu_usage_usec, Some(2_043_210));
        assert_eq!(c.nr_throttled, Some(19));
        assert_eq!(c.throttled_usec, Some(1_601_234));
        // Without the cpu controller only the usage keys exist.
        let mut c = Counters::default();
        parse_cpu_stat_v2("usage_usec 10\nuser_usec 5\nsystem_usec 5\n", &mut c);
        assert_eq!(
            (c.cpu_usage_usec, c.nr_throttled, c.throttled_usec),
            (Some(10), None, None)
        );
        let v1 = "nr_periods 20\nnr_throttled 18\nthrottled_time 1500000000\n";
        assert_eq!(keyed(v1, "throttled_time"), Some(1_500_000_000));
    }

    #[test]
    fn v1_oom_control_and_single_values() {
        let t = "oom_kill_disable 0\nunder_oom 0\noom_kill 3\n";
        assert_eq!(keyed(t, "oom_kill"), Some(3));
        // Kernels before 4.13 have no oom_kill line.
        assert_eq!(keyed("oom_kill_disable 0\nunder_oom 0\n", "oom_kill"), None);
        assert_eq!(single("33554432\n"), Some(33_554_432));
        assert_eq!(single("max\n"), None);
    }

    #[test]
    fn cpu_max_formatting() {
        assert_eq!(format_cpu_max(0.2, CPU_PERIOD_USEC), "20000 100000");
        assert_eq!(format_cpu_max(1.5, CPU_PERIOD_USEC), "150000 100000");
        assert_eq!(format_cpu_max(2.0, 50_000), "100000 50000");
        // Below the kernel's minimum quota.
        assert_eq!(format_cpu_max(0.001, CPU_PERIOD_USEC), "1000 100000");
        assert_eq!(cpu_quota_usec(0.333_333, CPU_PERIOD_USEC), 33_333);
    }

    #[test]
    fn weight_shares_conversion() {
        assert_eq!(weight_to_shares(1), 2);
        assert_eq!(weight_to_shares(10_000), 262_144);
        assert_eq!(weight_to_shares(100), 2_598);
        // Round trip through the runc formula.
        for w in [1u64, 2, 50, 100, 500, 9_999, 10_000] {
            let shares = weight_to_shares(w);
            let back = 1 + ((shares - 2) * 9_999) / 262_142;
            assert_eq!(back, w, "weight {w} -> shares {shares}");
        }
    }

    #[test]
    fn merge_keeps_maxima() {
        let mut a = Counters {
            oom_kill: Some(1),
            memory_peak: Some(100),
            ..Counters::default()
        };
        let b = Counters {
            oom_kill: Some(0),
            memory_peak: Some(200),
            pids_max: Some(4),
            ..Counters::default()
        };
        a.merge(&b);
        assert_eq!(a.oom_kill, Some(1));
        assert_eq!(a.memory_peak, Some(200));
        assert_eq!(a.pids_max, Some(4));
        assert_eq!(a.oom, None);
        let json = serde_json::to_string(&a).unwrap();
        let back: Counters = serde_json::from_str(&json).unwrap();
        assert_eq!(back, a);
    }
}
