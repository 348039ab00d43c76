//! Profiles: the TOML files in `sandbox-profiles/` that say how a sandbox is built.
//!
//! The schema is strict (`deny_unknown_fields` everywhere) and every value is checked while it
//! is parsed, so a bad profile is reported as `file:line:column: what is wrong`. Named profiles
//! are embedded in the binary, so `--profile default` works wherever the binary is installed.

use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::ProfileError;

/// The profiles embedded in the binary: `(name, TOML text)`.
pub const BUILTIN: &[(&str, &str)] = &[
    ("default", include_str!("../sandbox-profiles/default.toml")),
    (
        "go-plugin",
        include_str!("../sandbox-profiles/go-plugin.toml"),
    ),
    (
        "rootless",
        include_str!("../sandbox-profiles/rootless.toml"),
    ),
];

/// A sandbox profile. Every key is optional; a missing key takes the safe default shown in
/// `sandbox-profiles/default.toml`.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    /// Which namespaces the sandbox gets; all on unless turned off explicitly.
    #[serde(default)]
    pub namespaces: Namespaces,
    /// The hostname inside the sandbox's UTS namespace.
    #[serde(default)]
    pub hostname: Hostname,
    /// The plugin's environment.
    #[serde(default)]
    pub env: EnvConfig,
    /// What the plugin's stdin is.
    #[serde(default)]
    pub stdin: StdinMode,
    /// Time between the SIGTERM of a kill and the SIGKILL of the whole sandbox, like `"2s"`
    /// or `"500ms"`.
    #[serde(default)]
    pub kill_grace: Grace,
    /// File descriptors of the caller (3 or above) passed to the plugin on purpose, at the
    /// same numbers. Every other fd is closed.
    #[serde(default)]
    pub pass_fds: Vec<PassFd>,
    /// The plugin's working directory (absolute; default `/`).
    #[serde(default)]
    pub cwd: AbsPath,
    /// Start the plugin in a new session, with no controlling terminal (default true).
    #[serde(default = "yes")]
    pub new_session: bool,
    /// A profile this one builds on: a built-in name or a path (relative to this file).
    /// Tables merge key by key, `mount` entries are appended to the base's, and every other
    /// value given here replaces the base's.
    #[serde(default)]
    pub extends: Option<String>,
    /// Give the sandbox its own root (a tmpfs assembled from `mount`, then `pivot_root`).
    /// Default true; `false` leaves the host's file system visible (read-write!).
    #[serde(default = "yes")]
    pub private_root: bool,
    /// What the private root holds, in order.
    #[serde(default)]
    pub mount: Vec<MountSpec>,
    /// The user the plugin runs as (default root inside the sandbox, with no capabilities).
    #[serde(default)]
    pub user: UserConfig,
    /// cgroup limits on memory, processes and CPU.
    #[serde(default)]
    pub limits: LimitsConfig,
    /// A unix-socket directory shared with the host, for go-plugin style plugins.
    #[serde(default)]
    pub sockets: SocketsConfig,
    /// Start detached: the sandbox does not die with its host, and records its state under
    /// the state directory so another process can reattach, wait, kill and translate.
    #[serde(default)]
    pub detach: bool,
    /// `sandbox-run` (and so its sandbox) dies when the process that started it dies, like
    /// bubblewrap's `--die-with-parent`: a go-plugin host SIGKILLed after the handshake
    /// takes its plugin with it. The library's sandboxes die with their host process anyway;
    /// this key is for the CLI. No effect with `detach`.
    #[serde(default)]
    pub die_with_parent: bool,
    /// Capabilities the plugin keeps (e.g. `"CAP_NET_BIND_SERVICE"`); all others are dropped
    /// from every set, the bounding set included.
    #[serde(default)]
    pub keep_capabilities: Vec<CapName>,
    /// The system calls the plugin may not make (a deny list modelled on Docker's).
    #[serde(default)]
    pub seccomp: crate::seccomp::SeccompConfig,
    /// Resource limits set in the plugin (`core` = 0 unless given).
    #[serde(default)]
    pub rlimits: crate::rlimit::RlimitsConfig,
    /// The Landlock layer over the private root's mounts.
    #[serde(default)]
    pub landlock: crate::landlock::LandlockConfig,
    /// Whether the sandbox gets its own user namespace, with root inside mapped to the
    /// caller (`"auto"`: when the caller is not root; `"always"`; `"never"`).
    #[serde(default)]
    pub rootless: RootlessMode,
    /// The egress allow-list: the hosts and ports the plugin may reach through the proxies
    /// and DNS stub the runner serves inside its network namespace (none: loopback only).
    #[serde(default)]
    pub network: NetworkConfig,
    /// Run as root, whether the sandbox still gets a user namespace (the default): its ids
    /// 0-65535 then map to a range of host ids allocated for it alone (never 0, never another
    /// sandbox's), so the plugin is never host root. `false` opts out: the plugin's `[user]`
    /// ids are host ids. Not root, the sandbox always has a user namespace (`rootless`).
    #[serde(default = "yes")]
    pub userns: bool,
}

/// `[network]`: what the plugin may reach outside its sandbox (see [`crate::egress`]).
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct NetworkConfig {
    /// `HOST:PORT` rules (`api.example.com:443`, `*.amazonaws.com:443`, `10.1.2.3:8080`,
    /// `10.0.0.0/8:5432`, `db.internal:8000-8100`); empty means loopback only.
    #[serde(default)]
    pub allow: Vec<NetRule>,
    /// Client connections served at once, over all of the sandbox's proxies (default 256);
    /// the next one waits until one ends.
    #[serde(default)]
    pub max_connections: Option<usize>,
}

impl NetworkConfig {
    /// The rules, parsed.
    pub fn rules(&self) -> crate::egress::Rules {
        crate::egress::Rules::from_rules(self.allow.iter().map(|r| r.0.clone()))
    }
}

