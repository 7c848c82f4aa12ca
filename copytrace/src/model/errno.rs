//! Names of the errno values `copy_file_range(2)` and its callers can return.

/// Symbolic name of an errno value (`"EBADF"`), or `None` for ones copytrace does not know.
pub fn name(errno: i64) -> Option<&'static str> {
    Some(match errno {
        1 => "EPERM",
        2 => "ENOENT",
        4 => "EINTR",
        5 => "EIO",
        6 => "ENXIO",
        9 => "EBADF",
        11 => "EAGAIN",
        12 => "ENOMEM",
        13 => "EACCES",
        14 => "EFAULT",
        16 => "EBUSY",
        17 => "EEXIST",
        18 => "EXDEV",
        19 => "ENODEV",
        20 => "ENOTDIR",
        21 => "EISDIR",
        22 => "EINVAL",
        23 => "ENFILE",
        24 => "EMFILE",
        26 => "ETXTBSY",
        27 => "EFBIG",
        28 => "ENOSPC",
        29 => "ESPIPE",
        30 => "EROFS",
        32 => "EPIPE",
        38 => "ENOSYS",
        75 => "EOVERFLOW",
        95 => "EOPNOTSUPP",
        110 => "ETIMEDOUT",
        116 => "ESTALE",
        122 => "EDQUOT",
        512 => "ERESTARTSYS",
        513 => "ERESTARTNOINTR",
        514 => "ERESTARTNOHAND",
        524 => "ENOTSUPP",
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

    #[test]
    fn names_common_errors() {
        for (n, s) in [
            (9, "EBADF"),
            (18, "EXDEV"),
            (22, "EINVAL"),
            (28, "ENOSPC"),
            (21, "EISDIR"),
        ] {
            assert_eq!(name(n), Some(s));
        }
        assert_eq!(label(4000), "E4000");
    }
}
