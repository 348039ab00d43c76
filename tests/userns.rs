//! Unprivileged by default (issue 12, part 1): run by root, a sandbox still gets a user
//! namespace, whose ids 0-65535 map to a block of host ids of its own. Root inside is then
//! an unprivileged host id: it shares none of host root's per-user kernel counts, files it
//! makes in shared directories are its own, and two sandboxes never share a block.
//! `userns = false` is the explicit way back to host ids (the control runs).
#![allow(clippy::await_holding_lock)] // serial(): one test at a time, each on its own runtime

mod common;
use common::*;

use sandbox_runner::idrange::{FIRST_ID, ID_RANGE_SIZE, SLOTS};
use sandbox_runner::{AttachedRunner, Profile, Runner, SandboxRunner, Stdio};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

fn opted_out() -> Profile {
    let mut p = Profile::builtin("default").unwrap();
    p.userns = false;
    p
}

/// The `Uid:` and `Gid:` lines of a host process, as (real, effective, saved, fs) each.
fn host_ids(pid: i32) -> (Vec<u32>, Vec<u32>) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| -> Vec<u32> {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap()
            .split_whitespace()
            .skip(1)
            .map(|v| v.parse().unwrap())
            .collect()
    };
    (field("Uid:"), field("Gid:"))
}

/// The plugin's host pid: the only child of the sandbox's init.
fn plugin_pid(init: i32) -> i32 {
    let children =
        std::fs::read_to_string(format!("/proc/{init}/task/{init}/children")).unwrap_or_default();
    children
        .split_whitespace()
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("init {init} has no child"))
}

/// Starts `script` under `sh` with stdin and stdout as pipes and returns the runner once the
/// script printed its first line (returned too).
async fn start_sh(profile: Profile, script: &str) -> (SandboxRunner, String) {
    start_prog(profile, "/bin/sh", &["-c", script]).await
}

async fn start_prog(profile: Profile, prog: &str, args: &[&str]) -> (SandboxRunner, String) {
    let mut r = SandboxRunner::new(profile, prog, args.iter().copied())
        .unwrap()
        .with_stdin(Stdio::Pipe)
        .with_stdout(Stdio::Pipe);
    r.start().await.unwrap();
    let mut out = BufReader::new(r.stdout().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).await.unwrap();
    (r, line)
}

#[test]
fn root_inside_is_an_unprivileged_host_id_of_the_sandboxs_own_block() {
    let _g = serial();
    if !privileged() {
        return;
    }
    rt().block_on(async {
        let before = HostState::take();
        let (mut r, line) = start_sh(
            Profile::builtin("default").unwrap(),
            "echo $(id -u) $(id -g) $(cat /proc/self/uid_map) $(cat /proc/self/gid_map); read x",
        )
        .await;
        let f: Vec<u64> = line
            .split_whitespace()
            .map(|v| v.parse().unwrap())
            .collect();
        assert_eq!(f.len(), 8, "{line}");
        let (base, n) = (f[3], f[4]);
        assert_eq!((f[0], f[1]), (0, 0), "root inside: {line}");
        assert_eq!((f[2], f[5], f[7]), (0, 0, n), "maps: {line}");
        assert_eq!(f[6], base, "uid and gid blocks differ: {line}");
        assert_eq!(n, ID_RANGE_SIZE as u64);
        assert!(
            base >= FIRST_ID as u64 && base < FIRST_ID as u64 + (SLOTS * ID_RANGE_SIZE) as u64,
            "{base:#x} outside the blocks"
        );
        assert_eq!((base - FIRST_ID as u64) % ID_RANGE_SIZE as u64, 0);
        // Seen from the host: every id of the plugin and of its init is the block's first.
        let init = r.init_pid().unwrap();
        for pid in [init, plugin_pid(init)] {
            let (uids, gids) = host_ids(pid);
            assert!(
                uids.iter().chain(&gids).all(|&id| id as u64 == base),
                "pid {pid}: uids {uids:?} gids {gids:?}, block {base:#x}"
            );
        }
        // Its user namespace is not the host's, and belongs to the block's first id.
        let ns = |p: i32| std::fs::read_link(format!("/proc/{p}/ns/user")).unwrap();
        assert_ne!(ns(init), ns(std::process::id() as i32));
        // The claim on the block exists while it runs, and goes with it.
        let claims = || -> usize {
            std::fs::read_dir(sandbox_runner::idrange::claims_dir())
                .map(|d| d.count())
                .unwrap_or(0)
        };
        assert!(claims() >= 1);
        r.take_stdin().unwrap().write_all(b"\n").await.unwrap();
        assert!(r.wait().await.unwrap().success());
        drop(r);
        let claim = sandbox_runner::idrange::claims_dir()
            .join(((base - FIRST_ID as u64) / ID_RANGE_SIZE as u64).to_string());
        assert!(!claim.exists(), "{} left behind", claim.display());
        before.assert_unchanged();

        // The control: opted out, the plugin is host root.
        let (mut r, _) = start_sh(opted_out(), "echo up; read x").await;
        let init = r.init_pid().unwrap();
        let (uids, _) = host_ids(plugin_pid(init));
        assert_eq!(uids, vec![0, 0, 0, 0], "userns = false keeps host ids");
        r.take_stdin().unwrap().write_all(b"\n").await.unwrap();
        r.wait().await.unwrap();
    });
}

