//! Names the filesystem copy/remap operations recorded as addresses by the
//! eBPF programs, from /proc/kallsyms.
//!
//! Only text symbols whose names mention copy, remap or clone are kept
//! (about 1,400 of 120,000 on 6.18): those are the only ones an `f_op`
//! pointer copytrace records can name, and the daemon should stay small.

use std::collections::HashMap;
use std::io::BufRead;

/// Address → symbol name for copy/remap/clone functions.
#[derive(Debug, Default)]
pub struct OpNames {
    names: HashMap<u64, String>,
}

fn wanted(name: &str) -> bool {
    name.contains("copy") || name.contains("remap") || name.contains("clone")
}

impl OpNames {
    /// Reads /proc/kallsyms; empty when unreadable or addresses are hidden (kptr_restrict).
    ///
    /// Line by line: the whole text is 10 MiB and more on a distribution
    /// kernel, of which the daemon keeps a few hundred names.
    pub fn load() -> Self {
        std::fs::File::open("/proc/kallsyms")
            .map(|f| Self::read(std::io::BufReader::new(f)))
            .unwrap_or_default()
    }

    /// Parses kallsyms text.
    pub fn parse(text: &str) -> Self {
        Self::read(text.as_bytes())
    }

    /// Parses kallsyms lines from `input` until its end or a read error.
    fn read(mut input: impl BufRead) -> Self {
        let mut names = HashMap::new();
        let mut line = String::new();
        loop {
            line.clear();
            match input.read_line(&mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
            let mut f = line.split_whitespace();
            let (Some(addr), Some(kind), Some(name)) = (f.next(), f.next(), f.next()) else {
                continue;
            };
            if !matches!(kind, "t" | "T") || !wanted(name) {
                continue;
            }
            if let Ok(a) = u64::from_str_radix(addr, 16) {
                if a != 0 {
                    names.entry(a).or_insert_with(|| name.to_string());
                }
            }
        }
        Self { names }
    }

    /// The function at exactly `addr`.
    pub fn name(&self, addr: u64) -> Option<&str> {
        self.names.get(&addr).map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_copy_and_remap_functions() {
        let t = "ffffffff8185a510 t ovl_copy_file_range\nffffffff81000000 T _stext\n0000000000000000 t hidden_copy\nffffffff8185a440 t ovl_remap_file_range [overlay]\n";
        let n = OpNames::parse(t);
        assert_eq!(n.name(0xffff_ffff_8185_a510), Some("ovl_copy_file_range"));
        assert_eq!(n.name(0xffff_ffff_8185_a440), Some("ovl_remap_file_range"));
        assert_eq!(n.name(0xffff_ffff_8100_0000), None);
        assert_eq!(n.name(0), None);
    }
}
