//! The egress allow-list end to end (issue 13), as root, in real sandboxes: programs inside
//! reach the host's servers through the HTTP proxy, the SOCKS5 server and the DNS stub with
//! its mapped listeners, served inside the sandbox's network namespace by the runner.
//!
//! Every server of these tests is on the host's loopback and no test sends a packet to any
//! other address, not even one the policy must refuse: test names (`allowed.test`,
//! `other.test`) are answered by an injected resolver with `127.0.0.1` (the CLI test uses
//! `localhost`, which the host resolves itself), IP rules name `127.0.0.1:PORT`, and the one
//! other address used, `127.0.0.2` (an unlisted loopback address), has a canary listener on
//! the host that must never see a connection. Canary listeners count their accepts, so a
//! refusal is shown to have reached nobody.
#![allow(clippy::await_holding_lock)] // serial(): one test at a time, each on its own runtime

mod common;
use common::*;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sandbox_runner::egress::resolve::StaticResolver;
use sandbox_runner::{AttachedRunner, ExitStatus, Profile, Runner, SandboxRunner};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;

const LOCAL: Ipv4Addr = Ipv4Addr::LOCALHOST;
const PYTHON: &str = "/usr/bin/python3";

/// A host server that counts the connections it accepted and those that ended.
struct Server {
    addr: SocketAddr,
    accepts: Arc<AtomicUsize>,
    closed: Arc<AtomicUsize>,
}

impl Server {
    fn port(&self) -> u16 {
        self.addr.port()
    }
    fn accepts(&self) -> usize {
        self.accepts.load(Ordering::SeqCst)
    }
    fn closed(&self) -> usize {
        self.closed.load(Ordering::SeqCst)
    }
}

#[derive(Clone, Copy)]
enum Kind {
    /// Echoes every byte.
    Echo,
    /// Answers one HTTP request with `upstream saw <request line>`.
    Http,
    /// Accepts and closes: a canary that must never be reached.
    Canary,
}

async fn server(ip: Ipv4Addr, kind: Kind) -> Server {
    let listener = TcpListener::bind((ip, 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepts = Arc::new(AtomicUsize::new(0));
    let closed = Arc::new(AtomicUsize::new(0));
    let (a, c) = (accepts.clone(), closed.clone());
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                return;
            };
            a.fetch_add(1, Ordering::SeqCst);
            let c = c.clone();
            tokio::spawn(async move {
                match kind {
                    Kind::Echo => {
                        let (mut r, mut w) = s.split();
                        let _ = tokio::io::copy(&mut r, &mut w).await;
                    }
                    Kind::Http => {
                        let mut r = BufReader::new(&mut s);
                        let mut line = String::new();
                        let _ = r.read_line(&mut line).await;
                        loop {
                            let mut h = String::new();
                            match r.read_line(&mut h).await {
                                Ok(n) if n > 2 => {}
                                _ => break,
                            }
                        }
                        let body = format!("upstream saw {}", line.trim_end());
                        let resp = format!(
                            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                            body.len()
                        );
                        let _ = s.write_all(resp.as_bytes()).await;
                    }
                    Kind::Canary => {}
                }
                drop(s);
                c.fetch_add(1, Ordering::SeqCst);
            });
        }
    });
    Server {
        addr,
        accepts,
        closed,
    }
}

fn resolver() -> Arc<StaticResolver> {
    let local = [IpAddr::V4(LOCAL)];
    Arc::new(
        StaticResolver::new()
            .with("allowed.test", &local)
            .with("other.test", &local),
    )
}

fn profile_with(rules: &[String]) -> Profile {
    profile_text("", rules)
}

/// The default profile with `top` (top-level keys) and the rules.
fn profile_text(top: &str, rules: &[String]) -> Profile {
    let mut text = format!("extends = \"default\"\n{top}\n[network]\nallow = [");
    for r in rules {
        text.push_str(&format!("{r:?}, "));
    }
    text.push_str("]\n");
    Profile::from_toml_str(&text, "test").unwrap()
}

