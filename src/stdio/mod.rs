//! The caller's own stdio is never handed to the plugin.
//!
//! A plugin holding one of its host's fds can reopen it through `/proc/self/fd/N` with other
//! rights: write into the host's stdin pipe, read what other processes write into the host's
//! stdout pipe, read what is typed on the host's terminal, or change that terminal's modes.
//! So for each stream the plugin inherits ([`crate::Stdio::Inherit`]) the runner gives it a
//! stand-in instead, decided here from what the caller's fd is:
//!
//! | the caller's fd | the plugin gets |
//! |---|---|
//! | `/dev/null`, `/dev/zero`, `/dev/full`, `/dev/random`, `/dev/urandom` | that fd: reopening one gives nothing more |
//! | a pipe, a socket, a regular file, any other device | a pipe of the runner's, relayed to or from the caller's fd by a thread ([`relay`]): `splice(2)` where both ends allow it, else read and write |
//! | a terminal as stdout | the slave of a new pseudo-terminal that the runner proxies ([`pty`]); stderr too when it is the same terminal |
//! | a terminal as stdin, stdout on a terminal too | the same slave: an interactive session, the caller's terminal in raw mode meanwhile (like `ssh -t` or `script`) |
//! | a terminal as stdin, stdout not on one | `/dev/null`: nothing reads the caller's terminal for a plugin whose output goes elsewhere (a go-plugin host's prompts stay the host's) |
//! | a directory or an `O_PATH` handle | refused: through `/proc/self/fd` it leads out of the private root |
//!
//! Relays are threads, not tokio tasks: the caller's fds are open file descriptions shared
//! with other processes (its shell, the rest of a pipeline), so they must stay blocking (an
//! `O_NONBLOCK` set here would show in those processes), and blocking `splice`, `read` and
//! `write` calls belong on threads of their own, never on a runtime's workers or its blocking
//! pool (whose shutdown would wait for a relay stuck on a silent caller). Each thread waits
//! in `poll` on its source, on its destination's error state (the other side went away) and
//! on a stop pipe, so it ends with the sandbox, when the runner is dropped, or when either
//! side closes, and never holds the host's shutdown: nothing ever joins one from async code.

mod pty;
mod relay;

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::sync::Arc;

use crate::error::Error;
use relay::Ours;

/// Names of the three streams, for messages and thread names.
const NAMES: [&str; 3] = ["stdin", "stdout", "stderr"];

/// The capacity of the plugin's stdout and stderr pipes when relayed (the stdin pipe keeps
/// the default 64 KiB: what it holds is read ahead of the caller's stdin).
const OUTPUT_PIPE_SIZE: usize = 1 << 20;

/// What one of the caller's fds is, as far as handing it over goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// A memory character device that gives nothing when reopened (`/dev/null`, `zero`,
    /// `full`, `random`, `urandom`): handed over as it is.
    Harmless,
    /// A terminal (its device number).
    Terminal { rdev: u64 },
    /// Anything else that can be read or written: a pipe, socket, regular file, block or
    /// other character device (identified by device and inode, to share one relay between
    /// stdout and stderr when they are the same open file, as with `2>&1`).
    Relayed { dev: u64, ino: u64 },
    /// A directory or an `O_PATH` handle: refused.
    Refused,
}

/// The memory devices (major 1) whose minors are `null` 3, `zero` 5, `full` 7, `random` 8
/// and `urandom` 9: reopening one through `/proc/self/fd` gives nothing the plugin's own
/// `/dev` does not.
fn harmless_device(rdev: u64) -> bool {
    let (major, minor) = (libc::major(rdev), libc::minor(rdev));
    major == 1 && matches!(minor, 3 | 5 | 7 | 8 | 9)
}

