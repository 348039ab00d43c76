//! Throughput of the plugin's stdout: 1 GiB written by the plugin, read by the host, seven
//! ways side by side.
//!
//! The writer is `head -c 1073741824 /dev/zero` (the `head` found on `PATH`; the default
//! profile's minimal `/dev` has `zero`), or with `THROUGHPUT_WRITER=dd`
//! `dd if=/dev/zero bs=1M count=1024 iflag=fullblock status=none` (1 MiB writes instead of
//! head's 4 and 8 KiB ones); the same program in every way:
//!
//! 1. `plain pipe`: `tokio::process::Command` with stdout piped, the floor.
//! 2. `plain pipe, writer in its own session`: the same with `setsid()` in the child before
//!    `execve`, as the sandbox does (see below).
//! 3. `library`: in process, `SandboxRunner::new` + `Runner::start` with the built-in `default`
//!    profile (loaded once), stdin and stderr on `/dev/null`, stdout a [`Stdio::Pipe`] read
//!    through the reader `Runner::stdout` hands out.
//! 4. `library, Stdio::Inherit`: the same with stdout a [`Stdio::Inherit`] while the bench's
//!    own fd 1 is a pipe (swapped in for the start only): the plugin writes into a pipe of the
//!    runner's, whose relay thread splices it into the bench's pipe (src/stdio). Ways 3 and 4
//!    side by side are the relay against a direct pipe, the same sandbox otherwise.
//! 5. `sandbox-run CLI`: `target/release/sandbox-run --stdin null -- head -c ... /dev/zero`
//!    with its stdout piped to the bench (the built binary next to this bench's directory);
//!    its stdout is relayed as in way 4.
//! 6. `sandbox-run CLI, --profile go-plugin`: the same with the `go-plugin` profile, whose
//!    stdout carries the go-plugin handshake: the CLI reads the plugin's stdout through a
//!    pipe, rewrites the handshake line (here there is none) and copies every other byte to
//!    its own stdout. Only with `THROUGHPUT_GOPLUGIN=1`: since the CLI passes a first line
//!    on only as a handshake it parsed and rewrote, it refuses a stdout of zeros (exit 125),
//!    so this way measures nothing until its writer starts with a real handshake.
//! 7. `bwrap`: `bwrap --unshare-all --ro-bind / / --dev /dev --proc /proc head ...` with its
//!    stdout piped, only when `bwrap` is on `PATH`.
//!
//! Every way is read by the same loop: `AsyncReadExt::read` into one 128 KiB buffer
//! (`THROUGHPUT_BUF_KIB`), counting bytes, on a two-worker multi-thread tokio runtime. A run
//! must deliver exactly `THROUGHPUT_BYTES` (default 1 GiB) and exit with status 0, or the
//! bench aborts. Each way is warmed up once, then `THROUGHPUT_RUNS` (default 5) runs of each
//! are interleaved round-robin.
//!
//! Two rates per run: *streaming*, from the first byte read to end of file (the pipe's own
//! throughput, the figure the 0.9× target is about), and *end to end*, from just before the
//! spawn to end of file (start-up included). It prints a markdown table of the medians and
//! their ratios to the plain pipe's (and, for streaming, to way 2's), and the CPU time the
//! bench process itself used per GiB (user + system, `getrusage(RUSAGE_SELF)`: the reading
//! loop in every way, plus the runner's relay threads in way 4).
//!
//! Way 2 puts the writer in a session of its own, as the sandbox does (the profile's
//! `new_session`), which with `kernel.sched_autogroup_enabled = 1` also gives it a scheduler
//! autogroup of its own: it separates that effect from the rest of the sandbox. On a shared
//! machine the runs vary by ±20%: compare runs made under similar load (the load averages
//! are printed).
//!
//! Run it (as root) from the repository root with `cargo build --release && cargo bench
//! --bench throughput`; without the release `sandbox-run` binary the CLI ways are skipped.

mod common;
use common::{cli_binary, find_on_path, loadavg, machine};
use std::path::PathBuf;
use std::process::{exit, Stdio as ProcStdio};
use std::time::{Duration, Instant};

use sandbox_runner::{AttachedRunner, Profile, Runner, SandboxRunner, Stdio};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::Command;

/// Default bytes per run: 1 GiB.
const DEFAULT_BYTES: u64 = 1 << 30;
/// Default timed runs per way.
const DEFAULT_RUNS: usize = 5;
/// Default read buffer, in KiB.
const DEFAULT_BUF_KIB: usize = 128;

