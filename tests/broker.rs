//! Brokered connect (`[sockets] broker`), as root: go-plugin's non-multiplexed GRPCBroker,
//! host to plugin. A test plugin written in Rust (this very binary, run as `broker plugin`)
//! serves its handshake socket; the host connects to it (as go-plugin's broker stream would)
//! and sends `dial PATH`: the plugin dials PATH with a nonblocking socket, as Go does, sends
//! `hello` and reports what happened. The host made PATH, a unix listener, after the sandbox
//! started, as `broker.AcceptAndServe` does: the exchange works for `plugin<digits>` in the
//! host's temp dir or PLUGIN_UNIX_SOCKET_DIR, and every other shape is refused without the
//! host listener ever being contacted.

mod common;
use common::*;

use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio as PStdio};
use std::time::{Duration, Instant};

use sandbox_runner::goplugin::start_and_handshake;
use sandbox_runner::{AddrTranslator, AttachedRunner, Profile, SandboxRunner};

const COOKIE_KEY: &str = "SANDBOX_TEST_COOKIE";
const COOKIE: &str = "c00kie-b40k";

// ---------------------------------------------------------------- the plugin side

/// Dials `path` as Go's `net.Dial("unix", path)` does (a nonblocking socket), sends a line
/// and returns the answer, or the error.
fn dial(path: &str) -> String {
    use rustix::net::{AddressFamily, SocketAddrUnix, SocketFlags, SocketType};
    let sock = match rustix::net::socket_with(
        AddressFamily::UNIX,
        SocketType::STREAM,
        SocketFlags::NONBLOCK | SocketFlags::CLOEXEC,
        None,
    ) {
        Ok(s) => s,
        Err(e) => return format!("err socket: {e}"),
    };
    let addr = match SocketAddrUnix::new(path) {
        Ok(a) => a,
        Err(e) => return format!("err address: {e}"),
    };
    if let Err(e) = rustix::net::connect(&sock, &addr) {
        return format!("err connect: {e}");
    }
    let mut s = UnixStream::from(sock);
    s.set_nonblocking(false).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    if let Err(e) = s.write_all(b"hello\n") {
        return format!("err write: {e}");
    }
    let mut line = String::new();
    match BufReader::new(s).read_line(&mut line) {
        Ok(_) => format!("ok {}", line.trim_end()),
        Err(e) => format!("err read: {e}"),
    }
}

/// The seccomp notification listeners this process holds.
fn seccomp_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter(|l| l.to_string_lossy().contains("seccomp"))
        .count()
}

fn plugin_main() -> i32 {
    if std::env::var(COOKIE_KEY).as_deref() != Ok(COOKIE) {
        eprintln!("This binary is a plugin. These are not meant to be executed directly.");
        return 1;
    }
    let dir = std::env::var("PLUGIN_UNIX_SOCKET_DIR").expect("PLUGIN_UNIX_SOCKET_DIR");
    let path = format!("{dir}/plugin-{}.sock", std::process::id());
    let l = UnixListener::bind(&path).unwrap();
    println!("1|1|unix|{path}|grpc");
    std::io::stdout().flush().unwrap();
    for conn in l.incoming() {
        let Ok(mut c) = conn else { continue };
        let mut cmd = String::new();
        BufReader::new(c.try_clone().unwrap())
            .read_line(&mut cmd)
            .unwrap();
        let cmd = cmd.trim_end();
        let reply = if let Some(p) = cmd.strip_prefix("dial ") {
            dial(p)
        } else if cmd == "serve" {
            // A broker server of the plugin's, as go-plugin makes it without multiplexing
            // (os.CreateTemp(PLUGIN_UNIX_SOCKET_DIR, "plugin")), announced by its path.
            let p = format!("{dir}/plugin{}7", std::process::id());
            let server = UnixListener::bind(&p).unwrap();
            std::thread::spawn(move || {
                if let Ok((mut c, _)) = server.accept() {
                    let _ = writeln!(c, "from the plugin's broker server");
                }
            });
            format!("ok {p}")
        } else if cmd == "fds" {
            format!("seccomp-fds {}", seccomp_fds())
        } else {
            format!("unknown {cmd}")
        };
        let _ = writeln!(c, "{reply}");
    }
    0
}

// ---------------------------------------------------------------- the host side

