//! `sandbox-run check`: what this host supports, and whether the default profile can run.
//!
//! [`Report::gather`] probes the host (namespaces, cgroups, seccomp, Landlock, pidfd,
//! `close_range`, unprivileged user namespaces, capabilities); its [`Display`](fmt::Display)
//! output is what `sandbox-run check` prints. The cgroup parsers it reports with
//! ([`parse_mountinfo`], [`parse_proc_cgroup`], [`own_cgroup_dir`], [`cgroup_mode`]) live in
//! [`crate::cgroup::mounts`] and are re-exported here.

use std::fmt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use serde_json::{json, Value};

pub use crate::cgroup::mounts::{
    cgroup_mode, find_own_dir, own_cgroup_dir, parse_mountinfo, parse_proc_cgroup,
    unescape_mountinfo, CgroupMode, CgroupMount, CgroupVersion, OwnCgroup,
};

/// The namespace kinds reported, as (name in `/proc/self/ns`, clone flag).
const NAMESPACES: [(&str, libc::c_int); 7] = [
    ("mnt", libc::CLONE_NEWNS),
    ("pid", libc::CLONE_NEWPID),
    ("net", libc::CLONE_NEWNET),
    ("ipc", libc::CLONE_NEWIPC),
    ("uts", libc::CLONE_NEWUTS),
    ("user", libc::CLONE_NEWUSER),
    ("cgroup", libc::CLONE_NEWCGROUP),
];

/// The namespaces the default profile creates, joined for messages.
const DEFAULT_NS_NAMES: &str = "user+mnt+pid+net+ipc+uts";

/// The clone flags of the namespaces the default profile creates.
const DEFAULT_NS_FLAGS: libc::c_int = libc::CLONE_NEWNS
    | libc::CLONE_NEWPID
    | libc::CLONE_NEWNET
    | libc::CLONE_NEWIPC
    | libc::CLONE_NEWUTS;

/// The bit of `CAP_SYS_ADMIN` in capability masks (linux/capability.h).
const CAP_SYS_ADMIN: u32 = 21;

/// Capability names by bit number (linux/capability.h), for listing missing ones.
const CAP_NAMES: [&str; 41] = [
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_DAC_READ_SEARCH",
    "CAP_FOWNER",
    "CAP_FSETID",
    "CAP_KILL",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETPCAP",
    "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE",
    "CAP_NET_BROADCAST",
    "CAP_NET_ADMIN",
    "CAP_NET_RAW",
    "CAP_IPC_LOCK",
    "CAP_IPC_OWNER",
    "CAP_SYS_MODULE",
    "CAP_SYS_RAWIO",
    "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE",
    "CAP_SYS_PACCT",
    "CAP_SYS_ADMIN",
    "CAP_SYS_BOOT",
    "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE",
    "CAP_SYS_TIME",
    "CAP_SYS_TTY_CONFIG",
    "CAP_MKNOD",
    "CAP_LEASE",
    "CAP_AUDIT_WRITE",
    "CAP_AUDIT_CONTROL",
    "CAP_SETFCAP",
    "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN",
    "CAP_SYSLOG",
    "CAP_WAKE_ALARM",
    "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ",
    "CAP_PERFMON",
    "CAP_BPF",
    "CAP_CHECKPOINT_RESTORE",
];

/// The name of capability `bit`, or `cap_<bit>` for ones newer than [`CAP_NAMES`].
fn cap_name(bit: u32) -> String {
    CAP_NAMES
        .get(bit as usize)
        .map_or_else(|| format!("cap_{bit}"), |n| (*n).to_owned())
}

/// The cgroup controllers the sandbox will use for limits.
const WANTED_CONTROLLERS: [&str; 3] = ["memory", "pids", "cpu"];

/// Reads a file as text; the error is a short human reason (e.g. `ENOENT: No such file or
/// directory`).
fn read_text(path: impl AsRef<Path>) -> Result<String, String> {
    std::fs::read_to_string(path.as_ref()).map_err(|e| io_reason(&e))
}

/// A short reason for an I/O error: the errno name and text when there is one.
fn io_reason(e: &std::io::Error) -> String {
    match e.raw_os_error() {
        Some(code) => Errno::from_raw(code).to_string(),
        None => e.to_string(),
    }
}

/// `Ok(())` when this process may write to `path`, else the reason.
fn writable(path: &Path) -> Result<(), Errno> {
    nix::unistd::access(path, nix::unistd::AccessFlags::W_OK)
}

/// Words of a whitespace-separated controller list file.
fn words(text: &str) -> Vec<String> {
    text.split_whitespace().map(str::to_owned).collect()
}

/// Formats a list, `(none)` when empty.
fn list_or_none(items: &[String], sep: &str) -> String {
    if items.is_empty() {
        "(none)".to_owned()
    } else {
        items.join(sep)
    }
}

/// Formats a probe result.
fn ok_or_errno(r: &Result<(), Errno>) -> String {
    match r {
        Ok(()) => "ok".to_owned(),
        Err(e) => format!("failed ({e})"),
    }
}

/// One namespace kind's probe.
struct NsProbe {
    name: &'static str,
    present: Result<(), String>,
    create: Result<(), Errno>,
}

/// The v2 own cgroup directory and its controller files.
struct V2Own {
    dir: PathBuf,
    controllers: Result<Vec<String>, String>,
    subtree_control: Result<Vec<String>, String>,
    writable: Result<(), Errno>,
}

/// Where a wanted controller lives and whether it can be used.
enum ControllerState {
    /// Bound to a v1 hierarchy.
    V1 {
        mount: PathBuf,
        own_path: Option<String>,
        dir: Option<PathBuf>,
        writable: Option<Result<(), Errno>>,
    },
    /// Enabled in the own v2 cgroup's `cgroup.subtree_control`.
    V2Delegated,
    /// In the own v2 cgroup's `cgroup.controllers` but not yet in `cgroup.subtree_control`.
    V2Enableable,
    /// Not available anywhere.
    Missing,
}

