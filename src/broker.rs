//! Brokered connect (`[sockets] broker`): the host side of go-plugin's non-multiplexed
//! `GRPCBroker`, host to plugin.
//!
//! A go-plugin host that serves a broker stream (`broker.AcceptAndServe`) binds a unix
//! socket `plugin<digits>` in its `PLUGIN_UNIX_SOCKET_DIR` (else its temp dir) and sends that
//! host path to the plugin, which cannot see it inside its sandbox. With the key on, the
//! plugin installs one more seccomp filter before its `execve`, which hands every
//! `connect()` of the plugin to this supervisor (`SECCOMP_RET_USER_NOTIF`); the listener fd
//! comes to the host over a socket pair and the plugin never holds it.
//!
//! For each `connect` the supervisor reads the address from the plugin's memory and decides
//! with [`decide`] (pure):
//!
//! - not a unix path, an abstract or unnamed address, a relative path, a path with a `.` or
//!   `..` component, a parent that is not one of the host's directories, a name that is not
//!   `plugin<digits>`: `SECCOMP_USER_NOTIF_FLAG_CONTINUE`, the kernel performs the connect
//!   inside the sandbox (what the plugin could do anyway; the address is read again by the
//!   kernel, so nothing is decided on the bytes read here);
//! - `plugin<digits>` directly in the host's `PLUGIN_UNIX_SOCKET_DIR` or temp dir (`TMPDIR`
//!   or `/tmp`, as this process saw them at the sandbox's start): never `CONTINUE`. The name
//!   is opened `O_PATH` beneath a directory fd opened at start, with no symbolic link on
//!   the way; it must be a socket owned by this process's effective uid, with one link, born
//!   (`btime`, else `ctime`) no earlier than the sandbox's start. The plugin's own socket is
//!   then taken with `pidfd_getfd`, checked to be a unix stream socket, and connected from
//!   here to `/proc/self/fd/N` of the checked `O_PATH` fd: the inode checked is the inode
//!   connected, with no second path lookup. The answer is the connect's result. A failed
//!   check answers `EACCES` (`ECONNREFUSED` when there is no such socket) and logs the path
//!   and the reason.
//!
//! The supervisor is one blocking thread per sandbox; it ends when the listener reports that
//! no process uses the filter any more (the sandbox is gone), or when the runner stops it.

use std::ffi::OsStr;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustix::io::Errno;

/// `sizeof(struct sockaddr_un)`: the longest address `connect` takes for `AF_UNIX`.
const SOCKADDR_UN_LEN: usize = std::mem::size_of::<libc::sockaddr_un>();

/// What the supervisor does with one `connect`, decided on its address alone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    /// Not a host broker socket: the kernel performs the connect inside the sandbox.
    Continue,
    /// A candidate host broker socket: `name` directly in allowed directory number `dir`.
    /// It is connected only after the checks on the file itself.
    Broker {
        /// Index of the allowed directory (in the list given to [`decide`]).
        dir: usize,
        /// The file name, `plugin` and one or more ASCII digits.
        name: Vec<u8>,
    },
}

/// True when `name` is `plugin` followed by one or more ASCII digits (Go's
/// `os.CreateTemp(dir, "plugin")`, as go-plugin names its broker sockets).
pub fn is_broker_name(name: &[u8]) -> bool {
    name.strip_prefix(b"plugin")
        .is_some_and(|d| !d.is_empty() && d.iter().all(u8::is_ascii_digit))
}

/// The directory `dir` as the allowed forms are compared: repeated `/` collapsed, no
/// trailing `/`; `None` when it is relative or has a `.` or `..` component.
pub fn normalize_dir(dir: &[u8]) -> Option<Vec<u8>> {
    if dir.first() != Some(&b'/') {
        return None;
    }
    let mut out = Vec::with_capacity(dir.len());
    for part in dir.split(|&b| b == b'/').filter(|p| !p.is_empty()) {
        if part == b"." || part == b".." {
            return None;
        }
        out.push(b'/');
        out.extend_from_slice(part);
    }
    if out.is_empty() {
        out.push(b'/');
    }
    Some(out)
}

