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
pub const BUILTIN: &[(&str, &str)] =
    &[("default", include_str!("../sandbox-profiles/default.toml"))];

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
        }
    }
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
}

impl Default for Namespaces {
    fn default() -> Self {
        Namespaces {
            mount: true,
            pid: true,
            net: true,
            ipc: true,
            uts: true,
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

/// Parses `"2s"`, `"1.5s"`, `"500ms"` (at most one hour).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let bad = || format!("'{s}' is not a duration like \"2s\" or \"500ms\"");
    let (num, scale) = if let Some(n) = s.strip_suffix("ms") {
        (n, 0.001)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1.0)
    } else {
        return Err(bad());
    };
    let v: f64 = num.trim().parse().map_err(|_| bad())?;
    if !v.is_finite() || v < 0.0 {
        return Err(bad());
    }
    let secs = v * scale;
    if secs > 3600.0 {
        return Err(format!("'{s}' is longer than one hour"));
    }
    Ok(Duration::from_secs_f64(secs))
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
pub const MAX_PASS_FDS: usize = 16;

impl Profile {
    /// Parses a profile from TOML text; `origin` names it in errors (a path or
    /// `<builtin NAME>`).
    pub fn from_toml_str(text: &str, origin: &str) -> Result<Profile, ProfileError> {
        let p: Profile = toml::from_str(text).map_err(|e| {
            let (line, column) = e.span().map(|r| line_col(text, r.start)).unwrap_or((1, 1));
            ProfileError::Parse {
                origin: origin.to_string(),
                line,
                column,
                message: e.message().trim().to_string(),
            }
        })?;
        if p.pass_fds.len() > MAX_PASS_FDS {
            return Err(ProfileError::Invalid {
                origin: origin.to_string(),
                message: format!("pass_fds holds more than {MAX_PASS_FDS} entries"),
            });
        }
        Ok(p)
    }

    /// Loads a profile file.
    pub fn from_path(path: &Path) -> Result<Profile, ProfileError> {
        let text = std::fs::read_to_string(path).map_err(|source| ProfileError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_toml_str(&text, &path.display().to_string())
    }

    /// Loads an embedded profile by name.
    pub fn builtin(name: &str) -> Result<Profile, ProfileError> {
        match BUILTIN.iter().find(|(n, _)| *n == name) {
            Some((n, text)) => Self::from_toml_str(text, &format!("<builtin {n}>")),
            None => Err(ProfileError::UnknownName {
                name: name.to_string(),
                known: BUILTIN
                    .iter()
                    .map(|(n, _)| *n)
                    .collect::<Vec<_>>()
                    .join(", "),
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
    fn durations() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert!(parse_duration("5").is_err());
        assert!(parse_duration("7200s").is_err());
    }

    #[test]
    fn load_missing_file_and_unknown_name() {
        let e = Profile::load("/nonexistent/x.toml").unwrap_err();
        assert!(e.to_string().contains("/nonexistent/x.toml"), "{e}");
        let e = Profile::load("nosuch").unwrap_err();
        assert!(e.to_string().contains("unknown profile 'nosuch'"), "{e}");
    }
}
