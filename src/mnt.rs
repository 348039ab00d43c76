//! Mount namespace: child-side mount steps (async-signal-safe; paths prepared in the plan).

use nix::errno::Errno;

use crate::plan::Plan;
use crate::spawn::check;

/// Makes every mount in the new namespace private (`MS_REC|MS_PRIVATE` on `/`), before any
/// other mount, so nothing mounted in the sandbox propagates back to the host.
///
/// # Safety
/// Child-side only.
pub(crate) unsafe fn make_private(plan: &Plan) -> Result<(), Errno> {
    check(libc::mount(
        std::ptr::null(),
        plan.c.root.as_ptr(),
        std::ptr::null(),
        libc::MS_REC | libc::MS_PRIVATE,
        std::ptr::null(),
    ))
    .map(drop)
}

/// Mounts a fresh `proc` on `/proc`, showing the new PID namespace only. Must run in a
/// process that is already inside that namespace (the init).
///
/// # Safety
/// Child-side only.
pub(crate) unsafe fn mount_proc(plan: &Plan) -> Result<(), Errno> {
    check(libc::mount(
        plan.c.proc_fstype.as_ptr(),
        plan.c.proc_dir.as_ptr(),
        plan.c.proc_fstype.as_ptr(),
        libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
        std::ptr::null(),
    ))
    .map(drop)
}
