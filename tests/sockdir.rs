//! The socket directory (issue 11, part 2): run as root, a tmpfs of each sandbox's own,
//! limited in size and inodes, `nosuid,nodev,noexec,nosymfollow` on the host, at the same
//! path inside as on the host; removed by an unmount whatever the plugin made in it. In
//! rootless mode a plain directory, removed with a fixed number of fds however deep.
//! `check --cleanup` unmounts and removes what a dead host left, and says (exit 1) what it
//! could not remove.

mod common;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;
use sandbox_runner::{AttachedRunner, Profile, Runner, SandboxRunner, Stdio};
use std::process::Command;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

/// How deep the trees a plugin makes go: 8,000 levels, 1,000 in the emulated VM (whose
/// point is cgroup v2, not depth). Each `mkdir` of the plugin costs Landlock a walk up the
/// whole path, so making the tree is quadratic in its depth; the 25,000 levels that broke
/// the old cleanup took a minute to make.
fn levels() -> usize {
    if in_vm() {
        1000
    } else {
        8000
    }
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// The go-plugin profile with `extra` lines added to its `[sockets]` table.
fn profile(extra: &str) -> Profile {
    Profile::from_toml_str(
        &format!("extends = \"go-plugin\"\n[sockets]\nenabled = true\n{extra}\n"),
        "<test>",
    )
    .unwrap()
}

/// Starts `sh -c script` under `p`, with stdin a pipe, and reads the first line of its
/// stderr (stdout is for a handshake).
async fn start(p: Profile, script: &str) -> (SandboxRunner, String) {
    let mut r = SandboxRunner::new(p, "/bin/sh", ["-c", script])
        .unwrap()
        .with_stdin(Stdio::Pipe)
        .with_stdout(Stdio::Pipe)
        .with_stderr(Stdio::Pipe);
    r.start().await.unwrap();
    let mut err = BufReader::new(r.stderr().unwrap());
    let mut line = String::new();
    err.read_line(&mut line).await.unwrap();
    (r, line)
}

async fn finish(mut r: SandboxRunner) {
    if let Some(mut i) = r.take_stdin() {
        let _ = i.write_all(b"\n").await;
    }
    tokio::time::timeout(Duration::from_secs(20), r.wait())
        .await
        .expect("the plugin did not end")
        .unwrap();
}

/// The top of a sandbox's socket directory on the host (its tmpfs mount point).
fn top(r: &SandboxRunner) -> PathBuf {
    sandbox_runner::state::dir_of(r.id()).join("s")
}

/// The `/proc/self/mountinfo` line of the mount at `path`, if any.
fn mount_at(path: &Path) -> Option<String> {
    let p = path.to_str().unwrap();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .find(|l| l.split(' ').nth(4) == Some(p))
        .map(str::to_owned)
}

#[test]
fn run_as_root_the_socket_directory_is_a_bounded_tmpfs_of_its_own_locked_down_on_the_host() {
    let _g = serial();
    if !privileged() {
        return;
    }
    let before = HostState::take();
    rt().block_on(async {
        let (r, line) = start(profile(""), "echo \"$PLUGIN_UNIX_SOCKET_DIR\" >&2; read x").await;
        let top = top(&r);
        // The same path inside as on the host.
        assert_eq!(line.trim(), top.join("sock").to_str().unwrap());
        let m = mount_at(&top).unwrap_or_else(|| panic!("no mount at {}", top.display()));
        let fields: Vec<&str> = m.split(' ').collect();
        let opts = fields[5];
        let sep = fields.iter().position(|f| *f == "-").unwrap();
        let (fstype, sup) = (fields[sep + 1], fields[sep + 3]);
        assert_eq!(fstype, "tmpfs", "{m}");
        for o in ["nosuid", "nodev", "noexec", "nosymfollow"] {
            assert!(opts.split(',').any(|x| x == o), "{o} missing: {m}");
        }
        assert!(sup.contains("size=1024k"), "{m}");
        assert!(sup.contains("nr_inodes=64"), "{m}");
        assert!(sup.contains("mode=711"), "{m}");
        finish(r).await;
        assert!(mount_at(&top).is_none(), "the tmpfs stayed mounted");
        assert!(!top.exists(), "{} stayed", top.display());
    });
    before.assert_unchanged();
}

/// What `script` (run in the socket directory) prints on its first stderr line.
fn inside(extra: &str, script: &str) -> String {
    rt().block_on(async {
        let (r, line) = start(
            profile(extra),
            &format!("cd \"$PLUGIN_UNIX_SOCKET_DIR\" || exit 9; {script}; read x"),
        )
        .await;
        finish(r).await;
        line.trim().to_owned()
    })
}

#[test]
fn a_plugin_cannot_write_more_than_size_into_its_socket_directory() {
    let _g = serial();
    if !privileged() {
        return;
    }
    let before = HostState::take();
    let fill = "dd if=/dev/zero of=fill bs=64k count=128 2>/dev/null && echo wrote-all >&2 \
                || echo \"$(wc -c < fill)\" >&2";
    let got = inside("", fill);
    let bytes: u64 = got
        .parse()
        .unwrap_or_else(|_| panic!("8 MiB fitted: {got}"));
    assert!(bytes <= 1 << 20, "{bytes} bytes written past the 1M limit");
    // The control: the profile's size is what bounds it.
    let got = inside("size = \"4M\"", fill);
    let more: u64 = got
        .parse()
        .unwrap_or_else(|_| panic!("8 MiB fitted: {got}"));
    assert!(more > 3 << 20 && more <= 4 << 20, "{more}");
    before.assert_unchanged();
}

#[test]
fn a_plugin_cannot_make_more_files_than_inodes_in_its_socket_directory() {
    let _g = serial();
    if !privileged() {
        return;
    }
    let before = HostState::take();
    let many = "i=0; while [ $i -lt 1000 ] && true 2>/dev/null > f$i; do i=$((i+1)); done; \
                echo $i >&2";
    let n: u32 = inside("", many).parse().unwrap();
    // 64 inodes: the root, sock, links, and the files.
    assert!((50..=61).contains(&n), "{n} files made with inodes = 64");
    let n: u32 = inside("inodes = 200", many).parse().unwrap();
    assert!(n > 150 && n <= 197, "{n} files made with inodes = 200");
    before.assert_unchanged();
}

/// A tree `levels` deep made in the socket directory by perl (a shell's `cd` would need a
/// path as long as the tree).
const DEEP: &str = "perl -e 'for (1..$ENV{LEVELS}) { mkdir \"d\" or die \"mkdir: $!\"; \
                    chdir \"d\" or die \"chdir: $!\" } print STDERR \"made\\n\"' || \
                    echo failed >&2";

#[test]
fn a_deep_tree_goes_with_the_unmount_and_the_next_start_is_unaffected() {
    let _g = serial();
    if !privileged() {
        return;
    }
    let before = HostState::take();
    rt().block_on(async {
        let p = profile("inodes = 30000\nsize = \"128M\"");
        let (r, line) = start(
            p,
            &format!(
                "cd \"$PLUGIN_UNIX_SOCKET_DIR\" || exit 9; LEVELS={} {DEEP}; read x",
                levels()
            ),
        )
        .await;
        assert_eq!(line.trim(), "made");
        let top = top(&r);
        let t = Instant::now();
        drop(r);
        let took = t.elapsed();
        assert!(mount_at(&top).is_none(), "the tmpfs stayed mounted");
        assert!(!top.exists(), "{} stayed", top.display());
        eprintln!(
            "kill and removal of a sandbox with a {}-level tree: {took:?}",
            levels()
        );
        // The next sandbox starts as usual, with nothing of the last one to retry.
        let (r, line) = start(profile(""), "echo ok >&2; read x").await;
        assert_eq!(line.trim(), "ok");
        finish(r).await;
    });
    before.assert_unchanged();
}

#[test]
fn rootless_the_plain_socket_directory_is_removed_however_deep_the_tree() {
    let _g = serial();
    if !privileged() {
        return;
    }
    let before = HostState::take();
    rt().block_on(async {
        let mut p = profile("");
        // Rootless as root: the runner maps root to root and mounts nothing on the host.
        p.rootless = sandbox_runner::profile::RootlessMode::Always;
        let (r, line) = start(
            p,
            &format!(
                "cd \"$PLUGIN_UNIX_SOCKET_DIR\" || exit 9; LEVELS={} {DEEP}; read x",
                levels()
            ),
        )
        .await;
        assert_eq!(line.trim(), "made", "a plain directory has no inode limit");
        let top = top(&r);
        assert!(mount_at(&top).is_none(), "rootless mounted on the host");
        let t = Instant::now();
        finish(r).await;
        let took = t.elapsed();
        assert!(!top.exists(), "{} stayed", top.display());
        eprintln!(
            "rootless: end and removal of a {}-level tree: {took:?}",
            levels()
        );
    });
    before.assert_unchanged();
}

/// Makes a state directory as a host that died would have left it (its owner is not alive),
/// with the socket directory's tmpfs mounted and recorded, and a deep tree in it.
fn dead_hosts_state(levels: usize, mounted: bool) -> PathBuf {
    let id = format!(
        "sbx-{:024x}",
        std::process::id() as u128 * 7919 + levels as u128
    );
    let dir = sandbox_runner::state::dir_of(&id);
    std::fs::create_dir_all(&dir).unwrap();
    // pid 1 with a start time it never had: a dead owner.
    std::fs::write(dir.join("owner"), "1 1\n").unwrap();
    let top = dir.join("s");
    std::fs::create_dir(&top).unwrap();
    std::fs::write(
        dir.join(sandbox_runner::sockfs::MOUNT_RECORD),
        format!("{}\n", top.display()),
    )
    .unwrap();
    if mounted {
        let st = Command::new("mount")
            .args(["-t", "tmpfs", "-o", "size=64M,nr_inodes=30000", "leftover"])
            .arg(&top)
            .status()
            .unwrap();
        assert!(st.success());
    }
    let mut d = top.join("sock");
    std::fs::create_dir(&d).unwrap();
    let cwd = std::env::current_dir().unwrap();
    std::env::set_current_dir(&d).unwrap();
    for _ in 0..levels {
        std::fs::create_dir("d").unwrap();
        std::env::set_current_dir("d").unwrap();
    }
    std::env::set_current_dir(cwd).unwrap();
    d.push("f");
    dir
}

#[test]
fn check_cleanup_unmounts_what_a_dead_host_left_and_says_what_it_could_not_remove() {
    let _g = serial();
    if !privileged() {
        return;
    }
    let before = HostState::take();
    let dir = dead_hosts_state(levels(), true);
    let o = Command::new(bin())
        .args(["check", "--cleanup"])
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{out}{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(!dir.exists(), "{} stayed", dir.display());
    assert!(mount_at(&dir.join("s")).is_none());
    let id = dir.file_name().unwrap().to_str().unwrap();
    assert!(out.contains(id), "{out}");
    before.assert_unchanged();

    // A plain directory (rootless mode) 25,000 levels deep, removed with at most 32 fds open.
    let dir = dead_hosts_state(if in_vm() { 2000 } else { 25000 }, false);
    let o = Command::new("prlimit")
        .args(["--nofile=32:32", "--"])
        .arg(bin())
        .args(["check", "--cleanup"])
        .output()
        .expect("prlimit (util-linux)");
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    assert_eq!(o.status.code(), Some(0), "{err}");
    assert!(!dir.exists(), "{} stayed: {err}", dir.display());

    // Something it cannot remove: a mount it did not make, in a dead host's directory.
    let dir = dead_hosts_state(1, true);
    let foreign = dir.join("foreign");
    std::fs::create_dir(&foreign).unwrap();
    let st = Command::new("mount")
        .args(["-t", "tmpfs", "foreign"])
        .arg(&foreign)
        .status()
        .unwrap();
    assert!(st.success());
    let o = Command::new(bin())
        .args(["check", "--cleanup"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr).into_owned();
    let _ = Command::new("umount").arg(&foreign).status();
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(o.status.code(), Some(1), "{err}");
    let id = dir.file_name().unwrap().to_str().unwrap();
    assert!(err.contains(id) && err.contains("busy"), "{err}");
}

#[test]
fn the_host_dials_a_plugins_broker_socket_at_its_own_path_but_never_through_a_symlink() {
    let _g = serial();
    if !privileged() {
        return;
    }
    // What go-plugin's non-multiplexed broker does: the plugin announces the path of a
    // listener it made in PLUGIN_UNIX_SOCKET_DIR, and the host dials that path as is.
    let host_only = tempfile::tempdir().unwrap();
    let secret = host_only.path().join("host-only.sock");
    let listener = std::os::unix::net::UnixListener::bind(&secret).unwrap();
    listener.set_nonblocking(true).unwrap();
    let before = HostState::take();
    rt().block_on(async {
        let script = format!(
            "cd \"$PLUGIN_UNIX_SOCKET_DIR\" || exit 9; ln -s {} plugin777; \
             exec python3 -c 'import socket,os,sys
s=socket.socket(socket.AF_UNIX); s.bind(\"plugin778\"); s.listen(1)
print(os.getcwd()+\"/plugin778\", file=sys.stderr, flush=True)
c,_=s.accept(); c.sendall(b\"from the plugin\\n\"); c.close(); sys.stdin.read()'",
            secret.display()
        );
        let (r, line) = start(profile(""), &script).await;
        let announced = PathBuf::from(line.trim());
        assert!(announced.starts_with(top(&r)), "{}", announced.display());
        // The announced path is a host path: the host dials it directly.
        let mut c = std::os::unix::net::UnixStream::connect(&announced)
            .unwrap_or_else(|e| panic!("dial {}: {e}", announced.display()));
        let mut got = String::new();
        c.read_to_string(&mut got).unwrap();
        assert_eq!(got, "from the plugin\n");
        // The plugin's symlink to a host-only socket is not followed on the host.
        let link = announced.with_file_name("plugin777");
        assert!(std::fs::symlink_metadata(&link).unwrap().is_symlink());
        let e = std::os::unix::net::UnixStream::connect(&link).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ELOOP), "{e}");
        assert!(
            listener.accept().is_err(),
            "the host-only socket was reached"
        );
        finish(r).await;
    });
    before.assert_unchanged();
}
