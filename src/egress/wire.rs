//! One sandbox's egress, wired end to end: from its allow-list to the servers on listeners
//! inside its network namespace, the proxy environment, the generated `/etc/resolv.conf` and
//! `/etc/hosts`, and the end of everything with the sandbox.
//!
//! The runner (`sandbox::start`) uses a [`SandboxEgress`] in this order:
//!
//! 1. [`SandboxEgress::new`] (when the runner is built): the rules are checked against the
//!    rest of the profile and the ports inside the sandbox are chosen ([`Ports`]); the
//!    plan gets [`SandboxEgress::env`] and [`SandboxEgress::files`].
//! 2. [`SandboxEgress::write_files`] (at start, in the sandbox's state directory, which is
//!    removed with the sandbox).
//! 3. [`SandboxEgress::start`] once the sandbox's init exists and, not yet released, waits on
//!    its sync pipe: a dedicated thread (never a tokio thread: a thread that called `setns`
//!    is not reused) enters the init's network namespace (`setns` on a pidfd, or on
//!    `/proc/PID/ns/net` before Linux 5.8), brings `lo` up, binds every listener and exits;
//!    the sockets stay in the namespace they were made in and are served from the host's
//!    tokio runtime. No process of the sandbox's runs for this. In rootless mode the host
//!    may not enter a network namespace owned by the sandbox's user namespace, and a
//!    multi-threaded process cannot enter a user namespace: that thread clones a short-lived
//!    child of the host instead (`child::netns`: `CLONE_VM | CLONE_VFORK | CLONE_FILES`),
//!    which enters both namespaces as their owner, makes the same sockets straight into the
//!    host's fd table and exits, still before the sandbox is let go.
//! 4. The returned [`ShutdownHandle`] lives as long as the sandbox: the runner drops it when
//!    it reaps the init (wait, kill, time limit, drop), which stops every server and relay;
//!    [`SandboxEgress::join`] then waits for them to be gone.

use std::collections::BTreeSet;
use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, UdpSocket};
use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::resolve::{Resolver, SystemResolver};
use super::{
    dns, http, mapped, socks, Egress, EgressConfig, RefusalSummary, Refusals, Rules, ShutdownHandle,
};

/// The HTTP proxy's preferred port inside the sandbox (squid's), unless a rule needs it.
pub const HTTP_PROXY_PORT: u16 = 3128;
/// The SOCKS5 server's preferred port inside the sandbox, unless a rule needs it.
pub const SOCKS_PORT: u16 = 1080;
/// The DNS stub's port (UDP, and TCP unless a rule names port 53 of a name).
pub const DNS_PORT: u16 = 53;
/// Most ports of names that get a mapped listener in one sandbox (one listener, and one fd,
/// per port): rules whose name and wildcard ports add up to more are refused.
pub const MAX_MAPPED_PORTS: usize = 1024;
/// `NO_PROXY` / `no_proxy` in the sandbox: the sandbox's own loopback.
pub const NO_PROXY: &str = "localhost,127.0.0.1,::1";

/// Where the servers listen inside the sandbox's network namespace.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ports {
    /// The HTTP proxy, on `127.0.0.1`.
    pub http: u16,
    /// The SOCKS5 server, on `127.0.0.1`.
    pub socks: u16,
    /// One mapped listener per port of a name or wildcard rule, on `0.0.0.0` (where the
    /// DNS stub's `127.64.x.y` addresses arrive), sorted.
    pub mapped: Vec<u16>,
    /// Whether the DNS stub also listens on TCP `127.0.0.1:53` (not when port 53 of a name
    /// is allowed: its mapped listener holds `0.0.0.0:53` then; UDP is served either way).
    pub dns_tcp: bool,
}

