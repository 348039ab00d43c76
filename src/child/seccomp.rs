//! seccomp, child side: install the BPF programs the host compiled (last step before
//! `execve`), and the brokered-connect filter whose listener goes to the host
//! (`[sockets] broker`, see `src/broker.rs`).

use nix::errno::Errno;
use seccompiler::BpfProgram;
use std::os::fd::RawFd;

/// Installs `programs`, in order. `no_new_privs` must already be set.
///
/// # Safety
/// Child-side only; async-signal-safe.
pub(crate) unsafe fn apply(programs: &[BpfProgram]) -> Result<(), Errno> {
    // SAFETY: system calls with pointers to stack structs and to data of the plan, alive for
    // each call.
    unsafe {
        for p in programs {
            let prog = libc::sock_fprog {
                len: p.len() as libc::c_ushort,
                filter: p.as_ptr() as *mut libc::sock_filter,
            };
            let r = libc::syscall(
                libc::SYS_seccomp,
                libc::SECCOMP_SET_MODE_FILTER as libc::c_ulong,
                0 as libc::c_ulong,
                &prog as *const libc::sock_fprog,
            );
            if r == -1 {
                return Err(Errno::last());
            }
        }
        Ok(())
    }
}

/// The architecture word of `seccomp_data` for the build target (`AUDIT_ARCH_X86_64`).
#[cfg(target_arch = "x86_64")]
const AUDIT_ARCH: u32 = 0xC000_003E;
/// The architecture word of `seccomp_data` for the build target (`AUDIT_ARCH_AARCH64`).
#[cfg(target_arch = "aarch64")]
const AUDIT_ARCH: u32 = 0xC000_00B7;

/// `BPF_LD | BPF_W | BPF_ABS`.
const LD_ABS: u16 = 0x20;
/// `BPF_JMP | BPF_JEQ | BPF_K`.
const JEQ: u16 = 0x15;
/// `BPF_RET | BPF_K`.
const RET: u16 = 0x06;

const fn insn(code: u16, jt: u8, jf: u8, k: u32) -> libc::sock_filter {
    libc::sock_filter { code, jt, jf, k }
}

/// The brokered-connect filter: `connect` of the build target's ABI goes to the host's
/// supervisor (`SECCOMP_RET_USER_NOTIF`), everything else is allowed here. The profile's own
/// programs still judge every call: the kernel takes the strictest answer of all filters, so
/// a `connect` they refuse stays refused. A call through another ABI (i386, x32) is allowed
/// by this filter: the profile's filters refuse those, and without them such a connect
/// happens inside the sandbox, as a `CONTINUE` answer would make it.
///
/// Hand-built, because `seccompiler` has no `SECCOMP_RET_USER_NOTIF` action; six
/// instructions of fixed constants.
static CONNECT_NOTIFY: [libc::sock_filter; 6] = [
    // 0: A = seccomp_data.arch
    insn(LD_ABS, 0, 0, 4),
    // 1: our ABI ? 2 : 5 (allow)
    insn(JEQ, 0, 3, AUDIT_ARCH),
    // 2: A = seccomp_data.nr
    insn(LD_ABS, 0, 0, 0),
    // 3: connect ? 4 (notify) : 5 (allow)
    insn(JEQ, 0, 1, libc::SYS_connect as u32),
    // 4:
    insn(RET, 0, 0, libc::SECCOMP_RET_USER_NOTIF),
    // 5:
    insn(RET, 0, 0, libc::SECCOMP_RET_ALLOW),
];

/// Installs [`CONNECT_NOTIFY`] with a new listener, sends the listener fd to the host over
/// the socket `to_host` (`SCM_RIGHTS`) and closes it here, so the plugin never holds it.
///
/// `SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV` (Linux 5.19) where the kernel knows it: once the
/// host has received a notification, only a fatal signal interrupts the waiting `connect`
/// (Go's runtime signals its threads often; a restarted connect the host already made would
/// fail with `EISCONN`).
///
/// # Safety
/// Child-side only; async-signal-safe. `no_new_privs` must already be set.
pub(crate) unsafe fn install_connect_listener(to_host: RawFd) -> Result<(), Errno> {
    // SAFETY: system calls with pointers to a static program and to stack structs, alive for
    // each call; the control buffer is aligned for cmsghdr and large enough (checked).
    unsafe {
        let prog = libc::sock_fprog {
            len: CONNECT_NOTIFY.len() as libc::c_ushort,
            filter: CONNECT_NOTIFY.as_ptr() as *mut libc::sock_filter,
        };
        let install = |flags: libc::c_ulong| {
            libc::syscall(
                libc::SYS_seccomp,
                libc::SECCOMP_SET_MODE_FILTER as libc::c_ulong,
                flags,
                &prog as *const libc::sock_fprog,
            )
        };
        let mut listener = install(
            libc::SECCOMP_FILTER_FLAG_NEW_LISTENER | libc::SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV,
        );
        if listener == -1 && Errno::last() == Errno::EINVAL {
            listener = install(libc::SECCOMP_FILTER_FLAG_NEW_LISTENER);
        }
        if listener == -1 {
            return Err(Errno::last());
        }
        let listener = listener as RawFd;
        let res = send_fd(to_host, listener);
        libc::close(listener);
        libc::close(to_host);
        res
    }
}

/// Sends `fd` with one byte over the unix socket `sock`.
///
/// # Safety
/// Async-signal-safe: a stack message, no allocation.
unsafe fn send_fd(sock: RawFd, fd: RawFd) -> Result<(), Errno> {
    // SAFETY: the message points at stack buffers alive for the call; CMSG_* are pointer
    // arithmetic on that buffer, whose size was checked against CMSG_SPACE.
    unsafe {
        let mut byte = [1u8];
        let mut iov = libc::iovec {
            iov_base: byte.as_mut_ptr().cast(),
            iov_len: 1,
        };
        let mut ctl = [0u64; 4];
        let space = libc::CMSG_SPACE(std::mem::size_of::<RawFd>() as u32) as usize;
        if space > std::mem::size_of_val(&ctl) {
            return Err(Errno::EOVERFLOW);
        }
        let mut msg: libc::msghdr = std::mem::zeroed();
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        msg.msg_control = ctl.as_mut_ptr().cast();
        msg.msg_controllen = space as _;
        let cmsg = libc::CMSG_FIRSTHDR(&msg);
        if cmsg.is_null() {
            return Err(Errno::EOVERFLOW);
        }
        (*cmsg).cmsg_level = libc::SOL_SOCKET;
        (*cmsg).cmsg_type = libc::SCM_RIGHTS;
        (*cmsg).cmsg_len = libc::CMSG_LEN(std::mem::size_of::<RawFd>() as u32) as _;
        std::ptr::write_unaligned(libc::CMSG_DATA(cmsg).cast::<RawFd>(), fd);
        loop {
            let n = libc::sendmsg(sock, &msg, libc::MSG_NOSIGNAL);
            if n == 1 {
                return Ok(());
            }
            if n == -1 && Errno::last() == Errno::EINTR {
                continue;
            }
            return Err(if n == -1 { Errno::last() } else { Errno::EIO });
        }
    }
}
