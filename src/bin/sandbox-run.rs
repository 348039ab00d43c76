//! `sandbox-run`: run any program in a sandbox, as a drop-in plugin command.
//!
//! Exit status: the program's own code; `128+N` when it died from signal N; 125 when the
//! sandbox could not be set up; 126 when the program is not executable; 127 when it is not
//! found; 124 when it was stopped at its time limit (`--timeout`); 2 for a usage error.

use clap::{ArgAction, CommandFactory, FromArgMatches, Parser, Subcommand};
use std::ffi::OsString;
use std::io::Write;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;

use sandbox_runner::handshake::{self, HandshakeError};
use sandbox_runner::PipeReader;
use std::process::ExitCode;

use sandbox_runner::child::FORWARDED;
use sandbox_runner::profile::{
    parse_size, AbsPath, EnvName, EnvValue, Hostname, MountSpec, NetRule, Size, StdinMode, Timeout,
};
use sandbox_runner::{AttachedRunner, Profile, Runner, SandboxRunner, Stdio};

/// Run PROGRAM in a sandbox of new mount, PID, network, IPC and UTS namespaces.
#[derive(Parser, Debug)]
#[command(
    name = "sandbox-run",
    version,
    args_conflicts_with_subcommands = true,
    override_usage = "sandbox-run [OPTIONS] -- PROGRAM [ARGS...]\n       sandbox-run check [--json] [--cleanup]\n       sandbox-run ps [--json]\n       sandbox-run kill ID\n       sandbox-run completions bash|zsh|fish"
)]
struct Cli {
    #[command(subcommand)]
    sub: Option<Sub>,

    /// More output on stderr: -v shows the start phases with their durations, -vv debug
    /// events too. SANDBOX_RUN_LOG (a tracing env-filter, e.g. `debug`) overrides it.
    #[arg(short, long, action = ArgAction::Count, global = true)]
    verbose: u8,

    /// Profile: the name of a built-in profile, or the path of a TOML file.
    #[arg(long, value_name = "NAME|PATH", default_value = "default")]
    profile: String,

    /// Set an environment variable in the sandbox (repeatable).
    #[arg(long = "env", value_name = "KEY=VALUE", value_parser = parse_env)]
    env: Vec<(EnvName, EnvValue)>,

    /// Hostname inside the sandbox.
    #[arg(long, value_name = "NAME", value_parser = |s: &str| Hostname::new(s))]
    hostname: Option<Hostname>,

    /// Working directory of the program inside the sandbox (absolute).
    #[arg(long, value_name = "DIR", value_parser = |s: &str| AbsPath::new(s))]
    chdir: Option<AbsPath>,

    /// Bind SRC read-only at DST, after the profile's mounts (repeatable, in order).
    #[arg(long = "ro-bind", num_args = 2, value_names = ["SRC", "DST"], action = ArgAction::Append)]
    ro_bind: Vec<String>,

    /// Bind SRC read-write at DST, after the profile's mounts (repeatable, in order).
    #[arg(long = "bind", num_args = 2, value_names = ["SRC", "DST"], action = ArgAction::Append)]
    bind: Vec<String>,

    /// Mount a fresh tmpfs at DST, after the profile's mounts (repeatable, in order).
    #[arg(long = "tmpfs", value_name = "DST", action = ArgAction::Append)]
    tmpfs: Vec<String>,

    /// Memory limit, like 64M (K, M, G binary suffixes).
    #[arg(long, value_name = "SIZE", value_parser = |s: &str| parse_size(s).map(Size))]
    memory: Option<Size>,

    /// Most processes and threads at once.
    #[arg(long, value_name = "N")]
    pids: Option<u64>,

    /// CPU bandwidth in CPUs, like 0.5.
    #[arg(long, value_name = "FLOAT")]
    cpus: Option<f64>,

