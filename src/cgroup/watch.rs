//! [`Watcher`]: keeps the latest [`Counters`] of a sandbox cgroup while the plugin runs, so they
//! are known even when the cgroup is gone at the end.
//!
//! One thread per process (the "cgroup-watch" hub, started at the first watch) waits in
//! `epoll(7)` for every watched cgroup at once, so a host with hundreds of sandboxes has one
//! watch thread, not hundreds (each of which every sandbox's init, a copy-on-write clone of
//! the host, would map). Per cgroup it waits on:
//! - v2: an inotify watch on `memory.events`, `pids.events` and `cgroup.events` (the kernel
//!   raises a modify event on each change, cgroup-v2.rst "Interface Files") and on the leaf
//!   directory itself (its removal);
//! - v1: an eventfd registered for `memory.oom_control` through `cgroup.event_control`
//!   (signalled on OOM and when the cgroup is removed, cgroup-v1/memory.rst section 9);
//!
//! reading the counters on each event. Counters that raise no event (`memory.peak`,
//! `cpu.stat`, v1 `pids.events`) are read when asked for, so an idle sandbox's watch costs
//! no CPU. A watch ends when told to or when its cgroup directory disappears (also checked
//! once a second).

use std::collections::HashMap;
use std::os::fd::{AsFd, AsRawFd};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use nix::sys::epoll::{Epoll, EpollCreateFlags, EpollEvent, EpollFlags, EpollTimeout};
use nix::sys::eventfd::{EfdFlags, EventFd};
use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};

use super::stats::{CounterSource, Counters};

/// How long the hub sleeps when no event comes, in milliseconds: only to notice a cgroup
/// removed behind its back.
const IDLE_MS: u16 = 1000;

/// Stack size of the hub thread: it only waits and reads a few short files.
const HUB_STACK: usize = 128 * 1024;

/// The epoll token of the hub's wake-up eventfd (watch tokens start at 1).
const WAKE: u64 = 0;

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

/// One watched cgroup, as the hub keeps it.
struct Entry {
    shared: Arc<Shared>,
    source: CounterSource,
    alive: PathBuf,
    inotify: Option<Inotify>,
    oom: Option<EventFd>,
    /// Not read yet: the hub makes the first reading, off the caller's path.
    fresh: AtomicBool,
}

impl Entry {
    /// Drains what woke it and reads the counters.
    fn on_event(&self) {
        if let Some(i) = &self.inotify {
            while i.read_events().is_ok_and(|e| !e.is_empty()) {}
        }
        if let Some(efd) = &self.oom {
            let _ = efd.read();
        }
        self.shared.update(&self.source.read());
    }
}

/// The process's one watch thread and what it watches.
struct Hub {
    epoll: Epoll,
    wake: EventFd,
    entries: Mutex<HashMap<u64, Arc<Entry>>>,
    next: AtomicU64,
}

/// Starts the watch hub's thread now unless it runs already (see
/// [`SandboxRunner::prewarm`](crate::SandboxRunner::prewarm)).
pub(crate) fn prewarm() {
    let _ = Hub::get();
}

impl Hub {
    /// The hub, started at the first call; `None` if it cannot be (then nothing is watched
    /// and [`Watcher::latest`] reads the files when asked).
    fn get() -> Option<&'static Hub> {
        static HUB: OnceLock<Option<&'static Hub>> = OnceLock::new();
        *HUB.get_or_init(|| {
            let epoll = Epoll::new(EpollCreateFlags::EPOLL_CLOEXEC).ok()?;
            let wake = EventFd::from_flags(EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK).ok()?;
            epoll
                .add(&wake, EpollEvent::new(EpollFlags::EPOLLIN, WAKE))
                .ok()?;
            let hub: &'static Hub = Box::leak(Box::new(Hub {
                epoll,
                wake,
                entries: Mutex::new(HashMap::new()),
                next: AtomicU64::new(WAKE + 1),
            }));
            std::thread::Builder::new()
                .name("cgroup-watch".to_owned())
                .stack_size(HUB_STACK)
                .spawn(move || hub.run())
                .ok()?;
            Some(hub)
        })
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Arc<Entry>>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds `entry` and returns its token. (Should epoll refuse its fds, the once-a-second
    /// check still ends the watch when the cgroup goes.)
    fn add(&self, entry: Entry) -> u64 {
        let token = self.next.fetch_add(1, Ordering::Relaxed);
        if let Some(i) = &entry.inotify {
            let _ = self
                .epoll
                .add(i, EpollEvent::new(EpollFlags::EPOLLIN, token));
        }
        if let Some(efd) = &entry.oom {
            let _ = self
                .epoll
                .add(efd, EpollEvent::new(EpollFlags::EPOLLIN, token));
        }
        self.entries().insert(token, Arc::new(entry));
        // The hub makes the first reading.
        let _ = self.wake.write(1);
        token
    }

    /// Stops watching `token` (told to, or its cgroup is gone); the entry, if still there.
    fn remove(&self, token: u64) -> Option<Arc<Entry>> {
        let e = self.entries().remove(&token)?;
        if let Some(i) = &e.inotify {
            let _ = self.epoll.delete(i);
        }
        if let Some(efd) = &e.oom {
            let _ = self.epoll.delete(efd);
        }
        e.shared.running.store(false, Ordering::SeqCst);
        Some(e)
    }

    fn run(&self) {
        let mut events = vec![EpollEvent::empty(); 64];
        loop {
            let n = self
                .epoll
                .wait(&mut events, EpollTimeout::from(IDLE_MS))
                .unwrap_or(0);
            if n == 0 {
                // Quiet: look for cgroups removed behind our back.
                let gone: Vec<u64> = self
                    .entries()
                    .iter()
                    .filter(|(_, e)| !e.alive.exists())
                    .map(|(t, _)| *t)
                    .collect();
                for t in gone {
                    self.remove(t);
                }
                continue;
            }
            for ev in &events[..n] {
                let token = ev.data();
                if token == WAKE {
                    let _ = self.wake.read();
                    let fresh: Vec<Arc<Entry>> = self
                        .entries()
                        .values()
                        .filter(|e| e.fresh.swap(false, Ordering::SeqCst))
                        .cloned()
                        .collect();
                    for e in fresh {
                        e.shared.update(&e.source.read());
                    }
                    continue;
                }
                let Some(e) = self.entries().get(&token).cloned() else {
                    continue;
                };
                e.on_event();
                if !e.alive.exists() {
                    self.remove(token);
                }
            }
        }
    }
}

