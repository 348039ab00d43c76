//! sandbox-runner: run an untrusted plugin process in a Linux sandbox built from kernel
//! primitives, behind an async port of hashicorp/go-plugin's `runner` interfaces.
//!
//! ```no_run
//! use sandbox_runner::{Profile, Runner, AttachedRunner, SandboxRunner};
//! use tokio::io::AsyncReadExt;
//!
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let profile = Profile::builtin("default")?;
//! let mut plugin = SandboxRunner::new(profile, "/bin/echo", ["hello"])?;
//! plugin.start().await?;
//! let mut out = String::new();
//! plugin.stdout().unwrap().read_to_string(&mut out).await?;
//! let status = plugin.wait().await?;
//! assert_eq!(out, "hello\n");
//! assert!(status.success());
//! # Ok(()) }
//! ```
//!
//! Module map, one kernel mechanism per file: [`spawn`] (clone3, child steps, error pipe),
//! `pid` (the init), `mnt` (mounts), `net` (loopback), `uts` (hostname), [`profile`] and
//! [`plan`] (from TOML to ready data), [`sandbox`] (the runner), [`check`] (host support).

#![warn(missing_docs)]

pub mod addr;
mod capability;
pub mod cgroup;
pub mod check;
pub mod diagnose;
pub mod egress;
pub mod error;
pub mod goplugin;
pub mod handshake;
pub mod landlock;
mod mnt;
mod net;
pub mod pid;
pub mod plan;
pub mod profile;
mod reaper;
pub mod reattach;
pub mod rlimit;
pub mod runner;
pub mod sandbox;
pub mod seccomp;
pub mod spawn;
pub mod state;
pub mod status;
mod uts;

pub use diagnose::Diagnosis;
pub use error::{AddrError, Error, ProfileError};
pub use profile::Profile;
pub use runner::{AddrTranslator, AttachedRunner, PipeReader, PipeWriter, ReattachFunc, Runner};
pub use sandbox::{SandboxRunner, Stdio};
pub use status::ExitStatus;
