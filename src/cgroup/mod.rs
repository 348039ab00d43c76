//! cgroup limits, events and cleanup over v1 and v2, behind one small interface:
//! [`SandboxCgroup`].
//!
//! # Placement
//! - **Detection** ([`Detection`]) reads `/proc/self/mountinfo` and `/proc/self/cgroup` (never
//!   assuming `/sys/fs/cgroup`) and finds, for each of `memory`, `pids`, `cpu`, whether it is
//!   on a v1 hierarchy or available on v2 ([`Support`]).
//! - **v1** (legacy and hybrid hosts): `<own cgroup>/sandbox-runner/<id>` in each hierarchy a
//!   requested limit needs, plus `cpuacct` with `cpu` (usage accounting) and `freezer` when
//!   mounted (to stop a fork loop while killing it). `<own cgroup>` is this process's cgroup
//!   in *that* hierarchy, so nothing is ever created outside it.
//! - **v2**: one directory `<own cgroup>/sandbox-runner/<id>`, with the needed controllers
//!   enabled along the path; see [`SandboxCgroup::create`] on the no-internal-processes rule
//!   and the host leaf `sandbox-runner-host`.
//! - With a configured `parent` (a cgroup path as in `/proc/self/cgroup`, e.g.
//!   `/plugins.slice`, which must exist and be delegated), `<parent>/sandbox-runner/<id>` is
//!   used instead, in every needed hierarchy.
//!
//! # Order of use by the runner
//! 1. [`SandboxCgroup::create`] before the clone (it also reclaims stale sandboxes).
//! 2. v2: pass [`SandboxCgroup::clone_into_fd`] to `clone3(CLONE_INTO_CGROUP)`; v1: the
//!    spawner thread writes `0` to each leaf's `tasks` (moving itself alone, which is cheap;
//!    `cgroup.procs` waits out an RCU grace period), clones, and moves back. Where neither
//!    can place it: [`SandboxCgroup::attach`] the child's pid while it waits on the sync
//!    pipe, then release it.
//! 3. [`SandboxCgroup::watch`] while the plugin runs.
//! 4. At the end: [`Watcher::stop`] (or [`SandboxCgroup::counters`]),
//!    [`SandboxCgroup::kill_all`], [`SandboxCgroup::remove`]. Dropping a [`SandboxCgroup`]
//!    does the kill and removal too.
//!
//! # cgroups-rs
//! cgroups-rs (0.5) writes the limits: its controller types (`MemController`,
//! `PidController`, `CpuController`, `FreezerController`) are built directly on the
//! directories chosen here. Its `Cgroup`/`Hierarchy` layer is not used: v2 there assumes the
//! mount point `/sys/fs/cgroup`, v1 `Cgroup::new` creates the path in every hierarchy and
//! cannot give each hierarchy its own base (this host's memory cgroup is
//! `/process_api/<hash>` while the others are `/`), `create` silently accepts an existing
//! directory (two sandboxes with one id would share it), its OOM notification reads v1 files
//! on v2, and it never parses `memory.events`. Detection, directory creation, controller
//! enabling, counters, the event watch, kill and removal (with the bounded EBUSY retry) are
//! therefore this module's own.

mod detect;
mod error;
pub mod mounts;
mod owner;
mod stats;
mod util;
pub(crate) mod v1;
mod v2;
mod watch;

use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub use detect::{Detection, Support, V2Base, CONTROLLERS};
pub use error::CgroupError;
pub use owner::{records_dir, start_time};
pub use stats::{
    cpu_quota_usec, format_cpu_max, weight_to_shares, Counters, CPU_MIN_QUOTA_USEC, CPU_PERIOD_USEC,
};
pub(crate) use watch::prewarm as watch_prewarm;
pub use watch::Watcher;

/// Told a sandbox cgroup's leaf directories and owner record before they are made (see
/// [`SandboxCgroup::create_announced`]).
pub(crate) type Announce<'a> = &'a mut dyn FnMut(&[PathBuf], &Path);

/// The directory, below the own (or configured parent) cgroup, that holds the sandboxes.
pub const CONTAINER: &str = "sandbox-runner";

/// The v2 leaf that the host's processes are moved into when the own cgroup must enable
/// controllers for its children (no-internal-processes rule).
pub const HOST_LEAF: &str = "sandbox-runner-host";

