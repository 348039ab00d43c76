//! Creating a sandbox: `clone3` into new namespaces, then the child-side steps up to `execve`.
//!
//! Everything in this file that runs in the child (`child_main` and what it calls) runs in a
//! copy of a multi-threaded process, so it is restricted to async-signal-safe work: raw system
//! calls on data the parent prepared in a [`Plan`], no allocation, no locks, no panics. A
//! failing step writes a fixed-size `(step, errno)` record to a `CLOEXEC` pipe and exits; the
//! parent turns the record into [`crate::Error::Setup`].
//!
//! Process layout: the cloned child becomes the sandbox's init (PID 1 of the new PID
//! namespace, see [`crate::pid`]); it forks the plugin, which finishes its own steps and
//! `execve`s.

use libc::c_int;
use nix::errno::Errno;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock};

use crate::plan::Plan;
use crate::{mnt, net, pid, uts};

/// A setup step of the child, reported with its errno when it fails.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum Step {
    /// `prctl(PR_SET_PDEATHSIG)` on the init.
    DeathSignal = 1,
    /// Wiring the stdio pipes to fds 0, 1, 2.
    Stdio = 2,
    /// Closing every fd the caller leaked (`close_range`).
    CloseFds = 3,
    /// Waiting for the parent's go-ahead on the sync pipe.
    WaitParent = 4,
    /// `setsid` for a new session without a controlling terminal.
    Setsid = 5,
    /// Making mount propagation private (`MS_REC|MS_PRIVATE` on `/`).
    MountPrivate = 6,
    /// Mounting a fresh `/proc` for the new PID namespace.
    MountProc = 7,
    /// `sethostname` in the new UTS namespace.
    Hostname = 8,
    /// Bringing the loopback interface up in the new network namespace.
    Loopback = 9,
    /// Resetting and masking signals.
    Signals = 10,
    /// Forking the plugin from the init.
    Fork = 11,
    /// `chdir` to the plugin's working directory.
    Chdir = 12,
    /// Handing the profile's `pass_fds` to the plugin.
    PassFds = 13,
    /// `execve` of the plugin.
    Exec = 14,
    /// `PR_SET_DUMPABLE` 0 on the init, so the plugin cannot ptrace it or read its memory.
    Dumpable = 15,
    /// Mounting the tmpfs that becomes the private root.
    RootTmpfs = 16,
    /// `pivot_root` into the private root.
    PivotRoot = 17,
    /// One entry of the private root (creating its mount point, mounting, setting flags).
    Mount = 18,
    /// Detaching the host's old root.
    DetachOldRoot = 19,
    /// Making the private root's own tmpfs read-only.
    RootReadOnly = 20,
    /// Dropping capabilities (bounding, ambient, then capset).
    Capabilities = 21,
    /// `PR_SET_NO_NEW_PRIVS`.
    NoNewPrivs = 22,
    /// Building and enforcing the Landlock ruleset (the failing rule's index).
    Landlock = 23,
    /// Setting the profile's resource limits (the failing resource).
    Rlimits = 24,
    /// Installing the seccomp filter.
    Seccomp = 25,
}

impl Step {
    const ALL: [Step; 25] = [
        Step::DeathSignal,
        Step::Stdio,
        Step::CloseFds,
        Step::WaitParent,
        Step::Setsid,
        Step::MountPrivate,
        Step::MountProc,
        Step::Hostname,
        Step::Loopback,
        Step::Signals,
        Step::Fork,
        Step::Chdir,
        Step::PassFds,
        Step::Exec,
        Step::Dumpable,
        Step::RootTmpfs,
        Step::PivotRoot,
        Step::Mount,
        Step::DetachOldRoot,
        Step::RootReadOnly,
        Step::Capabilities,
        Step::NoNewPrivs,
        Step::Landlock,
        Step::Rlimits,
        Step::Seccomp,
    ];

    /// Decodes a step number read from the error pipe.
    pub fn from_u32(v: u32) -> Option<Step> {
        Step::ALL.iter().copied().find(|s| *s as u32 == v)
    }

