//! Which cgroup hierarchies this process can use, from `/proc/self/mountinfo` and
//! `/proc/self/cgroup` (never by assuming `/sys/fs/cgroup`), and where a sandbox's cgroup
//! directories go.
//!
//! The parsers are the pure ones of [`super::mounts`] ([`parse_mountinfo`],
//! [`parse_proc_cgroup`], [`own_cgroup_dir`], [`cgroup_mode`]).

use std::path::{Path, PathBuf};

use super::mounts::{
    cgroup_mode, own_cgroup_dir, parse_mountinfo, parse_proc_cgroup, CgroupMode, CgroupMount,
    CgroupVersion, OwnCgroup,
};

use super::{CgroupError, CONTAINER, HOST_LEAF};

/// The limit controllers this module drives.
pub const CONTROLLERS: [&str; 3] = ["memory", "pids", "cpu"];

/// Where a controller can be used, as found by [`Detection`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Support {
    /// Bound to a v1 hierarchy; sandboxes go below `own_dir`.
    V1 {
        /// The hierarchy's mount point.
        mount_point: PathBuf,
        /// This process's cgroup directory in that hierarchy.
        own_dir: PathBuf,
    },
    /// Available on v2 in `base_dir/cgroup.controllers`.
    V2 {
        /// The v2 directory below which sandboxes go.
        base_dir: PathBuf,
        /// Whether it is already in `base_dir/cgroup.subtree_control` (otherwise it is enabled
        /// on the first create, see [`super::SandboxCgroup::create`]).
        enabled: bool,
    },
    /// Not usable; the text says why and what to do.
    Missing(String),
}

/// The cgroup2 hierarchy as seen by this process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct V2Base {
    /// The cgroup2 mount.
    pub mount: CgroupMount,
    /// The cgroup path below which sandboxes go: this process's own v2 cgroup, or its parent
    /// when this process was already moved into the host leaf `sandbox-runner-host`.
    pub base_path: String,
    /// `base_path`'s directory under the mount, when visible.
    pub base_dir: Option<PathBuf>,
    /// The words of `base_dir/cgroup.controllers`, when readable.
    pub controllers: Option<Vec<String>>,
    /// The words of `base_dir/cgroup.subtree_control`, when readable.
    pub subtree_control: Option<Vec<String>>,
}

/// The cgroup layout of this host as seen by this process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Detection {
    /// v2 only, hybrid, v1 only, or none.
    pub mode: CgroupMode,
    /// Every cgroup and cgroup2 mount.
    pub mounts: Vec<CgroupMount>,
    /// The lines of `/proc/self/cgroup`.
    pub own: Vec<OwnCgroup>,
    /// The cgroup2 hierarchy, when mounted and this process's cgroup is listed in it.
    pub v2: Option<V2Base>,
}

/// The cgroup directories of one v1 hierarchy for one sandbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct V1Dir {
    /// The controllers bound to the hierarchy.
    pub controllers: Vec<String>,
    /// The mount's root (4th mountinfo field).
    pub mount_root: PathBuf,
    /// `<base>/sandbox-runner`.
    pub container: PathBuf,
    /// `<base>/sandbox-runner/<id>`.
    pub leaf: PathBuf,
    /// This process's own cgroup directory in the hierarchy, when it is visible: where the
    /// spawner thread returns after it has cloned a sandbox from inside `leaf`.
    pub home: Option<PathBuf>,
}

impl V1Dir {
    /// Whether `ctrl` is bound to this hierarchy.
    pub fn has(&self, ctrl: &str) -> bool {
        self.controllers.iter().any(|c| c == ctrl)
    }
}

/// Where a sandbox's cgroup goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Plan {
    /// One directory per needed v1 hierarchy.
    V1(Vec<V1Dir>),
    /// One v2 directory.
    V2 {
        /// The delegated parent (own cgroup or configured parent).
        base: PathBuf,
        /// Whether `base` is this process's own cgroup (then its processes may be moved to
        /// the host leaf to satisfy the no-internal-processes rule).
        base_is_own: bool,
        /// `<base>/sandbox-runner`.
        container: PathBuf,
        /// `<base>/sandbox-runner/<id>`.
        leaf: PathBuf,
        /// The controllers to enable along the path.
        controllers: Vec<&'static str>,
    },
}

