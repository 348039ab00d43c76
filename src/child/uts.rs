//! UTS namespace: the sandbox's hostname (child side, async-signal-safe).

use nix::errno::Errno;

use super::plan::Plan;
use super::step::check;

/// Sets the hostname from the plan in the new UTS namespace.
///
/// # Safety
/// Child-side only.
pub(crate) unsafe fn set_hostname(plan: &Plan) -> Result<(), Errno> {
    // SAFETY: sethostname with the bytes and length of a CString of the plan.
    unsafe {
        let h = plan.c.hostname.as_bytes();
        check(libc::sethostname(h.as_ptr().cast(), h.len())).map(drop)
    }
}
