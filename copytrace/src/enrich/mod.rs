//! What the machine adds to a decoded event before anyone reads it: absolute
//! paths ([`mounts`]), the caller's service ([`cgroups`]), its named stack
//! ([`stack`], named by the confined [`symbolizer`] process), names of
//! kernel functions ([`kallsyms`]) and wall-clock time, gathered into a
//! [`record::Record`].

pub mod cgroups;
pub mod fresh;
pub mod kallsyms;
pub mod mounts;
pub mod pending;
pub mod record;
pub mod stack;
pub mod symbolizer;

/// CLOCK_MONOTONIC now, in ns: the clock of the kernel's timestamps
/// (`bpf_ktime_get_ns`).
pub fn monotonic_ns() -> u64 {
    let mut t = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid pointer to a timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut t) };
    (t.tv_sec as u64).saturating_mul(1_000_000_000) + t.tv_nsec as u64
}
