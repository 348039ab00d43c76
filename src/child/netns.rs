//! Sockets made inside a rootless sandbox's network namespace, for its egress proxies.
//!
//! An unprivileged host cannot `setns` into a network namespace owned by the sandbox's user
//! namespace, and a multi-threaded process cannot enter a user namespace at all. So a
//! short-lived child of the host does it: cloned with `CLONE_VM | CLONE_VFORK | CLONE_FILES`
//! onto a stack of its own (the host's calling thread waits until it exits), it enters the
//! sandbox's user namespace (whose owner, the host's euid, has every capability there) and
//! network namespace, brings `lo` up, makes the listening sockets, and exits. The sockets
//! land in the host's own fd table (`CLONE_FILES`) and their numbers in the host's memory
//! (`CLONE_VM`); nothing is passed over a socket and nothing of the child remains. It runs
//! before the sandbox is let go, so no process of the host's runs in the sandbox's
//! namespaces while the plugin does. Like every child of this tree, it only makes plain
//! system calls on data prepared by the caller: no allocation, no lock.

use nix::errno::Errno;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};

use super::clone::{clone3_vm, CloneArgs, Stacks};

/// One socket to make: a TCP listener or a UDP socket bound to `addr` (IPv4).
#[derive(Clone, Copy)]
pub(crate) struct SocketSpec {
    /// TCP (listening) or UDP.
    pub tcp: bool,
    /// Where it is bound.
    pub addr: libc::sockaddr_in,
}

/// Which step of the child failed: entering the user namespace, the network namespace,
/// bringing `lo` up, or making socket `index`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NsStep {
    /// `setns` into the user namespace.
    UserNs,
    /// `setns` into the network namespace.
    NetNs,
    /// `SIOCSIFFLAGS` on `lo`.
    Loopback,
    /// `socket`, `bind` or `listen` of the spec at this index.
    Socket(usize),
    /// The clone itself, or reaping the child.
    Clone,
}

/// The child's shared record: inputs, then what it made or where it failed.
#[repr(C)]
struct Job {
    userns: RawFd,
    netns: RawFd,
    specs: *const SocketSpec,
    n: usize,
    /// `n` entries, -1 until made.
    fds: *mut RawFd,
    /// 0: no failure; 1 user ns, 2 net ns, 3 loopback, 4 socket (`index`).
    step: u32,
    index: usize,
    errno: i32,
}

/// Makes the sockets of `specs`, in order, inside the user namespace `userns` and the
/// network namespace `netns` (open namespace files of the sandbox's init), from a
/// short-lived child (see the module text). Every signal is blocked on the calling thread
/// for the duration, so none runs a handler of the host in the child.
pub(crate) fn make_sockets(
    userns: RawFd,
    netns: RawFd,
    specs: &[SocketSpec],
) -> Result<Vec<OwnedFd>, (NsStep, Errno)> {
    let stacks = Stacks::new().map_err(|e| (NsStep::Clone, e))?;
    let (stack, stack_size) = stacks.stack(0);
    let mut fds: Vec<RawFd> = vec![-1; specs.len()];
    let mut job = Job {
        userns,
        netns,
        specs: specs.as_ptr(),
        n: specs.len(),
        fds: fds.as_mut_ptr(),
        step: 0,
        index: 0,
        errno: 0,
    };
    let mut args = CloneArgs {
        flags: (libc::CLONE_VM | libc::CLONE_VFORK | libc::CLONE_FILES) as u64,
        // No exit signal: only a waitpid with __WALL sees it, so nobody else reaps it.
        exit_signal: 0,
        stack: stack as u64,
        stack_size: stack_size as u64,
        ..Default::default()
    };
    // SAFETY: plain mask changes of the calling thread, restored below.
    let mut old: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: as above; `all` is fully initialized by sigfillset.
    unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_SETMASK, &all, &mut old);
    }
    // SAFETY: the stack is a mapping of `stacks`, alive until after the child is reaped;
    // with CLONE_VFORK this thread waits until the child has exited, so `job`, `specs` and
    // `fds` outlive it; `child` only makes system calls and exits.
    let pid = unsafe { clone3_vm(&mut args, child, (&mut job as *mut Job).cast()) };
    let mut reaped = Ok(());
    if pid > 0 {
        let mut st = 0;
        // SAFETY: reaps our own child (exit signal 0: __WALL is needed to see it).
        if unsafe { libc::waitpid(pid as i32, &mut st, libc::__WALL) } < 0 {
            reaped = Err((NsStep::Clone, Errno::last()));
        }
    }
    // SAFETY: restores the mask saved above.
    unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, &old, std::ptr::null_mut()) };
    drop(stacks);
    // Whatever the child made is ours now, made or not in full.
    let made: Vec<OwnedFd> = fds
        .iter()
        .take_while(|fd| **fd >= 0)
        // SAFETY: each is a socket the child opened in our shared fd table, owned by nobody.
        .map(|fd| unsafe { OwnedFd::from_raw_fd(*fd) })
        .collect();
    if pid < 0 {
        return Err((NsStep::Clone, Errno::from_raw(-pid as i32)));
    }
    reaped?;
    let step = match job.step {
        0 if made.len() == specs.len() => return Ok(made),
        0 => NsStep::Clone,
        1 => NsStep::UserNs,
        2 => NsStep::NetNs,
        3 => NsStep::Loopback,
        _ => NsStep::Socket(job.index),
    };
    Err((step, Errno::from_raw(job.errno)))
}

/// The child: enter the namespaces, bring `lo` up, make the sockets, exit.
///
/// # Safety
/// Runs on its own stack in the host's address space; `arg` is the caller's `Job`, alive
/// until this process exits (CLONE_VFORK). Plain system calls only.
unsafe extern "C" fn child(arg: *const u8) -> ! {
    // SAFETY: see the function's contract; every pointer comes from the suspended caller.
    unsafe {
        let job = &mut *(arg as *mut Job);
        let fail = |job: &mut Job, step: u32, index: usize| -> ! {
            job.step = step;
            job.index = index;
            job.errno = Errno::last_raw();
            libc::_exit(1)
        };
        if libc::setns(job.userns, libc::CLONE_NEWUSER) < 0 {
            fail(job, 1, 0)
        }
        if libc::setns(job.netns, libc::CLONE_NEWNET) < 0 {
            fail(job, 2, 0)
        }
        if let Err(e) = super::net::loopback_up() {
            Errno::set_raw(e as i32);
            fail(job, 3, 0)
        }
        for i in 0..job.n {
            let spec = &*job.specs.add(i);
            let ty = if spec.tcp {
                libc::SOCK_STREAM
            } else {
                libc::SOCK_DGRAM
            };
            let fd = libc::socket(libc::AF_INET, ty | libc::SOCK_CLOEXEC, 0);
            if fd < 0 {
                fail(job, 4, i)
            }
            *job.fds.add(i) = fd;
            let one: libc::c_int = 1;
            if spec.tcp
                && libc::setsockopt(
                    fd,
                    libc::SOL_SOCKET,
                    libc::SO_REUSEADDR,
                    (&one as *const libc::c_int).cast(),
                    std::mem::size_of::<libc::c_int>() as libc::socklen_t,
                ) < 0
            {
                fail(job, 4, i)
            }
            if libc::bind(
                fd,
                (&spec.addr as *const libc::sockaddr_in).cast(),
                std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
            ) < 0
            {
                fail(job, 4, i)
            }
            if spec.tcp && libc::listen(fd, 128) < 0 {
                fail(job, 4, i)
            }
        }
        libc::_exit(0)
    }
}
