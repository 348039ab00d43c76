//! seccomp: the system calls a plugin may not make.
//!
//! Parent side ([`compile`]): the profile's `[seccomp]` table becomes BPF programs, compiled
//! by `seccompiler` for the build target's architecture (x86_64 or aarch64) with its
//! architecture check (a call made through any other ABI, e.g. i386's `int 0x80`, kills the
//! process). Child side (`child::seccomp::apply`, async-signal-safe): `seccomp(SECCOMP_SET_MODE_FILTER)` for
//! each program, the very last step before `execve`, after `no_new_privs`.
//!
//! The default deny list is modelled on Docker's default profile: everything that changes
//! the mount table or namespaces (`mount`, `umount2`, `pivot_root`, `chroot`, `unshare`,
//! `setns`, the new mount API, and `clone` with a namespace flag), that reaches into other
//! processes (`ptrace`, `process_vm_readv/writev`, `kcmp`, `pidfd_getfd`), the kernel's own
//! state (modules, `kexec_*`, `bpf`, `perf_event_open`, keyrings, `reboot`, `swapon`,
//! `acct`, `quotactl`, the clock, the host and domain name, `syslog`), the raw I/O and
//! `userfaultfd` that exploits lean on, `open_by_handle_at` (the "shocker" escape),
//! `io_uring_*` (its operations bypass seccomp), and the `TIOCSTI`/`TIOCLINUX` ioctls that
//! inject keystrokes into a terminal. `clone3` is refused with `ENOSYS` whatever the action,
//! as Docker does: its flags live in memory where a filter cannot read them, and `ENOSYS`
//! makes glibc fall back to `clone`, whose flags the filter checks.
//!
//! Three rules are not plain matches of a call number, and `seccompiler` builds the deny
//! list only: the x32 guard (x86_64 only), `clone3`'s `ENOSYS`, and the speed of the lookup.
//! x32 calls share x86_64's architecture value and differ by bit 30 of the number, so
//! without the guard `mount | 0x40000000` would slip past the list on a kernel booted with
//! `syscall.x32=y` (libseccomp adds the same check). On x86_64 and aarch64 the plugin gets one
//! program: a dispatch tree built here (architecture check, x32 guard, then a binary search
//! over the listed numbers, which answers `clone3` and every call refused whatever its
//! arguments), then `seccompiler`'s program of the calls with argument rules (`clone`,
//! `ioctl`). Its answers are those of the three programs it replaced (the x32 guard, the
//! `clone3` one and `seccompiler`'s full list, of which the kernel would take the strictest
//! answer); see `with_dispatch` for why, and for the tests that check it. On any other
//! architecture the three programs are installed as they are.

use std::collections::BTreeMap;

use seccompiler::{
    sock_filter, BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition,
    SeccompFilter, SeccompRule, TargetArch,
};
use serde::Deserialize;

mod table;

/// The `[seccomp]` table of a profile.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SeccompConfig {
    /// Install the filter (default true). `false` is for debugging only.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// What a refused call gets: `"errno"` (it fails with `EPERM`, the default) or `"kill"`
    /// (the whole plugin process dies of `SIGSYS`).
    #[serde(default)]
    pub action: SeccompActionKind,
    /// Calls removed from the deny list (e.g. `"io_uring_setup"`, or `"ioctl"` to drop the
    /// terminal-injection check).
    #[serde(default)]
    pub allow: Vec<SyscallName>,
    /// More calls refused, unconditionally.
    #[serde(default)]
    pub deny: Vec<SyscallName>,
}

impl Default for SeccompConfig {
    fn default() -> Self {
        SeccompConfig {
            enabled: true,
            action: SeccompActionKind::default(),
            allow: Vec::new(),
            deny: Vec::new(),
        }
    }
}

fn yes() -> bool {
    true
}

/// What the filter does with a refused call.
#[derive(Clone, Copy, Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum SeccompActionKind {
    /// The call fails with `EPERM`.
    #[default]
    Errno,
    /// The plugin process is killed (`SECCOMP_RET_KILL_PROCESS`, seen as `SIGSYS`).
    Kill,
}

/// A system call name known on x86_64 or aarch64 (checked when the profile is parsed).
#[derive(Clone, Debug, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(try_from = "String")]
pub struct SyscallName(String);

impl TryFrom<String> for SyscallName {
    type Error = String;
    fn try_from(s: String) -> Result<Self, String> {
        if known(&s) {
            Ok(SyscallName(s))
        } else {
            Err(format!(
                "'{s}' is not a system call name known on x86_64 or aarch64"
            ))
        }
    }
}

