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
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
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
    /// `execveat` of `sandbox-init`, the sandbox's PID 1, from its sealed memfd.
    InitExec = 26,
}

impl Step {
    const ALL: [Step; 26] = [
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
    /// The sealed memfd holding `sandbox-init` (see [`init_exe`]), executed by the init.
    pub init_exe: RawFd,
    /// Read end of the go pipe: the plugin waits on it until `sandbox-init` runs.
    pub go_r: RawFd,
    /// Write end of the go pipe, handed to `sandbox-init` across its exec.
    pub go_w: RawFd,
    /// The stack the init clones the plugin onto (in the host's memory, set by the spawner).
    pub plugin_stack: usize,
    /// Size of [`plugin_stack`](Self::plugin_stack).
    pub plugin_stack_size: usize,
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
pub(crate) const KEEP_MAX: usize = crate::profile::MAX_PASS_FDS + 8;

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
/// or why it cannot be read (`EINVAL`: not in the expected form). Async-signal-safe: a stack
/// buffer, no allocation.
///
/// # Safety
/// Child-side; plain syscalls on a local buffer.
unsafe fn parent_in_host_view() -> Result<i32, Errno> {
    let fd = libc::open(
        c"/proc/self/stat".as_ptr(),
        libc::O_RDONLY | libc::O_CLOEXEC,
    );
    if fd < 0 {
        return Err(Errno::last());
    }
    let mut buf = [0u8; 512];
    let n = libc::read(fd, buf.as_mut_ptr().cast(), buf.len());
    let read_errno = Errno::last();
    libc::close(fd);
    if n < 0 {
        return Err(read_errno);
    }
    let line = &buf[..n as usize];
    // "pid (comm) S ppid ...": the command may hold spaces and ')', so count after the last.
    let Some(close) = line.iter().rposition(|&b| b == b')') else {
        return Err(Errno::EINVAL);
    };
    let mut fields = line[close + 1..]
        .split(|&b| b == b' ')
        .filter(|f| !f.is_empty());
    let _state = fields.next();
    let Some(ppid) = fields.next() else {
        return Err(Errno::EINVAL);
    };
    let mut v: i32 = 0;
    for &d in ppid {
        if !d.is_ascii_digit() {
            return Err(Errno::EINVAL);
        }
        v = v.saturating_mul(10).saturating_add((d - b'0') as i32);
    }
    Ok(v)
}

/// The init's steps, in the order the kernel needs them, then the init loop.
///
/// # Safety
/// Runs in the freshly cloned child; async-signal-safe; never returns.
unsafe fn child_main(ctx: &ChildCtx) -> ! {
    let plan = &*ctx.plan;
    let fds = &ctx.fds;
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
    if !plan.detach && fds.host_pid > 0 {
        match parent_in_host_view() {
            // The host is gone: nobody is there to read a record.
            Ok(ppid) if ppid != fds.host_pid => libc::_exit(125),
            Ok(_) => {}
            Err(err) => fail(e, Step::DeathSignal, err),
        }
    }
    // No PR_SET_DUMPABLE here: dumpability belongs to the address space, which is the host's
    // until the exec of sandbox-init, and sandbox-init makes itself non-dumpable. Nothing of
    // the sandbox's own runs before then (the plugin waits for sandbox-init's go).
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
    pid::run_init(plan, fds, ctx)
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
pub(crate) struct CloneArgs {
    pub flags: u64,
    pub pidfd: u64,
    pub child_tid: u64,
    pub parent_tid: u64,
    pub exit_signal: u64,
    pub stack: u64,
    pub stack_size: u64,
    pub tls: u64,
    pub set_tid: u64,
    pub set_tid_size: u64,
    pub cgroup: u64,
}

/// What a child cloned with `CLONE_VM` runs, on its own stack, with `arg`.
pub(crate) type ChildEntry = unsafe extern "C" fn(arg: *const u8) -> !;

/// `clone3` for a child that shares this address space (`CLONE_VM` in `args.flags`) and runs
/// `entry(arg)` on the stack `args.stack` / `args.stack_size`, never returning. Returns the
/// child's pid, or `-errno`.
///
/// The child starts on an empty stack, so it cannot return through a libc wrapper as a
/// copy-on-write child would: the few instructions between the system call and the call of
/// `entry` are written out here.
///
/// # Safety
/// `args` must describe a valid stack mapping that stays mapped while the child runs in this
/// address space; `entry` must not return and must only do async-signal-safe work until it
/// execs or exits; whatever `arg` points to must outlive that.
pub(crate) unsafe fn clone3_vm(args: &mut CloneArgs, entry: ChildEntry, arg: *const u8) -> i64 {
    let ret: i64;
    #[cfg(target_arch = "x86_64")]
    // SAFETY: the kernel returns 0 in the child with the stack pointer at the top of the
    // given stack (16-byte aligned by `Stacks`); r12/r13 are preserved into the child. The
    // parent path only clobbers what `syscall` does.
    unsafe {
        std::arch::asm!(
            "syscall",
            "test rax, rax",
            "jnz 2f",
            "mov rdi, r12",
            "call r13",
            "ud2",
            "2:",
            inlateout("rax") libc::SYS_clone3 => ret,
            in("rdi") args as *mut CloneArgs,
            in("rsi") std::mem::size_of::<CloneArgs>(),
            in("r12") arg,
            in("r13") entry,
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        );
    }
    #[cfg(target_arch = "aarch64")]
    // SAFETY: as above; x20/x21 are callee-saved and preserved into the child.
    unsafe {
        std::arch::asm!(
            "svc 0",
            "cbnz x0, 2f",
            "mov x0, x20",
            "blr x21",
            "brk #0",
            "2:",
            inlateout("x0") args as *mut CloneArgs => ret,
            in("x1") std::mem::size_of::<CloneArgs>(),
            in("x8") libc::SYS_clone3,
            in("x20") arg,
            in("x21") entry,
            options(nostack),
        );
    }
    ret
}

/// The two stacks a sandbox's init and plugin run on until they exec, in one mapping of this
/// process with a guard page below each.
pub(crate) struct Stacks {
    base: *mut libc::c_void,
    len: usize,
}

// SAFETY: a plain mapping owned by one value; nothing else refers to it.
unsafe impl Send for Stacks {}

/// Size of each stack: the child steps are shallow and keep no large buffers.
const STACK_SIZE: usize = 256 * 1024;
/// One guard page below each stack.
const GUARD: usize = 4096;

impl Stacks {
    /// Maps two stacks with guard pages.
    pub fn new() -> Result<Stacks, Errno> {
        let len = 2 * (GUARD + STACK_SIZE);
        // SAFETY: an anonymous private mapping; checked below.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_STACK | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(Errno::last());
        }
        let stacks = Stacks { base, len };
        for i in 0..2 {
            // SAFETY: the guard page lies inside the mapping made above.
            let r = unsafe {
                libc::mprotect(
                    base.cast::<u8>().add(i * (GUARD + STACK_SIZE)).cast(),
                    GUARD,
                    libc::PROT_NONE,
                )
            };
            if r != 0 {
                return Err(Errno::last());
            }
        }
        Ok(stacks)
    }

    /// The lowest address and the size of stack `i` (0: init, 1: plugin).
    pub fn stack(&self, i: usize) -> (usize, usize) {
        (
            self.base as usize + i * (GUARD + STACK_SIZE) + GUARD,
            STACK_SIZE,
        )
    }
}

impl Drop for Stacks {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping this value owns, once no child uses it.
        unsafe { libc::munmap(self.base, self.len) };
    }
}

/// What the init's entry point receives: the plan and the fds, in the spawner's memory.
pub(crate) struct ChildCtx {
    /// The sandbox's plan.
    pub plan: *const Plan,
    /// The fds and stacks.
    pub fds: ChildFds,
}

/// The init's entry point on its own stack.
///
/// # Safety
/// Called only by [`clone3_vm`] with a pointer to a live [`ChildCtx`].
unsafe extern "C" fn init_entry(arg: *const u8) -> ! {
    // SAFETY: the spawner keeps the ChildCtx (and the plan it points to) alive until no
    // process of the sandbox runs in its memory.
    unsafe { child_main(&*(arg as *const ChildCtx)) }
}

/// The result of a clone: the init's host pid and a pidfd for it.
pub(crate) struct Spawned {
    /// Host pid of the init (informational; every action goes through `pidfd`).
    pub pid: i32,
    /// A pidfd of the init, `CLOEXEC`.
    pub pidfd: OwnedFd,
}

/// Clones the init with `plan`'s namespace flags into this address space (`CLONE_VM`), on
/// the init stack of `stacks`. Called on the spawner thread only.
///
/// # Safety
/// `ctx` must describe open fds of this process and stay alive, with `stacks`, until the
/// init and the plugin no longer run in this address space; the child never returns.
unsafe fn clone_init(
    ctx: &ChildCtx,
    stacks: &Stacks,
    cgroup: Option<RawFd>,
) -> Result<Spawned, Errno> {
    // SAFETY: the caller's contract.
    let plan = unsafe { &*ctx.plan };
    let mut pidfd: c_int = -1;
    let (stack, stack_size) = stacks.stack(0);
    let mut args = CloneArgs {
        flags: plan.clone_flags | libc::CLONE_PIDFD as u64 | libc::CLONE_VM as u64,
        pidfd: (&mut pidfd as *mut c_int) as u64,
        exit_signal: libc::SIGCHLD as u64,
        stack: stack as u64,
        stack_size: stack_size as u64,
        ..Default::default()
    };
    // cgroup v2: the child is born in the sandbox's cgroup (Linux 5.7+), so not one
    // instruction of it runs outside its limits.
    if let Some(fd) = cgroup {
        args.flags |= CLONE_INTO_CGROUP;
        args.cgroup = fd as u64;
    }
    // SAFETY: the caller's contract; init_entry gets the ChildCtx.
    let r = unsafe { clone3_vm(&mut args, init_entry, (ctx as *const ChildCtx).cast()) };
    if r > 0 {
        return Ok(Spawned {
            pid: r as i32,
            // SAFETY: the kernel wrote a new pidfd for us.
            pidfd: unsafe { OwnedFd::from_raw_fd(pidfd) },
        });
    }
    // No clone3 (before Linux 5.3) means no CLONE_INTO_CGROUP and no pidfd at birth either:
    // refuse rather than start a child outside its cgroup or copy the host's memory.
    Err(Errno::from_raw(-r as i32))
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
    /// `clone3` failed (or the stacks could not be mapped).
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
    /// with their numbers, until the clone has happened; closed right after it.
    child_side: Vec<OwnedFd>,
    /// Write end of the early pipe: the init's pid (4 bytes, 0 when the clone failed) as
    /// soon as it exists, for the host's work before it lets the child go.
    early_w: OwnedFd,
    /// Read end of the memory pipe (see [`spawn`]).
    vm_r: OwnedFd,
    reply: tokio::sync::oneshot::Sender<Reply>,
}

/// Runs one job on the spawner thread.
fn run_job(job: Job) {
    let Job {
        plan,
        mut fds,
        placement,
        release,
        mut child_side,
        early_w,
        vm_r,
        reply,
    } = job;
    let stacks = match Stacks::new() {
        Ok(s) => s,
        Err(e) => {
            // SAFETY: a 4-byte write from a live buffer.
            unsafe { libc::write(early_w.as_raw_fd(), [0u8; 4].as_ptr().cast(), 4) };
            let _ = reply.send(Reply(Some(Err(SpawnError::Clone(e)))));
            return;
        }
    };
    (fds.plugin_stack, fds.plugin_stack_size) = stacks.stack(1);
    let ctx = ChildCtx {
        plan: Arc::as_ptr(&plan),
        fds,
    };
    let mut moved_back = Ok(());
    let res = match placement.as_ref() {
        // SAFETY: ctx, plan and stacks live until the memory pipe's end of file below.
        None => unsafe { clone_init(&ctx, &stacks, None) }.map_err(SpawnError::Clone),
        Some(Placement::IntoCgroup(fd)) => {
            // SAFETY: as above.
            unsafe { clone_init(&ctx, &stacks, Some(fd.as_raw_fd())) }.map_err(SpawnError::Clone)
        }
        Some(Placement::MoveThread(mv)) => match move_thread(&mv.into) {
            Err(e) => {
                moved_back = move_thread(&mv.back);
                Err(e)
            }
            // SAFETY: as above. The thread moves back once the children are off its memory.
            Ok(()) => unsafe { clone_init(&ctx, &stacks, None) }.map_err(SpawnError::Clone),
        },
    };
    // From here until the memory pipe's end of file, the init (and then the plugin) run in
    // this address space, on this thread's thread-local storage (errno): this thread only
    // makes plain system calls that succeed, and waits.
    let pid = res.as_ref().map(|s| s.pid).unwrap_or(0);
    // SAFETY: writes from live buffers to open fds. The sync byte goes first: once the pid
    // is out, the caller may close its sync pipe.
    unsafe {
        if release && res.is_ok() {
            // If this write fails, the child sees the caller's end of file and gives up.
            libc::write(fds.sync_w, [1u8].as_ptr().cast(), 1);
        }
        libc::write(early_w.as_raw_fd(), pid.to_ne_bytes().as_ptr().cast(), 4);
    }
    for fd in child_side.drain(..) {
        drop(fd);
    }
    if res.is_ok() {
        let mut buf = [0u8; 16];
        // SAFETY: reads into a live buffer; returns 0 once every write end is closed (both
        // children exec'd or exited). Every signal is blocked on this thread: no EINTR.
        while unsafe { libc::read(vm_r.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) } > 0 {}
    }
    // The children no longer use the stacks, the ChildCtx or the plan.
    drop(stacks);
    let _ = ctx;
    drop(plan);
    if let Some(Placement::MoveThread(mv)) = placement.as_ref() {
        if res.is_ok() {
            moved_back = move_thread(&mv.back);
        }
    }
    let res = match (res, moved_back) {
        (Ok(spawned), Err(e)) => {
            // This thread stays in the sandbox's cgroup (the next clone moves it on); do not
            // leave a sandbox that was set up in an unknown state.
            kill_and_reap(&spawned);
            Err(e)
        }
        (res, _) => res,
    };
    drop(placement);
    // Cancelled meanwhile: the unsent Reply drops here, killing and reaping the init.
    let _ = reply.send(Reply(Some(res)));
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
                    run_job(job);
                }
            })
            .expect("cannot start the sandbox-spawner thread");
        Mutex::new(tx)
    })
}

