//! Safe translation of socket addresses across the sandbox boundary.
//!
//! The plugin and the host share one directory: the host's `host_dir` is bind-mounted at
//! [`SANDBOX_SOCKET_DIR`] inside the sandbox, and the plugin's `PLUGIN_UNIX_SOCKET_DIR`
//! points there. The plugin creates its listening socket in it and announces the sandbox path
//! in its handshake; [`SocketDir::plugin_to_host`] turns that path into one the host can
//! `connect()` to.
//!
//! # Not a confused deputy
//!
//! The plugin controls both the address string and the contents of the shared directory, so a
//! translation that checks a path and later lets the host connect *by that path* can be
//! steered: announce `/run/plugin-sockets/../../var/run/docker.sock`, or make `plugin.sock` a
//! symlink to a socket only the host can reach, or swap the real socket for such a symlink
//! right after the check. The translation therefore:
//!
//! 1. accepts only `<sandbox_dir>/<name>` with `name` one plain component (no `/`, `.`, `..`,
//!    NUL), with both the announced and the resulting path fitting `sun_path`;
//! 2. resolves `name` under a directory fd held since creation, with `openat2(O_PATH |
//!    O_NOFOLLOW, RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS |
//!    RESOLVE_NO_XDEV)` (falling back to `openat(O_PATH | O_NOFOLLOW)`), and `fstat`s that fd:
//!    it must be a socket, never a symlink, file, directory or FIFO;
//! 3. pins the *verified inode* at a path the plugin cannot touch: a hard link made from the
//!    fd itself (`linkat(fd, "", AT_EMPTY_PATH)`, or `linkat("/proc/self/fd/N",
//!    AT_SYMLINK_FOLLOW)` without `CAP_DAC_READ_SEARCH`) into `links_dir`, a host-only `0700`
//!    directory that is not mounted in the sandbox, under a fresh unique name;
//! 4. `lstat`s the returned path and checks that its device and inode are the verified ones.
//!
//! Whatever the plugin does to its directory afterwards, the returned path names the inode
//! that was checked; connecting to a hard link of a bound unix socket reaches its listener.
//!
//! Hard-linking a socket the host does not own needs `CAP_FOWNER` when
//! `fs.protected_hardlinks=1` (the default): a non-root host must run the plugin under its
//! own uid, else the translation fails with [`AddrError::Io`] and a hint.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;

use rustix::fs::{self as rfs, AtFlags, FileType, Mode, OFlags, ResolveFlags, Stat, CWD};
use rustix::io::Errno;

use crate::error::AddrError;
use crate::runner::AddrTranslator;

/// The fixed path at which the sandbox sees the shared socket directory; the plugin's
/// `PLUGIN_UNIX_SOCKET_DIR` is set to it.
pub const SANDBOX_SOCKET_DIR: &str = "/run/plugin-sockets";

/// The longest unix socket path, in bytes: `sun_path` is 108 bytes including the final NUL.
pub const MAX_SOCKET_PATH: usize = 107;

/// Room reserved for the unique names of links in `links_dir` (see `next_link_name`): a pid
/// (at most `0x400000`, 6 hex digits), a `u64` counter (16) and nanoseconds (8), with two
/// dashes.
const LINK_NAME_MAX: usize = 32;

