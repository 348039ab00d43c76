//! Mount namespace: the private root.
//!
//! Parent side ([`RootBuilder`]): the profile's `[[mount]]` entries become a flat list of
//! [`MountOp`]s with every path already a `CString`. Child side ([`setup_root`], in the init,
//! async-signal-safe): make propagation private, mount a tmpfs on the staging directory,
//! `pivot_root` into it with the host's root kept at `/oldroot`, run the ops (bind sources
//! are read through `/oldroot`, so they are resolved in the host's view even where the new
//! root covers them), detach `/oldroot`, and make the root tmpfs itself read-only.

use nix::errno::Errno;
use std::collections::BTreeSet;
use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use crate::error::Error;
use crate::plan::Plan;
use crate::profile::MountSpec;
use crate::spawn::{check, fail_at, Step};

/// Where the host's root stays reachable while the private root is assembled.
const OLD_ROOT: &str = "/oldroot";
/// The host directory the private root's tmpfs is first mounted on (in our namespace only).
const STAGING: &str = "/tmp";

const MOUNT_ATTR_RDONLY: u64 = 0x1;
const MOUNT_ATTR_NOSUID: u64 = 0x2;
const MOUNT_ATTR_NODEV: u64 = 0x4;
const MOUNT_ATTR_NOEXEC: u64 = 0x8;
const AT_RECURSIVE: libc::c_uint = 0x8000;

/// The kernel's `struct mount_attr` (Linux 5.12).
#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

/// What one op does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum OpKind {
    /// `mkdir` (existing is fine) and `chmod` to `mode`.
    Mkdir,
    /// Create an empty file as a mount point for a file bind.
    Touch,
    /// Recursive bind of `src` on `dst`, then `mount_setattr` with `attrs` recursively.
    Bind {
        /// `MOUNT_ATTR_*` flags set on the bind and everything below it.
        attrs: u64,
    },
    /// A tmpfs with `data` options and these `MS_*` flags.
    Tmpfs {
        /// `MS_*` flags.
        flags: libc::c_ulong,
    },
    /// A fresh `proc`.
    Proc,
    /// A private `devpts` instance.
    Devpts,
    /// Like `Bind`, but nothing happens when `src` or `dst` does not exist (for `/proc`
    /// entries a kernel may not have).
    BindIfExists {
        /// `MOUNT_ATTR_*` flags.
        attrs: u64,
    },
    /// `symlink(src, dst)`.
    Symlink,
    /// Make the mount at `dst` (only that one, not below) read-only.
    ReadOnly,
}

/// One step of assembling the private root, fully prepared in the parent.
pub(crate) struct MountOp {
    pub kind: OpKind,
    pub src: CString,
    pub dst: CString,
    pub data: CString,
    pub mode: u32,
    /// Index into the plan's entry labels, for error messages.
    pub entry: u32,
}

