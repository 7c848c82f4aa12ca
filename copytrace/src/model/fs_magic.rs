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

/// A magic from the libc crate (`statfs.f_type`, a `c_long` holding the
/// kernel's unsigned `s_magic`), widened as the kernel side reads it.
const fn libc_magic(m: libc::c_long) -> u64 {
    m as u64
}

/// Magics the libc crate does not export. Those named in
/// include/uapi/linux/magic.h are checked against that header (the
/// `uapi_header` test); the rest, set only inside the kernel, against
/// `statfs()` of a real mount (the `registry_*` kernel tests).
mod unexported {
    /// `PIPEFS_MAGIC`.
    pub const PIPEFS: u64 = 0x5049_5045;
    /// `SOCKFS_MAGIC`.
    pub const SOCKFS: u64 = 0x534f_434b;
    /// `ANON_INODE_FS_MAGIC`.
    pub const ANON_INODE: u64 = 0x0904_1934;
    /// `PSTOREFS_MAGIC`.
    pub const PSTORE: u64 = 0x6165_676c;
    /// `EFIVARFS_MAGIC`.
    pub const EFIVARFS: u64 = 0xde5e_81e4;
    /// `RAMFS_MAGIC`.
    pub const RAMFS: u64 = 0x8584_58f6;
    /// `SQUASHFS_MAGIC`.
    pub const SQUASHFS: u64 = 0x7371_7368;
    /// `V9FS_MAGIC`.
    pub const V9FS: u64 = 0x0102_1997;
    /// `EXFAT_SUPER_MAGIC`.
    pub const EXFAT: u64 = 0x2011_bab0;
    /// `CEPH_SUPER_MAGIC`.
    pub const CEPH: u64 = 0x00c3_6400;
    /// `EROFS_SUPER_MAGIC_V1`.
    pub const EROFS: u64 = 0xe0f5_e1e2;
    /// `CIFS_SUPER_MAGIC`.
    pub const CIFS: u64 = 0xff53_4d42;
    /// `SMB2_SUPER_MAGIC`.
    pub const SMB2: u64 = 0xfe53_4d42;
    /// `CONFIGFS_MAGIC`, fs/configfs/mount.c (not in uapi).
    pub const CONFIGFS: u64 = 0x6265_6570;
    /// `FUSE_CTL_SUPER_MAGIC`, fs/fuse/control.c (not in uapi).
    pub const FUSECTL: u64 = 0x6573_5543;
    /// `MQUEUE_MAGIC`, ipc/mqueue.c (not in uapi).
    pub const MQUEUE: u64 = 0x1980_0202;

    /// Each constant above that uapi names, with its macro.
    #[cfg(test)]
    pub const UAPI_NAMES: &[(u64, &str)] = &[
        (PIPEFS, "PIPEFS_MAGIC"),
        (SOCKFS, "SOCKFS_MAGIC"),
        (ANON_INODE, "ANON_INODE_FS_MAGIC"),
        (PSTORE, "PSTOREFS_MAGIC"),
        (EFIVARFS, "EFIVARFS_MAGIC"),
        (RAMFS, "RAMFS_MAGIC"),
        (SQUASHFS, "SQUASHFS_MAGIC"),
        (V9FS, "V9FS_MAGIC"),
        (EXFAT, "EXFAT_SUPER_MAGIC"),
        (CEPH, "CEPH_SUPER_MAGIC"),
        (EROFS, "EROFS_SUPER_MAGIC_V1"),
        (CIFS, "CIFS_SUPER_MAGIC"),
        (SMB2, "SMB2_SUPER_MAGIC"),
    ];
}

