//! Where a sandbox comes from (issue 10): no process of a sandbox is a long-lived copy of its
//! host. The init and the plugin run in the host's address space only until they exec (no
//! copy of its page tables or memory is made), and PID 1 is then `sandbox-init`, a
//! freestanding program of a few pages: its cmdline, environment, mappings and memory hold
//! nothing of the host, with `CAP_SYS_PTRACE` kept and Landlock off, and whatever the size
//! of the host's heap.
#![allow(clippy::await_holding_lock)] // serial(): one test at a time, each on its own runtime

mod common;
use common::*;

use sandbox_runner::{AttachedRunner, Profile, Runner, SandboxRunner};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, BufReader};

/// A marker no sandbox could make up: random, and never written whole into its argv.
fn marker() -> String {
    let mut b = [0u8; 12];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut b))
        .unwrap();
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!("HOST-SECRET-{hex}")
}

/// A probe, run inside the sandbox: searches every process's cmdline, environ and readable
/// memory for the marker, given in two halves so that only its own argv holds them apart.
const PROBE: &str = r#"
import os, sys
marker = (sys.argv[1] + sys.argv[2]).encode()
me = os.getpid()
total = 0
for pid in sorted(int(p) for p in os.listdir('/proc') if p.isdigit()):
    for what in ('cmdline', 'environ'):
        try:
            data = open('/proc/%d/%s' % (pid, what), 'rb').read()
        except OSError:
            continue
        total += len(data)
        if marker in data:
            print('FOUND', 'self' if pid == me else pid, what)
    if pid == me:
        continue
    try:
        maps = open('/proc/%d/maps' % pid).read().splitlines()
        mem = open('/proc/%d/mem' % pid, 'rb', 0)
    except OSError as e:
        print('NOMEM', pid, e.errno)
        continue
    for line in maps:
        lo, hi = (int(x, 16) for x in line.split()[0].split('-'))
        try:
            mem.seek(lo)
            data = mem.read(min(hi - lo, 1 << 26))
        except (OSError, ValueError, OverflowError):
            continue
        total += len(data)
        if marker in data:
            print('FOUND', pid, 'mem', line)
    print('MAPPINGS', pid, len(maps))
print('PID1', open('/proc/1/cmdline', 'rb').read().split(b'\0')[0].decode())
print('READ', total)
"#;

/// A profile that gives the probe every chance: CAP_SYS_PTRACE kept, Landlock off.
fn ptrace_profile() -> Profile {
    Profile::from_toml_str(
        "extends = \"default\"\nkeep_capabilities = [\"CAP_SYS_PTRACE\"]\n\
         [landlock]\nmode = \"off\"\n",
        "test",
    )
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pid1_holds_nothing_of_the_host_even_to_a_ptrace_capable_plugin() {
    let _g = serial();
    if !privileged() {
        return;
    }
    let before = HostState::take();
    // The marker lives in this host's heap and environment for the whole test.
    let secret = marker();
    let heap: Vec<String> = (0..64).map(|_| secret.clone()).collect();
    std::env::set_var("SANDBOX_TEST_HOST_SECRET", &secret);
    let (a, b) = secret.split_at(secret.len() / 2);
    let mut r =
        SandboxRunner::new(ptrace_profile(), "/usr/bin/python3", ["-c", PROBE, a, b]).unwrap();
    r.start().await.unwrap();
    let mut out = String::new();
    r.stdout().unwrap().read_to_string(&mut out).await.unwrap();
    let st = r.wait().await.unwrap();
    assert!(st.success(), "{st}: {out}");
    // The probe works: it finds the halves joined nowhere but it reads plenty, and it did
    // read PID 1's memory (CAP_SYS_PTRACE passes the non-dumpable check).
    assert!(
        !out.contains("FOUND"),
        "host data inside the sandbox:\n{out}"
    );
    assert!(out.contains("PID1 sandbox-init"), "{out}");
    assert!(
        out.contains("MAPPINGS 1 "),
        "PID 1's memory was not read:\n{out}"
    );
    let read: u64 = out
        .lines()
        .find_map(|l| l.strip_prefix("READ "))
        .and_then(|n| n.parse().ok())
        .unwrap();
    assert!(read > 4096, "{out}");
    drop(heap);
    drop(r);
    before.assert_unchanged();
}

#[test]
fn cli_host_argv_is_not_pid1s_cmdline() {
    let _g = serial();
    if !privileged() {
        return;
    }
    let secret = marker();
    let o = std::process::Command::new(bin())
        .args(["--env", &format!("X={secret}"), "--hostname", "h", "--"])
        .args(["/bin/sh", "-c", "tr '\\0' ' ' </proc/1/cmdline"])
        .output()
        .unwrap();
    let out = stdout(&o);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(out.starts_with("sandbox-init "), "{out}");
    assert!(
        !out.contains(&secret) && !out.contains("sandbox-run"),
        "{out}"
    );
}

/// VmRSS of a process, in bytes.
fn rss_of(pid: i32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap()
        * 1024
}

/// `MemAvailable` of the machine, in bytes.
fn mem_available() -> u64 {
    let s = std::fs::read_to_string("/proc/meminfo").unwrap();
    s.lines()
        .find_map(|l| l.strip_prefix("MemAvailable:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap()
        * 1024
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_with_a_big_heap_that_keeps_writing_pins_nothing_per_sandbox() {
    let _g = serial();
    if !privileged() {
        return;
    }
    let before = HostState::take();
    const HEAP: usize = 256 << 20;
    const N: usize = 8;
    // A host with a 256 MiB heap, every page touched, and a thread that keeps writing it.
    let mut heap = vec![1u8; HEAP];
    let base = heap.as_mut_ptr() as usize;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writer = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut round = 0u8;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                round = round.wrapping_add(1);
                let mut off = 0;
                while off < HEAP {
                    // SAFETY: inside `heap`, which outlives this thread (joined below) and
                    // which nothing else touches meanwhile.
                    unsafe { ((base + off) as *mut u8).write_volatile(round) };
                    off += 4096;
                }
            }
        })
    };
    let avail_before = mem_available();
    let mut sandboxes = Vec::new();
    for _ in 0..N {
        let mut r = SandboxRunner::new(
            Profile::builtin("default").unwrap(),
            "/bin/sh",
            ["-c", "echo up; exec sleep 60"],
        )
        .unwrap();
        r.start().await.unwrap();
        let mut line = String::new();
        BufReader::new(r.stdout().unwrap())
            .read_line(&mut line)
            .await
            .unwrap();
        assert_eq!(line, "up\n");
        sandboxes.push(r);
    }
    // Let the writer dirty the whole heap a few times over with every sandbox alive: a
    // copy-on-write init would now hold its own copy of every page.
    let t = Instant::now();
    while t.elapsed() < Duration::from_millis(1500) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut inits = Vec::new();
    for r in &sandboxes {
        let pid = r.init_pid().unwrap();
        let rss = rss_of(pid);
        inits.push(rss);
        assert!(
            rss < 1 << 20,
            "init {pid} holds {rss} bytes (host heap {HEAP})"
        );
    }
    let avail_after = mem_available();
    let used = avail_before.saturating_sub(avail_after);
    // 8 pinned copies would be 2 GiB; 8 sandboxes of a few MiB of kernel objects each fit
    // well under 128 MiB, with room for whatever else this machine does meanwhile.
    assert!(
        used < 128 << 20,
        "{N} sandboxes took {} MiB of system memory (init RSS {inits:?})",
        used >> 20
    );
    for r in &sandboxes {
        r.kill().await.unwrap();
    }
    drop(sandboxes);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    writer.join().unwrap();
    drop(heap);
    before.assert_unchanged();
}

