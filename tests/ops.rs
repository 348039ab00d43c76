//! Operability, as root: the wall-clock limit (CLI and library), `ps --json` and
//! `check --json`, the logging flags, shell completions, the man page and the minimal
//! example. Each sandbox case also checks the host is left as it was.

mod common;
use common::*;

use std::path::PathBuf;
use std::process::{Command, Stdio};

use sandbox_runner::{AttachedRunner, Profile, Runner, SandboxRunner};

fn json_file(path: &std::path::Path) -> serde_json::Value {
    serde_json::from_slice(&std::fs::read(path).expect("diagnosis JSON written"))
        .expect("diagnosis JSON parses")
}

#[test]
fn timeout_exits_124_names_the_limit_and_leaves_nothing() {
    let _g = serial();
    if !privileged() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let diag = dir.path().join("d.json");
    let before = HostState::take();
    let o = run(&[
        "--timeout",
        "500ms",
        "--diagnose-json",
        diag.to_str().unwrap(),
        "--",
        "sleep",
        "1000",
    ]);
    before.assert_unchanged();
    assert_eq!(o.status.code(), Some(124), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains("stopped at its time limit of 500ms; killed by SIGTERM"),
        "{err}"
    );
    let d = json_file(&diag);
    assert_eq!(d["timed_out"], true, "{d}");
    assert_eq!(d["time_limit_ms"], 500, "{d}");
    assert_eq!(d["signal_name"], "SIGTERM", "{d}");
    assert!(
        d["text"]
            .as_str()
            .unwrap()
            .contains("stopped at its time limit of 500ms"),
        "{d}"
    );

    // A program that ends before its limit: its own status, nothing said, not timed out.
    let o = run(&[
        "--timeout",
        "1h",
        "--diagnose-json",
        diag.to_str().unwrap(),
        "--",
        "sh",
        "-c",
        "exit 7",
    ]);
    assert_eq!(o.status.code(), Some(7), "{}", stderr(&o));
    let d = json_file(&diag);
    assert_eq!(d["timed_out"], false, "{d}");
    assert_eq!(d["time_limit_ms"], 3_600_000, "{d}");
    assert!(!stderr(&o).contains("time limit"), "{}", stderr(&o));
    before.assert_unchanged();
}

#[test]
fn a_plugin_that_ignores_term_is_killed_after_the_grace_period() {
    let _g = serial();
    if !privileged() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let profile = dir.path().join("p.toml");
    std::fs::write(
        &profile,
        // A limit long enough for the shell to set its trap, and a grace period long enough
        // for it to run it, even in the emulated v2 guest.
        "extends = \"default\"\nkill_grace = \"1s\"\n[limits]\ntimeout = \"2s\"\n",
    )
    .unwrap();
    let diag = dir.path().join("d.json");
    let before = HostState::take();
    // The shell notes the TERM and carries on; its children run on too.
    let o = run(&[
        "--profile",
        profile.to_str().unwrap(),
        "--diagnose-json",
        diag.to_str().unwrap(),
        "--",
        "sh",
        "-c",
        // A loop of builtins only: the trap runs as soon as TERM arrives, not after a
        // foreground child (which a slow guest may not finish within the grace period).
        "trap 'echo got TERM' TERM; sleep 1000 & while :; do :; done",
    ]);
    before.assert_unchanged();
    assert_eq!(o.status.code(), Some(124), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("got TERM"),
        "TERM not sent first: {}",
        stdout(&o)
    );
    let d = json_file(&diag);
    assert_eq!(d["timed_out"], true, "{d}");
    assert_eq!(d["signal_name"], "SIGKILL", "{d}");
    assert!(
        stderr(&o).contains("stopped at its time limit of 2s; killed by SIGKILL"),
        "{}",
        stderr(&o)
    );
}

