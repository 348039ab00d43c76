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
    std::thread::sleep(Duration::from_millis(1500));
    // Held at 16: count the sandbox's processes from the host.
    let inside = descendants(c.id() as i32);
    assert!(
        inside.len() <= 17,
        "{} processes (init + 16 allowed)",
        inside.len()
    );
    assert!(inside.len() >= 10, "the bomb did not run: {}", inside.len());
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

#[test]
fn cpu_bandwidth_is_enforced_by_the_cgroup() {
    let _g = serial();
    if !privileged() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("d.json");
    let before = HostState::take();
    let t = Instant::now();
    let o = run(&[
        "--cpus",
        "0.2",
        "--diagnose-json",
        json.to_str().unwrap(),
        "--",
        "timeout",
        "2",
        "sh",
        "-c",
        "while :; do :; done",
    ]);
    let wall = t.elapsed().as_secs_f64();
    before.assert_unchanged();
    assert_eq!(o.status.code(), Some(124), "{}", stderr(&o));
    let d = diagnosis(&json);
    let used = d["counters"]["cpu_usage_usec"].as_u64().unwrap() as f64 / 1e6;
    // The cgroup's own accounting: 0.2 CPU over the ~2 s the loop ran, within 25%.
    let share = used / 2.0;
    assert!(
        (0.15..=0.25).contains(&share),
        "used {used:.3}s CPU in {wall:.2}s: {share:.3} CPU"
    );
    assert!(d["counters"]["nr_throttled"].as_u64().unwrap() > 0, "{d}");
}

#[test]
fn plugin_is_in_its_cgroup_from_its_first_instruction() {
    let _g = serial();
    if !privileged() {
        return;
    }
    let before = HostState::take();
    // cat's first act is reading its own cgroup membership.
    let o = run(&["--", "cat", "/proc/self/cgroup"]);
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
