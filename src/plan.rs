//! From a profile and a command line to a [`Plan`]: every string, path and flag the child
//! needs, decided and allocated in the parent so that the child only reads it.

use libc::c_char;
use std::ffi::{CString, OsStr, OsString};
use std::os::fd::RawFd;
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use nix::errno::Errno;

use crate::child::fds::FdList;
pub use crate::child::plan::Plan;
use crate::child::plan::{CStrings, NsFlags};
use crate::child::Step;
use crate::error::Error;
use crate::profile::{Profile, DEFAULT_PATH};

/// How many ids a sandbox's user namespace maps when the runner is root: 0 to 65535 inside.
pub const ID_RANGE_SIZE: u32 = 65_536;

/// How a sandbox's uids and gids relate to the host's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IdMode {
    /// No user namespace: the plugin's `[user]` ids are host ids (`userns = false`, root).
    Host,
    /// Rootless mode: root inside is the caller outside, the only id mapped.
    Caller,
    /// A root runner's default: ids 0-65535 inside map to a range of host ids allocated for
    /// this sandbox alone (see [`crate::idrange`]).
    Range,
}

impl IdMode {
    /// The mode `profile` gets when run with effective uid `euid`.
    pub fn for_profile(profile: &Profile, euid: u32) -> IdMode {
        if profile.rootless.enabled_for(euid) {
            IdMode::Caller
        } else if euid == 0 && profile.userns {
            IdMode::Range
        } else {
            IdMode::Host
        }
    }

    /// A short name, for JSON.
    pub fn name(self) -> &'static str {
        match self {
            IdMode::Host => "host",
            IdMode::Caller => "rootless",
            IdMode::Range => "range",
        }
    }

    /// A short description, for `check` and errors.
    pub fn describe(self) -> &'static str {
        match self {
            IdMode::Host => "none: the plugin's ids are host ids (userns = false)",
            IdMode::Caller => "rootless: root inside is the caller outside",
            IdMode::Range => {
                "a host uid/gid range of its own: root inside is an unprivileged host id"
            }
        }
    }
}

impl Plan {
    /// Builds the plan for running `program` with `args` under `profile`. `host_env` reads
    /// the caller's environment (for `TERM` and the profile's pass-through list).
    pub fn new(
        profile: &Profile,
        program: &OsStr,
        args: &[OsString],
        host_env: &dyn Fn(&str) -> Option<OsString>,
    ) -> Result<Plan, Error> {
        Self::with_socket_dir(profile, program, args, host_env, None)
    }

    /// Like [`Plan::new`], with the host directory (created at start) that is shared as the
    /// plugin's socket directory, at the same path inside the sandbox.
    pub fn with_socket_dir(
        profile: &Profile,
        program: &OsStr,
        args: &[OsString],
        host_env: &dyn Fn(&str) -> Option<OsString>,
        socket_host_dir: Option<&Path>,
    ) -> Result<Plan, Error> {
        let extras = Extras::default();
        Self::build(profile, program, args, host_env, socket_host_dir, &extras)
    }

