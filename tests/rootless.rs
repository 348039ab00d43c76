//! Rootless mode: a sandbox in its own user namespace, with root inside mapped to the caller.
//!
//! CI runs as root, so the unprivileged cases run the CLI as uid/gid 65534 (`nobody`) through
//! `setpriv` (util-linux), from a copy of the binary in a world-readable temporary directory,
//! with `XDG_RUNTIME_DIR` a directory owned by 65534. Each case also checks the host is left
//! as it was (mounts, cgroups, processes).

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::{bin, privileged, serial, HostState};

const NOBODY: u32 = 65534;

/// A world-readable directory holding a copy of `sandbox-run`, and an XDG runtime directory
/// owned by [`NOBODY`].
struct Unprivileged {
    dir: tempfile::TempDir,
}

impl Unprivileged {
    fn new() -> Unprivileged {
        let dir = tempfile::Builder::new()
            .prefix("sandbox-rootless-")
            .tempdir_in("/tmp")
            .unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let exe = dir.path().join("sandbox-run");
        std::fs::copy(bin(), &exe).unwrap();
        std::fs::set_permissions(&exe, std::fs::Permissions::from_mode(0o755)).unwrap();
        let xdg = dir.path().join("xdg");
        std::fs::create_dir(&xdg).unwrap();
        std::os::unix::fs::chown(&xdg, Some(NOBODY), Some(NOBODY)).unwrap();
        std::fs::set_permissions(&xdg, std::fs::Permissions::from_mode(0o700)).unwrap();
        Unprivileged { dir }
    }

    fn xdg(&self) -> PathBuf {
        self.dir.path().join("xdg")
    }

    /// Runs `sandbox-run ARGS` as uid/gid 65534 with no supplementary groups.
    fn run(&self, args: &[&str]) -> Output {
        let id = NOBODY.to_string();
        Command::new("setpriv")
            .args(["--reuid", &id, "--regid", &id, "--clear-groups", "--"])
            .arg(self.dir.path().join("sandbox-run"))
            .args(args)
            .current_dir(self.dir.path())
            .env("XDG_RUNTIME_DIR", self.xdg())
            .env_remove("SANDBOX_RUNNER_STATE_DIR")
            .env_remove("SANDBOX_RUNNER_RUN_DIR")
            .stdin(Stdio::null())
            .output()
            .expect("setpriv (util-linux) must be installed")
    }

    /// Whatever is left in the XDG runtime directory (state and owner records), ignoring
    /// empty directories.
    fn leftovers(&self) -> Vec<PathBuf> {
        fn walk(p: &Path, out: &mut Vec<PathBuf>) {
            if let Ok(rd) = std::fs::read_dir(p) {
                for e in rd.flatten() {
                    if e.path().is_dir() {
                        walk(&e.path(), out);
                    } else {
                        out.push(e.path());
                    }
                }
            }
        }
        let mut out = Vec::new();
        walk(&self.xdg(), &mut out);
        out
    }
}

fn text(o: &Output) -> (String, String) {
    (
        String::from_utf8_lossy(&o.stdout).into_owned(),
        String::from_utf8_lossy(&o.stderr).into_owned(),
    )
}

/// What the plugin reports about itself: uid, maps, hostname, pids, interfaces, secrets,
/// capabilities.
const PROBE: &str = "id -u; id -g; cat /proc/self/uid_map /proc/self/gid_map; hostname; \
    echo pids: $(ls /proc | grep -E '^[0-9]+$' | sort -n | head -2 | tr '\\n' ' '); \
    echo ifaces: $(tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' '); \
    test -e /etc/shadow && echo shadow: yes || echo shadow: no; \
    grep -E '^Cap(Inh|Prm|Eff|Bnd|Amb)' /proc/self/status; \
    echo ok > /tmp/w && cat /tmp/w";

fn assert_probe(out: &str, outside: u32) {
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.first(), Some(&"0"), "root inside:\n{out}");
    assert_eq!(lines.get(1), Some(&"0"), "gid 0 inside:\n{out}");
    for (i, what) in [(2, "uid_map"), (3, "gid_map")] {
        let map: Vec<&str> = lines.get(i).unwrap_or(&"").split_whitespace().collect();
        assert_eq!(
            map,
            ["0", &outside.to_string(), "1"],
            "{what}: root inside is {outside} outside, nothing else mapped:\n{out}"
        );
    }
    for want in [
        "sandbox",
        "pids: 1 2",
        "ifaces: lo\n",
        "shadow: no",
        "CapInh:\t0000000000000000",
        "CapPrm:\t0000000000000000",
        "CapEff:\t0000000000000000",
        "CapBnd:\t0000000000000000",
        "CapAmb:\t0000000000000000",
        "ok",
    ] {
        assert!(out.contains(want), "plugin output lacks {want:?}:\n{out}");
    }
}

#[test]
fn rootless_profile_runs_unprivileged_with_root_mapped_to_the_caller() {
    let _g = serial();
    if !privileged() {
        return;
    }
    let u = Unprivileged::new();
    let before = HostState::take();
    let o = u.run(&["--profile", "rootless", "--", "sh", "-c", PROBE]);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(0), "stdout:\n{out}\nstderr:\n{err}");
    assert_probe(&out, NOBODY);
    before.assert_unchanged();
    assert!(u.leftovers().is_empty(), "left behind: {:?}", u.leftovers());
}

