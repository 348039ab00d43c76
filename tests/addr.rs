//! Tests of socket-address translation across the sandbox boundary (no namespaces needed:
//! the sandbox's view of the directory is simulated by the plugin side of the API).

use std::io::{ErrorKind, Read, Write};
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use sandbox_runner::addr::{SocketDir, SocketDirError, MAX_SOCKET_PATH, SANDBOX_SOCKET_DIR};
use sandbox_runner::{AddrError, AddrTranslator};

const PLUGIN_SOCK: &str = "/run/plugin-sockets/plugin.sock";

fn setup() -> (tempfile::TempDir, SocketDir) {
    let tmp = tempfile::Builder::new().prefix("addr").tempdir().unwrap();
    let dir = SocketDir::create(tmp.path(), None).unwrap();
    (tmp, dir)
}

fn refused(dir: &SocketDir, addr: &str) -> AddrError {
    match dir.plugin_to_host("unix", addr) {
        Ok(p) => panic!("{addr:?} was translated to {p:?}"),
        Err(e) => e,
    }
}

/// Connects to `path` and checks, by exchanging a byte, that `listener` got the connection.
fn assert_reaches(path: &str, listener: &UnixListener) {
    let mut c = UnixStream::connect(path).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    // Poll, so that a connection that went elsewhere fails the test instead of hanging it.
    listener.set_nonblocking(true).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let mut s = loop {
        match listener.accept() {
            Ok((s, _)) => break s,
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                assert!(
                    std::time::Instant::now() < deadline,
                    "{path}: the expected listener got no connection"
                );
                std::thread::sleep(Duration::from_millis(1));
            }
            Err(e) => panic!("accept: {e}"),
        }
    };
    s.set_nonblocking(false).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(b"x").unwrap();
    let mut b = [0u8; 1];
    c.read_exact(&mut b).unwrap();
    assert_eq!(&b, b"x");
    c.write_all(b"y").unwrap();
    s.read_exact(&mut b).unwrap();
    assert_eq!(&b, b"y");
}

/// Asserts that nobody connected to `listener`.
fn assert_untouched(listener: &UnixListener) {
    listener.set_nonblocking(true).unwrap();
    match listener.accept() {
        Err(e) if e.kind() == ErrorKind::WouldBlock => {}
        Ok(_) => panic!("the attacker's socket received a connection"),
        Err(e) => panic!("accept: {e}"),
    }
}

#[test]
fn create_makes_private_dirs_and_remove_deletes_them() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = SocketDir::create(tmp.path(), None).unwrap();
    assert_eq!(dir.sandbox_dir(), SANDBOX_SOCKET_DIR);
    let host = dir.host_dir().to_owned();
    let links = dir.links_dir().to_owned();
    assert_eq!(host.file_name().unwrap(), "sock");
    assert_eq!(links.file_name().unwrap(), "links");
    for p in [&host, &links] {
        let m = std::fs::symlink_metadata(p).unwrap();
        assert!(m.is_dir());
        assert_eq!(m.permissions().mode() & 0o7777, 0o700, "{}", p.display());
    }
    // A second create on the same parent refuses to adopt existing directories.
    assert!(matches!(
        SocketDir::create(tmp.path(), None),
        Err(SocketDirError::Io { .. })
    ));
    // remove deletes the plugin's leftovers without following its symlinks.
    let outside = tmp.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    std::fs::write(outside.join("precious"), b"keep").unwrap();
    symlink(&outside, host.join("link-to-outside")).unwrap();
    std::fs::create_dir_all(host.join("a/b/c")).unwrap();
    std::fs::write(host.join("a/b/c/f"), b"").unwrap();
    symlink(&outside, host.join("a/b/evil")).unwrap();
    let _l = UnixListener::bind(host.join("plugin.sock")).unwrap();
    dir.plugin_to_host("unix", PLUGIN_SOCK).unwrap();
    dir.remove().unwrap();
    assert!(!host.exists());
    assert!(!links.exists());
    assert_eq!(std::fs::read(outside.join("precious")).unwrap(), b"keep");
    dir.remove().unwrap(); // idempotent
}

