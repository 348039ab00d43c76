//! seccomp, rlimits and Landlock, as root: each test runs a command inside the sandbox that
//! tries one forbidden thing and asserts it was refused, and, where it can, a control run
//! with that layer off that shows the same command gets through (so the denial is the
//! layer's, not a missing capability's).
#![allow(clippy::await_holding_lock)] // serial(): one test at a time, each on its own runtime

mod common;
use common::*;

use sandbox_runner::seccomp::number;
use sandbox_runner::{AttachedRunner, ExitStatus, Profile, Runner, SandboxRunner};
use std::path::Path;

/// Writes a profile that extends the default one with `extra`, returns its path.
fn profile(dir: &Path, name: &str, extra: &str) -> String {
    let p = dir.join(name);
    std::fs::write(&p, format!("extends = \"default\"\n{extra}")).unwrap();
    p.to_str().unwrap().to_string()
}

/// Capabilities kept in the seccomp probes, so that only the filter stands between the
/// plugin and each call (every probe's arguments make the call fail harmlessly when it is
/// let through). Host ids (`userns = false`): in a user namespace the capabilities would be
/// the namespace's, and the kernel itself would refuse most calls with EPERM.
const PROBE_CAPS: &str =
    "userns = false\nkeep_capabilities = [\"CAP_SYS_ADMIN\", \"CAP_SYS_PTRACE\", \
    \"CAP_SYS_MODULE\", \"CAP_SYS_BOOT\", \"CAP_SYS_TIME\", \"CAP_SYS_RAWIO\", \
    \"CAP_SYS_PACCT\", \"CAP_DAC_READ_SEARCH\", \"CAP_SYSLOG\", \"CAP_BPF\", \
    \"CAP_PERFMON\"]\n[landlock]\nmode = \"off\"\n";

/// `(label, syscall name, Python arguments)`: each call with arguments the kernel rejects
/// (bad flags, a bad fd, a missing path, a NULL pointer) when the filter lets it through.
const PROBES: &[(&str, &str, &str)] = &[
    (
        "mount",
        "mount",
        "S('none'), S('/nonexistent'), S('tmpfs'), 0, 0",
    ),
    ("umount2", "umount2", "S('/nonexistent'), 0"),
    (
        "pivot_root",
        "pivot_root",
        "S('/nonexistent'), S('/nonexistent')",
    ),
    ("chroot", "chroot", "S('/nonexistent')"),
    ("unshare", "unshare", "1"),
    ("setns", "setns", "-1, 0"),
    ("clone:NEWNS", "clone", "0x00020000 | 0x10000, 0, 0, 0, 0"),
    (
        "clone:NEWCGROUP",
        "clone",
        "0x02000000 | 0x10000, 0, 0, 0, 0",
    ),
    ("clone:NEWUTS", "clone", "0x04000000 | 0x10000, 0, 0, 0, 0"),
    ("clone:NEWIPC", "clone", "0x08000000 | 0x10000, 0, 0, 0, 0"),
    ("clone:NEWUSER", "clone", "0x10000000 | 0x10000, 0, 0, 0, 0"),
    ("clone:NEWPID", "clone", "0x20000000 | 0x10000, 0, 0, 0, 0"),
    ("clone:NEWNET", "clone", "0x40000000 | 0x10000, 0, 0, 0, 0"),
    ("ptrace", "ptrace", "16, 999999999, 0, 0"),
    ("process_vm_readv", "process_vm_readv", "1, 0, 0, 0, 0, 1"),
    ("process_vm_writev", "process_vm_writev", "1, 0, 0, 0, 0, 1"),
    ("kexec_load", "kexec_load", "0, 0, 0, 0xdead0000"),
    (
        "kexec_file_load",
        "kexec_file_load",
        "-1, -1, 0, 0, 0xdead0000",
    ),
    ("init_module", "init_module", "0, 0, S('')"),
    ("finit_module", "finit_module", "-1, S(''), 0"),
    ("delete_module", "delete_module", "S('no_such_module_x'), 0"),
    ("bpf", "bpf", "9999, 0, 0"),
    ("perf_event_open", "perf_event_open", "0, 0, -1, -1, 0"),
    ("keyctl", "keyctl", "9999, 0, 0, 0, 0"),
    ("add_key", "add_key", "0, 0, 0, 0, 0"),
    ("request_key", "request_key", "0, 0, 0, 0"),
    ("userfaultfd", "userfaultfd", "0xffff"),
    ("open_by_handle_at", "open_by_handle_at", "-1, 0, 0"),
    ("name_to_handle_at", "name_to_handle_at", "-1, 0, 0, 0, 0"),
    ("iopl", "iopl", "4"),
    ("ioperm", "ioperm", "0, 0, 1"),
    ("swapon", "swapon", "0, 0"),
    ("swapoff", "swapoff", "S('/nonexistent')"),
    ("reboot", "reboot", "0, 0, 0, 0"),
    ("acct", "acct", "S('/nonexistent')"),
    ("quotactl", "quotactl", "0, 0, 0, 0"),
    ("sethostname", "sethostname", "0, 65"),
    ("setdomainname", "setdomainname", "0, 65"),
    ("settimeofday", "settimeofday", "0, 0"),
    ("clock_settime", "clock_settime", "9999, 0"),
    ("adjtimex", "adjtimex", "0"),
    ("clock_adjtime", "clock_adjtime", "9999, 0"),
    ("ioctl:TIOCSTI", "ioctl", "-1, 0x5412, 0"),
    ("ioctl:TIOCSTI+high-bits", "ioctl", "-1, 0x100005412, 0"),
    ("ioctl:TIOCLINUX", "ioctl", "-1, 0x541C, 0"),
    ("syslog", "syslog", "9999, 0, 0"),
    ("io_uring_setup", "io_uring_setup", "0, 0"),
    ("fsopen", "fsopen", "0, 0"),
    ("open_tree", "open_tree", "-1, 0, 0"),
    ("move_mount", "move_mount", "-1, 0, -1, 0, 0"),
    ("mount_setattr", "mount_setattr", "-1, 0, 0, 0, 0"),
    ("kcmp", "kcmp", "999999999, 999999999, 0, 0, 0"),
    ("pidfd_getfd", "pidfd_getfd", "-1, 0, 0"),
];