impl Ports {
    /// The ports for `rules`: every port of a name or wildcard rule gets a mapped listener
    /// (at most [`MAX_MAPPED_PORTS`]); the proxies take their preferred ports unless one of
    /// those is needed, else the next free ones.
    pub fn choose(rules: &Rules) -> Result<Ports, String> {
        let mut mapped = BTreeSet::new();
        for range in rules.name_ports() {
            for p in range.first..=range.last {
                mapped.insert(p);
                if mapped.len() > MAX_MAPPED_PORTS {
                    return Err(format!(
                        "the rules' names and wildcards cover more than {MAX_MAPPED_PORTS} ports; \
                         each gets a listener inside the sandbox (for programs that ignore \
                         proxies), so narrow the port ranges"
                    ));
                }
            }
        }
        let free = |p: u16, other: Option<u16>| {
            p != DNS_PORT && !mapped.contains(&p) && Some(p) != other && p != 0
        };
        let pick = |preferred: u16, other: Option<u16>| {
            (preferred..=u16::MAX)
                .chain(1024..preferred)
                .find(|p| free(*p, other))
                .expect("at most 1024 ports are taken")
        };
        let http = pick(HTTP_PROXY_PORT, None);
        let socks = pick(SOCKS_PORT, Some(http));
        Ok(Ports {
            http,
            socks,
            dns_tcp: !mapped.contains(&DNS_PORT),
            mapped: mapped.into_iter().collect(),
        })
    }
}

/// What [`SandboxEgress::new`] needs to know of the rest of the sandbox.
#[derive(Debug, Clone)]
pub struct Options {
    /// The sandbox has its own network namespace (`[namespaces] net`).
    pub private_net: bool,
    /// The sandbox has a private root, where the generated files can be placed.
    pub private_root: bool,
    /// The sandbox starts detached (it outlives the host, its servers could not).
    pub detach: bool,
    /// The sandbox runs in its own user namespace (rootless mode).
    pub rootless: bool,
    /// Client connections served at once (default 256).
    pub max_connections: Option<usize>,
    /// The sandbox's hostname (for its `/etc/hosts`).
    pub hostname: String,
    /// The host directory the generated files are written to at start (inside the
    /// sandbox's state directory, removed with it).
    pub files_dir: PathBuf,
}

/// The listeners of one sandbox, made inside its network namespace.
#[derive(Debug)]
pub struct Listeners {
    http: TcpListener,
    socks: TcpListener,
    dns_udp: UdpSocket,
    dns_tcp: Option<TcpListener>,
    mapped: Vec<TcpListener>,
}

/// What is left of the servers once they run: for [`SandboxEgress::join`] and the diagnosis.
#[derive(Default)]
struct Live {
    egress: Option<Arc<Egress>>,
    refusals: Option<Refusals>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// One sandbox's egress, from its rules to its live servers (see the module text).
pub struct SandboxEgress {
    rules: Rules,
    config: EgressConfig,
    resolver: Arc<dyn Resolver>,
    ports: Ports,
    private_root: bool,
    rootless: bool,
    hostname: String,
    files_dir: PathBuf,
    live: Mutex<Live>,
}

impl std::fmt::Debug for SandboxEgress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SandboxEgress")
            .field("rules", &self.rules)
            .field("ports", &self.ports)
            .finish_non_exhaustive()
    }
}

/// The start of every error about rules that cannot apply to this sandbox.
const RULES: &str = "network rules ([network] allow, --allow-net)";

