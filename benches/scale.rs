//! Scale: N sandboxes alive at once (each running `/bin/sleep 1000`), started from one host
//! process, what they cost the host, and how fast they all go away again; side by side with
//! N plain `tokio::process` children running the same `/bin/sleep 1000`.
//!
//! Ways:
//!
//! 1. `baseline`: `tokio::process::Command::new("/bin/sleep").arg("1000").spawn()`, all three
//!    standard streams on `/dev/null`.
//! 2. `library`: `SandboxRunner::new` + `Runner::start` with the built-in `default` profile
//!    (loaded once; private root, cgroup memory and pids limits, seccomp, Landlock, ...; or
//!    the profile `SCALE_PROFILE` names, e.g. `go-plugin`, whose sandboxes each have a state
//!    and socket directory) and all three standard streams on `/dev/null`.
//!
//! Each way runs two rounds of N (`SCALE_N`, default 500), after one untimed warm-up start of
//! each way (so the library's spawner thread and the runtime exist before the "before"
//! snapshot):
//!
//! - `concurrent`: the N starts are spawned at once as tasks of a `JoinSet`; later the N kills
//!   are too (a host shutting down every plugin at once).
//! - `sequential`: one start after the other from one task; later one kill after the other,
//!   each while the others are still alive.
//!
//! **Start**: the wall time from the first start to the last one finished, starts per second,
//! each start's own latency (median, p99, and the median of the first and of the last tenth
//! of the starts, which shows whether a start gets slower as more sandboxes exist), and the
//! CPU time per start: this process's (`getrusage`, all threads, over the start phase) plus
//! the sandbox processes' own (`/proc/PID/schedstat` of each init and plugin: their setup
//! before `execve`). CPU time is the figure to trust on a busy machine, where the wall times
//! also measure the other tenants.
//!
//! **Resources with N alive**, against a snapshot taken just before the round's first start:
//! - the host process's `VmRSS` (`/proc/self/status`), its `Threads` and its open fds
//!   (`/proc/self/fd`), each as a delta per sandbox, and the same after all were killed (a
//!   leak shows there); the absolute figures (with `VmPTE` and the number of mappings) are
//!   printed under the tables;
//! - for the library, every sandbox's init (`SandboxRunner::init_pid`): `VmRSS` and `VmPTE`
//!   from `/proc/PID/status`, and `Pss` and `Private_Clean + Private_Dirty` from
//!   `/proc/PID/smaps_rollup` (the init is a copy-on-write clone of the host, so its `VmRSS`
//!   counts every host page it still maps; `Pss` divides shared pages among their sharers);
//! - the plugin itself (the init's child, or the baseline child): `Pss`;
//! - "host ΔRSS + init Pss" per sandbox, the figure the 1 MiB target is about;
//! - the system's `MemAvailable` drop per sandbox (`/proc/meminfo`: kernel memory of the
//!   namespaces, mounts, cgroups and page tables included; machine-wide, so other activity
//!   adds noise);
//! - the host process's CPU use (`getrusage`) while all N sit idle for `SCALE_IDLE_SECS`
//!   seconds (default 2), in % of one CPU.
//!
//! **Kill**: for the library, `AttachedRunner::kill` (the default profile's grace: SIGTERM,
//! up to 2 s, then SIGKILL of everything) on each sandbox while a task per sandbox is parked
//! in `AttachedRunner::wait`. Per sandbox, from the start of its kill to: (a) its init exited
//! (a pidfd of the bench's own on the init became readable, polled by a thread of its own:
//! the init's and the kernel's part), (b) its last
//! cgroup directory was removed, (c) `kill` returned, (d) `wait` returned. The cgroup
//! directories are the ones listed in the sandbox's owner record
//! (`sandbox_runner::cgroup::records_dir()/<id>.json`, written by the library before it
//! creates them), or else found by the sandbox id below this process's own cgroups
//! (`/proc/self/cgroup`) on every cgroup mount; their removal time comes from an inotify
//! `IN_DELETE` watch on their parent directories, and is confirmed by checking that they are
//! gone once `kill` has returned. For the baseline: `kill(pid, SIGTERM)`, then
//! `Child::wait`. Also the CPU time per kill: this process's over the kill phase plus the
//! reaped sandbox processes' (`RUSAGE_CHILDREN` over the kill phase, minus what they had used
//! before it). The exit statuses are counted and printed (what a SIGTERM'd `sleep` in a
//! sandbox ends with).
//!
//! **Marginal** (`SCALE_MODES=marginal`, not in the default): what one more start costs with
//! N alive against with none, the issue's "a start with 500 alive costs at most 1.5x a start
//! with none". `SCALE_PROBES` (default 50) starts, each killed and waited for before the
//! next, with no sandbox alive; then N sandboxes started and held; the same probes with the
//! N alive; then, the N killed, the probes with none alive again (the difference between the
//! two "none" parts is the machine's drift). Per part: the median start latency, the median
//! of each start phase span, and the host's CPU time per probe. Each part's start and end are
//! printed on stderr in `CLOCK_MONOTONIC` seconds for `perf report --time`.
//!
//! Nothing is asserted on timings; a start that fails is counted and its error printed (with
//! the step and errno the library reports), and the round goes on with the sandboxes that did
//! start. Every phase is bounded by `SCALE_TIMEOUT_SECS` (default 120). Each phase's start
//! and end are printed on stderr in `CLOCK_MONOTONIC` seconds, to cut a system-wide
//! `perf record -a -k CLOCK_MONOTONIC` profile with `perf report --time`.
//!
//! **Start phases**: the library's own `tracing` spans (`start/plan`, `setup`, `cgroup`,
//! `clone`, `exec`, see the README's Logging), timed by a small layer of this bench, as the
//! median of the first and of the last tenth of a round's starts and their ratio: the phase
//! whose ratio grows is the one whose cost depends on the number of sandboxes alive.
//!
//! **A host with a big heap** (`SCALE_HEAP_MIB`, default 0: none): before anything else the
//! bench allocates that many MiB, touches every page, and a thread of its own keeps writing
//! one byte of every page, pass after pass (a pause of `SCALE_HEAP_PAUSE_MS`, default 10,
//! between passes), for the whole run: a sandbox that copied or pinned the host's memory
//! would show in the system's `MemAvailable` drop per sandbox (the heap itself is allocated
//! before every round's snapshot). The number of passes is printed with the report. The
//! writer's own CPU time counts in the host's CPU figures (`getrusage` of the process).
//!
//! Run it as root from the repository root: `cargo bench --bench scale`. Knobs: `SCALE_N`
//! (default 500), `SCALE_MODES` (`concurrent,sequential`, the default, or a list of
//! `concurrent`, `sequential`, `marginal`), `SCALE_IDLE_SECS` (2), `SCALE_TIMEOUT_SECS`
//! (120), `SCALE_HEAP_MIB` (0), `SCALE_HEAP_PAUSE_MS` (10), `SCALE_PROBES` (50),
//! `SCALE_PROFILE` (`default`). The runtime is a two-worker multi-thread tokio runtime, as in
//! `benches/start.rs`.

