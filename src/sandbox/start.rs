//! [`Runner::start`](crate::Runner::start) of a [`SandboxRunner`]: the steps in the order
//! the kernel needs them (fds, state, cgroup, reaper registration, the clone, the host's work
//! while the init waits, the go, the child's report).

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::{Arc, Mutex};
use tokio::io::unix::AsyncFd;
use tokio::io::{AsyncReadExt, Interest};
use tracing::Instrument;

use nix::errno::Errno;

use super::running::Running;
use super::stdio::{fd_kind, open_file, pipe, refuse_fd, FdKind, Wired};
use super::{stdio, SandboxRunner, Stdio};
use crate::cgroup::SandboxCgroup;
use crate::child::fds::{ChildFds, FdList};
use crate::child::spawner::{self as spawn, Spawned};
use crate::child::step::{Step, StepError, STEP_ERROR_LEN};
use crate::error::Error;

/// The capabilities the kernel checks against the user namespace that owns a network
/// namespace (configuring it, raw sockets, ports below 1024, broadcast, mounting its sysfs):
/// a plugin that keeps one of them gets a network namespace owned by its own user namespace.
fn net_owner_caps() -> u64 {
    use caps::Capability::*;
    [
        CAP_NET_BIND_SERVICE,
        CAP_NET_BROADCAST,
        CAP_NET_ADMIN,
        CAP_NET_RAW,
        CAP_SYS_ADMIN,
    ]
    .iter()
    .fold(0, |m, c| m | 1u64 << c.index())
}

