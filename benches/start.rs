//! Start-to-exit latency of `/bin/true`, several ways side by side.
//!
//! Each sample is the wall time from just before the process is spawned until its exit
//! status has been collected:
//!
//! 1. `bare tokio::process`: `tokio::process::Command::new("/bin/true").status()`, the floor.
//! 2. `unshare`: `unshare --mount --pid --net --ipc --uts --fork /bin/true`, the same five
//!    namespaces as the default profile, made by util-linux (skipped if `unshare` is missing).
//! 3. `sandbox-run CLI`: `target/release/sandbox-run --stdin null -- /bin/true`, the built
//!    binary found next to this bench's directory (`target/release/deps/..`).
//! 4. `library`: in process, `SandboxRunner::new` + `Runner::start` + `AttachedRunner::wait`
//!    with the built-in `default` profile (loaded once, outside the timed loop) and all three
//!    standard streams on `/dev/null`.
//! 5. `bwrap`: `bwrap --unshare-all --ro-bind / / --dev /dev --proc /proc /bin/true`, only
//!    when `bwrap` is on `PATH` (skipped otherwise).
//!
//! 6. `sandbox-run CLI, baseline build`: another `sandbox-run` binary named by
//!    `SANDBOX_RUN_BASELINE` (e.g. an older commit's build, for a before/after comparison run
//!    side by side; `benches/start.sh` builds one from `BASELINE_REV`).
//!
//! Every child's stdin, stdout and stderr are `/dev/null` so that no way pays for a terminal.
//! Each way is warmed up a few times, then the ways are interleaved round-robin (sample 1 of
//! each way, then sample 2 of each, ...) so that machine noise hits all of them alike. The
//! loop runs as a task on a two-worker multi-thread tokio runtime, as a real host would.
//! Every run must exit with status 0, or the bench aborts.
//!
//! 7. `library, host with a big heap`: after the others, this process allocates and touches
//!    `BENCH_HEAP_MIB` MiB (default 2048; 0 skips it) and runs the library way again, with
//!    its ratio to the library way of the small host.
//!
//! 8. `bwrap, the default profile's mounts`: bwrap with what the default profile builds that
//!    bwrap can build too: every namespace, `--new-session`, the hostname, every capability
//!    dropped, and the profile's mount list translated mount by mount (a `mirror` of a
//!    symbolic link becomes `--symlink`, an optional bind `--ro-bind-try`). bwrap has no
//!    cgroup limits, seccomp filter or Landlock ruleset here.
//! 9. `sandbox-run CLI, no limits, seccomp or Landlock`: the CLI with the default profile
//!    minus those three (written to a temporary file), i.e. the work of row 8.
//!
//!    Rows 8 and 9 split the CLI's ratio to the plain bwrap row: what the default profile's
//!    extra mounts cost either tool, what the CLI's own machinery costs against bwrap's for
//!    the same sandbox, and what the isolation bwrap does not do costs. Their ratios are
//!    printed below the table.
//!
//! 10. `sandbox-run CLI, installed copy`: the CLI row's binary copied to a temporary
//!     directory first, as `cargo install` or a package leaves it. A binary the linker has
//!     just written sits in the page cache mostly as single pages; a copy (or a binary read
//!     back from disk) sits in large folios, which its `execve` and page faults map many
//!     pages at a time. bwrap and `/bin/true` are installed files.
//!
//! It prints a markdown table of median, p90 and min per way, with the ratio of each median
//! to the bare spawn's, to `unshare`'s and to `bwrap`'s.
//!
//! Run it (as root, or wherever the sandbox can be built) from the repository root with
//! `bash benches/start.sh`, which builds the `sandbox-run` binary first and then runs
//! `cargo bench --bench start`. `BENCH_ITERS` sets the number of samples per way
//! (default 200).

mod common;
use common::{cli_binary, find_on_path, machine};
use std::path::PathBuf;
use std::process::{exit, Stdio as ProcStdio};
use std::time::{Duration, Instant};

use sandbox_runner::{AttachedRunner, Profile, Runner, SandboxRunner, Stdio};
use tokio::process::Command;

