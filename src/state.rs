//! Sandbox state on disk, for detached sandboxes and reattach.
//!
//! Each sandbox that needs host-side files gets `<state root>/<id>/` (0700; default root
//! `/run/sandbox-runner` for root, `$XDG_RUNTIME_DIR/sandbox-runner` for another user, or
//! `$SANDBOX_RUNNER_STATE_DIR`). A detached sandbox records its
//! identity in `state.json` there: the init's pid **and its start time**, so a reattach never
//! acts on a pid that was reused by an unrelated process (go-plugin's reattach had that bug).
//! Identity is verified after a pidfd pins the pid; every later action goes through the pidfd.

use serde::{Deserialize, Serialize};
use std::os::fd::OwnedFd;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::error::Error;

/// The default directory holding one sub-directory per sandbox.
pub const DEFAULT_STATE_ROOT: &str = "/run/sandbox-runner";

/// The state root: `$SANDBOX_RUNNER_STATE_DIR`; else [`DEFAULT_STATE_ROOT`] for root, and
/// `$XDG_RUNTIME_DIR/sandbox-runner` for any other user (see [`try_state_root`] for the
/// error when that is unset; here it falls back to a path that cannot be created).
pub fn state_root() -> PathBuf {
    try_state_root().unwrap_or_else(|_| PathBuf::from(DEFAULT_STATE_ROOT))
}

/// The state root, or a clear error for a user who is not root and has neither
/// `$SANDBOX_RUNNER_STATE_DIR` nor `$XDG_RUNTIME_DIR`.
pub fn try_state_root() -> Result<PathBuf, Error> {
    if let Some(d) = std::env::var_os("SANDBOX_RUNNER_STATE_DIR").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(d));
    }
    let euid = nix::unistd::geteuid();
    if euid.is_root() {
        return Ok(PathBuf::from(DEFAULT_STATE_ROOT));
    }
    match std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()) {
        Some(d) => Ok(PathBuf::from(d).join("sandbox-runner")),
        None => Err(Error::InvalidCommand(format!(
            "no state directory for uid {euid}: {DEFAULT_STATE_ROOT} is root's, and \
             XDG_RUNTIME_DIR is not set; set XDG_RUNTIME_DIR (a directory of yours, e.g. \
             /run/user/{euid}) or SANDBOX_RUNNER_STATE_DIR"
        ))),
    }
}

/// True for IDs this crate makes (`sbx-` and 24 lowercase hex digits): anything else is
/// refused before it becomes a path.
pub fn valid_id(id: &str) -> bool {
    id.len() == 28
        && id.starts_with("sbx-")
        && id[4..]
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// What a detached sandbox leaves on disk so another process can find and verify it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct SandboxState {
    /// The sandbox ID.
    pub id: String,
    /// The program that runs.
    pub program: String,
    /// Host pid of the sandbox's init.
    pub init_pid: i32,
    /// The init's start time (clock ticks after boot, `/proc/PID/stat` field 22).
    pub init_start_time: u64,
    /// Kill grace period in milliseconds.
    pub kill_grace_ms: u64,
    /// Host directory of the plugin's sockets, when one is shared.
    pub socket_dir: Option<PathBuf>,
    /// Host-only directory of verified socket links.
    pub links_dir: Option<PathBuf>,
    /// The socket directory as the plugin sees it.
    pub sandbox_socket_dir: Option<String>,
    /// Whether the sandbox shares the host's network (tcp addresses pass unchanged).
    pub host_network: bool,
    /// cgroup directories of the sandbox, in every hierarchy.
    pub cgroups: Vec<PathBuf>,
    /// Seconds since the epoch when it started.
    pub created: u64,
}

/// The state directory of sandbox `id`.
pub fn dir_of(id: &str) -> PathBuf {
    state_root().join(id)
}

