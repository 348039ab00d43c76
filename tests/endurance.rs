//! Endurance, as root: thousands of sandboxes started and interrupted at every stage of their
//! setup from one long-lived host process, and hosts SIGKILLed in the middle of a start, must
//! leave nothing behind (cgroups, mounts, fds, processes, zombies, state and socket
//! directories).
//!
//! Sizes (each also runs in the cgroup-v2 VM of `tests/vm/run.sh`, several times slower, where
//! the defaults are smaller):
//! - `ENDURANCE_CYCLES`: start/kill cycles of the library test (default 1000; 50 in the VM;
//!   the full run of the issue is `ENDURANCE_CYCLES=10000`);
//! - `HOST_KILL_ROUNDS`: SIGKILLed `sandbox-run` hosts (default 100; 10 in the VM);
//! - `ENDURANCE_SEED`: replays the random choices of an earlier run (each test prints its
//!   seed);
//! - `ENDURANCE_TRACE=1`: prints each cycle as it begins (to find the one that hangs or
//!   takes the host down).
//!
//! No hooks in the library: the interruptions are timed at random against the measured
//! duration of a start, and where each one landed is read from the outside (this process's
//! children, their cgroup and their own children) and printed as a table per kind.
#![allow(clippy::await_holding_lock)] // serial(): one test at a time, each on its own runtime

mod common;
use common::*;

use sandbox_runner::cgroup::{records_dir, CONTAINER, HOST_LEAF};
use sandbox_runner::state::SandboxState;
use sandbox_runner::{AttachedRunner, Error, Profile, Runner, SandboxRunner};
use std::collections::{BTreeMap, BTreeSet};
use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

// ---------------------------------------------------------------------------------------
// Sizing and randomness
// ---------------------------------------------------------------------------------------

/// The count in `var`, else `host` (or `vm` inside the test VM).
fn knob(var: &str, host: u64, vm: u64) -> u64 {
    match std::env::var(var) {
        Ok(v) => v
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{var}={v:?} is not a whole number")),
        Err(_) if in_vm() => vm,
        Err(_) => host,
    }
}

/// xorshift64*: reproducible random choices without a new dependency.
struct Rng(u64);

impl Rng {
    /// Seeded from `ENDURANCE_SEED` (to replay a run) or from the clock; prints the seed.
    fn from_env(test: &str) -> Rng {
        let seed = match std::env::var("ENDURANCE_SEED") {
            Ok(s) => s
                .trim()
                .parse()
                .unwrap_or_else(|_| panic!("ENDURANCE_SEED={s:?} is not a whole number")),
            Err(_) => {
                let t = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
                (t.as_nanos() as u64) ^ ((std::process::id() as u64) << 32)
            }
        };
        println!("{test}: seed {seed} (replay with ENDURANCE_SEED={seed})");
        Rng(seed.max(1))
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `0..n` (0 when `n` is 0).
    fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next() % n
        }
    }

    /// A random duration in `0..max`, at microsecond resolution.
    fn micros(&mut self, max: Duration) -> Duration {
        Duration::from_micros(self.below(max.as_micros() as u64))
    }
}

// ---------------------------------------------------------------------------------------
// What a process, this one included, looks like from /proc
// ---------------------------------------------------------------------------------------

/// The fields of `/proc/PID/stat` after the command: `[0]` is the state, `[1]` the ppid.
fn stat_fields(pid: i32) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    Some(rest.split(' ').map(str::to_owned).collect())
}

/// The state letter of `pid` (`R`, `S`, `Z`, ...), `None` once it is gone.
fn proc_state(pid: i32) -> Option<char> {
    stat_fields(pid).and_then(|f| f[0].chars().next())
}

/// The children of `pid` (every thread's), zombies included.
fn children_of(pid: i32) -> Vec<i32> {
    let mut out = Vec::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return out;
    };
    for t in tasks.flatten() {
        let list = std::fs::read_to_string(t.path().join("children")).unwrap_or_default();
        out.extend(
            list.split_whitespace()
                .filter_map(|p| p.parse::<i32>().ok()),
        );
    }
    out
}

fn own_children() -> Vec<i32> {
    children_of(std::process::id() as i32)
}

/// `pid`, its state and its command line, for failure messages.
fn describe(pid: i32) -> String {
    let cmd = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let comm = std::fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    let cg = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
    let cg = cg.lines().find(|l| l.contains(CONTAINER)).unwrap_or("");
    let (state, ppid) = match stat_fields(pid) {
        Some(f) => (f[0].clone(), f[1].clone()),
        None => ("gone".into(), "?".into()),
    };
    format!(
        "pid {pid} ({}) state {state} ppid {ppid} cmdline {:?} {cg}",
        comm.trim(),
        String::from_utf8_lossy(&cmd).replace('\0', " ").trim()
    )
}

/// SIGKILLs `pid` through a pidfd, once the pidfd has pinned it and it is still a live
/// child of this process (never a stranger that reused the number).
fn sigkill_child(pid: i32) -> bool {
    let Some(p) = rustix::process::Pid::from_raw(pid) else {
        return false;
    };
    let Ok(fd) = rustix::process::pidfd_open(p, rustix::process::PidfdFlags::empty()) else {
        return false;
    };
    let me = std::process::id().to_string();
    match stat_fields(pid) {
        Some(f) if f[1] == me && f[0] != "Z" && f[0] != "X" => {
            rustix::process::pidfd_send_signal(&fd, rustix::process::Signal::KILL).is_ok()
        }
        _ => false,
    }
}

/// This process's fds and what they point to (the listing's own fd left out), and apart
/// from them how many network namespaces it holds open.
///
/// A root runner keeps one network namespace made ahead for the next start (its fd number
/// and namespace change with every refill), so those of namespaces other than this
/// process's own are counted, not listed: more than one is a leak.
fn fd_table() -> (BTreeMap<i32, String>, usize) {
    let own_listing = format!("/proc/{}/fd", std::process::id());
    let own_net = std::fs::read_link("/proc/self/ns/net").unwrap();
    let own_net = own_net.to_string_lossy();
    let mut out = BTreeMap::new();
    let mut netns = 0;
    for e in std::fs::read_dir("/proc/self/fd").unwrap().flatten() {
        let Ok(n) = e.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(target) = std::fs::read_link(e.path()) else {
            continue; // the listing's own fd, closed by now
        };
        let target = target.to_string_lossy().into_owned();
        if target.starts_with("net:[") && target != own_net {
            netns += 1;
        } else if target != own_listing {
            out.insert(n, target);
        }
    }
    (out, netns)
}