/// Default number of timed samples per way.
const DEFAULT_ITERS: usize = 200;
/// Untimed runs of each way before the timed ones.
const WARMUP: usize = 5;

/// One way of running `/bin/true`.
enum Way {
    Bare,
    Unshare(PathBuf),
    Cli(PathBuf),
    Library(Box<Profile>),
    Bwrap(PathBuf),
    Baseline(PathBuf),
    BwrapMounts(PathBuf, Vec<String>),
    CliLean(PathBuf, PathBuf),
    CliInstalled(PathBuf),
}

impl Way {
    fn label(&self) -> &'static str {
        match self {
            Way::Bare => "bare tokio::process",
            Way::Unshare(_) => "unshare",
            Way::Cli(_) => "sandbox-run CLI",
            Way::Library(_) => "library",
            Way::Bwrap(_) => "bwrap",
            Way::Baseline(_) => "sandbox-run CLI, baseline build",
            Way::BwrapMounts(..) => "bwrap, the default profile's mounts",
            Way::CliLean(..) => "sandbox-run CLI, no limits, seccomp or Landlock",
            Way::CliInstalled(_) => "sandbox-run CLI, installed copy",
        }
    }

    /// Runs `/bin/true` once this way and returns the start-to-exit time; an error when it
    /// could not run or did not exit with status 0.
    async fn run_once(&self) -> Result<Duration, String> {
        match self {
            Way::Bare => time_command(Command::new("/bin/true")).await,
            Way::Unshare(unshare) => {
                let mut cmd = Command::new(unshare);
                cmd.args([
                    "--mount",
                    "--pid",
                    "--net",
                    "--ipc",
                    "--uts",
                    "--fork",
                    "/bin/true",
                ]);
                time_command(cmd).await
            }
            Way::Cli(bin) | Way::Baseline(bin) | Way::CliInstalled(bin) => {
                let mut cmd = Command::new(bin);
                cmd.args(["--stdin", "null", "--", "/bin/true"]);
                time_command(cmd).await
            }
            Way::Library(profile) => {
                let t0 = Instant::now();
                let mut r =
                    SandboxRunner::new((**profile).clone(), "/bin/true", Vec::<String>::new())
                        .map_err(|e| format!("SandboxRunner::new: {e}"))?
                        .with_stdin(Stdio::Null)
                        .with_stdout(Stdio::Null)
                        .with_stderr(Stdio::Null);
                r.start().await.map_err(|e| format!("start: {e}"))?;
                let status = r.wait().await.map_err(|e| format!("wait: {e}"))?;
                let elapsed = t0.elapsed();
                if !status.success() {
                    return Err(format!("/bin/true in the sandbox ended with {status}"));
                }
                Ok(elapsed)
            }
            Way::Bwrap(bwrap) => {
                let mut cmd = Command::new(bwrap);
                cmd.args(common::BWRAP_ARGS).arg("/bin/true");
                time_command(cmd).await
            }
            Way::BwrapMounts(bwrap, args) => {
                let mut cmd = Command::new(bwrap);
                cmd.args(args).arg("/bin/true");
                time_command(cmd).await
            }
            Way::CliLean(bin, profile) => {
                let mut cmd = Command::new(bin);
                cmd.arg("--profile")
                    .arg(profile)
                    .args(["--stdin", "null", "--", "/bin/true"]);
                time_command(cmd).await
            }
        }
    }
}

/// Spawns `cmd` with all standard streams on `/dev/null` and times it until its exit.
async fn time_command(mut cmd: Command) -> Result<Duration, String> {
    cmd.stdin(ProcStdio::null())
        .stdout(ProcStdio::null())
        .stderr(ProcStdio::null());
    let t0 = Instant::now();
    let status = cmd
        .status()
        .await
        .map_err(|e| format!("spawning {:?}: {e}", cmd.as_std().get_program()))?;
    let elapsed = t0.elapsed();
    if !status.success() {
        return Err(format!(
            "{:?} {:?} ended with {status}",
            cmd.as_std().get_program(),
            cmd.as_std().get_args().collect::<Vec<_>>()
        ));
    }
    Ok(elapsed)
}

/// Median, p90 and min of one way's samples.
struct Stats {
    median: Duration,
    p90: Duration,
    min: Duration,
}

