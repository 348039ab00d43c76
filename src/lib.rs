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
//! Module map: [`child`] (the spawner thread and everything between `clone3` and `execve`,
//! one file per kernel mechanism, importing nothing of the rest), [`profile`] and [`plan`]
//! (from TOML to the data the child reads), [`sandbox`] (the runner), [`cgroup`], [`check`]
//! (host support).

#![warn(missing_docs)]
#![deny(unsafe_op_in_unsafe_fn)]
#![deny(clippy::undocumented_unsafe_blocks)]

pub mod addr;
pub mod broker;
pub mod cgroup;
pub mod check;
pub mod child;
pub mod diagnose;
pub mod egress;
pub mod error;
pub mod goplugin;
pub mod handshake;
pub mod idrange;
pub mod landlock;
mod mnt;
pub mod plan;
pub mod profile;
mod reaper;
pub mod reattach;
pub mod rlimit;
pub mod runner;
pub mod sandbox;
pub mod seccomp;
pub mod sockfs;
pub mod state;
pub mod status;
mod stdio;

pub use diagnose::Diagnosis;
pub use error::{AddrError, Error, ProfileError};
pub use profile::Profile;
pub use runner::{AddrTranslator, AttachedRunner, PipeReader, PipeWriter, ReattachFunc, Runner};
pub use sandbox::{SandboxRunner, Stdio};
pub use status::ExitStatus;
