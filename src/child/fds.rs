//! The fds of a sandbox's children: decided in the host before the clone, wired and closed
//! in the child.

use nix::errno::Errno;
use std::os::fd::RawFd;

use super::step::check;

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
    /// The sealed memfd holding `sandbox-init` (see [`super::exe::init_exe`]), executed by the init.
    pub init_exe: RawFd,
    /// Read end of the go pipe: the plugin waits on it until `sandbox-init` runs.
    pub go_r: RawFd,
    /// Write end of the go pipe, handed to `sandbox-init` across its exec.
    pub go_w: RawFd,
    /// The stack the init clones the plugin onto (in the host's memory, set by the spawner).
    pub plugin_stack: usize,
    /// Size of [`plugin_stack`](Self::plugin_stack).
    pub plugin_stack_size: usize,
    /// Which of fds 0, 1, 2 the plugin makes its controlling terminal (the runner's
    /// pseudo-terminal slave standing for the caller's terminal), or -1.
    pub ctty: RawFd,
    /// The plugin's end of the broker socket (`CLOEXEC`), or -1: the plugin installs the
    /// brokered-connect filter and sends its listener there (`[sockets] broker`).
    pub broker: RawFd,
    /// Set by the spawner: the init was cloned into a network namespace made ahead
    /// (`netpool`), whose `lo` is up already and which the sandbox's root may not configure.
    pub net_ready: bool,
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

/// Capacity of [`ChildFds::init_keep`].
pub(crate) const KEEP_MAX: usize = MAX_PASS_FDS + 8;

/// Most fds a profile may pass to the plugin (kept in the fixed-size [`FdList`]).
pub(crate) const MAX_PASS_FDS: usize = 16;

/// Puts the stdio pipes on 0, 1, 2. Their source fds are all >= 3 (the parent made sure),
/// so no `dup2` overwrites a source still needed.
pub(crate) unsafe fn connect_stdio(fds: &ChildFds) -> Result<(), Errno> {
    // SAFETY: dup2 on fd numbers the host prepared (all >= 3, open in this child).
    unsafe {
        if fds.stdin >= 0 {
            check(libc::dup2(fds.stdin, 0))?;
        }
        check(libc::dup2(fds.stdout, 1))?;
        check(libc::dup2(fds.stderr, 2))?;
        Ok(())
    }
}

/// Closes every fd >= 3 except the sorted list `keep`, with `close_range` over the gaps.
///
/// # Safety
/// Async-signal-safe.
pub(crate) unsafe fn close_all_but(keep: &[RawFd]) -> Result<(), Errno> {
    // SAFETY: close_range on fd numbers; closing an fd this child does not own is what it is
    // for (only the listed ones are needed).
    unsafe {
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
}

unsafe fn close_range(first: u32, last: u32) -> Result<(), Errno> {
    // SAFETY: the close_range system call with plain integer arguments.
    unsafe {
        let r = libc::syscall(libc::SYS_close_range, first, last, 0u32);
        if r == -1 {
            Err(Errno::last())
        } else {
            Ok(())
        }
    }
}
