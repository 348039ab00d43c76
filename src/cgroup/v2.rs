//! cgroup v2: one directory `<base>/sandbox-runner/<id>`, with the needed controllers enabled
//! in `cgroup.subtree_control` of `<base>` and `<base>/sandbox-runner`
//! (Documentation/admin-guide/cgroup-v2.rst, "Top-down Constraint" and "No Internal Process
//! Constraint").
//!
//! The no-internal-processes rule: a non-root cgroup may enable domain controllers for its
//! children only while it has no processes of its own. When `<base>` is this process's own
//! cgroup, is not the root, and holds processes (the host itself, and whatever else runs in
//! that cgroup), enabling fails with EBUSY; then every process of `<base>` is moved into the
//! leaf `<base>/sandbox-runner-host` and the write is retried. The host stays there for the
//! rest of its life (as do the enabled controllers): later sandboxes keep going next to it
//! under `<base>/sandbox-runner`, which [`super::detect`] knows by the leaf's name. A
//! configured parent is never rearranged: it must be delegated ready to use.
//!
//! Limits are written through the cgroups-rs v2 controllers, constructed on our own directory
//! (its `Cgroup`/`Hierarchy` types assume the mount is `/sys/fs/cgroup`); `cpu.max` is
//! written directly from [`format_cpu_max`](super::stats::format_cpu_max).

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use cgroups_rs::fs::cpu::CpuController;
use cgroups_rs::fs::memory::MemController;
use cgroups_rs::fs::pid::PidController;
use cgroups_rs::fs::MaxValue;

use super::detect::not_delegated_hint;
use super::stats::{format_cpu_max, CounterSource, CPU_PERIOD_USEC};
use super::util::{self, rs_err};
use super::{CgroupError, Limits, HOST_LEAF};

/// A sandbox's v2 cgroup.
#[derive(Debug)]
pub(crate) struct V2Cgroup {
    pub leaf: PathBuf,
    /// `O_RDONLY|O_DIRECTORY|O_CLOEXEC` on `leaf`, for `clone3(CLONE_INTO_CGROUP)`.
    pub fd: Option<OwnedFd>,
}

/// What [`V2Cgroup::create`] needs to know.
pub(crate) struct V2Spec<'a> {
    pub base: &'a Path,
    pub base_is_own: bool,
    pub container: &'a Path,
    pub leaf: &'a Path,
    pub controllers: &'a [&'static str],
}

fn words(text: &str) -> Vec<String> {
    text.split_whitespace().map(str::to_owned).collect()
}

fn read_list(dir: &Path, file: &str) -> Result<Vec<String>, CgroupError> {
    let path = dir.join(file);
    std::fs::read_to_string(&path)
        .map(|t| words(&t))
        .map_err(|cause| CgroupError::Read { path, cause })
}

/// The first of `needed` missing from a `cgroup.controllers` list, if any.
pub(crate) fn first_missing<'a>(available: &[String], needed: &[&'a str]) -> Option<&'a str> {
    needed
        .iter()
        .copied()
        .find(|c| !available.iter().any(|a| a == c))
}

/// The `cgroup.subtree_control` write enabling those of `needed` not in `enabled`, e.g.
/// `"+memory +pids"`; `None` when all are enabled.
pub(crate) fn subtree_change(enabled: &[String], needed: &[&str]) -> Option<String> {
    let add: Vec<String> = needed
        .iter()
        .filter(|c| !enabled.iter().any(|e| e == *c))
        .map(|c| format!("+{c}"))
        .collect();
    (!add.is_empty()).then(|| add.join(" "))
}

/// Moves every process of `dir` into `dir/sandbox-runner-host` (created if needed).
fn move_processes_to_host_leaf(dir: &Path) -> Result<(), CgroupError> {
    let leaf = dir.join(HOST_LEAF);
    util::mkdir(&leaf).map_err(|cause| CgroupError::Create {
        path: leaf.clone(),
        cause,
    })?;
    let procs = leaf.join("cgroup.procs");
    for pid in util::procs(dir) {
        match std::fs::write(&procs, pid.to_string()) {
            Ok(()) => {}
            // Exited meanwhile.
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => {}
            Err(cause) => {
                return Err(CgroupError::Attach {
                    pid,
                    path: procs,
                    cause,
                })
            }
        }
    }
    Ok(())
}