/// Resource limits of a sandbox. `None` means "not limited" (except `swap`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Limits {
    /// Memory limit in bytes (`memory.max`; v1 `memory.limit_in_bytes`).
    pub memory: Option<u64>,
    /// Swap allowed in bytes on top of `memory`; `None` means 0: swap is off by default.
    /// Only meaningful with a memory limit (v2 `memory.swap.max`; v1
    /// `memory.memsw.limit_in_bytes` = memory + swap).
    pub swap: Option<u64>,
    /// Maximum number of processes and threads (`pids.max`).
    pub pids: Option<u64>,
    /// CPU bandwidth in CPUs, e.g. `0.5` (`cpu.max`; v1 `cpu.cfs_quota_us` /
    /// `cpu.cfs_period_us`), with a period of 100 ms.
    pub cpus: Option<f64>,
    /// Relative CPU weight in v2 units, 1..=10000, default 100 (`cpu.weight`; v1 `cpu.shares`
    /// through [`weight_to_shares`]).
    pub cpu_weight: Option<u64>,
}

impl Limits {
    /// Checks ranges: memory and pids at least 1, cpus finite in (0, 1024], weight in
    /// 1..=10000, swap only with memory, byte values that fit the kernel's signed 64 bits.
    pub fn validate(&self) -> Result<(), CgroupError> {
        let bad = |s: String| Err(CgroupError::InvalidLimit(s));
        const MAX: u64 = i64::MAX as u64;
        match self.memory {
            Some(0) => return bad("memory must be at least 1 byte".into()),
            Some(m) if m > MAX => return bad(format!("memory {m} is too large")),
            _ => {}
        }
        if let Some(s) = self.swap {
            if self.memory.is_none() {
                return bad(format!("a swap limit ({s} bytes) needs a memory limit"));
            }
            if s > MAX {
                return bad(format!("swap {s} is too large"));
            }
        }
        match self.pids {
            Some(0) => return bad("pids must be at least 1".into()),
            Some(p) if p > MAX => return bad(format!("pids {p} is too large")),
            _ => {}
        }
        if let Some(c) = self.cpus {
            if !(c.is_finite() && c > 0.0 && c <= 1024.0) {
                return bad(format!("cpus {c} is not in (0, 1024]"));
            }
        }
        if let Some(w) = self.cpu_weight {
            if !(1..=10_000).contains(&w) {
                return bad(format!("cpu weight {w} is not in 1..=10000"));
            }
        }
        Ok(())
    }

    /// The controllers these limits need, in [`CONTROLLERS`] order.
    pub fn controllers(&self) -> Vec<&'static str> {
        let mut c = Vec::new();
        if self.memory.is_some() || self.swap.is_some() {
            c.push("memory");
        }
        if self.pids.is_some() {
            c.push("pids");
        }
        if self.cpus.is_some() || self.cpu_weight.is_some() {
            c.push("cpu");
        }
        c
    }
}

/// Parses a size in bytes: a decimal number with an optional binary suffix `K`, `M`, `G` or
/// `T` (case-insensitive, powers of 1024), e.g. `64M`, `1G`, `512K`, `1048576`.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let (digits, shift) = match t.char_indices().last() {
        None => return Err("empty size".to_owned()),
        Some((i, c)) => match c.to_ascii_uppercase() {
            'K' => (&t[..i], 10),
            'M' => (&t[..i], 20),
            'G' => (&t[..i], 30),
            'T' => (&t[..i], 40),
            c if c.is_ascii_digit() => (t, 0),
            _ => {
                return Err(format!(
                    "size {s:?} has an unknown suffix (use K, M, G or T, binary)"
                ))
            }
        },
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "size {s:?} is not a whole number with an optional K, M, G or T suffix"
        ));
    }
    let n: u64 = digits
        .parse()
        .map_err(|_| format!("size {s:?} is too large"))?;
    n.checked_mul(1u64 << shift)
        .filter(|&v| v <= i64::MAX as u64)
        .ok_or_else(|| format!("size {s:?} is too large"))
}

/// Checks that `id` is usable as a cgroup directory name.
fn validate_id(id: &str) -> Result<(), CgroupError> {
    let err = |reason| {
        Err(CgroupError::InvalidId {
            id: id.to_owned(),
            reason,
        })
    };
    if id.is_empty() || id.len() > 64 {
        return err("length must be 1 to 64");
    }
    if id.starts_with('.') {
        return err("starts with '.'");
    }
    if !id
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
    {
        return err("has a character outside [A-Za-z0-9._-]");
    }
    if id == HOST_LEAF {
        return err("is reserved for the host leaf");
    }
    Ok(())
}

