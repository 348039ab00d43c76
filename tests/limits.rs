//! cgroup limits end to end through `sandbox-run`, as root: memory (OOM kill), pids (fork
//! bomb), CPU bandwidth, placement from the first instruction, the diagnosis, and nothing
//! left in any hierarchy. Runs on the v1 host and in the cgroup-v2 guest (tests/vm/run.sh).

mod common;
use common::*;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn diagnosis(path: &std::path::Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap()
}

#[test]
fn memory_limit_ooms_with_a_diagnosis_that_says_so() {
    let _g = serial();
    if !privileged() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("d.json");
    let before = HostState::take();
    let o = run(&[
        "--memory",
        "64M",
        "--diagnose-json",
        json.to_str().unwrap(),
        "--",
        "tail",
        "/dev/zero",
    ]);
    before.assert_unchanged();
    assert_eq!(o.status.code(), Some(137), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains("killed by SIGKILL: the OOM killer ran") && err.contains("of a 64 MiB limit"),
        "{err}"
    );
    let d = diagnosis(&json);
    assert_eq!(d["signal_name"], "SIGKILL");
    assert_eq!(d["limits"]["memory"], 64u64 << 20);
    assert!(d["counters"]["oom_kill"].as_u64().unwrap() >= 1, "{d}");
    let peak = d["counters"]["memory_peak"].as_u64().unwrap();
    assert!(peak > 48 << 20 && peak <= 64 << 20, "peak {peak}");
}

