//! cgroup v1: one directory per needed hierarchy (as cgroups-rs
//! `Cgroup::new_with_specified_controllers` would make, but with each hierarchy's own cgroup
//! as the base, which cgroups-rs cannot express in one call), limits written through the
//! cgroups-rs controllers, the freezer to stop a fork loop while it is killed.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use cgroups_rs::fs::cpu::CpuController;
use cgroups_rs::fs::freezer::FreezerController;
use cgroups_rs::fs::memory::MemController;
use cgroups_rs::fs::pid::PidController;
use cgroups_rs::fs::MaxValue;
use cgroups_rs::FreezerState;

use super::detect::V1Dir;
use super::stats::{cpu_quota_usec, weight_to_shares, CounterSource, CPU_PERIOD_USEC};
use super::util::{self, rs_err};
use super::{CgroupError, Limits};

/// A sandbox's cgroup in the v1 hierarchies that its limits need.
#[derive(Debug)]
pub(crate) struct V1Cgroup {
    pub dirs: Vec<V1Dir>,
}

impl V1Cgroup {
    /// Creates the directories of `dirs` and applies `limits`; on error removes what it made.
    pub fn create(dirs: Vec<V1Dir>, limits: &Limits) -> Result<V1Cgroup, CgroupError> {
        let mut made: Vec<V1Dir> = Vec::new();
        let result = (|| {
            for dir in &dirs {
                make_leaf(&dir.container, &dir.leaf)?;
                made.push(dir.clone());
            }
            let cg = V1Cgroup { dirs: dirs.clone() };
            cg.apply(limits)?;
            Ok(cg)
        })();
        if result.is_err() {
            for d in &made {
                let _ = util::rmdir_retry(&d.leaf);
                util::rmdir_if_unused(&d.container);
            }
        }
        result
    }

    fn dir(&self, ctrl: &str) -> Option<&V1Dir> {
        self.dirs.iter().find(|d| d.has(ctrl))
    }

    fn apply(&self, limits: &Limits) -> Result<(), CgroupError> {
        if let (Some(mem), Some(d)) = (limits.memory, self.dir("memory")) {
            let c = MemController::new(d.leaf.clone(), d.mount_root.clone(), false);
            let leaf = &d.leaf;
            c.set_limit(mem as i64)
                .map_err(|e| rs_err(leaf, "memory.limit_in_bytes", mem.to_string(), e))?;
            let swap = limits.swap.unwrap_or(0);
            if leaf.join("memory.memsw.limit_in_bytes").exists() {
                let total = mem.saturating_add(swap).min(i64::MAX as u64);
                c.set_memswap_limit(total as i64).map_err(|e| {
                    rs_err(leaf, "memory.memsw.limit_in_bytes", total.to_string(), e)
                })?;
            } else if util::swap_total_kb().unwrap_or(1) > 0 {
                if swap != 0 {
                    return Err(CgroupError::InvalidLimit(format!(
                        "a swap limit of {swap} bytes cannot be enforced: {} has no \
                         memory.memsw.limit_in_bytes (boot with swapaccount=1), use swap 0",
                        leaf.display()
                    )));
                }
                // Without swap accounting, swappiness 0 stops limit reclaim from swapping
                // (v1 semantics, Documentation/admin-guide/cgroup-v1/memory.rst).
                c.set_swappiness(0)
                    .map_err(|e| rs_err(leaf, "memory.swappiness", "0".to_owned(), e))?;
            }
        }
        if let (Some(pids), Some(d)) = (limits.pids, self.dir("pids")) {
            PidController::new(d.leaf.clone(), d.mount_root.clone(), false)
                .set_pid_max(MaxValue::Value(pids as i64))
                .map_err(|e| rs_err(&d.leaf, "pids.max", pids.to_string(), e))?;
        }
        if let Some(d) = self.dir("cpu") {
            let c = CpuController::new(d.leaf.clone(), d.mount_root.clone(), false);
            if let Some(cpus) = limits.cpus {
                let quota = cpu_quota_usec(cpus, CPU_PERIOD_USEC);
                c.set_cfs_quota_and_period(Some(quota as i64), Some(CPU_PERIOD_USEC))
                    .map_err(|e| rs_err(&d.leaf, "cpu.cfs_quota_us", quota.to_string(), e))?;
            }
            if let Some(w) = limits.cpu_weight {
                let shares = weight_to_shares(w);
                c.set_shares(shares)
                    .map_err(|e| rs_err(&d.leaf, "cpu.shares", shares.to_string(), e))?;
            }
        }
        Ok(())
    }

    /// Moves `pid` into the sandbox cgroup of every hierarchy.
    pub fn attach(&self, pid: i32) -> Result<(), CgroupError> {
        for d in &self.dirs {
            let path = d.leaf.join("cgroup.procs");
            std::fs::write(&path, pid.to_string()).map_err(|cause| CgroupError::Attach {
                pid,
                path,
                cause,
            })?;
        }
        Ok(())
    }

