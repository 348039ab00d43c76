//! Mount namespace: the private root.
//!
//! Parent side ([`RootBuilder`]): the profile's `[[mount]]` entries become a flat list of
//! [`MountOp`]s with every path already a `CString`. Child side (`child::mnt::setup_root`, in the init,
//! async-signal-safe): make propagation private, mount a tmpfs on the staging directory,
//! `pivot_root` into it with the host's root kept at `/oldroot`, run the ops (bind sources
//! are read through `/oldroot`, so they are resolved in the host's view even where the new
//! root covers them), detach `/oldroot`, and make the root tmpfs itself read-only.

use nix::errno::Errno;
use std::collections::BTreeSet;
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use crate::child::mnt::{
    MountOp, OpKind, MOUNT_ATTR_NODEV, MOUNT_ATTR_NOEXEC, MOUNT_ATTR_NOSUID, MOUNT_ATTR_RDONLY,
};
use crate::error::Error;
use crate::profile::MountSpec;

/// Where the host's root stays reachable while the private root is assembled.
const OLD_ROOT: &str = "/oldroot";
/// The host directory the private root's tmpfs is first mounted on (in our namespace only).
const STAGING: &str = "/tmp";

/// Builds the ops of a private root from profile entries.
pub(crate) struct RootBuilder {
    pub ops: Vec<MountOp>,
    /// A label per entry: what it mounts where (for errors).
    pub labels: Vec<String>,
    made: BTreeSet<PathBuf>,
    /// (host source, sandbox destination) of every bind, to find the program.
    binds: Vec<(PathBuf, PathBuf)>,
    /// Where the ops so far mount something or make a symbolic link: below these a path is
    /// not in the root tmpfs.
    covered: Vec<PathBuf>,
}

fn cstr(p: &Path) -> Result<CString, Error> {
    CString::new(p.as_os_str().as_bytes())
        .map_err(|_| Error::InvalidCommand(format!("{} contains a NUL byte", p.display())))
}

fn old(p: &Path) -> PathBuf {
    Path::new(OLD_ROOT).join(p.strip_prefix("/").unwrap_or(p))
}

/// A normalised absolute path: no `.`, `..` or repeated slashes (`..` is refused).
fn clean(p: &str) -> Result<PathBuf, String> {
    let mut out = PathBuf::from("/");
    for c in Path::new(p).components() {
        match c {
            Component::RootDir | Component::CurDir => {}
            Component::Normal(n) => out.push(n),
            Component::ParentDir => return Err(format!("'{p}' contains '..'")),
            Component::Prefix(_) => return Err(format!("'{p}' is not a Linux path")),
        }
    }
    Ok(out)
}

impl RootBuilder {
    pub fn new() -> Self {
        RootBuilder {
            ops: Vec::new(),
            labels: Vec::new(),
            made: BTreeSet::new(),
            binds: Vec::new(),
            covered: Vec::new(),
        }
    }

    /// Whether `p`, after the ops so far, is a path of the root tmpfs itself: no mount (or
    /// symbolic link) at it or above it. A directory made there is the sandbox's own, in a
    /// superblock the sandbox has anyway, never the host's.
    fn in_root_tmpfs(&self, p: &Path) -> bool {
        !self.covered.iter().any(|c| p.starts_with(c))
    }

    fn bad(&self, label: &str, why: impl std::fmt::Display) -> Error {
        Error::InvalidMount {
            entry: label.to_string(),
            why: why.to_string(),
        }
    }

    fn push(
        &mut self,
        kind: OpKind,
        src: &Path,
        dst: &Path,
        data: &str,
        mode: u32,
    ) -> Result<(), Error> {
        if !matches!(
            kind,
            OpKind::Mkdir | OpKind::Touch | OpKind::ReadOnly | OpKind::MaskSource
        ) {
            self.covered.push(dst.to_path_buf());
        }
        self.ops.push(MountOp {
            kind,
            src: cstr(src)?,
            dst: cstr(dst)?,
            data: CString::new(data)
                .map_err(|_| Error::InvalidCommand("NUL in mount data".into()))?,
            mode,
            entry: (self.labels.len() - 1) as u32,
        });
        Ok(())
    }