/// One egress rule, `HOST:PORT`, checked when parsed (the error names the rule and why).
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(try_from = "String")]
pub struct NetRule(crate::egress::Rule);

impl TryFrom<String> for NetRule {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        NetRule::new(&s)
    }
}

impl NetRule {
    /// Parses a rule (for `--allow-net`).
    pub fn new(s: &str) -> Result<Self, String> {
        s.parse()
            .map(NetRule)
            .map_err(|e: crate::egress::RuleError| e.to_string())
    }

    /// The rule.
    pub fn rule(&self) -> &crate::egress::Rule {
        &self.0
    }
}

/// When a sandbox runs in its own user namespace (rootless mode).
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum RootlessMode {
    /// A user namespace when the effective uid is not 0.
    #[default]
    Auto,
    /// Always a user namespace, even for root.
    Always,
    /// Never: a caller that is not root then fails to create the namespaces.
    Never,
}

impl RootlessMode {
    /// Whether a caller with effective uid `euid` runs the sandbox in a user namespace.
    pub fn enabled_for(self, euid: u32) -> bool {
        match self {
            RootlessMode::Auto => euid != 0,
            RootlessMode::Always => true,
            RootlessMode::Never => false,
        }
    }
}

/// One entry of a private root, written `[[mount]]` with a `type`.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "kebab-case", deny_unknown_fields)]
pub enum MountSpec {
    /// A read-only bind of a host path (`nosuid,nodev`, read-only recursively).
    RoBind {
        /// Host path.
        src: AbsPath,
        /// Path in the sandbox (default: the same as `src`).
        #[serde(default)]
        dst: Option<AbsPath>,
        /// Skip silently when `src` does not exist on this host.
        #[serde(default)]
        optional: bool,
        /// Also `noexec`.
        #[serde(default)]
        noexec: bool,
    },
    /// A read-write bind of a host path (`nosuid,nodev`).
    Bind {
        /// Host path.
        src: AbsPath,
        /// Path in the sandbox (default: the same as `src`).
        #[serde(default)]
        dst: Option<AbsPath>,
        /// Skip silently when `src` does not exist on this host.
        #[serde(default)]
        optional: bool,
        /// Also `noexec`.
        #[serde(default)]
        noexec: bool,
    },
    /// A fresh tmpfs (`nosuid,nodev`).
    Tmpfs {
        /// Path in the sandbox.
        dst: AbsPath,
        /// Size limit like `"64M"` (default: the kernel's, half of RAM).
        #[serde(default)]
        size: Option<Size>,
        /// Octal mode of its root like `"1777"` (default `"755"`).
        #[serde(default)]
        mode: Option<Mode>,
        /// Also `noexec`.
        #[serde(default)]
        noexec: bool,
    },
    /// A fresh `proc` for the sandbox's PID namespace.
    Proc {
        /// Path in the sandbox (default `/proc`).
        #[serde(default = "proc_dst")]
        dst: AbsPath,
    },
    /// A minimal `/dev`: null zero full random urandom tty, `shm`, optional `pts`, and the
    /// `fd stdin stdout stderr` symlinks.
    Dev {
        /// Path in the sandbox (default `/dev`).
        #[serde(default = "dev_dst")]
        dst: AbsPath,
        /// Also a private `devpts` instance on `pts` (with `ptmx`).
        #[serde(default)]
        pts: bool,
    },
    /// An empty directory.
    Dir {
        /// Path in the sandbox.
        dst: AbsPath,
        /// Octal mode like `"755"` (default).
        #[serde(default)]
        mode: Option<Mode>,
    },
    /// A symbolic link `dst -> src`.
    Symlink {
        /// The link's target, as stored in the link (may be relative).
        src: LinkTarget,
        /// Path of the link in the sandbox.
        dst: AbsPath,
    },
    /// A host path reproduced as it is on this host: a symlink becomes the same symlink, a
    /// directory or file a read-only bind (`/bin`, `/lib`, `/lib64`, `/sbin` differ between
    /// distributions).
    Mirror {
        /// The path, the same on both sides.
        path: AbsPath,
        /// Skip silently when it does not exist on this host.
        #[serde(default)]
        optional: bool,
    },
}

fn proc_dst() -> AbsPath {
    AbsPath("/proc".into())
}

fn dev_dst() -> AbsPath {
    AbsPath("/dev".into())
}

fn yes() -> bool {
    true
}

impl Default for Profile {
    fn default() -> Self {
        Profile {
            namespaces: Namespaces::default(),
            hostname: Hostname::default(),
            env: EnvConfig::default(),
            stdin: StdinMode::default(),
            kill_grace: Grace::default(),
            pass_fds: Vec::new(),
            cwd: AbsPath::default(),
            new_session: true,
            extends: None,
            private_root: true,
            mount: Vec::new(),
            keep_capabilities: Vec::new(),
            detach: false,
            die_with_parent: false,
            seccomp: crate::seccomp::SeccompConfig::default(),
            rlimits: crate::rlimit::RlimitsConfig::default(),
            landlock: crate::landlock::LandlockConfig::default(),
            sockets: SocketsConfig::default(),
            limits: LimitsConfig::default(),
            user: UserConfig::default(),
            rootless: RootlessMode::default(),
            network: NetworkConfig::default(),
            userns: true,
        }
    }
}

/// The uid and gid of the plugin (no supplementary groups). Default 0/0: root inside the
/// sandbox with no capabilities; a non-root uid such as 65534 (`nobody`) also loses what
/// root owns by uid (files under `/proc`, root-owned files of binds).
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct UserConfig {
    /// The uid.
    #[serde(default)]
    pub uid: u32,
    /// The gid.
    #[serde(default)]
    pub gid: u32,
}