/// One way of running the writer.
enum Way {
    Plain,
    PlainSetsid,
    Library(Box<Profile>),
    LibraryInherit(Box<Profile>),
    Cli(PathBuf),
    CliGoPlugin(PathBuf),
    Bwrap(PathBuf),
}

impl Way {
    fn label(&self) -> &'static str {
        match self {
            Way::Plain => "plain pipe (tokio::process)",
            Way::PlainSetsid => "plain pipe, writer in its own session (setsid)",
            Way::Library(_) => "library, stdout a Stdio::Pipe (direct)",
            Way::LibraryInherit(_) => "library, stdout Stdio::Inherit (relayed by splice)",
            Way::Cli(_) => "sandbox-run CLI (relayed)",
            Way::CliGoPlugin(_) => "sandbox-run CLI, --profile go-plugin",
            Way::Bwrap(_) => "bwrap",
        }
    }
}

struct Setup {
    /// The writer: a program and its arguments.
    program: PathBuf,
    args: Vec<String>,
    bytes: u64,
    buf: usize,
}

impl Setup {
    fn command_line(&self) -> String {
        let mut s = self.program.display().to_string();
        for a in &self.args {
            s.push(' ');
            s.push_str(a);
        }
        s
    }
}

/// One run's timings.
struct Sample {
    streaming: Duration,
    end_to_end: Duration,
    /// CPU time of the bench process (all its threads) during the run.
    cpu: Duration,
}