#[test]
fn sandboxes_alive_together_never_share_a_block() {
    let _g = serial();
    if !privileged() {
        return;
    }
    rt().block_on(async {
        let mut runners = Vec::new();
        let mut bases = std::collections::BTreeSet::new();
        for _ in 0..6 {
            let (r, line) = start_sh(
                Profile::builtin("default").unwrap(),
                "echo $(cat /proc/self/uid_map); read x",
            )
            .await;
            let base: u32 = line.split_whitespace().nth(1).unwrap().parse().unwrap();
            assert!(bases.insert(base), "block {base:#x} given twice");
            runners.push(r);
        }
        for mut r in runners {
            r.take_stdin().unwrap().write_all(b"\n").await.unwrap();
            r.wait().await.unwrap();
        }
    });
}

/// Opens inotify instances until the kernel refuses, reports how many, and holds them.
const INOTIFY_HOG: &str = r#"
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
fds = []
while True:
    fd = libc.inotify_init1(0)
    if fd < 0:
        err = ctypes.get_errno()
        break
    fds.append(fd)
print(len(fds), os.strerror(err), flush=True)
sys.stdin.readline()
"#;

#[test]
fn a_plugin_that_takes_every_inotify_instance_leaves_host_roots_alone() {
    let _g = serial();
    if !privileged() {
        return;
    }
    let max: usize = std::fs::read_to_string("/proc/sys/fs/inotify/max_user_instances")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    rt().block_on(async {
        let (mut r, line) = start_prog(
            Profile::builtin("default").unwrap(),
            "/usr/bin/python3",
            &["-c", INOTIFY_HOG],
        )
        .await;
        let got: usize = line.split_whitespace().next().unwrap().parse().unwrap();
        // It ran into its own limit (nofile or the per-user count), not into nothing.
        assert!(
            line.contains("Too many open files") && got >= 1,
            "the plugin did not exhaust anything: {line}"
        );
        // Host root can still make one, while the plugin holds all it could get: the
        // plugin's instances are counted to its own host id, not to root's.
        // SAFETY: inotify_init1 returns a new fd we own, or -1.
        let fd = unsafe { libc::inotify_init1(libc::IN_CLOEXEC) };
        let err = std::io::Error::last_os_error();
        assert!(
            fd >= 0,
            "host root's inotify_init1 failed while the plugin holds {got} of {max}: {err}"
        );
        // SAFETY: closes the fd made above.
        unsafe { libc::close(fd) };
        r.take_stdin().unwrap().write_all(b"\n").await.unwrap();
        r.wait().await.unwrap();
    });
}

/// Queues real-time signals to itself (blocked) until the kernel refuses, then holds them.
/// (`sigqueue`, not `kill`: the kernel lets a `kill` through the limit, dropping the signal.)
const SIGNAL_HOG: &str = r#"
import ctypes, os, signal, sys
libc = ctypes.CDLL(None, use_errno=True)
sig = signal.SIGRTMIN + 1
signal.pthread_sigmask(signal.SIG_BLOCK, [sig])
n = 0
while libc.sigqueue(os.getpid(), sig, ctypes.c_void_p(0)) == 0:
    n += 1
