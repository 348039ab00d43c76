//! The sandbox's DNS stub (messages parsed and built with hickory-proto).
//!
//! It answers `A` queries for each name a name or wildcard rule covers (on any port) with the
//! name's private loopback address `127.64.x.y` from the egress's [`super::mapped::NameMap`]
//! (stable for the life of the sandbox), so programs that ignore proxies connect to a mapped
//! listener, which connects to the name. Nothing is resolved on the host here: the real lookup
//! happens per connection, at connect time. Other names get `NXDOMAIN` (recorded in
//! [`super::Refusals`] as a DNS refusal), so no query of the sandbox ever leaves the host.
//! `AAAA` and other types of an allowed name get an empty answer (`NOERROR`, no records), so
//! clients fall back to `A`.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use hickory_proto::op::{Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{DNSClass, RData, Record, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{normalize_name, Egress};

/// Time to live of the stub's answers, in seconds (the addresses never change while the
/// sandbox lives; a short TTL only costs a loopback query).
pub const TTL: u32 = 60;

/// Serve DNS over UDP on `socket` until shutdown.
///
/// `socket` is a bound std UDP socket (made in the sandbox's namespace, e.g. `127.0.0.53:53`,
/// the address its `resolv.conf` names); it is set non-blocking here. Must be called within
/// a tokio runtime.
pub async fn serve_dns(egress: Arc<Egress>, socket: std::net::UdpSocket) -> io::Result<()> {
    socket.set_nonblocking(true)?;
    let socket = tokio::net::UdpSocket::from_std(socket)?;
    let mut buf = vec![0u8; 4096];
    loop {
        let (n, peer): (usize, SocketAddr) = tokio::select! {
            r = socket.recv_from(&mut buf) => match r {
                Ok(x) => x,
                // ICMP errors of earlier replies and the like: keep serving.
                Err(_) => continue,
            },
            _ = egress.shutdown_token().cancelled() => return Ok(()),
        };
        if let Some(reply) = answer(&egress, &buf[..n]) {
            let _ = socket.send_to(&reply, peer).await;
        }
    }
}

/// Serve DNS over TCP on `listener` until shutdown (RFC 1035 4.2.2 framing: each message
/// is preceded by its length as two bytes; several queries may follow on one connection).
/// Clients use TCP after a truncated UDP answer or when told to (`options use-vc`); the
/// stub's answers are the same as over UDP. A connection idle for the handshake timeout is
/// closed.
///
/// `listener` is a bound, listening std socket (made in the sandbox's namespace, e.g.
/// `127.0.0.1:53`); it is set non-blocking here. Must be called within a tokio runtime.
pub async fn serve_dns_tcp(egress: Arc<Egress>, listener: std::net::TcpListener) -> io::Result<()> {
    egress
        .serve_tcp(
            listener,
            "dns-tcp",
            |egress, mut stream, permit| async move {
                let _permit = permit;
                let idle = egress.config().handshake_timeout;
                let mut buf = vec![0u8; u16::MAX as usize];
                loop {
                    let mut len = [0u8; 2];
                    match tokio::time::timeout(idle, stream.read_exact(&mut len)).await {
                        Ok(Ok(_)) => {}
                        _ => return,
                    }
                    let n = usize::from(u16::from_be_bytes(len));
                    let query = &mut buf[..n];
                    match tokio::time::timeout(idle, stream.read_exact(query)).await {
                        Ok(Ok(_)) => {}
                        _ => return,
                    }
                    let Some(reply) = answer(&egress, query) else {
                        return;
                    };
                    let Ok(rlen) = u16::try_from(reply.len()) else {
                        return;
                    };
                    let mut out = Vec::with_capacity(reply.len() + 2);
                    out.extend_from_slice(&rlen.to_be_bytes());
                    out.extend_from_slice(&reply);
                    if stream.write_all(&out).await.is_err() {
                        return;
                    }
                }
            },
        )
        .await
}

/// The stub's reply to one query message (wire format in, wire format out); `None` when the
/// bytes are not a DNS query at all (nothing is sent back).
pub fn answer(egress: &Egress, query: &[u8]) -> Option<Vec<u8>> {
    let request = Message::from_vec(query).ok()?;
    if request.message_type() != MessageType::Query {
        return None;
    }
    let mut reply = Message::new();
    reply
        .set_id(request.id())
        .set_message_type(MessageType::Response)
        .set_op_code(request.op_code())
        .set_recursion_desired(request.recursion_desired())
        .set_recursion_available(true);
    if request.op_code() != OpCode::Query {
        reply.set_response_code(ResponseCode::NotImp);
        return reply.to_vec().ok();
    }
    let [q] = request.queries() else {
        reply.set_response_code(ResponseCode::FormErr);
        return reply.to_vec().ok();
    };
    reply.add_query(q.clone());
    let (code, record) = decide(egress, q);
    reply.set_response_code(code);
    if let Some(record) = record {
        reply.set_authoritative(true).add_answer(record);
    }
    reply.to_vec().ok()
}

fn decide(egress: &Egress, q: &Query) -> (ResponseCode, Option<Record>) {
    let written = q.name().to_utf8();
    let name = match normalize_name(&written) {
        Ok(n) if egress.rules().covers_name_any_port(&n) => n,
        Ok(n) => {
            tracing::warn!(target: "sandbox_runner::egress", via = "dns", name = %n,
                qtype = %q.query_type(), "name refused (NXDOMAIN)");
            egress
                .refusals()
                .record_name(&n, "no rule allows this name");
            return (ResponseCode::NXDomain, None);
        }
        Err(reason) => {
            tracing::warn!(target: "sandbox_runner::egress", via = "dns", name = %written,
                %reason, "name refused (NXDOMAIN)");
            egress.refusals().record_name(&written, &reason);
            return (ResponseCode::NXDomain, None);
        }
    };
    if q.query_class() != DNSClass::IN {
        return (ResponseCode::NoError, None);
    }
    if !matches!(q.query_type(), RecordType::A | RecordType::ANY) {
        tracing::debug!(target: "sandbox_runner::egress", via = "dns", %name,
            qtype = %q.query_type(), "no records of this type");
        return (ResponseCode::NoError, None);
    }
    match egress.names().address_for(&name) {
        Some(addr) => {
            tracing::info!(target: "sandbox_runner::egress", via = "dns", %name, %addr,
                "name answered");
            let record = Record::from_rdata(q.name().clone(), TTL, RData::A(A(addr)));
            (ResponseCode::NoError, Some(record))
        }
        None => {
            tracing::warn!(target: "sandbox_runner::egress", via = "dns", %name,
                "no 127.64.x.y address left (SERVFAIL)");
            (ResponseCode::ServFail, None)
        }
    }
}