/// The cgroup part of the report.
struct CgroupReport {
    mountinfo: Result<Vec<CgroupMount>, String>,
    own: Result<Vec<OwnCgroup>, String>,
    v2: Option<Result<V2Own, String>>,
    wanted: Vec<(&'static str, ControllerState)>,
}

impl CgroupReport {
    fn gather() -> CgroupReport {
        let mountinfo = read_text("/proc/self/mountinfo").map(|t| parse_mountinfo(&t));
        let own = read_text("/proc/self/cgroup").map(|t| parse_proc_cgroup(&t));
        let empty_mounts = Vec::new();
        let empty_own = Vec::new();
        let mounts = mountinfo.as_ref().unwrap_or(&empty_mounts);
        let owns = own.as_ref().unwrap_or(&empty_own);

        let has_v2_mount = mounts.iter().any(|m| m.version == CgroupVersion::V2);
        let v2 = if has_v2_mount {
            Some(match owns.iter().find(|o| o.is_v2()) {
                None => Err("no 0::/path line in /proc/self/cgroup".to_owned()),
                Some(o) => match find_own_dir(mounts, o) {
                    None => Err(format!(
                        "own cgroup {} is outside every cgroup2 mount's root",
                        o.path
                    )),
                    Some((_, dir)) => Ok(V2Own {
                        controllers: read_text(dir.join("cgroup.controllers")).map(|t| words(&t)),
                        subtree_control: read_text(dir.join("cgroup.subtree_control"))
                            .map(|t| words(&t)),
                        writable: writable(&dir),
                        dir,
                    }),
                },
            })
        } else {
            None
        };

        let wanted = WANTED_CONTROLLERS
            .iter()
            .map(|&ctrl| (ctrl, controller_state(ctrl, mounts, owns, v2.as_ref())))
            .collect();
        CgroupReport {
            mountinfo,
            own,
            v2,
            wanted,
        }
    }
}

/// Works out where `ctrl` lives.
fn controller_state(
    ctrl: &str,
    mounts: &[CgroupMount],
    owns: &[OwnCgroup],
    v2: Option<&Result<V2Own, String>>,
) -> ControllerState {
    if let Some(mount) = mounts.iter().find(|m| m.has_controller(ctrl)) {
        let own = owns.iter().find(|o| o.matches(mount));
        let dir = own.and_then(|o| find_own_dir(mounts, o).map(|(_, d)| d));
        let writable = dir.as_deref().map(writable);
        return ControllerState::V1 {
            mount: mount.mount_point.clone(),
            own_path: own.map(|o| o.path.clone()),
            dir,
            writable,
        };
    }
    if let Some(Ok(v2)) = v2 {
        let has = |r: &Result<Vec<String>, String>| {
            r.as_ref()
                .map(|l| l.iter().any(|c| c == ctrl))
                .unwrap_or(false)
        };
        if has(&v2.subtree_control) {
            return ControllerState::V2Delegated;
        }
        if has(&v2.controllers) {
            return ControllerState::V2Enableable;
        }
    }
    ControllerState::Missing
}

/// What to do about a wanted controller that cannot be used as it is, if anything.
fn controller_note(ctrl: &str, state: &ControllerState, v2_dir: Option<&Path>) -> Option<String> {
    match state {
        ControllerState::V1 {
            mount,
            own_path,
            dir,
            writable,
        } => match (dir, writable) {
            (Some(_), Some(Ok(()))) => None,
            (Some(d), Some(Err(e))) => Some(format!(
                "{ctrl}: own v1 cgroup dir {} is not writable ({e})",
                d.display()
            )),
            _ => Some(format!(
                "{ctrl}: own v1 cgroup {} is not visible under {}",
                own_path.as_deref().unwrap_or("(not in /proc/self/cgroup)"),
                mount.display()
            )),
        },
        ControllerState::V2Delegated => None,
        ControllerState::V2Enableable => {
            let dir = v2_dir.map(|d| d.display().to_string()).unwrap_or_default();
            Some(format!(
                "{ctrl}: enable with `echo +{ctrl} > {dir}/cgroup.subtree_control` (the own \
                 cgroup must first have no processes of its own: move them to a leaf)"
            ))
        }
        ControllerState::Missing => {
            let hint = match v2_dir {
                Some(d) => format!(
                    "delegate it to {} (systemd: `Delegate=yes` on the unit, or \
                     `systemd-run --user -p Delegate=yes ...`; otherwise \
                     `echo +{ctrl} > <parent>/cgroup.subtree_control` in each ancestor)",
                    d.display()
                ),
                None => format!("mount a cgroup v1 hierarchy with the {ctrl} controller"),
            };
            Some(format!("{ctrl}: missing; {hint}"))
        }
    }
}

/// The unprivileged user namespace sysctls.
struct UsernsReport {
    unprivileged_userns_clone: Result<String, String>,
    max_user_namespaces: Result<String, String>,
    apparmor_restrict: Result<String, String>,
    /// Whether this process can create a user namespace (`clone3(CLONE_NEWUSER)`).
    create: Result<(), Errno>,
}

impl UsernsReport {
    fn gather() -> UsernsReport {
        let read = |p: &str| read_text(p).map(|s| s.trim().to_owned());
        UsernsReport {
            unprivileged_userns_clone: read("/proc/sys/kernel/unprivileged_userns_clone"),
            max_user_namespaces: read("/proc/sys/user/max_user_namespaces"),
            apparmor_restrict: read("/proc/sys/kernel/apparmor_restrict_unprivileged_userns"),
            create: crate::child::probe_clone(libc::CLONE_NEWUSER as u64),
        }
    }