print(n, os.strerror(ctypes.get_errno()), flush=True)
sys.stdin.readline()
"#;

/// Run on the host as root: queues one blocked real-time signal to itself.
const ONE_SIGNAL: &str = r#"
import ctypes, os, signal
libc = ctypes.CDLL(None, use_errno=True)
sig = signal.SIGRTMIN + 1
signal.pthread_sigmask(signal.SIG_BLOCK, [sig])
if libc.sigqueue(os.getpid(), sig, ctypes.c_void_p(0)) == 0:
    print("queued")
else:
    print("refused", os.strerror(ctypes.get_errno()))
"#;

#[test]
fn a_plugin_that_fills_its_signal_queue_leaves_host_roots_alone() {
    let _g = serial();
    if !privileged() {
        return;
    }
    rt().block_on(async {
        let (mut r, line) = start_prog(
            Profile::builtin("default").unwrap(),
            "/usr/bin/python3",
            &["-c", SIGNAL_HOG],
        )
        .await;
        let queued: u64 = line.split_whitespace().next().unwrap().parse().unwrap();
        assert!(
            line.contains("Resource temporarily unavailable") && queued > 0,
            "the plugin did not fill its queue: {line}"
        );
        let host = std::process::Command::new("python3")
            .args(["-c", ONE_SIGNAL])
            .output()
            .unwrap();
        let host = String::from_utf8_lossy(&host.stdout);
        assert_eq!(
            host.trim(),
            "queued",
            "host root could not queue a signal while the plugin holds {queued}"
        );
        r.take_stdin().unwrap().write_all(b"\n").await.unwrap();
        r.wait().await.unwrap();
    });
}

#[test]
fn files_a_plugin_makes_in_its_socket_directory_are_its_own_not_roots() {
    let _g = serial();
    if !privileged() {
        return;
    }
    rt().block_on(async {
        let (mut r, line) = start_sh(
            Profile::builtin("go-plugin").unwrap(),
            "cp /bin/true \"$PLUGIN_UNIX_SOCKET_DIR/suid\" && \
             chmod 4755 \"$PLUGIN_UNIX_SOCKET_DIR/suid\" && echo made; read x",
        )
        .await;
        assert_eq!(line.trim(), "made");
        let init = r.init_pid().unwrap();
        let (uids, _) = host_ids(plugin_pid(init));
        let f = sandbox_runner::state::dir_of(r.id())
            .join("s/sock")
            .join("suid");
        let meta = std::fs::metadata(&f).unwrap();
        use std::os::unix::fs::MetadataExt;
        assert_eq!(meta.uid(), uids[0], "{} owner", f.display());
        assert_ne!(meta.uid(), 0, "a file of the plugin's belongs to host root");
        assert_ne!(meta.gid(), 0);
        // Its setuid bit, should anything ever run it, gives the plugin's own id only.
        assert_ne!(meta.mode() & 0o4000, 0, "the control: the bit is set");
        r.take_stdin().unwrap().write_all(b"\n").await.unwrap();
        r.wait().await.unwrap();
    });
}

fn cli_with_socket_dir(dir: &str, script: &str) -> std::process::Output {
    std::process::Command::new(bin())
        .args([
            "--profile",
            "go-plugin",
            "--stdin",
            "null",
            "--",
            "sh",
            "-c",
            script,
        ])
        .env("PLUGIN_UNIX_SOCKET_DIR", dir)
        .output()
        .unwrap()
}

