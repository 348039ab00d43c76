//! Limits, and what the diagnosis says about each: a memory hog under a 32 MiB limit (the
//! OOM killer), a fork loop under a 16-process limit (the pids controller) and a sleeper
//! under a 1 s wall-clock limit (`[limits] timeout`).
//!
//! ```sh
//! cargo build --examples
//! sudo target/debug/examples/limits
//! ```

use std::time::Duration;

use sandbox_runner::profile::{Grace, Size, Timeout};
use sandbox_runner::{AttachedRunner, Profile, Runner, SandboxRunner, Stdio};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    // `tail` keeps the whole of an endless line in memory.
    let mut oom = Profile::builtin("default")?;
    oom.limits.memory = Some(Size(32 << 20));
    run("memory 32M", oom, "tail", &["/dev/zero"]).await?;

    let mut pids = Profile::builtin("default")?;
    pids.limits.pids = Some(16);
    run(
        "pids 16",
        pids,
        "sh",
        &["-c", "for i in $(seq 64); do sleep 5 & done; wait"],
    )
    .await?;

    let mut slow = Profile::builtin("default")?;
    slow.limits.timeout = Some(Timeout(Duration::from_secs(1)));
    slow.kill_grace = Grace(Duration::from_millis(500));
    run("timeout 1s", slow, "sleep", &["60"]).await?;
    Ok(())
}

/// Runs `program` under `profile`, waits for it and prints its diagnosis, text and JSON.
async fn run(
    what: &str,
    profile: Profile,
    program: &str,
    args: &[&str],
) -> Result<(), Box<dyn std::error::Error>> {
    let mut r = SandboxRunner::new(profile, program, args.iter().copied())?
        .with_stdout(Stdio::Null)
        .with_stderr(Stdio::Null);
    r.start().await?;
    let status = r.wait().await?;
    let d = r.diagnosis();
    println!("{what}: {status}");
    println!("  diagnose(): {}", r.diagnose().await);
    println!(
        "  JSON: timed_out={} time_limit_ms={:?} oom_kill={:?} pids_max={:?}",
        d.timed_out,
        d.time_limit_ms,
        d.counters.as_ref().and_then(|c| c.oom_kill),
        d.counters.as_ref().and_then(|c| c.pids_max),
    );
    Ok(())
}