fn words(text: &str) -> Vec<String> {
    text.split_whitespace().map(str::to_owned).collect()
}

fn read_to_string(path: &Path) -> Result<String, CgroupError> {
    std::fs::read_to_string(path).map_err(|cause| CgroupError::Read {
        path: path.to_owned(),
        cause,
    })
}

/// The cgroup path below which sandboxes go for a process whose own cgroup is `own`: `own`,
/// or its parent when `own` is the host leaf this module moved the host into.
fn base_of(own: &str) -> String {
    let p = Path::new(own);
    if p.file_name().and_then(|n| n.to_str()) == Some(HOST_LEAF) {
        match p.parent() {
            Some(parent) => parent.to_string_lossy().into_owned(),
            None => "/".to_owned(),
        }
    } else {
        own.to_owned()
    }
}

impl Detection {
    /// Detects the layout of this process from `/proc/self/mountinfo`, `/proc/self/cgroup`
    /// and, on v2, the base cgroup's `cgroup.controllers` and `cgroup.subtree_control`.
    pub fn detect() -> Result<Detection, CgroupError> {
        let mountinfo = read_to_string(Path::new("/proc/self/mountinfo"))?;
        let cgroup = read_to_string(Path::new("/proc/self/cgroup"))?;
        Ok(Detection::from_texts(&mountinfo, &cgroup, |p| {
            std::fs::read_to_string(p).ok()
        }))
    }

    /// Builds a detection from the texts of `/proc/self/mountinfo` and `/proc/self/cgroup`;
    /// `read` reads a cgroupfs file (the v2 base's controller lists), `None` when unreadable.
    /// Pure apart from `read`, so it is unit-tested with fake hosts.
    pub fn from_texts(
        mountinfo: &str,
        proc_cgroup: &str,
        read: impl Fn(&Path) -> Option<String>,
    ) -> Detection {
        let mounts = parse_mountinfo(mountinfo);
        let own = parse_proc_cgroup(proc_cgroup);
        let v2 = own.iter().find(|o| o.is_v2()).and_then(|o| {
            let mount = mounts.iter().find(|m| {
                m.version == CgroupVersion::V2 && own_cgroup_dir(m, &base_of(&o.path)).is_some()
            })?;
            let base_path = base_of(&o.path);
            let base_dir = own_cgroup_dir(mount, &base_path);
            let list = |file: &str| {
                base_dir
                    .as_ref()
                    .and_then(|d| read(&d.join(file)))
                    .map(|t| words(&t))
            };
            Some(V2Base {
                mount: mount.clone(),
                base_dir: base_dir.clone(),
                controllers: list("cgroup.controllers"),
                subtree_control: list("cgroup.subtree_control"),
                base_path,
            })
        });
        Detection {
            mode: cgroup_mode(&mounts),
            mounts,
            own,
            v2,
        }
    }

    /// The same host with every v1 hierarchy ignored, as on a `cgroup_no_v1=all` host: for
    /// exercising the v2 path on a hybrid host (its cgroup2 mount usually has no controllers,
    /// but `cgroup.kill`, `cgroup.procs` and placement work).
    pub fn without_v1(&self) -> Detection {
        let mounts: Vec<CgroupMount> = self
            .mounts
            .iter()
            .filter(|m| m.version == CgroupVersion::V2)
            .cloned()
            .collect();
        Detection {
            mode: cgroup_mode(&mounts),
            mounts,
            own: self.own.iter().filter(|o| o.is_v2()).cloned().collect(),
            v2: self.v2.clone(),
        }
    }

    /// The v1 mount with `ctrl` bound to it.
    fn v1_mount(&self, ctrl: &str) -> Option<&CgroupMount> {
        self.mounts.iter().find(|m| m.has_controller(ctrl))
    }

    /// This process's cgroup path in the hierarchy of `mount`.
    fn own_path(&self, mount: &CgroupMount) -> Option<&str> {
        self.own
            .iter()
            .find(|o| o.matches(mount))
            .map(|o| o.path.as_str())
    }

