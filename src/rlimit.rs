//! Resource limits: the profile's `[rlimits]` become a fixed array of `(resource, soft,
//! hard)` in the plan; the plugin sets them with `prlimit64` before it drops its
//! capabilities (so a limit above the host's hard limit can still be set), and keeps them
//! across `execve`.
//!
//! A key left out keeps the caller's limit, except `core`, which is 0 unless the profile
//! says otherwise: a core dump of a plugin lands wherever the host's `core_pattern` points,
//! outside the sandbox.

// `RLIMIT_*` are `u32` on glibc and `c_int` on musl: the casts are needed on one of them.
#![allow(clippy::unnecessary_cast)]

pub(crate) use crate::child::rlimit::{Rlim, RlimitPlan};
use serde::de::{self, Deserializer, Visitor};
use serde::Deserialize;
use std::fmt;

/// One limit: a number or `"unlimited"`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Limit {
    /// `RLIM_INFINITY`.
    Unlimited,
    /// A value (bytes, seconds or a count, by resource).
    Value(u64),
}

impl Limit {
    fn raw(self) -> u64 {
        match self {
            Limit::Unlimited => libc::RLIM_INFINITY,
            Limit::Value(v) => v,
        }
    }
}

impl<'de> Deserialize<'de> for Limit {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Limit;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a number, a size like \"64M\", or \"unlimited\"")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Limit, E> {
                Ok(Limit::Value(v))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Limit, E> {
                u64::try_from(v)
                    .map(Limit::Value)
                    .map_err(|_| E::custom(format!("a limit cannot be negative ({v})")))
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Limit, E> {
                parse_limit(s).map_err(E::custom)
            }
        }
        d.deserialize_any(V)
    }
}

/// Parses `"unlimited"`, `"0"`, a number or a size like `"64M"`.
pub fn parse_limit(s: &str) -> Result<Limit, String> {
    let t = s.trim();
    if t.eq_ignore_ascii_case("unlimited") || t.eq_ignore_ascii_case("infinity") {
        return Ok(Limit::Unlimited);
    }
    if t == "0" {
        return Ok(Limit::Value(0));
    }
    crate::profile::parse_size(t)
        .map(Limit::Value)
        .map_err(|_| {
            format!("'{s}' is not a limit: give a number, a size like \"64M\", or \"unlimited\"")
        })
}

/// The `[rlimits]` table of a profile. Each key is optional; a missing one keeps the
/// caller's limit (except `core`, 0 by default). Soft and hard limits are both set.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RlimitsConfig {
    /// Open file descriptors (`RLIMIT_NOFILE`).
    #[serde(default)]
    pub nofile: Option<Limit>,
    /// Processes of the plugin's uid, counted host-wide (`RLIMIT_NPROC`; root is exempt,
    /// use the cgroup pids limit to bound the sandbox).
    #[serde(default)]
    pub nproc: Option<Limit>,
    /// Core dump size (`RLIMIT_CORE`), 0 by default.
    #[serde(default = "zero")]
    pub core: Option<Limit>,
    /// Largest file the plugin may write (`RLIMIT_FSIZE`; past it, `SIGXFSZ` or `EFBIG`).
    #[serde(default)]
    pub fsize: Option<Limit>,
    /// Address space (`RLIMIT_AS`).
    #[serde(default, rename = "as")]
    pub address_space: Option<Limit>,
    /// CPU seconds (`RLIMIT_CPU`): `SIGXCPU` at the limit, `SIGKILL` one second later.
    #[serde(default)]
    pub cpu: Option<Limit>,
    /// Locked memory (`RLIMIT_MEMLOCK`).
    #[serde(default)]
    pub memlock: Option<Limit>,
    /// Main thread stack (`RLIMIT_STACK`).
    #[serde(default)]
    pub stack: Option<Limit>,
}

fn zero() -> Option<Limit> {
    Some(Limit::Value(0))
}

impl Default for RlimitsConfig {
    fn default() -> Self {
        RlimitsConfig {
            nofile: None,
            nproc: None,
            core: zero(),
            fsize: None,
            address_space: None,
            cpu: None,
            memlock: None,
            stack: None,
        }
    }
}