/// Decides on a `connect` from the `sockaddr` bytes the plugin passed (as many as its
/// `addrlen` said, at most `sizeof(sockaddr_un)`) and the allowed host directories, each
/// given in its forms as [`normalize_dir`] makes them (`allowed[i]` is directory `i`).
pub fn decide(sockaddr: &[u8], allowed: &[Vec<Vec<u8>>]) -> Decision {
    if sockaddr.len() < 2 || sockaddr.len() > SOCKADDR_UN_LEN {
        return Decision::Continue;
    }
    let family = u16::from_ne_bytes([sockaddr[0], sockaddr[1]]);
    if family != libc::AF_UNIX as u16 {
        return Decision::Continue;
    }
    let raw = &sockaddr[2..];
    // Unnamed (no path) or abstract (a leading NUL).
    if raw.first().map_or(true, |&b| b == 0) {
        return Decision::Continue;
    }
    // The kernel takes the path up to the first NUL.
    let path = raw.split(|&b| b == 0).next().unwrap_or(raw);
    let Some(slash) = path.iter().rposition(|&b| b == b'/') else {
        return Decision::Continue;
    };
    let (parent, name) = (&path[..slash.max(1)], &path[slash + 1..]);
    if !is_broker_name(name) {
        return Decision::Continue;
    }
    let Some(parent) = normalize_dir(parent) else {
        return Decision::Continue;
    };
    match allowed.iter().position(|forms| forms.contains(&parent)) {
        Some(dir) => Decision::Broker {
            dir,
            name: name.to_vec(),
        },
        None => Decision::Continue,
    }
}

/// Why a checked socket file is not connected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Not a socket (the file type bits of its mode).
    NotSocket(u32),
    /// Owned by another uid than the host's effective uid.
    Owner {
        /// The file's owner.
        uid: u32,
        /// The host's effective uid.
        host: u32,
    },
    /// More than one name links to the socket.
    Links(u64),
    /// Born before the sandbox started (seconds, nanoseconds since the epoch).
    TooOld {
        /// The socket's birth (or change) time.
        born: (i64, u32),
        /// The sandbox's start.
        start: (i64, u32),
    },
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Refusal::NotSocket(t) => write!(f, "not a socket (file type {t:o})"),
            Refusal::Owner { uid, host } => {
                write!(f, "owned by uid {uid}, not by the host's uid {host}")
            }
            Refusal::Links(n) => write!(f, "{n} names link to it (a socket the host made has 1)"),
            Refusal::TooOld { born, start } => write!(
                f,
                "created at {}.{:09} before the sandbox started at {}.{:09}",
                born.0, born.1, start.0, start.1
            ),
        }
    }
}

/// What [`check_file`] looks at, from `statx` of the opened file.
#[derive(Clone, Copy, Debug)]
pub struct FileFacts {
    /// `st_mode`.
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Link count.
    pub nlink: u64,
    /// Birth time when the file system records it, else the change time.
    pub born: (i64, u32),
}

/// The checks on the socket file itself (pure): a socket, owned by `euid`, one link, born no
/// earlier than `start`.
pub fn check_file(f: &FileFacts, euid: u32, start: (i64, u32)) -> Result<(), Refusal> {
    if f.mode & libc::S_IFMT != libc::S_IFSOCK {
        return Err(Refusal::NotSocket(f.mode & libc::S_IFMT));
    }
    if f.uid != euid {
        return Err(Refusal::Owner {
            uid: f.uid,
            host: euid,
        });
    }
    if f.nlink != 1 {
        return Err(Refusal::Links(f.nlink));
    }
    if f.born < start {
        return Err(Refusal::TooOld {
            born: f.born,
            start,
        });
    }
    Ok(())
}

