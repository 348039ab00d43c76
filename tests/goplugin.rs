//! End to end with the go-plugin convention, as root: a test plugin written in Rust (this
//! very binary, run as `goplugin plugin MODE`) creates its socket in PLUGIN_UNIX_SOCKET_DIR
//! (or $TMPDIR), prints the handshake line and answers `ping` on the socket. The host side
//! connects through the translated path: through the library, through the CLI wrapper, and
//! after reattaching from another process. Every refusal of the translation is exercised
//! with a plugin that tries it.

mod common;
use common::*;

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::process::{Command, Stdio as PStdio};
use std::time::{Duration, Instant};

use sandbox_runner::goplugin::start_and_handshake;
use sandbox_runner::{AddrTranslator, AttachedRunner, Profile, SandboxRunner};

const COOKIE_KEY: &str = "SANDBOX_TEST_COOKIE";
const COOKIE: &str = "c00kie-3f1a";

// ---------------------------------------------------------------- the plugin side

fn plugin_main(mode: &str, arg: Option<&str>) -> i32 {
    if std::env::var(COOKIE_KEY).as_deref() != Ok(COOKIE) {
        eprintln!("This binary is a plugin. These are not meant to be executed directly.");
        return 1;
    }
    let dir = match mode {
        "tmpdir" => std::env::var("TMPDIR").unwrap_or_else(|_| "/tmp".into()),
        _ => match std::env::var("PLUGIN_UNIX_SOCKET_DIR") {
            Ok(d) => d,
            Err(_) => {
                eprintln!("PLUGIN_UNIX_SOCKET_DIR is not set");
                return 2;
            }
        },
    };
    let out = std::io::stdout();
    let announce = |addr: &str| {
        let mut o = out.lock();
        writeln!(o, "1|1|unix|{addr}|grpc").unwrap();
        o.flush().unwrap();
    };
    match mode {
        // Write the hex-encoded bytes of `arg` to stdout, then: "raw" keeps running,
        // "raw-exit" exits, "raw-close" closes stdout and keeps running.
        "raw" | "raw-exit" | "raw-close" => {
            // "HEX*N": then N bytes 'A' and a newline (an argument is at most 128 KiB).
            let (hex, pad) = arg.unwrap().split_once('*').unwrap_or((arg.unwrap(), "0"));
            let mut bytes: Vec<u8> = (0..hex.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
                .collect();
            let pad: usize = pad.parse().unwrap();
            if pad > 0 {
                bytes.extend(std::iter::repeat(b'A').take(pad));
                bytes.push(b'\n');
            }
            let mut o = out.lock();
            o.write_all(&bytes).unwrap();
            o.flush().unwrap();
            drop(o);
            match mode {
                "raw-exit" => return 0,
                "raw-close" => unsafe {
                    libc::close(1);
                },
                _ => {}
            }
            std::thread::sleep(Duration::from_secs(1000));
            0
        }
        "silent" => {
            std::thread::sleep(Duration::from_secs(1000));
            0
        }
        "dotdot" => {
            announce(&format!("{dir}/../../tmp/host.sock"));
            std::thread::sleep(Duration::from_secs(1000));
            0
        }
        "symlink" => {
            let link = format!("{dir}/evil.sock");
            std::os::unix::fs::symlink(arg.unwrap(), &link).unwrap();
            announce(&link);
            std::thread::sleep(Duration::from_secs(1000));
            0
        }
        _ => {
            let path = format!("{dir}/plugin-{}.sock", std::process::id());
            let l = UnixListener::bind(&path).unwrap();
            announce(&path);
            if mode == "swap" {
                // Swap the socket for a symlink to a host socket right after announcing it.
                let tmp = format!("{dir}/swap.tmp");
                std::os::unix::fs::symlink(arg.unwrap(), &tmp).unwrap();
                std::fs::rename(&tmp, &path).unwrap();
            }
            println!("after-handshake line");
            eprintln!("stderr bytes");
            for conn in l.incoming() {
                let Ok(mut c) = conn else { continue };
                let mut line = String::new();
                BufReader::new(c.try_clone().unwrap())
                    .read_line(&mut line)
                    .unwrap();
                let _ = write!(c, "pong: {line}");
            }
            0
        }
    }
}

// ---------------------------------------------------------------- helpers

fn exe() -> PathBuf {
    std::env::current_exe().unwrap()
}

fn ping(addr: &str) -> String {
    let mut s = UnixStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    s.write_all(b"ping\n").unwrap();
    let mut r = String::new();
    s.read_to_string(&mut r).unwrap();
    r
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn runner(mode: &str, arg: Option<&str>) -> SandboxRunner {
    let mut args = vec!["plugin".to_string(), mode.to_string()];
    args.extend(arg.map(String::from));
    SandboxRunner::new(Profile::builtin("go-plugin").unwrap(), exe(), args).unwrap()
}

/// A socket only the host can see, and whether anyone connected to it.
struct HostOnly {
    _dir: tempfile::TempDir,
    path: PathBuf,
    listener: UnixListener,
}

impl HostOnly {
    fn new() -> HostOnly {
        let dir = tempfile::tempdir_in("/var/tmp").unwrap();
        let path = dir.path().join("host-only.sock");
        let listener = UnixListener::bind(&path).unwrap();
        listener.set_nonblocking(true).unwrap();
        HostOnly {
            _dir: dir,
            path,
            listener,
        }
    }

    fn was_contacted(&self) -> bool {
        self.listener.accept().is_ok()
    }
}

fn cli(args: &[&str], envs: &[(&str, &str)]) -> std::process::Child {
    let mut c = Command::new(bin());
    c.args(args)
        .env(COOKIE_KEY, COOKIE)
        .env("PLUGIN_PROTOCOL_VERSIONS", "1")
        .stdin(PStdio::null())
        .stdout(PStdio::piped())
        .stderr(PStdio::piped());
    for (k, v) in envs {
        c.env(k, v);
    }
    c.spawn().unwrap()
}

// ---------------------------------------------------------------- the tests

#[path = "common/gohost.rs"]
mod gohost;

/// What a go-plugin host does with the wrapper's stdout: reads the handshake as go-plugin
/// does and dials it. Dials only the two test listeners (never any other address).
fn go_host_dials(stdout: &[u8], host: &HostOnly, tcp: &std::net::TcpListener) {
    if let Some((net, addr)) = gohost::go_plugin_dial_target(stdout) {
        let addr = String::from_utf8_lossy(&addr).into_owned();
        let tcp_addr = tcp.local_addr().unwrap().to_string();
        match net.as_slice() {
            b"unix" if addr == host.path.to_str().unwrap() => {
                let _ = UnixStream::connect(&addr);
            }
            b"tcp" if addr == tcp_addr => {
                let _ = std::net::TcpStream::connect(&addr);
            }
            _ => {}
        }
    }
}

/// The child's output, or a failure naming `what` when it has not exited within `limit` (a
/// wrapper that forwarded a bypass keeps running with its plugin).
fn wait_within(child: std::process::Child, limit: Duration, what: &str) -> std::process::Output {
    let pid = child.id() as i32;
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flag = done.clone();
    let watchdog = std::thread::spawn(move || {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if flag.load(std::sync::atomic::Ordering::SeqCst) {
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
        true
    });
    let o = child.wait_with_output().unwrap();
    done.store(true, std::sync::atomic::Ordering::SeqCst);
    assert!(
        !watchdog.join().unwrap(),
        "{what:?}: the wrapper was still running after {limit:?} (it forwarded the line)"
    );
    o
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A hostile plugin's first line in every shape that used to slip past the rewrite (not
/// UTF-8 after the fourth '|', no newline before end of file, over the reader's limit), plus
/// the ones go-plugin trims: through the CLI wrapper and the library, nothing reaches the
/// host, the plugin is stopped, and the reason is given.
fn handshake_bypass_shapes_are_refused() {
    std::env::set_var(COOKIE_KEY, COOKIE);
    let host = HostOnly::new();
    let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    tcp.set_nonblocking(true).unwrap();
    let h = host.path.to_str().unwrap().to_owned();
    let t = tcp.local_addr().unwrap().to_string();
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "raw",
            [format!("1|1|unix|{h}|grpc|").as_bytes(), b"\xff\n"].concat(),
            "not valid UTF-8",
        ),
        (
            "raw",
            [format!("1|1|tcp|{t}|grpc|").as_bytes(), b"\xff\n"].concat(),
            "not valid UTF-8",
        ),
        (
            "raw-exit",
            format!("1|1|unix|{h}|grpc").into_bytes(),
            "no newline at end of file",
        ),
        (
            "raw-close",
            format!("1|1|unix|{h}|grpc").into_bytes(),
            "no newline at end of file",
        ),
        (
            "raw-exit",
            format!("1|1|tcp|{t}|grpc").into_bytes(),
            "no newline at end of file",
        ),
        (
            "raw",
            format!("1|1|unix|{h}|grpc|").into_bytes(),
            "longer than",
        ),
        (
            "raw",
            format!("1|1|tcp|{t}|grpc\n").into_bytes(),
            "cannot cross",
        ),
        (
            "raw",
            format!(" +1|1|unix|{h}|grpc\u{a0}\r\n").into_bytes(),
            "refused",
        ),
        (
            "raw",
            b"hello, not a handshake\n".to_vec(),
            "expected at least 4",
        ),
    ];
    let before = HostState::take();
    let p = exe();
    for (mode, line, why) in &cases {
        let shown = String::from_utf8_lossy(&line[..line.len().min(60)]).into_owned();
        // The over-long line: 70,000 bytes more on the same line.
        let arg = match *why {
            "longer than" => format!("{}*70000", hex(line)),
            _ => hex(line),
        };
        let child = cli(
            &[
                "--profile",
                "go-plugin",
                "--",
                p.to_str().unwrap(),
                "plugin",
                mode,
                &arg,
            ],
            &[],
        );
        let o = wait_within(child, Duration::from_secs(30), &shown);
        go_host_dials(&o.stdout, &host, &tcp);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(125), "{shown:?}: {err}");
        assert!(
            o.stdout.is_empty(),
            "{shown:?} reached the host: {:?}",
            o.stdout
        );
        assert!(
            err.contains("refusing the plugin's handshake"),
            "{shown:?}: {err}"
        );
        assert!(err.contains(why), "{shown:?}: expected {why:?} in {err}");
        rt().block_on(async {
            let mut r = runner(mode, Some(&arg));
            let e = start_and_handshake(&mut r, Duration::from_secs(20))
                .await
                .err()
                .unwrap_or_else(|| panic!("library passed {shown:?}"));
            assert!(e.error.contains(why), "{shown:?}: {e}");
        });
        assert!(
            !host.was_contacted(),
            "{shown:?} reached the host-only socket"
        );
        assert!(
            tcp.accept().is_err(),
            "{shown:?} reached the host-only TCP listener"
        );
    }
    before.assert_unchanged();
}

fn library_handshake_and_request() {
    std::env::set_var(COOKIE_KEY, COOKIE);
    let before = HostState::take();
    rt().block_on(async {
        let mut r = runner("normal", None);
        let c = start_and_handshake(&mut r, Duration::from_secs(20))
            .await
            .unwrap();
        assert_eq!(c.network, "unix");
        // The plugin's socket directory is at the same path inside as on the host.
        assert_eq!(
            c.handshake.addr().rsplit_once('/').unwrap().0,
            host_sock_dir(&r)
        );
        // The host gets a verified link, never the plugin's path.
        assert_ne!(c.addr, c.handshake.addr());
        let line = String::from_utf8(c.host_line.clone()).unwrap();
        assert_eq!(line, format!("1|1|unix|{}|grpc\n", c.addr));
        let addr = c.addr.clone();
        let reply = tokio::task::spawn_blocking(move || ping(&addr))
            .await
            .unwrap();
        assert_eq!(reply, "pong: ping\n");
        // host_to_plugin is the inverse for a socket the host made in the shared directory.
        let (n, inside) = r
            .host_to_plugin("unix", &format!("{}/broker-1", host_sock_dir(&r)))
            .unwrap();
        assert_eq!(
            (n.as_str(), inside.as_str()),
            ("unix", format!("{}/broker-1", host_sock_dir(&r)).as_str())
        );
        r.kill().await.unwrap();
        let state = sandbox_runner::state::dir_of(r.id());
        drop(r);
        assert!(!state.exists(), "state dir {} left behind", state.display());
    });
    before.assert_unchanged();
}

fn host_sock_dir(r: &SandboxRunner) -> String {
    sandbox_runner::state::dir_of(r.id())
        .join("s/sock")
        .display()
        .to_string()
}

/// Reads the wrapper's first stdout line, checks the rest is forwarded, pings, stops it.
fn drive_cli(mut child: std::process::Child) {
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut hs = String::new();
    out.read_line(&mut hs).unwrap();
    let parts: Vec<&str> = hs.trim_end().split('|').collect();
    assert_eq!(parts.len(), 5, "{hs}");
    assert_eq!(
        (parts[0], parts[1], parts[2], parts[4]),
        ("1", "1", "unix", "grpc"),
        "{hs}"
    );
    assert!(
        !parts[3].starts_with("/run/plugin-sockets"),
        "address not translated: {hs}"
    );
    assert_eq!(ping(parts[3]), "pong: ping\n");
    let mut next = String::new();
    out.read_line(&mut next).unwrap();
    assert_eq!(next, "after-handshake line\n");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let o = child.wait_with_output().unwrap();
    assert_eq!(
        o.status.code(),
        Some(143),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    assert!(String::from_utf8_lossy(&o.stderr).contains("stderr bytes\n"));
}

fn cli_wrapper_translates_the_handshake() {
    let before = HostState::take();
    let p = exe();
    drive_cli(cli(
        &[
            "--profile",
            "go-plugin",
            "--",
            p.to_str().unwrap(),
            "plugin",
            "normal",
        ],
        &[],
    ));
    before.assert_unchanged();
}

fn cli_wrapper_with_an_old_plugin_using_tmpdir() {
    // TMPDIR points into the socket directory only when a profile asks for it.
    let dir = tempfile::tempdir().unwrap();
    let profile = dir.path().join("old.toml");
    std::fs::write(
        &profile,
        "extends = \"go-plugin\"\n[sockets]\ntmpdir = true\n",
    )
    .unwrap();
    let before = HostState::take();
    let p = exe();
    drive_cli(cli(
        &[
            "--profile",
            profile.to_str().unwrap(),
            "--",
            p.to_str().unwrap(),
            "plugin",
            "tmpdir",
        ],
        &[("TMPDIR", "/somewhere/on/the/host")],
    ));
    before.assert_unchanged();
}

fn cli_wrapper_honours_the_hosts_socket_dir() {
    let dir = tempfile::tempdir_in("/var/tmp").unwrap();
    let d = dir.path().to_str().unwrap();
    let before = HostState::take();
    let p = exe();
    let child = cli(
        &[
            "--profile",
            "go-plugin",
            "--",
            p.to_str().unwrap(),
            "plugin",
            "normal",
        ],
        &[("PLUGIN_UNIX_SOCKET_DIR", d)],
    );
    drive_cli(child);
    before.assert_unchanged();
    // The host's directory stays (the host cleans it up); the sandbox's own in it (a tmpfs
    // holding its sockets and the verified links) goes.
    assert!(dir.path().exists());
    let leftovers: Vec<_> = std::fs::read_dir(dir.path()).unwrap().flatten().collect();
    assert!(
        leftovers.is_empty(),
        "left in the host's directory: {leftovers:?}"
    );
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    assert!(!mounts.contains(d), "a mount left under {d}");
}

fn refuses_a_symlink_to_a_host_socket() {
    std::env::set_var(COOKIE_KEY, COOKIE);
    let host = HostOnly::new();
    let before = HostState::take();
    rt().block_on(async {
        let mut r = runner("symlink", Some(host.path.to_str().unwrap()));
        let e = start_and_handshake(&mut r, Duration::from_secs(20))
            .await
            .err()
            .unwrap();
        assert!(e.error.contains("symbolic link"), "{e}");
        assert!(e.diagnose.contains("killed by"), "{e}");
    });
    before.assert_unchanged();
    assert!(!host.was_contacted());
    // Through the CLI wrapper: it stops the plugin and says why.
    let p = exe();
    let o = cli(
        &[
            "--profile",
            "go-plugin",
            "--",
            p.to_str().unwrap(),
            "plugin",
            "symlink",
            host.path.to_str().unwrap(),
        ],
        &[],
    )
    .wait_with_output()
    .unwrap();
    assert_eq!(o.status.code(), Some(125));
    assert!(String::from_utf8_lossy(&o.stderr).contains("refusing the plugin's handshake"));
    assert!(o.stdout.is_empty(), "the refused address reached the host");
    assert!(!host.was_contacted());
}

fn refuses_dotdot() {
    std::env::set_var(COOKIE_KEY, COOKIE);
    rt().block_on(async {
        let mut r = runner("dotdot", None);
        let e = start_and_handshake(&mut r, Duration::from_secs(20))
            .await
            .err()
            .unwrap();
        assert!(e.error.contains("refused"), "{e}");
    });
}

fn socket_swapped_for_a_symlink_never_reaches_the_host_socket() {
    std::env::set_var(COOKIE_KEY, COOKIE);
    let host = HostOnly::new();
    for _ in 0..5 {
        rt().block_on(async {
            let mut r = runner("swap", Some(host.path.to_str().unwrap()));
            match start_and_handshake(&mut r, Duration::from_secs(20)).await {
                // Translated before the swap: the pinned link still reaches the plugin.
                Ok(c) => {
                    let addr = c.addr.clone();
                    let reply = tokio::task::spawn_blocking(move || ping(&addr))
                        .await
                        .unwrap();
                    assert_eq!(reply, "pong: ping\n");
                    r.kill().await.unwrap();
                }
                // Checked after the swap (a symlink) or during it (the socket was gone):
                // refused either way.
                Err(e) => assert!(e.error.contains("handshake refused"), "{e}"),
            }
        });
        assert!(
            !host.was_contacted(),
            "the swapped-in symlink redirected the host"
        );
    }
}

fn silent_plugin_times_out_with_diagnose_and_is_gone() {
    std::env::set_var(COOKIE_KEY, COOKIE);
    let before = HostState::take();
    rt().block_on(async {
        let mut r = runner("silent", None);
        let t = Instant::now();
        let e = start_and_handshake(&mut r, Duration::from_millis(500))
            .await
            .err()
            .unwrap();
        assert!(t.elapsed() < Duration::from_secs(10));
        assert!(
            e.error
                .contains("no go-plugin handshake line on stdout within 500ms"),
            "{e}"
        );
        assert!(e.diagnose.contains("killed by SIGTERM"), "{e}");
    });
    before.assert_unchanged();
}

fn reattach_from_another_process_waits_kills_translates() {
    let p = exe();
    let o = cli(
        &[
            "--profile",
            "go-plugin",
            "--detach",
            "--",
            p.to_str().unwrap(),
            "plugin",
            "normal",
        ],
        &[],
    )
    .wait_with_output()
    .unwrap();
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let id = String::from_utf8(o.stdout).unwrap().trim().to_string();
    let dir = sandbox_runner::state::dir_of(&id);
    // The detached plugin's stdout is a file in its state directory.
    let deadline = Instant::now() + Duration::from_secs(20);
    let hs = loop {
        let text = std::fs::read_to_string(dir.join("stdout")).unwrap_or_default();
        if let Some(l) = text.lines().next() {
            break l.to_string();
        }
        assert!(
            Instant::now() < deadline,
            "no handshake from the detached plugin"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let announced = hs.split('|').nth(3).unwrap().to_string();
    let ps = stdout(&run(&["ps"]));
    assert!(ps.contains(&id) && ps.contains("running"), "{ps}");
    rt().block_on(async {
        let r = SandboxRunner::reattach(&id).unwrap();
        let (_, addr) = r.plugin_to_host("unix", &announced).unwrap();
        let reply = tokio::task::spawn_blocking(move || ping(&addr))
            .await
            .unwrap();
        assert_eq!(reply, "pong: ping\n");
        r.kill().await.unwrap();
        let st = r.wait().await.unwrap();
        assert_eq!(st.signal(), Some(libc::SIGTERM), "{st}");
    });
    assert!(!dir.exists(), "state dir left behind");
    // Its pid is gone now: a second reattach is refused, and `sandbox-run kill` too.
    assert!(SandboxRunner::reattach(&id).is_err());
    assert_eq!(run(&["kill", &id]).status.code(), Some(1));
}

fn stale_state_is_refused_and_never_signalled() {
    // A state file whose pid is alive but belongs to another process (this test process,
    // with a wrong start time), and one whose pid is dead.
    let me = std::process::id() as i32;
    let mut child = Command::new("true").spawn().unwrap();
    let dead = child.id() as i32;
    child.wait().unwrap();
    for (pid, start) in [(me, 1u64), (dead, 1u64)] {
        let id = format!("sbx-{:024x}", 0xdead_0000u64 + pid as u64);
        let st = sandbox_runner::state::SandboxState {
            id: id.clone(),
            program: "/bin/false".into(),
            init_pid: pid,
            init_start_time: start,
            kill_grace_ms: 10,
            socket_dir: None,
            links_dir: None,
            sandbox_socket_dir: None,
            host_network: false,
            cgroups: vec![],
            created: 0,
        };
        sandbox_runner::state::create_dir(&id, None).unwrap();
        st.write().unwrap();
        let e = SandboxRunner::reattach(&id)
            .err()
            .expect("stale state accepted");
        assert!(e.to_string().contains("stale"), "{e}");
        let o = run(&["kill", &id]);
        assert_eq!(o.status.code(), Some(1));
        assert!(stderr(&o).contains("stale"), "{}", stderr(&o));
        sandbox_runner::state::remove_dir(&id).unwrap();
    }
    // We are still alive: nothing was sent to the reused pid.
}

/// Whether `pid` still runs (not gone, not a zombie).
fn runs(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Ok(stat) => stat
            .rsplit_once(')')
            .map(|(_, rest)| !rest.trim_start().starts_with('Z'))
            .unwrap_or(false),
        Err(_) => false,
    }
}

/// A go-plugin host (python3 here) that starts `sandbox-run ARGS`, reads the handshake (and
/// the plugin's one other stdout line, so nothing more is written to the dead host's pipe),
/// and is then SIGKILLed: returns sandbox-run's pid once its host is dead.
fn host_killed_after_handshake(args: &[&str]) -> i32 {
    let host = "import subprocess, sys, time\n\
                p = subprocess.Popen(sys.argv[1:], stdout=subprocess.PIPE)\n\
                line = p.stdout.readline().decode().strip()\n\
                p.stdout.readline()\n\
                print(p.pid, line, flush=True)\n\
                time.sleep(100)";
    let mut c = Command::new("/usr/bin/python3");
    c.args(["-c", host]).arg(bin()).args(args);
    c.env(COOKIE_KEY, COOKIE)
        .env("PLUGIN_PROTOCOL_VERSIONS", "1")
        .stdin(PStdio::null())
        .stdout(PStdio::piped());
    let mut host = c.spawn().unwrap();
    let mut line = String::new();
    BufReader::new(host.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let (pid, hs) = line.trim().split_once(' ').unwrap();
    assert!(hs.starts_with("1|1|unix|/"), "no handshake: {line:?}");
    let _ = host.kill();
    host.wait().unwrap();
    pid.parse().unwrap()
}

/// go-plugin profile: a host SIGKILLed after the handshake takes sandbox-run and its plugin
/// along (die_with_parent), and nothing of the sandbox is left within 2 s. Control: with
/// `die_with_parent = false`, sandbox-run outlives its host.
fn sandbox_run_dies_with_a_sigkilled_go_plugin_host() {
    let before = HostState::take();
    let p = exe();
    let run = host_killed_after_handshake(&[
        "--profile",
        "go-plugin",
        "--",
        p.to_str().unwrap(),
        "plugin",
        "normal",
    ]);
    let deadline = Instant::now() + Duration::from_secs(2);
    while runs(run) {
        assert!(
            Instant::now() < deadline,
            "sandbox-run {run} outlived its host by 2 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    before.assert_unchanged();

    let dir = tempfile::tempdir().unwrap();
    let profile = dir.path().join("keep.toml");
    std::fs::write(
        &profile,
        "extends = \"go-plugin\"\ndie_with_parent = false\n",
    )
    .unwrap();
    let run = host_killed_after_handshake(&[
        "--profile",
        profile.to_str().unwrap(),
        "--",
        p.to_str().unwrap(),
        "plugin",
        "normal",
    ]);
    std::thread::sleep(Duration::from_millis(500));
    let survived = runs(run);
    let stat = std::fs::read_to_string(format!("/proc/{run}/stat")).unwrap_or_default();
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(run),
        nix::sys::signal::Signal::SIGKILL,
    );
    assert!(
        survived,
        "control: without die_with_parent sandbox-run should outlive its host: {stat}"
    );
}

// ---------------------------------------------------------------- a tiny harness

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.get(1).map(String::as_str) == Some("plugin") {
        std::process::exit(plugin_main(&args[2], args.get(3).map(String::as_str)));
    }
    let tests: &[(&str, fn())] = &[
        (
            "library_handshake_and_request",
            library_handshake_and_request,
        ),
        (
            "cli_wrapper_translates_the_handshake",
            cli_wrapper_translates_the_handshake,
        ),
        (
            "cli_wrapper_with_an_old_plugin_using_tmpdir",
            cli_wrapper_with_an_old_plugin_using_tmpdir,
        ),
        (
            "cli_wrapper_honours_the_hosts_socket_dir",
            cli_wrapper_honours_the_hosts_socket_dir,
        ),
        (
            "refuses_a_symlink_to_a_host_socket",
            refuses_a_symlink_to_a_host_socket,
        ),
        ("refuses_dotdot", refuses_dotdot),
        (
            "handshake_bypass_shapes_are_refused",
            handshake_bypass_shapes_are_refused,
        ),
        (
            "sandbox_run_dies_with_a_sigkilled_go_plugin_host",
            sandbox_run_dies_with_a_sigkilled_go_plugin_host,
        ),
        (
            "socket_swapped_for_a_symlink_never_reaches_the_host_socket",
            socket_swapped_for_a_symlink_never_reaches_the_host_socket,
        ),
        (
            "silent_plugin_times_out_with_diagnose_and_is_gone",
            silent_plugin_times_out_with_diagnose_and_is_gone,
        ),
        (
            "reattach_from_another_process_waits_kills_translates",
            reattach_from_another_process_waits_kills_translates,
        ),
        (
            "stale_state_is_refused_and_never_signalled",
            stale_state_is_refused_and_never_signalled,
        ),
    ];
    run_tests(&args, tests);
}
