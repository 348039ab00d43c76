//! Component tests of the egress servers (issue 13), unprivileged.
//!
//! Every socket of these tests is on this machine's loopback, and no test sends a packet to
//! any other address, not even one the policy should refuse: names are answered by an
//! injected resolver that maps test names (`allowed.test`, `other.test`, `a.wild.test`) to
//! `127.0.0.1`, and IP rules name `127.0.0.1:PORT`. The servers are given listeners on
//! `127.0.0.1`; the only other local addresses used are `127.0.0.2` (an unlisted loopback
//! address, only ever refused) and the `127.64.x.y` addresses the DNS stub hands out, where
//! the mapped listeners are bound (loopback too: `127.0.0.0/8` is routed to `lo`).
//! Upstream servers count their accepts, so a refusal is shown to have reached nobody.

use std::convert::Infallible;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use fast_socks5::client::{Config as SocksConfig, Socks5Stream};
use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::{Name, RData, RecordType};
use http_body_util::{BodyExt, Empty, Full};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use sandbox_runner::egress::resolve::StaticResolver;
use sandbox_runner::egress::{
    dns, http, mapped, socks, Egress, EgressConfig, Rules, ShutdownHandle,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};

const LOCAL: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// A server on 127.0.0.1 that counts the connections it accepted.
struct Upstream {
    addr: SocketAddr,
    accepts: Arc<AtomicUsize>,
}

impl Upstream {
    fn port(&self) -> u16 {
        self.addr.port()
    }
    fn accepts(&self) -> usize {
        self.accepts.load(Ordering::SeqCst)
    }
}

