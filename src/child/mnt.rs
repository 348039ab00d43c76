//! Mount namespace, child side (in the init, async-signal-safe): make propagation private,
//! mount a tmpfs on the staging directory, `pivot_root` into it with the host's root kept at
//! the old-root directory, run the [`MountOp`]s the host prepared (bind sources are read
//! through the old root, so they are resolved in the host's view even where the new root
//! covers them), detach the old root, and make the root tmpfs itself read-only.

use nix::errno::Errno;
use std::ffi::CString;

use super::plan::Plan;
use super::step::{check, fail_at, Step};

pub(crate) const MOUNT_ATTR_RDONLY: u64 = 0x1;
pub(crate) const MOUNT_ATTR_NOSUID: u64 = 0x2;
pub(crate) const MOUNT_ATTR_NODEV: u64 = 0x4;
pub(crate) const MOUNT_ATTR_NOEXEC: u64 = 0x8;
pub(crate) const AT_RECURSIVE: libc::c_uint = 0x8000;

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
    /// Keep a detached clone (`open_tree(OPEN_TREE_CLONE)`) of the empty directory `dst` of
    /// the root tmpfs, which the next op (a `proc`) covers: the source of every
    /// [`OpKind::MaskDir`] after it, reachable by no path.
    MaskSource,
    /// An empty, read-only directory over the directory `dst`, when it exists (a `/proc`
    /// directory of host-wide data a kernel may not have): the first one is the clone kept
    /// by [`OpKind::MaskSource`] (no superblock of its own) or, without one, a read-only
    /// empty tmpfs; the others bind the first.
    MaskDir,
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

/// Makes every mount in the new namespace private (`MS_REC|MS_PRIVATE` on `/`), before any
/// other mount, so nothing mounted in the sandbox propagates back to the host.
///
/// # Safety
/// Child-side only.
pub(crate) unsafe fn make_private(plan: &Plan) -> Result<(), Errno> {
    // SAFETY: mount with a CString of the plan and null pointers where the kernel takes none.
    unsafe {
        check(libc::mount(
            std::ptr::null(),
            plan.c.root.as_ptr(),
            std::ptr::null(),
            libc::MS_REC | libc::MS_PRIVATE,
            std::ptr::null(),
        ))
        .map(drop)
    }
}

/// Mounts a fresh `proc` on `/proc` over the host's view (when there is no private root),
/// showing the new PID namespace only. Runs in the init, already inside that namespace.
///
/// # Safety
/// Child-side only.
pub(crate) unsafe fn mount_proc(plan: &Plan) -> Result<(), Errno> {
    // SAFETY: mount with CStrings of the plan.
    unsafe {
        check(libc::mount(
            plan.c.proc_fstype.as_ptr(),
            plan.c.proc_dir.as_ptr(),
            plan.c.proc_fstype.as_ptr(),
            libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
            std::ptr::null(),
        ))
        .map(drop)
    }
}

unsafe fn set_attr(
    path: *const libc::c_char,
    flags: libc::c_uint,
    attrs: u64,
) -> Result<(), Errno> {
    // SAFETY: mount_setattr with `path` (a CString of the plan, per the callers) and a stack
    // struct of the size passed.
    unsafe {
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
}

/// What the mask ops share while the root is assembled.
struct Masks {
    /// The path of the first [`OpKind::MaskDir`] mounted so far (the later ones bind it).
    first: Option<*const libc::c_char>,
    /// The detached clone of [`OpKind::MaskSource`], or -1.
    tree: libc::c_int,
}

const OPEN_TREE_CLONE: libc::c_uint = 1;
const MOVE_MOUNT_F_EMPTY_PATH: libc::c_uint = 0x4;

/// Runs one op.
unsafe fn run_op(op: &MountOp, mask: &mut Masks) -> Result<(), Errno> {
    // SAFETY: mkdir/open/mount/symlink with the op's CStrings (NUL-terminated, owned by the
    // plan; `mask` points into one of them).
    unsafe {
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
            OpKind::MaskSource => {
                let fd = libc::syscall(
                    libc::SYS_open_tree,
                    libc::AT_FDCWD,
                    op.dst.as_ptr(),
                    OPEN_TREE_CLONE | libc::O_CLOEXEC as libc::c_uint,
                );
                if fd < 0 {
                    return Err(Errno::last());
                }
                if mask.tree >= 0 {
                    libc::close(mask.tree);
                }
                mask.tree = fd as libc::c_int;
                Ok(())
            }
            OpKind::MaskDir => {
                // No superblock of their own: each more superblock is one more pair of
                // list_lrus that every memory cgroup's removal, anywhere on the machine,
                // walks while this sandbox lives.
                let ok = |r: libc::c_int| if r == -1 { Err(Errno::last()) } else { Ok(()) };
                let first_tmpfs = mask.first.is_none() && mask.tree < 0;
                let masked = match (mask.first, mask.tree) {
                    (Some(first), _) => ok(libc::mount(
                        first,
                        op.dst.as_ptr(),
                        null,
                        libc::MS_BIND,
                        std::ptr::null(),
                    )),
                    (None, tree) if tree >= 0 => {
                        // The kept clone itself goes here; should this kernel lack this
                        // directory, it stays detached for the next mask.
                        let moved = ok(libc::syscall(
                            libc::SYS_move_mount,
                            tree,
                            c"".as_ptr(),
                            libc::AT_FDCWD,
                            op.dst.as_ptr(),
                            MOVE_MOUNT_F_EMPTY_PATH,
                        ) as libc::c_int);
                        if moved.is_ok() {
                            // Attached now: closing the fd leaves it mounted.
                            libc::close(tree);
                            mask.tree = -1;
                        }
                        moved
                    }
                    (None, _) => ok(libc::mount(
                        c"tmpfs".as_ptr(),
                        op.dst.as_ptr(),
                        c"tmpfs".as_ptr(),
                        libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
                        c"size=0,mode=555".as_ptr().cast(),
                    )),
                };
                match masked {
                    Err(Errno::ENOENT) => return Ok(()),
                    Err(e) => return Err(e),
                    Ok(()) => {}
                }
                if mask.first.is_none() {
                    mask.first = Some(op.dst.as_ptr());
                }
                if first_tmpfs {
                    return Ok(());
                }
                // The mount's own flags (a tmpfs of its own is read-only already).
                set_attr(
                    op.dst.as_ptr(),
                    0,
                    MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV | MOUNT_ATTR_NOEXEC,
                )
            }
        }
    }
}

/// Assembles the private root and enters it. Runs in the init after [`make_private`].
///
/// # Safety
/// Child-side only; async-signal-safe; reports failures through `err_w` and exits.
pub(crate) unsafe fn setup_root(plan: &Plan, err_w: libc::c_int) {
    // SAFETY: mount/mkdir/pivot_root/chdir/umount2/rmdir with CStrings of the plan; each
    // failure is reported with fail_at, which exits.
    unsafe {
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
        let mut mask = Masks {
            first: None,
            tree: -1,
        };
        for op in &plan.root_ops {
            if let Err(e) = run_op(op, &mut mask) {
                fail_at(err_w, Step::Mount, op.entry, e)
            }
        }
        if mask.tree >= 0 {
            libc::close(mask.tree);
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
}
