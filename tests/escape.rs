//! The escape battery, as root: each test runs a small program inside the sandbox (through
//! the CLI, default profile unless the case needs another) that tries ONE forbidden thing,
//! and asserts it was refused and, where it matters, that the host is unchanged.
//!
//! Every run goes through `sh_run` / `py_run`, which also check that the host's mount
//! table, cgroup directories and descendant processes are as they were before.

mod common;
use common::*;

use sandbox_runner::seccomp::number;
use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

// ------------------------------------------------------------------------------------
// Helpers: one per pattern.
// ------------------------------------------------------------------------------------

/// System calls the Python probes may make by number (this architecture's numbers).
const SYSCALLS: &[&str] = &[
    "mount",
    "umount2",
    "pivot_root",
    "chroot",
    "unshare",
    "setns",
    "ptrace",
    "keyctl",
    "bpf",
    "perf_event_open",
    "userfaultfd",
    "clock_settime",
    "sethostname",
    "ioctl",
];

/// The Python prelude: `call(label, name, *args)` makes a raw system call and prints
/// `label OK` or `label ERRNO`; `op(label, f)` does the same for a Python operation.
fn py_prelude() -> String {
    let nrs: Vec<String> = SYSCALLS
        .iter()
        .map(|n| {
            let nr = number(n).unwrap_or_else(|| panic!("no syscall number for {n}"));
            format!("'{n}': {nr}")
        })
        .collect();
    format!(
        "import ctypes, errno, os, socket, sys\n\
         libc = ctypes.CDLL(None, use_errno=True)\n\
         libc.syscall.restype = ctypes.c_long\n\
         NR = {{{}}}\n\
         def ename(e): return errno.errorcode.get(e, str(e))\n\
         def S(x): return ctypes.c_char_p(x.encode())\n\
         def call(label, name, *args):\n\
         \x20   a = [ctypes.c_long(x) if isinstance(x, int) else x for x in args]\n\
         \x20   ctypes.set_errno(0)\n\
         \x20   r = libc.syscall(ctypes.c_long(NR[name]), *a)\n\
         \x20   print(label, 'OK' if r != -1 else ename(ctypes.get_errno()), flush=True)\n\
         def op(label, f):\n\
         \x20   try:\n\
         \x20       f()\n\
         \x20       print(label, 'OK', flush=True)\n\
         \x20   except OSError as e:\n\
         \x20       print(label, ename(e.errno), flush=True)\n",
        nrs.join(", ")
    )
}

/// Runs `args` through the CLI and checks the host is unchanged afterwards.
fn checked(args: &[&str]) -> Output {
    let before = HostState::take();
    let o = run(args);
    before.assert_unchanged();
    o
}

/// `sh -c SCRIPT` in the default profile, its stderr merged into stdout (so that a failed
/// redirection's message is seen too); returns stdout.
fn sh_run(script: &str) -> String {
    let o = checked(&["--", "sh", "-c", &format!("exec 2>&1; {script}")]);
    let out = stdout(&o);
    assert!(
        out.contains("END\n"),
        "the probe did not run to its end: {out}\nstderr: {}",
        stderr(&o)
    );
    out
}

/// A Python probe (after the prelude) in `profile` (None: the default one).
fn py_in(profile: Option<&str>, body: &str) -> String {
    let script = format!("{}{body}\nprint('END')\n", py_prelude());
    let mut args = vec![];
    if let Some(p) = profile {
        args.extend(["--profile", p]);
    }
    args.extend(["--", "python3", "-c", &script]);
    let o = checked(&args);
    let out = stdout(&o);
    assert!(
        out.contains("END\n"),
        "the probe did not run to its end: {out}\nstderr: {}",
        stderr(&o)
    );
    out
}

/// A Python probe in the default profile.
fn py_run(body: &str) -> String {
    py_in(None, body)
}

/// The result the probe printed for `label` (`OK` or an errno name).
fn result_of(out: &str, label: &str) -> String {
    out.lines()
        .find_map(|l| {
            let r = l.strip_prefix(label)?;
            if r.is_empty() {
                Some("")
            } else {
                r.strip_prefix(' ')
            }
        })
        .unwrap_or_else(|| panic!("no result for {label} in: {out}"))
        .to_string()
}

/// Asserts the probe's `label` failed with one of `errnos`.
fn assert_refused(out: &str, label: &str, errnos: &[&str]) {
    let got = result_of(out, label);
    assert!(
        errnos.contains(&got.as_str()),
        "{label}: expected one of {errnos:?}, got {got} (a successful forbidden call is an escape)\n{out}"
    );
}

/// Asserts a shell probe's output contains one of `texts` and `rc=0` nowhere.
fn assert_shell_refused(out: &str, texts: &[&str]) {
    assert!(
        !out.contains("rc=0\n"),
        "the forbidden command succeeded: {out}"
    );
    assert!(
        texts.iter().any(|t| out.contains(t)),
        "expected one of {texts:?} in: {out}"
    );
}

/// A profile file extending the default one with `extra`.
fn profile_file(dir: &Path, extra: &str) -> String {
    let p = dir.join("p.toml");
    std::fs::write(&p, format!("extends = \"default\"\n{extra}")).unwrap();
    p.to_str().unwrap().to_string()
}

/// A unique name for files the tests must not find on the host afterwards.
fn unique(tag: &str) -> String {
    format!(
        "sandbox-escape-{tag}-{}-{}",
        std::process::id(),
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .subsec_nanos()
    )
}

/// Starts `sleep 100` on the host; killed and reaped when dropped.
struct HostSleep(std::process::Child);

impl HostSleep {
    fn start() -> HostSleep {
        let c = Command::new("sleep")
            .arg("100")
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        HostSleep(c)
    }
    fn pid(&self) -> i32 {
        self.0.id() as i32
    }
    fn assert_alive(&mut self) {
        assert!(
            self.0.try_wait().unwrap().is_none() && alive(self.pid()),
            "the host process {} was killed from inside the sandbox",
            self.pid()
        );
    }
}

