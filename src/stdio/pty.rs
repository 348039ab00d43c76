//! The caller's terminal, proxied through a pseudo-terminal of the runner's (as `ssh -t` and
//! `script` do): the plugin's stdout (and stderr on the same terminal, and stdin in an
//! interactive session) is the slave; the runner copies the master's output to the caller's
//! terminal and, in an interactive session, what is typed on the caller's terminal to the
//! master. The plugin can reopen the slave as it likes: it leads to nothing of the caller's.
//!
//! - The slave starts with the caller terminal's modes and window size; the window size
//!   follows the caller's (SIGWINCH, then `TIOCSWINSZ` on the master).
//! - In an interactive session the caller's terminal is in raw mode while the plugin runs
//!   (every key goes to the slave, whose line discipline edits, echoes and ends lines), and
//!   gets its modes back, with output resumed (`TCOON`), when the session ends or the runner
//!   is dropped, whatever the plugin did to the slave.
//! - The slave is the plugin's controlling terminal (the child's `ctty` step), so its line
//!   discipline signals the plugin for `^C`, `^\`, `^Z` and resizes. Without that step the
//!   proxy would send the sandbox's init SIGINT or SIGQUIT when the slave's interrupt or
//!   quit character is typed while its `ISIG` is on (`signal_chars`, kept for that case).
//! - The session ends when every fd of the slave is closed (the sandbox ended): the master
//!   then reads `EIO`, after everything written to the slave.

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};

use nix::poll::PollFlags;
use rustix::io::Errno;
use rustix::pty::OpenptFlags;
use rustix::termios::{self, LocalModes, OptionalActions, SpecialCodeIndex, Termios};

use super::relay::{self, End};

/// A pseudo-terminal opened for a plugin that has not run yet.
pub(super) struct Pending {
    master: OwnedFd,
    slave: OwnedFd,
    /// The plugin's stdin is the slave too: the caller's terminal is read and put in raw mode.
    interactive: bool,
}

/// What [`Pending::start`] leaves to the runner's guard.
pub(super) struct Started {
    /// The caller's terminal in raw mode (interactive sessions only).
    pub raw: Option<Arc<RawMode>>,
    /// The task that follows the caller's window size.
    pub winsize: Option<tokio::task::JoinHandle<()>>,
}

/// The caller's fd `n`, borrowed.
fn caller(n: i32) -> BorrowedFd<'static> {
    // SAFETY: fds 0, 1 and 2 of the caller, checked open (and terminals) by the caller of this
    // module; only inspected or duplicated here.
    unsafe { BorrowedFd::borrow_raw(n) }
}

fn dup(n: i32) -> io::Result<OwnedFd> {
    Ok(rustix::io::fcntl_dupfd_cloexec(caller(n), 3)?)
}

impl Pending {
    /// Opens a pseudo-terminal (master and slave CLOEXEC, neither becoming anyone's
    /// controlling terminal) with the modes of the caller's terminal (its stdin's in an
    /// `interactive` session, else its stdout's) and the window size of its stdout.
    pub(super) fn open(interactive: bool) -> io::Result<Pending> {
        let flags = OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC;
        let master = rustix::pty::openpt(flags)?;
        rustix::pty::grantpt(&master)?;
        rustix::pty::unlockpt(&master)?;
        // The slave straight from the master (Linux 4.13), no path to resolve.
        let slave = match rustix::pty::ioctl_tiocgptpeer(&master, flags) {
            Ok(s) => s,
            Err(Errno::NOTTY | Errno::INVAL) => {
                let name = rustix::pty::ptsname(&master, Vec::new())?;
                let o = rustix::fs::OFlags::RDWR
                    | rustix::fs::OFlags::NOCTTY
                    | rustix::fs::OFlags::CLOEXEC;
                rustix::fs::open(name.as_c_str(), o, rustix::fs::Mode::empty())?
            }
            Err(e) => return Err(e.into()),
        };
        let modes_from = caller(if interactive { 0 } else { 1 });
        if let Ok(t) = termios::tcgetattr(modes_from) {
            termios::tcsetattr(&slave, OptionalActions::Now, &t)?;
        }
        if let Ok(ws) = termios::tcgetwinsize(caller(1)) {
            termios::tcsetwinsize(&master, ws)?;
        }
        Ok(Pending {
            master,
            slave,
            interactive,
        })
    }