/// A clone in progress: the init exists (its pid is known) and may wait for the host's go on
/// the sync pipe; [`Pending::finish`] waits until it and the plugin have left the host's
/// memory (exec'd or died). Dropping it before then kills and reaps the init.
pub(crate) struct Pending {
    /// Host pid of the init. Ours and unreaped, so it cannot be reused meanwhile.
    pub pid: i32,
    rx: tokio::sync::oneshot::Receiver<Reply>,
}

impl Pending {
    /// Waits for the spawner's final answer: the init's pidfd.
    pub async fn finish(self) -> Result<Spawned, SpawnError> {
        // The spawner always replies; a lost reply means the thread is gone.
        let mut reply = self
            .rx
            .await
            .map_err(|_| SpawnError::Clone(Errno::ECHILD))?;
        reply
            .0
            .take()
            .unwrap_or(Err(SpawnError::Clone(Errno::ECHILD)))
    }
}

/// Clones a new sandbox init on the spawner thread and returns once it exists.
///
/// `child_side` owns the fds that `fds` names for the child; they are closed in this process
/// once the clone is done. Among them must be the write end of `vm_r`'s pipe (`CLOEXEC`),
/// kept by both the init and the plugin: its end of file tells the spawner that no process
/// of the sandbox runs in the host's memory any more (both have exec'd or died).
pub(crate) async fn spawn(
    plan: Arc<Plan>,
    fds: ChildFds,
    child_side: Vec<OwnedFd>,
    placement: Option<Placement>,
    release: bool,
    vm_r: OwnedFd,
) -> Result<Pending, SpawnError> {
    let io = |e: std::io::Error| SpawnError::Clone(Errno::from_raw(e.raw_os_error().unwrap_or(0)));
    let (early_r, early_w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
        .map_err(|e| SpawnError::Clone(Errno::from_raw(e.raw_os_error())))?;
    let mut early = tokio::net::unix::pipe::Receiver::from_owned_fd(early_r).map_err(io)?;
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
            early_w,
            vm_r,
            reply,
        })
        .map_err(|_| SpawnError::Clone(Errno::ECHILD))?;
    let mut pid = [0u8; 4];
    tokio::io::AsyncReadExt::read_exact(&mut early, &mut pid)
        .await
        .map_err(io)?;
    let pending = Pending {
        pid: i32::from_ne_bytes(pid),
        rx,
    };
    if pending.pid <= 0 {
        // The clone failed: the final answer says why.
        return match pending.finish().await {
            Ok(spawned) => {
                kill_and_reap(&spawned);
                Err(SpawnError::Clone(Errno::EIO))
            }
            Err(e) => Err(e),
        };
    }
    Ok(pending)
}

