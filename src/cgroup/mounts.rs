//! Where the cgroup hierarchies are and where this process sits in them: pure parsers over
//! the texts of `/proc/self/mountinfo` and `/proc/self/cgroup` (never assuming
//! `/sys/fs/cgroup`), shared by the cgroup module and `check`.

use std::fmt;
use std::path::{Path, PathBuf};

/// Super options of a v1 cgroup mount that are not controller names.
const V1_NON_CONTROLLER_OPTIONS: [&str; 8] = [
    "rw",
    "ro",
    "xattr",
    "clone_children",
    "noprefix",
    "cpuset_v2_mode",
    "none",
    "all",
];

/// The version of a cgroup filesystem mount.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CgroupVersion {
    /// A legacy `cgroup` (v1) hierarchy.
    V1,
    /// The unified `cgroup2` hierarchy.
    V2,
}

/// One cgroup (v1) or cgroup2 mount, from a line of `/proc/self/mountinfo`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupMount {
    /// Whether this is a v1 (`cgroup`) or v2 (`cgroup2`) mount.
    pub version: CgroupVersion,
    /// Where it is mounted (octal escapes such as `\040` already decoded).
    pub mount_point: PathBuf,
    /// The cgroup shown at the mount point (4th mountinfo field), usually `/`; a subpath
    /// when only part of the hierarchy is mounted (containers, bind mounts).
    pub root: String,
    /// For v1, the controllers bound to this hierarchy, from the super options
    /// (e.g. `["cpu", "cpuacct"]`); empty for v2 and for named-only v1 hierarchies.
    pub controllers: Vec<String>,
    /// For v1, the `name=` of a named hierarchy (e.g. `systemd`).
    pub name: Option<String>,
    /// All super options (last mountinfo field), e.g. `rw,nsdelegate`.
    pub super_options: Vec<String>,
}

impl CgroupMount {
    /// Whether this mount is the v1 hierarchy with `controller` bound to it.
    pub fn has_controller(&self, controller: &str) -> bool {
        self.version == CgroupVersion::V1 && self.controllers.iter().any(|c| c == controller)
    }
}

/// One line of `/proc/self/cgroup`: this process's cgroup in one hierarchy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnCgroup {
    /// The hierarchy ID (first field); 0 for the v2 unified hierarchy.
    pub hierarchy_id: u32,
    /// The v1 controllers of the hierarchy (second field, without `name=` entries);
    /// empty for v2.
    pub controllers: Vec<String>,
    /// The `name=` of a named v1 hierarchy (e.g. `systemd`).
    pub name: Option<String>,
    /// The cgroup path relative to the hierarchy root (as seen from this cgroup namespace).
    pub path: String,
}

impl OwnCgroup {
    /// Whether this line is the v2 unified hierarchy (`0::/path`).
    pub fn is_v2(&self) -> bool {
        self.hierarchy_id == 0 && self.controllers.is_empty() && self.name.is_none()
    }

    /// Whether `mount` is a mount of this line's hierarchy.
    pub fn matches(&self, mount: &CgroupMount) -> bool {
        match mount.version {
            CgroupVersion::V2 => self.is_v2(),
            CgroupVersion::V1 => {
                if self.is_v2() {
                    return false;
                }
                let mut a = self.controllers.clone();
                let mut b = mount.controllers.clone();
                a.sort();
                b.sort();
                a == b && self.name == mount.name
            }
        }
    }
}

/// How the cgroup hierarchies of the host are arranged.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CgroupMode {
    /// Only cgroup2 is mounted (v1 hierarchies, if any, carry no controllers).
    Unified {
        /// The cgroup2 mount point.
        path: PathBuf,
    },
    /// v1 controller hierarchies plus a cgroup2 mount.
    Hybrid {
        /// The cgroup2 mount point.
        unified: PathBuf,
    },
    /// Only v1 hierarchies.
    Legacy,
    /// No cgroup filesystem is mounted.
    None,
}

impl fmt::Display for CgroupMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CgroupMode::Unified { path } => write!(f, "v2 (unified) at {}", path.display()),
            CgroupMode::Hybrid { unified } => write!(
                f,
                "hybrid (v1 controllers + cgroup2 at {})",
                unified.display()
            ),
            CgroupMode::Legacy => write!(f, "v1"),
            CgroupMode::None => write!(f, "none (no cgroup filesystem mounted)"),
        }
    }
}