/// Calls the filter must let through, in both runs (what the program needs).
const PASSING: &[(&str, &str, &str)] = &[
    ("clone:thread-flags", "clone", "0x10000, 0, 0, 0, 0"),
    ("ioctl:TCGETS", "ioctl", "-1, 0x5401, 0"),
    ("getpid", "getpid", ""),
];

/// A Python program that makes each call and prints `label ERRNO_NAME` (or `label OK`).
fn probe_script(calls: &[(&str, &str, &str)]) -> String {
    let mut s = String::from(
        "import ctypes, errno\n\
         libc = ctypes.CDLL(None, use_errno=True)\n\
         libc.syscall.restype = ctypes.c_long\n\
         def S(x): return ctypes.c_char_p(x.encode())\n\
         def call(label, nr, *args):\n\
         \x20   a = [ctypes.c_long(x) if isinstance(x, int) else x for x in args]\n\
         \x20   ctypes.set_errno(0)\n\
         \x20   r = libc.syscall(ctypes.c_long(nr), *a)\n\
         \x20   e = ctypes.get_errno()\n\
         \x20   print(label, 'OK' if r != -1 else errno.errorcode.get(e, str(e)), flush=True)\n",
    );
    for (label, name, args) in calls {
        if let Some(nr) = number(name) {
            let sep = if args.is_empty() { "" } else { ", " };
            s.push_str(&format!("call('{label}', {nr}{sep}{args})\n"));
        }
    }
    s
}

/// The probe profiles in `dir`: the filter on, and the control with it off (both with
/// [`PROBE_CAPS`]).
fn probe_profiles(dir: &Path) -> (String, String) {
    let on = profile(dir, "on.toml", PROBE_CAPS);
    let off = profile(
        dir,
        "off.toml",
        &format!("{PROBE_CAPS}[seccomp]\nenabled = false\n"),
    );
    (on, off)
}

/// Runs the probe under `profile` and returns `label -> result`.
fn probe(profile: &str, calls: &[(&str, &str, &str)]) -> Vec<(String, String)> {
    run_probe(profile, &probe_script(calls))
}

