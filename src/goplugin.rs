//! go-plugin glue: start a sandboxed plugin, read its handshake and hand the host an address
//! it can connect to, or an error that carries the runner's Diagnose text (as go-plugin's
//! client does when a plugin fails before its handshake).

use std::time::Duration;
use tokio::io::BufReader;

use crate::handshake::{self, Handshake};
use crate::runner::{AttachedRunner, PipeReader, Runner};
use crate::sandbox::SandboxRunner;

/// A started plugin whose handshake was read and whose address was translated.
pub struct Connected {
    /// The handshake line as the plugin printed it.
    pub handshake: Handshake,
    /// The line with the address rewritten for the host (byte-exact otherwise).
    pub host_line: Vec<u8>,
    /// The network the host connects with (`unix`).
    pub network: String,
    /// The address on the host side (a path the plugin cannot redirect).
    pub addr: String,
    /// The rest of the plugin's stdout, after the handshake line.
    pub stdout: BufReader<PipeReader>,
}

/// Why a plugin did not complete its handshake: the error, and what happened to the plugin.
#[derive(Debug, thiserror::Error)]
#[error("{error}; {diagnose}")]
pub struct HandshakeFailure {
    /// What went wrong (timeout, malformed line, refused address, start failure).
    pub error: String,
    /// The runner's Diagnose text (how the plugin ended, and why).
    pub diagnose: String,
}

/// Starts `runner`, reads the go-plugin handshake from its stdout within `timeout`, and
/// translates the announced address. On any failure the sandbox is killed (nothing of it is
/// left) and the error carries the Diagnose text.
pub async fn start_and_handshake(
    runner: &mut SandboxRunner,
    timeout: Duration,
) -> Result<Connected, HandshakeFailure> {
    let res = handshake_inner(runner, timeout).await;
    match res {
        Ok(c) => Ok(c),
        Err(error) => {
            let _ = runner.kill().await;
            Err(HandshakeFailure {
                error,
                diagnose: runner.diagnose().await,
            })
        }
    }
}

async fn handshake_inner(
    runner: &mut SandboxRunner,
    timeout: Duration,
) -> Result<Connected, String> {
    runner.start().await.map_err(|e| e.to_string())?;
    let out = runner
        .stdout()
        .ok_or("the plugin's stdout is not a pipe (use Stdio::Pipe)")?;
    let mut out = BufReader::new(out);
    let host = match handshake::read_for_host(&mut out, timeout, &*runner).await {
        Ok(x) => x,
        Err(e) => {
            // Give a plugin that just died a moment to be reaped, so Diagnose can say how.
            let _ = tokio::time::timeout(Duration::from_millis(200), runner.wait()).await;
            return Err(format!("plugin handshake refused: {e}"));
        }
    };
    Ok(Connected {
        handshake: host.handshake,
        host_line: host.line,
        network: host.network,
        addr: host.addr,
        stdout: out,
    })
}
