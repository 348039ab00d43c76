//! [`SandboxRunner`]: the go-plugin runner interfaces implemented with namespaces.

use async_trait::async_trait;
use std::ffi::{OsStr, OsString};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::unix::AsyncFd;
use tokio::io::AsyncReadExt;
use tokio::io::Interest;
use tracing::Instrument;

use nix::errno::Errno;
use rustix::process::{pidfd_send_signal, Signal, WaitId, WaitIdOptions};

use crate::addr::SocketDir;
use crate::cgroup::{Counters, SandboxCgroup, Watcher};
use crate::diagnose::Diagnosis;
use crate::error::{AddrError, Error};
use crate::plan::Plan;
use crate::profile::{Profile, StdinMode};
use crate::runner::{AddrTranslator, AttachedRunner, PipeReader, PipeWriter, Runner};
use crate::spawn::{self, ChildFds, FdList, Spawned, Step, StepError, STEP_ERROR_LEN};
use crate::status::ExitStatus;

/// Where one of the plugin's standard streams goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Stdio {
    /// A file on the host, created (0600) or appended to (output streams only; for stdin
    /// it is read).
    File(std::path::PathBuf),
    /// A pipe to the host: [`Runner::stdout`] / [`Runner::stderr`] hand out the read end,
    /// [`SandboxRunner::take_stdin`] the write end.
    Pipe,
    /// The caller's own fd (0, 1 or 2).
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
    /// Tasks copying the plugin's output into the caller's regular files.
    relays: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    /// The task feeding a regular file to the plugin's stdin.
    stdin_relay: Option<tokio::task::JoinHandle<()>>,
    /// The translator over the socket directory, once started.
    sockets: Option<SocketDir>,
    /// This attached sandbox's registration with the reaper, which cleans up after a host
    /// that dies without doing it itself; dropped (unregistered) after the host's cleanup.
    reaped: Option<crate::reaper::Registration>,
}