impl SyscallName {
    /// Builds a checked name.
    pub fn new(s: &str) -> Result<Self, String> {
        Self::try_from(s.to_string())
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// True when `name` is a system call of x86_64 or aarch64.
pub fn known(name: &str) -> bool {
    table::X86_64_NAMES.contains(&name) || table::AARCH64_NAMES.contains(&name)
}

/// How a denied call is matched.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Match {
    /// Always.
    Always,
    /// `clone` with any namespace flag in its first argument.
    CloneNamespaces,
    /// `ioctl` with `TIOCSTI` or `TIOCLINUX` as its request.
    TerminalInjection,
}

/// The default deny list (names; those missing on the build target are skipped).
pub const DEFAULT_DENY: &[&str] = &[
    // Mount table and namespaces.
    "mount",
    "umount",
    "umount2",
    "pivot_root",
    "chroot",
    "unshare",
    "setns",
    "fsopen",
    "fsconfig",
    "fsmount",
    "fspick",
    "move_mount",
    "open_tree",
    "mount_setattr",
    "clone",
    "clone3",
    // Other processes.
    "ptrace",
    "process_vm_readv",
    "process_vm_writev",
    "kcmp",
    "pidfd_getfd",
    // The kernel itself.
    "kexec_load",
    "kexec_file_load",
    "init_module",
    "finit_module",
    "delete_module",
    "create_module",
    "get_kernel_syms",
    "query_module",
    "bpf",
    "perf_event_open",
    "keyctl",
    "add_key",
    "request_key",
    "userfaultfd",
    "open_by_handle_at",
    "name_to_handle_at",
    "iopl",
    "ioperm",
    "swapon",
    "swapoff",
    "reboot",
    "acct",
    "quotactl",
    "quotactl_fd",
    "sethostname",
    "setdomainname",
    "settimeofday",
    "clock_settime",
    "adjtimex",
    "clock_adjtime",
    "syslog",
    "vhangup",
    "lookup_dcookie",
    "nfsservctl",
    "uselib",
    "_sysctl",
    "sysfs",
    "ustat",
    "vm86",
    "vm86old",
    "fanotify_init",
    "io_uring_setup",
    "io_uring_enter",
    "io_uring_register",
    // Terminal injection.
    "ioctl",
];

/// The namespace flags `clone` may not carry (Docker's mask, 0x7E020000).
const CLONE_NAMESPACE_FLAGS: [u64; 7] = [
    libc::CLONE_NEWNS as u64,
    libc::CLONE_NEWCGROUP as u64,
    libc::CLONE_NEWUTS as u64,
    libc::CLONE_NEWIPC as u64,
    libc::CLONE_NEWUSER as u64,
    libc::CLONE_NEWPID as u64,
    libc::CLONE_NEWNET as u64,
];

/// The ioctl requests that push input into a terminal or drive the console.
/// (`TIOCSTI` 0x5412, `TIOCLINUX` 0x541C: the same numbers on x86_64 and aarch64.)
const TERMINAL_INJECTION: [u64; 2] = [0x5412, 0x541C];

/// The calls refused and how they are matched, by name, after `allow` and `deny`.
fn deny_list(cfg: &SeccompConfig) -> BTreeMap<String, Match> {
    let mut out: BTreeMap<String, Match> = DEFAULT_DENY
        .iter()
        .map(|n| {
            let m = match *n {
                "clone" => Match::CloneNamespaces,
                "ioctl" => Match::TerminalInjection,
                _ => Match::Always,
            };
            (n.to_string(), m)
        })
        .collect();
    for a in &cfg.allow {
        out.remove(a.as_str());
    }
    for d in &cfg.deny {
        out.insert(d.as_str().to_string(), Match::Always);
    }
    out
}

/// The number of `name` in `table`, or `None` when the architecture has no such call.
fn number_in(name: &str, table: &[(&str, i64)]) -> Option<i64> {
    table.iter().find(|(n, _)| *n == name).map(|(_, nr)| *nr)
}

/// The number of `name` on the build target.
pub fn number(name: &str) -> Option<i64> {
    number_in(name, table::NATIVE)
}

/// The build target's name of call number `nr`, if it has one.
pub fn name_of(nr: i64) -> Option<&'static str> {
    table::NATIVE
        .iter()
        .find(|(_, n)| *n == nr)
        .map(|(name, _)| *name)
}

/// The BPF programs for `cfg`, in the order the child installs them. Empty when the
/// filter is turned off.
pub fn compile(cfg: &SeccompConfig) -> Result<Vec<BpfProgram>, String> {
    compile_native(cfg, true)
}

