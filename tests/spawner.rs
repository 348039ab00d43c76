//! Where a sandbox comes from (issue 10): no process of a sandbox is a long-lived copy of its
//! host. The init and the plugin run in the host's address space only until they exec (no
//! copy of its page tables or memory is made), and PID 1 is then `sandbox-init`, a
//! freestanding program of a few pages: its cmdline, environment, mappings and memory hold
//! nothing of the host, with `CAP_SYS_PTRACE` kept and Landlock off, and whatever the size
//! of the host's heap. From inside a sandbox, the host, its spawner thread and its reaper can
//! be neither seen, reached nor signalled; and a SIGKILLed host, the CLI or a library host,
//! leaves nothing behind within 2 s, with no later start.
#![allow(clippy::await_holding_lock)] // serial(): one test at a time, each on its own runtime

mod common;
use common::*;

use sandbox_runner::{AttachedRunner, Profile, Runner, SandboxRunner};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

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

// ---------------------------------------------------------------------------------------
// The spawner, the reaper and the host, seen from inside a sandbox
// ---------------------------------------------------------------------------------------

/// The thread of process `pid` that clones every sandbox (`sandbox-spawner`), if it exists.
fn spawner_tid(pid: i32) -> Option<i32> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .ok()?
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        .find(|tid| {
            std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/comm"))
                .is_ok_and(|c| c.trim_end() == "sandbox-spawner")
        })
}

/// The inodes of the sockets process `pid` holds open.
fn socket_inodes(pid: i32) -> Vec<u32> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| {
            d.flatten()
                .filter_map(|e| {
                    let l = std::fs::read_link(e.path()).ok()?;
                    l.to_str()?
                        .strip_prefix("socket:[")?
                        .strip_suffix(']')?
                        .parse()
                        .ok()
                })
                .collect()
        })
        .unwrap_or_default()
}

/// A unix socket of this network namespace, as `ss -x` sees it (sock_diag).
#[derive(Debug)]
struct UnixSocket {
    /// The inode of its peer (0 for none).
    peer: u32,
    /// The address it is bound to (a path, or `\0` and an abstract name), if any.
    name: Option<Vec<u8>>,
}

/// Every unix socket of this network namespace, by inode, from `NETLINK_SOCK_DIAG`.
fn unix_sockets() -> std::collections::HashMap<u32, UnixSocket> {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    const SOCK_DIAG_BY_FAMILY: u16 = 20;
    const UDIAG_SHOW_NAME: u32 = 0x1;
    const UDIAG_SHOW_PEER: u32 = 0x4;
    const UNIX_DIAG_NAME: u16 = 0;
    const UNIX_DIAG_PEER: u16 = 2;
    /// `struct nlmsghdr` followed by `struct unix_diag_req`.
    #[repr(C)]
    struct Request {
        nlh: libc::nlmsghdr,
        family: u8,
        protocol: u8,
        pad: u16,
        states: u32,
        ino: u32,
        show: u32,
        cookie: [u32; 2],
    }
    fn u16_at(b: &[u8], at: usize) -> u16 {
        u16::from_ne_bytes(b[at..at + 2].try_into().unwrap())
    }
    fn u32_at(b: &[u8], at: usize) -> u32 {
        u32::from_ne_bytes(b[at..at + 4].try_into().unwrap())
    }
    // SAFETY: plain socket call; the fd is owned at once.
    let fd = unsafe {
        libc::socket(
            libc::AF_NETLINK,
            libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
            libc::NETLINK_SOCK_DIAG,
        )
    };
    assert!(fd >= 0, "sock_diag: {}", std::io::Error::last_os_error());
    // SAFETY: a fresh fd of ours.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let req = Request {
        nlh: libc::nlmsghdr {
            nlmsg_len: std::mem::size_of::<Request>() as u32,
            nlmsg_type: SOCK_DIAG_BY_FAMILY,
            nlmsg_flags: (libc::NLM_F_REQUEST | libc::NLM_F_DUMP) as u16,
            nlmsg_seq: 1,
            nlmsg_pid: 0,
        },
        family: libc::AF_UNIX as u8,
        protocol: 0,
        pad: 0,
        states: !0,
        ino: 0,
        show: UDIAG_SHOW_NAME | UDIAG_SHOW_PEER,
        cookie: [!0; 2],
    };
    // SAFETY: sends the request struct, which lives across the call.
    let sent = unsafe {
        libc::send(
            fd.as_raw_fd(),
            (&req as *const Request).cast(),
            std::mem::size_of::<Request>(),
            0,
        )
    };
    assert_eq!(sent, std::mem::size_of::<Request>() as isize);
    let mut out = std::collections::HashMap::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        // SAFETY: receives into a live buffer of that size.
        let n = unsafe { libc::recv(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        assert!(n > 0, "sock_diag: {}", std::io::Error::last_os_error());
        let b = &buf[..n as usize];
        let mut off = 0;
        while off + 16 <= b.len() {
            let len = u32_at(b, off) as usize;
            match u16_at(b, off + 4) as libc::c_int {
                libc::NLMSG_DONE => return out,
                libc::NLMSG_ERROR => panic!("sock_diag: error {}", u32_at(b, off + 16) as i32),
                _ => {}
            }
            // struct unix_diag_msg (16 bytes), then the attributes.
            let msg = &b[off + 16..off + len];
            let ino = u32_at(msg, 4);
            let mut sock = UnixSocket {
                peer: 0,
                name: None,
            };
            let mut at = 16;
            while at + 4 <= msg.len() {
                let alen = u16_at(msg, at) as usize;
                if alen < 4 {
                    break;
                }
                let data = &msg[at + 4..at + alen];
                match u16_at(msg, at + 2) {
                    UNIX_DIAG_PEER => sock.peer = u32_at(data, 0),
                    UNIX_DIAG_NAME => sock.name = Some(data.to_vec()),
                    _ => {}
                }
                at += (alen + 3) & !3;
            }
            out.insert(ino, sock);
            off += (len + 3) & !3;
        }
    }
}