    /// Mkdir ops for every ancestor of `dst` not made yet (and `dst` itself when `dir`).
    fn dirs(&mut self, dst: &Path, include_self: bool, mode: u32) -> Result<(), Error> {
        let mut todo: Vec<PathBuf> = dst
            .ancestors()
            .skip(1)
            .filter(|a| *a != Path::new("/"))
            .map(Path::to_path_buf)
            .collect();
        todo.reverse();
        if include_self {
            todo.push(dst.to_path_buf());
        }
        for d in todo {
            if self.made.insert(d.clone()) {
                let m = if d == dst { mode } else { 0o755 };
                self.push(OpKind::Mkdir, Path::new(""), &d, "", m)?;
            }
        }
        Ok(())
    }

    fn bind(
        &mut self,
        src: &Path,
        dst: &Path,
        ro: bool,
        noexec: bool,
        optional: bool,
        label: &str,
    ) -> Result<(), Error> {
        let md = match std::fs::metadata(src) {
            Ok(m) => m,
            Err(e) if optional && e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(self.bad(label, format!("{}: {e}", src.display()))),
        };
        let mut attrs = MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV;
        if ro {
            attrs |= MOUNT_ATTR_RDONLY;
        }
        if noexec {
            attrs |= MOUNT_ATTR_NOEXEC;
        }
        if md.is_dir() {
            self.dirs(dst, true, 0o755)?;
        } else {
            self.dirs(dst, false, 0o755)?;
            self.push(OpKind::Touch, Path::new(""), dst, "", 0o644)?;
        }
        self.push(OpKind::Bind { attrs }, &old(src), dst, "", 0)?;
        self.binds.push((src.to_path_buf(), dst.to_path_buf()));
        Ok(())
    }