/// The programs `compile` made before the dispatch tree (the x32 guard, the `clone3` one and
/// `seccompiler`'s program of the whole list; the kernel takes the strictest answer), with
/// the same answers: for `benches/seccomp.rs`, which times installing each.
#[doc(hidden)]
pub fn compile_without_dispatch(cfg: &SeccompConfig) -> Result<Vec<BpfProgram>, String> {
    compile_native(cfg, false)
}

/// [`compile_for`] the build target's architecture and call numbers.
fn compile_native(cfg: &SeccompConfig, dispatch: bool) -> Result<Vec<BpfProgram>, String> {
    if !cfg.enabled {
        return Ok(Vec::new());
    }
    let arch = TargetArch::try_from(std::env::consts::ARCH).map_err(|_| {
        format!(
            "no seccomp filter for this architecture ({}): only x86_64 and aarch64 have \
             tables; set `[seccomp] enabled = false` to run without one",
            std::env::consts::ARCH
        )
    })?;
    compile_for(cfg, arch, table::NATIVE, dispatch)
}

/// The programs for `cfg` on `arch` with call numbers from `table`; `dispatch` puts the
/// dispatch tree in front of the main program (always, but for the tests' reference).
fn compile_for(
    cfg: &SeccompConfig,
    arch: TargetArch,
    table: &[(&str, i64)],
    dispatch: bool,
) -> Result<Vec<BpfProgram>, String> {
    let bad = |e: seccompiler::BackendError| format!("cannot compile the seccomp filter: {e}");
    let action = match cfg.action {
        SeccompActionKind::Errno => SeccompAction::Errno(libc::EPERM as u32),
        SeccompActionKind::Kill => SeccompAction::KillProcess,
    };
    let deny = deny_list(cfg);
    let explicit_clone3 = cfg.deny.iter().any(|d| d.as_str() == "clone3");
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
    let mut clone3: Option<i64> = None;
    for (name, how) in &deny {
        let Some(nr) = number_in(name, table) else {
            continue; // Not a call of this architecture (iopl on aarch64): nothing to refuse.
        };
        if name == "clone3" && !explicit_clone3 {
            clone3 = Some(nr);
            continue;
        }
        let chain = match how {
            Match::Always => Vec::new(),
            Match::CloneNamespaces => CLONE_NAMESPACE_FLAGS
                .iter()
                .map(|&f| masked_rule(0, f))
                .collect::<Result<_, _>>()
                .map_err(bad)?,
            Match::TerminalInjection => TERMINAL_INJECTION
                .iter()
                .map(|&req| eq_rule(1, req))
                .collect::<Result<_, _>>()
                .map_err(bad)?,
        };
        rules.insert(nr, chain);
    }
    let program = |rules: BTreeMap<i64, Vec<SeccompRule>>| -> Result<BpfProgram, String> {
        let f = SeccompFilter::new(rules, SeccompAction::Allow, action.clone(), arch);
        BpfProgram::try_from(f.map_err(bad)?).map_err(bad)
    };
    if let (Some(audit), true) = (audit_arch(arch), dispatch) {
        // One program: the dispatch tree answers for x32 calls, clone3 and every call refused
        // whatever its arguments, and hands the calls with argument rules to `seccompiler`'s
        // program of just those rules.
        let act = u32::from(action.clone());
        let enosys = libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32;
        let mut listed: Vec<(u32, Target)> = rules
            .iter()
            .map(|(nr, chain)| {
                let to = if chain.is_empty() {
                    Target::Ret(act)
                } else {
                    Target::Main
                };
                (*nr as u32, to)
            })
            .collect();
        listed.extend(clone3.map(|nr| (nr as u32, Target::Ret(enosys))));
        let x32 = (arch == TargetArch::x86_64).then_some(act);
        let mut rules = rules;
        rules.retain(|_, chain| !chain.is_empty());
        return Ok(vec![with_dispatch(program(rules)?, audit, x32, listed)?]);
    }
    let mut out = Vec::new();
    if arch == TargetArch::x86_64 {
        out.push(x32_guard(&action));
    }
    if let Some(nr) = clone3 {
        let f = SeccompFilter::new(
            [(nr, Vec::new())].into_iter().collect(),
            SeccompAction::Allow,
            SeccompAction::Errno(libc::ENOSYS as u32),
            arch,
        )
        .map_err(bad)?;
        out.push(BpfProgram::try_from(f).map_err(bad)?);
    }
    out.push(program(rules)?);
    Ok(out)
}

/// Where the dispatch tree sends a listed call number.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Target {
    /// Answer this (an action of `SECCOMP_RET_*`).
    Ret(u32),
    /// Into `seccompiler`'s program, which judges the arguments.
    Main,
}

