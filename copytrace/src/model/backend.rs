//! The probe back-ends by name: [`Backend`] (shared with the kernel side) and
//! the user's [`ProbeChoice`] among them.

use std::fmt;
use std::str::FromStr;

pub use copytrace_common::Backend;

/// Which back-end to use, as asked on the command line or in the config file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProbeChoice {
    /// fentry where the kernel allows it, else tracepoints.
    Auto,
    /// Exactly this back-end, or fail.
    Only(Backend),
}

impl ProbeChoice {
    /// Every choice, as offered by `--probe`.
    pub const ALL: [ProbeChoice; 3] = [
        ProbeChoice::Auto,
        ProbeChoice::Only(Backend::Fentry),
        ProbeChoice::Only(Backend::Tracepoint),
    ];

    /// Stable lowercase name (`auto` or the back-end's name).
    pub fn as_str(self) -> &'static str {
        match self {
            ProbeChoice::Auto => "auto",
            ProbeChoice::Only(b) => b.as_str(),
        }
    }

    /// The back-ends to try, in order.
    pub fn candidates(self) -> &'static [Backend] {
        match self {
            ProbeChoice::Auto => &Backend::ALL,
            ProbeChoice::Only(Backend::Fentry) => &[Backend::Fentry],
            ProbeChoice::Only(Backend::Tracepoint) => &[Backend::Tracepoint],
        }
    }
}

impl fmt::Display for ProbeChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for ProbeChoice {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|c| c.as_str() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = Self::ALL.iter().map(|c| c.as_str()).collect();
                format!("unknown probe {s:?}: expected one of {}", names.join(", "))
            })
    }
}

impl clap::ValueEnum for ProbeChoice {
    fn value_variants<'a>() -> &'a [Self] {
        &Self::ALL
    }

    fn to_possible_value(&self) -> Option<clap::builder::PossibleValue> {
        let help = match self {
            ProbeChoice::Auto => "fentry where the kernel allows it, else tracepoints",
            ProbeChoice::Only(Backend::Fentry) => {
                "fentry/fexit on the syscall wrapper and vfs_copy_file_range"
            }
            ProbeChoice::Only(Backend::Tracepoint) => {
                "syscalls:sys_enter/exit_copy_file_range tracepoints"
            }
        };
        Some(clap::builder::PossibleValue::new(self.as_str()).help(help))
    }
}

impl serde::Serialize for ProbeChoice {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> serde::Deserialize<'de> for ProbeChoice {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for c in ProbeChoice::ALL {
            assert_eq!(c.as_str().parse::<ProbeChoice>(), Ok(c));
        }
        assert!("kprobe".parse::<ProbeChoice>().is_err());
        assert_eq!(ProbeChoice::Auto.candidates(), &Backend::ALL);
    }
}