    /// Allow the program to reach HOST:PORT through the proxies and DNS stub served inside
    /// its sandbox (repeatable; added to the profile's `[network] allow`). HOST is a name, a
    /// `*.` wildcard, an IP or a CIDR block; PORT a number or a range like 8000-8100.
    #[arg(long = "allow-net", value_name = "HOST:PORT", value_parser = |s: &str| NetRule::new(s))]
    allow_net: Vec<NetRule>,

    /// Wall-clock limit, like 500ms, 30s, 5m or 1h: then SIGTERM, the grace period, and
    /// SIGKILL of the whole sandbox; exit status 124.
    #[arg(long, value_name = "DURATION", value_parser = Timeout::parse, conflicts_with = "detach")]
    timeout: Option<Timeout>,

    /// Write the diagnosis (exit status, limits, cgroup counters, text) as JSON to PATH when
    /// the program ends.
    #[arg(long, value_name = "PATH")]
    diagnose_json: Option<std::path::PathBuf>,

    /// Start detached: print the sandbox ID and exit, leaving the sandbox running (its
    /// stdout and stderr go to files in its state directory).
    #[arg(long)]
    detach: bool,

    /// Die (and take the sandbox along) when the process that started sandbox-run dies, like
    /// bwrap's --die-with-parent; the profile key `die_with_parent` (on in `go-plugin`).
    #[arg(long)]
    die_with_parent: bool,

    /// Run in a user namespace (root inside = you outside) even as root; the profile's
    /// `rootless = "auto"` already does when not root.
    #[arg(long)]
    rootless: bool,

    /// The program's stdin: null or inherit (default: the profile's). inherit relays ours
    /// through a pipe (a terminal only when stdout is one too: then both are a pseudo-terminal
    /// proxied to it); the program never holds our own stdin.
    #[arg(long, value_name = "MODE", value_parser = ["null", "inherit"])]
    stdin: Option<String>,

    /// The program and its arguments, after `--`.
    #[arg(last = true, value_name = "PROGRAM")]
    command: Vec<OsString>,
}

#[derive(Subcommand, Debug)]
enum Sub {
    /// Report what this host supports and whether the default profile can run here.
    Check {
        /// Also reclaim what crashed hosts left behind: stale cgroups and sandbox state.
        #[arg(long)]
        cleanup: bool,
        /// Print every fact and the verdict as one JSON object (fields in the README).
        #[arg(long)]
        json: bool,
    },
    /// List detached sandboxes.
    Ps {
        /// Print a JSON array of objects: id, pid, state, program, start_time, cgroups.
        #[arg(long)]
        json: bool,
    },
    /// Stop a detached sandbox: SIGTERM, then after its grace period SIGKILL of everything.
    Kill {
        /// The sandbox ID printed by `--detach`.
        id: String,
    },
    /// Print a shell completion script (bash, zsh or fish) on stdout.
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff) on stdout: `sandbox-run man > sandbox-run.1`.
    #[command(hide = true)]
    Man,
}

fn parse_env(s: &str) -> Result<(EnvName, EnvValue), String> {
    let (k, v) = s
        .split_once('=')
        .ok_or_else(|| format!("'{s}' is not KEY=VALUE"))?;
    Ok((EnvName::new(k)?, EnvValue::new(v)?))
}

/// The `--ro-bind`, `--bind` and `--tmpfs` options as mount entries, in command-line order.
fn cli_mounts(m: &clap::ArgMatches) -> Result<Vec<MountSpec>, String> {
    let mut all: Vec<(usize, MountSpec)> = Vec::new();
    let abs = |s: &str| AbsPath::new(s);
    for (id, ro) in [("ro_bind", true), ("bind", false)] {
        let (Some(vals), Some(idx)) = (m.get_many::<String>(id), m.indices_of(id)) else {
            continue;
        };
        let vals: Vec<&String> = vals.collect();
        let idx: Vec<usize> = idx.collect();
        for (pair, at) in vals.chunks(2).zip(idx.chunks(2)) {
            let (src, dst) = (abs(pair[0])?, Some(abs(pair[1])?));
            let spec = if ro {
                MountSpec::RoBind {
                    src,
                    dst,
                    optional: false,
                    noexec: false,
                }
            } else {
                MountSpec::Bind {
                    src,
                    dst,
                    optional: false,
                    noexec: false,
                }
            };
            all.push((at[0], spec));
        }
    }
    if let (Some(vals), Some(idx)) = (m.get_many::<String>("tmpfs"), m.indices_of("tmpfs")) {
        for (dst, at) in vals.zip(idx) {
            all.push((
                at,
                MountSpec::Tmpfs {
                    dst: abs(dst)?,
                    size: None,
                    mode: None,
                    noexec: false,
                },
            ));
        }
    }
    all.sort_by_key(|(i, _)| *i);
    Ok(all.into_iter().map(|(_, s)| s).collect())
}