/// Creates the state directory of `id` (0700; 0710 with group `gid` when one is given, so
/// the group can reach a socket directory inside).
pub fn create_dir(id: &str, gid: Option<u32>) -> Result<PathBuf, Error> {
    let root = try_state_root()?;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o711)
        .create(&root)
        .map_err(|e| Error::host(format!("creating {}", root.display()), e))?;
    let dir = root.join(id);
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&dir)
        .map_err(|e| Error::host(format!("creating {}", dir.display()), e))?;
    // Who made it, so a crashed host's directory is found and removed (see reclaim_stale).
    let me = std::process::id() as i32;
    let owner = format!("{me} {}\n", start_time(me).unwrap_or(0));
    if let Err(e) = std::fs::write(dir.join(OWNER_FILE), owner) {
        let _ = std::fs::remove_dir_all(&dir);
        return Err(Error::host(
            format!("writing {}", dir.join(OWNER_FILE).display()),
            e,
        ));
    }
    if let Some(g) = gid {
        std::os::unix::fs::chown(&dir, None, Some(g))
            .and_then(|_| std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o710)))
            .map_err(|e| Error::host(format!("giving {} to group {g}", dir.display()), e))?;
    }
    Ok(dir)
}

impl SandboxState {
    /// Writes `state.json` atomically (write to a temp name, then rename).
    pub fn write(&self) -> Result<(), Error> {
        let dir = dir_of(&self.id);
        let tmp = dir.join("state.json.tmp");
        let json = serde_json::to_vec_pretty(self)
            .map_err(|e| Error::host("state", std::io::Error::other(e)))?;
        std::fs::write(&tmp, json)
            .and_then(|_| std::fs::rename(&tmp, dir.join("state.json")))
            .map_err(|e| Error::host(format!("writing {}", dir.join("state.json").display()), e))
    }

    /// Reads the state of `id`.
    pub fn read(id: &str) -> Result<SandboxState, Error> {
        if !valid_id(id) {
            return Err(Error::NoSuchSandbox {
                id: id.to_string(),
                why: "not a sandbox ID (sbx- and 24 hex digits)".into(),
            });
        }
        let p = dir_of(id).join("state.json");
        let text = std::fs::read(&p).map_err(|e| Error::NoSuchSandbox {
            id: id.to_string(),
            why: format!("{}: {e}", p.display()),
        })?;
        serde_json::from_slice(&text).map_err(|e| Error::NoSuchSandbox {
            id: id.to_string(),
            why: format!("{}: {e}", p.display()),
        })
    }

    /// Opens a pidfd of the init and checks that it is still the same process (same start
    /// time). A dead init or a reused pid is an error, never a signal to a stranger.
    pub fn open_init(&self) -> Result<OwnedFd, Error> {
        let stale = |why: String| Error::Stale {
            id: self.id.clone(),
            why,
        };
        let pid = rustix::process::Pid::from_raw(self.init_pid)
            .ok_or_else(|| stale(format!("bad pid {}", self.init_pid)))?;
        let fd = rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty())
            .map_err(|e| stale(format!("its init (pid {}) is gone: {e}", self.init_pid)))?;
        // The pidfd pins the pid: from here on it cannot be reused under us.
        match start_time(self.init_pid) {
            Some(t) if t == self.init_start_time => Ok(fd),
            Some(t) => Err(stale(format!(
                "pid {} now belongs to another process (start time {t}, expected {})",
                self.init_pid, self.init_start_time
            ))),
            None => Err(stale(format!("its init (pid {}) is gone", self.init_pid))),
        }
    }

    /// Lists the sandboxes with a state file, with their state or why it cannot be read.
    pub fn list() -> Vec<(String, Result<SandboxState, Error>)> {
        let Ok(rd) = std::fs::read_dir(state_root()) else {
            return Vec::new();
        };
        let mut out: Vec<_> = rd
            .flatten()
            .filter_map(|e| e.file_name().into_string().ok())
            .filter(|n| valid_id(n) && dir_of(n).join("state.json").exists())
            .map(|id| {
                let s = SandboxState::read(&id);
                (id, s)
            })
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        out
    }
}

