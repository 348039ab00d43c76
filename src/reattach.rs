//! Reattaching to a detached sandbox from another process (go-plugin's `ReattachFunc`).

use async_trait::async_trait;
use std::os::fd::OwnedFd;
use std::sync::Mutex;
use std::time::Duration;
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

use rustix::process::{pidfd_send_signal, Signal};

use crate::error::{AddrError, Error};
use crate::runner::{AddrTranslator, AttachedRunner, BoxFuture, ReattachFunc};
use crate::state::{self, SandboxState};
use crate::status::ExitStatus;

/// A detached sandbox found again by its ID: it can be waited for, killed and asked to
/// translate addresses, like the runner that started it.
///
/// The init is not this process's child, so its exit is seen through the pidfd and the
/// plugin's status is read from the state directory, where the init wrote it.
pub struct Reattached {
    state: SandboxState,
    sockets: Option<crate::addr::SocketDir>,
    pidfd: AsyncFd<OwnedFd>,
    exit: Mutex<Option<ExitStatus>>,
}

impl Reattached {
    /// Reads the state of `id` and verifies its init (pid and start time); a dead or reused
    /// pid is [`Error::Stale`], and nothing is signalled.
    pub fn open(id: &str) -> Result<Reattached, Error> {
        let st = SandboxState::read(id)?;
        let fd = st.open_init()?;
        // SAFETY: an OwnedFd keeps the same open fd for as long as the AsyncFd owns it.
        let pidfd = unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }
            .map_err(|e| Error::host("pidfd", e.into_parts().1))?;
        let sockets = match (&st.socket_dir, &st.links_dir) {
            (Some(h), Some(l)) => {
                let mut sd = crate::addr::SocketDir::open_existing(h, l)
                    .map_err(|e| Error::Stale {
                        id: id.to_string(),
                        why: format!("its socket directory: {e}"),
                    })?
                    .with_host_network(st.host_network);
                if let Some(d) = &st.sandbox_socket_dir {
                    sd = sd.with_sandbox_dir(d).map_err(|e| Error::Stale {
                        id: id.to_string(),
                        why: format!("its socket directory: {e}"),
                    })?;
                }
                sd.set_cleanup_on_drop(false);
                Some(sd)
            }
            _ => None,
        };
        Ok(Reattached {
            state: st,
            sockets,
            pidfd,
            exit: Mutex::new(None),
        })
    }

    /// The recorded state.
    pub fn state(&self) -> &SandboxState {
        &self.state
    }

    /// A go-plugin style [`ReattachFunc`] for sandbox `id`.
    pub fn func(id: String) -> ReattachFunc {
        Box::new(
            move || -> BoxFuture<'static, Result<Box<dyn AttachedRunner>, Error>> {
                let id = id.clone();
                Box::pin(async move {
                    Reattached::open(&id).map(|r| Box::new(r) as Box<dyn AttachedRunner>)
                })
            },
        )
    }

    fn signal(&self, s: Signal) -> Result<(), Error> {
        match pidfd_send_signal(self.pidfd.get_ref(), s) {
            Ok(()) => Ok(()),
            Err(e) if e == rustix::io::Errno::SRCH => Ok(()),
            Err(e) => Err(Error::host("signalling the sandbox init", e)),
        }
    }

    fn finished(&self) -> ExitStatus {
        let mut g = self.exit.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = *g {
            return s;
        }
        let dir = state::dir_of(&self.state.id);
        let raw = std::fs::read(dir.join("status")).unwrap_or_default();
        // The init writes the plugin's raw wait status before it exits; none means the init
        // itself was killed (a SIGKILL of the whole sandbox).
        let s = match <[u8; 4]>::try_from(raw.as_slice()) {
            Ok(b) => ExitStatus::from_raw(i32::from_ne_bytes(b)),
            Err(_) => ExitStatus::Signaled {
                signal: libc::SIGKILL,
                core_dumped: false,
            },
        };
        let _ = state::remove_dir(&self.state.id);
        // Its cgroups are owned by its init, which is gone: reclaim them now rather than at
        // the next start.
        if !self.state.cgroups.is_empty() {
            let _ = crate::cgroup::reclaim_stale();
        }
        // ... and its block of host ids, whose claim its init owned.
        let _ = crate::idrange::reclaim_stale();
        *g = Some(s);
        s
    }

    fn exited(&self) -> bool {
        // A pidfd is readable once its process has exited.
        let mut pfd = libc::pollfd {
            fd: std::os::fd::AsRawFd::as_raw_fd(self.pidfd.get_ref()),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd, no wait.
        unsafe { libc::poll(&mut pfd, 1, 0) == 1 }
    }
}

#[async_trait]
impl AttachedRunner for Reattached {
    async fn wait(&self) -> Result<ExitStatus, Error> {
        loop {
            if self.exited() {
                return Ok(self.finished());
            }
            let mut g = self
                .pidfd
                .readable()
                .await
                .map_err(|e| Error::host("polling the pidfd", e))?;
            if self.exited() {
                return Ok(self.finished());
            }
            g.clear_ready();
        }
    }

    async fn kill(&self) -> Result<(), Error> {
        if !self.exited() {
            self.signal(Signal::TERM)?;
            let grace = Duration::from_millis(self.state.kill_grace_ms);
            if tokio::time::timeout(grace, self.wait()).await.is_err() {
                self.signal(Signal::KILL)?;
            }
        }
        self.wait().await.map(drop)
    }

    fn id(&self) -> &str {
        &self.state.id
    }
}

impl AddrTranslator for Reattached {
    fn plugin_to_host(&self, network: &str, addr: &str) -> Result<(String, String), AddrError> {
        match &self.sockets {
            Some(sd) => sd.plugin_to_host(network, addr),
            None => crate::addr::translate_shared(self.state.host_network, network, addr),
        }
    }

    fn host_to_plugin(&self, network: &str, addr: &str) -> Result<(String, String), AddrError> {
        match &self.sockets {
            Some(sd) => sd.host_to_plugin(network, addr),
            None => crate::addr::translate_shared(self.state.host_network, network, addr),
        }
    }
}
