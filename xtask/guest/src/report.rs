//! The guest's report: one `CT-KIND tag: text` line per fact on the serial
//! console, parsed by the host's matrix runner.

/// Prints one report line. Control characters in `text` are replaced so
/// one fact stays one line.
pub fn line(kind: &str, tag: &str, text: &str) {
    let clean: String = text
        .chars()
        .map(|c| if c.is_control() && c != '\t' { ' ' } else { c })
        .collect();
    println!("{kind} {tag}: {clean}");
}
