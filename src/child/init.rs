//! PID namespace: the sandbox's init (PID 1) and the fork of the plugin.
//!
//! The init clones the plugin (both run in the host's address space, on stacks of their own,
//! until they exec: nothing of the host is copied) and then execs `sandbox-init`
//! (`src/init/sandbox-init.c`) from a sealed memfd: a freestanding loop of a few pages, as in
//! tini or bubblewrap, that forwards the signals a host sends (TERM, INT, HUP, QUIT, USR1,
//! USR2), reaps every orphan the namespace hands it, and when the plugin exits writes the
//! plugin's raw wait status to the status pipe and exits with the plugin's code (`128 + N`
//! for a signal). When the init exits, the kernel kills everything left in the namespace, so
//! nothing outlives the plugin. The plugin waits for sandbox-init's go before its execve.

use nix::errno::Errno;

use super::clone::{clone3_vm, CloneArgs};
use super::fds::{close_all_but, ChildFds};
use super::plan::Plan;
use super::spawner::ChildCtx;
use super::step::{check, fail, fail_at, Step};
use super::{caps, landlock, rlimit, seccomp};

/// The signals the init forwards to the plugin.
pub const FORWARDED: [libc::c_int; 6] = [
    libc::SIGTERM,
    libc::SIGINT,
    libc::SIGHUP,
    libc::SIGQUIT,
    libc::SIGUSR1,
    libc::SIGUSR2,
];

/// Resets every catchable signal to its default action (the host's handlers are addresses
/// in the host's code, and an inherited `SIG_IGN` for SIGCHLD would make reaping impossible).
unsafe fn reset_dispositions() -> Result<(), Errno> {
    // SAFETY: sigaction with a zeroed, fully initialised stack struct; no handler is installed
    // (SIG_DFL only).
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = libc::SIG_DFL;
        libc::sigemptyset(&mut sa.sa_mask);
        let mut sig = 1;
        while sig < libc::SIGRTMAX() + 1 {
            if sig != libc::SIGKILL && sig != libc::SIGSTOP {
                // EINVAL for the few numbers glibc reserves: nothing to reset there.
                if libc::sigaction(sig, &sa, std::ptr::null_mut()) == -1
                    && Errno::last() != Errno::EINVAL
                {
                    return Err(Errno::last());
                }
            }
            sig += 1;
        }
        Ok(())
    }
}

/// Blocks every signal (`block`) or none.
unsafe fn mask_all(block: bool) -> Result<(), Errno> {
    // SAFETY: sigprocmask with a stack sigset filled by sigfillset/sigemptyset.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        if block {
            libc::sigfillset(&mut set);
        } else {
            libc::sigemptyset(&mut set);
        }
        check(libc::sigprocmask(
            libc::SIG_SETMASK,
            &set,
            std::ptr::null_mut(),
        ))
        .map(drop)
    }
}

/// The bit mask of [`FORWARDED`] signals, as `sandbox-init` takes it (bit N for signal N).
const fn forward_mask() -> u64 {
    let mut mask = 0u64;
    let mut i = 0;
    while i < FORWARDED.len() {
        mask |= 1u64 << FORWARDED[i];
        i += 1;
    }
    mask
}

/// Writes `v` in decimal into `buf`, NUL-terminated, and returns a pointer to it.
/// Async-signal-safe (no allocation).
pub(crate) fn decimal(mut v: u64, buf: &mut [u8; 24]) -> *const libc::c_char {
    let mut i = buf.len() - 1;
    buf[i] = 0;
    loop {
        i -= 1;
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 || i == 0 {
            break;
        }
    }
    buf[i..].as_ptr().cast()
}

/// The plugin's entry point on its own stack (cloned with `CLONE_VM` by the init).
///
/// # Safety
/// Called only by [`super::clone::clone3_vm`] with a pointer to the live `ChildCtx`.
unsafe extern "C" fn plugin_entry(arg: *const u8) -> ! {
    // SAFETY: the spawner keeps the ChildCtx alive until the plugin has exec'd or exited.
    unsafe {
        let ctx = &*(arg as *const ChildCtx);
        plugin_main(&*ctx.plan, &ctx.fds)
    }
}