/// A running watch of one sandbox cgroup's counters; see the module doc. Dropping it stops it.
pub struct Watcher {
    shared: Arc<Shared>,
    source: CounterSource,
    token: Option<u64>,
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
            latest: Mutex::new(Counters::default()),
            running: AtomicBool::new(true),
        });
        // v2: the event files change on each event; the leaf directory itself reports its
        // removal (the event files do not). v1 has no event files (its OOM eventfd also fires
        // on removal), and no inotify instance: closing one waits out an SRCU grace period,
        // ~15 ms on the path of every kill.
        let inotify = (!events.is_empty())
            .then(|| Inotify::init(InitFlags::IN_CLOEXEC | InitFlags::IN_NONBLOCK).ok())
            .flatten()
            .filter(|ino| {
                let mut any = ino.add_watch(&alive, AddWatchFlags::IN_DELETE_SELF).is_ok();
                for f in &events {
                    any |= ino
                        .add_watch(f, AddWatchFlags::IN_MODIFY | AddWatchFlags::IN_DELETE_SELF)
                        .is_ok();
                }
                any
            });
        let oom = oom_control.and_then(|d| v1_oom_eventfd(&d));
        let token = Hub::get().map(|hub| {
            hub.add(Entry {
                shared: shared.clone(),
                source: source.clone(),
                alive,
                inotify,
                oom,
                fresh: AtomicBool::new(true),
            })
        });
        if token.is_none() {
            shared.running.store(false, Ordering::SeqCst);
        }
        Watcher {
            shared,
            source,
            token,
        }
    }

    /// The latest counters: the field-wise maximum of every reading so far and of one made
    /// now (while the cgroup exists).
    pub fn latest(&self) -> Counters {
        // Kept, so that a value seen here stays in the watch's maximum after the cgroup is
        // gone.
        self.shared.update(&self.source.read());
        self.shared
            .latest
            .lock()
            .map(|c| c.clone())
            .unwrap_or_default()
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
        if let (Some(token), Some(hub)) = (self.token.take(), Hub::get()) {
            hub.remove(token);
        }
        self.shared.running.store(false, Ordering::SeqCst);
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        self.halt();
    }
}

/// Registers an eventfd for OOM notifications of the v1 memory cgroup `dir`; `None` when the
/// kernel does not offer `cgroup.event_control`.
///
/// The `memory.oom_control` fd is needed only by the registration (the kernel checks it and
/// takes a reference on the cgroup, not on the file), so it is closed here: the host keeps
/// one fd less per sandbox, and every sandbox cloned later copies a smaller fd table.
fn v1_oom_eventfd(dir: &std::path::Path) -> Option<EventFd> {
    let efd = EventFd::from_flags(EfdFlags::EFD_CLOEXEC | EfdFlags::EFD_NONBLOCK).ok()?;
    let oom = std::fs::File::open(dir.join("memory.oom_control")).ok()?;
    let line = format!("{} {}", efd.as_fd().as_raw_fd(), oom.as_raw_fd());
    std::fs::write(dir.join("cgroup.event_control"), line).ok()?;
    drop(oom);
    Some(efd)
}
