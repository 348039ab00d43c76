//! The socket directory's own file system, host side.
//!
//! Run as root, a sandbox's socket directory lives on a tmpfs of its own, mounted by the
//! runner on the host at the directory's parent (`<state>/<id>/s`, or
//! `<PLUGIN_UNIX_SOCKET_DIR>/<id>`) with:
//!
//! - a size and an inode limit (`[sockets] size` and `inodes`), so a plugin cannot fill
//!   host memory through it, nor make more than a few files;
//! - `nosuid,nodev,noexec` on the host side too, so nothing the plugin leaves there means
//!   anything to the host;
//! - `nosymfollow`, so a host that connects to a path in it (go-plugin's broker dials the
//!   addresses a plugin announces) never follows a symbolic link the plugin made.
//!
//! Removal is an unmount, whatever the plugin made inside. Without privilege (rootless
//! mode) there is no mount: the directory is a plain one in the caller's runtime directory,
//! bounded by that file system (logind's per-user tmpfs), and [`remove_tree_at`] removes
//! whatever is left with a fixed number of file descriptors, however deep the tree.

use std::ffi::{CStr, CString};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};

use rustix::fs::{self as rfs, AtFlags, Mode, OFlags};
use rustix::io::Errno;

/// The name of the file, in a sandbox's state directory, that holds the path of its socket
/// file system's mount point, so whoever removes a dead sandbox's state unmounts it first.
pub const MOUNT_RECORD: &str = "sockfs";

/// Size and inode limits of a socket directory's tmpfs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TmpfsLimits {
    /// Bytes of file data (tmpfs `size=`, rounded up to pages by the kernel).
    pub size: u64,
    /// Files and directories, the root included (tmpfs `nr_inodes=`).
    pub inodes: u64,
}

/// Mounts a fresh tmpfs at `path` with `limits`, `nosuid,nodev,noexec,nosymfollow`, its root
/// mode `0711` (the plugin passes through to its directory, but cannot list it).
pub(crate) fn mount(path: &Path, limits: TmpfsLimits) -> std::io::Result<()> {
    use nix::mount::MsFlags;
    if limits.size == 0 || limits.inodes == 0 {
        // 0 means "no limit" to tmpfs.
        return Err(std::io::Error::from(std::io::ErrorKind::InvalidInput));
    }
    let flags = MsFlags::MS_NOSUID
        | MsFlags::MS_NODEV
        | MsFlags::MS_NOEXEC
        | MsFlags::from_bits_retain(libc::MS_NOSYMFOLLOW);
    let data = format!("size={},nr_inodes={},mode=0711", limits.size, limits.inodes);
    nix::mount::mount(
        Some("sandbox-sockets"),
        path,
        Some("tmpfs"),
        flags,
        Some(data.as_str()),
    )
    .map_err(std::io::Error::from)
}

