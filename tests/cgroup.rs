//! Privileged integration tests of the cgroup module on the real kernel, with plain processes
//! (no sandbox): limits are enforced, counters and the watch see it, kill and removal leave
//! nothing, stale sandboxes are reclaimed and live ones never are.
//!
//! Each test needs root; without it the test says SKIPPED (a failure when `CI=true`). Tests
//! touching cgroups are serialized, and each checks afterwards that no directory of its
//! sandbox is left under this process's own cgroup in any hierarchy.

use std::io::Write;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use sandbox_runner::cgroup::{
    reclaim_stale, records_dir, start_time, CgroupError, Detection, Limits, SandboxCgroup,
};
use sandbox_runner::check::{find_own_dir, parse_mountinfo, parse_proc_cgroup};

static LOCK: Mutex<()> = Mutex::new(());

fn lock() -> MutexGuard<'static, ()> {
    LOCK.lock().unwrap_or_else(|e| e.into_inner())
}

/// `true` when running as root; otherwise SKIPPED (or a panic under `CI=true`).
fn is_root(test: &str) -> bool {
    if nix::unistd::geteuid().is_root() {
        return true;
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{test}: needs root, and CI=true forbids skipping");
    }
    eprintln!("SKIPPED: {test}: needs root");
    false
}

macro_rules! require_root {
    ($name:expr) => {
        if !is_root($name) {
            return;
        }
    };
}

/// A sandbox id unique to this process and test.
fn unique_id(tag: &str) -> String {
    static N: AtomicUsize = AtomicUsize::new(0);
    format!(
        "t{}-{tag}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::SeqCst)
    )
}

/// Where a sandbox named `id` could exist: `<own cgroup>/sandbox-runner/<id>` in every
/// mounted hierarchy.
fn possible_dirs(id: &str) -> Vec<PathBuf> {
    let mounts = parse_mountinfo(&std::fs::read_to_string("/proc/self/mountinfo").unwrap());
    let owns = parse_proc_cgroup(&std::fs::read_to_string("/proc/self/cgroup").unwrap());
    owns.iter()
        .filter_map(|o| find_own_dir(&mounts, o))
        .map(|(_, dir)| dir.join("sandbox-runner").join(id))
        .collect()
}

/// Asserts that nothing of sandbox `id` is left: no directory in any hierarchy, no record.
fn assert_gone(id: &str) {
    for d in possible_dirs(id) {
        assert!(!d.exists(), "{} is left behind", d.display());
    }
    let rec = records_dir().join(format!("{id}.json"));
    assert!(!rec.exists(), "{} is left behind", rec.display());
}

/// Spawns `sh -c script`; the script should start with `read x` so that it waits until
/// [`release`] (the sync-pipe pattern of the runner).
fn spawn_waiting(script: &str) -> Child {
    Command::new("sh")
        .arg("-c")
        .arg(script)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn sh")
}

fn release(child: &mut Child) {
    let mut stdin = child.stdin.take().expect("stdin");
    stdin.write_all(b"go\n").expect("release");
}

/// Asserts `/proc/PID/cgroup` shows the sandbox in as many hierarchies as it has paths.
fn assert_inside(pid: u32, cg: &SandboxCgroup) {
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    let suffix = format!("/sandbox-runner/{}", cg.id());
    let inside = text.lines().filter(|l| l.ends_with(&suffix)).count();
    assert_eq!(
        inside,
        cg.paths().len(),
        "process {pid} not in the sandbox cgroup everywhere:\n{text}"
    );
}