/// The entries of a directory (empty when it does not exist).
fn entries(dir: &std::path::Path) -> std::collections::BTreeSet<std::ffi::OsString> {
    std::fs::read_dir(dir)
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default()
}

/// `sandbox-run` started with `args`, SIGKILLed once its plugin printed its first line:
/// within 2 s, with no later start and no `check --cleanup`, its cgroups, owner record,
/// state and socket directories are gone (the reaper), and so is every process of it.
fn sigkilled_cli_host_leaves_nothing(args: &[&str]) {
    let before = HostState::take();
    let records = sandbox_runner::cgroup::records_dir();
    let state = sandbox_runner::state::state_root();
    let (records_before, state_before) = (entries(&records), entries(&state));
    let mut host = std::process::Command::new(bin())
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(host.stdout.take().unwrap()),
        &mut line,
    )
    .unwrap();
    assert!(!line.is_empty(), "{args:?}: the plugin said nothing");
    // It really had something to leave.
    assert_ne!(
        entries(&records),
        records_before,
        "{args:?}: no owner record"
    );
    let _ = host.kill();
    host.wait().unwrap();
    let killed = Instant::now();
    let deadline = killed + Duration::from_secs(2);
    loop {
        let left_records = entries(&records) != records_before;
        let left_state = entries(&state) != state_before;
        let left_cgroups = own_cgroup_dirs() != before.cgroups;
        if !(left_records || left_state || left_cgroups) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{args:?}: 2 s after the host's SIGKILL: records {left_records}, state \
             {left_state}, cgroups {left_cgroups}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    println!(
        "{args:?}: nothing left {:?} after the SIGKILL",
        killed.elapsed()
    );
    before.assert_unchanged();
}

#[test]
fn a_sigkilled_cli_host_leaves_nothing_within_two_seconds() {
    let _g = serial();
    if !privileged() {
        return;
    }
    sigkilled_cli_host_leaves_nothing(&["--", "/bin/sh", "-c", "echo up; exec sleep 100"]);
    // The go-plugin profile: a state directory with the socket directory, which the plugin
    // fills with a socket and a small tree.
    sigkilled_cli_host_leaves_nothing(&[
        "--profile",
        "go-plugin",
        "--",
        "/usr/bin/python3",
        "-c",
        "import os, socket, time\n\
         d = os.environ['PLUGIN_UNIX_SOCKET_DIR']\n\
         s = socket.socket(socket.AF_UNIX); s.bind(d + '/p.sock'); s.listen()\n\
         os.makedirs(d + '/a/b/c'); open(d + '/a/b/c/f', 'w').write('x')\n\
         print('1|1|unix|' + d + '/p.sock|grpc', flush=True)\n\
         time.sleep(100)",
    ]);
}