impl SandboxEgress {
    /// The egress of a sandbox with `rules`, or `None` without rules (loopback only, as
    /// without egress). Errors say why the rules cannot apply to this sandbox: the host's
    /// network (`net = false`) would bypass them, a detached sandbox would outlive its
    /// servers, or too many ports of names.
    pub fn new(rules: Rules, opts: Options) -> Result<Option<SandboxEgress>, String> {
        if rules.is_empty() {
            return Ok(None);
        }
        if !opts.private_net {
            return Err(format!(
                "{RULES} need the sandbox's own network namespace: with `[namespaces] net = \
                 false` the plugin shares the host's network and would bypass the allow-list \
                 (remove `net = false`)"
            ));
        }
        if opts.detach {
            return Err(format!(
                "{RULES} cannot apply to a detached sandbox: the proxies run in the host \
                 process and end with it"
            ));
        }
        if opts.max_connections == Some(0) {
            return Err("[network] max_connections must be at least 1".into());
        }
        let ports = Ports::choose(&rules)?;
        if !opts.private_root {
            tracing::warn!(target: "sandbox_runner::egress",
                "without a private root, /etc/resolv.conf cannot name the DNS stub: only \
                 programs that use the proxies (HTTP_PROXY, ALL_PROXY) reach the allowed hosts");
        }
        let mut config = EgressConfig::default();
        if let Some(n) = opts.max_connections {
            config.max_connections = n;
        }
        Ok(Some(SandboxEgress {
            rules,
            config,
            resolver: Arc::new(SystemResolver),
            ports,
            private_root: opts.private_root,
            rootless: opts.rootless,
            hostname: opts.hostname,
            files_dir: opts.files_dir,
            live: Mutex::new(Live::default()),
        }))
    }

    /// Resolve names with `resolver` instead of the host's (for tests, or a host that
    /// resolves its own way). Takes effect at the next [`SandboxEgress::start`].
    pub fn set_resolver(&mut self, resolver: Arc<dyn Resolver>) {
        self.resolver = resolver;
    }

    /// The rules.
    pub fn rules(&self) -> &Rules {
        &self.rules
    }

    /// The ports inside the sandbox.
    pub fn ports(&self) -> &Ports {
        &self.ports
    }

    /// The plugin's proxy variables: `HTTP_PROXY`, `HTTPS_PROXY` and their lower-case forms
    /// name the HTTP proxy, `ALL_PROXY`/`all_proxy` the SOCKS5 server (`socks5h`: names are
    /// resolved by the runner), `NO_PROXY`/`no_proxy` the sandbox's own loopback. They
    /// replace any of the profile's.
    pub fn env(&self) -> Vec<(String, String)> {
        let http = format!("http://127.0.0.1:{}", self.ports.http);
        let socks = format!("socks5h://127.0.0.1:{}", self.ports.socks);
        [
            ("HTTP_PROXY", &http),
            ("HTTPS_PROXY", &http),
            ("http_proxy", &http),
            ("https_proxy", &http),
            ("ALL_PROXY", &socks),
            ("all_proxy", &socks),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .chain(
            ["NO_PROXY", "no_proxy"]
                .into_iter()
                .map(|k| (k.to_string(), NO_PROXY.to_string())),
        )
        .collect()
    }

    /// The generated files, `(host path, path in the sandbox)`, bound read-only into the
    /// private root (none without one): `/etc/resolv.conf` naming the DNS stub, and
    /// `/etc/hosts` with only localhost and the sandbox's hostname.
    pub fn files(&self) -> Vec<(PathBuf, PathBuf)> {
        if !self.private_root {
            return Vec::new();
        }
        vec![
            (
                self.files_dir.join("resolv.conf"),
                PathBuf::from("/etc/resolv.conf"),
            ),
            (self.files_dir.join("hosts"), PathBuf::from("/etc/hosts")),
        ]
    }

    /// The text of the generated `/etc/resolv.conf`.
    pub fn resolv_conf(&self) -> String {
        "# sandbox-runner: the egress DNS stub, which answers the names the sandbox's\n\
         # [network] allow-list covers (each with a 127.64.x.y address); no other name resolves.\n\
         nameserver 127.0.0.1\n\
         options attempts:2 timeout:2\n"
            .to_string()
    }

    /// The text of the generated `/etc/hosts`.
    pub fn hosts(&self) -> String {
        let mut s = String::from(
            "# sandbox-runner: only localhost and this sandbox's hostname; other names go to\n\
             # the egress DNS stub.\n\
             127.0.0.1\tlocalhost\n\
             ::1\tlocalhost ip6-localhost ip6-loopback\n",
        );
        if self.hostname != "localhost" {
            s.push_str(&format!("127.0.1.1\t{}\n", self.hostname));
        }
        s
    }

    /// Writes the generated files (the directory is created, 0755, the files 0644).
    pub fn write_files(&self) -> io::Result<()> {
        if !self.private_root {
            return Ok(());
        }
        use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
        std::fs::DirBuilder::new()
            .mode(0o755)
            .create(&self.files_dir)?;
        for (name, text) in [("resolv.conf", self.resolv_conf()), ("hosts", self.hosts())] {
            let path = self.files_dir.join(name);
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o644)
                .open(&path)?;
            io::Write::write_all(&mut f, text.as_bytes())?;
        }
        Ok(())
    }

