//! Landlock, child side: the ruleset the host prepared, built and enforced with raw system
//! calls after `pivot_root` (where the sandbox's paths exist), async-signal-safe.

use nix::errno::Errno;
use std::ffi::CString;

/// One rule: a path in the sandbox and the rights beneath it.
pub(crate) struct Rule {
    pub path: CString,
    pub access: u64,
}

/// The ruleset the child builds, prepared in the parent.
pub(crate) struct LandlockPlan {
    /// The rights the ruleset handles (all those of the detected ABI).
    pub handled: u64,
    pub rules: Vec<Rule>,
    /// The rights a rule on a non-directory may carry.
    pub file_rights: u64,
    /// The rights given to the plugin's stdio when it is a file or device.
    pub stdio_rights: u64,
}

/// Builds the ruleset of the plan in a parent-decided order and restricts the calling
/// process. On failure, the index of the failing rule (`u32::MAX` for the ruleset itself).
///
/// # Safety
/// Child-side only; async-signal-safe. Needs `no_new_privs` or `CAP_SYS_ADMIN`.
pub(crate) unsafe fn enforce(plan: &LandlockPlan) -> Result<(), (u32, Errno)> {
    // SAFETY: raw landlock/open/fstat/close calls; the rule paths are CStrings of the plan, the
    // attribute structs live on the stack for each call.
    unsafe {
        #[repr(C)]
        struct RulesetAttr {
            handled_access_fs: u64,
        }
        #[repr(C, packed)]
        struct PathBeneath {
            allowed_access: u64,
            parent_fd: i32,
        }
        const WHOLE: u32 = u32::MAX;
        let attr = RulesetAttr {
            handled_access_fs: plan.handled,
        };
        let rs = libc::syscall(
            libc::SYS_landlock_create_ruleset,
            &attr as *const RulesetAttr,
            std::mem::size_of::<RulesetAttr>(),
            0u32,
        );
        if rs < 0 {
            return Err((WHOLE, Errno::last()));
        }
        let rs = rs as libc::c_int;
        let add = |fd: libc::c_int, access: u64| -> Result<(), Errno> {
            let mut st: libc::stat = std::mem::zeroed();
            if libc::fstat(fd, &mut st) == -1 {
                return Err(Errno::last());
            }
            let access = if st.st_mode & libc::S_IFMT == libc::S_IFDIR {
                access
            } else {
                access & plan.file_rights
            };
            let pb = PathBeneath {
                allowed_access: access,
                parent_fd: fd,
            };
            let r = libc::syscall(
                libc::SYS_landlock_add_rule,
                rs,
                1u32, // LANDLOCK_RULE_PATH_BENEATH
                &pb as *const PathBeneath,
                0u32,
            );
            if r < 0 {
                Err(Errno::last())
            } else {
                Ok(())
            }
        };
        for (i, rule) in plan.rules.iter().enumerate() {
            let fd = libc::open(rule.path.as_ptr(), libc::O_PATH | libc::O_CLOEXEC);
            if fd < 0 {
                let e = Errno::last();
                libc::close(rs);
                return Err((i as u32, e));
            }
            let r = add(fd, rule.access);
            libc::close(fd);
            if let Err(e) = r {
                libc::close(rs);
                return Err((i as u32, e));
            }
        }
        // The stdio the host handed over: reopening it by path (/dev/stdout) must keep working.
        // Pipes and sockets need no rule (and take none); directories get none.
        for fd in 0..3 {
            let mut st: libc::stat = std::mem::zeroed();
            if libc::fstat(fd, &mut st) == 0 {
                let t = st.st_mode & libc::S_IFMT;
                if t == libc::S_IFREG || t == libc::S_IFCHR {
                    let _ = add(fd, plan.stdio_rights);
                }
            }
        }
        let r = libc::syscall(libc::SYS_landlock_restrict_self, rs, 0u32);
        let e = Errno::last();
        libc::close(rs);
        if r < 0 {
            return Err((WHOLE, e));
        }
        Ok(())
    }
}