/// Resource limits, enforced with cgroups (v2, or v1 on legacy and hybrid hosts). A limit
/// left out is not set; with none at all, no cgroup is created.
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// Memory limit like `"512M"` (`memory.max`; v1 `memory.limit_in_bytes`).
    #[serde(default)]
    pub memory: Option<Size>,
    /// Swap allowed on top of `memory` (default none: swap is off).
    #[serde(default)]
    pub swap: Option<Size>,
    /// Most processes and threads at once (`pids.max`).
    #[serde(default)]
    pub pids: Option<u64>,
    /// CPU bandwidth in CPUs, like `0.5` (`cpu.max`; v1 CFS quota and period).
    #[serde(default)]
    pub cpus: Option<f64>,
    /// Relative CPU weight, 1 to 10000 (`cpu.weight`; v1 `cpu.shares`).
    #[serde(default)]
    pub cpu_weight: Option<u64>,
    /// A delegated cgroup (a path as in `/proc/self/cgroup`, like `/plugins.slice`) to create
    /// sandboxes under, instead of the caller's own cgroup.
    #[serde(default)]
    pub cgroup_parent: Option<AbsPath>,
    /// Wall-clock limit, like `"30s"`, counted from the end of the start: at the limit the
    /// runner sends SIGTERM, waits `kill_grace`, then kills the whole sandbox, and the
    /// diagnosis names the limit. Not a cgroup limit (it creates no cgroup).
    #[serde(default)]
    pub timeout: Option<Timeout>,
}

impl LimitsConfig {
    /// True when no limit is set.
    pub fn is_empty(&self) -> bool {
        self.memory.is_none()
            && self.pids.is_none()
            && self.cpus.is_none()
            && self.cpu_weight.is_none()
    }

    /// The limits in the cgroup module's terms.
    pub fn to_limits(&self) -> crate::cgroup::Limits {
        crate::cgroup::Limits {
            memory: self.memory.map(|s| s.0),
            swap: self.swap.map(|s| s.0),
            pids: self.pids,
            cpus: self.cpus,
            cpu_weight: self.cpu_weight,
        }
    }
}

/// The socket directory a sandbox shares with its host.
///
/// When enabled, the runner makes a directory for the sandbox on the host,
/// `<state>/<id>/s/sock` (or `<PLUGIN_UNIX_SOCKET_DIR>/<id>/sock` when the host set
/// `PLUGIN_UNIX_SOCKET_DIR`), binds it at the same path inside the sandbox and sets the
/// plugin's `PLUGIN_UNIX_SOCKET_DIR` (replaced) to it. Run as root, its parent is a tmpfs of
/// its own, limited to `size` bytes and `inodes` files and mounted `nosuid,nodev,noexec,
/// nosymfollow` on the host ([`crate::sockfs`]); removal is an unmount.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SocketsConfig {
    /// Share a socket directory (default false).
    #[serde(default)]
    pub enabled: bool,
    /// A group (name or numeric gid) given access to the directory, like go-plugin's
    /// `PLUGIN_UNIX_SOCKET_GROUP`.
    #[serde(default)]
    pub group: Option<String>,
    /// Also point `TMPDIR` at the socket directory, for older go-plugin plugins that ignore
    /// `PLUGIN_UNIX_SOCKET_DIR` and create their socket in the OS temp dir (default false:
    /// the plugin's temporary files then count against `size` and `inodes`).
    #[serde(default)]
    pub tmpdir: bool,
    /// Bytes of data the socket directory's tmpfs holds at most (default `"1M"`).
    #[serde(default = "default_sockets_size")]
    pub size: Size,
    /// Files and directories the socket directory's tmpfs holds at most, its own two
    /// included (default 64).
    #[serde(default = "default_sockets_inodes")]
    pub inodes: u64,
    /// Brokered connect (default false): the plugin's `connect()` calls go to the host
    /// (seccomp user notification), which connects the plugin's own socket to a unix socket
    /// the host process created after the sandbox started, named `plugin<digits>` in the
    /// host's `PLUGIN_UNIX_SOCKET_DIR` or temp dir: go-plugin's non-multiplexed
    /// `GRPCBroker` servers. Every other connect happens inside the sandbox as before.
    #[serde(default)]
    pub broker: bool,
}

impl Default for SocketsConfig {
    fn default() -> Self {
        SocketsConfig {
            enabled: false,
            group: None,
            tmpdir: false,
            size: default_sockets_size(),
            inodes: default_sockets_inodes(),
            broker: false,
        }
    }
}

fn default_sockets_size() -> Size {
    Size(1 << 20)
}

fn default_sockets_inodes() -> u64 {
    64
}

/// The namespaces a sandbox is cloned into. Each is on unless the profile says `false`.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Namespaces {
    /// A new mount namespace (`CLONE_NEWNS`).
    #[serde(default = "yes")]
    pub mount: bool,
    /// A new PID namespace (`CLONE_NEWPID`) with an init as PID 1.
    #[serde(default = "yes")]
    pub pid: bool,
    /// A new network namespace (`CLONE_NEWNET`) with only loopback.
    #[serde(default = "yes")]
    pub net: bool,
    /// A new IPC namespace (`CLONE_NEWIPC`).
    #[serde(default = "yes")]
    pub ipc: bool,
    /// A new UTS namespace (`CLONE_NEWUTS`) with the profile's hostname.
    #[serde(default = "yes")]
    pub uts: bool,
    /// A new cgroup namespace (`CLONE_NEWCGROUP`), rooted at the sandbox's own cgroup once
    /// it is placed there: `/proc/self/cgroup` shows `/`, not the host's cgroup paths.
    #[serde(default = "yes")]
    pub cgroup: bool,
}

impl Default for Namespaces {
    fn default() -> Self {
        Namespaces {
            mount: true,
            pid: true,
            net: true,
            ipc: true,
            uts: true,
            cgroup: true,
        }
    }
}