mod common;
use common::{loadavg, machine};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::{exit, Stdio as ProcStdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sandbox_runner::{AttachedRunner, Profile, Runner, SandboxRunner, Stdio};
use tokio::process::{Child, Command};
use tokio::task::JoinSet;

/// Default number of sandboxes alive at once.
const DEFAULT_N: usize = 500;
/// Default idle window for the CPU figure, in seconds.
const DEFAULT_IDLE_SECS: u64 = 2;
/// Default bound of one round's start or kill phase, in seconds.
const DEFAULT_TIMEOUT_SECS: u64 = 120;
/// What every sandbox and every baseline child runs.
const SLEEP: &str = "/bin/sleep";
const SLEEP_ARG: &str = "1000";

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    Concurrent,
    Sequential,
    Marginal,
}

impl Mode {
    fn label(self) -> &'static str {
        match self {
            Mode::Concurrent => "concurrent",
            Mode::Sequential => "sequential",
            Mode::Marginal => "marginal",
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Way {
    Baseline,
    Library,
}

impl Way {
    fn label(self) -> &'static str {
        match self {
            Way::Baseline => "baseline tokio::process",
            Way::Library => "library",
        }
    }
}

struct Config {
    n: usize,
    modes: Vec<Mode>,
    idle: Duration,
    timeout: Duration,
    /// `SCALE_PROFILE`: a built-in profile's name or a profile file (default `default`).
    profile_name: String,
    profile: Profile,
    /// The host's heap kept written during the run, in MiB (0: none).
    heap_mib: u64,
    heap_pause: Duration,
    /// Starts per part of the marginal mode.
    probes: usize,
}

// ---------------------------------------------------------------------------------------
// a host with a big heap

/// A heap of the host's, every page touched, that a thread keeps writing until dropped.
struct Heap {
    stop: Arc<AtomicBool>,
    passes: Arc<std::sync::atomic::AtomicU64>,
    writer: Option<std::thread::JoinHandle<Vec<u8>>>,
}

impl Heap {
    fn start(mib: u64, pause: Duration) -> Heap {
        // Non-zero fill: every page is written (and so resident) before the first snapshot.
        let mut heap = vec![1u8; (mib as usize) << 20];
        let stop = Arc::new(AtomicBool::new(false));
        let passes = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let writer = {
            let (stop, passes) = (stop.clone(), passes.clone());
            std::thread::Builder::new()
                .name("heap-writer".into())
                .spawn(move || {
                    let mut round = 1u8;
                    while !stop.load(Ordering::Relaxed) {
                        round = round.wrapping_add(1);
                        for page in heap.chunks_mut(4096) {
                            // SAFETY: a live, exclusively owned byte; volatile so the writes
                            // are not elided.
                            unsafe { std::ptr::write_volatile(&mut page[0], round) };
                        }
                        passes.fetch_add(1, Ordering::Relaxed);
                        std::thread::sleep(pause);
                    }
                    heap
                })
                .unwrap_or_else(|e| fail(format!("heap writer thread: {e}")))
        };
        Heap {
            stop,
            passes,
            writer: Some(writer),
        }
    }

    fn passes(&self) -> u64 {
        self.passes.load(Ordering::Relaxed)
    }
}

impl Drop for Heap {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(w) = self.writer.take() {
            drop(w.join());
        }
    }
}

// ---------------------------------------------------------------------------------------
// start phases, from the library's tracing spans

/// A `tracing` layer that times every span of the library from creation to close and keeps
/// (name, duration) in close order.
struct Phases;

/// When a span was created.
struct Opened(Instant);

static PHASES: std::sync::Mutex<Vec<(&'static str, Duration)>> = std::sync::Mutex::new(Vec::new());

impl<S> tracing_subscriber::Layer<S> for Phases
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    fn on_new_span(
        &self,
        _attrs: &tracing::span::Attributes<'_>,
        id: &tracing::span::Id,
        ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        if let Some(span) = ctx.span(id) {
            span.extensions_mut().insert(Opened(Instant::now()));
        }
    }

    fn on_close(&self, id: tracing::span::Id, ctx: tracing_subscriber::layer::Context<'_, S>) {
        let Some(span) = ctx.span(&id) else {
            return;
        };
        if !span.metadata().target().starts_with("sandbox_runner") {
            return;
        }
        let opened = span.extensions().get::<Opened>().map(|o| o.0);
        if let Some(t) = opened {
            PHASES
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push((span.name(), t.elapsed()));
        }
    }
}

/// The phases recorded since the last call.
fn take_phases() -> Vec<(&'static str, Duration)> {
    std::mem::take(&mut *PHASES.lock().unwrap_or_else(|p| p.into_inner()))
}

// ---------------------------------------------------------------------------------------
// /proc readers

/// A `Key:   123 kB` (or plain number) field of a `/proc` text file, as a number.
fn proc_field(path: &str, key: &str) -> Option<u64> {
    let text = std::fs::read_to_string(path).ok()?;
    text.lines().find_map(|l| {
        let rest = l.strip_prefix(key)?.strip_prefix(':')?;
        rest.split_whitespace().next()?.parse().ok()
    })
}

/// The host process's figures at one moment.
#[derive(Clone, Copy, Default)]
struct HostSnap {
    rss_kib: u64,
    pte_kib: u64,
    maps: u64,
    threads: u64,
    fds: u64,
    mem_available_kib: u64,
}

fn host_snap() -> HostSnap {
    HostSnap {
        rss_kib: proc_field("/proc/self/status", "VmRSS").unwrap_or(0),
        pte_kib: proc_field("/proc/self/status", "VmPTE").unwrap_or(0),
        maps: std::fs::read_to_string("/proc/self/maps")
            .map(|m| m.lines().count() as u64)
            .unwrap_or(0),
        threads: proc_field("/proc/self/status", "Threads").unwrap_or(0),
        // Minus the fd of the listing itself.
        fds: std::fs::read_dir("/proc/self/fd")
            .map(|d| d.count().saturating_sub(1) as u64)
            .unwrap_or(0),
        mem_available_kib: proc_field("/proc/meminfo", "MemAvailable").unwrap_or(0),
    }
}

/// CPU time (user + system) that `getrusage(who)` reports.
fn rusage_cpu(who: libc::c_int) -> Duration {
    // SAFETY: getrusage fills the struct it is given.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrusage(who, &mut ru) } != 0 {
        return Duration::ZERO;
    }
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// CPU time (user + system) used by this process (all its threads) so far.
fn host_cpu() -> Duration {
    rusage_cpu(libc::RUSAGE_SELF)
}

/// CPU time (user + system) of this process's reaped children (and what they reaped).
fn children_cpu() -> Duration {
    rusage_cpu(libc::RUSAGE_CHILDREN)
}

/// `CLOCK_MONOTONIC` in seconds (the clock `perf record -k CLOCK_MONOTONIC` stamps with), to
/// find a phase in a profile.
fn monotonic() -> f64 {
    // SAFETY: clock_gettime fills the struct it is given.
    let mut ts: libc::timespec = unsafe { std::mem::zeroed() };
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9
}

/// CPU time used so far by the (single-threaded) process `pid`, in nanoseconds precision
/// (`/proc/PID/schedstat`; `/proc/PID/stat` counts whole clock ticks only).
fn proc_cpu(pid: u32) -> Duration {
    std::fs::read_to_string(format!("/proc/{pid}/schedstat"))
        .ok()
        .and_then(|t| t.split_whitespace().next()?.parse().ok())
        .map(Duration::from_nanos)
        .unwrap_or_default()
}

