//! `sandbox-run check`: what this host supports (filled in by the check module work).

use std::fmt;

/// A report of the host's sandboxing support.
pub struct Report {
    clone_ok: Result<(), nix::errno::Errno>,
}

impl Report {
    /// Probes the host.
    pub fn gather() -> Report {
        let flags = (libc::CLONE_NEWNS
            | libc::CLONE_NEWPID
            | libc::CLONE_NEWNET
            | libc::CLONE_NEWIPC
            | libc::CLONE_NEWUTS) as u64;
        Report {
            clone_ok: crate::spawn::probe_clone(flags),
        }
    }

    /// Whether the default profile can run on this host.
    pub fn default_profile_runs(&self) -> bool {
        self.clone_ok.is_ok()
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "namespaces: {:?}", self.clone_ok)
    }
}