/// Runs a probe script (see [`probe_script`]) under `profile`: `label -> result`.
fn run_probe(profile: &str, script: &str) -> Vec<(String, String)> {
    let o = run(&["--profile", profile, "--", "python3", "-c", script]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    stdout(&o)
        .lines()
        .map(|l| {
            let (a, b) = l.split_once(' ').unwrap();
            (a.to_string(), b.to_string())
        })
        .collect()
}

#[test]
fn seccomp_refuses_the_docker_list_with_eperm_even_with_capabilities() {
    let _g = serial();
    if !privileged() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (on, off) = probe_profiles(dir.path());
    let before = HostState::take();
    let filtered = probe(&on, PROBES);
    let control = probe(&off, PROBES);
    before.assert_unchanged();
    let expected = PROBES.iter().filter(|p| number(p.1).is_some()).count();
    assert_eq!(filtered.len(), expected, "{filtered:?}");
    assert_eq!(control.len(), expected, "{control:?}");
    let mut refused = Vec::new();
    for ((label, got), (_, kernel)) in filtered.iter().zip(&control) {
        assert_eq!(got, "EPERM", "{label}: the filter let it through ({got})");
        // Without the filter the kernel answers for itself (EINVAL, EBADF, ENOENT, ...):
        // the EPERM above is the filter's, not a missing capability's.
        assert_ne!(kernel, "EPERM", "{label}: the control run cannot tell");
        refused.push(label.as_str());
    }
    assert!(refused.len() >= 45, "{refused:?}");
    // clone3 is ENOSYS (glibc then falls back to clone); harmless calls pass.
    let r = probe(&on, &[("clone3", "clone3", "0, 0")]);
    assert_eq!(r, [("clone3".to_string(), "ENOSYS".to_string())]);
    let r = probe(&off, &[("clone3", "clone3", "0, 0")]);
    assert_eq!(r, [("clone3".to_string(), "EINVAL".to_string())]);
    for (label, got) in probe(&on, PASSING) {
        assert_ne!(got, "EPERM", "{label} must pass the filter");
    }
}

/// x86_64's x32 calls carry bit 30 in their number and share its architecture value: the
/// filter refuses every one. Probed with numbers, since the names are x86_64's: the x32
/// forms of `getpid` (harmless) and `mount`. Without the filter the kernel answers for
/// itself: ENOSYS where x32 is off, or the call's own answer.
#[cfg(target_arch = "x86_64")]
#[test]
fn seccomp_refuses_x32_calls() {
    let _g = serial();
    if !privileged() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (on, off) = probe_profiles(dir.path());
    let x32 = 0x4000_0000;
    let script = format!(
        "{}call('x32:getpid', {})\ncall('x32:mount', {}, S('none'), S('/nonexistent'), \
         S('tmpfs'), 0, 0)\ncall('getpid', {})\n",
        probe_script(&[]),
        x32 | number("getpid").unwrap(),
        x32 | number("mount").unwrap(),
        number("getpid").unwrap(),
    );
    let filtered = run_probe(&on, &script);
    let control = run_probe(&off, &script);
    let want = |x: &str, getpid: &str| {
        vec![
            ("x32:getpid".to_string(), x.to_string()),
            ("x32:mount".to_string(), x.to_string()),
            ("getpid".to_string(), getpid.to_string()),
        ]
    };
    assert_eq!(filtered, want("EPERM", "OK"));
    for (label, kernel) in &control[..2] {
        assert_ne!(kernel, "EPERM", "{label}: the control run cannot tell");
    }
    let kill = profile(
        dir.path(),
        "kill.toml",
        &format!("{PROBE_CAPS}[seccomp]\naction = \"kill\"\n"),
    );
    let o = run(&["--profile", &kill, "--", "python3", "-c", &script]);
    assert_eq!(o.status.code(), Some(128 + libc::SIGSYS), "{}", stderr(&o));
}

/// Runs `script` under `sh -c` with `profile` and returns (stdout, stderr).
fn sh(profile: &str, script: &str) -> (String, String) {
    let o = run(&["--profile", profile, "--", "sh", "-c", script]);
    (stdout(&o), stderr(&o))
}

#[test]
fn mount_unshare_and_setns_tools_are_refused() {
    let _g = serial();
    if !privileged() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    // CAP_SYS_ADMIN kept and Landlock off: only the filter stops these.
    let on = profile(dir.path(), "on.toml", PROBE_CAPS);
    let off = profile(
        dir.path(),
        "off.toml",
        &format!("{PROBE_CAPS}[seccomp]\nenabled = false\n"),
    );
    let cmds = [
        "mount -t tmpfs none /tmp",
        "unshare -U true",
        "unshare -m true",
        "unshare -n true",
        "nsenter -t 1 -m true",
    ];
    let before = HostState::take();
    for cmd in cmds {
        let (out, err) = sh(&on, &format!("{cmd} 2>&1; echo rc=$?"));
        assert!(!out.contains("rc=0"), "`{cmd}` succeeded: {out} {err}");
        assert!(
            out.contains("Operation not permitted") || out.contains("permission denied"),
            "`{cmd}`: {out}"
        );
    }
    // The control: with the filter off (and the capability kept) they work, inside the
    // sandbox's own namespaces.
    for cmd in &cmds[..4] {
        let (out, _) = sh(&off, &format!("{cmd} 2>&1; echo rc=$?"));
        assert!(out.ends_with("rc=0\n"), "control `{cmd}`: {out}");
    }
    // And with the default profile (no capabilities either).
    for cmd in cmds {
        let o = run(&["--", "sh", "-c", &format!("{cmd} 2>/dev/null; echo rc=$?")]);
        assert!(!stdout(&o).contains("rc=0"), "`{cmd}`: {}", stdout(&o));
    }
    before.assert_unchanged();
}

#[test]
fn kill_action_kills_with_sigsys_and_says_seccomp() {
    let _g = serial();
    if !privileged() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let kill = profile(dir.path(), "kill.toml", "[seccomp]\naction = \"kill\"\n");
    let script =
        probe_script(&[("ptrace", "ptrace", "16, 999999999, 0, 0")]) + "print('survived')\n";
    let before = HostState::take();
    let o = run(&["--profile", &kill, "--", "python3", "-c", &script]);
    assert_eq!(o.status.code(), Some(159), "128 + SIGSYS: {}", stderr(&o));
    assert!(!stdout(&o).contains("survived"), "{}", stdout(&o));
    // Threads still work under kill: clone3 is ENOSYS, never a kill, so glibc falls back.
    let o = run(&[
        "--profile",
        &kill,
        "--",
        "python3",
        "-c",
        "import threading; t = threading.Thread(target=print, args=('thread',)); t.start(); t.join()",
    ]);
    assert_eq!(
        (o.status.code(), stdout(&o).as_str()),
        (Some(0), "thread\n"),
        "{}",
        stderr(&o)
    );

    // The library's diagnosis names the filter.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let p = Profile::load(&kill).unwrap();
        let mut r = SandboxRunner::new(p, "python3", ["-c", script.as_str()]).unwrap();
        r.start().await.unwrap();
        let status = r.wait().await.unwrap();
        assert_eq!(status.signal(), Some(libc::SIGSYS), "{status:?}");
        assert!(matches!(status, ExitStatus::Signaled { .. }));
        let text = r.diagnose().await;
        assert!(
            text.contains("SIGSYS") && text.contains("seccomp"),
            "{text}"
        );
    });
    drop(rt);
    // The runner's cleanup (its cgroup) is done before the next test looks.
    before.assert_unchanged();
}

