//! Tests of the go-plugin handshake parser, rewriter and bounded reader.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use proptest::prelude::*;
use sandbox_runner::handshake::{
    self, parse, read_handshake, read_handshake_line, rewrite, HandshakeError, NetworkKind,
    MAX_HANDSHAKE_LINE,
};
use tokio::io::{AsyncRead, AsyncWriteExt, BufReader, ReadBuf};

/// A certificate-like base64 field (longer than go-plugin's 50-byte threshold).
const CERT: &str = "MIIBkTCB+6ADAgECAhEA1Zb2kZ3lQ0f3y8Xh0Y2p6TANBgkqhkiG9w0BAQsFADASMRAwDgYDVQQKEwdBY21lIENvMB4XDTI0MDEwMTAwMDAwMFoXDTI1MDEwMTAwMDAwMFow";

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap()
}

#[test]
fn netrpc_default_protocol() {
    let hs = parse(b"1|1|unix|/run/plugin-sockets/plugin123\n").unwrap();
    assert_eq!(hs.core_version(), "1");
    assert_eq!(hs.core_version_number(), 1);
    assert_eq!(hs.app_version(), "1");
    assert_eq!(hs.network(), "unix");
    assert_eq!(hs.network_kind(), NetworkKind::Unix);
    assert_eq!(hs.addr(), "/run/plugin-sockets/plugin123");
    assert_eq!(hs.protocol_field(), None);
    assert_eq!(hs.protocol(), "netrpc");
    assert_eq!(hs.server_cert(), None);
    assert_eq!(hs.mux(), None);
    let hs = parse(b"1|2|tcp|127.0.0.1:1234|netrpc").unwrap();
    assert_eq!(hs.network_kind(), NetworkKind::Tcp);
    assert_eq!(hs.addr(), "127.0.0.1:1234");
    assert_eq!(hs.protocol(), "netrpc");
}

#[test]
fn grpc_with_cert_and_mux() {
    let line = format!("1|5|unix|/run/plugin-sockets/p.sock|grpc|{CERT}|true\n");
    let hs = parse(line.as_bytes()).unwrap();
    assert_eq!(hs.app_version(), "5");
    assert_eq!(hs.protocol(), "grpc");
    assert_eq!(hs.server_cert(), Some(CERT));
    assert_eq!(hs.mux_field(), Some("true"));
    assert_eq!(hs.mux(), Some(true));
    assert!(hs.extra().is_empty());
    assert_eq!(hs.raw(), line.as_bytes());

    let hs = parse(b"1|5|unix|/x|grpc||false").unwrap();
    assert_eq!(hs.server_cert(), Some(""));
    assert_eq!(hs.mux(), Some(false));
    let hs = parse(b"1|5|unix|/x|grpc||maybe").unwrap();
    assert_eq!(hs.mux(), None);
}

#[test]
fn extra_parts_are_kept_like_go_plugin() {
    // go-plugin ignores parts after the seventh; a drop-in wrapper must not refuse them.
    let hs = parse(b"1|1|unix|/x|grpc|c|true|future|more\n").unwrap();
    assert_eq!(hs.extra(), vec!["future", "more"]);
    let out = rewrite(b"1|1|unix|/x|grpc|c|true|future|more\n", "unix", "/y").unwrap();
    assert_eq!(out, b"1|1|unix|/y|grpc|c|true|future|more\n");
}

#[test]
fn unknown_network_parses_but_is_typed() {
    let hs = parse(b"1|1|udp|1.2.3.4:5|grpc").unwrap();
    assert_eq!(hs.network_kind(), NetworkKind::Unknown);
}

#[test]
fn crlf_and_whitespace_like_trimspace() {
    let hs = parse(b"1|1|unix|/run/plugin-sockets/a|grpc\r\n").unwrap();
    assert_eq!(hs.protocol(), "grpc");
    let hs = parse(b"  1|1|unix|/a|grpc \t\n").unwrap();
    assert_eq!(hs.core_version(), "1");
    assert_eq!(hs.protocol(), "grpc");
    let out = rewrite(b"  1|1|unix|/a|grpc \t\r\n", "unix", "/host/b").unwrap();
    assert_eq!(out, b"  1|1|unix|/host/b|grpc \t\r\n");
}

