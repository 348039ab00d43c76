//! Owner records: which host process owns which sandbox cgroup, so the cgroups of a crashed
//! host are found and reclaimed, and a live host's never are.
//!
//! Before any directory is made, [`super::SandboxCgroup::create`] writes
//! `<records dir>/<id>.json` (created exclusively) with the owner's pid, its start time
//! (field 22 of `/proc/PID/stat`, so a reused pid is never taken for the owner), its pid
//! namespace, the boot id, and every leaf path it is about to create. The record is deleted
//! only after every leaf is gone. cgroupfs cannot hold regular files, hence the separate
//! directory: `$SANDBOX_RUNNER_RUN_DIR/cgroups` when that variable is set (e.g. in a VM whose
//! `/run` is read-only), else `/run/sandbox-runner/cgroups` for root, else
//! `$XDG_RUNTIME_DIR/sandbox-runner/cgroups`.
//!
//! A cgroup directory without a record is never touched: it may belong to a runner in another
//! mount namespace.

use std::collections::HashMap;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, DirEntryExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use super::{v1, v2, CgroupError, CONTAINER};

/// The record of one sandbox cgroup.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct OwnerRecord {
    /// The sandbox id.
    pub id: String,
    /// The owner's pid (in `pid_ns`).
    pub owner_pid: i32,
    /// The owner's start time in clock ticks after boot (`/proc/PID/stat` field 22).
    pub owner_start_time: u64,
    /// The inode of the owner's pid namespace.
    pub pid_ns: u64,
    /// `/proc/sys/kernel/random/boot_id` when the record was written.
    pub boot_id: String,
    /// 1 or 2.
    pub version: u8,
    /// The leaf directories.
    pub paths: Vec<PathBuf>,
}

/// Whether a `/proc/PID/stat` line says zombie (state `Z`).
fn stat_is_zombie(stat: &str) -> bool {
    stat.rfind(')')
        .and_then(|i| stat.get(i + 2..i + 3))
        .is_some_and(|st| st == "Z")
}

/// The records already read by this process, by path, with the version of the file they were
/// read from: a record is written once (a detached sandbox's is replaced by a rename), so each
/// scan reads only records it has not seen or that changed, not every record every time.
static PARSED: Mutex<Option<HashMap<PathBuf, (FileVersion, OwnerRecord)>>> = Mutex::new(None);

/// Inode, size, mtime seconds and nanoseconds of a record file.
type FileVersion = (u64, u64, i64, i64);

/// The directory of the owner records.
pub fn records_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("SANDBOX_RUNNER_RUN_DIR") {
        return PathBuf::from(d).join("cgroups");
    }
    if nix::unistd::geteuid().is_root() {
        return PathBuf::from("/run/sandbox-runner/cgroups");
    }
    match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(d) => PathBuf::from(d).join("sandbox-runner/cgroups"),
        None => PathBuf::from(format!(
            "/tmp/sandbox-runner-{}/cgroups",
            nix::unistd::geteuid()
        )),
    }
}

/// The start time of `pid` (`/proc/PID/stat` field 22), `None` when there is no such process.
pub fn start_time(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_start_time(&stat)
}

/// Field 22 of a `/proc/PID/stat` line. The command (field 2) may contain spaces and
/// parentheses, so fields are counted after the last `)`.
pub(crate) fn parse_start_time(stat: &str) -> Option<u64> {
    let rest = &stat[stat.rfind(')')? + 1..];
    // rest starts at field 3 (state); field 22 is the 20th from there.
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// This boot's id, read once: it cannot change while the process lives.
fn boot_id() -> &'static str {
    static ID: OnceLock<String> = OnceLock::new();
    ID.get_or_init(|| {
        std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
            .map(|s| s.trim().to_owned())
            .unwrap_or_default()
    })
}

/// The inode of this process's pid namespace, read once: a process never changes its own
/// pid namespace (`setns` only moves its later children).
fn pid_ns() -> u64 {
    static NS: OnceLock<u64> = OnceLock::new();
    *NS.get_or_init(|| {
        std::fs::metadata("/proc/self/ns/pid")
            .map(|m| m.ino())
            .unwrap_or(0)
    })
}

