//! Capabilities: the plugin keeps only the profile's allow-list, in every set (child side,
//! async-signal-safe raw `prctl`/`capset`; the `caps` crate allocates, so it is used in the
//! parent only, to parse and check capability names).
//!
//! Order: the bounding set first (that needs `CAP_SETPCAP`, which the next step drops), then
//! the ambient set, then `capset` with effective = permitted = the allow-list and an empty
//! inheritable set. For a root plugin `execve` grants the bounding set, so emptying the
//! bounding set is what keeps root powerless after the exec.

use nix::errno::Errno;

use super::step::check;

#[repr(C)]
struct CapHeader {
    version: u32,
    pid: libc::c_int,
}

#[repr(C)]
#[derive(Clone, Copy)]
struct CapData {
    effective: u32,
    permitted: u32,
    inheritable: u32,
}

const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;

/// Becomes `uid`/`gid` (no supplementary groups) keeping only the capabilities in `keep`.
///
/// For uid 0 this is [`drop_all_but`]. For another uid the bounding set is cut first (that
/// needs `CAP_SETPCAP`), `PR_SET_KEEPCAPS` carries the kept capabilities across the uid
/// change, and they are raised in the ambient set: for a non-root uid, `execve` keeps only
/// ambient capabilities. The uid/gid changes are raw system calls: glibc's `setresuid`
/// would try to signal the host's other threads, which do not exist in this child.
///
/// # Safety
/// Child-side only; async-signal-safe.
pub(crate) unsafe fn become_user(
    uid: u32,
    gid: u32,
    keep: u64,
    last_cap: u32,
) -> Result<(), Errno> {
    // SAFETY: raw setresgid/setgroups/setresuid/prctl/capset calls on plain integers and stack
    // structs; no allocation, no libc state (the caller is a CLONE_VM child, see the Safety
    // section).
    unsafe {
        if uid == 0 && gid == 0 {
            return drop_all_but(keep, last_cap);
        }
        drop_bounding_and_ambient(keep, last_cap)?;
        if keep != 0 {
            check(libc::prctl(libc::PR_SET_KEEPCAPS, 1, 0, 0, 0))?;
        }
        let ok = |r: libc::c_long| if r == -1 { Err(Errno::last()) } else { Ok(()) };
        ok(libc::syscall(
            libc::SYS_setgroups,
            0usize,
            std::ptr::null::<libc::gid_t>(),
        ))?;
        ok(libc::syscall(libc::SYS_setresgid, gid, gid, gid))?;
        ok(libc::syscall(libc::SYS_setresuid, uid, uid, uid))?;
        set_caps(keep, keep)?;
        let mut cap = 0u32;
        while cap < 64 {
            if keep & (1u64 << cap) != 0 {
                check(libc::prctl(
                    libc::PR_CAP_AMBIENT,
                    libc::PR_CAP_AMBIENT_RAISE as libc::c_ulong,
                    cap as libc::c_ulong,
                    0,
                    0,
                ))?;
            }
            cap += 1;
        }
        Ok(())
    }
}

/// Sets every uid and gid, and the supplementary groups (none), to root of the current user
/// namespace. Raw system calls: glibc's wrappers would signal the host's other threads.
///
/// # Safety
/// Child-side only; async-signal-safe. The namespace's `setgroups` must be allowed.
pub(crate) unsafe fn become_ns_root() -> Result<(), Errno> {
    let ok = |r: libc::c_long| if r == -1 { Err(Errno::last()) } else { Ok(()) };
    // SAFETY: plain integer arguments and a null list of length 0.
    unsafe {
        ok(libc::syscall(
            libc::SYS_setgroups,
            0usize,
            std::ptr::null::<libc::gid_t>(),
        ))?;
        ok(libc::syscall(libc::SYS_setresgid, 0u32, 0u32, 0u32))?;
        ok(libc::syscall(libc::SYS_setresuid, 0u32, 0u32, 0u32))
    }
}

/// Drops every capability not in the bit mask `keep` from the bounding, ambient, effective,
/// permitted and inheritable sets.
///
/// # Safety
/// Child-side only; async-signal-safe.
pub(crate) unsafe fn drop_all_but(keep: u64, last_cap: u32) -> Result<(), Errno> {
    // SAFETY: prctl/capset on plain integers; async-signal-safe.
    unsafe {
        drop_bounding_and_ambient(keep, last_cap)?;
        set_caps(keep, 0)
    }
}

/// Cuts the bounding set to `keep` and clears the ambient set.
unsafe fn drop_bounding_and_ambient(keep: u64, last_cap: u32) -> Result<(), Errno> {
    // SAFETY: prctl on plain integers; async-signal-safe.
    unsafe {
        let mut cap = 0u32;
        while cap <= last_cap && cap < 64 {
            if keep & (1u64 << cap) == 0 {
                check(libc::prctl(
                    libc::PR_CAPBSET_DROP,
                    cap as libc::c_ulong,
                    0,
                    0,
                    0,
                ))?;
            }
            cap += 1;
        }
        if libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
            0,
            0,
            0,
        ) == -1
        {
            let e = Errno::last();
            // EINVAL: a kernel before 4.3 has no ambient set, so there is nothing to clear.
            if e != Errno::EINVAL {
                return Err(e);
            }
        }
        Ok(())
    }
}

/// `capset`: effective = permitted = `keep`, inheritable = `inheritable`.
unsafe fn set_caps(keep: u64, inheritable: u64) -> Result<(), Errno> {
    // SAFETY: capset with pointers to the stack structs above, live for the call.
    unsafe {
        let hdr = CapHeader {
            version: LINUX_CAPABILITY_VERSION_3,
            pid: 0,
        };
        let data = [
            CapData {
                effective: keep as u32,
                permitted: keep as u32,
                inheritable: inheritable as u32,
            },
            CapData {
                effective: (keep >> 32) as u32,
                permitted: (keep >> 32) as u32,
                inheritable: (inheritable >> 32) as u32,
            },
        ];
        let r = libc::syscall(libc::SYS_capset, &hdr as *const CapHeader, data.as_ptr());
        if r == -1 {
            return Err(Errno::last());
        }
        Ok(())
    }
}

/// Sets `no_new_privs`: no `execve` can grant privileges again (setuid bits and file
/// capabilities are ignored).
///
/// # Safety
/// Child-side only; async-signal-safe.
pub(crate) unsafe fn no_new_privs() -> Result<(), Errno> {
    // SAFETY: prctl on plain integers.
    unsafe { check(libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)).map(drop) }
}
