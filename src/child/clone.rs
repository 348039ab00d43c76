//! `clone3` into this address space (`CLONE_VM`) on stacks of our own, and the namespace
//! probe of `check`.

use nix::errno::Errno;

/// `CLONE_INTO_CGROUP` (Linux 5.7).
pub(crate) const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// The kernel's `struct clone_args` (Linux 5.7 layout, with `set_tid` and `cgroup`).
#[repr(C)]
#[derive(Default)]
pub(crate) struct CloneArgs {
    pub flags: u64,
    pub pidfd: u64,
    pub child_tid: u64,
    pub parent_tid: u64,
    pub exit_signal: u64,
    pub stack: u64,
    pub stack_size: u64,
    pub tls: u64,
    pub set_tid: u64,
    pub set_tid_size: u64,
    pub cgroup: u64,
}

/// What a child cloned with `CLONE_VM` runs, on its own stack, with `arg`.
pub(crate) type ChildEntry = unsafe extern "C" fn(arg: *const u8) -> !;

/// `clone3` for a child that shares this address space (`CLONE_VM` in `args.flags`) and runs
/// `entry(arg)` on the stack `args.stack` / `args.stack_size`, never returning. Returns the
/// child's pid, or `-errno`.
///
/// The child starts on an empty stack, so it cannot return through a libc wrapper as a
/// copy-on-write child would: the few instructions between the system call and the call of
/// `entry` are written out here.
///
/// # Safety
/// `args` must describe a valid stack mapping that stays mapped while the child runs in this
/// address space; `entry` must not return and must only do async-signal-safe work until it
/// execs or exits; whatever `arg` points to must outlive that.
pub(crate) unsafe fn clone3_vm(args: &mut CloneArgs, entry: ChildEntry, arg: *const u8) -> i64 {
    let ret: i64;
    #[cfg(target_arch = "x86_64")]
    // SAFETY: the kernel returns 0 in the child with the stack pointer at the top of the
    // given stack (16-byte aligned by `Stacks`); r12/r13 are preserved into the child. The
    // parent path only clobbers what `syscall` does.
    unsafe {
        std::arch::asm!(
            "syscall",
            "test rax, rax",
            "jnz 2f",
            "mov rdi, r12",
            "call r13",
            "ud2",
            "2:",
            inlateout("rax") libc::SYS_clone3 => ret,
            in("rdi") args as *mut CloneArgs,
            in("rsi") std::mem::size_of::<CloneArgs>(),
            in("r12") arg,
            in("r13") entry,
            lateout("rcx") _,
            lateout("r11") _,
            options(nostack),
        );
    }
    #[cfg(target_arch = "aarch64")]
    // SAFETY: as above; x20/x21 are callee-saved and preserved into the child.
    unsafe {
        std::arch::asm!(
            "svc 0",
            "cbnz x0, 2f",
            "mov x0, x20",
            "blr x21",
            "brk #0",
            "2:",
            inlateout("x0") args as *mut CloneArgs => ret,
            in("x1") std::mem::size_of::<CloneArgs>(),
            in("x8") libc::SYS_clone3,
            in("x20") arg,
            in("x21") entry,
            options(nostack),
        );
    }
    ret
}

/// The two stacks a sandbox's init and plugin run on until they exec, in one mapping of this
/// process with a guard page below each.
pub(crate) struct Stacks {
    base: *mut libc::c_void,
    len: usize,
}

// SAFETY: a plain mapping owned by one value; nothing else refers to it.
unsafe impl Send for Stacks {}

/// Size of each stack: the child steps are shallow and keep no large buffers.
const STACK_SIZE: usize = 256 * 1024;
/// One guard page below each stack.
const GUARD: usize = 4096;

impl Stacks {
    /// Maps two stacks with guard pages.
    pub fn new() -> Result<Stacks, Errno> {
        let len = 2 * (GUARD + STACK_SIZE);
        // SAFETY: an anonymous private mapping; checked below.
        let base = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_STACK | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(Errno::last());
        }
        let stacks = Stacks { base, len };
        for i in 0..2 {
            // SAFETY: the guard page lies inside the mapping made above.
            let r = unsafe {
                libc::mprotect(
                    base.cast::<u8>().add(i * (GUARD + STACK_SIZE)).cast(),
                    GUARD,
                    libc::PROT_NONE,
                )
            };
            if r != 0 {
                return Err(Errno::last());
            }
        }
        Ok(stacks)
    }

    /// The lowest address and the size of stack `i` (0: init, 1: plugin).
    pub fn stack(&self, i: usize) -> (usize, usize) {
        (
            self.base as usize + i * (GUARD + STACK_SIZE) + GUARD,
            STACK_SIZE,
        )
    }
}

impl Drop for Stacks {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the mapping this value owns, once no child uses it.
        unsafe { libc::munmap(self.base, self.len) };
    }
}

/// Tries a clone with the namespace `flags` and reports whether the kernel allows it (for
/// `check`). Only `CLONE_NEW*` flags are accepted: anything else is `EINVAL`.
pub fn probe_clone(flags: u64) -> Result<(), Errno> {
    let ns = (libc::CLONE_NEWNS
        | libc::CLONE_NEWPID
        | libc::CLONE_NEWNET
        | libc::CLONE_NEWIPC
        | libc::CLONE_NEWUTS
        | libc::CLONE_NEWUSER
        | libc::CLONE_NEWCGROUP) as u64;
    if flags & !ns != 0 {
        return Err(Errno::EINVAL);
    }
    let args = CloneArgs {
        flags,
        exit_signal: libc::SIGCHLD as u64,
        ..Default::default()
    };
    // SAFETY: a copy-on-write child (no CLONE_VM: refused above) that only calls _exit.
    let r = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &args as *const CloneArgs,
            std::mem::size_of::<CloneArgs>(),
        )
    };
    if r == 0 {
        // SAFETY: the child leaves at once.
        unsafe { libc::_exit(0) }
    }
    if r < 0 {
        return Err(Errno::last());
    }
    let mut st = 0;
    // SAFETY: reaps our own child.
    unsafe { libc::waitpid(r as i32, &mut st, 0) };
    Ok(())
}