    /// Adds one profile entry.
    pub fn add(&mut self, spec: &MountSpec) -> Result<(), Error> {
        let p = |s: &str, label: &str, me: &Self| clean(s).map_err(|w| me.bad(label, w));
        match spec {
            MountSpec::RoBind {
                src,
                dst,
                optional,
                noexec,
            }
            | MountSpec::Bind {
                src,
                dst,
                optional,
                noexec,
            } => {
                let ro = matches!(spec, MountSpec::RoBind { .. });
                let d = dst.as_ref().unwrap_or(src).as_str();
                let label = format!(
                    "{} {} -> {}",
                    if ro { "ro-bind" } else { "bind" },
                    src.as_str(),
                    d
                );
                self.labels.push(label.clone());
                let (s, d) = (p(src.as_str(), &label, self)?, p(d, &label, self)?);
                self.bind(&s, &d, ro, *noexec, *optional, &label)
            }
            MountSpec::Tmpfs {
                dst,
                size,
                mode,
                noexec,
            } => {
                let label = format!("tmpfs {}", dst.as_str());
                self.labels.push(label.clone());
                let d = p(dst.as_str(), &label, self)?;
                let mode = mode.map_or(0o755, |m| m.0);
                let mut data = format!("mode={mode:o}");
                if let Some(sz) = size {
                    data.push_str(&format!(",size={}", sz.0));
                }
                let mut flags = libc::MS_NOSUID | libc::MS_NODEV;
                if *noexec {
                    flags |= libc::MS_NOEXEC;
                }
                self.dirs(&d, true, 0o755)?;
                self.push(OpKind::Tmpfs { flags }, Path::new("tmpfs"), &d, &data, 0)
            }
            MountSpec::Proc { dst } => {
                let label = format!("proc {}", dst.as_str());
                self.labels.push(label.clone());
                let d = p(dst.as_str(), &label, self)?;
                self.dirs(&d, true, 0o555)?;
                // The masks below are binds of one empty directory of the root tmpfs, kept
                // as a detached clone and then covered by this proc (reachable by no path),
                // so they cost no superblock. Where the proc is not in the root tmpfs (below
                // a bind of a host directory), they are one read-only tmpfs of their own.
                if self.in_root_tmpfs(&d) {
                    let src = d.join(".sandbox-mask");
                    self.push(OpKind::Mkdir, Path::new(""), &src, "", 0o555)?;
                    self.push(OpKind::MaskSource, Path::new(""), &src, "", 0)?;
                }
                self.push(OpKind::Proc, Path::new("proc"), &d, "", 0)?;
                // Capabilities are gone, but a root plugin still owns these by uid: keep
                // the host's kernel knobs out of reach, as container runtimes do. Read-only:
                let ro =
                    MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC;
                for sub in ["sys", "sysrq-trigger", "irq", "bus", "fs"] {
                    let x = d.join(sub);
                    self.push(OpKind::BindIfExists { attrs: ro }, &x, &x, "", 0)?;
                }
                // ... and hidden (an empty /dev/null in their place): what Docker hides, and
                // the host-wide views of memory, slabs, keys and pressure that an
                // unprivileged plugin could still read (or, as uid 0, always could).
                for sub in [
                    "kcore",
                    "keys",
                    "key-users",
                    "timer_list",
                    "timer_stats",
                    "sched_debug",
                    "latency_stats",
                    "kallsyms",
                    "kpageflags",
                    "kpagecount",
                    "kpagecgroup",
                    "slabinfo",
                    "vmallocinfo",
                    "zoneinfo",
                    "pagetypeinfo",
                    "buddyinfo",
                    "iomem",
                    "ioports",
                    // This workplace's VMs: host program names and CPU times.
                    "program_cpu",
                ] {
                    let x = d.join(sub);
                    self.push(
                        OpKind::BindIfExists { attrs: ro },
                        &old(Path::new("/dev/null")),
                        &x,
                        "",
                        0,
                    )?;
                }
                // Directories of host-wide data: an empty read-only tmpfs over each.
                for sub in ["pressure", "acpi", "asound", "scsi", "driver"] {
                    let x = d.join(sub);
                    self.push(OpKind::MaskDir, Path::new("tmpfs"), &x, "", 0)?;
                }
                Ok(())
            }
            MountSpec::Dev { dst, pts } => {
                let label = format!("dev {}", dst.as_str());
                self.labels.push(label.clone());
                let d = p(dst.as_str(), &label, self)?;
                self.dirs(&d, true, 0o755)?;
                if self.in_root_tmpfs(&d) {
                    // A directory of the root tmpfs, bound on itself to be a mount with
                    // flags of its own: no superblock of its own. (The device nodes are
                    // binds of the host's, each a mount with its own flags.)
                    self.push(
                        OpKind::Bind {
                            attrs: MOUNT_ATTR_NOSUID | MOUNT_ATTR_NOEXEC,
                        },
                        &d,
                        &d,
                        "",
                        0,
                    )?;
                } else {
                    // Below a bind of a host directory: a tmpfs of its own, so nothing is
                    // made in the host's directory. Not nodev: the nodes must work.
                    self.push(
                        OpKind::Tmpfs {
                            flags: libc::MS_NOSUID | libc::MS_NOEXEC,
                        },
                        Path::new("tmpfs"),
                        &d,
                        "mode=755",
                        0,
                    )?;
                }
                for node in ["null", "zero", "full", "random", "urandom", "tty"] {
                    let host = Path::new("/dev").join(node);
                    let inside = d.join(node);
                    self.push(OpKind::Touch, Path::new(""), &inside, "", 0o666)?;
                    self.push(
                        OpKind::Bind {
                            attrs: MOUNT_ATTR_NOSUID | MOUNT_ATTR_NOEXEC,
                        },
                        &old(&host),
                        &inside,
                        "",
                        0,
                    )?;
                }
                let shm = d.join("shm");
                self.push(OpKind::Mkdir, Path::new(""), &shm, "", 0o1777)?;
                self.push(
                    OpKind::Tmpfs {
                        flags: libc::MS_NOSUID | libc::MS_NODEV,
                    },
                    Path::new("tmpfs"),
                    &shm,
                    "mode=1777,size=64M",
                    0,
                )?;
                if *pts {
                    let ptsd = d.join("pts");
                    self.push(OpKind::Mkdir, Path::new(""), &ptsd, "", 0o755)?;
                    self.push(
                        OpKind::Devpts,
                        Path::new("devpts"),
                        &ptsd,
                        "newinstance,ptmxmode=0666,mode=620",
                        0,
                    )?;
                    self.push(
                        OpKind::Symlink,
                        Path::new("pts/ptmx"),
                        &d.join("ptmx"),
                        "",
                        0,
                    )?;
                }
                for (name, target) in [
                    ("fd", "/proc/self/fd"),
                    ("stdin", "/proc/self/fd/0"),
                    ("stdout", "/proc/self/fd/1"),
                    ("stderr", "/proc/self/fd/2"),
                ] {
                    self.push(OpKind::Symlink, Path::new(target), &d.join(name), "", 0)?;
                }
                // Nothing more is created in /dev: its mount becomes read-only (the nodes,
                // shm and pts below keep their own flags).
                self.push(OpKind::ReadOnly, Path::new(""), &d, "", 0)
            }
            MountSpec::Dir { dst, mode } => {
                let label = format!("dir {}", dst.as_str());
                self.labels.push(label.clone());
                let d = p(dst.as_str(), &label, self)?;
                let mode = mode.map_or(0o755, |m| m.0);
                self.dirs(&d, false, 0o755)?;
                self.made.insert(d.clone());
                self.push(OpKind::Mkdir, Path::new(""), &d, "", mode)
            }
            MountSpec::Symlink { src, dst } => {
                let label = format!("symlink {} -> {}", dst.as_str(), src.as_str());
                self.labels.push(label.clone());
                let d = p(dst.as_str(), &label, self)?;
                self.dirs(&d, false, 0o755)?;
                self.made.insert(d.clone());
                self.push(OpKind::Symlink, Path::new(src.as_str()), &d, "", 0)
            }
            MountSpec::Mirror { path, optional } => {
                let label = format!("mirror {}", path.as_str());
                self.labels.push(label.clone());
                let d = p(path.as_str(), &label, self)?;
                match std::fs::symlink_metadata(&d) {
                    Err(e) if *optional && e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                    Err(e) => Err(self.bad(&label, format!("{}: {e}", d.display()))),
                    Ok(md) if md.file_type().is_symlink() => {
                        let target = std::fs::read_link(&d).map_err(|e| self.bad(&label, e))?;
                        self.dirs(&d, false, 0o755)?;
                        self.made.insert(d.clone());
                        self.push(OpKind::Symlink, &target, &d, "", 0)
                    }
                    Ok(_) => self.bind(&d.clone(), &d, true, false, false, &label),
                }
            }
        }
    }

