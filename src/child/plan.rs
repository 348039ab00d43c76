//! The data a sandbox's children read: every string, path, flag and fd number, decided and
//! allocated in the host (by the plan builder) so that the children only read it.

use libc::c_char;
use std::ffi::{CString, OsString};
use std::path::PathBuf;

use super::fds::FdList;

/// The namespaces a sandbox gets (beyond the user namespace, see [`Plan::userns`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct NsFlags {
    /// Mount namespace.
    pub mount: bool,
    /// PID namespace.
    pub pid: bool,
    /// Network namespace.
    pub net: bool,
    /// IPC namespace.
    pub ipc: bool,
    /// UTS namespace.
    pub uts: bool,
    /// cgroup namespace, entered by the init once it is in its cgroup (`unshare`).
    pub cgroup: bool,
}

/// The C strings the child passes to system calls.
pub(crate) struct CStrings {
    /// `/`, for the propagation change.
    pub root: CString,
    /// `/proc`.
    pub proc_dir: CString,
    /// `proc`, the file system type (also used as the source name).
    pub proc_fstype: CString,
    /// The hostname.
    pub hostname: CString,
    /// The plugin's working directory.
    pub cwd: CString,
    /// The resolved program path given to `execve`.
    pub program: CString,
    /// Where the private root's tmpfs is mounted before `pivot_root`.
    pub staging: CString,
    /// `staging` + the old-root directory (pivot_root's `put_old`).
    pub staging_old: CString,
    /// The old root after the pivot (`/oldroot`).
    pub old_root: CString,
}

/// Everything a sandbox start needs, prepared in the parent.
pub struct Plan {
    pub(crate) clone_flags: u64,
    pub(crate) ns: NsFlags,
    /// Rootless mode: the sandbox has its own user namespace, where root is the caller
    /// (the parent writes the single-line uid/gid maps before it lets the child go on).
    pub(crate) userns: bool,
    /// The user namespace maps a range of host ids allocated for this sandbox (the runner is
    /// root): the init sets all its ids, and its groups, to root inside once the maps exist.
    pub(crate) id_range: bool,
    pub(crate) new_session: bool,
    pub(crate) c: CStrings,
    pub(crate) private_root: bool,
    pub(crate) detach: bool,
    pub(crate) root_ops: Vec<super::mnt::MountOp>,
    pub(crate) root_labels: Vec<String>,
    /// Capabilities the plugin keeps, as a bit mask over capability numbers.
    pub(crate) keep_caps: u64,
    /// The uid and gid the plugin runs as.
    pub(crate) uid: u32,
    pub(crate) gid: u32,
    /// The highest capability number this kernel knows (`cap_last_cap`).
    pub(crate) last_cap: u32,
    /// The seccomp BPF programs, installed in order just before `execve`.
    pub(crate) seccomp: Vec<seccompiler::BpfProgram>,
    /// The resource limits.
    pub(crate) rlimits: super::rlimit::RlimitPlan,
    /// The Landlock ruleset, when the sandbox uses one.
    pub(crate) landlock: Option<super::landlock::LandlockPlan>,
    pub(crate) _argv: Vec<CString>,
    pub(crate) argv_ptrs: Vec<*const c_char>,
    pub(crate) _envp: Vec<CString>,
    pub(crate) envp_ptrs: Vec<*const c_char>,
    pub(crate) pass: FdList,
    pub(crate) program_path: PathBuf,
    pub(crate) env: Vec<(OsString, OsString)>,
}

// SAFETY: the raw pointers point into the CStrings owned by the same Plan, which is never
// mutated after construction; sharing it between threads is sharing immutable bytes.
unsafe impl Send for Plan {}
// SAFETY: as for Send: nothing mutates a Plan after it is built.
unsafe impl Sync for Plan {}

impl Plan {
    /// The profile's `pass_fds`, sorted.
    pub fn pass_fds(&self) -> &[std::os::fd::RawFd] {
        self.pass.as_slice()
    }
}