fn kind(fd: BorrowedFd<'_>) -> std::io::Result<Kind> {
    let fl = rustix::fs::fcntl_getfl(fd)?;
    if fl.contains(rustix::fs::OFlags::PATH) {
        return Ok(Kind::Refused);
    }
    let st = rustix::fs::fstat(fd)?;
    let mode = st.st_mode & libc::S_IFMT;
    Ok(if mode == libc::S_IFDIR {
        Kind::Refused
    } else if mode == libc::S_IFCHR && harmless_device(st.st_rdev) {
        Kind::Harmless
    } else if mode == libc::S_IFCHR && rustix::termios::isatty(fd) {
        Kind::Terminal { rdev: st.st_rdev }
    } else {
        Kind::Relayed {
            dev: st.st_dev,
            ino: st.st_ino,
        }
    })
}

/// A relay waiting for the plugin to run.
enum Pending {
    /// From the caller's fd into the write end of the plugin's stdin pipe.
    Input { src: OwnedFd, dst: OwnedFd },
    /// From the read end of one of the plugin's output pipes into the caller's fd `fd`.
    Output {
        fd: usize,
        src: OwnedFd,
        dst: OwnedFd,
    },
}

/// What the plugin gets in place of the caller's stdin, stdout and stderr, and the relays that
/// connect them, decided before the sandbox is cloned (see the module documentation).
pub(crate) struct Caller {
    /// The plugin's side of fds 0, 1, 2 (all numbered above 2, CLOEXEC), for the inherited
    /// ones, until taken by [`Caller::child_fd`].
    child: [Option<OwnedFd>; 3],
    /// Pipe relays to start with the plugin.
    pending: Vec<Pending>,
    /// The pseudo-terminal, when the plugin's stdout stands for the caller's terminal.
    pty: Option<pty::Pending>,
    /// The first of the plugin's fds 0, 1, 2 that is the pseudo-terminal's slave: the
    /// plugin makes it its controlling terminal (a session of its own, `TIOCSCTTY`).
    ctty: Option<usize>,
}

impl Caller {
    /// Decides the stand-ins for the caller's fds 0, 1, 2 that the plugin inherits
    /// (`inherit[n]`), creating their pipes and pseudo-terminal. Fails on a directory or
    /// `O_PATH` handle (a way out of the private root), or a closed fd.
    pub(crate) fn new(inherit: [bool; 3]) -> Result<Caller, Error> {
        let mut kinds = [None; 3];
        for n in 0..3 {
            if !inherit[n] {
                continue;
            }
            // SAFETY: only inspected (fcntl, fstat, ioctl); an fd the caller closed gives EBADF.
            let fd = unsafe { BorrowedFd::borrow_raw(n as RawFd) };
            let k = kind(fd)
                .map_err(|e| Error::host(format!("{} (fd {n}) of the caller", NAMES[n]), e))?;
            if k == Kind::Refused {
                return Err(Error::InvalidCommand(format!(
                    "{} (fd {n}) is a directory or an O_PATH handle: through /proc/self/fd it \
                     would lead the plugin out of its private root; give it a file, a pipe or \
                     /dev/null",
                    NAMES[n]
                )));
            }
            kinds[n] = Some(k);
        }
        let mut c = Caller {
            child: [None, None, None],
            pending: Vec::new(),
            pty: None,
            ctty: None,
        };
        let out_tty = match kinds[1] {
            Some(Kind::Terminal { rdev }) => Some(rdev),
            _ => None,
        };
        let interactive = out_tty.is_some() && matches!(kinds[0], Some(Kind::Terminal { .. }));
        if out_tty.is_some() {
            c.pty = Some(
                pty::Pending::open(interactive)
                    .map_err(|e| Error::host("pseudo-terminal for the plugin", e))?,
            );
        }
        for (n, k) in kinds.iter().enumerate() {
            let Some(k) = *k else { continue };
            c.child[n] = Some(match k {
                Kind::Harmless => dup_above2(n as RawFd)?,
                Kind::Terminal { .. } if n == 0 && !interactive => {
                    tracing::info!(
                        "stdin is a terminal but stdout is not: the plugin's stdin is \
                         /dev/null (a terminal is proxied only for an interactive session, \
                         stdin and stdout both on it)"
                    );
                    dev_null()?
                }
                Kind::Terminal { rdev } if n == 0 || n == 1 || Some(rdev) == out_tty => {
                    let slave = c.pty.as_ref().map(|p| p.slave()).ok_or_else(|| {
                        Error::host("pseudo-terminal", std::io::Error::other("none open"))
                    })?;
                    c.ctty.get_or_insert(n);
                    above2_dup(slave.as_fd())?
                }
                // stdout and stderr on the same open file (`2>&1`): one pipe, one relay, the
                // plugin's interleaving kept.
                Kind::Relayed { .. } if n == 2 && kinds[1] == Some(k) && c.child[1].is_some() => {
                    let w = c.child[1].as_ref().map(|w| w.as_fd()).expect("checked");
                    above2_dup(w)?
                }
                // A pipe, socket, file or device; or stderr on another terminal than stdout.
                Kind::Relayed { .. } | Kind::Terminal { .. } => {
                    let (r, w) = pipe()?;
                    let caller = dup_above2(n as RawFd)?;
                    if n == 0 {
                        c.pending.push(Pending::Input {
                            src: caller,
                            dst: w,
                        });
                        r
                    } else {
                        // Room for 1 MiB of the plugin's output while the relay thread waits
                        // for a CPU (the default 64 KiB blocks the writer at once under load);
                        // the pages are charged to the writer's memory cgroup. Best effort.
                        let _ = rustix::pipe::fcntl_setpipe_size(&w, OUTPUT_PIPE_SIZE);
                        c.pending.push(Pending::Output {
                            fd: n,
                            src: r,
                            dst: caller,
                        });
                        w
                    }
                }
                Kind::Refused => unreachable!("refused above"),
            });
        }
        Ok(c)
    }

