//! Shared helpers for the privileged integration tests.
#![allow(dead_code)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// The built `sandbox-run` binary.
pub fn bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_sandbox-run"))
}

/// Serialises the tests of one binary, so that the host-state checks (process list of this
/// process's descendants, mounts, cgroups) see only the running test's effects even under a
/// multi-threaded `cargo test`. (`cargo nextest` runs each test in its own process anyway.)
pub fn serial() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|p| p.into_inner())
}

/// True when privileged tests can run. Without root they are skipped locally, and fail
/// under `CI=true`, where a skipped privileged test would hide a regression.
pub fn privileged() -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("privileged test cannot run: not root (CI=true forbids skipping)");
    }
    eprintln!("SKIPPED: privileged test needs root");
    false
}

/// What must be the same on the host before and after a sandbox: this process's mount
/// table, the cgroup directories below this process's own cgroups, and its descendants.
#[derive(Debug, PartialEq, Eq)]
pub struct HostState {
    pub mounts: String,
    pub cgroups: BTreeSet<PathBuf>,
    pub descendants: BTreeSet<i32>,
}

impl HostState {
    /// The state before a case. What an earlier, crashed run left is reclaimed by the next
    /// sandbox start; that happens here first, so it cannot show up as a difference inside
    /// this case. (The state after is taken without it: a leak of the case must show.)
    pub fn take() -> HostState {
        let _ = sandbox_runner::cgroup::reclaim_stale();
        Self::snapshot()
    }

    fn snapshot() -> HostState {
        HostState {
            mounts: std::fs::read_to_string("/proc/self/mountinfo").unwrap(),
            cgroups: own_cgroup_dirs(),
            descendants: descendants(std::process::id() as i32),
        }
    }

    /// Asserts the host is as `self` was, allowing up to 2 s for the kernel to finish
    /// reaping (a zombie reparented to the system init may take a moment to go).
    pub fn assert_unchanged(&self) {
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            let now = HostState::snapshot();
            if now == *self {
                return;
            }
            if Instant::now() > deadline {
                assert_eq!(self.mounts, now.mounts, "the host's mount table changed");
                assert_eq!(
                    self.cgroups, now.cgroups,
                    "cgroup directories were left behind"
                );
                let extra: Vec<String> = now
                    .descendants
                    .difference(&self.descendants)
                    .map(|p| describe(*p))
                    .collect();
                panic!("processes were left behind: {extra:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

fn describe(pid: i32) -> String {
    let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    format!("{pid} {}", String::from_utf8_lossy(&cmd).replace('\0', " "))
}

/// This process's own cgroup directory in every mounted hierarchy (from
/// `/proc/self/cgroup` and `/proc/self/mountinfo`).
pub fn own_cgroup_paths() -> Vec<PathBuf> {
    let mut out = Vec::new();
    let own = std::fs::read_to_string("/proc/self/cgroup").unwrap();
    let mountinfo = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    for line in mountinfo.lines() {
        let f: Vec<&str> = line.split(' ').collect();
        let Some(sep) = f.iter().position(|x| *x == "-") else {
            continue;
        };
        let fstype = f[sep + 1];
        if fstype != "cgroup" && fstype != "cgroup2" {
            continue;
        }
        let (root, mnt, opts) = (f[3], f[4], f[sep + 3]);
        for l in own.lines() {
            let mut parts = l.splitn(3, ':');
            let (_, ctrls, path) = (
                parts.next(),
                parts.next().unwrap_or(""),
                parts.next().unwrap_or(""),
            );
            let matches = if fstype == "cgroup2" {
                ctrls.is_empty()
            } else {
                !ctrls.is_empty() && ctrls.split(',').all(|c| opts.split(',').any(|o| o == c))
            };
            if !matches {
                continue;
            }
            let rel = path
                .strip_prefix(root)
                .unwrap_or(path)
                .trim_start_matches('/');
            out.push(Path::new(mnt).join(rel));
        }
    }
    out
}

/// The cgroup directories below this process's own cgroup, in every mounted hierarchy.
pub fn own_cgroup_dirs() -> BTreeSet<PathBuf> {
    let mut out = BTreeSet::new();
    for mut dir in own_cgroup_paths() {
        // cgroup v2: the library moves the host into `<own>/sandbox-runner-host`; the
        // sandboxes are made beside it, below `<own>/sandbox-runner`.
        if dir.file_name().and_then(|n| n.to_str()) == Some(sandbox_runner::cgroup::HOST_LEAF) {
            dir.pop();
        }
        walk(&dir, &mut out);
    }
    out
}

fn walk(dir: &Path, out: &mut BTreeSet<PathBuf>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
            out.insert(e.path());
            walk(&e.path(), out);
        }
    }
}

/// Live (non-zombie) descendants of `pid`.
pub fn descendants(pid: i32) -> BTreeSet<i32> {
    let mut parent_of = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(p) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{p}/stat")) else {
            continue;
        };
        let Some(rest) = stat.rfind(')').map(|i| &stat[i + 2..]) else {
            continue;
        };
        let mut it = rest.split(' ');
        let state = it.next().unwrap_or("");
        let ppid: i32 = it.next().and_then(|x| x.parse().ok()).unwrap_or(0);
        if state != "Z" && state != "X" {
            parent_of.push((p, ppid));
        }
    }
    let mut out = BTreeSet::new();
    let mut frontier = vec![pid];
    while let Some(q) = frontier.pop() {
        for &(p, pp) in &parent_of {
            if pp == q && out.insert(p) {
                frontier.push(p);
            }
        }
    }
    out
}