impl SandboxRunner {
    pub(super) async fn start_inner(&mut self) -> Result<(), Error> {
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
        if !self.plan.detach {
            // The reaper runs before this start makes anything on the host (started here at
            // a process's first attached sandbox, unless `prewarm` started it meanwhile).
            crate::reaper::start();
        }
        // Run as root, the sandbox's ids map to a block of host ids of its own.
        if self.plan.ids() == crate::plan::IdMode::Range {
            self.ids = Some(crate::idrange::IdRange::allocate(&self.id)?);
        }
        // Everything this sandbox owns on the host besides its cgroup, for the reaper should
        // the host die before it cleans up itself: the id claim, the state and socket
        // directories (the ones this start is about to make; a path never made costs the
        // reaper nothing). Registered at once, before any of them but the claim exists; no
        // process of the sandbox exists before the full registration below replaces this
        // one, so the reaper may free the claim at once.
        let owned = (!self.plan.detach).then(|| {
            let mut trees = Vec::new();
            if self.socket_host.is_some() || self.egress.is_some() {
                trees.push(crate::state::dir_of(&self.id));
            }
            // The socket directory's tmpfs is unmounted first; in the host's
            // PLUGIN_UNIX_SOCKET_DIR its mount point (or plain directory) is removed too.
            let mounts = match &self.socket_host {
                Some((top, host_owned)) => {
                    if *host_owned {
                        trees.push(top.clone());
                    }
                    vec![top.clone()]
                }
                None => Vec::new(),
            };
            Owned {
                mounts,
                trees,
                claim: self.ids.as_ref().map(|r| r.claim_path().to_path_buf()),
            }
        });
        let early = owned.as_ref().map(|o| o.register(&self.id, &[], None));
        // No scan for what crashed hosts left behind: each host's reaper removes it within
        // milliseconds of the host's death, and `sandbox-run check --cleanup` reclaims what a
        // killed reaper left. A scan here would cost every start O(sandboxes alive).
        if self.plan.detach || self.socket_host.is_some() || self.egress.is_some() {
            let gid = self.socket_group()?;
            let dir = crate::state::create_dir(&self.id, gid)?;
            if self.ids.is_some() {
                // The init, unprivileged on the host, binds the socket directory from here:
                // it may pass through (not list, not read).
                // So may it through the state root (0711 as `create_dir` makes it, unless
                // another part of the runner made it first).
                use std::os::unix::fs::PermissionsExt;
                for d in [dir.parent().unwrap_or(&dir), &dir] {
                    std::fs::set_permissions(d, std::fs::Permissions::from_mode(0o711))
                        .map_err(|e| Error::host(format!("chmod 711 {}", d.display()), e))?;
                }
            }
            state_guard.0 = Some(dir);
            if let Some((top, _)) = &self.socket_host {
                self.sockets = Some(self.open_sockets(top, gid)?);
            }
        }
        if let Some(e) = &self.egress {
            // resolv.conf and hosts for the private root, removed with the state directory.
            e.write_files()
                .map_err(|err| Error::host("network: writing resolv.conf and hosts", err))?;
        }
        let (status_r, status_w) = match (&state_guard.0, self.plan.detach) {
            (Some(dir), true) => status_file(&dir.join("status"))?,
            _ => pipe()?,
        };
        // The host's go: one byte, with the cgroup v1 `tasks` files the init joins by itself.
        let (sync_r, sync_w) = socket_pair("sync")?;
        let mut child_side: Vec<OwnedFd> = Vec::new();
        let Wired {
            stdin_fd,
            stdout_fd,
            stderr_fd,
            input,
            out,
            err,
            caller,
            file_relays,
            stdin_relay,
        } = stdio::wire(
            &self.stdin,
            &self.stdout,
            &self.stderr,
            &mut child_side,
            self.plugin_host_ids(),
            self.plan.detach,
        )?;
        let init_exe = crate::child::exe::init_exe().map_err(|e| {
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
        // Brokered connect: the plugin sends its seccomp listener over this pair.
        let broker_pair = if self.profile.sockets.broker && !self.plan.detach {
            let (host, plugin) = socket_pair("broker")?;
            init_keep.push(plugin.as_raw_fd());
            plugin_keep.push(plugin.as_raw_fd());
            Some((host, plugin))
        } else {
            None
        };
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
            ctty: caller.terminal_fd().map_or(-1, |n| n as i32),
            broker: broker_pair.as_ref().map_or(-1, |(_, p)| p.as_raw_fd()),
            // Set by the spawner.
            net_ready: false,
            cut: 0,
            moves: Default::default(),
        };
        child_side.extend([err_w, status_w, sync_r, go_r, go_w, vm_w]);
        let broker_host = broker_pair.map(|(host, plugin)| {
            child_side.push(plugin);
            host
        });
        drop(setup_span);

        // The cgroup exists, with its limits, before anything of the sandbox's runs. On
        // cgroup v1 the host makes it while the spawner clones (the kernel's namespace work
        // and ours overlap), and the init joins it by itself before it goes on (see
        // `v1::V1Cgroup::join_files`); on v2 the init is born in it (CLONE_INTO_CGROUP).
        let limits = (!self.profile.limits.is_empty()).then(|| self.profile.limits.to_limits());
        let parent = self
            .profile
            .limits
            .cgroup_parent
            .as_ref()
            .map(|p| std::path::PathBuf::from(p.as_str()));
        let euid = nix::unistd::geteuid().as_raw();
        // An unprivileged caller: say that it is rootless mode, what is missing and the
        // ways out, never run without the limits.
        let rootless_error = |e: crate::cgroup::CgroupError, limits: &crate::cgroup::Limits| {
            if euid != 0 && !matches!(e, crate::cgroup::CgroupError::InvalidLimit(_)) {
                Error::from(crate::cgroup::CgroupError::Rootless {
                    uid: euid,
                    controllers: limits.controllers().join(", "),
                    cause: Box::new(e),
                })
            } else {
                e.into()
            }
        };
        let detected = match &limits {
            Some(l) => Some(
                SandboxCgroup::detect_for(&self.id, l, parent.as_deref())
                    .map_err(|e| rootless_error(e, l))?,
            ),
            None => None,
        };
        let join_later = matches!(detected, Some((_, true)));
        // Shared with the spawner until it is done with the clone: should this start be
        // cancelled or fail meanwhile, the cgroup is removed only after the spawner thread
        // and the init are done with it (the init killed and reaped; the last holder
        // removes it).
        let cgroup: Arc<Mutex<Option<SandboxCgroup>>> = Arc::new(Mutex::new(None));
        let keepalive = limits
            .is_some()
            .then(|| cgroup.clone() as Arc<dyn std::any::Any + Send + Sync>);
        let mut reaped = None;
        let make_cgroup = |reaped: &mut Option<crate::reaper::Registration>| {
            let _span = tracing::info_span!("cgroup").entered();
            let (Some(l), Some((detection, _))) = (&limits, &detected) else {
                return Ok(None);
            };
            // The full registration (cgroup leaves and owner record too) goes before the
            // cgroup's record or first directory exists (from there on, even in the middle
            // of this start).
            SandboxCgroup::create_announced(
                detection,
                &self.id,
                l,
                parent.as_deref(),
                &mut |leaves, record| {
                    if let Some(o) = &owned {
                        *reaped = Some(o.register(&self.id, leaves, Some(record)));
                    }
                },
            )
            .map(Some)
            .map_err(|e| rootless_error(e, l))
        };
        // v2: made before the clone, which places the init.
        let made = if join_later {
            None
        } else {
            make_cgroup(&mut reaped)?
        };
        let placement = match made.as_ref() {
            Some(cg) => cg.placement()?,
            None => None,
        };
        // The spawner clones as the owner of the id block (not root), which may not write
        // the cgroup's `cgroup.procs`: then the init is attached by pid while it waits.
        let placement = match placement {
            Some(crate::child::spawner::Placement::IntoCgroup(_)) if self.ids.is_some() => None,
            p => p,
        };
        let owner = self.ids.as_ref().map(|r| (r.base(), r.base()));
        let placed_by_clone = placement.is_some();
        let has_cgroup = made.is_some();
        *cgroup.lock().unwrap_or_else(|p| p.into_inner()) = made;
        // Nothing left to do between the clone and the child's first step (placed at birth,
        // no uid maps to write, no state to record): the spawner lets it go at once.
        let release = (placed_by_clone || limits.is_none())
            && !self.plan.rootless()
            && !self.plan.detach
            && self.egress.is_none();
        // The broker's rules are the host's directories and uid as they are now, and only
        // sockets made from now on qualify.
        let broker_rules = broker_host
            .as_ref()
            .map(|_| crate::broker::Rules::now(&|k| std::env::var_os(k)));
        // A network namespace made ahead belongs to the host's user namespace: fine for a
        // root runner's sandbox without a user namespace of its own (so is a cloned one), or
        // whose plugin keeps none of the capabilities checked against the namespace's owner
        // (the init never uses them: its `lo` comes up ready).
        let pool_net = euid == 0
            && match self.plan.ids() {
                crate::plan::IdMode::Host => true,
                crate::plan::IdMode::Range => self.plan.keep_caps & net_owner_caps() == 0,
                // Rootless: the caller could not enter a namespace owned by the host.
                crate::plan::IdMode::Caller => false,
            };
        let clone_span = tracing::info_span!("clone");
        let sent = spawn::spawn(
            self.plan.clone(),
            fds,
            child_side,
            vm_r,
            spawn::Request {
                placement,
                release,
                owner,
                keepalive,
                pool_net,
            },
        )
        .map_err(spawn_error)?;
        // Until `finish`, an error from here on drops the job (`sent`, then `pending`) and
        // the sync socket: the init gives up, and the spawner kills and reaps it.
        let mut join = Vec::new();
        if join_later {
            // v1: made while the spawner clones; the init joins it with the go.
            let made = make_cgroup(&mut reaped)?;
            if let Some(cg) = &made {
                join = cg.join_files()?.unwrap_or_default();
            }
            *cgroup.lock().unwrap_or_else(|p| p.into_inner()) = made;
        }
        let pending = sent
            .pending()
            .instrument(clone_span.clone())
            .await
            .map_err(spawn_error)?;
        let clone_steps = clone_span.enter();
        let pid = pending.pid;
        // The init exists and, unless released, waits on the sync socket.
        if has_cgroup && !placed_by_clone && !join_later {
            // v2 without CLONE_INTO_CGROUP: move the init in while it still waits on the
            // sync socket, before it forks the plugin or runs anything of the profile's.
            if let Some(cg) = cgroup.lock().unwrap_or_else(|p| p.into_inner()).as_ref() {
                cg.attach(pid)?;
            }
        }
        if let (Some(o), None) = (&owned, &reaped) {
            // No cgroup (no limits): the state and socket directories and the id claim.
            reaped = Some(o.register(&self.id, &[], None));
        }
        self.reaped = reaped;
        // The reaper forgets the first record of an id: the early one.
        drop(early);
        if self.plan.detach {
            let taken = cgroup.lock().unwrap_or_else(|p| p.into_inner()).take();
            if let Some(cg) = taken {
                self.cgroup_paths = cg.hand_over(pid)?;
            }
        }
        if self.plan.rootless() {
            // The child waits on the sync pipe: map root inside to the caller before it
            // mounts anything. Our unreaped child's pid cannot be reused meanwhile.
            write_id_maps(pid, self.ids.as_ref().map(|r| r.base()))?;
        }
        if self.ids.is_some() {
            // The plugin's CAP_SYS_RESOURCE is its namespace's, which cannot raise a hard
            // limit: the host raises those on the init while it waits (the plugin inherits
            // them and sets the exact values itself).
            raise_rlimits(pid, &self.plan.rlimits)?;
        }
        if self.plan.detach {
            if let Some(ids) = self.ids.as_mut() {
                ids.hand_over(pid)?;
            }
            self.write_state(pid)?;
        }
        // The egress listeners, made in the init's network namespace while it waits; served
        // from here until the init is reaped (dropping the handle on an error stops them).
        let egress_stop = match &self.egress {
            Some(e) => Some(
                e.start(pid)
                    .instrument(tracing::info_span!("egress"))
                    .await
                    .map_err(|err| Error::host("network: the sandbox's proxies", err))?,
            ),
            None => None,
        };
        // Let the child go on (unless the spawner did), then wait until neither the init nor
        // the plugin runs in this process's memory any more.
        if !release {
            send_go(&sync_w, &join)?;
        }
        let join_paths: Vec<std::path::PathBuf> = join.into_iter().map(|(_, p)| p).collect();
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
            egress: Mutex::new(egress_stop),
            broker: Mutex::new(None),
        };
        // The spawner is done with the job: the cgroup is ours alone again.
        let cgroup = cgroup.lock().unwrap_or_else(|p| p.into_inner()).take();
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
                let path = match join_paths.get(se.arg as usize) {
                    Some(p) if step == Step::CgroupJoin => p.display().to_string(),
                    _ => self.plan.step_path(step, se.arg),
                };
                Error::Setup { step, path, errno }
            });
        }
        if !rec.is_empty() {
            return Err(Error::host(
                "error pipe",
                std::io::Error::new(std::io::ErrorKind::InvalidData, "truncated step record"),
            ));
        }
        if let (Some(host), Some(rules)) = (broker_host, broker_rules) {
            // The plugin sent its listener just before its execve, which has happened.
            let listener = receive_fd(&host)?;
            let sup = crate::broker::Supervisor::spawn(listener, rules, &self.id)
                .map_err(|e| Error::host("broker: starting the supervisor thread", e))?;
            *running.broker.lock().unwrap_or_else(|p| p.into_inner()) = Some(sup);
        }
        let (relays_guard, relays) = caller.start(running.pidfd.get_ref().as_fd())?;
        self.stdio = Some(relays_guard);
        self.input = input;
        *self.relays.lock().unwrap_or_else(|p| p.into_inner()) =
            relays.into_iter().chain(file_relays).collect();
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

