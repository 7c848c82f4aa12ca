//! Names of the errno values `copy_file_range(2)` and its callers can return.

/// `ERESTARTSYS` (include/linux/errno.h): kernel-internal, never returned
/// to user space, but a tracer sees it when a signal interrupts the call.
pub const ERESTARTSYS: i64 = 512;
/// `ERESTARTNOINTR`, kernel-internal.
pub const ERESTARTNOINTR: i64 = 513;
/// `ERESTARTNOHAND`, kernel-internal.
pub const ERESTARTNOHAND: i64 = 514;
/// `ENOTSUPP` (include/linux/errno.h): kernel-internal "operation not
/// supported", which some filesystems' copy paths leak to user space.
pub const ENOTSUPP: i64 = 524;

/// The user-space errnos copytrace names, with values from the libc crate.
const USER: &[(i32, &str)] = &[
    (libc::EPERM, "EPERM"),
    (libc::ENOENT, "ENOENT"),
    (libc::EINTR, "EINTR"),
    (libc::EIO, "EIO"),
    (libc::ENXIO, "ENXIO"),
    (libc::EBADF, "EBADF"),
    (libc::EAGAIN, "EAGAIN"),
    (libc::ENOMEM, "ENOMEM"),
    (libc::EACCES, "EACCES"),
    (libc::EFAULT, "EFAULT"),
    (libc::EBUSY, "EBUSY"),
    (libc::EEXIST, "EEXIST"),
    (libc::EXDEV, "EXDEV"),
    (libc::ENODEV, "ENODEV"),
    (libc::ENOTDIR, "ENOTDIR"),
    (libc::EISDIR, "EISDIR"),
    (libc::EINVAL, "EINVAL"),
    (libc::ENFILE, "ENFILE"),
    (libc::EMFILE, "EMFILE"),
    (libc::ETXTBSY, "ETXTBSY"),
    (libc::EFBIG, "EFBIG"),
    (libc::ENOSPC, "ENOSPC"),
    (libc::ESPIPE, "ESPIPE"),
    (libc::EROFS, "EROFS"),
    (libc::EPIPE, "EPIPE"),
    (libc::ENOSYS, "ENOSYS"),
    (libc::EOVERFLOW, "EOVERFLOW"),
    (libc::EOPNOTSUPP, "EOPNOTSUPP"),
    (libc::ETIMEDOUT, "ETIMEDOUT"),
    (libc::ESTALE, "ESTALE"),
    (libc::EDQUOT, "EDQUOT"),
];

/// Symbolic name of an errno value (`"EBADF"`), or `None` for ones copytrace does not know.
pub fn name(errno: i64) -> Option<&'static str> {
    if let Some((_, n)) = USER.iter().find(|(v, _)| i64::from(*v) == errno) {
        return Some(n);
    }
    Some(match errno {
        ERESTARTSYS => "ERESTARTSYS",
        ERESTARTNOINTR => "ERESTARTNOINTR",
        ERESTARTNOHAND => "ERESTARTNOHAND",
        ENOTSUPP => "ENOTSUPP",
        _ => return None,
    })
}

/// Name of `errno`, or `E<number>` when unknown; always a bounded label value
/// because the kernel's errno space is.
pub fn label(errno: i64) -> String {
    match name(errno) {
        Some(n) => n.to_string(),
        None => format!("E{errno}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every user-space name and number agrees with the kernel's uapi
    /// headers (linux-libc-dev), which the libc crate mirrors.
    #[test]
    fn names_match_the_uapi_headers() {
        let mut defined = std::collections::HashMap::new();
        for header in [
            "/usr/include/asm-generic/errno-base.h",
            "/usr/include/asm-generic/errno.h",
        ] {
            let text = std::fs::read_to_string(header).unwrap_or_else(|e| {
                panic!("{header}: {e} (`cargo xtask provision` installs linux-libc-dev)")
            });
            for l in text.lines() {
                let w: Vec<&str> = l.split_whitespace().collect();
                if let ["#define", name, value, ..] = w[..] {
                    if let Ok(v) = value.parse::<i64>() {
                        defined.insert(name.to_string(), v);
                    }
                }
            }
        }
        for (value, n) in USER {
            assert_eq!(defined.get(*n), Some(&i64::from(*value)), "{n}");
            assert_eq!(name(i64::from(*value)), Some(*n));
        }
        assert_eq!(label(4000), "E4000");
    }
}