fn main() -> ExitCode {
    // Who started us, before anything else: `--die-with-parent` checks it is still there.
    let parent = nix::unistd::getppid();
    let matches = Cli::command().get_matches();
    let mut cli = match Cli::from_arg_matches(&matches) {
        Ok(c) => c,
        Err(e) => e.exit(),
    };
    let extra_mounts = match cli_mounts(&matches) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("sandbox-run: {e}");
            return ExitCode::from(2);
        }
    };
    cli.ro_bind.clear();
    cli.bind.clear();
    cli.tmpfs.clear();
    init_logging(cli.verbose);
    if let Some(Sub::Check { cleanup, json }) = cli.sub {
        if cleanup {
            let code = self::cleanup(json);
            if code != 0 {
                return ExitCode::from(code);
            }
        }
        let report = sandbox_runner::check::Report::gather();
        // A closed stdout (`check | head`) is not an error worth a panic.
        if json {
            let text = serde_json::to_string_pretty(&report.to_json()).unwrap_or_default();
            let _ = writeln!(std::io::stdout(), "{text}");
        } else {
            let _ = write!(std::io::stdout(), "{report}");
        }
        return if report.default_profile_runs() {
            ExitCode::SUCCESS
        } else {
            ExitCode::from(1)
        };
    }
    match cli.sub {
        Some(Sub::Ps { json }) => return ps(json),
        Some(Sub::Kill { ref id }) => return kill(id),
        Some(Sub::Completions { shell }) => {
            // Rendered into memory first: clap_complete panics on a write error, and a reader
            // that stops early (`| head`) is no reason to panic.
            let mut cmd = Cli::command();
            let mut out = Vec::new();
            clap_complete::generate(shell, &mut cmd, "sandbox-run", &mut out);
            let _ = std::io::stdout().write_all(&out);
            return ExitCode::SUCCESS;
        }
        Some(Sub::Man) => {
            let mut out = Vec::new();
            let man = clap_mangen::Man::new(Cli::command());
            return match man.render(&mut out) {
                Ok(()) => {
                    let _ = std::io::stdout().write_all(&out);
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("sandbox-run: rendering the man page: {e}");
                    ExitCode::from(1)
                }
            };
        }
        _ => {}
    }
    if cli.command.is_empty() {
        eprintln!(
            "sandbox-run: no program given\nusage: sandbox-run [OPTIONS] -- PROGRAM [ARGS...]"
        );
        return ExitCode::from(2);
    }
    if !cli.detach {
        // The sealed init, the spawner thread and the reaper (a process of its own, about
        // half a millisecond to start) come up on a thread of their own while this one
        // builds the runtime, loads the profile and prepares the start; the start waits
        // for whatever is not up yet when it needs it, so the reaper still runs before the
        // first cgroup of the sandbox exists. (Detached sandboxes have no reaper.)
        std::thread::Builder::new()
            .name("prewarm".into())
            .stack_size(128 * 1024)
            .spawn(SandboxRunner::prewarm_single)
            .ok();
    }
    let code = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt.block_on(run(cli, extra_mounts, parent)),
        Err(e) => {
            eprintln!("sandbox-run: cannot start the async runtime: {e}");
            125
        }
    };
    ExitCode::from(code as u8)
}