/// The reaper of host process `host`: the `sandbox-reaper` process holding the other end of
/// one of the host's sockets, as (its pid, the host's end, the reaper's end).
fn reaper_of(host: i32) -> Option<(i32, u32, u32)> {
    let socks = unix_sockets();
    let mine = socket_inodes(host);
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        if !std::fs::read_to_string(format!("/proc/{pid}/comm"))
            .is_ok_and(|c| c.trim_end() == "sandbox-reaper")
            || !running(pid)
        {
            continue;
        }
        for ino in socket_inodes(pid) {
            if let Some(s) = socks.get(&ino).filter(|s| mine.contains(&s.peer)) {
                return Some((pid, s.peer, ino));
            }
        }
    }
    None
}

/// A probe, run inside the sandbox, that tries every way to reach the host, its spawner
/// thread and its reaper (host pids in argv: another PID namespace's numbers), and to kill
/// every process it can see. Prints `REFUSED what ERRNO` or `ALLOWED what` per attempt,
/// `ATTEMPTS n`, and `SURVIVED` last, when its init outlived all of it. It does nothing
/// unless it runs in a PID namespace of its own (a probe that killed `-1` on the host would
/// take the machine down): it then says `NOT-ISOLATED`.
const REACH: &str = r#"
import ctypes, errno, os, signal, socket, sys, time
host, spawner, reaper = (int(x) for x in sys.argv[1:4])
host_ns, host_end, reaper_end = sys.argv[4], int(sys.argv[5]), int(sys.argv[6])
me = os.getpid()
if os.readlink('/proc/self/ns/pid') == host_ns or me > 16:
    print('NOT-ISOLATED', me, flush=True)
    sys.exit(3)
libc = ctypes.CDLL(None, use_errno=True)
attempts = 0
def c(r):
    if r == -1:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))
    return r
def attempt(what, f):
    global attempts
    attempts += 1
    try:
        r = f()
    except OSError as e:
        print('REFUSED', what, errno.errorcode.get(e.errno, e.errno), flush=True)
        return
    if isinstance(r, int) and what.startswith('pidfd_open'):
        os.close(r)
    print('ALLOWED', what, repr(r)[:80], flush=True)
def read(path):
    with open(path, 'rb') as f:
        return f.read(64)
class iovec(ctypes.Structure):
    _fields_ = [('base', ctypes.c_void_p), ('len', ctypes.c_size_t)]
