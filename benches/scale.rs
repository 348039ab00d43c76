//! Scale: N sandboxes alive at once (each running `/bin/sleep 1000`), started from one host
//! process, what they cost the host, and how fast they all go away again; side by side with
//! N plain `tokio::process` children running the same `/bin/sleep 1000`.
//!
//! Ways:
//!
//! 1. `baseline`: `tokio::process::Command::new("/bin/sleep").arg("1000").spawn()`, all three
//!    standard streams on `/dev/null`.
//! 2. `library`: `SandboxRunner::new` + `Runner::start` with the built-in `default` profile
//!    (loaded once; private root, cgroup memory and pids limits, seccomp, Landlock, ...) and
//!    all three standard streams on `/dev/null`.
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
//! Nothing is asserted on timings; a start that fails is counted and its error printed (with
//! the step and errno the library reports), and the round goes on with the sandboxes that did
//! start. Every phase is bounded by `SCALE_TIMEOUT_SECS` (default 120). Each phase's start
//! and end are printed on stderr in `CLOCK_MONOTONIC` seconds, to cut a system-wide
//! `perf record -a -k CLOCK_MONOTONIC` profile with `perf report --time`.
//!
//! Run it as root from the repository root: `cargo bench --bench scale`. Knobs: `SCALE_N`
//! (default 500), `SCALE_MODES` (`concurrent,sequential`, the default, or one of them),
//! `SCALE_IDLE_SECS` (2), `SCALE_TIMEOUT_SECS` (120). The runtime is a two-worker
//! multi-thread tokio runtime, as in `benches/start.rs`.

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
}

impl Mode {
    fn label(self) -> &'static str {
        match self {
            Mode::Concurrent => "concurrent",
            Mode::Sequential => "sequential",
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
    profile: Profile,
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
}

async fn start_all(cfg: &Config, way: Way, mode: Mode) -> Started {
    let mut alive = Vec::with_capacity(cfg.n);
    let mut latencies = Vec::with_capacity(cfg.n);
    let mut errors = BTreeMap::new();
    let mut timed_out = false;
    let cpu0 = host_cpu();
    let t0 = Instant::now();
    match mode {
        Mode::Sequential => {
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
        Mode::Sequential => {
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

fn print_report(cfg: &Config, rounds: &[Round], load_before: &str) {
    let base = |mode: Mode| {
        rounds
            .iter()
            .find(|r| r.way == Way::Baseline && r.mode == mode)
    };
    println!();
    println!(
        "scale: {} sandboxes of `{SLEEP} {SLEEP_ARG}` alive at once — {} — default profile, \
         tokio multi-thread runtime with 2 workers, one host process; load average {} \
         before, {} after",
        cfg.n,
        machine(),
        load_before,
        loadavg()
    );
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

async fn bench(cfg: Config) {
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
    for mode in cfg.modes.clone() {
        for way in [Way::Baseline, Way::Library] {
            eprintln!("bench scale: {} {} ...", way.label(), mode.label());
            rounds.push(round(&cfg, way, mode).await);
        }
    }
    print_report(&cfg, &rounds, &load_before);
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
                    other => fail(format!(
                        "SCALE_MODES: {other:?} is neither concurrent nor sequential"
                    )),
                })
                .collect(),
        },
        idle: Duration::from_secs(env_num("SCALE_IDLE_SECS", DEFAULT_IDLE_SECS)),
        timeout: Duration::from_secs(env_num("SCALE_TIMEOUT_SECS", DEFAULT_TIMEOUT_SECS)),
        profile: Profile::builtin("default")
            .unwrap_or_else(|e| fail(format!("default profile: {e}"))),
    };
    if let Err(e) = common::run_on_two_workers(bench(cfg)) {
        fail(e);
    }
}
