//! Who may use the tail socket: root, or a member of `tail.group`, as the
//! kernel saw the peer when it connected (SO_PEERCRED, SO_PEERGROUPS).

use std::io;

use tokio::net::UnixStream;

/// gid of a group, if it exists.
pub(super) fn group_gid(name: &str) -> Option<u32> {
    let c = std::ffi::CString::new(name).ok()?;
    // SAFETY: getgrnam takes a valid C string and returns NULL or a pointer
    // to static storage, which is read at once below.
    let g = unsafe { libc::getgrnam(c.as_ptr()) };
    // SAFETY: g is non-null and points to a struct group (checked above).
    (!g.is_null()).then(|| unsafe { (*g).gr_gid })
}

/// Supplementary groups the peer had when it connected (SO_PEERGROUPS),
/// read from the socket rather than /proc so a recycled pid cannot lend its
/// groups to another process.
pub(super) fn peer_groups(stream: &UnixStream) -> io::Result<Vec<libc::gid_t>> {
    use std::os::fd::AsRawFd;
    let mut groups: Vec<libc::gid_t> = vec![0; 64];
    loop {
        let mut len = (groups.len() * std::mem::size_of::<libc::gid_t>()) as libc::socklen_t;
        // SAFETY: the buffer is `len` bytes of writable memory owned by
        // `groups`, and `len` is a valid socklen_t the kernel updates.
        let rc = unsafe {
            libc::getsockopt(
                stream.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_PEERGROUPS,
                groups.as_mut_ptr().cast(),
                &mut len,
            )
        };
        let n = len as usize / std::mem::size_of::<libc::gid_t>();
        if rc == 0 {
            groups.truncate(n);
            return Ok(groups);
        }
        let e = io::Error::last_os_error();
        // ERANGE: the kernel wrote the size it needs into len.
        if e.raw_os_error() == Some(libc::ERANGE) && n > groups.len() && n <= 65536 {
            groups.resize(n, 0);
            continue;
        }
        return Err(e);
    }
}

/// Whether a peer may tail: root, or the tail group as its primary or a
/// supplementary group.
pub(super) fn authorized(uid: u32, gid: u32, groups: &[libc::gid_t], group: Option<u32>) -> bool {
    if uid == 0 {
        return true;
    }
    let Some(group) = group else { return false };
    gid == group || groups.contains(&group)
}