/// The name of resource `r` (for errors).
pub(crate) fn resource_name(r: u32) -> &'static str {
    match r {
        x if x == libc::RLIMIT_NOFILE as u32 => "nofile",
        x if x == libc::RLIMIT_NPROC as u32 => "nproc",
        x if x == libc::RLIMIT_CORE as u32 => "core",
        x if x == libc::RLIMIT_FSIZE as u32 => "fsize",
        x if x == libc::RLIMIT_AS as u32 => "as",
        x if x == libc::RLIMIT_CPU as u32 => "cpu",
        x if x == libc::RLIMIT_MEMLOCK as u32 => "memlock",
        x if x == libc::RLIMIT_STACK as u32 => "stack",
        _ => "?",
    }
}

impl RlimitPlan {
    /// Prepares `cfg`'s limits; `nr_open` is the kernel's ceiling for `nofile`;
    /// `can_raise` says whether the plugin may go above the caller's hard limits (it has
    /// `CAP_SYS_RESOURCE` when they are set, if the caller has it).
    pub(crate) fn new(cfg: &RlimitsConfig, nr_open: u64, can_raise: bool) -> Result<Self, String> {
        let mut p = RlimitPlan::default();
        let all = [
            (libc::RLIMIT_NOFILE, cfg.nofile),
            (libc::RLIMIT_NPROC, cfg.nproc),
            (libc::RLIMIT_CORE, cfg.core),
            (libc::RLIMIT_FSIZE, cfg.fsize),
            (libc::RLIMIT_AS, cfg.address_space),
            (libc::RLIMIT_CPU, cfg.cpu),
            (libc::RLIMIT_MEMLOCK, cfg.memlock),
            (libc::RLIMIT_STACK, cfg.stack),
        ];
        for (res, lim) in all {
            let Some(lim) = lim else { continue };
            let resource = res as u32;
            let soft = lim.raw();
            if resource == libc::RLIMIT_NOFILE as u32 && soft > nr_open {
                return Err(format!(
                    "rlimits.nofile = {} is above this kernel's ceiling fs.nr_open = {nr_open}",
                    if lim == Limit::Unlimited {
                        "\"unlimited\"".to_string()
                    } else {
                        soft.to_string()
                    }
                ));
            }
            // The highest hard limit the plugin can set: any with CAP_SYS_RESOURCE, else the
            // caller's own.
            let mut ceiling = libc::RLIM_INFINITY;
            if !can_raise {
                let mut cur = libc::rlimit64 {
                    rlim_cur: 0,
                    rlim_max: libc::RLIM_INFINITY,
                };
                // SAFETY: reads this process's limit into `cur`.
                unsafe { libc::prlimit64(0, res, std::ptr::null(), &mut cur) };
                ceiling = cur.rlim_max;
                if soft > cur.rlim_max {
                    return Err(format!(
                        "rlimits.{} = {} is above the caller's hard limit {}, and raising a \
                         hard limit needs CAP_SYS_RESOURCE, which this process lacks",
                        resource_name(resource),
                        if lim == Limit::Unlimited {
                            "\"unlimited\"".to_string()
                        } else {
                            soft.to_string()
                        },
                        cur.rlim_max
                    ));
                }
            }
            // CPU: the hard limit one second later, so the plugin first gets SIGXCPU (and a
            // diagnosis that says so) rather than a bare SIGKILL; never above what the
            // plugin may set (a caller's hard limit equal to the soft one stays so).
            let hard = if resource == libc::RLIMIT_CPU as u32 && soft != libc::RLIM_INFINITY {
                soft.saturating_add(1).min(ceiling)
            } else {
                soft
            };
            if let Some(slot) = p.items.get_mut(p.len) {
                *slot = Rlim {
                    resource,
                    soft,
                    hard,
                };
                p.len += 1;
            }
        }
        Ok(p)
    }
}

