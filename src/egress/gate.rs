//! [`Egress`]: one sandbox's policy, resolver, refusal recorder, name map, connection bound
//! and shutdown token, shared by its servers.

use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

use super::mapped::NameMap;
use super::policy::{judge, Refusal, Verdict};
use super::resolve::Resolver;
use super::{Host, Refusals, Rules, Target};

/// Knobs of one sandbox's egress.
#[derive(Debug, Clone)]
pub struct EgressConfig {
    /// The host's own addresses (every address of every host interface): a wildcard or CIDR
    /// rule never reaches them. The caller gathers them (e.g. from `getifaddrs`).
    pub host_addresses: Vec<IpAddr>,
    /// Client connections served at once, over all servers of the sandbox (default 256).
    /// Connection number `max_connections + 1` *waits*: it is not accepted (it stays in the
    /// listener's backlog) until an earlier one ends.
    pub max_connections: usize,
    /// Size of each of a relay's two buffers (default 256 KiB), so a relay holds at most twice
    /// this much (all relays: at most `2 * relay_buffer * max_connections`, 128 MiB with the
    /// defaults, of which only what data went through is ever touched). Smaller costs
    /// throughput: in `benches/egress.rs` on a 2-vCPU VM, medians of 64 KiB runs
    /// were 0.36-0.49x of a direct loopback transfer, of 256 KiB runs 0.49-1.04x (noisy).
    pub relay_buffer: usize,
    /// Limit for one host-side lookup (default 5 s).
    pub lookup_timeout: Duration,
    /// Limit for one outgoing connect (default 10 s).
    pub connect_timeout: Duration,
    /// Limit for a client to say where it wants to go (SOCKS5 negotiation, HTTP request head;
    /// default 30 s).
    pub handshake_timeout: Duration,
}

impl Default for EgressConfig {
    fn default() -> EgressConfig {
        EgressConfig {
            host_addresses: Vec::new(),
            max_connections: 256,
            relay_buffer: 256 * 1024,
            lookup_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(10),
            handshake_timeout: Duration::from_secs(30),
        }
    }
}

/// Why [`Egress::connect`] did not connect.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The policy refused every address (recorded in [`Refusals`]).
    #[error("refused: {0}")]
    Refused(Refusal),
    /// The client's destination is not a valid host.
    #[error("bad destination: {0}")]
    BadTarget(String),
    /// The name could not be resolved on the host (not a refusal).
    #[error("lookup failed: {0}")]
    Lookup(io::Error),
    /// Every allowed address failed to connect (not a refusal).
    #[error("connect failed: {0}")]
    Connect(io::Error),
    /// The sandbox's egress is shutting down.
    #[error("egress shut down")]
    ShutDown,
}

/// An allowed, established outgoing connection.
#[derive(Debug)]
pub struct Connection {
    /// The socket, connected to `addr`.
    pub stream: TcpStream,
    /// The checked address it is connected to.
    pub addr: SocketAddr,
    /// The rule that allowed it, as written.
    pub rule: String,
}

/// Stops a sandbox's egress when dropped or on [`ShutdownHandle::shutdown`]: every server
/// returns, every relay ends (their sockets are closed).
#[derive(Debug)]
pub struct ShutdownHandle {
    token: CancellationToken,
}

impl ShutdownHandle {
    /// Stop now (the same as dropping the handle).
    pub fn shutdown(&self) {
        self.token.cancel();
    }
}

impl Drop for ShutdownHandle {
    fn drop(&mut self) {
        self.token.cancel();
    }
}

/// One sandbox's egress: shared (in an `Arc`) by its HTTP, SOCKS5, DNS and mapped servers.
pub struct Egress {
    rules: Rules,
    config: EgressConfig,
    resolver: Arc<dyn Resolver>,
    refusals: Refusals,
    names: NameMap,
    permits: Arc<Semaphore>,
    token: CancellationToken,
}

