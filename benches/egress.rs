//! Egress proxy costs (issue 13), next to a direct loopback baseline measured in the same run.
//!
//! 1. Throughput: `EGRESS_BYTES` (default 1 GiB) written by a client to a sink server on
//!    127.0.0.1, which reads to end of file and answers one byte; timed from the connection
//!    being ready to that byte. *direct*: the client connects to the sink. *CONNECT tunnel*:
//!    the client opens a tunnel through the egress HTTP proxy (`CONNECT bench.test:PORT`,
//!    answered by an injected resolver with 127.0.0.1) and writes through it; the proxy
//!    relays with its default 256 KiB buffers (`EGRESS_RELAY_KIB` to try others). Writes are
//!    128 KiB. `EGRESS_RUNS` (default 3) runs of each, interleaved; the ratio is of the
//!    medians (target: at least 0.8x). Each run also reports the CPU time (user + system)
//!    the whole process used meanwhile: client, proxy and sink all run in it, so on a
//!    machine shared with other work, where wall-clock rates swing with the CPU left to this
//!    process, the ratio of CPU time per GiB still says what the tunnel costs.
//! 2. Connection setup: `EGRESS_SETUP_N` (default 1000) sequential connections, each until a
//!    1-byte echo came back. *direct*: TCP connect to an echo server + echo. *CONNECT*: TCP
//!    connect to the proxy, HTTP/1 handshake, `CONNECT`, 200, echo through the tunnel (the
//!    proxy resolves, judges and connects on the way). The overhead is the difference of the
//!    medians (target: under 1 ms).
//!
//! Everything is on this machine's loopback; the runtime is tokio's multi-thread one with two
//! workers (`EGRESS_WORKERS`), serving both the proxy and the clients, unless
//! `EGRESS_PROXY_WORKERS` gives the proxy a runtime of its own on threads of its own (1: a
//! current-thread runtime, as in `sandbox-run`; more: a multi-thread one, as in a library
//! host), which is where the proxy runs in the product: apart from the plugin and the server.

mod common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Empty;
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use sandbox_runner::egress::resolve::StaticResolver;
use sandbox_runner::egress::{http, Egress, EgressConfig, Rules};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const LOCAL: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Reads each connection to end of file, then answers one byte.
async fn sink_server() -> SocketAddr {
    let listener = TcpListener::bind((LOCAL, 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (mut s, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 128 * 1024];
                loop {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(_) => {}
                    }
                }
                let _ = s.write_all(b"!").await;
            });
        }
    });
    addr
}

/// Echoes every byte back.
async fn echo_server() -> SocketAddr {
    let listener = TcpListener::bind((LOCAL, 0)).await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (s, _) = listener.accept().await.unwrap();
            let _ = s.set_nodelay(true);
            tokio::spawn(async move {
                let (mut r, mut w) = tokio::io::split(s);
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    addr
}

async fn tunnel(proxy: SocketAddr, target: &str) -> TokioIo<hyper::upgrade::Upgraded> {
    let stream = TcpStream::connect(proxy).await.unwrap();
    stream.set_nodelay(true).unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn.with_upgrades());
    let req = Request::builder()
        .method(Method::CONNECT)
        .uri(target)
        .header("host", target)
        .body(Empty::<Bytes>::new())
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    TokioIo::new(hyper::upgrade::on(resp).await.unwrap())
}

/// CPU time (user + system) this process used so far, all threads.
fn cpu_time() -> Duration {
    let u = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_SELF).unwrap();
    let d = |t: nix::sys::time::TimeVal| {
        Duration::from_secs(t.tv_sec() as u64) + Duration::from_micros(t.tv_usec() as u64)
    };
    d(u.user_time()) + d(u.system_time())
}

/// Writes `bytes` and waits for the sink's answer: the wall-clock time and the process's CPU
/// time meanwhile.
async fn push<S: AsyncRead + AsyncWrite + Unpin>(mut s: S, bytes: u64) -> (Duration, Duration) {
    let chunk = vec![0u8; 128 * 1024];
    let cpu = cpu_time();
    let start = Instant::now();
    let mut left = bytes;
    while left > 0 {
        let n = left.min(chunk.len() as u64) as usize;
        s.write_all(&chunk[..n]).await.unwrap();
        left -= n as u64;
    }
    s.shutdown().await.unwrap();
    let mut ack = [0u8; 1];
    s.read_exact(&mut ack).await.unwrap();
    (start.elapsed(), cpu_time().saturating_sub(cpu))
}

