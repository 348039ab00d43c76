//! [`SandboxRunner`]: the go-plugin runner interfaces implemented with namespaces.

use async_trait::async_trait;
use std::ffi::{OsStr, OsString};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use tracing::Instrument;

use nix::errno::Errno;
use rustix::process::WaitIdOptions;

use crate::addr::SocketDir;
use crate::diagnose::Diagnosis;
use crate::error::{AddrError, Error};
use crate::plan::Plan;
use crate::profile::{Profile, StdinMode};
use crate::runner::{AddrTranslator, AttachedRunner, PipeReader, PipeWriter, Runner};
use crate::status::ExitStatus;

mod running;
mod start;
mod stdio;

use running::Running;

/// Where one of the plugin's standard streams goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Stdio {
    /// A file on the host, created (0600) or appended to (output streams only; for stdin
    /// it is read).
    File(std::path::PathBuf),
    /// A pipe to the host: [`Runner::stdout`] / [`Runner::stderr`] hand out the read end,
    /// [`SandboxRunner::take_stdin`] the write end.
    Pipe,
    /// The caller's own stream (0, 1 or 2), through a stand-in: the plugin never holds the
    /// caller's pipe, file or terminal itself, but a pipe relayed to or from it, or a
    /// pseudo-terminal proxied to it (see the README, "How stdio is relayed").
    Inherit,
    /// `/dev/null`.
    Null,
}

/// Runs one plugin in a sandbox of new mount, PID, network, IPC and UTS namespaces.
///
/// Build it from a [`Profile`] and a command line, then drive it through [`Runner`] and
/// [`AttachedRunner`]. Dropping a started runner kills and reaps its sandbox.
pub struct SandboxRunner {
    id: String,
    name: String,
    profile: Profile,
    plan: Arc<Plan>,
    stdin: Stdio,
    stdout: Stdio,
    stderr: Stdio,
    running: Option<Arc<Running>>,
    /// The `start` span, opened with the plan and closed at the end of [`Runner::start`].
    start_span: Option<tracing::Span>,
    /// The task that stops the sandbox at its wall-clock limit (`[limits] timeout`).
    timer: Option<tokio::task::JoinHandle<()>>,
    /// Set when that task stopped the sandbox.
    timed_out: Arc<AtomicBool>,
    out: Option<PipeReader>,
    err: Option<PipeReader>,
    input: Option<PipeWriter>,
    setup_error: Mutex<Option<String>>,
    /// The host directory shared as the socket directory, and whether the host owns it.
    socket_host: Option<(std::path::PathBuf, bool)>,
    /// cgroup directories handed over to a detached sandbox (for its state file).
    cgroup_paths: Vec<std::path::PathBuf>,
    /// Tasks that complete when the relays of the plugin's output to the caller's own
    /// streams have delivered everything ([`Stdio::Inherit`]).
    relays: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    /// The relays between the caller's own streams and the plugin's: dropping them stops
    /// them and gives the caller's terminal its modes back.
    stdio: Option<crate::stdio::Relays>,
    /// The task feeding a file the runner opened to the plugin's stdin (when the plugin is
    /// not host root, see `stdio::wire`).
    stdin_relay: Option<tokio::task::JoinHandle<()>>,
    /// The translator over the socket directory, once started.
    sockets: Option<SocketDir>,
    /// This attached sandbox's registration with the reaper, which cleans up after a host
    /// that dies without doing it itself; dropped (unregistered) after the host's cleanup.
    reaped: Option<crate::reaper::Registration>,
    /// The egress allow-list's proxies and DNS stub, when the profile has rules.
    egress: Option<crate::egress::wire::SandboxEgress>,
    /// The block of host ids of a root runner's sandbox, released after everything else.
    ids: Option<crate::idrange::IdRange>,
}