/// The plugin's environment: clean by default.
///
/// The plugin gets `PATH` (this `path`), `HOME=/`, `TERM` when the caller has it, the host
/// variables named in `pass` that are set, then the `set` entries (which win).
#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct EnvConfig {
    /// `PATH` inside the sandbox; also where a program without a slash is looked up.
    #[serde(default)]
    pub path: Option<EnvValue>,
    /// Names of host variables passed through when set.
    #[serde(default)]
    pub pass: Vec<EnvName>,
    /// Variables set explicitly.
    #[serde(default)]
    pub set: BTreeMap<EnvName, EnvValue>,
    /// Pass the host's whole environment through (before `set`). For drop-in go-plugin
    /// use, where the magic cookie has a host-chosen name. Default false.
    #[serde(default)]
    pub pass_all: bool,
}

/// The default `PATH` in a sandbox.
pub const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// What the plugin's stdin is connected to.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum StdinMode {
    /// `/dev/null`.
    #[default]
    Null,
    /// The caller's own stdin.
    Inherit,
    /// A pipe the host writes to (library only; the CLI treats it as `inherit`).
    Pipe,
}

macro_rules! checked_string {
    ($(#[$m:meta])* $name:ident, $default:expr, $check:expr) => {
        $(#[$m])*
        #[derive(Clone, Debug, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
        #[serde(try_from = "String")]
        pub struct $name(String);

        impl TryFrom<String> for $name {
            type Error = String;
            fn try_from(s: String) -> Result<Self, String> {
                let check: fn(&str) -> Result<(), String> = $check;
                check(&s)?;
                Ok($name(s))
            }
        }

        impl Default for $name {
            fn default() -> Self {
                $name(String::from($default))
            }
        }

        impl $name {
            /// The checked value.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }
    };
}

checked_string!(
    /// A hostname: 1 to 64 bytes of letters, digits, `-` and `.`.
    Hostname,
    "sandbox",
    |s| {
        if s.is_empty() || s.len() > 64 {
            return Err(format!("hostname must be 1 to 64 bytes, got {}", s.len()));
        }
        if !s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.') {
            return Err(format!("hostname '{s}' may hold only letters, digits, '-' and '.'"));
        }
        Ok(())
    }
);

checked_string!(
    /// An environment variable name: non-empty, no `=` and no NUL.
    EnvName,
    "",
    |s| {
        if s.is_empty() || s.contains('=') || s.contains('\0') {
            return Err(format!("'{s}' is not a valid environment variable name"));
        }
        Ok(())
    }
);

checked_string!(
    /// An environment variable value: no NUL.
    EnvValue,
    "",
    |s| {
        if s.contains('\0') {
            return Err("environment values cannot contain NUL".into());
        }
        Ok(())
    }
);

checked_string!(
    /// An absolute path with no NUL.
    AbsPath,
    "/",
    |s| {
        if !s.starts_with('/') || s.contains('\0') {
            return Err(format!("'{s}' must be an absolute path"));
        }
        Ok(())
    }
);

checked_string!(
    /// A symlink target: non-empty, no NUL.
    LinkTarget,
    "/",
    |s| {
        if s.is_empty() || s.contains('\0') {
            return Err("a symlink target must be non-empty without NUL".into());
        }
        Ok(())
    }
);

checked_string!(
    /// A capability name like `CAP_NET_BIND_SERVICE` (case-insensitive, `CAP_` optional).
    CapName,
    "CAP_CHOWN",
    |s| {
        let up = s.to_ascii_uppercase();
        let full = if up.starts_with("CAP_") { up } else { format!("CAP_{up}") };
        full.parse::<caps::Capability>()
            .map(drop)
            .map_err(|_| format!("'{s}' is not a capability name"))
    }
);

impl CapName {
    /// The capability.
    pub fn capability(&self) -> caps::Capability {
        let up = self.0.to_ascii_uppercase();
        let full = if up.starts_with("CAP_") {
            up
        } else {
            format!("CAP_{up}")
        };
        full.parse().expect("checked when parsed")
    }
}

/// A size like `"64M"`, `"512K"`, `"1G"` or plain bytes (binary suffixes).
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(try_from = "String")]
pub struct Size(pub u64);

impl TryFrom<String> for Size {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        parse_size(&s).map(Size)
    }
}

/// Parses `"64M"`, `"512K"`, `"1G"`, `"1T"` or plain bytes (binary multiples).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let bad = || format!("'{s}' is not a size like \"64M\", \"512K\" or \"1G\"");
    let t = s.trim();
    let (num, mul) = match t.char_indices().last() {
        Some((i, c)) if c.is_ascii_alphabetic() => {
            let m: u64 = match c.to_ascii_uppercase() {
                'K' => 1 << 10,
                'M' => 1 << 20,
                'G' => 1 << 30,
                'T' => 1 << 40,
                _ => return Err(bad()),
            };
            (&t[..i], m)
        }
        _ => (t, 1),
    };
    let n: u64 = num.trim().parse().map_err(|_| bad())?;
    let v = n.checked_mul(mul).ok_or_else(bad)?;
    if v == 0 {
        return Err(format!("'{s}' is zero"));
    }
    Ok(v)
}

/// An octal file mode like `"1777"` or `"755"`.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(try_from = "String")]
pub struct Mode(pub u32);

impl TryFrom<String> for Mode {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        match u32::from_str_radix(&s, 8) {
            Ok(m) if m <= 0o7777 => Ok(Mode(m)),
            _ => Err(format!(
                "'{s}' is not an octal mode like \"755\" or \"1777\""
            )),
        }
    }
}

impl EnvName {
    /// Builds a checked name (for overrides given on a command line).
    pub fn new(s: &str) -> Result<Self, String> {
        Self::try_from(s.to_string())
    }
}

impl EnvValue {
    /// Builds a checked value (for overrides given on a command line).
    pub fn new(s: &str) -> Result<Self, String> {
        Self::try_from(s.to_string())
    }
}