/// Host pids of the live processes in the PID namespace of `init_pid` (the init included).
pub fn pids_in_pidns_of(init_pid: i32) -> BTreeSet<i32> {
    let Ok(ns) = std::fs::read_link(format!("/proc/{init_pid}/ns/pid")) else {
        return BTreeSet::new();
    };
    let mut out = BTreeSet::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(p) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if std::fs::read_link(format!("/proc/{p}/ns/pid"))
            .ok()
            .as_ref()
            == Some(&ns)
            && alive(p)
        {
            out.insert(p);
        }
    }
    out
}

/// True while `pid` exists and has not begun to exit (`PF_EXITING` in the stat flags):
/// a process in `do_exit` has already closed its files and cannot run again.
pub fn running(pid: i32) -> bool {
    const PF_EXITING: u64 = 0x4;
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            let Some(rest) = stat.rfind(')').map(|i| &stat[i + 2..]) else {
                return false;
            };
            let f: Vec<&str> = rest.split(' ').collect();
            let flags: u64 = f.get(6).and_then(|x| x.parse().ok()).unwrap_or(0);
            f[0] != "Z" && f[0] != "X" && flags & PF_EXITING == 0
        }
        Err(_) => false,
    }
}

/// True while `pid` exists and is not a zombie.
pub fn alive(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => {
            let state = stat.rfind(')').map(|i| &stat[i + 2..i + 3]).unwrap_or("");
            state != "Z" && state != "X"
        }
        Err(_) => false,
    }
}

/// Runs `sandbox-run ARGS` to completion with stdin from /dev/null.
pub fn run(args: &[&str]) -> Output {
    Command::new(bin())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("cannot run sandbox-run")
}

/// Stdout of an output as a String.
pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Stderr of an output as a String.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The harness of the test binaries that re-execute themselves as plugins (`harness =
/// false`): runs `tests` one at a time (each under [`serial`], a panic is a failure), with
/// libtest's name filter from `args` and its summary line, then exits 0 or 101. A test that
/// would skip without root fails under `CI=true` (see [`privileged`]).
pub fn run_tests(args: &[String], tests: &[(&str, fn())]) -> ! {
    // A name filter, as libtest takes it; the values of libtest's own options are not one.
    let mut filter = None;
    let mut it = args.iter().skip(1);
    while let Some(a) = it.next() {
        match a.as_str() {
            "--color" | "--format" | "--test-threads" | "--logfile" | "--skip" | "-Z" => {
                it.next();
            }
            x if x.starts_with('-') => {}
            x => filter = Some(x.to_string()),
        }
    }
    let (mut passed, mut failed, mut filtered) = (0, 0, 0);
    println!("\nrunning {} tests", tests.len());
    for (name, f) in tests {
        if filter.as_ref().is_some_and(|p| !name.contains(p.as_str())) {
            filtered += 1;
            continue;
        }
        if !privileged() {
            println!("test {name} ... skipped (not root)");
            continue;
        }
        let _g = serial();
        let ok = std::panic::catch_unwind(f).is_ok();
        println!("test {name} ... {}", if ok { "ok" } else { "FAILED" });
        if ok {
            passed += 1;
        } else {
            failed += 1;
        }
    }
    println!(
        "\ntest result: {}. {passed} passed; {failed} failed; 0 ignored; 0 measured; {filtered} filtered out\n",
        if failed == 0 { "ok" } else { "FAILED" }
    );
    std::process::exit(if failed == 0 { 0 } else { 101 });
}

/// True inside the test VM of `tests/vm/run.sh` (its kernel command line), or when
/// `SANDBOX_RUNNER_TEST_VM` is set: everything there runs about 20 times slower.
pub fn in_vm() -> bool {
    if std::env::var_os("SANDBOX_RUNNER_TEST_VM").is_some_and(|v| !v.is_empty()) {
        return true;
    }
    let cmdline = std::fs::read_to_string("/proc/cmdline").unwrap_or_default();
    let words: Vec<&str> = cmdline.split_whitespace().collect();
    words.contains(&"cgroup_no_v1=all") && words.contains(&"rdinit=/init")
}