async fn run(cli: Cli, extra_mounts: Vec<MountSpec>, parent: nix::unistd::Pid) -> i32 {
    let mut profile = match Profile::load(&cli.profile) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("sandbox-run: {e}");
            return 125;
        }
    };
    profile.mount.extend(extra_mounts);
    if let Some(m) = cli.memory {
        profile.limits.memory = Some(m);
    }
    if let Some(n) = cli.pids {
        profile.limits.pids = Some(n);
    }
    if let Some(c) = cli.cpus {
        profile.limits.cpus = Some(c);
    }
    if let Some(t) = cli.timeout {
        profile.limits.timeout = Some(t);
    }
    profile.network.allow.extend(cli.allow_net);
    let diagnose_json = cli.diagnose_json.clone();
    for (k, v) in cli.env {
        profile.env.set.insert(k, v);
    }
    if let Some(h) = cli.hostname {
        profile.hostname = h;
    }
    if let Some(d) = cli.chdir {
        profile.cwd = d;
    }
    match cli.stdin.as_deref() {
        Some("null") => profile.stdin = StdinMode::Null,
        Some("inherit") => profile.stdin = StdinMode::Inherit,
        _ => {}
    }
    if profile.stdin == StdinMode::Pipe {
        // Nothing in the CLI writes to a stdin pipe: the caller's stdin is the input.
        profile.stdin = StdinMode::Inherit;
    }
    if cli.detach {
        profile.detach = true;
        profile.stdin = StdinMode::Null;
    }
    if profile.detach {
        if let Some(t) = profile.limits.timeout.take() {
            tracing::warn!(
                "the profile's timeout ({}) does not apply to a detached sandbox: no host \
                 stays to time it",
                sandbox_runner::profile::format_duration(t.0)
            );
        }
    }
    if cli.die_with_parent {
        profile.die_with_parent = true;
    }
    if profile.die_with_parent && !profile.detach {
        // SIGKILL when the parent dies; our sandboxes then die with us (their own death
        // signal) and our reaper removes what they leave. A parent already gone by now
        // sends no signal: then we stop here.
        // SAFETY: plain prctl on this process.
        let r = unsafe {
            libc::prctl(
                libc::PR_SET_PDEATHSIG,
                libc::SIGKILL as libc::c_ulong,
                0,
                0,
                0,
            )
        };
        if r != 0 {
            eprintln!(
                "sandbox-run: die_with_parent: prctl(PR_SET_PDEATHSIG): {}",
                std::io::Error::last_os_error()
            );
            return 125;
        }
        if nix::unistd::getppid() != parent {
            eprintln!("sandbox-run: die_with_parent: the process that started sandbox-run is gone");
            return 125;
        }
    }
    if cli.rootless {
        profile.rootless = sandbox_runner::profile::RootlessMode::Always;
    }
    let (program, args) = cli.command.split_first().expect("checked non-empty");
    let runner = match SandboxRunner::new(profile, program, args.to_vec()) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("sandbox-run: {e}");
            return e.exit_code();
        }
    };
    if cli.detach {
        let dir = sandbox_runner::state::dir_of(runner.id());
        let mut runner = runner
            .with_stdout(Stdio::File(dir.join("stdout")))
            .with_stderr(Stdio::File(dir.join("stderr")));
        return match runner.start().await {
            Ok(()) => {
                println!("{}", runner.id());
                0
            }
            Err(e) => {
                eprintln!("sandbox-run: {e}");
                e.exit_code()
            }
        };
    }
    // With a socket directory, stdout carries a go-plugin handshake whose address must be
    // rewritten for the host; otherwise the plugin writes straight to our stdout.
    let rewrite = runner.profile().sockets.enabled;
    let mut runner = runner
        .with_stdout(if rewrite { Stdio::Pipe } else { Stdio::Inherit })
        .with_stderr(Stdio::Inherit);

    // Install the handlers before the start, so no signal sent meanwhile is lost.
    let mut streams = Vec::new();
    for sig in FORWARDED {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::from_raw(sig)) {
            Ok(s) => streams.push((sig, s)),
            Err(e) => {
                eprintln!("sandbox-run: cannot handle signal {sig}: {e}");
                return 125;
            }
        }
    }
    if let Err(e) = runner.start().await {
        eprintln!("sandbox-run: {e}");
        return e.exit_code();
    }
    let out = runner.stdout();
    let runner = Arc::new(runner);
    let mut forward = out.map(|o| tokio::spawn(forward_stdout(o, runner.clone())));
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    for (sig, mut s) in streams {
        let tx = tx.clone();
        tokio::spawn(async move {
            while s.recv().await.is_some() {
                if tx.send(sig).is_err() {
                    break;
                }
            }
        });
    }
    let wait = runner.wait();
    tokio::pin!(wait);
    loop {
        tokio::select! {
            res = &mut wait => {
                // Every byte the plugin wrote reaches our stdout before we exit.
                let mut refused = false;
                if let Some(f) = forward.take() {
                    match f.await {
                        Ok(Err(RelayError::Refused(e))) => {
                            eprintln!("sandbox-run: {e}");
                            refused = true;
                        }
                        Ok(Err(RelayError::Io(e))) => eprintln!("sandbox-run: {e}"),
                        _ => {}
                    }
                }
                let d = runner.diagnosis();
                if let Some(p) = &diagnose_json {
                    let json = serde_json::to_vec_pretty(&d).unwrap_or_default();
                    if let Err(e) = std::fs::write(p, json) {
                        eprintln!("sandbox-run: writing {}: {e}", p.display());
                    }
                }
                return match res {
                    // Stopped at its time limit: like timeout(1).
                    Ok(_) if runner.timed_out() => {
                        eprintln!("sandbox-run: {}", d.text);
                        EXIT_TIMEOUT
                    }
                    Ok(status) => {
                        if !status.success() {
                            eprintln!("sandbox-run: {}", d.text);
                        }
                        if refused {
                            125
                        } else {
                            status.code()
                        }
                    }
                    Err(e) => {
                        eprintln!("sandbox-run: {e}");
                        125
                    }
                };
            }
            Some(sig) = rx.recv() => {
                if let Err(e) = runner.signal(sig) {
                    eprintln!("sandbox-run: forwarding signal {sig}: {e}");
                }
            }
            Some(res) = async { match forward.as_mut() { Some(f) => Some(f.await), None => None } } => {
                forward = None;
                // A first line that is not a rewritten handshake: stop the plugin rather than
                // let the host connect anywhere else. A broken relay stops it too.
                if let Ok(Err(RelayError::Refused(e) | RelayError::Io(e))) = res {
                    eprintln!("sandbox-run: {e}");
                    let _ = runner.kill().await;
                    return 125;
                }
            }
        }
    }
}