    /// Creates the listeners inside the network namespace of the sandbox's init (`init_pid`,
    /// an unreaped child of this process that has not been let go yet) and serves them on
    /// the current tokio runtime. The returned handle stops every server and relay when
    /// dropped: keep it exactly as long as the sandbox.
    pub async fn start(&self, init_pid: i32) -> io::Result<ShutdownHandle> {
        let listeners = bind_in_netns(init_pid, &self.ports, self.rootless).await?;
        Ok(self.serve(listeners))
    }

    /// Serves `listeners` (see [`SandboxEgress::start`]).
    pub fn serve(&self, listeners: Listeners) -> ShutdownHandle {
        let mut config = self.config.clone();
        config.host_addresses = host_addresses();
        let (egress, stop) = Egress::new(self.rules.clone(), config, self.resolver.clone());
        let mut tasks = Vec::new();
        let mut spawn = |what: &'static str, fut| {
            tasks.push(tokio::spawn(logged(what, fut)));
        };
        let Listeners {
            http,
            socks,
            dns_udp,
            dns_tcp,
            mapped,
        } = listeners;
        spawn("http", Box::pin(http::serve_http(egress.clone(), http)));
        spawn(
            "socks5",
            Box::pin(socks::serve_socks(egress.clone(), socks)),
        );
        spawn("dns", Box::pin(dns::serve_dns(egress.clone(), dns_udp)));
        if let Some(l) = dns_tcp {
            spawn("dns-tcp", Box::pin(dns::serve_dns_tcp(egress.clone(), l)));
        }
        for l in mapped {
            spawn("mapped", Box::pin(mapped::serve_mapped(egress.clone(), l)));
        }
        tracing::info!(target: "sandbox_runner::egress", http = self.ports.http,
            socks = self.ports.socks, mapped = ?self.ports.mapped, dns_tcp = self.ports.dns_tcp,
            rules = self.rules.rules().len(), "egress served inside the sandbox");
        let mut live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        live.refusals = Some(egress.refusals().clone());
        live.egress = Some(egress);
        live.tasks.extend(tasks);
        stop
    }

    /// Stops the servers (if their handle is still alive) and waits until they, and every
    /// connection they served, are gone (at most 2 s for the connections).
    pub async fn join(&self) {
        let (egress, tasks) = {
            let mut live = self.live.lock().unwrap_or_else(|p| p.into_inner());
            (live.egress.take(), std::mem::take(&mut live.tasks))
        };
        let Some(egress) = egress else { return };
        egress.shutdown_token().cancel();
        for t in tasks {
            let _ = t.await;
        }
        let all = egress.config().max_connections.max(1);
        let deadline = Instant::now() + Duration::from_secs(2);
        while egress.available_connections() < all && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }

    /// Everything refused so far; `None` before the servers started.
    pub fn refusals(&self) -> Option<RefusalSummary> {
        let live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        live.refusals.as_ref().map(Refusals::snapshot)
    }
}

type Serve = std::pin::Pin<Box<dyn std::future::Future<Output = io::Result<()>> + Send>>;

async fn logged(what: &'static str, fut: Serve) {
    if let Err(e) = fut.await {
        tracing::warn!(target: "sandbox_runner::egress", server = what, error = %e,
            "egress server stopped");
    }
}