async fn echo_once<S: AsyncRead + AsyncWrite + Unpin>(s: &mut S) {
    s.write_all(b"x").await.unwrap();
    let mut b = [0u8; 1];
    s.read_exact(&mut b).await.unwrap();
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn pct(v: &[f64], p: f64) -> f64 {
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(env_u64("EGRESS_WORKERS", 2).max(1) as usize)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(run());
}

async fn run() {
    let bytes = env_u64("EGRESS_BYTES", 1 << 30);
    let runs = env_u64("EGRESS_RUNS", 3).max(1);
    let setup_n = env_u64("EGRESS_SETUP_N", 1000).max(1);
    println!("egress bench on {}", common::machine());

    let sink = sink_server().await;
    let echo = echo_server().await;
    let rules = Rules::parse([
        format!("bench.test:{}", sink.port()),
        format!("bench.test:{}", echo.port()),
    ])
    .unwrap();
    let resolver = Arc::new(StaticResolver::new().with("bench.test", &[LOCAL]));
    let mut config = EgressConfig::default();
    config.relay_buffer =
        env_u64("EGRESS_RELAY_KIB", (config.relay_buffer / 1024) as u64) as usize * 1024;
    println!(
        "relay buffer: {} KiB per direction",
        config.relay_buffer / 1024
    );
    let listener = std::net::TcpListener::bind((LOCAL, 0)).unwrap();
    let proxy = listener.local_addr().unwrap();
    let proxy_workers = env_u64("EGRESS_PROXY_WORKERS", 0) as usize;
    let (egress, _stop) = if proxy_workers == 0 {
        let (egress, stop) = Egress::new(rules, config, resolver);
        tokio::spawn(http::serve_http(egress.clone(), listener));
        (egress, stop)
    } else {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let rt = if proxy_workers == 1 {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap()
            } else {
                tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(proxy_workers)
                    .enable_all()
                    .build()
                    .unwrap()
            };
            rt.block_on(async move {
                let (egress, stop) = Egress::new(rules, config, resolver);
                tx.send((egress.clone(), stop)).unwrap();
                let _ = http::serve_http(egress, listener).await;
            });
        });
        rx.recv().unwrap()
    };
    println!(
        "proxy runtime: {}",
        match proxy_workers {
            0 => "the bench's own".to_string(),
            1 => "a current-thread runtime of its own".to_string(),
            n => format!("a runtime of its own, {n} workers"),
        }
    );

    // 1. Throughput.
    let sink_target = format!("bench.test:{}", sink.port());
    let gib = bytes as f64 / (1u64 << 30) as f64;
    println!("\nthroughput: {gib:.2} GiB per run, {runs} runs each, interleaved");
    // Warm up both ways once with a smaller transfer.
    push(TcpStream::connect(sink).await.unwrap(), bytes / 8).await;
    push(tunnel(proxy, &sink_target).await, bytes / 8).await;
    let (mut direct, mut tunneled) = (Vec::new(), Vec::new());
    let (mut direct_cpu, mut tunneled_cpu) = (Vec::new(), Vec::new());
    let ms = |d: Duration| d.as_secs_f64() * 1e3;
    for _ in 0..runs {
        let (d, d_cpu) = push(TcpStream::connect(sink).await.unwrap(), bytes).await;
        let (t, t_cpu) = push(tunnel(proxy, &sink_target).await, bytes).await;
        let rate = |d: Duration| bytes as f64 / d.as_secs_f64() / (1u64 << 30) as f64;
        direct.push(rate(d));
        tunneled.push(rate(t));
        direct_cpu.push(ms(d_cpu) / gib);
        tunneled_cpu.push(ms(t_cpu) / gib);
        println!(
            "  run: direct {:.2} GiB/s ({:.0} ms, CPU {:.0} ms), CONNECT tunnel {:.2} GiB/s ({:.0} ms, CPU {:.0} ms)",
            rate(d),
            ms(d),
            ms(d_cpu),
            rate(t),
            ms(t),
            ms(t_cpu)
        );
    }
    let (md, mt) = (median(&mut direct), median(&mut tunneled));
    println!(
        "  median: direct {md:.2} GiB/s, CONNECT tunnel {mt:.2} GiB/s, ratio {:.2}x (target >= 0.8x)",
        mt / md
    );
    let (cd, ct) = (median(&mut direct_cpu), median(&mut tunneled_cpu));
    println!(
        "  CPU time per GiB (median): direct {cd:.0} ms, CONNECT tunnel {ct:.0} ms, ratio {:.2}x",
        cd / ct
    );

    // 2. Connection setup.
    let echo_target = format!("bench.test:{}", echo.port());
    println!("\nconnection setup: {setup_n} sequential connections each way, interleaved");
    let (mut d_us, mut t_us) = (Vec::new(), Vec::new());
    for _ in 0..setup_n {
        let start = Instant::now();
        let mut s = TcpStream::connect(echo).await.unwrap();
        s.set_nodelay(true).unwrap();
        echo_once(&mut s).await;
        d_us.push(start.elapsed().as_secs_f64() * 1e6);
        drop(s);

        let start = Instant::now();
        let mut t = tunnel(proxy, &echo_target).await;
        echo_once(&mut t).await;
        t_us.push(start.elapsed().as_secs_f64() * 1e6);
        drop(t);
    }
    d_us.sort_by(|a, b| a.partial_cmp(b).unwrap());
    t_us.sort_by(|a, b| a.partial_cmp(b).unwrap());
    for (name, v) in [("direct", &d_us), ("CONNECT", &t_us)] {
        println!(
            "  {name:8} p50 {:7.1} µs  p90 {:7.1} µs  p99 {:7.1} µs",
            pct(v, 0.5),
            pct(v, 0.9),
            pct(v, 0.99)
        );
    }
    println!(
        "  overhead p50: {:.1} µs (target < 1000 µs)",
        pct(&t_us, 0.5) - pct(&d_us, 0.5)
    );
    println!(
        "\nrefusals: {}",
        egress.refusals().summary().unwrap_or_else(|| "none".into())
    );
}