#[test]
fn create_with_group_is_group_accessible() {
    let tmp = tempfile::tempdir().unwrap();
    let gid = nix::unistd::getegid().as_raw();
    let dir = SocketDir::create(tmp.path(), Some(gid)).unwrap();
    let m = std::fs::metadata(dir.host_dir()).unwrap();
    assert_eq!(m.permissions().mode() & 0o7777, 0o770);
    assert_eq!(m.gid(), gid);
    let l = std::fs::metadata(dir.links_dir()).unwrap();
    assert_eq!(l.permissions().mode() & 0o7777, 0o700);
}

#[test]
fn drop_removes_created_dirs() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = SocketDir::create(tmp.path(), None).unwrap();
    let host = dir.host_dir().to_owned();
    drop(dir);
    assert!(!host.exists());

    let mut kept = SocketDir::create(tmp.path(), None).unwrap();
    kept.set_cleanup_on_drop(false);
    let host = kept.host_dir().to_owned();
    drop(kept);
    assert!(host.exists());
}

#[test]
fn translated_path_reaches_the_plugin_listener() {
    let (_tmp, dir) = setup();
    let listener = UnixListener::bind(dir.host_dir().join("plugin.sock")).unwrap();
    let (net, path) = dir.plugin_to_host("unix", PLUGIN_SOCK).unwrap();
    assert_eq!(net, "unix");
    assert!(
        Path::new(&path).starts_with(dir.links_dir()),
        "{path} not in links dir"
    );
    assert!(path.len() <= MAX_SOCKET_PATH);
    assert_reaches(&path, &listener);

    // Through the trait object too, and each translation gets its own pinned path.
    let t: &dyn AddrTranslator = &dir;
    let (_, path2) = t.plugin_to_host("unix", PLUGIN_SOCK).unwrap();
    assert_ne!(path, path2);
    assert_reaches(&path2, &listener);
}

#[test]
fn refuses_paths_outside_the_socket_dir() {
    let (_tmp, dir) = setup();
    for addr in [
        "/tmp/plugin.sock",
        "/run/plugin-socketsX/plugin.sock",
        "/run/plugin-sockets",
        "run/plugin-sockets/plugin.sock",
        "plugin.sock",
        "@abstract",
        "",
        "/var/run/docker.sock",
    ] {
        let e = refused(&dir, addr);
        assert!(
            matches!(&e, AddrError::OutsideSocketDir { dir, .. } if dir == SANDBOX_SOCKET_DIR),
            "{addr:?}: {e}"
        );
    }
    // The host dir's own path is not a plugin address either.
    let own = format!("{}/plugin.sock", dir.host_dir().display());
    assert!(matches!(
        refused(&dir, &own),
        AddrError::OutsideSocketDir { .. }
    ));
}

#[test]
fn refuses_dot_dot_nested_nul_and_empty_names() {
    let (_tmp, dir) = setup();
    let cases: [(&str, &str); 8] = [
        ("/run/plugin-sockets/..", "is '.' or '..'"),
        ("/run/plugin-sockets/.", "is '.' or '..'"),
        (
            "/run/plugin-sockets/../x",
            "contains a '..' component (path traversal)",
        ),
        (
            "/run/plugin-sockets/../../var/run/docker.sock",
            "contains a '..' component (path traversal)",
        ),
        ("/run/plugin-sockets/a/b", "contains '/' (a nested path)"),
        ("/run/plugin-sockets/a/", "contains '/' (a nested path)"),
        ("/run/plugin-sockets/a\0b", "contains a NUL byte"),
        ("/run/plugin-sockets/", "is empty"),
    ];
    for (addr, why) in cases {
        let e = refused(&dir, addr);
        assert_eq!(
            e,
            AddrError::BadName {
                addr: addr.to_owned(),
                why
            },
            "{addr:?}"
        );
    }
}