    /// A short description for error messages.
    pub fn describe(&self) -> &'static str {
        match self {
            Step::DeathSignal => "set parent-death signal",
            Step::Stdio => "connect stdio",
            Step::CloseFds => "close inherited fds",
            Step::WaitParent => "wait for the host",
            Step::Setsid => "new session",
            Step::MountPrivate => "make mounts private",
            Step::MountProc => "mount /proc",
            Step::Hostname => "set hostname",
            Step::Loopback => "bring up loopback",
            Step::Signals => "reset signals",
            Step::Fork => "fork the plugin",
            Step::Chdir => "change directory",
            Step::PassFds => "pass fds",
            Step::Exec => "execute the plugin",
            Step::Dumpable => "make the init non-dumpable",
            Step::RootTmpfs => "mount the private root",
            Step::PivotRoot => "pivot_root",
            Step::Mount => "mount",
            Step::DetachOldRoot => "detach the host root",
            Step::RootReadOnly => "make the root read-only",
            Step::Capabilities => "drop capabilities",
            Step::NoNewPrivs => "set no_new_privs",
            Step::Landlock => "enforce the Landlock rules",
            Step::Rlimits => "set resource limits",
            Step::Seccomp => "install the seccomp filter",
        }
    }
}

/// The record a failing child step writes to the error pipe.
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct StepError {
    pub step: u32,
    pub errno: i32,
    /// Which item of the step failed (the mount entry's index), or 0.
    pub arg: u32,
}

/// Size of a [`StepError`] on the pipe.
pub(crate) const STEP_ERROR_LEN: usize = std::mem::size_of::<StepError>();

/// The fds the child works with, all numbers decided in the parent before the clone.
#[derive(Clone, Copy, Debug)]
pub(crate) struct ChildFds {
    /// Fd to put on 0, or -1 to keep the caller's stdin.
    pub stdin: RawFd,
    /// Fd to put on 1.
    pub stdout: RawFd,
    /// Fd to put on 2.
    pub stderr: RawFd,
    /// Write end of the error pipe (`CLOEXEC`).
    pub err_w: RawFd,
    /// Write end of the status pipe: the init writes the plugin's wait status there.
    pub status_w: RawFd,
    /// Read end of the sync pipe: the child waits for one byte before it goes on.
    pub sync_r: RawFd,
    /// The parent's write end of the sync pipe, closed in the child.
    pub sync_w: RawFd,
    /// Sorted fds >= 3 the init keeps open (err_w, status_w, sync_r, pass_fds).
    pub init_keep: FdList,
    /// Sorted fds >= 3 the plugin keeps open until its execve (err_w, pass_fds).
    pub plugin_keep: FdList,
    /// The host process's pid as `/proc` shows it (-1: not shown): the child checks that its
    /// parent still is the host once its death signal is armed.
    pub host_pid: i32,
}

impl ChildFds {
    /// The fds the init keeps.
    pub fn init_keep(&self) -> &[RawFd] {
        self.init_keep.as_slice()
    }

    /// The fds the plugin keeps.
    pub fn plugin_keep(&self) -> &[RawFd] {
        self.plugin_keep.as_slice()
    }
}

/// A fixed-capacity, sorted list of fds, built in the parent and read in the child.
#[derive(Clone, Copy, Debug)]
pub(crate) struct FdList {
    fds: [RawFd; KEEP_MAX],
    len: usize,
}

impl FdList {
    /// Sorts and deduplicates `fds` (at most [`KEEP_MAX`] of them).
    pub fn new(fds: &[RawFd]) -> Self {
        let mut v: Vec<RawFd> = fds.to_vec();
        v.sort_unstable();
        v.dedup();
        assert!(v.len() <= KEEP_MAX, "too many fds to keep");
        let mut out = FdList {
            fds: [0; KEEP_MAX],
            len: v.len(),
        };
        out.fds[..v.len()].copy_from_slice(&v);
        out
    }

    /// The fds, sorted. Async-signal-safe (`get` cannot panic).
    pub fn as_slice(&self) -> &[RawFd] {
        self.fds.get(..self.len).unwrap_or(&[])
    }
}

/// Capacity of [`ChildFds::keep`].
pub(crate) const KEEP_MAX: usize = crate::profile::MAX_PASS_FDS + 4;

/// Writes the failing step and errno to the error pipe and exits the child.
///
/// # Safety
/// Child-side only; async-signal-safe.
pub(crate) unsafe fn fail(err_w: RawFd, step: Step, errno: Errno) -> ! {
    fail_at(err_w, step, 0, errno)
}

