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
use std::time::{Duration, Instant};

use nix::poll::{ppoll, PollFd, PollFlags};
use nix::sys::time::TimeSpec;
use rustix::io::Errno;
use rustix::pipe::SpliceFlags;

/// Bytes asked of one `splice`: it moves whole pipe buffers, as many as are there.
const SPLICE_LEN: usize = 1 << 20;
/// The buffer of the read/write fallback.
const BUF_LEN: usize = 64 * 1024;
/// The pause of a paced stream (see [`pump`]).
const PACE: Duration = Duration::from_micros(50);
/// A splice that moved less than this while a stream flows makes the relay pause.
const PACE_BELOW: usize = 32 * 1024;
/// A pause that gathered less than this was not worth it.
const PACE_GAIN: usize = 8 * 1024;
/// Wake-ups without pacing after a pause that was not worth it.
const PACE_COOLDOWN: u32 = 64;
/// Data that was there within this long of looking for it comes faster than a wake-up.
const QUICK: Duration = Duration::from_micros(20);
/// What the caller's stdout or stderr pipe is grown to (never shrunk), when the runner may.
const DST_PIPE_SIZE: usize = 1 << 20;

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
    if matches!(ours, Ours::Src) {
        // The caller's pipe caps what one splice moves (64 KiB by default): a larger one
        // makes for fewer, larger moves. Only ever grown, best effort (EBADF for anything
        // but a pipe; EPERM past the caller's pipe-max-size).
        if rustix::pipe::fcntl_getpipe_size(&dst).is_ok_and(|n| n < DST_PIPE_SIZE) {
            let _ = rustix::pipe::fcntl_setpipe_size(&dst, DST_PIPE_SIZE);
        }
    }
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
///
/// Each wake-up costs two context switches (about 5 µs each here, in a VM), so the relay
/// paces a fast stream of small writes: when data was already there (or came within
/// [`QUICK`]) when it looked, yet the splice moved under [`PACE_BELOW`] bytes (a writer
/// writing a few KiB at a time, the relay emptying the pipe after each), it pauses [`PACE`]
/// instead of waking on the next write, then moves what gathered in one splice. It goes on
/// pacing only while a pause gathers at least [`PACE_GAIN`] bytes and less than
/// [`PACE_BELOW`]; when a pause gathers less (a request and its answer, a trickle), it does
/// not try again for [`PACE_COOLDOWN`] wake-ups. The first bytes after a quiet moment always
/// pass at once. On the bench's 1 GiB stream this cuts the relay's wake-ups from about
/// 36,000 to 4,000 and its CPU time from about 220 to 60 ms; a request/response exchange
/// through `sandbox-run -- cat` keeps its ~20 µs round trip.
pub(super) fn pump(src: BorrowedFd<'_>, dst: BorrowedFd<'_>, stop: BorrowedFd<'_>) -> End {
    // Allocated only when the kernel refuses splice between these two fds.
    let mut buf: Vec<u8> = Vec::new();
    let mut pace = false;
    // Wake-ups before pacing may be tried again.
    let mut cooldown = 0u32;
    loop {
        let looked = Instant::now();
        let ready = if pace {
            wait_for(None, Some(dst), &[stop], Some(PACE))
        } else {
            wait_for(Some((src, PollFlags::POLLIN)), Some(dst), &[stop], None)
        };
        if let Err(end) = ready {
            return end;
        }
        let quick = looked.elapsed() < QUICK;
        if buf.is_empty() {
            // One splice per wake-up: it moves everything the source holds (up to what the
            // destination takes), so a second one would mostly find it empty.
            let flags = SpliceFlags::MOVE | SpliceFlags::NONBLOCK;
            match rustix::pipe::splice(src, None, dst, None, SPLICE_LEN, flags) {
                Ok(0) => return End::Eof,
                Ok(n) if pace => {
                    pace = (PACE_GAIN..PACE_BELOW).contains(&n);
                    if n < PACE_GAIN {
                        cooldown = PACE_COOLDOWN;
                    }
                }
                Ok(n) => {
                    cooldown = cooldown.saturating_sub(1);
                    pace = quick && n < PACE_BELOW && cooldown == 0;
                }
                Err(Errno::INTR) => {}
                // Nothing came during a pause, or the destination is full: wait for the
                // source again (at once when it has data).
                Err(Errno::AGAIN) if pace => {
                    pace = false;
                    cooldown = PACE_COOLDOWN;
                }
                // The source had data, so the destination is full (or another reader of the
                // caller's source took the data first): wait until the destination has room
                // (at once when it has), then for the source again.
                Err(Errno::AGAIN) => {
                    if let Err(end) = wait(dst, PollFlags::POLLOUT, None, &[stop]) {
                        return end;
                    }
                }
                Err(Errno::PIPE) => return End::Gone,
                Err(Errno::INVAL | Errno::NOSYS | Errno::OPNOTSUPP) => buf = vec![0; BUF_LEN],
                Err(e) => return End::Failed(e.into()),
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
    wait_for(Some((fd, events)), watch, stops, None)
}

/// [`wait`] with `fd` optional and a timeout: `Ok` when `fd` is ready or the time is up.
fn wait_for(
    fd: Option<(BorrowedFd<'_>, PollFlags)>,
    watch: Option<BorrowedFd<'_>>,
    stops: &[BorrowedFd<'_>],
    timeout: Option<Duration>,
) -> Result<(), End> {
    let mut set: Vec<PollFd<'_>> = Vec::with_capacity(4);
    if let Some((f, events)) = fd {
        set.push(PollFd::new(f, events));
    }
    let watch_at = watch.map(|w| {
        // Only its error and hangup states (always reported) are of interest.
        set.push(PollFd::new(w, PollFlags::empty()));
        set.len() - 1
    });
    let first_stop = set.len();
    for s in stops {
        set.push(PollFd::new(*s, PollFlags::POLLIN));
    }
    let timeout = timeout.map(TimeSpec::from_duration);
    loop {
        let n = match ppoll(&mut set, timeout, None) {
            Ok(n) => n,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(End::Failed(e.into())),
        };
        if n == 0 {
            return Ok(());
        }
        let fired = |i: usize| set[i].revents().is_some_and(|r| !r.is_empty());
        if (first_stop..set.len()).any(fired) {
            return Err(End::Stopped);
        }
        if let Some(w) = watch_at {
            let gone = PollFlags::POLLERR | PollFlags::POLLHUP | PollFlags::POLLNVAL;
            if set[w].revents().is_some_and(|r| r.intersects(gone)) {
                return Err(End::Gone);
            }
        }
        if fd.is_some() && fired(0) {
            return Ok(());
        }
    }
}
