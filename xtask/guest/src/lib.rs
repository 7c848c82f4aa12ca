//! What the guest programs and `cargo xtask` share: the serial console's
//! vocabulary ([`console`]), which the guests write ([`report`]) and the
//! host reads. The guest programs themselves are this package's binaries:
//! PID 1 of the kernel-matrix guests (`copytrace-guest-init`), the systemd
//! guest's checker (`copytrace-systemd-check`) and the benchmark loops
//! (`bench-loop`).

pub mod console;
pub mod report;