/// The file in a state directory naming the host process that made it: `PID START_TIME`.
const OWNER_FILE: &str = "owner";

/// Removes the state directories left by hosts that died before they removed them: those
/// without `state.json` (a sandbox with a socket directory, or a detached one whose host died
/// before recording it) whose `owner` process is gone (pid and start time no longer match),
/// or, with no readable `owner`, older than a minute. A detached sandbox's directory (it has
/// `state.json`) is left alone: it keeps the exit status for a later reattach, and `sandbox-run
/// check --cleanup` removes it once its init is gone. Returns the ids removed, and those
/// that could not be, with why.
pub fn reclaim_stale() -> (Vec<String>, Vec<(String, Error)>) {
    let Ok(rd) = std::fs::read_dir(state_root()) else {
        return (Vec::new(), Vec::new());
    };
    let mut removed = Vec::new();
    let mut failed = Vec::new();
    for entry in rd.flatten() {
        let Ok(id) = entry.file_name().into_string() else {
            continue;
        };
        if !valid_id(&id) {
            continue;
        }
        let dir = entry.path();
        if dir.join("state.json").exists() {
            continue;
        }
        let owner = std::fs::read_to_string(dir.join(OWNER_FILE))
            .ok()
            .and_then(|t| {
                let mut w = t.split_whitespace();
                Some((
                    w.next()?.parse::<i32>().ok()?,
                    w.next()?.parse::<u64>().ok()?,
                ))
            });
        let stale = match owner {
            Some((pid, start)) => start_time(pid) != Some(start),
            None => entry
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| std::time::SystemTime::now().duration_since(t).ok())
                .is_some_and(|age| age > std::time::Duration::from_secs(60)),
        };
        if stale {
            match remove_dir(&id) {
                Ok(()) => removed.push(id),
                Err(e) => failed.push((id, e)),
            }
        }
    }
    (removed, failed)
}

/// Removes the state directory of `id` and everything in it.
pub fn remove_dir(id: &str) -> Result<(), Error> {
    if !valid_id(id) {
        return Ok(());
    }
    remove_path(&dir_of(id))
}

/// Removes the state directory `d` and everything in it: first the socket directory's file
/// system recorded in it (unmounted, or removed when a plain directory, also when it lies
/// in the host's `PLUGIN_UNIX_SOCKET_DIR`), then the tree, with a fixed number of file
/// descriptors however deep it is. A missing `d` is not an error.
pub fn remove_path(d: &Path) -> Result<(), Error> {
    crate::sockfs::release(d).map_err(|(p, e)| {
        Error::host(format!("removing the socket directory {}", p.display()), e)
    })?;
    crate::sockfs::remove_tree(d).map_err(|e| Error::host(format!("removing {}", d.display()), e))
}

/// The start time of `pid` (`/proc/PID/stat` field 22), if it exists.
pub fn start_time(pid: i32) -> Option<u64> {
    crate::cgroup::start_time(pid)
}

/// Whether `path` lies below the state root (a guard before removing host paths named in a
/// state file someone else could have written).
pub fn is_below_root(path: &Path) -> bool {
    path.starts_with(state_root())
        && !path
            .components()
            .any(|c| c == std::path::Component::ParentDir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_checked_before_they_become_paths() {
        assert!(valid_id("sbx-0123456789abcdef01234567"));
        assert!(!valid_id("sbx-../../etc/passwd"));
        assert!(!valid_id("sbx-0123456789ABCDEF01234567"));
        assert!(!valid_id("1234"));
    }

    #[test]
    fn start_time_of_self() {
        let me = std::process::id() as i32;
        assert!(start_time(me).is_some());
        assert_eq!(start_time(me), start_time(me));
        assert!(start_time(i32::MAX).is_none());
    }
}