/// Every address of every interface of the host: a wildcard or CIDR rule never reaches them.
fn host_addresses() -> Vec<IpAddr> {
    let mut out = Vec::new();
    let Ok(addrs) = nix::ifaddrs::getifaddrs() else {
        return out;
    };
    for a in addrs {
        let Some(sa) = a.address else { continue };
        let ip = if let Some(v4) = sa.as_sockaddr_in() {
            IpAddr::V4(v4.ip())
        } else if let Some(v6) = sa.as_sockaddr_in6() {
            IpAddr::V6(v6.ip())
        } else {
            continue;
        };
        if !out.contains(&ip) {
            out.push(ip);
        }
    }
    out
}

/// Opens what `setns` needs for the init's network namespace: a pidfd (Linux 5.8 can enter
/// a namespace through it), else `None` (the thread opens `/proc/PID/ns/net`).
fn pidfd(pid: i32) -> Option<OwnedFd> {
    let pid = rustix::process::Pid::from_raw(pid)?;
    rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty()).ok()
}

/// Binds every listener of `ports` inside the network namespace of `init_pid`, from a
/// thread of its own that exits afterwards (a thread that changed its namespace is never
/// handed back to anything else). `rootless`: the sandbox has its own user namespace, which
/// the host cannot enter with a thread; a short-lived child of this thread makes the
/// sockets instead (`child::netns`).
pub async fn bind_in_netns(init_pid: i32, ports: &Ports, rootless: bool) -> io::Result<Listeners> {
    let pidfd = if rootless { None } else { pidfd(init_pid) };
    let ports = ports.clone();
    let (tx, rx) = tokio::sync::oneshot::channel();
    let thread = std::thread::Builder::new()
        .name("egress-netns".into())
        .stack_size(256 * 1024)
        .spawn(move || {
            let res = if rootless {
                make_in_userns(init_pid, &ports)
            } else {
                enter_and_bind(init_pid, pidfd, &ports)
            };
            let _ = tx.send(res);
        })?;
    let res = rx
        .await
        .unwrap_or_else(|_| Err(io::Error::other("the netns thread ended without an answer")));
    // It has sent its answer and is on its way out.
    let _ = thread.join();
    res
}

fn enter_and_bind(pid: i32, pidfd: Option<OwnedFd>, ports: &Ports) -> io::Result<Listeners> {
    let ctx = |what: &str, e: io::Error| io::Error::new(e.kind(), format!("{what}: {e}"));
    let entered = match &pidfd {
        Some(fd) => nix::sched::setns(fd.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET),
        None => Err(nix::errno::Errno::EINVAL),
    };
    if let Err(e) = entered {
        // Before Linux 5.8, setns takes no pidfd: the namespace file of our unreaped child.
        if e != nix::errno::Errno::EINVAL {
            return Err(ctx(
                &format!("setns into the network namespace of pid {pid}"),
                e.into(),
            ));
        }
        let path = format!("/proc/{pid}/ns/net");
        let ns = std::fs::File::open(&path).map_err(|e| ctx(&path, e))?;
        nix::sched::setns(ns.as_fd(), nix::sched::CloneFlags::CLONE_NEWNET)
            .map_err(|e| ctx(&format!("setns {path}"), e.into()))?;
    }
    loopback_up().map_err(|e| ctx("bringing lo up in the sandbox", e))?;
    let lo = Ipv4Addr::LOCALHOST;
    let tcp = |what: &str, addr: SocketAddr| {
        TcpListener::bind(addr).map_err(|e| ctx(&format!("{what}: binding {addr}"), e))
    };
    let http = tcp("HTTP proxy", (lo, ports.http).into())?;
    let socks = tcp("SOCKS5 server", (lo, ports.socks).into())?;
    let dns_addr: SocketAddr = (lo, DNS_PORT).into();
    let dns_udp = UdpSocket::bind(dns_addr)
        .map_err(|e| ctx(&format!("DNS stub: binding udp {dns_addr}"), e))?;
    let dns_tcp = if ports.dns_tcp {
        Some(tcp("DNS stub (tcp)", dns_addr)?)
    } else {
        None
    };
    let mapped = ports
        .mapped
        .iter()
        .map(|p| tcp("mapped listener", (Ipv4Addr::UNSPECIFIED, *p).into()))
        .collect::<io::Result<Vec<_>>>()?;
    Ok(Listeners {
        http,
        socks,
        dns_udp,
        dns_tcp,
        mapped,
    })
}