#[test]
fn rewrite_is_byte_exact() {
    let line = format!(" 1|7|unix|/run/plugin-sockets/plugin-42|grpc|{CERT}|true\r\n");
    let new_addr = "/var/lib/sandbox/abc/links/1f-0-9a";
    let out = rewrite(line.as_bytes(), "unix", new_addr).unwrap();
    let expect = format!(" 1|7|unix|{new_addr}|grpc|{CERT}|true\r\n");
    assert_eq!(String::from_utf8(out.clone()).unwrap(), expect);
    // Every byte before and after the address is identical.
    let prefix = " 1|7|unix|".len();
    assert_eq!(out[..prefix], line.as_bytes()[..prefix]);
    let old_tail = &line.as_bytes()[prefix + "/run/plugin-sockets/plugin-42".len()..];
    assert_eq!(&out[prefix + new_addr.len()..], old_tail);

    // Network replaced too.
    let out = rewrite(b"1|1|tcp|127.0.0.1:9|grpc", "unix", "/h/s").unwrap();
    assert_eq!(out, b"1|1|unix|/h/s|grpc");
}

#[test]
fn rewrite_refuses_values_that_change_the_split() {
    for (net, addr) in [
        ("unix", "/a|b"),
        ("unix", "/a\nb"),
        ("unix", ""),
        ("unix", " /a"),
        ("un|ix", "/a"),
        ("unix", "/a\0"),
    ] {
        let e = rewrite(b"1|1|unix|/x|grpc\n", net, addr).unwrap_err();
        assert!(matches!(e, HandshakeError::BadReplacement { .. }), "{e}");
    }
}

#[test]
fn too_few_parts() {
    let e = parse(b"1|1|unix\n").unwrap_err();
    assert!(matches!(e, HandshakeError::TooFewParts { found: 3 }), "{e}");
    assert!(e.to_string().contains("expected at least 4"), "{e}");
    let e = parse(b"hello world\n").unwrap_err();
    assert!(matches!(e, HandshakeError::TooFewParts { found: 1 }), "{e}");
}

#[test]
fn empty_not_utf8_newline_core() {
    assert!(matches!(parse(b"").unwrap_err(), HandshakeError::Empty));
    assert!(matches!(
        parse(b" \r\n").unwrap_err(),
        HandshakeError::Empty
    ));
    assert!(matches!(
        parse(b"1|1|unix|/\xff|grpc\n").unwrap_err(),
        HandshakeError::NotUtf8 { offset: 10 }
    ));
    assert!(matches!(
        parse(b"1|1|unix|/a\n|grpc\n").unwrap_err(),
        HandshakeError::EmbeddedNewline { offset: 11 }
    ));
    let e = parse(b"v1|1|unix|/a|grpc\n").unwrap_err();
    assert!(matches!(&e, HandshakeError::BadCoreVersion { value } if value == "v1"));
    assert!(e.to_string().contains("not an integer"), "{e}");
}

#[test]
fn too_long() {
    let mut line = b"1|1|unix|/".to_vec();
    line.resize(MAX_HANDSHAKE_LINE + 1, b'a');
    let e = parse(&line).unwrap_err();
    assert!(matches!(e, HandshakeError::TooLong { .. }), "{e}");

    // The reader stops at the limit and keeps what it took.
    let rt = rt();
    let mut r = BufReader::new(&line[..]);
    let e = rt
        .block_on(read_handshake(&mut r, Duration::from_secs(5)))
        .unwrap_err();
    match &e {
        HandshakeError::TooLong { len, max, partial } => {
            assert_eq!(*max, MAX_HANDSHAKE_LINE);
            assert_eq!(*len, MAX_HANDSHAKE_LINE);
            assert_eq!(partial.len(), MAX_HANDSHAKE_LINE);
        }
        other => panic!("expected TooLong, got {other}"),
    }
    // A line of exactly the maximum (newline included) is read.
    let mut ok = b"1|1|unix|/".to_vec();
    ok.resize(MAX_HANDSHAKE_LINE - 1, b'a');
    ok.push(b'\n');
    let mut r = BufReader::new(&ok[..]);
    let (raw, hs) = rt
        .block_on(read_handshake(&mut r, Duration::from_secs(5)))
        .unwrap();
    assert_eq!(raw, ok);
    assert_eq!(hs.addr().len(), MAX_HANDSHAKE_LINE - 10);
}