/// Echoes every byte back.
async fn echo_server() -> Upstream {
    let listener = TcpListener::bind((LOCAL, 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepts = Arc::new(AtomicUsize::new(0));
    let count = accepts.clone();
    tokio::spawn(async move {
        loop {
            let (mut s, _) = listener.accept().await.unwrap();
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    Upstream { addr, accepts }
}

/// Answers every request with `upstream saw <method> <uri> host=<host> proxy-connection=<..>`.
async fn http_server() -> Upstream {
    let listener = TcpListener::bind((LOCAL, 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    let accepts = Arc::new(AtomicUsize::new(0));
    let count = accepts.clone();
    tokio::spawn(async move {
        loop {
            let (s, _) = listener.accept().await.unwrap();
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let svc =
                    hyper::service::service_fn(|req: Request<hyper::body::Incoming>| async move {
                        let h = |n: &str| {
                            req.headers()
                                .get(n)
                                .map(|v| v.to_str().unwrap().to_string())
                                .unwrap_or_else(|| "-".into())
                        };
                        let text = format!(
                            "upstream saw {} {} host={} proxy-connection={}",
                            req.method(),
                            req.uri(),
                            h("host"),
                            h("proxy-connection")
                        );
                        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from(text))))
                    });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    Upstream { addr, accepts }
}

fn resolver() -> Arc<StaticResolver> {
    Arc::new(
        StaticResolver::new()
            .with("allowed.test", &[LOCAL])
            .with("other.test", &[LOCAL])
            .with("a.wild.test", &[LOCAL]),
    )
}

fn egress(rules: &[String]) -> (Arc<Egress>, ShutdownHandle) {
    egress_with(rules, EgressConfig::default())
}

fn egress_with(rules: &[String], config: EgressConfig) -> (Arc<Egress>, ShutdownHandle) {
    Egress::new(Rules::parse(rules).unwrap(), config, resolver())
}

type Serve = fn(Arc<Egress>, std::net::TcpListener) -> tokio::task::JoinHandle<io::Result<()>>;

fn std_listener() -> std::net::TcpListener {
    std::net::TcpListener::bind((LOCAL, 0)).unwrap()
}

/// Start a server of `egress` on a fresh 127.0.0.1 listener; its address and task.
fn start(
    egress: &Arc<Egress>,
    serve: Serve,
) -> (SocketAddr, tokio::task::JoinHandle<io::Result<()>>) {
    let listener = std_listener();
    let addr = listener.local_addr().unwrap();
    (addr, serve(egress.clone(), listener))
}

fn http_proxy(e: Arc<Egress>, l: std::net::TcpListener) -> tokio::task::JoinHandle<io::Result<()>> {
    tokio::spawn(http::serve_http(e, l))
}

fn socks_proxy(
    e: Arc<Egress>,
    l: std::net::TcpListener,
) -> tokio::task::JoinHandle<io::Result<()>> {
    tokio::spawn(socks::serve_socks(e, l))
}

/// An HTTP/1 client connection to the proxy.
async fn proxy_client(proxy: SocketAddr) -> hyper::client::conn::http1::SendRequest<Empty<Bytes>> {
    let stream = TcpStream::connect(proxy).await.unwrap();
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn.with_upgrades());
    sender
}

/// `CONNECT target` through the proxy: the status, and the tunnel when it is 200.
async fn connect_via(
    proxy: SocketAddr,
    target: &str,
) -> (
    StatusCode,
    String,
    Option<TokioIo<hyper::upgrade::Upgraded>>,
) {
    let mut sender = proxy_client(proxy).await;
    let req = Request::builder()
        .method(Method::CONNECT)
        .uri(target)
        .header("host", target)
        .body(Empty::<Bytes>::new())
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    let status = resp.status();
    if status == StatusCode::OK {
        let up = hyper::upgrade::on(resp).await.unwrap();
        (status, String::new(), Some(TokioIo::new(up)))
    } else {
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned(), None)
    }
}

async fn echo_roundtrip<S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin>(s: &mut S) {
    s.write_all(b"ping through the sandbox").await.unwrap();
    let mut buf = [0u8; 24];
    tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut buf))
        .await
        .expect("echo in time")
        .unwrap();
    assert_eq!(&buf, b"ping through the sandbox");
}

#[tokio::test]
async fn http_absolute_form_get_reaches_the_named_server() {
    let up = http_server().await;
    let (egress, _stop) = egress(&[format!("allowed.test:{}", up.port())]);
    let (proxy, _) = start(&egress, http_proxy);
    let mut sender = proxy_client(proxy).await;
    let uri = format!("http://Allowed.Test.:{}/hello?x=1", up.port());
    let req = Request::builder()
        .uri(&uri)
        .header("host", format!("allowed.test:{}", up.port()))
        .header("proxy-connection", "keep-alive")
        .body(Empty::<Bytes>::new())
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(
        String::from_utf8_lossy(&body),
        format!(
            "upstream saw GET /hello?x=1 host=allowed.test:{} proxy-connection=-",
            up.port()
        )
    );
    // A second request on the same client connection works too.
    let req = Request::builder()
        .uri(format!("http://allowed.test:{}/again", up.port()))
        .body(Empty::<Bytes>::new())
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(up.accepts(), 2);
    assert_eq!(egress.refusals().summary(), None);
}

#[tokio::test]
async fn http_connect_tunnel_relays_both_ways() {
    let up = echo_server().await;
    let (egress, _stop) = egress(&[
        format!("allowed.test:{}", up.port()),
        format!("127.0.0.1:{}", up.port()),
    ]);
    let (proxy, _) = start(&egress, http_proxy);
    let (status, _, tunnel) = connect_via(proxy, &format!("allowed.test:{}", up.port())).await;
    assert_eq!(status, StatusCode::OK);
    echo_roundtrip(&mut tunnel.unwrap()).await;
    // An IP rule names 127.0.0.1 explicitly.
    let (status, _, tunnel) = connect_via(proxy, &format!("127.0.0.1:{}", up.port())).await;
    assert_eq!(status, StatusCode::OK);
    echo_roundtrip(&mut tunnel.unwrap()).await;
    assert_eq!(up.accepts(), 2);
}

#[tokio::test]
async fn socks5_with_remote_resolution() {
    let up = echo_server().await;
    let (egress, _stop) = egress(&[format!("allowed.test:{}", up.port())]);
    let (proxy, _) = start(&egress, socks_proxy);
    let mut s = Socks5Stream::connect(
        proxy,
        "allowed.test".to_string(),
        up.port(),
        SocksConfig::default(),
    )
    .await
    .unwrap();
    echo_roundtrip(&mut s).await;
    assert_eq!(up.accepts(), 1);

    // A name no rule allows: "connection not allowed by ruleset", nobody reached.
    let err = Socks5Stream::connect(
        proxy,
        "other.test".to_string(),
        up.port(),
        SocksConfig::default(),
    )
    .await
    .unwrap_err();
    assert!(err.to_string().contains("not allowed"), "{err}");
    assert_eq!(up.accepts(), 1);
    assert_eq!(
        egress.refusals().summary().unwrap(),
        format!("network: 1 connection refused (other.test:{})", up.port())
    );
}

/// Send one DNS query to the stub over UDP and parse the reply (hickory-proto both ways).
async fn dns_query(stub: SocketAddr, name: &str, qtype: RecordType) -> Message {
    let mut msg = Message::new();
    msg.set_id(4242)
        .set_message_type(MessageType::Query)
        .set_op_code(OpCode::Query)
        .set_recursion_desired(true)
        .add_query(Query::query(Name::from_utf8(name).unwrap(), qtype));
    let sock = UdpSocket::bind((LOCAL, 0)).await.unwrap();
    sock.send_to(&msg.to_vec().unwrap(), stub).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let (n, from) = tokio::time::timeout(Duration::from_secs(5), sock.recv_from(&mut buf))
        .await
        .expect("DNS reply in time")
        .unwrap();
    assert_eq!(from, stub);
    let reply = Message::from_vec(&buf[..n]).unwrap();
    assert_eq!(reply.id(), 4242);
    assert_eq!(reply.message_type(), MessageType::Response);
    reply
}

fn a_records(m: &Message) -> Vec<Ipv4Addr> {
    m.answers()
        .iter()
        .filter_map(|r| match r.data() {
            RData::A(a) => Some(a.0),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn dns_stub_hands_out_127_64_addresses_that_mapped_listeners_connect() {
    let up = echo_server().await;
    let (egress, _stop) = egress(&[format!("allowed.test:{}", up.port())]);
    let stub_sock = std::net::UdpSocket::bind((LOCAL, 0)).unwrap();
    let stub = stub_sock.local_addr().unwrap();
    tokio::spawn(dns::serve_dns(egress.clone(), stub_sock));

    let reply = dns_query(stub, "allowed.test.", RecordType::A).await;
    assert_eq!(reply.response_code(), ResponseCode::NoError);
    let addrs = a_records(&reply);
    assert_eq!(addrs.len(), 1);
    let mapped_ip = addrs[0];
    assert_eq!(mapped_ip.octets()[..2], [127, 64]);
    // Stable per name, whatever the case or script of the query.
    let again = dns_query(stub, "ALLOWED.test", RecordType::A).await;
    assert_eq!(a_records(&again), vec![mapped_ip]);
    // AAAA of an allowed name: no records, no error (clients fall back to A).
    let aaaa = dns_query(stub, "allowed.test.", RecordType::AAAA).await;
    assert_eq!(aaaa.response_code(), ResponseCode::NoError);
    assert!(aaaa.answers().is_empty());
    // A name no rule allows: NXDOMAIN, recorded.
    let other = dns_query(stub, "other.test.", RecordType::A).await;
    assert_eq!(other.response_code(), ResponseCode::NXDomain);
    assert!(other.answers().is_empty());

    // The mapped listener for the port, where connections to the 127.64.x.y address arrive.
    let listener = std::net::TcpListener::bind((mapped_ip, up.port())).unwrap();
    tokio::spawn(mapped::serve_mapped(egress.clone(), listener));
    let mut s = TcpStream::connect((mapped_ip, up.port())).await.unwrap();
    echo_roundtrip(&mut s).await;
    assert_eq!(up.accepts(), 1);

    // An address the stub never handed out: refused, closed, nobody reached.
    let stray = Ipv4Addr::new(127, 64, 0, 200);
    let listener = std::net::TcpListener::bind((stray, up.port())).unwrap();
    tokio::spawn(mapped::serve_mapped(egress.clone(), listener));
    let mut s = TcpStream::connect((stray, up.port())).await.unwrap();
    let mut buf = [0u8; 1];
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
        .await
        .expect("closed in time")
        .unwrap_or(0);
    assert_eq!(n, 0);
    assert_eq!(up.accepts(), 1);
    assert_eq!(
        egress.refusals().summary().unwrap(),
        format!(
            "network: 1 connection refused (127.64.0.200:{}); 1 name refused by DNS (other.test)",
            up.port()
        )
    );
}

#[tokio::test]
async fn refusals_reach_nobody_and_are_named_in_the_summary() {
    let up = echo_server().await;
    let other_port = echo_server().await;
    let (egress, _stop) = egress(&[
        format!("allowed.test:{}", up.port()),
        format!("*.wild.test:{}", up.port()),
        // (No IP rule naming 127.0.0.1 here: it would allow that address whatever the name.)
    ]);
    let (proxy, _) = start(&egress, http_proxy);
    let refused = [
        // Another port of an allowed host (a server listens there).
        format!("allowed.test:{}", other_port.port()),
        // An unlisted loopback address.
        format!("127.0.0.2:{}", up.port()),
        // A name no rule allows (the resolver would say 127.0.0.1).
        format!("other.test:{}", up.port()),
        // A wildcard rule never reaches loopback.
        format!("a.wild.test:{}", up.port()),
        format!("other.test:{}", up.port()),
    ];
    for target in &refused {
        let (status, body, _) = connect_via(proxy, target).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{target}: {body}");
        assert!(body.contains("refused"), "{body}");
    }
    // Absolute form is judged the same way.
    let mut sender = proxy_client(proxy).await;
    let req = Request::builder()
        .uri(format!("http://other.test:{}/", up.port()))
        .body(Empty::<Bytes>::new())
        .unwrap();
    assert_eq!(
        sender.send_request(req).await.unwrap().status(),
        StatusCode::FORBIDDEN
    );
    assert_eq!(up.accepts(), 0);
    assert_eq!(other_port.accepts(), 0);
    let summary = egress.refusals().summary().unwrap();
    assert_eq!(
        summary,
        format!(
            "network: 6 connections refused (allowed.test:{o}, 127.0.0.2:{p}, other.test:{p} x3, \
             a.wild.test:{p})",
            o = other_port.port(),
            p = up.port()
        )
    );
    let snap = egress.refusals().snapshot();
    assert_eq!(snap.connections_refused, 6);
    assert!(snap.connections[3].reason.contains("loopback"), "{snap:?}");
    let json = serde_json::to_string(&snap).unwrap();
    assert!(json.contains("\"a.wild.test:"), "{json}");
}

/// The bound: with 256 client connections open, the 257th is not served (it *waits*, in the
/// listener's backlog) until one of them ends; then it is served normally.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_257_waits_for_a_free_slot() {
    let up = echo_server().await;
    let (egress, _stop) = egress(&[format!("allowed.test:{}", up.port())]);
    assert_eq!(egress.config().max_connections, 256);
    let (proxy, _) = start(&egress, http_proxy);
    let mut idle = Vec::new();
    for _ in 0..256 {
        idle.push(TcpStream::connect(proxy).await.unwrap());
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while egress.available_connections() > 0 {
        assert!(tokio::time::Instant::now() < deadline, "256 not admitted");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let target = format!("allowed.test:{}", up.port());
    let late = tokio::spawn(async move { connect_via(proxy, &target).await });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(!late.is_finished(), "the 257th connection was served");
    assert_eq!(up.accepts(), 0);
    drop(idle.pop());
    let (status, _, tunnel) = tokio::time::timeout(Duration::from_secs(10), late)
        .await
        .expect("served once a slot freed")
        .unwrap();
    assert_eq!(status, StatusCode::OK);
    echo_roundtrip(&mut tunnel.unwrap()).await;
}

#[tokio::test]
async fn shutdown_ends_servers_and_relays() {
    let up = echo_server().await;
    let (egress, stop) = egress(&[format!("allowed.test:{}", up.port())]);
    let (proxy, http_task) = start(&egress, http_proxy);
    let (socks_addr, socks_task) = start(&egress, socks_proxy);
    let (status, _, tunnel) = connect_via(proxy, &format!("allowed.test:{}", up.port())).await;
    assert_eq!(status, StatusCode::OK);
    let mut tunnel = tunnel.unwrap();
    echo_roundtrip(&mut tunnel).await;
    let mut s = Socks5Stream::connect(
        socks_addr,
        "allowed.test".to_string(),
        up.port(),
        SocksConfig::default(),
    )
    .await
    .unwrap();
    echo_roundtrip(&mut s).await;

    drop(stop);
    for task in [http_task, socks_task] {
        tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .expect("server returned")
            .unwrap()
            .unwrap();
    }
    let mut buf = [0u8; 8];
    let n = tokio::time::timeout(Duration::from_secs(5), tunnel.read(&mut buf))
        .await
        .expect("tunnel ended")
        .unwrap_or(0);
    assert_eq!(n, 0);
    let n = tokio::time::timeout(Duration::from_secs(5), s.read(&mut buf))
        .await
        .expect("socks relay ended")
        .unwrap_or(0);
    assert_eq!(n, 0);
    assert!(TcpStream::connect(proxy).await.is_err(), "listener closed");
}
