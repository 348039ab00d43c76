//! The reaper: nothing of a sandbox is left on the host after its host is SIGKILLed.
//!
//! Each host process starts one reaper, at its first attached sandbox (before that sandbox's
//! first cgroup exists) or earlier through `SandboxRunner::prewarm`, which `sandbox-run` runs
//! on a thread of its own at its start:
//! `sandbox-init` in its reaper mode (`src/init/sandbox-init.c`), started with `posix_spawn`
//! semantics and then detached from the host, holding one end of a `SOCK_SEQPACKET` pair.
//! Every attached sandbox is registered with the paths it owns on the host (its cgroups,
//! its owner record, its state and socket directories) and unregistered once the host has
//! cleaned it up itself. When the host dies, its end closes: its sandboxes die with it
//! (death signal), and the reaper removes what is still registered within about 2 s, with
//! no later start or `check --cleanup` needed. Detached sandboxes are never registered.
//!
//! Should the reaper fail to start, a warning is logged and the earlier guarantee holds:
//! the next start or `sandbox-run check --cleanup` reclaims what a dead host left.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::path::Path;
use std::sync::OnceLock;

/// The host's end of the socket to its reaper, once started.
fn socket() -> Option<&'static OwnedFd> {
    static SOCK: OnceLock<Option<OwnedFd>> = OnceLock::new();
    SOCK.get_or_init(|| {
        use rustix::net::{socketpair, AddressFamily, SocketFlags, SocketType};
        let started = socketpair(
            AddressFamily::UNIX,
            SocketType::SEQPACKET,
            SocketFlags::CLOEXEC,
            None,
        )
        .map_err(|e| nix::errno::Errno::from_raw(e.raw_os_error()))
        .and_then(|(ours, theirs)| {
            // What this process's id claims hold, and where they are: should it die
            // between a claim and its registration, the reaper still finds the claim.
            let me = std::process::id() as i32;
            let owner = crate::cgroup::start_time(me).and_then(|start| {
                let needle = std::ffi::CString::new(crate::idrange::owner_needle(me, start));
                let dir = crate::idrange::claims_dir()
                    .into_os_string()
                    .into_encoded_bytes();
                Some((needle.ok()?, std::ffi::CString::new(dir).ok()?))
            });
            let owner = owner.as_ref().map(|(n, d)| (n.as_c_str(), d.as_c_str()));
            crate::child::exe::start_reaper(theirs.as_raw_fd(), owner)?;
            Ok(ours)
        });
        match started {
            Ok(ours) => Some(ours),
            Err(e) => {
                tracing::warn!(
                    errno = %e,
                    "cannot start the sandbox reaper; what a SIGKILLed host leaves is \
                     reclaimed by the next start or `sandbox-run check --cleanup` instead"
                );
                None
            }
        }
    })
    .as_ref()
}

/// Starts this process's reaper now unless it runs already (see
/// [`SandboxRunner::prewarm`](crate::SandboxRunner::prewarm)); a start that needs it
/// meanwhile waits for it.
pub(crate) fn start() {
    let _ = socket();
}

/// A sandbox registered with the reaper; dropping it unregisters it (the host cleaned up).
#[derive(Debug)]
pub(crate) struct Registration {
    id: String,
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut msg = Vec::with_capacity(self.id.len() + 2);
        msg.push(b'-');
        msg.extend_from_slice(self.id.as_bytes());
        msg.push(0);
        send(&msg);
    }
}

fn send(msg: &[u8]) {
    if let Some(sock) = socket() {
        let _ = rustix::net::send(sock.as_fd(), msg, rustix::net::SendFlags::NOSIGNAL);
    }
}

/// Registers sandbox `id` with the reaper: `mounts` (detached, first), `cgroups` (removed,
/// killed first on v2), `trees` (removed recursively, never following a symbolic link) and
/// `records` (owner records, removed only when every cgroup is gone). Paths must be
/// absolute.
pub(crate) fn register(
    id: &str,
    mounts: &[&Path],
    cgroups: &[&Path],
    trees: &[&Path],
    records: &[&Path],
) -> Registration {
    use std::os::unix::ffi::OsStrExt;
    let mut msg = Vec::with_capacity(512);
    msg.push(b'+');
    msg.extend_from_slice(id.as_bytes());
    msg.push(0);
    for (kind, paths) in [
        (b'm', mounts),
        (b'c', cgroups),
        (b'd', trees),
        (b'r', records),
    ] {
        for p in paths.iter().filter(|p| p.is_absolute()) {
            let bytes = p.as_os_str().as_bytes();
            if bytes.contains(&0) {
                continue;
            }
            msg.push(kind);
            msg.extend_from_slice(bytes);
            msg.push(0);
        }
    }
    send(&msg);
    Registration { id: id.to_owned() }
}