#[test]
fn timeout_when_the_plugin_never_writes() {
    let rt = rt();
    rt.block_on(async {
        let (mut w, r) = tokio::io::duplex(64);
        w.write_all(b"1|1|un").await.unwrap();
        let mut r = BufReader::new(r);
        let start = std::time::Instant::now();
        let e = read_handshake(&mut r, Duration::from_millis(200))
            .await
            .unwrap_err();
        assert!(start.elapsed() >= Duration::from_millis(200));
        assert!(start.elapsed() < Duration::from_secs(5));
        match &e {
            HandshakeError::Timeout { partial, .. } => assert_eq!(partial, b"1|1|un"),
            other => panic!("expected Timeout, got {other}"),
        }
        assert!(e.to_string().contains("within 200ms"), "{e}");
        drop(w);
    });
}

#[test]
fn huge_timeout_means_no_deadline() {
    let rt = rt();
    let mut r = BufReader::new(&b"1|1|unix|/a|grpc\n"[..]);
    let (_, hs) = rt.block_on(read_handshake(&mut r, Duration::MAX)).unwrap();
    assert_eq!(hs.addr(), "/a");
}

#[test]
fn eof_before_newline() {
    let rt = rt();
    let mut r = BufReader::new(&b"1|1|unix|/a|grpc"[..]);
    let e = rt
        .block_on(read_handshake(&mut r, Duration::from_secs(5)))
        .unwrap_err();
    assert!(matches!(&e, HandshakeError::Eof { partial } if partial == b"1|1|unix|/a|grpc"));
    assert!(e.to_string().contains("no newline at end of file"), "{e}");
    let mut r = BufReader::new(&b""[..]);
    let e = rt
        .block_on(read_handshake(&mut r, Duration::from_secs(5)))
        .unwrap_err();
    assert!(matches!(&e, HandshakeError::Eof { partial } if partial.is_empty()));
    assert!(e.to_string().contains("exited early"), "{e}");
}

#[test]
fn reader_leaves_the_rest_of_stdout() {
    let rt = rt();
    let data = b"1|1|unix|/a|grpc\nlog line\n";
    let mut r = BufReader::new(&data[..]);
    let (raw, hs) = rt
        .block_on(read_handshake(&mut r, Duration::from_secs(5)))
        .unwrap();
    assert_eq!(raw, b"1|1|unix|/a|grpc\n");
    assert_eq!(hs.addr(), "/a");
    let rest = rt
        .block_on(read_handshake_line(&mut r, Duration::from_secs(5)))
        .unwrap();
    assert_eq!(rest, b"log line\n");
}

/// An `AsyncRead` that hands out fixed chunks, returning `Pending` (and waking itself) before
/// each one, to exercise every split point of the reader.
struct Chunked {
    chunks: Vec<Vec<u8>>,
    next: usize,
    pending: bool,
}

impl AsyncRead for Chunked {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.pending {
            self.pending = true;
            cx.waker().wake_by_ref();
            return Poll::Pending;
        }
        self.pending = false;
        let next = self.next;
        if let Some(chunk) = self.chunks.get_mut(next) {
            let n = chunk.len().min(buf.remaining());
            buf.put_slice(&chunk[..n]);
            chunk.drain(..n);
            if chunk.is_empty() {
                self.next += 1;
            }
        }
        Poll::Ready(Ok(()))
    }
}

fn split_at_points(data: &[u8], cuts: &[usize]) -> Vec<Vec<u8>> {
    let mut points: Vec<usize> = cuts.iter().map(|c| c % (data.len() + 1)).collect();
    points.sort_unstable();
    points.dedup();
    let mut chunks = Vec::new();
    let mut last = 0;
    for p in points {
        if p > last {
            chunks.push(data[last..p].to_vec());
            last = p;
        }
    }
    if last < data.len() {
        chunks.push(data[last..].to_vec());
    }
    chunks
}