    /// The plugin's fd in place of the caller's fd `n` (0, 1 or 2), which it inherits;
    /// handed out once. Numbered above 2 and CLOEXEC, like every fd the child `dup2`s.
    pub(crate) fn child_fd(&mut self, n: usize) -> Result<OwnedFd, Error> {
        self.child
            .get_mut(n)
            .and_then(Option::take)
            .ok_or(Error::State(
                "the caller's stdio was not prepared for this stream",
            ))
    }

    /// Which of the plugin's fds 0, 1, 2 is the pseudo-terminal's slave, for the child's
    /// controlling-terminal step (the kernel then sends the plugin's foreground process
    /// group SIGINT, SIGQUIT and SIGTSTP for the typed characters, and SIGWINCH on a resize).
    pub(crate) fn terminal_fd(&self) -> Option<usize> {
        self.ctty
    }

    /// Starts the relays once the plugin runs. `init` is the sandbox init's pidfd (kept for
    /// a terminal without the controlling-terminal step, which has none today: the plugin
    /// always takes the slave as its controlling terminal).
    ///
    /// Returns the guard that stops them all (and gives the caller's terminal its modes
    /// back) when dropped, and one task per output relay that completes when that relay has
    /// delivered everything the plugin wrote (or stopped).
    pub(crate) fn start(
        self,
        init: BorrowedFd<'_>,
    ) -> Result<(Relays, Vec<tokio::task::JoinHandle<()>>), Error> {
        let mut done = Vec::new();
        if self.pending.is_empty() && self.pty.is_none() {
            return Ok((Relays::default(), done));
        }
        let (stop_r, stop_w) = pipe()?;
        let stop_r = Arc::new(stop_r);
        let mut relays = Relays {
            stop: Some(stop_w),
            raw: None,
            winsize: None,
        };
        let spawn_err = |what: &str, e: std::io::Error| Error::host(format!("{what} relay"), e);
        for p in self.pending {
            match p {
                Pending::Input { src, dst } => {
                    relay::spawn("stdin-relay", src, dst, Ours::Dst, stop_r.clone(), None)
                        .map_err(|e| spawn_err("stdin", e))?;
                }
                Pending::Output { fd, src, dst } => {
                    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
                    let name = if fd == 1 {
                        "stdout-relay"
                    } else {
                        "stderr-relay"
                    };
                    relay::spawn(name, src, dst, Ours::Src, stop_r.clone(), Some(tx))
                        .map_err(|e| spawn_err(NAMES[fd], e))?;
                    done.push(tokio::spawn(async move {
                        let _ = rx.await;
                    }));
                }
            }
        }
        if let Some(p) = self.pty {
            // The slave is the plugin's controlling terminal (see `terminal_fd`): its line
            // discipline signals the plugin itself; the proxy must not signal it twice.
            let init = match self.ctty {
                Some(_) => None,
                None => Some(
                    init.try_clone_to_owned()
                        .map_err(|e| Error::host("duplicating the init's pidfd", e))?,
                ),
            };
            let (tx, rx) = tokio::sync::oneshot::channel::<()>();
            let started = p
                .start(init, stop_r.clone(), tx)
                .map_err(|e| Error::host("terminal proxy", e))?;
            relays.raw = started.raw;
            relays.winsize = started.winsize;
            done.push(tokio::spawn(async move {
                let _ = rx.await;
            }));
        }
        Ok((relays, done))
    }
}