/// Detaches the mount at `path`, if `path` is a mount point. Returns whether it was one.
/// Never follows a symbolic link at `path`.
pub(crate) fn unmount(path: &Path) -> std::io::Result<bool> {
    use nix::mount::MntFlags;
    match nix::mount::umount2(path, MntFlags::MNT_DETACH | MntFlags::UMOUNT_NOFOLLOW) {
        Ok(()) => Ok(true),
        // Not a mount point, or already gone.
        Err(nix::errno::Errno::EINVAL) | Err(nix::errno::Errno::ENOENT) => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Writes the mount record of a state directory: `mount_point`, to unmount before the
/// directory is removed.
pub(crate) fn record(state_dir: &Path, mount_point: &Path) -> std::io::Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let mut bytes = mount_point.as_os_str().as_bytes().to_vec();
    bytes.push(b'\n');
    std::fs::write(state_dir.join(MOUNT_RECORD), bytes)
}

/// The mount point recorded in `state_dir`, if any (see [`record`]).
pub(crate) fn recorded(state_dir: &Path) -> Option<PathBuf> {
    use std::os::unix::ffi::OsStrExt;
    let bytes = std::fs::read(state_dir.join(MOUNT_RECORD)).ok()?;
    let line = bytes.strip_suffix(b"\n")?;
    let p = Path::new(std::ffi::OsStr::from_bytes(line));
    p.is_absolute().then(|| p.to_path_buf())
}

/// Unmounts and removes the socket file system recorded in `state_dir` (nothing when none
/// is), the tree below its mount point included when it was a plain directory.
pub(crate) fn release(state_dir: &Path) -> Result<(), (PathBuf, std::io::Error)> {
    let Some(mp) = recorded(state_dir) else {
        return Ok(());
    };
    unmount(&mp).map_err(|e| (mp.clone(), e))?;
    remove_tree(&mp).map_err(|e| (mp.clone(), e))?;
    let _ = std::fs::remove_file(state_dir.join(MOUNT_RECORD));
    Ok(())
}

/// Removes `path` and everything below it (see [`remove_tree_at`]); a missing `path` is
/// not an error.
pub fn remove_tree(path: &Path) -> std::io::Result<()> {
    let (Some(parent), Some(name)) = (path.parent(), path.file_name()) else {
        return Err(std::io::Error::from(std::io::ErrorKind::InvalidInput));
    };
    let parent = if parent.as_os_str().is_empty() {
        Path::new(".")
    } else {
        parent
    };
    let pfd = match rfs::open(
        parent,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    ) {
        Ok(fd) => fd,
        Err(Errno::NOENT) => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    remove_tree_at(pfd.as_fd(), Path::new(name)).map_err(Into::into)
}

/// Opens `name` in `dir` as a directory to list and remove entries from, never following a
/// symbolic link.
fn open_dir(dir: BorrowedFd<'_>, name: &CStr) -> rustix::io::Result<OwnedFd> {
    rfs::openat(
        dir,
        name,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
}

/// What one pass over a directory found.
enum Pass {
    /// Everything in it is gone.
    Empty,
    /// A subdirectory, to empty first.
    Sub(CString),
}

/// Unlinks every entry of `dir` that is not a directory, until it finds a directory.
fn sweep(dir: &OwnedFd) -> rustix::io::Result<Pass> {
    // Listing while unlinking may skip entries: list again until a pass finds nothing.
    loop {
        let mut any = false;
        let mut entries = rfs::Dir::read_from(dir)?;
        while let Some(entry) = entries.read() {
            let entry = entry?;
            let n = entry.file_name();
            if n.to_bytes() == b"." || n.to_bytes() == b".." {
                continue;
            }
            any = true;
            match rfs::unlinkat(dir, n, AtFlags::empty()) {
                Ok(()) | Err(Errno::NOENT) => {}
                Err(Errno::ISDIR) => return Ok(Pass::Sub(n.to_owned())),
                Err(e) => return Err(e),
            }
        }
        if !any {
            return Ok(Pass::Empty);
        }
    }
}

/// The name in `parent` of the directory whose inode is `ino`.
fn name_of(parent: &OwnedFd, ino: u64) -> rustix::io::Result<Option<CString>> {
    let mut entries = rfs::Dir::read_from(parent)?;
    while let Some(entry) = entries.read() {
        let entry = entry?;
        let n = entry.file_name();
        if entry.ino() == ino && n.to_bytes() != b"." && n.to_bytes() != b".." {
            return Ok(Some(n.to_owned()));
        }
    }
    Ok(None)
}

/// Removes `parent/name` and everything below it, never following a symbolic link, with at
/// most four file descriptors open however deep the tree: it descends one directory at a
/// time, closing the one above, and climbs back through `..`, checking at each level that
/// it is the directory it came from (by device and inode). Meant for trees nothing else
/// changes any more (the sandbox that made it is gone); a directory moved meanwhile stops
/// it with `ESTALE` rather than letting it climb anywhere else, and a mount point below
/// `name` with `EBUSY`, before anything in that other file system is touched.
pub fn remove_tree_at(parent: BorrowedFd<'_>, name: &Path) -> rustix::io::Result<()> {
    let name = CString::new(std::os::unix::ffi::OsStrExt::as_bytes(name.as_os_str()))
        .map_err(|_| Errno::INVAL)?;
    let mut cur = match open_dir(parent, &name) {
        Ok(fd) => fd,
        Err(Errno::NOENT) => return Ok(()),
        Err(Errno::NOTDIR) | Err(Errno::LOOP) => {
            return match rfs::unlinkat(parent, &name, AtFlags::empty()) {
                Err(Errno::NOENT) => Ok(()),
                r => r,
            }
        }
        Err(e) => return Err(e),
    };
    // (device, inode) of each directory above `cur`, the tree's top first.
    let mut above: Vec<(u64, u64)> = Vec::new();
    loop {
        match sweep(&cur)? {
            Pass::Sub(sub) => {
                let child = match open_dir(cur.as_fd(), &sub) {
                    Ok(fd) => fd,
                    // Gone or replaced meanwhile: sweep again.
                    Err(Errno::NOENT) | Err(Errno::NOTDIR) | Err(Errno::LOOP) => continue,
                    Err(e) => return Err(e),
                };
                let st = rfs::fstat(&cur)?;
                if rfs::fstat(&child)?.st_dev != st.st_dev {
                    // A mount point: never empty a file system it was not asked to.
                    return Err(Errno::BUSY);
                }
                above.push((st.st_dev, st.st_ino));
                cur = child;
            }
            Pass::Empty => {
                let Some((dev, ino)) = above.pop() else {
                    break;
                };
                let here = rfs::fstat(&cur)?;
                let up = open_dir(cur.as_fd(), c"..")?;
                let st = rfs::fstat(&up)?;
                if (st.st_dev, st.st_ino) != (dev, ino) {
                    return Err(Errno::STALE);
                }
                // Gone from `up` meanwhile, it would never be found again: stop.
                let n = name_of(&up, here.st_ino)?.ok_or(Errno::STALE)?;
                match rfs::unlinkat(&up, &n, AtFlags::REMOVEDIR) {
                    Ok(()) | Err(Errno::NOENT) => {}
                    Err(e) => return Err(e),
                }
                cur = up;
            }
        }
    }
    drop(cur);
    match rfs::unlinkat(parent, &name, AtFlags::REMOVEDIR) {
        Err(Errno::NOENT) => Ok(()),
        r => r,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fds() -> usize {
        std::fs::read_dir("/proc/self/fd").unwrap().count()
    }

    #[test]
    fn removes_a_deep_tree_with_few_fds() {
        let tmp = tempfile::tempdir().unwrap();
        let top = tmp.path().join("top");
        std::fs::create_dir(&top).unwrap();
        // 3000 levels, with files, a symlink out and a FIFO on the way.
        let outside = tmp.path().join("outside");
        std::fs::write(&outside, b"keep").unwrap();
        let mut fd = rfs::open(&top, OFlags::PATH | OFlags::DIRECTORY, Mode::empty()).unwrap();
        for i in 0..3000 {
            if i % 500 == 0 {
                let f = rfs::openat(
                    &fd,
                    "f",
                    OFlags::CREATE | OFlags::WRONLY,
                    Mode::from_raw_mode(0o600),
                );
                drop(f);
                rfs::symlinkat(&outside, &fd, "link").unwrap();
            }
            rfs::mkdirat(&fd, "d", Mode::RWXU).unwrap();
            fd = rfs::openat(&fd, "d", OFlags::PATH | OFlags::DIRECTORY, Mode::empty()).unwrap();
        }
        drop(fd);
        let before = fds();
        remove_tree(&top).unwrap();
        assert!(fds() <= before, "fds leaked");
        assert!(!top.exists(), "the tree is left");
        assert_eq!(
            std::fs::read(&outside).unwrap(),
            b"keep",
            "followed a symlink out"
        );
    }

    #[test]
    fn missing_and_plain_files() {
        let tmp = tempfile::tempdir().unwrap();
        remove_tree(&tmp.path().join("none")).unwrap();
        let f = tmp.path().join("file");
        std::fs::write(&f, b"x").unwrap();
        remove_tree(&f).unwrap();
        assert!(!f.exists());
    }
}
