//! Copying bytes both ways between a sandbox client and its checked destination.

use std::io;

use tokio::io::{AsyncRead, AsyncWrite};

/// Relay `client` and `upstream` until both directions end (each side's EOF is passed on as a
/// write shutdown) or one fails, with `buffer` bytes of buffer per direction (bounded memory
/// per relay). Returns the bytes copied client → upstream and upstream → client.
///
/// A relay run under [`super::Egress`]'s spawn is dropped at shutdown, which closes both
/// sockets: relays end with the sandbox.
pub async fn relay<A, B>(client: &mut A, upstream: &mut B, buffer: usize) -> io::Result<(u64, u64)>
where
    A: AsyncRead + AsyncWrite + Unpin + ?Sized,
    B: AsyncRead + AsyncWrite + Unpin + ?Sized,
{
    let buffer = buffer.max(1024);
    tokio::io::copy_bidirectional_with_sizes(client, upstream, buffer, buffer).await
}

/// Relay a client and its allowed connection, with the egress's buffer size, and trace the end.
pub(crate) async fn relay_traced<A>(
    egress: &super::Egress,
    client: &mut A,
    mut upstream: super::Connection,
    via: &'static str,
) where
    A: AsyncRead + AsyncWrite + Unpin + ?Sized,
{
    let result = relay(client, &mut upstream.stream, egress.config().relay_buffer).await;
    match result {
        Ok((up, down)) => tracing::debug!(target: "sandbox_runner::egress", via,
            addr = %upstream.addr, bytes_up = up, bytes_down = down, "relay ended"),
        Err(e) => tracing::debug!(target: "sandbox_runner::egress", via,
            addr = %upstream.addr, error = %e, "relay ended with an error"),
    }
}