/// Why a [`SocketDir`] could not be created, opened or removed.
#[derive(Debug, thiserror::Error)]
pub enum SocketDirError {
    /// A system call on a path failed.
    #[error("{op} {}: {source}", path.display())]
    Io {
        /// What was being done (`create directory`, `open`, ...).
        op: &'static str,
        /// The path concerned.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A directory is not acceptable for the role given to it.
    #[error("socket directory {}: {why}", path.display())]
    Invalid {
        /// The path concerned.
        path: PathBuf,
        /// What is wrong and what to do.
        why: String,
    },
}

fn io_err(op: &'static str, path: &Path, e: Errno) -> SocketDirError {
    SocketDirError::Io {
        op,
        path: path.to_owned(),
        source: e.into(),
    }
}

fn invalid(path: &Path, why: impl Into<String>) -> SocketDirError {
    SocketDirError::Invalid {
        path: path.to_owned(),
        why: why.into(),
    }
}

/// What [`SocketDir::create`] made, and so what [`SocketDir::remove`] deletes.
#[derive(Debug)]
struct Created {
    /// `O_PATH` fd of the directory holding `sock` and `links`.
    parent_fd: OwnedFd,
    /// That directory, for error messages.
    parent: PathBuf,
    /// The directory [`SocketDir::create_in`] made for them, if it did.
    top: Option<Top>,
}

/// A directory made by [`SocketDir::create_in`], with a tmpfs mounted on it or not.
#[derive(Debug)]
struct Top {
    /// `O_PATH` fd of its parent.
    up_fd: OwnedFd,
    /// Its name in that parent.
    name: std::ffi::OsString,
    /// Its path, to unmount and for error messages.
    path: PathBuf,
    /// Whether a tmpfs is mounted on it.
    mounted: bool,
}

/// The socket directory shared with one sandbox, and the translator of its addresses.
///
/// Built with [`SocketDir::create`] (the runner makes and later deletes the directories) or
/// [`SocketDir::open_existing`] (the host chose `PLUGIN_UNIX_SOCKET_DIR`; it owns and cleans
/// the directories). It implements [`AddrTranslator`].
#[derive(Debug)]
pub struct SocketDir {
    host_dir: String,
    sandbox_dir: String,
    links_dir: String,
    /// `O_PATH | O_DIRECTORY` fd of `host_dir`, held from construction.
    host_fd: OwnedFd,
    /// `O_PATH | O_DIRECTORY` fd of `links_dir`, held from construction.
    links_fd: OwnedFd,
    created: Option<Created>,
    share_host_network: bool,
    cleanup_on_drop: bool,
    removed: AtomicBool,
    counter: AtomicU64,
    /// Names of the links this value made in `links_dir`.
    links: Mutex<Vec<String>>,
}

fn open_path_dir(
    dirfd: BorrowedFd<'_>,
    name: &Path,
    shown: &Path,
) -> Result<OwnedFd, SocketDirError> {
    rfs::openat(
        dirfd,
        name,
        OFlags::PATH | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| io_err("open directory", shown, e))
}

/// Opens a readable fd of the directory behind an `O_PATH` fd (for `fchmod`, `fchown`,
/// `getdents`): `openat(fd, ".")` reaches the same inode whatever happened to its path.
fn reopen_dir(fd: BorrowedFd<'_>) -> rustix::io::Result<OwnedFd> {
    rfs::openat(
        fd,
        ".",
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
}

fn to_utf8(path: &Path) -> Result<String, SocketDirError> {
    path.to_str()
        .map(str::to_owned)
        .ok_or_else(|| invalid(path, "the path is not valid UTF-8; choose a UTF-8 path"))
}

fn same_inode(a: &Stat, b: &Stat) -> bool {
    a.st_dev == b.st_dev && a.st_ino == b.st_ino
}

fn describe(ft: FileType) -> &'static str {
    match ft {
        FileType::RegularFile => "a regular file",
        FileType::Directory => "a directory",
        FileType::Symlink => "a symbolic link",
        FileType::Fifo => "a FIFO",
        FileType::Socket => "a socket",
        FileType::CharacterDevice => "a character device",
        FileType::BlockDevice => "a block device",
        FileType::Unknown => "a file of unknown type",
    }
}

/// Checks a path given for `sandbox_dir`: absolute, normalized, short enough.
fn check_dir_string(dir: &str) -> Result<(), String> {
    if !dir.starts_with('/') {
        return Err("must be an absolute path".into());
    }
    if dir.len() > 1 && dir.ends_with('/') {
        return Err("must not end with '/'".into());
    }
    if dir.contains('\0') {
        return Err("must not contain a NUL byte".into());
    }
    if dir
        .split('/')
        .skip(1)
        .any(|c| c.is_empty() || c == "." || c == "..")
    {
        return Err("must be normalized (no empty, '.' or '..' components)".into());
    }
    if dir.len() + 2 > MAX_SOCKET_PATH {
        return Err(format!(
            "is too long to hold a socket path of at most {MAX_SOCKET_PATH} bytes"
        ));
    }
    Ok(())
}

/// Splits `addr` as `<dir>/<name>` and validates `name` as one plain file name.
fn split_name<'a>(addr: &'a str, dir: &str) -> Result<&'a str, AddrError> {
    let name = addr
        .strip_prefix(dir)
        .and_then(|rest| rest.strip_prefix('/'))
        .ok_or_else(|| AddrError::OutsideSocketDir {
            addr: addr.to_owned(),
            dir: dir.to_owned(),
        })?;
    let bad = |why| AddrError::BadName {
        addr: addr.to_owned(),
        why,
    };
    if name.contains('\0') {
        return Err(bad("contains a NUL byte"));
    }
    if name.is_empty() {
        return Err(bad("is empty"));
    }
    if name == "." || name == ".." {
        return Err(bad("is '.' or '..'"));
    }
    if name.contains('/') {
        if name.split('/').any(|c| c == "..") {
            return Err(bad("contains a '..' component (path traversal)"));
        }
        return Err(bad("contains '/' (a nested path)"));
    }
    if addr.len() > MAX_SOCKET_PATH {
        return Err(AddrError::TooLong {
            path: addr.to_owned(),
            len: addr.len(),
            max: MAX_SOCKET_PATH,
        });
    }
    Ok(name)
}