#[test]
fn rootless_plugin_cannot_regain_host_privileges() {
    let _g = serial();
    if !privileged() {
        return;
    }
    let u = Unprivileged::new();
    let before = HostState::take();
    // Root inside owns nothing of the host: the host's root-owned files stay read-only to it
    // (even where a bind is writable), and it cannot mount or change the clock.
    let o = u.run(&[
        "--profile",
        "rootless",
        "--",
        "sh",
        "-c",
        "touch /usr/x 2>/dev/null && echo usr: writable || echo usr: refused; \
         mount -t tmpfs t /tmp 2>/dev/null && echo mount: ok || echo mount: refused; \
         hostname other 2>/dev/null && echo hostname: changed || echo hostname: refused; \
         cat /proc/1/environ >/dev/null 2>&1 && echo init: readable || echo init: refused",
    ]);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(0), "stdout:\n{out}\nstderr:\n{err}");
    for want in [
        "usr: refused",
        "mount: refused",
        "hostname: refused",
        "init: refused",
    ] {
        assert!(out.contains(want), "lacks {want:?}:\n{out}");
    }
    before.assert_unchanged();
}

#[test]
fn rootless_default_profile_fails_naming_the_missing_cgroup_delegation() {
    let _g = serial();
    if !privileged() {
        return;
    }
    let u = Unprivileged::new();
    // The plugin would leave a mark in a directory it can write: it must never run.
    let mark = u.dir.path().join("mark");
    std::fs::create_dir(&mark).unwrap();
    std::os::unix::fs::chown(&mark, Some(NOBODY), Some(NOBODY)).unwrap();
    let before = HostState::take();
    let o = u.run(&[
        "--bind",
        mark.to_str().unwrap(),
        "/mark",
        "--",
        "sh",
        "-c",
        "touch /mark/ran",
    ]);
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(125), "stdout:\n{out}\nstderr:\n{err}");
    for want in [
        "rootless mode (uid 65534)",
        "cgroup limits (memory, pids)",
        "cannot create cgroup /",
        "run as root",
        "Delegate=yes",
        "cgroup_parent",
        "--profile rootless",
    ] {
        assert!(err.contains(want), "stderr lacks {want:?}:\n{err}");
    }
    assert!(
        !mark.join("ran").exists(),
        "the plugin ran without its limits"
    );
    before.assert_unchanged();
    assert!(u.leftovers().is_empty(), "left behind: {:?}", u.leftovers());
}

#[test]
fn forced_rootless_as_root_maps_root_to_root_and_keeps_the_limits() {
    let _g = serial();
    if !privileged() {
        return;
    }
    let before = HostState::take();
    // The default profile: root can still create its cgroup, so the limits apply.
    let o = Command::new(bin())
        .args(["--rootless", "--", "sh", "-c", PROBE])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(0), "stdout:\n{out}\nstderr:\n{err}");
    assert_probe(&out, 0);
    // Without the cgroup namespace (which shows the sandbox its own cgroup as `/`), the
    // plugin's cgroup is named.
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("p.toml");
    std::fs::write(&p, "extends = \"default\"\n[namespaces]\ncgroup = false\n").unwrap();
    let o = Command::new(bin())
        .args([
            "--profile",
            p.to_str().unwrap(),
            "--rootless",
            "--pids",
            "7",
            "--",
            "cat",
            "/proc/self/cgroup",
        ])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let (out, err) = text(&o);
    assert_eq!(o.status.code(), Some(0), "stdout:\n{out}\nstderr:\n{err}");
    assert!(out.contains("sandbox-runner"), "not in its cgroup:\n{out}");
    before.assert_unchanged();
}

#[test]
fn check_reports_user_namespaces_and_rootless_readiness() {
    let _g = serial();
    if !privileged() {
        return;
    }
    let u = Unprivileged::new();
    let o = u.run(&["check"]);
    let (out, err) = text(&o);
    for want in [
        "unprivileged user namespaces:",
        "user.max_user_namespaces",
        "this process can create one: yes",
        "rootless mode: on (euid 65534",
        "profile rootless (no cgroup limits): OK",
        "cgroup limits of the default profile: rootless mode (uid 65534)",
        "default profile: CANNOT RUN",
    ] {
        assert!(out.contains(want), "check lacks {want:?}:\n{out}\n{err}");
    }
    // The default profile cannot run here unprivileged (its limits), so check says so.
    assert_eq!(o.status.code(), Some(1), "{out}\n{err}");
    let o = Command::new(bin()).arg("check").output().unwrap();
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("this process can create one: yes"), "{out}");
    assert!(!out.contains("rootless mode: on"), "{out}");
}

#[test]
fn rootless_refuses_a_uid_that_has_no_mapping() {
    let _g = serial();
    if !privileged() {
        return;
    }
    let p = sandbox_runner::profile::Profile::from_toml_str(
        "extends = \"rootless\"\nrootless = \"always\"\n[user]\nuid = 65534\ngid = 65534\n",
        "t.toml",
    )
    .unwrap();
    let e = sandbox_runner::plan::Plan::new(&p, "/bin/sh".as_ref(), &[], &|_| None)
        .err()
        .expect("a uid without a mapping is refused");
    assert!(
        e.to_string().contains("rootless mode maps only root"),
        "{e}"
    );
}