impl Hostname {
    /// Builds a checked hostname (for overrides given on a command line).
    pub fn new(s: &str) -> Result<Self, String> {
        Self::try_from(s.to_string())
    }
}

impl AbsPath {
    /// Builds a checked absolute path (for overrides given on a command line).
    pub fn new(s: &str) -> Result<Self, String> {
        Self::try_from(s.to_string())
    }
}

/// A kill grace period, written `"2s"`, `"500ms"` or `"1.5s"`; at most one hour.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(try_from = "String")]
pub struct Grace(pub Duration);

impl Default for Grace {
    fn default() -> Self {
        Grace(Duration::from_secs(2))
    }
}

impl TryFrom<String> for Grace {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        parse_duration(&s).map(Grace)
    }
}

/// Parses a kill grace period: `"2s"`, `"1.5s"`, `"500ms"`, `"1m"` (at most one hour); see
/// [`parse_duration_upto`] for the format.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    parse_duration_upto(s, Duration::from_secs(3600), "one hour")
}

/// Parses a duration: a decimal number (`30`, `1.5`) directly followed by a unit, `ms`, `s`,
/// `m` (minutes) or `h` (hours), as in `"500ms"`, `"30s"`, `"5m"`, `"1h"`; at most `max`
/// (named `max_text` in the error). The error names the bad value.
pub fn parse_duration_upto(s: &str, max: Duration, max_text: &str) -> Result<Duration, String> {
    let bad = || {
        format!("'{s}' is not a duration like \"500ms\", \"30s\", \"5m\" or \"1h\" (a number, then ms, s, m or h)")
    };
    let (num, scale) = if let Some(n) = s.strip_suffix("ms") {
        (n, 0.001)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 60.0)
    } else if let Some(n) = s.strip_suffix('h') {
        (n, 3600.0)
    } else {
        return Err(bad());
    };
    // Digits and at most one dot only: no sign, exponent, "inf" or "nan".
    if num.is_empty()
        || !num.bytes().all(|b| b.is_ascii_digit() || b == b'.')
        || num.bytes().filter(|&b| b == b'.').count() > 1
    {
        return Err(bad());
    }
    let v: f64 = num.parse().map_err(|_| bad())?;
    let secs = v * scale;
    if !secs.is_finite() || secs > max.as_secs_f64() {
        return Err(format!("'{s}' is longer than {max_text}"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// The longest wall-clock limit accepted: 30 days.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(30 * 24 * 3600);

/// A wall-clock limit, written like `"500ms"`, `"30s"`, `"5m"`, `"1h"` or `"1.5h"`: more
/// than zero, at most 30 days ([`MAX_TIMEOUT`]).
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(try_from = "String")]
pub struct Timeout(pub Duration);

impl Timeout {
    /// Parses and checks a wall-clock limit (for `--timeout`); the error names the value.
    pub fn parse(s: &str) -> Result<Self, String> {
        let d = parse_duration_upto(s, MAX_TIMEOUT, "30 days (720h)")?;
        if d.is_zero() {
            return Err(format!("'{s}': a time limit must be more than zero"));
        }
        Ok(Timeout(d))
    }
}

impl TryFrom<String> for Timeout {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        Timeout::parse(&s)
    }
}

/// A duration as a person would write it: `30s`, `5m`, `1h`, `1.5s`, `500ms`, `1h30m`.
pub fn format_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if ms == 0 {
        return format!("{}µs", d.as_micros());
    }
    if ms % 1000 != 0 {
        return if ms > 1000 && ms % 100 == 0 {
            format!("{}.{}s", ms / 1000, (ms % 1000) / 100)
        } else {
            format!("{ms}ms")
        };
    }
    let secs = ms / 1000;
    let (h, m, s) = (secs / 3600, (secs / 60) % 60, secs % 60);
    let mut out = String::new();
    if h > 0 {
        out.push_str(&format!("{h}h"));
    }
    if m > 0 {
        out.push_str(&format!("{m}m"));
    }
    if s > 0 || out.is_empty() {
        out.push_str(&format!("{s}s"));
    }
    out
}

/// A file descriptor passed on purpose: 3 or above.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(try_from = "i64")]
pub struct PassFd(pub i32);

impl TryFrom<i64> for PassFd {
    type Error = String;
    fn try_from(v: i64) -> Result<Self, String> {
        if !(3..=i64::from(i32::MAX)).contains(&v) {
            return Err(format!(
                "pass_fds entry {v} must be 3 or above (0, 1, 2 are stdio)"
            ));
        }
        Ok(PassFd(v as i32))
    }
}

/// Most fds a profile may pass (the child keeps them in a fixed-size array).
pub const MAX_PASS_FDS: usize = crate::child::fds::MAX_PASS_FDS;

impl Profile {
    /// Parses a profile from TOML text; `origin` names it in errors (a path or
    /// `<builtin NAME>`). A relative `extends` path is taken from the current directory.
    pub fn from_toml_str(text: &str, origin: &str) -> Result<Profile, ProfileError> {
        Self::from_toml_in(text, origin, Path::new("."), 0)
    }