fn wait_with_timeout(child: &mut Child, bound: Duration) -> std::process::ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(st) = child.try_wait().unwrap() {
            return st;
        }
        if start.elapsed() > bound {
            let _ = child.kill();
            panic!("process {} did not end within {bound:?}", child.id());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn memory_limit_oom_kills_and_is_counted() {
    require_root!("memory_limit_oom_kills_and_is_counted");
    let _g = lock();
    let id = unique_id("oom");
    let limit = 32u64 << 20;
    let cg = SandboxCgroup::create(
        &id,
        &Limits {
            memory: Some(limit),
            ..Limits::default()
        },
        None,
    )
    .expect("create");
    for p in cg.paths() {
        assert!(p.is_dir(), "{} missing", p.display());
    }
    let mut child = spawn_waiting("read x; exec tail /dev/zero");
    cg.attach(child.id() as i32).expect("attach");
    assert_inside(child.id(), &cg);
    let watcher = cg.watch();
    release(&mut child);
    let status = wait_with_timeout(&mut child, Duration::from_secs(30));
    assert_eq!(status.signal(), Some(libc::SIGKILL), "status {status:?}");
    let now = cg.counters();
    assert!(now.oom_kill.unwrap_or(0) >= 1, "counters {now:?}");
    let peak = now.memory_peak.expect("peak measured");
    assert!(
        peak >= limit * 8 / 10 && peak <= limit + (1 << 20),
        "peak {peak} not near the {limit} limit"
    );
    if cg.is_v2() {
        // memory.events max. (v1 memory.failcnt stays 0 on recent kernels: not asserted.)
        assert!(now.memory_max.unwrap_or(0) > 0, "counters {now:?}");
    }
    // The watch saw it too, and stops by itself once the cgroup is removed.
    let start = Instant::now();
    while watcher.latest().oom_kill.unwrap_or(0) < 1 && start.elapsed() < Duration::from_secs(2) {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(watcher.latest().oom_kill.unwrap_or(0) >= 1, "{watcher:?}");
    cg.remove().expect("remove");
    let start = Instant::now();
    while watcher.is_running() && start.elapsed() < Duration::from_secs(2) {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(!watcher.is_running(), "watcher still running after removal");
    let last = watcher.stop();
    assert!(last.oom_kill.unwrap_or(0) >= 1);
    assert_eq!(last.memory_peak, Some(peak.max(last.memory_peak.unwrap())));
    assert_gone(&id);
}

#[test]
fn pids_limit_holds_and_is_counted() {
    require_root!("pids_limit_holds_and_is_counted");
    let _g = lock();
    let id = unique_id("pids");
    let cg = SandboxCgroup::create(
        &id,
        &Limits {
            pids: Some(8),
            ..Limits::default()
        },
        None,
    )
    .expect("create");
    let mut child =
        spawn_waiting("read x; i=0; while [ $i -lt 40 ]; do sleep 30 & i=$((i+1)); done; wait");
    cg.attach(child.id() as i32).expect("attach");
    assert_inside(child.id(), &cg);
    release(&mut child);
    let start = Instant::now();
    let mut max_seen = 0;
    while cg.counters().pids_max.unwrap_or(0) == 0 && start.elapsed() < Duration::from_secs(10) {
        max_seen = max_seen.max(cg.procs().len());
        std::thread::sleep(Duration::from_millis(20));
    }
    let c = cg.counters();
    assert!(
        c.pids_max.unwrap_or(0) > 0,
        "pids.events max not raised: {c:?}"
    );
    max_seen = max_seen.max(cg.procs().len());
    assert!(max_seen <= 8, "{max_seen} processes under a limit of 8");
    cg.kill_all().expect("kill_all");
    assert!(cg.procs().is_empty());
    let _ = wait_with_timeout(&mut child, Duration::from_secs(5));
    cg.remove().expect("remove");
    assert_gone(&id);
}

#[test]
fn cpu_limit_is_enforced_by_accounting() {
    require_root!("cpu_limit_is_enforced_by_accounting");
    let _g = lock();
    let id = unique_id("cpu");
    let cg = SandboxCgroup::create(
        &id,
        &Limits {
            cpus: Some(0.2),
            ..Limits::default()
        },
        None,
    )
    .expect("create");
    let mut child = spawn_waiting("read x; while :; do :; done");
    cg.attach(child.id() as i32).expect("attach");
    assert_inside(child.id(), &cg);
    let before = cg.counters().cpu_usage_usec.expect("cpu usage measured");
    let t0 = Instant::now();
    release(&mut child);
    std::thread::sleep(Duration::from_secs(2));
    let after = cg.counters();
    let elapsed = t0.elapsed().as_secs_f64();
    let used = (after.cpu_usage_usec.unwrap() - before) as f64 / 1e6;
    let share = used / elapsed;
    eprintln!("cpu 0.2 limit: busy loop got {share:.3} CPU ({used:.3}s in {elapsed:.3}s)");
    assert!(
        (0.15..=0.25).contains(&share),
        "busy loop got {share:.3} CPU under a 0.2 limit ({used:.3}s in {elapsed:.3}s)"
    );
    assert!(after.nr_throttled.unwrap_or(0) > 0, "{after:?}");
    assert!(after.throttled_usec.unwrap_or(0) > 0, "{after:?}");
    cg.kill_all().expect("kill_all");
    let st = wait_with_timeout(&mut child, Duration::from_secs(5));
    assert_eq!(st.signal(), Some(libc::SIGKILL));
    cg.remove().expect("remove");
    assert_gone(&id);
}

#[test]
fn kill_all_kills_a_process_tree() {
    require_root!("kill_all_kills_a_process_tree");
    let _g = lock();
    let id = unique_id("tree");
    let cg = SandboxCgroup::create(
        &id,
        &Limits {
            pids: Some(64),
            ..Limits::default()
        },
        None,
    )
    .expect("create");
    let mut child = spawn_waiting(
        "read x; sleep 100 & sleep 100 & (sleep 100 & sleep 100 & wait) & (setsid sleep 100 &); wait",
    );
    cg.attach(child.id() as i32).expect("attach");
    release(&mut child);
    let start = Instant::now();
    while cg.procs().len() < 7 && start.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(20));
    }
    let pids = cg.procs();
    assert!(pids.len() >= 7, "tree not started: {pids:?}");
    cg.kill_all().expect("kill_all");
    assert!(cg.procs().is_empty(), "left: {:?}", cg.procs());
    let st = wait_with_timeout(&mut child, Duration::from_secs(5));
    assert_eq!(st.signal(), Some(libc::SIGKILL));
    // Every process of the tree is gone (reparented ones were reaped by their new parent).
    let start = Instant::now();
    for pid in pids {
        while start.elapsed() < Duration::from_secs(5) {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            let state = stat
                .rsplit(')')
                .next()
                .unwrap_or("")
                .split_whitespace()
                .next();
            if stat.is_empty() || state == Some("Z") {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
    cg.remove().expect("remove");
    assert_gone(&id);
}

#[test]
fn drop_kills_and_removes() {
    require_root!("drop_kills_and_removes");
    let _g = lock();
    let id = unique_id("drop");
    let cg = SandboxCgroup::create(&id, &Limits::default(), None).expect("create");
    let paths = cg.paths();
    assert!(!paths.is_empty());
    let mut child = spawn_waiting("read x; exec sleep 100");
    cg.attach(child.id() as i32).expect("attach");
    assert_inside(child.id(), &cg);
    release(&mut child);
    drop(cg);
    let st = wait_with_timeout(&mut child, Duration::from_secs(5));
    assert_eq!(st.signal(), Some(libc::SIGKILL));
    for p in paths {
        assert!(!p.exists(), "{} left", p.display());
    }
    assert_gone(&id);
}

/// Rewrites the owner of a record (simulating a record left by another, dead, host).
fn set_owner(record: &Path, pid: i32, start: u64) {
    let text = std::fs::read_to_string(record).unwrap();
    let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v["owner_pid"] = pid.into();
    v["owner_start_time"] = start.into();
    std::fs::write(record, serde_json::to_vec(&v).unwrap()).unwrap();
}

#[test]
fn reclaim_stale_takes_dead_owners_only() {
    require_root!("reclaim_stale_takes_dead_owners_only");
    let _g = lock();
    // A host that has died: a real process, recorded while alive, then reaped.
    let mut dead = spawn_waiting("read x");
    let dead_pid = dead.id() as i32;
    let dead_start = start_time(dead_pid).expect("start time");
    dead.kill().unwrap();
    dead.wait().unwrap();

    // Every create reclaims too, so all three exist before any owner is rewritten.
    let stale_id = unique_id("stale");
    let stale = SandboxCgroup::create(
        &stale_id,
        &Limits {
            pids: Some(16),
            ..Limits::default()
        },
        None,
    )
    .expect("create stale");
    let stale_paths = stale.paths();
    let mut orphan = spawn_waiting("read x; exec sleep 100");
    stale.attach(orphan.id() as i32).expect("attach");
    release(&mut orphan);
    let reused_id = unique_id("reused");
    let reused = SandboxCgroup::create(&reused_id, &Limits::default(), None).expect("create");
    let reused_paths = reused.paths();
    let live_id = unique_id("live");
    let live = SandboxCgroup::create(
        &live_id,
        &Limits {
            pids: Some(16),
            ..Limits::default()
        },
        None,
    )
    .expect("create live");

    // A dead host.
    set_owner(stale.record_path().unwrap(), dead_pid, dead_start);
    // A reused pid: this very process, but not the recorded start time.
    let me = std::process::id() as i32;
    set_owner(
        reused.record_path().unwrap(),
        me,
        start_time(me).unwrap() + 1,
    );
    // `live` is owned by this (live) process.

    // The host "crashes": no Drop, no removal.
    std::mem::forget(stale);
    std::mem::forget(reused);

    let reclaimed = reclaim_stale().expect("reclaim");
    for p in stale_paths.iter().chain(&reused_paths) {
        assert!(
            reclaimed.contains(p),
            "{} not reclaimed: {reclaimed:?}",
            p.display()
        );
        assert!(!p.exists(), "{} left", p.display());
    }
    for p in live.paths() {
        assert!(
            !reclaimed.contains(&p),
            "live sandbox {} reclaimed",
            p.display()
        );
        assert!(p.is_dir(), "live sandbox {} removed", p.display());
    }
    let st = wait_with_timeout(&mut orphan, Duration::from_secs(5));
    assert_eq!(st.signal(), Some(libc::SIGKILL), "orphan not killed");
    assert_gone(&stale_id);
    assert_gone(&reused_id);
    // A second pass finds nothing of ours.
    let again = reclaim_stale().expect("reclaim again");
    assert!(live.paths().iter().all(|p| !again.contains(p)));
    live.remove().expect("remove live");
    assert_gone(&live_id);
}

#[test]
fn missing_controller_is_a_clear_error_and_leaves_nothing() {
    require_root!("missing_controller_is_a_clear_error_and_leaves_nothing");
    let _g = lock();
    // This host's cgroup2 mount has no memory controller: force the v2 path.
    let d = Detection::detect().expect("detect").without_v1();
    let Some(v2) = &d.v2 else {
        eprintln!("SKIPPED: no cgroup2 mount on this host");
        return;
    };
    let has_memory = v2
        .controllers
        .as_ref()
        .is_some_and(|c| c.iter().any(|x| x == "memory"));
    let id = unique_id("nomem");
    let r = SandboxCgroup::create_in(
        &d,
        &id,
        &Limits {
            memory: Some(64 << 20),
            ..Limits::default()
        },
        None,
    );
    if has_memory {
        eprintln!("SKIPPED: the cgroup2 mount delegates memory here");
        drop(r);
    } else {
        let err = r.expect_err("memory is not available on the cgroup2 mount");
        assert!(
            matches!(err, CgroupError::ControllerNotDelegated { ref controller, .. } if controller == "memory"),
            "{err}"
        );
        let text = err.to_string();
        assert!(text.contains("memory"), "{text}");
        assert!(text.contains("cgroup.controllers"), "{text}");
        assert!(text.contains("Delegate=yes"), "{text}");
    }
    assert_gone(&id);

    // A configured parent that does not exist: an error naming the path, nothing created.
    let id = unique_id("noparent");
    let parent = format!("/sandbox-runner-test-missing-{}", std::process::id());
    let err = SandboxCgroup::create(
        &id,
        &Limits {
            pids: Some(4),
            ..Limits::default()
        },
        Some(Path::new(&parent)),
    )
    .expect_err("missing parent");
    let text = err.to_string();
    assert!(text.contains(&parent), "{text}");
    assert!(text.contains("No such file"), "{text}");
    assert_gone(&id);
}

#[test]
fn v2_placement_and_kill_on_the_unified_mount() {
    require_root!("v2_placement_and_kill_on_the_unified_mount");
    let _g = lock();
    let d = Detection::detect().expect("detect").without_v1();
    if d.v2.is_none() {
        eprintln!("SKIPPED: no cgroup2 mount on this host");
        return;
    }
    let id = unique_id("v2");
    let cg = SandboxCgroup::create_in(&d, &id, &Limits::default(), None).expect("create v2");
    assert!(cg.is_v2());
    assert_eq!(cg.paths().len(), 1);
    assert!(cg.clone_into_fd().is_some());

    // clone3(CLONE_INTO_CGROUP) with the fd: the child starts inside.
    let pid = clone3_into(cg.clone_into_fd().unwrap());
    let text = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    assert!(
        text.lines()
            .any(|l| l.starts_with("0::") && l.ends_with(&format!("/sandbox-runner/{id}"))),
        "clone3 child not placed: {text}"
    );
    // attach() places a plain child too.
    let mut child = spawn_waiting("read x; sleep 100 & exec sleep 100");
    cg.attach(child.id() as i32).expect("attach");
    release(&mut child);
    let start = Instant::now();
    while cg.procs().len() < 3 && start.elapsed() < Duration::from_secs(5) {
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(cg.procs().len(), 3, "{:?}", cg.procs());
    let c = cg.counters();
    assert!(
        c.cpu_usage_usec.is_some(),
        "cpu.stat exists in every v2 cgroup: {c:?}"
    );
    cg.kill_all().expect("cgroup.kill");
    assert!(cg.procs().is_empty());
    let st = wait_with_timeout(&mut child, Duration::from_secs(5));
    assert_eq!(st.signal(), Some(libc::SIGKILL));
    let mut status = 0;
    // SAFETY: reaps our own clone3 child.
    let r = unsafe { libc::waitpid(pid, &mut status, 0) };
    assert_eq!(r, pid);
    assert!(libc::WIFSIGNALED(status) && libc::WTERMSIG(status) == libc::SIGKILL);
    cg.remove().expect("remove");
    assert_gone(&id);
}

/// The kernel's `struct clone_args` (5.7 layout).
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

/// `clone3(CLONE_INTO_CGROUP)`: a child that only waits for signals, started in `cgroup`.
fn clone3_into(cgroup: std::os::fd::BorrowedFd<'_>) -> i32 {
    use std::os::fd::AsRawFd;
    const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;
    let args = CloneArgs {
        flags: CLONE_INTO_CGROUP,
        exit_signal: libc::SIGCHLD as u64,
        cgroup: cgroup.as_raw_fd() as u64,
        ..CloneArgs::default()
    };
    // SAFETY: a fork-like clone3 (no CLONE_VM); the child only calls pause() (async-signal
    // safe) until it is killed.
    let r = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &args as *const CloneArgs,
            std::mem::size_of::<CloneArgs>(),
        )
    };
    if r == 0 {
        loop {
            // SAFETY: async-signal-safe.
            unsafe { libc::pause() };
        }
    }
    assert!(r > 0, "clone3: {}", std::io::Error::last_os_error());
    r as i32
}