/// One allowed host directory: its forms for [`decide`], the path shown in messages, and a
/// directory fd opened at the sandbox's start (every lookup is beneath it).
#[derive(Debug)]
struct AllowedDir {
    shown: PathBuf,
    forms: Vec<Vec<u8>>,
    fd: OwnedFd,
}

/// The host's side of the rules, fixed when the sandbox starts.
#[derive(Debug)]
pub(crate) struct Rules {
    dirs: Vec<AllowedDir>,
    forms: Vec<Vec<Vec<u8>>>,
    euid: u32,
    start: (i64, u32),
}

impl Rules {
    /// The rules for a sandbox starting now: the host's `PLUGIN_UNIX_SOCKET_DIR` (when set to
    /// an absolute path) and temp dir (`TMPDIR` when absolute, else `/tmp`), as `env` gives
    /// them; this process's effective uid; the start time (the coarse clock the file systems
    /// stamp files with, so a socket made right after is never "older").
    pub(crate) fn now(env: &dyn Fn(&str) -> Option<std::ffi::OsString>) -> Rules {
        let mut dirs: Vec<AllowedDir> = Vec::new();
        let tmp = env("TMPDIR")
            .filter(|v| Path::new(v).is_absolute())
            .unwrap_or_else(|| "/tmp".into());
        let candidates = env("PLUGIN_UNIX_SOCKET_DIR")
            .filter(|v| Path::new(v).is_absolute())
            .into_iter()
            .chain(std::iter::once(tmp));
        for d in candidates {
            let path = PathBuf::from(d);
            let fd = match rustix::fs::open(
                &path,
                rustix::fs::OFlags::PATH
                    | rustix::fs::OFlags::DIRECTORY
                    | rustix::fs::OFlags::CLOEXEC,
                rustix::fs::Mode::empty(),
            ) {
                Ok(fd) => fd,
                Err(e) => {
                    tracing::debug!(
                        target: "sandbox_runner::broker",
                        dir = %path.display(),
                        error = %e,
                        "broker: directory not usable, left out"
                    );
                    continue;
                }
            };
            let mut forms: Vec<Vec<u8>> = Vec::new();
            let real = std::fs::canonicalize(&path).ok();
            for p in std::iter::once(path.as_path()).chain(real.as_deref()) {
                if let Some(f) = normalize_dir(p.as_os_str().as_bytes()) {
                    if !forms.contains(&f) {
                        forms.push(f);
                    }
                }
            }
            // The same directory twice (PLUGIN_UNIX_SOCKET_DIR = TMPDIR): once is enough.
            if forms.is_empty() || dirs.iter().any(|d| d.forms == forms) {
                continue;
            }
            dirs.push(AllowedDir {
                shown: path,
                forms,
                fd,
            });
        }
        let forms = dirs.iter().map(|d| d.forms.clone()).collect();
        Rules {
            dirs,
            forms,
            euid: rustix::process::geteuid().as_raw(),
            start: coarse_now(),
        }
    }
}

/// `CLOCK_REALTIME_COARSE`, as (seconds, nanoseconds).
fn coarse_now() -> (i64, u32) {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into a live stack struct.
    unsafe { libc::clock_gettime(libc::CLOCK_REALTIME_COARSE, &mut ts) };
    (ts.tv_sec, ts.tv_nsec as u32)
}

/// The supervisor thread of one sandbox. Dropping it (or [`Supervisor::stop`]) ends it.
pub(crate) struct Supervisor {
    stop_w: Option<OwnedFd>,
    thread: Option<std::thread::JoinHandle<()>>,
    rules: Arc<Rules>,
}