    fn from_toml_in(
        text: &str,
        origin: &str,
        dir: &Path,
        depth: usize,
    ) -> Result<Profile, ProfileError> {
        // The file alone first: every key is optional, so this checks names, types and
        // values with their exact positions.
        let own: Profile = toml::from_str(text).map_err(|e| parse_error(text, origin, &e))?;
        let p = match &own.extends {
            None => own,
            Some(base) => {
                if depth >= 8 {
                    return Err(ProfileError::Invalid {
                        origin: origin.to_string(),
                        message: "`extends` nests more than 8 profiles deep (a cycle?)".into(),
                    });
                }
                let mut table = Self::table_of(base, origin, dir, depth + 1)?;
                let overlay: toml::Table =
                    toml::from_str(text).map_err(|e| parse_error(text, origin, &e))?;
                merge(&mut table, overlay);
                table.remove("extends");
                Profile::deserialize(table).map_err(|e| ProfileError::Invalid {
                    origin: origin.to_string(),
                    message: format!("after merging `extends = {base:?}`: {}", e.message()),
                })?
            }
        };
        if p.sockets.size.0 < 4096 || p.sockets.inodes < 4 {
            return Err(ProfileError::Invalid {
                origin: origin.to_string(),
                message: format!(
                    "[sockets] size = {} bytes and inodes = {}: the socket directory needs at \
                     least 4K and 4 inodes (its root, sock, links and one socket)",
                    p.sockets.size.0, p.sockets.inodes
                ),
            });
        }
        if p.pass_fds.len() > MAX_PASS_FDS {
            return Err(ProfileError::Invalid {
                origin: origin.to_string(),
                message: format!("pass_fds holds more than {MAX_PASS_FDS} entries"),
            });
        }
        Ok(p)
    }

    /// The fully merged TOML table of the profile `spec` (checked on the way).
    fn table_of(
        spec: &str,
        from: &str,
        dir: &Path,
        depth: usize,
    ) -> Result<toml::Table, ProfileError> {
        let (text, origin, sub) =
            if spec.contains('/') || spec.ends_with(".toml") {
                let path = dir.join(spec);
                let text = read_profile_file(&path)?;
                let sub = path.parent().unwrap_or(Path::new(".")).to_path_buf();
                (text, path.display().to_string(), sub)
            } else {
                let (n, t) = BUILTIN.iter().find(|(n, _)| *n == spec).ok_or_else(|| {
                    ProfileError::Invalid {
                        origin: from.to_string(),
                        message: format!(
                            "extends unknown profile '{spec}' (built-in: {})",
                            builtin_names()
                        ),
                    }
                })?;
                (t.to_string(), format!("<builtin {n}>"), dir.to_path_buf())
            };
        // Check the base on its own (positions), then build its merged table.
        let own: Profile = toml::from_str(&text).map_err(|e| parse_error(&text, &origin, &e))?;
        let mine: toml::Table =
            toml::from_str(&text).map_err(|e| parse_error(&text, &origin, &e))?;
        match own.extends {
            None => Ok(mine),
            Some(base) => {
                if depth >= 8 {
                    return Err(ProfileError::Invalid {
                        origin,
                        message: "`extends` nests more than 8 profiles deep (a cycle?)".into(),
                    });
                }
                let mut t = Self::table_of(&base, &origin, &sub, depth + 1)?;
                merge(&mut t, mine);
                Ok(t)
            }
        }
    }

    /// Loads a profile file.
    pub fn from_path(path: &Path) -> Result<Profile, ProfileError> {
        let text = read_profile_file(path)?;
        let dir = path.parent().unwrap_or(Path::new("."));
        Self::from_toml_in(&text, &path.display().to_string(), dir, 0)
    }

    /// Loads an embedded profile by name.
    pub fn builtin(name: &str) -> Result<Profile, ProfileError> {
        match BUILTIN.iter().find(|(n, _)| *n == name) {
            Some((n, text)) => Self::from_toml_str(text, &format!("<builtin {n}>")),
            None => Err(ProfileError::UnknownName {
                name: name.to_string(),
                known: builtin_names(),
            }),
        }
    }

    /// Loads `spec` as a path when it contains a `/` or ends in `.toml`, else as the name of
    /// an embedded profile.
    pub fn load(spec: &str) -> Result<Profile, ProfileError> {
        if spec.contains('/') || spec.ends_with(".toml") {
            Self::from_path(&PathBuf::from(spec))
        } else {
            Self::builtin(spec)
        }
    }
}

/// The largest profile file read (far above any real profile).
const MAX_PROFILE_BYTES: u64 = 1 << 20;

/// Reads a profile file: a regular file of at most [`MAX_PROFILE_BYTES`], in UTF-8. Opened
/// non-blocking, so a FIFO named by mistake is refused instead of waiting for a writer, and a
/// device such as `/dev/zero` is refused instead of filling memory.
fn read_profile_file(path: &Path) -> Result<String, ProfileError> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let err = |source: std::io::Error| ProfileError::Read {
        path: path.to_path_buf(),
        source,
    };
    let invalid = |what: String| err(std::io::Error::new(std::io::ErrorKind::InvalidInput, what));
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(err)?;
    let meta = file.metadata().map_err(err)?;
    if !meta.is_file() {
        return Err(invalid("not a regular file".to_owned()));
    }
    if meta.len() > MAX_PROFILE_BYTES {
        return Err(invalid(format!(
            "{} bytes, more than the {MAX_PROFILE_BYTES} a profile may have",
            meta.len()
        )));
    }
    let mut text = String::new();
    file.take(MAX_PROFILE_BYTES + 1)
        .read_to_string(&mut text)
        .map_err(err)?;
    if text.len() as u64 > MAX_PROFILE_BYTES {
        return Err(invalid(format!(
            "more than the {MAX_PROFILE_BYTES} bytes a profile may have"
        )));
    }
    Ok(text)
}

fn builtin_names() -> String {
    BUILTIN
        .iter()
        .map(|(n, _)| *n)
        .collect::<Vec<_>>()
        .join(", ")
}

fn parse_error(text: &str, origin: &str, e: &toml::de::Error) -> ProfileError {
    let (line, column) = e.span().map(|r| line_col(text, r.start)).unwrap_or((1, 1));
    ProfileError::Parse {
        origin: origin.to_string(),
        line,
        column,
        message: e.message().trim().to_string(),
    }
}

/// Merges `over` into `base`: tables key by key, `mount` arrays appended, the rest replaced.
fn merge(base: &mut toml::Table, over: toml::Table) {
    for (k, v) in over {
        match (base.get_mut(&k), v) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge(b, o),
            (Some(toml::Value::Array(b)), toml::Value::Array(o)) if k == "mount" => b.extend(o),
            (_, v) => {
                base.insert(k, v);
            }
        }
    }
}