/// This process's pid and start time. Cached per pid, so a forked child reads its own.
fn self_key() -> (i32, u64) {
    static SELF: Mutex<Option<(i32, u64)>> = Mutex::new(None);
    let pid = std::process::id() as i32;
    let mut cached = SELF.lock().unwrap_or_else(|p| p.into_inner());
    match *cached {
        Some((p, t)) if p == pid => (p, t),
        _ => {
            let key = (pid, start_time(pid).unwrap_or(0));
            *cached = Some(key);
            key
        }
    }
}

impl OwnerRecord {
    /// A record owned by this process.
    pub fn for_self(id: &str, version: u8, paths: Vec<PathBuf>) -> OwnerRecord {
        let (pid, start) = self_key();
        OwnerRecord {
            id: id.to_owned(),
            owner_pid: pid,
            owner_start_time: start,
            pid_ns: pid_ns(),
            boot_id: boot_id().to_owned(),
            version,
            paths,
        }
    }

    /// Rewrites the record at `path` (atomically) with `pid` as the owner: a detached
    /// sandbox owns its own cgroup, through its init.
    pub fn rewrite_owner(path: &Path, pid: i32) -> Result<(), CgroupError> {
        let err = |cause: String| CgroupError::Record {
            path: path.to_owned(),
            cause,
        };
        let text = std::fs::read(path).map_err(|e| err(format!("cannot read: {e}")))?;
        let mut rec: OwnerRecord = serde_json::from_slice(&text).map_err(|e| err(e.to_string()))?;
        rec.owner_pid = pid;
        rec.owner_start_time =
            start_time(pid).ok_or_else(|| err(format!("process {pid} is gone")))?;
        // Named after its writer, so a writer killed before the rename leaves a file that
        // reclaim_in can tell is abandoned.
        let (me, my_start) = self_key();
        let tmp = path.with_extension(format!("json.tmp-{me}-{my_start}"));
        let json = serde_json::to_vec_pretty(&rec).map_err(|e| err(e.to_string()))?;
        std::fs::write(&tmp, json)
            .and_then(|_| std::fs::rename(&tmp, path))
            .map_err(|e| err(format!("cannot write: {e}")))
    }

    /// Where [`write_new`](Self::write_new) puts the record of sandbox `id` in `dir`.
    pub(crate) fn path_in(dir: &Path, id: &str) -> PathBuf {
        dir.join(format!("{id}.json"))
    }

    /// Writes the record as `<dir>/<id>.json`, failing with [`CgroupError::Exists`] if one is
    /// there already.
    pub fn write_new(&self, dir: &Path) -> Result<PathBuf, CgroupError> {
        let rec_err = |path: &Path, cause: String| CgroupError::Record {
            path: path.to_owned(),
            cause,
        };
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| rec_err(dir, format!("cannot create the directory: {e}")))?;
        let path = Self::path_in(dir, &self.id);
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&path)
            .map_err(|e| {
                if e.kind() == std::io::ErrorKind::AlreadyExists {
                    CgroupError::Exists { path: path.clone() }
                } else {
                    rec_err(&path, format!("cannot create: {e}"))
                }
            })?;
        let json = serde_json::to_vec_pretty(self).map_err(|e| rec_err(&path, e.to_string()))?;
        if let Err(e) = f.write_all(&json) {
            let _ = std::fs::remove_file(&path);
            return Err(rec_err(&path, format!("cannot write: {e}")));
        }
        Ok(path)
    }

    /// Whether the owner may still be alive: same boot, and a process with the recorded pid
    /// and start time exists and has not exited (a zombie has). A record from another pid namespace
    /// cannot be judged and counts as alive.
    #[cfg(test)]
    pub fn owner_alive(&self) -> bool {
        self.owner_alive_in(&mut HashMap::new())
    }

    /// [`owner_alive`](Self::owner_alive), with the answers for owners already looked at in
    /// this scan in `seen` (many records share one owner).
    fn owner_alive_in(&self, seen: &mut HashMap<(i32, u64), bool>) -> bool {
        if self.boot_id != boot_id() {
            return false;
        }
        if self.pid_ns != pid_ns() {
            return true;
        }
        let key = (self.owner_pid, self.owner_start_time);
        if key == self_key() {
            return true;
        }
        // A zombie has exited: what it owned is stale (its sandboxes died with it, or, for a
        // detached sandbox's init, are the init's own leftovers).
        *seen.entry(key).or_insert_with(|| {
            std::fs::read_to_string(format!("/proc/{}/stat", key.0))
                .ok()
                .is_some_and(|stat| {
                    parse_start_time(&stat) == Some(key.1) && !stat_is_zombie(&stat)
                })
        })
    }

    /// Whether every path is a `.../sandbox-runner/<id>` directory on a cgroup filesystem (or
    /// gone), so a corrupted record can never make reclaim remove anything else.
    fn paths_plausible(&self) -> bool {
        self.paths.iter().all(|p| {
            p.is_absolute()
                && p.file_name().and_then(|n| n.to_str()) == Some(self.id.as_str())
                && p.parent()
                    .and_then(|d| d.file_name())
                    .and_then(|n| n.to_str())
                    == Some(CONTAINER)
                && p.parent().is_some_and(|d| !d.exists() || on_cgroupfs(d))
        })
    }
}

