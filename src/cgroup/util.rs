//! File-level helpers shared by the v1 and v2 code: writing interface files with clear errors,
//! mkdir/rmdir with the bounded EBUSY retry, listing and killing the processes of a cgroup
//! without a PID-reuse window.

use std::collections::BTreeSet;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::CgroupError;

/// How long `rmdir` is retried on EBUSY (the kernel frees the css asynchronously after the
/// last process exits).
pub(crate) const RMDIR_RETRY: Duration = Duration::from_secs(3);

/// How long a kill keeps sending SIGKILL before giving up.
pub(crate) const KILL_BOUND: Duration = Duration::from_secs(5);

/// Writes `value` to the interface file `dir/file`.
pub(crate) fn write(dir: &Path, file: &str, value: &str) -> Result<(), CgroupError> {
    let path = dir.join(file);
    std::fs::write(&path, value).map_err(|cause| CgroupError::Write {
        path,
        value: value.to_owned(),
        cause,
    })
}

/// Maps an error of cgroups-rs (which names the file but not the directory) to a
/// [`CgroupError::Write`] on `dir/file`, keeping the underlying I/O error when there is one.
pub(crate) fn rs_err(
    dir: &Path,
    file: &str,
    value: String,
    e: cgroups_rs::fs::error::Error,
) -> CgroupError {
    let cause = std::error::Error::source(&e)
        .and_then(|s| s.downcast_ref::<io::Error>())
        .map(|io| match io.raw_os_error() {
            Some(code) => io::Error::from_raw_os_error(code),
            None => io::Error::new(io.kind(), io.to_string()),
        })
        .unwrap_or_else(|| io::Error::other(e.to_string()));
    CgroupError::Write {
        path: dir.join(file),
        value,
        cause,
    }
}

/// `mkdir dir`: `Ok(true)` when created, `Ok(false)` when it already existed.
pub(crate) fn mkdir(dir: &Path) -> io::Result<bool> {
    match std::fs::create_dir(dir) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(e),
    }
}

/// Whether `e` is EBUSY or ENOTEMPTY (a cgroup still in use).
fn busy(e: &io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EBUSY) | Some(libc::ENOTEMPTY))
}

/// Child cgroup directories of `dir` (a plugin may have created some with delegated rights).
fn child_cgroups(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                .map(|e| e.path())
                .collect()
        })
        .unwrap_or_default()
}

/// Removes the cgroup `dir` and any child cgroups (deepest first), retrying EBUSY for up to
/// [`RMDIR_RETRY`]. A directory that is already gone is success. The common case, an empty
/// leaf, is one `rmdir`; the directory is listed only when that fails.
pub(crate) fn rmdir_retry(dir: &Path) -> Result<(), CgroupError> {
    match std::fs::remove_dir(dir) {
        Ok(()) => return Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(_) => {}
    }
    for child in child_cgroups(dir) {
        rmdir_retry(&child)?;
    }
    let start = Instant::now();
    let mut delay = Duration::from_micros(500);
    loop {
        match std::fs::remove_dir(dir) {
            Ok(()) => return Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) if busy(&e) && start.elapsed() < RMDIR_RETRY => {
                std::thread::sleep(delay);
                delay = (delay * 2).min(Duration::from_millis(200));
            }
            Err(cause) => {
                return Err(CgroupError::Remove {
                    path: dir.to_owned(),
                    cause,
                })
            }
        }
    }
}

/// Removes the shared `sandbox-runner` directory if it is now unused: the kernel refuses to
/// remove a cgroup with children (EBUSY) or tasks, so another sandbox using it, or a
/// concurrent removal (ENOENT), is fine.
pub(crate) fn rmdir_if_unused(dir: &Path) {
    let _ = std::fs::remove_dir(dir);
}

/// The pids listed in `dir/cgroup.procs`. Left out: 0 (a process outside this pid
/// namespace) and this process itself, which v1 lists while its spawner thread passes
/// through a sandbox's cgroup to clone into it; a sandbox's cgroup never holds the host, and
/// a kill must never reach it. Empty when the file is gone.
pub(crate) fn procs(dir: &Path) -> Vec<i32> {
    let me = std::process::id() as i32;
    std::fs::read_to_string(dir.join("cgroup.procs"))
        .map(|t| {
            t.split_whitespace()
                .filter_map(|w| w.parse().ok())
                .filter(|&p: &i32| p > 0 && p != me)
                .collect()
        })
        .unwrap_or_default()
}

/// The pids of `dir` and of every child cgroup below it.
pub(crate) fn procs_recursive(dir: &Path) -> BTreeSet<i32> {
    let mut all: BTreeSet<i32> = procs(dir).into_iter().collect();
    for child in child_cgroups(dir) {
        all.extend(procs_recursive(&child));
    }
    all
}

/// Sends SIGKILL to every process of `dir` (recursively) once, without a PID-reuse window:
/// each pid is opened as a pidfd and signalled only if it is still listed in the cgroup after
/// the pidfd was opened (a listed pid cannot be reused while its process is in the cgroup).
/// Returns how many were listed before.
pub(crate) fn kill_once(dir: &Path) -> usize {
    let before = procs_recursive(dir);
    let fds: Vec<(i32, std::os::fd::OwnedFd)> = before
        .iter()
        .filter_map(|&pid| {
            let p = rustix::process::Pid::from_raw(pid)?;
            rustix::process::pidfd_open(p, rustix::process::PidfdFlags::empty())
                .ok()
                .map(|fd| (pid, fd))
        })
        .collect();
    let after = procs_recursive(dir);
    for (pid, fd) in &fds {
        if after.contains(pid) {
            let _ = rustix::process::pidfd_send_signal(fd, rustix::process::Signal::KILL);
        }
    }
    before.len()
}

/// Repeats [`kill_once`] until `dir` has no processes, for at most [`KILL_BOUND`]. `between`
/// runs after each round (e.g. thawing a freezer).
pub(crate) fn kill_until_empty(dir: &Path, mut between: impl FnMut()) -> Result<(), CgroupError> {
    let start = Instant::now();
    let mut delay = Duration::from_millis(1);
    loop {
        if kill_once(dir) == 0 {
            return Ok(());
        }
        between();
        if start.elapsed() >= KILL_BOUND {
            let pids: Vec<i32> = procs_recursive(dir).into_iter().collect();
            if pids.is_empty() {
                return Ok(());
            }
            return Err(CgroupError::KillTimeout {
                path: dir.to_owned(),
                pids,
                waited: start.elapsed(),
            });
        }
        std::thread::sleep(delay);
        delay = (delay * 2).min(Duration::from_millis(50));
    }
}

/// Waits until `dir` lists no process, for at most `bound`; `true` when empty.
pub(crate) fn wait_empty(dir: &Path, bound: Duration) -> bool {
    let start = Instant::now();
    let mut delay = Duration::from_millis(1);
    loop {
        if procs_recursive(dir).is_empty() {
            return true;
        }
        if start.elapsed() >= bound {
            return false;
        }
        std::thread::sleep(delay);
        delay = (delay * 2).min(Duration::from_millis(50));
    }
}

/// `SwapTotal` from `/proc/meminfo`, in kB; `None` when unreadable.
pub(crate) fn swap_total_kb() -> Option<u64> {
    let t = std::fs::read_to_string("/proc/meminfo").ok()?;
    t.lines()
        .find_map(|l| l.strip_prefix("SwapTotal:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}