/// The `seccomp_data.arch` value of `arch`; `None` for an architecture this file does not
/// know, whose main program then goes without a dispatch tree.
fn audit_arch(arch: TargetArch) -> Option<u32> {
    match arch {
        TargetArch::x86_64 => Some(AUDIT_ARCH_X86_64),
        TargetArch::aarch64 => Some(AUDIT_ARCH_AARCH64),
        TargetArch::riscv64 => None,
    }
}

/// The dispatch tree, then `main` (`seccompiler`'s program of the calls with argument
/// rules): the one program the plugin gets on an architecture this file knows.
///
/// `seccompiler` emits one comparison per listed call, one after the other. When a filter is
/// installed, the kernel works out which calls it allows whatever their arguments (the
/// seccomp action cache): it runs each program once for every system call number, so the
/// default list (367 instructions) cost ~460 walks down the chain on every sandbox start,
/// and each program installed costs a conversion and a JIT compile. `cargo bench --bench
/// seccomp` on the 2-vCPU CI machine: 222 µs for the three programs of before (the x32
/// guard, `clone3`, the full list), 65 µs for this one (180 instructions).
///
/// The tree compares the call number (as an unsigned 32-bit value, as the kernel does):
/// - another architecture goes to `main` unchanged, whose own check kills it;
/// - on x86_64, an x32 call (bit 30 set) gets `x32`, the profile's action;
/// - a listed number goes to its [`Target`]: an answer (the profile's action for a call
///   refused whatever its arguments, `ENOSYS` for `clone3`), or `main` for a call with
///   argument rules (`clone`'s flags, `ioctl`'s requests);
/// - any other number is allowed, as every one of the three programs would.
///
/// So the answer is, for every input, the strictest answer of the three programs of
/// before; `tests::dispatch_answers_as_the_three_programs_do` checks that over every number,
/// several architectures and argument sets, for several profiles. Each decision takes a
/// binary search over leaves of up to 8 numbers. Jumps: a conditional jump goes at most 10
/// instructions ahead, and every longer one is an unconditional `BPF_JA`, whose offset has
/// 32 bits, so no tree outgrows the 8-bit offsets of classic BPF.
fn with_dispatch(
    main: BpfProgram,
    audit: u32,
    x32: Option<u32>,
    mut listed: Vec<(u32, Target)>,
) -> Result<BpfProgram, String> {
    /// Where a jump to the main program goes, patched once the tree's length is known.
    const TO_MAIN: u32 = u32::MAX;
    /// The most numbers a leaf compares, one after the other.
    const LEAF: usize = 8;
    listed.sort_unstable();
    listed.dedup_by_key(|(nr, _)| *nr);

    // The tree over `set` (sorted): a leaf compares its numbers one after the other, then
    // allows; its targets follow. A node splits the set in two halves of whole leaves.
    fn tree(set: &[(u32, Target)], out: &mut Vec<sock_filter>) {
        if set.len() <= LEAF {
            let mut targets: Vec<Target> = set.iter().map(|(_, t)| *t).collect();
            targets.sort_unstable();
            targets.dedup();
            let m = set.len();
            for (i, (nr, t)) in set.iter().enumerate() {
                // From compare i, the targets start m - i instructions ahead (past the
                // remaining compares and the allow).
                let at = targets
                    .iter()
                    .position(|x| x == t)
                    .expect("a target of the leaf");
                out.push(ins(BPF_JEQ_K, (m - i + at) as u8, 0, *nr));
            }
            out.push(ins(BPF_RET_K, 0, 0, libc::SECCOMP_RET_ALLOW));
            for t in targets {
                out.push(match t {
                    Target::Ret(r) => ins(BPF_RET_K, 0, 0, r),
                    Target::Main => ins(BPF_JA, 0, 0, TO_MAIN),
                });
            }
            return;
        }
        let leaves = set.len().div_ceil(LEAF);
        let (left, right) = set.split_at(leaves / 2 * LEAF);
        // above the left half's largest ? the right half : the left half
        out.push(ins(BPF_JGT_K, 0, 1, left[left.len() - 1].0));
        let over = out.len();
        out.push(ins(BPF_JA, 0, 0, 0));
        tree(left, out);
        out[over].k = (out.len() - over - 1) as u32;
        tree(right, out);
    }

    let mut out = vec![
        ins(BPF_LD_W_ABS, 0, 0, 4), // seccomp_data.arch
        ins(BPF_JEQ_K, 1, 0, audit),
        ins(BPF_JA, 0, 0, TO_MAIN),
        ins(BPF_LD_W_ABS, 0, 0, 0), // seccomp_data.nr
    ];
    if let Some(action) = x32 {
        out.push(ins(BPF_JGE_K, 0, 1, X32_SYSCALL_BIT));
        out.push(ins(BPF_RET_K, 0, 0, action));
    }
    tree(&listed, &mut out);
    let start = out.len();
    for (pc, i) in out.iter_mut().enumerate() {
        if i.code == BPF_JA && i.k == TO_MAIN {
            i.k = (start - pc - 1) as u32;
        }
    }
    out.extend(main);
    // The kernel takes at most BPF_MAXINSNS (4096) instructions per program.
    if out.len() > libc::BPF_MAXINSNS as usize {
        return Err(format!(
            "the seccomp filter has {} instructions, more than the kernel takes ({})",
            out.len(),
            libc::BPF_MAXINSNS
        ));
    }
    Ok(out)
}