/// Runs the init: clones the plugin, then becomes `sandbox-init`, which forwards signals and
/// reaps until the plugin exits.
///
/// # Safety
/// Child-side only; never returns. `ctx` is the `ChildCtx` this init was started with.
pub(crate) unsafe fn run_init(plan: &Plan, fds: &ChildFds, ctx: *const ChildCtx) -> ! {
    // SAFETY: raw system calls on the plan and fds the host prepared, which the spawner keeps
    // alive until this process execs; the plugin clone gets the ChildCtx it needs and a stack
    // the spawner mapped for it.
    unsafe {
        let e = fds.err_w;
        if let Err(err) = reset_dispositions().and_then(|_| mask_all(true)) {
            fail(e, Step::Signals, err)
        }
        // The plugin shares this address space (the host's) until its execve, on a stack of its
        // own: nothing of the host is copied. It waits for sandbox-init's go before its execve.
        let mut args = CloneArgs {
            flags: libc::CLONE_VM as u64,
            exit_signal: libc::SIGCHLD as u64,
            stack: fds.plugin_stack as u64,
            stack_size: fds.plugin_stack_size as u64,
            ..Default::default()
        };
        let child = clone3_vm(&mut args, plugin_entry, ctx.cast());
        if child < 0 {
            fail(e, Step::Fork, Errno::from_raw(-child as i32))
        }
        // The init needs no privilege to forward signals to and reap its own children, and the
        // empty bounding set keeps sandbox-init from regaining any at its exec.
        if let Err(err) = caps::drop_all_but(0, plan.last_cap) {
            fail(e, Step::Capabilities, err)
        }
        // The init never uses stdio: its copies would keep the host's pipes open after the
        // plugin closed them (a plugin that closes stdout must give the host end of file).
        for fd in 0..3 {
            libc::close(fd);
        }
        libc::close(fds.go_r);
        // The status pipe and the go pipe cross the exec; everything else of ours is CLOEXEC,
        // the error pipe included (its end of file then means both have exec'd).
        for fd in [fds.status_w, fds.go_w] {
            if let Err(err) = check(libc::fcntl(fd, libc::F_SETFD, 0)) {
                fail(e, Step::InitExec, err)
            }
        }
        let (mut b1, mut b2, mut b3, mut b4) = ([0u8; 24], [0u8; 24], [0u8; 24], [0u8; 24]);
        let argv: [*const libc::c_char; 6] = [
            c"sandbox-init".as_ptr(),
            decimal(child as u64, &mut b1),
            decimal(fds.status_w as u64, &mut b2),
            decimal(fds.go_w as u64, &mut b3),
            decimal(forward_mask(), &mut b4),
            std::ptr::null(),
        ];
        let envp: [*const libc::c_char; 1] = [std::ptr::null()];
        libc::syscall(
            libc::SYS_execveat,
            fds.init_exe,
            c"".as_ptr(),
            argv.as_ptr(),
            envp.as_ptr(),
            libc::AT_EMPTY_PATH,
        );
        fail(e, Step::InitExec, Errno::last())
    }
}

/// The plugin's own steps after the fork, then `execve`.
unsafe fn plugin_main(plan: &Plan, fds: &ChildFds) -> ! {
    // SAFETY: raw system calls on the plan and fds the host prepared, alive until the execve
    // below; every pointer passed (paths, argv, envp) is a NUL-terminated CString of the plan.
    unsafe {
        let e = fds.err_w;
        libc::close(fds.status_w);
        libc::close(fds.go_w);
        // An interactive session (the runner's pseudo-terminal on fds 0-2): a session of
        // the plugin's own, with that terminal as its controlling terminal, so that the
        // kernel signals it for ^C, ^\, ^Z and window changes as it would a shell's job.
        if fds.ctty >= 0 {
            if let Err(err) = check(libc::setsid())
                .and_then(|_| check(libc::ioctl(fds.ctty, libc::TIOCSCTTY as _, 0)))
            {
                fail(e, Step::Ctty, err)
            }
        }
        if let Err(err) = mask_all(false) {
            fail(e, Step::Signals, err)
        }
        if let Err(err) = check(libc::chdir(plan.c.cwd.as_ptr())) {
            fail(e, Step::Chdir, err)
        }
        // Landlock first: its rules open the sandbox's paths (before a small `nofile` limit),
        // and restricting needs CAP_SYS_ADMIN or no_new_privs.
        if let Some(ll) = &plan.landlock {
            if let Err((rule, err)) = landlock::enforce(ll) {
                fail_at(e, Step::Landlock, rule, err)
            }
        }
        // Limits before the capability drop: CAP_SYS_RESOURCE lets a profile's limit go above
        // the caller's hard limit.
        if let Err((res, err)) = rlimit::apply(&plan.rlimits) {
            fail_at(e, Step::Rlimits, res, err)
        }
        if let Err(err) = caps::become_user(plan.uid, plan.gid, plan.keep_caps, plan.last_cap) {
            fail(e, Step::Capabilities, err)
        }
        if let Err(err) = caps::no_new_privs() {
            fail(e, Step::NoNewPrivs, err)
        }
        // Wait until the init is sandbox-init: from then on PID 1 holds nothing of the host,
        // and only then may anything of the plugin's run. The steps above are the runner's
        // own (they overlap the init's exec); the plugin's code runs from the execve below.
        let mut go = 0u8;
        loop {
            let n = libc::read(fds.go_r, (&mut go as *mut u8).cast(), 1);
            if n == 1 {
                break;
            }
            if n == 0 || Errno::last() != Errno::EINTR {
                // The init is gone (its own failure is on the error pipe).
                libc::_exit(125);
            }
        }
        libc::close(fds.go_r);
        // Only fds 0, 1, 2, the error pipe (CLOEXEC: it closes at execve) and the profile's
        // pass_fds survive; the pass_fds lose CLOEXEC so they cross the execve.
        if let Err(err) = close_all_but(fds.plugin_keep()) {
            fail(e, Step::CloseFds, err)
        }
        for &fd in plan.pass_fds() {
            if let Err(err) = check(libc::fcntl(fd, libc::F_SETFD, 0)) {
                fail(e, Step::PassFds, err)
            }
        }
        // The brokered-connect filter before the profile's programs (the kernel runs them
        // all and takes the strictest answer, so the order changes no decision): installing
        // it and sending its listener need `seccomp` and `sendmsg`, which a profile may deny.
        // The listener is closed here; the plugin never holds it.
        if fds.broker >= 0 {
            if let Err(err) = seccomp::install_connect_listener(fds.broker) {
                fail(e, Step::Broker, err)
            }
        }
        // seccomp last: nothing of the setup is filtered, only the plugin from its execve on.
        if let Err(err) = seccomp::apply(&plan.seccomp) {
            fail(e, Step::Seccomp, err)
        }
        libc::execve(
            plan.c.program.as_ptr(),
            plan.argv_ptrs.as_ptr(),
            plan.envp_ptrs.as_ptr(),
        );
        fail(e, Step::Exec, Errno::last())
    }
}