impl Supervisor {
    /// Starts the supervisor of sandbox `id` on the seccomp listener fd `listener`.
    pub(crate) fn spawn(listener: OwnedFd, rules: Rules, id: &str) -> io::Result<Supervisor> {
        let (stop_r, stop_w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?;
        let sizes = notif_sizes()?;
        // Linux 6.6+: the kernel wakes the supervisor, and then the plugin, on the CPU that
        // is already running (the other side is waiting for it anyway), saving a migration
        // each way on every connect. Older kernels (EINVAL) just go without.
        const SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP: u64 = 1;
        // SAFETY: the ioctl takes its flags by value and touches no memory of ours.
        let _ = unsafe {
            libc::ioctl(
                listener.as_raw_fd(),
                libc::SECCOMP_IOCTL_NOTIF_SET_FLAGS as _,
                SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP,
            )
        };
        let rules = Arc::new(rules);
        let id = id.to_string();
        let theirs = rules.clone();
        let thread = std::thread::Builder::new()
            .name("sandbox-broker".into())
            .stack_size(128 * 1024)
            .spawn(move || serve(listener, stop_r, sizes, &theirs, &id))?;
        Ok(Supervisor {
            stop_w: Some(stop_w),
            thread: Some(thread),
            rules,
        })
    }

    /// Whether a `connect` of the plugin to the unix path `addr` is brokered: `plugin<digits>`
    /// in one of the allowed host directories. Only the name and directory are judged here;
    /// the socket itself is checked when the plugin connects.
    pub(crate) fn admits(&self, addr: &str) -> bool {
        let mut sa = (libc::AF_UNIX as u16).to_ne_bytes().to_vec();
        sa.extend_from_slice(addr.as_bytes());
        matches!(decide(&sa, &self.rules.forms), Decision::Broker { .. })
    }

    /// Ends the thread and waits for it (at most a second: a blocking connect of a plugin
    /// socket to a host listener whose backlog is full holds it; it is then left to end on
    /// its own, with its fds).
    pub(crate) fn stop(&mut self) {
        drop(self.stop_w.take());
        let Some(t) = self.thread.take() else { return };
        let deadline = Instant::now() + Duration::from_secs(1);
        while !t.is_finished() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(2));
        }
        if t.is_finished() {
            let _ = t.join();
        } else {
            tracing::warn!(
                target: "sandbox_runner::broker",
                "broker: the supervisor is still in a connect; left to end on its own"
            );
        }
    }
}

impl Drop for Supervisor {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The sizes of the notification structs this kernel uses (`SECCOMP_GET_NOTIF_SIZES`).
fn notif_sizes() -> io::Result<libc::seccomp_notif_sizes> {
    let mut s = libc::seccomp_notif_sizes {
        seccomp_notif: 0,
        seccomp_notif_resp: 0,
        seccomp_data: 0,
    };
    // SAFETY: the seccomp system call writes the three sizes into a live stack struct.
    let r = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_GET_NOTIF_SIZES as libc::c_ulong,
            0 as libc::c_ulong,
            &mut s as *mut libc::seccomp_notif_sizes,
        )
    };
    if r == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok(s)
}

