//! A started sandbox: waiting for its plugin's status, killing it, and cleaning up what it
//! owned on the host.

use std::os::fd::{AsFd, OwnedFd};
use std::sync::Mutex;
use std::time::Duration;
use tokio::io::unix::AsyncFd;

use nix::errno::Errno;
use rustix::process::{pidfd_send_signal, Signal, WaitId, WaitIdOptions};

use crate::cgroup::{Counters, SandboxCgroup, Watcher};
use crate::error::Error;
use crate::status::ExitStatus;

/// A started sandbox: its init's pidfd and the pipe that carries the plugin's wait status.
pub(super) struct Running {
    pub(super) pid: i32,
    pub(super) pidfd: AsyncFd<OwnedFd>,
    pub(super) status_r: OwnedFd,
    pub(super) exit: Mutex<Option<ExitStatus>>,
    /// Started detached: dropping the runner leaves it running.
    pub(super) detached: bool,
    /// The sandbox's cgroup (not for a detached sandbox: it owns its cgroup itself).
    pub(super) cgroup: Mutex<Option<SandboxCgroup>>,
    /// Watches the cgroup's event files while the plugin runs.
    pub(super) watcher: Mutex<Option<Watcher>>,
    /// The cgroup counters at the end.
    pub(super) counters: Mutex<Option<Counters>>,
    /// Stops the egress servers and relays when dropped: once the init is reaped.
    pub(super) egress: Mutex<Option<crate::egress::ShutdownHandle>>,
    /// Host-side state directory, removed once the sandbox has ended.
    pub(super) state_dir: Option<std::path::PathBuf>,
    /// The brokered-connect supervisor (`[sockets] broker`), stopped once the init is reaped.
    pub(super) broker: Mutex<Option<crate::broker::Supervisor>>,
}

impl Running {
    /// Records the cgroup's final counters, then kills what is left and removes it.
    pub(super) fn finish_cgroup(&self) {
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
    pub(super) fn counters(&self) -> Option<Counters> {
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

    pub(super) fn status(&self) -> Option<ExitStatus> {
        *self.exit.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn signal(&self, sig: i32) -> Result<(), Error> {
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
    pub(super) fn try_reap(&self, options: WaitIdOptions) -> Result<Option<ExitStatus>, Error> {
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
        drop(self.egress.lock().unwrap_or_else(|p| p.into_inner()).take());
        // No process of the sandbox is left to make a connect: the supervisor ends.
        drop(self.broker.lock().unwrap_or_else(|p| p.into_inner()).take());
        if self.detached {
            // A detached sandbox owns its cgroups through its init, which is gone now.
            let _ = crate::cgroup::reclaim_stale();
            // ... and its block of host ids, whose claim its init owned.
            let _ = crate::idrange::reclaim_stale();
        }
        if let Some(d) = &self.state_dir {
            if let Err(e) = crate::state::remove_path(d) {
                tracing::warn!(error = %e, "the end of a detached sandbox: cleaning up");
            }
        }
        Ok(Some(s))
    }

    pub(super) async fn wait(&self) -> Result<ExitStatus, Error> {
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

    pub(super) async fn kill(&self, grace: Duration) -> Result<(), Error> {
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
