//! Name resolution on the host, behind a trait so tests can inject answers.

use std::collections::HashMap;
use std::io;
use std::net::IpAddr;

use async_trait::async_trait;

/// Resolves a (normalized) name to addresses, on the host.
#[async_trait]
pub trait Resolver: Send + Sync + 'static {
    /// Every address of `name` (the port is only a hint for resolvers that want one). An empty
    /// answer or an error means the connection is not made.
    async fn lookup(&self, name: &str, port: u16) -> io::Result<Vec<IpAddr>>;
}

/// The host's resolver, through `tokio::net::lookup_host` (getaddrinfo on a blocking thread).
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemResolver;

#[async_trait]
impl Resolver for SystemResolver {
    async fn lookup(&self, name: &str, port: u16) -> io::Result<Vec<IpAddr>> {
        let mut out = Vec::new();
        for sa in tokio::net::lookup_host((name, port)).await? {
            if !out.contains(&sa.ip()) {
                out.push(sa.ip());
            }
        }
        Ok(out)
    }
}

/// Fixed answers, for tests: names not in the table fail with `NotFound`.
#[derive(Debug, Clone, Default)]
pub struct StaticResolver {
    answers: HashMap<String, Vec<IpAddr>>,
}

impl StaticResolver {
    /// An empty table.
    pub fn new() -> StaticResolver {
        StaticResolver::default()
    }

    /// Answer `name` (normalized: lower case ASCII, no trailing dot) with `addrs`.
    pub fn with(mut self, name: &str, addrs: &[IpAddr]) -> StaticResolver {
        self.answers.insert(name.to_string(), addrs.to_vec());
        self
    }
}

#[async_trait]
impl Resolver for StaticResolver {
    async fn lookup(&self, name: &str, _port: u16) -> io::Result<Vec<IpAddr>> {
        self.answers
            .get(name)
            .cloned()
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("{name}: no such name")))
    }
}