buf = ctypes.create_string_buffer(64)
local = iovec(ctypes.cast(buf, ctypes.c_void_p), 64)
libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p]
libc.process_vm_readv.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_ulong,
                                  ctypes.c_void_p, ctypes.c_ulong, ctypes.c_ulong]
visible = sorted(int(p) for p in os.listdir('/proc') if p.isdigit())
print('VISIBLE', visible, flush=True)
for who, pid in (('host', host), ('spawner', spawner), ('reaper', reaper)):
    if pid in visible:
        print('ALLOWED visible', who, pid, flush=True)
    attempt('kill0 %s' % who, lambda: os.kill(pid, 0))
    attempt('kill %s' % who, lambda: os.kill(pid, signal.SIGKILL))
    attempt('killpg %s' % who, lambda: os.killpg(pid, signal.SIGKILL))
    attempt('tgkill %s' % who, lambda: c(libc.tgkill(host, pid, signal.SIGKILL)))
    attempt('sigqueue %s' % who, lambda: c(libc.sigqueue(pid, signal.SIGKILL, ctypes.c_void_p(0))))
    attempt('pidfd_open %s' % who, lambda: os.pidfd_open(pid))
    attempt('ptrace_attach %s' % who, lambda: c(libc.ptrace(16, pid, None, None)))
    attempt('ptrace_seize %s' % who, lambda: c(libc.ptrace(0x4206, pid, None, None)))
    remote = iovec(0x400000, 64)
    attempt('process_vm_readv %s' % who, lambda: c(libc.process_vm_readv(
        pid, ctypes.addressof(local), 1, ctypes.addressof(remote), 1, 0)))
    attempt('setpriority %s' % who, lambda: os.setpriority(os.PRIO_PROCESS, pid, 19))
    attempt('getpgid %s' % who, lambda: os.getpgid(pid))
    for f in ('cmdline', 'environ', 'status', 'mem', 'maps', 'stat'):
        attempt('open /proc/%s/%s' % (who, f), lambda: read('/proc/%d/%s' % (pid, f)))
    attempt('list /proc/%s/fd' % who, lambda: os.listdir('/proc/%d/fd' % pid))
    attempt('readlink /proc/%s/exe' % who, lambda: os.readlink('/proc/%d/exe' % pid))
    attempt('list /proc/%s/root' % who, lambda: os.listdir('/proc/%d/root/' % pid))
    attempt('open /proc/%s/task/spawner' % who,
            lambda: read('/proc/%d/task/%d/comm' % (pid, spawner)))
    for fd in range(0, 8):
        attempt('open /proc/%s/fd/%d' % (who, fd), lambda: read('/proc/%d/fd/%d' % (pid, fd)))
# The reaper's socket: an unnamed socketpair in the host's network namespace. Nothing of
# it may show in this one, no socket held by a process here may be it, and every socket
# with a name here is tried.
named = []
with open('/proc/net/unix') as f:
    for line in f.read().splitlines()[1:]:
        cols = line.split()
        if int(cols[6]) in (host_end, reaper_end):
            print('ALLOWED listed socket', cols[6], flush=True)
        if len(cols) > 7:
            named.append(cols[7])
for pid in visible:
    try:
        links = [os.readlink('/proc/%d/fd/%s' % (pid, fd)) for fd in os.listdir('/proc/%d/fd' % pid)]
    except OSError:
        continue
    for l in links:
        if l in ('socket:[%d]' % host_end, 'socket:[%d]' % reaper_end):
            print('ALLOWED held socket', pid, l, flush=True)
for name in named:
    addr = '\0' + name[1:] if name.startswith('@') else name
    for kind in (socket.SOCK_STREAM, socket.SOCK_SEQPACKET, socket.SOCK_DGRAM):
        s = socket.socket(socket.AF_UNIX, kind)
        attempt('connect %r %d' % (name, kind), lambda: s.connect(addr))
        s.close()
print('ATTEMPTS', attempts, flush=True)
# Then every process in sight, and everything at once.
for pid in visible:
    if pid != me:
        try:
            os.kill(pid, signal.SIGKILL)
            print('SIGNALLED', pid, flush=True)
        except OSError as e:
            print('NOT-SIGNALLED', pid, errno.errorcode.get(e.errno, e.errno), flush=True)
try:
    os.kill(-1, signal.SIGKILL)
    print('SIGNALLED -1', flush=True)
