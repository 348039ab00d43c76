//! The plugin's standard streams: what the child gets on fds 0, 1 and 2 for each [`Stdio`],
//! the host's ends (pipes handed to the caller; for [`Stdio::Inherit`], the stand-ins and
//! relays of `crate::stdio`), and the fd helpers of a start (every fd moved above 2,
//! `CLOEXEC`).

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

use super::Stdio;
use crate::error::Error;
use crate::runner::{PipeReader, PipeWriter};

/// What [`wire`] made: the fd numbers for the child, and the host's ends.
pub(super) struct Wired {
    /// The fd the child puts on 0.
    pub stdin_fd: RawFd,
    /// The fd the child puts on 1.
    pub stdout_fd: RawFd,
    /// The fd the child puts on 2.
    pub stderr_fd: RawFd,
    /// The write end of a [`Stdio::Pipe`] stdin.
    pub input: Option<PipeWriter>,
    /// The read end of a [`Stdio::Pipe`] stdout.
    pub out: Option<PipeReader>,
    /// The read end of a [`Stdio::Pipe`] stderr.
    pub err: Option<PipeReader>,
    /// The stand-ins for the caller's own streams and their relays, to start with the plugin.
    pub caller: crate::stdio::Caller,
    /// Tasks copying the plugin's output into files the runner opened for it.
    pub file_relays: Vec<tokio::task::JoinHandle<()>>,
    /// The task feeding a file the runner opened to the plugin's stdin.
    pub stdin_relay: Option<tokio::task::JoinHandle<()>>,
}

/// Opens the child's side of each stream (owned by `child_side` until the clone) and the
/// host's side. `owner`: the plugin's host uid and gid when it is not host root's; every
/// stream it gets then belongs to it (so that it can reopen them by path, `/dev/stdout`, as
/// it could if it had made them), and a file the runner opens for it is relayed through a
/// pipe, unless the sandbox is `detached` (it outlives this process's relays: the file is
/// then handed over, given to the plugin's ids).
pub(super) fn wire(
    stdin: &Stdio,
    stdout: &Stdio,
    stderr: &Stdio,
    child_side: &mut Vec<OwnedFd>,
    owner: Option<(u32, u32)>,
    detached: bool,
) -> Result<Wired, Error> {
    let stdin_fd;
    let mut input: Option<PipeWriter> = None;
    let mut file_relays: Vec<tokio::task::JoinHandle<()>> = Vec::new();
    let mut stdin_relay: Option<tokio::task::JoinHandle<()>> = None;
    let give = |f: OwnedFd| -> Result<OwnedFd, Error> {
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::fchown(&f, Some(uid), Some(gid))
                .map_err(|e| Error::host("giving a stdio stream to the plugin's ids", e))?;
        }
        Ok(f)
    };
    let pipe = || -> Result<(OwnedFd, OwnedFd), Error> {
        let (r, w) = pipe()?;
        // Both ends are one inode: giving one gives the pipe.
        Ok((give(r)?, w))
    };
    let relay_files = owner.is_some() && !detached;
    // The caller's own streams are never handed over: relayed pipes or a proxied
    // pseudo-terminal stand in for them (src/stdio).
    let inherit = [stdin, stdout, stderr].map(|s| *s == Stdio::Inherit);
    let mut caller = crate::stdio::Caller::new(inherit)?;
    match stdin {
        Stdio::File(p) if relay_files => {
            let src = std::fs::File::from(open_file(p, libc::O_RDONLY)?);
            let (r, w) = pipe()?;
            let mut tx = tokio::net::unix::pipe::Sender::from_owned_fd(w)
                .map_err(|e| Error::host("stdin relay pipe", e))?;
            stdin_relay = Some(tokio::spawn(async move {
                let mut src = tokio::fs::File::from_std(src);
                let _ = tokio::io::copy(&mut src, &mut tx).await;
            }));
            stdin_fd = keep(child_side, r);
        }
        Stdio::File(p) => stdin_fd = keep(child_side, give(open_file(p, libc::O_RDONLY)?)?),
        Stdio::Inherit => stdin_fd = keep(child_side, give(caller.child_fd(0)?)?),
        Stdio::Null => stdin_fd = keep(child_side, dev_null(libc::O_RDONLY)?),
        Stdio::Pipe => {
            let (r, w) = pipe()?;
            stdin_fd = keep(child_side, r);
            input = Some(Box::new(
                tokio::net::unix::pipe::Sender::from_owned_fd(w)
                    .map_err(|e| Error::host("stdin pipe", e))?,
            ));
        }
    }
    let mut output = |s: Stdio, fd: RawFd| -> Result<(RawFd, Option<PipeReader>), Error> {
        Ok(match s {
            Stdio::Inherit => (keep(child_side, give(caller.child_fd(fd as usize)?)?), None),
            Stdio::Null => (keep(child_side, dev_null(libc::O_WRONLY)?), None),
            Stdio::File(p) => {
                let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_APPEND;
                let f = open_file(&p, flags)?;
                if relay_files {
                    // Relayed, so the plugin cannot reopen the file through /proc/self/fd
                    // with more rights (read it back, truncate it).
                    let (r, w) = pipe()?;
                    let dst = std::fs::File::from(f);
                    let mut rx = tokio::net::unix::pipe::Receiver::from_owned_fd(r)
                        .map_err(|e| Error::host("output relay pipe", e))?;
                    file_relays.push(tokio::spawn(async move {
                        let mut dst = tokio::fs::File::from_std(dst);
                        let _ = tokio::io::copy(&mut rx, &mut dst).await;
                        let _ = tokio::io::AsyncWriteExt::flush(&mut dst).await;
                    }));
                    (keep(child_side, w), None)
                } else {
                    (keep(child_side, give(f)?), None)
                }
            }
            Stdio::Pipe => {
                let (r, w) = pipe()?;
                let rx = tokio::net::unix::pipe::Receiver::from_owned_fd(r)
                    .map_err(|e| Error::host("output pipe", e))?;
                (keep(child_side, w), Some(Box::new(rx) as PipeReader))
            }
        })
    };
    let (stdout_fd, out) = output(stdout.clone(), 1)?;
    let (stderr_fd, err) = output(stderr.clone(), 2)?;
    Ok(Wired {
        stdin_fd,
        stdout_fd,
        stderr_fd,
        input,
        out,
        err,
        caller,
        file_relays,
        stdin_relay,
    })
}

