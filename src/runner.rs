//! The runner interfaces, ported from hashicorp/go-plugin's `runner` package (v1.6).
//!
//! go-plugin's interfaces are synchronous Go methods taking a `context.Context`; here they are
//! async methods (`async-trait`) and cancellation is dropping the future. Where the Rust
//! semantics differ from Go's, the item's documentation says so.

use async_trait::async_trait;
use std::future::Future;
use std::pin::Pin;

use crate::error::{AddrError, Error};
use crate::status::ExitStatus;

/// A boxed reader of one of the plugin's output pipes.
///
/// Mirrors the `io.ReadCloser` returned by go-plugin's `Runner.Stdout()` / `Runner.Stderr()`;
/// dropping it closes the host's read end.
pub type PipeReader = Box<dyn tokio::io::AsyncRead + Send + Sync + Unpin>;

/// A boxed writer to the plugin's stdin, when the runner was built with a stdin pipe.
pub type PipeWriter = Box<dyn tokio::io::AsyncWrite + Send + Sync + Unpin>;

/// Mirrors go-plugin's `runner.AddrTranslator`: translates socket addresses between the
/// plugin's view of the world and the host's.
///
/// go-plugin's methods take and return a `(network, address string)`; the same holds here,
/// but a refusal is a typed [`AddrError`] instead of a bare `error`.
pub trait AddrTranslator: Send + Sync {
    /// Mirrors `PluginToHost`: maps an address announced by the plugin (for example in its
    /// handshake line) to one the host can connect to.
    fn plugin_to_host(&self, network: &str, addr: &str) -> Result<(String, String), AddrError>;

    /// Mirrors `HostToPlugin`: maps an address on the host (for example one go-plugin's broker
    /// listens on) to one the plugin can reach.
    fn host_to_plugin(&self, network: &str, addr: &str) -> Result<(String, String), AddrError>;
}

/// Mirrors go-plugin's `runner.AttachedRunner`: a running plugin the host can wait for, kill
/// and identify.
///
/// Differences from Go: `wait` and `kill` take `&self`, so one task may wait while another
/// kills; dropping a `wait` future stops waiting and leaves the plugin running.
#[async_trait]
pub trait AttachedRunner: AddrTranslator {
    /// Mirrors `Wait(ctx)`: resolves when the plugin has exited and returns how it ended.
    ///
    /// Unlike Go's `Wait`, which only returns an `error`, this returns the [`ExitStatus`];
    /// calling it again after the exit returns the same status.
    async fn wait(&self) -> Result<ExitStatus, Error>;

    /// Mirrors `Kill(ctx)`: asks the plugin to stop (SIGTERM), and after the runner's grace
    /// period kills everything it started. Returns only once nothing of the plugin is left.
    async fn kill(&self) -> Result<(), Error>;

    /// Mirrors `ID()`: a unique, stable identifier of this plugin instance. Never a bare pid.
    fn id(&self) -> &str;
}

/// Mirrors go-plugin's `runner.Runner`: something that can start a plugin and then behaves as
/// an [`AttachedRunner`].
#[async_trait]
pub trait Runner: AttachedRunner {
    /// Mirrors `Start(ctx)`: starts the plugin.
    ///
    /// Cancelling (dropping) the returned future aborts only the start: a plugin that was
    /// already created is killed and reaped; nothing already running is affected.
    async fn start(&mut self) -> Result<(), Error>;

    /// Mirrors `Diagnose(ctx)`: a short human text that says how the plugin ended and why,
    /// meant for the error a host shows when the plugin did not complete its handshake.
    async fn diagnose(&self) -> String;

    /// Mirrors `Stdout()`: the plugin's stdout. Unlike Go, the reader is handed over once:
    /// the first call after `start` returns it, later calls return `None`.
    fn stdout(&mut self) -> Option<PipeReader>;

    /// Mirrors `Stderr()`: the plugin's stderr, handed over once like [`Runner::stdout`].
    fn stderr(&mut self) -> Option<PipeReader>;

    /// Mirrors `Name()`: a human name for the plugin (the path of its program).
    fn name(&self) -> &str;
}

/// A boxed future, as returned by a [`ReattachFunc`].
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Mirrors go-plugin's `runner.ReattachFunc`: a function that reattaches to a plugin which is
/// still running (for example after the host restarted) and returns it as an
/// [`AttachedRunner`].
pub type ReattachFunc =
    Box<dyn Fn() -> BoxFuture<'static, Result<Box<dyn AttachedRunner>, Error>> + Send + Sync>;