/// Like [`fail`], naming item `arg` of the step (e.g. the index of a mount entry).
///
/// # Safety
/// Child-side only; async-signal-safe.
pub(crate) unsafe fn fail_at(err_w: RawFd, step: Step, arg: u32, errno: Errno) -> ! {
    let rec = StepError {
        step: step as u32,
        errno: errno as i32,
        arg,
    };
    libc::write(
        err_w,
        (&rec as *const StepError).cast(),
        STEP_ERROR_LEN as libc::size_t,
    );
    libc::_exit(125)
}

/// `Err(errno)` when a libc call returned -1.
///
/// # Safety
/// Async-signal-safe: reads `errno` only.
#[inline(always)]
pub(crate) fn check(ret: c_int) -> Result<c_int, Errno> {
    if ret == -1 {
        Err(Errno::last())
    } else {
        Ok(ret)
    }
}

/// This process's parent pid as the host sees it (field 4 of the host's `/proc/self/stat`),
/// or -1 when it cannot be read. Async-signal-safe: a stack buffer, no allocation.
///
/// # Safety
/// Child-side; plain syscalls on a local buffer.
unsafe fn parent_in_host_view() -> i32 {
    let fd = libc::open(
        c"/proc/self/stat".as_ptr(),
        libc::O_RDONLY | libc::O_CLOEXEC,
    );
    if fd < 0 {
        return -1;
    }
    let mut buf = [0u8; 512];
    let n = libc::read(fd, buf.as_mut_ptr().cast(), buf.len());
    libc::close(fd);
    if n <= 0 {
        return -1;
    }
    let line = &buf[..n as usize];
    // "pid (comm) S ppid ...": the command may hold spaces and ')', so count after the last.
    let Some(close) = line.iter().rposition(|&b| b == b')') else {
        return -1;
    };
    let mut fields = line[close + 1..]
        .split(|&b| b == b' ')
        .filter(|f| !f.is_empty());
    let _state = fields.next();
    let Some(ppid) = fields.next() else {
        return -1;
    };
    let mut v: i32 = 0;
    for &d in ppid {
        if !d.is_ascii_digit() {
            return -1;
        }
        v = v.saturating_mul(10).saturating_add((d - b'0') as i32);
    }
    v
}

/// The init's steps, in the order the kernel needs them, then the init loop.
///
/// # Safety
/// Runs in the freshly cloned child; async-signal-safe; never returns.
unsafe fn child_main(plan: &Plan, fds: &ChildFds) -> ! {
    let e = fds.err_w;
    // Die with the spawner thread (unless detached). A host that died before this prctl
    // sends no signal: the parent check right below closes that race.
    if !plan.detach {
        if let Err(err) = check(libc::prctl(
            libc::PR_SET_PDEATHSIG,
            libc::SIGKILL as libc::c_ulong,
            0,
            0,
            0,
        )) {
            fail(e, Step::DeathSignal, err)
        }
    }
    // The host may have died before the death signal was armed: then no signal comes, and
    // (with the whole host SIGKILLed) the child has been handed to a subreaper. In a new PID
    // namespace getppid() says 0, but the host's /proc is still mounted here and tells our
    // parent in the host's view: it must still be the host.
    if !plan.detach && fds.host_pid > 0 && parent_in_host_view() != fds.host_pid {
        libc::_exit(125);
    }
    // Nothing in the sandbox may ptrace the init or read its memory (a copy of the host's).
    // Rootless: not before the wait below, because a non-dumpable process's /proc files
    // belong to (global) root, and the unprivileged host could not write our uid_map.
    if !plan.userns {
        if let Err(err) = check(libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0)) {
            fail(e, Step::Dumpable, err)
        }
    }
    libc::close(fds.sync_w);
    if let Err(err) = connect_stdio(fds) {
        fail(e, Step::Stdio, err)
    }
    if let Err(err) = close_all_but(fds.init_keep()) {
        fail(e, Step::CloseFds, err)
    }
    // Wait for the host: it may still have to place us (cgroups) and, rootless, write our
    // uid/gid maps before anything runs.
    let mut go = 0u8;
    loop {
        let n = libc::read(fds.sync_r, (&mut go as *mut u8).cast(), 1);
        if n == 1 {
            break;
        }
        if n == 0 {
            // The host died before it let us go: nobody is there to run for.
            libc::_exit(125);
        }
        let err = Errno::last();
        if err != Errno::EINTR {
            fail(e, Step::WaitParent, err)
        }
    }
    libc::close(fds.sync_r);
    // Rootless: the host has written our uid/gid maps (root here is the caller outside);
    // nothing of the sandbox has run yet, so this is as early as it needs to be.
    if plan.userns {
        if let Err(err) = check(libc::prctl(libc::PR_SET_DUMPABLE, 0, 0, 0, 0)) {
            fail(e, Step::Dumpable, err)
        }
    }
    if plan.new_session {
        if let Err(err) = check(libc::setsid()) {
            fail(e, Step::Setsid, err)
        }
    }
    if plan.ns.mount {
        if let Err(err) = mnt::make_private(plan) {
            fail(e, Step::MountPrivate, err)
        }
        if plan.private_root {
            mnt::setup_root(plan, e);
        } else if plan.ns.pid {
            if let Err(err) = mnt::mount_proc(plan) {
                fail(e, Step::MountProc, err)
            }
        }
    }
    if plan.ns.uts {
        if let Err(err) = uts::set_hostname(plan) {
            fail(e, Step::Hostname, err)
        }
    }
    if plan.ns.net {
        if let Err(err) = net::loopback_up() {
            fail(e, Step::Loopback, err)
        }
    }
    pid::run_init(plan, fds)
}