fn thread_count() -> usize {
    std::fs::read_dir("/proc/self/task").unwrap().count()
}

/// Zombie children of this process.
fn zombie_children() -> BTreeSet<i32> {
    own_children()
        .into_iter()
        .filter(|p| proc_state(*p) == Some('Z'))
        .collect()
}

// ---------------------------------------------------------------------------------------
// Where sandboxes leave things: cgroups, state root, owner records
// ---------------------------------------------------------------------------------------

/// This process's cgroup in every mounted hierarchy (the parent of the v2 host leaf when the
/// library moved us there): the sandboxes' `sandbox-runner/<id>` directories are made below.
fn cgroup_bases() -> Vec<PathBuf> {
    let mut out = Vec::new();
    for mut base in own_cgroup_paths() {
        if base.file_name().and_then(|n| n.to_str()) == Some(HOST_LEAF) {
            base.pop();
        }
        if !out.contains(&base) {
            out.push(base);
        }
    }
    out
}

/// Every cgroup directory below `bases`.
fn cgroup_dirs(bases: &[PathBuf]) -> BTreeSet<PathBuf> {
    fn walk(dir: &Path, out: &mut BTreeSet<PathBuf>) {
        let Ok(rd) = std::fs::read_dir(dir) else {
            return;
        };
        for e in rd.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                out.insert(e.path());
                walk(&e.path(), out);
            }
        }
    }
    let mut out = BTreeSet::new();
    for b in bases {
        walk(b, &mut out);
    }
    out
}

/// The entries of a directory (empty when it does not exist).
fn entries(dir: &Path) -> BTreeSet<PathBuf> {
    std::fs::read_dir(dir)
        .map(|rd| rd.flatten().map(|e| e.path()).collect())
        .unwrap_or_default()
}

/// Whether `path` names one of `ids` (as a component, or as `<id>.json` and the like).
fn names_one_of(path: &Path, ids: &BTreeSet<String>) -> bool {
    path.components().any(|c| {
        let s = c.as_os_str().to_string_lossy();
        ids.contains(s.split('.').next().unwrap_or(""))
    })
}

/// The sandbox IDs that `paths` name (`<id>` or `<id>.json`).
fn names(paths: &BTreeSet<PathBuf>) -> BTreeSet<String> {
    paths
        .iter()
        .filter_map(|p| {
            p.file_name()?
                .to_str()?
                .split('.')
                .next()
                .map(str::to_owned)
        })
        .collect()
}

/// Everything of the host a sandbox could leak, as this process sees it.
struct Snapshot {
    mounts: String,
    cgroups: BTreeSet<PathBuf>,
    /// The state root's entries and the owner records.
    files: BTreeSet<PathBuf>,
    fds: BTreeMap<i32, String>,
    /// Network namespaces held open (see [`fd_table`]).
    netns_fds: usize,
    threads: usize,
    descendants: BTreeSet<i32>,
    zombies: BTreeSet<i32>,
}

impl Snapshot {
    fn take(bases: &[PathBuf], state_root: &Path, records: &Path) -> Snapshot {
        let mut files = entries(state_root);
        files.extend(entries(records));
        let (fds, netns_fds) = fd_table();
        Snapshot {
            mounts: std::fs::read_to_string("/proc/self/mountinfo").unwrap(),
            cgroups: cgroup_dirs(bases),
            files,
            fds,
            netns_fds,
            threads: thread_count(),
            descendants: descendants(std::process::id() as i32),
            zombies: zombie_children(),
        }
    }

    /// What `now` has that `self` had not. New cgroup directories and state entries count
    /// when they name one of `ids` (this test's sandboxes), or are an empty `sandbox-runner`
    /// container; others belong to whoever else runs sandboxes on this host meanwhile
    /// (returned separately, as notes).
    fn leaks(&self, now: &Snapshot, ids: &BTreeSet<String>) -> (Vec<String>, Vec<String>) {
        let (mut leaks, mut foreign) = (Vec::new(), Vec::new());
        if self.mounts != now.mounts {
            let old: BTreeSet<&str> = self.mounts.lines().collect();
            let new: BTreeSet<&str> = now.mounts.lines().collect();
            for l in new.difference(&old) {
                leaks.push(format!("new mount: {l}"));
            }
            for l in old.difference(&new) {
                leaks.push(format!("mount gone: {l}"));
            }
        }
        for p in now.cgroups.difference(&self.cgroups) {
            let empty_container = p.file_name().and_then(|n| n.to_str()) == Some(CONTAINER)
                && cgroup_dirs(std::slice::from_ref(p)).is_empty();
            if names_one_of(p, ids) || empty_container {
                leaks.push(format!("cgroup left: {}", p.display()));
            } else {
                foreign.push(format!("cgroup {}", p.display()));
            }
        }
        for p in now.files.difference(&self.files) {
            if names_one_of(p, ids) {
                leaks.push(format!("state left: {}", p.display()));
            } else {
                foreign.push(format!("state {}", p.display()));
            }
        }
        for (fd, target) in &now.fds {
            if self.fds.get(fd) != Some(target) {
                leaks.push(format!(
                    "fd {fd} -> {target} (before: {:?})",
                    self.fds.get(fd)
                ));
            }
        }
        if now.netns_fds > self.netns_fds.max(1) {
            leaks.push(format!(
                "network namespaces held open: {} before, {} now (one made ahead is kept)",
                self.netns_fds, now.netns_fds
            ));
        }
        if now.threads > self.threads {
            leaks.push(format!(
                "threads: {} before, {} now",
                self.threads, now.threads
            ));
        }
        for p in now.descendants.difference(&self.descendants) {
            leaks.push(format!("process left: {}", describe(*p)));
        }
        for p in now.zombies.difference(&self.zombies) {
            leaks.push(format!("zombie left: {}", describe(*p)));
        }
        (leaks, foreign)
    }