/// A field without `|`, line breaks or surrounding whitespace.
fn field() -> impl Strategy<Value = String> {
    "[A-Za-z0-9/._:+=-]{1,40}"
}

fn valid_line() -> impl Strategy<Value = String> {
    (
        0i64..100,
        field(),
        prop_oneof![Just("unix".to_owned()), Just("tcp".to_owned()), field()],
        field(),
        proptest::collection::vec(proptest::option::of(field()), 0..4),
        prop_oneof![Just(""), Just("\n"), Just("\r\n")],
        prop_oneof![Just(""), Just(" "), Just("\t ")],
    )
        .prop_map(|(core, app, net, addr, rest, end, pad)| {
            let mut parts = vec![core.to_string(), app, net, addr];
            parts.extend(rest.into_iter().map(Option::unwrap_or_default));
            format!("{pad}{}{pad}{end}", parts.join("|"))
        })
}

proptest! {
    #[test]
    fn parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        match parse(&bytes) {
            Ok(hs) => prop_assert_eq!(hs.raw(), &bytes[..]),
            Err(e) => prop_assert!(!e.to_string().is_empty()),
        }
    }

    #[test]
    fn parse_never_panics_on_pipes(s in "[|0-9a-z \r\n\u{a0}\u{3000}]{0,64}") {
        let _ = parse(s.as_bytes());
    }

    #[test]
    fn rewrite_round_trips(line in valid_line(), net in field(), addr in field()) {
        let before = parse(line.as_bytes()).unwrap();
        let out = rewrite(line.as_bytes(), &net, &addr).unwrap();
        let after = parse(&out).unwrap();
        prop_assert_eq!(after.network(), net.as_str());
        prop_assert_eq!(after.addr(), addr.as_str());
        prop_assert_eq!(after.core_version(), before.core_version());
        prop_assert_eq!(after.app_version(), before.app_version());
        prop_assert_eq!(after.protocol_field(), before.protocol_field());
        prop_assert_eq!(after.server_cert(), before.server_cert());
        prop_assert_eq!(after.mux_field(), before.mux_field());
        prop_assert_eq!(after.extra(), before.extra());
        // Bytes outside the two fields are untouched: same prefix up to the network field,
        // same suffix after the address field.
        let l = line.as_bytes();
        let pre = l.len() - l.trim_ascii_start().len() + before.core_version().len()
            + before.app_version().len() + 2;
        prop_assert_eq!(&out[..pre], &l[..pre]);
        let suffix_len = l.len() - pre - before.network().len() - 1 - before.addr().len();
        prop_assert_eq!(&out[out.len() - suffix_len..], &l[l.len() - suffix_len..]);
        // Rewriting back restores the original exactly.
        let back = rewrite(&out, before.network(), before.addr()).unwrap();
        prop_assert_eq!(back, l.to_vec());
    }

    #[test]
    fn reader_handles_any_chunking(
        line in valid_line(),
        tail in proptest::collection::vec(any::<u8>(), 0..64),
        cuts in proptest::collection::vec(any::<usize>(), 0..12),
        cap in 1usize..32,
    ) {
        let mut line = line;
        if !line.ends_with('\n') {
            line.push('\n');
        }
        let mut data = line.clone().into_bytes();
        data.extend_from_slice(&tail);
        let reader = Chunked { chunks: split_at_points(&data, &cuts), next: 0, pending: false };
        let mut r = BufReader::with_capacity(cap, reader);
        let (raw, hs) = rt()
            .block_on(read_handshake(&mut r, Duration::from_secs(5)))
            .unwrap();
        prop_assert_eq!(&raw, line.as_bytes());
        prop_assert_eq!(hs, handshake::parse(line.as_bytes()).unwrap());
    }

    #[test]
    fn reader_never_panics(
        data in proptest::collection::vec(any::<u8>(), 0..256),
        cuts in proptest::collection::vec(any::<usize>(), 0..8),
    ) {
        let reader = Chunked { chunks: split_at_points(&data, &cuts), next: 0, pending: false };
        let mut r = BufReader::with_capacity(7, reader);
        match rt().block_on(read_handshake_line(&mut r, Duration::from_secs(5))) {
            Ok(line) => {
                prop_assert!(line.ends_with(b"\n"));
                prop_assert_eq!(&data[..line.len()], &line[..]);
            }
            Err(HandshakeError::Eof { partial }) => prop_assert_eq!(partial, data),
            Err(e) => prop_assert!(false, "unexpected error {}", e),
        }
    }
}

