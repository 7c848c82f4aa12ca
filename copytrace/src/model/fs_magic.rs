//! The one registry of filesystem magics copytrace knows, with what each
//! filesystem's advertised file size means.
//!
//! `copy_file_range(2)` trusts `i_size`. On filesystems whose files are
//! generated when read, that number is not the content length, and the kernel
//! copies too little while reporting success. The [`SizeTruth`] of each entry
//! is what `classify` uses to tell such a copy from a legitimate EOF.

pub use copytrace_common::SizeTruth;

/// One known filesystem.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FsInfo {
    /// `s_magic`.
    pub magic: u64,
    /// Short name, used as a metric label.
    pub name: &'static str,
    /// What the advertised size means.
    pub size_truth: SizeTruth,
}

const fn fs(magic: u64, name: &'static str, size_truth: SizeTruth) -> FsInfo {
    FsInfo {
        magic,
        name,
        size_truth,
    }
}

use SizeTruth::{Content, FixedPage, Generated, Stream};

/// Every filesystem copytrace names. Magics from include/uapi/linux/magic.h.
pub const REGISTRY: &[FsInfo] = &[
    // Kernel-generated content: size is not content.
    fs(0x9fa0, "proc", Generated),
    fs(0x6262_6572, "sysfs", FixedPage),
    fs(0x7472_6163, "tracefs", Generated),
    fs(0x6462_6720, "debugfs", Generated),
    fs(0x7363_6673, "securityfs", Generated),
    fs(0x0027_e0eb, "cgroup", Generated),
    fs(0x6367_7270, "cgroup2", Generated),
    fs(0x6265_6570, "configfs", Generated),
    fs(0xcafe_4a11, "bpf", Generated),
    fs(0x6165_676c, "pstore", Generated),
    fs(0xde5e_81e4, "efivarfs", Generated),
    fs(0xf97c_ff8c, "selinuxfs", Generated),
    fs(0x4341_5d53, "smackfs", Generated),
    fs(0x6573_5543, "fusectl", Generated),
    fs(0x6e73_6673, "nsfs", Generated),
    fs(0x1980_0202, "mqueue", Generated),
    // Streams and pseudo files.
    fs(0x5049_5045, "pipefs", Stream),
    fs(0x534f_434b, "sockfs", Stream),
    fs(0x0904_1934, "anon_inode", Stream),
    fs(0x1cd1, "devpts", Stream),
    // Real content.
    fs(0xef53, "ext4", Content),
    fs(0x0102_1994, "tmpfs", Content),
    fs(0x5846_5342, "xfs", Content),
    fs(0x9123_683e, "btrfs", Content),
    fs(0x6969, "nfs", Content),
    fs(0x794c_7630, "overlay", Content),
    fs(0xf2f5_2010, "f2fs", Content),
    fs(0x2fc1_2fc1, "zfs", Content),
    fs(0xff53_4d42, "cifs", Content),
    fs(0xfe53_4d42, "smb2", Content),
    fs(0x6573_5546, "fuse", Content),
    fs(0x8584_58f6, "ramfs", Content),
    fs(0x7371_7368, "squashfs", Content),
    fs(0xca45_1a4e, "bcachefs", Content),
    fs(0x0102_1997, "9p", Content),
    fs(0x4d44, "vfat", Content),
    fs(0x2011_bab0, "exfat", Content),
    fs(0x7366_746e, "ntfs3", Content),
    fs(0x00c3_6400, "ceph", Content),
    fs(0x9660, "iso9660", Content),
    fs(0x0000_0187, "autofs", Content),
    fs(0xe0f5_e1e2, "erofs", Content),
];

/// Looks a magic up in [`REGISTRY`].
pub fn lookup(magic: u64) -> Option<&'static FsInfo> {
    REGISTRY.iter().find(|f| f.magic == magic)
}

/// What a magic's advertised sizes mean; unknown filesystems are taken at their word.
pub fn size_truth(magic: u64) -> SizeTruth {
    lookup(magic).map_or(SizeTruth::Content, |f| f.size_truth)
}

/// Every registered filesystem whose sizes are not its content, for the
/// kernel side's table.
pub fn untrustworthy_sizes() -> Vec<(u64, SizeTruth)> {
    REGISTRY
        .iter()
        .filter(|f| f.size_truth != SizeTruth::Content)
        .map(|f| (f.magic, f.size_truth))
        .collect()
}

/// Bounded metric label for a magic: the registry name, or "other".
pub fn label(magic: u64) -> &'static str {
    lookup(magic).map_or("other", |f| f.name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn magics_are_unique() {
        for (i, a) in REGISTRY.iter().enumerate() {
            for b in &REGISTRY[i + 1..] {
                assert_ne!(a.magic, b.magic, "{} and {} share a magic", a.name, b.name);
                assert_ne!(a.name, b.name);
            }
        }
    }

    #[test]
    fn generated_filesystems_are_flagged() {
        for name in [
            "proc", "tracefs", "debugfs", "cgroup2", "configfs", "bpf", "pstore",
        ] {
            let f = REGISTRY.iter().find(|f| f.name == name).expect(name);
            assert_eq!(f.size_truth, Generated, "{name}");
        }
        assert_eq!(lookup(0x6262_6572).map(|f| f.size_truth), Some(FixedPage));
        assert_eq!(lookup(0xef53).map(|f| f.size_truth), Some(Content));
        assert_eq!(label(0x1234_5678), "other");
    }
}