/// The supervisor's loop: one notification at a time, until the sandbox is gone or `stop`
/// is closed.
fn serve(
    listener: OwnedFd,
    stop: OwnedFd,
    sizes: libc::seccomp_notif_sizes,
    rules: &Rules,
    id: &str,
) {
    // Buffers of the kernel's sizes (never smaller than ours), 8-byte aligned.
    let words = |n: usize| n.max(1).div_ceil(8);
    let mut req_buf =
        vec![
            0u64;
            words((sizes.seccomp_notif as usize).max(std::mem::size_of::<libc::seccomp_notif>()))
        ];
    let mut resp_buf = vec![
        0u64;
        words(
            (sizes.seccomp_notif_resp as usize)
                .max(std::mem::size_of::<libc::seccomp_notif_resp>())
        )
    ];
    loop {
        let mut fds = [
            rustix::event::PollFd::new(&listener, rustix::event::PollFlags::IN),
            rustix::event::PollFd::new(&stop, rustix::event::PollFlags::IN),
        ];
        match rustix::event::poll(&mut fds, None) {
            Ok(_) => {}
            Err(Errno::INTR) => continue,
            Err(e) => {
                tracing::warn!(target: "sandbox_runner::broker", %id, error = %e, "broker: poll");
                return;
            }
        }
        if !fds[1].revents().is_empty() {
            return;
        }
        let ev = fds[0].revents();
        if ev.intersects(rustix::event::PollFlags::HUP | rustix::event::PollFlags::ERR)
            || ev.contains(rustix::event::PollFlags::NVAL)
        {
            return;
        }
        if !ev.contains(rustix::event::PollFlags::IN) {
            continue;
        }
        req_buf.fill(0);
        // SAFETY: the ioctl writes at most the kernel's seccomp_notif size into the zeroed
        // buffer, which is at least that large.
        let r = unsafe {
            libc::ioctl(
                listener.as_raw_fd(),
                libc::SECCOMP_IOCTL_NOTIF_RECV as _,
                req_buf.as_mut_ptr(),
            )
        };
        if r == -1 {
            match Errno::from_io_error(&io::Error::last_os_error()) {
                // The caller was killed, or a signal: nothing to answer.
                Some(Errno::NOENT) | Some(Errno::INTR) => continue,
                _ => {
                    tracing::warn!(
                        target: "sandbox_runner::broker",
                        %id,
                        error = %io::Error::last_os_error(),
                        "broker: receiving a notification"
                    );
                    return;
                }
            }
        }
        // SAFETY: the buffer holds at least a seccomp_notif, which is plain old data.
        let req: libc::seccomp_notif = unsafe { std::ptr::read(req_buf.as_ptr().cast()) };
        let Some((val, error, flags)) = answer(listener.as_fd(), &req, rules, id) else {
            continue;
        };
        resp_buf.fill(0);
        let resp = libc::seccomp_notif_resp {
            id: req.id,
            val,
            error,
            flags,
        };
        // SAFETY: writes a plain struct into a buffer at least its size and 8-byte aligned.
        unsafe { std::ptr::write(resp_buf.as_mut_ptr().cast(), resp) };
        // SAFETY: the ioctl reads the response from the live buffer.
        let r = unsafe {
            libc::ioctl(
                listener.as_raw_fd(),
                libc::SECCOMP_IOCTL_NOTIF_SEND as _,
                resp_buf.as_mut_ptr(),
            )
        };
        if r == -1 {
            // ENOENT: the caller is gone (killed, or interrupted); nothing to do.
            tracing::debug!(
                target: "sandbox_runner::broker",
                %id,
                error = %io::Error::last_os_error(),
                "broker: answer not delivered"
            );
        }
    }
}

/// True while the notification `id` is still pending (its caller alive and waiting).
fn id_valid(listener: BorrowedFd<'_>, id: u64) -> bool {
    let mut id = id;
    // SAFETY: the ioctl reads a u64 from a live stack variable.
    unsafe {
        libc::ioctl(
            listener.as_raw_fd(),
            libc::SECCOMP_IOCTL_NOTIF_ID_VALID as _,
            &mut id as *mut u64,
        ) == 0
    }
}

/// The answer to one notification as `(val, error, flags)`, or `None` when its caller is
/// gone.
fn answer(
    listener: BorrowedFd<'_>,
    req: &libc::seccomp_notif,
    rules: &Rules,
    id: &str,
) -> Option<(i64, i32, u32)> {
    const CONTINUE: (i64, i32, u32) = (0, 0, libc::SECCOMP_USER_NOTIF_FLAG_CONTINUE as u32);
    if req.data.nr != libc::SYS_connect as i32 {
        return Some(CONTINUE);
    }
    let [sockfd, addr, len, ..] = req.data.args;
    let len = len as u32 as usize;
    if !(2..=SOCKADDR_UN_LEN).contains(&len) {
        return Some(CONTINUE);
    }
    let mut buf = [0u8; SOCKADDR_UN_LEN];
    let Ok(n) = read_memory(req.pid as i32, addr, &mut buf[..len]) else {
        // The kernel reads it again (and fails the call, EFAULT) inside the sandbox.
        return Some(CONTINUE);
    };
    // Read from the right process: its pid cannot have been reused while it still waits.
    if !id_valid(listener, req.id) {
        return None;
    }
    let Decision::Broker { dir, name } = decide(&buf[..n], &rules.forms) else {
        return Some(CONTINUE);
    };
    let dir = &rules.dirs[dir];
    let path = dir.shown.join(OsStr::from_bytes(&name));
    match connect_checked(req.pid as i32, sockfd as i32, dir, &name, rules) {
        Ok(()) => {
            if !id_valid(listener, req.id) {
                return None;
            }
            tracing::debug!(
                target: "sandbox_runner::broker",
                %id,
                path = %path.display(),
                "broker: connected the plugin to a host broker socket"
            );
            Some((0, 0, 0))
        }
        Err((errno, why)) => {
            tracing::warn!(
                target: "sandbox_runner::broker",
                %id,
                path = %path.display(),
                reason = %why,
                "broker: connect refused"
            );
            Some((0, -errno.raw_os_error(), 0))
        }
    }
}