impl SandboxRunner {
    /// Starts, ahead of the first sandbox, what every attached start of this process needs
    /// once: the sealed memfd of `sandbox-init`, the spawner thread, the cgroup watch thread
    /// and this process's reaper (the process that cleans up after a SIGKILLed host). Without
    /// it, the first [`Runner::start`] does this work on its own critical path.
    ///
    /// Blocking (about half a millisecond); meant for a thread of its own early in a
    /// short-lived host, e.g. `std::thread::spawn(SandboxRunner::prewarm)` first in `main`,
    /// so that it runs while the host parses its configuration. A start that comes while it
    /// runs waits for the part it needs. Errors are not reported here: the start that needs
    /// the part reports (or, for the reaper, logs) them as it would have.
    ///
    /// Run as root, it also starts the thread that keeps one network namespace made ahead
    /// for the next start, and returns once that namespace is ready (at most a second).
    /// After a start takes it, the thread makes the next one at idle priority once no start
    /// has asked for one for 10 ms, so the work stays off the starts' own paths; calling
    /// `prewarm` again waits for it. See [`prewarm_single`](Self::prewarm_single) for a
    /// process that starts one sandbox.
    pub fn prewarm() {
        Self::prewarm_with(crate::child::netpool::Budget::Refill);
    }

    /// [`prewarm`](Self::prewarm) for a process that starts a single sandbox, as
    /// `sandbox-run` does: the one network namespace it makes ahead is not made again once
    /// taken, so no namespace is made for nothing.
    pub fn prewarm_single() {
        Self::prewarm_with(crate::child::netpool::Budget::Total(1));
    }

    fn prewarm_with(netns: crate::child::netpool::Budget) {
        // In the order a start needs them: the reaper before the first cgroup, the spawner
        // and the network namespace at the clone, the watch once the sandbox runs.
        // The network namespace first: its thread makes it while the rest comes up.
        crate::child::netpool::start(netns);
        let _ = crate::child::exe::init_exe();
        crate::reaper::start();
        crate::child::spawner::prewarm();
        crate::cgroup::watch_prewarm();
        crate::child::netpool::wait_ready(std::time::Duration::from_secs(1));
    }

    /// Prepares a sandbox that runs `program` with `args` under `profile`. Nothing starts
    /// until [`Runner::start`]. Fails when the program cannot be found or executed, or the
    /// command line is unusable.
    pub fn new<I, A>(profile: Profile, program: impl AsRef<OsStr>, args: I) -> Result<Self, Error>
    where
        I: IntoIterator<Item = A>,
        A: Into<OsString>,
    {
        let args: Vec<OsString> = args.into_iter().map(Into::into).collect();
        let id = new_id();
        // The socket directory: a directory of this sandbox's own in the host's
        // PLUGIN_UNIX_SOCKET_DIR when it set one (the host owns and cleans that; plugins never
        // share it, so none can swap another's sockets), else a fresh one in this sandbox's
        // state directory.
        let socket_host = if profile.sockets.enabled {
            if !profile.private_root || !profile.namespaces.mount {
                return Err(Error::InvalidCommand(
                    "a shared socket directory needs the private root (`private_root = true`)"
                        .into(),
                ));
            }
            Some(
                match std::env::var_os("PLUGIN_UNIX_SOCKET_DIR").filter(|v| !v.is_empty()) {
                    Some(d) => (host_socket_dir(std::path::Path::new(&d))?.join(&id), true),
                    None => (crate::state::dir_of(&id).join("s"), false),
                },
            )
        } else {
            None
        };
        if profile.sockets.broker && profile.detach {
            // The brokered connects are made by the host process, which a detached sandbox
            // outlives: it runs without them (as `detach` runs `go-plugin` profiles).
            tracing::warn!(
                "sockets.broker has no effect on a detached sandbox: the plugin's connects \
                 stay inside it"
            );
        }
        // Planning is the first phase of the start span (closed when start() ends).
        let start_span = tracing::info_span!("start", id = %id);
        let plan_span = tracing::info_span!(parent: &start_span, "plan").entered();
        let egress = crate::egress::wire::SandboxEgress::new(
            profile.network.rules(),
            crate::egress::wire::Options {
                private_net: profile.namespaces.net,
                private_root: profile.private_root && profile.namespaces.mount,
                detach: profile.detach,
                rootless: profile
                    .rootless
                    .enabled_for(nix::unistd::geteuid().as_raw()),
                max_connections: profile.network.max_connections,
                hostname: profile.hostname.as_str().to_string(),
                files_dir: crate::state::dir_of(&id).join("net"),
            },
        )
        .map_err(|message| {
            Error::Profile(crate::error::ProfileError::Invalid {
                origin: "profile [network]".into(),
                message,
            })
        })?;
        let extras = crate::plan::Extras {
            env: egress.as_ref().map(|e| e.env()).unwrap_or_default(),
            files: egress.as_ref().map(|e| e.files()).unwrap_or_default(),
            files_label: "network: generated".into(),
        };
        let plan = Plan::build(
            &profile,
            program.as_ref(),
            &args,
            &|k| std::env::var_os(k),
            socket_host.as_ref().map(|(p, _)| p.join("sock")).as_deref(),
            &extras,
        )?;
        drop(plan_span);
        let stdin = match profile.stdin {
            StdinMode::Null => Stdio::Null,
            StdinMode::Inherit => Stdio::Inherit,
            StdinMode::Pipe => Stdio::Pipe,
        };
        Ok(SandboxRunner {
            id,
            name: plan.program_path().display().to_string(),
            profile,
            plan: Arc::new(plan),
            stdin,
            stdout: Stdio::Pipe,
            stderr: Stdio::Pipe,
            running: None,
            start_span: Some(start_span),
            timer: None,
            timed_out: Arc::new(AtomicBool::new(false)),
            out: None,
            err: None,
            input: None,
            setup_error: Mutex::new(None),
            socket_host,
            sockets: None,
            reaped: None,
            ids: None,
            cgroup_paths: Vec::new(),
            relays: Mutex::new(Vec::new()),
            stdin_relay: None,
            egress,
            stdio: None,
        })
    }