/// Puts the stdio pipes on 0, 1, 2. Their source fds are all >= 3 (the parent made sure),
/// so no `dup2` overwrites a source still needed.
unsafe fn connect_stdio(fds: &ChildFds) -> Result<(), Errno> {
    if fds.stdin >= 0 {
        check(libc::dup2(fds.stdin, 0))?;
    }
    check(libc::dup2(fds.stdout, 1))?;
    check(libc::dup2(fds.stderr, 2))?;
    Ok(())
}

/// Closes every fd >= 3 except the sorted list `keep`, with `close_range` over the gaps.
///
/// # Safety
/// Async-signal-safe.
pub(crate) unsafe fn close_all_but(keep: &[RawFd]) -> Result<(), Errno> {
    let mut next: u32 = 3;
    for &k in keep {
        let k = k as u32;
        if k > next {
            close_range(next, k - 1)?;
        }
        if k >= next {
            next = k + 1;
        }
    }
    close_range(next, u32::MAX)
}

unsafe fn close_range(first: u32, last: u32) -> Result<(), Errno> {
    let r = libc::syscall(libc::SYS_close_range, first, last, 0u32);
    if r == -1 {
        Err(Errno::last())
    } else {
        Ok(())
    }
}

/// `CLONE_INTO_CGROUP` (Linux 5.7).
const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// The kernel's `struct clone_args` (Linux 5.7 layout, with `set_tid` and `cgroup`).
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

/// The result of a clone: the init's host pid and a pidfd for it.
pub(crate) struct Spawned {
    /// Host pid of the init (informational; every action goes through `pidfd`).
    pub pid: i32,
    /// A pidfd of the init, `CLOEXEC`.
    pub pidfd: OwnedFd,
    /// The spawner has let the child go already (see `spawn`'s `release`).
    pub released: bool,
}

/// Clones the init with `plan`'s namespace flags. Called on the spawner thread only.
///
/// # Safety
/// `fds` must describe open fds of this process; the child never returns.
unsafe fn clone_init(plan: &Plan, fds: &ChildFds, cgroup: Option<RawFd>) -> Result<Spawned, Errno> {
    let mut pidfd: c_int = -1;
    let mut args = CloneArgs {
        flags: plan.clone_flags | libc::CLONE_PIDFD as u64,
        pidfd: (&mut pidfd as *mut c_int) as u64,
        exit_signal: libc::SIGCHLD as u64,
        ..Default::default()
    };
    // cgroup v2: the child is born in the sandbox's cgroup (Linux 5.7+), so not one
    // instruction of it runs outside its limits.
    if let Some(fd) = cgroup {
        args.flags |= CLONE_INTO_CGROUP;
        args.cgroup = fd as u64;
    }
    let r = libc::syscall(
        libc::SYS_clone3,
        &args as *const CloneArgs,
        std::mem::size_of::<CloneArgs>(),
    );
    if r == 0 {
        child_main(plan, fds)
    }
    if r > 0 {
        return Ok(Spawned {
            pid: r as i32,
            pidfd: OwnedFd::from_raw_fd(pidfd),
            released: false,
        });
    }
    let err = Errno::last();
    if err != Errno::ENOSYS || cgroup.is_some() {
        // Without clone3 there is no CLONE_INTO_CGROUP: refuse rather than start a child
        // outside its cgroup.
        return Err(err);
    }
    // Kernels before 5.3 have no clone3: plain clone, then pidfd_open. Nothing else reaps
    // our child, so its pid cannot be reused before the pidfd is taken.
    let r = libc::syscall(
        libc::SYS_clone,
        plan.clone_flags as libc::c_ulong | libc::SIGCHLD as libc::c_ulong,
        0usize,
        0usize,
        0usize,
        0usize,
    );
    if r == 0 {
        child_main(plan, fds)
    }
    if r < 0 {
        return Err(Errno::last());
    }
    let pid = r as i32;
    match rustix::process::pidfd_open(
        rustix::process::Pid::from_raw(pid).expect("clone returned a positive pid"),
        rustix::process::PidfdFlags::empty(),
    ) {
        Ok(fd) => Ok(Spawned {
            pid,
            pidfd: fd,
            released: false,
        }),
        Err(e) => {
            libc::kill(pid, libc::SIGKILL);
            let mut st = 0;
            libc::waitpid(pid, &mut st, 0);
            Err(Errno::from_raw(e.raw_os_error()))
        }
    }
}