impl Stats {
    fn of(samples: &mut [Duration]) -> Stats {
        samples.sort_unstable();
        let n = samples.len();
        let median = if n % 2 == 1 {
            samples[n / 2]
        } else {
            (samples[n / 2 - 1] + samples[n / 2]) / 2
        };
        // Nearest-rank p90.
        let p90 = samples[(n * 9).div_ceil(10).max(1) - 1];
        Stats {
            median,
            p90,
            min: samples[0],
        }
    }
}

/// `123.45 µs` below a millisecond, `1.23 ms` above.
fn fmt_time(d: Duration) -> String {
    let us = d.as_secs_f64() * 1e6;
    if us < 1000.0 {
        format!("{us:.2} µs")
    } else {
        format!("{:.2} ms", us / 1000.0)
    }
}

fn fmt_ratio(d: Duration, base: Option<Duration>) -> String {
    match base {
        Some(b) if !b.is_zero() => format!("{:.2}×", d.as_secs_f64() / b.as_secs_f64()),
        _ => "n/a".into(),
    }
}

fn fail(msg: impl AsRef<str>) -> ! {
    eprintln!("bench start: {}", msg.as_ref());
    exit(1);
}

/// bwrap's arguments for what `profile` builds that bwrap can build too (row 8): namespaces,
/// session, hostname, capabilities and the mount list, mount by mount.
fn bwrap_matched_args(profile: &Profile) -> Vec<String> {
    use sandbox_runner::profile::MountSpec;
    let mut a: Vec<String> = [
        "--unshare-all",
        "--new-session",
        "--hostname",
        profile.hostname.as_str(),
        "--cap-drop",
        "ALL",
    ]
    .map(String::from)
    .to_vec();
    let mut push = |xs: &[&str]| a.extend(xs.iter().map(|x| x.to_string()));
    for m in &profile.mount {
        match m {
            MountSpec::RoBind {
                src, dst, optional, ..
            }
            | MountSpec::Bind {
                src, dst, optional, ..
            } => {
                let rw = matches!(m, MountSpec::Bind { .. });
                let opt = match (rw, *optional) {
                    (false, false) => "--ro-bind",
                    (false, true) => "--ro-bind-try",
                    (true, false) => "--bind",
                    (true, true) => "--bind-try",
                };
                let dst = dst.as_ref().unwrap_or(src);
                push(&[opt, src.as_str(), dst.as_str()]);
            }
            MountSpec::Tmpfs { dst, .. } => push(&["--tmpfs", dst.as_str()]),
            MountSpec::Proc { dst } => push(&["--proc", dst.as_str()]),
            MountSpec::Dev { dst, .. } => push(&["--dev", dst.as_str()]),
            MountSpec::Dir { dst, .. } => push(&["--dir", dst.as_str()]),
            MountSpec::Symlink { src, dst } => push(&["--symlink", src.as_str(), dst.as_str()]),
            MountSpec::Mirror { path, optional } => {
                let p = std::path::Path::new(path.as_str());
                match std::fs::symlink_metadata(p) {
                    Ok(md) if md.file_type().is_symlink() => {
                        let target = std::fs::read_link(p)
                            .unwrap_or_else(|e| fail(format!("readlink {}: {e}", p.display())));
                        let target = target.to_string_lossy().into_owned();
                        push(&["--symlink", &target, path.as_str()]);
                    }
                    Ok(_) => push(&["--ro-bind", path.as_str(), path.as_str()]),
                    Err(_) if *optional => {}
                    Err(e) => fail(format!("mirror {}: {e}", p.display())),
                }
            }
        }
    }
    a
}

