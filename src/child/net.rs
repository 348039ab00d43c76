//! Network namespace: a new namespace has only `lo`, and it is down; bring it up so the
//! plugin can talk to itself over loopback (child side, async-signal-safe).

use nix::errno::Errno;

use super::step::check;

/// Sets `IFF_UP` on `lo` with `SIOCGIFFLAGS`/`SIOCSIFFLAGS` on a throwaway socket.
///
/// # Safety
/// Child-side only.
pub(crate) unsafe fn loopback_up() -> Result<(), Errno> {
    // SAFETY: socket/ioctl/close on a socket this function owns and a zeroed stack ifreq.
    unsafe {
        let fd = check(libc::socket(
            libc::AF_INET,
            libc::SOCK_DGRAM | libc::SOCK_CLOEXEC,
            0,
        ))?;
        let mut ifr: libc::ifreq = std::mem::zeroed();
        ifr.ifr_name[0] = b'l' as libc::c_char;
        ifr.ifr_name[1] = b'o' as libc::c_char;
        let res = (|| {
            check(libc::ioctl(fd, libc::SIOCGIFFLAGS as _, &mut ifr))?;
            ifr.ifr_ifru.ifru_flags |= (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
            check(libc::ioctl(fd, libc::SIOCSIFFLAGS as _, &ifr))
        })();
        libc::close(fd);
        res.map(drop)
    }
}
