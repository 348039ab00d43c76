//! One relay: a thread that moves bytes from one fd to another until end of file, with
//! `splice(2)` where both ends allow it (one of them is always the runner's pipe, so the
//! kernel moves page references from pipe to pipe, or between a pipe and a file or socket,
//! without a copy through user space), and `read`/`write` where the kernel refuses it
//! (`EINVAL`: a file opened `O_APPEND`, a device without splice support).
//!
//! Only the runner's own pipe end is made non-blocking; the caller's fd keeps its file status
//! flags (they are shared with every process holding it). `SPLICE_F_NONBLOCK` makes the
//! pipe side of a splice non-blocking without touching the other side's flags, and the thread
//! waits in `poll`, so that it can stop at any time:
//!
//! - end of file on the source: the destination is closed (the plugin reads end of file on
//!   its stdin; the caller sees its stream end);
//! - the destination's reader went away (`POLLERR`/`POLLHUP`, or `EPIPE`): the source is
//!   closed, so a plugin that writes to a stdout whose reader is gone gets `EPIPE`/`SIGPIPE`
//!   on its next write, as it would have without the relay; an input relay stops reading the
//!   caller's stdin as soon as nothing in the sandbox holds the read end any more;
//! - the stop pipe closes (the runner was dropped).

use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use rustix::io::Errno;
use rustix::pipe::SpliceFlags;

/// Bytes asked of one `splice`: it moves whole pipe buffers, as many as are there.
const SPLICE_LEN: usize = 1 << 20;
/// The buffer of the read/write fallback.
const BUF_LEN: usize = 64 * 1024;

/// How a relay ended.
#[derive(Debug)]
pub(super) enum End {
    /// End of file on the source.
    Eof,
    /// The destination's reader (or the other side of a terminal) went away.
    Gone,
    /// The stop pipe closed.
    Stopped,
    /// An error on either side.
    Failed(io::Error),
}

impl End {
    /// Says how the relay `name` ended, as a debug event (a failure is no error of the
    /// sandbox's: the plugin sees end of file or `EPIPE`, as with a direct fd).
    pub(super) fn log(&self, name: &str) {
        match self {
            End::Failed(e) => tracing::debug!(relay = name, error = %e, "relay failed"),
            other => tracing::debug!(relay = name, end = ?other, "relay ended"),
        }
    }
}

/// Which side of the relay is the runner's own pipe end (made non-blocking).
#[derive(Clone, Copy, Debug)]
pub(super) enum Ours {
    /// The source: the read end of the plugin's stdout or stderr pipe.
    Src,
    /// The destination: the write end of the plugin's stdin pipe.
    Dst,
}

/// Starts a relay thread from `src` to `dst` that ends as the module documentation says;
/// `done` is dropped once it has ended and closed both fds.
pub(super) fn spawn(
    name: &str,
    src: OwnedFd,
    dst: OwnedFd,
    ours: Ours,
    stop: Arc<OwnedFd>,
    done: Option<tokio::sync::oneshot::Sender<()>>,
) -> io::Result<()> {
    let own = match ours {
        Ours::Src => src.as_fd(),
        Ours::Dst => dst.as_fd(),
    };
    rustix::io::ioctl_fionbio(own, true)?;
    let label = name.to_string();
    std::thread::Builder::new()
        .name(label.clone())
        .stack_size(128 * 1024)
        .spawn(move || {
            super::block_signals();
            let end = pump(src.as_fd(), dst.as_fd(), stop.as_fd());
            end.log(&label);
            drop(src);
            drop(dst);
            drop(done);
        })?;
    Ok(())
}

/// Moves bytes from `src` to `dst` until one of the ends of [`End`].
pub(super) fn pump(src: BorrowedFd<'_>, dst: BorrowedFd<'_>, stop: BorrowedFd<'_>) -> End {
    // Allocated only when the kernel refuses splice between these two fds.
    let mut buf: Vec<u8> = Vec::new();
    loop {
        if let Err(end) = wait(src, PollFlags::POLLIN, Some(dst), &[stop]) {
            return end;
        }
        if buf.is_empty() {
            loop {
                let flags = SpliceFlags::MOVE | SpliceFlags::NONBLOCK;
                match rustix::pipe::splice(src, None, dst, None, SPLICE_LEN, flags) {
                    Ok(0) => return End::Eof,
                    Ok(_) => {}
                    Err(Errno::INTR) => {}
                    // The source is empty or the destination full: wait until the destination
                    // has room (at once when it has), then for the source.
                    Err(Errno::AGAIN) => {
                        if let Err(end) = wait(dst, PollFlags::POLLOUT, None, &[stop]) {
                            return end;
                        }
                        break;
                    }
                    Err(Errno::PIPE) => return End::Gone,
                    Err(Errno::INVAL | Errno::NOSYS | Errno::OPNOTSUPP) => {
                        buf = vec![0; BUF_LEN];
                        break;
                    }
                    Err(e) => return End::Failed(e.into()),
                }
            }
        } else {
            match rustix::io::read(src, &mut buf) {
                Ok(0) => return End::Eof,
                Ok(n) => {
                    if let Err(end) = write_all(dst, &buf[..n], &[stop]) {
                        return end;
                    }
                }
                Err(Errno::AGAIN | Errno::INTR) => {}
                Err(e) => return End::Failed(e.into()),
            }
        }
    }
}

/// Writes all of `data` to `dst`, waiting in `poll` while a non-blocking `dst` is full.
pub(super) fn write_all(
    dst: BorrowedFd<'_>,
    mut data: &[u8],
    stops: &[BorrowedFd<'_>],
) -> Result<(), End> {
    while !data.is_empty() {
        match rustix::io::write(dst, data) {
            Ok(n) => data = &data[n..],
            Err(Errno::AGAIN) => wait(dst, PollFlags::POLLOUT, None, stops)?,
            Err(Errno::INTR) => {}
            Err(Errno::PIPE) => return Err(End::Gone),
            Err(e) => return Err(End::Failed(e.into())),
        }
    }
    Ok(())
}

/// Waits until `fd` is ready for `events` (or in error, which the next call on it reports).
/// Ends early with [`End::Gone`] when `watch` (the other side) reports an error or hangup,
/// and with [`End::Stopped`] when one of `stops` becomes readable or closes.
pub(super) fn wait(
    fd: BorrowedFd<'_>,
    events: PollFlags,
    watch: Option<BorrowedFd<'_>>,
    stops: &[BorrowedFd<'_>],
) -> Result<(), End> {
    let mut set: [PollFd<'_>; 4] = std::array::from_fn(|_| PollFd::new(fd, events));
    let mut n = 1;
    let watch_at = watch.map(|w| {
        // Only its error and hangup states (always reported) are of interest.
        set[n] = PollFd::new(w, PollFlags::empty());
        n += 1;
        n - 1
    });
    let first_stop = n;
    for s in stops.iter().take(set.len() - n) {
        set[n] = PollFd::new(*s, PollFlags::POLLIN);
        n += 1;
    }
    loop {
        match poll(&mut set[..n], PollTimeout::NONE) {
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(End::Failed(e.into())),
        }
        let fired = |i: usize| set[i].revents().is_some_and(|r| !r.is_empty());
        if (first_stop..n).any(fired) {
            return Err(End::Stopped);
        }
        if let Some(w) = watch_at {
            let gone = PollFlags::POLLERR | PollFlags::POLLHUP | PollFlags::POLLNVAL;
            if set[w].revents().is_some_and(|r| r.intersects(gone)) {
                return Err(End::Gone);
            }
        }
        if fired(0) {
            return Ok(());
        }
    }
}