/// Where the spawner makes a sandbox's init be born.
pub(crate) enum Placement {
    /// cgroup v2: `clone3(CLONE_INTO_CGROUP)` with this directory fd.
    IntoCgroup(OwnedFd),
    /// cgroup v1: the spawner thread moves itself into the sandbox's cgroups, clones (the
    /// child inherits the thread's cgroups), and moves back.
    MoveThread(crate::cgroup::v1::ThreadMove),
}

/// Why [`spawn`] failed.
#[derive(Debug)]
pub(crate) enum SpawnError {
    /// `clone3` (or `clone`) failed.
    Clone(Errno),
    /// Moving the spawner thread through the `tasks` file `path` failed.
    Move {
        /// The `tasks` file.
        path: std::path::PathBuf,
        /// The error.
        errno: Errno,
    },
}

/// Moves the calling thread alone into the cgroup of each `tasks` file (writing `0`).
fn move_thread(files: &[(OwnedFd, std::path::PathBuf)]) -> Result<(), SpawnError> {
    for (fd, path) in files {
        if let Err(e) = rustix::io::write(fd, b"0") {
            return Err(SpawnError::Move {
                path: path.clone(),
                errno: Errno::from_raw(e.raw_os_error()),
            });
        }
    }
    Ok(())
}

/// Clones on the spawner thread, placed as `placement` says.
fn clone_placed(
    plan: &Plan,
    fds: &ChildFds,
    placement: Option<&Placement>,
) -> Result<Spawned, SpawnError> {
    match placement {
        None => unsafe { clone_init(plan, fds, None) }.map_err(SpawnError::Clone),
        Some(Placement::IntoCgroup(fd)) => {
            use std::os::fd::AsRawFd;
            unsafe { clone_init(plan, fds, Some(fd.as_raw_fd())) }.map_err(SpawnError::Clone)
        }
        Some(Placement::MoveThread(mv)) => {
            if let Err(e) = move_thread(&mv.into) {
                let _ = move_thread(&mv.back);
                return Err(e);
            }
            // SAFETY: as for clone_init's callers: the plan and fds are alive.
            let res = unsafe { clone_init(plan, fds, None) };
            if let Err(e) = move_thread(&mv.back) {
                // This thread stays in the sandbox's cgroup (the next clone moves it on); do
                // not leave a sandbox that was set up in an unknown state.
                if let Ok(orphan) = &res {
                    kill_and_reap(orphan);
                }
                return Err(e);
            }
            res.map_err(SpawnError::Clone)
        }
    }
}

/// Kills and reaps a just-cloned init that nobody will wait for.
fn kill_and_reap(orphan: &Spawned) {
    let _ = rustix::process::pidfd_send_signal(&orphan.pidfd, rustix::process::Signal::KILL);
    let _ = rustix::process::waitid(
        rustix::process::WaitId::PidFd(std::os::fd::AsFd::as_fd(&orphan.pidfd)),
        rustix::process::WaitIdOptions::EXITED,
    );
}

/// The spawner's answer. Whoever drops it unopened (a start cancelled before or after the
/// answer arrived) kills and reaps the init, which nobody else would ever wait for.
struct Reply(Option<Result<Spawned, SpawnError>>);

