//! The `127.64.x.y` names: the DNS stub hands each allowed name a private loopback address,
//! and a "mapped" listener turns the address a client connected to back into that name.
//!
//! In the sandbox, a mapped listener for port P is bound where connections to any
//! `127.64.x.y:P` arrive: `0.0.0.0:P` in the sandbox's namespace, where only `lo` exists
//! (that also takes `127.0.0.1:P` from the plugin; connections there are refused as
//! unmapped), or one listener per handed-out address. [`serve_mapped`] reads each accepted
//! socket's *local* address, finds the name in the [`NameMap`] and connects through
//! [`super::Egress::connect`] to `name:P`, judged like any other connection.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};

use super::{Egress, Host, Target};

/// First address handed out: `127.64.0.1`.
pub const FIRST_MAPPED: Ipv4Addr = Ipv4Addr::new(127, 64, 0, 1);
/// Last address handed out: `127.64.255.254` (65,534 names per sandbox).
pub const LAST_MAPPED: Ipv4Addr = Ipv4Addr::new(127, 64, 255, 254);

/// Names and their `127.64.x.y` addresses, stable for the life of one sandbox's egress: the
/// first query for a name gets the next free address, later ones the same.
#[derive(Debug, Default)]
pub struct NameMap {
    inner: Mutex<Maps>,
}

#[derive(Debug, Default)]
struct Maps {
    by_name: HashMap<String, Ipv4Addr>,
    by_addr: HashMap<Ipv4Addr, String>,
}

impl NameMap {
    /// An empty map.
    pub fn new() -> NameMap {
        NameMap::default()
    }

    /// The address of `name` (normalized), allotting the next free one the first time; `None`
    /// once all 65,534 are taken.
    pub fn address_for(&self, name: &str) -> Option<Ipv4Addr> {
        let mut maps = self.inner.lock().unwrap();
        if let Some(a) = maps.by_name.get(name) {
            return Some(*a);
        }
        let next = u32::from(FIRST_MAPPED) + maps.by_name.len() as u32;
        if next > u32::from(LAST_MAPPED) {
            return None;
        }
        let addr = Ipv4Addr::from(next);
        maps.by_name.insert(name.to_string(), addr);
        maps.by_addr.insert(addr, name.to_string());
        Some(addr)
    }

    /// The name `addr` was handed out for, if any (IPv4-mapped IPv6 addresses are accepted).
    pub fn name_for(&self, addr: IpAddr) -> Option<String> {
        match super::policy::canonical(addr) {
            IpAddr::V4(a) => self.inner.lock().unwrap().by_addr.get(&a).cloned(),
            IpAddr::V6(_) => None,
        }
    }

    /// How many names have an address.
    pub fn len(&self) -> usize {
        self.inner.lock().unwrap().by_name.len()
    }

    /// Whether no name has an address yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Serve a mapped listener until shutdown: for each client, the address it connected to
/// (`127.64.x.y:P`, the socket's local address) is mapped back to the name the DNS stub
/// gave it, and the client is relayed to `name:P` through [`Egress::connect`]. A client that
/// connected to an address the map does not know is refused (recorded) and closed.
///
/// `listener` is a bound, listening std socket (made in the sandbox's namespace); it is set
/// non-blocking here. Must be called within a tokio runtime.
pub async fn serve_mapped(egress: Arc<Egress>, listener: std::net::TcpListener) -> io::Result<()> {
    egress
        .serve_tcp(listener, "mapped", |egress, stream, permit| async move {
            let _permit = permit;
            let mut stream = stream;
            let local: SocketAddr = match stream.local_addr() {
                Ok(a) => a,
                Err(_) => return,
            };
            let Some(name) = egress.names().name_for(local.ip()) else {
                egress.refuse_other(
                    &local.to_string(),
                    "not an address the DNS stub handed out",
                    "mapped",
                );
                return;
            };
            let target = Target {
                host: Host::Name(name),
                port: local.port(),
            };
            if let Ok(conn) = egress.connect(&target, "mapped").await {
                super::relay::relay_traced(&egress, &mut stream, conn, "mapped").await;
            }
        })
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_stable_per_name_and_map_back() {
        let m = NameMap::new();
        let a = m.address_for("a.test").unwrap();
        let b = m.address_for("b.test").unwrap();
        assert_eq!(a, FIRST_MAPPED);
        assert_eq!(b, Ipv4Addr::new(127, 64, 0, 2));
        assert_eq!(m.address_for("a.test"), Some(a));
        assert_eq!(m.name_for(IpAddr::V4(b)).as_deref(), Some("b.test"));
        assert_eq!(
            m.name_for(IpAddr::V6(a.to_ipv6_mapped())).as_deref(),
            Some("a.test")
        );
        assert_eq!(m.name_for("127.64.0.3".parse().unwrap()), None);
        assert_eq!(m.len(), 2);
    }

    #[test]
    fn the_map_is_bounded() {
        let m = NameMap::new();
        for i in 0..65534 {
            assert!(m.address_for(&format!("n{i}.test")).is_some());
        }
        assert_eq!(m.address_for("one-too-many.test"), None);
        assert_eq!(
            m.name_for(IpAddr::V4(LAST_MAPPED)).as_deref(),
            Some("n65533.test")
        );
    }
}