#[test]
fn refuses_over_long_paths() {
    let (_tmp, dir) = setup();
    let name = "a".repeat(MAX_SOCKET_PATH - SANDBOX_SOCKET_DIR.len()); // one byte too many
    let addr = format!("{SANDBOX_SOCKET_DIR}/{name}");
    assert_eq!(addr.len(), MAX_SOCKET_PATH + 1);
    let e = refused(&dir, &addr);
    assert_eq!(
        e,
        AddrError::TooLong {
            path: addr.clone(),
            len: MAX_SOCKET_PATH + 1,
            max: MAX_SOCKET_PATH
        }
    );
    assert!(e.to_string().contains("107"), "{e}");
    // A long name that still fits is only refused because it does not exist.
    let ok = &addr[..MAX_SOCKET_PATH];
    assert!(matches!(refused(&dir, ok), AddrError::NotFound { .. }));
}

#[test]
fn refuses_symlink_to_a_host_only_socket() {
    let (tmp, dir) = setup();
    // A socket only the host can see (outside the shared directory).
    let secret = tmp.path().join("host-only.sock");
    let host_listener = UnixListener::bind(&secret).unwrap();
    symlink(&secret, dir.host_dir().join("plugin.sock")).unwrap();
    let e = refused(&dir, PLUGIN_SOCK);
    assert_eq!(
        e,
        AddrError::Symlink {
            addr: PLUGIN_SOCK.to_owned()
        }
    );
    // A relative symlink and a symlink to a directory are refused the same way.
    symlink("../host-only.sock", dir.host_dir().join("rel.sock")).unwrap();
    assert!(matches!(
        refused(&dir, "/run/plugin-sockets/rel.sock"),
        AddrError::Symlink { .. }
    ));
    symlink("/", dir.host_dir().join("root")).unwrap();
    assert!(matches!(
        refused(&dir, "/run/plugin-sockets/root"),
        AddrError::Symlink { .. }
    ));
    assert_untouched(&host_listener);
    // Nothing was pinned for refused addresses.
    assert_eq!(std::fs::read_dir(dir.links_dir()).unwrap().count(), 0);
}

#[test]
fn refuses_non_sockets() {
    let (_tmp, dir) = setup();
    let host = dir.host_dir().to_owned();
    std::fs::write(host.join("file"), b"").unwrap();
    std::fs::create_dir(host.join("dir")).unwrap();
    nix::unistd::mkfifo(&host.join("fifo"), nix::sys::stat::Mode::S_IRWXU).unwrap();
    for (name, kind) in [
        ("file", "a regular file"),
        ("dir", "a directory"),
        ("fifo", "a FIFO"),
    ] {
        let addr = format!("{SANDBOX_SOCKET_DIR}/{name}");
        assert_eq!(
            refused(&dir, &addr),
            AddrError::NotSocket {
                addr: addr.clone(),
                kind
            }
        );
    }
    assert_eq!(
        refused(&dir, "/run/plugin-sockets/missing"),
        AddrError::NotFound {
            addr: "/run/plugin-sockets/missing".to_owned()
        }
    );
}

#[test]
fn swap_after_translation_cannot_redirect_the_host() {
    let (tmp, dir) = setup();
    let host = dir.host_dir().to_owned();
    let original = UnixListener::bind(host.join("plugin.sock")).unwrap();
    let attacker_target = tmp.path().join("host-only.sock");
    let attacker = UnixListener::bind(&attacker_target).unwrap();

    let (_, path) = dir.plugin_to_host("unix", PLUGIN_SOCK).unwrap();

    // The plugin swaps its socket for a symlink to the host-only socket, atomically.
    symlink(&attacker_target, host.join("tmp-link")).unwrap();
    std::fs::rename(host.join("tmp-link"), host.join("plugin.sock")).unwrap();
    assert!(std::fs::symlink_metadata(host.join("plugin.sock"))
        .unwrap()
        .file_type()
        .is_symlink());

    // The host's path still reaches the original listener, never the attacker's target.
    assert_reaches(&path, &original);
    assert_untouched(&attacker);

    // The plugin cannot touch the pinned path: it is not in the shared directory.
    assert!(!Path::new(&path).starts_with(&host));

    // If the plugin closes its listener, the pinned path is refused, still never redirected.
    drop(original);
    let e = UnixStream::connect(&path).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::ConnectionRefused);
    assert_untouched(&attacker);
}

