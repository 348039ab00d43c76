//! How a plugin ended, and the exit code a CLI reports for it.

use serde::{Deserialize, Serialize};
use std::fmt;

/// How the plugin process ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ExitStatus {
    /// The plugin called `exit` with this code.
    Exited {
        /// The exit code (0..=255).
        code: i32,
    },
    /// The plugin was killed by a signal.
    Signaled {
        /// The signal number.
        signal: i32,
        /// Whether the kernel reported a core dump.
        core_dumped: bool,
    },
}

impl ExitStatus {
    /// Decodes a raw `wait` status word as returned by `waitpid`.
    pub fn from_raw(raw: i32) -> Self {
        if libc::WIFSIGNALED(raw) {
            ExitStatus::Signaled {
                signal: libc::WTERMSIG(raw),
                core_dumped: libc::WCOREDUMP(raw),
            }
        } else {
            ExitStatus::Exited {
                code: libc::WEXITSTATUS(raw),
            }
        }
    }

    /// The shell convention: the exit code, or `128 + N` for a death by signal `N`.
    pub fn code(&self) -> i32 {
        match *self {
            ExitStatus::Exited { code } => code,
            ExitStatus::Signaled { signal, .. } => 128 + signal,
        }
    }

    /// True when the plugin exited with code 0.
    pub fn success(&self) -> bool {
        matches!(self, ExitStatus::Exited { code: 0 })
    }

    /// The signal that killed the plugin, if any.
    pub fn signal(&self) -> Option<i32> {
        match *self {
            ExitStatus::Signaled { signal, .. } => Some(signal),
            ExitStatus::Exited { .. } => None,
        }
    }
}

/// The conventional name of signal `sig` (`SIGKILL`), or `signal N` when it has none.
pub fn signal_name(sig: i32) -> String {
    match nix::sys::signal::Signal::try_from(sig) {
        Ok(s) => s.as_str().to_string(),
        Err(_) if (libc::SIGRTMIN()..=libc::SIGRTMAX()).contains(&sig) => {
            format!("SIGRTMIN+{}", sig - libc::SIGRTMIN())
        }
        Err(_) => format!("signal {sig}"),
    }
}

impl fmt::Display for ExitStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            ExitStatus::Exited { code } => write!(f, "exited with status {code}"),
            ExitStatus::Signaled {
                signal,
                core_dumped,
            } => {
                write!(f, "killed by {}", signal_name(signal))?;
                if core_dumped {
                    write!(f, " (core dumped)")?;
                }
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_exit_and_signal() {
        assert_eq!(ExitStatus::from_raw(7 << 8), ExitStatus::Exited { code: 7 });
        let s = ExitStatus::from_raw(9);
        assert_eq!(s.signal(), Some(9));
        assert_eq!(s.code(), 137);
        assert_eq!(s.to_string(), "killed by SIGKILL");
        assert_eq!(
            ExitStatus::from_raw(0x80 | 6).to_string(),
            "killed by SIGABRT (core dumped)"
        );
    }
}