/// Whether `path` is on a cgroup (v1) or cgroup2 filesystem.
fn on_cgroupfs(path: &Path) -> bool {
    use nix::sys::statfs::{statfs, CGROUP2_SUPER_MAGIC, CGROUP_SUPER_MAGIC};
    statfs(path).is_ok_and(|s| {
        let t = s.filesystem_type();
        t == CGROUP_SUPER_MAGIC || t == CGROUP2_SUPER_MAGIC
    })
}

/// Kills and removes the cgroups of `rec`; `Ok` with the leaves that existed.
fn reclaim(rec: &OwnerRecord) -> Result<Vec<PathBuf>, CgroupError> {
    let existing: Vec<PathBuf> = rec.paths.iter().filter(|p| p.exists()).cloned().collect();
    if rec.version == 2 {
        for p in &existing {
            v2::kill_dir(p)?;
            v2::remove_dir(p)?;
        }
    } else {
        v1::kill_dirs(&existing)?;
        v1::remove_dirs(&existing)?;
    }
    Ok(existing)
}

/// Reclaims the sandbox cgroups whose owner is dead: see [`super::reclaim_stale`].
pub(crate) fn reclaim_in(dir: &Path) -> Result<Vec<PathBuf>, CgroupError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => {
            return Err(CgroupError::Record {
                path: dir.to_owned(),
                cause: format!("cannot list: {e}"),
            })
        }
    };
    let mut reclaimed = Vec::new();
    let mut first_err = None;
    let mut seen = HashMap::new();
    let mut parsed_guard = PARSED.lock().unwrap_or_else(|p| p.into_inner());
    let parsed = parsed_guard.get_or_insert_with(HashMap::new);
    let mut present = Vec::new();
    for entry in entries.filter_map(Result::ok) {
        let path = entry.path();
        if let Some(writer) = path
            .extension()
            .and_then(|e| e.to_str())
            .and_then(|e| e.strip_prefix("tmp-"))
        {
            // A rewrite's temporary file: abandoned once its writer is gone.
            let alive = writer.split_once('-').is_some_and(|(pid, start)| {
                match (pid.parse::<i32>(), start.parse::<u64>()) {
                    (Ok(pid), Ok(start)) => start_time(pid) == Some(start),
                    _ => false,
                }
            });
            if !alive {
                let _ = std::fs::remove_file(&path);
            }
            continue;
        }
        if path.extension().and_then(|e| e.to_str()) != Some("json") {
            continue;
        }
        // The file's identity and version: inode, size and modification time (a record
        // edited in place gets a new mtime or size).
        let ino = entry
            .metadata()
            .map(|m| (m.ino(), m.size(), m.mtime(), m.mtime_nsec()))
            .unwrap_or((entry.ino(), 0, 0, 0));
        present.push(path.clone());
        let cached = parsed
            .get(&path)
            .filter(|(i, _)| *i == ino)
            .map(|(_, r)| r.clone());
        let rec: OwnerRecord = match cached.map(Ok).unwrap_or_else(|| {
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            serde_json::from_str::<OwnerRecord>(&text)
        }) {
            Ok(r) => {
                parsed.insert(path.clone(), (ino, r.clone()));
                r
            }
            Err(_) => {
                // A record is written before any directory is made: an unparsable one older
                // than a minute is a crash mid-write with nothing to reclaim.
                let old = entry
                    .metadata()
                    .and_then(|m| m.modified())
                    .ok()
                    .and_then(|t| SystemTime::now().duration_since(t).ok())
                    .is_some_and(|age| age > Duration::from_secs(60));
                if old {
                    let _ = std::fs::remove_file(&path);
                }
                continue;
            }
        };
        if rec.owner_alive_in(&mut seen) {
            continue;
        }
        if !rec.paths_plausible() {
            first_err.get_or_insert(CgroupError::Record {
                path: path.clone(),
                cause: "lists paths that are not sandbox cgroups; left alone, remove it by hand"
                    .to_owned(),
            });
            continue;
        }
        match reclaim(&rec) {
            Ok(leaves) => {
                let _ = std::fs::remove_file(&path);
                reclaimed.extend(leaves);
            }
            Err(e) => {
                first_err.get_or_insert(e);
            }
        }
    }
    // Forget the records of this directory that are gone.
    let present: std::collections::HashSet<PathBuf> = present.into_iter().collect();
    parsed.retain(|p, _| p.parent() != Some(dir) || present.contains(p));
    match first_err {
        Some(e) if reclaimed.is_empty() => Err(e),
        _ => Ok(reclaimed),
    }
}

