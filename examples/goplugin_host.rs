//! A go-plugin style host in Rust: it starts a plugin in a sandbox with the `go-plugin`
//! profile, reads its handshake line with `goplugin::start_and_handshake` (which translates
//! the socket path the plugin announces into a host path it cannot redirect), connects,
//! makes one request and stops the plugin.
//!
//! The transport is a plain line-based request/response over the unix socket, not gRPC:
//! the handshake, socket directory and address translation are exactly go-plugin's, and
//! the example needs no tonic/protobuf stack. This same binary is the plugin: run with
//! `plugin` and the magic cookie in its environment, it serves the socket.
//!
//! ```sh
//! cargo build --examples
//! sudo target/debug/examples/goplugin_host
//! ```

use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};

use sandbox_runner::goplugin::start_and_handshake;
use sandbox_runner::profile::{EnvName, EnvValue};
use sandbox_runner::{AttachedRunner, Profile, SandboxRunner, Stdio};

/// go-plugin's magic cookie: the plugin refuses to run without it.
const COOKIE_KEY: &str = "EXAMPLE_PLUGIN_COOKIE";
const COOKIE_VALUE: &str = "d3c4f9a1";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    if std::env::args().nth(1).as_deref() == Some("plugin") {
        return rt.block_on(plugin());
    }
    rt.block_on(host())
}

async fn host() -> Result<(), Box<dyn std::error::Error>> {
    let mut profile = Profile::builtin("go-plugin")?;
    profile
        .env
        .set
        .insert(EnvName::new(COOKIE_KEY)?, EnvValue::new(COOKIE_VALUE)?);
    let me = std::env::current_exe()?;
    let mut runner = SandboxRunner::new(profile, &me, ["plugin"])?.with_stderr(Stdio::Inherit);

    let conn = match start_and_handshake(&mut runner, Duration::from_secs(10)).await {
        Ok(c) => c,
        Err(e) => {
            // e.diagnose says how the plugin ended (e.g. killed by the OOM killer).
            eprintln!("plugin failed: {e}");
            std::process::exit(1);
        }
    };
    println!(
        "handshake: {} (plugin address {} -> host address {})",
        String::from_utf8_lossy(&conn.host_line).trim_end(),
        conn.handshake.addr(),
        conn.addr
    );
    let stream = tokio::net::UnixStream::connect(&conn.addr).await?;
    let (r, mut w) = stream.into_split();
    w.write_all(b"greet world\n").await?;
    let mut reply = String::new();
    BufReader::new(r).read_line(&mut reply).await?;
    println!("reply: {}", reply.trim_end());

    // Stop it: SIGTERM, the grace period, then SIGKILL of everything left.
    runner.kill().await?;
    let status = runner.wait().await?;
    println!("plugin {status}");
    Ok(())
}

/// The plugin: a socket in PLUGIN_UNIX_SOCKET_DIR, the handshake line on stdout, then one
/// answer per request line.
async fn plugin() -> Result<(), Box<dyn std::error::Error>> {
    if std::env::var(COOKIE_KEY).as_deref() != Ok(COOKIE_VALUE) {
        eprintln!("This binary is a plugin. These are not meant to be executed directly.");
        std::process::exit(1);
    }
    let dir = std::env::var("PLUGIN_UNIX_SOCKET_DIR")?;
    let path = format!("{dir}/plugin-{}.sock", std::process::id());
    let listener = tokio::net::UnixListener::bind(&path)?;
    // CORE-PROTOCOL-VERSION | APP-PROTOCOL-VERSION | NETWORK | ADDR | PROTOCOL
    let mut out = tokio::io::stdout();
    out.write_all(format!("1|1|unix|{path}|netrpc\n").as_bytes())
        .await?;
    out.flush().await?;
    let host = nix::unistd::gethostname()?;
    loop {
        let (stream, _) = listener.accept().await?;
        let (r, mut w) = stream.into_split();
        let mut lines = BufReader::new(r).lines();
        while let Some(line) = lines.next_line().await? {
            let answer = match line.strip_prefix("greet ") {
                Some(name) => format!(
                    "hello, {name}, from pid {} on {}",
                    std::process::id(),
                    host.to_string_lossy()
                ),
                None => format!("unknown request {line:?}"),
            };
            w.write_all(format!("{answer}\n").as_bytes()).await?;
        }
    }
}
