//! Helpers shared by the benches: where the binaries are, and what machine this is.
#![allow(dead_code)]

use std::path::PathBuf;

/// The first executable file called `name` in a directory of `PATH`.
pub fn find_on_path(name: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| {
            p.metadata()
                .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
                .unwrap_or(false)
        })
}

/// `target/<profile>/sandbox-run`, next to the `deps/` directory this bench runs from.
pub fn cli_binary() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let bin = exe.parent()?.parent()?.join("sandbox-run");
    bin.is_file().then_some(bin)
}

/// Kernel release, CPU count and CPU model of this machine.
pub fn machine() -> String {
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .or_else(|_| {
            std::process::Command::new("uname")
                .arg("-r")
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        })
        .unwrap_or_else(|_| "unknown".into());
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get().to_string())
        .unwrap_or_else(|_| "?".into());
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    format!("Linux {kernel}, {cpus} CPUs, {model}")
}

/// The 1, 5 and 15 minute load averages (`/proc/loadavg`): other work on the machine shows
/// in the wall times.
pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

/// The arguments that `bwrap` is timed with: every namespace, the host's root read-only, a
/// fresh /dev and /proc, then `/bin/true` (or what follows).
pub const BWRAP_ARGS: [&str; 8] = [
    "--unshare-all",
    "--ro-bind",
    "/",
    "/",
    "--dev",
    "/dev",
    "--proc",
    "/proc",
];

/// The positive whole number in the environment variable `name`, else `default`.
pub fn env_num(name: &str, default: u64) -> Result<u64, String> {
    match std::env::var(name) {
        Ok(v) => match v.trim().parse::<u64>() {
            Ok(n) if n > 0 => Ok(n),
            _ => Err(format!("{name} must be a positive integer, not {v:?}")),
        },
        Err(_) => Ok(default),
    }
}

/// Runs `fut` as a task on a two-worker multi-thread tokio runtime (as a host would run
/// it, not on the blocking main thread).
pub fn run_on_two_workers<F>(fut: F) -> Result<(), String>
where
    F: std::future::Future<Output = ()> + Send + 'static,
{
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| format!("building the tokio runtime: {e}"))?;
    rt.block_on(async move { tokio::spawn(fut).await })
        .map_err(|e| format!("the bench task failed: {e}"))
}