#[test]
fn a_hosts_plugin_unix_socket_dir_gives_each_sandbox_a_directory_of_its_own() {
    let _g = serial();
    if !privileged() {
        return;
    }
    // Bad values are refused, naming the variable, the value and the cause.
    let o = cli_with_socket_dir("relative/dir", "true");
    assert_eq!(o.status.code(), Some(125));
    let err = stderr(&o);
    assert!(
        err.contains("PLUGIN_UNIX_SOCKET_DIR=relative/dir") && err.contains("relative"),
        "{err}"
    );
    let file = tempfile::NamedTempFile::new().unwrap();
    let o = cli_with_socket_dir(file.path().to_str().unwrap(), "true");
    assert_eq!(o.status.code(), Some(125));
    assert!(stderr(&o).contains("not a directory"), "{}", stderr(&o));
    let o = cli_with_socket_dir("/nonexistent/sock-dir", "true");
    assert_eq!(o.status.code(), Some(125));
    assert!(
        stderr(&o).contains("/nonexistent/sock-dir"),
        "{}",
        stderr(&o)
    );

    // A good one: each sandbox works in a directory of its own in it, and sees nothing of
    // what another one made there (nor the host's own files).
    let host = tempfile::tempdir_in("/var/tmp").unwrap();
    let d = host.path().to_str().unwrap();
    std::fs::write(host.path().join("host-secret.sock"), "host").unwrap();
    let mut first = std::process::Command::new(bin())
        .args([
            "--profile",
            "go-plugin",
            "--stdin",
            "null",
            "--",
            "sh",
            "-c",
            // (stderr: with a socket directory, stdout is for a go-plugin handshake)
            "touch \"$PLUGIN_UNIX_SOCKET_DIR/first\" && echo made >&2 && sleep 5",
        ])
        .env("PLUGIN_UNIX_SOCKET_DIR", d)
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = std::io::BufReader::new(first.stderr.take().unwrap());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut out, &mut line).unwrap();
    assert_eq!(line.trim(), "made");
    let o = cli_with_socket_dir(d, "ls -A \"$PLUGIN_UNIX_SOCKET_DIR\" >&2; echo END >&2");
    assert_eq!(
        stderr(&o),
        "END\n",
        "a sandbox sees another's or the host's files"
    );
    // On the host, the first sandbox's file is in a directory named after it.
    let subdirs: Vec<_> = std::fs::read_dir(host.path())
        .unwrap()
        .flatten()
        .filter(|e| e.path().join("sock/first").exists())
        .collect();
    assert_eq!(subdirs.len(), 1, "the first sandbox's directory");
    assert!(subdirs[0].file_name().to_string_lossy().starts_with("sbx-"));
    // It goes with its sandbox; the host's own files stay.
    first.kill().unwrap();
    first.wait().unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
    while subdirs[0].path().exists() && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    assert!(
        !subdirs[0].path().exists(),
        "the sandbox's directory stayed"
    );
    assert!(host.path().join("host-secret.sock").exists());
}

#[test]
fn rlimit_nproc_now_limits_the_plugin() {
    let _g = serial();
    if !privileged() {
        return;
    }
    // Root is exempt from RLIMIT_NPROC; the plugin, an unprivileged host id, is not.
    let dir = tempfile::tempdir().unwrap();
    // The forks happen in a subshell (a shell exits when a fork fails), and the errors are
    // counted with builtins only: no fork may be needed after the limit is reached.
    let script = "( i=0; while [ $i -lt 40 ]; do sleep 2 & i=$((i+1)); done ) 2>/tmp/err; \
                  n=0; while read -r l; do case $l in *fork*|*Resource*) n=$((n+1));; esac; \
                  done </tmp/err; echo $n; echo END";
    let mk = |name: &str, extra: &str| {
        let p = dir.path().join(name);
        std::fs::write(
            &p,
            format!("extends = \"default\"\n{extra}[rlimits]\nnproc = 10\n"),
        )
        .unwrap();
        p
    };
    let limited = mk("limited.toml", "");
    let o = run(&[
        "--profile",
        limited.to_str().unwrap(),
        "--",
        "sh",
        "-c",
        script,
    ]);
    let refused: u32 = stdout(&o)
        .lines()
        .next()
        .and_then(|l| l.trim().parse().ok())
        .unwrap_or(0);
    assert!(
        refused > 0,
        "40 processes under nproc = 10: {:?} {} {}",
        o.status,
        stdout(&o),
        stderr(&o)
    );
    // The control: as host root (userns = false), the same limit does not bite.
    let root = mk("root.toml", "userns = false\n");
    let o = run(&[
        "--profile",
        root.to_str().unwrap(),
        "--",
        "sh",
        "-c",
        script,
    ]);
    assert_eq!(
        stdout(&o).lines().next().map(str::trim),
        Some("0"),
        "host root was limited: {}",
        stdout(&o)
    );
}