/// The kernel's ceiling for `RLIMIT_NOFILE` (`fs.nr_open`).
pub(crate) fn nr_open() -> u64 {
    std::fs::read_to_string("/proc/sys/fs/nr_open")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(1 << 20)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_numbers_sizes_and_unlimited() {
        let c: RlimitsConfig = toml::from_str(
            "nofile = 256\nfsize = \"1M\"\nas = \"unlimited\"\ncpu = 10\nstack = \"8M\"",
        )
        .unwrap();
        assert_eq!(c.nofile, Some(Limit::Value(256)));
        assert_eq!(c.fsize, Some(Limit::Value(1 << 20)));
        assert_eq!(c.address_space, Some(Limit::Unlimited));
        assert_eq!(c.core, Some(Limit::Value(0)), "core defaults to 0");
        let c: RlimitsConfig = toml::from_str("core = \"unlimited\"").unwrap();
        assert_eq!(c.core, Some(Limit::Unlimited));
        for bad in [
            "nofile = -1",
            "fsize = \"lots\"",
            "nofiles = 3",
            "cpu = 1.5",
        ] {
            assert!(toml::from_str::<RlimitsConfig>(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn cpu_hard_limit_never_above_what_the_caller_may_set() {
        // A caller whose hard CPU limit is the profile's value: without CAP_SYS_RESOURCE the
        // plugin cannot get soft + 1 (setrlimit would fail with EPERM), so hard stays.
        const SECS: u64 = 1 << 40;
        let lim = libc::rlimit64 {
            rlim_cur: SECS,
            rlim_max: SECS,
        };
        let mut old = libc::rlimit64 {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: sets this process's CPU limit far above any run time (and reads the old).
        let r = unsafe { libc::prlimit64(0, libc::RLIMIT_CPU, &lim, &mut old) };
        assert_eq!(r, 0);
        let c: RlimitsConfig = toml::from_str(&format!("cpu = {SECS}")).unwrap();
        let p = RlimitPlan::new(&c, 1024, false).unwrap();
        let cpu = p
            .items()
            .iter()
            .find(|i| i.resource == libc::RLIMIT_CPU as u32)
            .copied()
            .unwrap();
        // With the capability, one second of SIGXCPU warning.
        let q = RlimitPlan::new(&c, 1024, true).unwrap();
        let cpu_raised = q
            .items()
            .iter()
            .find(|i| i.resource == libc::RLIMIT_CPU as u32)
            .copied()
            .unwrap();
        // SAFETY: restores the old limit (raising it back needs root; harmless otherwise).
        unsafe { libc::prlimit64(0, libc::RLIMIT_CPU, &old, std::ptr::null_mut()) };
        assert_eq!((cpu.soft, cpu.hard), (SECS, SECS));
        assert_eq!((cpu_raised.soft, cpu_raised.hard), (SECS, SECS + 1));
    }

    #[test]
    fn plan_has_soft_and_hard_and_checks_nofile() {
        let c: RlimitsConfig = toml::from_str("nofile = 64\ncpu = 5").unwrap();
        let p = RlimitPlan::new(&c, 1024, true).unwrap();
        let items = p.items();
        assert_eq!(items.len(), 3);
        assert_eq!(
            items[0],
            Rlim {
                resource: libc::RLIMIT_NOFILE as u32,
                soft: 64,
                hard: 64
            }
        );
        assert_eq!(resource_name(items[1].resource), "core");
        assert_eq!((items[2].soft, items[2].hard), (5, 6));
        let c: RlimitsConfig = toml::from_str("nofile = \"unlimited\"").unwrap();
        let e = RlimitPlan::new(&c, 1024, true).unwrap_err();
        assert!(e.contains("fs.nr_open"), "{e}");
        let c: RlimitsConfig = toml::from_str("stack = \"unlimited\"").unwrap();
        let mut cur = libc::rlimit64 {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: reads this process's stack limit into a live struct.
        unsafe { libc::prlimit64(0, libc::RLIMIT_STACK, std::ptr::null(), &mut cur) };
        if cur.rlim_max != libc::RLIM_INFINITY {
            let e = RlimitPlan::new(&c, 1024, false).unwrap_err();
            assert!(e.contains("CAP_SYS_RESOURCE"), "{e}");
        }
        let c: RlimitsConfig = toml::from_str("nofile = \"unlimited\"").unwrap();
        let e = RlimitPlan::new(&c, 1024, false).unwrap_err();
        assert!(e.contains("fs.nr_open"), "{e}");
    }
}
