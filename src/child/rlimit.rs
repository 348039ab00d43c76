//! Resource limits, child side: `prlimit64` for each limit the host prepared.

use nix::errno::Errno;

/// Most limits a plan holds.
pub(crate) const MAX: usize = 8;

/// One limit, ready for `prlimit64`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Rlim {
    pub resource: u32,
    pub soft: u64,
    pub hard: u64,
}

/// The limits to set in the child, fixed-size.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct RlimitPlan {
    pub(crate) items: [Rlim; MAX],
    pub(crate) len: usize,
}

impl RlimitPlan {
    /// The limits, in order.
    pub(crate) fn items(&self) -> &[Rlim] {
        self.items.get(..self.len).unwrap_or(&[])
    }
}

/// Sets every limit of `plan`; on failure, the resource that failed and the errno.
///
/// # Safety
/// Child-side only; async-signal-safe.
pub(crate) unsafe fn apply(plan: &RlimitPlan) -> Result<(), (u32, Errno)> {
    // SAFETY: system calls with pointers to stack structs and to data of the plan, alive for
    // each call.
    unsafe {
        for r in plan.items() {
            let lim = libc::rlimit64 {
                rlim_cur: r.soft,
                rlim_max: r.hard,
            };
            let ret = libc::syscall(
                libc::SYS_prlimit64,
                0 as libc::pid_t,
                r.resource as libc::c_int,
                &lim as *const libc::rlimit64,
                std::ptr::null_mut::<libc::rlimit64>(),
            );
            if ret == -1 {
                return Err((r.resource, Errno::last()));
            }
        }
        Ok(())
    }
}