#[derive(Debug)]
enum Inner {
    V1(v1::V1Cgroup),
    V2(v2::V2Cgroup),
}

/// The cgroup(s) of one sandbox: created with limits, killed and removed at the end. See the
/// module doc for placement and the order of calls.
#[derive(Debug)]
pub struct SandboxCgroup {
    id: String,
    limits: Limits,
    inner: Inner,
    record: Option<PathBuf>,
    done: bool,
}

impl SandboxCgroup {
    /// Creates `<own cgroup>/sandbox-runner/<id>` (or `<parent>/sandbox-runner/<id>`, `parent`
    /// being a cgroup path as in `/proc/self/cgroup`) in every hierarchy a requested limit
    /// needs and applies `limits`:
    /// - v1: only the needed hierarchies (plus `cpuacct` with `cpu`, and `freezer`);
    ///   `memory.limit_in_bytes` then `memory.memsw.limit_in_bytes` = memory + swap (or, with
    ///   no swap accounting on a host with swap, `memory.swappiness` = 0); `pids.max`;
    ///   `cpu.cfs_period_us` = 100000 and `cpu.cfs_quota_us`; `cpu.shares`.
    /// - v2: one directory; `+memory +pids +cpu` (those needed) enabled in the base's and in
    ///   `sandbox-runner`'s `cgroup.subtree_control`. If the base is the own cgroup and holds
    ///   processes, they are first moved into the leaf `<own>/sandbox-runner-host` (the
    ///   no-internal-processes rule; they stay there). Then `memory.max`, `memory.swap.max`
    ///   (0 by default), `pids.max`, `cpu.max` (`"quota 100000"`), `cpu.weight`.
    ///
    /// A missing or non-delegated controller is an error naming it and the fix; on any error
    /// nothing this call made is left behind. An owner record is kept for this one until
    /// [`remove`](Self::remove), so that [`reclaim_stale`] (`sandbox-run check --cleanup`)
    /// finds it should its host and the host's reaper both die first. Nothing here scans the
    /// other sandboxes: a create costs the same with none or thousands alive.
    pub fn create(
        id: &str,
        limits: &Limits,
        parent: Option<&Path>,
    ) -> Result<SandboxCgroup, CgroupError> {
        validate_id(id)?;
        limits.validate()?;
        let detection = Detection::detect()?;
        SandboxCgroup::create_in(&detection, id, limits, parent)
    }

    /// [`create`](Self::create) that first tells `announce` the leaf directories and the
    /// owner record it is about to make, before anything of them exists on the host: the
    /// runner registers them with its reaper there, so that a host SIGKILLed at any point of
    /// the creation leaves nothing (a path that was never made costs the reaper nothing).
    pub(crate) fn create_announced(
        detection: &Detection,
        id: &str,
        limits: &Limits,
        parent: Option<&Path>,
        announce: Announce<'_>,
    ) -> Result<SandboxCgroup, CgroupError> {
        SandboxCgroup::create_inner(detection, id, limits, parent, Some(announce))
    }

    /// This host's cgroups, detected, and whether the cgroup of sandbox `id` for `limits`
    /// would be made in v1 hierarchies: then its init joins it by itself, after the clone
    /// (see [`join_files`](Self::join_files)), and the host makes the cgroup meanwhile.
    pub(crate) fn detect_for(
        id: &str,
        limits: &Limits,
        parent: Option<&Path>,
    ) -> Result<(Detection, bool), CgroupError> {
        validate_id(id)?;
        limits.validate()?;
        let detection = Detection::detect()?;
        let v1 = matches!(
            detection.plan(id, &limits.controllers(), parent)?,
            detect::Plan::V1(_)
        );
        Ok((detection, v1))
    }

    /// [`create`](Self::create) on an explicit [`Detection`] (e.g.
    /// [`Detection::without_v1`] to force the v2 path).
    pub fn create_in(
        detection: &Detection,
        id: &str,
        limits: &Limits,
        parent: Option<&Path>,
    ) -> Result<SandboxCgroup, CgroupError> {
        SandboxCgroup::create_inner(detection, id, limits, parent, None)
    }