#[test]
fn allow_and_deny_change_the_filter() {
    let _g = serial();
    if !privileged() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let deny = profile(
        dir.path(),
        "deny.toml",
        "[seccomp]\ndeny = [\"mkdir\", \"mkdirat\"]\n",
    );
    let before = HostState::take();
    let (out, _) = sh(
        &deny,
        "mkdir /tmp/d 2>&1; echo rc=$?; touch /tmp/f && echo touched",
    );
    assert!(
        out.contains("Operation not permitted") && out.contains("rc=1"),
        "{out}"
    );
    assert!(out.contains("touched"), "other calls still work: {out}");
    let (out, _) = sh("default", "mkdir /tmp/d && echo made");
    assert_eq!(out, "made\n");
    // sethostname: refused by the filter even with CAP_SYS_ADMIN; allowed, it works (in
    // the sandbox's own UTS namespace).
    let caps = "keep_capabilities = [\"CAP_SYS_ADMIN\"]\n";
    let denied = profile(dir.path(), "h1.toml", caps);
    let allowed = profile(
        dir.path(),
        "h2.toml",
        &format!("{caps}[seccomp]\nallow = [\"sethostname\"]\n"),
    );
    let (out, _) = sh(&denied, "hostname other 2>&1; echo rc=$?; hostname");
    assert!(out.contains("rc=1") && out.ends_with("sandbox\n"), "{out}");
    let (out, _) = sh(&allowed, "hostname other 2>&1; echo rc=$?; hostname");
    assert_eq!(out, "rc=0\nother\n");
    before.assert_unchanged();
    // An unknown name is a profile error that names it, and nothing starts.
    let bad = profile(
        dir.path(),
        "bad.toml",
        "[seccomp]\ndeny = [\"mkdir\", \"mkdri\"]\n",
    );
    let o = run(&["--profile", &bad, "--", "true"]);
    assert_eq!(o.status.code(), Some(125));
    assert!(
        stderr(&o).contains("'mkdri' is not a system call name"),
        "{}",
        stderr(&o)
    );
    assert!(stderr(&o).contains("bad.toml:3:"), "{}", stderr(&o));
}