/// Memory figures of one process, in KiB.
#[derive(Clone, Copy, Default)]
struct ProcMem {
    rss: u64,
    pss: u64,
    private: u64,
    pte: u64,
}

fn proc_mem(pid: u32) -> Option<ProcMem> {
    let status = format!("/proc/{pid}/status");
    let rollup = format!("/proc/{pid}/smaps_rollup");
    Some(ProcMem {
        rss: proc_field(&status, "VmRSS")?,
        pte: proc_field(&status, "VmPTE").unwrap_or(0),
        pss: proc_field(&rollup, "Pss")?,
        private: proc_field(&rollup, "Private_Clean").unwrap_or(0)
            + proc_field(&rollup, "Private_Dirty").unwrap_or(0),
    })
}

/// The first child of `pid` (the sandbox's plugin, forked by its init).
fn first_child(pid: u32) -> Option<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

// ---------------------------------------------------------------------------------------
// cgroup directories of a sandbox

/// The sandbox's cgroup leaves: from its owner record, else found by id on every cgroup mount
/// below this process's own cgroup paths.
fn cgroup_leaves(id: &str) -> Vec<PathBuf> {
    let record = sandbox_runner::cgroup::records_dir().join(format!("{id}.json"));
    if let Some(paths) = std::fs::read(&record)
        .ok()
        .and_then(|t| serde_json::from_slice::<serde_json::Value>(&t).ok())
        .and_then(|v| {
            v.get("paths")?.as_array().map(|a| {
                a.iter()
                    .filter_map(|p| p.as_str().map(PathBuf::from))
                    .collect::<Vec<_>>()
            })
        })
        .filter(|p| !p.is_empty())
    {
        return paths;
    }
    let own: Vec<String> = std::fs::read_to_string("/proc/self/cgroup")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.splitn(3, ':').nth(2).map(str::to_owned))
        .collect();
    let mounts: Vec<PathBuf> = std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let (pre, post) = l.split_once(" - ")?;
            let fstype = post.split_whitespace().next()?;
            let mount_point = pre.split_whitespace().nth(4)?;
            (fstype == "cgroup" || fstype == "cgroup2").then(|| PathBuf::from(mount_point))
        })
        .collect();
    let mut found = Vec::new();
    for m in &mounts {
        for o in &own {
            let p = m
                .join(o.trim_start_matches('/'))
                .join(sandbox_runner::cgroup::CONTAINER)
                .join(id);
            if p.is_dir() && !found.contains(&p) {
                found.push(p);
            }
        }
    }
    found
}

/// Records when directories are deleted below the watched parents (inotify `IN_DELETE`).
struct RemovalWatch {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<HashMap<PathBuf, Instant>>,
}

impl RemovalWatch {
    /// Starts watching `parents`; returns once every watch is in place. `None` when inotify
    /// is unavailable.
    fn start(parents: Vec<PathBuf>) -> Option<RemovalWatch> {
        use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
        use nix::sys::inotify::{AddWatchFlags, InitFlags, Inotify};
        use std::os::fd::AsFd;
        let stop = Arc::new(AtomicBool::new(false));
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<bool>();
        let stop2 = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut seen = HashMap::new();
            let Ok(ino) = Inotify::init(InitFlags::IN_NONBLOCK | InitFlags::IN_CLOEXEC) else {
                let _ = ready_tx.send(false);
                return seen;
            };
            let mut wds = HashMap::new();
            for p in &parents {
                if let Ok(wd) = ino.add_watch(p, AddWatchFlags::IN_DELETE) {
                    wds.insert(wd, p.clone());
                }
            }
            let _ = ready_tx.send(!wds.is_empty());
            loop {
                let stopping = stop2.load(Ordering::SeqCst);
                while let Ok(events) = ino.read_events() {
                    if events.is_empty() {
                        break;
                    }
                    let now = Instant::now();
                    for e in events {
                        if let (Some(dir), Some(name)) = (wds.get(&e.wd), e.name) {
                            seen.insert(dir.join(name), now);
                        }
                    }
                }
                if stopping {
                    return seen;
                }
                let mut fds = [PollFd::new(ino.as_fd(), PollFlags::POLLIN)];
                let _ = poll(&mut fds, PollTimeout::from(20u16));
            }
        });
        match ready_rx.recv() {
            Ok(true) => Some(RemovalWatch { stop, thread }),
            _ => {
                stop.store(true, Ordering::SeqCst);
                let _ = thread.join();
                None
            }
        }
    }

    fn finish(self) -> HashMap<PathBuf, Instant> {
        self.stop.store(true, Ordering::SeqCst);
        self.thread.join().unwrap_or_default()
    }
}

/// Records when each of a set of pidfds becomes readable (its process exited), from a thread
/// of its own.
struct ExitWatch {
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<HashMap<usize, Instant>>,
}

impl ExitWatch {
    fn start(mut fds: Vec<(usize, std::os::fd::OwnedFd)>) -> ExitWatch {
        use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
        use std::os::fd::AsFd;
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let thread = std::thread::spawn(move || {
            let mut seen = HashMap::new();
            while !fds.is_empty() && !stop2.load(Ordering::SeqCst) {
                let mut pfds: Vec<PollFd> = fds
                    .iter()
                    .map(|(_, fd)| PollFd::new(fd.as_fd(), PollFlags::POLLIN))
                    .collect();
                let ready = poll(&mut pfds, PollTimeout::from(20u16)).unwrap_or(0);
                let now = Instant::now();
                let done: Vec<bool> = pfds
                    .iter()
                    .map(|p| p.revents().is_some_and(|r| !r.is_empty()))
                    .collect();
                drop(pfds);
                if ready > 0 {
                    let mut k = 0;
                    fds.retain(|(i, _)| {
                        let d = done[k];
                        k += 1;
                        if d {
                            seen.insert(*i, now);
                        }
                        !d
                    });
                }
            }
            seen
        });
        ExitWatch { stop, thread }
    }

    /// Lets the thread see the last exits (it ends by itself once every pidfd was readable),
    /// for at most 2 s, then stops it.
    fn finish(self) -> HashMap<usize, Instant> {
        let t = Instant::now();
        while !self.thread.is_finished() && t.elapsed() < Duration::from_secs(2) {
            std::thread::sleep(Duration::from_millis(5));
        }
        self.stop.store(true, Ordering::SeqCst);
        self.thread.join().unwrap_or_default()
    }
}

// ---------------------------------------------------------------------------------------
// statistics and formatting

/// Nearest-rank percentile of sorted samples.
fn pct(sorted: &[Duration], p: f64) -> Option<Duration> {
    if sorted.is_empty() {
        return None;
    }
    let i = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1;
    Some(sorted[i])
}

fn median(samples: &[Duration]) -> Option<Duration> {
    let mut s = samples.to_vec();
    s.sort_unstable();
    pct(&s, 0.5)
}

fn fmt_time(d: Option<Duration>) -> String {
    let Some(d) = d else { return "n/a".into() };
    let us = d.as_secs_f64() * 1e6;
    if us < 1000.0 {
        format!("{us:.0} µs")
    } else if us < 1e6 {
        format!("{:.2} ms", us / 1000.0)
    } else {
        format!("{:.2} s", us / 1e6)
    }
}

