//! The guest's report: one [`ConsoleLine`] per fact on the serial console
//! (the guest programs' stdout), parsed by the host.

use std::io::Write;

use crate::console::{ConsoleLine, Kind};

/// Prints one line and flushes it: a guest may power off right after.
pub fn emit(line: &ConsoleLine) {
    #[allow(
        clippy::print_stdout,
        reason = "the serial console is the guest's only output"
    )]
    {
        println!("{line}");
    }
    let _ = std::io::stdout().flush();
}

/// Prints one line of `kind` about `tag`.
pub fn line(kind: Kind, tag: &str, text: &str) {
    emit(&ConsoleLine::new(kind, tag, text));
}