/// What the reaper's child runs before its exec: everything prepared by [`start_reaper`].
struct ReaperCtx {
    exe: RawFd,
    sock: RawFd,
    argv: [*const libc::c_char; 3],
    envp: [*const libc::c_char; 1],
}

/// The reaper child's entry point: stdio closed, every fd but the socket and the memfd
/// closed, the socket kept across the exec, then `sandbox-init` in its reaper mode.
///
/// # Safety
/// Called only by [`clone3_vm`] with a pointer to the live `ReaperCtx` (the caller is
/// suspended by `CLONE_VFORK` until the exec).
unsafe extern "C" fn reaper_entry(arg: *const u8) -> ! {
    // SAFETY: async-signal-safe system calls on data the parent prepared.
    unsafe {
        let ctx = &*(arg as *const ReaperCtx);
        for fd in 0..3 {
            libc::close(fd);
        }
        let mut keep = [ctx.exe, ctx.sock];
        keep.sort_unstable();
        if close_all_but(&keep).is_err() || libc::fcntl(ctx.sock, libc::F_SETFD, 0) == -1 {
            libc::_exit(125);
        }
        libc::syscall(
            libc::SYS_execveat,
            ctx.exe,
            c"".as_ptr(),
            ctx.argv.as_ptr(),
            ctx.envp.as_ptr(),
            libc::AT_EMPTY_PATH,
        );
        libc::_exit(127)
    }
}