    /// Resolves the names of the profile's `[network]` rules with `resolver` instead of the
    /// host's resolver (tests, or hosts that resolve their own way). No effect without rules.
    pub fn with_resolver(mut self, resolver: Arc<dyn crate::egress::resolve::Resolver>) -> Self {
        if let Some(e) = self.egress.as_mut() {
            e.set_resolver(resolver);
        }
        self
    }

    /// Sets where the plugin's stdin comes from (default: the profile's `stdin`).
    pub fn with_stdin(mut self, s: Stdio) -> Self {
        self.stdin = s;
        self
    }

    /// Sets where the plugin's stdout goes (default: a pipe).
    pub fn with_stdout(mut self, s: Stdio) -> Self {
        self.stdout = s;
        self
    }

    /// Sets where the plugin's stderr goes (default: a pipe).
    pub fn with_stderr(mut self, s: Stdio) -> Self {
        self.stderr = s;
        self
    }

    /// The profile this runner was built from.
    pub fn profile(&self) -> &Profile {
        &self.profile
    }

    /// The write end of the plugin's stdin when it is a [`Stdio::Pipe`], handed over once.
    pub fn take_stdin(&mut self) -> Option<PipeWriter> {
        self.input.take()
    }

    /// The host pid of the sandbox's init while it runs (for inspection only: every action
    /// of the runner goes through a pidfd, never this number).
    pub fn init_pid(&self) -> Option<i32> {
        self.running.as_ref().map(|r| r.pid)
    }

    /// Sends `sig` to the plugin (through its init, which forwards TERM, INT, HUP, QUIT, USR1
    /// and USR2; KILL kills the whole sandbox).
    pub fn signal(&self, sig: i32) -> Result<(), Error> {
        let r = self
            .running
            .as_ref()
            .ok_or(Error::State("the sandbox is not started"))?;
        r.signal(sig)
    }