    /// Where `ctrl` (`memory`, `pids`, `cpu`, ...) can be used.
    pub fn support(&self, ctrl: &str) -> Support {
        if let Some(m) = self.v1_mount(ctrl) {
            return match self.own_path(m).and_then(|p| own_cgroup_dir(m, p)) {
                Some(own_dir) => Support::V1 {
                    mount_point: m.mount_point.clone(),
                    own_dir,
                },
                None => Support::Missing(format!(
                    "this process's cgroup is not visible under the v1 {ctrl} mount at {}",
                    m.mount_point.display()
                )),
            };
        }
        match &self.v2 {
            None => Support::Missing(match self.mode {
                CgroupMode::None => "no cgroup filesystem is mounted".to_owned(),
                _ => format!(
                    "no v1 hierarchy has the {ctrl} controller and no usable cgroup2 mount \
                     exists; mount it (v1: `mount -t cgroup -o {ctrl} cgroup /sys/fs/cgroup/{ctrl}`)"
                ),
            }),
            Some(v2) => {
                let has = |l: &Option<Vec<String>>| {
                    l.as_ref().is_some_and(|l| l.iter().any(|c| c == ctrl))
                };
                match &v2.base_dir {
                    None => Support::Missing(format!(
                        "own v2 cgroup {} is outside the cgroup2 mount at {}",
                        v2.base_path,
                        v2.mount.mount_point.display()
                    )),
                    Some(dir) if has(&v2.controllers) => Support::V2 {
                        base_dir: dir.clone(),
                        enabled: has(&v2.subtree_control),
                    },
                    Some(dir) => Support::Missing(not_delegated_hint(ctrl, dir)),
                }
            }
        }
    }

    /// [`support`](Self::support) of each of [`CONTROLLERS`] (`memory`, `pids`, `cpu`).
    pub fn usable(&self) -> Vec<(&'static str, Support)> {
        CONTROLLERS.iter().map(|&c| (c, self.support(c))).collect()
    }