impl Drop for HostSleep {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Names in a host directory.
fn listing(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// Host paths that must never be visible in the sandbox's root listing.
const HOST_ONLY_TOP: &[&str] = &["root", "home", "var", "boot", "srv", "opt", "sys", "mnt"];

fn assert_sandbox_root_listing(names: &str) {
    let names: Vec<&str> = names.split_whitespace().collect();
    assert!(
        names.contains(&"proc") && names.contains(&"usr") && names.contains(&"tmp"),
        "not the sandbox root: {names:?}"
    );
    for h in HOST_ONLY_TOP {
        assert!(!names.contains(h), "host directory /{h} visible: {names:?}");
    }
}

// ------------------------------------------------------------------------------------
// Host secrets.
// ------------------------------------------------------------------------------------

#[test]
fn escape_read_etc_shadow_refused() {
    let _g = serial();
    if !privileged() {
        return;
    }
    assert!(
        Path::new("/etc/shadow").exists(),
        "the host has /etc/shadow"
    );
    let out = sh_run("cat /etc/shadow 2>&1; echo rc=$?; echo END");
    assert_shell_refused(&out, &["No such file or directory"]);
    assert!(!out.contains("root:"), "{out}");
}

#[test]
fn escape_read_root_home_refused() {
    let _g = serial();
    if !privileged() {
        return;
    }
    assert!(Path::new("/root").is_dir(), "the host has /root");
    let out = sh_run("ls -A /root 2>&1; echo rc=$?; echo END");
    assert_shell_refused(&out, &["No such file or directory"]);
}

#[test]
fn escape_read_ssh_host_keys_refused() {
    let _g = serial();
    if !privileged() {
        return;
    }
    assert!(Path::new("/etc/ssh").is_dir(), "the host has /etc/ssh");
    let out = sh_run("cat /etc/ssh/ssh_host_*key* 2>&1; echo rc=$?; ls /etc/ssh 2>&1; echo END");
    assert_shell_refused(&out, &["No such file or directory"]);
    assert!(!out.contains("PRIVATE KEY"), "{out}");
    assert!(!out.contains("ssh_config"), "/etc/ssh listed: {out}");
}

#[test]
fn escape_read_callers_home_refused() {
    let _g = serial();
    if !privileged() {
        return;
    }
    // The caller's $HOME, with a secret in it; the plugin gets HOME=/ and no way there.
    let home = tempfile::tempdir_in("/var/tmp").unwrap();
    std::fs::write(home.path().join("secret"), "hunter2\n").unwrap();
    let script = format!(
        "echo HOME=$HOME; cat {}/secret 2>&1; echo rc=$?; echo END",
        home.path().display()
    );
    let before = HostState::take();
    let o = Command::new(bin())
        .args(["--", "sh", "-c", &script])
        .env("HOME", home.path())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    before.assert_unchanged();
    let out = stdout(&o);
    assert!(out.starts_with("HOME=/\n"), "{out}");
    assert!(out.contains("END"), "{out} {}", stderr(&o));
    assert_shell_refused(&out, &["No such file or directory"]);
    assert!(!out.contains("hunter2"), "{out}");
}

#[test]
fn escape_read_host_environ_via_proc_refused() {
    let _g = serial();
    if !privileged() {
        return;
    }
    // PID 1 inside is the sandbox's init, a copy of the host process and its environment:
    // its environ (and every other process's) must not give the host's variables away.
    let script = "cat /proc/1/environ >/dev/null 2>&1; echo env1=$?; \
                  echo found=$(cat /proc/[0-9]*/environ 2>/dev/null | tr '\\0' '\\n' | \
                  grep -c 'hunter2-escape'); echo END";
    let before = HostState::take();
    let o = Command::new(bin())
        .args(["--", "sh", "-c", script])
        .env("SANDBOX_ESCAPE_SECRET", "hunter2-escape")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    before.assert_unchanged();
    assert_eq!(stdout(&o), "env1=1\nfound=0\nEND\n", "{}", stderr(&o));
}

// ------------------------------------------------------------------------------------
// Read-only mounts.
// ------------------------------------------------------------------------------------

#[test]
fn escape_write_usr_refused() {
    let _g = serial();
    if !privileged() {
        return;
    }
    let name = unique("usr");
    let out = sh_run(&format!("touch /usr/bin/{name} 2>&1; echo rc=$?; echo END"));
    assert_shell_refused(&out, &["Read-only file system"]);
    assert!(!Path::new("/usr/bin").join(&name).exists());
}

#[test]
fn escape_write_etc_passwd_refused() {
    let _g = serial();
    if !privileged() {
        return;
    }
    let host = std::fs::read("/etc/passwd").unwrap();
    let out = sh_run("echo 'evil::0:0::/:/bin/sh' >> /etc/passwd 2>&1; echo rc=$?; echo END");
    // Read-only bind, and (root inside is not host root) not the file's owner either.
    assert_shell_refused(&out, &["Read-only file system", "Permission denied"]);
    assert_eq!(
        std::fs::read("/etc/passwd").unwrap(),
        host,
        "/etc/passwd changed"
    );
}

#[test]
fn escape_write_bin_refused() {
    let _g = serial();
    if !privileged() {
        return;
    }
    let name = unique("bin");
    let out = sh_run(&format!(
        "cp /bin/sh /bin/{name} 2>&1; echo rc=$?; echo END"
    ));
    assert_shell_refused(&out, &["Read-only file system"]);
    assert!(!Path::new("/bin").join(&name).exists());
}

#[test]
fn escape_remount_usr_rw_with_mount_tool_refused() {
    let _g = serial();
    if !privileged() {
        return;
    }
    let name = unique("remount");
    let out = sh_run(&format!(
        "mount -o remount,rw /usr 2>&1; echo rc=$?; touch /usr/{name} 2>&1; echo touch=$?; echo END"
    ));
    assert_shell_refused(&out, &["permission denied", "Operation not permitted"]);
    assert!(
        out.contains("Read-only file system") && out.contains("touch=1"),
        "{out}"
    );
    assert!(!Path::new("/usr").join(&name).exists());
}

#[test]
fn escape_remount_usr_rw_with_syscall_refused() {
    let _g = serial();
    if !privileged() {
        return;
    }
    // MS_REMOUNT | MS_BIND (32 | 4096): make the read-only bind writable.
    let out = py_run(
        "call('remount', 'mount', 0, S('/usr'), 0, 32 | 4096, 0)\n\
         op('write', lambda: open('/usr/sandbox-escape-probe', 'w'))",
    );
    assert_refused(&out, "remount", &["EPERM"]);
    assert_refused(&out, "write", &["EROFS"]);
    assert!(!Path::new("/usr/sandbox-escape-probe").exists());
}

// ------------------------------------------------------------------------------------
// Mounting anything.
// ------------------------------------------------------------------------------------

/// Runs `cmd` (a mount) and asserts it failed and the sandbox's mount table is unchanged.
fn assert_mount_tool_refused(cmd: &str) {
    let out = sh_run(&format!(
        "mkdir -p /tmp/m; a=$(wc -l < /proc/self/mountinfo); {cmd} 2>&1; echo rc=$?; \
         b=$(wc -l < /proc/self/mountinfo); [ $a = $b ] && echo same-mounts; echo END"
    ));
    assert_shell_refused(
        &out,
        &[
            "permission denied",
            "Operation not permitted",
            "must be superuser",
        ],
    );
    assert!(
        out.contains("same-mounts"),
        "`{cmd}` changed the mounts: {out}"
    );
}

#[test]
fn escape_mount_tmpfs_refused() {
    let _g = serial();
    if !privileged() {
        return;
    }
    assert_mount_tool_refused("mount -t tmpfs none /tmp/m");
}

#[test]
fn escape_mount_proc_refused() {
    let _g = serial();
    if !privileged() {
        return;
    }
    assert_mount_tool_refused("mount -t proc proc /tmp/m");
}

#[test]
fn escape_mount_bind_refused() {
    let _g = serial();
    if !privileged() {
        return;
    }
    assert_mount_tool_refused("mount --bind / /tmp/m");
}

#[test]
fn escape_mount_sysfs_refused() {
    let _g = serial();
    if !privileged() {
        return;
    }
    assert_mount_tool_refused("mount -t sysfs sysfs /tmp/m");
}

#[test]
fn escape_mount_syscall_refused() {
    let _g = serial();
    if !privileged() {
        return;
    }
    let out = py_run(
        "os.mkdir('/tmp/m')\n\
         call('mount', 'mount', S('none'), S('/tmp/m'), S('tmpfs'), 0, 0)\n\
         print('mounted', os.path.ismount('/tmp/m'))",
    );
    assert_refused(&out, "mount", &["EPERM"]);
    assert!(out.contains("mounted False"), "{out}");
}

// ------------------------------------------------------------------------------------
// pivot_root / chroot.
// ------------------------------------------------------------------------------------

#[test]
fn escape_chroot_break_with_fchdir_and_dotdot_refused() {
    let _g = serial();
    if !privileged() {
        return;
    }
    // The classic break: keep a fd to the current root, chroot into a subdirectory,
    // fchdir back out and climb with `..`. chroot is refused, and the climb ends at the
    // sandbox's own root.
    let out = py_run(
        "os.mkdir('/tmp/jail')\n\
         fd = os.open('/', os.O_RDONLY)\n\
         op('chroot', lambda: os.chroot('/tmp/jail'))\n\
         os.fchdir(fd)\n\
         for _ in range(64): os.chdir('..')\n\
         op('chroot_dot', lambda: os.chroot('.'))\n\
         print('top', ' '.join(sorted(os.listdir('.'))))",
    );
    assert_refused(&out, "chroot", &["EPERM"]);
    assert_refused(&out, "chroot_dot", &["EPERM"]);
    let top = result_of(&out, "top");
    assert_sandbox_root_listing(&top);
}

#[test]
fn escape_pivot_root_syscall_refused() {
    let _g = serial();
    if !privileged() {
        return;
    }
    let out = py_run(
        "os.makedirs('/tmp/new/old')\n\
         call('pivot', 'pivot_root', S('/tmp/new'), S('/tmp/new/old'))\n\
         call('pivot_dot', 'pivot_root', S('.'), S('.'))",
    );
    assert_refused(&out, "pivot", &["EPERM"]);
    assert_refused(&out, "pivot_dot", &["EPERM"]);
}

#[test]
fn escape_through_proc_root_links_refused() {
    let _g = serial();
    if !privileged() {
        return;
    }
    // /proc/1/root and /proc/1/cwd (the init's) are out of reach; the plugin's own lead to
    // the sandbox's root.
    let out = sh_run(
        "ls /proc/1/root/ 2>&1; echo rc=$?; ls /proc/1/cwd/ 2>&1; echo cwd=$?; \
         echo self $(ls /proc/self/root/..); echo END",
    );
    assert_shell_refused(&out, &["Permission denied"]);
    assert!(out.contains("cwd=2"), "{out}");
    let own = out.lines().find_map(|l| l.strip_prefix("self ")).unwrap();
    assert_sandbox_root_listing(own);
}

// ------------------------------------------------------------------------------------
// User namespaces, setns.
// ------------------------------------------------------------------------------------

#[test]
fn escape_unshare_user_ns_with_tool_refused() {
    let _g = serial();
    if !privileged() {
        return;
    }
    let out =
        sh_run("unshare -Ur sh -c 'grep CapEff /proc/self/status' 2>&1; echo rc=$?; echo END");
    assert_shell_refused(&out, &["Operation not permitted"]);
    assert!(!out.contains("CapEff"), "{out}");
}

#[test]
fn escape_unshare_user_ns_with_syscall_refused() {
    let _g = serial();
    if !privileged() {
        return;
    }
    // CLONE_NEWUSER, then CLONE_NEWUSER | CLONE_NEWNS (a full-capability set in a new ns).
    let out = py_run(
        "call('user', 'unshare', 0x10000000)\n\
         call('user_mnt', 'unshare', 0x10000000 | 0x00020000)\n\
         print('capeff', [l for l in open('/proc/self/status') if l.startswith('CapEff')][0].split()[1])",
    );
    assert_refused(&out, "user", &["EPERM"]);
    assert_refused(&out, "user_mnt", &["EPERM"]);
    assert_eq!(result_of(&out, "capeff"), "0000000000000000", "{out}");
}

#[test]
fn escape_nsenter_pid1_refused() {
    let _g = serial();
    if !privileged() {
        return;
    }
    // PID 1 is the sandbox's init (already in the sandbox's namespaces): entering its
    // namespaces is refused all the same.
    let out = sh_run("nsenter -t 1 -m -u -i -n -p true 2>&1; echo rc=$?; echo END");
    assert_shell_refused(&out, &["Permission denied", "Operation not permitted"]);
}

#[test]
fn escape_open_pid1_namespaces_refused() {
    let _g = serial();
    if !privileged() {
        return;
    }
    let out = py_run(
        "for ns in ['mnt', 'pid', 'net', 'user', 'uts', 'ipc', 'cgroup']:\n\
         \x20   op('ns_' + ns, lambda: os.open('/proc/1/ns/' + ns, os.O_RDONLY))",
    );
    for ns in ["mnt", "pid", "net", "user", "uts", "ipc", "cgroup"] {
        assert_refused(&out, &format!("ns_{ns}"), &["EACCES", "EPERM"]);
    }
}

#[test]
fn escape_setns_syscall_refused() {
    let _g = serial();
    if !privileged() {
        return;
    }
    // Even a namespace fd the plugin can open (its own) cannot be entered.
    let out = py_run(
        "fd = os.open('/proc/self/ns/uts', os.O_RDONLY)\n\
         call('setns', 'setns', fd, 0)\n\
         fd = os.open('/proc/self/ns/mnt', os.O_RDONLY)\n\
         call('setns_mnt', 'setns', fd, 0x00020000)",
    );
    assert_refused(&out, "setns", &["EPERM"]);
    assert_refused(&out, "setns_mnt", &["EPERM"]);
}

// ------------------------------------------------------------------------------------
// Host processes.
// ------------------------------------------------------------------------------------

#[test]
fn escape_host_processes_invisible() {
    let _g = serial();
    if !privileged() {
        return;
    }
    let mut host = HostSleep::start();
    let pid = host.pid();
    assert!(
        pid > 64,
        "host pid {pid} could be mistaken for a sandbox pid"
    );
    let out = sh_run(&format!(
        "[ -e /proc/{pid} ] && echo VISIBLE; echo pids $(ps -e -o pid=); echo END"
    ));
    host.assert_alive();
    assert!(!out.contains("VISIBLE"), "{out}");
    let pids: Vec<i32> = result_of(&out, "pids")
        .split_whitespace()
        .map(|p| p.parse().unwrap())
        .collect();
    assert!(!pids.contains(&pid), "host pid {pid} listed: {pids:?}");
    assert!(pids.len() <= 6 && pids.iter().all(|p| *p < 64), "{pids:?}");
}

#[test]
fn escape_kill_host_process_refused() {
    let _g = serial();
    if !privileged() {
        return;
    }
    let mut host = HostSleep::start();
    let pid = host.pid();
    assert!(
        pid > 64,
        "host pid {pid} could be mistaken for a sandbox pid"
    );
    let out = sh_run(&format!("kill -9 {pid} 2>&1; echo rc=$?; echo END"));
    assert_shell_refused(&out, &["No such process"]);
    std::thread::sleep(Duration::from_millis(50));
    host.assert_alive();
}

#[test]
fn escape_kill_all_processes_stays_inside() {
    let _g = serial();
    if !privileged() {
        return;
    }
    // kill(-1): every process the plugin may signal, which is only the sandbox's own.
    let mut host = HostSleep::start();
    let o = checked(&["--", "sh", "-c", "kill -9 -1; echo survived"]);
    std::thread::sleep(Duration::from_millis(50));
    host.assert_alive();
    assert_eq!(stdout(&o), "survived\n", "{}", stderr(&o));
}

// ------------------------------------------------------------------------------------
// ptrace.
// ------------------------------------------------------------------------------------

#[test]
fn escape_ptrace_attach_init_refused() {
    let _g = serial();
    if !privileged() {
        return;
    }
    // PTRACE_ATTACH (16) to the init, PTRACE_SEIZE (0x4206) to the plugin's own parent.
    let out = py_run(
        "call('attach', 'ptrace', 16, 1, 0, 0)\n\
         call('seize', 'ptrace', 0x4206, os.getppid(), 0, 0)",
    );
    assert_refused(&out, "attach", &["EPERM"]);
    assert_refused(&out, "seize", &["EPERM"]);
}

#[test]
fn escape_ptrace_traceme_refused() {
    let _g = serial();
    if !privileged() {
        return;
    }
    let out = py_run("call('traceme', 'ptrace', 0, 0, 0, 0)");
    assert_refused(&out, "traceme", &["EPERM"]);
}

#[test]
fn escape_read_init_memory_refused() {
    let _g = serial();
    if !privileged() {
        return;
    }
    let out = py_run(
        "op('mem', lambda: open('/proc/1/mem', 'rb').read(1))\n\
         op('maps', lambda: open('/proc/1/maps').read())",
    );
    assert_refused(&out, "mem", &["EACCES", "EPERM"]);
    assert_refused(&out, "maps", &["EACCES", "EPERM"]);
}

// ------------------------------------------------------------------------------------
// Network.
// ------------------------------------------------------------------------------------

#[test]
fn escape_packet_socket_refused() {
    let _g = serial();
    if !privileged() {
        return;
    }
    // AF_PACKET (17), SOCK_RAW, ETH_P_ALL.
    let out = py_run("op('packet', lambda: socket.socket(17, socket.SOCK_RAW, socket.htons(3)))");
    assert_refused(&out, "packet", &["EPERM", "EACCES"]);
}

#[test]
fn escape_raw_socket_refused() {
    let _g = serial();
    if !privileged() {
        return;
    }
    let out = py_run(
        "op('raw', lambda: socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP))",
    );
    assert_refused(&out, "raw", &["EPERM", "EACCES"]);
}

const BIND_80: &str = "s = socket.socket()\n\
     s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n\
     op('bind80', lambda: s.bind(('127.0.0.1', 80)))";

#[test]
fn escape_bind_privileged_port_refused() {
    let _g = serial();
    if !privileged() {
        return;
    }
    let out = py_run(BIND_80);
    assert_refused(&out, "bind80", &["EACCES", "EPERM"]);
}

#[test]
fn escape_bind_privileged_port_allowed_with_capability_control() {
    let _g = serial();
    if !privileged() {
        return;
    }
    // The control: the same bind works with CAP_NET_BIND_SERVICE kept, so the refusal
    // above is the missing capability's (in the sandbox's own network namespace).
    let dir = tempfile::tempdir().unwrap();
    let p = profile_file(
        dir.path(),
        "keep_capabilities = [\"CAP_NET_BIND_SERVICE\"]\n",
    );
    let out = py_in(Some(&p), BIND_80);
    assert_eq!(result_of(&out, "bind80"), "OK", "{out}");
}

#[test]
fn escape_connect_host_loopback_refused() {
    let _g = serial();
    if !privileged() {
        return;
    }
    // A listener on the host's 127.0.0.1: the sandbox's loopback is its own.
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.set_nonblocking(true).unwrap();
    let port = l.local_addr().unwrap().port();
    let out = py_run(&format!(
        "s = socket.socket()\n\
         s.settimeout(1)\n\
         op('connect', lambda: s.connect(('127.0.0.1', {port})))"
    ));
    assert_refused(&out, "connect", &["ECONNREFUSED"]);
    assert!(
        matches!(l.accept(), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "the host listener got a connection"
    );
}

#[test]
fn escape_connect_host_abstract_unix_socket_refused() {
    let _g = serial();
    if !privileged() {
        return;
    }
    // Abstract unix sockets belong to the network namespace: the host's are out of reach.
    use std::os::linux::net::SocketAddrExt;
    let name = unique("abstract");
    let addr = std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
    let l = std::os::unix::net::UnixListener::bind_addr(&addr).unwrap();
    l.set_nonblocking(true).unwrap();
    let out = py_run(&format!(
        "s = socket.socket(socket.AF_UNIX)\n\
         op('connect', lambda: s.connect('\\0{name}'))"
    ));
    assert_refused(&out, "connect", &["ECONNREFUSED", "ENOENT"]);
    assert!(
        matches!(l.accept(), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
        "the host listener got a connection"
    );
}

#[test]
fn escape_connect_non_loopback_unreachable() {
    let _g = serial();
    if !privileged() {
        return;
    }
    // No route but loopback: the connect fails at once (no packet leaves).
    let out = py_run(
        "import time\n\
         s = socket.socket()\n\
         s.settimeout(1)\n\
         t = time.monotonic()\n\
         op('connect', lambda: s.connect(('10.255.255.1', 80)))\n\
         print('fast', time.monotonic() - t < 0.5)",
    );
    assert_refused(&out, "connect", &["ENETUNREACH"]);
    assert!(out.contains("fast True"), "{out}");
}

// ------------------------------------------------------------------------------------
// /proc/sys, sysrq, /sys.
// ------------------------------------------------------------------------------------

#[test]
fn escape_write_proc_sys_drop_caches_refused() {
    let _g = serial();
    if !privileged() {
        return;
    }
    let out = sh_run("echo 3 > /proc/sys/vm/drop_caches 2>&1; echo rc=$?; echo END");
    assert_shell_refused(&out, &["Read-only file system", "Permission denied"]);
}

#[test]
fn escape_write_core_pattern_refused() {
    let _g = serial();
    if !privileged() {
        return;
    }
    // The classic container escape: a pipe core_pattern runs a program as root on the host.
    let host = std::fs::read_to_string("/proc/sys/kernel/core_pattern").unwrap();
    let out =
        sh_run("echo '|/tmp/evil' > /proc/sys/kernel/core_pattern 2>&1; echo rc=$?; echo END");
    assert_shell_refused(&out, &["Read-only file system", "Permission denied"]);
    assert_eq!(
        std::fs::read_to_string("/proc/sys/kernel/core_pattern").unwrap(),
        host
    );
}

#[test]
fn escape_sysrq_trigger_absent_or_refused() {
    let _g = serial();
    if !privileged() {
        return;
    }
    // Some kernels (CONFIG_MAGIC_SYSRQ=n) have no /proc/sysrq-trigger at all; where it
    // exists, a write ('h': help, harmless) must fail.
    let out = sh_run(
        "if [ -e /proc/sysrq-trigger ]; then echo h > /proc/sysrq-trigger 2>&1; \
         echo rc=$?; else echo absent; fi; echo END",
    );
    if Path::new("/proc/sysrq-trigger").exists() {
        assert_shell_refused(
            &out,
            &["Read-only file system", "Permission denied", "No such file"],
        );
    } else {
        assert!(out.contains("absent"), "{out}");
    }
}

#[test]
fn escape_write_sys_refused() {
    let _g = serial();
    if !privileged() {
        return;
    }
    let out = sh_run("echo 1 > /sys/kernel/profiling 2>&1; echo rc=$?; ls /sys 2>&1; echo END");
    assert_shell_refused(
        &out,
        &["Directory nonexistent", "No such file or directory"],
    );
    assert!(!out.contains("kernel\n"), "{out}");
}

// ------------------------------------------------------------------------------------
// Devices.
// ------------------------------------------------------------------------------------

#[test]
fn escape_read_dev_mem_refused() {
    let _g = serial();
    if !privileged() {
        return;
    }
    let out = sh_run("head -c 16 /dev/mem 2>&1; echo rc=$?; head -c 16 /dev/port 2>&1; echo END");
    assert_shell_refused(&out, &["No such file or directory"]);
}

#[test]
fn escape_read_dev_kmsg_refused() {
    let _g = serial();
    if !privileged() {
        return;
    }
    let out = sh_run("head -n 1 /dev/kmsg 2>&1; echo rc=$?; echo END");
    assert_shell_refused(&out, &["No such file or directory"]);
}

#[test]
fn escape_read_block_devices_refused() {
    let _g = serial();
    if !privileged() {
        return;
    }
    let out = sh_run(
        "for d in /dev/vda /dev/sda /dev/nvme0n1 /dev/xvda; do head -c 512 $d >/dev/null 2>&1 \
         && echo READ $d; done; echo blocks $(find /dev -type b 2>/dev/null); echo END",
    );
    assert!(!out.contains("READ"), "{out}");
    assert_eq!(
        result_of(&out, "blocks"),
        "",
        "block devices in /dev: {out}"
    );
}

#[test]
fn escape_mknod_char_device_refused() {
    let _g = serial();
    if !privileged() {
        return;
    }
    // /dev/mem is char 1:1.
    let out = sh_run(
        "mknod /tmp/mem c 1 1 2>&1; echo rc=$?; mknod /dev/mem2 c 1 1 2>&1; \
         [ -e /tmp/mem ] || [ -e /dev/mem2 ] && echo CREATED; echo END",
    );
    assert_shell_refused(&out, &["Operation not permitted", "Permission denied"]);
    assert!(!out.contains("CREATED"), "{out}");
}

#[test]
fn escape_mknod_block_device_refused() {
    let _g = serial();
    if !privileged() {
        return;
    }
    // 8:0 is sda, 253:0 vda: whatever disk the host has.
    let out = py_run(
        "op('sda', lambda: os.mknod('/tmp/sda', 0o600 | 0o060000, os.makedev(8, 0)))\n\
         op('vda', lambda: os.mknod('/tmp/vda', 0o600 | 0o060000, os.makedev(253, 0)))\n\
         print('exists', os.path.exists('/tmp/sda') or os.path.exists('/tmp/vda'))",
    );
    assert_refused(&out, "sda", &["EPERM", "EACCES"]);
    assert_refused(&out, "vda", &["EPERM", "EACCES"]);
    assert!(out.contains("exists False"), "{out}");
}

// ------------------------------------------------------------------------------------
// Kernel interfaces: keyctl, bpf, perf_event_open, userfaultfd.
// ------------------------------------------------------------------------------------

#[test]
fn escape_keyctl_refused() {
    let _g = serial();
    if !privileged() {
        return;
    }
    // KEYCTL_GET_KEYRING_ID (0) of the user keyring (-4), create = 1; KEYCTL_JOIN (1).
    let out = py_run(
        "call('get', 'keyctl', 0, -4, 1, 0, 0)\n\
         call('join', 'keyctl', 1, 0, 0, 0, 0)",
    );
    assert_refused(&out, "get", &["EPERM"]);
    assert_refused(&out, "join", &["EPERM"]);
}

#[test]
fn escape_bpf_refused() {
    let _g = serial();
    if !privileged() {
        return;
    }
    // BPF_MAP_CREATE (0) of an array map: attr {type 2, key 4, value 4, entries 1}.
    let out = py_run(
        "attr = (ctypes.c_uint32 * 32)(2, 4, 4, 1)\n\
         call('map_create', 'bpf', 0, ctypes.addressof(attr), 128)",
    );
    assert_refused(&out, "map_create", &["EPERM"]);
}

#[test]
fn escape_perf_event_open_refused() {
    let _g = serial();
    if !privileged() {
        return;
    }
    // A software cpu-clock counter (type 1, config 0) on this process, any cpu.
    let out = py_run(
        "attr = (ctypes.c_uint32 * 32)()\n\
         attr[0] = 1\n\
         attr[1] = 128\n\
         call('perf', 'perf_event_open', ctypes.addressof(attr), 0, -1, -1, 0)",
    );
    assert_refused(&out, "perf", &["EPERM", "EACCES"]);
}

#[test]
fn escape_userfaultfd_refused() {
    let _g = serial();
    if !privileged() {
        return;
    }
    // O_CLOEXEC | O_NONBLOCK, and UFFD_USER_MODE_ONLY (1): both refused; no device either.
    let out = py_run(
        "call('uffd', 'userfaultfd', os.O_CLOEXEC | os.O_NONBLOCK)\n\
         call('uffd_user', 'userfaultfd', 1)\n\
         op('dev', lambda: open('/dev/userfaultfd', 'rb'))",
    );
    assert_refused(&out, "uffd", &["EPERM"]);
    assert_refused(&out, "uffd_user", &["EPERM"]);
    assert_refused(&out, "dev", &["ENOENT"]);
}

// ------------------------------------------------------------------------------------
// The caller's terminal.
// ------------------------------------------------------------------------------------

#[test]
fn escape_tiocsti_injection_into_host_terminal_refused() {
    let _g = serial();
    if !privileged() {
        return;
    }
    // A pty as the caller's terminal: stdin and stdout of sandbox-run, so that the plugin's
    // session is interactive and its stdin a terminal too (since issue 12 it is the slave of
    // a pty of the runner's; a terminal stdin alone gives it /dev/null). The plugin first
    // tries to make its terminal its controlling one with TIOCSCTTY, which would satisfy the
    // kernel's own check. The caller's terminal is raw, so that an injected byte would be
    // readable at once on the host's side of the slave.
    let (mut m, mut s) = (0, 0);
    // SAFETY: openpty writes two fds; the termios calls get a valid fd and struct.
    let slave = unsafe {
        assert_eq!(
            libc::openpty(
                &mut m,
                &mut s,
                std::ptr::null_mut(),
                std::ptr::null(),
                std::ptr::null()
            ),
            0
        );
        let mut t: libc::termios = std::mem::zeroed();
        assert_eq!(libc::tcgetattr(s, &mut t), 0);
        libc::cfmakeraw(&mut t);
        assert_eq!(libc::tcsetattr(s, libc::TCSANOW, &t), 0);
        OwnedFd::from_raw_fd(s)
    };
    // SAFETY: m is the master fd openpty just returned, owned here.
    let master = unsafe { OwnedFd::from_raw_fd(m) };
    let script = format!(
        "{}print('tty', os.isatty(0))\n\
         libc.ioctl(0, 0x540E, 0)\n\
         for ch in b'id\\n':\n\
         \x20   call('tiocsti', 'ioctl', 0, 0x5412, ctypes.byref(ctypes.c_char(ch)))\n\
         print('END')\n",
        py_prelude()
    );
    let before = HostState::take();
    let c = Command::new(bin())
        .args(["--", "python3", "-c", &script])
        .stdin(Stdio::from(slave.try_clone().unwrap()))
        .stdout(Stdio::from(slave.try_clone().unwrap()))
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // What the plugin prints arrives on the master.
    // SAFETY: fcntl on a valid fd we own.
    unsafe {
        let fl = libc::fcntl(master.as_raw_fd(), libc::F_GETFL);
        assert_eq!(
            libc::fcntl(master.as_raw_fd(), libc::F_SETFL, fl | libc::O_NONBLOCK),
            0
        );
    }
    let mut mf = std::fs::File::from(master);
    let mut got = Vec::new();
    let t = std::time::Instant::now();
    while !String::from_utf8_lossy(&got).contains("END") && t.elapsed() < Duration::from_secs(30) {
        let mut buf = [0u8; 4096];
        match mf.read(&mut buf) {
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
    let o = c.wait_with_output().unwrap();
    before.assert_unchanged();
    let out = String::from_utf8_lossy(&got).replace('\r', "");
    assert!(
        out.contains("tty True\n") && out.contains("END"),
        "{out} {}",
        stderr(&o)
    );
    assert_refused(&out, "tiocsti", &["EPERM", "EIO"]);
    assert!(!out.contains("tiocsti OK"), "{out}");
    // Nothing waits in the terminal's input queue...
    let mut f = std::fs::File::from(slave);
    // SAFETY: fcntl on a valid fd we own.
    unsafe {
        let fl = libc::fcntl(f.as_raw_fd(), libc::F_GETFL);
        assert_eq!(
            libc::fcntl(f.as_raw_fd(), libc::F_SETFL, fl | libc::O_NONBLOCK),
            0
        );
    }
    let mut buf = [0u8; 16];
    match f.read(&mut buf) {
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
        r => panic!("the terminal had input injected: {r:?} {:?}", &buf[..]),
    }
    // ... though typing on the master does arrive there (the check above can see input).
    std::io::Write::write_all(&mut mf, b"z").unwrap();
    std::thread::sleep(Duration::from_millis(50));
    assert_eq!(f.read(&mut buf).unwrap(), 1);
    assert_eq!(buf[0], b'z');
}

#[test]
fn escape_open_controlling_terminal_refused() {
    let _g = serial();
    if !privileged() {
        return;
    }
    // The plugin runs in a session of its own: /dev/tty (the caller's terminal, if any)
    // cannot be opened.
    let out = py_run("op('tty', lambda: open('/dev/tty', 'r+b', buffering=0))");
    assert_refused(&out, "tty", &["ENXIO", "ENOENT", "EACCES"]);
}

// ------------------------------------------------------------------------------------
// setuid binaries.
// ------------------------------------------------------------------------------------

#[test]
fn escape_setuid_binary_gains_nothing() {
    let _g = serial();
    if !privileged() {
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    let newgrp = Path::new("/usr/bin/newgrp");
    let mode = std::fs::metadata(newgrp).unwrap().permissions().mode();
    assert!(
        mode & 0o4000 != 0,
        "/usr/bin/newgrp is not setuid on this host"
    );
    // newgrp is setuid root and runs a shell: that shell (and newgrp itself) has no
    // capability, and no_new_privs stays set.
    let out = sh_run(
        "echo 'grep -E \"^(CapPrm|CapEff|CapBnd|CapAmb|NoNewPrivs)\" /proc/self/status' | \
         /usr/bin/newgrp root 2>/dev/null; su root -c true 2>&1; echo su=$?; echo END",
    );
    for set in ["CapPrm", "CapEff", "CapBnd", "CapAmb"] {
        assert!(
            out.contains(&format!("{set}:\t0000000000000000")),
            "{set} not empty after a setuid exec: {out}"
        );
    }
    assert!(out.contains("NoNewPrivs:\t1"), "{out}");
    assert!(!out.contains("su=0"), "su succeeded: {out}");
}

// ------------------------------------------------------------------------------------
// The runner's own binary (runc CVE-2019-5736 class).
// ------------------------------------------------------------------------------------

#[test]
fn escape_overwrite_runner_through_init_exe_refused() {
    let _g = serial();
    if !privileged() {
        return;
    }
    let host = std::fs::read(bin()).unwrap();
    let out = py_run(
        "op('wronly', lambda: os.open('/proc/1/exe', os.O_WRONLY))\n\
         op('path', lambda: os.open('/proc/1/exe', os.O_PATH))\n\
         op('readlink', lambda: os.readlink('/proc/1/exe'))",
    );
    assert_refused(&out, "wronly", &["EACCES", "EPERM"]);
    assert_refused(&out, "path", &["EACCES", "EPERM"]);
    assert_refused(&out, "readlink", &["EACCES", "EPERM"]);
    assert!(std::fs::read(bin()).unwrap() == host, "sandbox-run changed");
}

#[test]
fn escape_overwrite_own_exe_refused() {
    let _g = serial();
    if !privileged() {
        return;
    }
    let host = std::fs::read(bin()).unwrap();
    let out = py_run(
        "op('wronly', lambda: os.open('/proc/self/exe', os.O_WRONLY))\n\
         op('rdwr', lambda: os.open('/proc/self/exe', os.O_RDWR | os.O_TRUNC))",
    );
    assert_refused(&out, "wronly", &["ETXTBSY", "EROFS", "EACCES"]);
    assert_refused(&out, "rdwr", &["ETXTBSY", "EROFS", "EACCES"]);
    assert!(std::fs::read(bin()).unwrap() == host, "sandbox-run changed");
}

#[test]
fn escape_overwrite_host_program_after_exec_refused() {
    let _g = serial();
    if !privileged() {
        return;
    }
    // The CVE-2019-5736 move: the plugin program is a host file (reachable read-only at its
    // own path); keep a fd to it through /proc/self/exe, exec something else so it is no
    // longer busy, then reopen the fd for writing.
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let prog = dir.path().join("plugin-sh");
    std::fs::copy("/bin/sh", &prog).unwrap();
    let orig = std::fs::read(&prog).unwrap();
    let body = format!(
        "{}op('reopen', lambda: os.open('/proc/self/fd/3', os.O_WRONLY))\n\
         op('reopen_trunc', lambda: os.open('/proc/self/fd/3', os.O_RDWR | os.O_TRUNC))\n\
         print('END')\n",
        py_prelude()
    );
    let script = "exec 3</proc/self/exe; exec python3 -c \"$0\"";
    let p = prog.to_str().unwrap();
    let o = checked(&["--", p, "-c", script, &body]);
    let out = stdout(&o);
    assert!(out.contains("END"), "{out} {}", stderr(&o));
    assert_refused(&out, "reopen", &["EROFS", "EACCES", "ETXTBSY"]);
    assert_refused(&out, "reopen_trunc", &["EROFS", "EACCES", "ETXTBSY"]);
    assert!(
        std::fs::read(&prog).unwrap() == orig,
        "the host program changed"
    );
}

// ------------------------------------------------------------------------------------
// Inherited fds and working directory (runc CVE-2024-21626 class).
// ------------------------------------------------------------------------------------

#[test]
fn escape_inherited_directory_fd_refused() {
    let _g = serial();
    if !privileged() {
        return;
    }
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    std::fs::write(dir.path().join("host-marker"), "x").unwrap();
    let d = std::fs::File::open(dir.path()).unwrap();
    // SAFETY: dup2 onto a number this test owns; the copy has no O_CLOEXEC (a leak).
    assert_eq!(unsafe { libc::dup2(d.as_raw_fd(), 42) }, 42);
    let before = HostState::take();
    let o = run(&[
        "--",
        "sh",
        "-c",
        "ls /proc/self/fd/42/ 2>&1; echo rc=$?; cd /proc/self/fd/42 2>&1; echo cd=$?; \
         ls /proc/1/fd/42/ 2>&1; echo init=$?; ls /proc/1/fd/ 2>&1; echo END",
    ]);
    // SAFETY: closing the fd dup2 made above.
    unsafe { libc::close(42) };
    before.assert_unchanged();
    let out = stdout(&o);
    assert!(out.contains("END"), "{out} {}", stderr(&o));
    assert!(
        !out.contains("host-marker"),
        "the host directory is reachable: {out}"
    );
    assert_shell_refused(&out, &["No such file or directory"]);
    assert!(!out.contains("cd=0") && !out.contains("init=0"), "{out}");
}

#[test]
fn escape_host_working_directory_not_inherited() {
    let _g = serial();
    if !privileged() {
        return;
    }
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    std::fs::write(dir.path().join("host-marker"), "x").unwrap();
    let before = HostState::take();
    let o = Command::new(bin())
        .args([
            "--",
            "sh",
            "-c",
            "echo pwd $(pwd -P); echo cwd $(readlink /proc/self/cwd); echo here $(ls -A .); \
             echo up $(ls -A ..); echo END",
        ])
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    before.assert_unchanged();
    let out = stdout(&o);
    assert!(out.contains("END"), "{out} {}", stderr(&o));
    assert!(
        !out.contains("host-marker"),
        "the host cwd is reachable: {out}"
    );
    assert_eq!(result_of(&out, "pwd"), "/", "{out}");
    assert_eq!(result_of(&out, "cwd"), "/", "{out}");
    assert_sandbox_root_listing(&result_of(&out, "here"));
    assert_sandbox_root_listing(&result_of(&out, "up"));
}

// ------------------------------------------------------------------------------------
// cgroups.
// ------------------------------------------------------------------------------------

#[test]
fn escape_mount_cgroupfs_refused() {
    let _g = serial();
    if !privileged() {
        return;
    }
    assert_mount_tool_refused("mount -t cgroup2 none /tmp/m");
}

#[test]
fn escape_move_into_parent_cgroup_refused() {
    let _g = serial();
    if !privileged() {
        return;
    }
    // No cgroupfs inside: the plugin cannot write its pid anywhere, and stays put.
    let out = sh_run(
        "a=$(cat /proc/self/cgroup); \
         for f in /sys/fs/cgroup/cgroup.procs /sys/fs/cgroup/memory/cgroup.procs \
                  /sys/fs/cgroup/pids/tasks; do echo $$ > $f 2>/dev/null && echo WROTE $f; done; \
         [ \"$a\" = \"$(cat /proc/self/cgroup)\" ] && echo same-cgroup; \
         ls /sys/fs/cgroup 2>&1; echo rc=$?; echo END",
    );
    assert!(!out.contains("WROTE"), "{out}");
    assert!(out.contains("same-cgroup"), "{out}");
    assert_shell_refused(&out, &["No such file or directory"]);
}

#[test]
fn escape_raise_cgroup_limits_refused() {
    let _g = serial();
    if !privileged() {
        return;
    }
    let out = sh_run(
        "for f in /sys/fs/cgroup/memory.max /sys/fs/cgroup/pids.max \
                  /sys/fs/cgroup/memory/memory.limit_in_bytes /sys/fs/cgroup/pids/pids.max; do \
           echo max > $f 2>/dev/null && echo RAISED $f; done; echo END",
    );
    assert!(!out.contains("RAISED"), "{out}");
    // And the limit still holds: 96M cannot be had under --memory 32M.
    let o = checked(&[
        "--memory",
        "32M",
        "--",
        "sh",
        "-c",
        "echo max > /sys/fs/cgroup/memory.max 2>/dev/null && echo RAISED; \
         python3 -c 'b = b\"x\" * (96 << 20); print(\"ALLOCATED\")' 2>/dev/null; echo rc=$?",
    ]);
    let out = stdout(&o);
    assert!(
        !out.contains("RAISED") && !out.contains("ALLOCATED"),
        "{out}"
    );
    assert!(
        out.contains("rc=137") || out.contains("rc=1\n"),
        "{out} {}",
        stderr(&o)
    );
}

// ------------------------------------------------------------------------------------
// Core dumps.
// ------------------------------------------------------------------------------------

#[test]
fn escape_core_dump_lands_nowhere_on_the_host() {
    let _g = serial();
    if !privileged() {
        return;
    }
    let pattern = std::fs::read_to_string("/proc/sys/kernel/core_pattern").unwrap();
    let cwd = tempfile::tempdir_in("/var/tmp").unwrap();
    // Where a plain-file pattern would put the core: the crashing process's cwd, or the
    // pattern's own directory when it is absolute.
    let mut dirs = vec![cwd.path().to_path_buf(), "/".into()];
    if pattern.starts_with('/') {
        if let Some(p) = Path::new(pattern.trim()).parent() {
            if p.is_dir() {
                dirs.push(p.to_path_buf());
            }
        }
    }
    let snap: Vec<Vec<String>> = dirs.iter().map(|d| listing(d)).collect();
    let before = HostState::take();
    let o = Command::new(bin())
        .args(["--", "sh", "-c", "ulimit -c; kill -SEGV $$"])
        .current_dir(cwd.path())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    before.assert_unchanged();
    assert_eq!(o.status.code(), Some(128 + libc::SIGSEGV), "{}", stderr(&o));
    assert_eq!(stdout(&o), "0\n");
    let after: Vec<Vec<String>> = dirs.iter().map(|d| listing(d)).collect();
    assert_eq!(
        snap, after,
        "a file appeared on the host (core_pattern {pattern:?})"
    );
    assert!(listing(cwd.path()).is_empty());
}

#[test]
fn escape_raise_core_limit_refused() {
    let _g = serial();
    if !privileged() {
        return;
    }
    let out = sh_run("ulimit -c unlimited 2>&1; echo rc=$?; ulimit -Hc; echo END");
    assert!(!out.contains("rc=0"), "{out}");
    assert!(out.contains("\n0\nEND"), "{out}");
}

// ------------------------------------------------------------------------------------
// /tmp size.
// ------------------------------------------------------------------------------------

#[test]
fn escape_fill_tmp_past_its_size_refused() {
    let _g = serial();
    if !privileged() {
        return;
    }
    let name = unique("fill");
    let out = sh_run(&format!(
        "head -c 100M /dev/zero > /tmp/{name} ; echo rc=$?; \
         echo size $(wc -c < /tmp/{name}); echo END"
    ));
    assert_shell_refused(&out, &["No space left on device"]);
    let size: u64 = result_of(&out, "size").parse().unwrap();
    assert!(size <= 64 << 20, "/tmp held {size} bytes");
    assert!(
        !Path::new("/tmp").join(&name).exists(),
        "written to the host's /tmp"
    );
}

// ------------------------------------------------------------------------------------
// Hostname and clock.
// ------------------------------------------------------------------------------------

#[test]
fn escape_sethostname_refused() {
    let _g = serial();
    if !privileged() {
        return;
    }
    let host = nix::unistd::gethostname().unwrap();
    let out = sh_run("hostname evil-escape 2>&1; echo rc=$?; echo now $(hostname); echo END");
    assert_shell_refused(&out, &["Operation not permitted", "must be root"]);
    assert_eq!(result_of(&out, "now"), "sandbox", "{out}");
    assert_eq!(
        nix::unistd::gethostname().unwrap(),
        host,
        "host hostname changed"
    );
}

#[test]
fn escape_write_proc_hostname_refused() {
    let _g = serial();
    if !privileged() {
        return;
    }
    let host = nix::unistd::gethostname().unwrap();
    let out = sh_run(
        "echo evil > /proc/sys/kernel/hostname 2>&1; echo rc=$?; echo now $(hostname); echo END",
    );
    assert_shell_refused(&out, &["Read-only file system", "Permission denied"]);
    assert_eq!(result_of(&out, "now"), "sandbox", "{out}");
    assert_eq!(
        nix::unistd::gethostname().unwrap(),
        host,
        "host hostname changed"
    );
}

/// Asserts the host's clock did not jump during `f`.
fn assert_clock_steady(f: impl FnOnce()) {
    let t0 = SystemTime::now();
    f();
    let dt = SystemTime::now()
        .duration_since(t0)
        .expect("the host clock went backwards");
    assert!(
        dt < Duration::from_secs(30),
        "the host clock jumped by {dt:?}"
    );
}

#[test]
fn escape_set_clock_with_date_refused() {
    let _g = serial();
    if !privileged() {
        return;
    }
    assert_clock_steady(|| {
        let out = sh_run("date -s '2001-01-01 00:00:00' 2>&1; echo rc=$?; echo END");
        assert_shell_refused(&out, &["Operation not permitted"]);
    });
}

#[test]
fn escape_clock_settime_syscall_refused() {
    let _g = serial();
    if !privileged() {
        return;
    }
    assert_clock_steady(|| {
        // CLOCK_REALTIME (0) to 2001-01-01.
        let out = py_run(
            "ts = (ctypes.c_long * 2)(978307200, 0)\n\
             call('settime', 'clock_settime', 0, ctypes.addressof(ts))",
        );
        assert_refused(&out, "settime", &["EPERM"]);
    });
}

/// Runs the CLI with `stdin` as the plugin's stdin and `script` under `sh -c`.
fn run_with_stdin(stdin: std::process::Stdio, script: &str) -> Output {
    Command::new(bin())
        .args(["--", "sh", "-c", script])
        .stdin(stdin)
        .output()
        .unwrap()
}

#[test]
fn escape_directory_handed_as_stdin_refused() {
    let _g = serial();
    if !privileged() {
        return;
    }
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let marker = dir.path().join("ran");
    let before = HostState::take();
    // A directory, then an O_PATH handle, as stdin: through /proc/self/fd/0/.. either would
    // lead out of the private root (the CVE-2024-21626 pattern on fds 0-2).
    let as_dir = std::fs::File::open(dir.path()).unwrap();
    let o = run_with_stdin(as_dir.into(), &format!("touch {}", marker.display()));
    assert_eq!(o.status.code(), Some(125), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("stdin (fd 0) is a directory"),
        "{}",
        stderr(&o)
    );
    let c = std::ffi::CString::new("/root").unwrap();
    // SAFETY: open returns a new fd that the Stdio below owns.
    let fd = unsafe { libc::open(c.as_ptr(), libc::O_PATH | libc::O_CLOEXEC) };
    assert!(fd >= 0);
    let as_path = unsafe { std::process::Stdio::from(std::os::fd::OwnedFd::from_raw_fd(fd)) };
    let o = run_with_stdin(as_path, &format!("touch {}", marker.display()));
    assert_eq!(o.status.code(), Some(125), "{}", stderr(&o));
    before.assert_unchanged();
    assert!(!marker.exists(), "the plugin ran");
}

#[test]
fn escape_stdio_file_reopened_with_more_rights_refused() {
    let _g = serial();
    if !privileged() {
        return;
    }
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let input = dir.path().join("input");
    std::fs::write(&input, "original\n").unwrap();
    let output = dir.path().join("output");
    std::fs::write(&output, "host secret\n").unwrap();
    let before = HostState::take();
    // stdin given read-only: reopening /proc/self/fd/0 for writing must not reach the file.
    let o = run_with_stdin(
        std::fs::File::open(&input).unwrap().into(),
        "echo pwned > /proc/self/fd/0 2>/dev/null; cat >/dev/null; echo done",
    );
    assert_eq!(stdout(&o), "done\n", "{}", stderr(&o));
    assert_eq!(std::fs::read_to_string(&input).unwrap(), "original\n");
    // stdout given append-only: truncating it through /dev/stdout must not reach the file,
    // and what the plugin writes is appended.
    let out = std::fs::OpenOptions::new()
        .append(true)
        .open(&output)
        .unwrap();
    let o = Command::new(bin())
        .args([
            "--",
            "sh",
            "-c",
            ": > /dev/stdout; : > /proc/self/fd/1; echo appended",
        ])
        .stdin(std::process::Stdio::null())
        .stdout(out)
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    before.assert_unchanged();
    assert_eq!(
        std::fs::read_to_string(&output).unwrap(),
        "host secret\nappended\n"
    );
}

#[test]
fn escape_dev_is_read_only_and_shm_bounded() {
    let _g = serial();
    if !privileged() {
        return;
    }
    let out = sh_run(
        "touch /dev/evil 2>&1; echo touch=$?; head -c 100M /dev/zero > /dev/shm/big; \
         echo fill=$?; echo ok > /dev/null && echo null-ok; echo END",
    );
    assert!(
        out.contains("Read-only file system") && out.contains("touch=1"),
        "{out}"
    );
    assert!(
        out.contains("No space left on device") && out.contains("fill=1"),
        "{out}"
    );
    assert!(out.contains("null-ok"), "{out}");
}

// ------------------------------------------------------------------------------------
// Host-wide /proc files (issue 12): masked by name, whatever the plugin's ids.
// ------------------------------------------------------------------------------------

/// The host-wide `/proc` files a plugin must not read: memory and page maps, slabs, keys,
/// pressure, zones, I/O maps, and this workplace's VM's `program_cpu`.
const HOST_WIDE_PROC: &[&str] = &[
    "kcore",
    "keys",
    "key-users",
    "timer_list",
    "sched_debug",
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
    "program_cpu",
    "pressure/cpu",
    "pressure/memory",
    "pressure/io",
];

#[test]
fn escape_host_wide_proc_files_are_masked() {
    let _g = serial();
    if !privileged() {
        return;
    }
    // The control: on the host, root reads something from each file this kernel has (a
    // masked file reads empty or not at all inside, so a file empty on the host too could
    // not tell).
    let present: Vec<&str> = HOST_WIDE_PROC
        .iter()
        .copied()
        .filter(|f| {
            std::fs::File::open(format!("/proc/{f}"))
                .and_then(|mut h| {
                    let mut b = [0u8; 64];
                    std::io::Read::read(&mut h, &mut b)
                })
                .is_ok_and(|n| n > 0)
        })
        .collect();
    assert!(
        present.len() >= 8,
        "too few host-wide /proc files readable on the host to test: {present:?}"
    );
    let mut body = String::from("for f in [");
    for f in &present {
        body.push_str(&format!("'{f}', "));
    }
    body.push_str(
        "]:\n    try:\n        n = len(open('/proc/' + f, 'rb').read(4096))\n        \
         print(f, 'LEN', n)\n    except OSError as e:\n        \
         print(f, 'ERR', errno.errorcode.get(e.errno, e.errno))\n",
    );
    let out = py_run(&body);
    for f in &present {
        let line = out
            .lines()
            .find(|l| l.split_whitespace().next() == Some(f))
            .unwrap_or_else(|| panic!("no result for {f}: {out}"));
        assert!(
            line.ends_with("LEN 0") || line.contains(" ERR "),
            "/proc/{f} shows host data inside: {line}\n{out}"
        );
    }
}

/// The `/proc` directories of host-wide data (pressure, ACPI, drivers) are masked by one
/// empty read-only tmpfs, bound over each: inside, each lists empty and refuses a new entry,
/// even from the plugin's root, and all show the same (empty) superblock.
#[test]
fn escape_proc_mask_dirs_are_empty_and_refuse_writes() {
    let _g = serial();
    if !privileged() {
        return;
    }
    // The control: the host has at least two of them, one with entries (pressure).
    let present: Vec<&str> = ["pressure", "acpi", "driver"]
        .into_iter()
        .filter(|d| std::path::Path::new(&format!("/proc/{d}")).is_dir())
        .collect();
    assert!(
        present.len() >= 2,
        "too few masked /proc directories on the host to test: {present:?}"
    );
    assert!(
        std::fs::read_dir("/proc/pressure").is_ok_and(|mut r| r.next().is_some()),
        "the host's /proc/pressure lists nothing: the control cannot tell a mask"
    );
    let mut body = String::from(
        "print('ROOT', os.stat('/').st_dev)\nprint('DEV', os.stat('/dev').st_dev)\nfor d in [",
    );
    for d in &present {
        body.push_str(&format!("'{d}', "));
    }
    body.push_str(
        "]:\n    p = '/proc/' + d\n    print(d, 'LIST', len(os.listdir(p)), os.stat(p).st_dev)\n    \
         op(d + ' MKDIR', lambda: os.mkdir(p + '/x'))\n    \
         op(d + ' CREATE', lambda: open(p + '/x', 'w'))\n",
    );
    let out = py_run(&body);
    let root_dev = result_of(&out, "ROOT");
    // The masks and /dev live on the root tmpfs: no superblock of their own (each one is
    // walked by every memory cgroup's removal on the machine while the sandbox lives).
    assert_eq!(
        result_of(&out, "DEV"),
        root_dev,
        "/dev has a superblock of its own: {out}"
    );
    let mut devs = std::collections::BTreeSet::new();
    for d in &present {
        let list = out
            .lines()
            .find(|l| l.starts_with(&format!("{d} LIST ")))
            .unwrap_or_else(|| panic!("no listing for /proc/{d}: {out}"));
        let f: Vec<&str> = list.split_whitespace().collect();
        assert_eq!(f[2], "0", "/proc/{d} shows host entries inside: {out}");
        devs.insert(f[3].to_string());
        for what in ["MKDIR", "CREATE"] {
            assert_eq!(
                result_of(&out, &format!("{d} {what}")),
                "EROFS",
                "/proc/{d} {what}: {out}"
            );
        }
    }
    assert_eq!(devs.len(), 1, "the masks are not one tmpfs: {out}");
    assert!(
        devs.contains(&root_dev),
        "the masks have a superblock of their own: {out}"
    );
}

/// The filesystems a default sandbox makes for itself: the root tmpfs, `/tmp`, `/run`,
/// `/proc` and `/dev/shm`, and no more (`/dev` and the `/proc` masks are mounts of the root
/// tmpfs). Each superblock a live sandbox holds is two list_lrus that every memory cgroup's
/// removal anywhere on the machine walks.
#[test]
fn a_default_sandbox_makes_five_filesystems() {
    let _g = serial();
    if !privileged() {
        return;
    }
    // Devices in a mountinfo: the third field, "major:minor".
    let devs = |text: &str| -> std::collections::BTreeMap<String, String> {
        let mut m = std::collections::BTreeMap::new();
        for l in text.lines() {
            let f: Vec<&str> = l.split_whitespace().collect();
            if let (Some(d), Some(at)) = (f.get(2), f.get(4)) {
                m.entry(d.to_string()).or_insert_with(|| at.to_string());
            }
        }
        m
    };
    let host = devs(&std::fs::read_to_string("/proc/self/mountinfo").unwrap());
    let out = sh_run("cat /proc/self/mountinfo; echo END");
    let inside = devs(&out);
    let own: Vec<(&String, &String)> = inside
        .iter()
        .filter(|(d, _)| !host.contains_key(*d))
        .collect();
    let mounts: Vec<&str> = own.iter().map(|(_, m)| m.as_str()).collect();
    assert_eq!(
        mounts.len(),
        5,
        "filesystems made by the sandbox (device, first mount point): {own:?}\n{out}"
    );
    for m in ["/", "/tmp", "/run", "/proc", "/dev/shm"] {
        assert!(
            mounts.contains(&m),
            "no filesystem of its own at {m}: {own:?}"
        );
    }
}

/// A `proc` and a `dev` placed below a bind of a host directory make nothing in it but
/// their mount points: the masks' empty directory and the device nodes' files are made in
/// a tmpfs of their own there, never in the host's directory.
#[test]
fn escape_proc_and_dev_below_a_host_bind_make_nothing_in_the_host_directory() {
    let _g = serial();
    if !privileged() {
        return;
    }
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let host = dir.path().join("srv");
    std::fs::create_dir(&host).unwrap();
    // The sandbox's root is an unprivileged host uid: let it make the mount points.
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&host, std::fs::Permissions::from_mode(0o777)).unwrap();
    let profile = dir.path().join("p.toml");
    std::fs::write(
        &profile,
        format!(
            "mount = [\n\
             {{ type = \"ro-bind\", src = \"/usr\" }},\n\
             {{ type = \"mirror\", path = \"/bin\", optional = true }},\n\
             {{ type = \"mirror\", path = \"/lib\", optional = true }},\n\
             {{ type = \"mirror\", path = \"/lib64\", optional = true }},\n\
             {{ type = \"bind\", src = \"{}\", dst = \"/srv\" }},\n\
             {{ type = \"proc\", dst = \"/srv/proc\" }},\n\
             {{ type = \"dev\", dst = \"/srv/dev\" }},\n\
             ]\n",
            host.display()
        ),
    )
    .unwrap();
    let out = {
        let script = "ls -a /srv/dev; echo x > /srv/dev/null && echo null-ok; \
                      ls -A /srv/proc/pressure 2>/dev/null | wc -l; \
                      mkdir /srv/proc/pressure/x 2>&1; echo END";
        let o = checked(&[
            "--profile",
            profile.to_str().unwrap(),
            "--",
            "/bin/sh",
            "-c",
            script,
        ]);
        let out = stdout(&o);
        assert!(out.contains("END"), "{out} {}", stderr(&o));
        out
    };
    assert!(out.contains("null-ok"), "{out}");
    assert!(out.contains("Read-only file system"), "{out}");
    let mut names: Vec<String> = std::fs::read_dir(&host)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    assert_eq!(
        names,
        ["dev", "proc"],
        "made in the host's directory: {names:?}"
    );
    for d in ["dev", "proc"] {
        let n = std::fs::read_dir(host.join(d)).unwrap().count();
        assert_eq!(n, 0, "{d} in the host's directory is not empty");
    }
}

#[test]
fn escape_proc_self_cgroup_shows_no_host_path() {
    let _g = serial();
    if !privileged() {
        return;
    }
    let probe = "print(open('/proc/self/cgroup').read(), end='')";
    let out = py_run(probe);
    for l in out.lines().filter(|l| *l != "END") {
        assert!(l.ends_with(":/"), "a host cgroup path shows inside: {out}");
    }
    // The control: without the cgroup namespace, the same probe names the sandbox's cgroup.
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("p.toml");
    std::fs::write(&p, "extends = \"default\"\n[namespaces]\ncgroup = false\n").unwrap();
    let out = py_in(Some(p.to_str().unwrap()), probe);
    assert!(
        out.contains("/sandbox-runner/sbx-"),
        "the control does not show the sandbox's cgroup: {out}"
    );
}
