//! [`CgroupError`]: every way setting up, using or removing a sandbox cgroup can fail, each
//! naming the path, the cause and what to do.

use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// An error of the cgroup module. Each message names the path, the cause and, where there is
/// one, the fix.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    /// The sandbox id cannot be used as a cgroup directory name.
    #[error(
        "invalid sandbox id {id:?} for a cgroup name: {reason} (use 1-64 characters of \
         [A-Za-z0-9._-], not starting with '.')"
    )]
    InvalidId {
        /// The id given.
        id: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A limit is out of range or contradictory.
    #[error("invalid cgroup limit: {0}")]
    InvalidLimit(String),
    /// A file needed for detection or bookkeeping could not be read.
    #[error("cannot read {}: {cause}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        cause: io::Error,
    },
    /// No cgroup filesystem is mounted at all.
    #[error(
        "no cgroup filesystem is mounted (no cgroup or cgroup2 line in /proc/self/mountinfo): \
         mount cgroup2 (`mount -t cgroup2 none /sys/fs/cgroup`) or the v1 hierarchies"
    )]
    NoCgroupFs,
    /// A controller a limit needs exists nowhere this process can use.
    #[error("cgroup controller {controller} is missing: {detail}")]
    ControllerMissing {
        /// `memory`, `pids` or `cpu`.
        controller: String,
        /// Where it was looked for and how to get it.
        detail: String,
    },
    /// A v2 controller exists on the host but is not delegated to the parent cgroup.
    #[error(
        "cgroup controller {controller} is not delegated to {}: {hint}",
        path.display()
    )]
    ControllerNotDelegated {
        /// `memory`, `pids` or `cpu`.
        controller: String,
        /// The cgroup directory that lacks it in `cgroup.controllers` or
        /// `cgroup.subtree_control`.
        path: PathBuf,
        /// What to do.
        hint: String,
    },
    /// The limits need controllers that live on v1 and on v2 at once.
    #[error(
        "the requested limits need controllers on cgroup v1 ({v1}) and on cgroup v2 ({v2}); \
         this mixed placement is not supported: mount all of them on one version"
    )]
    MixedHierarchies {
        /// Controllers found on v1.
        v1: String,
        /// Controllers only found on v2.
        v2: String,
    },
    /// This process's cgroup (or the configured parent) is not visible under the mount.
    #[error(
        "cgroup {cgroup} is not visible under the {what} mount at {} (mount root {root}): \
         mount the hierarchy so that this cgroup is inside it, or configure a parent inside it",
        mount.display()
    )]
    NotVisible {
        /// The cgroup path (as in `/proc/self/cgroup`).
        cgroup: String,
        /// Which hierarchy (`cgroup2`, or the v1 controllers).
        what: String,
        /// The mount point.
        mount: PathBuf,
        /// The mount's root (4th mountinfo field).
        root: String,
    },
    /// A sandbox cgroup with this id already exists.
    #[error(
        "a sandbox cgroup {} already exists: pick another sandbox id, or run \
         `sandbox-run check --cleanup` if it was left by a crashed host",
        path.display()
    )]
    Exists {
        /// The existing directory or owner record.
        path: PathBuf,
    },
    /// `mkdir` of a cgroup directory failed.
    #[error("cannot create cgroup {}: {cause}{}", path.display(), hint(cause))]
    Create {
        /// The directory.
        path: PathBuf,
        /// The I/O error.
        cause: io::Error,
    },
    /// Writing a cgroup interface file failed.
    #[error("cannot write {value:?} to {}: {cause}{}", path.display(), write_hint(path, cause))]
    Write {
        /// The file.
        path: PathBuf,
        /// What was written.
        value: String,
        /// The I/O error.
        cause: io::Error,
    },
    /// Moving a process into the cgroup failed.
    #[error("cannot move process {pid} into {}: {cause}{}", path.display(), hint(cause))]
    Attach {
        /// The process.
        pid: i32,
        /// The `cgroup.procs` file.
        path: PathBuf,
        /// The I/O error.
        cause: io::Error,
    },
    /// A `tasks` file through which the spawner places a sandbox (cgroup v1) could not be
    /// opened or written.
    #[error("cannot place the sandbox through {}: {cause}{}", path.display(), hint(cause))]
    Place {
        /// The `tasks` file.
        path: PathBuf,
        /// The I/O error.
        cause: io::Error,
    },
    /// Processes survived the kill for longer than the bound.
    #[error(
        "processes {pids:?} are still in {} after {waited:?} of SIGKILL (stuck in \
         uninterruptible sleep?); they will be retried by `sandbox-run check --cleanup`",
        path.display()
    )]
    KillTimeout {
        /// The cgroup directory.
        path: PathBuf,
        /// The pids still listed.
        pids: Vec<i32>,
        /// How long it tried.
        waited: Duration,
    },
    /// `rmdir` of a cgroup directory failed (after the bounded EBUSY retry).
    #[error("cannot remove cgroup {}: {cause}{}", path.display(), remove_hint(cause))]
    Remove {
        /// The directory.
        path: PathBuf,
        /// The I/O error.
        cause: io::Error,
    },
    /// The owner record of a sandbox cgroup could not be written, read or removed.
    #[error("cgroup owner record {}: {cause}", path.display())]
    Record {
        /// The record file or its directory.
        path: PathBuf,
        /// What went wrong.
        cause: String,
    },
    /// Rootless mode: the profile asks for limits, but this user has no delegated cgroup
    /// subtree it can write for them. Nothing was started.
    #[error(
        "rootless mode (uid {uid}): the profile asks for cgroup limits ({controllers}) but this \
         user cannot set them up: {cause}. An unprivileged user can only use a cgroup subtree \
         delegated to it, and sandbox-run never runs without limits a profile asked for. Fix \
         one of: run as root; run inside a delegated cgroup (systemd `Delegate=yes`, e.g. \
         `systemd-run --user --scope -p Delegate=yes -- sandbox-run ...`) or name a cgroup this \
         user owns, with the controllers enabled, in `[limits] cgroup_parent`; or run without \
         limits: `--profile rootless`, or a profile without [limits]"
    )]
    Rootless {
        /// The caller's effective uid.
        uid: u32,
        /// The controllers the limits need, comma-separated.
        controllers: String,
        /// What failed, naming the controller or directory.
        cause: Box<CgroupError>,
    },
}