/// Deletes a record file (after its cgroups are gone).
pub(crate) fn remove_record(path: &Path) {
    let _ = std::fs::remove_file(path);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_time_after_odd_comm() {
        let stat = "4242 (a) b) (c) S 1 4242 4242 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 \
                    987654 1000000 200 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 0 0 0 0 0 0";
        assert_eq!(parse_start_time(stat), Some(987_654));
        assert_eq!(parse_start_time("garbage"), None);
        // This process is alive and has a start time.
        assert!(start_time(std::process::id() as i32).is_some());
    }

    #[test]
    fn liveness() {
        let mut rec = OwnerRecord::for_self("t", 1, vec![]);
        assert!(rec.owner_alive());
        // Same pid, other start time: a reused pid is not the owner.
        rec.owner_start_time += 1;
        assert!(!rec.owner_alive());
        rec.owner_start_time -= 1;
        rec.boot_id = "another-boot".to_owned();
        assert!(!rec.owner_alive());
    }

    #[test]
    fn implausible_paths_are_refused() {
        let mut rec = OwnerRecord::for_self("x", 1, vec!["/etc".into()]);
        assert!(!rec.paths_plausible());
        rec.paths = vec!["/tmp/sandbox-runner/y".into()];
        assert!(!rec.paths_plausible());
        // Right shape but on a non-cgroup filesystem that exists.
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("sandbox-runner/x");
        std::fs::create_dir_all(&p).unwrap();
        rec.paths = vec![p];
        assert!(!rec.paths_plausible());
        // Gone already: fine (reclaim only drops the record).
        rec.paths = vec!["/nonexistent/sandbox-runner/x".into()];
        assert!(rec.paths_plausible());
    }

    #[test]
    fn record_roundtrip_and_exclusive() {
        let dir = tempfile::tempdir().unwrap();
        let rec = OwnerRecord::for_self("r1", 2, vec!["/sys/fs/cgroup/sandbox-runner/r1".into()]);
        let path = rec.write_new(dir.path()).unwrap();
        let back: OwnerRecord =
            serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
        assert_eq!(back, rec);
        assert!(matches!(
            rec.write_new(dir.path()),
            Err(CgroupError::Exists { .. })
        ));
        // Live owner: never reclaimed.
        assert_eq!(reclaim_in(dir.path()).unwrap(), Vec::<PathBuf>::new());
        assert!(path.exists());
        // Dead owner, directories already gone: the record is dropped.
        let mut dead = rec.clone();
        dead.id = "r2".to_owned();
        dead.owner_start_time += 1;
        dead.paths = vec!["/nonexistent/sandbox-runner/r2".into()];
        let p2 = dead.write_new(dir.path()).unwrap();
        assert_eq!(reclaim_in(dir.path()).unwrap(), Vec::<PathBuf>::new());
        assert!(!p2.exists());
        assert!(path.exists());
    }
}