// ------------------------------------------------------------ the gate: forwarded => rewritten

#[path = "common/gohost.rs"]
mod gohost;

use sandbox_runner::addr::SocketDir;
use sandbox_runner::handshake::{for_host, read_for_host, HostHandshake};
use std::os::unix::fs::MetadataExt;

/// A real socket directory with one socket, `p.sock`, and a host-only socket beside it.
struct Gate {
    _tmp: tempfile::TempDir,
    dir: SocketDir,
    _plugin: std::os::unix::net::UnixListener,
    plugin_ino: u64,
    host_only: String,
}

const PLUGIN_ADDR: &str = "/run/plugin-sockets/p.sock";

impl Gate {
    fn new() -> Gate {
        let tmp = tempfile::tempdir().unwrap();
        let dir = SocketDir::create(tmp.path(), None).unwrap();
        let plugin = std::os::unix::net::UnixListener::bind(dir.host_dir().join("p.sock")).unwrap();
        let plugin_ino = std::fs::metadata(dir.host_dir().join("p.sock"))
            .unwrap()
            .ino();
        let host_only = tmp.path().join("host-only.sock");
        let _ = std::os::unix::net::UnixListener::bind(&host_only).unwrap();
        Gate {
            host_only: host_only.to_str().unwrap().to_owned(),
            _tmp: tmp,
            dir,
            _plugin: plugin,
            plugin_ino,
        }
    }

    /// Runs the gate over a whole stdout stream: what would reach the host (the rewritten
    /// line and everything after it), or the refusal.
    fn pass(&self, stdout: &[u8]) -> Result<(HostHandshake, Vec<u8>), HandshakeError> {
        let mut r: &[u8] = stdout;
        let h = rt().block_on(read_for_host(&mut r, Duration::from_secs(5), &self.dir))?;
        let mut out = h.line.clone();
        out.extend_from_slice(r);
        Ok((h, out))
    }

    /// Asserts the property: whatever passes is, as a go-plugin host reads it, a unix address
    /// in the links directory that leads to the plugin's verified socket.
    fn assert_forwarded_is_rewritten(&self, out: &[u8], h: &HostHandshake) {
        let (net, addr) = gohost::go_plugin_dial_target(out).expect("forwarded a non-handshake");
        assert_eq!(net, b"unix");
        assert_eq!(addr, h.addr.as_bytes());
        let links = format!("{}/", self.dir.links_dir().display());
        assert!(h.addr.starts_with(&links), "{} not in {links}", h.addr);
        let md = std::fs::symlink_metadata(&h.addr).unwrap();
        assert_eq!(
            md.ino(),
            self.plugin_ino,
            "the link is not the plugin's socket"
        );
        assert!(std::os::unix::fs::FileTypeExt::is_socket(&md.file_type()));
    }
}

