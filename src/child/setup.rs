//! The init's first steps, in the order the kernel needs them: death signal, stdio, fds,
//! the host's go, session, mounts, hostname, loopback; then [`super::init::run_init`].

use nix::errno::Errno;

use super::fds::{close_all_but, connect_stdio};
use super::spawner::ChildCtx;
use super::step::{check, fail, fail_at, Step};
use super::{caps, init, mnt, net, uts};

/// This process's parent pid as the host sees it (field 4 of the host's `/proc/self/stat`),
/// or why it cannot be read (`EINVAL`: not in the expected form). Async-signal-safe: a stack
/// buffer, no allocation.
///
/// # Safety
/// Child-side; plain syscalls on a local buffer.
unsafe fn parent_in_host_view() -> Result<i32, Errno> {
    // SAFETY: open/read/close on a stack buffer; the fd is ours and closed before returning.
    unsafe {
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
}

/// The most `tasks` files a host's go may carry (one per cgroup v1 hierarchy a sandbox's
/// limits need; the host checks this bound before it sends them).
pub(crate) const JOIN_MAX: usize = 8;

/// The fds that came with the host's go, in a stack buffer sized for [`JOIN_MAX`].
struct JoinFds {
    /// Control-message buffer, `u64`-aligned as `cmsghdr` needs.
    cmsg: [u64; 8],
    fds: [libc::c_int; JOIN_MAX],
    len: usize,
}

impl JoinFds {
    fn new() -> JoinFds {
        JoinFds {
            cmsg: [0; 8],
            fds: [-1; JOIN_MAX],
            len: 0,
        }
    }

    /// One `recvmsg` of the go byte into `go` and any fds with it (`MSG_CMSG_CLOEXEC`).
    /// `Ok(0)` is the host's end of file. More fds than fit is `EMSGSIZE` (the kernel closes
    /// what it could not pass).
    ///
    /// # Safety
    /// Child-side; `sock` is the sync socket.
    unsafe fn receive(&mut self, sock: libc::c_int, go: &mut u8) -> Result<isize, Errno> {
        // SAFETY: recvmsg into a stack byte and this struct's aligned control buffer, whose
        // size is passed; the CMSG_* helpers only do arithmetic within that buffer, bounded
        // by the msg_controllen the kernel set.
        unsafe {
            let mut iov = libc::iovec {
                iov_base: (go as *mut u8).cast(),
                iov_len: 1,
            };
            let mut msg: libc::msghdr = std::mem::zeroed();
            msg.msg_iov = &mut iov;
            msg.msg_iovlen = 1;
            msg.msg_control = self.cmsg.as_mut_ptr().cast();
            msg.msg_controllen = std::mem::size_of_val(&self.cmsg) as _;
            let n = libc::recvmsg(sock, &mut msg, libc::MSG_CMSG_CLOEXEC);
            if n < 0 {
                return Err(Errno::last());
            }
            let mut c = libc::CMSG_FIRSTHDR(&msg);
            while !c.is_null() {
                if (*c).cmsg_level == libc::SOL_SOCKET && (*c).cmsg_type == libc::SCM_RIGHTS {
                    let data = libc::CMSG_DATA(c) as *const libc::c_int;
                    let bytes = (*c).cmsg_len as usize - libc::CMSG_LEN(0) as usize;
                    for i in 0..bytes / std::mem::size_of::<libc::c_int>() {
                        let fd = std::ptr::read_unaligned(data.add(i));
                        if self.len < JOIN_MAX {
                            self.fds[self.len] = fd;
                            self.len += 1;
                        } else {
                            libc::close(fd);
                            return Err(Errno::EMSGSIZE);
                        }
                    }
                }
                c = libc::CMSG_NXTHDR(&msg, c);
            }
            if msg.msg_flags & libc::MSG_CTRUNC != 0 {
                return Err(Errno::EMSGSIZE);
            }
            Ok(n)
        }
    }

    /// Writes `0` to each received `tasks` file (this thread joins that cgroup) and closes
    /// it; the first failure names the file's index.
    ///
    /// # Safety
    /// Child-side.
    unsafe fn join_and_close(&mut self) -> Result<(), (u32, Errno)> {
        // SAFETY: write/close on fds this process received and owns.
        unsafe {
            for i in 0..self.len {
                let fd = self.fds[i];
                let n = libc::write(fd, c"0".as_ptr().cast(), 1);
                let err = Errno::last();
                libc::close(fd);
                if n != 1 {
                    return Err((i as u32, if n < 0 { err } else { Errno::EIO }));
                }
            }
            self.len = 0;
            Ok(())
        }
    }
}

/// The init's steps, in the order the kernel needs them, then the init loop.
///
/// # Safety
/// Runs in the freshly cloned child; async-signal-safe; never returns.
pub(crate) unsafe fn child_main(ctx: &ChildCtx) -> ! {
    // SAFETY: raw system calls on the plan and fds of the ChildCtx, which the spawner keeps
    // alive until this process execs; failures exit through fail().
    unsafe {
        let plan = &*ctx.plan;
        let fds = &ctx.fds;
        let e = fds.err_w;
        // A table of our own first, while the spawner waits to reuse its slots: until then
        // this child shares the host's, and touches no fd of it but the error pipe's.
        if let Err((i, err)) = super::fds::own_table(fds, &ctx.unshared) {
            fail_at(e, Step::FdTable, i, err)
        }
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
        // Wait for the host: it may still have to make our cgroup and, with a user
        // namespace, write our uid/gid maps before anything runs. Its go may carry the
        // `tasks` files of our cgroup v1 leaves: we join them right below.
        let mut go = 0u8;
        let mut join = JoinFds::new();
        loop {
            match join.receive(fds.sync_r, &mut go) {
                Ok(1) => break,
                // The host died before it let us go: nobody is there to run for.
                Ok(_) => libc::_exit(125),
                Err(Errno::EINTR) => {}
                Err(err) => fail(e, Step::WaitParent, err),
            }
        }
        // Into the sandbox's cgroups before anything of ours runs: writing `0` moves this
        // thread alone (the host opened the files; the kernel checks the opener).
        if let Err((i, err)) = join.join_and_close() {
            fail_at(e, Step::CgroupJoin, i, err)
        }
        libc::close(fds.sync_r);
        // A root runner's id range: the spawner cloned us with only its effective ids set to
        // the range's first (so the user namespace, and every per-user count of ours, belongs
        // to that id, not to host root). Now that the maps exist, leave host root's real and
        // saved ids and its groups behind: root inside, that is the range's first id outside.
        if plan.id_range {
            if let Err(err) = caps::become_ns_root() {
                fail(e, Step::Ids, err)
            }
        }
        // The host placed us in the sandbox's cgroup before the go: a cgroup namespace made
        // now is rooted there, so the sandbox sees `/` and no host cgroup path.
        if plan.ns.cgroup {
            if let Err(err) = check(libc::unshare(libc::CLONE_NEWCGROUP)) {
                fail(e, Step::CgroupNs, err)
            }
        }
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
        if plan.ns.net && !fds.net_ready {
            if let Err(err) = net::loopback_up() {
                fail(e, Step::Loopback, err)
            }
        }
        init::run_init(plan, fds, ctx)
    }
}