/// Returns `true` when the directory of `inner` is `outer` or below it (walking `..`).
fn is_within(inner: BorrowedFd<'_>, outer: &Stat) -> rustix::io::Result<bool> {
    let mut cur = rfs::fstat(inner)?;
    let mut fd: Option<OwnedFd> = None;
    for _ in 0..4096 {
        if same_inode(&cur, outer) {
            return Ok(true);
        }
        let parent = rfs::openat(
            fd.as_ref().map_or(inner, |f| f.as_fd()),
            "..",
            OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        let pst = rfs::fstat(&parent)?;
        if same_inode(&pst, &cur) {
            return Ok(false); // reached "/"
        }
        cur = pst;
        fd = Some(parent);
    }
    Ok(false)
}

impl SocketDir {
    /// Creates the socket directories of one sandbox under `parent` (which must exist):
    ///
    /// - `<parent>/sock`, the directory bind-mounted into the sandbox: mode `0700`, or, when
    ///   `group` is given, group-owned by that gid with mode `0770` (like go-plugin's
    ///   `PLUGIN_UNIX_SOCKET_GROUP`);
    /// - `<parent>/links`, the host-only directory of verified links: mode `0700`.
    ///
    /// Both must not exist yet. [`SocketDir::remove`] (or drop) deletes them.
    pub fn create(parent: &Path, group: Option<u32>) -> Result<SocketDir, SocketDirError> {
        let parent = std::fs::canonicalize(parent).map_err(|source| SocketDirError::Io {
            op: "resolve",
            path: parent.to_owned(),
            source,
        })?;
        let parent_fd = open_path_dir(CWD, &parent, &parent)?;
        Self::make(parent_fd, parent, group, None)
    }

    /// Creates `dir` (whose parent must exist and which must not), mode `0711`, optionally
    /// mounts a tmpfs with `limits` on it (see [`crate::sockfs`]: `nosuid,nodev,noexec,
    /// nosymfollow`; needs `CAP_SYS_ADMIN`), and makes `sock` and `links` in it as
    /// [`create`](Self::create) does. The socket directory is `<dir>/sock`, and the sandbox
    /// sees it at that same path unless [`with_sandbox_dir`](Self::with_sandbox_dir) says
    /// otherwise. [`SocketDir::remove`] (or drop) unmounts and removes `dir`.
    pub fn create_in(
        dir: &Path,
        group: Option<u32>,
        limits: Option<crate::sockfs::TmpfsLimits>,
    ) -> Result<SocketDir, SocketDirError> {
        let (Some(up), Some(name)) = (dir.parent(), dir.file_name()) else {
            return Err(invalid(
                dir,
                "must be an absolute path with a parent directory",
            ));
        };
        if !dir.is_absolute() {
            return Err(invalid(dir, "must be an absolute path"));
        }
        let up_fd = open_path_dir(CWD, up, up)?;
        rfs::mkdirat(&up_fd, name, Mode::from_raw_mode(0o711))
            .map_err(|e| io_err("create directory", dir, e))?;
        let mut top = Top {
            up_fd,
            name: name.to_owned(),
            path: dir.to_owned(),
            mounted: false,
        };
        let fail = |top: &Top, e: SocketDirError| {
            if top.mounted {
                let _ = crate::sockfs::unmount(&top.path);
            }
            let _ = rfs::unlinkat(&top.up_fd, top.name.as_os_str(), AtFlags::REMOVEDIR);
            e
        };
        // mkdir applies the umask: the plugin must be able to pass through.
        if let Err(e) = open_path_dir(top.up_fd.as_fd(), name.as_ref(), dir).and_then(|fd| {
            let rd = reopen_dir(fd.as_fd()).map_err(|e| io_err("open directory", dir, e))?;
            rfs::fchmod(&rd, Mode::from_raw_mode(0o711))
                .map_err(|e| io_err("change mode of", dir, e))
        }) {
            return Err(fail(&top, e));
        }
        if let Some(limits) = limits {
            if let Err(source) = crate::sockfs::mount(dir, limits) {
                return Err(fail(
                    &top,
                    SocketDirError::Io {
                        op: "mount a tmpfs on",
                        path: dir.to_owned(),
                        source,
                    },
                ));
            }
            top.mounted = true;
        }
        let parent_fd = match open_path_dir(top.up_fd.as_fd(), name.as_ref(), dir) {
            Ok(fd) => fd,
            Err(e) => return Err(fail(&top, e)),
        };
        let path = dir.to_owned();
        match Self::make(parent_fd, path, group, None) {
            Ok(mut sd) => {
                if let Some(c) = sd.created.as_mut() {
                    c.top = Some(top);
                }
                sd.sandbox_dir = sd.host_dir.clone();
                Ok(sd)
            }
            Err(e) => Err(fail(&top, e)),
        }
    }

    fn make(
        parent_fd: OwnedFd,
        parent: PathBuf,
        group: Option<u32>,
        top: Option<Top>,
    ) -> Result<SocketDir, SocketDirError> {
        let host_path = parent.join("sock");
        let links_path = parent.join("links");
        let host_dir = to_utf8(&host_path)?;
        let links_dir = to_utf8(&links_path)?;
        check_links_len(&links_dir, &links_path)?;

        let make = |name: &str, path: &Path| -> Result<OwnedFd, SocketDirError> {
            rfs::mkdirat(&parent_fd, name, Mode::RWXU)
                .map_err(|e| io_err("create directory", path, e))?;
            open_path_dir(parent_fd.as_fd(), Path::new(name), path)
        };
        let host_fd = make("sock", &host_path)?;
        let links_fd = match make("links", &links_path) {
            Ok(fd) => fd,
            Err(e) => {
                let _ = rfs::unlinkat(&parent_fd, "sock", AtFlags::REMOVEDIR);
                return Err(e);
            }
        };
        let dir = SocketDir {
            host_dir,
            sandbox_dir: SANDBOX_SOCKET_DIR.to_owned(),
            links_dir,
            host_fd,
            links_fd,
            created: Some(Created {
                parent_fd,
                parent: parent.clone(),
                top,
            }),
            share_host_network: false,
            cleanup_on_drop: true,
            removed: AtomicBool::new(false),
            counter: AtomicU64::new(0),
            links: Mutex::new(Vec::new()),
        };
        // From here on, an error drops `dir`, which removes both directories.
        let setmode = |fd: &OwnedFd, path: &Path, mode: u32, gid: Option<u32>| {
            let rd = reopen_dir(fd.as_fd()).map_err(|e| io_err("open directory", path, e))?;
            if let Some(gid) = gid {
                rfs::fchown(&rd, None, Some(rustix::fs::Gid::from_raw(gid)))
                    .map_err(|e| io_err("change group of", path, e))?;
            }
            rfs::fchmod(&rd, Mode::from_raw_mode(mode))
                .map_err(|e| io_err("change mode of", path, e))
        };
        match group {
            Some(gid) => setmode(&dir.host_fd, &host_path, 0o770, Some(gid))?,
            None => setmode(&dir.host_fd, &host_path, 0o700, None)?,
        }
        setmode(&dir.links_fd, &links_path, 0o700, None)?;
        Ok(dir)
    }

    /// Uses directories the host chose: `host_dir` (its `PLUGIN_UNIX_SOCKET_DIR`, to be
    /// bind-mounted into the sandbox) and `links_dir`, a host-only directory on the same
    /// filesystem for the verified links.
    ///
    /// `links_dir` must be owned by the effective uid, writable by nobody else, and neither
    /// `host_dir` nor below it. Both directories stay the caller's: [`SocketDir::remove`]
    /// deletes only the links this value made.
    pub fn open_existing(host_dir: &Path, links_dir: &Path) -> Result<SocketDir, SocketDirError> {
        let canon = |p: &Path| {
            std::fs::canonicalize(p).map_err(|source| SocketDirError::Io {
                op: "resolve",
                path: p.to_owned(),
                source,
            })
        };
        let host_path = canon(host_dir)?;
        let links_path = canon(links_dir)?;
        let host_s = to_utf8(&host_path)?;
        let links_s = to_utf8(&links_path)?;
        check_links_len(&links_s, &links_path)?;
        let host_fd = open_path_dir(CWD, &host_path, &host_path)?;
        let links_fd = open_path_dir(CWD, &links_path, &links_path)?;
        let hst = rfs::fstat(&host_fd).map_err(|e| io_err("stat", &host_path, e))?;
        let lst = rfs::fstat(&links_fd).map_err(|e| io_err("stat", &links_path, e))?;
        if lst.st_uid != rustix::process::geteuid().as_raw() || lst.st_mode & 0o022 != 0 {
            return Err(invalid(
                &links_path,
                "the links directory must be owned by the host's user and writable by no one \
                 else (mode 0700)",
            ));
        }
        if hst.st_dev != lst.st_dev {
            return Err(invalid(
                &links_path,
                format!(
                    "the links directory must be on the same filesystem as {host_s} (hard \
                     links cannot cross filesystems)"
                ),
            ));
        }
        if is_within(links_fd.as_fd(), &hst).map_err(|e| io_err("walk up from", &links_path, e))? {
            return Err(invalid(
                &links_path,
                format!(
                    "the links directory must not be {host_s} or inside it: the plugin controls \
                     that directory"
                ),
            ));
        }
        Ok(SocketDir {
            host_dir: host_s,
            sandbox_dir: SANDBOX_SOCKET_DIR.to_owned(),
            links_dir: links_s,
            host_fd,
            links_fd,
            created: None,
            share_host_network: false,
            cleanup_on_drop: true,
            removed: AtomicBool::new(false),
            counter: AtomicU64::new(0),
            links: Mutex::new(Vec::new()),
        })
    }

    /// Sets the path at which the sandbox sees `host_dir` (default [`SANDBOX_SOCKET_DIR`]).
    ///
    /// It must be absolute and normalized (no trailing `/`, `.`, `..` or empty components).
    pub fn with_sandbox_dir(mut self, sandbox_dir: &str) -> Result<SocketDir, SocketDirError> {
        check_dir_string(sandbox_dir).map_err(|why| {
            invalid(
                Path::new(sandbox_dir),
                format!("the sandbox socket directory {why}"),
            )
        })?;
        self.sandbox_dir = sandbox_dir.to_owned();
        Ok(self)
    }

    /// Says whether the sandbox shares the host's network namespace. Only then are `tcp`,
    /// `tcp4` and `tcp6` addresses passed through unchanged; otherwise they are refused.
    pub fn with_host_network(mut self, shared: bool) -> SocketDir {
        self.share_host_network = shared;
        self
    }

    /// Whether dropping this value removes what it made (default `true`). A detached
    /// sandbox, whose translated paths must outlive this process, turns it off.
    pub fn set_cleanup_on_drop(&mut self, cleanup: bool) {
        self.cleanup_on_drop = cleanup;
    }

    /// The host directory shared with the sandbox (bind-mount source).
    pub fn host_dir(&self) -> &Path {
        Path::new(&self.host_dir)
    }

    /// The path at which the sandbox sees [`host_dir`](Self::host_dir): the value for the
    /// plugin's `PLUGIN_UNIX_SOCKET_DIR` and the bind-mount destination.
    pub fn sandbox_dir(&self) -> &str {
        &self.sandbox_dir
    }

    /// The host-only directory holding the verified links handed to the host.
    pub fn links_dir(&self) -> &Path {
        Path::new(&self.links_dir)
    }

    /// Whether `tcp` addresses pass through (see [`with_host_network`](Self::with_host_network)).
    pub fn shares_host_network(&self) -> bool {
        self.share_host_network
    }

    fn tcp(&self, network: &str, addr: &str) -> Result<(String, String), AddrError> {
        if self.share_host_network {
            Ok((network.to_owned(), addr.to_owned()))
        } else {
            Err(AddrError::Unsupported {
                network: network.to_owned(),
                why: "the sandbox has its own network namespace, so its TCP ports are not \
                      reachable from the host; the plugin must listen on a unix socket in \
                      PLUGIN_UNIX_SOCKET_DIR, or the profile must share the host network"
                    .to_owned(),
            })
        }
    }

    fn unsupported(network: &str) -> AddrError {
        AddrError::Unsupported {
            network: network.to_owned(),
            why: "only 'unix' (and 'tcp' with a shared network) are supported".to_owned(),
        }
    }

    /// Maps an address announced by the plugin to one the host can connect to.
    ///
    /// For `unix`, `addr` must be `<sandbox_dir>/<name>` and name a socket (not a symlink);
    /// the result is a fresh hard link of that verified socket inode in
    /// [`links_dir`](Self::links_dir), which the plugin cannot replace. See the module
    /// documentation for the whole procedure. `tcp` passes through only with a shared
    /// network.
    pub fn plugin_to_host(&self, network: &str, addr: &str) -> Result<(String, String), AddrError> {
        match network {
            "unix" => self
                .unix_plugin_to_host(addr)
                .map(|p| ("unix".to_owned(), p)),
            "tcp" | "tcp4" | "tcp6" => self.tcp(network, addr),
            _ => Err(Self::unsupported(network)),
        }
    }

    /// Maps a host address (for example a listener of go-plugin's broker) to one the plugin
    /// can reach: a unix path directly inside [`host_dir`](Self::host_dir) becomes
    /// `<sandbox_dir>/<name>`, with the same name checks as
    /// [`plugin_to_host`](Self::plugin_to_host). `tcp` passes through only with a shared
    /// network.
    pub fn host_to_plugin(&self, network: &str, addr: &str) -> Result<(String, String), AddrError> {
        match network {
            "unix" => {
                let name = split_name(addr, &self.host_dir)?;
                let path = format!("{}/{}", self.sandbox_dir, name);
                if path.len() > MAX_SOCKET_PATH {
                    return Err(AddrError::TooLong {
                        len: path.len(),
                        path,
                        max: MAX_SOCKET_PATH,
                    });
                }
                Ok(("unix".to_owned(), path))
            }
            "tcp" | "tcp4" | "tcp6" => self.tcp(network, addr),
            _ => Err(Self::unsupported(network)),
        }
    }

    fn unix_plugin_to_host(&self, addr: &str) -> Result<String, AddrError> {
        let name = split_name(addr, &self.sandbox_dir)?;
        let sys = |op: String, e: Errno, hint: &'static str| AddrError::Io {
            addr: addr.to_owned(),
            op,
            errno: e.raw_os_error(),
            hint,
        };

        // 1. Open the final component under the held directory fd, never following links.
        let oflags = OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC;
        let resolve = ResolveFlags::BENEATH
            | ResolveFlags::NO_SYMLINKS
            | ResolveFlags::NO_MAGICLINKS
            | ResolveFlags::NO_XDEV;
        let opened = match rfs::openat2(&self.host_fd, name, oflags, Mode::empty(), resolve) {
            // ENOSYS: kernel before 5.6; EPERM: a seccomp policy that does not know openat2.
            // For a single component, O_PATH | O_NOFOLLOW gives the same guarantee.
            Err(Errno::NOSYS) | Err(Errno::PERM) => {
                rfs::openat(&self.host_fd, name, oflags, Mode::empty())
            }
            r => r,
        };
        let fd = match opened {
            Ok(fd) => fd,
            Err(Errno::NOENT) => {
                return Err(AddrError::NotFound {
                    addr: addr.to_owned(),
                })
            }
            Err(Errno::LOOP) => {
                return Err(AddrError::Symlink {
                    addr: addr.to_owned(),
                })
            }
            Err(e) => return Err(sys(format!("open {}/{}", self.host_dir, name), e, "")),
        };

        // 2. What we opened must be a socket.
        let st =
            rfs::fstat(&fd).map_err(|e| sys(format!("fstat {}/{}", self.host_dir, name), e, ""))?;
        match FileType::from_raw_mode(st.st_mode) {
            FileType::Socket => {}
            FileType::Symlink => {
                return Err(AddrError::Symlink {
                    addr: addr.to_owned(),
                })
            }
            other => {
                return Err(AddrError::NotSocket {
                    addr: addr.to_owned(),
                    kind: describe(other),
                })
            }
        }

        // 3. Pin the verified inode at a host-only path under a fresh name.
        let mut attempts = 0;
        let (link_name, host_path) = loop {
            attempts += 1;
            let link_name = self.next_link_name();
            let host_path = format!("{}/{}", self.links_dir, link_name);
            if host_path.len() > MAX_SOCKET_PATH {
                return Err(AddrError::TooLong {
                    len: host_path.len(),
                    path: host_path,
                    max: MAX_SOCKET_PATH,
                });
            }
            match self.link_fd(&fd, &link_name) {
                Ok(()) => break (link_name, host_path),
                Err(Errno::EXIST) if attempts < 16 => continue,
                Err(Errno::NOENT) if matches!(rfs::fstat(&fd), Ok(s) if s.st_nlink == 0) => {
                    return Err(AddrError::Changed {
                        addr: addr.to_owned(),
                        why: "the socket was removed right after it was checked".to_owned(),
                    })
                }
                Err(e) => {
                    let hint = match e {
                        Errno::PERM => {
                            "; fs.protected_hardlinks forbids linking a socket owned by another \
                             user: run the plugin under the host's uid or give the host \
                             CAP_FOWNER"
                        }
                        Errno::XDEV => {
                            "; the socket directory and the links directory must be on the \
                             same mount"
                        }
                        Errno::NOENT => "; /proc must be mounted to link an O_PATH fd",
                        _ => "",
                    };
                    return Err(sys(format!("link it as {host_path}"), e, hint));
                }
            }
        };

        // 4. The path handed out must lead to the verified inode, and be a socket.
        let ok = match rfs::statat(CWD, host_path.as_str(), AtFlags::SYMLINK_NOFOLLOW) {
            Ok(ls) => {
                same_inode(&ls, &st) && FileType::from_raw_mode(ls.st_mode) == FileType::Socket
            }
            Err(_) => false,
        };
        if !ok {
            let _ = rfs::unlinkat(&self.links_fd, link_name.as_str(), AtFlags::empty());
            return Err(AddrError::Changed {
                addr: addr.to_owned(),
                why: format!(
                    "the pinned path {host_path} does not lead to the verified socket (was {} \
                     moved?)",
                    self.links_dir
                ),
            });
        }
        if let Ok(mut links) = self.links.lock() {
            links.push(link_name);
        }
        Ok(host_path)
    }

    /// Hard-links the inode behind the `O_PATH` fd as `links_dir/name`.
    fn link_fd(&self, fd: &OwnedFd, name: &str) -> rustix::io::Result<()> {
        match rfs::linkat(fd, "", &self.links_fd, name, AtFlags::EMPTY_PATH) {
            // Without CAP_DAC_READ_SEARCH (kernels before 6.10, or an fd opened with other
            // credentials), AT_EMPTY_PATH fails with ENOENT; following the fd's magic link
            // in /proc needs no capability.
            Err(Errno::NOENT) | Err(Errno::PERM) => link_via_proc(fd, &self.links_fd, name),
            r => r,
        }
    }

    /// A name not used before by this value: `<pid>-<counter>-<time>` in hex, at most
    /// [`LINK_NAME_MAX`] bytes. Collisions with other processes are caught by `EEXIST`.
    fn next_link_name(&self) -> String {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        format!("{:x}-{:x}-{:x}", std::process::id(), n, nanos)
    }

    /// Deletes what this value made: for [`create`](Self::create), both directories and
    /// everything in them (without following any symlink the plugin left); for
    /// [`open_existing`](Self::open_existing), only the links it made. Idempotent.
    pub fn remove(&self) -> Result<(), SocketDirError> {
        if self.removed.swap(true, Ordering::SeqCst) {
            return Ok(());
        }
        let links = self
            .links
            .lock()
            .map(|mut l| std::mem::take(&mut *l))
            .unwrap_or_default();
        match &self.created {
            Some(Created { top: Some(top), .. }) if top.mounted => {
                // Whatever the plugin made in it goes with the file system.
                crate::sockfs::unmount(&top.path).map_err(|source| SocketDirError::Io {
                    op: "unmount",
                    path: top.path.clone(),
                    source,
                })?;
                match rfs::unlinkat(&top.up_fd, top.name.as_os_str(), AtFlags::REMOVEDIR) {
                    Ok(()) | Err(Errno::NOENT) => Ok(()),
                    Err(e) => Err(io_err("remove", &top.path, e)),
                }
            }
            Some(c) => {
                let rm = |name: &str| {
                    crate::sockfs::remove_tree_at(c.parent_fd.as_fd(), Path::new(name))
                        .map_err(|e| io_err("remove", &c.parent.join(name), e))
                };
                let r1 = rm("links");
                let r2 = rm("sock");
                let r3 = match &c.top {
                    Some(top) if r1.is_ok() && r2.is_ok() => {
                        match rfs::unlinkat(&top.up_fd, top.name.as_os_str(), AtFlags::REMOVEDIR) {
                            Ok(()) | Err(Errno::NOENT) => Ok(()),
                            Err(e) => Err(io_err("remove", &top.path, e)),
                        }
                    }
                    _ => Ok(()),
                };
                r1.and(r2).and(r3)
            }
            None => {
                let mut result = Ok(());
                for name in links {
                    match rfs::unlinkat(&self.links_fd, name.as_str(), AtFlags::empty()) {
                        Ok(()) | Err(Errno::NOENT) => {}
                        Err(e) => {
                            if result.is_ok() {
                                result = Err(io_err(
                                    "remove",
                                    &Path::new(&self.links_dir).join(&name),
                                    e,
                                ));
                            }
                        }
                    }
                }
                result
            }
        }
    }
}