    /// The structured diagnosis of the plugin's end so far.
    pub fn diagnosis(&self) -> Diagnosis {
        let status = self.running.as_ref().and_then(|r| r.status());
        let running = self.running.is_some() && status.is_none();
        let setup = self
            .setup_error
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let mut d = Diagnosis::new(&self.id, &self.name, status, setup, running);
        if let Some(t) = self.profile.limits.timeout {
            d = d.with_time_limit(t.0, self.timed_out());
        }
        if let Some(n) = self.egress.as_ref().and_then(|e| e.refusals()) {
            d = d.with_network(n);
        }
        match self.running.as_ref().and_then(|r| r.counters()) {
            Some(c) => d.with_cgroup(self.profile.limits.to_limits(), c),
            None => d,
        }
    }

    /// True when the sandbox was stopped because it reached its wall-clock limit
    /// (`[limits] timeout`).
    pub fn timed_out(&self) -> bool {
        self.timed_out.load(Ordering::SeqCst)
    }

    /// Arms the wall-clock limit, if the profile sets one: when it passes with the plugin
    /// still running, the sandbox is stopped as [`AttachedRunner::kill`] does (SIGTERM, the
    /// grace period, then SIGKILL of everything). The task holds the sandbox only weakly, so
    /// dropping the runner still kills it at once.
    fn arm_timeout(&mut self) {
        let (Some(limit), Some(r)) = (self.profile.limits.timeout, self.running.as_ref()) else {
            return;
        };
        let running = Arc::downgrade(r);
        let grace = self.profile.kill_grace.0;
        let fired = self.timed_out.clone();
        let id = self.id.clone();
        self.timer = Some(tokio::spawn(async move {
            tokio::time::sleep(limit.0).await;
            let Some(r) = running.upgrade() else { return };
            // Ended on its own just in time: not a timeout.
            if !matches!(
                r.try_reap(WaitIdOptions::EXITED | WaitIdOptions::NOHANG),
                Ok(None)
            ) {
                return;
            }
            fired.store(true, Ordering::SeqCst);
            let limit = crate::profile::format_duration(limit.0);
            tracing::info!(%id, %limit, "time limit reached: stopping the sandbox");
            if let Err(e) = r.kill(grace).await {
                tracing::warn!(%id, error = %e, "stopping the sandbox at its time limit");
            }
        }));
    }

    /// The gid of the profile's socket group, if one is named.
    fn socket_group(&self) -> Result<Option<u32>, Error> {
        let Some(g) = self
            .profile
            .sockets
            .group
            .as_deref()
            .filter(|g| !g.is_empty())
        else {
            return Ok(None);
        };
        if let Ok(n) = g.parse::<u32>() {
            return Ok(Some(n));
        }
        match nix::unistd::Group::from_name(g) {
            Ok(Some(gr)) => Ok(Some(gr.gid.as_raw())),
            Ok(None) => Err(Error::InvalidCommand(format!(
                "sockets.group: no group named '{g}' on this host"
            ))),
            Err(e) => Err(Error::host(format!("looking up group '{g}'"), e)),
        }
    }

    /// The plugin's uid and gid on the host when they are not the runner's own (a root
    /// runner's id block); `None` for host ids, or rootless mode (the plugin is the caller,
    /// which already owns whatever the runner makes).
    fn plugin_host_ids(&self) -> Option<(u32, u32)> {
        let user = self.profile.user;
        match self.plan.ids() {
            crate::plan::IdMode::Host | crate::plan::IdMode::Caller => None,
            crate::plan::IdMode::Range => {
                let base = self.ids.as_ref().map_or(0, |r| r.base());
                Some((base + user.uid, base + user.gid))
            }
        }
    }

