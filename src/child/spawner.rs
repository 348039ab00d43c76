//! The spawner thread: every sandbox init is cloned from this one long-lived thread of the
//! host process, into the host's address space (`CLONE_VM`) on stacks of its own, and the
//! thread waits until the init and the plugin have exec'd before it frees those stacks.

use libc::c_int;
use nix::errno::Errno;
use std::mem::ManuallyDrop;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock};

use super::clone::{clone3_vm, CloneArgs, Stacks, CLONE_INTO_CGROUP};
use super::fds::{ChildFds, FdList, Move, MoveList, MOVE_MAX};
use super::plan::Plan;

/// What the init's entry point receives: the plan and the fds, in the spawner's memory.
pub(crate) struct ChildCtx {
    /// The sandbox's plan.
    pub plan: *const Plan,
    /// The fds and stacks.
    pub fds: ChildFds,
    /// Raised (and futex-woken) by the child once its fd table is its own (`fds.cut > 0`).
    pub unshared: AtomicU32,
}

/// The init's entry point on its own stack.
///
/// # Safety
/// Called only by [`clone3_vm`] with a pointer to a live [`ChildCtx`].
unsafe extern "C" fn init_entry(arg: *const u8) -> ! {
    // SAFETY: the spawner keeps the ChildCtx (and the plan it points to) alive until no
    // process of the sandbox runs in its memory.
    unsafe { super::setup::child_main(&*(arg as *const ChildCtx)) }
}

/// The result of a clone: the init's host pid and a pidfd for it.
pub(crate) struct Spawned {
    /// Host pid of the init (informational; every action goes through `pidfd`).
    pub pid: i32,
    /// A pidfd of the init, `CLOEXEC`.
    pub pidfd: OwnedFd,
}