    fn create_inner(
        detection: &Detection,
        id: &str,
        limits: &Limits,
        parent: Option<&Path>,
        announce: Option<Announce<'_>>,
    ) -> Result<SandboxCgroup, CgroupError> {
        validate_id(id)?;
        limits.validate()?;
        let needed = limits.controllers();
        let plan = detection.plan(id, &needed, parent)?;
        let (version, leaves) = match &plan {
            detect::Plan::V1(dirs) => (1, dirs.iter().map(|d| d.leaf.clone()).collect()),
            detect::Plan::V2 { leaf, .. } => (2, vec![leaf.clone()]),
        };
        if let Some(existing) = leaves.iter().find(|l: &&PathBuf| l.exists()) {
            return Err(CgroupError::Exists {
                path: existing.clone(),
            });
        }
        let records = records_dir();
        if let Some(announce) = announce {
            announce(&leaves, &owner::OwnerRecord::path_in(&records, id));
        }
        let record = owner::OwnerRecord::for_self(id, version, leaves).write_new(&records)?;
        let inner = match plan {
            detect::Plan::V1(dirs) => v1::V1Cgroup::create(dirs, limits).map(Inner::V1),
            detect::Plan::V2 {
                base,
                base_is_own,
                container,
                leaf,
                controllers,
            } => v2::V2Cgroup::create(
                &v2::V2Spec {
                    base: &base,
                    base_is_own,
                    container: &container,
                    leaf: &leaf,
                    controllers: &controllers,
                },
                limits,
            )
            .map(Inner::V2),
        };
        match inner {
            Ok(inner) => Ok(SandboxCgroup {
                id: id.to_owned(),
                limits: limits.clone(),
                inner,
                record: Some(record),
                done: false,
            }),
            Err(e) => {
                owner::remove_record(&record);
                Err(e)
            }
        }
    }

    /// The sandbox id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The limits applied.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Whether this is a v2 cgroup.
    pub fn is_v2(&self) -> bool {
        matches!(self.inner, Inner::V2(_))
    }