impl std::fmt::Debug for Egress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Egress")
            .field("rules", &self.rules)
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl Egress {
    /// A sandbox's egress with `rules`, `config` and a resolver (use
    /// [`super::resolve::SystemResolver`] outside tests). Keep the handle for as long as the
    /// sandbox lives: dropping it stops everything.
    pub fn new(
        rules: Rules,
        config: EgressConfig,
        resolver: Arc<dyn Resolver>,
    ) -> (Arc<Egress>, ShutdownHandle) {
        let token = CancellationToken::new();
        let egress = Egress {
            rules,
            permits: Arc::new(Semaphore::new(config.max_connections.max(1))),
            config,
            resolver,
            refusals: Refusals::new(),
            names: NameMap::new(),
            token: token.clone(),
        };
        (Arc::new(egress), ShutdownHandle { token })
    }

    /// The rules.
    pub fn rules(&self) -> &Rules {
        &self.rules
    }

    /// The configuration.
    pub fn config(&self) -> &EgressConfig {
        &self.config
    }

    /// The refusal recorder (clone it to keep it past the sandbox).
    pub fn refusals(&self) -> &Refusals {
        &self.refusals
    }

    /// The DNS stub's names and their `127.64.x.y` addresses.
    pub fn names(&self) -> &NameMap {
        &self.names
    }

    /// The token cancelled on shutdown.
    pub fn shutdown_token(&self) -> &CancellationToken {
        &self.token
    }

    /// Client connections that may still be admitted right now.
    pub fn available_connections(&self) -> usize {
        self.permits.available_permits()
    }

    /// Resolve (on the host, when a name rule covers the name), judge every address, and
    /// connect to the first allowed one: exactly the address judged, never a second lookup.
    /// Every decision is a `tracing` event; a refusal is recorded in [`Egress::refusals`].
    /// `via` names the server asking (`"http"`, `"socks5"`, `"mapped"`) in events.
    pub async fn connect(
        &self,
        target: &Target,
        via: &'static str,
    ) -> Result<Connection, ConnectError> {
        if self.token.is_cancelled() {
            return Err(ConnectError::ShutDown);
        }
        let port = target.port;
        let addrs = match &target.host {
            Host::Ip(ip) => vec![*ip],
            Host::Name(name) => {
                if !self.rules.covers_name(name, port) {
                    let refusal = if self.rules.covers_name_any_port(name) {
                        Refusal::PortNotAllowed
                    } else {
                        Refusal::NotListed
                    };
                    return Err(self.refuse(target, None, refusal, via));
                }
                let lookup = self.resolver.lookup(name, port);
                let answer = tokio::select! {
                    r = tokio::time::timeout(self.config.lookup_timeout, lookup) => r,
                    _ = self.token.cancelled() => return Err(ConnectError::ShutDown),
                };
                match answer {
                    Ok(Ok(addrs)) if !addrs.is_empty() => addrs,
                    Ok(Ok(_)) => {
                        let e = io::Error::new(io::ErrorKind::NotFound, "no address");
                        return Err(self.lookup_failed(target, e, via));
                    }
                    Ok(Err(e)) => return Err(self.lookup_failed(target, e, via)),
                    Err(_) => {
                        let e = io::Error::new(io::ErrorKind::TimedOut, "lookup timed out");
                        return Err(self.lookup_failed(target, e, via));
                    }
                }
            }
        };
        let own = &self.config.host_addresses;
        let mut allowed = Vec::new();
        let mut first_refusal = None;
        for addr in addrs {
            let addr = super::policy::canonical(addr);
            match judge(&self.rules, &target.host, port, addr, own) {
                Verdict::Allow { rule } => {
                    if !allowed.iter().any(|(a, _)| *a == addr) {
                        allowed.push((addr, rule));
                    }
                }
                Verdict::Refuse(refusal) => {
                    tracing::debug!(target: "sandbox_runner::egress", via, %target, %addr,
                        reason = %refusal, "address refused");
                    first_refusal.get_or_insert((addr, refusal));
                }
            }
        }
        if allowed.is_empty() {
            let (addr, refusal) = first_refusal.expect("at least one address");
            return Err(self.refuse(target, Some(addr), refusal, via));
        }
        let mut last_err = None;
        for (addr, rule) in allowed {
            let sa = SocketAddr::new(addr, port);
            let connect = tokio::time::timeout(self.config.connect_timeout, TcpStream::connect(sa));
            let result = tokio::select! {
                r = connect => r.unwrap_or_else(|_| Err(io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))),
                _ = self.token.cancelled() => return Err(ConnectError::ShutDown),
            };
            match result {
                Ok(stream) => {
                    let _ = stream.set_nodelay(true);
                    tracing::info!(target: "sandbox_runner::egress", via, %target, addr = %sa,
                        %rule, "connection allowed");
                    return Ok(Connection {
                        stream,
                        addr: sa,
                        rule,
                    });
                }
                Err(e) => {
                    tracing::info!(target: "sandbox_runner::egress", via, %target, addr = %sa,
                        %rule, error = %e, "connection allowed, connect failed");
                    last_err = Some(e);
                }
            }
        }
        Err(ConnectError::Connect(
            last_err.expect("at least one address"),
        ))
    }

    fn refuse(
        &self,
        target: &Target,
        addr: Option<IpAddr>,
        refusal: Refusal,
        via: &'static str,
    ) -> ConnectError {
        let reason = refusal.to_string();
        match addr {
            Some(addr) => tracing::warn!(target: "sandbox_runner::egress", via, %target,
                %addr, %reason, "connection refused"),
            None => tracing::warn!(target: "sandbox_runner::egress", via, %target, %reason,
                "connection refused"),
        }
        self.refusals.record(&target.to_string(), &reason);
        ConnectError::Refused(refusal)
    }

    fn lookup_failed(&self, target: &Target, e: io::Error, via: &'static str) -> ConnectError {
        tracing::info!(target: "sandbox_runner::egress", via, %target, error = %e, "lookup failed");
        ConnectError::Lookup(e)
    }

    /// Record and trace a refusal decided outside [`Egress::connect`] (an unmapped address,
    /// a bad destination).
    pub(crate) fn refuse_other(&self, target: &str, reason: &str, via: &'static str) {
        tracing::warn!(target: "sandbox_runner::egress", via, %target, %reason, "connection refused");
        self.refusals.record(target, reason);
    }

    /// Spawn `fut` so that it is dropped (closing its sockets) at shutdown.
    pub(crate) fn spawn<F>(&self, fut: F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        let token = self.token.clone();
        tokio::spawn(async move {
            tokio::select! {
                _ = fut => {}
                _ = token.cancelled() => {}
            }
        });
    }

    /// The accept loop every TCP server shares: one permit per client connection (the
    /// connection after the last permit is not accepted until one frees), `handle` spawned per
    /// connection, everything stopped at shutdown. Returns `Ok(())` at shutdown.
    pub(crate) async fn serve_tcp<F, Fut>(
        self: &Arc<Self>,
        listener: std::net::TcpListener,
        server: &'static str,
        handle: F,
    ) -> io::Result<()>
    where
        F: Fn(Arc<Egress>, TcpStream, Arc<OwnedSemaphorePermit>) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        listener.set_nonblocking(true)?;
        let listener = TcpListener::from_std(listener)?;
        tracing::debug!(target: "sandbox_runner::egress", server,
            addr = ?listener.local_addr().ok(), "serving");
        loop {
            let permit = tokio::select! {
                p = self.permits.clone().acquire_owned() => p.expect("never closed"),
                _ = self.token.cancelled() => return Ok(()),
            };
            let stream = tokio::select! {
                r = listener.accept() => r,
                _ = self.token.cancelled() => return Ok(()),
            };
            match stream {
                Ok((stream, _peer)) => {
                    let _ = stream.set_nodelay(true);
                    self.spawn(handle(self.clone(), stream, Arc::new(permit)));
                }
                Err(e) => {
                    // EMFILE and the like: wait a little rather than spin.
                    tracing::warn!(target: "sandbox_runner::egress", server, error = %e, "accept failed");
                    drop(permit);
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_millis(50)) => {}
                        _ = self.token.cancelled() => return Ok(()),
                    }
                }
            }
        }
    }
}
