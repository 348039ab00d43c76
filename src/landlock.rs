//! Landlock: a second, independent layer over the private root's mounts.
//!
//! Parent side ([`LandlockPlan::build`]): detect the kernel's Landlock ABI, decide from the
//! profile's `[landlock] mode` whether to go on without it, and derive one rule per mount of
//! the private root, with the rights that mount gives: read-only binds and mirrors read and
//! execute; read-write binds and tmpfs read, write and create (no execute when `noexec`);
//! `/proc` read only (stricter than its mount: no writes to `/proc/sys`,
//! `/proc/sysrq-trigger` or `/proc/PID/*`); `/` itself may be listed. The rights come from
//! the `landlock` crate's masks for the detected ABI.
//!
//! Child side (`child::landlock::enforce`, async-signal-safe, in the plugin after `pivot_root`, where the
//! rule paths exist): `landlock_create_ruleset`, then for each rule `open(O_PATH)`,
//! `landlock_add_rule(LANDLOCK_RULE_PATH_BENEATH)`, `close`, then `landlock_restrict_self`.
//! The plugin's stdio (when a regular file or a device) gets a read/write rule of its own,
//! so reopening `/dev/stdout` keeps working.
//!
//! What it adds to the mounts: a mount that is writable but listed in `read_only` becomes
//! read-only for the plugin; nothing outside the rules (a file reached through a descriptor
//! path from outside the sandbox) can be opened; devices cannot be created anywhere.

use std::ffi::CString;
use std::path::{Path, PathBuf};

use landlock::{Access, AccessFs, ABI};
use serde::Deserialize;

pub(crate) use crate::child::landlock::{LandlockPlan, Rule};
use crate::child::mnt::{MountOp, OpKind};
use crate::profile::AbsPath;

/// When the sandbox uses Landlock.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum LandlockMode {
    /// Never.
    Off,
    /// When the kernel has it; otherwise a warning on stderr, and the sandbox starts without.
    #[default]
    BestEffort,
    /// Always: on a kernel without Landlock nothing starts.
    Required,
}

/// The `[landlock]` table of a profile.
#[derive(Clone, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct LandlockConfig {
    /// `"off"`, `"best-effort"` (default) or `"required"`.
    #[serde(default)]
    pub mode: LandlockMode,
    /// Sandbox paths of writable mounts that the plugin may only read (and execute).
    #[serde(default)]
    pub read_only: Vec<AbsPath>,
}

/// The kernel's Landlock ABI version, 0 when it has none (not built in, or disabled at
/// boot), from `landlock_create_ruleset(NULL, 0, LANDLOCK_CREATE_RULESET_VERSION)`.
pub fn kernel_abi() -> i32 {
    // SAFETY: a query with no pointer argument.
    let r = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<libc::c_void>(),
            0usize,
            1u32, // LANDLOCK_CREATE_RULESET_VERSION
        )
    };
    if r < 0 {
        0
    } else {
        r as i32
    }
}

/// What to do with Landlock given the profile's `mode`, the kernel's `abi` (0: none) and
/// whether there is a private root to derive rules from.
#[derive(Debug, PartialEq, Eq)]
pub enum Decision {
    /// Build and enforce the ruleset for this ABI.
    Enforce(i32),
    /// Go on without Landlock, with this warning for stderr (`None`: silently, as asked).
    Skip(Option<String>),
}

/// Decides from the facts; `Err` with the reason when the profile requires Landlock and
/// cannot have it. Never a silent downgrade of `required`.
pub fn decide(mode: LandlockMode, abi: i32, private_root: bool) -> Result<Decision, String> {
    match mode {
        LandlockMode::Off => Ok(Decision::Skip(None)),
        _ if abi < 1 => {
            let why = "this kernel has no Landlock (not built in, or not in the lsm= boot \
                       parameter; `sandbox-run check` tells which)";
            if mode == LandlockMode::Required {
                Err(format!(
                    "[landlock] mode = \"required\" but {why}; nothing was started"
                ))
            } else {
                Ok(Decision::Skip(Some(format!(
                    "warning: {why}: the sandbox runs without its Landlock layer \
                     (set `[landlock] mode = \"required\"` to refuse instead)"
                ))))
            }
        }
        _ if !private_root => {
            if mode == LandlockMode::Required {
                Err(
                    "[landlock] mode = \"required\" needs the private root (its rules \
                     follow the mounts), but `private_root = false`"
                        .into(),
                )
            } else {
                Ok(Decision::Skip(None))
            }
        }
        _ => Ok(Decision::Enforce(abi)),
    }
}