/// The running relays of one sandbox: dropping it stops every one of them (what they had not
/// delivered yet is dropped) and gives the caller's terminal back the modes it had, if the
/// proxy changed them. A relay also ends on its own with the sandbox.
#[derive(Default)]
pub(crate) struct Relays {
    /// The stop pipe's write end: its closing wakes every relay thread.
    stop: Option<OwnedFd>,
    /// The caller's terminal in raw mode, for an interactive session.
    raw: Option<Arc<pty::RawMode>>,
    /// The task that follows the caller's window size (SIGWINCH).
    winsize: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for Relays {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.winsize.take() {
            t.abort();
        }
        if let Some(r) = self.raw.take() {
            r.restore();
        }
    }
}

/// A CLOEXEC pipe, both ends numbered above 2.
fn pipe() -> Result<(OwnedFd, OwnedFd), Error> {
    let (r, w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
        .map_err(|e| Error::host("pipe2", e))?;
    Ok((above2(r)?, above2(w)?))
}

/// `/dev/null` for reading, CLOEXEC, above 2.
fn dev_null() -> Result<OwnedFd, Error> {
    let fd = rustix::fs::open(
        "/dev/null",
        rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )
    .map_err(|e| Error::host("/dev/null", e))?;
    above2(fd)
}

/// Moves an fd above 2 (the child `dup2`s its stdio onto 0, 1, 2 and must not overwrite a
/// source it still needs).
fn above2(fd: OwnedFd) -> Result<OwnedFd, Error> {
    if fd.as_raw_fd() > 2 {
        return Ok(fd);
    }
    above2_dup(fd.as_fd())
}

fn above2_dup(fd: BorrowedFd<'_>) -> Result<OwnedFd, Error> {
    rustix::io::fcntl_dupfd_cloexec(fd, 3)
        .map_err(|e| Error::host(format!("duplicating fd {}", fd.as_raw_fd()), e))
}

/// A CLOEXEC duplicate (above 2) of the caller's fd `fd`.
fn dup_above2(fd: RawFd) -> Result<OwnedFd, Error> {
    // SAFETY: the fd is only duplicated; it was checked open just before.
    above2_dup(unsafe { BorrowedFd::borrow_raw(fd) })
}

/// Blocks every signal in the calling thread: a relay thread never runs a host's handler,
/// gets EPIPE instead of a process-wide SIGPIPE, and EIO instead of being stopped when it
/// reads a terminal from a background process group.
fn block_signals() {
    let _ = nix::sys::signal::pthread_sigmask(
        nix::sys::signal::SigmaskHow::SIG_SETMASK,
        Some(&nix::sys::signal::SigSet::all()),
        None,
    );
}