#[test]
fn gate_refuses_every_bypass_shape() {
    let g = Gate::new();
    let host = g.host_only.clone();
    let long = format!("1|1|unix|{host}|grpc|{}\n", "A".repeat(70_000));
    let cases: Vec<(Vec<u8>, &str)> = vec![
        // A byte that is not UTF-8 after the fourth '|' (go-plugin has no UTF-8 check).
        (
            format!("1|1|unix|{host}|grpc|\u{1}")
                .into_bytes()
                .into_iter()
                .chain(*b"\xff\n")
                .collect(),
            "not valid UTF-8",
        ),
        (
            [format!("1|1|unix|{host}|").as_bytes(), b"gr\xffpc\n"].concat(),
            "not valid UTF-8",
        ),
        // No newline before end of file: a go-plugin Scanner still returns the line.
        (
            format!("1|1|unix|{host}|grpc").into_bytes(),
            "no newline at end of file",
        ),
        (
            b"1|1|tcp|127.0.0.1:1|grpc".to_vec(),
            "no newline at end of file",
        ),
        // Longer than the reader's limit.
        (long.into_bytes(), "longer than"),
        // TCP, and unix paths outside the socket directory, in every shape go-plugin trims.
        (b"1|1|tcp|127.0.0.1:1|grpc\n".to_vec(), "cannot cross"),
        (format!("1|1|unix|{host}|grpc\n").into_bytes(), "refused"),
        (format!("1|1|unix|{host}|grpc\r\n").into_bytes(), "refused"),
        (
            format!(" \t\u{a0}+1|1|unix|{host}|grpc\u{3000}\r\n").into_bytes(),
            "refused",
        ),
        (format!("1|1|unix|{host}\n").into_bytes(), "refused"),
        (
            format!("1|1|unix|/run/plugin-sockets/../..{host}|grpc\n").into_bytes(),
            "refused",
        ),
        // Not a handshake at all.
        (b"hello world\n".to_vec(), "expected at least 4"),
        (b"\n".to_vec(), "empty"),
        (
            b"x|1|unix|/run/plugin-sockets/p.sock|grpc\n".to_vec(),
            "not an integer",
        ),
    ];
    for (stdout, why) in cases {
        let shown = String::from_utf8_lossy(&stdout[..stdout.len().min(80)]).into_owned();
        match g.pass(&stdout) {
            Ok((h, _)) => panic!("passed {shown:?} as {:?}", h.addr),
            Err(e) => assert!(e.to_string().contains(why), "{shown:?}: {e}"),
        }
    }
}

#[test]
fn gate_passes_every_shape_go_plugin_accepts() {
    let g = Gate::new();
    let cert = CERT;
    for line in [
        format!("1|1|unix|{PLUGIN_ADDR}|grpc\n"),
        format!("1|1|unix|{PLUGIN_ADDR}|grpc\r\n"),
        format!("1|1|unix|{PLUGIN_ADDR}\n"),
        format!(" \t\u{a0}+1|1|unix|{PLUGIN_ADDR}|grpc \u{3000}\r\n"),
        format!("1|5|unix|{PLUGIN_ADDR}|grpc|{cert}|true|future|more\n"),
        format!("1|5|unix|{PLUGIN_ADDR}|grpc||\n"),
    ] {
        let mut stdout = line.clone().into_bytes();
        stdout.extend_from_slice(b"after\n\xff raw bytes pass after the handshake");
        let (h, out) = g.pass(&stdout).unwrap_or_else(|e| panic!("{line:?}: {e}"));
        g.assert_forwarded_is_rewritten(&out, &h);
        // Only the address changed, and the rest of stdout follows unchanged.
        let expect = line.replace(PLUGIN_ADDR, &h.addr);
        assert_eq!(h.line, expect.as_bytes());
        assert!(out.ends_with(b"after\n\xff raw bytes pass after the handshake"));
    }
}

#[test]
fn gate_refuses_a_rewrite_that_would_outgrow_the_scanner() {
    // The plugin's line fits; with the longer host address it would not: refused, since a
    // go-plugin host would fail on it anyway and nothing half-read may reach it.
    let g = Gate::new();
    let prefix = format!("1|1|unix|{PLUGIN_ADDR}|grpc|");
    let mut line = prefix.clone().into_bytes();
    line.resize(MAX_HANDSHAKE_LINE - 1, b'A');
    line.push(b'\n');
    let e = g.pass(&line).unwrap_err();
    assert!(matches!(e, HandshakeError::TooLong { .. }), "{e}");
}

/// Pieces an adversarial plugin might put in its first line.
fn piece() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        Just(b"1".to_vec()),
        Just(b"+1".to_vec()),
        Just(b"|".to_vec()),
        Just(b"unix".to_vec()),
        Just(b"tcp".to_vec()),
        Just(b"grpc".to_vec()),
        Just(PLUGIN_ADDR.as_bytes().to_vec()),
        Just(b"/run/plugin-sockets/".to_vec()),
        Just(b"../".to_vec()),
        Just(b"/var/tmp/host-only.sock".to_vec()),
        Just(b"127.0.0.1:1".to_vec()),
        Just(b" ".to_vec()),
        Just(b"\t".to_vec()),
        Just(b"\r".to_vec()),
        Just(b"\n".to_vec()),
        Just(b"\r\n".to_vec()),
        Just("\u{a0}".as_bytes().to_vec()),
        Just("\u{85}".as_bytes().to_vec()),
        Just("\u{3000}".as_bytes().to_vec()),
        Just(b"\xff".to_vec()),
        Just(b"\xc2".to_vec()),
        Just(b"\xa0".to_vec()),
        Just(b"\0".to_vec()),
        Just(vec![b'A'; 70_000]),
        proptest::collection::vec(any::<u8>(), 0..8),
    ]
}

