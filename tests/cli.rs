//! The `sandbox-run` CLI contract, as root: namespaces, exit codes, fds, signals, bad input.
//! Each case also checks the host is left as it was (mounts, cgroups, processes).

mod common;
use common::*;

use std::io::{BufRead, BufReader, Write};
use std::os::fd::AsRawFd;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn pid_namespace_shows_only_the_sandbox() {
    let _g = serial();
    if !privileged() {
        return;
    }
    let before = HostState::take();
    let o = run(&[
        "--",
        "sh",
        "-c",
        "echo $$; ls /proc | grep -E '^[0-9]+$' | tr '\\n' ' '",
    ]);
    before.assert_unchanged();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let out = stdout(&o);
    let mut lines = out.lines();
    let me: i32 = lines.next().unwrap().trim().parse().unwrap();
    assert!(me == 1 || me == 2, "shell pid inside is {me}");
    let pids: Vec<i32> = lines
        .next()
        .unwrap()
        .split_whitespace()
        .map(|p| p.parse().unwrap())
        .collect();
    // init, sh, ls, grep, tr: a handful of small pids, not the host's hundreds.
    assert!(pids.contains(&1), "{pids:?}");
    assert!(
        pids.len() <= 6 && pids.iter().all(|p| *p < 50),
        "host pids visible: {pids:?}"
    );
}