except OSError as e:
    print('NOT-SIGNALLED -1', errno.errorcode.get(e.errno, e.errno), flush=True)
# Had the init died, the kernel would kill this process too before this line.
time.sleep(0.3)
print('SURVIVED', flush=True)
"#;

/// Runs [`REACH`] in a sandbox of `profile`, then checks that every attempt was refused
/// (with `ESRCH` or `ENOENT` only, i.e. by the namespaces, when `by_namespaces`), that the
/// sandbox's init survived, and that the spawner thread and the reaper are the same, alive,
/// and still start and guard new sandboxes.
async fn spawner_unreachable_from(label: &str, profile: Profile, by_namespaces: bool) {
    // The spawner thread and the reaper exist once this process has started a sandbox.
    let mut r = SandboxRunner::new(profile.clone(), "/bin/true", Vec::<String>::new()).unwrap();
    r.start().await.unwrap();
    assert!(r.wait().await.unwrap().success(), "{label}");
    drop(r);
    let host = std::process::id() as i32;
    let spawner = spawner_tid(host).expect("no sandbox-spawner thread");
    let (reaper, host_end, reaper_end) = reaper_of(host).expect("no reaper for this host");
    let reaper_start = sandbox_runner::state::start_time(reaper).unwrap();
    // Its socket is unnamed: no path and no abstract name leads to it.
    let socks = unix_sockets();
    for ino in [host_end, reaper_end] {
        assert_eq!(
            socks[&ino].name, None,
            "{label}: reaper socket {ino} has a name"
        );
    }
    let host_ns = std::fs::read_link("/proc/self/ns/pid").unwrap();
    let args = [
        "-c".to_owned(),
        REACH.to_owned(),
        host.to_string(),
        spawner.to_string(),
        reaper.to_string(),
        host_ns.to_string_lossy().into_owned(),
        host_end.to_string(),
        reaper_end.to_string(),
    ];
    let mut r = SandboxRunner::new(profile.clone(), "/usr/bin/python3", args).unwrap();
    r.start().await.unwrap();
    let mut out = String::new();
    r.stdout().unwrap().read_to_string(&mut out).await.unwrap();
    let mut err = String::new();
    r.stderr().unwrap().read_to_string(&mut err).await.unwrap();
    let st = r.wait().await.unwrap();
    drop(r);
    assert!(st.success(), "{label}: {st}\n{out}\n{err}");
    assert!(!out.contains("NOT-ISOLATED"), "{label}:\n{out}");
    assert!(
        !out.contains("ALLOWED"),
        "{label}: reached the host:\n{out}"
    );
    assert!(out.contains("SURVIVED"), "{label}: the init died:\n{out}");
    let attempts: usize = out
        .lines()
        .find_map(|l| l.strip_prefix("ATTEMPTS "))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{label}: the probe did not finish:\n{out}\n{err}"));
    let refused: Vec<&str> = out.lines().filter(|l| l.starts_with("REFUSED ")).collect();
    assert_eq!(refused.len(), attempts, "{label}:\n{out}");
    assert!(
        attempts >= 3 * 29,
        "{label}: only {attempts} attempts:\n{out}"
    );
    if by_namespaces {
        // With no seccomp filter, no Landlock and the capabilities kept, only the PID and
        // mount namespaces stand between the probe and the host: the pids do not exist.
        let other: Vec<&&str> = refused
            .iter()
            .filter(|l| !l.starts_with("REFUSED connect "))
            .filter(|l| !l.ends_with(" ESRCH") && !l.ends_with(" ENOENT"))
            .collect();
        assert!(other.is_empty(), "{label}: refused otherwise: {other:?}");
    }
    // The same spawner thread and the same reaper, alive and still this host's.
    assert_eq!(spawner_tid(host), Some(spawner), "{label}: spawner thread");
    assert!(running(reaper), "{label}: the reaper {reaper} died");
    assert_eq!(
        sandbox_runner::state::start_time(reaper),
        Some(reaper_start),
        "{label}: reaper"
    );
    assert_eq!(
        reaper_of(host),
        Some((reaper, host_end, reaper_end)),
        "{label}: the reaper lost its socket"
    );
    // And a new sandbox starts.
    let mut r = SandboxRunner::new(profile, "/bin/sh", ["-c", "echo again"]).unwrap();
    r.start().await.unwrap();
    let mut again = String::new();
    r.stdout()
        .unwrap()
        .read_to_string(&mut again)
        .await
        .unwrap();
    assert!(r.wait().await.unwrap().success(), "{label}");
    assert_eq!(again, "again\n", "{label}");
    println!(
        "{label}: {attempts} attempts refused, spawner {spawner} and reaper {reaper} unharmed"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_spawner_and_reaper_cannot_be_reached_or_signalled_from_inside() {
    let _g = serial();
    if !privileged() {
        return;
    }
    let before = HostState::take();
    spawner_unreachable_from("default", Profile::builtin("default").unwrap(), false).await;
    // CAP_SYS_PTRACE and CAP_KILL kept, Landlock off.
    let caps = "extends = \"default\"\n\
                keep_capabilities = [\"CAP_SYS_PTRACE\", \"CAP_KILL\"]\n\
                [landlock]\nmode = \"off\"\n";
    spawner_unreachable_from(
        "ptrace+kill, no landlock",
        Profile::from_toml_str(caps, "test").unwrap(),
        false,
    )
    .await;
    // And with no seccomp filter either: the namespaces alone.
    let bare = format!("{caps}[seccomp]\nenabled = false\n");
    spawner_unreachable_from(
        "ptrace+kill, no landlock, no seccomp",
        Profile::from_toml_str(&bare, "test").unwrap(),
        true,
    )
    .await;
    before.assert_unchanged();
}

// ---------------------------------------------------------------------------------------
// A library host SIGKILLed
// ---------------------------------------------------------------------------------------

/// Set in the environment of this test binary when it is re-run as a library host.
const LIBRARY_HOST: &str = "SANDBOX_TEST_LIBRARY_HOST";

/// The sandboxes the library host starts: two with the default profile and one with the
/// go-plugin profile (a state directory holding the socket directory, which the plugin fills
/// with a socket and a small tree). Each prints one line once it runs.
fn library_host_sandboxes() -> Vec<(Profile, &'static str, Vec<&'static str>)> {
    let sh = vec!["-c", "echo up; exec sleep 100"];
    let default = || Profile::builtin("default").unwrap();
    vec![
        (default(), "/bin/sh", sh.clone()),
        (default(), "/bin/sh", sh),
        (
            Profile::builtin("go-plugin").unwrap(),
            "/usr/bin/python3",
            vec![
                "-c",
                "import os, socket, time\n\
                 d = os.environ['PLUGIN_UNIX_SOCKET_DIR']\n\
                 s = socket.socket(socket.AF_UNIX); s.bind(d + '/p.sock'); s.listen()\n\
                 os.makedirs(d + '/a/b/c'); open(d + '/a/b/c/f', 'w').write('x')\n\
                 print('up', flush=True)\n\
                 time.sleep(100)",
            ],
        ),
    ]
}

/// Not a test of its own: the library host of
/// [`a_sigkilled_library_host_leaves_nothing_within_two_seconds`], which re-runs this test
/// binary with [`LIBRARY_HOST`] set and only this test selected. It starts the sandboxes of
/// [`library_host_sandboxes`], prints `SANDBOX <id> <init pid>` for each once its plugin
/// runs, then `READY`, and waits to be SIGKILLed. Without [`LIBRARY_HOST`] it does nothing.
#[test]
fn library_host_entry_for_the_sigkill_test() {
    if std::env::var_os(LIBRARY_HOST).is_none() {
        return;
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let mut alive = Vec::new();
        for (profile, program, args) in library_host_sandboxes() {
            let mut r = SandboxRunner::new(profile, program, args).unwrap();
            r.start().await.unwrap();
            let mut line = String::new();
            BufReader::new(r.stdout().unwrap())
                .read_line(&mut line)
                .await
                .unwrap();
            assert_eq!(line, "up\n");
            println!("SANDBOX {} {}", r.id(), r.init_pid().unwrap());
            alive.push(r);
        }
        println!("READY");
        std::future::pending::<()>().await;
    });
}

/// A child process SIGKILLed and reaped when dropped, so that a failing test leaves no host
/// running behind it.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A host process that uses the library, SIGKILLed with three sandboxes running: within
/// 2 s, with no later start and no `check --cleanup`, every process of every sandbox is gone,
/// and so are their cgroups (below this process's own cgroups, in every hierarchy), their
/// owner records, their state and socket directories, and the host's reaper itself.
#[test]
fn a_sigkilled_library_host_leaves_nothing_within_two_seconds() {
    let _g = serial();
    if !privileged() {
        return;
    }
    let before = HostState::take();
    let records = sandbox_runner::cgroup::records_dir();
    let state = sandbox_runner::state::state_root();
    let mut host = KillOnDrop(
        std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "library_host_entry_for_the_sigkill_test",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(LIBRARY_HOST, "1")
            .env_remove("PLUGIN_UNIX_SOCKET_DIR")
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let host_pid = host.0.id() as i32;
    let mut ids = Vec::new();
    let mut inits = Vec::new();
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(host.0.stdout.take().unwrap()));
    for line in lines.by_ref() {
        let line = line.unwrap();
        // libtest may have printed the test's name on the same line first.
        if line.ends_with("READY") {
            break;
        }
        if let Some((_, rest)) = line.split_once("SANDBOX ") {
            let (id, pid) = rest.split_once(' ').unwrap();
            ids.push(id.to_owned());
            inits.push(pid.parse::<i32>().unwrap());
        }
    }
    assert_eq!(
        ids.len(),
        library_host_sandboxes().len(),
        "the library host did not start its sandboxes: {:?}",
        host.0.try_wait()
    );
    // Everything it had, to be gone afterwards: every process of every sandbox, their
    // cgroups, owner records and state directories, and the reaper.
    let procs: std::collections::BTreeSet<i32> =
        inits.iter().flat_map(|&p| pids_in_pidns_of(p)).collect();
    assert!(procs.len() >= 2 * ids.len(), "{procs:?}");
    let (reaper, _, _) = reaper_of(host_pid).expect("the library host has no reaper");
    let named = |dirs: &std::collections::BTreeSet<std::path::PathBuf>| -> Vec<std::path::PathBuf> {
        dirs.iter()
            .filter(|d| {
                d.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| ids.iter().any(|id| n.starts_with(id.as_str())))
            })
            .cloned()
            .collect()
    };
    let left = || {
        let mut left: Vec<String> = Vec::new();
        left.extend(
            procs
                .iter()
                .filter(|&&p| alive(p))
                .map(|p| format!("process {p}")),
        );
        if alive(reaper) {
            left.push(format!("reaper {reaper}"));
        }
        let cgroups = own_cgroup_dirs();
        let files: std::collections::BTreeSet<std::path::PathBuf> = entries(&records)
            .into_iter()
            .map(|n| records.join(n))
            .chain(entries(&state).into_iter().map(|n| state.join(n)))
            .collect();
        left.extend(named(&cgroups).iter().map(|d| d.display().to_string()));
        left.extend(named(&files).iter().map(|d| d.display().to_string()));
        left
    };
    // It really had something to leave: a cgroup in each limited hierarchy and a record per
    // sandbox, and the go-plugin sandbox's state directory with its socket directory.
    let had = left();
    for id in &ids {
        assert!(
            entries(&records).contains(std::ffi::OsStr::new(&format!("{id}.json"))),
            "no owner record for {id}: {had:?}"
        );
        assert!(
            named(&own_cgroup_dirs()).iter().any(|d| d.ends_with(id)),
            "no cgroup for {id}: {had:?}"
        );
    }
    let sock_dir = state.join(&ids[2]).join("s/sock");
    assert!(sock_dir.join("p.sock").exists(), "{had:?}");
    let _ = host.0.kill();
    host.0.wait().unwrap();
    let killed = Instant::now();
    let deadline = killed + Duration::from_secs(2);
    loop {
        let now = left();
        if now.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "2 s after the library host's SIGKILL, left: {now:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    println!(
        "{} sandboxes, {} processes, {} paths: nothing left {:?} after the SIGKILL",
        ids.len(),
        procs.len(),
        had.len() - procs.len() - 1,
        killed.elapsed()
    );
    drop(lines);
    before.assert_unchanged();
}

