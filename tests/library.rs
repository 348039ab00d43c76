//! The library API as a tokio host uses it, as root: pipes, wait, kill, ID, diagnose.
#![allow(clippy::await_holding_lock)] // serial(): one test at a time, each on its own runtime

mod common;
use common::*;

use sandbox_runner::{AttachedRunner, ExitStatus, Profile, Runner, SandboxRunner, Stdio};
use std::io::Write;
use std::os::fd::AsRawFd;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

fn runner(args: &[&str]) -> SandboxRunner {
    SandboxRunner::new(Profile::builtin("default").unwrap(), args[0], &args[1..]).unwrap()
}

fn sh(script: &str) -> SandboxRunner {
    runner(&["/bin/sh", "-c", script])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stdout_and_stderr_are_separate_and_never_mix() {
    let _g = serial();
    if !privileged() {
        return;
    }
    let before = HostState::take();
    let mut r =
        sh("i=0; while [ $i -lt 2000 ]; do echo out$i; echo err$i >&2; i=$((i+1)); done; exit 3");
    r.start().await.unwrap();
    let (mut o, mut e) = (r.stdout().unwrap(), r.stderr().unwrap());
    assert!(r.stdout().is_none(), "stdout is handed over once");
    let (mut out, mut err) = (String::new(), String::new());
    let (a, b) = tokio::join!(o.read_to_string(&mut out), e.read_to_string(&mut err));
    a.unwrap();
    b.unwrap();
    assert_eq!(r.wait().await.unwrap(), ExitStatus::Exited { code: 3 });
    let want = |p: &str| (0..2000).map(|i| format!("{p}{i}\n")).collect::<String>();
    assert_eq!(out, want("out"));
    assert_eq!(err, want("err"));
    assert_eq!(r.diagnose().await, "/bin/sh exited with status 3");
    drop(r);
    before.assert_unchanged();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_mib_through_stdout_arrive_byte_exact() {
    let _g = serial();
    if !privileged() {
        return;
    }
    const SIZE: usize = 100 << 20;
    let mut data = vec![0u8; SIZE];
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for chunk in data.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        chunk.copy_from_slice(&x.to_le_bytes()[..chunk.len()]);
    }
    let mut f = tempfile::NamedTempFile::new().unwrap();
    f.write_all(&data).unwrap();
    f.flush().unwrap();
    // Root inside is an unprivileged host id: the file must be readable by others.
    std::fs::set_permissions(
        f.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o644),
    )
    .unwrap();
    let before = HostState::take();
    let mut profile = Profile::builtin("default").unwrap();
    let src = sandbox_runner::profile::AbsPath::new(f.path().to_str().unwrap()).unwrap();
    profile
        .mount
        .push(sandbox_runner::profile::MountSpec::RoBind {
            src,
            dst: None,
            optional: false,
            noexec: false,
        });
    let mut r = SandboxRunner::new(profile, "/bin/cat", [f.path()]).unwrap();
    r.start().await.unwrap();
    let mut got = Vec::with_capacity(SIZE);
    r.stdout().unwrap().read_to_end(&mut got).await.unwrap();
    assert!(r.wait().await.unwrap().success());
    assert_eq!(got.len(), SIZE);
    assert!(got == data, "stdout bytes differ from the file");
    drop(r);
    before.assert_unchanged();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn background_process_dies_with_the_plugin_and_pipes_reach_eof_only_then() {
    let _g = serial();
    if !privileged() {
        return;
    }
    let before = HostState::take();
    // The background sleep keeps stdout open: EOF can only come once it is gone too.
    let mut r = sh("sleep 1000 & echo ready; read x; exit 0").with_stdin(Stdio::Pipe);
    r.start().await.unwrap();
    let mut out = BufReader::new(r.stdout().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).await.unwrap();
    assert_eq!(line, "ready\n");
    let init = r.init_pid().unwrap();
    let inside = pids_in_pidns_of(init);
    assert!(inside.len() >= 3, "init, sh and sleep expected: {inside:?}");
    drop(r.take_stdin());
    let mut rest = String::new();
    out.read_to_string(&mut rest).await.unwrap();
    for p in &inside {
        assert!(!running(*p), "pid {p} still running at stdout EOF");
    }
    assert_eq!(r.wait().await.unwrap(), ExitStatus::Exited { code: 0 });
    drop(r);
    before.assert_unchanged();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_terminates_gracefully_then_forcibly_and_leaves_nothing() {
    let _g = serial();
    if !privileged() {
        return;
    }
    let before = HostState::take();
    // A plugin that honours SIGTERM ends with its own status.
    let mut r = sh("trap 'exit 0' TERM; echo ready; while :; do sleep 0.05; done");
    r.start().await.unwrap();
    let mut out = BufReader::new(r.stdout().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).await.unwrap();
    r.kill().await.unwrap();
    assert_eq!(r.wait().await.unwrap(), ExitStatus::Exited { code: 0 });
    drop(r);

    // A plugin that ignores SIGTERM, with a background child, is SIGKILLed after the grace.
    let profile =
        Profile::from_toml_str("extends = \"default\"\nkill_grace = \"200ms\"", "test").unwrap();
    let mut r = SandboxRunner::new(
        profile,
        "/bin/sh",
        [
            "-c",
            "trap '' TERM; sleep 1000 & echo ready; while :; do sleep 0.05; done",
        ],
    )
    .unwrap();
    r.start().await.unwrap();
    let mut out = BufReader::new(r.stdout().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).await.unwrap();
    let inside = pids_in_pidns_of(r.init_pid().unwrap());
    r.kill().await.unwrap();
    for p in &inside {
        assert!(!alive(*p), "pid {p} alive after kill returned");
    }
    let st = r.wait().await.unwrap();
    assert_eq!(st.signal(), Some(libc::SIGKILL), "{st}");
    assert!(r.diagnose().await.contains("killed by SIGKILL"));
    drop(r);
    before.assert_unchanged();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wait_and_kill_from_two_tasks() {
    let _g = serial();
    if !privileged() {
        return;
    }
    let mut r = sh("echo ready; exec sleep 1000");
    r.start().await.unwrap();
    let mut line = String::new();
    BufReader::new(r.stdout().unwrap())
        .read_line(&mut line)
        .await
        .unwrap();
    let r = std::sync::Arc::new(r);
    let waiter = {
        let r = r.clone();
        tokio::spawn(async move { r.wait().await })
    };
    r.kill().await.unwrap();
    let st = waiter.await.unwrap().unwrap();
    assert_eq!(
        st,
        ExitStatus::Signaled {
            signal: libc::SIGTERM,
            core_dumped: false
        }
    );
    assert_eq!(
        r.wait().await.unwrap(),
        st,
        "wait after the end returns the same status"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ids_are_unique_and_not_pids() {
    let a = sh("true");
    let b = sh("true");
    assert!(
        a.id().starts_with("sbx-") && a.id().len() > 20,
        "{}",
        a.id()
    );
    assert_ne!(a.id(), b.id());
    assert_eq!(a.name(), "/bin/sh");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leaked_caller_fds_are_closed_inside() {
    let _g = serial();
    if !privileged() {
        return;
    }
    let f = std::fs::File::open("/etc/hostname").unwrap();
    assert_eq!(unsafe { libc::dup2(f.as_raw_fd(), 77) }, 77);
    let mut r = runner(&["/bin/ls", "/proc/self/fd/"]);
    r.start().await.unwrap();
    let mut out = String::new();
    r.stdout().unwrap().read_to_string(&mut out).await.unwrap();
    unsafe { libc::close(77) };
    r.wait().await.unwrap();
    let fds: Vec<&str> = out.split_whitespace().collect();
    // 0, 1, 2 and ls's own handle on the directory it lists.
    assert_eq!(fds, ["0", "1", "2", "3"], "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stdin_pipe_feeds_the_plugin() {
    let _g = serial();
    if !privileged() {
        return;
    }
    let mut r = runner(&["/bin/cat"]).with_stdin(Stdio::Pipe);
    r.start().await.unwrap();
    let mut w = r.take_stdin().unwrap();
    w.write_all(b"hello plugin\n").await.unwrap();
    drop(w);
    let mut out = String::new();
    r.stdout().unwrap().read_to_string(&mut out).await.unwrap();
    assert_eq!(out, "hello plugin\n");
    assert!(r.wait().await.unwrap().success());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn setup_failure_is_typed_and_names_step_and_path() {
    let _g = serial();
    if !privileged() {
        return;
    }
    let before = HostState::take();
    let profile =
        Profile::from_toml_str("extends = \"default\"\ncwd = \"/no/such/dir\"", "test").unwrap();
    let mut r = SandboxRunner::new(profile, "/bin/true", Vec::<String>::new()).unwrap();
    let e = r.start().await.unwrap_err();
    match &e {
        sandbox_runner::Error::Setup { step, path, errno } => {
            assert_eq!(*step, sandbox_runner::child::Step::Chdir);
            assert_eq!(path, "/no/such/dir");
            assert_eq!(*errno, nix::errno::Errno::ENOENT);
        }
        other => panic!("unexpected error {other:?}"),
    }
    assert_eq!(e.exit_code(), 125);
    assert!(
        r.diagnose().await.contains("change directory"),
        "{}",
        r.diagnose().await
    );
    drop(r);
    before.assert_unchanged();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_a_running_sandbox_kills_it() {
    let _g = serial();
    if !privileged() {
        return;
    }
    let before = HostState::take();
    let mut r = sh("sleep 1000 & echo ready; sleep 1000");
    r.start().await.unwrap();
    let mut line = String::new();
    BufReader::new(r.stdout().unwrap())
        .read_line(&mut line)
        .await
        .unwrap();
    let inside = pids_in_pidns_of(r.init_pid().unwrap());
    drop(r);
    for p in &inside {
        assert!(!alive(*p), "pid {p} alive after the runner was dropped");
    }
    before.assert_unchanged();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_start_aborts_only_the_start_and_leaves_nothing() {
    let _g = serial();
    if !privileged() {
        return;
    }
    let before = HostState::take();
    // Cancel the start at different points of its progress.
    for us in [1u64, 200, 1_000, 3_000, 10_000] {
        let mut r = sh("sleep 1000");
        let res = tokio::time::timeout(std::time::Duration::from_micros(us), r.start()).await;
        if res.is_ok() {
            // It finished in time: a running sandbox, killed by the drop below.
            assert!(r.init_pid().is_some());
        }
        drop(r);
    }
    // A sandbox that was running when another start was cancelled is unaffected.
    let mut keep = sh("echo alive; exec sleep 1000");
    keep.start().await.unwrap();
    let mut r2 = sh("sleep 1000");
    let _ = tokio::time::timeout(std::time::Duration::from_micros(100), r2.start()).await;
    drop(r2);
    let mut line = String::new();
    BufReader::new(keep.stdout().unwrap())
        .read_line(&mut line)
        .await
        .unwrap();
    assert_eq!(line, "alive\n");
    keep.kill().await.unwrap();
    drop(keep);
    before.assert_unchanged();
}

/// Resident set size of this process, in bytes.
fn rss() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    let kb: u64 = s
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap();
    kb * 1024
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flooding_both_pipes_while_the_host_reads_slowly_loses_nothing() {
    let _g = serial();
    if !privileged() {
        return;
    }
    const MIB: u64 = 64;
    let before = HostState::take();
    let rss0 = rss();
    let mut r = sh(&format!(
        "head -c {MIB}M /dev/zero | tr '\\0' o & head -c {MIB}M /dev/zero | tr '\\0' e >&2; wait"
    ));
    r.start().await.unwrap();
    let (o, e) = (r.stdout().unwrap(), r.stderr().unwrap());
    // Count and check every byte without keeping them: host memory stays bounded by the
    // pipes' capacity, whatever the plugin writes.
    async fn drain(mut rd: sandbox_runner::PipeReader, want: u8, slow: bool) -> (u64, bool) {
        let mut buf = vec![0u8; 64 * 1024];
        let (mut n, mut ok) = (0u64, true);
        loop {
            let k = rd.read(&mut buf).await.unwrap();
            if k == 0 {
                return (n, ok);
            }
            ok &= buf[..k].iter().all(|b| *b == want);
            n += k as u64;
            if slow {
                tokio::time::sleep(std::time::Duration::from_micros(200)).await;
            }
        }
    }
    let ((on, ook), (en, eok)) = tokio::join!(drain(o, b'o', true), drain(e, b'e', false));
    assert_eq!((on, en), (MIB << 20, MIB << 20), "bytes lost");
    assert!(ook && eok, "stdout and stderr mixed or corrupted");
    assert!(r.wait().await.unwrap().success());
    let grown = rss().saturating_sub(rss0);
    assert!(
        grown < 32 << 20,
        "host memory grew by {grown} bytes for 2 x {MIB} MiB of output"
    );
    drop(r);
    before.assert_unchanged();
}