#[test]
fn rlimits_apply_and_core_is_zero_by_default() {
    let _g = serial();
    if !privileged() {
        return;
    }
    let before = HostState::take();
    let o = run(&["--", "sh", "-c", "ulimit -c; ulimit -Hc"]);
    assert_eq!(stdout(&o), "0\n0\n", "{}", stderr(&o));
    let dir = tempfile::tempdir().unwrap();
    let p = profile(
        dir.path(),
        "r.toml",
        "[rlimits]\nnofile = 123\nfsize = \"1M\"\nstack = \"4M\"\nnproc = 77\n\
         as = \"unlimited\"\nmemlock = \"64K\"\n",
    );
    let (out, err) = sh(
        &p,
        "ulimit -n; ulimit -Hn; ulimit -s; ulimit -v; ulimit -l; ulimit -c; \
         grep 'Max processes' /proc/self/limits",
    );
    assert_eq!(
        out.split_whitespace().collect::<Vec<_>>(),
        [
            "123",
            "123",
            "4096",
            "unlimited",
            "64",
            "0",
            "Max",
            "processes",
            "77",
            "77",
            "processes"
        ],
        "{err}"
    );
    // Past fsize, a write fails: SIGXFSZ for a shell tool, EFBIG when it is ignored.
    let (out, _) = sh(
        &p,
        "head -c 2M /dev/zero > /tmp/big; echo rc=$?; wc -c < /tmp/big",
    );
    assert_eq!(out, format!("rc={}\n{}\n", 128 + libc::SIGXFSZ, 1 << 20));
    let (out, _) = sh(
        &p,
        "python3 -c \"import signal; signal.signal(signal.SIGXFSZ, signal.SIG_IGN); \
         open('/tmp/big', 'wb').write(b'x' * (2 << 20))\" 2>&1 | tail -n 1",
    );
    assert!(out.contains("File too large"), "{out}");
    // A limit above the caller's hard limit can be set (the plugin had CAP_SYS_RESOURCE
    // when its limits were set).
    let host_hard = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
        .unwrap()
        .1;
    let nr_open: u64 = std::fs::read_to_string("/proc/sys/fs/nr_open")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    if host_hard < nr_open {
        let p = profile(
            dir.path(),
            "hi.toml",
            &format!("[rlimits]\nnofile = {nr_open}\n"),
        );
        if has_cap_sys_resource() {
            let (out, err) = sh(&p, "ulimit -Hn");
            assert_eq!(out, format!("{nr_open}\n"), "{err}");
        } else {
            // Without CAP_SYS_RESOURCE (some containers drop it): a clear error, up front.
            let o = run(&["--profile", &p, "--", "true"]);
            assert_eq!(o.status.code(), Some(125));
            assert!(
                stderr(&o).contains("needs CAP_SYS_RESOURCE"),
                "{}",
                stderr(&o)
            );
        }
    }
    // cpu: SIGXCPU at the limit.
    let p = profile(dir.path(), "cpu.toml", "[rlimits]\ncpu = 1\n");
    let o = run(&["--profile", &p, "--", "sh", "-c", "while :; do :; done"]);
    assert_eq!(o.status.code(), Some(128 + libc::SIGXCPU), "{}", stderr(&o));
    // A limit the kernel cannot take is refused before anything starts.
    let p = profile(
        dir.path(),
        "bad.toml",
        "[rlimits]\nnofile = \"unlimited\"\n",
    );
    let o = run(&["--profile", &p, "--", "true"]);
    assert_eq!(o.status.code(), Some(125));
    assert!(stderr(&o).contains("fs.nr_open"), "{}", stderr(&o));
    before.assert_unchanged();
}

/// Whether this process has CAP_SYS_RESOURCE (bit 24) in its effective set.
fn has_cap_sys_resource() -> bool {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .map(|v| u64::from_str_radix(v.trim(), 16).unwrap())
        .unwrap();
    eff & (1 << 24) != 0
}