/// Run inside: the plugin's network namespace, whether `lo` carries a connection, and who
/// owns the namespace (`NS_GET_USERNS`: the owner's inode, or `EPERM` when the owner is an
/// ancestor of the plugin's user namespace, i.e. the host's); with `bind80`, whether it may
/// bind port 80. Then it waits for a line on stdin, so that sandboxes overlap.
const NETNS_PROBE: &str = r#"
import errno, fcntl, os, socket, sys
print('NET', os.readlink('/proc/self/ns/net'))
print('USER', os.stat('/proc/self/ns/user').st_ino)
s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen()
c = socket.create_connection(s.getsockname()); a, _ = s.accept(); c.sendall(b'x')
print('LO', a.recv(1).decode())
fd = os.open('/proc/self/ns/net', os.O_RDONLY)
try:
    print('OWNER', os.fstat(fcntl.ioctl(fd, 0xb701)).st_ino)
except OSError as e:
    print('OWNER', errno.errorcode[e.errno])
if 'bind80' in sys.argv:
    try:
        socket.socket().bind(('127.0.0.1', 80)); print('BIND80 ok')
    except OSError as e:
        print('BIND80', errno.errorcode[e.errno])
sys.stdout.flush()
sys.stdin.readline()
"#;

/// Starts the probe under `profile` and returns its runner (still running) and its report.
async fn netns_probe(profile: Profile, args: &[&str]) -> (SandboxRunner, Vec<String>) {
    let mut argv = vec!["-c", NETNS_PROBE];
    argv.extend_from_slice(args);
    let mut r = SandboxRunner::new(profile, "/usr/bin/python3", argv)
        .unwrap()
        .with_stdin(sandbox_runner::Stdio::Pipe);
    r.start().await.unwrap();
    let mut lines = BufReader::new(r.stdout().unwrap()).lines();
    let mut report = Vec::new();
    let want = if args.contains(&"bind80") { 5 } else { 4 };
    while report.len() < want {
        match tokio::time::timeout(Duration::from_secs(20), lines.next_line()).await {
            Ok(Ok(Some(l))) => report.push(l),
            other => panic!("probe ended early ({other:?}) after {report:?}"),
        }
    }
    (r, report)
}