    /// One-line conclusion on whether unprivileged users may create user namespaces.
    fn conclusion(&self) -> String {
        let mut blockers = Vec::new();
        if self.unprivileged_userns_clone.as_deref() == Ok("0") {
            blockers.push("kernel.unprivileged_userns_clone=0");
        }
        if self.max_user_namespaces.as_deref() == Ok("0") {
            blockers.push("user.max_user_namespaces=0");
        }
        if !blockers.is_empty() {
            return format!("disabled ({})", blockers.join(", "));
        }
        if self.apparmor_restrict.as_deref() == Ok("1") {
            return "restricted by AppArmor (kernel.apparmor_restrict_unprivileged_userns=1): \
                    allowed only for programs with an AppArmor profile granting userns"
                .to_owned();
        }
        "allowed (no sysctl restricts them)".to_owned()
    }
}

/// A report of the host's sandboxing support.
pub struct Report {
    kernel: Result<String, String>,
    uid: u32,
    euid: u32,
    cap_eff: Result<u64, String>,
    cap_last_cap: Option<u32>,
    namespaces: Vec<NsProbe>,
    default_ns: Result<(), Errno>,
    /// How the default profile's ids relate to the host's, for this caller.
    default_ids: crate::plan::IdMode,
    cgroups: CgroupReport,
    seccomp_mode: Result<i32, Errno>,
    seccomp_actions: Result<String, String>,
    landlock: Result<i64, Errno>,
    pidfd: Result<(), String>,
    clone3: Result<(), Errno>,
    close_range: Result<(), Errno>,
    userns: UsernsReport,
    /// Not root: whether the default profile's cgroup limits can be set up (rootless mode
    /// needs a delegated, writable cgroup for them).
    rootless_limits: Option<Result<(), String>>,
}

impl Report {
    /// Probes the host. Never fails: whatever cannot be read is reported as unavailable.
    pub fn gather() -> Report {
        let namespaces = NAMESPACES
            .iter()
            .map(|&(name, flag)| NsProbe {
                name,
                present: std::fs::symlink_metadata(format!("/proc/self/ns/{name}"))
                    .map(|_| ())
                    .map_err(|e| io_reason(&e)),
                create: crate::child::probe_clone(flag as u64),
            })
            .collect();
        let status = read_text("/proc/self/status");
        let cap_eff = status.and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .ok_or_else(|| "no CapEff line in /proc/self/status".to_owned())
                .and_then(|h| u64::from_str_radix(h.trim(), 16).map_err(|e| e.to_string()))
        });
        Report {
            kernel: read_text("/proc/sys/kernel/osrelease").map(|s| s.trim().to_owned()),
            uid: nix::unistd::getuid().as_raw(),
            euid: nix::unistd::geteuid().as_raw(),
            cap_eff,
            cap_last_cap: read_text("/proc/sys/kernel/cap_last_cap")
                .ok()
                .and_then(|s| s.trim().parse().ok()),
            namespaces,
            // The default profile has a user namespace for root (an id block of its own) and
            // not root (`rootless = "auto"`) alike.
            default_ns: crate::child::probe_clone((DEFAULT_NS_FLAGS | libc::CLONE_NEWUSER) as u64),
            default_ids: crate::profile::Profile::builtin("default")
                .map(|p| crate::plan::IdMode::for_profile(&p, nix::unistd::geteuid().as_raw()))
                .unwrap_or(crate::plan::IdMode::Caller),
            cgroups: CgroupReport::gather(),
            seccomp_mode: probe_seccomp(),
            seccomp_actions: read_text("/proc/sys/kernel/seccomp/actions_avail")
                .map(|s| s.trim().to_owned()),
            landlock: probe_landlock(),
            pidfd: rustix::process::pidfd_open(
                rustix::process::getpid(),
                rustix::process::PidfdFlags::empty(),
            )
            .map(drop)
            .map_err(|e| e.to_string()),
            clone3: crate::child::probe_clone(0),
            close_range: probe_close_range(),
            userns: UsernsReport::gather(),
            rootless_limits: (!nix::unistd::geteuid().is_root()).then(|| {
                let limits = crate::profile::Profile::builtin("default")
                    .map(|p| p.limits)
                    .unwrap_or_default();
                let parent = limits.cgroup_parent.as_ref().map(|p| Path::new(p.as_str()));
                crate::cgroup::can_create(&limits.to_limits(), parent).map_err(|e| {
                    let euid = nix::unistd::geteuid().as_raw();
                    crate::cgroup::CgroupError::Rootless {
                        uid: euid,
                        controllers: limits.to_limits().controllers().join(", "),
                        cause: Box::new(e),
                    }
                    .to_string()
                })
            }),
        }
    }

    /// Not root: the reasons the `rootless` profile (no cgroup limits) cannot run here; empty
    /// when it can. `None` for root.
    pub fn rootless_problems(&self) -> Option<Vec<String>> {
        if self.euid == 0 {
            return None;
        }
        let mut problems = self.base_problems();
        if let Err(e) = self.userns.create {
            problems.push(format!(
                "this process cannot create a user namespace ({e}): {}",
                self.userns.conclusion()
            ));
        }
        Some(problems)
    }

    /// Whether the default profile can run on this host.
    pub fn default_profile_runs(&self) -> bool {
        self.problems().is_empty()
    }

    /// Human reasons why the default profile cannot run on this host; empty when it can.
    /// Not root, that is rootless mode, whose cgroup limits need a delegated cgroup.
    pub fn problems(&self) -> Vec<String> {
        let mut problems = self.base_problems();
        if let Some(Err(e)) = &self.rootless_limits {
            problems.push(e.clone());
        }
        problems
    }

    fn base_problems(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if let Err(e) = self.default_ns {
            let hint = match e {
                Errno::EPERM if self.euid != 0 => {
                    "not root, so rootless mode needs an unprivileged user namespace: see \
                     \"unprivileged user namespaces\" below"
                }
                Errno::EPERM => {
                    "run as root or give the process CAP_SYS_ADMIN (check seccomp/AppArmor \
                     policies of a container runtime too)"
                }
                Errno::ENOSYS => "the kernel lacks clone3 (needs Linux >= 5.3)",
                Errno::EINVAL => "the kernel lacks one of these namespace kinds",
                Errno::ENOSPC => {
                    "a namespace limit is reached (see /proc/sys/user/max_*_namespaces)"
                }
                Errno::EUSERS => "too many nested namespaces",
                _ => "see clone(2)",
            };
            problems.push(format!(
                "cannot create namespaces {DEFAULT_NS_NAMES}: {e}; {hint}"
            ));
        }
        if let Err(e) = &self.pidfd {
            problems.push(format!(
                "pidfd_open does not work ({e}); needs Linux >= 5.3"
            ));
        }
        if let Err(e) = self.close_range {
            problems.push(format!(
                "close_range is not available ({e}); needs Linux >= 5.9"
            ));
        }
        problems
    }

    fn fmt_identity(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "identity:")?;
        let root = if self.euid == 0 { " (root)" } else { "" };
        writeln!(f, "  uid: {}, euid: {}{root}", self.uid, self.euid)?;
        match &self.cap_eff {
            Ok(caps) => {
                let sys_admin = if caps & (1 << CAP_SYS_ADMIN) != 0 {
                    "yes"
                } else {
                    "no"
                };
                let count = caps.count_ones();
                let summary = match self.cap_last_cap {
                    Some(last) if last < 64 => {
                        let missing: Vec<String> = (0..=last)
                            .filter(|b| caps & (1 << b) == 0)
                            .map(cap_name)
                            .collect();
                        if missing.is_empty() {
                            "all".to_owned()
                        } else {
                            format!("missing {}", missing.join(" "))
                        }
                    }
                    _ => "cap_last_cap unknown".to_owned(),
                };
                writeln!(
                    f,
                    "  effective capabilities (CapEff): {caps:016x} ({count} capabilities, \
                     {summary}; CAP_SYS_ADMIN: {sys_admin})"
                )
            }
            Err(e) => writeln!(f, "  effective capabilities (CapEff): unavailable ({e})"),
        }
    }

    fn fmt_namespaces(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "namespaces:")?;
        for ns in &self.namespaces {
            let present = match &ns.present {
                Ok(()) => "present".to_owned(),
                Err(e) => format!("not present ({e})"),
            };
            let create = match ns.create {
                Ok(()) => "can create".to_owned(),
                Err(e) => format!("cannot create ({e})"),
            };
            writeln!(
                f,
                "  {:<7} kernel: {present}; this process: {create}",
                ns.name
            )?;
        }
        writeln!(
            f,
            "  default profile set {DEFAULT_NS_NAMES}: {}",
            match self.default_ns {
                Ok(()) => "can create".to_owned(),
                Err(e) => format!("cannot create ({e})"),
            }
        )?;
        writeln!(
            f,
            "  default profile user namespace: {}",
            self.default_ids.describe()
        )
    }

    fn fmt_cgroups(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let cg = &self.cgroups;
        writeln!(f, "cgroups:")?;
        match &cg.mountinfo {
            Err(e) => writeln!(f, "  mounts: unavailable (/proc/self/mountinfo: {e})")?,
            Ok(mounts) => {
                writeln!(f, "  mode: {}", cgroup_mode(mounts))?;
                if mounts.is_empty() {
                    writeln!(f, "  mounts: (none)")?;
                }
                for m in mounts {
                    let root = if m.root == "/" {
                        String::new()
                    } else {
                        format!(" (mount root {})", m.root)
                    };
                    match m.version {
                        CgroupVersion::V2 => writeln!(
                            f,
                            "  mount: cgroup2 at {}{root} options {}",
                            m.mount_point.display(),
                            m.super_options.join(",")
                        )?,
                        CgroupVersion::V1 => {
                            let mut what = m.controllers.clone();
                            if let Some(n) = &m.name {
                                what.push(format!("name={n}"));
                            }
                            writeln!(
                                f,
                                "  mount: cgroup v1 at {}{root} controllers {}",
                                m.mount_point.display(),
                                list_or_none(&what, ",")
                            )?
                        }
                    }
                }
            }
        }
        match &cg.own {
            Err(e) => writeln!(f, "  own cgroup: unavailable (/proc/self/cgroup: {e})")?,
            Ok(owns) => {
                for o in owns {
                    let hierarchy = if o.is_v2() {
                        "v2 (unified)".to_owned()
                    } else {
                        let mut what = o.controllers.clone();
                        if let Some(n) = &o.name {
                            what.push(format!("name={n}"));
                        }
                        format!("v1 #{} {}", o.hierarchy_id, list_or_none(&what, ","))
                    };
                    writeln!(f, "  own cgroup: {hierarchy}: {}", o.path)?;
                }
            }
        }
        match &cg.v2 {
            None => {}
            Some(Err(e)) => writeln!(f, "  v2 own cgroup dir: unavailable ({e})")?,
            Some(Ok(v2)) => {
                writeln!(f, "  v2 own cgroup dir: {}", v2.dir.display())?;
                let show = |r: &Result<Vec<String>, String>| match r {
                    Ok(l) => list_or_none(l, " "),
                    Err(e) => format!("unavailable ({e})"),
                };
                writeln!(f, "    cgroup.controllers: {}", show(&v2.controllers))?;
                writeln!(
                    f,
                    "    cgroup.subtree_control: {}",
                    show(&v2.subtree_control)
                )?;
                writeln!(
                    f,
                    "    writable: {}",
                    match v2.writable {
                        Ok(()) => "yes".to_owned(),
                        Err(e) => format!("no ({e})"),
                    }
                )?;
            }
        }
        let v2_dir = match &cg.v2 {
            Some(Ok(v2)) => Some(v2.dir.clone()),
            _ => None,
        };
        for (ctrl, state) in &cg.wanted {
            match state {
                ControllerState::V1 {
                    mount,
                    own_path,
                    dir,
                    writable,
                } => {
                    let own = own_path.as_deref().unwrap_or("(not in /proc/self/cgroup)");
                    let dir_text = match (dir, writable) {
                        (Some(d), Some(Ok(()))) => format!("dir {} writable", d.display()),
                        (Some(d), Some(Err(e))) => {
                            format!("dir {} not writable ({e})", d.display())
                        }
                        _ => "dir not visible under the mount".to_owned(),
                    };
                    writeln!(
                        f,
                        "  controller {ctrl}: v1 at {}, own cgroup {own}, {dir_text}",
                        mount.display()
                    )?;
                }
                ControllerState::V2Delegated => writeln!(
                    f,
                    "  controller {ctrl}: v2, delegated (in cgroup.subtree_control)"
                )?,
                ControllerState::V2Enableable => writeln!(
                    f,
                    "  controller {ctrl}: v2, available (in cgroup.controllers), not enabled \
                     in cgroup.subtree_control"
                )?,
                ControllerState::Missing => writeln!(f, "  controller {ctrl}: missing")?,
            }
        }
        for note in cg
            .wanted
            .iter()
            .filter_map(|(c, st)| controller_note(c, st, v2_dir.as_deref()))
        {
            writeln!(f, "  note: {note} (not needed by the default profile yet)")?;
        }
        Ok(())
    }

    fn fmt_other(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.seccomp_mode {
            Ok(mode) => {
                let this = match mode {
                    0 => "not filtered",
                    1 => "strict mode",
                    2 => "already under a filter",
                    _ => "unknown mode",
                };
                writeln!(f, "seccomp: supported (this process: {this})")?
            }
            Err(Errno::EINVAL) => writeln!(f, "seccomp: not supported (PR_GET_SECCOMP: EINVAL)")?,
            Err(e) => writeln!(f, "seccomp: unknown (PR_GET_SECCOMP: {e})")?,
        }
        match &self.seccomp_actions {
            Ok(a) => writeln!(f, "seccomp actions: {a}")?,
            Err(e) => writeln!(f, "seccomp actions: unavailable ({e})")?,
        }
        match self.landlock {
            Ok(abi) => writeln!(f, "landlock: supported, ABI version {abi}")?,
            Err(Errno::ENOSYS) => writeln!(f, "landlock: not built into this kernel (ENOSYS)")?,
            Err(Errno::EOPNOTSUPP) => writeln!(
                f,
                "landlock: disabled at boot (EOPNOTSUPP; add landlock to the lsm= boot parameter)"
            )?,
            Err(e) => writeln!(f, "landlock: unknown ({e})")?,
        }
        match &self.pidfd {
            Ok(()) => writeln!(f, "pidfd_open: ok")?,
            Err(e) => writeln!(f, "pidfd_open: failed ({e})")?,
        }
        match self.clone3 {
            Err(Errno::ENOSYS) => writeln!(f, "clone3: not available (ENOSYS)")?,
            r => writeln!(f, "clone3: {}", ok_or_errno(&r))?,
        }
        match self.close_range {
            Ok(()) => writeln!(f, "close_range: available")?,
            Err(Errno::ENOSYS) => writeln!(f, "close_range: not available (ENOSYS)")?,
            Err(e) => writeln!(f, "close_range: unknown ({e})")?,
        }
        writeln!(f, "unprivileged user namespaces:")?;
        for (name, value) in [
            (
                "kernel.unprivileged_userns_clone",
                &self.userns.unprivileged_userns_clone,
            ),
            ("user.max_user_namespaces", &self.userns.max_user_namespaces),
            (
                "kernel.apparmor_restrict_unprivileged_userns",
                &self.userns.apparmor_restrict,
            ),
        ] {
            match value {
                Ok(v) => writeln!(f, "  {name} = {v}")?,
                Err(e) => writeln!(f, "  {name}: unavailable ({e})")?,
            }
        }
        writeln!(f, "  conclusion: {}", self.userns.conclusion())?;
        match self.userns.create {
            Ok(()) => writeln!(f, "  this process can create one: yes")?,
            Err(e) => writeln!(f, "  this process can create one: no ({e})")?,
        }
        if let Some(p) = self.rootless_problems() {
            writeln!(
                f,
                "rootless mode: on (euid {} is not root; root inside the sandbox is this user)",
                self.euid
            )?;
            if p.is_empty() {
                writeln!(f, "  profile rootless (no cgroup limits): OK")?;
            } else {
                writeln!(f, "  profile rootless: CANNOT RUN: {}", p.join("; "))?;
            }
            match &self.rootless_limits {
                Some(Ok(())) => writeln!(
                    f,
                    "  cgroup limits of the default profile: a writable delegated cgroup is there"
                )?,
                Some(Err(e)) => writeln!(f, "  cgroup limits of the default profile: {e}")?,
                None => {}
            }
        }
        Ok(())
    }
}