/// The client side, run by python3 inside the sandbox: each path tried, each result (or
/// error) in one JSON object on stdout.
const CLIENT: &str = r#"
import json, os, socket, struct, sys, urllib.error, urllib.request
a = json.loads(sys.argv[1])
hp = int(os.environ["HTTP_PROXY"].rsplit(":", 1)[1])
sp = int(os.environ["ALL_PROXY"].rsplit(":", 1)[1])
res = {}

def attempt(name, f, *args):
    try:
        res[name] = f(*args)
    except Exception as e:
        res[name] = "error: %s" % type(e).__name__

def recv_exact(s, n):
    got = b""
    while len(got) < n:
        c = s.recv(n - len(got))
        if not c:
            break
        got += c
    return got

def echo(s):
    s.sendall(b"ping through the sandbox")
    got = recv_exact(s, 24).decode()
    s.close()
    return got

def http_abs(url):
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return "%d %s" % (r.status, r.read().decode())
    except urllib.error.HTTPError as e:
        return "%d" % e.code

def connect(target):
    s = socket.create_connection(("127.0.0.1", hp), timeout=10)
    s.sendall(("CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n" % (target, target)).encode())
    head = b""
    while b"\r\n\r\n" not in head:
        c = s.recv(1)
        if not c:
            break
        head += c
    status = head.split(b" ")[1].decode()
    if status != "200":
        return status
    return "200 " + echo(s)

def socks(host, port):
    s = socket.create_connection(("127.0.0.1", sp), timeout=10)
    s.sendall(b"\x05\x01\x00")
    if recv_exact(s, 2) != b"\x05\x00":
        return "no auth method"
    h = host.encode()
    s.sendall(b"\x05\x01\x00\x03" + bytes([len(h)]) + h + struct.pack(">H", port))
    rep = recv_exact(s, 4)
    if rep[1] != 0:
        return "reply %d" % rep[1]
    n = {1: 4, 4: 16}.get(rep[3])
    if n is None:
        n = recv_exact(s, 1)[0]
    recv_exact(s, n + 2)
    return "ok " + echo(s)

def by_name(host, port):
    s = socket.create_connection((host, port), timeout=10)
    return "%s %s" % (s.getpeername()[0], echo(s))

def resolve(host):
    try:
        return socket.gethostbyname(host)
    except socket.gaierror:
        return "not found"

attempt("http_abs", http_abs, "http://allowed.test:%d/abs?x=1" % a["http"])
attempt("connect_name", connect, "allowed.test:%d" % a["echo"])
attempt("connect_ip", connect, "127.0.0.1:%d" % a["echo"])
attempt("socks", socks, "allowed.test", a["echo"])
attempt("resolve_allowed", resolve, "allowed.test")
attempt("by_name", by_name, "allowed.test", a["echo"])
attempt("resolve_other", resolve, "other.test")
attempt("resolve_own_hostname", resolve, socket.gethostname())
# Refused: another port of an allowed host, an unlisted 127.x address, a name no rule allows.
attempt("connect_other_port", connect, "allowed.test:%d" % a["canary"])
attempt("socks_other_port", socks, "allowed.test", a["canary"])
attempt("mapped_other_port", by_name, "allowed.test", a["canary"])
attempt("connect_unlisted_ip", connect, "127.0.0.2:%d" % a["canary2"])
attempt("socks_unlisted_ip", socks, "127.0.0.2", a["canary2"])
attempt("connect_other_name", connect, "other.test:%d" % a["echo"])
attempt("http_abs_other_name", http_abs, "http://other.test:%d/" % a["http"])
attempt("socks_other_name", socks, "other.test", a["echo"])
print(json.dumps(res), flush=True)
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_allowed_path_works_and_every_other_is_refused_and_named() {
    let _g = serial();
    if !privileged() {
        return;
    }
    every_path("").await;
}

/// The same in rootless mode (forced as root: the sandbox has its own user namespace, so the
/// listeners are made by the short-lived child that enters it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rootless_every_allowed_path_works_and_every_other_is_refused_and_named() {
    let _g = serial();
    if !privileged() {
        return;
    }
    every_path("rootless = \"always\"").await;
}