fn exe() -> PathBuf {
    std::env::current_exe().unwrap()
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// Sends one command to the plugin's handshake socket and returns its answer line.
fn ask(addr: &str, cmd: &str) -> String {
    let mut s = UnixStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    writeln!(s, "{cmd}").unwrap();
    let mut r = String::new();
    s.read_to_string(&mut r).unwrap();
    r.trim_end().to_string()
}

/// The host's environment for one case: TMPDIR a fresh directory of the test, and
/// PLUGIN_UNIX_SOCKET_DIR a fresh one or unset. Restored on drop.
struct HostEnv {
    tmp: tempfile::TempDir,
    sockdir: Option<tempfile::TempDir>,
    saved: Vec<(&'static str, Option<std::ffi::OsString>)>,
}

impl HostEnv {
    fn new(with_sockdir: bool) -> HostEnv {
        let saved = ["TMPDIR", "PLUGIN_UNIX_SOCKET_DIR"]
            .into_iter()
            .map(|k| (k, std::env::var_os(k)))
            .collect();
        let tmp = tempfile::Builder::new()
            .prefix("broker-tmp-")
            .tempdir_in("/var/tmp")
            .unwrap();
        std::env::set_var("TMPDIR", tmp.path());
        let sockdir = with_sockdir.then(|| {
            let d = tempfile::Builder::new()
                .prefix("broker-sockets-")
                .tempdir_in("/var/tmp")
                .unwrap();
            std::env::set_var("PLUGIN_UNIX_SOCKET_DIR", d.path());
            d
        });
        if !with_sockdir {
            std::env::remove_var("PLUGIN_UNIX_SOCKET_DIR");
        }
        HostEnv {
            tmp,
            sockdir,
            saved,
        }
    }

    fn tmp(&self) -> &Path {
        self.tmp.path()
    }
}

impl Drop for HostEnv {
    fn drop(&mut self) {
        for (k, v) in &self.saved {
            match v {
                Some(v) => std::env::set_var(k, v),
                None => std::env::remove_var(k),
            }
        }
    }
}

/// A unix listener of the host's, nonblocking, and whether anyone connected to it.
struct HostListener {
    path: PathBuf,
    listener: UnixListener,
}

impl HostListener {
    fn bind(path: &Path) -> HostListener {
        let listener = UnixListener::bind(path).unwrap();
        listener.set_nonblocking(true).unwrap();
        HostListener {
            path: path.to_path_buf(),
            listener,
        }
    }

    /// Answers one connection (`pong: LINE`) in a thread, for up to 20 s.
    fn serve_one(self) -> std::thread::JoinHandle<bool> {
        std::thread::spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                match self.listener.accept() {
                    Ok((mut c, _)) => {
                        c.set_nonblocking(false).unwrap();
                        let mut line = String::new();
                        BufReader::new(c.try_clone().unwrap())
                            .read_line(&mut line)
                            .unwrap();
                        write!(c, "pong: {line}").unwrap();
                        return true;
                    }
                    Err(_) if Instant::now() < deadline => {
                        std::thread::sleep(Duration::from_millis(10))
                    }
                    Err(_) => return false,
                }
            }
        })
    }

    fn was_contacted(&self) -> bool {
        self.listener.accept().is_ok()
    }
}

/// A name `plugin<digits>` as Go's `os.CreateTemp(dir, "plugin")` makes it.
fn broker_name() -> String {
    static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = N.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    format!("plugin{}{n}", std::process::id())
}

fn profile(broker: bool) -> Profile {
    let mut p = Profile::builtin("go-plugin").unwrap();
    assert!(
        p.sockets.broker,
        "the go-plugin profile turns the broker on"
    );
    p.sockets.broker = broker;
    p
}

/// Starts the plugin under `profile`, then runs `case` with the plugin's handshake address.
fn with_plugin(profile: Profile, case: impl FnOnce(&str, &SandboxRunner)) {
    std::env::set_var(COOKIE_KEY, COOKIE);
    let rt = rt();
    let (r, addr) = rt.block_on(async {
        let mut r = SandboxRunner::new(profile, exe(), ["plugin"]).unwrap();
        let c = start_and_handshake(&mut r, Duration::from_secs(20))
            .await
            .unwrap();
        (r, c.addr)
    });
    case(&addr, &r);
    rt.block_on(async {
        r.kill().await.unwrap();
    });
    drop(r);
}