/// Every filesystem copytrace names. Magics come from the libc crate (which
/// mirrors include/uapi/linux/magic.h) wherever it has them; a kernel test
/// checks each against `statfs()` of a real mount. A filesystem not listed
/// is named "other" and its sizes taken at their word.
pub const REGISTRY: &[FsInfo] = &[
    // Kernel-generated content: size is not content.
    fs(libc_magic(libc::PROC_SUPER_MAGIC), "proc", Generated),
    fs(libc_magic(libc::SYSFS_MAGIC), "sysfs", FixedPage),
    fs(libc_magic(libc::TRACEFS_MAGIC), "tracefs", Generated),
    fs(libc_magic(libc::DEBUGFS_MAGIC), "debugfs", Generated),
    fs(libc_magic(libc::SECURITYFS_MAGIC), "securityfs", Generated),
    fs(libc_magic(libc::CGROUP_SUPER_MAGIC), "cgroup", Generated),
    fs(libc_magic(libc::CGROUP2_SUPER_MAGIC), "cgroup2", Generated),
    fs(unexported::CONFIGFS, "configfs", Generated),
    fs(libc_magic(libc::BPF_FS_MAGIC), "bpf", Generated),
    fs(unexported::PSTORE, "pstore", Generated),
    fs(unexported::EFIVARFS, "efivarfs", Generated),
    fs(libc_magic(libc::SELINUX_MAGIC), "selinuxfs", Generated),
    fs(libc_magic(libc::SMACK_MAGIC), "smackfs", Generated),
    fs(unexported::FUSECTL, "fusectl", Generated),
    fs(libc_magic(libc::NSFS_MAGIC), "nsfs", Generated),
    fs(unexported::MQUEUE, "mqueue", FixedPage),
    // Streams and pseudo files.
    fs(unexported::PIPEFS, "pipefs", Stream),
    fs(unexported::SOCKFS, "sockfs", Stream),
    fs(unexported::ANON_INODE, "anon_inode", Stream),
    fs(libc_magic(libc::DEVPTS_SUPER_MAGIC), "devpts", Stream),
    // Real content.
    fs(libc_magic(libc::EXT4_SUPER_MAGIC), "ext4", Content),
    fs(libc_magic(libc::TMPFS_MAGIC), "tmpfs", Content),
    fs(libc_magic(libc::XFS_SUPER_MAGIC), "xfs", Content),
    fs(libc_magic(libc::BTRFS_SUPER_MAGIC), "btrfs", Content),
    fs(libc_magic(libc::NFS_SUPER_MAGIC), "nfs", Content),
    fs(libc_magic(libc::OVERLAYFS_SUPER_MAGIC), "overlay", Content),
    fs(libc_magic(libc::F2FS_SUPER_MAGIC), "f2fs", Content),
    fs(unexported::CIFS, "cifs", Content),
    fs(unexported::SMB2, "smb2", Content),
    fs(libc_magic(libc::FUSE_SUPER_MAGIC), "fuse", Content),
    fs(unexported::RAMFS, "ramfs", Content),
    fs(unexported::SQUASHFS, "squashfs", Content),
    fs(libc_magic(libc::BCACHEFS_SUPER_MAGIC), "bcachefs", Content),
    fs(unexported::V9FS, "9p", Content),
    fs(libc_magic(libc::MSDOS_SUPER_MAGIC), "vfat", Content),
    fs(unexported::EXFAT, "exfat", Content),
    fs(unexported::CEPH, "ceph", Content),
    fs(libc_magic(libc::ISOFS_SUPER_MAGIC), "iso9660", Content),
    fs(libc_magic(libc::AUTOFS_SUPER_MAGIC), "autofs", Content),
    fs(unexported::EROFS, "erofs", Content),
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

    /// The magics libc lacks equal their macros in the kernel's uapi header
    /// (linux-libc-dev, installed by `cargo xtask provision`).
    #[test]
    fn unexported_magics_match_the_uapi_header() {
        const HEADER: &str = "/usr/include/linux/magic.h";
        let text = std::fs::read_to_string(HEADER).unwrap_or_else(|e| {
            panic!("{HEADER}: {e} (`cargo xtask provision` installs linux-libc-dev)")
        });
        let defined = |name: &str| {
            text.lines().find_map(|l| {
                let mut w = l.split_whitespace();
                (w.next() == Some("#define") && w.next() == Some(name))
                    .then(|| w.next())
                    .flatten()
                    .and_then(|v| u64::from_str_radix(v.trim_start_matches("0x"), 16).ok())
            })
        };
        for &(magic, name) in unexported::UAPI_NAMES {
            assert_eq!(defined(name), Some(magic), "{name} in {HEADER}");
        }
        // The kernel-only ones really are absent from uapi: else libc or
        // the header would be their source.
        for name in ["CONFIGFS_MAGIC", "FUSE_CTL_SUPER_MAGIC", "MQUEUE_MAGIC"] {
            assert_eq!(defined(name), None, "{name} is in {HEADER} now");
        }
    }

    #[test]
    fn sysfs_is_the_fixed_page_filesystem() {
        let sysfs = REGISTRY.iter().find(|f| f.name == "sysfs").expect("sysfs");
        assert_eq!(sysfs.magic, libc::SYSFS_MAGIC as u64);
        assert_eq!(sysfs.size_truth, FixedPage);
        assert_eq!(label(0x1234_5678), "other");
    }
}