/// Decodes the octal escapes (`\040` space, `\011` tab, `\012` newline, `\134` backslash)
/// that the kernel uses in mountinfo fields.
pub fn unescape_mountinfo(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 3 < bytes.len() {
            let digits = &bytes[i + 1..i + 4];
            if digits.iter().all(|d| (b'0'..=b'7').contains(d)) {
                let value = digits
                    .iter()
                    .fold(0u32, |acc, d| acc * 8 + u32::from(d - b'0'));
                if let Ok(byte) = u8::try_from(value) {
                    out.push(byte);
                    i += 4;
                    continue;
                }
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parses the text of `/proc/self/mountinfo` and returns every `cgroup` and `cgroup2` mount,
/// in file order. Malformed lines are skipped.
pub fn parse_mountinfo(text: &str) -> Vec<CgroupMount> {
    text.lines().filter_map(parse_mountinfo_line).collect()
}

/// Parses one mountinfo line; `None` when it is not a cgroup mount or is malformed.
fn parse_mountinfo_line(line: &str) -> Option<CgroupMount> {
    // id parent major:minor root mount_point mount_options [optional...] - fstype source super
    let fields: Vec<&str> = line.split_whitespace().collect();
    let sep = fields.iter().position(|f| *f == "-")?;
    if sep < 6 {
        return None;
    }
    let fstype = *fields.get(sep + 1)?;
    let version = match fstype {
        "cgroup" => CgroupVersion::V1,
        "cgroup2" => CgroupVersion::V2,
        _ => return None,
    };
    let super_options: Vec<String> = fields
        .get(sep + 3)
        .map(|s| s.split(',').map(str::to_owned).collect())
        .unwrap_or_default();
    let mut controllers = Vec::new();
    let mut name = None;
    if version == CgroupVersion::V1 {
        for opt in &super_options {
            if let Some(n) = opt.strip_prefix("name=") {
                name = Some(n.to_owned());
            } else if !opt.contains('=') && !V1_NON_CONTROLLER_OPTIONS.contains(&opt.as_str()) {
                controllers.push(opt.clone());
            }
        }
    }
    Some(CgroupMount {
        version,
        mount_point: PathBuf::from(unescape_mountinfo(fields[4])),
        root: unescape_mountinfo(fields[3]),
        controllers,
        name,
        super_options,
    })
}

/// Parses the text of `/proc/self/cgroup` (`N:ctrl1,ctrl2:/path` for v1,
/// `N:name=foo:/path` for named v1 hierarchies, `0::/path` for v2). Malformed lines are
/// skipped.
pub fn parse_proc_cgroup(text: &str) -> Vec<OwnCgroup> {
    text.lines()
        .filter_map(|line| {
            let mut parts = line.splitn(3, ':');
            let hierarchy_id = parts.next()?.trim().parse().ok()?;
            let list = parts.next()?;
            let path = parts.next()?.to_owned();
            let mut controllers = Vec::new();
            let mut name = None;
            for item in list.split(',').filter(|s| !s.is_empty()) {
                match item.strip_prefix("name=") {
                    Some(n) => name = Some(n.to_owned()),
                    None => controllers.push(item.to_owned()),
                }
            }
            Some(OwnCgroup {
                hierarchy_id,
                controllers,
                name,
                path,
            })
        })
        .collect()
}

/// The directory of the cgroup `own_path` under `mount`: the mount point joined with
/// `own_path` stripped of the mount's root. `None` when `own_path` is not inside the part of
/// the hierarchy that is mounted there.
pub fn own_cgroup_dir(mount: &CgroupMount, own_path: &str) -> Option<PathBuf> {
    let rel = Path::new(own_path).strip_prefix(&mount.root).ok()?;
    if rel.as_os_str().is_empty() {
        Some(mount.mount_point.clone())
    } else {
        Some(mount.mount_point.join(rel))
    }
}

/// The first mount of `own`'s hierarchy under which `own`'s cgroup is visible, with the
/// cgroup's directory there.
pub fn find_own_dir<'a>(
    mounts: &'a [CgroupMount],
    own: &OwnCgroup,
) -> Option<(&'a CgroupMount, PathBuf)> {
    mounts
        .iter()
        .filter(|m| own.matches(m))
        .find_map(|m| own_cgroup_dir(m, &own.path).map(|d| (m, d)))
}

/// The cgroup mode of a host with these mounts.
pub fn cgroup_mode(mounts: &[CgroupMount]) -> CgroupMode {
    let v2 = mounts.iter().find(|m| m.version == CgroupVersion::V2);
    let v1_controllers = mounts
        .iter()
        .any(|m| m.version == CgroupVersion::V1 && !m.controllers.is_empty());
    match (v2, v1_controllers) {
        (Some(m), true) => CgroupMode::Hybrid {
            unified: m.mount_point.clone(),
        },
        (Some(m), false) => CgroupMode::Unified {
            path: m.mount_point.clone(),
        },
        (None, true) => CgroupMode::Legacy,
        (None, false) => {
            if mounts.is_empty() {
                CgroupMode::None
            } else {
                CgroupMode::Legacy
            }
        }
    }
}