#[test]
fn bad_durations_are_refused_naming_the_value() {
    // Serial: other cases compare this process's descendants before and after.
    let _g = serial();
    let o = run(&["--timeout", "5", "--", "true"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(
        stderr(&o).contains("'5' is not a duration"),
        "{}",
        stderr(&o)
    );
    let o = run(&["--timeout", "0s", "--", "true"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("more than zero"), "{}", stderr(&o));
    let o = run(&["--timeout", "1s", "--detach", "--", "true"]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let dir = tempfile::tempdir().unwrap();
    let profile = dir.path().join("p.toml");
    std::fs::write(&profile, "[limits]\ntimeout = \"soon\"\n").unwrap();
    let o = run(&["--profile", profile.to_str().unwrap(), "--", "true"]);
    assert_eq!(o.status.code(), Some(125));
    assert!(
        stderr(&o).contains(&format!(
            "{}:2:11: 'soon' is not a duration",
            profile.display()
        )),
        "{}",
        stderr(&o)
    );
}

#[test]
fn library_timeout_from_a_profile_is_diagnosed() {
    let _g = serial();
    if !privileged() {
        return;
    }
    let before = HostState::take();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let profile = Profile::from_toml_str(
            "extends = \"default\"\nkill_grace = \"1s\"\n[limits]\ntimeout = \"400ms\"\n",
            "test",
        )
        .unwrap();
        let mut r = SandboxRunner::new(profile, "/bin/sleep", ["1000"]).unwrap();
        r.start().await.unwrap();
        let status = r.wait().await.unwrap();
        assert_eq!(status.signal(), Some(libc::SIGTERM), "{status}");
        assert!(r.timed_out());
        let text = r.diagnose().await;
        assert!(
            text.contains("stopped at its time limit of 400ms; killed by SIGTERM"),
            "{text}"
        );
        let d = r.diagnosis();
        assert!(d.timed_out);
        assert_eq!(d.time_limit_ms, Some(400));

        // Under the same limit, a plugin that ends first is not flagged.
        let profile = Profile::from_toml_str(
            "extends = \"default\"\n[limits]\ntimeout = \"1h\"\n",
            "test",
        )
        .unwrap();
        let mut r = SandboxRunner::new(profile, "/bin/true", Vec::<String>::new()).unwrap();
        r.start().await.unwrap();
        assert!(r.wait().await.unwrap().success());
        assert!(!r.timed_out());
        assert_eq!(r.diagnose().await, "/bin/true exited with status 0");
    });
    drop(rt);
    before.assert_unchanged();
}

/// `sandbox-run ARGS` with a private state root.
fn with_state(root: &std::path::Path, args: &[&str]) -> std::process::Output {
    Command::new(bin())
        .args(args)
        .env("SANDBOX_RUNNER_STATE_DIR", root)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

#[test]
fn ps_json_lists_a_detached_sandbox_with_every_field() {
    let _g = serial();
    if !privileged() {
        return;
    }
    let root = tempfile::tempdir().unwrap();
    let before = HostState::take();
    let o = with_state(root.path(), &["--detach", "--", "sleep", "1000"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let id = stdout(&o).trim().to_string();
    let o = with_state(root.path(), &["ps", "--json"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let list: serde_json::Value = serde_json::from_slice(&o.stdout).expect("ps --json parses");
    let killed = with_state(root.path(), &["kill", &id]);
    assert_eq!(killed.status.code(), Some(0), "{}", stderr(&killed));
    let list = list.as_array().expect("an array");
    assert_eq!(list.len(), 1, "{list:?}");
    let s = &list[0];
    assert_eq!(s["id"], id.as_str());
    let pid = s["pid"].as_i64().expect("pid");
    assert!(pid > 1, "{s}");
    assert_eq!(s["state"], "running");
    assert_eq!(s["program"], "/usr/bin/sleep");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let started = s["start_time"].as_u64().expect("start_time");
    assert!(started <= now && started + 3600 > now, "{s}");
    let cgroups = s["cgroups"].as_array().expect("cgroups");
    assert!(!cgroups.is_empty(), "the default profile has limits: {s}");
    assert!(
        cgroups
            .iter()
            .all(|c| c.as_str().unwrap().contains(id.as_str())),
        "{s}"
    );
    assert!(s["error"].is_null(), "{s}");
    // Once killed: an empty array.
    let o = with_state(root.path(), &["ps", "--json"]);
    let list: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(list, serde_json::json!([]));
    before.assert_unchanged();
}

#[test]
fn check_json_has_every_fact_and_the_verdict() {
    // Serial: other cases compare this process's descendants before and after.
    let _g = serial();
    let text = run(&["check"]);
    let o = run(&["check", "--json"]);
    assert_eq!(o.status.code(), text.status.code());
    let c: serde_json::Value = serde_json::from_slice(&o.stdout).expect("check --json parses");
    let runs = c["verdict"]["default_profile_runs"]
        .as_bool()
        .expect("verdict");
    assert_eq!(runs, o.status.success());
    assert_eq!(runs, stdout(&text).contains("default profile: OK"));
    assert!(c["verdict"]["problems"].is_array());
    for key in [
        "kernel",
        "identity",
        "namespaces",
        "default_namespaces",
        "cgroups",
        "seccomp",
        "landlock",
        "pidfd_open",
        "clone3",
        "close_range",
        "user_namespaces",
        "rootless",
    ] {
        assert!(c.get(key).is_some(), "no {key} in {c}");
    }
    let names: Vec<&str> = c["namespaces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["mnt", "pid", "net", "ipc", "uts", "user", "cgroup"]);
    // The same facts as the text.
    let kernel = c["kernel"].as_str().expect("kernel");
    assert!(stdout(&text).contains(&format!("kernel: Linux {kernel}")));
    if let Some(abi) = c["landlock"]["abi"].as_i64() {
        assert!(stdout(&text).contains(&format!("landlock: supported, ABI version {abi}")));
    }
    let controllers: Vec<&str> = c["cgroups"]["controllers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["name"].as_str().unwrap())
        .collect();
    assert_eq!(controllers, ["memory", "pids", "cpu"]);
}

#[test]
fn completions_for_each_shell() {
    // Serial: other cases compare this process's descendants before and after.
    let _g = serial();
    for shell in ["bash", "zsh", "fish"] {
        let o = run(&["completions", shell]);
        assert_eq!(o.status.code(), Some(0), "{shell}: {}", stderr(&o));
        let script = stdout(&o);
        assert!(script.contains("sandbox-run"), "{shell}: {script}");
        assert!(
            script.contains("timeout"),
            "{shell}: no --timeout in {script}"
        );
    }
    assert_eq!(run(&["completions", "tcsh"]).status.code(), Some(2));
    // A reader that stops at once (`| head -1`): no panic, whatever the write says.
    for sub in [["completions", "bash"], ["man", "bash"]] {
        let mut child = std::process::Command::new(bin())
            .args(&sub[..if sub[0] == "man" { 1 } else { 2 }])
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        drop(child.stdout.take());
        let o = child.wait_with_output().unwrap();
        let err = stderr(&o);
        assert!(!err.contains("panicked"), "{sub:?}: {err}");
        assert!(o.status.code().is_some(), "{sub:?}: {:?}", o.status);
    }
}

#[test]
fn man_page_is_roff() {
    // Serial: other cases compare this process's descendants before and after.
    let _g = serial();
    let o = run(&["man"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let page = stdout(&o);
    assert!(page.starts_with(".ie") || page.contains("\n.TH"), "{page}");
    assert!(page.contains(".TH sandbox-run"), "{page}");
    assert!(page.contains("timeout"), "{page}");
}

#[test]
fn quiet_when_all_is_well_and_spans_with_durations_at_v() {
    let _g = serial();
    if !privileged() {
        return;
    }
    let o = run(&["--", "echo", "hi"]);
    assert_eq!(o.status.code(), Some(0));
    assert_eq!(stdout(&o), "hi\n");
    assert_eq!(stderr(&o), "", "a quiet successful run printed something");

    for verbose in [
        Command::new(bin())
            .args(["-v", "--", "echo", "hi"])
            .output(),
        Command::new(bin())
            .args(["--", "echo", "hi"])
            .env("SANDBOX_RUN_LOG", "info")
            .output(),
    ] {
        let o = verbose.unwrap();
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        // Logs never reach stdout.
        assert_eq!(stdout(&o), "hi\n");
        let err = stderr(&o);
        for phase in ["plan", "setup", "cgroup", "clone", "exec"] {
            let line = err
                .lines()
                .find(|l| l.starts_with(&format!("sandbox-run: start/{phase} took ")))
                .unwrap_or_else(|| panic!("no {phase} span in {err}"));
            assert!(line.ends_with(" ms"), "{line}");
        }
        assert!(
            err.lines()
                .any(|l| l.starts_with("sandbox-run: start id=sbx-") && l.ends_with(" ms")),
            "{err}"
        );
    }
    // At -v, the time limit is an event too.
    let o = run(&["-v", "--timeout", "200ms", "--", "sleep", "1000"]);
    assert_eq!(o.status.code(), Some(124));
    assert!(
        stderr(&o).contains("time limit reached: stopping the sandbox"),
        "{}",
        stderr(&o)
    );
}

/// The built `minimal` example (`cargo test` builds the examples next to the test binaries).
fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.parent()
        .unwrap()
        .parent()
        .unwrap()
        .join("examples")
        .join(name)
}

#[test]
fn minimal_example_runs_and_diagnoses() {
    let _g = serial();
    if !privileged() {
        return;
    }
    let before = HostState::take();
    let o = Command::new(example("minimal"))
        .output()
        .expect("the minimal example is built");
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(stdout(&o), "hello from the sandbox\n");
    let o = Command::new(example("minimal"))
        .args(["sh", "-c", "echo out; exit 3"])
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(3));
    assert_eq!(stdout(&o), "out\n");
    assert!(
        stderr(&o).contains("sh exited with status 3"),
        "{}",
        stderr(&o)
    );
    before.assert_unchanged();
}