/// Writes the default profile without its cgroup limits, seccomp filter and Landlock
/// ruleset (row 9) into `dir`, checks that it loads that way, and returns its path.
fn lean_profile(dir: &std::path::Path) -> PathBuf {
    let src =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("sandbox-profiles/default.toml");
    let text = std::fs::read_to_string(&src)
        .unwrap_or_else(|e| fail(format!("reading {}: {e}", src.display())));
    let mut table: toml::Table = text
        .parse()
        .unwrap_or_else(|e| fail(format!("parsing {}: {e}", src.display())));
    table.remove("limits");
    let section = |t: &mut toml::Table, name: &str| -> toml::Table {
        match t.remove(name) {
            Some(toml::Value::Table(s)) => s,
            _ => toml::Table::new(),
        }
    };
    let mut seccomp = section(&mut table, "seccomp");
    seccomp.insert("enabled".into(), toml::Value::Boolean(false));
    table.insert("seccomp".into(), toml::Value::Table(seccomp));
    let mut landlock = section(&mut table, "landlock");
    landlock.insert("mode".into(), toml::Value::String("off".into()));
    table.insert("landlock".into(), toml::Value::Table(landlock));
    let path = dir.join("lean.toml");
    std::fs::write(
        &path,
        toml::to_string(&table).expect("serializing a TOML table"),
    )
    .unwrap_or_else(|e| fail(format!("writing {}: {e}", path.display())));
    let p = Profile::from_path(&path).unwrap_or_else(|e| fail(format!("lean profile: {e}")));
    assert!(
        p.limits.is_empty()
            && !p.seccomp.enabled
            && p.landlock.mode == sandbox_runner::landlock::LandlockMode::Off
            && p.mount == Profile::builtin("default").expect("default profile").mount,
        "the lean profile must be the default one minus limits, seccomp and Landlock"
    );
    path
}