fn fmt_kib(kib: f64) -> String {
    if kib.abs() >= 1024.0 {
        format!("{:.2} MiB", kib / 1024.0)
    } else {
        format!("{kib:.0} KiB")
    }
}

fn fmt_ratio(a: f64, b: f64) -> String {
    if b > 0.0 && a.is_finite() {
        format!("{:.2}×", a / b)
    } else {
        "n/a".into()
    }
}

fn fail(msg: impl AsRef<str>) -> ! {
    eprintln!("bench scale: {}", msg.as_ref());
    exit(1);
}

// ---------------------------------------------------------------------------------------
// starting

/// Something alive: a started sandbox or a baseline child.
enum Alive {
    Sandbox(Box<SandboxRunner>),
    Child(Child),
}

async fn start_one(way: Way, profile: &Profile) -> Result<Alive, String> {
    match way {
        Way::Baseline => Command::new(SLEEP)
            .arg(SLEEP_ARG)
            .stdin(ProcStdio::null())
            .stdout(ProcStdio::null())
            .stderr(ProcStdio::null())
            .kill_on_drop(true)
            .spawn()
            .map(Alive::Child)
            .map_err(|e| format!("spawn {SLEEP}: {e}")),
        Way::Library => {
            let mut r = SandboxRunner::new(profile.clone(), SLEEP, [SLEEP_ARG])
                .map_err(|e| format!("SandboxRunner::new: {e}"))?
                .with_stdin(Stdio::Null)
                .with_stdout(Stdio::Null)
                .with_stderr(Stdio::Null);
            r.start().await.map_err(|e| format!("start: {e}"))?;
            Ok(Alive::Sandbox(Box::new(r)))
        }
    }
}