/// Clones the init with `plan`'s namespace flags but `drop_flags` into this address space
/// (`CLONE_VM`), on the init stack of `stacks`. Called on the spawner thread only.
///
/// # Safety
/// `ctx` must describe open fds of this process and stay alive, with `stacks`, until the
/// init and the plugin no longer run in this address space; the child never returns.
unsafe fn clone_init(
    ctx: &ChildCtx,
    stacks: &Stacks,
    cgroup: Option<RawFd>,
    drop_flags: u64,
) -> Result<Spawned, Errno> {
    // SAFETY: the caller's contract.
    let plan = unsafe { &*ctx.plan };
    let mut pidfd: c_int = -1;
    let (stack, stack_size) = stacks.stack(0);
    // With a cut, the child shares this table until its first step copies the fds below
    // the cut into a table of its own (see Slots).
    let files = if ctx.fds.cut > 0 {
        libc::CLONE_FILES as u64
    } else {
        0
    };
    let mut args = CloneArgs {
        flags: (plan.clone_flags & !drop_flags)
            | libc::CLONE_PIDFD as u64
            | libc::CLONE_VM as u64
            | files,
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

/// How many fd slots the spawner keeps (see [`Slots`]).
const SLOTS: usize = MOVE_MAX;

/// The lowest fd number a child must need for its clone to share the host's table (see
/// [`Slots::park`]).
const SHARE_FROM: RawFd = 512;

/// Fd numbers the spawner holds low in the host's table, where it parks the fds a new init
/// needs, so that the init can be cloned sharing the host's table (`CLONE_FILES`) and copy
/// only the fds below the cut into a table of its own (`close_range(cut, ~0,
/// CLOSE_RANGE_UNSHARE)`, Linux 5.9) rather than every fd of the host.
///
/// Why: a copied table takes a reference on every open file of the host, and the child's
/// `close_range` drops them all again. Each sandbox alive holds three fds in its host (the
/// init's pidfd, the status pipe, the OOM eventfd), so with 500 alive a start copied and
/// closed 1,500 files: 0.5 ms of the start, the largest of the runner's own costs that grew
/// with the number alive. Sharing, a start copies the same few fds with none or thousands
/// alive.
///
/// Each slot is a `CLOEXEC` dup of one placeholder (the read end of a pipe nobody writes),
/// reserved when the spawner thread starts; a slot holds a parked fd (`CLOEXEC` as well, so
/// no program the host spawns meanwhile inherits it) only from just before a clone until the
/// child has its own table. A slot that no longer holds the placeholder (the host closed or
/// replaced a number it does not own) is never written to: that start copies the whole
/// table, as do starts that need more fds than there are slots.
struct Slots {
    placeholder: OwnedFd,
    /// `st_dev` and `st_ino` of the placeholder.
    id: (u64, u64),
    /// The slot numbers, ascending.
    fds: Vec<RawFd>,
    /// One past the highest slot: the child keeps the fds below.
    cut: u32,
}

impl Slots {
    /// Reserves the slots: the lowest free numbers of the host's table from 3 up. `None` if
    /// a pipe or a dup fails (every start then copies the whole table).
    fn reserve() -> Option<Slots> {
        let (placeholder, w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC).ok()?;
        drop(w);
        let st = rustix::fs::fstat(&placeholder).ok()?;
        let mut fds = Vec::with_capacity(SLOTS);
        for _ in 0..SLOTS {
            match rustix::io::fcntl_dupfd_cloexec(&placeholder, 3) {
                Ok(fd) => fds.push(fd.into_raw_fd()),
                Err(_) => {
                    for fd in fds {
                        // SAFETY: a dup made just above, owned by nothing else.
                        drop(unsafe { OwnedFd::from_raw_fd(fd) });
                    }
                    return None;
                }
            }
        }
        fds.sort_unstable();
        let cut = (*fds.last()? as u32).checked_add(1)?;
        Some(Slots {
            placeholder,
            id: (st.st_dev as u64, st.st_ino as u64),
            fds,
            cut,
        })
    }

    /// Whether `slot` still holds the placeholder.
    #[allow(clippy::unnecessary_cast)] // `st_dev` and `st_ino` are not u64 on every target
    fn holds_placeholder(&self, slot: RawFd) -> bool {
        // SAFETY: only fstat'ed; a slot number is ours as long as it holds the placeholder.
        let fd = unsafe { BorrowedFd::borrow_raw(slot) };
        matches!(rustix::fs::fstat(fd), Ok(st) if (st.st_dev as u64, st.st_ino as u64) == self.id)
    }

    /// Parks every fd of `fds` at or above the cut in a slot, and sets `fds.cut`. The child
    /// then uses a parked fd at its slot's number (its fields and keep lists are renamed),
    /// except the profile's `pass_fds` (`pass`), which the plugin expects at their own
    /// numbers: those are put back there by the child (`fds.moves`). So the child's table
    /// stays as small as the host's lowest fds, whatever numbers the host's fds have.
    /// Returns the slots used; `None` leaves `fds` as it was (the whole table is copied).
    /// Runs before the clone, when no child uses this thread's `errno`.
    ///
    /// Only worth it in a big table: sharing costs the spawner a wait for the child's first
    /// step (a wake-up, 0.1-0.2 ms on this project's 2-vCPU VM), copying about 0.3 us per
    /// open fd of the host. So nothing is parked unless the child needs an fd numbered
    /// `share_from` or more (the host's new fds get high numbers only when its table is
    /// full that far up).
    fn park(&self, fds: &mut ChildFds, pass: &[RawFd], share_from: RawFd) -> Option<Vec<RawFd>> {
        let mut needed = vec![fds.err_w, fds.stdin, fds.stdout, fds.stderr];
        needed.extend_from_slice(fds.init_keep());
        needed.extend_from_slice(fds.plugin_keep());
        if needed.iter().all(|&fd| fd < share_from) {
            return None;
        }
        let mut parked: Vec<Move> = Vec::with_capacity(SLOTS);
        let mut free = self.fds.iter();
        for fd in needed {
            if fd < 0 || (fd as u32) < self.cut || parked.iter().any(|m| m.fd == fd) {
                continue;
            }
            let one = free
                .next()
                .filter(|s| self.holds_placeholder(**s))
                .and_then(|&slot| {
                    // SAFETY: `fd` is open in this process (the host keeps the child's fds open
                    // until the clone is done); the slot is ours.
                    let (src, mut dst) = unsafe {
                        (
                            BorrowedFd::borrow_raw(fd),
                            ManuallyDrop::new(OwnedFd::from_raw_fd(slot)),
                        )
                    };
                    let cloexec = rustix::io::fcntl_getfd(src)
                        .ok()?
                        .contains(rustix::io::FdFlags::CLOEXEC);
                    rustix::io::dup3(src, &mut dst, rustix::io::DupFlags::CLOEXEC).ok()?;
                    Some(Move { slot, fd, cloexec })
                });
            match one {
                Some(m) => parked.push(m),
                None => {
                    self.release(&slots_of(&parked));
                    return None;
                }
            }
        }
        let slot_of = |fd: RawFd| parked.iter().find(|m| m.fd == fd).map_or(fd, |m| m.slot);
        let moves: Vec<Move> = parked
            .iter()
            .filter(|m| pass.contains(&m.fd))
            .copied()
            .collect();
        let rename = |list: &[RawFd]| {
            let renamed: Vec<RawFd> = list
                .iter()
                .map(|&fd| if pass.contains(&fd) { fd } else { slot_of(fd) })
                .collect();
            FdList::new(&renamed)
        };
        let Some(moves) = MoveList::new(&moves) else {
            self.release(&slots_of(&parked));
            return None;
        };
        fds.init_keep = rename(fds.init_keep());
        fds.plugin_keep = rename(fds.plugin_keep());
        for fd in [
            &mut fds.stdin,
            &mut fds.stdout,
            &mut fds.stderr,
            &mut fds.err_w,
            &mut fds.status_w,
            &mut fds.sync_r,
            &mut fds.init_exe,
            &mut fds.go_r,
            &mut fds.go_w,
            &mut fds.broker,
        ] {
            if *fd >= 0 {
                *fd = slot_of(*fd);
            }
        }
        fds.cut = self.cut;
        fds.moves = moves;
        Some(slots_of(&parked))
    }

    /// Puts the placeholder back in `used`, dropping the host's extra references to the
    /// parked files. Raw system calls that leave `errno` alone (a child may run on this
    /// thread's thread-local storage).
    fn release(&self, used: &[RawFd]) {
        for &slot in used {
            // SAFETY: the slot is ours; ManuallyDrop keeps it open.
            let mut dst = ManuallyDrop::new(unsafe { OwnedFd::from_raw_fd(slot) });
            let _ = rustix::io::dup3(&self.placeholder, &mut dst, rustix::io::DupFlags::CLOEXEC);
        }
    }
}

/// The slots of `parked`.
fn slots_of(parked: &[Move]) -> Vec<RawFd> {
    parked.iter().map(|m| m.slot).collect()
}

/// Waits until a child cloned sharing this thread's fd table has a table of its own (or has
/// died without one). Raw system calls only: the child runs on this thread's `errno`.
fn wait_unshared(flag: &AtomicU32, pidfd: &OwnedFd) {
    let tick = rustix::fs::Timespec {
        tv_sec: 0,
        tv_nsec: 2_000_000,
    };
    while flag.load(Ordering::Acquire) == 0 {
        let _ = rustix::thread::futex::wait(
            flag,
            rustix::thread::futex::Flags::PRIVATE,
            0,
            Some(&tick),
        );
        if flag.load(Ordering::Acquire) != 0 {
            break;
        }
        // Killed (or failed) before its first step: it holds no table any more.
        let gone = rustix::process::waitid(
            rustix::process::WaitId::PidFd(pidfd.as_fd()),
            rustix::process::WaitIdOptions::EXITED
                | rustix::process::WaitIdOptions::NOHANG
                | rustix::process::WaitIdOptions::NOWAIT,
        );
        if matches!(gone, Ok(Some(_)) | Err(_)) {
            break;
        }
    }
}

/// Where the spawner makes a sandbox's init be born.
pub(crate) enum Placement {
    /// cgroup v2: `clone3(CLONE_INTO_CGROUP)` with this directory fd.
    IntoCgroup(OwnedFd),
}

/// Why [`spawn`] failed.
#[derive(Debug)]
pub(crate) enum SpawnError {
    /// `clone3` failed (or the stacks could not be mapped).
    Clone(Errno),
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
    /// The host uid and gid that own the sandbox's user namespace (a root runner's id
    /// range), taken by the spawner thread for the clone only.
    owner: Option<(u32, u32)>,
    /// See [`Request::keepalive`].
    keepalive: Option<Arc<dyn std::any::Any + Send + Sync>>,
    /// See [`Request::pool_net`].
    pool_net: bool,
    reply: tokio::sync::oneshot::Sender<Reply>,
}

/// How the spawner clones one sandbox (beyond its plan and fds).
pub(crate) struct Request {
    /// Where the init is born (`None`: the host attaches it by pid while it waits).
    pub placement: Option<Placement>,
    /// Let the child go right after the clone (nothing is left for the host to do first).
    pub release: bool,
    /// The host uid and gid that own the sandbox's user namespace (see `OwnerCreds`).
    pub owner: Option<(u32, u32)>,
    /// Something the spawner holds until it is done with the job (the clone made, the
    /// thread back in its own cgroups, and, for a start cancelled meanwhile, the init killed
    /// and reaped): the sandbox's cgroup, so that a cancelled start never removes it while
    /// the spawner thread or the init is still inside.
    pub keepalive: Option<Arc<dyn std::any::Any + Send + Sync>>,
    /// The init may be cloned into a network namespace made ahead (`netpool`), owned by the
    /// host's user namespace, when there is one: the host decided that the plugin loses
    /// nothing by it.
    pub pool_net: bool,
}

/// The spawner thread's own ids and groups, saved while it clones as a sandbox's owner.
///
/// A user namespace belongs to the effective uid of the task that creates it, and every
/// per-user count of the processes inside (inotify instances and watches, queued signals,
/// processes, user namespaces) is charged to that owner in the parent namespace as well.
/// Cloned by host root, a sandbox would share root's counts; cloned with the effective ids
/// of its own range, it is charged there. Ids are per thread in the kernel (the raw system
/// calls of `rustix::thread`, which leave `errno` alone), so no other thread of the host is
/// affected; the real and saved ids stay root's, which lets the thread return.
struct OwnerCreds {
    euid: rustix::process::Uid,
    egid: rustix::process::Gid,
    groups: Vec<rustix::process::Gid>,
    dumpable: Option<rustix::process::DumpableBehavior>,
}

impl OwnerCreds {
    /// Drops the supplementary groups and takes `uid`/`gid` as effective ids.
    fn take(uid: u32, gid: u32) -> Result<OwnerCreds, Errno> {
        let errno = |e: rustix::io::Errno| Errno::from_raw(e.raw_os_error());
        let saved = OwnerCreds {
            euid: rustix::process::geteuid(),
            egid: rustix::process::getegid(),
            groups: rustix::process::getgroups().map_err(errno)?,
            // A change of effective id makes the whole process non-dumpable: put it back.
            dumpable: rustix::process::dumpable_behavior().ok(),
        };
        let res = rustix::thread::set_thread_groups(&[])
            .and_then(|_| {
                let g = rustix::process::Gid::from_raw(gid);
                rustix::thread::set_thread_res_gid(None, g, None)
            })
            .and_then(|_| {
                let u = rustix::process::Uid::from_raw(uid);
                rustix::thread::set_thread_res_uid(None, u, None)
            });
        match res {
            Ok(()) => Ok(saved),
            Err(e) => {
                let _ = saved.restore();
                Err(errno(e))
            }
        }
    }

    /// Returns to the saved ids and groups. Plain system calls that leave `errno` alone, so
    /// safe while a child runs on this thread's thread-local storage.
    fn restore(&self) -> Result<(), Errno> {
        let errno = |e: rustix::io::Errno| Errno::from_raw(e.raw_os_error());
        rustix::thread::set_thread_res_uid(None, self.euid, None).map_err(errno)?;
        rustix::thread::set_thread_res_gid(None, self.egid, None).map_err(errno)?;
        rustix::thread::set_thread_groups(&self.groups).map_err(errno)?;
        if let Some(d) = self.dumpable {
            rustix::process::set_dumpable_behavior(d).map_err(errno)?;
        }
        Ok(())
    }
}

/// `setns` of a network namespace.
const NETWORK: rustix::thread::LinkNameSpaceType = rustix::thread::LinkNameSpaceType::Network;

/// This thread's own network namespace (`None`: it could not be opened, and no namespace
/// made ahead is ever entered).
struct HostNet(Option<OwnedFd>);

/// The spawner thread moved into a namespace made ahead and could not move back: it must
/// clone nothing more (a sandbox without a network namespace of its own would share that
/// one).
struct Stuck;

/// Runs one job on the spawner thread; [`Stuck`] ends the thread.
fn run_job(job: Job, host_net: &HostNet, slots: Option<&Slots>) -> Result<(), Stuck> {
    let Job {
        plan,
        mut fds,
        placement,
        release,
        mut child_side,
        early_w,
        vm_r,
        owner,
        keepalive,
        pool_net,
        reply,
    } = job;
    let stacks = match Stacks::new() {
        Ok(s) => s,
        Err(e) => {
            // SAFETY: a 4-byte write from a live buffer.
            unsafe { libc::write(early_w.as_raw_fd(), [0u8; 4].as_ptr().cast(), 4) };
            let _ = reply.send(Reply(Some(Err(SpawnError::Clone(e)))));
            return Ok(());
        }
    };
    // A network namespace made ahead: entered by this thread (as root, before it takes the
    // owner's ids) for the clone only, so the init inherits it instead of making one.
    let newnet = libc::CLONE_NEWNET as u64;
    let mut entered = None;
    if pool_net && plan.clone_flags & newnet != 0 && host_net.0.is_some() {
        if let Some(ns) = super::netpool::take() {
            // Should this fail, the clone makes the namespace itself, as without the pool.
            if rustix::thread::move_into_link_name_space(ns.as_fd(), Some(NETWORK)).is_ok() {
                entered = Some(ns);
            }
        }
    }
    let drop_flags = if entered.is_some() { newnet } else { 0 };
    fds.net_ready = entered.is_some();
    (fds.plugin_stack, fds.plugin_stack_size) = stacks.stack(1);
    let parked = slots.and_then(|s| s.park(&mut fds, plan.pass_fds(), SHARE_FROM));
    let ctx = ChildCtx {
        plan: Arc::as_ptr(&plan),
        fds,
        unshared: AtomicU32::new(0),
    };
    let mut restored = Ok(());
    // Clones as the sandbox's owner, when it has one, and takes the thread's own ids back
    // right after (the children run on their own credentials from the clone on).
    let mut clone = |cgroup: Option<RawFd>| -> Result<Spawned, SpawnError> {
        let creds = match owner {
            Some((uid, gid)) => Some(OwnerCreds::take(uid, gid).map_err(SpawnError::Clone)?),
            None => None,
        };
        // SAFETY: ctx, plan and stacks live until the memory pipe's end of file below.
        let res =
            unsafe { clone_init(&ctx, &stacks, cgroup, drop_flags) }.map_err(SpawnError::Clone);
        if let Some(c) = creds {
            restored = c.restore().map_err(SpawnError::Clone);
        }
        res
    };
    let res = match placement.as_ref() {
        None => clone(None),
        Some(Placement::IntoCgroup(fd)) => clone(Some(fd.as_raw_fd())),
    };
    // Back to the host's namespace, with a raw system call that leaves `errno` alone (a
    // child may run on this thread's thread-local storage). The made namespace's fd closes:
    // the init holds it now.
    let mut stuck = false;
    if entered.take().is_some() {
        if let Some(host) = &host_net.0 {
            stuck = rustix::thread::move_into_link_name_space(host.as_fd(), Some(NETWORK)).is_err();
        }
        if stuck && restored.is_ok() {
            restored = Err(SpawnError::Clone(Errno::EBADFD));
        }
    }
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
    // The child shares this table until its first step: the fds it needs stay open (and
    // the slots keep them) until it has its own.
    if let (Some(slots), Some(used)) = (slots, parked.as_ref()) {
        if let Ok(spawned) = res.as_ref() {
            wait_unshared(&ctx.unshared, &spawned.pidfd);
        }
        slots.release(used);
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
    let res = match (res, restored) {
        (Ok(spawned), Err(e)) => {
            // This thread kept the sandbox owner's ids; do not leave a sandbox that was set
            // up in an unknown state.
            kill_and_reap(&spawned);
            Err(e)
        }
        (res, _) => res,
    };
    drop(placement);
    if !reply.is_closed() {
        // Let go of the keepalive before the answer, so the host holds the only reference
        // once it has the answer.
        drop(keepalive);
        let _ = reply.send(Reply(Some(res)));
    } else {
        // Cancelled meanwhile: the unsent Reply drops here, killing and reaping the init,
        // and only then the keepalive (the host's cgroup, removed when this is the last).
        drop(Reply(Some(res)));
        drop(keepalive);
    }
    if stuck {
        Err(Stuck)
    } else {
        Ok(())
    }
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
                let host_net = HostNet(super::netpool::own_netns().ok());
                let slots = Slots::reserve();
                // The Sender lives in a static, so this loop never ends and the thread
                // never exits while the process runs, unless it is stuck in a sandbox's
                // network namespace: then every later start fails (its job is refused).
                while let Ok(job) = rx.recv() {
                    if run_job(job, &host_net, slots.as_ref()).is_err() {
                        break;
                    }
                }
            })
            .expect("cannot start the sandbox-spawner thread");
        Mutex::new(tx)
    })
}

