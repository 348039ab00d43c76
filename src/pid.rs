//! PID namespace: the sandbox's init (PID 1) and the fork of the plugin.
//!
//! The init is a tiny allocation-free loop, as in tini or bubblewrap: it forks the plugin,
//! forwards the signals a host sends (TERM, INT, HUP, QUIT, USR1, USR2), reaps every orphan
//! the namespace hands it, and when the plugin exits it writes the plugin's raw wait status
//! to the status pipe and exits with the plugin's code (`128 + N` for a signal). When the init
//! exits, the kernel kills everything left in the namespace, so nothing outlives the plugin.

use nix::errno::Errno;

use crate::plan::Plan;
use crate::spawn::{check, close_all_but, fail, fail_at, ChildFds, Step};

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

/// Blocks every signal (`block`) or none.
unsafe fn mask_all(block: bool) -> Result<(), Errno> {
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

/// Runs the init: forks the plugin, then forwards signals and reaps until the plugin exits.
///
/// # Safety
/// Child-side only; never returns.
pub(crate) unsafe fn run_init(plan: &Plan, fds: &ChildFds) -> ! {
    let e = fds.err_w;
    if let Err(err) = reset_dispositions().and_then(|_| mask_all(true)) {
        fail(e, Step::Signals, err)
    }
    // A raw clone, not libc::fork: glibc's fork runs atfork handlers and takes locks that a
    // thread of the host may have held when we were cloned.
    let child = libc::syscall(libc::SYS_clone, libc::SIGCHLD as libc::c_ulong, 0, 0, 0, 0);
    if child < 0 {
        fail(e, Step::Fork, Errno::last())
    }
    if child == 0 {
        plugin_main(plan, fds)
    }
    let plugin = child as libc::pid_t;
    // The init never uses stdio: its copies would keep the host's pipes open after the
    // plugin closed them (a plugin that closes stdout must give the host end of file).
    for fd in 0..3 {
        libc::close(fd);
    }
    // The init needs no privilege to forward signals to and reap its own children.
    if let Err(err) = crate::capability::drop_all_but(0, plan.last_cap) {
        libc::kill(plugin, libc::SIGKILL);
        fail(e, Step::Capabilities, err)
    }
    // The plugin holds its own copy of the error pipe until its execve; ours goes now, so the
    // host sees EOF exactly when the plugin has exec'd (or a step record if it failed).
    libc::close(e);
    let mut set: libc::sigset_t = std::mem::zeroed();
    libc::sigfillset(&mut set);
    loop {
        let sig = libc::sigwaitinfo(&set, std::ptr::null_mut());
        if sig == libc::SIGCHLD {
            // Reap everything that is ready: the plugin and any orphan reparented to us.
            loop {
                let mut st: libc::c_int = 0;
                let r = libc::waitpid(-1, &mut st, libc::WNOHANG);
                if r <= 0 {
                    break;
                }
                if r == plugin {
                    libc::write(
                        fds.status_w,
                        (&st as *const libc::c_int).cast(),
                        std::mem::size_of::<libc::c_int>(),
                    );
                    let code = if libc::WIFSIGNALED(st) {
                        128 + libc::WTERMSIG(st)
                    } else {
                        libc::WEXITSTATUS(st)
                    };
                    libc::_exit(code)
                }
            }
        } else if FORWARDED.contains(&sig) {
            libc::kill(plugin, sig);
        }
    }
}

/// The plugin's own steps after the fork, then `execve`.
unsafe fn plugin_main(plan: &Plan, fds: &ChildFds) -> ! {
    let e = fds.err_w;
    libc::close(fds.status_w);
    if let Err(err) = mask_all(false) {
        fail(e, Step::Signals, err)
    }
    if let Err(err) = check(libc::chdir(plan.c.cwd.as_ptr())) {
        fail(e, Step::Chdir, err)
    }
    // Landlock first: its rules open the sandbox's paths (before a small `nofile` limit),
    // and restricting needs CAP_SYS_ADMIN or no_new_privs.
    if let Some(ll) = &plan.landlock {
        if let Err((rule, err)) = crate::landlock::enforce(ll) {
            fail_at(e, Step::Landlock, rule, err)
        }
    }
    // Limits before the capability drop: CAP_SYS_RESOURCE lets a profile's limit go above
    // the caller's hard limit.
    if let Err((res, err)) = crate::rlimit::apply(&plan.rlimits) {
        fail_at(e, Step::Rlimits, res, err)
    }
    if let Err(err) =
        crate::capability::become_user(plan.uid, plan.gid, plan.keep_caps, plan.last_cap)
    {
        fail(e, Step::Capabilities, err)
    }
    if let Err(err) = crate::capability::no_new_privs() {
        fail(e, Step::NoNewPrivs, err)
    }
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
    // seccomp last: nothing of the setup is filtered, only the plugin from its execve on.
    if let Err(err) = crate::seccomp::apply(&plan.seccomp) {
        fail(e, Step::Seccomp, err)
    }
    libc::execve(
        plan.c.program.as_ptr(),
        plan.argv_ptrs.as_ptr(),
        plan.envp_ptrs.as_ptr(),
    );
    fail(e, Step::Exec, Errno::last())
}