/// Enables `needed` in `dir/cgroup.subtree_control`; when `may_move_host`, resolves the
/// no-internal-processes EBUSY by moving `dir`'s processes into the host leaf.
fn enable(dir: &Path, needed: &[&'static str], may_move_host: bool) -> Result<(), CgroupError> {
    if needed.is_empty() {
        return Ok(());
    }
    let available = read_list(dir, "cgroup.controllers")?;
    if let Some(c) = first_missing(&available, needed) {
        return Err(CgroupError::ControllerNotDelegated {
            controller: c.to_owned(),
            path: dir.to_owned(),
            hint: not_delegated_hint(c, dir),
        });
    }
    let mut attempt = 0;
    loop {
        attempt += 1;
        let enabled = read_list(dir, "cgroup.subtree_control")?;
        let Some(change) = subtree_change(&enabled, needed) else {
            return Ok(());
        };
        let path = dir.join("cgroup.subtree_control");
        match std::fs::write(&path, &change) {
            Ok(()) => return Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::EBUSY) && may_move_host && attempt < 5 => {
                move_processes_to_host_leaf(dir)?;
            }
            Err(cause) => {
                return Err(CgroupError::Write {
                    path,
                    value: change,
                    cause,
                })
            }
        }
    }
}

impl V2Cgroup {
    /// Creates the cgroup, enabling controllers along the path, applies `limits` and opens
    /// the directory fd. On error removes what it made (the host leaf and the controllers
    /// enabled in the base stay, see the module doc).
    pub fn create(spec: &V2Spec<'_>, limits: &Limits) -> Result<V2Cgroup, CgroupError> {
        if !spec.base.is_dir() {
            return Err(CgroupError::Create {
                path: spec.container.to_owned(),
                cause: std::io::Error::from_raw_os_error(libc::ENOENT),
            });
        }
        enable(spec.base, spec.controllers, spec.base_is_own)?;
        let mut attempts = 0;
        loop {
            attempts += 1;
            let made_container =
                util::mkdir(spec.container).map_err(|cause| CgroupError::Create {
                    path: spec.container.to_owned(),
                    cause,
                })?;
            let r = enable(spec.container, spec.controllers, false)
                .and_then(|()| super::v1::make_leaf(spec.container, spec.leaf));
            match r {
                Ok(()) => break,
                // A concurrent sandbox removed the shared container meanwhile.
                Err(
                    CgroupError::Create { ref cause, .. } | CgroupError::Read { ref cause, .. },
                ) if cause.kind() == std::io::ErrorKind::NotFound && attempts < 5 => {}
                Err(e) => {
                    if made_container {
                        util::rmdir_if_unused(spec.container);
                    }
                    return Err(e);
                }
            }
        }
        let mut cg = V2Cgroup {
            leaf: spec.leaf.to_owned(),
            fd: None,
        };
        let r = cg.apply(limits).and_then(|()| {
            rustix::fs::open(
                spec.leaf,
                rustix::fs::OFlags::RDONLY
                    | rustix::fs::OFlags::DIRECTORY
                    | rustix::fs::OFlags::CLOEXEC,
                rustix::fs::Mode::empty(),
            )
            .map_err(|e| CgroupError::Read {
                path: spec.leaf.to_owned(),
                cause: e.into(),
            })
        });
        match r {
            Ok(fd) => {
                cg.fd = Some(fd);
                Ok(cg)
            }
            Err(e) => {
                let _ = cg.remove();
                Err(e)
            }
        }
    }

    fn apply(&self, limits: &Limits) -> Result<(), CgroupError> {
        let leaf = &self.leaf;
        if let Some(mem) = limits.memory {
            let c = MemController::new(leaf.clone(), PathBuf::new(), true);
            c.set_limit(mem as i64)
                .map_err(|e| rs_err(leaf, "memory.max", mem.to_string(), e))?;
            let swap = limits.swap.unwrap_or(0);
            if leaf.join("memory.swap.max").exists() {
                c.set_memswap_limit(swap as i64)
                    .map_err(|e| rs_err(leaf, "memory.swap.max", swap.to_string(), e))?;
            } else if util::swap_total_kb().unwrap_or(1) > 0 {
                return Err(CgroupError::InvalidLimit(format!(
                    "swap cannot be limited: {} has no memory.swap.max (kernel without swap \
                     accounting: boot with swapaccount=1) while the host has swap; disable \
                     swap (`swapoff -a`) or enable swap accounting",
                    leaf.display()
                )));
            }
        }
        if let Some(pids) = limits.pids {
            PidController::new(leaf.clone(), PathBuf::new(), true)
                .set_pid_max(MaxValue::Value(pids as i64))
                .map_err(|e| rs_err(leaf, "pids.max", pids.to_string(), e))?;
        }
        if let Some(cpus) = limits.cpus {
            util::write(leaf, "cpu.max", &format_cpu_max(cpus, CPU_PERIOD_USEC))?;
        }
        if let Some(w) = limits.cpu_weight {
            CpuController::new(leaf.clone(), PathBuf::new(), true)
                .set_shares(w)
                .map_err(|e| rs_err(leaf, "cpu.weight", w.to_string(), e))?;
        }
        Ok(())
    }

