//! Finding (and if need be mounting) tracefs, and reading tracepoint formats.
//!
//! Syscall tracepoints can only be attached through tracefs, which many
//! machines do not mount at boot. The record layout of a tracepoint is read
//! from its `format` file rather than assumed.

use std::path::{Path, PathBuf};

/// Where tracefs is mounted when copytrace has to mount it itself.
pub const DEFAULT_MOUNT: &str = "/sys/kernel/tracing";

/// Errors from tracefs handling.
#[derive(Debug, thiserror::Error)]
pub enum TracefsError {
    /// tracefs is not mounted and mounting it failed.
    #[error("tracefs is not mounted and mounting it at {DEFAULT_MOUNT} failed (run `mount -t tracefs tracefs {DEFAULT_MOUNT}` as root)")]
    Mount(#[source] std::io::Error),
    /// A format file could not be read.
    #[error("cannot read tracepoint format {path}")]
    Format {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A format file lacks a field copytrace needs.
    #[error("tracepoint format {path} has no field {field}")]
    MissingField { path: PathBuf, field: String },
}

/// The mount point of tracefs according to /proc/self/mounts, if any.
pub fn find_mount() -> Option<PathBuf> {
    let mounts = std::fs::read_to_string("/proc/self/mounts").ok()?;
    mounts.lines().find_map(|line| {
        let mut it = line.split_whitespace();
        let (_src, dir, fstype) = (it.next()?, it.next()?, it.next()?);
        (fstype == "tracefs").then(|| PathBuf::from(dir))
    })
}

/// Returns tracefs's mount point, mounting it at [`DEFAULT_MOUNT`] when absent.
pub fn ensure_mounted() -> Result<PathBuf, TracefsError> {
    if let Some(dir) = find_mount() {
        return Ok(dir);
    }
    let target = c"/sys/kernel/tracing";
    // SAFETY: all pointers are valid NUL-terminated strings; data is NULL.
    let rc = unsafe {
        libc::mount(
            c"tracefs".as_ptr(),
            target.as_ptr(),
            c"tracefs".as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(TracefsError::Mount(std::io::Error::last_os_error()));
    }
    log::info!("mounted tracefs at {DEFAULT_MOUNT}");
    Ok(PathBuf::from(DEFAULT_MOUNT))
}

/// Byte offsets of named fields in a tracepoint's `format` text.
pub fn field_offsets(format: &str, fields: &[&str]) -> Result<Vec<u32>, String> {
    fields
        .iter()
        .map(|want| {
            format
                .lines()
                .find_map(|line| {
                    let decl = line.trim().strip_prefix("field:")?;
                    let (decl, rest) = decl.split_once(';')?;
                    let name = decl.split_whitespace().last()?.trim_start_matches('*');
                    if name != *want {
                        return None;
                    }
                    let off = rest.trim().strip_prefix("offset:")?.split(';').next()?;
                    off.trim().parse().ok()
                })
                .ok_or_else(|| want.to_string())
        })
        .collect()
}

/// Reads the offsets of `fields` in tracepoint `category/name`.
pub fn tracepoint_offsets(
    tracefs: &Path,
    category: &str,
    name: &str,
    fields: &[&str],
) -> Result<Vec<u32>, TracefsError> {
    let path = tracefs
        .join("events")
        .join(category)
        .join(name)
        .join("format");
    let text = std::fs::read_to_string(&path).map_err(|source| TracefsError::Format {
        path: path.clone(),
        source,
    })?;
    field_offsets(&text, fields).map_err(|field| TracefsError::MissingField { path, field })
}

#[cfg(test)]
mod tests {
    use super::*;

    const ENTER: &str = "name: sys_enter_copy_file_range
format:
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;
\tfield:int __syscall_nr;\toffset:8;\tsize:4;\tsigned:1;
\tfield:int fd_in;\toffset:16;\tsize:8;\tsigned:0;
\tfield:loff_t * off_in;\toffset:24;\tsize:8;\tsigned:0;
\tfield:unsigned int flags;\toffset:56;\tsize:8;\tsigned:0;
";

    #[test]
    fn parses_field_offsets() {
        assert_eq!(
            field_offsets(ENTER, &["fd_in", "off_in", "flags"]),
            Ok(vec![16, 24, 56])
        );
        assert_eq!(field_offsets(ENTER, &["len"]), Err("len".to_string()));
    }
}