    /// Binds the host directory `src` (created by the runner at start, so not checked now)
    /// read-write at `dst`, `nosuid,nodev,noexec`: the socket directory.
    pub fn bind_socket_dir(&mut self, src: &Path, dst: &Path) -> Result<(), Error> {
        self.labels
            .push(format!("socket dir {} -> {}", src.display(), dst.display()));
        self.dirs(dst, true, 0o755)?;
        let attrs = MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC;
        self.push(OpKind::Bind { attrs }, &old(src), dst, "", 0)
    }

    /// Binds the host file `src` (written by the runner at start, so not checked now)
    /// read-only (`nosuid,nodev,noexec`) at `dst`, in place of whatever the profile put
    /// there: a file bind of the profile at exactly `dst` gets `src` as its source instead,
    /// otherwise `dst` is created on the root tmpfs. A `dst` inside a directory the profile
    /// binds (`ro-bind /etc`) is refused: the file there could not be replaced.
    pub fn bind_generated_file(&mut self, src: &Path, dst: &Path, what: &str) -> Result<(), Error> {
        let label = format!("{what} {} -> {}", src.display(), dst.display());
        self.labels.push(label.clone());
        let entry = (self.labels.len() - 1) as u32;
        let attrs = MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC;
        let dst_c = cstr(dst)?;
        let mut replaced = false;
        for op in self.ops.iter_mut() {
            if op.dst == dst_c && matches!(op.kind, OpKind::Bind { .. }) {
                op.kind = OpKind::Bind { attrs };
                op.src = cstr(&old(src))?;
                op.entry = entry;
                replaced = true;
            }
        }
        if replaced {
            return Ok(());
        }
        if let Some((_, d)) = self
            .binds
            .iter()
            .find(|(s, d)| dst.starts_with(d) && d != dst && s.is_dir())
        {
            let d = d.display();
            return Err(self.bad(
                &label,
                format!("the profile binds the directory {d} as a whole, so {} cannot be replaced there (bind the files of {d} it needs one by one)", dst.display()),
            ));
        }
        self.dirs(dst, false, 0o755)?;
        self.push(OpKind::Touch, Path::new(""), dst, "", 0o644)?;
        self.push(OpKind::Bind { attrs }, &old(src), dst, "", 0)
    }