/// How the stdout relay ended badly.
enum RelayError {
    /// The first line was not a handshake that could be rewritten: nothing was forwarded,
    /// and the plugin must be stopped (exit 125).
    Refused(String),
    /// Reading the plugin's stdout or writing ours failed after the handshake.
    Io(String),
}

/// Copies the plugin's stdout to ours, rewriting the address of the go-plugin handshake
/// (its first line) to the host path; every other byte passes unchanged.
///
/// The first line reaches our stdout only as a handshake that was parsed, translated and
/// rewritten ([`handshake::read_for_host`]); anything else (not UTF-8, no newline before end
/// of file, too long, not a handshake, a refused address) is [`RelayError::Refused`] with
/// nothing written, since the host would read whatever comes first as the handshake.
async fn forward_stdout(out: PipeReader, runner: Arc<SandboxRunner>) -> Result<(), RelayError> {
    let mut r = tokio::io::BufReader::new(out);
    let mut w = tokio::io::stdout();
    let io = |e: std::io::Error| RelayError::Io(format!("writing stdout: {e}"));
    let host = match handshake::read_for_host(&mut r, Duration::MAX, &*runner).await {
        Ok(host) => host,
        // Nothing at all on stdout: nothing to refuse; the exit status tells the rest.
        Err(HandshakeError::Eof { partial }) if partial.is_empty() => return Ok(()),
        Err(e) => {
            return Err(RelayError::Refused(format!(
                "refusing the plugin's handshake (its first line on stdout) and stopping it: {e}"
            )))
        }
    };
    w.write_all(&host.line).await.map_err(io)?;
    // What the reader holds beyond the handshake line goes out as is.
    let rest = r.buffer().to_vec();
    w.write_all(&rest).await.map_err(io)?;
    w.flush().await.map_err(io)?;
    // The rest passes through unchanged: read here, written to fd 1 by a thread of its own
    // (no line buffering, no blocking-pool hop per write, reading and writing overlap).
    let fd1 = nix::unistd::dup(std::io::stdout()).map_err(|e| io(e.into()))?;
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<u8>>(8);
    let writer = std::thread::Builder::new()
        .name("stdout-relay".into())
        .spawn(move || -> std::io::Result<()> {
            let mut out = std::fs::File::from(fd1);
            while let Some(chunk) = rx.blocking_recv() {
                std::io::Write::write_all(&mut out, &chunk)?;
            }
            Ok(())
        })
        .map_err(io)?;
    let mut inner = r.into_inner();
    let mut buf = vec![0u8; RELAY_CHUNK];
    let read_result = loop {
        match tokio::io::AsyncReadExt::read(&mut inner, &mut buf).await {
            Ok(0) => break Ok(()),
            Ok(n) => {
                if tx.send(buf[..n].to_vec()).await.is_err() {
                    // The writer stopped on an error: it says which below.
                    break Ok(());
                }
            }
            Err(e) => break Err(RelayError::Io(format!("reading the plugin's stdout: {e}"))),
        }
    };
    drop(tx);
    let written = tokio::task::spawn_blocking(move || writer.join())
        .await
        .map_err(|e| RelayError::Io(format!("stdout relay: {e}")))?
        .map_err(|_| RelayError::Io("stdout relay thread panicked".to_string()))?;
    written.map_err(io)?;
    read_result
}