/// A hint for common errnos of mkdir/write into cgroupfs.
fn hint(cause: &io::Error) -> &'static str {
    match cause.raw_os_error() {
        Some(libc::EACCES) | Some(libc::EPERM) => {
            " (run as root, or have the cgroup delegated to this user: systemd `Delegate=yes`)"
        }
        Some(libc::EROFS) => " (the cgroup filesystem is mounted read-only, e.g. in a container)",
        Some(libc::ENOENT) => " (the parent cgroup does not exist or was removed meanwhile)",
        Some(libc::ENOSPC) => " (a cgroup depth/descendant limit or cpuset is exhausted)",
        _ => "",
    }
}

/// A hint for a failed write of an interface file.
fn write_hint(path: &Path, cause: &io::Error) -> &'static str {
    let file = path.file_name().and_then(|f| f.to_str()).unwrap_or("");
    match (file, cause.raw_os_error()) {
        ("cgroup.subtree_control", Some(libc::EBUSY)) => {
            " (no-internal-processes rule: the cgroup has processes of its own; move them to a \
             leaf cgroup first)"
        }
        ("cgroup.subtree_control", Some(libc::ENOENT)) => {
            " (the controller is not in this cgroup's cgroup.controllers: enable it in the \
             parent's cgroup.subtree_control, or systemd `Delegate=yes`)"
        }
        ("cgroup.subtree_control", Some(libc::EINVAL)) => {
            " (for cpu: a real-time process in the subtree prevents enabling it)"
        }
        (_, Some(libc::ENOENT)) => {
            " (the interface file does not exist: the controller is not enabled for this cgroup)"
        }
        (_, Some(libc::EINVAL)) => " (the kernel rejected the value)",
        (_, Some(libc::EBUSY)) => " (the limit is below current usage)",
        _ => hint(cause),
    }
}

/// A hint for a failed rmdir.
fn remove_hint(cause: &io::Error) -> &'static str {
    match cause.raw_os_error() {
        Some(libc::EBUSY) => " (processes or child cgroups are still inside; kill them first)",
        _ => hint(cause),
    }
}