/// `(value, error)`: the value of a probe that worked, else `null` and the reason.
fn fact<T: serde::Serialize, E: fmt::Display>(r: &Result<T, E>) -> (Value, Value) {
    match r {
        Ok(v) => (json!(v), Value::Null),
        Err(e) => (Value::Null, json!(e.to_string())),
    }
}

/// `(ok, error)` of a probe with no value.
fn probe<E: fmt::Display>(r: &Result<(), E>) -> (bool, Value) {
    match r {
        Ok(()) => (true, Value::Null),
        Err(e) => (false, json!(e.to_string())),
    }
}

impl Report {
    /// Every fact of the report, and the verdict, as one JSON object (what
    /// `sandbox-run check --json` prints; the README lists every field). A fact that could
    /// not be read is `null`, with the reason in the `..._error` field next to it.
    pub fn to_json(&self) -> Value {
        let (kernel, kernel_error) = fact(&self.kernel);
        let (cap_eff, cap_eff_error) = fact(&self.cap_eff.as_ref().map(|c| format!("{c:016x}")));
        let caps_missing: Option<Vec<String>> = match (&self.cap_eff, self.cap_last_cap) {
            (Ok(caps), Some(last)) if last < 64 => Some(
                (0..=last)
                    .filter(|b| caps & (1 << b) == 0)
                    .map(cap_name)
                    .collect(),
            ),
            _ => None,
        };
        let namespaces: Vec<Value> = self
            .namespaces
            .iter()
            .map(|ns| {
                let (present, present_error) = probe(&ns.present);
                let (can_create, create_error) = probe(&ns.create);
                json!({
                    "name": ns.name,
                    "present": present,
                    "present_error": present_error,
                    "can_create": can_create,
                    "create_error": create_error,
                })
            })
            .collect();
        let (default_ns_ok, default_ns_error) = probe(&self.default_ns);
        let cg = &self.cgroups;
        let (mounts, mounts_error) = fact(&cg.mountinfo.as_ref().map(|ms| {
            ms.iter()
                .map(|m| {
                    json!({
                        "version": match m.version { CgroupVersion::V1 => 1, CgroupVersion::V2 => 2 },
                        "mount_point": m.mount_point,
                        "root": m.root,
                        "controllers": m.controllers,
                        "name": m.name,
                        "options": m.super_options,
                    })
                })
                .collect::<Vec<_>>()
        }));
        let mode = cg.mountinfo.as_ref().ok().map(|ms| match cgroup_mode(ms) {
            CgroupMode::Unified { path } => json!({"kind": "unified", "cgroup2": path}),
            CgroupMode::Hybrid { unified } => json!({"kind": "hybrid", "cgroup2": unified}),
            CgroupMode::Legacy => json!({"kind": "legacy", "cgroup2": null}),
            CgroupMode::None => json!({"kind": "none", "cgroup2": null}),
        });
        let (own, own_error) = fact(&cg.own.as_ref().map(|os| {
            os.iter()
                .map(|o| {
                    json!({
                        "hierarchy_id": o.hierarchy_id,
                        "v2": o.is_v2(),
                        "controllers": o.controllers,
                        "name": o.name,
                        "path": o.path,
                    })
                })
                .collect::<Vec<_>>()
        }));
        let v2_own = match &cg.v2 {
            None => Value::Null,
            Some(Err(e)) => json!({"dir": null, "error": e}),
            Some(Ok(v2)) => {
                let (controllers, controllers_error) = fact(&v2.controllers);
                let (subtree, subtree_error) = fact(&v2.subtree_control);
                let (writable, writable_error) = probe(&v2.writable);
                json!({
                    "dir": v2.dir,
                    "error": null,
                    "controllers": controllers,
                    "controllers_error": controllers_error,
                    "subtree_control": subtree,
                    "subtree_control_error": subtree_error,
                    "writable": writable,
                    "writable_error": writable_error,
                })
            }
        };
        let v2_dir = match &cg.v2 {
            Some(Ok(v2)) => Some(v2.dir.clone()),
            _ => None,
        };
        let controllers: Vec<Value> = cg
            .wanted
            .iter()
            .map(|(ctrl, st)| {
                let note = controller_note(ctrl, st, v2_dir.as_deref());
                // Every object has every key; those of a v1 hierarchy are null for v2.
                let (state, mount, own_path, dir, writable, writable_error) = match st {
                    ControllerState::V1 {
                        mount,
                        own_path,
                        dir,
                        writable,
                    } => (
                        "v1",
                        json!(mount),
                        json!(own_path),
                        json!(dir),
                        json!(writable.as_ref().map(|w| w.is_ok())),
                        match writable {
                            Some(Err(e)) => json!(e.to_string()),
                            _ => Value::Null,
                        },
                    ),
                    ControllerState::V2Delegated => (
                        "v2_delegated",
                        Value::Null,
                        Value::Null,
                        Value::Null,
                        Value::Null,
                        Value::Null,
                    ),
                    ControllerState::V2Enableable => (
                        "v2_enableable",
                        Value::Null,
                        Value::Null,
                        Value::Null,
                        Value::Null,
                        Value::Null,
                    ),
                    ControllerState::Missing => (
                        "missing",
                        Value::Null,
                        Value::Null,
                        Value::Null,
                        Value::Null,
                        Value::Null,
                    ),
                };
                json!({
                    "name": ctrl,
                    "state": state,
                    "mount": mount,
                    "own_path": own_path,
                    "dir": dir,
                    "writable": writable,
                    "writable_error": writable_error,
                    "note": note,
                })
            })
            .collect();
        let seccomp_mode = match self.seccomp_mode {
            Ok(0) => json!("not filtered"),
            Ok(1) => json!("strict"),
            Ok(2) => json!("filter"),
            Ok(_) => json!("unknown"),
            Err(_) => Value::Null,
        };
        let (seccomp_actions, seccomp_actions_error) = fact(
            &self
                .seccomp_actions
                .as_ref()
                .map(|a| a.split_whitespace().collect::<Vec<_>>()),
        );
        let (landlock_abi, landlock_error) = fact(&self.landlock);
        let (pidfd_ok, pidfd_error) = probe(&self.pidfd);
        let (clone3_ok, clone3_error) = probe(&self.clone3);
        let (close_range_ok, close_range_error) = probe(&self.close_range);
        let u = &self.userns;
        let (unpriv, unpriv_error) = fact(&u.unprivileged_userns_clone);
        let (max_userns, max_userns_error) = fact(&u.max_user_namespaces);
        let (apparmor, apparmor_error) = fact(&u.apparmor_restrict);
        let (userns_ok, userns_error) = probe(&u.create);
        let rootless = match self.rootless_problems() {
            None => Value::Null,
            Some(p) => json!({
                "rootless_profile_runs": p.is_empty(),
                "rootless_profile_problems": p,
                "default_limits_ok": matches!(self.rootless_limits, Some(Ok(()))),
                "default_limits_error": match &self.rootless_limits {
                    Some(Err(e)) => json!(e),
                    _ => Value::Null,
                },
            }),
        };
        let problems = self.problems();
        json!({
            "kernel": kernel,
            "kernel_error": kernel_error,
            "identity": {
                "uid": self.uid,
                "euid": self.euid,
                "root": self.euid == 0,
                "cap_eff": cap_eff,
                "cap_eff_error": cap_eff_error,
                "cap_count": self.cap_eff.as_ref().ok().map(|c| c.count_ones()),
                "caps_missing": caps_missing,
                "cap_sys_admin": self.cap_eff.as_ref().ok().map(|c| c & (1 << CAP_SYS_ADMIN) != 0),
            },
            "namespaces": namespaces,
            "default_namespaces": {
                "names": DEFAULT_NS_NAMES,
                "ids": self.default_ids.name(),
                "can_create": default_ns_ok,
                "error": default_ns_error,
            },
            "cgroups": {
                "mode": mode,
                "mounts": mounts,
                "mounts_error": mounts_error,
                "own": own,
                "own_error": own_error,
                "v2_own": v2_own,
                "controllers": controllers,
            },
            "seccomp": {
                "supported": self.seccomp_mode.is_ok(),
                "this_process": seccomp_mode,
                "error": self.seccomp_mode.err().map(|e| e.to_string()),
                "actions": seccomp_actions,
                "actions_error": seccomp_actions_error,
            },
            "landlock": {
                "supported": self.landlock.is_ok(),
                "abi": landlock_abi,
                "error": landlock_error,
            },
            "pidfd_open": { "ok": pidfd_ok, "error": pidfd_error },
            "clone3": { "ok": clone3_ok, "error": clone3_error },
            "close_range": { "ok": close_range_ok, "error": close_range_error },
            "user_namespaces": {
                "unprivileged_userns_clone": unpriv,
                "unprivileged_userns_clone_error": unpriv_error,
                "max_user_namespaces": max_userns,
                "max_user_namespaces_error": max_userns_error,
                "apparmor_restrict_unprivileged_userns": apparmor,
                "apparmor_restrict_unprivileged_userns_error": apparmor_error,
                "conclusion": u.conclusion(),
                "can_create": userns_ok,
                "create_error": userns_error,
            },
            "rootless": rootless,
            "verdict": {
                "default_profile_runs": problems.is_empty(),
                "problems": problems,
            },
        })
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.kernel {
            Ok(k) => writeln!(f, "kernel: Linux {k}")?,
            Err(e) => writeln!(f, "kernel: unavailable ({e})")?,
        }
        self.fmt_identity(f)?;
        self.fmt_namespaces(f)?;
        self.fmt_cgroups(f)?;
        self.fmt_other(f)?;
        let problems = self.problems();
        if problems.is_empty() {
            writeln!(f, "default profile: OK")
        } else {
            writeln!(f, "default profile: CANNOT RUN: {}", problems.join("; "))
        }
    }
}