    /// Decides where the cgroup of sandbox `id` goes for limits that need the controllers
    /// `needed`, below `parent` (a cgroup path as in `/proc/self/cgroup`) or this process's
    /// own cgroup. Pure: v2 availability is checked again against the live files on create.
    pub(crate) fn plan(
        &self,
        id: &str,
        needed: &[&'static str],
        parent: Option<&Path>,
    ) -> Result<Plan, CgroupError> {
        if self.mounts.is_empty() {
            return Err(CgroupError::NoCgroupFs);
        }
        let on_v1: Vec<&str> = needed
            .iter()
            .copied()
            .filter(|c| self.v1_mount(c).is_some())
            .collect();
        let not_v1: Vec<&str> = needed
            .iter()
            .copied()
            .filter(|c| self.v1_mount(c).is_none())
            .collect();
        let any_v1 = self
            .mounts
            .iter()
            .any(|m| m.version == CgroupVersion::V1 && !m.controllers.is_empty());
        let use_v1 = if needed.is_empty() {
            // Nothing to limit: a v1 hierarchy still tracks and kills the processes.
            any_v1
        } else {
            if !on_v1.is_empty() && !not_v1.is_empty() {
                if self.v2.is_none() {
                    return Err(missing(not_v1[0], &self.mounts));
                }
                return Err(CgroupError::MixedHierarchies {
                    v1: on_v1.join(","),
                    v2: not_v1.join(","),
                });
            }
            !on_v1.is_empty()
        };
        let parent = parent.map(|p| p.to_string_lossy().into_owned());
        if use_v1 {
            self.plan_v1(id, needed, parent.as_deref()).map(Plan::V1)
        } else {
            let Some(v2) = &self.v2 else {
                return Err(match not_v1.first() {
                    Some(c) => missing(c, &self.mounts),
                    None => CgroupError::NoCgroupFs,
                });
            };
            let (path, base_is_own) = match &parent {
                Some(p) => (p.clone(), false),
                None => (v2.base_path.clone(), true),
            };
            let base = own_cgroup_dir(&v2.mount, &path).ok_or_else(|| CgroupError::NotVisible {
                cgroup: path.clone(),
                what: "cgroup2".to_owned(),
                mount: v2.mount.mount_point.clone(),
                root: v2.mount.root.clone(),
            })?;
            let container = base.join(CONTAINER);
            Ok(Plan::V2 {
                leaf: container.join(id),
                container,
                base,
                base_is_own,
                controllers: needed.to_vec(),
            })
        }
    }

    fn plan_v1(
        &self,
        id: &str,
        needed: &[&'static str],
        parent: Option<&str>,
    ) -> Result<Vec<V1Dir>, CgroupError> {
        let mut wanted: Vec<&str> = needed.to_vec();
        if needed.contains(&"cpu") {
            // CPU usage is accounted by cpuacct, often a separate hierarchy.
            wanted.push("cpuacct");
        }
        // The freezer stops a fork loop while it is being killed.
        wanted.push("freezer");
        if wanted.iter().all(|c| self.v1_mount(c).is_none()) {
            // No limit and no freezer: any one hierarchy still tracks the processes.
            if let Some(c) = ["pids", "memory", "cpuacct", "cpu"]
                .into_iter()
                .find(|c| self.v1_mount(c).is_some())
            {
                wanted.push(c);
            }
        }
        let mut dirs: Vec<V1Dir> = Vec::new();
        for ctrl in wanted {
            let Some(m) = self.v1_mount(ctrl) else {
                continue;
            };
            if dirs.iter().any(|d| d.has(ctrl)) {
                continue;
            }
            let what = m.controllers.join(",");
            let cgroup = match parent {
                Some(p) => p.to_owned(),
                None => self
                    .own_path(m)
                    .ok_or_else(|| CgroupError::ControllerMissing {
                        controller: ctrl.to_owned(),
                        detail: format!(
                            "/proc/self/cgroup has no line for the v1 hierarchy {what} mounted at {}",
                            m.mount_point.display()
                        ),
                    })?
                    .to_owned(),
            };
            let base = own_cgroup_dir(m, &cgroup).ok_or_else(|| CgroupError::NotVisible {
                cgroup: cgroup.clone(),
                what: format!("v1 {what}"),
                mount: m.mount_point.clone(),
                root: m.root.clone(),
            })?;
            let container = base.join(CONTAINER);
            let home = self.own_path(m).and_then(|p| own_cgroup_dir(m, p));
            dirs.push(V1Dir {
                controllers: m.controllers.clone(),
                mount_root: PathBuf::from(&m.root),
                leaf: container.join(id),
                container,
                home,
            });
        }
        if dirs.is_empty() {
            return Err(CgroupError::NoCgroupFs);
        }
        Ok(dirs)
    }
}

/// How to get a v2 controller delegated to `dir`.
pub(crate) fn not_delegated_hint(ctrl: &str, dir: &Path) -> String {
    format!(
        "{ctrl} is not in {}/cgroup.controllers: the parent does not delegate it; enable it in \
         every ancestor (`echo +{ctrl} > <ancestor>/cgroup.subtree_control`) or run under a \
         systemd unit with `Delegate=yes` (e.g. `systemd-run -p Delegate=yes ...`)",
        dir.display()
    )
}

/// The error for a controller found on no hierarchy.
fn missing(ctrl: &str, mounts: &[CgroupMount]) -> CgroupError {
    let v1: Vec<String> = mounts
        .iter()
        .filter(|m| m.version == CgroupVersion::V1 && !m.controllers.is_empty())
        .map(|m| format!("{} ({})", m.mount_point.display(), m.controllers.join(",")))
        .collect();
    CgroupError::ControllerMissing {
        controller: ctrl.to_owned(),
        detail: format!(
            "no mounted v1 hierarchy has it (mounted: {}) and no cgroup2 hierarchy is usable; \
             mount it (`mount -t cgroup -o {ctrl} cgroup /sys/fs/cgroup/{ctrl}`) or boot with \
             cgroup v2",
            if v1.is_empty() {
                "none".to_owned()
            } else {
                v1.join(", ")
            }
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// This machine: cpu and cpuacct separate, memory in a sub-cgroup, cgroup2 unused.
    const HYBRID_MOUNTINFO: &str = "\
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
33 31 0:30 / /sys/fs/cgroup/cpuacct rw,relatime - cgroup cgroup rw,cpuacct
35 31 0:32 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
37 31 0:34 / /sys/fs/cgroup/freezer rw,relatime - cgroup cgroup rw,freezer
39 31 0:36 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";
    const HYBRID_CGROUP: &str = "\
9:name=systemd:/
8:pids:/
6:freezer:/
4:memory:/process_api/abc
2:cpuacct:/
1:cpu:/
0::/
";
    const V2_MOUNTINFO: &str = "\
30 26 0:27 / /sys/fs/cgroup rw,nosuid,nodev,noexec,relatime shared:4 - cgroup2 cgroup2 rw,nsdelegate,memory_recursiveprot
";

    fn no_files(_: &Path) -> Option<String> {
        None
    }

    fn v2_host(own: &str, controllers: &str, subtree: &str) -> Detection {
        let own_line = format!("0::{own}\n");
        let c = controllers.to_owned();
        let s = subtree.to_owned();
        Detection::from_texts(V2_MOUNTINFO, &own_line, move |p| {
            match p.file_name()?.to_str()? {
                "cgroup.controllers" => Some(c.clone()),
                "cgroup.subtree_control" => Some(s.clone()),
                _ => None,
            }
        })
    }

    #[test]
    fn hybrid_plan_uses_only_needed_hierarchies_below_own_cgroup() {
        let d = Detection::from_texts(HYBRID_MOUNTINFO, HYBRID_CGROUP, no_files);
        assert!(matches!(d.mode, CgroupMode::Hybrid { .. }));
        assert_eq!(
            d.support("memory"),
            Support::V1 {
                mount_point: "/sys/fs/cgroup/memory".into(),
                own_dir: "/sys/fs/cgroup/memory/process_api/abc".into()
            }
        );
        let Plan::V1(dirs) = d.plan("sb1", &["memory", "pids"], None).unwrap() else {
            panic!("expected v1")
        };
        let leaves: Vec<_> = dirs.iter().map(|d| d.leaf.clone()).collect();
        assert_eq!(
            leaves,
            vec![
                PathBuf::from("/sys/fs/cgroup/memory/process_api/abc/sandbox-runner/sb1"),
                PathBuf::from("/sys/fs/cgroup/pids/sandbox-runner/sb1"),
                PathBuf::from("/sys/fs/cgroup/freezer/sandbox-runner/sb1"),
            ]
        );
        assert_eq!(
            dirs[0].container,
            PathBuf::from("/sys/fs/cgroup/memory/process_api/abc/sandbox-runner")
        );
        // cpu brings cpuacct (separate hierarchy here) for usage accounting.
        let Plan::V1(dirs) = d.plan("x", &["cpu"], None).unwrap() else {
            panic!()
        };
        let ctrls: Vec<_> = dirs.iter().map(|d| d.controllers.join(",")).collect();
        assert_eq!(ctrls, vec!["cpu", "cpuacct", "freezer"]);
        // No limits: just the freezer to track and kill.
        let Plan::V1(dirs) = d.plan("x", &[], None).unwrap() else {
            panic!()
        };
        assert_eq!(dirs.len(), 1);
        assert!(dirs[0].has("freezer"));
        // A configured parent is used in every hierarchy.
        let Plan::V1(dirs) = d
            .plan("x", &["pids"], Some(Path::new("/delegated/box")))
            .unwrap()
        else {
            panic!()
        };
        assert_eq!(
            dirs[0].leaf,
            PathBuf::from("/sys/fs/cgroup/pids/delegated/box/sandbox-runner/x")
        );
    }

    #[test]
    fn missing_v1_controller_is_named() {
        // pids not mounted on v1 and the v2 mount has no such controller.
        let mi: String = HYBRID_MOUNTINFO
            .lines()
            .filter(|l| !l.contains("rw,pids"))
            .map(|l| format!("{l}\n"))
            .collect();
        let d = Detection::from_texts(&mi, HYBRID_CGROUP, |p| {
            (p.file_name()? == "cgroup.controllers").then(String::new)
        });
        assert!(matches!(d.support("pids"), Support::Missing(_)));
        let err = d.plan("x", &["memory", "pids"], None).unwrap_err();
        assert!(matches!(err, CgroupError::MixedHierarchies { .. }), "{err}");
        // v1-only host without pids.
        let mi: String = mi
            .lines()
            .filter(|l| !l.contains("cgroup2"))
            .map(|l| format!("{l}\n"))
            .collect();
        let d = Detection::from_texts(&mi, HYBRID_CGROUP, no_files);
        assert_eq!(d.mode, CgroupMode::Legacy);
        let err = d.plan("x", &["memory", "pids"], None).unwrap_err();
        let text = err.to_string();
        assert!(text.contains("controller pids is missing"), "{text}");
        assert!(text.contains("/sys/fs/cgroup/memory (memory)"), "{text}");
        let err = d.plan("x", &["pids"], None).unwrap_err();
        assert!(err.to_string().contains("pids"), "{err}");
    }

    #[test]
    fn no_cgroupfs() {
        let d = Detection::from_texts("", "", no_files);
        assert_eq!(d.mode, CgroupMode::None);
        assert!(matches!(
            d.plan("x", &["memory"], None),
            Err(CgroupError::NoCgroupFs)
        ));
    }

    #[test]
    fn v2_paths_and_support() {
        let d = v2_host("/user.slice/app.scope", "cpu memory pids io", "memory");
        let v2 = d.v2.as_ref().unwrap();
        assert_eq!(v2.base_path, "/user.slice/app.scope");
        assert_eq!(
            v2.base_dir,
            Some(PathBuf::from("/sys/fs/cgroup/user.slice/app.scope"))
        );
        assert_eq!(
            d.support("memory"),
            Support::V2 {
                base_dir: "/sys/fs/cgroup/user.slice/app.scope".into(),
                enabled: true
            }
        );
        assert!(matches!(
            d.support("pids"),
            Support::V2 { enabled: false, .. }
        ));
        let plan = d.plan("sb", &["memory", "pids", "cpu"], None).unwrap();
        assert_eq!(
            plan,
            Plan::V2 {
                base: "/sys/fs/cgroup/user.slice/app.scope".into(),
                base_is_own: true,
                container: "/sys/fs/cgroup/user.slice/app.scope/sandbox-runner".into(),
                leaf: "/sys/fs/cgroup/user.slice/app.scope/sandbox-runner/sb".into(),
                controllers: vec!["memory", "pids", "cpu"],
            }
        );
    }

    #[test]
    fn v2_host_leaf_is_skipped() {
        // After the host was moved into its leaf, sandboxes still go next to it.
        let d = v2_host("/svc/sandbox-runner-host", "memory pids", "memory pids");
        let Plan::V2 { base, leaf, .. } = d.plan("a", &["memory"], None).unwrap() else {
            panic!()
        };
        assert_eq!(base, PathBuf::from("/sys/fs/cgroup/svc"));
        assert_eq!(leaf, PathBuf::from("/sys/fs/cgroup/svc/sandbox-runner/a"));
        // At the root: the guest booted with cgroup_no_v1=all.
        let d = v2_host("/sandbox-runner-host", "", "");
        assert_eq!(d.v2.as_ref().unwrap().base_path, "/");
        let Plan::V2 { leaf, .. } = d.plan("a", &[], None).unwrap() else {
            panic!()
        };
        assert_eq!(leaf, PathBuf::from("/sys/fs/cgroup/sandbox-runner/a"));
    }

    #[test]
    fn v2_missing_controller_says_how_to_delegate() {
        let d = v2_host("/user.slice/app.scope", "memory", "");
        let Support::Missing(why) = d.support("pids") else {
            panic!()
        };
        assert!(why.contains("Delegate=yes"), "{why}");
        assert!(
            why.contains("/sys/fs/cgroup/user.slice/app.scope/cgroup.controllers"),
            "{why}"
        );
    }

    #[test]
    fn configured_parent_v2() {
        let d = v2_host("/", "memory pids cpu", "");
        let Plan::V2 {
            leaf, base_is_own, ..
        } = d
            .plan("z", &["pids"], Some(Path::new("/plugins.slice")))
            .unwrap()
        else {
            panic!()
        };
        assert!(!base_is_own);
        assert_eq!(
            leaf,
            PathBuf::from("/sys/fs/cgroup/plugins.slice/sandbox-runner/z")
        );
    }

    #[test]
    fn without_v1_on_hybrid() {
        let d = Detection::from_texts(HYBRID_MOUNTINFO, HYBRID_CGROUP, no_files).without_v1();
        assert_eq!(
            d.mode,
            CgroupMode::Unified {
                path: "/sys/fs/cgroup/unified".into()
            }
        );
        let Plan::V2 { leaf, .. } = d.plan("u", &[], None).unwrap() else {
            panic!()
        };
        assert_eq!(
            leaf,
            PathBuf::from("/sys/fs/cgroup/unified/sandbox-runner/u")
        );
        let Support::Missing(_) = d.support("memory") else {
            panic!()
        };
    }
}