/// The plugin dials a socket the host binds (with `prepare`) after the start and exchanges
/// a line with it.
fn exchange_works(with_sockdir: bool) {
    let before = HostState::take();
    let env = HostEnv::new(with_sockdir);
    let dir = match &env.sockdir {
        Some(d) => d.path().to_path_buf(),
        None => env.tmp().to_path_buf(),
    };
    with_plugin(profile(true), |addr, r| {
        let path = dir.join(broker_name());
        let server = HostListener::bind(&path).serve_one();
        // A library host translates its broker address for the plugin: unchanged, since
        // the plugin's connect to it is brokered.
        let (net, inside) = r.host_to_plugin("unix", path.to_str().unwrap()).unwrap();
        assert_eq!(
            (net.as_str(), inside.as_str()),
            ("unix", path.to_str().unwrap())
        );
        let other = dir.join("host-only.sock");
        assert!(
            r.host_to_plugin("unix", other.to_str().unwrap()).is_err(),
            "a host path that is not a broker socket was translated"
        );
        let reply = ask(addr, &format!("dial {inside}"));
        assert_eq!(reply, "ok pong: hello", "dialing {}", path.display());
        assert!(server.join().unwrap(), "the host listener saw the plugin");
        // The other way: the plugin's broker server, announced by the path it bound, which
        // the host dials as is (its socket directory is at the same path on both sides).
        let reply = ask(addr, "serve");
        let theirs = reply
            .strip_prefix("ok ")
            .unwrap_or_else(|| panic!("{reply}"));
        let mut c = UnixStream::connect(theirs).unwrap_or_else(|e| panic!("dial {theirs}: {e}"));
        let mut got = String::new();
        c.read_to_string(&mut got).unwrap();
        assert_eq!(got, "from the plugin's broker server\n");
    });
    drop(env);
    before.assert_unchanged();
}

fn tmpdir_broker_socket_is_connected() {
    exchange_works(false);
}

fn plugin_unix_socket_dir_broker_socket_is_connected() {
    exchange_works(true);
}

/// The plugin dials `dial` (a path made by `setup` after the start, which returns the host
/// listener that must never be contacted); the plugin must see an error.
fn refused(what: &str, broker: bool, setup: impl FnOnce(&HostEnv) -> (String, HostListener)) {
    let before = HostState::take();
    let env = HostEnv::new(false);
    with_plugin(profile(broker), |addr, _r| {
        let (dial, host) = setup(&env);
        let reply = ask(addr, &format!("dial {dial}"));
        eprintln!("{what}: {dial}: {reply}");
        assert!(
            reply.starts_with("err connect"),
            "{what}: the plugin's dial of {dial} gave {reply:?}"
        );
        assert!(
            !host.was_contacted(),
            "{what}: {dial} reached the host listener {}",
            host.path.display()
        );
    });
    drop(env);
    before.assert_unchanged();
}

fn refuses_a_name_that_is_not_plugin_digits() {
    refused("name", true, |env| {
        let h = HostListener::bind(&env.tmp().join("host.sock"));
        (h.path.display().to_string(), h)
    });
}

fn refuses_a_socket_made_before_the_start() {
    let before = HostState::take();
    let env = HostEnv::new(false);
    let path = env.tmp().join(broker_name());
    let host = HostListener::bind(&path);
    // A tick of the coarse clock the file systems stamp with.
    std::thread::sleep(Duration::from_millis(50));
    with_plugin(profile(true), |addr, _r| {
        let reply = ask(addr, &format!("dial {}", path.display()));
        assert!(reply.starts_with("err connect"), "{reply:?}");
        assert!(
            !host.was_contacted(),
            "a socket older than the sandbox was connected"
        );
    });
    drop(env);
    before.assert_unchanged();
}

fn refuses_a_socket_of_another_uid() {
    refused("owner", true, |env| {
        let h = HostListener::bind(&env.tmp().join(broker_name()));
        std::os::unix::fs::chown(&h.path, Some(12345), Some(12345)).unwrap();
        (h.path.display().to_string(), h)
    });
}

fn refuses_a_symlink_named_plugin_digits() {
    refused("symlink", true, |env| {
        let h = HostListener::bind(&env.tmp().join("host.sock"));
        let link = env.tmp().join(broker_name());
        std::os::unix::fs::symlink("host.sock", &link).unwrap();
        (link.display().to_string(), h)
    });
}