    /// v2 only: an `O_RDONLY|O_DIRECTORY|O_CLOEXEC` fd of the sandbox cgroup, for
    /// `clone3(CLONE_INTO_CGROUP)` (Linux 5.7+) so the child starts inside it.
    pub fn clone_into_fd(&self) -> Option<BorrowedFd<'_>> {
        match &self.inner {
            Inner::V2(c) => c.fd.as_ref().map(|f| f.as_fd()),
            Inner::V1(_) => None,
        }
    }

    /// How the spawner places the child in this cgroup at its birth: v2
    /// `CLONE_INTO_CGROUP` with a duplicate of [`clone_into_fd`](Self::clone_into_fd) (the
    /// spawner's own copy: a cancelled start may drop ours while the clone is pending), or
    /// `None` when it is placed after the clone (v1: the init joins by itself, see
    /// [`join_files`](Self::join_files); v2 without the fd: [`attach`](Self::attach)).
    pub(crate) fn placement(
        &self,
    ) -> Result<Option<crate::child::spawner::Placement>, CgroupError> {
        use crate::child::spawner::Placement;
        match &self.inner {
            Inner::V2(c) => match c.fd.as_ref() {
                Some(fd) => fd
                    .try_clone()
                    .map(|fd| Some(Placement::IntoCgroup(fd)))
                    .map_err(|cause| CgroupError::Place {
                        path: c.leaf.clone(),
                        cause,
                    }),
                None => Ok(None),
            },
            Inner::V1(_) => Ok(None),
        }
    }

    /// v1: the leaves' `tasks` files, opened for writing, with their paths, for the init to
    /// join them by itself while it waits for the host's go (it writes `0` to each: see
    /// `v1::V1Cgroup::join_files`). `None` on v2.
    pub(crate) fn join_files(&self) -> Result<Option<Vec<(OwnedFd, PathBuf)>>, CgroupError> {
        match &self.inner {
            Inner::V1(c) => c.join_files().map(Some),
            Inner::V2(_) => Ok(None),
        }
    }

    /// Moves process `pid` (all its threads) into the sandbox cgroup in every hierarchy (v1;
    /// v2 when `clone3` could not place it). Call it while the child waits, before it runs
    /// plugin code.
    pub fn attach(&self, pid: i32) -> Result<(), CgroupError> {
        match &self.inner {
            Inner::V1(c) => c.attach(pid),
            Inner::V2(c) => c.attach(pid),
        }
    }

    fn source(&self) -> stats::CounterSource {
        match &self.inner {
            Inner::V1(c) => c.counter_source(),
            Inner::V2(c) => c.counter_source(),
        }
    }

    /// Reads the counters now (see [`Counters`] for the files).
    pub fn counters(&self) -> Counters {
        self.source().read()
    }

    /// Starts watching the counters while the plugin runs (see [`Watcher`]); the watch ends
    /// when told or when the cgroup is removed.
    pub fn watch(&self) -> Watcher {
        let (alive, events, oom) = match &self.inner {
            Inner::V2(c) => (
                c.leaf.clone(),
                ["memory.events", "pids.events", "cgroup.events"]
                    .iter()
                    .map(|f| c.leaf.join(f))
                    .filter(|p| p.exists())
                    .collect(),
                None,
            ),
            Inner::V1(c) => {
                let mem = c
                    .dirs
                    .iter()
                    .find(|d| d.has("memory"))
                    .map(|d| d.leaf.clone());
                (c.dirs[0].leaf.clone(), Vec::new(), mem)
            }
        };
        Watcher::start(self.source(), alive, events, oom)
    }

    /// The pids in the sandbox cgroup (and its child cgroups), in every hierarchy.
    pub fn procs(&self) -> Vec<i32> {
        let mut all = std::collections::BTreeSet::new();
        for p in self.paths() {
            all.extend(util::procs_recursive(&p));
        }
        all.into_iter().collect()
    }

    /// Kills every process in the cgroup: v2 `cgroup.kill` (5.14+); else freeze (v1 freezer
    /// or v2 `cgroup.freeze`) and SIGKILL every pid listed in `cgroup.procs` until empty
    /// (pidfd-checked, no PID-reuse window); bounded to a few seconds.
    pub fn kill_all(&self) -> Result<(), CgroupError> {
        match &self.inner {
            Inner::V1(c) => c.kill_all(),
            Inner::V2(c) => c.kill_all(),
        }
    }

    fn remove_inner(&mut self) -> Result<(), CgroupError> {
        // The usual end: every process has exited and the leaves are empty, so removing them
        // at once works. Otherwise (a leaf is busy): kill what is left, then remove.
        let removed = match &mut self.inner {
            Inner::V1(c) => c.try_remove_empty(),
            Inner::V2(c) => c.try_remove_empty(),
        };
        if !removed {
            if !self.procs().is_empty() {
                self.kill_all()?;
            }
            match &mut self.inner {
                Inner::V1(c) => c.remove()?,
                Inner::V2(c) => c.remove()?,
            }
        }
        if let Some(r) = self.record.take() {
            owner::remove_record(&r);
        }
        self.done = true;
        Ok(())
    }

    /// Removes the cgroup in every hierarchy (killing what is left first), with a bounded
    /// retry on EBUSY, then the shared `sandbox-runner` parent when no other sandbox uses it.
    /// On error the owner record stays, so a later [`reclaim_stale`] finishes the job.
    pub fn remove(mut self) -> Result<(), CgroupError> {
        let r = self.remove_inner();
        // One attempt only: Drop must not wait out the bounds a second time.
        self.done = true;
        r
    }

    /// The sandbox's cgroup directories (one per hierarchy on v1).
    pub fn paths(&self) -> Vec<PathBuf> {
        match &self.inner {
            Inner::V1(c) => c.leaves(),
            Inner::V2(c) => vec![c.leaf.clone()],
        }
    }

    /// Hands the cgroup over to the detached sandbox whose init is `pid`: the owner record
    /// names the init from now on (so [`reclaim_stale`] reclaims it once the sandbox is gone,
    /// and never while it runs), and dropping this value no longer kills or removes it.
    pub fn hand_over(mut self, pid: i32) -> Result<Vec<PathBuf>, CgroupError> {
        if let Some(r) = &self.record {
            owner::OwnerRecord::rewrite_owner(r, pid)?;
        }
        self.done = true;
        Ok(self.paths())
    }

    /// The owner record file (see [`reclaim_stale`]); `None` once removed.
    pub fn record_path(&self) -> Option<&Path> {
        self.record.as_deref()
    }
}

