//! [`Watcher`]: keeps the latest [`Counters`] of a sandbox cgroup while the plugin runs, so they
//! are known even when the cgroup is gone at the end.
//!
//! It runs on its own small thread (so it works with or without a tokio runtime and never
//! blocks one), waiting in `poll(2)` on:
//! - v2: an inotify watch on `memory.events`, `pids.events` and `cgroup.events` (the kernel
//!   raises a modify event on each change, cgroup-v2.rst "Interface Files");
//! - v1: an eventfd registered for `memory.oom_control` through `cgroup.event_control`
//!   (signalled on OOM and when the cgroup is removed, cgroup-v1/memory.rst section 9);
//! - a stop eventfd;
//!
//! reading the counters on each event. Counters that raise no event (`memory.peak`,
//! `cpu.stat`, v1 `pids.events`) are read when asked for, so an idle sandbox's watch costs
//! no CPU. It stops by itself when the cgroup directory disappears.

use std::os::fd::{AsFd, AsRawFd};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::eventfd::{EfdFlags, EventFd};
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};

use super::stats::{CounterSource, Counters};

/// How long the thread sleeps when no event comes, in milliseconds: only to notice a cgroup
/// removed behind its back. Counters that raise no event are read when asked for
/// ([`Watcher::latest`]), not polled: an idle sandbox costs no CPU.
const IDLE_MS: u16 = 1000;

/// Stack size of a watch thread.
const WATCH_STACK: usize = 64 * 1024;

struct Shared {
    latest: Mutex<Counters>,
    running: AtomicBool,
}

impl Shared {
    fn update(&self, c: &Counters) {
        if let Ok(mut l) = self.latest.lock() {
            l.merge(c);
        }
    }
}

/// A running watch of one sandbox cgroup's counters; see the module doc. Dropping it stops it.
pub struct Watcher {
    shared: Arc<Shared>,
    source: CounterSource,
    stop: Option<Arc<EventFd>>,
    thread: Option<JoinHandle<()>>,
}

impl std::fmt::Debug for Watcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Watcher")
            .field("running", &self.is_running())
            .field("latest", &self.latest())
            .finish()
    }
}

impl Watcher {
    /// Starts watching. `alive` is the leaf directory whose disappearance ends the watch;
    /// `events` the v2 event files; `oom_control` the v1 memory leaf.
    pub(crate) fn start(
        source: CounterSource,
        alive: PathBuf,
        events: Vec<PathBuf>,
        oom_control: Option<PathBuf>,
    ) -> Watcher {
        let shared = Arc::new(Shared {
            // The first reading is the thread's, off the caller's path.
            latest: Mutex::new(Counters::default()),
            running: AtomicBool::new(true),
        });
        let stop = EventFd::from_flags(EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK)
            .ok()
            .map(Arc::new);
        let thread = stop.as_ref().and_then(|stop| {
            let (shared, source, stop) = (shared.clone(), source.clone(), stop.clone());
            std::thread::Builder::new()
                .name("cgroup-watch".to_owned())
                // Small: it only polls and reads a few short files. Hundreds of sandboxes mean
                // hundreds of these stacks, and every sandbox's init (a copy-on-write clone of
                // this process) copies the page tables that map them; small stacks pack
                // together in few page-table pages.
                .stack_size(WATCH_STACK)
                .spawn(move || {
                    run(
                        &source,
                        &alive,
                        &events,
                        oom_control.as_ref(),
                        &stop,
                        &shared,
                    );
                    shared.running.store(false, Ordering::SeqCst);
                })
                .ok()
        });
        if thread.is_none() {
            shared.running.store(false, Ordering::SeqCst);
        }
        Watcher {
            shared,
            source,
            stop,
            thread,
        }
    }

    /// The latest counters: the field-wise maximum of every reading so far and of one made
    /// now (while the cgroup exists).
    pub fn latest(&self) -> Counters {
        let mut c = self
            .shared
            .latest
            .lock()
            .map(|c| c.clone())
            .unwrap_or_default();
        c.merge(&self.source.read());
        c
    }

    /// Whether the watch is still running (it ends when told or when the cgroup is gone).
    pub fn is_running(&self) -> bool {
        self.shared.running.load(Ordering::SeqCst)
    }

    /// Stops the watch and returns the latest counters it read (for a final value, read the
    /// files too, as [`super::SandboxCgroup::counters`] does).
    pub fn stop(mut self) -> Counters {
        self.halt();
        self.shared
            .latest
            .lock()
            .map(|c| c.clone())
            .unwrap_or_default()
    }

    fn halt(&mut self) {
        if let Some(stop) = &self.stop {
            let _ = stop.write(1);
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.halt();
    }
}

/// Registers an eventfd for OOM notifications of the v1 memory cgroup `dir`; `None` when the
/// kernel does not offer `cgroup.event_control`.
fn v1_oom_eventfd(dir: &std::path::Path) -> Option<(EventFd, std::fs::File)> {
    let efd = EventFd::from_flags(EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK).ok()?;
    let oom = std::fs::File::open(dir.join("memory.oom_control")).ok()?;
    let line = format!("{} {}", efd.as_fd().as_raw_fd(), oom.as_raw_fd());
    std::fs::write(dir.join("cgroup.event_control"), line).ok()?;
    Some((efd, oom))
}

fn run(
    source: &CounterSource,
    alive: &std::path::Path,
    events: &[PathBuf],
    oom_control: Option<&PathBuf>,
    stop: &EventFd,
    shared: &Shared,
) {
    // v2: the event files change on each event; the leaf directory itself reports its
    // removal (the event files do not). v1 has no event files (its OOM eventfd also fires on
    // removal), and no inotify instance: closing one waits out an SRCU grace period, ~15 ms
    // on the path of every kill.
    let inotify = (!events.is_empty())
        .then(|| Inotify::init(InitFlags::IN_CLOEXEC | InitFlags::IN_NONBLOCK).ok())
        .flatten()
        .filter(|ino| {
            let mut any = ino.add_watch(alive, AddWatchFlags::IN_DELETE_SELF).is_ok();
            for f in events {
                any |= ino
                    .add_watch(f, AddWatchFlags::IN_MODIFY | AddWatchFlags::IN_DELETE_SELF)
                    .is_ok();
            }
            any
        });
    let oom = oom_control.and_then(|d| v1_oom_eventfd(d));
    shared.update(&source.read());
    loop {
        let mut fds = vec![PollFd::new(stop.as_fd(), PollFlags::POLLIN)];
        if let Some(i) = &inotify {
            fds.push(PollFd::new(i.as_fd(), PollFlags::POLLIN));
        }
        if let Some((efd, _)) = &oom {
            fds.push(PollFd::new(efd.as_fd(), PollFlags::POLLIN));
        }
        let ready = poll(&mut fds, PollTimeout::from(IDLE_MS)).unwrap_or(0);
        let stopped = fds[0]
            .revents()
            .is_some_and(|r| r.contains(PollFlags::POLLIN));
        drop(fds);
        if ready > 0 {
            if let Some(i) = &inotify {
                while i.read_events().is_ok_and(|e| !e.is_empty()) {}
            }
            if let Some((efd, _)) = &oom {
                let _ = efd.read();
            }
        }
        // Told to stop: the caller reads the final counters itself.
        if stopped {
            return;
        }
        if !alive.exists() {
            return;
        }
        // Counters are read on events only; a quiet timeout just checks the leaf is there.
        if ready > 0 {
            shared.update(&source.read());
        }
    }
}
