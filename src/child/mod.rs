//! The child side: everything that runs on the spawner thread and in a sandbox's init and
//! plugin between `clone3` and `execve`, one file per kernel mechanism.
//!
//! This tree imports nothing of the rest of the crate (the API layer, the profile, the plan
//! builder, cgroups): it reads the data the host prepared (`plan::Plan`, `fds::ChildFds`)
//! and reports a failing step as a `(step, errno, arg)` record ([`Step`]). Code reached from
//! `clone3` is async-signal-safe: raw system calls on prepared data, no allocation, no locks,
//! no panics. The init and the plugin run in the host's address space (`CLONE_VM`) on stacks
//! of their own until they exec, so nothing of the host is ever copied.
//!
//! Order of a start: `spawner` clones the init (`clone`), into a network namespace made
//! ahead (`netpool`) when the host allows one and one is ready; the init runs `setup`
//! (death signal, stdio, fds, the host's go, session, `mnt`, `uts`, `net`), then
//! `init` clones the plugin and execs `sandbox-init` (`exe`); the plugin applies
//! `landlock`, `rlimit`, `caps`, `seccomp` and execs.

pub(crate) mod caps;
pub(crate) mod clone;
pub(crate) mod exe;
pub(crate) mod fds;
pub(crate) mod init;
pub(crate) mod landlock;
pub(crate) mod mnt;
pub(crate) mod net;
pub(crate) mod netns;
pub(crate) mod netpool;
pub(crate) mod plan;
pub(crate) mod rlimit;
pub(crate) mod seccomp;
pub(crate) mod setup;
pub(crate) mod spawner;
pub(crate) mod step;
pub(crate) mod uts;

pub use clone::probe_clone;
pub use init::FORWARDED;
pub use step::Step;