const MOUNT_ATTR_RDONLY: u64 = 0x1;
const MOUNT_ATTR_NOEXEC: u64 = 0x8;

impl LandlockPlan {
    /// The rules for the private root built from `ops`, for the kernel ABI `abi` (>= 1).
    pub(crate) fn build(cfg: &LandlockConfig, abi: i32, ops: &[MountOp]) -> Result<Self, String> {
        let abi = ABI::from(abi);
        let all = AccessFs::from_all(abi);
        let read = AccessFs::from_read(abi); // execute, read file, read dir
        let exec = AccessFs::Execute;
        let write = AccessFs::from_write(abi) & !(AccessFs::MakeChar | AccessFs::MakeBlock); // never a device node
        let file_rights = AccessFs::from_file(abi);
        let mut rules: Vec<(PathBuf, u64)> = vec![(PathBuf::from("/"), AccessFs::ReadDir as u64)];
        for op in ops {
            let access = match op.kind {
                OpKind::Bind { attrs } => {
                    let mut a = read;
                    if attrs & MOUNT_ATTR_RDONLY == 0 {
                        a |= write;
                    }
                    if attrs & MOUNT_ATTR_NOEXEC != 0 {
                        a &= !exec;
                    }
                    a
                }
                OpKind::Tmpfs { flags } => {
                    let mut a = read | write;
                    if flags & libc::MS_NOEXEC != 0 {
                        a &= !exec;
                    }
                    a
                }
                OpKind::Devpts => (read | write) & !exec,
                OpKind::Proc => AccessFs::ReadFile | AccessFs::ReadDir,
                // Read-only masks inside /proc, which its own rule already covers.
                OpKind::Mkdir
                | OpKind::Touch
                | OpKind::Symlink
                | OpKind::ReadOnly
                | OpKind::BindIfExists { .. }
                | OpKind::MaskSource
                | OpKind::MaskDir => continue,
            };
            let path = PathBuf::from(std::ffi::OsStr::new(
                std::str::from_utf8(op.dst.as_bytes())
                    .map_err(|_| format!("{} is not UTF-8", op.dst.to_string_lossy()))?,
            ));
            rules.push((path, access.bits()));
        }
        let read_bits = read.bits();
        for ro in &cfg.read_only {
            let ro = Path::new(ro.as_str());
            let mut hit = false;
            for (p, a) in rules.iter_mut() {
                if p.starts_with(ro) {
                    *a &= read_bits;
                    hit = true;
                }
            }
            if !hit {
                return Err(format!(
                    "landlock.read_only: {} is not a mount of the private root",
                    ro.display()
                ));
            }
            // Rules only add rights: a writable mount above would still grant writes here.
            if let Some((above, _)) = rules
                .iter()
                .find(|(p, a)| ro.starts_with(p) && p != ro && a & !read_bits != 0)
            {
                return Err(format!(
                    "landlock.read_only: {} lies inside {}, which is writable; Landlock \
                     rules only add rights, so mount {} on its own (or list {})",
                    ro.display(),
                    above.display(),
                    ro.display(),
                    above.display()
                ));
            }
        }
        let rules = rules
            .into_iter()
            .map(|(p, access)| {
                CString::new(p.as_os_str().as_encoded_bytes())
                    .map(|path| Rule { path, access })
                    .map_err(|_| format!("{} contains NUL", p.display()))
            })
            .collect::<Result<_, _>>()?;
        Ok(LandlockPlan {
            handled: all.bits(),
            rules,
            file_rights: file_rights.bits(),
            stdio_rights: ((AccessFs::ReadFile | AccessFs::WriteFile | AccessFs::Truncate) & all)
                .bits(),
        })
    }