struct Started {
    alive: Vec<Alive>,
    /// CPU time of this process over the start phase.
    host_cpu: Duration,
    /// Each successful start's latency, in start order.
    latencies: Vec<Duration>,
    /// Error text → how many times.
    errors: BTreeMap<String, usize>,
    wall: Duration,
    timed_out: bool,
    /// The library's start phases (span name, duration), in close order.
    phases: Vec<(&'static str, Duration)>,
}

async fn start_all(cfg: &Config, way: Way, mode: Mode) -> Started {
    let mut alive = Vec::with_capacity(cfg.n);
    let mut latencies = Vec::with_capacity(cfg.n);
    let mut errors = BTreeMap::new();
    let mut timed_out = false;
    let cpu0 = host_cpu();
    let t0 = Instant::now();
    take_phases();
    match mode {
        Mode::Sequential | Mode::Marginal => {
            let deadline = tokio::time::Instant::now() + cfg.timeout;
            for _ in 0..cfg.n {
                let t = Instant::now();
                match tokio::time::timeout_at(deadline, start_one(way, &cfg.profile)).await {
                    Ok(Ok(a)) => {
                        latencies.push(t.elapsed());
                        alive.push(a);
                    }
                    Ok(Err(e)) => *errors.entry(e).or_insert(0) += 1,
                    Err(_) => {
                        timed_out = true;
                        break;
                    }
                }
            }
        }
        Mode::Concurrent => {
            let mut set = JoinSet::new();
            for i in 0..cfg.n {
                let profile = cfg.profile.clone();
                set.spawn(async move {
                    let t = Instant::now();
                    let r = start_one(way, &profile).await;
                    (i, t.elapsed(), r)
                });
            }
            let mut done: Vec<(usize, Duration, Alive)> = Vec::with_capacity(cfg.n);
            let deadline = tokio::time::Instant::now() + cfg.timeout;
            loop {
                match tokio::time::timeout_at(deadline, set.join_next()).await {
                    Ok(Some(Ok((i, d, Ok(a))))) => done.push((i, d, a)),
                    Ok(Some(Ok((_, _, Err(e))))) => *errors.entry(e).or_insert(0) += 1,
                    Ok(Some(Err(e))) => *errors.entry(format!("task: {e}")).or_insert(0) += 1,
                    Ok(None) => break,
                    Err(_) => {
                        timed_out = true;
                        // Cancels the pending starts (the library kills what it created).
                        set.abort_all();
                        while set.join_next().await.is_some() {}
                        break;
                    }
                }
            }
            done.sort_by_key(|(i, _, _)| *i);
            for (_, d, a) in done {
                latencies.push(d);
                alive.push(a);
            }
        }
    }
    let wall = t0.elapsed();
    Started {
        alive,
        host_cpu: host_cpu().saturating_sub(cpu0),
        latencies,
        errors,
        wall,
        timed_out,
        phases: take_phases(),
    }
}

// ---------------------------------------------------------------------------------------
// resources

#[derive(Default)]
struct Resources {
    alive: usize,
    host_rss_kib: f64,
    threads: f64,
    fds: f64,
    rss_after_kib: f64,
    threads_after: f64,
    fds_after: f64,
    init: Option<ProcMem>,
    plugin_pss_kib: f64,
    sys_kib: f64,
    idle_cpu_pct: f64,
    /// CPU time used so far by the inits and plugins (their setup before `execve`).
    child_cpu: Duration,
    /// The host process before the round and with all alive.
    before: HostSnap,
    with_all: HostSnap,
}

/// Per-alive deltas against `before`, the inits' and plugins' memory (averages), and the CPU
/// use over the idle window.
async fn measure(cfg: &Config, before: HostSnap, alive: &[Alive]) -> Resources {
    let n = alive.len().max(1) as f64;
    let now = host_snap();
    let mut inits = ProcMem::default();
    let mut n_inits = 0u64;
    let mut plugin_pss = 0u64;
    let mut n_plugins = 0u64;
    let mut child_cpu = Duration::ZERO;
    for a in alive {
        let plugin = match a {
            Alive::Sandbox(r) => {
                let init = r.init_pid().map(|p| p as u32);
                if let Some(p) = init {
                    child_cpu += proc_cpu(p);
                }
                if let Some(m) = init.and_then(proc_mem) {
                    inits.rss += m.rss;
                    inits.pss += m.pss;
                    inits.private += m.private;
                    inits.pte += m.pte;
                    n_inits += 1;
                }
                init.and_then(first_child)
            }
            Alive::Child(c) => c.id(),
        };
        if let Some(p) = plugin {
            child_cpu += proc_cpu(p);
        }
        if let Some(m) = plugin.and_then(proc_mem) {
            plugin_pss += m.pss;
            n_plugins += 1;
        }
    }
    let cpu0 = host_cpu();
    let t0 = Instant::now();
    tokio::time::sleep(cfg.idle).await;
    let idle_cpu_pct =
        host_cpu().saturating_sub(cpu0).as_secs_f64() / t0.elapsed().as_secs_f64() * 100.0;
    let per = |x: u64, k: u64| x.checked_div(k).unwrap_or(0);
    Resources {
        alive: alive.len(),
        host_rss_kib: (now.rss_kib as f64 - before.rss_kib as f64) / n,
        threads: (now.threads as f64 - before.threads as f64) / n,
        fds: (now.fds as f64 - before.fds as f64) / n,
        init: (n_inits > 0).then(|| ProcMem {
            rss: per(inits.rss, n_inits),
            pss: per(inits.pss, n_inits),
            private: per(inits.private, n_inits),
            pte: per(inits.pte, n_inits),
        }),
        plugin_pss_kib: if n_plugins == 0 {
            0.0
        } else {
            plugin_pss as f64 / n_plugins as f64
        },
        sys_kib: (before.mem_available_kib as f64 - now.mem_available_kib as f64) / n,
        idle_cpu_pct,
        child_cpu,
        before,
        with_all: now,
        ..Resources::default()
    }
}

// ---------------------------------------------------------------------------------------
// killing

#[derive(Default)]
struct Killed {
    /// kill start → last cgroup directory removed (library only).
    to_cgroup_gone: Vec<Duration>,
    /// kill start → kill returned (library) / SIGTERM sent → wait returned (baseline).
    to_kill_returned: Vec<Duration>,
    /// kill start → the parked `wait` returned.
    to_wait_returned: Vec<Duration>,
    /// kill start → the init exited (a pidfd of our own on it became readable).
    to_init_exit: Vec<Duration>,
    /// CPU time of this process over the kill phase.
    host_cpu: Duration,
    /// CPU time of the children reaped during the kill phase (their whole life: subtract
    /// what they had used when they were alive to get the teardown's share).
    children_cpu: Duration,
    wall: Duration,
    statuses: BTreeMap<String, usize>,
    errors: BTreeMap<String, usize>,
    /// Directories still there after kill returned (and after a grace of polling).
    leftover_dirs: usize,
    /// cgroup removal times taken from polling instead of inotify.
    polled: usize,
    timed_out: bool,
}

struct KillSample {
    start: Instant,
    returned: Instant,
    result: Result<String, String>,
}

async fn kill_sandbox(r: Arc<SandboxRunner>) -> KillSample {
    let start = Instant::now();
    let res = r.kill().await;
    let returned = Instant::now();
    let result = match res {
        Err(e) => Err(format!("kill: {e}")),
        Ok(()) => match r.wait().await {
            Ok(s) => Ok(s.to_string()),
            Err(e) => Err(format!("wait after kill: {e}")),
        },
    };
    KillSample {
        start,
        returned,
        result,
    }
}

async fn kill_child(mut c: Child) -> KillSample {
    let start = Instant::now();
    let sent = match c.id() {
        // SAFETY: kill(2) on our own unreaped child.
        Some(pid) => (unsafe { libc::kill(pid as i32, libc::SIGTERM) }) == 0,
        None => false,
    };
    let res = c.wait().await;
    let returned = Instant::now();
    let result = match (sent, res) {
        (false, _) => Err("kill(SIGTERM) failed".into()),
        (true, Ok(s)) => Ok(s.to_string()),
        (true, Err(e)) => Err(format!("wait: {e}")),
    };
    KillSample {
        start,
        returned,
        result,
    }
}

async fn kill_all(cfg: &Config, alive: Vec<Alive>, mode: Mode) -> Killed {
    let mut out = Killed::default();
    let mut sandboxes: Vec<(Arc<SandboxRunner>, Vec<PathBuf>)> = Vec::new();
    let mut children: Vec<Child> = Vec::new();
    for a in alive {
        match a {
            Alive::Sandbox(r) => {
                let leaves = cgroup_leaves(r.id());
                sandboxes.push((Arc::new(*r), leaves));
            }
            Alive::Child(c) => children.push(c),
        }
    }
    // Watch the parents of every leaf for their removal.
    let mut parents: Vec<PathBuf> = sandboxes
        .iter()
        .flat_map(|(_, l)| l.iter().filter_map(|p| p.parent().map(Path::to_path_buf)))
        .collect();
    parents.sort();
    parents.dedup();
    let watch = if parents.is_empty() {
        None
    } else {
        RemovalWatch::start(parents)
    };
    // Park one waiter per sandbox before any kill.
    let mut waiters = JoinSet::new();
    for (i, (r, _)) in sandboxes.iter().enumerate() {
        let r = r.clone();
        waiters.spawn(async move {
            let _ = r.wait().await;
            (i, Instant::now())
        });
    }
    // And pidfds of our own on the inits, polled by a thread of their own (not a task: the
    // runtime's workers may be busy in the runner's kills): readable once the init has exited,
    // before the runner has reaped it and removed the cgroups.
    let pidfds: Vec<(usize, std::os::fd::OwnedFd)> = sandboxes
        .iter()
        .enumerate()
        .filter_map(|(i, (r, _))| {
            let pid = rustix::process::Pid::from_raw(r.init_pid()?)?;
            let fd = rustix::process::pidfd_open(pid, rustix::process::PidfdFlags::empty()).ok()?;
            Some((i, fd))
        })
        .collect();
    let exit_watch = ExitWatch::start(pidfds);
    tokio::time::sleep(Duration::from_millis(100)).await;

    let t0 = Instant::now();
    let deadline = tokio::time::Instant::now() + cfg.timeout;
    let mut samples: Vec<(usize, KillSample)> = Vec::new();
    match mode {
        Mode::Sequential | Mode::Marginal => {
            let sb = sandboxes.iter().map(|(r, _)| r.clone()).enumerate();
            for (i, r) in sb {
                match tokio::time::timeout_at(deadline, kill_sandbox(r)).await {
                    Ok(s) => samples.push((i, s)),
                    Err(_) => {
                        out.timed_out = true;
                        break;
                    }
                }
            }
            for c in children {
                match tokio::time::timeout_at(deadline, kill_child(c)).await {
                    Ok(s) => samples.push((usize::MAX, s)),
                    Err(_) => {
                        out.timed_out = true;
                        break;
                    }
                }
            }
        }
        Mode::Concurrent => {
            let mut set = JoinSet::new();
            for (i, (r, _)) in sandboxes.iter().enumerate() {
                let r = r.clone();
                set.spawn(async move { (i, kill_sandbox(r).await) });
            }
            for c in children {
                set.spawn(async move { (usize::MAX, kill_child(c).await) });
            }
            loop {
                match tokio::time::timeout_at(deadline, set.join_next()).await {
                    Ok(Some(Ok(s))) => samples.push(s),
                    Ok(Some(Err(e))) => *out.errors.entry(format!("task: {e}")).or_insert(0) += 1,
                    Ok(None) => break,
                    Err(_) => {
                        out.timed_out = true;
                        set.abort_all();
                        break;
                    }
                }
            }
        }
    }
    // Every parked wait has returned once every kill has (or soon after).
    let mut waited: HashMap<usize, Instant> = HashMap::new();
    let wait_deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while let Ok(Some(Ok((i, at)))) = tokio::time::timeout_at(wait_deadline, waiters.join_next())
        .await
        .map_err(|_| ())
    {
        waited.insert(i, at);
    }
    waiters.abort_all();
    let exited = exit_watch.finish();

    // Confirm the directories are gone (polling for a while if not yet).
    let mut polled_gone: HashMap<usize, Instant> = HashMap::new();
    let poll_deadline = Instant::now() + Duration::from_secs(10);
    for (i, (_, leaves)) in sandboxes.iter().enumerate() {
        loop {
            if leaves.iter().all(|p| !p.exists()) {
                polled_gone.insert(i, Instant::now());
                break;
            }
            if Instant::now() > poll_deadline {
                out.leftover_dirs += leaves.iter().filter(|p| p.exists()).count();
                break;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    out.wall = t0.elapsed();
    let removed = watch.map(RemovalWatch::finish).unwrap_or_default();

    for (i, s) in samples {
        match &s.result {
            Ok(st) => *out.statuses.entry(st.clone()).or_insert(0) += 1,
            Err(e) => *out.errors.entry(e.clone()).or_insert(0) += 1,
        }
        out.to_kill_returned.push(s.returned - s.start);
        if i == usize::MAX {
            // Baseline: the kill *is* the wait.
            out.to_wait_returned.push(s.returned - s.start);
            continue;
        }
        if let Some(at) = waited.get(&i) {
            out.to_wait_returned
                .push(at.saturating_duration_since(s.start));
        }
        if let Some(at) = exited.get(&i) {
            out.to_init_exit.push(at.saturating_duration_since(s.start));
        }
        let leaves = &sandboxes[i].1;
        let from_inotify: Option<Vec<Instant>> =
            leaves.iter().map(|p| removed.get(p).copied()).collect();
        let gone = match from_inotify {
            Some(ts) if !ts.is_empty() => ts.into_iter().max(),
            _ => {
                out.polled += 1;
                polled_gone.get(&i).copied()
            }
        };
        if let Some(g) = gone {
            out.to_cgroup_gone
                .push(g.saturating_duration_since(s.start));
        }
    }
    drop(sandboxes);
    out
}

// ---------------------------------------------------------------------------------------
// the rounds

struct Round {
    way: Way,
    mode: Mode,
    n: usize,
    started: Started,
    res: Resources,
    killed: Killed,
    leaves_per_sandbox: f64,
}

async fn round(cfg: &Config, way: Way, mode: Mode) -> Round {
    // Let the previous round's leftovers (exits, cgroup frees) settle first.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = host_snap();
    let phase = |what: &str| {
        eprintln!(
            "bench scale: {} {}: {what} at CLOCK_MONOTONIC {:.3} s",
            way.label(),
            mode.label(),
            monotonic()
        )
    };
    phase("start phase begins");
    let mut started = start_all(cfg, way, mode).await;
    phase("start phase ends");
    let res = measure(cfg, before, &started.alive).await;
    let leaves: usize = started
        .alive
        .iter()
        .map(|a| match a {
            Alive::Sandbox(r) => cgroup_leaves(r.id()).len(),
            Alive::Child(_) => 0,
        })
        .sum();
    let leaves_per_sandbox = leaves as f64 / started.alive.len().max(1) as f64;
    let alive = std::mem::take(&mut started.alive);
    let cpu0 = (host_cpu(), children_cpu());
    phase("kill phase begins");
    let mut killed = kill_all(cfg, alive, mode).await;
    phase("kill phase ends");
    killed.host_cpu = host_cpu().saturating_sub(cpu0.0);
    killed.children_cpu = children_cpu().saturating_sub(cpu0.1);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let after = host_snap();
    let n = res.alive.max(1) as f64;
    let res = Resources {
        rss_after_kib: (after.rss_kib as f64 - before.rss_kib as f64) / n,
        threads_after: after.threads as f64 - before.threads as f64,
        fds_after: after.fds as f64 - before.fds as f64,
        ..res
    };
    Round {
        way,
        mode,
        n: cfg.n,
        started,
        res,
        killed,
        leaves_per_sandbox,
    }
}

fn print_report(cfg: &Config, rounds: &[Round], load_before: &str, heap_passes: u64) {
    let base = |mode: Mode| {
        rounds
            .iter()
            .find(|r| r.way == Way::Baseline && r.mode == mode)
    };
    println!();
    println!(
        "scale: {} sandboxes of `{SLEEP} {SLEEP_ARG}` alive at once — {} — profile {}, \
         tokio multi-thread runtime with 2 workers, one host process; load average {} \
         before, {} after",
        cfg.n,
        machine(),
        cfg.profile_name,
        load_before,
        loadavg()
    );
    if cfg.heap_mib > 0 {
        println!();
        println!(
            "The host holds a {} MiB heap, every page touched, that a thread kept writing \
             (one byte per page, a pause of {:?} between passes): {} passes in all.",
            cfg.heap_mib, cfg.heap_pause, heap_passes
        );
    }
    println!();
    println!("### Start");
    println!();
    println!(
        "| way | mode | started | wall | starts/s | median start | p99 start | \
         median first 10% | median last 10% | wall ratio to baseline | \
         CPU per start: host + sandbox processes |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in rounds {
        let s = &r.started;
        let mut sorted = s.latencies.clone();
        sorted.sort_unstable();
        let tenth = (s.latencies.len() / 10).max(1).min(s.latencies.len());
        let first = median(&s.latencies[..tenth]);
        let last = median(&s.latencies[s.latencies.len() - tenth..]);
        let ratio = base(r.mode)
            .map(|b| fmt_ratio(s.wall.as_secs_f64(), b.started.wall.as_secs_f64()))
            .unwrap_or_else(|| "n/a".into());
        let per = |d: Duration| d / (s.latencies.len().max(1) as u32);
        println!(
            "| {} | {} | {}/{}{} | {} | {:.0} | {} | {} | {} | {} | {} | {} + {} |",
            r.way.label(),
            r.mode.label(),
            s.latencies.len(),
            r.n,
            if s.timed_out { " (timed out)" } else { "" },
            fmt_time(Some(s.wall)),
            s.latencies.len() as f64 / s.wall.as_secs_f64(),
            fmt_time(pct(&sorted, 0.5)),
            fmt_time(pct(&sorted, 0.99)),
            fmt_time(first),
            fmt_time(last),
            ratio,
            fmt_time(Some(per(s.host_cpu))),
            fmt_time(Some(per(r.res.child_cpu))),
        );
    }

    println!();
    println!("### Start phases (library, from its tracing spans, in close order)");
    println!();
    println!(
        "| mode | phase | samples | median | median first 10% | median last 10% | \
         last / first |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|");
    for r in rounds.iter().filter(|r| r.way == Way::Library) {
        for phase in ["plan", "setup", "cgroup", "clone", "exec", "start"] {
            let v: Vec<Duration> = r
                .started
                .phases
                .iter()
                .filter(|(n, _)| *n == phase)
                .map(|(_, d)| *d)
                .collect();
            if v.is_empty() {
                continue;
            }
            let tenth = (v.len() / 10).max(1);
            let (first, last) = (median(&v[..tenth]), median(&v[v.len() - tenth..]));
            let mut sorted = v.clone();
            sorted.sort_unstable();
            println!(
                "| {} | {phase} | {} | {} | {} | {} | {} |",
                r.mode.label(),
                v.len(),
                fmt_time(pct(&sorted, 0.5)),
                fmt_time(first),
                fmt_time(last),
                match (first, last) {
                    (Some(f), Some(l)) => fmt_ratio(l.as_secs_f64(), f.as_secs_f64()),
                    _ => "n/a".into(),
                }
            );
        }
    }

    println!();
    println!("### Host resources with all alive (per sandbox / child)");
    println!();
    println!(
        "| way | mode | host ΔRSS | init RSS | init Pss | init private | init page tables | \
         host ΔRSS + init Pss | plugin Pss | ratio to baseline (ΔRSS + init + plugin Pss) | \
         system ΔMemAvailable | host threads | host fds | host CPU idle | \
         after kill: ΔRSS per, Δthreads, Δfds |"
    );
    println!("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|");
    for r in rounds {
        let m = &r.res;
        let init_pss = m.init.map(|i| i.pss as f64).unwrap_or(0.0);
        let total = m.host_rss_kib + init_pss + m.plugin_pss_kib;
        let ratio = base(r.mode)
            .map(|b| fmt_ratio(total, b.res.host_rss_kib + b.res.plugin_pss_kib))
            .unwrap_or_else(|| "n/a".into());
        let init = |f: fn(&ProcMem) -> u64| {
            m.init
                .as_ref()
                .map(|i| fmt_kib(f(i) as f64))
                .unwrap_or_else(|| "n/a".into())
        };
        println!(
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {:.2} | {:.2} | {:.1}% | \
             {}, {:+}, {:+} |",
            r.way.label(),
            r.mode.label(),
            fmt_kib(m.host_rss_kib),
            init(|i| i.rss),
            init(|i| i.pss),
            init(|i| i.private),
            init(|i| i.pte),
            fmt_kib(m.host_rss_kib + init_pss),
            fmt_kib(m.plugin_pss_kib),
            ratio,
            fmt_kib(m.sys_kib),
            m.threads,
            m.fds,
            m.idle_cpu_pct,
            fmt_kib(m.rss_after_kib),
            m.threads_after,
            m.fds_after,
        );
    }

    println!();
    println!("### Kill (per sandbox / child, from the start of its kill)");
    println!();
    println!(
        "| way | mode | killed | → init exited p50 / p99 / max | \
         → cgroup dirs removed p50 / p99 / max | → kill returned p50 / p99 / max | \
         → wait returned p50 / p99 / max | kill-all wall | \
         p50 ratio to baseline (kill returned) | CPU per kill: host + sandbox processes |"
    );
    println!("|---|---|---:|---|---|---|---|---:|---:|---:|");
    for r in rounds {
        let k = &r.killed;
        let three = |v: &[Duration]| {
            let mut s = v.to_vec();
            s.sort_unstable();
            if s.is_empty() {
                return "n/a".to_string();
            }
            format!(
                "{} / {} / {}",
                fmt_time(pct(&s, 0.5)),
                fmt_time(pct(&s, 0.99)),
                fmt_time(s.last().copied())
            )
        };
        let ratio = base(r.mode)
            .and_then(|b| {
                Some(fmt_ratio(
                    median(&k.to_kill_returned)?.as_secs_f64(),
                    median(&b.killed.to_kill_returned)?.as_secs_f64(),
                ))
            })
            .unwrap_or_else(|| "n/a".into());
        let nk = k.to_kill_returned.len().max(1) as u32;
        let teardown = k.children_cpu.saturating_sub(r.res.child_cpu);
        println!(
            "| {} | {} | {}{} | {} | {} | {} | {} | {} | {} | {} + {} |",
            r.way.label(),
            r.mode.label(),
            k.to_kill_returned.len(),
            if k.timed_out { " (timed out)" } else { "" },
            three(&k.to_init_exit),
            three(&k.to_cgroup_gone),
            three(&k.to_kill_returned),
            three(&k.to_wait_returned),
            fmt_time(Some(k.wall)),
            ratio,
            fmt_time(Some(k.host_cpu / nk)),
            fmt_time(Some(teardown / nk)),
        );
    }

    println!();
    for r in rounds {
        let k = &r.killed;
        let statuses: Vec<String> = k
            .statuses
            .iter()
            .map(|(s, c)| format!("{c}× \"{s}\""))
            .collect();
        print!(
            "- {} {}: exit statuses after kill: {}",
            r.way.label(),
            r.mode.label(),
            if statuses.is_empty() {
                "none".into()
            } else {
                statuses.join(", ")
            }
        );
        let (b, w) = (&r.res.before, &r.res.with_all);
        print!(
            "; host process before → with all alive: VmRSS {} → {}, VmPTE {} → {}, \
             mappings {} → {}, threads {} → {}, fds {} → {}",
            fmt_kib(b.rss_kib as f64),
            fmt_kib(w.rss_kib as f64),
            fmt_kib(b.pte_kib as f64),
            fmt_kib(w.pte_kib as f64),
            b.maps,
            w.maps,
            b.threads,
            w.threads,
            b.fds,
            w.fds
        );
        if r.way == Way::Library {
            print!(
                "; {:.1} cgroup dirs per sandbox; removal times from inotify for {} of {}",
                r.leaves_per_sandbox,
                k.to_cgroup_gone.len().saturating_sub(k.polled),
                k.to_cgroup_gone.len()
            );
            if k.leftover_dirs > 0 {
                print!(
                    "; {} cgroup dirs STILL THERE 10 s after kill",
                    k.leftover_dirs
                );
            }
        }
        println!();
        for (e, c) in &r.started.errors {
            println!("  - start failed {c}×: {e}");
        }
        for (e, c) in &k.errors {
            println!("  - kill failed {c}×: {e}");
        }
    }
}

// ---------------------------------------------------------------------------------------
// marginal: one start with none alive against one start with N alive

/// One probe part: `probes` starts, each killed and waited for before the next, with a
/// given number of sandboxes alive meanwhile.
struct Probes {
    alive: usize,
    latencies: Vec<Duration>,
    /// Per start phase name, one duration per probe.
    phases: BTreeMap<&'static str, Vec<Duration>>,
    /// CPU time of this process per probe (start and kill).
    host_cpu: Duration,
    /// CPU time of the sandbox processes per probe (`RUSAGE_CHILDREN`: the init and the
    /// plugin, reaped at the probe's end; their setup before `execve` included).
    child_cpu: Duration,
    errors: BTreeMap<String, usize>,
}

const PHASE_NAMES: [&str; 6] = ["plan", "setup", "cgroup", "clone", "exec", "start"];

async fn probes(cfg: &Config, alive: usize, label: &str) -> Probes {
    tokio::time::sleep(Duration::from_millis(500)).await;
    eprintln!(
        "bench scale: marginal: {} probes with {alive} alive ({label}) begin at CLOCK_MONOTONIC \
         {:.3} s",
        cfg.probes,
        monotonic()
    );
    let mut out = Probes {
        alive,
        latencies: Vec::new(),
        phases: BTreeMap::new(),
        host_cpu: Duration::ZERO,
        child_cpu: Duration::ZERO,
        errors: BTreeMap::new(),
    };
    let cpu0 = host_cpu();
    let child0 = children_cpu();
    for _ in 0..cfg.probes {
        take_phases();
        let t = Instant::now();
        match start_one(Way::Library, &cfg.profile).await {
            Ok(Alive::Sandbox(r)) => {
                out.latencies.push(t.elapsed());
                for (name, d) in take_phases() {
                    out.phases.entry(name).or_default().push(d);
                }
                if let Err(e) = r.kill().await {
                    *out.errors.entry(format!("kill: {e}")).or_insert(0) += 1;
                }
                let _ = r.wait().await;
            }
            Ok(Alive::Child(_)) => unreachable!(),
            Err(e) => *out.errors.entry(e).or_insert(0) += 1,
        }
    }
    out.host_cpu = host_cpu().saturating_sub(cpu0) / (cfg.probes.max(1) as u32);
    out.child_cpu = children_cpu().saturating_sub(child0) / (cfg.probes.max(1) as u32);
    eprintln!(
        "bench scale: marginal: {} probes with {alive} alive ({label}) end at CLOCK_MONOTONIC \
         {:.3} s",
        cfg.probes,
        monotonic()
    );
    out
}

/// `SCALE_PROBES` starts with none alive, then N sandboxes started and held, the same probes
/// with those N alive, then (the N killed) the probes with none alive again, which shows how
/// much of a difference is drift of the machine rather than the N.
async fn marginal(cfg: &Config) -> Vec<Probes> {
    let mut parts = vec![probes(cfg, 0, "before").await];
    let held = start_all(cfg, Way::Library, Mode::Sequential).await;
    for (e, c) in &held.errors {
        eprintln!("bench scale: marginal: holding start failed {c}×: {e}");
    }
    let n = held.alive.len();
    parts.push(probes(cfg, n, "held").await);
    let _ = kill_all(cfg, held.alive, Mode::Concurrent).await;
    parts.push(probes(cfg, 0, "after").await);
    parts
}

fn print_marginal(cfg: &Config, parts: &[Probes]) {
    let held = parts.get(1).map(|p| p.alive).unwrap_or(0);
    println!();
    println!(
        "### Marginal start: {} starts (each killed before the next) with none alive, with \
         {held} alive, and with none alive again (median per start) — {} — profile {} — \
         load average {}",
        cfg.probes,
        machine(),
        cfg.profile_name,
        loadavg()
    );
    println!();
    let head: Vec<String> = parts
        .iter()
        .enumerate()
        .map(|(i, p)| format!("{} alive{}", p.alive, if i == 2 { " (after)" } else { "" }))
        .collect();
    println!(
        "| phase | {} | ratio {held} alive / 0 alive (before) | ratio 0 alive after / before |",
        head.join(" | "),
    );
    println!("|---|{}---:|---:|", "---:|".repeat(parts.len()));
    let row = |name: &str, pick: &dyn Fn(&Probes) -> Option<Duration>| {
        let v: Vec<Option<Duration>> = parts.iter().map(pick).collect();
        let ratio = |a: Option<Duration>, b: Option<Duration>| match (a, b) {
            (Some(a), Some(b)) => fmt_ratio(a.as_secs_f64(), b.as_secs_f64()),
            _ => "n/a".into(),
        };
        println!(
            "| {name} | {} | {} | {} |",
            v.iter()
                .map(|d| fmt_time(*d))
                .collect::<Vec<_>>()
                .join(" | "),
            ratio(v.get(1).copied().flatten(), v[0]),
            ratio(v.get(2).copied().flatten(), v[0]),
        );
    };
    row("start latency (bench)", &|p| median(&p.latencies));
    for name in PHASE_NAMES {
        row(&format!("span {name}"), &|p| {
            p.phases.get(name).and_then(|v| median(v))
        });
    }
    row("host CPU per start + kill", &|p| Some(p.host_cpu));
    row("sandbox processes' CPU per start + kill", &|p| {
        Some(p.child_cpu)
    });
    for p in parts {
        for (e, c) in &p.errors {
            println!("  - with {} alive: failed {c}×: {e}", p.alive);
        }
    }
}

async fn bench(cfg: Config) {
    let heap = (cfg.heap_mib > 0).then(|| Heap::start(cfg.heap_mib, cfg.heap_pause));
    let load_before = loadavg();
    // Warm-up: one of each, so the spawner thread, the runtime's reaper and the cgroup
    // containers exist before the first "before" snapshot.
    for way in [Way::Baseline, Way::Library] {
        match start_one(way, &cfg.profile).await {
            Ok(a) => {
                let _ = kill_all(&cfg, vec![a], Mode::Sequential).await;
            }
            Err(e) => fail(format!("{} (warm-up): {e}", way.label())),
        }
    }
    let mut rounds = Vec::new();
    let mut marginal_parts = Vec::new();
    for mode in cfg.modes.clone() {
        if mode == Mode::Marginal {
            eprintln!("bench scale: marginal ...");
            marginal_parts = marginal(&cfg).await;
            continue;
        }
        for way in [Way::Baseline, Way::Library] {
            eprintln!("bench scale: {} {} ...", way.label(), mode.label());
            rounds.push(round(&cfg, way, mode).await);
        }
    }
    let heap_passes = heap.as_ref().map(Heap::passes).unwrap_or(0);
    drop(heap);
    if !rounds.is_empty() {
        print_report(&cfg, &rounds, &load_before, heap_passes);
    }
    if !marginal_parts.is_empty() {
        print_marginal(&cfg, &marginal_parts);
    }
}

fn env_num(name: &str, default: u64) -> u64 {
    common::env_num(name, default).unwrap_or_else(|e| fail(e))
}

fn main() {
    // `cargo bench` passes `--bench` (and any filter); this bench takes no arguments.
    let cfg = Config {
        n: env_num("SCALE_N", DEFAULT_N as u64) as usize,
        modes: match std::env::var("SCALE_MODES").as_deref() {
            Err(_) | Ok("") => vec![Mode::Concurrent, Mode::Sequential],
            Ok(list) => list
                .split(',')
                .map(|m| match m.trim() {
                    "concurrent" => Mode::Concurrent,
                    "sequential" => Mode::Sequential,
                    "marginal" => Mode::Marginal,
                    other => fail(format!(
                        "SCALE_MODES: {other:?} is not concurrent, sequential or marginal"
                    )),
                })
                .collect(),
        },
        idle: Duration::from_secs(env_num("SCALE_IDLE_SECS", DEFAULT_IDLE_SECS)),
        timeout: Duration::from_secs(env_num("SCALE_TIMEOUT_SECS", DEFAULT_TIMEOUT_SECS)),
        profile_name: std::env::var("SCALE_PROFILE")
            .ok()
            .filter(|p| !p.is_empty())
            .unwrap_or_else(|| "default".into()),
        profile: {
            let spec = std::env::var("SCALE_PROFILE")
                .ok()
                .filter(|p| !p.is_empty())
                .unwrap_or_else(|| "default".into());
            Profile::load(&spec).unwrap_or_else(|e| fail(format!("profile {spec}: {e}")))
        },
        heap_mib: match std::env::var("SCALE_HEAP_MIB").as_deref() {
            Err(_) | Ok("") | Ok("0") => 0,
            Ok(_) => env_num("SCALE_HEAP_MIB", 0),
        },
        heap_pause: Duration::from_millis(match std::env::var("SCALE_HEAP_PAUSE_MS").as_deref() {
            Ok("0") => 0,
            _ => env_num("SCALE_HEAP_PAUSE_MS", 10),
        }),
        probes: env_num("SCALE_PROBES", 50) as usize,
    };
    {
        use tracing_subscriber::layer::SubscriberExt;
        if let Err(e) =
            tracing::subscriber::set_global_default(tracing_subscriber::registry().with(Phases))
        {
            fail(format!("tracing subscriber: {e}"));
        }
    }
    if let Err(e) = common::run_on_two_workers(bench(cfg)) {
        fail(e);
    }
}