    /// Like [`Plan::with_socket_dir`], with what the runner adds for features it sets up at
    /// start (the egress proxies' environment and generated files).
    pub(crate) fn build(
        profile: &Profile,
        program: &OsStr,
        args: &[OsString],
        host_env: &dyn Fn(&str) -> Option<OsString>,
        socket_host_dir: Option<&Path>,
        extras: &Extras,
    ) -> Result<Plan, Error> {
        if program.is_empty() {
            return Err(Error::InvalidCommand("no program given".into()));
        }
        let mut env = build_env(profile, host_env);
        if let Some(d) = socket_host_dir {
            // Replaced, never appended: the host's value names the host's directory. The
            // sandbox sees its own at the same path as the host, so addresses the plugin
            // announces over go-plugin's broker are valid host paths too.
            let dir = d.to_str().ok_or_else(|| {
                Error::InvalidCommand(format!(
                    "socket directory {}: the path is not valid UTF-8",
                    d.display()
                ))
            })?;
            set_env(&mut env, "PLUGIN_UNIX_SOCKET_DIR", dir);
            if profile.sockets.tmpdir {
                set_env(&mut env, "TMPDIR", dir);
            }
        }
        for (k, v) in &extras.env {
            set_env(&mut env, k, v);
        }
        let path_var = env
            .iter()
            .find(|(k, _)| k == "PATH")
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| DEFAULT_PATH.into());
        let program_path = resolve_program(program, &path_var)?;
        let mut root = crate::mnt::RootBuilder::new();
        let exec_path = if profile.private_root && profile.namespaces.mount {
            for m in &profile.mount {
                root.add(m)?;
            }
            if let Some(src) = socket_host_dir {
                root.bind_socket_dir(src, src)?;
            }
            for (src, dst) in &extras.files {
                root.bind_generated_file(src, dst, &extras.files_label)?;
            }
            root.ensure_program(&program_path)?
        } else {
            if profile.private_root {
                return Err(Error::InvalidCommand(
                    "a private root needs the mount namespace: set `private_root = false` \
                     or turn the mount namespace on"
                        .into(),
                ));
            }
            program_path.clone()
        };
        let mut keep_caps = 0u64;
        for c in &profile.keep_capabilities {
            keep_caps |= 1u64 << c.capability().index();
        }
        let last_cap = std::fs::read_to_string("/proc/sys/kernel/cap_last_cap")
            .ok()
            .and_then(|s| s.trim().parse::<u32>().ok())
            .unwrap_or(40)
            .min(63);

        let cstr = |what: &str, b: &[u8]| {
            CString::new(b)
                .map_err(|_| Error::InvalidCommand(format!("{what} contains a NUL byte")))
        };
        let mut argv = Vec::with_capacity(args.len() + 1);
        argv.push(cstr("program", program.as_bytes())?);
        for a in args {
            argv.push(cstr("an argument", a.as_bytes())?);
        }
        let mut envp = Vec::with_capacity(env.len());
        for (k, v) in &env {
            let mut kv = k.clone().into_vec();
            kv.push(b'=');
            kv.extend_from_slice(v.as_bytes());
            envp.push(cstr("an environment entry", &kv)?);
        }
        let argv_ptrs = null_terminated(&argv);
        let envp_ptrs = null_terminated(&envp);