/// Reads `buf.len()` bytes at `addr` of process `pid` (`process_vm_readv`).
fn read_memory(pid: i32, addr: u64, buf: &mut [u8]) -> io::Result<usize> {
    let local = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    let remote = libc::iovec {
        iov_base: addr as usize as *mut libc::c_void,
        iov_len: buf.len(),
    };
    // SAFETY: the local iovec covers a live, writable buffer; the remote one is only read
    // by the kernel, in the other process.
    let n = unsafe { libc::process_vm_readv(pid, &local, 1, &remote, 1, 0) };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(n as usize)
}

/// A pidfd for the calling thread `tid` (`PIDFD_THREAD`, Linux 6.9), else for its process.
fn pidfd_of(tid: i32) -> io::Result<OwnedFd> {
    let pid = rustix::process::Pid::from_raw(tid).ok_or(Errno::SRCH)?;
    let thread = rustix::process::PidfdFlags::from_bits_retain(libc::O_EXCL as u32);
    match rustix::process::pidfd_open(pid, thread) {
        Ok(fd) => return Ok(fd),
        Err(Errno::INVAL) => {}
        Err(e) => return Err(e.into()),
    }
    // An older kernel: the thread's process (its fd table, which Go's threads share).
    let status = std::fs::read_to_string(format!("/proc/{tid}/status"))?;
    let tgid = status
        .lines()
        .find_map(|l| l.strip_prefix("Tgid:"))
        .and_then(|v| v.trim().parse::<i32>().ok())
        .and_then(rustix::process::Pid::from_raw)
        .ok_or(Errno::SRCH)?;
    Ok(rustix::process::pidfd_open(
        tgid,
        rustix::process::PidfdFlags::empty(),
    )?)
}