async fn every_path(top: &str) {
    let http = server(LOCAL, Kind::Http).await;
    let echo = server(LOCAL, Kind::Echo).await;
    // Another port of the allowed host, and an unlisted loopback address.
    let canary = server(LOCAL, Kind::Canary).await;
    let canary2 = server(Ipv4Addr::new(127, 0, 0, 2), Kind::Canary).await;
    let rules = [
        format!("allowed.test:{}", http.port()),
        format!("allowed.test:{}", echo.port()),
        format!("127.0.0.1:{}", echo.port()),
    ];
    let before = HostState::take();
    let args = serde_json::json!({
        "http": http.port(), "echo": echo.port(),
        "canary": canary.port(), "canary2": canary2.port(),
    });
    let mut r = SandboxRunner::new(
        profile_text(top, &rules),
        PYTHON,
        ["-c", CLIENT, &args.to_string()],
    )
    .unwrap()
    .with_resolver(resolver());
    r.start().await.unwrap();
    let (mut o, mut e) = (r.stdout().unwrap(), r.stderr().unwrap());
    let (mut out, mut err) = (String::new(), String::new());
    let (a, b) = tokio::join!(o.read_to_string(&mut out), e.read_to_string(&mut err));
    a.unwrap();
    b.unwrap();
    let status = r.wait().await.unwrap();
    assert_eq!(status, ExitStatus::Exited { code: 0 }, "stderr: {err}");
    let res: serde_json::Value =
        serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out:?} {err}"));
    let get = |k: &str| res[k].as_str().unwrap_or_default().to_string();
    let ping = "ping through the sandbox";

    // Every allowed path.
    assert_eq!(get("http_abs"), "200 upstream saw GET /abs?x=1 HTTP/1.1");
    assert_eq!(get("connect_name"), format!("200 {ping}"));
    assert_eq!(
        get("connect_ip"),
        format!("200 {ping}"),
        "an IP rule names 127.0.0.1"
    );
    assert_eq!(get("socks"), format!("ok {ping}"));
    assert_eq!(get("resolve_allowed"), "127.64.0.1");
    assert_eq!(get("by_name"), format!("127.64.0.1 {ping}"));
    assert_eq!(get("resolve_own_hostname"), "127.0.1.1");
    assert_eq!(http.accepts(), 1);
    assert_eq!(echo.accepts(), 4);

    // Every refusal, and nobody reached.
    assert_eq!(get("resolve_other"), "not found");
    assert_eq!(get("connect_other_port"), "403");
    assert_eq!(get("socks_other_port"), "reply 2");
    // No mapped listener on a port no rule names: refused inside, nothing reaches the host.
    assert_eq!(get("mapped_other_port"), "error: ConnectionRefusedError");
    assert_eq!(get("connect_unlisted_ip"), "403");
    assert_eq!(get("socks_unlisted_ip"), "reply 2");
    assert_eq!(get("connect_other_name"), "403");
    assert_eq!(get("http_abs_other_name"), "403");
    assert_eq!(get("socks_other_name"), "reply 2");
    assert_eq!(
        canary.accepts(),
        0,
        "another port of an allowed host was reached"
    );
    assert_eq!(
        canary2.accepts(),
        0,
        "an unlisted loopback address was reached"
    );
    assert_eq!(http.accepts(), 1);
    assert_eq!(echo.accepts(), 4);

    // The diagnosis counts and names each refusal.
    let d = r.diagnosis();
    let n = d
        .network
        .clone()
        .expect("network refusals in the diagnosis");
    let count = |t: &str| {
        n.connections
            .iter()
            .find(|x| x.target == t)
            .map_or(0, |x| x.count)
    };
    let (cp, c2p, ep, hp) = (canary.port(), canary2.port(), echo.port(), http.port());
    assert_eq!(count(&format!("allowed.test:{cp}")), 2, "{n:?}");
    assert_eq!(count(&format!("127.0.0.2:{c2p}")), 2, "{n:?}");
    assert_eq!(count(&format!("other.test:{ep}")), 2, "{n:?}");
    assert_eq!(count(&format!("other.test:{hp}")), 1, "{n:?}");
    assert_eq!(n.connections_refused, 7, "{n:?}");
    assert!(n.names.iter().any(|x| x.target == "other.test"), "{n:?}");
    let text = &d.text;
    assert!(
        text.starts_with(&format!(
            "{PYTHON} exited with status 0; network: 7 connections refused ("
        )),
        "{text}"
    );
    for t in [
        format!("allowed.test:{cp} x2"),
        format!("127.0.0.2:{c2p} x2"),
        format!("other.test:{ep} x2"),
        format!("other.test:{hp}"),
        "refused by DNS (other.test".to_string(),
    ] {
        assert!(text.contains(&t), "{t} not in {text}");
    }
    let json = serde_json::to_value(&d).unwrap();
    assert_eq!(json["network"]["connections_refused"], 7);
    drop(r);
    before.assert_unchanged();
}

