//! Error types, one enum per boundary: profiles, the runner, address translation.

use nix::errno::Errno;
use std::path::PathBuf;

use crate::spawn::Step;

/// A profile that could not be found, read or understood.
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    /// The profile file could not be read.
    #[error("cannot read profile {path}: {source}")]
    Read {
        /// The file that was asked for.
        path: PathBuf,
        /// Why it could not be read.
        source: std::io::Error,
    },
    /// The TOML is malformed or does not match the schema.
    #[error("{origin}:{line}:{column}: {message}")]
    Parse {
        /// The file path, or `<builtin NAME>` for an embedded profile.
        origin: String,
        /// 1-based line of the offending input.
        line: usize,
        /// 1-based column of the offending input.
        column: usize,
        /// What is wrong.
        message: String,
    },
    /// A profile name that is neither embedded nor a path.
    #[error("unknown profile '{name}' (built-in profiles: {known}); give a path to load a file")]
    UnknownName {
        /// The name that was asked for.
        name: String,
        /// The names of the embedded profiles.
        known: String,
    },
    /// The profile parsed but a value is not acceptable.
    #[error("{origin}: {message}")]
    Invalid {
        /// The file path, or `<builtin NAME>`.
        origin: String,
        /// What is wrong and how to fix it.
        message: String,
    },
}

/// An error of the runner: preparing, starting, waiting for or killing a sandbox.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The profile is unusable.
    #[error(transparent)]
    Profile(#[from] ProfileError),
    /// The command line given to the runner is unusable (empty, NUL byte, ...).
    #[error("invalid command: {0}")]
    InvalidCommand(String),
    /// The program has no slash and was not found in the sandbox's `PATH`.
    #[error("{program}: command not found in PATH ({path})")]
    ProgramNotFound {
        /// The program as given.
        program: String,
        /// The `PATH` that was searched.
        path: String,
    },
    /// The program exists but cannot be executed.
    #[error("{}: cannot execute: {}", path.display(), errno.desc())]
    NotExecutable {
        /// The resolved program path.
        path: PathBuf,
        /// The reason (`EACCES`, `ENOEXEC`, ...).
        errno: Errno,
    },
    /// A setup step inside the new sandbox failed before the plugin ran.
    #[error("sandbox setup failed at step '{}' ({path}): {errno}: {}", step.describe(), errno.desc())]
    Setup {
        /// Which step failed.
        step: Step,
        /// The path or object the step worked on.
        path: String,
        /// The error the kernel returned.
        errno: Errno,
    },
    /// A host-side system call failed while preparing or managing the sandbox.
    #[error("{what}: {source}")]
    Host {
        /// What the runner was doing.
        what: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// `start` was called twice, or `wait`/`kill` before `start`.
    #[error("{0}")]
    State(&'static str),
}

impl Error {
    /// Shorthand for a host-side failure from an errno.
    pub(crate) fn host(what: impl Into<String>, e: impl Into<std::io::Error>) -> Self {
        Error::Host {
            what: what.into(),
            source: e.into(),
        }
    }

    /// The `sandbox-run` exit code for this error: 127 not found, 126 not executable, 125
    /// for everything else (the sandbox could not be set up).
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::ProgramNotFound { .. } => 127,
            Error::NotExecutable { errno, .. } if *errno == Errno::ENOENT => 127,
            Error::NotExecutable { .. } => 126,
            _ => 125,
        }
    }
}

/// An address the translator refuses to map.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AddrError {
    /// The network kind is not supported by this sandbox (e.g. `tcp` with a private network).
    #[error("network '{network}' cannot cross the sandbox boundary: {why}")]
    Unsupported {
        /// The network given (`tcp`, `udp`, ...).
        network: String,
        /// Why it cannot be translated.
        why: String,
    },
    /// The address is not one the translator will map.
    #[error("address '{addr}' refused: {why}")]
    Refused {
        /// The address as given.
        addr: String,
        /// Why it was refused.
        why: String,
    },
}