/// Starts the spawner thread now unless it runs already.
pub(crate) fn prewarm() {
    let _ = spawner();
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

/// A job sent to the spawner: the clone happens meanwhile on the spawner thread;
/// [`Sent::pending`] waits until the init exists. Dropping it first is a cancelled start:
/// the spawner kills and reaps the init.
pub(crate) struct Sent {
    early: tokio::net::unix::pipe::Receiver,
    rx: tokio::sync::oneshot::Receiver<Reply>,
}

impl Sent {
    /// Waits until the init exists (its pid is known); an error if the clone failed.
    pub async fn pending(self) -> Result<Pending, SpawnError> {
        let Sent { mut early, rx } = self;
        let io =
            |e: std::io::Error| SpawnError::Clone(Errno::from_raw(e.raw_os_error().unwrap_or(0)));
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
}

/// Sends the clone of a new sandbox init to the spawner thread and returns at once; the
/// caller may work meanwhile (make the cgroup the init joins later), then waits with
/// [`Sent::pending`].
///
/// `child_side` owns the fds that `fds` names for the child; they are closed in this process
/// once the clone is done. Among them must be the write end of `vm_r`'s pipe (`CLOEXEC`),
/// kept by both the init and the plugin: its end of file tells the spawner that no process
/// of the sandbox runs in the host's memory any more (both have exec'd or died).
pub(crate) fn spawn(
    plan: Arc<Plan>,
    fds: ChildFds,
    child_side: Vec<OwnedFd>,
    vm_r: OwnedFd,
    req: Request,
) -> Result<Sent, SpawnError> {
    let Request {
        placement,
        release,
        owner,
        keepalive,
        pool_net,
    } = req;
    let io = |e: std::io::Error| SpawnError::Clone(Errno::from_raw(e.raw_os_error().unwrap_or(0)));
    let (early_r, early_w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
        .map_err(|e| SpawnError::Clone(Errno::from_raw(e.raw_os_error())))?;
    let early = tokio::net::unix::pipe::Receiver::from_owned_fd(early_r).map_err(io)?;
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
            owner,
            keepalive,
            pool_net,
            reply,
        })
        .map_err(|_| SpawnError::Clone(Errno::ECHILD))?;
    Ok(Sent { early, rx })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::child::fds::FdList;

    fn child_fds(err_w: RawFd, keep: &[RawFd]) -> ChildFds {
        ChildFds {
            stdin: -1,
            stdout: err_w,
            stderr: err_w,
            err_w,
            status_w: err_w,
            sync_r: err_w,
            sync_w: err_w,
            init_keep: FdList::new(keep),
            plugin_keep: FdList::new(&[err_w]),
            host_pid: -1,
            init_exe: err_w,
            go_r: err_w,
            go_w: err_w,
            plugin_stack: 0,
            plugin_stack_size: 0,
            ctty: -1,
            broker: -1,
            net_ready: false,
            cut: 0,
            moves: MoveList::default(),
        }
    }

    /// `n` open fds numbered `cut` or more (the lower ones made on the way are kept open
    /// until then, so that the numbers climb).
    fn fds_above(cut: u32, n: usize) -> Vec<OwnedFd> {
        let mut low = Vec::new();
        let mut high = Vec::new();
        while high.len() < n {
            let (r, w) = rustix::pipe::pipe().unwrap();
            for fd in [r, w] {
                if fd.as_raw_fd() as u32 >= cut {
                    high.push(fd);
                } else {
                    low.push(fd);
                }
            }
        }
        high
    }

    fn same_file(a: RawFd, b: RawFd) -> bool {
        // SAFETY: fstat of fds this test holds open.
        let (a, b) = unsafe { (BorrowedFd::borrow_raw(a), BorrowedFd::borrow_raw(b)) };
        let (a, b) = (rustix::fs::fstat(a).unwrap(), rustix::fs::fstat(b).unwrap());
        (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)
    }

    /// Fds at or above the cut go to slots, fds below it stay where they are; the child is
    /// told to use the slots, except for a pass fd, which it puts back at its own number
    /// (`CLOEXEC` as the host had it); a release puts the placeholder back.
    #[test]
    fn park_moves_only_fds_above_the_cut_and_release_empties_the_slots() {
        let slots = Slots::reserve().expect("slots");
        assert_eq!(slots.fds.len(), SLOTS);
        assert!(slots.fds.iter().all(|&s| s >= 3 && (s as u32) < slots.cut));
        // Above the cut (the slots took the lowest free numbers).
        let high = fds_above(slots.cut, 3);
        let (err_w, pass, out) = (
            high[0].as_raw_fd(),
            high[1].as_raw_fd(),
            high[2].as_raw_fd(),
        );
        rustix::io::fcntl_setfd(&high[1], rustix::io::FdFlags::empty()).unwrap();
        let low = slots.fds[0] - 1;
        let mut keep = vec![pass, err_w];
        if low >= 3 {
            keep.push(low);
        }
        let mut fds = child_fds(err_w, &keep);
        fds.stdout = out;
        let used = slots.park(&mut fds, &[pass], 0).expect("parked");
        assert_eq!(fds.cut, slots.cut);
        assert_eq!(used.len(), 3);
        // The error pipe and stdout are used at their slots.
        assert!(used.contains(&fds.err_w) && used.contains(&fds.stdout));
        assert!(same_file(fds.err_w, err_w) && same_file(fds.stdout, out));
        assert_eq!(fds.status_w, fds.err_w);
        // The pass fd keeps its number: the child puts it back there.
        let moves = fds.moves.as_slice();
        assert_eq!(moves.len(), 1, "{moves:?}");
        assert_eq!((moves[0].fd, moves[0].cloexec), (pass, false));
        assert!(same_file(moves[0].slot, pass));
        let mut want = vec![pass, fds.err_w];
        if low >= 3 {
            want.push(low);
        }
        want.sort_unstable();
        assert_eq!(fds.init_keep(), &want[..]);
        assert_eq!(fds.plugin_keep(), &[fds.err_w]);
        for &slot in &used {
            // SAFETY: a slot this test reserved.
            let flags = rustix::io::fcntl_getfd(unsafe { BorrowedFd::borrow_raw(slot) });
            assert!(flags.unwrap().contains(rustix::io::FdFlags::CLOEXEC));
        }
        slots.release(&used);
        for &slot in &used {
            assert!(slots.holds_placeholder(slot));
        }
    }

    /// A slot that no longer holds the placeholder (the host replaced the number) is never
    /// written to: nothing is parked, and the fds are left as they were.
    #[test]
    fn a_slot_the_host_took_is_left_alone() {
        let slots = Slots::reserve().expect("slots");
        let (stolen_r, _stolen_w) = rustix::pipe::pipe().unwrap();
        // SAFETY: the slot is this test's own.
        let mut slot0 = ManuallyDrop::new(unsafe { OwnedFd::from_raw_fd(slots.fds[0]) });
        rustix::io::dup2(&stolen_r, &mut slot0).unwrap();
        let high = fds_above(slots.cut, 1);
        let err_w = high[0].as_raw_fd();
        let mut fds = child_fds(err_w, &[err_w]);
        assert!(slots.park(&mut fds, &[], 0).is_none());
        assert_eq!((fds.cut, fds.moves.as_slice().len()), (0, 0));
        assert!(same_file(slots.fds[0], stolen_r.as_raw_fd()));
    }
}