/// `linkat("/proc/self/fd/N", AT_SYMLINK_FOLLOW)`: links the inode behind `fd` as
/// `dir/name` (documented for `O_PATH` fds in open(2)).
fn link_via_proc(fd: &OwnedFd, dir: &OwnedFd, name: &str) -> rustix::io::Result<()> {
    let proc_path = format!("/proc/self/fd/{}", fd.as_raw_fd());
    rfs::linkat(CWD, proc_path.as_str(), dir, name, AtFlags::SYMLINK_FOLLOW)
}

fn check_links_len(links_dir: &str, path: &Path) -> Result<(), SocketDirError> {
    if links_dir.len() + 1 + LINK_NAME_MAX > MAX_SOCKET_PATH {
        return Err(invalid(
            path,
            format!(
                "the links directory path is {} bytes; with a link name it would not fit a unix \
                 socket address ({MAX_SOCKET_PATH} bytes): choose a shorter directory",
                links_dir.len()
            ),
        ));
    }
    Ok(())
}

impl Drop for SocketDir {
    fn drop(&mut self) {
        if self.cleanup_on_drop {
            let _ = self.remove();
        }
    }
}

impl AddrTranslator for SocketDir {
    fn plugin_to_host(&self, network: &str, addr: &str) -> Result<(String, String), AddrError> {
        SocketDir::plugin_to_host(self, network, addr)
    }