    /// The leaves' `tasks` files, opened for writing, with their paths: a sandbox's init
    /// joins its cgroups by itself, writing `0` to each while it waits for the host's go (the
    /// files cross to it over the sync socket). The kernel checks the credentials of the
    /// opener (the host), not of the writer.
    ///
    /// Writing `0` to a v1 `tasks` file moves the writing thread alone, which the kernel does
    /// without taking the global threadgroup lock for writing; moving a process by pid (the
    /// host writing the init's pid to `cgroup.procs`) takes it and waits out an RCU grace
    /// period (about 9 ms on an idle host), the largest single cost of a start on cgroup v1.
    /// Joining after the clone also lets the host make the cgroup while the kernel makes
    /// the init's namespaces.
    pub fn join_files(&self) -> Result<Vec<(std::os::fd::OwnedFd, PathBuf)>, CgroupError> {
        self.dirs
            .iter()
            .map(|d| {
                let path = d.leaf.join("tasks");
                std::fs::OpenOptions::new()
                    .write(true)
                    .open(&path)
                    .map(|f| (std::os::fd::OwnedFd::from(f), path.clone()))
                    .map_err(|cause| CgroupError::Place { path, cause })
            })
            .collect()
    }

    /// Where the counters are read from.
    pub fn counter_source(&self) -> CounterSource {
        CounterSource {
            v2: None,
            memory: self.dir("memory").map(|d| d.leaf.clone()),
            pids: self.dir("pids").map(|d| d.leaf.clone()),
            cpu: self.dir("cpu").map(|d| d.leaf.clone()),
            cpuacct: self.dir("cpuacct").map(|d| d.leaf.clone()),
        }
    }

    /// The leaf directories.
    pub fn leaves(&self) -> Vec<PathBuf> {
        self.dirs.iter().map(|d| d.leaf.clone()).collect()
    }

    /// Kills every process: see [`kill_dirs`].
    pub fn kill_all(&self) -> Result<(), CgroupError> {
        kill_dirs(&self.leaves())
    }

    /// Removes every leaf with one `rmdir` each (then the shared parents when unused);
    /// `false` as soon as one cannot be removed (busy: processes or child cgroups left).
    pub fn try_remove_empty(&self) -> bool {
        for d in &self.dirs {
            match std::fs::remove_dir(&d.leaf) {
                Ok(()) => util::rmdir_if_unused(&d.container),
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(_) => return false,
            }
        }
        true
    }

    /// Removes the leaves (and the shared parents when unused).
    pub fn remove(&self) -> Result<(), CgroupError> {
        remove_dirs(&self.leaves())
    }
}

/// Creates `container` (shared, may exist) and `leaf` (must not exist), retrying when a
/// concurrent sandbox removes the shared container in between.
pub(crate) fn make_leaf(container: &Path, leaf: &Path) -> Result<(), CgroupError> {
    let mut attempts = 0;
    loop {
        attempts += 1;
        util::mkdir(container).map_err(|cause| CgroupError::Create {
            path: container.to_owned(),
            cause,
        })?;
        match std::fs::create_dir(leaf) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                return Err(CgroupError::Exists {
                    path: leaf.to_owned(),
                })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && attempts < 5 => continue,
            Err(cause) => {
                return Err(CgroupError::Create {
                    path: leaf.to_owned(),
                    cause,
                })
            }
        }
    }
}

/// Kills every process in the v1 leaves `leaves`: freeze the freezer leaf (if any) so a fork
/// loop stops, SIGKILL every listed process, thaw so the signals are delivered, then repeat
/// SIGKILL in every hierarchy until all are empty (bounded).
pub(crate) fn kill_dirs(leaves: &[PathBuf]) -> Result<(), CgroupError> {
    if let Some(f) = leaves.iter().find(|l| l.join("freezer.state").exists()) {
        let fc = FreezerController::new(f.clone(), PathBuf::new(), false);
        if fc.freeze().is_ok() {
            let start = Instant::now();
            while start.elapsed() < Duration::from_secs(1) {
                if matches!(fc.state(), Ok(FreezerState::Frozen) | Err(_)) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(5));
            }
            util::kill_once(f);
            let _ = fc.thaw();
        }
    }
    for leaf in leaves {
        util::kill_until_empty(leaf, || {})?;
    }
    Ok(())
}

/// Removes the v1 leaves, then their `sandbox-runner` parents when no other sandbox uses them.
pub(crate) fn remove_dirs(leaves: &[PathBuf]) -> Result<(), CgroupError> {
    let mut first_err = None;
    for leaf in leaves {
        match util::rmdir_retry(leaf) {
            Ok(()) => {
                if let Some(parent) = leaf.parent() {
                    util::rmdir_if_unused(parent);
                }
            }
            Err(e) => {
                first_err.get_or_insert(e);
            }
        }
    }
    first_err.map_or(Ok(()), Err)
}