/// Adds inotify watches (one per new file) until the kernel refuses, reports how many, and
/// holds them.
const WATCH_HOG: &str = r#"
import ctypes, os, sys
libc = ctypes.CDLL(None, use_errno=True)
fd = libc.inotify_init1(0)
os.makedirs('/tmp/w', exist_ok=True)
n = 0
while True:
    p = '/tmp/w/%d' % n
    open(p, 'w').close()
    if libc.inotify_add_watch(fd, p.encode(), 2) < 0:
        break
    n += 1
print(n, os.strerror(ctypes.get_errno()), flush=True)
sys.stdin.readline()
"#;

#[test]
fn a_plugin_that_takes_every_inotify_watch_leaves_host_roots_alone() {
    let _g = serial();
    if !privileged() {
        return;
    }
    rt().block_on(async {
        let (mut r, line) = start_prog(
            Profile::builtin("default").unwrap(),
            "/usr/bin/python3",
            &["-c", WATCH_HOG],
        )
        .await;
        let got: u64 = line.split_whitespace().next().unwrap().parse().unwrap();
        assert!(
            line.contains("No space left on device") && got > 0,
            "the plugin did not exhaust its watches: {line}"
        );
        // Host root still adds one while the plugin holds every watch it could get.
        let host = tempfile::NamedTempFile::new().unwrap();
        // SAFETY: inotify_init1 returns a new fd we own, or -1.
        let fd = unsafe { libc::inotify_init1(libc::IN_CLOEXEC) };
        assert!(fd >= 0, "{}", std::io::Error::last_os_error());
        let path = std::ffi::CString::new(host.path().to_str().unwrap()).unwrap();
        // SAFETY: a live NUL-terminated path and our own inotify fd.
        let wd = unsafe { libc::inotify_add_watch(fd, path.as_ptr(), libc::IN_MODIFY) };
        let err = std::io::Error::last_os_error();
        // SAFETY: closes the fd made above.
        unsafe { libc::close(fd) };
        assert!(
            wd >= 0,
            "host root's inotify_add_watch failed while the plugin holds {got}: {err}"
        );
        r.take_stdin().unwrap().write_all(b"\n").await.unwrap();
        r.wait().await.unwrap();
    });
}

/// The claim files naming sandbox `id`.
fn claims_of(id: &str) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(sandbox_runner::idrange::claims_dir())
        .map(|d| {
            d.flatten()
                .map(|e| e.path())
                .filter(|p| std::fs::read_to_string(p).is_ok_and(|t| t.contains(id)))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn a_detached_sandboxs_block_is_freed_when_it_ends_and_cleanup_frees_stale_claims() {
    let _g = serial();
    if !privileged() {
        return;
    }
    rt().block_on(async {
        let mut p = Profile::builtin("default").unwrap();
        p.detach = true;
        let mut r = SandboxRunner::new(p, "/bin/sh", ["-c", "sleep 0.3"])
            .unwrap()
            .with_stdout(Stdio::Null)
            .with_stderr(Stdio::Null);
        r.start().await.unwrap();
        let id = r.id().to_string();
        assert_eq!(
            claims_of(&id).len(),
            1,
            "the detached sandbox holds one block"
        );
        assert!(r.wait().await.unwrap().success());
        assert!(claims_of(&id).is_empty(), "{:?} left", claims_of(&id));
    });
    // A claim whose owner is gone (a host and its reaper both killed): cleanup frees it.
    let dir = sandbox_runner::idrange::claims_dir();
    std::fs::create_dir_all(&dir).unwrap();
    let slot = (0..sandbox_runner::idrange::SLOTS)
        .rev()
        .find(|s| !dir.join(s.to_string()).exists())
        .unwrap();
    let fake = dir.join(slot.to_string());
    std::fs::write(
        &fake,
        r#"{"id":"sbx-000000000000000000000000","owner_pid":2147483646,"owner_start":1}"#,
    )
    .unwrap();
    let o = run(&["check", "--cleanup"]);
    assert!(!fake.exists(), "stale claim kept: {}", stdout(&o));
    assert!(
        stdout(&o).contains(&format!("freed the host id block {slot}")),
        "{}",
        stdout(&o)
    );
}
