//! The two vocabularies both sides encode as one byte: which back-end saw a
//! call, and who made it.

/// Which probe back-end produced an event. The kernel stores it as its `u8`
/// discriminant; userspace names it with [`Backend::as_str`] everywhere
/// (logs, metrics labels, JSON, `--probe`).
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(rename_all = "lowercase")
)]
pub enum Backend {
    /// `syscalls:sys_enter/exit_copy_file_range` tracepoints.
    Tracepoint = 1,
    /// fentry/fexit on the syscall wrapper and `vfs_copy_file_range`.
    Fentry = 2,
}

impl Backend {
    /// Every back-end, in the order `--probe auto` tries them.
    pub const ALL: [Backend; 2] = [Backend::Fentry, Backend::Tracepoint];

    /// Stable lowercase name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Backend::Tracepoint => "tracepoint",
            Backend::Fentry => "fentry",
        }
    }

    /// The back-end a raw byte names, if any.
    pub const fn from_raw(v: u8) -> Option<Self> {
        match v {
            1 => Some(Backend::Tracepoint),
            2 => Some(Backend::Fentry),
            _ => None,
        }
    }
}

/// Who called `copy_file_range`.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(
    feature = "serde",
    derive(serde::Serialize, serde::Deserialize),
    serde(rename_all = "snake_case")
)]
pub enum Origin {
    /// A process, through `copy_file_range(2)`.
    Syscall = 1,
    /// An in-kernel caller of `vfs_copy_file_range` (nfsd, overlayfs, ksmbd…).
    Kernel = 2,
}

impl Origin {
    /// Both origins.
    pub const ALL: [Origin; 2] = [Origin::Syscall, Origin::Kernel];

    /// Stable lowercase name (JSON, the metrics' `origin` label).
    pub const fn as_str(self) -> &'static str {
        match self {
            Origin::Syscall => "syscall",
            Origin::Kernel => "kernel",
        }
    }

    /// The origin a raw byte names, if any.
    pub const fn from_raw(v: u8) -> Option<Self> {
        match v {
            1 => Some(Origin::Syscall),
            2 => Some(Origin::Kernel),
            _ => None,
        }
    }
}
