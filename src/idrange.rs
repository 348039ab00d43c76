//! Host id ranges for sandboxes started by root: each sandbox's user namespace maps its ids
//! 0-65535 to a block of host ids that no other sandbox holds, like systemd's `DynamicUser`
//! or a container engine's subordinate ids, so its root is an unprivileged host id.
//!
//! The blocks lie in `0x7000_0000..0x8000_0000` ([`SLOTS`] blocks of [`ID_RANGE_SIZE`]),
//! above systemd-nspawn's container range (which ends at `0x6FFF_FFFF`) and below the ids
//! that tools read as negative. A block is claimed by creating `<slot>` in [`claims_dir`]
//! with `O_EXCL` (one file system operation, so two runners never get the same block); the
//! file says which sandbox holds it and who owns that sandbox: the host process, or for a
//! detached sandbox its init. A claim whose owner is gone is stale and taken over when a
//! new allocation lands on it, so allocation never scans the other claims.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::Error;
pub use crate::plan::ID_RANGE_SIZE;

/// The first host id of the first block.
pub const FIRST_ID: u32 = 0x7000_0000;
/// How many blocks there are.
pub const SLOTS: u32 = 4096;

/// Where the claims live: one directory for every root runner of this host (never moved by
/// `SANDBOX_RUNNER_STATE_DIR`, since blocks must be unique host-wide).
pub fn claims_dir() -> PathBuf {
    PathBuf::from("/run/sandbox-runner/ids")
}

/// What a claim file holds.
#[derive(Debug, Serialize, Deserialize)]
struct Claim {
    /// The sandbox that holds the block.
    id: String,
    /// The process that owns it (the host, or a detached sandbox's init) and its start time.
    owner_pid: i32,
    owner_start: u64,
}

/// What every claim owned by process `pid` (started at `start`, in clock ticks after boot)
/// holds: how the reaper of a host that died finds the claims it made but could not
/// register (see `src/init/sandbox-init.c`).
pub(crate) fn owner_needle(pid: i32, start: u64) -> String {
    format!("\"owner_pid\":{pid},\"owner_start\":{start}}}")
}

impl Claim {
    fn owner_alive(&self) -> bool {
        crate::cgroup::start_time(self.owner_pid) == Some(self.owner_start)
    }
}

/// A block of host ids held by one sandbox; the claim is removed on drop (unless handed to a
/// detached sandbox's init).
#[derive(Debug)]
pub struct IdRange {
    base: u32,
    claim: PathBuf,
    keep: bool,
}

impl IdRange {
    /// Claims a free block for sandbox `id`, owned by this process.
    pub fn allocate(id: &str) -> Result<IdRange, Error> {
        let dir = claims_dir();
        std::fs::create_dir_all(&dir)
            .map_err(|e| Error::host(format!("creating {}", dir.display()), e))?;
        let me = std::process::id() as i32;
        let claim = Claim {
            id: id.to_string(),
            owner_pid: me,
            owner_start: crate::cgroup::start_time(me).unwrap_or(0),
        };
        let text = serde_json::to_vec(&claim)
            .map_err(|e| Error::host("id claim", std::io::Error::from(e)))?;
        let mut last = None;
        for _ in 0..64 {
            let slot = random_slot();
            let path = dir.join(slot.to_string());
            match create_exclusive(&path, &text) {
                Ok(()) => {
                    return Ok(IdRange {
                        base: FIRST_ID + slot * ID_RANGE_SIZE,
                        claim: path,
                        keep: false,
                    })
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    // Held: take it over only if its owner is gone.
                    if is_stale(&path)
                        && std::fs::remove_file(&path).is_ok()
                        && create_exclusive(&path, &text).is_ok()
                    {
                        return Ok(IdRange {
                            base: FIRST_ID + slot * ID_RANGE_SIZE,
                            claim: path,
                            keep: false,
                        });
                    }
                    last = Some(e);
                }
                Err(e) => {
                    return Err(Error::host(
                        format!("claiming a host id range ({})", path.display()),
                        e,
                    ))
                }
            }
        }
        Err(Error::host(
            format!(
                "claiming a host id range in {}: 64 random blocks of {SLOTS} were all held",
                dir.display()
            ),
            last.unwrap_or_else(|| std::io::Error::from(std::io::ErrorKind::AlreadyExists)),
        ))
    }

    /// The host id that root inside maps to; ids `base..base + 65536` are the sandbox's.
    pub fn base(&self) -> u32 {
        self.base
    }

    /// The claim file (for the reaper, which removes it should the host die first).
    pub fn claim_path(&self) -> &Path {
        &self.claim
    }

    /// Hands the block to a detached sandbox: its init (`pid`) owns it from now on, and the
    /// claim stays after this value is dropped (a later allocation takes it over once that
    /// init is gone).
    pub fn hand_over(&mut self, pid: i32) -> Result<(), Error> {
        let text = std::fs::read(&self.claim)
            .map_err(|e| Error::host(format!("reading {}", self.claim.display()), e))?;
        let mut claim: Claim = serde_json::from_slice(&text).map_err(|e| {
            Error::host(
                format!("parsing {}", self.claim.display()),
                std::io::Error::from(e),
            )
        })?;
        claim.owner_pid = pid;
        claim.owner_start = crate::cgroup::start_time(pid).unwrap_or(0);
        let text = serde_json::to_vec(&claim)
            .map_err(|e| Error::host("id claim", std::io::Error::from(e)))?;
        let tmp = self.claim.with_extension("tmp");
        std::fs::write(&tmp, text)
            .and_then(|_| std::fs::rename(&tmp, &self.claim))
            .map_err(|e| Error::host(format!("writing {}", self.claim.display()), e))?;
        self.keep = true;
        Ok(())
    }
}