fn field<'a>(report: &'a [String], key: &str) -> &'a str {
    report
        .iter()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no {key} in {report:?}"))
}

/// A root runner's sandboxes are cloned into network namespaces made ahead of their starts:
/// each serves one sandbox (three alive at once have three namespaces, none the host's),
/// comes with `lo` up, and belongs to the host's user namespace, over which the sandbox's
/// root has no capability. A plugin that keeps a capability checked against the
/// namespace's owner (here CAP_NET_BIND_SERVICE) gets a namespace its own user namespace
/// owns, as before, and may use it: it binds port 80.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn network_namespaces_made_ahead_serve_one_sandbox_each() {
    let _g = serial();
    if !privileged() {
        return;
    }
    let before = HostState::take();
    let host_net = std::fs::read_link("/proc/self/ns/net").unwrap();
    let host_net = host_net.to_str().unwrap();
    let mut running = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for _ in 0..3 {
        // Returns once the next namespace is made (the previous start took the last).
        tokio::task::spawn_blocking(SandboxRunner::prewarm)
            .await
            .unwrap();
        let (r, report) = netns_probe(Profile::builtin("default").unwrap(), &[]).await;
        let net = field(&report, "NET").to_string();
        assert_ne!(net, host_net, "{report:?}");
        assert!(
            seen.insert(net),
            "a network namespace served twice: {report:?}"
        );
        assert_eq!(field(&report, "LO"), "x", "{report:?}");
        assert_eq!(
            field(&report, "OWNER"),
            "EPERM",
            "not made ahead: {report:?}"
        );
        running.push(r);
    }
    let keep = Profile::from_toml_str(
        "extends = \"default\"\nkeep_capabilities = [\"CAP_NET_BIND_SERVICE\"]\n",
        "test",
    )
    .unwrap();
    let (r, report) = netns_probe(keep, &["bind80"]).await;
    assert!(seen.insert(field(&report, "NET").to_string()), "{report:?}");
    assert_eq!(field(&report, "LO"), "x", "{report:?}");
    assert_eq!(
        field(&report, "OWNER"),
        field(&report, "USER"),
        "{report:?}"
    );
    assert_eq!(field(&report, "BIND80"), "ok", "{report:?}");
    running.push(r);
    for mut r in running {
        r.take_stdin().unwrap().write_all(b"\n").await.unwrap();
        let st = r.wait().await.unwrap();
        assert!(st.success(), "{st}");
    }
    before.assert_unchanged();
}