    /// The slave, to duplicate for the plugin's fds.
    pub(super) fn slave(&self) -> BorrowedFd<'_> {
        self.slave.as_fd()
    }

    /// Starts the proxy: closes the runner's slave (the plugin holds its own copies), puts the
    /// caller's terminal in raw mode for an interactive session, and starts the threads and
    /// the window-size task. `done` is dropped when the session has ended, everything the
    /// plugin wrote has reached the caller's terminal, and that terminal has its modes back.
    pub(super) fn start(
        self,
        init: Option<OwnedFd>,
        stop: Arc<OwnedFd>,
        done: tokio::sync::oneshot::Sender<()>,
    ) -> io::Result<Started> {
        let Pending {
            master,
            slave,
            interactive,
        } = self;
        drop(slave);
        rustix::io::ioctl_fionbio(&master, true)?;
        let master = Arc::new(master);
        let out = dup(1)?;
        let raw = if interactive {
            match RawMode::enter(dup(0)?) {
                Ok(r) => Some(Arc::new(r)),
                Err(e) => {
                    tracing::warn!(error = %e, "cannot put the terminal in raw mode");
                    None
                }
            }
        } else {
            None
        };
        // The input thread, stopped by the output thread when the session ends.
        let input = if interactive {
            let (in_stop_r, in_stop_w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?;
            let src = dup(0)?;
            let (m, s) = (master.clone(), stop.clone());
            let h = std::thread::Builder::new()
                .name("pty-input".into())
                .stack_size(128 * 1024)
                .spawn(move || {
                    super::block_signals();
                    let end = copy_input(
                        src.as_fd(),
                        &m,
                        init.as_ref(),
                        &[s.as_fd(), in_stop_r.as_fd()],
                    );
                    end.log("pty-input");
                })?;
            Some((h, in_stop_w))
        } else {
            None
        };
        let weak = Arc::downgrade(&master);
        let raw2 = raw.clone();
        std::thread::Builder::new()
            .name("pty-output".into())
            .stack_size(128 * 1024)
            .spawn(move || {
                super::block_signals();
                let end = copy_output(&master, out.as_fd(), stop.as_fd());
                end.log("pty-output");
                if let Some((h, in_stop)) = input {
                    drop(in_stop);
                    let _ = h.join();
                }
                if let Some(r) = raw2 {
                    r.restore();
                }
                // The last reference: the slave is hung up if the plugin still holds it.
                drop(master);
                drop(out);
                drop(done);
            })?;
        Ok(Started {
            raw,
            winsize: follow_winsize(weak),
        })
    }
}

/// Copies the master's output to the caller's terminal until the slave is closed (`EIO`
/// once all is read) or the proxy is stopped.
fn copy_output(master: &OwnedFd, out: BorrowedFd<'_>, stop: BorrowedFd<'_>) -> End {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match rustix::io::read(master, &mut buf) {
            Ok(0) | Err(Errno::IO) => return End::Eof,
            Ok(n) => {
                if let Err(end) = relay::write_all(out, &buf[..n], &[stop]) {
                    return end;
                }
            }
            Err(Errno::AGAIN) => {
                if let Err(end) = relay::wait(master.as_fd(), PollFlags::POLLIN, None, &[stop]) {
                    return end;
                }
            }
            Err(Errno::INTR) => {}
            Err(e) => return End::Failed(e.into()),
        }
    }
}