impl Drop for Reply {
    fn drop(&mut self) {
        if let Some(Ok(orphan)) = self.0.take() {
            kill_and_reap(&orphan);
        }
    }
}

struct Job {
    plan: Arc<Plan>,
    fds: ChildFds,
    placement: Option<Placement>,
    /// Let the child go (write the sync byte) right after the clone: nothing is left for the
    /// host to do before it runs.
    release: bool,
    /// The child-side fds (named by number in `fds`), owned here so that they stay open,
    /// with their numbers, until the clone has happened; dropped right after it.
    child_side: Vec<OwnedFd>,
    reply: tokio::sync::oneshot::Sender<Reply>,
}

/// Clones every sandbox from one dedicated thread that lives as long as the process.
///
/// `PR_SET_PDEATHSIG` fires when the parent *thread* exits, not the process: a sandbox cloned
/// from a tokio worker or blocking-pool thread would be killed when that thread retires.
fn spawner() -> &'static Mutex<mpsc::Sender<Job>> {
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<Job>>> = OnceLock::new();
    SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("sandbox-spawner".into())
            .stack_size(256 * 1024)
            .spawn(move || {
                // Block every signal on this thread: the clones inherit the mask, so a signal
                // sent to a sandbox while it sets up waits, pending, until its init reads it
                // with sigwaitinfo, instead of running a host handler in the child.
                // SAFETY: plain mask change of the current thread.
                unsafe {
                    let mut all: libc::sigset_t = std::mem::zeroed();
                    libc::sigfillset(&mut all);
                    libc::pthread_sigmask(libc::SIG_SETMASK, &all, std::ptr::null_mut());
                }
                // The Sender lives in a static, so this loop never ends and the thread
                // never exits while the process runs.
                while let Ok(job) = rx.recv() {
                    // SAFETY: the plan and fds were prepared by `SandboxRunner::start` and
                    // stay alive until the reply is sent.
                    let mut res = clone_placed(&job.plan, &job.fds, job.placement.as_ref());
                    if let (true, Ok(spawned)) = (job.release, res.as_mut()) {
                        // The caller holds the write end open until the start is over; if
                        // this write fails, the child waits for the caller's byte instead.
                        // SAFETY: writes one byte from a live buffer to an open fd.
                        let n = unsafe { libc::write(job.fds.sync_w, [1u8].as_ptr().cast(), 1) };
                        spawned.released = n == 1;
                    }
                    drop(job.placement);
                    drop(job.child_side);
                    // Cancelled while we cloned: the unsent Reply drops here, killing and
                    // reaping the init.
                    let _ = job.reply.send(Reply(Some(res)));
                }
            })
            .expect("cannot start the sandbox-spawner thread");
        Mutex::new(tx)
    })
}

/// Clones a new sandbox init on the spawner thread.
///
/// `child_side` owns the fds that `fds` names for the child; they are closed in this process
/// once the clone is done.
pub(crate) async fn spawn(
    plan: Arc<Plan>,
    fds: ChildFds,
    child_side: Vec<OwnedFd>,
    placement: Option<Placement>,
    release: bool,
) -> Result<Spawned, SpawnError> {
    let (reply, rx) = tokio::sync::oneshot::channel();
    spawner()
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .send(Job {
            plan,
            fds,
            placement,
            release,
            child_side,
            reply,
        })
        .map_err(|_| SpawnError::Clone(Errno::ECHILD))?;
    // The spawner always replies; a lost reply means the thread is gone.
    let mut reply = rx.await.map_err(|_| SpawnError::Clone(Errno::ECHILD))?;
    reply
        .0
        .take()
        .unwrap_or(Err(SpawnError::Clone(Errno::ECHILD)))
}

/// Tries a clone with `flags` and reports whether the kernel allows it (for `check`).
pub fn probe_clone(flags: u64) -> Result<(), Errno> {
    let args = CloneArgs {
        flags,
        exit_signal: libc::SIGCHLD as u64,
        ..Default::default()
    };
    // SAFETY: the child only calls _exit.
    let r = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &args as *const CloneArgs,
            std::mem::size_of::<CloneArgs>(),
        )
    };
    if r == 0 {
        unsafe { libc::_exit(0) }
    }
    if r < 0 {
        return Err(Errno::last());
    }
    let mut st = 0;
    unsafe { libc::waitpid(r as i32, &mut st, 0) };
    Ok(())
}