        let ns = profile.namespaces;
        let euid = nix::unistd::geteuid().as_raw();
        let mode = IdMode::for_profile(profile, euid);
        let caller_map = mode == IdMode::Caller;
        // Root: a user namespace over a range of host ids of the sandbox's own, unless the
        // profile opts out (or asks for rootless mode's single mapping).
        let id_range = mode == IdMode::Range;
        let userns = caller_map || id_range;
        if id_range && (profile.user.uid >= ID_RANGE_SIZE || profile.user.gid >= ID_RANGE_SIZE) {
            return Err(Error::Profile(crate::error::ProfileError::Invalid {
                origin: "profile [user]".into(),
                message: format!(
                    "the sandbox's user namespace maps ids 0-{} (to a host range of its own), \
                     so uid {} / gid {} do not exist there: pick ids below {ID_RANGE_SIZE}, or \
                     set `userns = false` to use host ids",
                    ID_RANGE_SIZE - 1,
                    profile.user.uid,
                    profile.user.gid
                ),
            }));
        }
        if caller_map && (profile.user.uid != 0 || profile.user.gid != 0) {
            return Err(Error::Profile(crate::error::ProfileError::Invalid {
                origin: "profile [user]".into(),
                message: format!(
                    "rootless mode maps only root inside the sandbox (to the caller outside), \
                     so uid {} / gid {} do not exist there: set [user] uid = 0 and gid = 0, \
                     or run as root with `rootless = \"never\"`",
                    profile.user.uid, profile.user.gid
                ),
            }));
        }
        let mut clone_flags = 0u64;
        if userns {
            clone_flags |= libc::CLONE_NEWUSER as u64;
        }
        for (on, flag) in [
            (ns.mount, libc::CLONE_NEWNS),
            (ns.pid, libc::CLONE_NEWPID),
            (ns.net, libc::CLONE_NEWNET),
            (ns.ipc, libc::CLONE_NEWIPC),
            (ns.uts, libc::CLONE_NEWUTS),
        ] {
            if on {
                clone_flags |= flag as u64;
            }
        }
        let pass: Vec<RawFd> = profile.pass_fds.iter().map(|p| p.0).collect();
        let invalid = |table: &str, message: String| {
            Error::Profile(crate::error::ProfileError::Invalid {
                origin: format!("profile {table}"),
                message,
            })
        };
        let seccomp =
            crate::seccomp::compile(&profile.seccomp).map_err(|m| invalid("[seccomp]", m))?;
        // In a user namespace CAP_SYS_RESOURCE is the namespace's own, which cannot raise a
        // limit above the caller's hard limit: rootless limits can only be lowered. A root
        // runner's id block: the host raises them on the init before its go (see
        // `sandbox::start`), with its own CAP_SYS_RESOURCE.
        let can_raise = (!userns || id_range)
            && caps::has_cap(
                None,
                caps::CapSet::Effective,
                caps::Capability::CAP_SYS_RESOURCE,
            )
            .unwrap_or(false);
        let rlimits =
            crate::rlimit::RlimitPlan::new(&profile.rlimits, crate::rlimit::nr_open(), can_raise)
                .map_err(|m| invalid("[rlimits]", m))?;
        let private_root = profile.private_root && profile.namespaces.mount;
        let landlock = match crate::landlock::decide(
            profile.landlock.mode,
            crate::landlock::kernel_abi(),
            private_root,
        )
        .map_err(|m| invalid("[landlock]", m))?
        {
            crate::landlock::Decision::Enforce(abi) => Some(
                crate::landlock::LandlockPlan::build(&profile.landlock, abi, &root.ops)
                    .map_err(|m| invalid("[landlock]", m))?,
            ),
            crate::landlock::Decision::Skip(warning) => {
                if let Some(w) = warning {
                    tracing::warn!("{w}");
                }
                None
            }
        };
        let (staging, staging_old, old_root) = crate::mnt::staging_paths();
        Ok(Plan {
            clone_flags,
            ns: NsFlags {
                mount: ns.mount,
                pid: ns.pid,
                net: ns.net,
                ipc: ns.ipc,
                uts: ns.uts,
                cgroup: ns.cgroup,
            },
            userns,
            id_range,
            new_session: profile.new_session,
            c: CStrings {
                root: c"/".into(),
                proc_dir: c"/proc".into(),
                proc_fstype: c"proc".into(),
                hostname: cstr("hostname", profile.hostname.as_str().as_bytes())?,
                cwd: cstr("cwd", profile.cwd.as_str().as_bytes())?,
                program: cstr("program path", exec_path.as_os_str().as_bytes())?,
                staging,
                staging_old,
                old_root,
            },
            private_root: profile.private_root && profile.namespaces.mount,
            detach: profile.detach,
            root_ops: root.ops,
            root_labels: root.labels,
            keep_caps,
            uid: profile.user.uid,
            gid: profile.user.gid,
            last_cap,
            seccomp,
            rlimits,
            landlock,
            _argv: argv,
            argv_ptrs,
            _envp: envp,
            envp_ptrs,
            pass: FdList::new(&pass),
            program_path,
            env,
        })
    }

    /// Whether the sandbox runs in its own user namespace (rootless mode, or a root runner's
    /// range of host ids).
    pub fn rootless(&self) -> bool {
        self.userns
    }

    /// How the sandbox's ids relate to the host's.
    pub fn ids(&self) -> IdMode {
        match (self.userns, self.id_range) {
            (false, _) => IdMode::Host,
            (true, false) => IdMode::Caller,
            (true, true) => IdMode::Range,
        }
    }

    /// The resolved path of the program.
    pub fn program_path(&self) -> &Path {
        &self.program_path
    }

    /// The plugin's environment, in order.
    pub fn env(&self) -> &[(OsString, OsString)] {
        &self.env
    }

    /// The path or object a failing step worked on, for error messages.
    pub(crate) fn step_path(&self, step: Step, arg: u32) -> String {
        let s = |c: &CString| c.to_string_lossy().into_owned();
        match step {
            Step::MountPrivate => s(&self.c.root),
            Step::MountProc => s(&self.c.proc_dir),
            Step::Hostname => s(&self.c.hostname),
            Step::Loopback => "lo".into(),
            Step::Chdir => s(&self.c.cwd),
            Step::Exec => self.program_path.display().to_string(),
            Step::PassFds => format!("fds {:?}", self.pass_fds()),
            Step::Mount => self
                .root_labels
                .get(arg as usize)
                .cloned()
                .unwrap_or_else(|| format!("entry {arg}")),
            Step::RootTmpfs | Step::PivotRoot => s(&self.c.staging),
            Step::DetachOldRoot => s(&self.c.old_root),
            Step::Landlock => self
                .landlock
                .as_ref()
                .map_or_else(|| "ruleset".into(), |l| l.rule_path(arg)),
            Step::Rlimits => format!("rlimits.{}", crate::rlimit::resource_name(arg)),
            Step::Seccomp => format!("filter {arg}"),
            _ => "-".into(),
        }
    }
}