/// Starts the reaper (`sandbox-init` in its reaper mode, see `src/init/sandbox-init.c`)
/// with `sock` as its end of the host's socket: `posix_spawn` semantics (`CLONE_VM |
/// CLONE_VFORK`: no copy of this process, the calling thread waits until the exec), then it
/// leaves this process (its first process exits, reaped here) so it is never the host's
/// child. Returns once the reaper runs.
pub(crate) fn start_reaper(sock: RawFd) -> Result<(), Errno> {
    let exe = init_exe()?;
    let stacks = Stacks::new()?;
    let mut buf = [0u8; 24];
    let ctx = ReaperCtx {
        exe,
        sock,
        argv: [
            c"sandbox-reaper".as_ptr(),
            crate::pid::decimal(sock as u64, &mut buf),
            std::ptr::null(),
        ],
        envp: [std::ptr::null()],
    };
    let (stack, stack_size) = stacks.stack(0);
    let mut args = CloneArgs {
        flags: (libc::CLONE_VM | libc::CLONE_VFORK) as u64,
        exit_signal: libc::SIGCHLD as u64,
        stack: stack as u64,
        stack_size: stack_size as u64,
        ..Default::default()
    };
    // SAFETY: the child runs reaper_entry on its own stack while this thread is suspended
    // (CLONE_VFORK), so ctx and the stacks outlive its use of them.
    let pid = unsafe { clone3_vm(&mut args, reaper_entry, (&ctx as *const ReaperCtx).cast()) };
    if pid < 0 {
        return Err(Errno::from_raw(-pid as i32));
    }
    let mut st = 0;
    // SAFETY: reaps our own child, which exits as soon as the reaper has left it.
    if unsafe { libc::waitpid(pid as i32, &mut st, 0) } == -1 {
        return Err(Errno::last());
    }
    if !libc::WIFEXITED(st) || libc::WEXITSTATUS(st) != 0 {
        return Err(Errno::ENOEXEC);
    }
    Ok(())
}