/// `prctl(PR_GET_SECCOMP)`: the calling thread's seccomp mode, or the error.
fn probe_seccomp() -> Result<i32, Errno> {
    // SAFETY: PR_GET_SECCOMP takes no pointer arguments.
    let r = unsafe { libc::prctl(libc::PR_GET_SECCOMP, 0, 0, 0, 0) };
    if r < 0 {
        Err(Errno::last())
    } else {
        Ok(r)
    }
}

/// `landlock_create_ruleset(NULL, 0, LANDLOCK_CREATE_RULESET_VERSION)`: the ABI version.
fn probe_landlock() -> Result<i64, Errno> {
    const LANDLOCK_CREATE_RULESET_VERSION: libc::c_uint = 1;
    // SAFETY: with the VERSION flag the kernel reads no memory and creates no fd.
    let r = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<libc::c_void>(),
            0usize,
            LANDLOCK_CREATE_RULESET_VERSION,
        )
    };
    if r < 0 {
        Err(Errno::last())
    } else {
        Ok(r)
    }
}

/// `close_range(fd, fd, 0)` on an fd number far above any open one: 0 when supported.
fn probe_close_range() -> Result<(), Errno> {
    const UNUSED_FD: libc::c_uint = libc::c_uint::MAX - 1;
    // SAFETY: closes nothing: no descriptor can have this number.
    let r = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            UNUSED_FD,
            UNUSED_FD,
            0 as libc::c_uint,
        )
    };
    if r < 0 {
        Err(Errno::last())
    } else {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// This project's build machines: v1 controllers plus cgroup2 at /sys/fs/cgroup/unified.
    const HYBRID_MOUNTINFO: &str = "\
22 27 0:21 / /proc rw,relatime - proc proc rw
23 27 0:22 / /sys rw,relatime - sysfs sysfs rw
27 1 254:0 / / rw,relatime - ext4 /dev/vda rw,discard
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid,nodev,noexec,relatime shared:12 - cgroup cgroup rw,cpu,cpuacct
34 31 0:31 / /sys/fs/cgroup/cpuset rw,relatime - cgroup cgroup rw,cpuset
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
37 31 0:34 / /sys/fs/cgroup/freezer rw,relatime - cgroup cgroup rw,freezer
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime shared:9 - cgroup cgroup rw,xattr,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";

    const HYBRID_CGROUP: &str = "\
9:name=systemd:/
8:pids:/
6:freezer:/
4:memory:/process_api/4d03360e35265f3c283534b4f1324069
3:cpuset:/
1:cpu,cpuacct:/
0::/
";

    const V2_MOUNTINFO: &str = "\
25 1 8:2 / / rw,relatime shared:1 - ext4 /dev/sda2 rw
26 25 0:23 / /sys rw,nosuid,nodev,noexec,relatime shared:2 - sysfs sysfs rw
30 26 0:27 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
";

    const V2_CGROUP: &str =
        "0::/user.slice/user-1000.slice/user@1000.service/app.slice/app-term.scope\n";

    #[test]
    fn hybrid_mountinfo() {
        let mounts = parse_mountinfo(HYBRID_MOUNTINFO);
        assert_eq!(mounts.len(), 7);
        let cpu = &mounts[0];
        assert_eq!(cpu.version, CgroupVersion::V1);
        assert_eq!(cpu.mount_point, PathBuf::from("/sys/fs/cgroup/cpu,cpuacct"));
        assert_eq!(cpu.root, "/");
        assert_eq!(cpu.controllers, vec!["cpu", "cpuacct"]);
        assert!(cpu.has_controller("cpu") && cpu.has_controller("cpuacct"));
        assert_eq!(cpu.name, None);
        let memory = &mounts[2];
        assert_eq!(memory.mount_point, PathBuf::from("/sys/fs/cgroup/memory"));
        assert_eq!(memory.controllers, vec!["memory"]);
        assert_eq!(mounts[4].controllers, vec!["pids"]);
        let systemd = &mounts[5];
        assert!(systemd.controllers.is_empty());
        assert_eq!(systemd.name.as_deref(), Some("systemd"));
        let unified = &mounts[6];
        assert_eq!(unified.version, CgroupVersion::V2);
        assert_eq!(unified.mount_point, PathBuf::from("/sys/fs/cgroup/unified"));
        assert!(unified.controllers.is_empty());
        assert_eq!(
            cgroup_mode(&mounts),
            CgroupMode::Hybrid {
                unified: PathBuf::from("/sys/fs/cgroup/unified")
            }
        );
        assert_eq!(
            cgroup_mode(&mounts).to_string(),
            "hybrid (v1 controllers + cgroup2 at /sys/fs/cgroup/unified)"
        );
    }

    #[test]
    fn hybrid_proc_cgroup_and_dirs() {
        let mounts = parse_mountinfo(HYBRID_MOUNTINFO);
        let owns = parse_proc_cgroup(HYBRID_CGROUP);
        assert_eq!(owns.len(), 7);
        assert_eq!(owns[0].hierarchy_id, 9);
        assert_eq!(owns[0].name.as_deref(), Some("systemd"));
        assert!(owns[0].controllers.is_empty());
        assert!(!owns[0].is_v2());
        let memory = &owns[3];
        assert_eq!(memory.controllers, vec!["memory"]);
        assert_eq!(memory.path, "/process_api/4d03360e35265f3c283534b4f1324069");
        let (m, dir) = find_own_dir(&mounts, memory).expect("memory dir");
        assert_eq!(m.mount_point, PathBuf::from("/sys/fs/cgroup/memory"));
        assert_eq!(
            dir,
            PathBuf::from("/sys/fs/cgroup/memory/process_api/4d03360e35265f3c283534b4f1324069")
        );
        let cpu = &owns[5];
        assert_eq!(cpu.controllers, vec!["cpu", "cpuacct"]);
        let (_, dir) = find_own_dir(&mounts, cpu).expect("cpu dir");
        assert_eq!(dir, PathBuf::from("/sys/fs/cgroup/cpu,cpuacct"));
        let v2 = &owns[6];
        assert!(v2.is_v2());
        assert_eq!(v2.path, "/");
        let (_, dir) = find_own_dir(&mounts, v2).expect("v2 dir");
        assert_eq!(dir, PathBuf::from("/sys/fs/cgroup/unified"));
        let (_, dir) = find_own_dir(&mounts, &owns[0]).expect("systemd dir");
        assert_eq!(dir, PathBuf::from("/sys/fs/cgroup/systemd"));
    }

    #[test]
    fn pure_v2() {
        let mounts = parse_mountinfo(V2_MOUNTINFO);
        assert_eq!(mounts.len(), 1);
        let m = &mounts[0];
        assert_eq!(m.version, CgroupVersion::V2);
        assert_eq!(m.mount_point, PathBuf::from("/sys/fs/cgroup"));
        assert_eq!(
            m.super_options,
            vec!["rw", "nsdelegate", "memory_recursiveprot"]
        );
        assert!(m.controllers.is_empty());
        assert_eq!(
            cgroup_mode(&mounts),
            CgroupMode::Unified {
                path: PathBuf::from("/sys/fs/cgroup")
            }
        );
        let owns = parse_proc_cgroup(V2_CGROUP);
        assert_eq!(owns.len(), 1);
        assert!(owns[0].is_v2());
        assert_eq!(owns[0].hierarchy_id, 0);
        assert_eq!(
            owns[0].path,
            "/user.slice/user-1000.slice/user@1000.service/app.slice/app-term.scope"
        );
        let (_, dir) = find_own_dir(&mounts, &owns[0]).expect("v2 dir");
        assert_eq!(
            dir,
            PathBuf::from(
                "/sys/fs/cgroup/user.slice/user-1000.slice/user@1000.service/app.slice/app-term.scope"
            )
        );
    }

    #[test]
    fn legacy_v1_only() {
        let text = "35 31 0:32 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n";
        assert_eq!(cgroup_mode(&parse_mountinfo(text)), CgroupMode::Legacy);
        assert_eq!(cgroup_mode(&[]), CgroupMode::None);
    }

    #[test]
    fn escaped_space_in_mount_point() {
        let text = "50 31 0:40 / /mnt/my\\040cgroups rw,relatime - cgroup2 none rw\n";
        let mounts = parse_mountinfo(text);
        assert_eq!(mounts.len(), 1);
        assert_eq!(mounts[0].mount_point, PathBuf::from("/mnt/my cgroups"));
        assert_eq!(unescape_mountinfo("a\\011b\\134c\\012"), "a\tb\\c\n");
        assert_eq!(unescape_mountinfo("trailing\\04"), "trailing\\04");
        assert_eq!(unescape_mountinfo("\\999"), "\\999");
    }

    #[test]
    fn mount_root_is_a_subpath() {
        // A container's view: only /docker/abc of the hierarchy is mounted.
        let text = "60 31 0:32 /docker/abc /sys/fs/cgroup/memory ro,nosuid - cgroup cgroup \
                    rw,memory\n61 31 0:38 /docker/abc /sys/fs/cgroup/unified rw - cgroup2 \
                    cgroup2 rw\n";
        let mounts = parse_mountinfo(text);
        assert_eq!(mounts[0].root, "/docker/abc");
        assert_eq!(
            own_cgroup_dir(&mounts[0], "/docker/abc/job"),
            Some(PathBuf::from("/sys/fs/cgroup/memory/job"))
        );
        assert_eq!(
            own_cgroup_dir(&mounts[1], "/docker/abc"),
            Some(PathBuf::from("/sys/fs/cgroup/unified"))
        );
        // Component-wise prefix, not string prefix.
        assert_eq!(own_cgroup_dir(&mounts[0], "/docker/abcd"), None);
        assert_eq!(own_cgroup_dir(&mounts[0], "/"), None);
    }

    #[test]
    fn skips_malformed_lines() {
        assert!(parse_mountinfo("garbage\n1 2 3 - cgroup2\n").is_empty());
        let owns = parse_proc_cgroup("x:y\nnot-a-number::/\n0::/ok\n");
        assert_eq!(owns.len(), 1);
        assert_eq!(owns[0].path, "/ok");
    }
}