/// A rule matching when argument `arg` (its low 32 bits) equals `v`: `ioctl`'s request is an
/// `unsigned int`, so the upper half, which the kernel ignores, must not dodge the match.
fn eq_rule(arg: u8, v: u64) -> Result<SeccompRule, seccompiler::BackendError> {
    SeccompRule::new(vec![SeccompCondition::new(
        arg,
        SeccompCmpArgLen::Dword,
        SeccompCmpOp::Eq,
        v,
    )?])
}

/// A rule matching when bit `flag` is set in argument `arg`.
fn masked_rule(arg: u8, flag: u64) -> Result<SeccompRule, seccompiler::BackendError> {
    SeccompRule::new(vec![SeccompCondition::new(
        arg,
        SeccompCmpArgLen::Qword,
        SeccompCmpOp::MaskedEq(flag),
        flag,
    )?])
}

/// One classic-BPF instruction.
const fn ins(code: u16, jt: u8, jf: u8, k: u32) -> sock_filter {
    sock_filter { code, jt, jf, k }
}

const BPF_LD_W_ABS: u16 = (libc::BPF_LD | libc::BPF_W | libc::BPF_ABS) as u16;
const BPF_JEQ_K: u16 = (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16;
const BPF_JGE_K: u16 = (libc::BPF_JMP | libc::BPF_JGE | libc::BPF_K) as u16;
const BPF_JGT_K: u16 = (libc::BPF_JMP | libc::BPF_JGT | libc::BPF_K) as u16;
const BPF_JA: u16 = (libc::BPF_JMP | libc::BPF_JA) as u16;
const BPF_RET_K: u16 = (libc::BPF_RET | libc::BPF_K) as u16;
/// `AUDIT_ARCH_X86_64`.
const AUDIT_ARCH_X86_64: u32 = 62 | 0x8000_0000 | 0x4000_0000;
/// `AUDIT_ARCH_AARCH64`.
const AUDIT_ARCH_AARCH64: u32 = 183 | 0x8000_0000 | 0x4000_0000;
/// Bit 30 of the syscall number marks an x32 call.
const X32_SYSCALL_BIT: u32 = 0x4000_0000;

/// Refuses every x32 call (x86_64 only; other architectures pass, the main program's own
/// architecture check deals with them).
fn x32_guard(action: &SeccompAction) -> BpfProgram {
    vec![
        ins(BPF_LD_W_ABS, 0, 0, 4), // seccomp_data.arch
        ins(BPF_JEQ_K, 0, 3, AUDIT_ARCH_X86_64),
        ins(BPF_LD_W_ABS, 0, 0, 0), // seccomp_data.nr
        ins(BPF_JGE_K, 0, 1, X32_SYSCALL_BIT),
        ins(BPF_RET_K, 0, 0, u32::from(action.clone())),
        ins(BPF_RET_K, 0, 0, libc::SECCOMP_RET_ALLOW),
    ]
}

/// What a death by `SIGSYS` means in a sandbox, for diagnoses.
///
/// The kernel reports the refused call to the dying process only (in the `SIGSYS` siginfo,
/// which nobody sees under `SECCOMP_RET_KILL_PROCESS`) and to the audit log (`type=1326 ...
/// syscall=N` in `dmesg` or `audit.log`); the wait status the parent gets holds only the
/// signal, so the call is named by the audit record, not here.
pub fn describe_sigsys() -> &'static str {
    "the seccomp filter refused a system call (action = \"kill\"); the kernel's audit \
     log names it (dmesg: `type=1326 ... syscall=N`)"
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tiny classic-BPF interpreter over `seccomp_data`, enough for these programs.
    fn run(prog: &[sock_filter], nr: i64, arch: u32, args: [u64; 6]) -> u32 {
        run_counting(prog, nr, arch, args).0
    }

    /// [`run`], with the number of instructions it went through.
    fn run_counting(prog: &[sock_filter], nr: i64, arch: u32, args: [u64; 6]) -> (u32, usize) {
        let mut data = [0u8; 64];
        data[0..4].copy_from_slice(&(nr as u32).to_ne_bytes());
        data[4..8].copy_from_slice(&arch.to_ne_bytes());
        for (i, a) in args.iter().enumerate() {
            data[16 + 8 * i..24 + 8 * i].copy_from_slice(&a.to_ne_bytes());
        }
        let (mut acc, mut pc, mut steps) = (0u32, 0usize, 0usize);
        loop {
            let i = &prog[pc];
            pc += 1;
            steps += 1;
            match i.code {
                c if c == BPF_LD_W_ABS => {
                    let k = i.k as usize;
                    acc = u32::from_ne_bytes(data[k..k + 4].try_into().unwrap());
                }
                c if c == (libc::BPF_ALU | libc::BPF_AND | libc::BPF_K) as u16 => acc &= i.k,
                c if c == (libc::BPF_JMP | libc::BPF_JA) as u16 => pc += i.k as usize,
                c if c & 0x07 == libc::BPF_JMP as u16 => {
                    let t = match c & 0xf0 {
                        x if x == libc::BPF_JEQ as u16 => acc == i.k,
                        x if x == libc::BPF_JGT as u16 => acc > i.k,
                        x if x == libc::BPF_JGE as u16 => acc >= i.k,
                        x if x == libc::BPF_JSET as u16 => acc & i.k != 0,
                        x => panic!("jump {x:#x}"),
                    };
                    pc += if t { i.jt } else { i.jf } as usize;
                }
                c if c == BPF_RET_K => return (i.k, steps),
                c => panic!("opcode {c:#x}"),
            }
        }
    }

    /// The kernel's answer over all programs: the strictest action wins.
    fn verdict(progs: &[BpfProgram], nr: i64, arch: u32, args: [u64; 6]) -> u32 {
        let rank = |r: u32| match r & libc::SECCOMP_RET_ACTION_FULL {
            libc::SECCOMP_RET_KILL_PROCESS => 0,
            libc::SECCOMP_RET_ERRNO => 3,
            libc::SECCOMP_RET_ALLOW => 9,
            _ => 5,
        };
        progs
            .iter()
            .map(|p| run(p, nr, arch, args))
            .min_by_key(|r| rank(*r))
            .unwrap()
    }

    const EPERM: u32 = libc::SECCOMP_RET_ERRNO | libc::EPERM as u32;
    const ENOSYS: u32 = libc::SECCOMP_RET_ERRNO | libc::ENOSYS as u32;
    const ALLOW: u32 = libc::SECCOMP_RET_ALLOW;
    const KILL: u32 = libc::SECCOMP_RET_KILL_PROCESS;

    fn cfg(toml_text: &str) -> SeccompConfig {
        toml::from_str(toml_text).unwrap()
    }

    #[cfg(target_arch = "x86_64")]
    const ARCH: u32 = AUDIT_ARCH_X86_64;
    #[cfg(target_arch = "aarch64")]
    const ARCH: u32 = AUDIT_ARCH_AARCH64;

    #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
    #[test]
    fn default_filter_refuses_the_list_and_allows_the_rest() {
        let progs = compile(&SeccompConfig::default()).unwrap();
        let n = |s: &str| number(s).unwrap();
        for name in DEFAULT_DENY {
            let Some(nr) = number(name) else { continue };
            let want = match *name {
                "clone3" => ENOSYS,
                "clone" | "ioctl" => ALLOW, // only with the flags or requests below
                _ => EPERM,
            };
            assert_eq!(verdict(&progs, nr, ARCH, [0; 6]), want, "{name}");
        }
        for ok in [
            "read",
            "write",
            "openat",
            "execve",
            "exit_group",
            "mmap",
            "futex",
        ] {
            assert_eq!(verdict(&progs, n(ok), ARCH, [0; 6]), ALLOW, "{ok}");
        }
        // clone: a plain fork or thread passes, any namespace flag is refused.
        let thread = (libc::CLONE_VM | libc::CLONE_THREAD | libc::CLONE_SIGHAND) as u64;
        assert_eq!(
            verdict(&progs, n("clone"), ARCH, [thread, 0, 0, 0, 0, 0]),
            ALLOW
        );
        for f in CLONE_NAMESPACE_FLAGS {
            let args = [f | libc::SIGCHLD as u64, 0, 0, 0, 0, 0];
            assert_eq!(verdict(&progs, n("clone"), ARCH, args), EPERM, "{f:#x}");
        }
        // ioctl: TIOCSTI/TIOCLINUX refused, also with junk in the upper half; others pass.
        let ioctl = n("ioctl");
        for req in [0x5412, 0x541C, 0xdead_0000_0000_0000 | 0x5412] {
            assert_eq!(verdict(&progs, ioctl, ARCH, [0, req, 0, 0, 0, 0]), EPERM);
        }
        let tcgets = 0x5401; // TCGETS
        assert_eq!(verdict(&progs, ioctl, ARCH, [0, tcgets, 0, 0, 0, 0]), ALLOW);
        // Any other architecture is killed.
        assert_eq!(verdict(&progs, 0, 0x4000_0003, [0; 6]), KILL);
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn x32_calls_are_refused() {
        let progs = compile(&SeccompConfig::default()).unwrap();
        let mount = number("mount").unwrap() | 0x4000_0000;
        assert_eq!(verdict(&progs, mount, ARCH, [0; 6]), EPERM);
        let getpid = number("getpid").unwrap() | 0x4000_0000;
        assert_eq!(verdict(&progs, getpid, ARCH, [0; 6]), EPERM);
        let kill = compile(&cfg("action = \"kill\"")).unwrap();
        assert_eq!(verdict(&kill, getpid, ARCH, [0; 6]), KILL);
    }

    #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
    #[test]
    fn allow_deny_and_kill() {
        let c = cfg("action = \"kill\"\nallow = [\"ptrace\", \"clone3\"]\ndeny = [\"mkdirat\"]");
        let progs = compile(&c).unwrap();
        let n = |s: &str| number(s).unwrap();
        assert_eq!(verdict(&progs, n("ptrace"), ARCH, [0; 6]), ALLOW);
        assert_eq!(verdict(&progs, n("clone3"), ARCH, [0; 6]), ALLOW);
        assert_eq!(verdict(&progs, n("mkdirat"), ARCH, [0; 6]), KILL);
        assert_eq!(verdict(&progs, n("mount"), ARCH, [0; 6]), KILL);
        // clone3 stays ENOSYS under kill: glibc must be able to fall back to clone.
        let progs = compile(&cfg("action = \"kill\"")).unwrap();
        assert_eq!(verdict(&progs, n("clone3"), ARCH, [0; 6]), ENOSYS);
        // deny of a conditional call makes it unconditional.
        let progs = compile(&cfg("deny = [\"ioctl\"]")).unwrap();
        assert_eq!(verdict(&progs, n("ioctl"), ARCH, [0; 6]), EPERM);
        assert!(compile(&cfg("enabled = false")).unwrap().is_empty());
    }

    /// The profiles the dispatch tests compile: the default, kill, fewer and more calls
    /// refused, every conditional call made unconditional, and nearly every call refused
    /// (a tree of ~400 leaves, whose jumps need the 32-bit offsets).
    fn dispatch_profiles() -> Vec<SeccompConfig> {
        let nearly_all: Vec<String> = table::NATIVE
            .iter()
            .map(|(n, _)| format!("{n:?}"))
            .filter(|n| !["\"exit_group\"", "\"read\""].contains(&n.as_str()))
            .collect();
        vec![
            SeccompConfig::default(),
            cfg("action = \"kill\""),
            cfg("allow = [\"ptrace\", \"clone3\", \"ioctl\", \"mount\"]"),
            cfg("deny = [\"ioctl\", \"clone\", \"mkdirat\", \"getpid\"]"),
            cfg(&format!("deny = [{}]", nearly_all.join(", "))),
        ]
    }

    /// The inputs the dispatch tests try: every number up to 1023 and their x32 forms, the
    /// extremes, on this architecture, i386, the other of x86_64/aarch64 and junk, each with
    /// argument sets that hit and miss every argument rule.
    fn dispatch_inputs() -> Vec<(i64, u32, [u64; 6])> {
        let mut nrs: Vec<i64> = (0..1024).collect();
        nrs.extend((0..1024).step_by(7).map(|n| n | 0x4000_0000));
        nrs.extend([0x7fff_ffff, 0x8000_0000, 0xffff_ffff, 0x4000_0000 - 1]);
        let mut args: Vec<[u64; 6]> = vec![[0; 6]];
        for f in CLONE_NAMESPACE_FLAGS {
            args.push([f | libc::SIGCHLD as u64, 0, 0, 0, 0, 0]);
        }
        for req in [0x5412, 0x541C, 0xdead_0000_0000_5412, 0x5401] {
            args.push([0, req, 0, 0, 0, 0]);
        }
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..4 {
            let mut a = [0u64; 6];
            for v in &mut a {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                *v = x;
            }
            args.push(a);
        }
        let archs = [
            ARCH,
            0x4000_0003, // i386
            AUDIT_ARCH_X86_64 ^ AUDIT_ARCH_AARCH64 ^ ARCH,
            0,
        ];
        let mut out = Vec::new();
        for &nr in &nrs {
            for &arch in &archs {
                // Arguments only matter to the conditional calls; the rest get two sets.
                let n = if arch == ARCH { args.len() } else { 2 };
                for a in &args[..n] {
                    out.push((nr, arch, *a));
                }
            }
        }
        out
    }

    #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
    #[test]
    fn dispatch_answers_as_the_three_programs_do() {
        let arch = TargetArch::try_from(std::env::consts::ARCH).unwrap();
        let inputs = dispatch_inputs();
        for c in dispatch_profiles() {
            let with = compile_for(&c, arch, table::NATIVE, true).unwrap();
            let without = compile_for(&c, arch, table::NATIVE, false).unwrap();
            assert_eq!(with.len(), 1, "one program with the tree: {c:?}");
            assert!(!without.is_empty());
            let one = &with[0];
            let tree_head = [(BPF_LD_W_ABS, 4), (BPF_JEQ_K, ARCH), (BPF_JA, one[2].k)];
            let head: Vec<(u16, u32)> = one[..3].iter().map(|i| (i.code, i.k)).collect();
            assert_eq!(head, tree_head, "no tree in front: {c:?}");
            assert!(one.len() <= libc::BPF_MAXINSNS as usize);
            for &(nr, a, args) in &inputs {
                assert_eq!(
                    verdict(&with, nr, a, args),
                    verdict(&without, nr, a, args),
                    "nr {nr:#x} arch {a:#x} args {args:x?} with {c:?}"
                );
            }
        }
    }

    /// What the tree is for: the kernel's action cache runs the program for every call
    /// number at install, and the plugin's uncached calls run it too. With the tree a
    /// number costs a few steps, not a walk down the list.
    #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
    #[test]
    fn dispatch_decides_each_number_in_a_few_steps() {
        let arch = TargetArch::try_from(std::env::consts::ARCH).unwrap();
        for c in dispatch_profiles() {
            let with = compile_for(&c, arch, table::NATIVE, true).unwrap();
            let without = compile_for(&c, arch, table::NATIVE, false).unwrap();
            let (one, reference) = (&with[0], without.last().unwrap());
            // A binary search over leaves of 8: two steps a level, a leaf's compares, the
            // head (architecture, number, x32).
            let leaves = one.len().div_ceil(8);
            let bound = 2 * (usize::BITS - leaves.leading_zeros()) as usize + 8 + 8;
            let (mut steps, mut reference_steps) = (0, 0);
            for nr in 0..512 {
                let (verdict, n) = run_counting(one, nr, ARCH, [0; 6]);
                // Numbers with argument rules continue into seccompiler's program.
                if !["clone", "ioctl"].contains(&name_of(nr).unwrap_or("")) {
                    assert!(n <= bound, "nr {nr}: {n} steps ({verdict:#x}) with {c:?}");
                }
                steps += n;
                reference_steps += run_counting(reference, nr, ARCH, [0; 6]).1;
            }
            assert!(
                steps * 4 < reference_steps,
                "{steps} steps against {reference_steps} without the tree, with {c:?}"
            );
        }
    }

    #[test]
    fn names_are_checked_and_missing_ones_skipped_per_arch() {
        let e = toml::from_str::<SeccompConfig>("deny = [\"mkdri\"]").unwrap_err();
        assert!(
            e.to_string().contains("'mkdri' is not a system call name"),
            "{e}"
        );
        let e = toml::from_str::<SeccompConfig>("bogus = 1").unwrap_err();
        assert!(e.to_string().contains("bogus"), "{e}");
        // Known on x86_64 only: valid in a profile anywhere, skipped on aarch64.
        assert!(known("iopl") && !table::AARCH64_NAMES.contains(&"iopl"));
        let aarch64_like: &[(&str, i64)] = &[("mount", 40), ("ioctl", 29)];
        let c = cfg("deny = [\"iopl\", \"mkdir\"]");
        let progs = compile_for(&c, TargetArch::aarch64, aarch64_like, true).unwrap();
        let a64 = AUDIT_ARCH_AARCH64;
        assert_eq!(verdict(&progs, 40, a64, [0; 6]), EPERM);
        assert_eq!(verdict(&progs, 29, a64, [0, 0x5412, 0, 0, 0, 0]), EPERM);
        assert_eq!(verdict(&progs, 30, a64, [0; 6]), ALLOW);
        // Every native entry is a known name of its arch.
        for (name, _) in table::NATIVE {
            assert!(known(name), "{name}");
        }
        assert!(describe_sigsys().contains("seccomp filter"));
    }
}