/// This process's open fds, but those of network namespaces other than its own; and how
/// many of those it holds (a root runner keeps one made ahead for the next start, made again
/// after each start).
fn fd_count() -> (usize, usize) {
    let own = std::fs::read_link("/proc/self/ns/net").unwrap();
    let (mut other, mut netns) = (0, 0);
    for e in std::fs::read_dir("/proc/self/fd").unwrap().flatten() {
        match std::fs::read_link(e.path()) {
            Ok(t) if t.to_string_lossy().starts_with("net:[") && t != own => netns += 1,
            _ => other += 1,
        }
    }
    (other, netns)
}

fn egress_threads() -> usize {
    std::fs::read_dir("/proc/self/task")
        .unwrap()
        .flatten()
        .filter(|t| {
            std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.trim() == "egress-netns")
        })
        .count()
}

/// Waits up to 2 s for `f` to hold.
async fn eventually(what: &str, f: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(2);
    while !f() {
        assert!(Instant::now() < deadline, "not in 2 s: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relays_end_with_the_sandbox_and_leave_nothing_behind() {
    let _g = serial();
    if !privileged() {
        return;
    }
    let echo = server(LOCAL, Kind::Echo).await;
    let rules = [format!("allowed.test:{}", echo.port())];
    // A first sandbox starts what lives as long as this process (the spawner thread, the
    // reaper and its socket): the count is taken after it.
    let mut warm = SandboxRunner::new(profile_with(&rules), "/bin/true", Vec::<String>::new())
        .unwrap()
        .with_resolver(resolver());
    warm.start().await.unwrap();
    warm.wait().await.unwrap();
    drop(warm);
    let before = HostState::take();
    let (fds, _) = fd_count();

    // A tunnel held open by a plugin that then sleeps.
    let script = format!(
        r#"
import os, socket, time
hp = int(os.environ["HTTP_PROXY"].rsplit(":", 1)[1])
s = socket.create_connection(("127.0.0.1", hp))
s.sendall(b"CONNECT allowed.test:{port} HTTP/1.1\r\n\r\n")
head = b""
while b"\r\n\r\n" not in head:
    head += s.recv(1)
s.sendall(b"x")
assert s.recv(1) == b"x"
print("open", flush=True)
time.sleep(600)
"#,
        port = echo.port()
    );
    let mut r = SandboxRunner::new(profile_with(&rules), PYTHON, ["-c", script.as_str()])
        .unwrap()
        .with_resolver(resolver());
    r.start().await.unwrap();
    assert_eq!(egress_threads(), 0, "the netns thread is gone once started");
    let mut out = BufReader::new(r.stdout().unwrap());
    let mut line = String::new();
    tokio::time::timeout(Duration::from_secs(20), out.read_line(&mut line))
        .await
        .expect("the tunnel opens")
        .unwrap();
    assert_eq!(line, "open\n");
    assert_eq!((echo.accepts(), echo.closed()), (1, 0));
    assert!(fd_count().0 > fds);

    // Killed: the relay's upstream end is closed with the sandbox.
    r.kill().await.unwrap();
    eventually("the relay's upstream connection is closed", || {
        echo.closed() == 1
    })
    .await;
    r.wait().await.unwrap();
    drop(out);
    drop(r);
    eventually("no fd of the sandbox's egress is left", || {
        let (other, netns) = fd_count();
        other == fds && netns <= 1
    })
    .await;
    assert_eq!(egress_threads(), 0);
    before.assert_unchanged();
}

/// The CLI: `--allow-net` with the host's own resolver (`localhost`), curl through the proxy
/// environment, the generated files, and `--diagnose-json`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_allow_net_with_curl_and_the_generated_files() {
    let _g = serial();
    if !privileged() {
        return;
    }
    if !std::path::Path::new("/usr/bin/curl").exists() {
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("/usr/bin/curl is missing (CI=true forbids skipping)");
        }
        eprintln!("SKIPPED: /usr/bin/curl is missing");
        return;
    }
    let http = server(LOCAL, Kind::Http).await;
    let canary2 = server(Ipv4Addr::new(127, 0, 0, 2), Kind::Canary).await;
    let dir = tempfile::tempdir().unwrap();
    let json = dir.path().join("d.json");
    let script = format!(
        "cat /etc/resolv.conf /etc/hosts | grep -v '^#'; \
         curl -sS --noproxy '' -x \"$HTTP_PROXY\" http://localhost:{p}/cli; echo; \
         curl -sS --noproxy '' -x \"$ALL_PROXY\" http://localhost:{p}/socks; echo; \
         curl -sS -o /dev/null -w '%{{http_code}}\\n' --noproxy '' -x \"$HTTP_PROXY\" \
           http://127.0.0.2:{c}/; \
         echo \"$NO_PROXY\"",
        p = http.port(),
        c = canary2.port()
    );
    let before = HostState::take();
    let bin = bin();
    let json_arg = json.clone();
    let port = http.port();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(bin)
            .args(["--hostname", "plugin-box", "--allow-net"])
            .arg(format!("localhost:{port}"))
            .arg("--diagnose-json")
            .arg(&json_arg)
            .args(["--", "/bin/sh", "-c", &script])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(
        lines,
        [
            "nameserver 127.0.0.1",
            "options attempts:2 timeout:2",
            "127.0.0.1\tlocalhost",
            "::1\tlocalhost ip6-localhost ip6-loopback",
            "127.0.1.1\tplugin-box",
            "upstream saw GET /cli HTTP/1.1",
            "upstream saw GET /socks HTTP/1.1",
            "403",
            "localhost,127.0.0.1,::1",
        ],
        "{stderr}"
    );
    assert_eq!(http.accepts(), 2);
    assert_eq!(canary2.accepts(), 0);
    // The refusal is a warning on stderr as it happens, and named in the diagnosis.
    let target = format!("127.0.0.2:{}", canary2.port());
    assert!(
        stderr.contains("connection refused") && stderr.contains(&target),
        "{stderr}"
    );
    let d: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert_eq!(d["network"]["connections_refused"], 1);
    assert_eq!(d["network"]["connections"][0]["target"], target.as_str());
    assert_eq!(
        d["text"],
        format!("/bin/sh exited with status 0; network: 1 connection refused ({target})")
    );
    before.assert_unchanged();
}