    /// Waits up to `settle` for the host to be as `self` was; returns what is still left.
    fn wait_unchanged(
        &self,
        settle: Duration,
        bases: &[PathBuf],
        state_root: &Path,
        records: &Path,
        ids: &BTreeSet<String>,
    ) -> Vec<String> {
        let deadline = Instant::now() + settle;
        loop {
            let now = Snapshot::take(bases, state_root, records);
            let (leaks, foreign) = self.leaks(&now, ids);
            if leaks.is_empty() || Instant::now() > deadline {
                if !foreign.is_empty() {
                    println!(
                        "note: {} new entries of other sandboxes on this host (not this \
                         test's): {:?}",
                        foreign.len(),
                        &foreign[..foreign.len().min(5)]
                    );
                }
                return leaks;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Per-kind, per-outcome counts, printed as a table.
#[derive(Default)]
struct Table(BTreeMap<String, BTreeMap<String, u64>>);

impl Table {
    fn add(&mut self, row: &str, outcome: &str) {
        *self
            .0
            .entry(row.to_owned())
            .or_default()
            .entry(outcome.to_owned())
            .or_default() += 1;
    }

    fn count(&self, row: &str, pred: impl Fn(&str) -> bool) -> u64 {
        self.0
            .get(row)
            .map(|m| m.iter().filter(|(k, _)| pred(k)).map(|(_, v)| v).sum())
            .unwrap_or(0)
    }

    fn print(&self, title: &str) {
        println!("{title}");
        for (row, outcomes) in &self.0 {
            let total: u64 = outcomes.values().sum();
            println!("  {row:<34} {total:>6}");
            for (o, n) in outcomes {
                println!("      {n:>6}  {o}");
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Item 5: start/kill cycles from one host process
// ---------------------------------------------------------------------------------------

/// The kinds of interruption, one of each in every block of five cycles (in random order).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// The `start()` future dropped after a random delay (before the clone, while it is
    /// pending, before the cgroup placement, during the child's mounts and setup).
    CancelStart,
    /// `kill()` right after `start()` returned.
    KillAtOnce,
    /// `kill()` a random delay after `start()` returned (the plugin runs).
    KillLater,
    /// The sandbox's init SIGKILLed from outside at a random moment of the start.
    SigkillInit,
    /// The started runner dropped without `kill()` (Drop must kill and reap).
    DropRunning,
}

const KINDS: [Kind; 5] = [
    Kind::CancelStart,
    Kind::KillAtOnce,
    Kind::KillLater,
    Kind::SigkillInit,
    Kind::DropRunning,
];

impl Kind {
    fn row(self) -> &'static str {
        match self {
            Kind::CancelStart => "a: start() cancelled",
            Kind::KillAtOnce => "b: start(), kill() at once",
            Kind::KillLater => "c: start(), delay, kill()",
            Kind::SigkillInit => "d: init SIGKILLed during start",
            Kind::DropRunning => "e: start(), drop without kill()",
        }
    }
}

/// How far a start had got, seen from outside.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stage {
    /// No child and no cgroup yet (pipes, state and socket directories, cgroup creation).
    BeforeCgroup,
    /// The cgroup exists, the clone has not happened yet (or is under way).
    BeforeClone,
    /// The init exists but is not in its cgroup yet (v1 placement after the clone).
    BeforePlacement,
    /// The init is in its cgroup and has not forked the plugin: mounts, private root, the
    /// rest of its setup (or still waiting for the host's go-ahead).
    Setup,
    /// The plugin is forked: its own steps, up to and including execve.
    PluginForked,
    /// `start()` had returned: the plugin runs (exec done).
    Returned,
}

impl Stage {
    fn label(self) -> &'static str {
        match self {
            Stage::BeforeCgroup => "before the cgroup",
            Stage::BeforeClone => "cgroup made, before the clone",
            Stage::BeforePlacement => "cloned, before cgroup placement",
            Stage::Setup => "placed, in mounts/setup",
            Stage::PluginForked => "plugin forked, before exec done",
            Stage::Returned => "after start() returned (exec'd)",
        }
    }

    /// The stage of sandbox `id`'s start now, and its init's pid once there is one. The
    /// init is this process's only live child while the cycle runs.
    fn of(id: &str, bases: &[PathBuf]) -> (Stage, Option<i32>) {
        let init = own_children()
            .into_iter()
            .find(|p| !matches!(proc_state(*p), None | Some('Z') | Some('X')));
        let Some(pid) = init else {
            let made = bases.iter().any(|b| b.join(CONTAINER).join(id).exists());
            return (
                if made {
                    Stage::BeforeClone
                } else {
                    Stage::BeforeCgroup
                },
                None,
            );
        };
        let cg = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap_or_default();
        let stage = if !children_of(pid).is_empty() {
            Stage::PluginForked
        } else if cg.contains(&format!("/{CONTAINER}/{id}")) {
            Stage::Setup
        } else {
            Stage::BeforePlacement
        };
        (stage, Some(pid))
    }
}

/// A short name of a start error (variant, and step or what it was doing).
fn short(e: &Error) -> String {
    match e {
        Error::Setup { step, errno, .. } => format!("Setup({step:?}, {errno})"),
        Error::Host { what, source } => format!("Host({what}: {})", source.kind()),
        Error::Cgroup(c) => {
            let d = format!("{c:?}");
            let name: String = d.chars().take_while(|c| c.is_alphanumeric()).collect();
            format!("Cgroup({name})")
        }
        other => {
            let d = format!("{other:?}");
            d.chars().take_while(|c| c.is_alphanumeric()).collect()
        }
    }
}

fn start_outcome(res: &Result<(), Error>) -> String {
    match res {
        Ok(()) => "start ok".to_owned(),
        Err(e) => format!("start err {}", short(e)),
    }
}

/// Polls (async) up to `limit` until this process has no child left (zombies included)
/// but those of `known` (leaks already reported); else returns the others.
async fn children_gone(limit: Duration, known: &BTreeSet<i32>) -> Result<(), Vec<i32>> {
    let deadline = Instant::now() + limit;
    loop {
        let kids: Vec<i32> = own_children()
            .into_iter()
            .filter(|p| !known.contains(p))
            .collect();
        if kids.is_empty() {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(kids);
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// 10,000 start/kill cycles (`ENDURANCE_CYCLES`, 1000 by default, 50 in the VM) from this one
/// process, with the default profile (private root, cgroup limits) and, in a third of the
/// cycles, a shared socket directory too. Each block of five cycles runs every kind of
/// interruption once ([`Kind`]): a cancelled `start()` future, `kill()` at once or after a
/// delay, the init SIGKILLed from outside during the start, and a started runner dropped.
/// Delays are random, up to a little more than a measured start, so they land at every
/// stage of the setup ([`Stage`], recorded per cycle and printed as a table).
///
/// After every cycle: no child process (nor zombie) within 2 s, and nothing left of that
/// sandbox (its cgroup in any hierarchy, owner record, state and socket directories). At the
/// end, against a snapshot taken after a warm-up: the same mount table, fds and number of
/// threads, no new descendant or zombie, no cgroup directory, state directory or owner
/// record of this test's sandboxes (nor an empty `sandbox-runner` container).
#[test]
fn start_kill_cycles_interrupted_at_every_stage_leave_nothing() {
    // The lock first, then the runtime: its fds must not appear in the middle of another
    // test's before/after comparison.
    let _g = serial();
    if !privileged() {
        return;
    }
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
        .block_on(start_kill_cycles());
}

async fn start_kill_cycles() {
    let cycles = knob("ENDURANCE_CYCLES", 1000, 50);
    let mut rng = Rng::from_env("start_kill_cycles");
    let default = Profile::builtin("default").unwrap();
    let sockets = Profile::from_toml_str(
        "extends = \"default\"\n[sockets]\nenabled = true\n",
        "endurance-sockets",
    )
    .unwrap();
    let state_root = sandbox_runner::state::state_root();
    let records = records_dir();
    let _ = sandbox_runner::cgroup::reclaim_stale();

    // Warm-up: the spawner thread, the runtime's fds, the v2 host leaf, the state root and
    // the records directory exist from here on; and a typical start's duration.
    let mut took = Vec::new();
    for i in 0..6 {
        let p = if i % 2 == 0 { &default } else { &sockets };
        let mut r = SandboxRunner::new(p.clone(), "/bin/sleep", ["100"]).unwrap();
        let t = Instant::now();
        r.start().await.unwrap();
        took.push(t.elapsed());
        r.kill().await.unwrap();
    }
    took.sort();
    let typical = took[took.len() / 2];
    if let Err(kids) = children_gone(Duration::from_secs(5), &BTreeSet::new()).await {
        let d: Vec<String> = kids.iter().map(|p| describe(*p)).collect();
        panic!("child processes before the cycles: {d:?}");
    }
    let bases = Arc::new(cgroup_bases());
    let before = Snapshot::take(&bases, &state_root, &records);
    println!(
        "start_kill_cycles: {cycles} cycles; a start takes ~{typical:?} here; cgroup bases \
         {bases:?}; state root {}",
        state_root.display()
    );

    let mut table = Table::default();
    let mut ids = BTreeSet::new();
    let mut leaks: Vec<String> = Vec::new();
    // Children already reported as left behind: later cycles do not wait for them again.
    let mut known_left = BTreeSet::new();
    let mut slowest_kill = Duration::ZERO;
    let mut with_sockets = 0u64;
    let t0 = Instant::now();
    let trace = std::env::var_os("ENDURANCE_TRACE").is_some_and(|v| !v.is_empty());
    let mut order = KINDS;
    for n in 0..cycles {
        if n % 5 == 0 {
            for i in (1..order.len()).rev() {
                order.swap(i, rng.below(i as u64 + 1) as usize);
            }
        }
        let kind = order[(n % 5) as usize];
        if trace {
            eprintln!("cycle {n} {kind:?} {:?}", t0.elapsed());
        }
        let socks = rng.below(3) == 0;
        with_sockets += socks as u64;
        let profile = if socks { &sockets } else { &default };
        let mut r = SandboxRunner::new(profile.clone(), "/bin/sleep", ["100"]).unwrap();
        let id = r.id().to_owned();
        ids.insert(id.clone());
        let outcome = match kind {
            Kind::CancelStart => {
                // A thread fires the cancellation: tokio's timer is only millisecond-precise.
                let delay = rng.micros(typical * 6 / 5);
                let (tx, rx) = tokio::sync::oneshot::channel::<()>();
                std::thread::spawn(move || {
                    std::thread::sleep(delay);
                    let _ = tx.send(());
                });
                let mut fut = Box::pin(r.start());
                let outcome = tokio::select! {
                    biased;
                    res = &mut fut => start_outcome(&res),
                    _ = rx => {
                        let (stage, _) = Stage::of(&id, &bases);
                        format!("cancelled, {}", stage.label())
                    }
                };
                drop(fut);
                outcome
            }
            Kind::KillAtOnce | Kind::KillLater => {
                let res = r.start().await;
                if res.is_ok() {
                    if kind == Kind::KillLater {
                        tokio::time::sleep(rng.micros(typical)).await;
                    }
                    let t = Instant::now();
                    let k = r.kill().await;
                    slowest_kill = slowest_kill.max(t.elapsed());
                    if let Err(e) = k {
                        leaks.push(format!("cycle {n} {kind:?}: kill() failed: {e}"));
                    }
                    let st = r.wait().await;
                    format!(
                        "start ok, then {}",
                        st.map_or_else(|e| e.to_string(), |s| s.to_string())
                    )
                } else {
                    start_outcome(&res)
                }
            }
            Kind::SigkillInit => {
                let delay = rng.micros(typical * 6 / 5);
                let done = Arc::new(AtomicBool::new(false));
                let (tx, landed) = tokio::sync::oneshot::channel::<Option<Stage>>();
                {
                    let (id, bases, done) = (id.clone(), bases.clone(), done.clone());
                    std::thread::spawn(move || {
                        std::thread::sleep(delay);
                        let deadline = Instant::now() + Duration::from_secs(5);
                        let landed = loop {
                            let (stage, pid) = Stage::of(&id, &bases);
                            if let Some(pid) = pid {
                                if sigkill_child(pid) {
                                    let after = done.load(Ordering::SeqCst);
                                    break Some(if after { Stage::Returned } else { stage });
                                }
                            }
                            if done.load(Ordering::SeqCst) || Instant::now() > deadline {
                                break None;
                            }
                            std::thread::sleep(Duration::from_micros(50));
                        };
                        let _ = tx.send(landed);
                    });
                }
                let res = r.start().await;
                done.store(true, Ordering::SeqCst);
                let landed = landed.await.unwrap();
                let end = if res.is_ok() && landed.is_some() {
                    // Bounded: a missed kill must not hang the test for the plugin's 100 s.
                    let st = tokio::time::timeout(Duration::from_secs(5), r.wait()).await;
                    let st = st.unwrap_or(Err(Error::State("not dead 5 s after SIGKILL")));
                    format!(
                        "start ok, then {}",
                        st.map_or_else(|e| e.to_string(), |s| s.to_string())
                    )
                } else {
                    start_outcome(&res)
                };
                match landed {
                    Some(stage) => format!("SIGKILL {}: {end}", stage.label()),
                    None => format!("no init to kill: {end}"),
                }
            }
            Kind::DropRunning => {
                let res = r.start().await;
                if res.is_ok() {
                    tokio::time::sleep(rng.micros(typical)).await;
                }
                start_outcome(&res)
            }
        };
        let init = r.init_pid();
        drop(r);
        if let Some(p) = init.filter(|_| kind == Kind::DropRunning) {
            // Dropping a started runner kills and reaps its sandbox before it returns.
            if alive(p) {
                leaks.push(format!(
                    "cycle {n} {kind:?}: the init survived the drop: {}",
                    describe(p)
                ));
            }
        }
        table.add(kind.row(), &outcome);
        // Nothing of this sandbox may outlive its cycle.
        if let Err(left) = children_gone(Duration::from_secs(2), &known_left).await {
            let d: Vec<String> = left.iter().map(|p| describe(*p)).collect();
            leaks.push(format!("cycle {n} {kind:?} ({outcome}): child left: {d:?}"));
            known_left.extend(left);
        }
        let mut paths: Vec<PathBuf> = bases.iter().map(|b| b.join(CONTAINER).join(&id)).collect();
        paths.push(state_root.join(&id));
        paths.push(records.join(format!("{id}.json")));
        paths.push(records.join(format!("{id}.json.tmp")));
        let deadline = Instant::now() + Duration::from_secs(2);
        loop {
            let left: Vec<&PathBuf> = paths.iter().filter(|p| p.exists()).collect();
            if left.is_empty() {
                break;
            }
            if Instant::now() > deadline {
                leaks.push(format!(
                    "cycle {n} {kind:?} ({outcome}{}): left {left:?}",
                    if socks { ", sockets" } else { "" }
                ));
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    let elapsed = t0.elapsed();
    table.print(&format!(
        "start_kill_cycles: outcomes of {cycles} cycles ({with_sockets} with a socket \
         directory) in {elapsed:.1?} ({:.1?} per cycle; slowest kill() {slowest_kill:?})",
        elapsed / cycles.max(1) as u32
    ));

    // Reap the zombies already reported, so the final check and later tests see the rest.
    for p in &known_left {
        // SAFETY: waitpid on a child of this process; status is a plain int.
        let mut st = 0;
        unsafe { libc::waitpid(*p, &mut st, libc::WNOHANG) };
    }
    let after = before.wait_unchanged(Duration::from_secs(3), &bases, &state_root, &records, &ids);
    leaks.extend(after);
    assert!(
        leaks.is_empty(),
        "{} leaks:\n{}",
        leaks.len(),
        leaks.join("\n")
    );
    if cycles >= 5 {
        for k in KINDS {
            assert!(table.count(k.row(), |_| true) > 0, "{k:?} never ran");
        }
        // Interrupted starts do not fail the uninterrupted ones.
        for k in [Kind::KillAtOnce, Kind::KillLater, Kind::DropRunning] {
            let failed = table.count(k.row(), |o| o.starts_with("start err"));
            assert_eq!(failed, 0, "{k:?}: uninterrupted starts failed");
        }
    }
    if cycles >= 100 {
        let cancelled = table.count(Kind::CancelStart.row(), |o| o.starts_with("cancelled"));
        assert!(cancelled > 0, "no start() was cancelled before it returned");
        let before_return = table.count(Kind::SigkillInit.row(), |o| {
            o.starts_with("SIGKILL") && !o.contains(Stage::Returned.label())
        });
        assert!(
            before_return > 0,
            "no init was killed before start() returned"
        );
        let after_exec = table.count(Kind::KillLater.row(), |o| o.starts_with("start ok"));
        assert!(after_exec > 0, "no kill landed after exec");
    }
}

// ---------------------------------------------------------------------------------------
// Item 6: the host SIGKILLed during setup
// ---------------------------------------------------------------------------------------

/// Makes this process the child subreaper while it lives, so that whatever a killed host
/// leaves running is reparented here (and seen), not to the system's init. Dropping it
/// reaps what is left and turns the subreaper off again.
struct Subreaper;

impl Subreaper {
    fn set() -> Subreaper {
        // SAFETY: a plain prctl on this process.
        let r = unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
        assert_eq!(r, 0, "PR_SET_CHILD_SUBREAPER");
        Subreaper
    }

    /// Reaps every zombie child (orphans that died after being reparented here). Only
    /// called while no `Command` child of this test is waited for elsewhere.
    fn reap() {
        loop {
            // SAFETY: waitpid with WNOHANG on any child; status is a plain int.
            let mut st = 0;
            let r = unsafe { libc::waitpid(-1, &mut st, libc::WNOHANG) };
            if r <= 0 {
                return;
            }
        }
    }
}

impl Drop for Subreaper {
    fn drop(&mut self) {
        // The hosts' reapers (see src/reaper.rs) were reparented here when their hosts
        // ended, and leave within a moment (2 s at most): wait for them too, so that no
        // zombie of theirs stays for the next test to find.
        let deadline = Instant::now() + Duration::from_secs(3);
        loop {
            let mut st = 0;
            // SAFETY: waitpid with WNOHANG on any child; status is a plain int.
            let r = unsafe { libc::waitpid(-1, &mut st, libc::WNOHANG) };
            if r > 0 {
                continue;
            }
            if r < 0 || Instant::now() > deadline {
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        // SAFETY: as in `set`.
        unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0) };
    }
}

/// How a killed host's sandbox was started.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mode {
    /// The default profile, attached (dies with its host).
    Default,
    /// The go-plugin profile: a socket directory in the state root as well.
    GoPlugin,
    /// `--detach`: once started, it outlives its host by design.
    Detach,
}

impl Mode {
    fn args(self) -> &'static [&'static str] {
        match self {
            Mode::Default => &[],
            Mode::GoPlugin => &["--profile", "go-plugin"],
            Mode::Detach => &["--detach"],
        }
    }

    fn row(self) -> &'static str {
        match self {
            Mode::Default => "sandbox-run (default profile)",
            Mode::GoPlugin => "sandbox-run --profile go-plugin",
            Mode::Detach => "sandbox-run --detach",
        }
    }
}

/// `sandbox-run` with a private state root and records directory, so that this test sees
/// (and cleans) only its own hosts' leftovers, whatever else runs on this machine.
struct Cli {
    state_root: PathBuf,
    run_dir: PathBuf,
}

impl Cli {
    fn command(&self, args: &[&str]) -> Command {
        let mut c = Command::new(bin());
        c.args(args)
            .env("SANDBOX_RUNNER_STATE_DIR", &self.state_root)
            .env("SANDBOX_RUNNER_RUN_DIR", &self.run_dir)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        c
    }

    fn records(&self) -> PathBuf {
        self.run_dir.join("cgroups")
    }

    /// The IDs with an owner record or a state directory.
    fn ids(&self) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        for p in entries(&self.records()) {
            if let Some(s) = p.file_name().and_then(|n| n.to_str()) {
                out.insert(s.trim_end_matches(".json").to_owned());
            }
        }
        for p in entries(&self.state_root) {
            if let Some(s) = p.file_name().and_then(|n| n.to_str()) {
                out.insert(s.to_owned());
            }
        }
        out
    }

    /// The detached sandboxes whose state names a live init.
    fn live_detached(&self) -> Vec<String> {
        let mut out = Vec::new();
        for d in entries(&self.state_root) {
            let Ok(text) = std::fs::read(d.join("state.json")) else {
                continue;
            };
            let Ok(st) = serde_json::from_slice::<SandboxState>(&text) else {
                continue;
            };
            if st.open_init().is_ok() {
                out.push(st.id);
            }
        }
        out
    }

    /// What is still in the records directory and the state root, as problems, and the
    /// leftovers that the library leaves for a minute on purpose, because their host may
    /// still be writing them: an owner record that is empty or cut short (its host died
    /// between creating and writing it, before any cgroup was made) and a state directory
    /// without a readable `owner` (its host died right after creating it, or while removing
    /// a stale one). Those are returned separately, to be aged and reclaimed again.
    fn leftovers(&self, when: &str) -> (Vec<String>, Vec<PathBuf>) {
        let (mut problems, mut unfinished) = (Vec::new(), Vec::new());
        for p in entries(&self.records()) {
            let text = std::fs::read_to_string(&p).unwrap_or_default();
            if p.extension().and_then(|e| e.to_str()) != Some("json") {
                problems.push(format!(
                    "{when}: {} kept ({} bytes): reclaim_stale reads only *.json, so it \
                     stays forever",
                    p.display(),
                    text.len()
                ));
                continue;
            }
            match serde_json::from_str::<serde_json::Value>(&text) {
                Err(_) => unfinished.push(p),
                Ok(v) => {
                    let owner = v["owner_pid"].as_i64().unwrap_or(0) as i32;
                    problems.push(format!(
                        "{when}: owner record kept: {} (owner {owner}: {}; paths {})",
                        p.display(),
                        if owner > 0 {
                            describe(owner)
                        } else {
                            "-".into()
                        },
                        v["paths"]
                    ));
                }
            }
        }
        // State directories kept, grouped by what is in them (one example each).
        let mut kept: BTreeMap<Vec<String>, (u64, PathBuf)> = BTreeMap::new();
        for d in entries(&self.state_root) {
            let owner = std::fs::read_to_string(d.join("owner")).unwrap_or_default();
            let readable = owner.split_whitespace().count() == 2
                && owner.split_whitespace().all(|w| w.parse::<u64>().is_ok());
            if !readable && !d.join("state.json").exists() {
                unfinished.push(d);
                continue;
            }
            let inside: Vec<String> = entries(&d)
                .iter()
                .filter_map(|e| e.file_name().map(|n| n.to_string_lossy().into_owned()))
                .collect();
            kept.entry(inside).or_insert((0, d.clone())).0 += 1;
        }
        for (inside, (n, example)) in &kept {
            problems.push(format!(
                "{when}: {n} state directories kept, holding {inside:?} (e.g. {}, owner {:?})",
                example.display(),
                std::fs::read_to_string(example.join("owner")).unwrap_or_default()
            ));
        }
        (problems, unfinished)
    }

    /// The cgroup leaves named by the (parseable) owner records.
    fn recorded_cgroups(&self) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for p in entries(&self.records()) {
            let Ok(text) = std::fs::read(&p) else {
                continue;
            };
            let Ok(v) = serde_json::from_slice::<serde_json::Value>(&text) else {
                continue;
            };
            for leaf in v["paths"].as_array().into_iter().flatten() {
                if let Some(s) = leaf.as_str() {
                    out.push(PathBuf::from(s));
                }
            }
        }
        out
    }
}

/// Waits up to `limit` for this process to have no live descendant; reaps zombies on the
/// way. Returns the survivors, described.
fn orphans_gone(limit: Duration) -> Result<(), String> {
    let me = std::process::id() as i32;
    let deadline = Instant::now() + limit;
    loop {
        Subreaper::reap();
        let left = descendants(me);
        if left.is_empty() {
            // What died since the reap above is a zombie now: reap it too.
            Subreaper::reap();
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(left
                .iter()
                .map(|p| describe(*p))
                .collect::<Vec<_>>()
                .join("; "));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// What a start had reached when its host was killed, seen from outside: the host's
/// children (the sandbox's init) and theirs (the plugin).
fn host_stage(host: i32) -> &'static str {
    let inits = children_of(host);
    if inits.is_empty() {
        "no sandbox process yet"
    } else if inits.iter().any(|p| !children_of(*p).is_empty()) {
        "plugin forked or running"
    } else {
        "init in setup"
    }
}

/// The host SIGKILLed at random moments of setup, 100 times (`HOST_KILL_ROUNDS`; 10 in the
/// VM): `sandbox-run -- /bin/sleep 100` with the default profile, with the go-plugin profile
/// (a socket directory) and with `--detach`, killed after 0 to ~1.3 times a measured start.
/// This process is the child subreaper, so an orphan would be reparented here: after every
/// kill, no process may be left within 2 s, except a detached sandbox that had fully
/// started (it outlives its host by design; it is stopped with `sandbox-run kill`).
///
/// Then `sandbox-run check --cleanup` must reclaim everything those hosts left: no owner
/// record, no state or socket directory, no cgroup directory of theirs, the same mount
/// table. What the library keeps for a minute on purpose (an owner record or a state
/// directory whose host died while writing it) is aged by two minutes instead of waited
/// for, and a second `check --cleanup` must remove it. Finally, a go-plugin host killed
/// while its plugin runs leaves nothing within 2 s with no later start (its reaper removes
/// its cgroups, owner record and socket directory), and the next start still works.
///
/// The hosts use a private state root and records directory (`SANDBOX_RUNNER_STATE_DIR`,
/// `SANDBOX_RUNNER_RUN_DIR`), so sandboxes that others run on this machine meanwhile
/// neither disturb nor get cleaned by this test.
#[test]
fn host_sigkilled_during_setup_leaves_no_orphan_and_cleanup_reclaims_the_rest() {
    let _g = serial();
    if !privileged() {
        return;
    }
    let rounds = knob("HOST_KILL_ROUNDS", 100, 10);
    let mut rng = Rng::from_env("host_sigkill");
    let tmp = tempfile::tempdir().unwrap();
    let cli = Cli {
        state_root: tmp.path().join("state"),
        run_dir: tmp.path().join("run"),
    };
    let _sub = Subreaper::set();
    orphans_gone(Duration::from_secs(2)).expect("descendants before the test");
    let bases = cgroup_bases();
    let before = Snapshot::take(&bases, &cli.state_root, &cli.records());

    // A whole `sandbox-run -- /bin/true`: kills land from before the clone to after exec.
    let mut took = Vec::new();
    for _ in 0..3 {
        let t = Instant::now();
        let st = cli.command(&["--", "/bin/true"]).status().unwrap();
        assert!(st.success(), "sandbox-run -- /bin/true: {st}");
        took.push(t.elapsed());
    }
    took.sort();
    let typical = took[1];
    println!("host_sigkill: {rounds} rounds; a whole sandbox-run takes ~{typical:?} here");

    let mut table = Table::default();
    let mut ids = BTreeSet::new();
    let mut stopped_detached = 0;
    let mut orphans = Vec::new();
    let t0 = Instant::now();
    for n in 0..rounds {
        let mode = match rng.below(4) {
            0 | 1 => Mode::Default,
            2 => Mode::GoPlugin,
            _ => Mode::Detach,
        };
        let mut args = mode.args().to_vec();
        args.extend(["--", "/bin/sleep", "100"]);
        let delay = rng.micros(typical * 13 / 10);
        let (records_before, state_before) = (entries(&cli.records()), entries(&cli.state_root));
        let mut host = cli.command(&args).spawn().unwrap();
        std::thread::sleep(delay);
        let exited = host.try_wait().unwrap();
        let stage = if exited.is_some() {
            "host had exited (started)"
        } else {
            host_stage(host.id() as i32)
        };
        let _ = host.kill();
        let st = host.wait().unwrap();
        if mode != Mode::Detach {
            assert!(
                exited.is_none(),
                "round {n}: {mode:?} host ended by itself: {st}"
            );
        }
        // What the dead host left before any cleanup.
        let left_record = !entries(&cli.records()).is_subset(&records_before);
        let left_state = !entries(&cli.state_root).is_subset(&state_before);
        ids.extend(cli.ids());
        // A detached sandbox that had fully started outlives its host: stop it.
        let detached = cli.live_detached();
        for id in &detached {
            let _ = cli.command(&["kill", id]).status();
            stopped_detached += 1;
        }
        let mut outcome = format!("killed: {stage}");
        if !detached.is_empty() {
            outcome.push_str("; a started detached sandbox (stopped)");
        } else {
            match (left_record, left_state) {
                (false, false) => outcome.push_str("; nothing left"),
                (true, false) => outcome.push_str("; left: cgroup record"),
                (false, true) => outcome.push_str("; left: state dir"),
                (true, true) => outcome.push_str("; left: cgroup record, state dir"),
            }
        }
        table.add(mode.row(), &outcome);
        if let Err(survivors) = orphans_gone(Duration::from_secs(2)) {
            orphans.push(format!(
                "round {n} ({}, killed {delay:?} after its start, {outcome}): {survivors}",
                mode.row()
            ));
            table.add(mode.row(), "ORPHANED: the sandbox outlived its host by 2 s");
            // Stop them, so the next rounds start clean: the init is our child now.
            for p in descendants(std::process::id() as i32) {
                let _ = nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(p),
                    nix::sys::signal::Signal::SIGKILL,
                );
            }
            orphans_gone(Duration::from_secs(2)).expect("orphans after SIGKILL");
        }
    }
    let elapsed = t0.elapsed();
    table.print(&format!(
        "host_sigkill: outcomes of {rounds} killed hosts in {elapsed:.1?} ({stopped_detached} \
         detached sandboxes stopped with `sandbox-run kill`)"
    ));

    // Every problem is collected first, so one run shows all of them.
    let mut problems = orphans;
    if !problems.is_empty() {
        problems.insert(
            0,
            format!(
                "{} of {rounds} killed hosts left their sandbox running:",
                problems.len()
            ),
        );
    }

    // `sandbox-run check --cleanup` reclaims what the dead hosts left.
    let stale = cli.recorded_cgroups();
    let cleanup = |what: &str, problems: &mut Vec<String>| {
        let o = cli
            .command(&["check", "--cleanup"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .output()
            .unwrap();
        let out = stdout(&o);
        let lines: Vec<&str> = out.lines().filter(|l| l.starts_with("cleanup:")).collect();
        println!(
            "host_sigkill: {what}`check --cleanup` exited {:?}, printing {} cleanup lines, \
             e.g. {:?}",
            o.status.code(),
            lines.len(),
            &lines[..lines.len().min(2)]
        );
        if o.status.code() != Some(0) {
            problems.push(format!(
                "check --cleanup exited {:?}: {}",
                o.status.code(),
                stderr(&o)
            ));
        }
    };
    cleanup("", &mut problems);
    for leaf in &stale {
        if leaf.exists() {
            problems.push(format!(
                "after check --cleanup: stale cgroup kept: {}",
                leaf.display()
            ));
        }
    }
    let (kept, unfinished) = cli.leftovers("after check --cleanup");
    problems.extend(kept);
    if !unfinished.is_empty() {
        // Left for a minute on purpose. Age them instead of waiting: then they must go too.
        println!(
            "host_sigkill: {} leftovers of hosts killed while writing them (kept for a minute \
             on purpose), aged by 2 minutes: {:?}",
            unfinished.len(),
            &unfinished[..unfinished.len().min(3)]
        );
        let old = SystemTime::now() - Duration::from_secs(120);
        for p in &unfinished {
            std::fs::File::open(p)
                .and_then(|f| f.set_modified(old))
                .unwrap_or_else(|e| panic!("aging {}: {e}", p.display()));
        }
        cleanup("aged, ", &mut problems);
        let (kept, unfinished) = cli.leftovers("a minute later, after check --cleanup");
        problems.extend(kept);
        for p in unfinished {
            problems.push(format!(
                "a minute later, after check --cleanup: still there: {} {:?}",
                p.display(),
                entries(&p)
            ));
        }
    }
    // Orphans that died since are zombies of this subreaper, not of the library.
    Subreaper::reap();
    let now = Snapshot::take(&bases, &cli.state_root, &cli.records());
    let (leaks, _) = before.leaks(&now, &ids);
    // The state root and the records are reported above.
    problems.extend(
        leaks
            .into_iter()
            .filter(|l| !l.starts_with("state left"))
            .map(|l| format!("after check --cleanup: {l}")),
    );

    // A go-plugin host killed while its plugin runs leaves nothing within 2 s, with no
    // later start: its reaper removes its cgroups, record and state (socket) directory.
    let (records_before, state_before) = (entries(&cli.records()), entries(&cli.state_root));
    let mut host = cli
        .command(&[
            "--profile",
            "go-plugin",
            "--",
            "/usr/bin/python3",
            "-c",
            // A go-plugin plugin: its socket, its handshake (the only first line the wrapper
            // passes on), then it runs on.
            "import os, socket, time\n\
             p = os.environ['PLUGIN_UNIX_SOCKET_DIR'] + '/ready.sock'\n\
             s = socket.socket(socket.AF_UNIX); s.bind(p); s.listen()\n\
             print('1|1|unix|' + p + '|grpc', flush=True)\n\
             time.sleep(100)",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufReader::new(host.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert!(line.starts_with("1|1|unix|/"), "{line:?}");
    let leaves: Vec<PathBuf> = cli
        .recorded_cgroups()
        .into_iter()
        .filter(|p| !names_one_of(p, &names(&records_before)))
        .collect();
    if leaves.is_empty() || !leaves.iter().all(|p| p.exists()) {
        problems.push(format!(
            "the go-plugin host's cgroups are not there: {leaves:?}"
        ));
    }
    let _ = host.kill();
    host.wait().unwrap();
    if let Err(survivors) = orphans_gone(Duration::from_secs(2)) {
        problems.push(format!(
            "a host killed while its plugin ran left: {survivors}"
        ));
    }
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let left_leaves: Vec<&PathBuf> = leaves.iter().filter(|p| p.exists()).collect();
        let left_state: Vec<PathBuf> = entries(&cli.state_root)
            .difference(&state_before)
            .cloned()
            .collect();
        let left_records: Vec<PathBuf> = entries(&cli.records())
            .difference(&records_before)
            .cloned()
            .collect();
        if left_leaves.is_empty() && left_state.is_empty() && left_records.is_empty() {
            break;
        }
        if Instant::now() > deadline {
            problems.push(format!(
                "2 s after a go-plugin host was killed while its plugin ran, with no later \
                 start: cgroups {left_leaves:?}, state {left_state:?}, records {left_records:?}"
            ));
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let st = cli.command(&["--", "/bin/true"]).status().unwrap();
    assert!(st.success(), "the next start: {st}");
    for leaf in stale.iter().filter(|p| p.exists()) {
        problems.push(format!(
            "after the next start: stale cgroup kept: {}",
            leaf.display()
        ));
    }
    let (kept, unfinished) = cli.leftovers("after the next start");
    problems.extend(kept);
    problems.extend(unfinished.iter().map(|p| {
        format!(
            "after the next start: kept {} {:?}",
            p.display(),
            entries(p)
        )
    }));
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