impl Drop for SandboxCgroup {
    fn drop(&mut self) {
        if !self.done {
            let _ = self.remove_inner();
        }
    }
}

/// Checks, creating nothing, whether this process could create a sandbox cgroup for
/// `limits` (for `sandbox-run check`, e.g. in rootless mode): detection and delegation as
/// [`SandboxCgroup::create`] does them, then write access to the directory the sandbox's
/// directory would be made in (`sandbox-runner`, or its parent while it does not exist).
pub fn can_create(limits: &Limits, parent: Option<&Path>) -> Result<(), CgroupError> {
    limits.validate()?;
    let detection = Detection::detect()?;
    let leaves = match detection.plan("sbx-check", &limits.controllers(), parent)? {
        detect::Plan::V1(dirs) => dirs.into_iter().map(|d| d.leaf).collect(),
        detect::Plan::V2 { leaf, .. } => vec![leaf],
    };
    for leaf in leaves {
        let Some(container) = leaf.parent() else {
            continue;
        };
        let dir = if container.exists() {
            container
        } else {
            container.parent().unwrap_or(container)
        };
        nix::unistd::access(dir, nix::unistd::AccessFlags::W_OK).map_err(|e| {
            CgroupError::Create {
                path: dir.join(if dir == container {
                    "sbx-..."
                } else {
                    CONTAINER
                }),
                cause: std::io::Error::from_raw_os_error(e as i32),
            }
        })?;
    }
    Ok(())
}

/// Reclaims the sandbox cgroups left by crashed hosts: every owner record in
/// [`records_dir`] whose owner process is dead (its pid no longer exists, or exists with
/// another start time, i.e. a reused pid, or the record is from an earlier boot) has its
/// cgroups killed and removed, then the record is deleted. Records of live owners (and of
/// other pid namespaces, which cannot be judged) are never touched, nor are cgroup
/// directories without a record. Returns the cgroup directories removed.
///
/// Called by every [`SandboxCgroup::create`] and by `sandbox-run check --cleanup`.
pub fn reclaim_stale() -> Result<Vec<PathBuf>, CgroupError> {
    owner::reclaim_in(&records_dir())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("64M"), Ok(64 << 20));
        assert_eq!(parse_size("1G"), Ok(1 << 30));
        assert_eq!(parse_size("512K"), Ok(512 << 10));
        assert_eq!(parse_size("512k"), Ok(512 << 10));
        assert_eq!(parse_size("1048576"), Ok(1_048_576));
        assert_eq!(parse_size(" 2T "), Ok(2 << 40));
        for bad in [
            "",
            "M",
            "64MB",
            "1.5G",
            "-1",
            "64X",
            "0x10",
            "99999999999999999999",
        ] {
            assert!(parse_size(bad).is_err(), "{bad:?} accepted");
        }
        assert!(parse_size("8589934592G").is_err()); // 2^63 bytes: over i64::MAX
    }

    #[test]
    fn ids() {
        assert!(validate_id("sbx-1.a_B").is_ok());
        for bad in [
            "",
            ".",
            "..",
            ".hidden",
            "a/b",
            "a b",
            HOST_LEAF,
            &"x".repeat(65),
        ] {
            assert!(validate_id(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn limits_validation_and_controllers() {
        let l = Limits {
            memory: Some(64 << 20),
            pids: Some(16),
            cpus: Some(0.2),
            ..Limits::default()
        };
        assert!(l.validate().is_ok());
        assert_eq!(l.controllers(), vec!["memory", "pids", "cpu"]);
        assert!(Limits::default().controllers().is_empty());
        let weight_only = Limits {
            cpu_weight: Some(50),
            ..Limits::default()
        };
        assert_eq!(weight_only.controllers(), vec!["cpu"]);
        for bad in [
            Limits {
                memory: Some(0),
                ..Limits::default()
            },
            Limits {
                swap: Some(1),
                ..Limits::default()
            },
            Limits {
                pids: Some(0),
                ..Limits::default()
            },
            Limits {
                cpus: Some(f64::NAN),
                ..Limits::default()
            },
            Limits {
                cpus: Some(0.0),
                ..Limits::default()
            },
            Limits {
                cpu_weight: Some(10_001),
                ..Limits::default()
            },
        ] {
            assert!(bad.validate().is_err(), "{bad:?} accepted");
        }
    }
}