/// Rules that cannot apply are refused with the reason, before anything starts; a bad rule
/// names itself, its position in a profile, and why.
#[test]
fn rules_that_cannot_apply_are_clear_errors() {
    let _g = serial();
    let run = |args: &[&str]| {
        let out = std::process::Command::new(bin())
            .args(args)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, err) = run(&["--allow-net", "example.org", "--", "/bin/true"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(
        err.contains("\"example.org\"") && err.contains("a port is required"),
        "{err}"
    );
    let (code, err) = run(&["--allow-net", "*.com:443", "--", "/bin/true"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("top-level domain"), "{err}");

    let dir = tempfile::tempdir().unwrap();
    let p = dir.path().join("p.toml");
    std::fs::write(
        &p,
        "extends = \"default\"\n[network]\nallow = [\"a.test:443\", \"b.test:0\"]\n",
    )
    .unwrap();
    let (code, err) = run(&["--profile", p.to_str().unwrap(), "--", "/bin/true"]);
    assert_eq!(code, Some(125), "{err}");
    assert!(
        err.contains("p.toml:3:") && err.contains("\"b.test:0\"") && err.contains("port 0"),
        "{err}"
    );

    std::fs::write(&p, "extends = \"default\"\n[namespaces]\nnet = false\n").unwrap();
    let (code, err) = run(&[
        "--profile",
        p.to_str().unwrap(),
        "--allow-net",
        "a.test:443",
        "--",
        "/bin/true",
    ]);
    assert_eq!(code, Some(125), "{err}");
    assert!(
        err.contains("net = false") && err.contains("bypass"),
        "{err}"
    );

    let (code, err) = run(&["--detach", "--allow-net", "a.test:443", "--", "/bin/true"]);
    assert_eq!(code, Some(125), "{err}");
    assert!(err.contains("detached"), "{err}");
}

/// Rootless for real: `sandbox-run` as uid/gid 65534 (`nobody`, through `setpriv`), from a
/// copy of the binary in a world-readable directory, with an `XDG_RUNTIME_DIR` of its own.
/// The unprivileged host cannot enter the sandbox's namespaces with a thread; the proxies
/// still serve inside, the refusal still reaches nobody, and nothing is left behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unprivileged_cli_allow_net_in_rootless_mode() {
    use std::os::unix::fs::PermissionsExt;
    let _g = serial();
    if !privileged() {
        return;
    }
    const NOBODY: u32 = 65534;
    let dir = tempfile::Builder::new()
        .prefix("sandbox-egress-rootless-")
        .tempdir_in("/tmp")
        .unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let exe = dir.path().join("sandbox-run");
    std::fs::copy(bin(), &exe).unwrap();
    let xdg = dir.path().join("xdg");
    std::fs::create_dir(&xdg).unwrap();
    std::os::unix::fs::chown(&xdg, Some(NOBODY), Some(NOBODY)).unwrap();
    std::fs::set_permissions(&xdg, std::fs::Permissions::from_mode(0o700)).unwrap();

    let http = server(LOCAL, Kind::Http).await;
    let canary2 = server(Ipv4Addr::new(127, 0, 0, 2), Kind::Canary).await;
    let script = format!(
        "id -u; curl -sS --noproxy '' -x \"$HTTP_PROXY\" http://localhost:{p}/rootless; echo; \
         curl -sS --noproxy '' -x \"$ALL_PROXY\" http://localhost:{p}/socks; echo; \
         curl -sS -o /dev/null -w '%{{http_code}}\\n' --noproxy '' -x \"$HTTP_PROXY\" \
           http://127.0.0.2:{c}/",
        p = http.port(),
        c = canary2.port()
    );
    let before = HostState::take();
    let json = xdg.join("d.json");
    let id = NOBODY.to_string();
    let (exe2, xdg2, json2, cwd, port) = (
        exe.clone(),
        xdg.clone(),
        json.clone(),
        dir.path().to_path_buf(),
        http.port(),
    );
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("setpriv")
            .args(["--reuid", &id, "--regid", &id, "--clear-groups", "--"])
            .arg(exe2)
            .args(["--profile", "rootless", "--allow-net"])
            .arg(format!("localhost:{port}"))
            .arg("--diagnose-json")
            .arg(json2)
            .args(["--", "/bin/sh", "-c", &script])
            .current_dir(cwd)
            .env("XDG_RUNTIME_DIR", xdg2)
            .env_remove("SANDBOX_RUNNER_STATE_DIR")
            .stdin(std::process::Stdio::null())
            .output()
            .expect("setpriv (util-linux) must be installed")
    })
    .await
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{stderr}");
    assert_eq!(
        stdout.lines().collect::<Vec<_>>(),
        [
            "0",
            "upstream saw GET /rootless HTTP/1.1",
            "upstream saw GET /socks HTTP/1.1",
            "403"
        ],
        "{stderr}"
    );
    assert_eq!(http.accepts(), 2);
    assert_eq!(canary2.accepts(), 0);
    let d: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert_eq!(
        d["network"]["connections"][0]["target"],
        format!("127.0.0.2:{}", canary2.port())
    );
    std::fs::remove_file(&json).unwrap();
    before.assert_unchanged();
    let mut left = Vec::new();
    let mut stack = vec![xdg.clone()];
    while let Some(p) = stack.pop() {
        for e in std::fs::read_dir(&p).unwrap().flatten() {
            if e.path().is_dir() {
                stack.push(e.path());
            } else {
                left.push(e.path());
            }
        }
    }
    assert!(left.is_empty(), "left behind: {left:?}");
}
