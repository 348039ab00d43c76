//! The caller's own stdio is never the plugin's (issue 12, part 2), as root through the CLI.
//!
//! Denial probes: each one does what a hostile plugin did when it held its caller's pipe or
//! terminal (write into the caller's stdin pipe, read the caller's stdout pipe, read what is
//! typed on the caller's terminal, change that terminal's modes) and asserts that it reached
//! nothing of the caller's; each also checks that the probe itself ran and succeeded on what
//! the plugin does hold, so that a probe that cannot fail is caught. Then the functional side:
//! bytes through the relays exactly, end of file and EPIPE both ways, exit statuses, an
//! interactive session on a pseudo-terminal (echo, end of file, interrupt, window size).
//!
//! The tests that need a terminal make one: `openpty`, its slave as `sandbox-run`'s stdin
//! and stdout (never its controlling terminal), its master read and written by the test as
//! the "user".

mod common;
use common::*;

use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A pipe: (read end, write end).
fn pipe() -> (OwnedFd, OwnedFd) {
    nix::unistd::pipe().unwrap()
}

fn dup(fd: BorrowedFd<'_>) -> OwnedFd {
    fd.try_clone_to_owned().unwrap()
}

/// A `sandbox-run` child that is killed and reaped if the test fails before it ends, so a
/// failed case leaves nothing running.
struct Run(Child);