    /// Moves `pid` into the cgroup (when `clone3(CLONE_INTO_CGROUP)` could not place it).
    pub fn attach(&self, pid: i32) -> Result<(), CgroupError> {
        let path = self.leaf.join("cgroup.procs");
        std::fs::write(&path, pid.to_string()).map_err(|cause| CgroupError::Attach {
            pid,
            path,
            cause,
        })
    }

    /// Where the counters are read from.
    pub fn counter_source(&self) -> CounterSource {
        CounterSource {
            v2: Some(self.leaf.clone()),
            ..CounterSource::default()
        }
    }

    /// Kills every process: see [`kill_dir`].
    pub fn kill_all(&self) -> Result<(), CgroupError> {
        kill_dir(&self.leaf)
    }

    /// Removes the leaf, then the shared `sandbox-runner` parent when unused.
    pub fn remove(&mut self) -> Result<(), CgroupError> {
        self.fd = None;
        remove_dir(&self.leaf)
    }

    /// Removes the leaf with one `rmdir` (then the shared parent when unused); `false` when
    /// it is busy (processes or child cgroups left).
    pub fn try_remove_empty(&mut self) -> bool {
        match std::fs::remove_dir(&self.leaf) {
            Ok(()) => {
                self.fd = None;
                if let Some(parent) = self.leaf.parent() {
                    util::rmdir_if_unused(parent);
                }
                true
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                self.fd = None;
                true
            }
            Err(_) => false,
        }
    }
}

/// Kills every process in the v2 cgroup `leaf` and its descendants: `cgroup.kill` (5.14+),
/// else freeze (`cgroup.freeze`, 5.2+; frozen processes still die of SIGKILL) and SIGKILL
/// every listed process until empty; bounded.
pub(crate) fn kill_dir(leaf: &Path) -> Result<(), CgroupError> {
    if util::procs_recursive(leaf).is_empty() {
        return Ok(());
    }
    if leaf.join("cgroup.kill").exists() {
        util::write(leaf, "cgroup.kill", "1")?;
        if util::wait_empty(leaf, util::KILL_BOUND) {
            return Ok(());
        }
    }
    let froze =
        leaf.join("cgroup.freeze").exists() && util::write(leaf, "cgroup.freeze", "1").is_ok();
    let r = util::kill_until_empty(leaf, || {});
    if froze {
        let _ = util::write(leaf, "cgroup.freeze", "0");
    }
    r
}

/// Removes the v2 cgroup `leaf` (and child cgroups), then its `sandbox-runner` parent when
/// unused.
pub(crate) fn remove_dir(leaf: &Path) -> Result<(), CgroupError> {
    util::rmdir_retry(leaf)?;
    if let Some(parent) = leaf.parent() {
        util::rmdir_if_unused(parent);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn l(s: &str) -> Vec<String> {
        words(s)
    }

    #[test]
    fn subtree_control_changes() {
        assert_eq!(
            subtree_change(&l(""), &["memory", "pids", "cpu"]).as_deref(),
            Some("+memory +pids +cpu")
        );
        assert_eq!(
            subtree_change(&l("cpu memory"), &["memory", "pids", "cpu"]).as_deref(),
            Some("+pids")
        );
        assert_eq!(
            subtree_change(&l("cpu io memory pids"), &["memory", "pids"]),
            None
        );
        assert_eq!(subtree_change(&l(""), &[]), None);
    }

    #[test]
    fn missing_controller() {
        assert_eq!(
            first_missing(
                &l("cpuset cpu io memory hugetlb pids rdma misc"),
                &["memory", "pids", "cpu"]
            ),
            None
        );
        assert_eq!(
            first_missing(&l("cpu io"), &["memory", "cpu"]),
            Some("memory")
        );
        assert_eq!(first_missing(&l(""), &["pids"]), Some("pids"));
    }
}