/// The sealed memfd holding `sandbox-init`, made once per process (`CLOEXEC`; the init
/// executes it with `execveat(AT_EMPTY_PATH)`, so it needs no path inside the sandbox).
pub(crate) fn init_exe() -> Result<RawFd, Errno> {
    static FD: OnceLock<Result<OwnedFd, Errno>> = OnceLock::new();
    FD.get_or_init(make_init_memfd)
        .as_ref()
        .map(|fd| fd.as_raw_fd())
        .map_err(|e| *e)
}

/// The freestanding `sandbox-init` program built by `build.rs`.
static SANDBOX_INIT: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/sandbox-init"));

fn make_init_memfd() -> Result<OwnedFd, Errno> {
    use rustix::fs::{fcntl_add_seals, memfd_create, MemfdFlags, SealFlags};
    let errno = |e: rustix::io::Errno| Errno::from_raw(e.raw_os_error());
    let flags = MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING;
    // MFD_EXEC (Linux 6.3) says so explicitly where vm.memfd_noexec asks; older kernels
    // refuse the flag and make every memfd executable.
    let fd = match memfd_create("sandbox-init", flags | MemfdFlags::EXEC) {
        Err(rustix::io::Errno::INVAL) => memfd_create("sandbox-init", flags),
        r => r,
    }
    .map_err(errno)?;
    let mut rest = SANDBOX_INIT;
    while !rest.is_empty() {
        let n = rustix::io::write(&fd, rest).map_err(errno)?;
        rest = &rest[n..];
    }
    fcntl_add_seals(
        &fd,
        SealFlags::SEAL | SealFlags::SHRINK | SealFlags::GROW | SealFlags::WRITE,
    )
    .map_err(errno)?;
    Ok(fd)
}