fn refuses_a_directory_that_is_not_allowed() {
    let other = tempfile::Builder::new()
        .prefix("broker-other-")
        .tempdir_in("/var/tmp")
        .unwrap();
    let other_path = other.path().to_path_buf();
    refused("directory", true, |_| {
        let h = HostListener::bind(&other_path.join(broker_name()));
        (h.path.display().to_string(), h)
    });
    // A subdirectory of the allowed one is not it either.
    refused("subdirectory", true, |env| {
        let sub = env.tmp().join("sub");
        std::fs::create_dir(&sub).unwrap();
        let h = HostListener::bind(&sub.join(broker_name()));
        (h.path.display().to_string(), h)
    });
}

fn refuses_dotdot() {
    let other = tempfile::Builder::new()
        .prefix("broker-other-")
        .tempdir_in("/var/tmp")
        .unwrap();
    let other_path = other.path().to_path_buf();
    refused("..", true, |env| {
        let name = broker_name();
        let h = HostListener::bind(&env.tmp().join(&name));
        let tmp_name = env.tmp().file_name().unwrap().to_str().unwrap().to_string();
        let dial = format!("{}/../{tmp_name}/{name}", other_path.display());
        (dial, h)
    });
}

fn without_the_key_a_host_broker_socket_is_unreachable() {
    refused("broker off", false, |env| {
        let h = HostListener::bind(&env.tmp().join(broker_name()));
        (h.path.display().to_string(), h)
    });
}

fn the_plugin_holds_no_seccomp_listener() {
    let before = HostState::take();
    let env = HostEnv::new(false);
    with_plugin(profile(true), |addr, _r| {
        assert_eq!(ask(addr, "fds"), "seccomp-fds 0");
        // Control: the scan sees a listener where there is one.
        seccomp_listener_control();
    });
    drop(env);
    before.assert_unchanged();
}

/// Control for the fd scan: a process that keeps its listener shows it.
fn seccomp_listener_control() {
    let out = Command::new(exe())
        .arg("listener-control")
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        "seccomp-fds 1",
        "{out:?}"
    );
}

/// In a process of its own (the filter stays on it): installs a notifying filter, keeps the
/// listener and counts.
fn listener_control_main() -> i32 {
    // SAFETY: plain system calls on stack structs; the filter allows every call but one
    // this process never makes.
    unsafe {
        libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0);
        let prog_insns = [
            libc::sock_filter {
                code: 0x20,
                jt: 0,
                jf: 0,
                k: 0,
            },
            libc::sock_filter {
                code: 0x15,
                jt: 0,
                jf: 1,
                k: libc::SYS_acct as u32,
            },
            libc::sock_filter {
                code: 0x06,
                jt: 0,
                jf: 0,
                k: libc::SECCOMP_RET_USER_NOTIF,
            },
            libc::sock_filter {
                code: 0x06,
                jt: 0,
                jf: 0,
                k: libc::SECCOMP_RET_ALLOW,
            },
        ];
        let prog = libc::sock_fprog {
            len: prog_insns.len() as u16,
            filter: prog_insns.as_ptr() as *mut _,
        };
        let fd = libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER as libc::c_ulong,
            libc::SECCOMP_FILTER_FLAG_NEW_LISTENER,
            &prog as *const libc::sock_fprog,
        );
        assert!(fd >= 0, "{}", std::io::Error::last_os_error());
        let _keep = OwnedFd::from_raw_fd(fd as i32);
        println!("seccomp-fds {}", seccomp_fds());
        let _ = _keep.as_raw_fd();
    }
    0
}