/// Rootless mode: the sockets of `ports`, made by a short-lived child that enters the user
/// and network namespaces of the init (`child::netns::make_sockets`).
fn make_in_userns(pid: i32, ports: &Ports) -> io::Result<Listeners> {
    use crate::child::netns::{make_sockets, NsStep, SocketSpec};
    use std::os::fd::AsRawFd;
    let open = |kind: &str| {
        let path = format!("/proc/{pid}/ns/{kind}");
        std::fs::File::open(&path).map_err(|e| io::Error::new(e.kind(), format!("{path}: {e}")))
    };
    let (userns, netns) = (open("user")?, open("net")?);
    let lo = Ipv4Addr::LOCALHOST;
    let spec = |tcp: bool, ip: Ipv4Addr, port: u16| SocketSpec {
        tcp,
        addr: libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: port.to_be(),
            sin_addr: libc::in_addr {
                s_addr: u32::from(ip).to_be(),
            },
            sin_zero: [0; 8],
        },
    };
    let mut specs = vec![
        spec(true, lo, ports.http),
        spec(true, lo, ports.socks),
        spec(false, lo, DNS_PORT),
    ];
    if ports.dns_tcp {
        specs.push(spec(true, lo, DNS_PORT));
    }
    let first_mapped = specs.len();
    specs.extend(
        ports
            .mapped
            .iter()
            .map(|p| spec(true, Ipv4Addr::UNSPECIFIED, *p)),
    );
    let fds =
        make_sockets(userns.as_raw_fd(), netns.as_raw_fd(), &specs).map_err(|(step, errno)| {
            let what = match step {
                NsStep::UserNs => format!("setns into the user namespace of pid {pid}"),
                NsStep::NetNs => format!("setns into the network namespace of pid {pid}"),
                NsStep::Loopback => "bringing lo up in the sandbox".into(),
                NsStep::Socket(i) => {
                    let s = &specs[i];
                    let ip = Ipv4Addr::from(u32::from_be(s.addr.sin_addr.s_addr));
                    let kind = if s.tcp { "tcp" } else { "udp" };
                    format!(
                        "binding {kind} {ip}:{} in the sandbox's network namespace",
                        u16::from_be(s.addr.sin_port)
                    )
                }
                NsStep::Clone => "the child that makes the sockets".into(),
            };
            io::Error::new(
                io::Error::from(errno).kind(),
                format!("{what}: {}", errno.desc()),
            )
        })?;
    let mut fds = fds.into_iter();
    let mut next = || fds.next().expect("one fd per spec");
    let http = TcpListener::from(next());
    let socks = TcpListener::from(next());
    let dns_udp = UdpSocket::from(next());
    let dns_tcp = ports.dns_tcp.then(|| TcpListener::from(next()));
    let mapped = (first_mapped..specs.len())
        .map(|_| TcpListener::from(next()))
        .collect();
    Ok(Listeners {
        http,
        socks,
        dns_udp,
        dns_tcp,
        mapped,
    })
}