/// The exit status when the program was stopped at its time limit, as timeout(1) uses.
const EXIT_TIMEOUT: i32 = 124;

/// The read size of the stdout relay after the handshake line.
const RELAY_CHUNK: usize = 256 * 1024;

/// `sandbox-run ps`: one line per detached sandbox, or (`--json`) one JSON array of objects
/// with the fields `id`, `pid`, `state`, `program`, `start_time`, `cgroups` and `error`.
fn ps(json: bool) -> ExitCode {
    let mut out = std::io::stdout();
    if json {
        let (removed, failed) = sandbox_runner::state::reclaim_stale();
        for id in removed {
            eprintln!("cleanup: removed the state left by a dead host for {id}");
        }
        for (id, e) in failed {
            eprintln!("sandbox-run: cleanup of {id}: {e}");
        }
        let list: Vec<serde_json::Value> = sandbox_runner::state::SandboxState::list()
            .into_iter()
            .map(|(id, st)| match st {
                Ok(s) => serde_json::json!({
                    "id": id,
                    "pid": s.init_pid,
                    "state": if s.open_init().is_ok() { "running" } else { "stale" },
                    "program": s.program,
                    "start_time": s.created,
                    "cgroups": s.cgroups,
                    "error": null,
                }),
                Err(e) => serde_json::json!({
                    "id": id,
                    "pid": null,
                    "state": "broken",
                    "program": null,
                    "start_time": null,
                    "cgroups": [],
                    "error": e.to_string(),
                }),
            })
            .collect();
        let text = serde_json::to_string_pretty(&list).unwrap_or_default();
        let _ = writeln!(out, "{text}");
        return ExitCode::SUCCESS;
    }
    let _ = writeln!(out, "{:<28}  {:>8}  {:<8}  PROGRAM", "ID", "PID", "STATE");
    let (removed, failed) = sandbox_runner::state::reclaim_stale();
    for id in removed {
        println!("cleanup: removed the state left by a dead host for {id}");
    }
    for (id, e) in failed {
        eprintln!("sandbox-run: cleanup of {id}: {e}");
    }
    for (id, st) in sandbox_runner::state::SandboxState::list() {
        let line = match st {
            Ok(s) => {
                let state = match s.open_init() {
                    Ok(_) => "running".to_string(),
                    Err(_) => "stale".to_string(),
                };
                format!("{:<28}  {:>8}  {:<8}  {}", id, s.init_pid, state, s.program)
            }
            Err(e) => format!("{id:<28}  {:>8}  {:<8}  ({e})", "-", "broken"),
        };
        let _ = writeln!(out, "{line}");
    }
    ExitCode::SUCCESS
}

