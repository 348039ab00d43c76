//! seccomp, child side: install the BPF programs the host compiled (last step before
//! `execve`).

use nix::errno::Errno;
use seccompiler::BpfProgram;

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