    fn host_to_plugin(&self, network: &str, addr: &str) -> Result<(String, String), AddrError> {
        SocketDir::host_to_plugin(self, network, addr)
    }
}

/// Translation when no socket directory is shared: tcp passes only with the host network.
pub(crate) fn translate_shared(
    host_network: bool,
    network: &str,
    addr: &str,
) -> Result<(String, String), AddrError> {
    let private_net = !host_network;
    match network {
        "tcp" | "tcp4" | "tcp6" if !private_net => Ok((network.into(), addr.into())),
        "tcp" | "tcp4" | "tcp6" => Err(AddrError::Unsupported {
            network: network.into(),
            why: "the sandbox has its own network namespace; its loopback is not the host's".into(),
        }),
        "unix" => Err(AddrError::Refused {
            addr: addr.into(),
            why: "this sandbox shares no socket directory with the host".into(),
        }),
        other => Err(AddrError::Unsupported {
            network: other.into(),
            why: "only unix and tcp addresses are known".into(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::{UnixListener, UnixStream};

    fn open_o_path(dir: &Path, name: &str) -> (OwnedFd, OwnedFd) {
        let dfd = open_path_dir(CWD, dir, dir).expect("open dir");
        let fd = rfs::openat(
            &dfd,
            name,
            OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .expect("open socket");
        (dfd, fd)
    }

    /// The fallback used without `CAP_DAC_READ_SEARCH` pins a connectable socket too.
    #[test]
    fn proc_fallback_links_a_connectable_socket() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let listener = UnixListener::bind(tmp.path().join("s")).expect("bind");
        let (dfd, fd) = open_o_path(tmp.path(), "s");
        link_via_proc(&fd, &dfd, "pinned").expect("link via /proc");
        let _c = UnixStream::connect(tmp.path().join("pinned")).expect("connect");
        listener.accept().expect("accept");
        let a = rfs::fstat(&fd).expect("fstat");
        let b = rfs::statat(&dfd, "pinned", AtFlags::SYMLINK_NOFOLLOW).expect("lstat");
        assert!(same_inode(&a, &b));
    }

    /// A socket unlinked after it was opened cannot be pinned: both ways fail with ENOENT,
    /// which the translation reports as `Changed`.
    #[test]
    fn unlinked_socket_cannot_be_pinned() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let _listener = UnixListener::bind(tmp.path().join("s")).expect("bind");
        let (dfd, fd) = open_o_path(tmp.path(), "s");
        std::fs::remove_file(tmp.path().join("s")).expect("unlink");
        assert_eq!(link_via_proc(&fd, &dfd, "p1"), Err(Errno::NOENT));
        assert_eq!(
            rfs::linkat(&fd, "", &dfd, "p2", AtFlags::EMPTY_PATH),
            Err(Errno::NOENT)
        );
    }

    #[test]
    fn split_name_cases() {
        assert_eq!(split_name("/d/x", "/d"), Ok("x"));
        assert!(matches!(
            split_name("/dx", "/d"),
            Err(AddrError::OutsideSocketDir { .. })
        ));
        assert!(matches!(
            split_name("/d/../x", "/d"),
            Err(AddrError::BadName { .. })
        ));
        assert!(check_dir_string("/run/plugin-sockets").is_ok());
        assert!(check_dir_string("/").is_err());
    }
}