/// `sandbox-run kill ID`.
fn kill(id: &str) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("sandbox-run: cannot start the async runtime: {e}");
            return ExitCode::from(125);
        }
    };
    rt.block_on(async {
        let r = match SandboxRunner::reattach(id) {
            Ok(r) => r,
            Err(e) => {
                eprintln!("sandbox-run: {e}");
                return ExitCode::from(1);
            }
        };
        match r.kill().await {
            Ok(()) => {
                let st = r.wait().await.map(|s| s.to_string()).unwrap_or_default();
                println!("{id}: {st}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("sandbox-run: {e}");
                ExitCode::from(1)
            }
        }
    })
}

/// `sandbox-run check --cleanup`: reclaims stale cgroups and the state of dead detached
/// sandboxes. Returns the exit code (0, or 1 when something could not be reclaimed). With
/// `--json` what it did goes to stderr, so stdout holds only the JSON object.
fn cleanup(json: bool) -> u8 {
    macro_rules! println {
        ($($t:tt)*) => {
            if json { eprintln!($($t)*) } else { std::println!($($t)*) }
        };
    }
    let mut code = 0;
    match sandbox_runner::cgroup::reclaim_stale() {
        Ok(paths) => {
            for p in paths {
                println!("cleanup: removed stale cgroup {}", p.display());
            }
        }
        Err(e) => {
            eprintln!("sandbox-run: cleanup: {e}");
            code = 1;
        }
    }
    let (removed, failed) = sandbox_runner::state::reclaim_stale();
    for id in removed {
        println!("cleanup: removed the state left by a dead host for {id}");
    }
    for (id, e) in failed {
        eprintln!("sandbox-run: cleanup: could not remove what a dead host left for {id}: {e}");
        code = 1;
    }
    let (freed, err) = sandbox_runner::idrange::reclaim_stale();
    for slot in freed {
        println!("cleanup: freed the host id block {slot} of a sandbox that is gone");
    }
    if let Some(e) = err {
        eprintln!("sandbox-run: cleanup: {e}");
        code = 1;
    }
    for (id, st) in sandbox_runner::state::SandboxState::list() {
        let stale = match st {
            Ok(s) => s.open_init().is_err(),
            Err(_) => true,
        };
        if stale {
            match sandbox_runner::state::remove_dir(&id) {
                Ok(()) => println!("cleanup: removed the state of dead sandbox {id}"),
                Err(e) => {
                    eprintln!("sandbox-run: cleanup: {e}");
                    code = 1;
                }
            }
        }
    }
    code
}

/// Sends the library's tracing events and spans to stderr: warnings by default, the start
/// phases with their durations at `-v`, debug events at `-vv`, everything at `-vvv`;
/// `SANDBOX_RUN_LOG` (an env-filter such as `debug` or `sandbox_runner=info`) overrides `-v`.
fn init_logging(verbose: u8) {
    use tracing_subscriber::layer::SubscriberExt;
    let level = match verbose {
        0 => "warn",
        1 => "info",
        2 => "debug",
        _ => "trace",
    };
    let filter = match std::env::var("SANDBOX_RUN_LOG") {
        Ok(v) if !v.trim().is_empty() => match tracing_subscriber::EnvFilter::try_new(&v) {
            Ok(f) => f,
            Err(e) => {
                eprintln!("sandbox-run: ignoring SANDBOX_RUN_LOG={v:?}: {e}");
                tracing_subscriber::EnvFilter::new(level)
            }
        },
        _ => tracing_subscriber::EnvFilter::new(level),
    };
    let subscriber = tracing_subscriber::registry()
        .with(filter)
        .with(log::StderrLog);
    let _ = tracing::subscriber::set_global_default(subscriber);
}