/// Copies what is typed on the caller's terminal to the master until the slave is closed,
/// the caller's terminal ends, or the proxy is stopped.
fn copy_input(
    src: BorrowedFd<'_>,
    master: &OwnedFd,
    init: Option<&OwnedFd>,
    stops: &[BorrowedFd<'_>],
) -> End {
    let mut buf = vec![0u8; 4096];
    loop {
        if let Err(end) = relay::wait(src, PollFlags::POLLIN, Some(master.as_fd()), stops) {
            return end;
        }
        let n = match rustix::io::read(src, &mut buf) {
            Ok(0) => return End::Eof,
            Ok(n) => n,
            Err(Errno::AGAIN | Errno::INTR) => continue,
            Err(e) => return End::Failed(e.into()),
        };
        if let Some(init) = init {
            signal_chars(master, init, &buf[..n]);
        }
        if let Err(end) = relay::write_all(master.as_fd(), &buf[..n], stops) {
            return end;
        }
    }
}

/// Sends the init SIGINT or SIGQUIT for each interrupt or quit character in `typed`, when
/// the slave's `ISIG` is on: what the line discipline does for a controlling terminal's
/// foreground process group (the slave's modes are read through the master).
fn signal_chars(master: &OwnedFd, init: &OwnedFd, typed: &[u8]) {
    let Ok(t) = termios::tcgetattr(master) else {
        return;
    };
    if !t.local_modes.contains(LocalModes::ISIG) {
        return;
    }
    let intr = t.special_codes[SpecialCodeIndex::VINTR];
    let quit = t.special_codes[SpecialCodeIndex::VQUIT];
    for &b in typed {
        // 0 is _POSIX_VDISABLE: the character is off.
        let sig = match b {
            0 => continue,
            b if b == intr => rustix::process::Signal::INT,
            b if b == quit => rustix::process::Signal::QUIT,
            _ => continue,
        };
        let _ = rustix::process::pidfd_send_signal(init, sig);
    }
}

/// Follows the caller's window size: on each SIGWINCH, the size of the caller's terminal
/// (its stdout) is set on the master. `None` when the runtime cannot watch the signal.
fn follow_winsize(master: Weak<OwnedFd>) -> Option<tokio::task::JoinHandle<()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let tty = dup(1).ok()?;
    let mut sig = match signal(SignalKind::window_change()) {
        Ok(s) => s,
        Err(e) => {
            tracing::debug!(error = %e, "the window size will not follow the terminal's");
            return None;
        }
    };
    let sync = move |tty: &OwnedFd| -> bool {
        let Some(m) = master.upgrade() else {
            return false;
        };
        if let Ok(ws) = termios::tcgetwinsize(tty) {
            let _ = termios::tcsetwinsize(&*m, ws);
        }
        true
    };
    // A change between opening the pseudo-terminal and now.
    sync(&tty);
    Some(tokio::spawn(async move {
        while sig.recv().await.is_some() {
            if !sync(&tty) {
                break;
            }
        }
    }))
}

/// The caller's terminal in raw mode, with the modes to give back.
pub(super) struct RawMode {
    fd: OwnedFd,
    saved: Termios,
    restored: AtomicBool,
}

impl RawMode {
    /// Puts the terminal `fd` in raw mode (`cfmakeraw`): no echo, no line editing, no signal
    /// characters, no output processing; the slave does all of that.
    fn enter(fd: OwnedFd) -> io::Result<RawMode> {
        let saved = termios::tcgetattr(&fd)?;
        let mut raw = saved.clone();
        raw.make_raw();
        termios::tcsetattr(&fd, OptionalActions::Now, &raw)?;
        Ok(RawMode {
            fd,
            saved,
            restored: AtomicBool::new(false),
        })
    }

    /// Gives the terminal its modes back and resumes its output (`TCOON`); once.
    pub(super) fn restore(&self) {
        if self.restored.swap(true, Ordering::SeqCst) {
            return;
        }
        let _ = termios::tcsetattr(&self.fd, OptionalActions::Now, &self.saved);
        let _ = termios::tcflow(&self.fd, termios::Action::OOn);
    }
}