    /// Creates the socket directory of this sandbox: `top` (in the state directory, or in
    /// the host's `PLUGIN_UNIX_SOCKET_DIR`), run as root a tmpfs of its own with the
    /// profile's limits, holding `sock` (the plugin's, at the same path inside) and `links`
    /// (the host's verified links). The mount point is recorded in the state directory
    /// first, so whoever removes a dead sandbox's state unmounts it.
    fn open_sockets(&self, top: &std::path::Path, gid: Option<u32>) -> Result<SocketDir, Error> {
        let bad = |e: crate::addr::SocketDirError| Error::Host {
            what: "socket directory".into(),
            source: std::io::Error::other(e.to_string()),
        };
        // Only a privileged runner can mount; rootless, the directory is a plain one in the
        // caller's runtime directory (see the README's "Socket directory").
        let privileged =
            self.plan.ids() != crate::plan::IdMode::Caller && nix::unistd::geteuid().is_root();
        let limits = privileged.then_some(crate::sockfs::TmpfsLimits {
            size: self.profile.sockets.size.0,
            inodes: self.profile.sockets.inodes,
        });
        let state = crate::state::dir_of(&self.id);
        crate::sockfs::record(&state, top).map_err(|e| {
            Error::host(
                format!(
                    "writing {}",
                    state.join(crate::sockfs::MOUNT_RECORD).display()
                ),
                e,
            )
        })?;
        let mut sd = SocketDir::create_in(top, gid, limits).map_err(bad)?;
        if self.plan.detach {
            sd.set_cleanup_on_drop(false);
        }
        let user = self.profile.user;
        // The plugin's host ids: shifted into its id block when it has one.
        let base = self.ids.as_ref().map_or(0, |r| r.base());
        if base != 0 || user.uid != 0 || user.gid != 0 {
            // A non-root plugin must be able to create its socket there.
            let (uid, gid) = (base + user.uid, base + user.gid);
            std::os::unix::fs::chown(sd.host_dir(), Some(uid), Some(gid))
                .map_err(|e| Error::host(format!("chown {}", sd.host_dir().display()), e))?;
        }
        Ok(sd.with_host_network(!self.profile.namespaces.net))
    }

    fn write_state(&self, pid: i32) -> Result<(), Error> {
        let st = crate::state::SandboxState {
            id: self.id.clone(),
            program: self.name.clone(),
            init_pid: pid,
            init_start_time: crate::state::start_time(pid)
                .ok_or_else(|| Error::host(format!("reading /proc/{pid}/stat"), Errno::ESRCH))?,
            kill_grace_ms: self.profile.kill_grace.0.as_millis() as u64,
            socket_dir: self.sockets.as_ref().map(|s| s.host_dir().to_path_buf()),
            links_dir: self.sockets.as_ref().map(|s| s.links_dir().to_path_buf()),
            sandbox_socket_dir: self.sockets.as_ref().map(|s| s.sandbox_dir().to_string()),
            host_network: !self.profile.namespaces.net,
            cgroups: self.cgroup_paths.clone(),
            created: std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0),
        };
        st.write()
    }

    /// Reattaches to the detached sandbox `id` (mirrors go-plugin's `ReattachFunc`): its state
    /// is read and its init verified (pid and start time) before anything is done.
    pub fn reattach(id: &str) -> Result<crate::reattach::Reattached, Error> {
        crate::reattach::Reattached::open(id)
    }
}

impl Drop for SandboxRunner {
    fn drop(&mut self) {
        // The sandbox first (a started, attached one is killed and reaped), then its
        // socket directory, which the plugin can no longer touch.
        if let Some(t) = self.timer.take() {
            t.abort();
        }
        drop(self.running.take());
        // Unmounted and removed unless detached (whose end removes it).
        drop(self.sockets.take());
        // Cleaned up: the reaper can forget it, and its id block is free again.
        drop(self.reaped.take());
        drop(self.ids.take());
    }
}

impl AddrTranslator for SandboxRunner {
    fn plugin_to_host(&self, network: &str, addr: &str) -> Result<(String, String), AddrError> {
        match &self.sockets {
            Some(sd) => sd.plugin_to_host(network, addr),
            None => translate(self.profile.namespaces.net, network, addr),
        }
    }