#[test]
fn landlock_makes_a_writable_bind_read_only() {
    let _g = serial();
    if !privileged() {
        return;
    }
    let data = tempfile::tempdir().unwrap();
    std::fs::write(data.path().join("in"), "host data\n").unwrap();
    // Root inside is an unprivileged host id: a shared directory must let it write.
    std::fs::set_permissions(
        data.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let src = data.path().to_str().unwrap();
    let mount = format!("[[mount]]\ntype = \"bind\"\nsrc = \"{src}\"\ndst = \"/data\"\n");
    let ro = profile(
        dir.path(),
        "ro.toml",
        &format!("{mount}[landlock]\nmode = \"required\"\nread_only = [\"/data\"]\n"),
    );
    let off = profile(
        dir.path(),
        "off.toml",
        &format!("{mount}[landlock]\nmode = \"off\"\n"),
    );
    let before = HostState::take();
    let script = "cat /data/in; echo x > /data/out 2>&1; echo rc=$?; rm /data/in 2>&1; echo rm=$?";
    let (out, err) = sh(&ro, script);
    assert!(
        out.starts_with("host data\n"),
        "reads still work: {out} {err}"
    );
    assert!(
        out.contains("Permission denied") && out.contains("rc=2"),
        "{out}"
    );
    assert!(out.contains("rm=1"), "{out}");
    assert!(!data.path().join("out").exists());
    assert!(data.path().join("in").exists());
    // The mount itself allows it: the control run writes.
    let (out, _) = sh(&off, "echo x > /data/out; echo rc=$?");
    assert_eq!(out, "rc=0\n");
    assert!(data.path().join("out").exists());
    before.assert_unchanged();
}

#[test]
fn landlock_keeps_proc_read_only_and_the_rest_working() {
    let _g = serial();
    if !privileged() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let off = profile(dir.path(), "off.toml", "[landlock]\nmode = \"off\"\n");
    let req = profile(dir.path(), "req.toml", "[landlock]\nmode = \"required\"\n");
    let before = HostState::take();
    // /proc is mounted read-write, but Landlock lets the plugin only read it.
    let probe = "echo renamed > /proc/self/comm 2>/dev/null; echo comm=$?; \
                 echo 1 > /proc/sys/kernel/ns_last_pid 2>/dev/null; echo sys=$?; \
                 head -c 5 /proc/self/status";
    let o = run(&["--", "sh", "-c", probe]);
    assert_eq!(stdout(&o), "comm=2\nsys=2\nName:", "{}", stderr(&o));
    let (out, _) = sh(&off, "echo renamed > /proc/self/comm; echo comm=$?");
    assert_eq!(out, "comm=0\n", "the mount allows it");
    // What the mounts give stays usable: tmpfs read-write, /usr executable, /dev nodes,
    // the stdio pipes reopened by path, sockets in /tmp.
    let (out, err) = sh(
        &req,
        "echo a > /tmp/f && cat /tmp/f && mkdir /tmp/d && rm -r /tmp/d /tmp/f && \
         echo z > /dev/null && head -c 1 /dev/zero | wc -c && echo out > /dev/stdout && \
         python3 -c \"import socket; s = socket.socket(socket.AF_UNIX); s.bind('/tmp/s'); print('sock')\" && \
         ls / >/dev/null && echo fine",
    );
    assert_eq!(out, "a\n1\nout\nsock\nfine\n", "{err}");
    // Nothing can create a device node, even with CAP_MKNOD.
    let mk = profile(
        dir.path(),
        "mk.toml",
        "keep_capabilities = [\"CAP_MKNOD\"]\n",
    );
    let (out, _) = sh(&mk, "mknod /tmp/null c 1 3 2>&1; echo rc=$?");
    assert!(
        out.contains("Permission denied") && out.contains("rc=1"),
        "{out}"
    );
    before.assert_unchanged();
}

#[test]
fn landlock_reopens_a_host_file_stdout() {
    let _g = serial();
    if !privileged() {
        return;
    }
    // stdout is a file on the host, outside every rule: reopening it by path still works.
    let f = tempfile::NamedTempFile::new().unwrap();
    let o = std::process::Command::new(bin())
        .args([
            "--",
            "sh",
            "-c",
            "echo direct; echo reopened >> /dev/stdout",
        ])
        .stdin(std::process::Stdio::null())
        .stdout(f.reopen().unwrap())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert_eq!(
        std::fs::read_to_string(f.path()).unwrap(),
        "direct\nreopened\n"
    );
}