/// User + system CPU time of this process so far, all threads.
fn cpu_self() -> Duration {
    // SAFETY: getrusage fills the struct it is given.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: RUSAGE_SELF with a valid pointer.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

/// Starts `r` with its stdout a [`Stdio::Inherit`] of a pipe that this process's fd 1 is
/// only while the runner starts (the relay keeps its own copy); returns the pipe's read end.
async fn start_on_fd1_pipe(r: &mut SandboxRunner) -> Result<std::os::fd::OwnedFd, String> {
    use std::os::fd::AsRawFd;
    let (rd, wr) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
        .map_err(|e| format!("pipe: {e}"))?;
    let saved = rustix::io::fcntl_dupfd_cloexec(std::io::stdout(), 3)
        .map_err(|e| format!("dup of fd 1: {e}"))?;
    // SAFETY: fds 1 and the pipe's write end are open; fd 1 is given back below.
    if unsafe { libc::dup2(wr.as_raw_fd(), 1) } == -1 {
        return Err("dup2 onto fd 1".into());
    }
    let res = r.start().await;
    // SAFETY: as above, the saved copy of fd 1 goes back.
    unsafe { libc::dup2(saved.as_raw_fd(), 1) };
    drop((saved, wr));
    res.map_err(|e| format!("start: {e}"))?;
    Ok(rd)
}

/// Reads `r` to its end; returns the byte count and when the first byte arrived.
async fn drain(
    r: &mut (dyn AsyncRead + Unpin + Send),
    buf: &mut [u8],
) -> std::io::Result<(u64, Option<Instant>)> {
    let mut total = 0u64;
    let mut first = None;
    loop {
        let n = r.read(buf).await?;
        if n == 0 {
            return Ok((total, first));
        }
        if first.is_none() {
            first = Some(Instant::now());
        }
        total += n as u64;
    }
}

async fn run_once(way: &Way, s: &Setup, buf: &mut [u8]) -> Result<Sample, String> {
    let t0 = Instant::now();
    let cpu0 = cpu_self();
    let (got, first) = match way {
        Way::Library(profile) | Way::LibraryInherit(profile) => {
            let inherit = matches!(way, Way::LibraryInherit(_));
            let mut r = SandboxRunner::new((**profile).clone(), &s.program, &s.args)
                .map_err(|e| format!("SandboxRunner::new: {e}"))?
                .with_stdin(Stdio::Null)
                .with_stdout(if inherit { Stdio::Inherit } else { Stdio::Pipe })
                .with_stderr(Stdio::Null);
            let mut out: Box<dyn AsyncRead + Unpin + Send> = if inherit {
                let rd = start_on_fd1_pipe(&mut r).await?;
                Box::new(
                    tokio::net::unix::pipe::Receiver::from_owned_fd(rd)
                        .map_err(|e| format!("the relayed pipe: {e}"))?,
                )
            } else {
                r.start().await.map_err(|e| format!("start: {e}"))?;
                r.stdout().ok_or("no stdout reader")?
            };
            let res = drain(&mut *out, buf)
                .await
                .map_err(|e| format!("read: {e}"))?;
            let end = Instant::now();
            let status = r.wait().await.map_err(|e| format!("wait: {e}"))?;
            if !status.success() {
                return Err(format!("the writer in the sandbox ended with {status}"));
            }
            (res.0, res.1.map(|f| (f, end)))
        }
        _ => {
            let mut cmd = match way {
                Way::Plain => Command::new(&s.program),
                Way::PlainSetsid => {
                    let mut c = Command::new(&s.program);
                    // SAFETY: setsid is async-signal-safe and touches no memory.
                    unsafe {
                        c.pre_exec(|| {
                            if libc::setsid() == -1 {
                                return Err(std::io::Error::last_os_error());
                            }
                            Ok(())
                        });
                    }
                    c
                }
                Way::Cli(bin) => {
                    let mut c = Command::new(bin);
                    c.args(["--stdin", "null", "--"]).arg(&s.program);
                    c
                }
                Way::CliGoPlugin(bin) => {
                    let mut c = Command::new(bin);
                    c.args(["--profile", "go-plugin", "--stdin", "null", "--"])
                        .arg(&s.program);
                    c
                }
                Way::Bwrap(bwrap) => {
                    let mut c = Command::new(bwrap);
                    c.args(common::BWRAP_ARGS).arg(&s.program);
                    c
                }
                Way::Library(_) | Way::LibraryInherit(_) => unreachable!(),
            };
            cmd.args(&s.args)
                .stdin(ProcStdio::null())
                .stdout(ProcStdio::piped())
                .stderr(ProcStdio::null())
                .kill_on_drop(true);
            let mut child = cmd
                .spawn()
                .map_err(|e| format!("spawning {:?}: {e}", cmd.as_std().get_program()))?;
            let mut out = child.stdout.take().ok_or("no stdout pipe")?;
            let res = drain(&mut out, buf)
                .await
                .map_err(|e| format!("read: {e}"))?;
            let end = Instant::now();
            let status = child.wait().await.map_err(|e| format!("wait: {e}"))?;
            if !status.success() {
                return Err(format!("{} ended with {status}", way.label()));
            }
            (res.0, res.1.map(|f| (f, end)))
        }
    };
    if got != s.bytes {
        return Err(format!("read {got} bytes, expected {}", s.bytes));
    }
    let (first, end) = first.ok_or("no byte arrived")?;
    Ok(Sample {
        streaming: end - first,
        end_to_end: end - t0,
        cpu: cpu_self() - cpu0,
    })
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn fail(msg: impl AsRef<str>) -> ! {
    eprintln!("bench throughput: {}", msg.as_ref());
    exit(1);
}

fn env_num(name: &str, default: u64) -> u64 {
    common::env_num(name, default).unwrap_or_else(|e| fail(e))
}

async fn bench(runs: usize, s: Setup) {
    let load_before = loadavg();
    let mut ways = vec![Way::Plain, Way::PlainSetsid];
    let mut notes = Vec::new();
    let profile =
        Profile::builtin("default").unwrap_or_else(|e| fail(format!("default profile: {e}")));
    ways.push(Way::Library(Box::new(profile.clone())));
    ways.push(Way::LibraryInherit(Box::new(profile)));
    match cli_binary() {
        Some(p) => {
            ways.push(Way::Cli(p.clone()));
            if std::env::var_os("THROUGHPUT_GOPLUGIN").is_some_and(|v| v == "1") {
                ways.push(Way::CliGoPlugin(p));
            } else {
                notes.push(
                    "note: the go-plugin CLI way is skipped (THROUGHPUT_GOPLUGIN=1 runs it): \
                     its handshake gate refuses a stdout of zeros",
                );
            }
        }
        None => notes.push(
            "note: target/release/sandbox-run is missing; run `cargo build --release` first; \
             the CLI way is skipped",
        ),
    }
    match find_on_path("bwrap") {
        Some(p) => ways.push(Way::Bwrap(p)),
        None => notes.push("note: `bwrap` is not on PATH; the bwrap way is skipped"),
    }
    let mut buf = vec![0u8; s.buf];
    for way in &ways {
        if let Err(e) = run_once(way, &s, &mut buf).await {
            fail(format!("{} (warm-up): {e}", way.label()));
        }
    }
    let mut samples: Vec<Vec<Sample>> = ways.iter().map(|_| Vec::new()).collect();
    for i in 0..runs {
        for (way, out) in ways.iter().zip(samples.iter_mut()) {
            match run_once(way, &s, &mut buf).await {
                Ok(x) => out.push(x),
                Err(e) => fail(format!("{} (run {}): {e}", way.label(), i + 1)),
            }
        }
    }
    let gib = s.bytes as f64 / (1u64 << 30) as f64;
    let rates: Vec<(f64, f64, f64, f64, f64)> = samples
        .iter()
        .map(|v| {
            let mut st: Vec<f64> = v.iter().map(|x| gib / x.streaming.as_secs_f64()).collect();
            let mut e2e: Vec<f64> = v.iter().map(|x| gib / x.end_to_end.as_secs_f64()).collect();
            let mut cpu: Vec<f64> = v.iter().map(|x| x.cpu.as_secs_f64() / gib).collect();
            let min = st.iter().copied().fold(f64::INFINITY, f64::min);
            let max = st.iter().copied().fold(0.0, f64::max);
            (
                median(&mut st),
                min,
                max,
                median(&mut e2e),
                median(&mut cpu),
            )
        })
        .collect();
    // Ways 1 and 2 are always there, in this order.
    let (base_st, base_e2e, setsid_st) = (rates[0].0, rates[0].3, rates[1].0);
    println!();
    println!(
        "stdout throughput: `{}` — {} — {runs} runs per way (+1 warm-up), \
         round-robin, {} KiB reads, tokio multi-thread runtime with 2 workers; every run \
         delivered exactly {} bytes; load average {load_before} before, {} after",
        s.command_line(),
        machine(),
        s.buf / 1024,
        s.bytes,
        loadavg()
    );
    for note in &notes {
        println!("{note}");
    }
    println!();
    println!(
        "| way | streaming median | min | max | ratio to plain pipe | \
         ratio to plain pipe in its own session | end to end median | ratio to plain pipe | \
         bench process CPU per GiB |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (way, (st, min, max, e2e, cpu)) in ways.iter().zip(&rates) {
        println!(
            "| {} | {st:.2} GiB/s | {min:.2} GiB/s | {max:.2} GiB/s | {:.2}× | {:.2}× | \
             {e2e:.2} GiB/s | {:.2}× | {:.0} ms |",
            way.label(),
            st / base_st,
            st / setsid_st,
            e2e / base_e2e,
            cpu * 1000.0,
        );
    }
    // Ways 3 and 4 are always there too: the relay against a direct pipe.
    let (direct, relayed) = (&rates[2], &rates[3]);
    println!();
    println!(
        "relay vs direct (library, same sandbox): streaming {:.2}× ({:.2} vs {:.2} GiB/s), \
         bench process CPU {:+.0} ms per GiB",
        relayed.0 / direct.0,
        relayed.0,
        direct.0,
        (relayed.4 - direct.4) * 1000.0
    );
}

fn main() {
    // `cargo bench` passes `--bench` (and any filter); this bench takes no arguments.
    let runs = env_num("THROUGHPUT_RUNS", DEFAULT_RUNS as u64) as usize;
    let bytes = env_num("THROUGHPUT_BYTES", DEFAULT_BYTES);
    let find =
        |name: &str| find_on_path(name).unwrap_or_else(|| fail(format!("`{name}` is not on PATH")));
    let (program, args) = match std::env::var("THROUGHPUT_WRITER").as_deref() {
        Err(_) | Ok("") | Ok("head") => (
            find("head"),
            vec!["-c".into(), bytes.to_string(), "/dev/zero".into()],
        ),
        Ok("dd") => {
            if bytes % (1 << 20) != 0 {
                fail("THROUGHPUT_WRITER=dd needs THROUGHPUT_BYTES in whole MiB");
            }
            (
                find("dd"),
                vec![
                    "if=/dev/zero".into(),
                    "bs=1M".into(),
                    format!("count={}", bytes >> 20),
                    "iflag=fullblock".into(),
                    "status=none".into(),
                ],
            )
        }
        Ok(other) => fail(format!(
            "THROUGHPUT_WRITER: {other:?} is neither head nor dd"
        )),
    };
    let setup = Setup {
        program,
        args,
        bytes,
        buf: env_num("THROUGHPUT_BUF_KIB", DEFAULT_BUF_KIB as u64) as usize * 1024,
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap_or_else(|e| fail(format!("building the tokio runtime: {e}")));
    rt.block_on(async move {
        if let Err(e) = tokio::spawn(bench(runs, setup)).await {
            fail(format!("the bench task failed: {e}"));
        }
    });
}