/// Tries a clone with the namespace `flags` and reports whether the kernel allows it (for
/// `check`). Only `CLONE_NEW*` flags are accepted: anything else is `EINVAL`.
pub fn probe_clone(flags: u64) -> Result<(), Errno> {
    let ns = (libc::CLONE_NEWNS
        | libc::CLONE_NEWPID
        | libc::CLONE_NEWNET
        | libc::CLONE_NEWIPC
        | libc::CLONE_NEWUTS
        | libc::CLONE_NEWUSER
        | libc::CLONE_NEWCGROUP) as u64;
    if flags & !ns != 0 {
        return Err(Errno::EINVAL);
    }
    let args = CloneArgs {
        flags,
        exit_signal: libc::SIGCHLD as u64,
        ..Default::default()
    };
    // SAFETY: a copy-on-write child (no CLONE_VM: refused above) that only calls _exit.
    let r = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &args as *const CloneArgs,
            std::mem::size_of::<CloneArgs>(),
        )
    };
    if r == 0 {
        // SAFETY: the child leaves at once.
        unsafe { libc::_exit(0) }
    }
    if r < 0 {
        return Err(Errno::last());
    }
    let mut st = 0;
    // SAFETY: reaps our own child.
    unsafe { libc::waitpid(r as i32, &mut st, 0) };
    Ok(())
}