/// Builds the ops of a private root from profile entries.
pub(crate) struct RootBuilder {
    pub ops: Vec<MountOp>,
    /// A label per entry: what it mounts where (for errors).
    pub labels: Vec<String>,
    made: BTreeSet<PathBuf>,
    /// (host source, sandbox destination) of every bind, to find the program.
    binds: Vec<(PathBuf, PathBuf)>,
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
        }
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
                self.push(OpKind::Proc, Path::new("proc"), &d, "", 0)?;
                // Capabilities are gone, but a root plugin still owns these by uid: keep
                // the host's kernel knobs out of reach, as container runtimes do. Read-only:
                let ro =
                    MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC;
                for sub in ["sys", "sysrq-trigger", "irq", "bus", "fs"] {
                    let x = d.join(sub);
                    self.push(OpKind::BindIfExists { attrs: ro }, &x, &x, "", 0)?;
                }
                // ... and hidden (an empty /dev/null in their place):
                for sub in ["kcore", "keys", "timer_list", "sched_debug", "kallsyms"] {
                    let x = d.join(sub);
                    self.push(
                        OpKind::BindIfExists { attrs: ro },
                        &old(Path::new("/dev/null")),
                        &x,
                        "",
                        0,
                    )?;
                }
                Ok(())
            }
            MountSpec::Dev { dst, pts } => {
                let label = format!("dev {}", dst.as_str());
                self.labels.push(label.clone());
                let d = p(dst.as_str(), &label, self)?;
                self.dirs(&d, true, 0o755)?;
                // Not nodev: the device nodes bound below must work.
                self.push(
                    OpKind::Tmpfs {
                        flags: libc::MS_NOSUID | libc::MS_NOEXEC,
                    },
                    Path::new("tmpfs"),
                    &d,
                    "mode=755",
                    0,
                )?;
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
                // Nothing more is created in /dev: its own tmpfs becomes read-only (the
                // nodes, shm and pts below keep their own flags).
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

/// Makes every mount in the new namespace private (`MS_REC|MS_PRIVATE` on `/`), before any
/// other mount, so nothing mounted in the sandbox propagates back to the host.
///
/// # Safety
/// Child-side only.
pub(crate) unsafe fn make_private(plan: &Plan) -> Result<(), Errno> {
    check(libc::mount(
        std::ptr::null(),
        plan.c.root.as_ptr(),
        std::ptr::null(),
        libc::MS_REC | libc::MS_PRIVATE,
        std::ptr::null(),
    ))
    .map(drop)
}

/// Mounts a fresh `proc` on `/proc` over the host's view (when there is no private root),
/// showing the new PID namespace only. Runs in the init, already inside that namespace.
///
/// # Safety
/// Child-side only.
pub(crate) unsafe fn mount_proc(plan: &Plan) -> Result<(), Errno> {
    check(libc::mount(
        plan.c.proc_fstype.as_ptr(),
        plan.c.proc_dir.as_ptr(),
        plan.c.proc_fstype.as_ptr(),
        libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
        std::ptr::null(),
    ))
    .map(drop)
}

unsafe fn set_attr(
    path: *const libc::c_char,
    flags: libc::c_uint,
    attrs: u64,
) -> Result<(), Errno> {
    let a = MountAttr {
        attr_set: attrs,
        attr_clr: 0,
        propagation: 0,
        userns_fd: 0,
    };
    let r = libc::syscall(
        libc::SYS_mount_setattr,
        libc::AT_FDCWD,
        path,
        flags,
        &a as *const MountAttr,
        std::mem::size_of::<MountAttr>(),
    );
    if r == -1 {
        Err(Errno::last())
    } else {
        Ok(())
    }
}

unsafe fn run_op(op: &MountOp) -> Result<(), Errno> {
    let null = std::ptr::null::<libc::c_char>();
    match op.kind {
        OpKind::Mkdir => {
            if libc::mkdir(op.dst.as_ptr(), op.mode) == -1 {
                let e = Errno::last();
                if e != Errno::EEXIST {
                    return Err(e);
                }
                return Ok(());
            }
            // The caller's umask must not weaken or tighten the mode asked for.
            check(libc::chmod(op.dst.as_ptr(), op.mode)).map(drop)
        }
        OpKind::Touch => {
            let fd = check(libc::open(
                op.dst.as_ptr(),
                libc::O_CREAT | libc::O_WRONLY | libc::O_CLOEXEC | libc::O_NOCTTY,
                op.mode,
            ))?;
            libc::close(fd);
            Ok(())
        }
        OpKind::Bind { attrs } => {
            check(libc::mount(
                op.src.as_ptr(),
                op.dst.as_ptr(),
                null,
                libc::MS_BIND | libc::MS_REC,
                std::ptr::null(),
            ))?;
            set_attr(op.dst.as_ptr(), AT_RECURSIVE, attrs)
        }
        OpKind::BindIfExists { attrs } => {
            if libc::mount(
                op.src.as_ptr(),
                op.dst.as_ptr(),
                null,
                libc::MS_BIND | libc::MS_REC,
                std::ptr::null(),
            ) == -1
            {
                let e = Errno::last();
                return if e == Errno::ENOENT { Ok(()) } else { Err(e) };
            }
            set_attr(op.dst.as_ptr(), AT_RECURSIVE, attrs)
        }
        OpKind::ReadOnly => set_attr(op.dst.as_ptr(), 0, MOUNT_ATTR_RDONLY),
        OpKind::Tmpfs { flags } => check(libc::mount(
            op.src.as_ptr(),
            op.dst.as_ptr(),
            c"tmpfs".as_ptr(),
            flags,
            op.data.as_ptr().cast(),
        ))
        .map(drop),
        OpKind::Proc => check(libc::mount(
            op.src.as_ptr(),
            op.dst.as_ptr(),
            c"proc".as_ptr(),
            libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
            std::ptr::null(),
        ))
        .map(drop),
        OpKind::Devpts => check(libc::mount(
            op.src.as_ptr(),
            op.dst.as_ptr(),
            c"devpts".as_ptr(),
            libc::MS_NOSUID | libc::MS_NOEXEC,
            op.data.as_ptr().cast(),
        ))
        .map(drop),
        OpKind::Symlink => check(libc::symlink(op.src.as_ptr(), op.dst.as_ptr())).map(drop),
    }
}

/// Assembles the private root and enters it. Runs in the init after [`make_private`].
///
/// # Safety
/// Child-side only; async-signal-safe; reports failures through `err_w` and exits.
pub(crate) unsafe fn setup_root(plan: &Plan, err_w: libc::c_int) {
    let c = &plan.c;
    if let Err(e) = check(libc::mount(
        c"tmpfs".as_ptr(),
        c.staging.as_ptr(),
        c"tmpfs".as_ptr(),
        libc::MS_NOSUID | libc::MS_NODEV,
        c"mode=755".as_ptr().cast(),
    )) {
        fail_at(err_w, Step::RootTmpfs, 0, e)
    }
    if let Err(e) = check(libc::mkdir(c.staging_old.as_ptr(), 0o700))
        .and_then(|_| {
            let r = libc::syscall(
                libc::SYS_pivot_root,
                c.staging.as_ptr(),
                c.staging_old.as_ptr(),
            );
            if r == -1 {
                Err(Errno::last())
            } else {
                Ok(0)
            }
        })
        .and_then(|_| check(libc::chdir(c.root.as_ptr())))
    {
        fail_at(err_w, Step::PivotRoot, 0, e)
    }
    for op in &plan.root_ops {
        if let Err(e) = run_op(op) {
            fail_at(err_w, Step::Mount, op.entry, e)
        }
    }
    if let Err(e) = check(libc::umount2(c.old_root.as_ptr(), libc::MNT_DETACH))
        .and_then(|_| check(libc::rmdir(c.old_root.as_ptr())))
    {
        fail_at(err_w, Step::DetachOldRoot, 0, e)
    }
    if let Err(e) = set_attr(
        c.root.as_ptr(),
        0,
        MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV,
    ) {
        fail_at(err_w, Step::RootReadOnly, 0, e)
    }
}

/// The C strings of the staging paths, for the plan.
pub(crate) fn staging_paths() -> (CString, CString, CString) {
    let staging = CString::new(STAGING).expect("no NUL");
    let staging_old = CString::new(format!("{STAGING}{OLD_ROOT}")).expect("no NUL");
    let old_root = CString::new(OLD_ROOT).expect("no NUL");
    (staging, staging_old, old_root)
}
