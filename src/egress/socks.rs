//! The sandbox's SOCKS5 server (fast-socks5): no authentication, `CONNECT` only, names
//! resolved by the runner (`socks5h`), every destination through [`Egress::connect`].

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use fast_socks5::server::Socks5ServerProtocol;
use fast_socks5::util::target_addr::TargetAddr;
use fast_socks5::{ReplyError, Socks5Command};
use tokio::net::TcpStream;

use super::{ConnectError, Egress, Target};

/// Serve SOCKS5 on `listener` until shutdown. A refused destination gets reply `0x02`
/// ("connection not allowed by ruleset"), a lookup failure `0x04` (host unreachable), a
/// failed connect `0x05` (connection refused), any command but `CONNECT` `0x07`.
///
/// `listener` is a bound, listening std socket (made in the sandbox's namespace); it is set
/// non-blocking here. Must be called within a tokio runtime.
pub async fn serve_socks(egress: Arc<Egress>, listener: std::net::TcpListener) -> io::Result<()> {
    egress
        .serve_tcp(listener, "socks5", |egress, stream, permit| async move {
            let _permit = permit;
            if let Err(e) = handle(&egress, stream).await {
                tracing::debug!(target: "sandbox_runner::egress", via = "socks5", error = %e,
                    "client ended");
            }
        })
        .await
}

async fn handle(
    egress: &Egress,
    stream: TcpStream,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let head = async {
        let proto = Socks5ServerProtocol::accept_no_auth(stream).await?;
        proto.read_command().await
    };
    let (proto, cmd, addr) = tokio::time::timeout(egress.config().handshake_timeout, head)
        .await
        .map_err(|_| "handshake timed out")??;
    if !matches!(cmd, Socks5Command::TCPConnect) {
        proto.reply_error(&ReplyError::CommandNotSupported).await?;
        return Ok(());
    }
    let target = match &addr {
        TargetAddr::Ip(sa) => Target::new(&sa.ip().to_string(), sa.port()),
        TargetAddr::Domain(name, port) => Target::new(name, *port),
    };
    let target = match target {
        Ok(t) => t,
        Err(reason) => {
            egress.refuse_other(&addr.to_string(), &reason, "socks5");
            proto.reply_error(&ReplyError::ConnectionNotAllowed).await?;
            return Ok(());
        }
    };
    match egress.connect(&target, "socks5").await {
        Ok(conn) => {
            // The bound address reported to the client: the runner's side of the connection.
            let bound = conn
                .stream
                .local_addr()
                .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
            let mut client = proto.reply_success(bound).await?;
            super::relay::relay_traced(egress, &mut client, conn, "socks5").await;
        }
        Err(e) => {
            let reply = match e {
                ConnectError::Refused(_) | ConnectError::BadTarget(_) => {
                    ReplyError::ConnectionNotAllowed
                }
                ConnectError::Lookup(_) => ReplyError::HostUnreachable,
                ConnectError::Connect(_) | ConnectError::ShutDown => ReplyError::ConnectionRefused,
            };
            proto.reply_error(&reply).await?;
        }
    }
    Ok(())
}