impl SandboxRunner {
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
        // The socket directory: the host's own PLUGIN_UNIX_SOCKET_DIR when it set one (it owns
        // and cleans it), else a fresh one in this sandbox's state directory.
        let socket_host = if profile.sockets.enabled {
            if !profile.private_root || !profile.namespaces.mount {
                return Err(Error::InvalidCommand(
                    "a shared socket directory needs the private root (`private_root = true`)"
                        .into(),
                ));
            }
            Some(
                match std::env::var_os("PLUGIN_UNIX_SOCKET_DIR").filter(|v| !v.is_empty()) {
                    Some(d) => (std::path::PathBuf::from(d), true),
                    None => (crate::state::dir_of(&id).join("sock"), false),
                },
            )
        } else {
            None
        };
        // Planning is the first phase of the start span (closed when start() ends).
        let start_span = tracing::info_span!("start", id = %id);
        let plan_span = tracing::info_span!(parent: &start_span, "plan").entered();
        let plan = Plan::with_socket_dir(
            &profile,
            program.as_ref(),
            &args,
            &|k| std::env::var_os(k),
            socket_host.as_ref().map(|(p, _)| p.as_path()),
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
            cgroup_paths: Vec::new(),
            relays: Mutex::new(Vec::new()),
            stdin_relay: None,
        })
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

    /// Creates (or, for a host-owned directory, opens) the socket directory and its
    /// host-only directory of verified links.
    fn open_sockets(
        &self,
        host_dir: &std::path::Path,
        host_owned: bool,
        gid: Option<u32>,
    ) -> Result<SocketDir, Error> {
        let bad = |e: crate::addr::SocketDirError| Error::Host {
            what: "socket directory".into(),
            source: std::io::Error::other(e.to_string()),
        };
        let mut sd = if host_owned {
            // Links must live on the same file system as the sockets (hard links), and
            // outside anything the plugin can write: a private sibling of the host's dir.
            let name = host_dir
                .file_name()
                .map(|n| n.to_string_lossy().into_owned());
            let parent = host_dir.parent().unwrap_or(std::path::Path::new("/"));
            let links = parent.join(format!(
                ".{}.links-{}",
                name.unwrap_or_else(|| "sock".into()),
                self.id
            ));
            std::os::unix::fs::DirBuilderExt::mode(&mut std::fs::DirBuilder::new(), 0o700)
                .create(&links)
                .map_err(|e| Error::host(format!("creating {}", links.display()), e))?;
            SocketDir::open_existing(host_dir, &links).map_err(|e| {
                let _ = std::fs::remove_dir(&links);
                bad(e)
            })?
        } else {
            SocketDir::create(&crate::state::dir_of(&self.id), gid).map_err(bad)?
        };
        if self.plan.detach {
            sd.set_cleanup_on_drop(false);
        }
        let user = self.profile.user;
        if !host_owned && (user.uid != 0 || user.gid != 0) {
            // A non-root plugin must be able to create its socket there.
            std::os::unix::fs::chown(sd.host_dir(), Some(user.uid), Some(user.gid))
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

    async fn start_inner(&mut self) -> Result<(), Error> {
        let setup_span = tracing::info_span!("setup").entered();
        for &fd in self.plan.pass_fds() {
            match fd_kind(fd) {
                Err(e) => {
                    return Err(Error::host(
                        format!("pass_fds: fd {fd} is not open in the caller"),
                        e,
                    ))
                }
                Ok(FdKind::Dir) | Ok(FdKind::Path) => return Err(refuse_fd("pass_fds", fd)),
                Ok(_) => {}
            }
        }
        let (err_r, err_w) = pipe()?;
        // A detached sandbox keeps its state (and the plugin's exit status) in a directory
        // of its own, so a process that reattaches later can read it; removed on failure.
        let mut state_guard = DirGuard(None);
        // State directories that crashed hosts left behind are reclaimed on the way (stale
        // cgroups are, when this sandbox's cgroup is made).
        let _ = crate::state::reclaim_stale();
        if self.plan.detach || self.socket_host.is_some() {
            let gid = self.socket_group()?;
            state_guard.0 = Some(crate::state::create_dir(&self.id, gid)?);
            if let Some((host_dir, host_owned)) = &self.socket_host {
                self.sockets = Some(self.open_sockets(host_dir, *host_owned, gid)?);
            }
        }
        let (status_r, status_w) = match (&state_guard.0, self.plan.detach) {
            (Some(dir), true) => status_file(&dir.join("status"))?,
            _ => pipe()?,
        };
        let (sync_r, sync_w) = pipe()?;
        let mut child_side: Vec<OwnedFd> = Vec::new();
        let mut stdin_fd = -1;
        let mut input: Option<PipeWriter> = None;
        let mut relays: Vec<tokio::task::JoinHandle<()>> = Vec::new();
        let mut stdin_relay: Option<tokio::task::JoinHandle<()>> = None;
        match &self.stdin {
            Stdio::File(p) => stdin_fd = keep(&mut child_side, open_file(p, libc::O_RDONLY)?),
            Stdio::Inherit => match fd_kind(0) {
                Ok(FdKind::Dir) | Ok(FdKind::Path) => return Err(refuse_fd("stdin", 0)),
                // A regular file is relayed through a pipe: handed over as is, the plugin
                // could reopen it through /proc/self/fd/0 for writing.
                Ok(FdKind::File) => {
                    let (r, w) = pipe()?;
                    stdin_fd = keep(&mut child_side, r);
                    let src = std::fs::File::from(dup_above2(0)?);
                    let mut tx = tokio::net::unix::pipe::Sender::from_owned_fd(w)
                        .map_err(|e| Error::host("stdin relay pipe", e))?;
                    stdin_relay = Some(tokio::spawn(async move {
                        let mut src = tokio::fs::File::from_std(src);
                        let _ = tokio::io::copy(&mut src, &mut tx).await;
                    }));
                }
                _ => {}
            },
            Stdio::Null => stdin_fd = keep(&mut child_side, dev_null(libc::O_RDONLY)?),
            Stdio::Pipe => {
                let (r, w) = pipe()?;
                stdin_fd = keep(&mut child_side, r);
                input = Some(Box::new(
                    tokio::net::unix::pipe::Sender::from_owned_fd(w)
                        .map_err(|e| Error::host("stdin pipe", e))?,
                ));
            }
        }
        let mut output = |s: Stdio, fd: RawFd| -> Result<(RawFd, Option<PipeReader>), Error> {
            Ok(match s {
                Stdio::Inherit => match fd_kind(fd) {
                    Ok(FdKind::Dir) | Ok(FdKind::Path) => {
                        return Err(refuse_fd(if fd == 1 { "stdout" } else { "stderr" }, fd))
                    }
                    // Relayed through a pipe, so the plugin cannot reopen the caller's file
                    // through /proc/self/fd with more rights (read it back, truncate it).
                    Ok(FdKind::File) => {
                        let (r, w) = pipe()?;
                        let dst = std::fs::File::from(dup_above2(fd)?);
                        let mut rx = tokio::net::unix::pipe::Receiver::from_owned_fd(r)
                            .map_err(|e| Error::host("output relay pipe", e))?;
                        relays.push(tokio::spawn(async move {
                            let mut dst = tokio::fs::File::from_std(dst);
                            let _ = tokio::io::copy(&mut rx, &mut dst).await;
                            let _ = tokio::io::AsyncWriteExt::flush(&mut dst).await;
                        }));
                        (keep(&mut child_side, w), None)
                    }
                    _ => (keep(&mut child_side, dup_above2(fd)?), None),
                },
                Stdio::Null => (keep(&mut child_side, dev_null(libc::O_WRONLY)?), None),
                Stdio::File(p) => {
                    let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_APPEND;
                    (keep(&mut child_side, open_file(&p, flags)?), None)
                }
                Stdio::Pipe => {
                    let (r, w) = pipe()?;
                    let rx = tokio::net::unix::pipe::Receiver::from_owned_fd(r)
                        .map_err(|e| Error::host("output pipe", e))?;
                    (keep(&mut child_side, w), Some(Box::new(rx) as PipeReader))
                }
            })
        };
        let (stdout_fd, out) = output(self.stdout.clone(), 1)?;
        let (stderr_fd, err) = output(self.stderr.clone(), 2)?;
        let init_exe = spawn::init_exe().map_err(|e| {
            Error::host(
                "sandbox-init: sealed memfd (memfd_create, write, seals)",
                std::io::Error::from(e),
            )
        })?;
        let (go_r, go_w) = pipe()?;
        let (vm_r, vm_w) = pipe()?;
        let mut init_keep = vec![
            err_w.as_raw_fd(),
            status_w.as_raw_fd(),
            sync_r.as_raw_fd(),
            init_exe,
            go_r.as_raw_fd(),
            go_w.as_raw_fd(),
            vm_w.as_raw_fd(),
        ];
        let mut plugin_keep = vec![err_w.as_raw_fd(), vm_w.as_raw_fd()];
        init_keep.extend_from_slice(self.plan.pass_fds());
        plugin_keep.extend_from_slice(self.plan.pass_fds());
        let fds = ChildFds {
            stdin: stdin_fd,
            stdout: stdout_fd,
            stderr: stderr_fd,
            err_w: err_w.as_raw_fd(),
            status_w: status_w.as_raw_fd(),
            sync_r: sync_r.as_raw_fd(),
            sync_w: sync_w.as_raw_fd(),
            init_keep: FdList::new(&init_keep),
            plugin_keep: FdList::new(&plugin_keep),
            host_pid: host_pid_in_proc_view(),
            init_exe,
            go_r: go_r.as_raw_fd(),
            go_w: go_w.as_raw_fd(),
            // Set by the spawner, which maps the stacks.
            plugin_stack: 0,
            plugin_stack_size: 0,
        };
        child_side.extend([err_w, status_w, sync_r, go_r, go_w, vm_w]);
        drop(setup_span);

        let cgroup_span = tracing::info_span!("cgroup").entered();
        // The cgroup exists, with its limits, before the child does (and stale cgroups of
        // crashed hosts are reclaimed on the way).
        let cgroup = if self.profile.limits.is_empty() {
            None
        } else {
            let parent = self.profile.limits.cgroup_parent.as_ref();
            let limits = self.profile.limits.to_limits();
            let created = SandboxCgroup::create(
                &self.id,
                &limits,
                parent.map(|p| std::path::Path::new(p.as_str())),
            );
            let euid = nix::unistd::geteuid().as_raw();
            match created {
                Ok(cg) => Some(cg),
                // An unprivileged caller: say that it is rootless mode, what is missing and
                // the ways out, never run without the limits.
                Err(e)
                    if euid != 0 && !matches!(e, crate::cgroup::CgroupError::InvalidLimit(_)) =>
                {
                    return Err(crate::cgroup::CgroupError::Rootless {
                        uid: euid,
                        controllers: limits.controllers().join(", "),
                        cause: Box::new(e),
                    }
                    .into())
                }
                Err(e) => return Err(e.into()),
            }
        };
        if !self.plan.detach {
            // Everything this sandbox owns on the host, for the reaper, should the host die
            // before it cleans up itself (from here on, even in the middle of this start).
            let cgroups = cgroup.as_ref().map(|c| c.paths()).unwrap_or_default();
            let cgroups: Vec<&std::path::Path> = cgroups.iter().map(|p| p.as_path()).collect();
            let record = cgroup.as_ref().and_then(|c| c.record_path());
            let mut trees: Vec<&std::path::Path> =
                state_guard.0.iter().map(|d| d.as_path()).collect();
            let links = match (&self.sockets, &self.socket_host) {
                (Some(sd), Some((_, true))) => Some(sd.links_dir().to_path_buf()),
                _ => None,
            };
            trees.extend(links.as_deref());
            self.reaped = Some(crate::reaper::register(
                &self.id,
                &cgroups,
                &trees,
                &record.into_iter().collect::<Vec<_>>(),
            ));
        }
        // The child is born in its cgroup where the kernel allows it (v2 CLONE_INTO_CGROUP,
        // v1 by moving the spawner thread for the clone), else attached by pid below.
        let placement = match cgroup.as_ref() {
            Some(cg) => cg.placement()?,
            None => None,
        };
        let placed_by_clone = placement.is_some();
        drop(cgroup_span);
        // Nothing left to do between the clone and the child's first step (placed at birth,
        // no uid maps to write, no state to record): the spawner lets it go at once.
        let release =
            (placed_by_clone || cgroup.is_none()) && !self.plan.rootless() && !self.plan.detach;
        let clone_span = tracing::info_span!("clone");
        let pending = spawn::spawn(self.plan.clone(), fds, child_side, placement, release, vm_r)
            .instrument(clone_span.clone())
            .await
            .map_err(spawn_error)?;
        let clone_steps = clone_span.enter();
        let pid = pending.pid;
        // The init exists and, unless released, waits on the sync pipe. Until `finish`, an
        // error here drops `pending` and the sync pipe: the init gives up, and the spawner
        // kills and reaps it.
        let mut cgroup = cgroup;
        if let Some(cg) = &cgroup {
            // cgroup v1 (no CLONE_INTO_CGROUP): move the init in while it still waits on the
            // sync pipe, before it forks the plugin or runs anything of the profile's.
            if !placed_by_clone {
                cg.attach(pid)?;
            }
        }
        if self.plan.detach {
            if let Some(cg) = cgroup.take() {
                self.cgroup_paths = cg.hand_over(pid)?;
            }
        }
        if self.plan.rootless() {
            // The child waits on the sync pipe: map root inside to the caller before it
            // mounts anything. Our unreaped child's pid cannot be reused meanwhile.
            write_id_maps(pid)?;
        }
        if self.plan.detach {
            self.write_state(pid)?;
        }
        // Let the child go on (unless the spawner did), then wait until neither the init nor
        // the plugin runs in this process's memory any more.
        if !release {
            write_all(&sync_w, &[1])?;
        }
        drop(sync_w);
        let Spawned { pid, pidfd } = pending.finish().await.map_err(spawn_error)?;
        set_nonblocking(&status_r)?;
        // From here on, dropping `running` (an error, or a cancelled start) kills and reaps.
        let running = Running {
            pid,
            // SAFETY: an OwnedFd keeps the same open fd for as long as the AsyncFd owns it.
            pidfd: unsafe { AsyncFd::register_with_interest(pidfd, Interest::READABLE) }
                .map_err(|e| Error::host("pidfd", e.into_parts().1))?,
            status_r,
            exit: Mutex::new(None),
            detached: self.plan.detach,
            state_dir: state_guard.0.take(),
            cgroup: Mutex::new(None),
            watcher: Mutex::new(None),
            counters: Mutex::new(None),
        };
        if let Some(cg) = cgroup {
            if !running.detached {
                *running.watcher.lock().unwrap_or_else(|p| p.into_inner()) = Some(cg.watch());
                *running.cgroup.lock().unwrap_or_else(|p| p.into_inner()) = Some(cg);
            }
        }
        drop(clone_steps);
        drop(clone_span);
        // Let the child go on, then learn whether it reached execve.
        let exec_span = tracing::info_span!("exec");
        let mut rx = tokio::net::unix::pipe::Receiver::from_owned_fd(err_r)
            .map_err(|e| Error::host("error pipe", e))?;
        let mut rec = Vec::with_capacity(STEP_ERROR_LEN);
        rx.read_to_end(&mut rec)
            .instrument(exec_span.clone())
            .await
            .map_err(|e| Error::host("reading the error pipe", e))?;
        drop(exec_span);
        if rec.len() >= STEP_ERROR_LEN {
            // SAFETY: StepError is plain old data of exactly STEP_ERROR_LEN bytes.
            let se: StepError = unsafe { std::ptr::read_unaligned(rec.as_ptr().cast()) };
            let _ = running.wait().await;
            let errno = Errno::from_raw(se.errno);
            let step = Step::from_u32(se.step).unwrap_or(Step::Exec);
            return Err(if step == Step::Exec {
                Error::NotExecutable {
                    path: self.plan.program_path().to_path_buf(),
                    errno,
                }
            } else {
                Error::Setup {
                    step,
                    path: self.plan.step_path(step, se.arg),
                    errno,
                }
            });
        }
        if !rec.is_empty() {
            return Err(Error::host(
                "error pipe",
                std::io::Error::new(std::io::ErrorKind::InvalidData, "truncated step record"),
            ));
        }
        self.input = input;
        *self.relays.lock().unwrap_or_else(|p| p.into_inner()) = relays;
        self.stdin_relay = stdin_relay;
        if self.stdout == Stdio::Pipe {
            self.out = out;
        }
        if self.stderr == Stdio::Pipe {
            self.err = err;
        }
        self.running = Some(Arc::new(running));
        Ok(())
    }
}

/// The error of a failed clone, for the caller.
fn spawn_error(e: spawn::SpawnError) -> Error {
    match e {
        spawn::SpawnError::Clone(errno) => {
            Error::host("clone3 into new namespaces", std::io::Error::from(errno))
        }
        spawn::SpawnError::Move { path, errno } => crate::cgroup::CgroupError::Place {
            path,
            cause: std::io::Error::from(errno),
        }
        .into(),
    }
}

/// This process's pid as `/proc` (the mount the child will read) names it: the same as
/// `getpid()` unless this process lives in a PID namespace whose `/proc` was not remounted;
/// -1 when `/proc` does not show it (the child then skips its parent check).
fn host_pid_in_proc_view() -> i32 {
    std::fs::read_link("/proc/self")
        .ok()
        .and_then(|p| p.to_str().and_then(|s| s.parse().ok()))
        .unwrap_or(-1)
}

/// A started sandbox: its init's pidfd and the pipe that carries the plugin's wait status.
struct Running {
    pid: i32,
    pidfd: AsyncFd<OwnedFd>,
    status_r: OwnedFd,
    exit: Mutex<Option<ExitStatus>>,
    /// Started detached: dropping the runner leaves it running.
    detached: bool,
    /// The sandbox's cgroup (not for a detached sandbox: it owns its cgroup itself).
    cgroup: Mutex<Option<SandboxCgroup>>,
    /// Watches the cgroup's event files while the plugin runs.
    watcher: Mutex<Option<Watcher>>,
    /// The cgroup counters at the end.
    counters: Mutex<Option<Counters>>,
    /// Host-side state directory, removed once the sandbox has ended.
    state_dir: Option<std::path::PathBuf>,
}

impl Running {
    /// Records the cgroup's final counters, then kills what is left and removes it.
    fn finish_cgroup(&self) {
        let Some(cg) = self.cgroup.lock().unwrap_or_else(|p| p.into_inner()).take() else {
            return;
        };
        let mut c = cg.counters();
        if let Some(w) = self
            .watcher
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
        {
            c.merge(&w.stop());
        }
        *self.counters.lock().unwrap_or_else(|p| p.into_inner()) = Some(c);
        let _ = cg.remove();
    }

    /// The cgroup counters: final once the plugin ended, else the latest.
    fn counters(&self) -> Option<Counters> {
        if let Some(c) = self
            .counters
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
        {
            return Some(c);
        }
        let w = self.watcher.lock().unwrap_or_else(|p| p.into_inner());
        w.as_ref().map(|w| w.latest())
    }

    fn status(&self) -> Option<ExitStatus> {
        *self.exit.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn signal(&self, sig: i32) -> Result<(), Error> {
        if self.status().is_some() {
            return Ok(());
        }
        let s = Signal::from_named_raw(sig)
            .ok_or_else(|| Error::host(format!("signal {sig}"), Errno::EINVAL))?;
        match pidfd_send_signal(self.pidfd.get_ref(), s) {
            Ok(()) => Ok(()),
            // Already exited (a zombie not yet reaped): nothing to signal.
            Err(e) if e == rustix::io::Errno::SRCH => Ok(()),
            Err(e) => Err(Error::host(format!("sending signal {sig}"), e)),
        }
    }

    /// Reaps the init if it has exited; the status is the plugin's when the init reported
    /// it, else the init's own (a SIGKILL of the whole sandbox).
    fn try_reap(&self, options: WaitIdOptions) -> Result<Option<ExitStatus>, Error> {
        let mut g = self.exit.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = *g {
            return Ok(Some(s));
        }
        let ws = rustix::process::waitid(WaitId::PidFd(self.pidfd.get_ref().as_fd()), options)
            .map_err(|e| Error::host("waitid on the sandbox init", e))?;
        let Some(ws) = ws else { return Ok(None) };
        let mut buf = [0u8; 4];
        let n = rustix::io::read(&self.status_r, &mut buf).unwrap_or(0);
        let s = if n == 4 {
            ExitStatus::from_raw(i32::from_ne_bytes(buf))
        } else if let Some(code) = ws.exit_status() {
            ExitStatus::Exited { code }
        } else {
            ExitStatus::Signaled {
                signal: ws.terminating_signal().unwrap_or(libc::SIGKILL),
                core_dumped: ws.dumped(),
            }
        };
        *g = Some(s);
        self.finish_cgroup();
        if self.detached {
            // A detached sandbox owns its cgroups through its init, which is gone now.
            let _ = crate::cgroup::reclaim_stale();
        }
        if let Some(d) = &self.state_dir {
            let _ = std::fs::remove_dir_all(d);
        }
        Ok(Some(s))
    }

    async fn wait(&self) -> Result<ExitStatus, Error> {
        loop {
            if let Some(s) = self.try_reap(WaitIdOptions::EXITED | WaitIdOptions::NOHANG)? {
                return Ok(s);
            }
            let mut guard = self
                .pidfd
                .readable()
                .await
                .map_err(|e| Error::host("polling the pidfd", e))?;
            if let Some(s) = self.try_reap(WaitIdOptions::EXITED | WaitIdOptions::NOHANG)? {
                return Ok(s);
            }
            guard.clear_ready();
        }
    }

    async fn kill(&self, grace: Duration) -> Result<(), Error> {
        if self.status().is_some() {
            return Ok(());
        }
        self.signal(libc::SIGTERM)?;
        if tokio::time::timeout(grace, self.wait()).await.is_err() {
            // SIGKILL of the init: the kernel kills every process of the PID namespace and
            // the init's exit completes only after they are all gone. The cgroup kill also
            // reaches a sandbox without a PID namespace.
            self.signal(libc::SIGKILL)?;
            if let Some(cg) = self
                .cgroup
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .as_ref()
            {
                let _ = cg.kill_all();
            }
            self.wait().await?;
        }
        Ok(())
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if self.status().is_none() && self.detached {
            // It keeps running; still, it is our child, so reap it when it ends rather than
            // leave a zombie behind in a long-lived host.
            if let Ok(fd) = self.pidfd.get_ref().try_clone() {
                let _ = std::thread::Builder::new()
                    .name("sandbox-reaper".into())
                    .stack_size(64 * 1024)
                    .spawn(move || {
                        let _ = rustix::process::waitid(
                            WaitId::PidFd(fd.as_fd()),
                            WaitIdOptions::EXITED,
                        );
                    });
            }
            return;
        }
        if self.status().is_none() {
            let _ = pidfd_send_signal(self.pidfd.get_ref(), Signal::KILL);
            let _ = self.try_reap(WaitIdOptions::EXITED);
        }
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
        if let Some(sd) = self.sockets.take() {
            let links = sd.links_dir().to_path_buf();
            let host_owned = matches!(self.socket_host, Some((_, true)));
            let detached = self.plan.detach;
            drop(sd);
            if host_owned && !detached {
                let _ = std::fs::remove_dir_all(links);
            }
        }
        // Cleaned up: the reaper can forget it.
        drop(self.reaped.take());
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
        match &self.sockets {
            Some(sd) => sd.host_to_plugin(network, addr),
            None => translate(self.profile.namespaces.net, network, addr),
        }
    }
}

/// Without a shared socket directory, only a shared network carries addresses unchanged.
fn translate(private_net: bool, network: &str, addr: &str) -> Result<(String, String), AddrError> {
    translate_shared(!private_net, network, addr)
}

/// Translation when no socket directory is shared: tcp passes only with the host network.
pub(crate) fn translate_shared(
    host_network: bool,
    network: &str,
    addr: &str,
) -> Result<(String, String), AddrError> {
    let private_net = !host_network;
    match network {
        "tcp" | "tcp4" | "tcp6" if !private_net => Ok((network.into(), addr.into())),
        "tcp" | "tcp4" | "tcp6" => Err(AddrError::Unsupported {
            network: network.into(),
            why: "the sandbox has its own network namespace; its loopback is not the host's".into(),
        }),
        "unix" => Err(AddrError::Refused {
            addr: addr.into(),
            why: "this sandbox shares no socket directory with the host".into(),
        }),
        other => Err(AddrError::Unsupported {
            network: other.into(),
            why: "only unix and tcp addresses are known".into(),
        }),
    }
}

#[async_trait]
impl AttachedRunner for SandboxRunner {
    async fn wait(&self) -> Result<ExitStatus, Error> {
        let r = self
            .running
            .as_ref()
            .ok_or(Error::State("the sandbox is not started"))?;
        let status = r.wait().await?;
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

fn pipe() -> Result<(OwnedFd, OwnedFd), Error> {
    let (r, w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
        .map_err(|e| Error::host("pipe2", e))?;
    Ok((above2(r)?, above2(w)?))
}

/// Moves an fd to a number >= 3 (CLOEXEC), so the child's `dup2` onto 0, 1, 2 never
/// overwrites a source it still needs (a caller may have closed its own stdio).
fn above2(fd: OwnedFd) -> Result<OwnedFd, Error> {
    if fd.as_raw_fd() > 2 {
        return Ok(fd);
    }
    dup_above2(fd.as_raw_fd())
}

fn dup_above2(fd: RawFd) -> Result<OwnedFd, Error> {
    // SAFETY: F_DUPFD_CLOEXEC returns a new fd we own, or -1.
    let n = unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, 3) };
    if n == -1 {
        return Err(Error::host(
            format!("duplicating fd {fd}"),
            std::io::Error::last_os_error(),
        ));
    }
    // SAFETY: n is a fresh fd.
    Ok(unsafe { OwnedFd::from_raw_fd(n) })
}

fn dev_null(flags: libc::c_int) -> Result<OwnedFd, Error> {
    // SAFETY: open returns a new fd we own, or -1.
    let n = unsafe { libc::open(c"/dev/null".as_ptr(), flags | libc::O_CLOEXEC) };
    if n == -1 {
        return Err(Error::host("/dev/null", std::io::Error::last_os_error()));
    }
    // SAFETY: n is a fresh fd.
    above2(unsafe { OwnedFd::from_raw_fd(n) })
}

/// What kind of open file one of the caller's fds is, to decide how to hand it over.
enum FdKind {
    /// A pipe, socket, terminal or other character device: handed over as is.
    Stream,
    /// A regular file or block device: relayed through a pipe.
    File,
    /// A directory: refused (a way out of the private root through /proc/self/fd).
    Dir,
    /// An `O_PATH` fd: refused for the same reason.
    Path,
}

fn fd_kind(fd: RawFd) -> std::io::Result<FdKind> {
    // SAFETY: F_GETFL and fstat only read the fd's state.
    let fl = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if fl == -1 {
        return Err(std::io::Error::last_os_error());
    }
    if fl & libc::O_PATH != 0 {
        return Ok(FdKind::Path);
    }
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    if unsafe { libc::fstat(fd, &mut st) } == -1 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(match st.st_mode & libc::S_IFMT {
        libc::S_IFDIR => FdKind::Dir,
        libc::S_IFREG | libc::S_IFBLK => FdKind::File,
        _ => FdKind::Stream,
    })
}

fn refuse_fd(what: &str, fd: RawFd) -> Error {
    Error::InvalidCommand(format!(
        "{what} (fd {fd}) is a directory or an O_PATH handle: through /proc/self/fd it would \
         lead the plugin out of its private root; give it a file, a pipe or /dev/null"
    ))
}

/// Removes a directory on drop unless disarmed (taken).
struct DirGuard(Option<std::path::PathBuf>);

impl Drop for DirGuard {
    fn drop(&mut self) {
        if let Some(d) = self.0.take() {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

fn open_file(path: &std::path::Path, flags: libc::c_int) -> Result<OwnedFd, Error> {
    let c = std::ffi::CString::new(std::os::unix::ffi::OsStrExt::as_bytes(path.as_os_str()))
        .map_err(|_| Error::InvalidCommand(format!("{} contains NUL", path.display())))?;
    // SAFETY: open returns a new fd we own, or -1.
    let n = unsafe { libc::open(c.as_ptr(), flags | libc::O_CLOEXEC | libc::O_NOCTTY, 0o600) };
    if n == -1 {
        return Err(Error::host(
            format!("opening {}", path.display()),
            std::io::Error::last_os_error(),
        ));
    }
    // SAFETY: n is a fresh fd.
    above2(unsafe { OwnedFd::from_raw_fd(n) })
}

/// The status "pipe" of a detached sandbox: a file its init writes the plugin's wait status
/// to, readable by whoever reattaches.
fn status_file(path: &std::path::Path) -> Result<(OwnedFd, OwnedFd), Error> {
    let w = open_file(path, libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC)?;
    let r = open_file(path, libc::O_RDONLY)?;
    Ok((r, w))
}

fn keep(list: &mut Vec<OwnedFd>, fd: OwnedFd) -> RawFd {
    let n = fd.as_raw_fd();
    list.push(fd);
    n
}

/// Rootless mode: the single-line uid and gid maps of the sandbox's user namespace (root
/// inside = the caller's effective uid/gid outside), `setgroups` denied first as the kernel
/// requires of an unprivileged writer of `gid_map`.
fn write_id_maps(pid: i32) -> Result<(), Error> {
    let uid = nix::unistd::geteuid().as_raw();
    let gid = nix::unistd::getegid().as_raw();
    for (file, text) in [
        ("setgroups", "deny".to_string()),
        ("uid_map", format!("0 {uid} 1\n")),
        ("gid_map", format!("0 {gid} 1\n")),
    ] {
        let path = format!("/proc/{pid}/{file}");
        std::fs::write(&path, text.as_bytes())
            .map_err(|e| Error::host(format!("rootless mode: writing {text:?} to {path}"), e))?;
    }
    Ok(())
}

fn set_nonblocking(fd: &OwnedFd) -> Result<(), Error> {
    rustix::io::ioctl_fionbio(fd, true).map_err(|e| Error::host("O_NONBLOCK", e))
}

fn write_all(fd: &OwnedFd, buf: &[u8]) -> Result<(), Error> {
    rustix::io::write(fd, buf)
        .map(drop)
        .map_err(|e| Error::host("sync pipe", e))
}