    /// Makes sure `program` (a host path) can be executed in the sandbox: when no bind shows
    /// its real file at the same path, adds a read-only bind of that file. Returns the path
    /// to `execve` inside the sandbox.
    pub fn ensure_program(&mut self, program: &Path) -> Result<PathBuf, Error> {
        let real = std::fs::canonicalize(program).map_err(|e| Error::NotExecutable {
            path: program.to_path_buf(),
            errno: Errno::from_raw(e.raw_os_error().unwrap_or(libc::ENOENT)),
        })?;
        let shows = |p: &Path| self.binds.iter().any(|(s, d)| s == d && p.starts_with(s));
        if shows(program) && program == real {
            return Ok(program.to_path_buf());
        }
        if shows(&real) {
            return Ok(real);
        }
        let label = format!("program {}", real.display());
        self.labels.push(label.clone());
        self.bind(&real.clone(), &real, true, false, false, &label)?;
        Ok(real)
    }
}

/// The C strings of the staging paths, for the plan.
pub(crate) fn staging_paths() -> (CString, CString, CString) {
    let staging = CString::new(STAGING).expect("no NUL");
    let staging_old = CString::new(format!("{STAGING}{OLD_ROOT}")).expect("no NUL");
    let old_root = CString::new(OLD_ROOT).expect("no NUL");
    (staging, staging_old, old_root)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::profile::AbsPath;

    fn ro_bind(src: &str) -> MountSpec {
        MountSpec::RoBind {
            src: AbsPath::new(src).unwrap(),
            dst: None,
            optional: false,
            noexec: false,
        }
    }

    fn c(s: &str) -> CString {
        CString::new(s).unwrap()
    }

    fn ops_at(b: &RootBuilder, dst: &str) -> Vec<(OpKind, CString)> {
        b.ops
            .iter()
            .filter(|o| o.dst == c(dst))
            .map(|o| (o.kind, o.src.clone()))
            .collect()
    }

    #[test]
    fn dev_and_proc_in_the_root_tmpfs_make_no_filesystem_of_their_own() {
        let mut b = RootBuilder::new();
        b.add(&MountSpec::Proc {
            dst: AbsPath::new("/proc").unwrap(),
        })
        .unwrap();
        b.add(&MountSpec::Dev {
            dst: AbsPath::new("/dev").unwrap(),
            pts: false,
        })
        .unwrap();
        // The masks' source: an empty directory of the root tmpfs, kept, then covered.
        let src = b
            .ops
            .iter()
            .position(|o| o.kind == OpKind::MaskSource)
            .expect("no mask source");
        assert_eq!(b.ops[src].dst, c("/proc/.sandbox-mask"));
        assert_eq!(b.ops[src - 1].kind, OpKind::Mkdir);
        assert_eq!(b.ops[src + 1].kind, OpKind::Proc);
        assert!(b
            .ops
            .iter()
            .skip(src)
            .any(|o| o.kind == OpKind::MaskDir && o.dst == c("/proc/pressure")));
        // /dev: a bind of itself, read-only at the end; only /dev/shm is a tmpfs.
        let attrs = MOUNT_ATTR_NOSUID | MOUNT_ATTR_NOEXEC;
        assert_eq!(
            ops_at(&b, "/dev"),
            [
                (OpKind::Mkdir, c("")),
                (OpKind::Bind { attrs }, c("/dev")),
                (OpKind::ReadOnly, c(""))
            ]
        );
        let tmpfs: Vec<&CString> = b
            .ops
            .iter()
            .filter(|o| matches!(o.kind, OpKind::Tmpfs { .. }))
            .map(|o| &o.dst)
            .collect();
        assert_eq!(tmpfs, [&c("/dev/shm")]);
    }

    #[test]
    fn dev_and_proc_below_a_bind_get_filesystems_of_their_own() {
        let mut b = RootBuilder::new();
        b.add(&MountSpec::Bind {
            src: AbsPath::new("/var/tmp").unwrap(),
            dst: Some(AbsPath::new("/srv").unwrap()),
            optional: false,
            noexec: false,
        })
        .unwrap();
        b.add(&MountSpec::Proc {
            dst: AbsPath::new("/srv/proc").unwrap(),
        })
        .unwrap();
        b.add(&MountSpec::Dev {
            dst: AbsPath::new("/srv/dev").unwrap(),
            pts: false,
        })
        .unwrap();
        // Nothing is made in the host's directory but the mount points.
        assert!(!b.ops.iter().any(|o| o.kind == OpKind::MaskSource));
        let flags = libc::MS_NOSUID | libc::MS_NOEXEC;
        assert!(ops_at(&b, "/srv/dev").contains(&(OpKind::Tmpfs { flags }, c("tmpfs"))));
        assert!(!ops_at(&b, "/srv/dev")
            .iter()
            .any(|(k, _)| matches!(k, OpKind::Bind { .. })));
    }

    #[test]
    fn a_generated_file_replaces_the_profiles_bind_or_is_added() {
        let ro = MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC;
        let mut b = RootBuilder::new();
        b.add(&ro_bind("/etc/hosts")).unwrap();
        let before = b.ops.len();
        b.bind_generated_file(Path::new("/st/net/hosts"), Path::new("/etc/hosts"), "gen")
            .unwrap();
        assert_eq!(
            b.ops.len(),
            before,
            "the profile's bind is reused, not doubled"
        );
        let op = b
            .ops
            .iter()
            .find(|o| o.dst == c("/etc/hosts") && matches!(o.kind, OpKind::Bind { .. }))
            .unwrap();
        assert_eq!(op.src, c("/oldroot/st/net/hosts"));
        assert_eq!(op.kind, OpKind::Bind { attrs: ro });
        assert_eq!(
            b.labels[op.entry as usize],
            "gen /st/net/hosts -> /etc/hosts"
        );

        b.bind_generated_file(
            Path::new("/st/net/resolv.conf"),
            Path::new("/etc/resolv.conf"),
            "gen",
        )
        .unwrap();
        let tail: Vec<(OpKind, CString)> = b.ops[before..]
            .iter()
            .map(|o| (o.kind, o.dst.clone()))
            .collect();
        assert_eq!(
            tail,
            [
                (OpKind::Touch, c("/etc/resolv.conf")),
                (OpKind::Bind { attrs: ro }, c("/etc/resolv.conf"))
            ]
        );
    }

    #[test]
    fn a_generated_file_inside_a_directory_bind_is_refused() {
        let mut b = RootBuilder::new();
        b.add(&ro_bind("/etc")).unwrap();
        let e = b
            .bind_generated_file(Path::new("/st/net/hosts"), Path::new("/etc/hosts"), "gen")
            .unwrap_err();
        assert!(
            e.to_string()
                .contains("binds the directory /etc as a whole"),
            "{e}"
        );
    }
}