pub(super) fn pipe() -> Result<(OwnedFd, OwnedFd), Error> {
    let (r, w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
        .map_err(|e| Error::host("pipe2", e))?;
    Ok((above2(r)?, above2(w)?))
}

/// Moves an fd to a number >= 3 (CLOEXEC), so the child's `dup2` onto 0, 1, 2 never
/// overwrites a source it still needs (a caller may have closed its own stdio).
pub(super) fn above2(fd: OwnedFd) -> Result<OwnedFd, Error> {
    if fd.as_raw_fd() > 2 {
        return Ok(fd);
    }
    dup_above2(fd.as_raw_fd())
}

pub(super) fn dup_above2(fd: RawFd) -> Result<OwnedFd, Error> {
    // SAFETY: F_DUPFD_CLOEXEC returns a new fd we own, or -1.
    let n = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 3) };
    if n == -1 {
        return Err(Error::host(
            format!("duplicating fd {fd}"),
            std::io::Error::last_os_error(),
        ));
    }
    // SAFETY: n is a fresh fd.
    Ok(unsafe { OwnedFd::from_raw_fd(n) })
}

pub(super) fn dev_null(flags: libc::c_int) -> Result<OwnedFd, Error> {
    // SAFETY: open returns a new fd we own, or -1.
    let n = unsafe { libc::open(c"/dev/null".as_ptr(), flags | libc::O_CLOEXEC) };
    if n == -1 {
        return Err(Error::host("/dev/null", std::io::Error::last_os_error()));
    }
    // SAFETY: n is a fresh fd.
    above2(unsafe { OwnedFd::from_raw_fd(n) })
}

/// What kind of open file one of the caller's `pass_fds` is (its stdio is decided in
/// `crate::stdio`).
pub(super) enum FdKind {
    /// A pipe, socket, terminal or other character device: handed over as is.
    Stream,
    /// A regular file or block device: handed over as is.
    File,
    /// A directory: refused (a way out of the private root through /proc/self/fd).
    Dir,
    /// An `O_PATH` fd: refused for the same reason.
    Path,
}

pub(super) fn fd_kind(fd: RawFd) -> std::io::Result<FdKind> {
    // SAFETY: F_GETFL and fstat only read the fd's state.
    let fl = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if fl == -1 {
        return Err(std::io::Error::last_os_error());
    }
    if fl & libc::O_PATH != 0 {
        return Ok(FdKind::Path);
    }
    // SAFETY: `stat` is plain old data, for which all zeroes is a valid value.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fstat writes into the live struct above.
    if unsafe { libc::fstat(fd, &mut st) } == -1 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(match st.st_mode & libc::S_IFMT {
        libc::S_IFDIR => FdKind::Dir,
        libc::S_IFREG | libc::S_IFBLK => FdKind::File,
        _ => FdKind::Stream,
    })
}

pub(super) fn refuse_fd(what: &str, fd: RawFd) -> Error {
    Error::InvalidCommand(format!(
        "{what} (fd {fd}) is a directory or an O_PATH handle: through /proc/self/fd it would \
         lead the plugin out of its private root; give it a file, a pipe or /dev/null"
    ))
}

pub(super) fn open_file(path: &std::path::Path, flags: libc::c_int) -> Result<OwnedFd, Error> {
    let c = std::ffi::CString::new(std::os::unix::ffi::OsStrExt::as_bytes(path.as_os_str()))
        .map_err(|_| Error::InvalidCommand(format!("{} contains NUL", path.display())))?;
    // SAFETY: open returns a new fd we own, or -1.
    let n = unsafe { libc::open(c.as_ptr(), flags | libc::O_CLOEXEC | libc::O_NOCTTY, 0o600) };
    if n == -1 {
        return Err(Error::host(
            format!("opening {}", path.display()),
            std::io::Error::last_os_error(),
        ));
    }
    // SAFETY: n is a fresh fd.
    above2(unsafe { OwnedFd::from_raw_fd(n) })
}

pub(super) fn keep(list: &mut Vec<OwnedFd>, fd: OwnedFd) -> RawFd {
    let n = fd.as_raw_fd();
    list.push(fd);
    n
}
