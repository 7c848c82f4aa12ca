//! Limits of the running kernel that the facts depend on.

use std::sync::OnceLock;

/// This kernel's page size, from `sysconf(_SC_PAGESIZE)`.
pub fn page_size() -> u64 {
    static PAGE: OnceLock<u64> = OnceLock::new();
    *PAGE.get_or_init(|| {
        // SAFETY: sysconf has no preconditions.
        let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
        // Linux always answers; 4 KiB is the smallest page it runs on.
        u64::try_from(p)
            .ok()
            .filter(|p| p.is_power_of_two())
            .unwrap_or(4096)
    })
}

/// The most bytes one `copy_file_range` call copies here (`MAX_RW_COUNT`).
pub fn max_per_call() -> u64 {
    copytrace_common::max_rw_count(page_size())
}