/// Opens `name` beneath `dir`, checks it, takes the plugin's socket `sockfd` of thread `tid`
/// and connects it to the checked inode. The error is the errno for the plugin and why.
fn connect_checked(
    tid: i32,
    sockfd: i32,
    dir: &AllowedDir,
    name: &[u8],
    rules: &Rules,
) -> Result<(), (Errno, String)> {
    use rustix::fs::{AtFlags, OFlags, ResolveFlags, StatxFlags};
    let file = rustix::fs::openat2(
        &dir.fd,
        OsStr::from_bytes(name),
        OFlags::PATH | OFlags::NOFOLLOW | OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
        ResolveFlags::BENEATH
            | ResolveFlags::NO_SYMLINKS
            | ResolveFlags::NO_MAGICLINKS
            | ResolveFlags::NO_XDEV,
    )
    .map_err(|e| match e {
        Errno::NOENT => (Errno::CONNREFUSED, "no such socket".to_string()),
        Errno::LOOP => (Errno::ACCESS, "a symbolic link".to_string()),
        e => (Errno::ACCESS, format!("cannot open it: {e}")),
    })?;
    let st = rustix::fs::statx(
        &file,
        "",
        AtFlags::EMPTY_PATH,
        StatxFlags::TYPE
            | StatxFlags::UID
            | StatxFlags::NLINK
            | StatxFlags::CTIME
            | StatxFlags::BTIME,
    )
    .map_err(|e| (Errno::ACCESS, format!("statx: {e}")))?;
    let t = if st.stx_mask & StatxFlags::BTIME.bits() != 0 {
        st.stx_btime
    } else {
        st.stx_ctime
    };
    let facts = FileFacts {
        mode: u32::from(st.stx_mode),
        uid: st.stx_uid,
        nlink: u64::from(st.stx_nlink),
        born: (t.tv_sec, t.tv_nsec),
    };
    check_file(&facts, rules.euid, rules.start).map_err(|r| (Errno::ACCESS, r.to_string()))?;
    let pidfd = pidfd_of(tid).map_err(|e| {
        (
            Errno::from_io_error(&e).unwrap_or(Errno::SRCH),
            format!("pidfd of the caller {tid}: {e}"),
        )
    })?;
    let sock = rustix::process::pidfd_getfd(
        &pidfd,
        sockfd as RawFd,
        rustix::process::PidfdGetfdFlags::empty(),
    )
    .map_err(|e| (e, format!("pidfd_getfd of the plugin's fd {sockfd}: {e}")))?;
    let domain = rustix::net::sockopt::socket_domain(&sock)
        .map_err(|e| (e, format!("the plugin's fd {sockfd}: {e}")))?;
    let kind = rustix::net::sockopt::socket_type(&sock)
        .map_err(|e| (e, format!("the plugin's fd {sockfd}: {e}")))?;
    if domain != rustix::net::AddressFamily::UNIX || kind != rustix::net::SocketType::STREAM {
        return Err((
            Errno::ACCESS,
            format!("the plugin's fd {sockfd} is not a unix stream socket"),
        ));
    }
    // The checked inode itself, through this process's fd table: no second lookup of the
    // name. (A nonblocking socket of the plugin's shares its file description with `sock`:
    // a full backlog answers EAGAIN, as the plugin's own connect would.)
    let via = format!("/proc/self/fd/{}", file.as_raw_fd());
    let addr = rustix::net::SocketAddrUnix::new(via.as_str())
        .map_err(|e| (Errno::ACCESS, format!("address {via}: {e}")))?;
    rustix::net::connect(&sock, &addr).map_err(|e| (e, format!("connect: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(path: &[u8]) -> Vec<u8> {
        let mut v = (libc::AF_UNIX as u16).to_ne_bytes().to_vec();
        v.extend_from_slice(path);
        v
    }

    fn allowed() -> Vec<Vec<Vec<u8>>> {
        vec![
            vec![b"/run/host-sockets".to_vec()],
            vec![b"/tmp".to_vec(), b"/private/tmp".to_vec()],
        ]
    }

    fn broker(dir: usize, name: &str) -> Decision {
        Decision::Broker {
            dir,
            name: name.as_bytes().to_vec(),
        }
    }

    #[test]
    fn names() {
        for ok in ["plugin0", "plugin123", "plugin4294967295"] {
            assert!(is_broker_name(ok.as_bytes()), "{ok}");
        }
        for bad in [
            "plugin",
            "plugin1a",
            "plugin-1",
            "Plugin1",
            "xplugin1",
            "plugin 1",
            "plugin1\n",
            "plugin١",
            "plugins1",
            "",
        ] {
            assert!(!is_broker_name(bad.as_bytes()), "{bad}");
        }
    }

    #[test]
    fn host_broker_sockets_are_candidates() {
        let a = allowed();
        assert_eq!(decide(&addr(b"/tmp/plugin42"), &a), broker(1, "plugin42"));
        assert_eq!(decide(&addr(b"/tmp/plugin42\0"), &a), broker(1, "plugin42"));
        assert_eq!(
            decide(&addr(b"/tmp/plugin42\0garbage"), &a),
            broker(1, "plugin42"),
            "the kernel stops at the first NUL"
        );
        assert_eq!(
            decide(&addr(b"/private/tmp/plugin7"), &a),
            broker(1, "plugin7")
        );
        assert_eq!(decide(&addr(b"//tmp//plugin7"), &a), broker(1, "plugin7"));
        assert_eq!(
            decide(&addr(b"/run/host-sockets/plugin9"), &a),
            broker(0, "plugin9")
        );
    }

    #[test]
    fn everything_else_continues() {
        let a = allowed();
        let cases: Vec<Vec<u8>> = vec![
            addr(b"/tmp/host.sock"),
            addr(b"/tmp/plugin"),
            addr(b"/tmp/plugin1x"),
            addr(b"/tmp/sub/plugin1"),
            addr(b"/tmp/../tmp/plugin1"),
            addr(b"/tmp/./plugin1"),
            addr(b"/elsewhere/tmp/../../tmp/plugin1"),
            addr(b"/tm/plugin1"),
            addr(b"/tmpx/plugin1"),
            addr(b"/plugin1"),
            addr(b"tmp/plugin1"),
            addr(b"plugin1"),
            addr(b"/run/host-sockets/sbx-1/plugin1"),
            addr(b"\0/tmp/plugin1"),
            addr(b""),
            addr(b"/tmp/\0plugin1"),
            // Not AF_UNIX.
            {
                let mut v = (libc::AF_INET as u16).to_ne_bytes().to_vec();
                v.extend_from_slice(b"/tmp/plugin1");
                v
            },
            vec![1],
            vec![],
            // Longer than a sockaddr_un: the kernel refuses it.
            addr(&[b'/'; 200]),
        ];
        for c in cases {
            assert_eq!(
                decide(&c, &a),
                Decision::Continue,
                "{:?}",
                String::from_utf8_lossy(&c)
            );
        }
        assert_eq!(decide(&addr(b"/tmp/plugin1"), &[]), Decision::Continue);
    }

    #[test]
    fn normalized_dirs() {
        assert_eq!(normalize_dir(b"/tmp/").as_deref(), Some(&b"/tmp"[..]));
        assert_eq!(normalize_dir(b"//a//b").as_deref(), Some(&b"/a/b"[..]));
        assert_eq!(normalize_dir(b"/").as_deref(), Some(&b"/"[..]));
        assert_eq!(normalize_dir(b"a/b"), None);
        assert_eq!(normalize_dir(b"/a/../b"), None);
        assert_eq!(normalize_dir(b"/a/./b"), None);
    }

    #[test]
    fn file_checks() {
        let ok = FileFacts {
            mode: libc::S_IFSOCK | 0o755,
            uid: 1000,
            nlink: 1,
            born: (100, 5),
        };
        let start = (100, 5);
        assert_eq!(check_file(&ok, 1000, start), Ok(()));
        assert!(matches!(
            check_file(
                &FileFacts {
                    mode: libc::S_IFREG | 0o644,
                    ..ok
                },
                1000,
                start
            ),
            Err(Refusal::NotSocket(_))
        ));
        assert!(matches!(
            check_file(
                &FileFacts {
                    mode: libc::S_IFLNK | 0o777,
                    ..ok
                },
                1000,
                start
            ),
            Err(Refusal::NotSocket(_))
        ));
        assert_eq!(
            check_file(&ok, 0, start),
            Err(Refusal::Owner { uid: 1000, host: 0 })
        );
        assert_eq!(
            check_file(&FileFacts { nlink: 2, ..ok }, 1000, start),
            Err(Refusal::Links(2))
        );
        assert!(matches!(
            check_file(
                &FileFacts {
                    born: (100, 4),
                    ..ok
                },
                1000,
                start
            ),
            Err(Refusal::TooOld { .. })
        ));
        assert!(matches!(
            check_file(
                &FileFacts {
                    born: (99, 999_999_999),
                    ..ok
                },
                1000,
                start
            ),
            Err(Refusal::TooOld { .. })
        ));
        assert_eq!(
            check_file(
                &FileFacts {
                    born: (101, 0),
                    ..ok
                },
                1000,
                start
            ),
            Ok(())
        );
    }
}