/// Sets `IFF_UP` on `lo` of the current thread's network namespace (the child does it
/// again before the plugin runs; here the listeners need it first): the child side's own
/// step, which is plain system calls on a socket it owns.
fn loopback_up() -> io::Result<()> {
    // SAFETY: socket/ioctl/close on a stack struct and a socket the call owns.
    unsafe { crate::child::net::loopback_up() }.map_err(io::Error::from)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn rules(r: &[&str]) -> Rules {
        Rules::parse(r).unwrap()
    }

    fn opts() -> Options {
        Options {
            private_net: true,
            private_root: true,
            detach: false,
            rootless: false,
            max_connections: None,
            hostname: "box".into(),
            files_dir: PathBuf::from("/nonexistent/net"),
        }
    }

    #[test]
    fn no_rules_no_egress() {
        assert!(SandboxEgress::new(Rules::default(), opts())
            .unwrap()
            .is_none());
    }

    #[test]
    fn ports_avoid_the_mapped_ones_and_53() {
        let p = Ports::choose(&rules(&[
            "a.test:443",
            "*.b.test:8000-8002",
            "10.0.0.1:3128",
        ]))
        .unwrap();
        assert_eq!(p.mapped, [443, 8000, 8001, 8002]);
        // An IP rule gets no mapped listener: its port stays free for the proxy.
        assert_eq!((p.http, p.socks), (3128, 1080));
        assert!(p.dns_tcp);
        let p = Ports::choose(&rules(&[
            "a.test:1080-1081",
            "*.b.test:3128-3129",
            "c.test:53",
        ]))
        .unwrap();
        assert_eq!((p.http, p.socks), (3130, 1082));
        assert!(!p.dns_tcp);
        let e = Ports::choose(&rules(&["a.test:1-2000"])).unwrap_err();
        assert!(e.contains("more than 1024 ports"), "{e}");
    }

    #[test]
    fn rules_that_cannot_apply_are_refused_with_the_reason() {
        let r = || rules(&["a.test:443"]);
        let e = SandboxEgress::new(
            r(),
            Options {
                private_net: false,
                ..opts()
            },
        )
        .unwrap_err();
        assert!(e.contains("net = false") && e.contains("bypass"), "{e}");
        let e = SandboxEgress::new(
            r(),
            Options {
                detach: true,
                ..opts()
            },
        )
        .unwrap_err();
        assert!(e.contains("detached"), "{e}");
        let e = SandboxEgress::new(
            r(),
            Options {
                max_connections: Some(0),
                ..opts()
            },
        )
        .unwrap_err();
        assert!(e.contains("max_connections"), "{e}");
    }

    #[test]
    fn env_and_files() {
        let e = SandboxEgress::new(rules(&["a.test:443"]), opts())
            .unwrap()
            .unwrap();
        let env = e.env();
        let get = |k: &str| env.iter().find(|(n, _)| n == k).unwrap().1.clone();
        for k in ["HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy"] {
            assert_eq!(get(k), "http://127.0.0.1:3128");
        }
        for k in ["ALL_PROXY", "all_proxy"] {
            assert_eq!(get(k), "socks5h://127.0.0.1:1080");
        }
        assert_eq!(get("NO_PROXY"), "localhost,127.0.0.1,::1");
        assert_eq!(get("no_proxy"), "localhost,127.0.0.1,::1");
        assert!(e.resolv_conf().contains("\nnameserver 127.0.0.1\n"));
        let hosts = e.hosts();
        let entries: Vec<&str> = hosts.lines().filter(|l| !l.starts_with('#')).collect();
        assert_eq!(
            entries,
            [
                "127.0.0.1\tlocalhost",
                "::1\tlocalhost ip6-localhost ip6-loopback",
                "127.0.1.1\tbox"
            ]
        );
        let files = e.files();
        let dsts: Vec<&Path> = files.iter().map(|(_, d)| d.as_path()).collect();
        assert_eq!(
            dsts,
            [Path::new("/etc/resolv.conf"), Path::new("/etc/hosts")]
        );
        let e = SandboxEgress::new(
            rules(&["a.test:443"]),
            Options {
                private_root: false,
                ..opts()
            },
        )
        .unwrap()
        .unwrap();
        assert!(e.files().is_empty());
    }
}