/// What the runner adds to a profile's plan for features it sets up at start.
#[derive(Debug, Default)]
pub(crate) struct Extras {
    /// Variables set in the plugin's environment, replacing the profile's.
    pub env: Vec<(String, String)>,
    /// Host files (written at start) bound read-only into the private root: `(host path,
    /// path in the sandbox)`.
    pub files: Vec<(PathBuf, PathBuf)>,
    /// What the files are, for error messages.
    pub files_label: String,
}

fn set_env(env: &mut Vec<(OsString, OsString)>, k: &str, v: &str) {
    match env.iter_mut().find(|(ek, _)| ek == k) {
        Some(slot) => slot.1 = v.into(),
        None => env.push((k.into(), v.into())),
    }
}

fn null_terminated(v: &[CString]) -> Vec<*const c_char> {
    v.iter()
        .map(|c| c.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect()
}

/// The plugin's environment: `PATH`, `HOME=/`, `TERM` if the caller has it, the `pass`
/// list, then `set` (later entries replace earlier ones of the same name).
fn build_env(
    profile: &Profile,
    host_env: &dyn Fn(&str) -> Option<OsString>,
) -> Vec<(OsString, OsString)> {
    let mut env: Vec<(OsString, OsString)> = Vec::new();
    let mut put = |k: &str, v: OsString| {
        if let Some(slot) = env.iter_mut().find(|(ek, _)| ek == k) {
            slot.1 = v;
        } else {
            env.push((k.into(), v));
        }
    };
    let path = profile
        .env
        .path
        .as_ref()
        .map_or(DEFAULT_PATH, |p| p.as_str());
    put("PATH", path.into());
    put("HOME", "/".into());
    if let Some(t) = host_env("TERM") {
        put("TERM", t);
    }
    if profile.env.pass_all {
        for (k, v) in std::env::vars_os() {
            if let Some(k) = k.to_str() {
                if !k.is_empty() && !k.contains('=') {
                    put(k, v);
                }
            }
        }
    }
    for name in &profile.env.pass {
        if let Some(v) = host_env(name.as_str()) {
            put(name.as_str(), v);
        }
    }
    for (k, v) in &profile.env.set {
        put(k.as_str(), v.as_str().into());
    }
    env
}

/// Resolves the program like `execvp`: a name with a slash is taken as a path (made absolute
/// against the caller's directory); otherwise the first executable regular file of that
/// name in `path_var` wins, and a match that is not executable gives `EACCES`.
pub fn resolve_program(program: &OsStr, path_var: &OsStr) -> Result<PathBuf, Error> {
    let p = Path::new(program);
    if program.as_bytes().contains(&b'/') {
        let abs = if p.is_absolute() {
            p.to_path_buf()
        } else {
            std::env::current_dir()
                .map_err(|e| Error::host("cannot read the current directory", e))?
                .join(p)
        };
        check_executable(&abs)?;
        return Ok(abs);
    }
    let mut denied: Option<PathBuf> = None;
    for dir in path_var.as_bytes().split(|b| *b == b':') {
        let dir = if dir.is_empty() { b"." as &[u8] } else { dir };
        let cand = Path::new(OsStr::from_bytes(dir)).join(p);
        match check_executable(&cand) {
            Ok(()) => {
                return Ok(if cand.is_absolute() {
                    cand
                } else {
                    std::env::current_dir()
                        .map_err(|e| Error::host("cannot read the current directory", e))?
                        .join(cand)
                })
            }
            Err(Error::NotExecutable { errno, .. }) if errno != Errno::ENOENT => {
                denied.get_or_insert(cand);
            }
            Err(_) => {}
        }
    }
    match denied {
        Some(path) => Err(Error::NotExecutable {
            path,
            errno: Errno::EACCES,
        }),
        None => Err(Error::ProgramNotFound {
            program: program.to_string_lossy().into_owned(),
            path: path_var.to_string_lossy().into_owned(),
        }),
    }
}

fn check_executable(path: &Path) -> Result<(), Error> {
    let not_exec = |errno| Error::NotExecutable {
        path: path.to_path_buf(),
        errno,
    };
    let md = std::fs::metadata(path)
        .map_err(|e| not_exec(Errno::from_raw(e.raw_os_error().unwrap_or(libc::ENOENT))))?;
    if md.is_dir() {
        return Err(not_exec(Errno::EISDIR));
    }
    if !md.is_file() || md.permissions().mode() & 0o111 == 0 {
        return Err(not_exec(Errno::EACCES));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<OsString> {
        None
    }

    #[test]
    fn env_is_clean_with_pass_and_set() {
        let p = Profile::from_toml_str(
            "[env]\npass = [\"FOO\", \"MISSING\"]\n[env.set]\nHOME = \"/home/x\"\nA = \"1\"\n",
            "t",
        )
        .unwrap();
        let host = |k: &str| match k {
            "FOO" => Some("bar".into()),
            "TERM" => Some("xterm".into()),
            "SECRET" => Some("no".into()),
            _ => None,
        };
        let plan = Plan::new(&p, OsStr::new("/bin/sh"), &[], &host).unwrap();
        let env: Vec<_> = plan
            .env()
            .iter()
            .map(|(k, v)| format!("{}={}", k.to_string_lossy(), v.to_string_lossy()))
            .collect();
        assert_eq!(
            env,
            [
                format!("PATH={DEFAULT_PATH}"),
                "HOME=/home/x".into(),
                "TERM=xterm".into(),
                "FOO=bar".into(),
                "A=1".into()
            ]
        );
    }

    #[test]
    fn resolves_like_execvp() {
        let p = resolve_program(OsStr::new("sh"), OsStr::new("/nonexistent:/bin")).unwrap();
        assert_eq!(p, PathBuf::from("/bin/sh"));
        let e = resolve_program(OsStr::new("no-such-program-x"), OsStr::new("/bin")).unwrap_err();
        assert_eq!(e.exit_code(), 127);
        let e = resolve_program(OsStr::new("/etc/passwd"), OsStr::new("")).unwrap_err();
        assert_eq!(e.exit_code(), 126);
        let e = resolve_program(OsStr::new("/nonexistent/x"), OsStr::new("")).unwrap_err();
        assert_eq!(e.exit_code(), 127);
    }

    #[test]
    fn nul_in_argument_is_refused() {
        let p = Profile::default();
        let e = Plan::new(
            &p,
            OsStr::new("/bin/sh"),
            &[OsString::from_vec(b"a\0b".to_vec())],
            &no_env,
        )
        .err()
        .unwrap();
        assert!(e.to_string().contains("NUL"), "{e}");
    }
}
