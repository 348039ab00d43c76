//! The setup steps of a sandbox's init and plugin, and how a failing one is reported: a
//! fixed-size `(step, errno, arg)` record on a `CLOEXEC` pipe, then `_exit(125)`.

use libc::c_int;
use nix::errno::Errno;
use std::os::fd::RawFd;

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
    /// `execveat` of `sandbox-init`, the sandbox's PID 1, from its sealed memfd.
    InitExec = 26,
    /// Becoming root of the sandbox's user namespace (groups, gids, uids), once the host has
    /// written the maps of its id range.
    Ids = 27,
    /// `unshare(CLONE_NEWCGROUP)`: a cgroup namespace rooted at the sandbox's cgroup.
    CgroupNs = 28,
    /// A session of the plugin's own with the runner's pseudo-terminal as its controlling
    /// terminal (`setsid`, `TIOCSCTTY`).
    Ctty = 29,
    /// Installing the brokered-connect filter (`SECCOMP_RET_USER_NOTIF` for `connect`) and
    /// handing its listener to the host (`[sockets] broker`).
    Broker = 30,
    /// Joining the sandbox's cgroup v1 hierarchies (writing `0` to the `tasks` file the host
    /// sent with its go; the failing file's index).
    CgroupJoin = 31,
    /// Taking an fd table of its own (`close_range(CLOSE_RANGE_UNSHARE)`, which copies only
    /// the spawner's fds below the cut) and putting the parked fds back at their numbers (the
    /// failing one's index).
    FdTable = 32,
}

impl Step {
    const ALL: [Step; 32] = [
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
        Step::InitExec,
        Step::Ids,
        Step::CgroupNs,
        Step::Ctty,
        Step::Broker,
        Step::CgroupJoin,
        Step::FdTable,
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
            Step::InitExec => "execute sandbox-init",
            Step::Ids => "become root of the user namespace",
            Step::CgroupNs => "enter a new cgroup namespace",
            Step::Ctty => "take the terminal as controlling terminal",
            Step::Broker => "install the brokered-connect filter and hand over its listener",
            Step::CgroupJoin => "join the sandbox's cgroup",
            Step::FdTable => "take an fd table of its own",
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

/// Writes the failing step and errno to the error pipe and exits the child.
///
/// # Safety
/// Child-side only; async-signal-safe.
pub(crate) unsafe fn fail(err_w: RawFd, step: Step, errno: Errno) -> ! {
    // SAFETY: see fail_at.
    unsafe { fail_at(err_w, step, 0, errno) }
}

/// Like [`fail`], naming item `arg` of the step (e.g. the index of a mount entry).
///
/// # Safety
/// Child-side only; async-signal-safe.
pub(crate) unsafe fn fail_at(err_w: RawFd, step: Step, arg: u32, errno: Errno) -> ! {
    // SAFETY: write of a stack record to the error pipe, then _exit; both async-signal-safe.
    unsafe {
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
