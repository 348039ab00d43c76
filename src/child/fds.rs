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
    /// Set by the spawner: 0 when the init is cloned with a copy of the host's whole fd table;
    /// otherwise it shares the table (`CLONE_FILES`) and its first step takes a table of its
    /// own holding only the fds below `cut` (`close_range(cut, ~0, CLOSE_RANGE_UNSHARE)`), so
    /// that a start costs the same however many fds the host holds (see `spawner::Slots`).
    pub cut: u32,
    /// Set by the spawner with `cut`: the profile's `pass_fds` at or above `cut`, parked in
    /// slots below it and put back at their own numbers right after the unshare (the other
    /// parked fds are used at their slots' numbers: the fields above name those).
    pub moves: MoveList,
}

/// One parked fd: the slot it waits in (below the cut), its own number, and whether it is
/// `CLOEXEC` there (slots always are, so that no host-spawned program inherits one).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Move {
    /// The slot (a number below the cut).
    pub slot: RawFd,
    /// The fd's own number (at or above the cut).
    pub fd: RawFd,
    /// `FD_CLOEXEC` as the host had it on `fd`.
    pub cloexec: bool,
}

/// Capacity of [`MoveList`], and the number of the spawner's slots: at most this many fds
/// are parked per start (more, and the init gets a copy of the whole table instead).
pub(crate) const MOVE_MAX: usize = 16;

/// A fixed-capacity list of [`Move`]s, built on the spawner thread and read in the child.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct MoveList {
    moves: [Move; MOVE_MAX],
    len: usize,
}

impl MoveList {
    /// The list of `moves` (at most [`MOVE_MAX`]; `None` if more).
    pub fn new(moves: &[Move]) -> Option<Self> {
        let mut out = MoveList::default();
        out.moves.get_mut(..moves.len())?.copy_from_slice(moves);
        out.len = moves.len();
        Some(out)
    }

    /// The moves. Async-signal-safe (`get` cannot panic).
    pub fn as_slice(&self) -> &[Move] {
        self.moves.get(..self.len).unwrap_or(&[])
    }
}

/// Takes a table of the child's own when it was cloned sharing the spawner's
/// (`fds.cut > 0`): only the fds below the cut are copied; then puts the parked pass fds
/// back at their numbers. Returns the index of the failing move (0 for the unshare) with its
/// errno. `unshared` is raised (and woken) once the table is the child's own, before the
/// moves: from then on the spawner may reuse its slots.
///
/// # Safety
/// Child-side only, first thing after the clone; async-signal-safe.
pub(crate) unsafe fn own_table(
    fds: &ChildFds,
    unshared: &std::sync::atomic::AtomicU32,
) -> Result<(), (u32, Errno)> {
    if fds.cut == 0 {
        return Ok(());
    }
    // SAFETY: raw system calls with integer arguments; the futex word lives in the spawner's
    // ChildCtx, alive until this process execs.
    unsafe {
        let r = libc::syscall(
            libc::SYS_close_range,
            fds.cut,
            u32::MAX,
            libc::CLOSE_RANGE_UNSHARE,
        );
        if r == -1 {
            return Err((0, Errno::last()));
        }
        unshared.store(1, std::sync::atomic::Ordering::Release);
        libc::syscall(
            libc::SYS_futex,
            unshared.as_ptr(),
            libc::FUTEX_WAKE | libc::FUTEX_PRIVATE_FLAG,
            1,
        );
        for (i, m) in fds.moves.as_slice().iter().enumerate() {
            let flags = if m.cloexec { libc::O_CLOEXEC } else { 0 };
            if libc::dup3(m.slot, m.fd, flags) == -1 {
                return Err((i as u32 + 1, Errno::last()));
            }
        }
    }
    Ok(())
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