async fn bench(iters: usize) {
    let mut ways = vec![Way::Bare];
    let mut notes = Vec::new();
    match find_on_path("unshare") {
        Some(p) => ways.push(Way::Unshare(p)),
        None => {
            notes.push("note: `unshare` is not on PATH; the unshare way is skipped".to_string())
        }
    }
    match cli_binary() {
        Some(p) => ways.push(Way::Cli(p)),
        None => notes.push(
            "note: target/release/sandbox-run is missing; run `cargo build --release` first \
             (or `bash benches/start.sh`, which does); the CLI way is skipped"
                .to_string(),
        ),
    }
    let profile =
        Profile::builtin("default").unwrap_or_else(|e| fail(format!("default profile: {e}")));
    let profile_for_bwrap = profile.clone();
    ways.push(Way::Library(Box::new(profile)));
    match find_on_path("bwrap") {
        Some(p) => ways.push(Way::Bwrap(p)),
        None => notes.push("note: `bwrap` is not on PATH; the bwrap way is skipped".to_string()),
    }
    // Rows 8 and 9 (see the top of this file).
    let lean_dir = tempfile::tempdir().unwrap_or_else(|e| fail(format!("temporary dir: {e}")));
    if let Some(bwrap) = find_on_path("bwrap") {
        ways.push(Way::BwrapMounts(
            bwrap,
            bwrap_matched_args(&profile_for_bwrap),
        ));
    }
    if let Some(cli) = cli_binary() {
        ways.push(Way::CliLean(cli.clone(), lean_profile(lean_dir.path())));
        // Row 10: the binary as an install leaves it (see the top of this file).
        let installed = lean_dir.path().join("sandbox-run");
        std::fs::copy(&cli, &installed).unwrap_or_else(|e| {
            fail(format!(
                "copying {} to {}: {e}",
                cli.display(),
                installed.display()
            ))
        });
        ways.push(Way::CliInstalled(installed));
    }
    if let Some(p) = std::env::var_os("SANDBOX_RUN_BASELINE") {
        let p = PathBuf::from(p);
        if !p.is_file() {
            fail(format!(
                "SANDBOX_RUN_BASELINE={} is not a file",
                p.display()
            ));
        }
        notes.push(format!("baseline: {}", p.display()));
        ways.push(Way::Baseline(p));
    }

    for way in &ways {
        for _ in 0..WARMUP {
            if let Err(e) = way.run_once().await {
                fail(format!("{} (warm-up): {e}", way.label()));
            }
        }
    }

    let mut samples: Vec<Vec<Duration>> = ways.iter().map(|_| Vec::with_capacity(iters)).collect();
    for i in 0..iters {
        for (way, out) in ways.iter().zip(samples.iter_mut()) {
            match way.run_once().await {
                Ok(d) => out.push(d),
                Err(e) => fail(format!("{} (run {}): {e}", way.label(), i + 1)),
            }
        }
    }

    let stats: Vec<Stats> = samples.iter_mut().map(|s| Stats::of(s)).collect();
    let base_of = |pred: fn(&Way) -> bool| {
        ways.iter()
            .zip(&stats)
            .find(|(w, _)| pred(w))
            .map(|(_, s)| s.median)
    };
    let bare = base_of(|w| matches!(w, Way::Bare));
    let unshare = base_of(|w| matches!(w, Way::Unshare(_)));
    let bwrap = base_of(|w| matches!(w, Way::Bwrap(_)));

    println!();
    println!(
        "start-to-exit of /bin/true — {} — {iters} iterations per way \
         (+{WARMUP} warm-up), round-robin, tokio multi-thread runtime with 2 workers",
        machine()
    );
    for note in &notes {
        println!("{note}");
    }
    println!();
    println!(
        "| way | median | p90 | min | ratio to bare spawn | ratio to unshare | ratio to bwrap |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for (way, s) in ways.iter().zip(&stats) {
        println!(
            "| {} | {} | {} | {} | {} | {} | {} |",
            way.label(),
            fmt_time(s.median),
            fmt_time(s.p90),
            fmt_time(s.min),
            fmt_ratio(s.median, bare),
            fmt_ratio(s.median, unshare),
            fmt_ratio(s.median, bwrap),
        );
    }

    let matched = base_of(|w| matches!(w, Way::BwrapMounts(..)));
    let lean = base_of(|w| matches!(w, Way::CliLean(..)));
    let cli = base_of(|w| matches!(w, Way::Cli(_)));
    if let (Some(m), Some(l), Some(c)) = (matched, lean, cli) {
        println!(
            "\nagainst bwrap with the default profile's mounts: sandbox-run CLI {}, \
             the CLI without limits, seccomp and Landlock (the same sandbox as that bwrap) {}; \
             the three cost the CLI {} ms",
            fmt_ratio(c, Some(m)),
            fmt_ratio(l, Some(m)),
            format_args!("{:.2}", (c.as_secs_f64() - l.as_secs_f64()) * 1e3),
        );
    }

    // The same library start from a host with a big heap: this process now allocates and
    // touches BENCH_HEAP_MIB (default 2048) MiB, and the library way runs again alone. A
    // sandbox that were a copy of its host would pay for the host's page tables here.
    let heap_mib: usize = std::env::var("BENCH_HEAP_MIB")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(2048);
    if heap_mib == 0 {
        return;
    }
    let Some(lib) = ways.iter().position(|w| matches!(w, Way::Library(_))) else {
        return;
    };
    let mut heap = vec![0u8; heap_mib << 20];
    for page in heap.chunks_mut(4096) {
        page[0] = 1;
    }
    let mut big = Vec::with_capacity(iters);
    for i in 0..iters + WARMUP {
        match ways[lib].run_once().await {
            Ok(d) if i >= WARMUP => big.push(d),
            Ok(_) => {}
            Err(e) => fail(format!("library, big heap (run {}): {e}", i + 1)),
        }
    }
    std::hint::black_box(&heap);
    let b = Stats::of(&mut big);
    println!(
        "| library, host with a {heap_mib} MiB heap (run after the others) | {} | {} | {} | {} \
         | {} | {} |",
        fmt_time(b.median),
        fmt_time(b.p90),
        fmt_time(b.min),
        fmt_ratio(b.median, bare),
        fmt_ratio(b.median, unshare),
        fmt_ratio(b.median, bwrap),
    );
    println!(
        "\nlibrary start from the {heap_mib} MiB host / from this host before: {}",
        fmt_ratio(b.median, Some(stats[lib].median))
    );
}

fn main() {
    // `cargo bench` passes `--bench` (and any filter); this bench takes no arguments.
    let iters = match std::env::var("BENCH_ITERS") {
        Ok(v) => match v.trim().parse::<usize>() {
            Ok(n) if n > 0 => n,
            _ => fail(format!("BENCH_ITERS must be a positive integer, not {v:?}")),
        },
        Err(_) => DEFAULT_ITERS,
    };
    if let Err(e) = common::run_on_two_workers(bench(iters)) {
        fail(e);
    }
}