    fn host_to_plugin(&self, network: &str, addr: &str) -> Result<(String, String), AddrError> {
        // A go-plugin broker server the host made in its own directory: the plugin dials the
        // host's path as is, and the brokered connect reaches it (`[sockets] broker`).
        if network == "unix" {
            if let Some(r) = &self.running {
                let brokered = r.broker.lock().unwrap_or_else(|p| p.into_inner());
                if brokered.as_ref().is_some_and(|b| b.admits(addr)) {
                    return Ok(("unix".to_owned(), addr.to_owned()));
                }
            }
        }
        match &self.sockets {
            Some(sd) => sd.host_to_plugin(network, addr),
            None => translate(self.profile.namespaces.net, network, addr),
        }
    }
}

/// Without a shared socket directory, only a shared network carries addresses unchanged.
fn translate(private_net: bool, network: &str, addr: &str) -> Result<(String, String), AddrError> {
    crate::addr::translate_shared(!private_net, network, addr)
}

#[async_trait]
impl AttachedRunner for SandboxRunner {
    async fn wait(&self) -> Result<ExitStatus, Error> {
        let r = self
            .running
            .as_ref()
            .ok_or(Error::State("the sandbox is not started"))?;
        let status = r.wait().await?;
        // The egress servers stopped when the init was reaped; wait until they are gone.
        if let Some(e) = &self.egress {
            e.join().await;
        }
        // Every byte the plugin wrote reaches the caller's files before wait returns.
        let relays = std::mem::take(&mut *self.relays.lock().unwrap_or_else(|p| p.into_inner()));
        for t in relays {
            let _ = t.await;
        }
        Ok(status)
    }

    async fn kill(&self) -> Result<(), Error> {
        let r = self
            .running
            .as_ref()
            .ok_or(Error::State("the sandbox is not started"))?;
        r.kill(self.profile.kill_grace.0).await
    }

    fn id(&self) -> &str {
        &self.id
    }
}

#[async_trait]
impl Runner for SandboxRunner {
    async fn start(&mut self) -> Result<(), Error> {
        if self.running.is_some() {
            return Err(Error::State("the sandbox was already started"));
        }
        let span = self
            .start_span
            .take()
            .unwrap_or_else(|| tracing::info_span!("start", id = %self.id));
        let res = self.start_inner().instrument(span).await;
        match &res {
            Err(e) => {
                *self.setup_error.lock().unwrap_or_else(|p| p.into_inner()) = Some(e.to_string());
            }
            Ok(()) => self.arm_timeout(),
        }
        res
    }

    async fn diagnose(&self) -> String {
        self.diagnosis().text
    }

    fn stdout(&mut self) -> Option<PipeReader> {
        self.out.take()
    }

    fn stderr(&mut self) -> Option<PipeReader> {
        self.err.take()
    }

    fn name(&self) -> &str {
        &self.name
    }
}

/// Checks the host's `PLUGIN_UNIX_SOCKET_DIR`: an absolute path to an existing directory.
fn host_socket_dir(d: &std::path::Path) -> Result<&std::path::Path, Error> {
    let bad = |why: String| {
        Error::InvalidCommand(format!("PLUGIN_UNIX_SOCKET_DIR={}: {why}", d.display()))
    };
    if !d.is_absolute() {
        return Err(bad(
            "a relative path; the host must give an absolute directory (it would name a \
             directory of whatever the current directory is)"
                .into(),
        ));
    }
    match std::fs::metadata(d) {
        Ok(m) if m.is_dir() => Ok(d),
        Ok(_) => Err(bad("not a directory".into())),
        Err(e) => Err(bad(format!("cannot be used: {e}"))),
    }
}

/// A unique sandbox ID: `sbx-` and 24 random hex digits (never a pid).
fn new_id() -> String {
    let mut b = [0u8; 12];
    let mut got = 0;
    while got < b.len() {
        // SAFETY: getrandom writes at most the given length into the buffer.
        let n = unsafe { libc::getrandom(b[got..].as_mut_ptr().cast(), b.len() - got, 0) };
        if n > 0 {
            got += n as usize;
        }
    }
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!("sbx-{hex}")
}
