//! Network namespaces made ahead of the starts that take them.
//!
//! Making a network namespace is the dearest part of a sandbox's clone: about 0.6-0.9 ms of
//! `copy_net_ns` on the machines we measured, against tens of microseconds each for the
//! mount, IPC, UTS and PID namespaces. A thread of the host (`sandbox-netns`) makes one
//! ahead: it `unshare`s a new network namespace for itself, brings `lo` up in it, keeps it
//! open by an fd and `setns`es back to the host's. The spawner thread enters that namespace
//! just for the clone of a sandbox's init (see `spawner`), which then needs no
//! `CLONE_NEWNET`, and the thread makes the next one while the host is idle.
//!
//! - **Each namespace serves one sandbox.** [`take`] hands the fd out once and the pool
//!   forgets it; the maker's own reference is gone (it has moved back) before the fd is
//!   offered. When the pool is empty (a burst of starts, the maker stopped, no privilege),
//!   the clone makes the namespace itself, as before: the same fresh namespace, only later.
//! - **Owned by the host's user namespace.** A namespace made here belongs to the initial
//!   user namespace, not to the sandbox's own: the sandbox's root has no capability over
//!   it (it can neither configure it nor bind ports below 1024 in it). The host therefore
//!   asks for one only when that changes nothing the plugin may do: no user namespace, or a
//!   plugin that keeps none of the capabilities checked against a network namespace's
//!   owner (see `sandbox::start`).
//! - **Nothing on the host.** The namespaces are held by fds only (no bind mount), so they
//!   end with the process, whichever way it ends.

use nix::errno::Errno;
use nix::sched::CloneFlags;
use std::os::fd::{AsFd, FromRawFd, OwnedFd};
use std::sync::{Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// How many namespaces the maker may make in this process's life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Budget {
    /// One spare at all times, made again after each [`take`] (a long-lived host).
    Refill,
    /// This many in all (a process that starts one sandbox: `sandbox-run`).
    Total(usize),
}

struct State {
    /// The namespace made ahead, not yet taken.
    spare: Option<OwnedFd>,
    /// The maker is making one now.
    making: bool,
    /// When a start last asked for one.
    last_take: Option<Instant>,
    /// How many more the maker may make.
    left: usize,
}

struct Pool {
    budget: Budget,
    state: Mutex<State>,
    /// Wakes the maker when the spare was taken.
    taken: Condvar,
    /// Wakes a [`take`] waiting for the namespace being made.
    made: Condvar,
}

static POOL: OnceLock<Option<Pool>> = OnceLock::new();

/// How long a refilling maker waits after the last start asked for a namespace before it
/// makes the next: long enough that the work stays off that start's own path (a few
/// milliseconds to the plugin's exec here); a burst of starts closer together than this
/// makes its namespaces in their clones, as without the pool.
const QUIET: Duration = Duration::from_millis(10);

/// Opens the calling thread's network namespace.
pub(crate) fn own_netns() -> Result<OwnedFd, Errno> {
    // SAFETY: open of a constant path; the fd returned is new and ours.
    let fd = unsafe {
        libc::open(
            c"/proc/thread-self/ns/net".as_ptr(),
            libc::O_RDONLY | libc::O_CLOEXEC,
        )
    };
    if fd < 0 {
        return Err(Errno::last());
    }
    // SAFETY: a new fd, owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Makes one namespace on the calling thread, `lo` up, and moves the thread back to `host`.
/// An error from the move back leaves the thread inside: the caller must stop using it.
fn make_one(host: &OwnedFd) -> Result<OwnedFd, (Errno, bool)> {
    nix::sched::unshare(CloneFlags::CLONE_NEWNET).map_err(|e| (e, false))?;
    // SAFETY: plain socket/ioctl/close calls on this thread.
    let made = unsafe { super::net::loopback_up() }.and_then(|()| own_netns());
    nix::sched::setns(host.as_fd(), CloneFlags::CLONE_NEWNET).map_err(|e| (e, true))?;
    made.map_err(|e| (e, false))
}

/// The maker thread: one spare at a time, until the budget is spent or a step fails (then
/// the pool stays empty and every clone makes its own namespace).
fn maker(pool: &'static Pool, host: OwnedFd) {
    if pool.budget == Budget::Refill {
        // A spare is made while the host has a CPU to spare, never in the way of a start.
        let param = libc::sched_param { sched_priority: 0 };
        // SAFETY: sets this thread's policy from a live parameter block.
        unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) };
    }
    loop {
        {
            let mut st = pool.state.lock().unwrap_or_else(|p| p.into_inner());
            loop {
                if st.spare.is_some() || st.left == 0 {
                    st = pool.taken.wait(st).unwrap_or_else(|p| p.into_inner());
                    continue;
                }
                let since = st.last_take.map(|t| t.elapsed());
                match since {
                    Some(since) if pool.budget == Budget::Refill && since < QUIET => {
                        st = pool
                            .taken
                            .wait_timeout(st, QUIET - since)
                            .unwrap_or_else(|p| p.into_inner())
                            .0;
                    }
                    _ => break,
                }
            }
            st.left -= 1;
            st.making = true;
        }
        let made = make_one(&host);
        let mut st = pool.state.lock().unwrap_or_else(|p| p.into_inner());
        st.making = false;
        match made {
            Ok(fd) => st.spare = Some(fd),
            Err((e, stuck)) => {
                tracing::debug!(error = %e, stuck,
                    "making a network namespace ahead failed; clones make their own");
                st.left = 0;
            }
        }
        drop(st);
        pool.made.notify_all();
        if pool.state.lock().unwrap_or_else(|p| p.into_inner()).left == 0 {
            // Done, or failed (maybe still inside the namespace it made: ending the
            // thread drops it).
            return;
        }
    }
}