impl std::ops::Deref for Run {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for Run {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// Waits for `c` at most `limit` (a liveness bound, not a timing assertion), killing it and
/// failing the test when it runs longer.
fn wait_bounded(c: &mut Child, limit: Duration, what: &str) -> std::process::ExitStatus {
    let t = Instant::now();
    loop {
        if let Some(s) = c.try_wait().unwrap() {
            return s;
        }
        if t.elapsed() > limit {
            let _ = c.kill();
            let _ = c.wait();
            panic!("{what}: sandbox-run still running after {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Reads `fd` (made non-blocking) until `done` holds for what was read or `limit` passes;
/// returns all that was read.
fn read_until(fd: BorrowedFd<'_>, limit: Duration, done: impl Fn(&str) -> bool) -> String {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    let t = Instant::now();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !done(&String::from_utf8_lossy(&got)) && t.elapsed() < limit {
        let mut p = [PollFd::new(fd, PollFlags::POLLIN)];
        let _ = poll(&mut p, PollTimeout::from(50u16));
        match nix::unistd::read(fd, &mut buf) {
            Ok(0) => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(nix::errno::Errno::EAGAIN) => {}
            // EIO: the pty's slave has no holder left.
            Err(_) => break,
        }
    }
    String::from_utf8_lossy(&got).into_owned()
}

fn set_nonblocking(fd: BorrowedFd<'_>) {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    let fl = OFlag::from_bits_truncate(fcntl(fd, FcntlArg::F_GETFL).unwrap());
    fcntl(fd, FcntlArg::F_SETFL(fl | OFlag::O_NONBLOCK)).unwrap();
}

/// A pseudo-terminal standing for the user's terminal: the test types on and reads from the
/// master; the slave becomes `sandbox-run`'s stdio.
struct Term {
    master: OwnedFd,
    slave: OwnedFd,
}

impl Term {
    fn new(rows: u16, cols: u16) -> Term {
        let ws = nix::pty::Winsize {
            ws_row: rows,
            ws_col: cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        let p = nix::pty::openpty(&ws, None).unwrap();
        // openpty's fds are not CLOEXEC: sandbox-run must not inherit the master (it would
        // keep the terminal from hanging up when the test ends).
        for fd in [p.master.as_fd(), p.slave.as_fd()] {
            use nix::fcntl::{fcntl, FcntlArg, FdFlag};
            fcntl(fd, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC)).unwrap();
        }
        set_nonblocking(p.master.as_fd());
        Term {
            master: p.master,
            slave: p.slave,
        }
    }

    /// `sandbox-run ARGS` with the slave as stdout and stderr, and as stdin unless `stdin`
    /// says otherwise.
    fn spawn(&self, args: &[&str], stdin: Option<Stdio>) -> Run {
        Run(Command::new(bin())
            .args(args)
            .stdin(stdin.unwrap_or_else(|| dup(self.slave.as_fd()).into()))
            .stdout(dup(self.slave.as_fd()))
            .stderr(dup(self.slave.as_fd()))
            .spawn()
            .unwrap())
    }

    fn type_(&self, s: &[u8]) {
        let mut f = std::fs::File::from(dup(self.master.as_fd()));
        f.write_all(s).unwrap();
    }

    fn read_until(&self, needle: &str, limit: Duration) -> String {
        read_until(self.master.as_fd(), limit, |s| s.contains(needle))
    }

    fn rdev(&self) -> u64 {
        nix::sys::stat::fstat(self.slave.as_fd()).unwrap().st_rdev
    }

    fn modes(&self) -> nix::sys::termios::Termios {
        nix::sys::termios::tcgetattr(self.slave.as_fd()).unwrap()
    }

    fn winsize(&self) -> (u16, u16) {
        let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
        // SAFETY: TIOCGWINSZ fills a struct winsize.
        let r = unsafe { libc::ioctl(self.slave.as_raw_fd(), libc::TIOCGWINSZ, &mut ws) };
        assert_eq!(r, 0);
        (ws.ws_row, ws.ws_col)
    }

    fn set_winsize(&self, rows: u16, cols: u16) {
        let ws = libc::winsize {
            ws_row: rows,
            ws_col: cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCSWINSZ reads a struct winsize.
        let r = unsafe { libc::ioctl(self.master.as_raw_fd(), libc::TIOCSWINSZ, &ws) };
        assert_eq!(r, 0);
    }
}

/// The modes that matter of a terminal, comparable.
fn modes_key(t: &nix::sys::termios::Termios) -> String {
    format!(
        "{:?} {:?} {:?} {:?} {:?}",
        t.input_flags, t.output_flags, t.control_flags, t.local_flags, t.control_chars
    )
}

// ------------------------------------------------------------------------------------
// Denial probes.
// ------------------------------------------------------------------------------------

#[test]
fn stdin_pipe_cannot_be_written_through_proc_self_fd() {
    let _g = serial();
    if !privileged() {
        return;
    }
    // The caller's stdin is a pipe the test also reads, after sandbox-run is done: what is
    // in it then must be only what the test wrote (the issue's `{ sandbox-run ...; cat; }`).
    let (r, w) = pipe();
    let before = HostState::take();
    let o = Command::new(bin())
        .args([
            "--",
            "sh",
            "-c",
            "echo INJECTED > /proc/self/fd/0 && echo wrote-ok",
        ])
        .stdin(dup(r.as_fd()))
        .output()
        .unwrap();
    before.assert_unchanged();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    // Control: the plugin could open its stdin for writing and wrote (to its own pipe).
    assert_eq!(stdout(&o), "wrote-ok\n", "{}", stderr(&o));
    let mut w = std::fs::File::from(w);
    w.write_all(b"from the test\n").unwrap();
    drop(w);
    let mut rest = String::new();
    std::fs::File::from(r).read_to_string(&mut rest).unwrap();
    assert_eq!(
        rest, "from the test\n",
        "the plugin wrote into its caller's stdin pipe"
    );
}

#[test]
fn stdout_pipe_cannot_be_read_through_proc_self_fd() {
    let _g = serial();
    if !privileged() {
        return;
    }
    // The caller's stdout pipe has a second writer (the test). The plugin reopens its stdout
    // for reading and reads for 2 s while the test writes ten lines into that pipe: the test
    // must get all ten back, and the plugin none.
    let probe = "import os, select, sys, time\n\
                 fd = os.open('/proc/self/fd/1', os.O_RDONLY | os.O_NONBLOCK)\n\
                 print('ready', file=sys.stderr, flush=True)\n\
                 got = b''\n\
                 end = time.time() + 2\n\
                 while time.time() < end:\n\
                 \x20   if select.select([fd], [], [], 0.1)[0]:\n\
                 \x20       try:\n\
                 \x20           got += os.read(fd, 4096)\n\
                 \x20       except BlockingIOError:\n\
                 \x20           pass\n\
                 print('stolen=%r' % got, file=sys.stderr, flush=True)\n";
    let (r, w) = pipe();
    let before = HostState::take();
    let mut c = Run(Command::new(bin())
        .args(["--stdin", "null", "--", "python3", "-c", probe])
        .stdout(dup(w.as_fd()))
        .stderr(Stdio::piped())
        .spawn()
        .unwrap());
    let mut err = c.stderr.take().unwrap();
    let mut line = [0u8; 6];
    err.read_exact(&mut line).unwrap();
    assert_eq!(&line, b"ready\n");
    let mut w = std::fs::File::from(w);
    let mut sent = String::new();
    for i in 0..10 {
        let l = format!("LINE-{i}\n");
        w.write_all(l.as_bytes()).unwrap();
        sent.push_str(&l);
        std::thread::sleep(Duration::from_millis(50));
    }
    let mut rest = String::new();
    err.read_to_string(&mut rest).unwrap();
    let st = wait_bounded(&mut c, Duration::from_secs(30), "stdout probe");
    before.assert_unchanged();
    drop(w);
    let mut got = String::new();
    std::fs::File::from(r).read_to_string(&mut got).unwrap();
    assert!(st.success(), "{rest}");
    assert!(
        rest.contains("stolen=b''"),
        "the plugin read its caller's stdout pipe: {rest}"
    );
    assert_eq!(
        got, sent,
        "lines written to the caller's stdout went missing"
    );
}

#[test]
fn terminal_input_cannot_be_read_through_stdout() {
    let _g = serial();
    if !privileged() {
        return;
    }
    // The password theft: --stdin null, stdout on a terminal; the plugin opens
    // /proc/self/fd/1 for reading while the user types.
    let probe = "import os, select, time\n\
                 fd = os.open('/proc/self/fd/1', os.O_RDONLY | os.O_NONBLOCK)\n\
                 print('READY', flush=True)\n\
                 got = b''\n\
                 end = time.time() + 2\n\
                 while time.time() < end:\n\
                 \x20   if select.select([fd], [], [], 0.1)[0]:\n\
                 \x20       try:\n\
                 \x20           got += os.read(fd, 4096)\n\
                 \x20       except (BlockingIOError, OSError):\n\
                 \x20           pass\n\
                 print('GOT=%r' % got, flush=True)\n";
    let term = Term::new(24, 80);
    let before = HostState::take();
    let mut c = term.spawn(
        &["--stdin", "null", "--", "python3", "-c", probe],
        Some(Stdio::null()),
    );
    let out = term.read_until("READY", Duration::from_secs(20));
    assert!(out.contains("READY"), "{out}");
    term.type_(b"SECRET-PASSWORD\n");
    let out = term.read_until("GOT=", Duration::from_secs(20));
    let st = wait_bounded(&mut c, Duration::from_secs(30), "terminal probe");
    before.assert_unchanged();
    assert!(st.success(), "{out}");
    let got = out
        .lines()
        .find_map(|l| l.trim().strip_prefix("GOT="))
        .unwrap_or_else(|| panic!("no GOT= line: {out}"));
    assert_eq!(
        got, "b''",
        "the plugin read what was typed on its caller's terminal"
    );
}

#[test]
fn stdin_null_leaves_no_fd_to_the_callers_terminal() {
    let _g = serial();
    if !privileged() {
        return;
    }
    // stdin, stdout and stderr all on the terminal, --stdin null: no fd of the plugin may
    // be that terminal (same device number), yet stdout is a terminal.
    let probe = "import os\n\
                 fds = sorted(int(f) for f in os.listdir('/proc/self/fd'))\n\
                 for f in fds:\n\
                 \x20   try:\n\
                 \x20       print('FD', f, os.fstat(f).st_rdev)\n\
                 \x20   except OSError:\n\
                 \x20       pass\n\
                 print('TTY1', os.isatty(1), 'END')\n";
    let term = Term::new(24, 80);
    let before = HostState::take();
    let mut c = term.spawn(&["--stdin", "null", "--", "python3", "-c", probe], None);
    let out = term.read_until("END", Duration::from_secs(20));
    let st = wait_bounded(&mut c, Duration::from_secs(30), "fd listing");
    before.assert_unchanged();
    assert!(st.success(), "{out}");
    assert!(out.contains("TTY1 True"), "stdout is not a terminal: {out}");
    let rdevs: Vec<u64> = out
        .lines()
        .filter_map(|l| l.trim().strip_prefix("FD "))
        .filter_map(|l| l.split_whitespace().nth(1)?.parse().ok())
        .collect();
    assert!(rdevs.len() >= 3, "{out}");
    assert!(
        !rdevs.contains(&term.rdev()),
        "an fd of the plugin is its caller's terminal: {out}"
    );
}

#[test]
fn terminal_modes_flow_and_size_are_the_callers_after_exit() {
    let _g = serial();
    if !privileged() {
        return;
    }
    // An interactive session (stdin and stdout on the terminal). The plugin turns echo off,
    // resizes its terminal and stops its output (TCOOFF); afterwards the caller's terminal
    // must have its own modes and size, and pass output.
    let script = "stty -echo && stty rows 11 cols 33 && echo modes-changed && \
                  python3 -c 'import termios; termios.tcflow(1, termios.TCOOFF)' && \
                  echo stopped-ok > /dev/null";
    let term = Term::new(24, 80);
    let modes = modes_key(&term.modes());
    let before = HostState::take();
    let mut c = term.spawn(&["--", "sh", "-c", script], None);
    let out = term.read_until("modes-changed", Duration::from_secs(20));
    let st = wait_bounded(&mut c, Duration::from_secs(30), "terminal modes probe");
    before.assert_unchanged();
    // Control: the plugin changed the modes of the terminal it holds.
    assert!(out.contains("modes-changed"), "{out}");
    assert_eq!(st.code(), Some(0), "{out}");
    assert_eq!(
        modes_key(&term.modes()),
        modes,
        "the caller's terminal modes changed"
    );
    assert_eq!(term.winsize(), (24, 80), "the caller's window size changed");
    // Output is not stopped: a line written to the terminal reaches the master.
    let slave = dup(term.slave.as_fd());
    let writer = std::thread::spawn(move || {
        let _ = std::fs::File::from(slave).write_all(b"output-flows\n");
    });
    let out = term.read_until("output-flows", Duration::from_secs(5));
    assert!(
        out.contains("output-flows"),
        "the caller's terminal output stayed stopped: {out:?}"
    );
    writer.join().unwrap();
}

// ------------------------------------------------------------------------------------
// Pipes: bytes, end of file, EPIPE, exit statuses.
// ------------------------------------------------------------------------------------

/// 10 MiB of pseudo-random bytes (xorshift), so that any lost, duplicated or reordered
/// block shows.
fn random_bytes(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

#[test]
fn pipes_carry_bytes_exactly_both_ways() {
    let _g = serial();
    if !privileged() {
        return;
    }
    let before = HostState::take();
    for data in [b"data".to_vec(), random_bytes(10 << 20)] {
        let mut c = Command::new(bin())
            .args(["--", "cat"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut input = c.stdin.take().unwrap();
        let d = data.clone();
        let feeder = std::thread::spawn(move || input.write_all(&d).unwrap());
        let o = c.wait_with_output().unwrap();
        feeder.join().unwrap();
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        assert!(
            o.stdout == data,
            "{} bytes in, {} out, first difference at {:?}",
            data.len(),
            o.stdout.len(),
            o.stdout.iter().zip(&data).position(|(a, b)| a != b)
        );
    }
    // A regular file as stdin, and as stdout (relayed with splice too).
    let dir = tempfile::tempdir().unwrap();
    let (src, dst) = (dir.path().join("in"), dir.path().join("out"));
    let data = random_bytes(3 << 20);
    std::fs::write(&src, &data).unwrap();
    let st = Command::new(bin())
        .args(["--", "cat"])
        .stdin(std::fs::File::open(&src).unwrap())
        .stdout(std::fs::File::create(&dst).unwrap())
        .status()
        .unwrap();
    assert!(st.success());
    assert!(std::fs::read(&dst).unwrap() == data, "file to file differs");
    before.assert_unchanged();
}

#[test]
fn stdout_and_stderr_on_one_pipe_keep_their_order() {
    let _g = serial();
    if !privileged() {
        return;
    }
    // `2>&1`: one open file for both, so one relay, and the plugin's order is kept.
    let (r, w) = pipe();
    let st = Command::new(bin())
        .args([
            "--",
            "sh",
            "-c",
            "for i in 1 2 3 4 5; do echo out$i; echo err$i >&2; done",
        ])
        .stdin(Stdio::null())
        .stdout(dup(w.as_fd()))
        .stderr(dup(w.as_fd()))
        .status()
        .unwrap();
    drop(w);
    let mut got = String::new();
    std::fs::File::from(r).read_to_string(&mut got).unwrap();
    assert!(st.success());
    let want: String = (1..=5).map(|i| format!("out{i}\nerr{i}\n")).collect();
    assert_eq!(got, want);
}

#[test]
fn end_of_file_and_exit_statuses_pass_through() {
    let _g = serial();
    if !privileged() {
        return;
    }
    let before = HostState::take();
    // The caller's stdin ends: the plugin reads end of file.
    let mut c = Command::new(bin())
        .args(["--", "sh", "-c", "cat; echo EOF-SEEN; exit 3"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    c.stdin.take().unwrap().write_all(b"abc").unwrap();
    let o = c.wait_with_output().unwrap();
    assert_eq!(stdout(&o), "abcEOF-SEEN\n");
    assert_eq!(o.status.code(), Some(3));
    // The plugin ends while the caller's stdin stays open: sandbox-run does not wait for it.
    let (r, w) = pipe();
    let mut c = Run(Command::new(bin())
        .args(["--", "sh", "-c", "kill -9 $$"])
        .stdin(dup(r.as_fd()))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap());
    let st = wait_bounded(&mut c, Duration::from_secs(30), "stdin held open");
    assert_eq!(st.code(), Some(137));
    drop((r, w));
    before.assert_unchanged();
}

#[test]
fn a_closed_stdout_gives_the_plugin_sigpipe() {
    let _g = serial();
    if !privileged() {
        return;
    }
    let before = HostState::take();
    let mut c = Run(Command::new(bin())
        .args(["--", "yes"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap());
    let mut out = c.stdout.take().unwrap();
    let mut first = [0u8; 2];
    out.read_exact(&mut first).unwrap();
    assert_eq!(&first, b"y\n");
    drop(out);
    let st = wait_bounded(&mut c, Duration::from_secs(30), "yes with a closed stdout");
    before.assert_unchanged();
    // 128 + SIGPIPE, as `yes | head -1` without the sandbox.
    assert_eq!(st.code(), Some(128 + libc::SIGPIPE));
}

// ------------------------------------------------------------------------------------
// An interactive session on a pseudo-terminal.
// ------------------------------------------------------------------------------------

#[test]
fn interactive_session_echoes_ends_and_interrupts() {
    let _g = serial();
    if !privileged() {
        return;
    }
    let term = Term::new(24, 80);
    let modes = modes_key(&term.modes());
    let before = HostState::take();
    // Line editing, echo and end of file come from the plugin's terminal.
    let mut c = term.spawn(&["--", "sh", "-c", "echo ready; cat; echo cat-done"], None);
    assert!(term
        .read_until("ready", Duration::from_secs(20))
        .contains("ready"));
    term.type_(b"hello\n");
    let out = term.read_until("hello\r\nhello\r\n", Duration::from_secs(10));
    assert!(
        out.contains("hello\r\nhello\r\n"),
        "echo, then cat: {out:?}"
    );
    term.type_(b"\x04");
    let out = term.read_until("cat-done", Duration::from_secs(10));
    assert!(out.contains("cat-done"), "{out:?}");
    let st = wait_bounded(&mut c, Duration::from_secs(30), "cat on a terminal");
    assert_eq!(st.code(), Some(0));
    // Meanwhile the caller's terminal was in raw mode; now it has its modes back.
    assert_eq!(modes_key(&term.modes()), modes);
    // The interrupt character interrupts the plugin.
    let mut c = term.spawn(
        &[
            "--",
            "sh",
            "-c",
            "trap 'echo INTERRUPTED; exit 7' INT; echo ready; while :; do sleep 0.05; done",
        ],
        None,
    );
    assert!(term
        .read_until("ready", Duration::from_secs(20))
        .contains("ready"));
    term.type_(b"\x03");
    let out = term.read_until("INTERRUPTED", Duration::from_secs(10));
    let st = wait_bounded(&mut c, Duration::from_secs(30), "interrupt");
    assert!(out.contains("INTERRUPTED"), "{out:?}");
    assert_eq!(st.code(), Some(7));
    before.assert_unchanged();
    assert_eq!(modes_key(&term.modes()), modes);
}

#[test]
fn window_size_follows_the_callers_terminal() {
    let _g = serial();
    if !privileged() {
        return;
    }
    let term = Term::new(24, 80);
    let before = HostState::take();
    let mut c = term.spawn(
        &[
            "--",
            "sh",
            "-c",
            "stty size; while read line; do stty size; done",
        ],
        None,
    );
    assert!(term
        .read_until("24 80", Duration::from_secs(20))
        .contains("24 80"));
    term.set_winsize(40, 120);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(c.id() as i32),
        nix::sys::signal::Signal::SIGWINCH,
    )
    .unwrap();
    // The resize reaches the plugin's terminal asynchronously: ask until it shows.
    let t = Instant::now();
    let mut seen = String::new();
    while !seen.contains("40 120") && t.elapsed() < Duration::from_secs(10) {
        term.type_(b"\n");
        seen += &term.read_until("40 120", Duration::from_millis(200));
    }
    term.type_(b"\x04");
    let st = wait_bounded(&mut c, Duration::from_secs(30), "window size");
    before.assert_unchanged();
    assert!(seen.contains("40 120"), "{seen:?}");
    assert!(st.success());
}

#[test]
fn the_terminal_is_the_plugins_controlling_terminal_and_signals_it() {
    let _g = serial();
    if !privileged() {
        return;
    }
    let term = Term::new(24, 80);
    let before = HostState::take();
    // A session of its own, led by the plugin, whose foreground group it is.
    let mut c = term.spawn(
        &[
            "--",
            "python3",
            "-c",
            "import os; print('FG', os.tcgetpgrp(0) == os.getpgrp(), os.getsid(0) == os.getpid())",
        ],
        None,
    );
    let out = term.read_until("FG", Duration::from_secs(20));
    let out = out + &term.read_until("\n", Duration::from_secs(5));
    let st = wait_bounded(&mut c, Duration::from_secs(30), "controlling terminal");
    assert!(out.contains("FG True True"), "{out:?}");
    assert!(st.success());
    // A resize reaches the plugin as SIGWINCH from its terminal (the runner only sets the
    // size on its side of the pseudo-terminal).
    let mut c = term.spawn(
        &[
            "--",
            "sh",
            "-c",
            "trap 'echo WINCHED' WINCH; echo ready; while :; do sleep 0.05; done",
        ],
        None,
    );
    assert!(term
        .read_until("ready", Duration::from_secs(20))
        .contains("ready"));
    term.set_winsize(30, 100);
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(c.id() as i32),
        nix::sys::signal::Signal::SIGWINCH,
    )
    .unwrap();
    let out = term.read_until("WINCHED", Duration::from_secs(10));
    // ^C ends it through its terminal's line discipline.
    term.type_(b"\x03");
    let st = wait_bounded(&mut c, Duration::from_secs(30), "winch");
    before.assert_unchanged();
    assert!(out.contains("WINCHED"), "{out:?}");
    assert!(!st.success());
}
