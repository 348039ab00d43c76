//! Error types, one enum per boundary: profiles, the runner, address translation.

use nix::errno::Errno;
use std::path::PathBuf;

use crate::child::Step;

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
    /// A private-root entry cannot be built (missing source, `..` in a path, ...).
    #[error("mount entry '{entry}': {why}")]
    InvalidMount {
        /// The entry, as `kind source -> destination`.
        entry: String,
        /// What is wrong with it.
        why: String,
    },
    /// A cgroup could not be created, filled, or cleaned up.
    #[error(transparent)]
    Cgroup(#[from] crate::cgroup::CgroupError),
    /// A host-side system call failed while preparing or managing the sandbox.
    #[error("{what}: {source}")]
    Host {
        /// What the runner was doing.
        what: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// No sandbox with this ID has state on this host.
    #[error("no sandbox {id}: {why}")]
    NoSuchSandbox {
        /// The ID asked for.
        id: String,
        /// Why it was not found.
        why: String,
    },
    /// The state of a detached sandbox no longer matches a live sandbox; nothing was signalled.
    #[error("sandbox {id} is stale: {why}; nothing was signalled")]
    Stale {
        /// The sandbox ID.
        id: String,
        /// What did not match.
        why: String,
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
    /// A unix socket path that is not of the form `<dir>/<name>` for the mapped socket
    /// directory (a path elsewhere, `..` segments, a relative or abstract address, ...).
    #[error(
        "unix address '{addr}' refused: only a socket directly inside {dir} can cross the sandbox boundary (the plugin must create it in PLUGIN_UNIX_SOCKET_DIR)"
    )]
    OutsideSocketDir {
        /// The address as given.
        addr: String,
        /// The socket directory, as seen from the side the address came from.
        dir: String,
    },
    /// The file name part of a unix socket path is unsafe or malformed.
    #[error("unix address '{addr}' refused: its file name {why}; expected one plain file name")]
    BadName {
        /// The address as given.
        addr: String,
        /// What is wrong (empty, `.`/`..`, nested path, NUL byte).
        why: &'static str,
    },
    /// A unix socket path longer than `sun_path` allows.
    #[error(
        "unix address '{path}' refused: {len} bytes does not fit a unix socket address (at most {max} bytes); use a shorter socket directory or name"
    )]
    TooLong {
        /// The path that does not fit (the announced one, or the host path it maps to).
        path: String,
        /// Its length in bytes.
        len: usize,
        /// The limit (107: `sun_path` is 108 bytes including the NUL).
        max: usize,
    },
    /// The announced socket does not exist in the socket directory.
    #[error("unix address '{addr}' refused: no such file in the socket directory")]
    NotFound {
        /// The address as given.
        addr: String,
    },
    /// The announced name is a symbolic link: following it could reach a host socket the
    /// plugin must not steer the host to.
    #[error(
        "unix address '{addr}' refused: it is a symbolic link, which is never followed (a plugin could point it at a socket only the host can reach)"
    )]
    Symlink {
        /// The address as given.
        addr: String,
    },
    /// The announced name exists but is not a unix socket.
    #[error("unix address '{addr}' refused: it is {kind}, not a unix socket")]
    NotSocket {
        /// The address as given.
        addr: String,
        /// What it is instead (`a regular file`, `a directory`, `a FIFO`, ...).
        kind: &'static str,
    },
    /// The verified socket could not be pinned at a host-only path (it vanished, or the
    /// pinned path does not lead to the verified inode).
    #[error("unix address '{addr}' refused: {why}")]
    Changed {
        /// The address as given.
        addr: String,
        /// What was observed.
        why: String,
    },
    /// A system call needed for the translation failed.
    #[error("translating unix address '{addr}' failed: {op}: {}{}", std::io::Error::from_raw_os_error(*errno), hint)]
    Io {
        /// The address as given.
        addr: String,
        /// The operation that failed, with its path.
        op: String,
        /// The raw errno.
        errno: i32,
        /// What the user can do about it (may be empty).
        hint: &'static str,
    },
}