#[test]
fn fork_bomb_is_held_at_the_pids_limit_and_named() {
    let _g = serial();
    if !privileged() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("d.json");
    let before = HostState::take();
    let c = Command::new(bin())
        .args([
            "--pids",
            "16",
            "--diagnose-json",
            json.to_str().unwrap(),
            "--",
        ])
        // Every process forks again and again, retrying when fork fails.
        .args(["perl", "-e", "while (1) { my $p = fork(); next if defined $p && $p == 0; select(undef, undef, undef, 0.01) }"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Held at 16: count the sandbox's processes from the host, until the bomb has been at
    // work for a second (a slow guest may take a while to start perl), at most 20 s.
    let t0 = Instant::now();
    let mut most = 0;
    let mut working_since = None;
    while t0.elapsed() < Duration::from_secs(20) {
        let n = descendants(c.id() as i32).len();
        most = most.max(n);
        assert!(n <= 17, "{n} processes (init + 16 allowed)");
        if n >= 10 && working_since.is_none() {
            working_since = Some(Instant::now());
        }
        if working_since.is_some_and(|t| t.elapsed() > Duration::from_secs(1)) {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(most >= 10, "the bomb did not run: at most {most} processes");
    // The host stays responsive: it can still start a process.
    let t = Instant::now();
    assert!(Command::new("true").status().unwrap().success());
    eprintln!("host spawn during the bomb took {:?}", t.elapsed());
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(c.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let o = c.wait_with_output().unwrap();
    before.assert_unchanged();
    let d = diagnosis(&json);
    assert!(d["counters"]["pids_max"].as_u64().unwrap() > 0, "{d}");
    assert!(
        d["text"]
            .as_str()
            .unwrap()
            .contains("pids limit 16 reached"),
        "{d}"
    );
    assert!(
        stderr(&o).contains("pids limit 16 reached"),
        "{}",
        stderr(&o)
    );
}

/// Total CPU time (µs) the cgroup of `pid` has used, from the cgroup's own accounting:
/// v1 `cpuacct.usage`, v2 `cpu.stat` `usage_usec`.
fn cgroup_cpu_usec(pid: i32) -> Option<u64> {
    use sandbox_runner::check::{own_cgroup_dir, parse_mountinfo, CgroupVersion};
    let mounts = parse_mountinfo(&std::fs::read_to_string("/proc/self/mountinfo").ok()?);
    let cg = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).ok()?;
    for line in cg.lines() {
        let mut f = line.splitn(3, ':');
        let (_, ctrls, path) = (f.next()?, f.next()?, f.next()?);
        if ctrls.split(',').any(|c| c == "cpuacct") {
            let m = mounts.iter().find(|m| {
                m.version == CgroupVersion::V1 && m.controllers.iter().any(|c| c == "cpuacct")
            })?;
            let dir = own_cgroup_dir(m, path)?;
            return std::fs::read_to_string(dir.join("cpuacct.usage"))
                .ok()?
                .trim()
                .parse::<u64>()
                .ok()
                .map(|ns| ns / 1000);
        }
    }
    let v2 = cg.lines().find_map(|l| l.strip_prefix("0::"))?;
    let m = mounts.iter().find(|m| m.version == CgroupVersion::V2)?;
    let stat = std::fs::read_to_string(own_cgroup_dir(m, v2)?.join("cpu.stat")).ok()?;
    stat.lines()
        .find_map(|l| l.strip_prefix("usage_usec "))
        .and_then(|v| v.trim().parse().ok())
}

#[test]
fn cpu_bandwidth_is_enforced_by_the_cgroup() {
    let _g = serial();
    if !privileged() {
        return;
    }
    let before = HostState::take();
    let mut c = Command::new(bin())
        .args([
            "--cpus",
            "0.2",
            "--",
            "sh",
            "-c",
            "echo ready; while :; do :; done",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(c.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    assert_eq!(line, "ready\n");
    let shell = *descendants(c.id() as i32).iter().max().unwrap();
    // Over 2 s of the busy loop (after start-up), measured by the cgroup itself.
    let u0 = cgroup_cpu_usec(shell).expect("cgroup CPU accounting of the sandbox");
    let t0 = Instant::now();
    std::thread::sleep(Duration::from_secs(2));
    let u1 = cgroup_cpu_usec(shell).unwrap();
    let wall = t0.elapsed().as_secs_f64();
    let share = (u1 - u0) as f64 / 1e6 / wall;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(c.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    assert_eq!(c.wait().unwrap().code(), Some(143));
    before.assert_unchanged();
    assert!(
        (0.15..=0.25).contains(&share),
        "{:.3} s CPU in {wall:.2} s: {share:.3} CPU instead of 0.2",
        (u1 - u0) as f64 / 1e6
    );
}

#[test]
fn plugin_is_in_its_cgroup_from_its_first_instruction() {
    let _g = serial();
    if !privileged() {
        return;
    }
    // The default profile's cgroup namespace shows the sandbox its own cgroup as `/`: this
    // check looks without it (then at that namespace below).
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("no-cgroupns.toml");
    std::fs::write(&p, "extends = \"default\"\n[namespaces]\ncgroup = false\n").unwrap();
    let before = HostState::take();
    // cat's first act is reading its own cgroup membership.
    let o = run(&[
        "--profile",
        p.to_str().unwrap(),
        "--",
        "cat",
        "/proc/self/cgroup",
    ]);
    before.assert_unchanged();
    let out = stdout(&o);
    let lines: Vec<&str> = out
        .lines()
        .filter(|l| l.contains(":memory:") || l.contains(":pids:") || l.starts_with("0::"))
        .collect();
    assert!(!lines.is_empty(), "{out}");
    // v1 lines name memory and pids; on pure v2 the single `0::` line.
    let placed: Vec<&&str> = lines
        .iter()
        .filter(|l| l.contains("/sandbox-runner/sbx-"))
        .collect();
    let v2 = out.lines().count() == 1;
    if v2 {
        assert_eq!(placed.len(), 1, "{out}");
    } else {
        assert!(
            placed.len() >= 2,
            "not in the sandbox's memory and pids cgroups: {out}"
        );
    }
    // With the default profile, its cgroup namespace is rooted there: no host path shows.
    let o = run(&["--", "cat", "/proc/self/cgroup"]);
    let out = stdout(&o);
    assert!(!out.is_empty(), "{}", stderr(&o));
    for l in out.lines() {
        assert!(l.ends_with(":/"), "a host cgroup path shows inside: {out}");
    }
}

#[test]
fn bad_cgroup_parent_is_a_clear_error_and_starts_nothing() {
    let _g = serial();
    if !privileged() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("p.toml");
    std::fs::write(
        &p,
        "extends = \"default\"\n[limits]\ncgroup_parent = \"/no-such-parent-cgroup\"\n",
    )
    .unwrap();
    let marker = dir.path().join("ran");
    let before = HostState::take();
    let o = run(&[
        "--profile",
        p.to_str().unwrap(),
        "--",
        "touch",
        marker.to_str().unwrap(),
    ]);
    before.assert_unchanged();
    assert_eq!(o.status.code(), Some(125));
    assert!(
        stderr(&o).contains("no-such-parent-cgroup"),
        "{}",
        stderr(&o)
    );
    assert!(!marker.exists());
}

#[test]
fn limits_from_the_profile_and_the_cli() {
    let _g = serial();
    if !privileged() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("d.json");
    let o = run(&["--diagnose-json", json.to_str().unwrap(), "--", "true"]);
    assert_eq!(o.status.code(), Some(0));
    let d = diagnosis(&json);
    // The default profile sets a memory and a pids limit.
    assert_eq!(d["limits"]["memory"], 512u64 << 20);
    assert_eq!(d["limits"]["pids"], 512);
    assert_eq!(
        run(&["--memory", "64MB", "--", "true"]).status.code(),
        Some(2)
    );
    assert_eq!(
        run(&["--cpus", "zero", "--", "true"]).status.code(),
        Some(2)
    );
}
