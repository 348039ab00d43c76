//! `sandbox-init`, the freestanding PID 1 (`src/init/sandbox-init.c`), in a sealed memfd,
//! and the start of its reaper mode (one per host process).

use nix::errno::Errno;
use std::ffi::CStr;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::OnceLock;

use super::clone::{clone3_vm, CloneArgs, Stacks};
use super::fds::close_all_but;

/// What the reaper's child runs before its exec: everything prepared by [`start_reaper`].
struct ReaperCtx {
    exe: RawFd,
    sock: RawFd,
    argv: [*const libc::c_char; 5],
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
/// child. Returns once the reaper runs. `owner` is what this process's id claims hold and
/// the directory they are in, for the reaper to find a claim this process could not
/// register before it died.
pub(crate) fn start_reaper(sock: RawFd, owner: Option<(&CStr, &CStr)>) -> Result<(), Errno> {
    let exe = init_exe()?;
    let stacks = Stacks::new()?;
    let mut buf = [0u8; 24];
    let (owner_arg, claims_arg) = match owner {
        Some((o, c)) => (o.as_ptr(), c.as_ptr()),
        None => (std::ptr::null(), std::ptr::null()),
    };
    let ctx = ReaperCtx {
        exe,
        sock,
        argv: [
            c"sandbox-reaper".as_ptr(),
            super::init::decimal(sock as u64, &mut buf),
            owner_arg,
            claims_arg,
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
    // Every signal blocked around the clone, as posix_spawn does: the child shares this
    // address space until its exec, and no handler of the host (whose thread may be any,
    // e.g. `prewarm`'s) may run in it meanwhile. The reaper sets its own mask.
    // SAFETY: plain signal mask changes of the calling thread, with live sets.
    let old = unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        let mut old: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
        old
    };
    // SAFETY: the child runs reaper_entry on its own stack while this thread is suspended
    // (CLONE_VFORK), so ctx and the stacks outlive its use of them.
    let pid = unsafe { clone3_vm(&mut args, reaper_entry, (&ctx as *const ReaperCtx).cast()) };
    // SAFETY: restores the calling thread's mask saved above.
    unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut()) };
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
