//! The sandbox's HTTP proxy (hyper 1.x): `CONNECT host:port` tunnels (what HTTPS, gRPC and
//! most clients use) and absolute-form requests (`GET http://host/path`), every destination
//! through [`Egress::connect`].
//!
//! Answers of the proxy itself: `403 Forbidden` for a refused destination (the body says
//! why), `502 Bad Gateway` when the lookup or the connect fails, `400 Bad Request` for a
//! request that is not a proxy request (origin-form, `https://` without `CONNECT`, no port in
//! a `CONNECT`). An absolute-form request is sent upstream in origin form over a new
//! connection of its own, hop-by-hop headers (`Connection` and those it names,
//! `Proxy-Connection`, `Proxy-Authorization`, `Keep-Alive`, `TE`, `Trailer`,
//! `Transfer-Encoding`, `Upgrade`) removed both ways; protocol upgrades (WebSocket) are
//! supported through `CONNECT` only.

use std::convert::Infallible;
use std::io;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::header::{HeaderMap, HeaderName, HeaderValue, CONNECTION, HOST};
use hyper::http::uri::{Authority, Scheme};
use hyper::{Method, Request, Response, StatusCode, Uri};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;

use super::{ConnectError, Egress, Target};

type Body = BoxBody<Bytes, hyper::Error>;

