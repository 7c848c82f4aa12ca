//! Suspicious calls as structured journal entries, when the daemon's stdout
//! is the journal (systemd sets `JOURNAL_STREAM` to its device:inode), so
//! that `journalctl -u copytrace COPYTRACE_VERDICT=silent_zero_copy` finds
//! them. Written with journald's native datagram protocol: one datagram
//! per entry, `KEY=value` lines, values with a newline in the binary-safe
//! length-prefixed form (names a traced process chose stay exact).

use std::io;
use std::os::unix::net::UnixDatagram;
use std::time::Instant;

use prometheus::IntCounter;

use crate::enrich::record::Record;
use crate::sink::console::Print;
use crate::sink::rate_limit::{RateLimit, Summary, IN_ALL, PER_UID, SUMMARY_EVERY};
use crate::sink::render;
use crate::sink::{Demand, RecordSink};

/// journald's native socket.
const SOCKET: &str = "/run/systemd/journal/socket";

/// Whether stdout is a journal stream (`JOURNAL_STREAM` names its device and inode).
pub fn stdout_is_journal() -> bool {
    let Ok(stream) = std::env::var("JOURNAL_STREAM") else {
        return false;
    };
    // SAFETY: fstat on fd 1 with a zeroed stat buffer.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    if unsafe { libc::fstat(1, &mut st) } != 0 {
        return false;
    }
    stream == format!("{}:{}", st.st_dev, st.st_ino)
}

/// Appends one field, in the binary-safe form when the value has a newline.
fn field(buf: &mut Vec<u8>, key: &str, value: &[u8]) {
    buf.extend_from_slice(key.as_bytes());
    if value.contains(&b'\n') {
        buf.push(b'\n');
        buf.extend_from_slice(&(value.len() as u64).to_le_bytes());
    } else {
        buf.push(b'=');
    }
    buf.extend_from_slice(value);
    buf.push(b'\n');
}

/// The entry of one call.
pub fn entry(r: &Record) -> Vec<u8> {
    let mut b = Vec::with_capacity(1024);
    let v = r.diagnosis.verdict;
    field(&mut b, "MESSAGE", render::human_line(r).as_bytes());
    field(
        &mut b,
        "PRIORITY",
        v.severity().syslog_priority().to_string().as_bytes(),
    );
    field(&mut b, "SYSLOG_IDENTIFIER", b"copytrace");
    field(&mut b, "COPYTRACE_VERDICT", v.as_str().as_bytes());
    field(&mut b, "COPYTRACE_REASON", r.diagnosis.reason.as_bytes());
    field(&mut b, "COPYTRACE_PID", r.event.pid.to_string().as_bytes());
    field(&mut b, "COPYTRACE_COMM", r.event.comm.as_bytes());
    let optional = [
        ("COPYTRACE_UNIT", r.service.unit.as_ref()),
        ("COPYTRACE_USER_UNIT", r.service.user_unit.as_ref()),
        ("COPYTRACE_CGROUP", r.service.cgroup.as_ref()),
        ("COPYTRACE_EXE", r.exe_path.as_ref()),
        ("COPYTRACE_PATH_IN", r.path_in.as_ref()),
        ("COPYTRACE_PATH_OUT", r.path_out.as_ref()),
    ];
    for (k, v) in optional {
        if let Some(v) = v {
            field(&mut b, k, v.as_bytes());
        }
    }
    if let Some(id) = &r.service.container_id {
        field(&mut b, "COPYTRACE_CONTAINER_ID", id.as_bytes());
    }
    b
}

/// The entry saying what the rate limit held back.
pub fn summary_entry(s: &Summary) -> Vec<u8> {
    let total: u64 = s.by_uid.iter().map(|(_, n)| n).sum::<u64>() + s.others;
    let mut who: Vec<String> = s
        .by_uid
        .iter()
        .map(|(uid, n)| match *uid {
            u32::MAX => format!("{n} of users beyond the ones tracked"),
            uid => format!("{n} of uid {uid}"),
        })
        .collect();
    if s.others > 0 {
        who.push(format!("{} of other users", s.others));
    }
    let message = format!(
        "held back {total} journal entries of suspicious calls in the last {}s ({}): at most {} at once then {}/s per user, {}/s in all; {} still counts every call",
        SUMMARY_EVERY.as_secs(),
        who.join(", "),
        PER_UID.burst,
        PER_UID.per_second,
        IN_ALL.per_second,
        copytrace_common::metric_names::CALLS_TOTAL,
    );
    let mut b = Vec::with_capacity(512);
    field(&mut b, "MESSAGE", message.as_bytes());
    field(&mut b, "PRIORITY", b"4");
    field(&mut b, "SYSLOG_IDENTIFIER", b"copytrace");
    field(&mut b, "COPYTRACE_HELD_BACK", total.to_string().as_bytes());
    b
}

/// Sends records to the journal.
pub struct Journal {
    socket: UnixDatagram,
    print: Print,
    failed: bool,
    limit: RateLimit,
    held_back: Option<IntCounter>,
}

impl Journal {
    /// Connects to journald's socket. Sends never block: an entry journald
    /// has no room for is counted as held back.
    pub fn connect(print: Print) -> io::Result<Self> {
        let socket = UnixDatagram::unbound()?;
        socket.connect(SOCKET)?;
        socket.set_nonblocking(true)?;
        Ok(Journal {
            socket,
            print,
            failed: false,
            limit: RateLimit::new(PER_UID, IN_ALL, Instant::now()),
            held_back: None,
        })
    }

    /// Where to count entries held back (rate limit, or journald busy).
    pub fn set_metrics(&mut self, held_back: IntCounter) {
        self.held_back = Some(held_back);
    }

    fn hold_back(&self) {
        if let Some(c) = &self.held_back {
            c.inc();
        }
    }

    /// Writes one entry; says whether journald took it.
    fn send(&mut self, entry: &[u8]) -> bool {
        match self.socket.send(entry) {
            Ok(_) => true,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => false,
            Err(e) => {
                // Entries are small (no memfd fallback needed); say it once.
                if !self.failed {
                    log::warn!(
                        "cannot write to the journal ({e}); entries are counted as held back"
                    );
                    self.failed = true;
                }
                false
            }
        }
    }

    /// Changes which calls are sent (config reload).
    pub fn set_print(&mut self, print: Print) {
        self.print = print;
    }
}

impl RecordSink for Journal {
    fn demand(&self) -> Demand {
        self.print.demand()
    }

    fn record(&mut self, r: &Record) {
        if !self.print.admits(r) {
            return;
        }
        if !self.limit.admit(r.event.uid, Instant::now()) {
            self.hold_back();
            return;
        }
        if !self.send(&entry(r)) {
            self.hold_back();
        }
    }

    fn batch_end(&mut self) {
        self.summarise();
    }
}

impl Journal {
    /// Writes the held-back summary when one is due (also called on a
    /// timer, so it comes after a flood has stopped).
    pub fn summarise(&mut self) {
        let now = Instant::now();
        if let Some(s) = self.limit.summary(now) {
            if !self.send(&summary_entry(&s)) {
                self.limit.put_back(s, now);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fields_with_newlines_are_length_prefixed() {
        let mut b = Vec::new();
        field(&mut b, "A", b"plain");
        field(&mut b, "B", b"two\nlines");
        let mut want = b"A=plain\nB\n".to_vec();
        want.extend_from_slice(&9u64.to_le_bytes());
        want.extend_from_slice(b"two\nlines\n");
        assert_eq!(b, want);
    }
}
