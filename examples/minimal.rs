//! The smallest useful host: run a program in the default sandbox, print what it wrote on
//! stdout, and when it fails, print the diagnosis (how it ended, and why) and exit with
//! its status.
//!
//! ```sh
//! cargo build --examples
//! sudo target/debug/examples/minimal                       # echo, inside the sandbox
//! sudo target/debug/examples/minimal sh -c 'echo hi; exit 3'
//! ```

use sandbox_runner::{AttachedRunner, Profile, Runner, SandboxRunner, Stdio};
use std::io::Write;
use tokio::io::AsyncReadExt;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args_os().skip(1);
    let (program, rest) = match args.next() {
        Some(p) => (p, args.collect::<Vec<_>>()),
        None => ("echo".into(), vec!["hello from the sandbox".into()]),
    };
    let profile = Profile::builtin("default")?;
    // stdout is a pipe read below; stderr goes straight to ours.
    let mut plugin = SandboxRunner::new(profile, &program, rest)?.with_stderr(Stdio::Inherit);
    if let Err(e) = plugin.start().await {
        eprintln!("cannot start {}: {e}", program.to_string_lossy());
        std::process::exit(e.exit_code());
    }
    let mut out = Vec::new();
    plugin
        .stdout()
        .expect("stdout is a pipe")
        .read_to_end(&mut out)
        .await?;
    let status = plugin.wait().await?;
    std::io::stdout().write_all(&out)?;
    if !status.success() {
        eprintln!("{}", plugin.diagnose().await);
        std::process::exit(status.code());
    }
    Ok(())
}