fn cli_wrapper_brokers_a_tmpdir_socket() {
    let before = HostState::take();
    let env = HostEnv::new(false);
    let mut child = Command::new(bin())
        .args(["--profile", "go-plugin", "--"])
        .arg(exe())
        .arg("plugin")
        .env(COOKIE_KEY, COOKIE)
        .env("PLUGIN_PROTOCOL_VERSIONS", "1")
        .stdin(PStdio::null())
        .stdout(PStdio::piped())
        .stderr(PStdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut hs = String::new();
    out.read_line(&mut hs).unwrap();
    let addr = hs.trim_end().split('|').nth(3).unwrap().to_string();
    let path = env.tmp().join(broker_name());
    let server = HostListener::bind(&path).serve_one();
    let reply = ask(&addr, &format!("dial {}", path.display()));
    assert_eq!(reply, "ok pong: hello", "through the CLI");
    assert!(server.join().unwrap());
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let _ = child.wait().unwrap();
    drop(env);
    before.assert_unchanged();
}

const NOBODY: u32 = 65534;

/// Rootless mode: the host is an unprivileged user (65534 through `setpriv`), the owner of
/// the sandbox's user namespace; `pidfd_getfd` and `process_vm_readv` on the plugin are
/// allowed to it, and the exchange works as for root.
fn rootless_host_brokers_too() {
    use std::os::unix::fs::PermissionsExt;
    let before = HostState::take();
    let dir = tempfile::Builder::new()
        .prefix("bk")
        .tempdir_in("/tmp")
        .unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let copy = dir.path().join("broker");
    std::fs::copy(exe(), &copy).unwrap();
    std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o755)).unwrap();
    for d in ["t", "x"] {
        let p = dir.path().join(d);
        std::fs::create_dir(&p).unwrap();
        std::os::unix::fs::chown(&p, Some(NOBODY), Some(NOBODY)).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o700)).unwrap();
    }
    let id = NOBODY.to_string();
    let out = Command::new("setpriv")
        .args(["--reuid", &id, "--regid", &id, "--clear-groups", "--"])
        .arg(&copy)
        .arg("rootless-host")
        .current_dir(dir.path())
        .env("TMPDIR", dir.path().join("t"))
        // Short: the socket directory's paths must fit a unix socket address.
        .env("XDG_RUNTIME_DIR", dir.path().join("x"))
        .env_remove("PLUGIN_UNIX_SOCKET_DIR")
        .env_remove("SANDBOX_RUNNER_STATE_DIR")
        .env_remove("SANDBOX_RUNNER_RUN_DIR")
        .stdin(PStdio::null())
        .output()
        .expect("setpriv (util-linux) must be installed");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("reply: ok pong: hello"),
        "rootless host: {out:?}"
    );
    before.assert_unchanged();
}

/// The unprivileged host of [`rootless_host_brokers_too`].
fn rootless_host_main() -> i32 {
    let mut p = profile(true);
    // No cgroup without a delegated subtree; the user namespace is the caller's.
    p.limits = Default::default();
    p.rootless = sandbox_runner::profile::RootlessMode::Auto;
    let tmp = PathBuf::from(std::env::var_os("TMPDIR").unwrap());
    with_plugin(p, |addr, _r| {
        let path = tmp.join(broker_name());
        let server = HostListener::bind(&path).serve_one();
        let reply = ask(addr, &format!("dial {}", path.display()));
        println!("reply: {reply}");
        println!("served: {}", server.join().unwrap());
    });
    0
}

// ---------------------------------------------------------------- a tiny harness

fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("plugin") => std::process::exit(plugin_main()),
        Some("listener-control") => std::process::exit(listener_control_main()),
        Some("rootless-host") => std::process::exit(rootless_host_main()),
        _ => {}
    }
    let tests: &[(&str, fn())] = &[
        (
            "tmpdir_broker_socket_is_connected",
            tmpdir_broker_socket_is_connected,
        ),
        (
            "plugin_unix_socket_dir_broker_socket_is_connected",
            plugin_unix_socket_dir_broker_socket_is_connected,
        ),
        (
            "refuses_a_name_that_is_not_plugin_digits",
            refuses_a_name_that_is_not_plugin_digits,
        ),
        (
            "refuses_a_socket_made_before_the_start",
            refuses_a_socket_made_before_the_start,
        ),
        (
            "refuses_a_socket_of_another_uid",
            refuses_a_socket_of_another_uid,
        ),
        (
            "refuses_a_symlink_named_plugin_digits",
            refuses_a_symlink_named_plugin_digits,
        ),
        (
            "refuses_a_directory_that_is_not_allowed",
            refuses_a_directory_that_is_not_allowed,
        ),
        ("refuses_dotdot", refuses_dotdot),
        (
            "without_the_key_a_host_broker_socket_is_unreachable",
            without_the_key_a_host_broker_socket_is_unreachable,
        ),
        (
            "the_plugin_holds_no_seccomp_listener",
            the_plugin_holds_no_seccomp_listener,
        ),
        (
            "cli_wrapper_brokers_a_tmpdir_socket",
            cli_wrapper_brokers_a_tmpdir_socket,
        ),
        ("rootless_host_brokers_too", rootless_host_brokers_too),
    ];
    run_tests(&args, tests);
}