/// The plugin keeps swapping `plugin.sock` between its real socket and a symlink to a host
/// socket while the host translates: every translation that succeeds must reach the real
/// socket.
#[test]
fn concurrent_swaps_never_redirect_the_host() {
    let (tmp, dir) = setup();
    let host = dir.host_dir().to_owned();
    let original = UnixListener::bind(host.join("orig.sock")).unwrap();
    let attacker_target = tmp.path().join("host-only.sock");
    let attacker = UnixListener::bind(&attacker_target).unwrap();

    std::fs::hard_link(host.join("orig.sock"), host.join("plugin.sock")).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let swapper = {
        let stop = stop.clone();
        let host: PathBuf = host.clone();
        let target = attacker_target.clone();
        std::thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let a = host.join(format!("t{n}a"));
                let b = host.join(format!("t{n}b"));
                std::fs::hard_link(host.join("orig.sock"), &a).unwrap();
                std::fs::rename(&a, host.join("plugin.sock")).unwrap();
                symlink(&target, &b).unwrap();
                std::fs::rename(&b, host.join("plugin.sock")).unwrap();
                n += 1;
            }
            n
        })
    };
    let (mut ok, mut refused_symlink, mut other) = (0u32, 0u32, 0u32);
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while (ok < 300 || refused_symlink < 300) && std::time::Instant::now() < deadline {
        match dir.plugin_to_host("unix", PLUGIN_SOCK) {
            Ok((_, path)) => {
                ok += 1;
                assert_reaches(&path, &original);
                std::fs::remove_file(&path).unwrap();
            }
            Err(AddrError::Symlink { .. }) => refused_symlink += 1,
            Err(e) => {
                other += {
                    eprintln!("other refusal: {e}");
                    1
                }
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    let swaps = swapper.join().unwrap();
    eprintln!(
        "{swaps} swaps; {ok} translated, {refused_symlink} refused as symlink, {other} other"
    );
    assert!(ok > 0 && refused_symlink > 0, "the race was not exercised");
    assert!(swaps > 0);
    assert_untouched(&attacker);
}

#[test]
fn host_to_plugin_round_trip_and_refusals() {
    let (_tmp, dir) = setup();
    let host = dir.host_dir().to_str().unwrap().to_owned();
    let (net, p) = dir
        .host_to_plugin("unix", &format!("{host}/broker.sock"))
        .unwrap();
    assert_eq!(net, "unix");
    assert_eq!(p, "/run/plugin-sockets/broker.sock");

    // Round trip: the host's broker socket, announced back by the plugin, is pinned and
    // reachable.
    let broker = UnixListener::bind(format!("{host}/broker.sock")).unwrap();
    let (_, back) = dir.plugin_to_host("unix", &p).unwrap();
    assert_reaches(&back, &broker);

    for addr in [
        "/tmp/broker.sock".to_owned(),
        format!("{}/x.sock", dir.links_dir().display()),
        format!("{host}x/broker.sock"),
        back.clone(),
    ] {
        assert!(
            matches!(dir.host_to_plugin("unix", &addr), Err(AddrError::OutsideSocketDir { ref dir, .. }) if *dir == host),
            "{addr}"
        );
    }
    for (addr, why) in [
        (format!("{host}/.."), "is '.' or '..'"),
        (
            format!("{host}/../links/x"),
            "contains a '..' component (path traversal)",
        ),
        (format!("{host}/a/b"), "contains '/' (a nested path)"),
        (format!("{host}/a\0"), "contains a NUL byte"),
    ] {
        assert_eq!(
            dir.host_to_plugin("unix", &addr),
            Err(AddrError::BadName {
                addr: addr.clone(),
                why
            })
        );
    }
}

#[test]
fn host_to_plugin_refuses_results_too_long_for_the_sandbox() {
    let tmp = tempfile::tempdir().unwrap();
    let long_sandbox = format!("/{}", "s".repeat(90));
    let dir = SocketDir::create(tmp.path(), None)
        .unwrap()
        .with_sandbox_dir(&long_sandbox)
        .unwrap();
    let host = dir.host_dir().to_str().unwrap().to_owned();
    let name = "n".repeat(MAX_SOCKET_PATH - host.len() - 1);
    let addr = format!("{host}/{name}");
    assert!(addr.len() <= MAX_SOCKET_PATH);
    match dir.host_to_plugin("unix", &addr) {
        Err(AddrError::TooLong { path, max, .. }) => {
            assert_eq!(max, MAX_SOCKET_PATH);
            assert!(path.starts_with(&long_sandbox));
        }
        other => panic!("expected TooLong, got {other:?}"),
    }
    // A sandbox dir that is not normalized is refused.
    for bad in ["relative", "/a/../b", "/a/./b", "/a/", "/a//b", "/a\0b"] {
        let t = tempfile::tempdir().unwrap();
        let d = SocketDir::create(t.path(), None).unwrap();
        assert!(
            matches!(d.with_sandbox_dir(bad), Err(SocketDirError::Invalid { .. })),
            "{bad:?}"
        );
    }
}

#[test]
fn tcp_needs_a_shared_network() {
    let (tmp, private) = setup();
    for net in ["tcp", "tcp4", "tcp6"] {
        for r in [
            private.plugin_to_host(net, "127.0.0.1:1234"),
            private.host_to_plugin(net, "127.0.0.1:1234"),
        ] {
            match r {
                Err(AddrError::Unsupported { network, why }) => {
                    assert_eq!(network, net);
                    assert!(why.contains("network namespace"), "{why}");
                }
                other => panic!("expected Unsupported, got {other:?}"),
            }
        }
    }
    drop(private);
    let shared = SocketDir::create(tmp.path(), None)
        .unwrap()
        .with_host_network(true);
    assert!(shared.shares_host_network());
    assert_eq!(
        shared.plugin_to_host("tcp", "127.0.0.1:1234").unwrap(),
        ("tcp".to_owned(), "127.0.0.1:1234".to_owned())
    );
    assert_eq!(
        shared.host_to_plugin("tcp6", "[::1]:9").unwrap(),
        ("tcp6".to_owned(), "[::1]:9".to_owned())
    );
    for net in ["udp", "unixgram", "", "UNIX"] {
        assert!(
            matches!(
                shared.plugin_to_host(net, "x"),
                Err(AddrError::Unsupported { .. })
            ),
            "{net}"
        );
    }
}

#[test]
fn open_existing_keeps_the_hosts_dirs() {
    let tmp = tempfile::tempdir().unwrap();
    let host = tmp.path().join("host-chosen");
    let links = tmp.path().join("links");
    std::fs::create_dir(&host).unwrap();
    std::fs::create_dir(&links).unwrap();
    std::fs::set_permissions(&links, std::fs::Permissions::from_mode(0o700)).unwrap();
    let dir = SocketDir::open_existing(&host, &links).unwrap();
    let listener = UnixListener::bind(host.join("plugin.sock")).unwrap();
    let (_, path) = dir.plugin_to_host("unix", PLUGIN_SOCK).unwrap();
    assert_reaches(&path, &listener);
    drop(dir);
    // Only the link it made is gone.
    assert!(!Path::new(&path).exists());
    assert!(host.join("plugin.sock").exists());
    assert!(links.is_dir());

    // links_dir must be host-only and outside the plugin's directory.
    std::fs::set_permissions(&links, std::fs::Permissions::from_mode(0o777)).unwrap();
    assert!(matches!(
        SocketDir::open_existing(&host, &links),
        Err(SocketDirError::Invalid { .. })
    ));
    let inside = host.join("links");
    std::fs::create_dir(&inside).unwrap();
    std::fs::set_permissions(&inside, std::fs::Permissions::from_mode(0o700)).unwrap();
    let e = SocketDir::open_existing(&host, &inside).unwrap_err();
    assert!(e.to_string().contains("must not be"), "{e}");
    let e = SocketDir::open_existing(&host, &host).unwrap_err();
    assert!(e.to_string().contains("must not be"), "{e}");
}