/// Serve the HTTP proxy on `listener` until shutdown.
///
/// `listener` is a bound, listening std socket (made in the sandbox's namespace); it is set
/// non-blocking here. Must be called within a tokio runtime.
pub async fn serve_http(egress: Arc<Egress>, listener: std::net::TcpListener) -> io::Result<()> {
    egress
        .serve_tcp(listener, "http", |egress, stream, permit| async move {
            let timeout = egress.config().handshake_timeout;
            let service = hyper::service::service_fn(move |req| {
                let egress = egress.clone();
                let permit = permit.clone();
                async move { Ok::<_, Infallible>(handle(egress, permit, req).await) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(timeout)
                .preserve_header_case(true)
                .title_case_headers(true)
                .serve_connection(TokioIo::new(stream), service)
                .with_upgrades();
            if let Err(e) = conn.await {
                tracing::debug!(target: "sandbox_runner::egress", via = "http", error = %e,
                    "client connection ended");
            }
        })
        .await
}

fn text(status: StatusCode, msg: impl Into<String>) -> Response<Body> {
    let mut body = msg.into();
    body.push('\n');
    let mut resp = Response::new(
        Full::new(Bytes::from(body))
            .map_err(|never| match never {})
            .boxed(),
    );
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    resp
}

fn error_response(target: &str, e: &ConnectError) -> Response<Body> {
    let status = match e {
        ConnectError::Refused(_) => StatusCode::FORBIDDEN,
        ConnectError::BadTarget(_) => StatusCode::BAD_REQUEST,
        ConnectError::Lookup(_) | ConnectError::Connect(_) => StatusCode::BAD_GATEWAY,
        ConnectError::ShutDown => StatusCode::SERVICE_UNAVAILABLE,
    };
    text(status, format!("sandbox-runner: {target}: {e}"))
}

fn target_of(
    egress: &Egress,
    authority: &Authority,
    default_port: Option<u16>,
) -> Result<Target, Box<Response<Body>>> {
    let port = authority.port_u16().or(default_port).ok_or_else(|| {
        Box::new(text(
            StatusCode::BAD_REQUEST,
            format!("sandbox-runner: {authority}: a port is required"),
        ))
    })?;
    Target::new(authority.host(), port).map_err(|reason| {
        egress.refuse_other(authority.as_str(), &reason, "http");
        Box::new(error_response(
            authority.as_str(),
            &ConnectError::BadTarget(reason),
        ))
    })
}

async fn handle(
    egress: Arc<Egress>,
    permit: Arc<OwnedSemaphorePermit>,
    req: Request<Incoming>,
) -> Response<Body> {
    if req.method() == Method::CONNECT {
        return connect(egress, permit, req).await;
    }
    let uri = req.uri().clone();
    let Some(authority) = uri.authority() else {
        return text(
            StatusCode::BAD_REQUEST,
            "sandbox-runner: this is a proxy: send absolute-form requests \
             (GET http://host/path) or CONNECT host:port",
        );
    };
    if uri.scheme() != Some(&Scheme::HTTP) {
        return text(
            StatusCode::BAD_REQUEST,
            format!("sandbox-runner: {uri}: only http:// in absolute form; use CONNECT for TLS"),
        );
    }
    let target = match target_of(&egress, authority, Some(80)) {
        Ok(t) => t,
        Err(resp) => return *resp,
    };
    let conn = match egress.connect(&target, "http").await {
        Ok(c) => c,
        Err(e) => return error_response(&target.to_string(), &e),
    };
    let (mut sender, connection) = match hyper::client::conn::http1::Builder::new()
        .preserve_header_case(true)
        .title_case_headers(true)
        .handshake::<_, Incoming>(TokioIo::new(conn.stream))
        .await
    {
        Ok(x) => x,
        Err(e) => {
            return text(
                StatusCode::BAD_GATEWAY,
                format!("sandbox-runner: {target}: {e}"),
            )
        }
    };
    egress.spawn(async move {
        let _ = connection.await;
    });

    let (mut parts, body) = req.into_parts();
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    parts.uri = path
        .parse::<Uri>()
        .unwrap_or_else(|_| Uri::from_static("/"));
    remove_hop_by_hop(&mut parts.headers);
    if !parts.headers.contains_key(HOST) {
        if let Ok(v) = HeaderValue::from_str(authority.as_str()) {
            parts.headers.insert(HOST, v);
        }
    }
    match sender.send_request(Request::from_parts(parts, body)).await {
        Ok(resp) => {
            let (mut parts, body) = resp.into_parts();
            remove_hop_by_hop(&mut parts.headers);
            Response::from_parts(parts, body.boxed())
        }
        Err(e) => text(
            StatusCode::BAD_GATEWAY,
            format!("sandbox-runner: {target}: {e}"),
        ),
    }
}

async fn connect(
    egress: Arc<Egress>,
    permit: Arc<OwnedSemaphorePermit>,
    req: Request<Incoming>,
) -> Response<Body> {
    let Some(authority) = req.uri().authority().cloned() else {
        return text(
            StatusCode::BAD_REQUEST,
            "sandbox-runner: CONNECT needs host:port",
        );
    };
    let target = match target_of(&egress, &authority, None) {
        Ok(t) => t,
        Err(resp) => return *resp,
    };
    let conn = match egress.connect(&target, "http").await {
        Ok(c) => c,
        Err(e) => return error_response(&target.to_string(), &e),
    };
    let relay_egress = egress.clone();
    egress.spawn(async move {
        // The client connection's permit stays taken until the tunnel ends too.
        let _permit = permit;
        match hyper::upgrade::on(req).await {
            // Take the client's socket back from hyper (with any bytes it read past the
            // request head) so the tunnel is relayed socket to socket.
            Ok(upgraded) => match upgraded.downcast::<TokioIo<TcpStream>>() {
                Ok(parts) => {
                    let mut conn = conn;
                    if !parts.read_buf.is_empty()
                        && conn.stream.write_all(&parts.read_buf).await.is_err()
                    {
                        return;
                    }
                    let mut client = parts.io.into_inner();
                    super::relay::relay_traced(&relay_egress, &mut client, conn, "http").await;
                }
                Err(upgraded) => {
                    let mut client = TokioIo::new(upgraded);
                    super::relay::relay_traced(&relay_egress, &mut client, conn, "http").await;
                }
            },
            Err(e) => tracing::debug!(target: "sandbox_runner::egress", via = "http",
                %target, error = %e, "CONNECT upgrade failed"),
        }
    });
    Response::new(Empty::new().map_err(|never| match never {}).boxed())
}

fn remove_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in [
        "connection",
        "proxy-connection",
        "proxy-authorization",
        "proxy-authenticate",
        "keep-alive",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    ] {
        headers.remove(name);
    }
}