/// Starts the maker with `budget`, unless it runs already (the first call decides the
/// budget). Only root makes namespaces ahead; for anyone else this does nothing.
pub(crate) fn start(budget: Budget) {
    POOL.get_or_init(|| {
        if !nix::unistd::geteuid().is_root() {
            return None;
        }
        let left = match budget {
            Budget::Refill => usize::MAX,
            Budget::Total(n) => n,
        };
        Some(Pool {
            budget,
            // The first one counts as being made from now on: a `take` that comes before
            // the maker thread first runs waits for it.
            state: Mutex::new(State {
                spare: None,
                making: left > 0,
                last_take: None,
                left,
            }),
            taken: Condvar::new(),
            made: Condvar::new(),
        })
    });
    if let Some(Some(pool)) = POOL.get() {
        static STARTED: OnceLock<()> = OnceLock::new();
        STARTED.get_or_init(|| {
            let Ok(host) = own_netns() else {
                let mut st = pool.state.lock().unwrap_or_else(|p| p.into_inner());
                st.left = 0;
                st.making = false;
                drop(st);
                pool.made.notify_all();
                return;
            };
            let spawned = std::thread::Builder::new()
                .name("sandbox-netns".into())
                .stack_size(64 * 1024)
                .spawn(move || maker(pool, host));
            if spawned.is_err() {
                let mut st = pool.state.lock().unwrap_or_else(|p| p.into_inner());
                st.left = 0;
                st.making = false;
                drop(st);
                pool.made.notify_all();
            }
        });
    }
}

/// The namespace made ahead, if there is one; the maker then makes the next. With a
/// [`Budget::Total`], a namespace being made right now is waited for: begun at the process's
/// start, it is ready sooner than one the clone would begin making only then. A refilling
/// maker is never waited for (it runs at idle priority, and a burst of starts would queue
/// behind it). Starts the maker (refilling) at the first call if nothing started it.
pub(crate) fn take() -> Option<OwnedFd> {
    start(Budget::Refill);
    let pool = POOL.get()?.as_ref()?;
    let mut st = pool.state.lock().unwrap_or_else(|p| p.into_inner());
    st.last_take = Some(Instant::now());
    while st.spare.is_none() && st.making && pool.budget != Budget::Refill {
        st = pool.made.wait(st).unwrap_or_else(|p| p.into_inner());
    }
    let fd = st.spare.take();
    drop(st);
    if fd.is_some() {
        pool.taken.notify_one();
    }
    fd
}

/// Waits, at most `limit`, until a namespace made ahead is ready for the next start (or the
/// maker has stopped, or this process makes none). Returns whether one is ready.
pub(crate) fn wait_ready(limit: Duration) -> bool {
    let Some(Some(pool)) = POOL.get() else {
        return false;
    };
    let deadline = Instant::now() + limit;
    let mut st = pool.state.lock().unwrap_or_else(|p| p.into_inner());
    while st.spare.is_none() && st.left > 0 {
        let now = Instant::now();
        if now >= deadline {
            break;
        }
        st = pool
            .made
            .wait_timeout(st, deadline - now)
            .unwrap_or_else(|p| p.into_inner())
            .0;
    }
    st.spare.is_some()
}