    /// The path of rule `i` (for errors).
    pub(crate) fn rule_path(&self, i: u32) -> String {
        self.rules
            .get(i as usize)
            .map(|r| r.path.to_string_lossy().into_owned())
            .unwrap_or_else(|| "ruleset".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn required_without_landlock_is_an_error_never_a_downgrade() {
        let e = decide(LandlockMode::Required, 0, true).unwrap_err();
        assert!(e.contains("required") && e.contains("no Landlock"), "{e}");
        assert!(decide(LandlockMode::Required, 3, false).is_err());
        match decide(LandlockMode::BestEffort, 0, true).unwrap() {
            Decision::Skip(Some(w)) => assert!(w.contains("without its Landlock layer"), "{w}"),
            d => panic!("{d:?}"),
        }
        assert_eq!(
            decide(LandlockMode::Off, 7, true).unwrap(),
            Decision::Skip(None)
        );
        assert_eq!(
            decide(LandlockMode::BestEffort, 7, true).unwrap(),
            Decision::Enforce(7)
        );
        assert_eq!(
            decide(LandlockMode::Required, 1, true).unwrap(),
            Decision::Enforce(1)
        );
    }

    fn op(kind: OpKind, dst: &str) -> MountOp {
        MountOp {
            kind,
            src: c"".into(),
            dst: CString::new(dst).unwrap(),
            data: c"".into(),
            mode: 0,
            entry: 0,
        }
    }

    #[test]
    fn rules_follow_the_mounts() {
        let ops = [
            op(OpKind::Mkdir, "/usr"),
            op(
                OpKind::Bind {
                    attrs: 0x1 | 0x2 | 0x4,
                },
                "/usr",
            ),
            op(OpKind::Bind { attrs: 0x2 | 0x4 }, "/data"),
            op(
                OpKind::Tmpfs {
                    flags: libc::MS_NOEXEC,
                },
                "/tmp",
            ),
            op(OpKind::Proc, "/proc"),
        ];
        let p = LandlockPlan::build(&LandlockConfig::default(), 3, &ops).unwrap();
        let get = |path: &str| {
            p.rules
                .iter()
                .find(|r| r.path.to_str().unwrap() == path)
                .map(|r| r.access)
                .unwrap()
        };
        let b = |a: AccessFs| a as u64;
        assert_eq!(get("/"), b(AccessFs::ReadDir));
        assert_eq!(
            get("/usr"),
            b(AccessFs::Execute) | b(AccessFs::ReadFile) | b(AccessFs::ReadDir)
        );
        let data = get("/data");
        assert!(data & b(AccessFs::WriteFile) != 0 && data & b(AccessFs::MakeReg) != 0);
        assert!(data & b(AccessFs::MakeChar) == 0 && data & b(AccessFs::MakeBlock) == 0);
        assert!(data & b(AccessFs::Truncate) != 0, "ABI 3 has truncate");
        let tmp = get("/tmp");
        assert!(tmp & b(AccessFs::WriteFile) != 0 && tmp & b(AccessFs::Execute) == 0);
        assert_eq!(get("/proc"), b(AccessFs::ReadFile) | b(AccessFs::ReadDir));
        assert_eq!(p.handled, AccessFs::from_all(ABI::V3).bits());
        assert_eq!(p.rules.len(), 5, "no rule for a plain directory");

        let cfg: LandlockConfig = toml::from_str("read_only = [\"/data\"]").unwrap();
        let p = LandlockPlan::build(&cfg, 3, &ops).unwrap();
        let data = p
            .rules
            .iter()
            .find(|r| r.path.to_str() == Ok("/data"))
            .unwrap();
        assert_eq!(data.access & b(AccessFs::WriteFile), 0);
        let cfg: LandlockConfig = toml::from_str("read_only = [\"/tmp/x\"]").unwrap();
        let e = LandlockPlan::build(&cfg, 3, &ops).err().unwrap();
        assert!(e.contains("not a mount"), "{e}");
        let ops2 = [
            op(OpKind::Tmpfs { flags: 0 }, "/run"),
            op(OpKind::Bind { attrs: 0 }, "/run/x"),
        ];
        let cfg: LandlockConfig = toml::from_str("read_only = [\"/run/x\"]").unwrap();
        let e = LandlockPlan::build(&cfg, 3, &ops2).err().unwrap();
        assert!(e.contains("lies inside /run"), "{e}");
        let e = toml::from_str::<LandlockConfig>("mode = \"maybe\"").unwrap_err();
        assert!(e.to_string().contains("unknown variant"), "{e}");
    }
}