/// A line shaped like a handshake around the plugin's real socket, with decorations.
fn near_handshake() -> impl Strategy<Value = Vec<u8>> {
    (
        proptest::collection::vec(piece(), 0..3),
        proptest::collection::vec(piece(), 0..4),
        proptest::collection::vec(piece(), 0..4),
    )
        .prop_map(|(pre, mid, post)| {
            let mut v = pre.concat();
            v.extend_from_slice(b"1|1|unix|");
            v.extend_from_slice(PLUGIN_ADDR.as_bytes());
            v.extend(mid.concat());
            v.extend_from_slice(b"|grpc");
            v.extend(post.concat());
            v
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Forwarded => rewritten: whatever stdout a plugin writes, the gate either refuses, or
    /// what it passes on is read by a go-plugin host as a unix address in the links directory
    /// that leads to the plugin's own socket.
    #[test]
    fn gate_forwards_only_rewritten_handshakes(
        stdout in prop_oneof![
            proptest::collection::vec(piece(), 0..12).prop_map(|p| p.concat()),
            near_handshake(),
        ]
    ) {
        let g = Gate::new();
        match g.pass(&stdout) {
            Ok((h, out)) => g.assert_forwarded_is_rewritten(&out, &h),
            Err(_) => {
                // Refused: nothing reaches the host. A line go-plugin would dial as the
                // plugin's own socket must not be refused, if it is terminated, UTF-8 and
                // within the limit.
                if let Some((net, addr)) = gohost::go_plugin_dial_target(&stdout) {
                    let line = gohost::first_scanner_line(&stdout).unwrap();
                    let plain = stdout.contains(&b'\n')
                        && std::str::from_utf8(&stdout[..=stdout.iter().position(|&b| b == b'\n').unwrap()]).is_ok()
                        && line.len() < MAX_HANDSHAKE_LINE - 200;
                    prop_assert!(
                        !(plain && net == b"unix" && addr == PLUGIN_ADDR.as_bytes()),
                        "refused a handshake go-plugin accepts: {:?}",
                        String::from_utf8_lossy(line)
                    );
                }
            }
        }
    }

    /// `for_host` refuses a line without its newline whatever it holds.
    #[test]
    fn gate_refuses_unterminated_lines(line in near_handshake()) {
        let g = Gate::new();
        let line: Vec<u8> = line.into_iter().filter(|&b| b != b'\n').collect();
        prop_assert!(for_host(&line, &g.dir).is_err());
    }
}

/// The go-plugin model itself, on shapes whose outcome in Go is known.
#[test]
fn model_matches_go_on_known_shapes() {
    let t = gohost::go_plugin_dial_target;
    assert_eq!(
        t(b"1|1|unix|/a|grpc\n"),
        Some((b"unix".to_vec(), b"/a".to_vec()))
    );
    assert_eq!(
        t(b"1|1|unix|/a|grpc"),
        Some((b"unix".to_vec(), b"/a".to_vec()))
    );
    assert_eq!(
        t(b" +1|1|tcp|/a\r\n"),
        Some((b"tcp".to_vec(), b"/a".to_vec()))
    );
    assert_eq!(
        t(b"1|1|unix|/a \xc2\xa0\n"),
        Some((b"unix".to_vec(), b"/a".to_vec()))
    );
    assert_eq!(
        t(b"1|1|unix|/a\xa0\n"),
        Some((b"unix".to_vec(), b"/a\xa0".to_vec()))
    );
    assert_eq!(t(b"\xff1|1|unix|/a\n"), None);
    assert_eq!(t(b"1|1|unix\n1|1|unix|/a\n"), None);
    assert_eq!(t(b""), None);
}