/// What an attached sandbox owns on the host besides its cgroup, for its reaper.
struct Owned {
    mounts: Vec<std::path::PathBuf>,
    trees: Vec<std::path::PathBuf>,
    claim: Option<std::path::PathBuf>,
}

/// The paths of `v`, borrowed.
fn paths(v: &[std::path::PathBuf]) -> Vec<&std::path::Path> {
    v.iter().map(|p| p.as_path()).collect()
}

impl Owned {
    /// Registers sandbox `id` with the reaper: these, its cgroup leaves and owner record.
    fn register(
        &self,
        id: &str,
        cgroups: &[std::path::PathBuf],
        record: Option<&std::path::Path>,
    ) -> crate::reaper::Registration {
        let records: Vec<&std::path::Path> =
            record.into_iter().chain(self.claim.as_deref()).collect();
        crate::reaper::register(
            id,
            &paths(&self.mounts),
            &paths(cgroups),
            &paths(&self.trees),
            &records,
        )
    }
}

/// The error of a failed clone, for the caller.
fn spawn_error(e: spawn::SpawnError) -> Error {
    match e {
        spawn::SpawnError::Clone(errno) => {
            Error::host("clone3 into new namespaces", std::io::Error::from(errno))
        }
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

/// Removes a directory on drop unless disarmed (taken).
struct DirGuard(Option<std::path::PathBuf>);

impl Drop for DirGuard {
    fn drop(&mut self) {
        if let Some(d) = self.0.take() {
            // Unmounts the socket directory's file system recorded there first.
            let _ = crate::state::remove_path(&d);
        }
    }
}

/// The status "pipe" of a detached sandbox: a file its init writes the plugin's wait status
/// to, readable by whoever reattaches.
fn status_file(path: &std::path::Path) -> Result<(OwnedFd, OwnedFd), Error> {
    let w = open_file(path, libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC)?;
    let r = open_file(path, libc::O_RDONLY)?;
    Ok((r, w))
}

/// Rootless mode: the single-line uid and gid maps of the sandbox's user namespace (root
/// inside = the caller's effective uid/gid outside), `setgroups` denied first as the kernel
/// requires of an unprivileged writer of `gid_map`. With a root runner's id block at `base`:
/// ids 0-65535 inside are `base..base + 65536` outside, and `setgroups` stays allowed (the
/// init drops its groups itself).
fn write_id_maps(pid: i32, base: Option<u32>) -> Result<(), Error> {
    let maps = match base {
        Some(base) => {
            let n = crate::plan::ID_RANGE_SIZE;
            vec![
                ("uid_map", format!("0 {base} {n}\n")),
                ("gid_map", format!("0 {base} {n}\n")),
            ]
        }
        None => {
            let uid = nix::unistd::geteuid().as_raw();
            let gid = nix::unistd::getegid().as_raw();
            vec![
                ("setgroups", "deny".to_string()),
                ("uid_map", format!("0 {uid} 1\n")),
                ("gid_map", format!("0 {gid} 1\n")),
            ]
        }
    };
    for (file, text) in maps {
        let path = format!("/proc/{pid}/{file}");
        std::fs::write(&path, text.as_bytes())
            .map_err(|e| Error::host(format!("user namespace: writing {text:?} to {path}"), e))?;
    }
    Ok(())
}

/// Sets, on process `pid`, each limit of `plan` whose hard limit is above this process's.
fn raise_rlimits(pid: i32, plan: &crate::child::rlimit::RlimitPlan) -> Result<(), Error> {
    for r in plan.items() {
        let mut cur = libc::rlimit64 {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: reads this process's limit into a live struct.
        if unsafe { libc::prlimit64(0, r.resource as _, std::ptr::null(), &mut cur) } != 0 {
            continue;
        }
        if r.hard <= cur.rlim_max {
            continue;
        }
        let new = libc::rlimit64 {
            rlim_cur: r.soft,
            rlim_max: r.hard,
        };
        // SAFETY: sets the limit of our own unreaped child from a live struct.
        if unsafe { libc::prlimit64(pid, r.resource as _, &new, std::ptr::null_mut()) } != 0 {
            return Err(Error::host(
                format!(
                    "raising rlimits.{} of the sandbox to {}",
                    crate::rlimit::resource_name(r.resource),
                    r.hard
                ),
                std::io::Error::last_os_error(),
            ));
        }
    }
    Ok(())
}

fn set_nonblocking(fd: &OwnedFd) -> Result<(), Error> {
    rustix::io::ioctl_fionbio(fd, true).map_err(|e| Error::host("O_NONBLOCK", e))
}

/// A connected unix stream socket pair, both ends `CLOEXEC` and above 2 (`what` names it
/// in the error): the sync socket and the brokered connect's pair.
fn socket_pair(what: &str) -> Result<(OwnedFd, OwnedFd), Error> {
    use rustix::net::{AddressFamily, SocketFlags, SocketType};
    let (a, b) = rustix::net::socketpair(
        AddressFamily::UNIX,
        SocketType::STREAM,
        SocketFlags::CLOEXEC,
        None,
    )
    .map_err(|e| Error::host(format!("{what}: socketpair"), e))?;
    Ok((stdio::above2(a)?, stdio::above2(b)?))
}

/// The host's go: one byte on the sync socket, with the cgroup v1 `tasks` files `join` the
/// init writes `0` to (at most `JOIN_MAX`).
fn send_go(sync: &OwnedFd, join: &[(OwnedFd, std::path::PathBuf)]) -> Result<(), Error> {
    use rustix::net::{SendAncillaryBuffer, SendAncillaryMessage, SendFlags};
    use std::os::fd::BorrowedFd;
    const MAX: usize = crate::child::setup::JOIN_MAX;
    if join.len() > MAX {
        return Err(Error::host(
            "sync: the sandbox's cgroup v1 hierarchies",
            std::io::Error::other(format!(
                "{} hierarchies, at most {MAX} supported",
                join.len()
            )),
        ));
    }
    let fds: Vec<BorrowedFd<'_>> = join.iter().map(|(fd, _)| fd.as_fd()).collect();
    let mut space = [std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(MAX))];
    let mut anc = SendAncillaryBuffer::new(&mut space);
    if !fds.is_empty() && !anc.push(SendAncillaryMessage::ScmRights(&fds)) {
        return Err(Error::host(
            "sync: the go",
            std::io::Error::other("control message too large"),
        ));
    }
    rustix::net::sendmsg(
        sync,
        &[std::io::IoSlice::new(&[1])],
        &mut anc,
        SendFlags::NOSIGNAL,
    )
    .map(drop)
    .map_err(|e| Error::host("sync: sending the go", e))
}

/// The seccomp listener the plugin sent on `host` (one byte with `SCM_RIGHTS`).
fn receive_fd(host: &OwnedFd) -> Result<OwnedFd, Error> {
    use rustix::net::{RecvAncillaryBuffer, RecvAncillaryMessage, RecvFlags};
    let mut space = [std::mem::MaybeUninit::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut anc = RecvAncillaryBuffer::new(&mut space);
    let mut byte = [0u8; 1];
    let got = rustix::net::recvmsg(
        host,
        &mut [std::io::IoSliceMut::new(&mut byte)],
        &mut anc,
        RecvFlags::DONTWAIT | RecvFlags::CMSG_CLOEXEC,
    );
    let none = |why: &str| {
        Error::host(
            "broker: receiving the plugin's seccomp listener",
            std::io::Error::other(why.to_string()),
        )
    };
    match got {
        Err(e) => {
            return Err(Error::host(
                "broker: receiving the plugin's seccomp listener",
                e,
            ))
        }
        Ok(r) if r.bytes == 0 => return Err(none("the plugin sent nothing")),
        Ok(_) => {}
    }
    let mut listener = None;
    for msg in anc.drain() {
        if let RecvAncillaryMessage::ScmRights(fds) = msg {
            for fd in fds {
                listener.get_or_insert(fd);
            }
        }
    }
    listener.ok_or_else(|| none("no fd came with the message"))
}