/// 1-based line and column of byte offset `at` in `text`.
fn line_col(text: &str, at: usize) -> (usize, usize) {
    let at = at.min(text.len());
    let before = &text[..at];
    let line = before.matches('\n').count() + 1;
    let col = before.rfind('\n').map_or(at, |i| at - i - 1) + 1;
    (line, col)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builtin_rootless_is_the_default_without_limits() {
        let mut d = Profile::builtin("default").unwrap();
        let r = Profile::builtin("rootless").unwrap();
        assert!(r.limits.is_empty());
        assert_eq!(r.rootless, RootlessMode::Auto);
        d.limits = LimitsConfig::default();
        assert_eq!(d, r, "rootless.toml drifted from default.toml");
        assert!(RootlessMode::Auto.enabled_for(1000) && !RootlessMode::Auto.enabled_for(0));
        assert!(RootlessMode::Always.enabled_for(0) && !RootlessMode::Never.enabled_for(1000));
    }

    #[test]
    fn builtin_default_parses() {
        let p = Profile::builtin("default").unwrap();
        assert_eq!(p.hostname.as_str(), "sandbox");
        assert!(p.namespaces.pid && p.namespaces.net && p.namespaces.mount);
        assert_eq!(p.kill_grace.0, Duration::from_secs(2));
    }

    #[test]
    fn unknown_key_has_position() {
        let e = Profile::from_toml_str("hostname = \"a\"\nbogus = 1\n", "p.toml").unwrap_err();
        let s = e.to_string();
        assert!(s.starts_with("p.toml:2:1: "), "{s}");
        assert!(s.contains("bogus"), "{s}");
    }

    #[test]
    fn wrong_type_and_bad_values_have_position() {
        let e = Profile::from_toml_str("[namespaces]\npid = \"yes\"\n", "p").unwrap_err();
        assert!(e.to_string().starts_with("p:2:7: "), "{e}");
        let e = Profile::from_toml_str("hostname = \"a b\"", "p").unwrap_err();
        assert!(e.to_string().contains("may hold only"), "{e}");
        let e = Profile::from_toml_str("kill_grace = \"2 weeks\"", "p").unwrap_err();
        assert!(e.to_string().contains("not a duration"), "{e}");
        let e = Profile::from_toml_str("pass_fds = [1]", "p").unwrap_err();
        assert!(e.to_string().contains("3 or above"), "{e}");
        let e = Profile::from_toml_str("[env.set]\n\"A=B\" = \"x\"", "p").unwrap_err();
        assert!(e.to_string().contains("not a valid environment"), "{e}");
    }

    #[test]
    fn namespaces_off_only_explicitly() {
        let p = Profile::from_toml_str("[namespaces]\nnet = false\n", "p").unwrap();
        assert!(!p.namespaces.net);
        assert!(p.namespaces.pid && p.namespaces.ipc && p.namespaces.uts && p.namespaces.mount);
    }

    #[test]
    fn only_small_regular_files_are_read() {
        for (spec, why) in [
            ("/dev/zero", "not a regular file"),
            ("/dev/null", "not a regular file"),
            ("/", "not a regular file"),
        ] {
            let e = Profile::load(spec).unwrap_err().to_string();
            assert!(e.contains(spec) && e.contains(why), "{spec}: {e}");
            let e = Profile::from_toml_str(&format!("extends = {spec:?}"), "x.toml")
                .unwrap_err()
                .to_string();
            assert!(e.contains(spec) && e.contains(why), "extends {spec}: {e}");
        }
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("p.toml");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
        let e = Profile::from_path(&fifo).unwrap_err().to_string();
        assert!(e.contains("not a regular file"), "{e}");
        let big = dir.path().join("big.toml");
        std::fs::write(&big, "#".repeat((MAX_PROFILE_BYTES + 1) as usize)).unwrap();
        let e = Profile::from_path(&big).unwrap_err().to_string();
        assert!(e.contains("more than"), "{e}");
    }

    #[test]
    fn extends_merges_tables_appends_mounts_and_keeps_positions() {
        let base = Profile::builtin("default").unwrap();
        let p = Profile::from_toml_str(
            "extends = \"default\"\nhostname = \"h2\"\n[namespaces]\nnet = false\n\
             [[mount]]\ntype = \"tmpfs\"\ndst = \"/data\"\n",
            "x.toml",
        )
        .unwrap();
        assert_eq!(p.hostname.as_str(), "h2");
        assert!(
            !p.namespaces.net && p.namespaces.pid,
            "tables merge key by key"
        );
        assert_eq!(p.mount.len(), base.mount.len() + 1, "mounts append");
        assert_eq!(p.mount[..base.mount.len()], base.mount[..]);
        assert_eq!(p.env, base.env);
        let e =
            Profile::from_toml_str("extends = \"default\"\nhostnme = \"x\"", "x.toml").unwrap_err();
        assert!(e.to_string().starts_with("x.toml:2:1: "), "{e}");
        let e = Profile::from_toml_str("extends = \"nope\"", "x.toml").unwrap_err();
        assert!(
            e.to_string().contains("extends unknown profile 'nope'"),
            "{e}"
        );
    }

    #[test]
    fn mount_entries_are_checked() {
        let e = Profile::from_toml_str("[[mount]]\ntype = \"ro-bind\"\n", "m").unwrap_err();
        assert!(e.to_string().contains("missing field `src`"), "{e}");
        let e =
            Profile::from_toml_str("[[mount]]\ntype = \"nfs\"\ndst = \"/x\"\n", "m").unwrap_err();
        assert!(e.to_string().contains("unknown variant `nfs`"), "{e}");
        let e = Profile::from_toml_str("[[mount]]\ntype = \"tmpfs\"\ndst = \"rel\"\n", "m")
            .unwrap_err();
        assert!(e.to_string().contains("absolute"), "{e}");
        let e = Profile::from_toml_str(
            "[[mount]]\ntype = \"tmpfs\"\ndst = \"/t\"\nsize = \"9Q\"\n",
            "m",
        )
        .unwrap_err();
        assert!(e.to_string().contains("not a size"), "{e}");
        assert_eq!(parse_size("64M").unwrap(), 64 << 20);
        assert_eq!(parse_size("1G").unwrap(), 1 << 30);
        assert_eq!(parse_size("4096").unwrap(), 4096);
    }

    #[test]
    fn socket_directory_limits_default_small_and_refuse_no_limit() {
        let p = Profile::builtin("go-plugin").unwrap();
        assert!(p.sockets.enabled && p.sockets.broker);
        assert_eq!((p.sockets.size.0, p.sockets.inodes), (1 << 20, 64));
        assert!(!p.sockets.tmpdir, "TMPDIR only when a profile asks");
        let p = Profile::from_toml_str("[sockets]\nsize = \"8M\"\ninodes = 500\n", "p").unwrap();
        assert_eq!((p.sockets.size.0, p.sockets.inodes), (8 << 20, 500));
        // 0 means "no limit" to tmpfs: refused, as is anything too small to hold a socket.
        for (bad, why) in [
            ("size = \"0\"", "p:2:8: '0' is zero"),
            ("inodes = 0", "p: [sockets]"),
            ("size = \"1K\"", "p: [sockets]"),
            ("inodes = 3", "p: [sockets]"),
        ] {
            let e = Profile::from_toml_str(&format!("[sockets]\n{bad}\n"), "p").unwrap_err();
            let s = e.to_string();
            assert!(s.starts_with(why), "{bad}: {s}");
        }
        let e = Profile::from_toml_str("[sockets]\ninodes = 0\n", "p").unwrap_err();
        assert!(e.to_string().contains("at least 4K and 4 inodes"), "{e}");
    }

    #[test]
    fn hardening_tables_default_safe_and_are_checked() {
        let p = Profile::builtin("default").unwrap();
        assert_eq!(p.seccomp, crate::seccomp::SeccompConfig::default());
        assert!(p.seccomp.enabled);
        assert_eq!(p.seccomp.action, crate::seccomp::SeccompActionKind::Errno);
        assert_eq!(p.rlimits.core, Some(crate::rlimit::Limit::Value(0)));
        assert_eq!(p.landlock.mode, crate::landlock::LandlockMode::BestEffort);
        assert_eq!(Profile::default().rlimits, p.rlimits);
        let e = Profile::from_toml_str("[seccomp]\ndeny = [\"mkdir\", \"nosuchcall\"]\n", "p")
            .unwrap_err();
        let s = e.to_string();
        assert!(s.starts_with("p:2:") && s.contains("'nosuchcall'"), "{s}");
        let e = Profile::from_toml_str("[rlimits]\nnofile = \"many\"\n", "p").unwrap_err();
        assert!(e.to_string().starts_with("p:2:10: "), "{e}");
        let p = Profile::from_toml_str(
            "extends = \"default\"\n[seccomp]\naction = \"kill\"\n[landlock]\nmode = \"off\"\n",
            "p",
        )
        .unwrap();
        assert_eq!(p.seccomp.action, crate::seccomp::SeccompActionKind::Kill);
        assert_eq!(p.landlock.mode, crate::landlock::LandlockMode::Off);
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert_eq!(parse_duration("1m").unwrap(), Duration::from_secs(60));
        assert!(parse_duration("5").is_err());
        assert!(parse_duration("7200s").is_err());
        assert!(parse_duration("2h").is_err());
    }

    #[test]
    fn timeouts() {
        let t = |s: &str| Timeout::parse(s).map(|t| t.0);
        assert_eq!(t("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(t("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(t("5m").unwrap(), Duration::from_secs(300));
        assert_eq!(t("1.5h").unwrap(), Duration::from_secs(5400));
        assert_eq!(t("720h").unwrap(), MAX_TIMEOUT);
        for bad in [
            "", "30", "s", "-1s", "1e3s", "inf s", "infs", "1..2s", " 3s", "3 s", "3d",
        ] {
            let e = t(bad).unwrap_err();
            assert!(e.contains(&format!("'{bad}'")), "{bad}: {e}");
        }
        assert!(t("0s").unwrap_err().contains("more than zero"));
        assert!(t("721h").unwrap_err().contains("longer than 30 days"));
        let p = Profile::from_toml_str("[limits]\ntimeout = \"30s\"\n", "p").unwrap();
        assert_eq!(p.limits.timeout, Some(Timeout(Duration::from_secs(30))));
        // A wall-clock limit alone needs no cgroup.
        assert!(p.limits.is_empty());
        let e = Profile::from_toml_str("[limits]\ntimeout = \"soon\"\n", "p").unwrap_err();
        assert!(e.to_string().contains("'soon'"), "{e}");
        assert!(e.to_string().contains("p:2:"), "{e}");
    }

    #[test]
    fn durations_are_written_back_readably() {
        let f = |ms: u64| format_duration(Duration::from_millis(ms));
        assert_eq!(f(30_000), "30s");
        assert_eq!(f(300_000), "5m");
        assert_eq!(f(3_600_000), "1h");
        assert_eq!(f(5_400_000), "1h30m");
        assert_eq!(f(500), "500ms");
        assert_eq!(f(1500), "1.5s");
        assert_eq!(f(1250), "1250ms");
    }

    #[test]
    fn load_missing_file_and_unknown_name() {
        let e = Profile::load("/nonexistent/x.toml").unwrap_err();
        assert!(e.to_string().contains("/nonexistent/x.toml"), "{e}");
        let e = Profile::load("nosuch").unwrap_err();
        assert!(e.to_string().contains("unknown profile 'nosuch'"), "{e}");
    }
}