#[test]
fn network_is_loopback_only_and_up() {
    let _g = serial();
    if !privileged() {
        return;
    }
    let before = HostState::take();
    let o = run(&[
        "--",
        "sh",
        "-c",
        "tail -n +3 /proc/net/dev | cut -d: -f1 | tr -d ' '",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(stdout(&o), "lo\n");
    // Loopback is up: a listener on 127.0.0.1 accepts a connection from inside.
    let script = r#"use IO::Socket::INET;
        my $l = IO::Socket::INET->new(Listen => 1, LocalAddr => "127.0.0.1", LocalPort => 0) or die "listen: $!";
        my $c = IO::Socket::INET->new(PeerAddr => "127.0.0.1", PeerPort => $l->sockport) or die "connect: $!";
        print "connected\n";"#;
    let o = run(&["--", "perl", "-e", script]);
    before.assert_unchanged();
    assert_eq!(stdout(&o), "connected\n", "{}", stderr(&o));
}

#[test]
fn hostname_is_the_sandboxes_own() {
    let _g = serial();
    if !privileged() {
        return;
    }
    let host = nix::unistd::gethostname().unwrap().into_string().unwrap();
    let before = HostState::take();
    let o = run(&["--", "cat", "/proc/sys/kernel/hostname"]);
    assert_eq!(stdout(&o), "sandbox\n", "{}", stderr(&o));
    assert_ne!(host, "sandbox");
    let o = run(&[
        "--hostname",
        "plug-1",
        "--",
        "cat",
        "/proc/sys/kernel/hostname",
    ]);
    before.assert_unchanged();
    assert_eq!(stdout(&o), "plug-1\n");
    assert_eq!(
        nix::unistd::gethostname().unwrap().into_string().unwrap(),
        host,
        "the host's hostname changed"
    );
}

#[test]
fn host_ipc_objects_are_invisible() {
    let _g = serial();
    if !privileged() {
        return;
    }
    // SAFETY: plain SysV shm calls on a private segment we remove below.
    let id = unsafe { libc::shmget(libc::IPC_PRIVATE, 4096, libc::IPC_CREAT | 0o600) };
    assert!(id >= 0, "shmget failed");
    let host_view = std::fs::read_to_string("/proc/sysvipc/shm").unwrap();
    let before = HostState::take();
    let o = run(&["--", "cat", "/proc/sysvipc/shm"]);
    before.assert_unchanged();
    unsafe { libc::shmctl(id, libc::IPC_RMID, std::ptr::null_mut()) };
    let ids = |t: &str| -> Vec<String> {
        t.lines()
            .skip(1)
            .filter_map(|l| l.split_whitespace().nth(1).map(String::from))
            .collect()
    };
    assert!(
        ids(&host_view).contains(&id.to_string()),
        "the host segment is missing on the host"
    );
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(
        ids(&stdout(&o)).is_empty(),
        "host IPC visible inside: {}",
        stdout(&o)
    );
}

#[test]
fn exit_codes_follow_the_contract() {
    let _g = serial();
    if !privileged() {
        return;
    }
    let before = HostState::take();
    assert_eq!(run(&["--", "sh", "-c", "exit 7"]).status.code(), Some(7));
    assert_eq!(
        run(&["--", "sh", "-c", "kill -9 $$"]).status.code(),
        Some(137)
    );
    assert_eq!(
        run(&["--", "sh", "-c", "kill -TERM $$"]).status.code(),
        Some(143)
    );
    let o = run(&["--", "no-such-program-xyz"]);
    assert_eq!(o.status.code(), Some(127));
    assert!(stderr(&o).contains("no-such-program-xyz"), "{}", stderr(&o));
    let o = run(&["--", "/etc/hostname"]);
    assert_eq!(o.status.code(), Some(126), "{}", stderr(&o));
    assert!(stderr(&o).contains("/etc/hostname"), "{}", stderr(&o));
    // A setup step that fails names the step and the path: a cwd that does not exist.
    let o = run(&["--chdir", "/no/such/dir", "--", "true"]);
    assert_eq!(o.status.code(), Some(125));
    assert!(
        stderr(&o).contains("change directory") && stderr(&o).contains("/no/such/dir"),
        "{}",
        stderr(&o)
    );
    before.assert_unchanged();
}

/// Every fd of the listing except 0, 1, 2 must be the listing tool's own directory handle.
fn assert_only_stdio(listing: &str) {
    for line in listing.lines().filter(|l| l.contains(" -> ")) {
        let (left, target) = line.split_once(" -> ").unwrap();
        let fd: i32 = left.split_whitespace().last().unwrap().parse().unwrap();
        if fd > 2 {
            assert!(
                target.starts_with("/proc/") && target.ends_with("/fd"),
                "fd {fd} -> {target} leaked into the sandbox:\n{listing}"
            );
        }
    }
}

#[test]
fn only_stdio_fds_inside_even_when_the_caller_leaks() {
    let _g = serial();
    if !privileged() {
        return;
    }
    let f = std::fs::File::open("/etc/hostname").unwrap();
    // Leak two fds without CLOEXEC into sandbox-run.
    let leaked = [57, 58];
    for n in leaked {
        assert_eq!(unsafe { libc::dup2(f.as_raw_fd(), n) }, n);
    }
    let before = HostState::take();
    let o = run(&["--", "ls", "-l", "/proc/self/fd/"]);
    for n in leaked {
        unsafe { libc::close(n) };
    }
    before.assert_unchanged();
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let listing = stdout(&o);
    assert!(
        listing.contains(" 0 -> ") && listing.contains(" 2 -> "),
        "{listing}"
    );
    assert_only_stdio(&listing);
}

#[test]
fn profile_pass_fds_passes_exactly_those() {
    let _g = serial();
    if !privileged() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let profile = dir.path().join("p.toml");
    std::fs::write(&profile, "extends = \"default\"\npass_fds = [61]\n").unwrap();
    let f = std::fs::File::open("/etc/hostname").unwrap();
    assert_eq!(unsafe { libc::dup2(f.as_raw_fd(), 61) }, 61);
    assert_eq!(unsafe { libc::dup2(f.as_raw_fd(), 62) }, 62);
    let o = run(&[
        "--profile",
        profile.to_str().unwrap(),
        "--",
        "ls",
        "-l",
        "/proc/self/fd/",
    ]);
    unsafe { libc::close(61) };
    unsafe { libc::close(62) };
    let listing = stdout(&o);
    assert!(listing.contains(" 61 -> /etc/hostname"), "{listing}");
    assert!(!listing.contains(" 62 -> "), "{listing}");
}

#[test]
fn environment_is_clean() {
    let _g = serial();
    if !privileged() {
        return;
    }
    let o = Command::new(bin())
        .args(["--env", "FOO=bar", "--", "env"])
        .env("SECRET_TOKEN", "hunter2")
        .env("LANG", "C.UTF-8")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let out = stdout(&o);
    let mut keys: Vec<&str> = out.lines().map(|l| l.split('=').next().unwrap()).collect();
    keys.sort();
    assert!(
        out.contains("FOO=bar\n") && out.contains("HOME=/\n") && out.contains("LANG=C.UTF-8\n"),
        "{out}"
    );
    assert!(!out.contains("hunter2"), "host environment leaked: {out}");
    for k in keys {
        assert!(
            ["FOO", "HOME", "LANG", "PATH", "TERM"].contains(&k),
            "unexpected variable {k} in {out}"
        );
    }
}

#[test]
fn stdin_is_inherited_or_null() {
    let _g = serial();
    if !privileged() {
        return;
    }
    let mut c = Command::new(bin())
        .args(["--", "cat"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    c.stdin
        .take()
        .unwrap()
        .write_all(b"through stdin\n")
        .unwrap();
    let o = c.wait_with_output().unwrap();
    assert_eq!(stdout(&o), "through stdin\n");
    let o = Command::new(bin())
        .args(["--stdin", "null", "--", "cat"])
        .stdin(Stdio::piped())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(stdout(&o), "");
}

#[test]
fn signals_sent_to_sandbox_run_reach_the_plugin() {
    let _g = serial();
    if !privileged() {
        return;
    }
    let before = HostState::take();
    for (i, sig) in ["TERM", "INT", "HUP", "QUIT", "USR1", "USR2"]
        .iter()
        .enumerate()
    {
        let script = format!(
            "trap 'exit {}' {sig}; echo ready; while :; do sleep 0.05; done",
            40 + i
        );
        let mut c = Command::new(bin())
            .args(["--", "sh", "-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(c.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert_eq!(line, "ready\n");
        let s: nix::sys::signal::Signal = format!("SIG{sig}").parse().unwrap();
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(c.id() as i32), s).unwrap();
        let st = c.wait().unwrap();
        assert_eq!(st.code(), Some(40 + i as i32), "SIG{sig} was not forwarded");
    }
    before.assert_unchanged();
}

#[test]
fn sigkill_of_sandbox_run_kills_the_whole_sandbox_within_1s() {
    let _g = serial();
    if !privileged() {
        return;
    }
    let before = HostState::take();
    let mut c = Command::new(bin())
        .args([
            "--",
            "sh",
            "-c",
            "sleep 1000 & sleep 1000 & echo ready; wait",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(c.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line, "ready\n");
    let me = c.id() as i32;
    let sandbox: Vec<i32> = descendants(me).into_iter().collect();
    // init, sh and the two sleeps.
    assert!(sandbox.len() >= 4, "sandbox processes: {sandbox:?}");
    c.kill().unwrap();
    c.wait().unwrap();
    let t = Instant::now();
    while sandbox.iter().any(|p| alive(*p)) {
        assert!(
            t.elapsed() < Duration::from_secs(1),
            "sandbox processes outlived their host by 1 s: {:?}",
            sandbox.iter().filter(|p| alive(**p)).collect::<Vec<_>>()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    // The host crashed: its reaper removes its sandbox's cgroups and record within 2 s,
    // with no later start and no `check --cleanup`.
    before.assert_unchanged();
    let o = run(&["check", "--cleanup"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(
        !stdout(&o).contains("removed stale cgroup"),
        "the reaper left something for check --cleanup: {}",
        stdout(&o)
    );
}

/// `sandbox-run` running `/bin/sleep 1000`, its stdio on `/dev/null`.
fn sleeping_sandbox_run() -> std::process::Child {
    Command::new(bin())
        .args(["--stdin", "null", "--", "/bin/sleep", "1000"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// The owner records and id claims that name one of `pids` as their owner.
fn owned_by(pids: &[i32]) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for dir in [
        sandbox_runner::cgroup::records_dir(),
        sandbox_runner::idrange::claims_dir(),
    ] {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let Ok(text) = std::fs::read_to_string(e.path()) else {
                continue;
            };
            let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) else {
                continue;
            };
            let owner = v.get("owner_pid").and_then(|p| p.as_i64());
            if owner.is_some_and(|o| pids.contains(&(o as i32))) {
                out.push(e.path());
            }
        }
    }
    out
}

#[test]
fn sigkill_of_sandbox_run_early_in_its_start_leaves_nothing() {
    // Killed at any point of its start (id claim, owner record, cgroup directories, clone),
    // sandbox-run leaves nothing 2 s later, with no later start and no `check --cleanup`:
    // the reaper knows every path before it exists. Only what names one of these processes
    // as its owner is looked at, so other sandboxes on the machine do not matter.
    let _g = serial();
    if !privileged() {
        return;
    }
    let mut pids = Vec::new();
    for round in 0..3u64 {
        for us in [
            0u64, 300, 700, 1000, 1500, 2000, 3000, 4000, 6000, 9000, 14000,
        ] {
            let mut c = sleeping_sandbox_run();
            pids.push(c.id() as i32);
            std::thread::sleep(Duration::from_micros(us + round * 150));
            c.kill().unwrap();
            c.wait().unwrap();
        }
    }
    let t = Instant::now();
    loop {
        let left = owned_by(&pids);
        if left.is_empty() {
            break;
        }
        assert!(
            t.elapsed() < Duration::from_millis(2500),
            "left 2.5 s after the SIGKILLs: {left:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_claim_made_just_before_a_sigkill_is_removed_by_the_reaper() {
    // sandbox-run claims its id block before it can register the claim with its reaper; a
    // SIGKILL in between used to leave the claim for good (seen under load). The reaper now
    // also removes, at its host's death, every claim that holds its host's pid and start
    // time and that no record registers. Staged here: a claim written as the host would
    // have made it, then the SIGKILL. A claim of the same pid with another start time (a
    // reused pid, another process) stays.
    let _g = serial();
    if !privileged() {
        return;
    }
    let mut c = sleeping_sandbox_run();
    let pid = c.id() as i32;
    // Started far enough that its reaper runs: its own claim and records exist.
    let t = Instant::now();
    while owned_by(&[pid]).is_empty() {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "sandbox-run did not start"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    let start = sandbox_runner::cgroup::start_time(pid).expect("sandbox-run is running");
    let dir = sandbox_runner::idrange::claims_dir();
    // Removed whatever happens (should the reaper not).
    struct Staged(Vec<std::path::PathBuf>);
    impl Drop for Staged {
        fn drop(&mut self) {
            for p in &self.0 {
                let _ = std::fs::remove_file(p);
            }
        }
    }
    let mut made = Staged(Vec::new());
    for (id, owner_start) in [
        ("sbx-staged-unregistered", start),
        ("sbx-staged-other", start + 1),
    ] {
        let path = (0..sandbox_runner::idrange::SLOTS)
            .rev()
            .map(|n| dir.join(n.to_string()))
            .find(|p| !p.exists())
            .expect("a free slot");
        let text = format!("{{\"id\":\"{id}\",\"owner_pid\":{pid},\"owner_start\":{owner_start}}}");
        std::fs::write(&path, text).unwrap();
        made.0.push(path);
    }
    c.kill().unwrap();
    c.wait().unwrap();
    let t = Instant::now();
    while made.0[0].exists() || !owned_by(&[pid]).iter().all(|p| *p == made.0[1]) {
        assert!(
            t.elapsed() < Duration::from_millis(2500),
            "left 2.5 s after the SIGKILL: {:?}",
            owned_by(&[pid])
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(
        made.0[1].exists(),
        "the reaper removed a claim of another process"
    );
}

#[test]
fn bad_input_is_a_clear_error_and_starts_nothing() {
    let _g = serial();
    if !privileged() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("ran");
    let touch = ["--", "touch", marker.to_str().unwrap()];
    let before = HostState::take();
    let cases: [(&str, &str, &str); 3] = [
        (
            "unknown.toml",
            "hostname = \"x\"\nbogus_key = 1\n",
            ":2:1: unknown field `bogus_key`",
        ),
        (
            "type.toml",
            "[namespaces]\npid = \"yes\"\n",
            ":2:7: invalid type",
        ),
        (
            "grace.toml",
            "kill_grace = \"soon\"\n",
            ":1:14: 'soon' is not a duration",
        ),
    ];
    for (name, text, want) in cases {
        let p = dir.path().join(name);
        std::fs::write(&p, text).unwrap();
        let mut args = vec!["--profile", p.to_str().unwrap()];
        args.extend(touch);
        let o = run(&args);
        assert_eq!(o.status.code(), Some(125), "{name}: {}", stderr(&o));
        let err = stderr(&o);
        assert!(
            err.contains(&format!("{}{want}", p.display())),
            "{name}: {err}"
        );
    }
    let missing = dir.path().join("missing.toml");
    let mut args = vec!["--profile", missing.to_str().unwrap()];
    args.extend(touch);
    let o = run(&args);
    assert_eq!(o.status.code(), Some(125));
    assert!(stderr(&o).contains(missing.to_str().unwrap()) && stderr(&o).contains("No such file"));
    let o = run(&["--profile", "nosuch", "--", "true"]);
    assert_eq!(o.status.code(), Some(125));
    assert!(
        stderr(&o).contains("unknown profile 'nosuch'"),
        "{}",
        stderr(&o)
    );
    // Usage errors: exit 2.
    assert_eq!(run(&[]).status.code(), Some(2));
    assert_eq!(run(&["--"]).status.code(), Some(2));
    assert_eq!(
        run(&["--env", "NOEQUALS", "--", "true"]).status.code(),
        Some(2)
    );
    assert_eq!(
        run(&["--no-such-flag", "--", "true"]).status.code(),
        Some(2)
    );
    assert!(!marker.exists(), "a program ran despite bad input");
    before.assert_unchanged();
}

#[test]
fn check_reports_the_host_and_accepts_the_default_profile() {
    let _g = serial();
    if !privileged() {
        return;
    }
    let o = run(&["check"]);
    let out = stdout(&o);
    assert_eq!(o.status.code(), Some(0), "{out}{}", stderr(&o));
    for want in [
        "default profile set user+mnt+pid+net+ipc+uts: can create",
        "cgroups:",
        "mode:",
        "seccomp",
        "landlock",
        "pidfd_open: ok",
        "unprivileged user namespaces",
        "default profile: OK",
    ] {
        assert!(out.contains(want), "check output lacks {want:?}:\n{out}");
    }
}