/// The stderr log of `sandbox-run`: one line per event, and one line per span when it
/// closes, with its wall-clock duration (`sandbox-run: start/clone took 1.274 ms`).
mod log {
    use std::fmt::Write as _;
    use std::io::Write as _;
    use std::time::Instant;
    use tracing::field::{Field, Visit};
    use tracing::span::{Attributes, Id, Record};
    use tracing::{Event, Level, Subscriber};
    use tracing_subscriber::layer::{Context, Layer};
    use tracing_subscriber::registry::LookupSpan;

    /// The layer.
    pub struct StderrLog;

    /// When a span was created.
    struct Opened(Instant);

    /// A span's fields, as ` key=value` text.
    #[derive(Default)]
    struct Fields(String);

    /// Collects the message and the fields of an event or span.
    #[derive(Default)]
    struct Text {
        message: String,
        fields: String,
    }

    impl Visit for Text {
        fn record_str(&mut self, field: &Field, value: &str) {
            if field.name() == "message" {
                self.message.push_str(value);
            } else {
                let _ = write!(self.fields, " {}={value}", field.name());
            }
        }

        fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
            if field.name() == "message" {
                let _ = write!(self.message, "{value:?}");
            } else {
                let _ = write!(self.fields, " {}={value:?}", field.name());
            }
        }
    }

    /// `start/clone`: the names of a span's ancestors and its own, from the root.
    fn path<S: for<'a> LookupSpan<'a>>(
        span: &tracing_subscriber::registry::SpanRef<'_, S>,
    ) -> String {
        let names: Vec<&str> = span.scope().from_root().map(|s| s.name()).collect();
        names.join("/")
    }

    fn emit(line: &str) {
        // A closed stderr is not worth a panic.
        let _ = writeln!(std::io::stderr().lock(), "sandbox-run: {line}");
    }

    impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for StderrLog {
        fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
            let Some(span) = ctx.span(id) else { return };
            let mut text = Text::default();
            attrs.record(&mut text);
            let mut ext = span.extensions_mut();
            ext.insert(Opened(Instant::now()));
            ext.insert(Fields(text.fields));
        }

        fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
            let Some(span) = ctx.span(id) else { return };
            let mut text = Text::default();
            values.record(&mut text);
            let mut ext = span.extensions_mut();
            if let Some(f) = ext.get_mut::<Fields>() {
                f.0.push_str(&text.fields);
            }
        }

        fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
            let mut text = Text::default();
            event.record(&mut text);
            let level = match *event.metadata().level() {
                Level::ERROR => "error: ",
                Level::WARN => "warning: ",
                Level::INFO => "",
                Level::DEBUG => "debug: ",
                Level::TRACE => "trace: ",
            };
            let scope = ctx
                .event_span(event)
                .map(|s| format!(" (in {})", path(&s)))
                .unwrap_or_default();
            emit(&format!("{level}{}{}{scope}", text.message, text.fields));
        }

        fn on_close(&self, id: Id, ctx: Context<'_, S>) {
            let Some(span) = ctx.span(&id) else { return };
            let ext = span.extensions();
            let Some(opened) = ext.get::<Opened>() else {
                return;
            };
            let fields = ext.get::<Fields>().map(|f| f.0.as_str()).unwrap_or("");
            let ms = opened.0.elapsed().as_secs_f64() * 1000.0;
            emit(&format!("{}{fields} took {ms:.3} ms", path(&span)));
        }
    }
}