/// Runs `script` with `sh -c` under `profile` and returns its stdout, once it exited 0.
async fn sandbox_output(profile: Profile, script: &str) -> String {
    let mut r = SandboxRunner::new(profile, "/bin/sh", ["-c", script]).unwrap();
    r.start().await.unwrap();
    let mut out = String::new();
    r.stdout().unwrap().read_to_string(&mut out).await.unwrap();
    let status = r.wait().await.unwrap();
    assert!(status.success(), "{status:?}: {out}");
    out
}

/// `FDSize` (the size of a process's fd table) from a `/proc/<pid>/status` text.
fn fd_size(status: &str) -> u64 {
    status
        .lines()
        .find_map(|l| l.strip_prefix("FDSize:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no FDSize in {status:?}"))
}

/// A host that holds thousands of fds gives its sandbox's init none of them, not even for
/// a moment: the init is cloned sharing the host's fd table and its first step copies only
/// the spawner's few low fds into a table of its own, so its table is small (with a copy of
/// the host's whole table, as before, PID 1 kept a table of the host's size for its whole
/// life, and every start copied and closed every fd of the host). The plugin still gets its
/// stdio and its pass fd, at its own number far up the table, and nothing else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_with_thousands_of_fds_gives_its_sandboxes_none_of_them() {
    let _g = serial();
    if !privileged() {
        return;
    }
    let before = HostState::take();
    // Start the spawner (and reserve its slots) with the host's table still small.
    tokio::task::spawn_blocking(SandboxRunner::prewarm)
        .await
        .unwrap();
    let (soft, hard) =
        nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE).unwrap();
    // Root may raise the hard limit too (the v2 guest's is 4096).
    let want = 6000;
    nix::sys::resource::setrlimit(
        nix::sys::resource::Resource::RLIMIT_NOFILE,
        soft.max(want),
        hard.max(want),
    )
    .unwrap();
    let held: Vec<_> = (0..1500).map(|_| nix::unistd::pipe().unwrap()).collect();
    let host = fd_size(&std::fs::read_to_string("/proc/self/status").unwrap());
    assert!(host >= 4096, "the host's table is small: FDSize {host}");
    let script = "grep FDSize /proc/1/status /proc/self/status; \
                  readlink /proc/self/fd/5000 || echo no-5000; ls /proc/self/fd | tr '\\n' ' '";
    let plain = sandbox_output(Profile::builtin("default").unwrap(), script).await;
    // A pass fd far up the table keeps its number; its neighbour is not passed.
    let f = std::fs::File::open("/etc/hostname").unwrap();
    let raw = std::os::fd::AsRawFd::as_raw_fd(&f);
    assert_eq!(unsafe { libc::dup2(raw, 5000) }, 5000);
    assert_eq!(unsafe { libc::dup2(raw, 5001) }, 5001);
    let mut profile = Profile::builtin("default").unwrap();
    profile.pass_fds = vec![sandbox_runner::profile::PassFd(5000)];
    let passing = sandbox_output(profile, script).await;
    unsafe { libc::close(5000) };
    unsafe { libc::close(5001) };
    drop(held);
    nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE, soft, hard).unwrap();
    let size = |out: &str, who: &str| {
        out.lines()
            .find_map(|l| l.strip_prefix(who))
            .map(fd_size)
            .unwrap_or_else(|| panic!("no {who} in {out:?}"))
    };
    let init = size(&plain, "/proc/1/status:");
    let plugin = size(&plain, "/proc/self/status:");
    assert!(
        init <= 256,
        "PID 1 has an fd table of {init} entries (the host's: {host}): {plain}"
    );
    assert!(
        plugin <= 256,
        "the plugin's fd table has {plugin} entries: {plain}"
    );
    // 0, 1, 2 and the directory ls reads.
    assert_eq!(
        plain.lines().last().unwrap_or_default().trim(),
        "0 1 2 3",
        "{plain}"
    );
    assert!(passing.lines().any(|l| l == "/etc/hostname"), "{passing}");
    assert_eq!(
        passing.lines().last().unwrap_or_default().trim(),
        "0 1 2 3 5000",
        "{passing}"
    );
    before.assert_unchanged();
}