impl Drop for IdRange {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_file(&self.claim);
        }
    }
}

/// Removes the claims whose owner is gone (a detached sandbox that ended, a host and reaper
/// both killed), for `sandbox-run check --cleanup` and the end of a detached sandbox.
/// Returns the blocks' slots freed, and the first error of a claim that could not be
/// removed (with its path).
pub fn reclaim_stale() -> (Vec<u32>, Option<Error>) {
    let mut freed = Vec::new();
    let mut first_err = None;
    let Ok(rd) = std::fs::read_dir(claims_dir()) else {
        return (freed, None);
    };
    for e in rd.flatten() {
        let path = e.path();
        let Some(slot) = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        if !is_stale(&path) {
            continue;
        }
        match std::fs::remove_file(&path) {
            Ok(()) => freed.push(slot),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                first_err.get_or_insert(Error::host(format!("removing {}", path.display()), e));
            }
        }
    }
    (freed, first_err)
}

/// Whether the claim at `path` belongs to nobody any more (its owner exited), or cannot be
/// read at all and is older than a minute (a writer that died half-way).
fn is_stale(path: &Path) -> bool {
    match std::fs::read(path)
        .ok()
        .and_then(|t| serde_json::from_slice::<Claim>(&t).ok())
    {
        Some(c) => !c.owner_alive(),
        None => std::fs::metadata(path)
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| t.elapsed().ok())
            .is_some_and(|age| age.as_secs() > 60),
    }
}

/// Creates the claim `path` holding `text`, failing with `AlreadyExists` if it exists.
///
/// Written whole before it has a name (an `O_TMPFILE` linked in with `linkat`, which fails
/// on an existing name as `O_EXCL` does), so a host SIGKILLed meanwhile leaves no empty
/// claim behind (nobody would know whose it was, and the block would stay taken for a
/// minute). Where the file system has no `O_TMPFILE`, an `O_EXCL` create and a write.
fn create_exclusive(path: &Path, text: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = std::fs::OpenOptions::new()
        .write(true)
        .mode(0o600)
        .custom_flags(libc::O_TMPFILE)
        .open(dir);
    match tmp {
        Ok(mut f) => {
            f.write_all(text)?;
            // Through /proc/self/fd with AT_SYMLINK_FOLLOW: AT_EMPTY_PATH would need
            // CAP_DAC_READ_SEARCH.
            let fd_path = format!("/proc/self/fd/{}", std::os::fd::AsRawFd::as_raw_fd(&f));
            return rustix::fs::linkat(
                rustix::fs::CWD,
                fd_path.as_str(),
                rustix::fs::CWD,
                path,
                rustix::fs::AtFlags::SYMLINK_FOLLOW,
            )
            .map_err(std::io::Error::from);
        }
        Err(e)
            if !matches!(
                e.raw_os_error(),
                Some(libc::EOPNOTSUPP) | Some(libc::EISDIR) | Some(libc::EINVAL)
            ) =>
        {
            return Err(e)
        }
        Err(_) => {}
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    if let Err(e) = f.write_all(text) {
        let _ = std::fs::remove_file(path);
        return Err(e);
    }
    Ok(())
}

fn random_slot() -> u32 {
    let mut b = [0u8; 4];
    let mut got = 0;
    while got < b.len() {
        // SAFETY: getrandom writes at most the given length into the live buffer.
        let n = unsafe { libc::getrandom(b[got..].as_mut_ptr().cast(), b.len() - got, 0) };
        if n > 0 {
            got += n as usize;
        }
    }
    u32::from_ne_bytes(b) % SLOTS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_claim_holds_its_owners_needle_and_no_other() {
        let claim = Claim {
            id: "sbx-0123".into(),
            owner_pid: 4242,
            owner_start: 987654,
        };
        let text = String::from_utf8(serde_json::to_vec(&claim).unwrap()).unwrap();
        assert!(text.contains(&owner_needle(4242, 987654)), "{text}");
        // Neither another process nor the same pid reused later matches.
        assert!(!text.contains(&owner_needle(424, 987654)), "{text}");
        assert!(!text.contains(&owner_needle(4242, 98765)), "{text}");
    }

    #[test]
    fn blocks_stay_in_the_range_and_never_reach_root_or_the_top_bit() {
        const LAST: u64 = FIRST_ID as u64 + SLOTS as u64 * ID_RANGE_SIZE as u64 - 1;
        const { assert!(FIRST_ID > 0x6FFF_FFFF, "overlaps systemd-nspawn's range") };
        const { assert!(LAST <= 0x7FFF_FFFF, "reaches ids read as negative") };
        for _ in 0..1000 {
            assert!(random_slot() < SLOTS);
        }
    }
}
