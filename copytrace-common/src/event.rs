//! The ring-buffer record of one reported call.
//!
//! Records are built at exit and sent only for calls someone asked to see
//! (every call, or the suspicious ones; see [`crate::ReportPolicy`]). Every
//! call is counted either way ([`crate::counts`]).
//!
//! A record is a fixed head followed by a packed [`Tail`]: the user stack
//! when one was taken, then the names of the source's, the destination's
//! and the executable's paths, each walk starting where the last ended;
//! for a suspicious call, the copy of the caller's stack, and (5.17+) the
//! [`MappingInfo`] table of the files it points into with their paths.
//! The kernel sends the head and only the tail bytes in use
//! ([`Event::record_len`]): a few hundred bytes for most calls, where
//! fixed-size name areas would cost kilobytes of ring buffer per call.

use core::mem::{align_of, offset_of, size_of};

/// Length of `task_struct.comm`.
pub const COMM_LEN: usize = 16;
/// Bytes kept of a filesystem type's name (`file_system_type.name`).
pub const FSTYPE_LEN: usize = 16;
/// Path components a walk records, leaf first.
pub const PATH_DEPTH: usize = 16;
/// Longest component a walk reads: NAME_MAX and its NUL.
pub const NAME_READ: usize = 256;
/// A walk's components start below this many bytes past its first.
pub const NAME_AREA: usize = 512;
/// Most bytes one walk uses: a component may start just below
/// [`NAME_AREA`] and be [`NAME_READ`] long.
pub const WALK_MAX: usize = NAME_AREA - 1 + NAME_READ;
/// User-space return addresses kept per suspicious call.
pub const STACK_DEPTH: usize = 32;
/// Bytes of a user stack at the start of the tail.
pub const STACK_BYTES: usize = 8 * STACK_DEPTH;
/// Least time between two reader wake-ups the kernel asks for suspicious
/// calls (`bpf_ktime_get_ns`): the calls inside it wait for the reader's
/// next look.
pub const SUSPICIOUS_WAKE_GAP_NS: u64 = 1_000_000;
/// Bytes of the kernel's `EVENTS` ring buffer, which every record goes
/// through.
pub const RING_BYTES: u32 = 4 << 20;
/// A mask over where a walk may start in [`Tail::bytes`]: the kernel
/// applies it so that the verifier can bound the walk's writes.
pub const TAIL_START_MASK: usize = 2047;
/// Bytes of the user stack, from the stack pointer up, copied for a
/// suspicious call when stacks are on, for userspace to unwind code built
/// without frame pointers with the binaries' `.eh_frame`. Measured from
/// the syscall to `main`: 40 bytes (C), 952 (Go's io.Copy), 1,208
/// (python3), 1,832 (cp), 8,584 (Rust's std::fs::copy); docs/stacks.md.
pub const UNWIND_BYTES: usize = 16384;
/// Whole stack copies a CPU may take in a burst: a flood of suspicious
/// calls would otherwise push [`UNWIND_BYTES`] per call through the ring
/// buffer, and lose records (calls are still counted exactly).
pub const UNWIND_BURST: u64 = 32;
/// How often a CPU earns one more whole copy (100 a second).
pub const UNWIND_REFILL_NS: u64 = 10_000_000;
/// What a call past the budget copies: the words at the stack pointer,
/// where a leaf wrapper's return address is.
pub const UNWIND_SKIPPED_BYTES: usize = 64;
/// The copy is read a page at a time, up to the first unmapped one (the
/// top of a stack is rarely [`UNWIND_BYTES`] above its pointer).
pub const UNWIND_CHUNK: usize = 4096;
/// Reads of one copy: a partial first page, then whole ones.
pub const UNWIND_CHUNKS: usize = UNWIND_BYTES / UNWIND_CHUNK + 1;
/// A mask over where the stack copy may start in [`Tail::bytes`] (after
/// the names, which end below it).
pub const UNWIND_START_MASK: usize = 4095;
/// Executable file mappings recorded for one stack copy (5.17+, see
/// [`MappingInfo`]): a stack's return addresses fall in a handful (the
/// executable, libc, the loader, an interpreter's modules).
pub const MAPPINGS_MAX: usize = 8;
/// Mapping lookups (`bpf_find_vma`) for one stack copy: each word that
/// may be an address and lies in no range already found costs one.
pub const MAPPING_LOOKUPS: u32 = 64;
/// The furthest into [`Tail::bytes`] the mapping table may start: just
/// after the longest stack copy, aligned (the kernel clamps the start to
/// it, which bounds the table's writes for the verifier).
pub const MAPPINGS_TABLE_LIMIT: usize = UNWIND_START_MASK + UNWIND_BYTES + 8;
/// The furthest into [`Tail::bytes`] a mapped file's path may start: after
/// a full table and the paths before it.
pub const MAPPINGS_NAMES_LIMIT: usize =
    MAPPINGS_TABLE_LIMIT + MAPPINGS_MAX * size_of::<MappingInfo>() + (MAPPINGS_MAX - 1) * WALK_MAX;
/// Bytes of [`Tail::bytes`]: room for a walk that starts at
/// [`TAIL_START_MASK`] and uses [`WALK_MAX`] bytes, for a stack copy
/// that starts at [`UNWIND_START_MASK`] (each read's bounds are proved
/// apart, so the room is one chunk more than the copy), and for a mapped
/// file's path that starts at [`MAPPINGS_NAMES_LIMIT`].
pub const TAIL_BUF: usize = max(
    max(
        TAIL_START_MASK + WALK_MAX + 1,
        UNWIND_START_MASK + 1 + UNWIND_BYTES + UNWIND_CHUNK,
    ),
    MAPPINGS_NAMES_LIMIT + WALK_MAX,
)
.next_multiple_of(8);

const fn max(a: usize, b: usize) -> usize {
    if a > b {
        a
    } else {
        b
    }
}

/// Bits of [`Event::status`].
pub mod status {
    /// The caller passed an `off_in` pointer (and [`super::Event::off_in`] holds its value).
    pub const OFF_IN_GIVEN: u8 = 1 << 0;
    /// The caller passed an `off_out` pointer.
    pub const OFF_OUT_GIVEN: u8 = 1 << 1;
    /// An offset pointer was given but could not be read.
    pub const OFF_FAULT: u8 = 1 << 2;
    /// `vfs_copy_file_range` ran for this call (only the fentry back-end can tell).
    pub const VFS_REACHED: u8 = 1 << 3;
    /// The fentry back-end saw the call; the VFS_REACHED bit is meaningful.
    pub const VFS_KNOWN: u8 = 1 << 4;
    /// A kernel read failed while describing the call: some fields are missing.
    pub const READ_FAULT: u8 = 1 << 5;
    /// The report policy marked the call suspicious.
    pub const SUSPICIOUS: u8 = 1 << 6;
    /// The user stack was taken ([`super::Event::stack_bytes`] is meaningful):
    /// suspicious calls, unless stacks are switched off.
    pub const STACK: u8 = 1 << 7;
}

/// Bits of [`Event::unwind_flags`].
pub mod unwind_flag {
    /// The stack was copied only as far as its first
    /// [`super::UNWIND_SKIPPED_BYTES`] (the leaf wrapper's return
    /// address): this CPU had spent its budget of whole copies
    /// ([`super::UNWIND_BURST`]).
    pub const SKIPPED: u8 = 1 << 0;
    /// The kernel looked up the mappings the copy points into
    /// ([`super::MappingInfo`]; 5.17+, `bpf_find_vma`).
    pub const MAPPINGS: u8 = 1 << 1;
    /// It stopped at [`super::MAPPING_LOOKUPS`] lookups: words further up
    /// the copy were not looked up.
    pub const MAPPINGS_CUT: u8 = 1 << 2;
    /// More executable mappings than [`super::MAPPINGS_MAX`]: the later ones
    /// were left out.
    pub const MAPPINGS_FULL: u8 = 1 << 3;
    /// A lookup found the caller's memory map locked (`bpf_find_vma`'s
    /// EBUSY): that address went unplaced.
    pub const MAPPINGS_BUSY: u8 = 1 << 4;
}

/// Bits of [`Event::gaps`].
pub mod gap {
    /// The call's exit was seen without its entry: a seccomp filter refused
    /// the call before the syscall ran (the syscall exit tracepoint still
    /// fires, the entry one does not), or the entry went untracked. Files,
    /// length and offsets are unknown.
    pub const NO_ENTRY: u8 = 1 << 0;
}

/// Bits of [`NameSpan::flags`].
pub mod name_flag {
    /// The walk reached the root of its filesystem.
    pub const COMPLETE: u8 = 1 << 0;
    /// The leaf was unlinked while open (a deleted file).
    pub const DELETED: u8 = 1 << 1;
    /// The walk stopped early: depth or buffer ran out, or a read failed.
    pub const CUT: u8 = 1 << 2;
    /// The path is the one the file was opened under, on another
    /// filesystem than its data: overlayfs on older kernels (6.1; not 6.12) opens the real
    /// files beneath it with the overlay file's path.
    pub const OTHER_FS: u8 = 1 << 3;
}

/// Where one walk's names sit in [`Tail::bytes`]: components from a
/// walk up a tree (dentries), leaf first, each NUL-terminated.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct NameSpan {
    /// Offset of the first component in [`Tail::bytes`].
    pub start: u16,
    /// Bytes from `start` in use.
    pub used: u16,
    /// Components recorded.
    pub count: u8,
    /// Bits of [`name_flag`].
    pub flags: u8,
    /// Explicit padding.
    pub _pad: [u8; 2],
}

/// What follows a record's head: the user stack when one was taken
/// ([`status::STACK`]: [`STACK_BYTES`] at offset 0), then the names of
/// every [`NameSpan`], packed.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Tail {
    /// Bytes of `bytes` in use: where the next walk starts.
    pub used: u16,
    /// Explicit padding, as scalars: the kernel side's compiler turns a
    /// zeroed byte array into a call to a byte-at-a-time memset subprogram.
    pub _pad: u16,
    pub _pad_word: u32,
    /// The stack, then the names.
    pub bytes: [u8; TAIL_BUF],
}

/// An executable file mapping of the caller that its stack points into, as
/// `bpf_find_vma` found it at the call: the daemon places frames with
/// these where it may not read `/proc/PID/maps`.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct MappingInfo {
    /// `vm_start`, `vm_end`.
    pub start: u64,
    pub end: u64,
    /// `vm_pgoff`: the file offset at `start`, in pages.
    pub pgoff: u64,
    /// The mapped file (`vm_file`).
    pub path: PathInfo,
}

/// Where a file lives: its inode, its mount, and its path inside its filesystem.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct PathInfo {
    /// `inode.i_ino`.
    pub ino: u64,
    /// `super_block.s_dev` (kernel encoding: major << 20 | minor).
    pub dev: u32,
    /// The id of the mount it was opened through (`mount.mnt_id`, as in mountinfo).
    pub mnt_id: u32,
    /// Inode number of that mount's namespace (as `/proc/PID/ns/mnt`).
    pub mnt_ns: u32,
    /// Explicit padding.
    pub _pad: u32,
    /// Dentry names from the file up to its filesystem's root.
    pub names: NameSpan,
}

/// One side of the copy.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct FileInfo {
    /// `inode.i_size` at entry: the size the filesystem advertises.
    pub size: i64,
    /// File position at entry (`f_pos`, or `*off` when the caller gave an offset).
    pub pos: i64,
    /// `super_block.s_magic`.
    pub magic: u64,
    /// Address of `f_op->copy_file_range` (0 when the filesystem has none).
    pub copy_op: u64,
    /// Address of `f_op->remap_file_range` (0 when the filesystem has none).
    pub remap_op: u64,
    /// `file.f_flags` (O_APPEND, O_RDONLY…).
    pub f_flags: u32,
    /// `inode.i_mode`: file type and permission bits.
    pub mode: u16,
    /// 1 when the fd resolved to an open file.
    pub present: u8,
    /// Explicit padding.
    pub _pad: u8,
    /// `super_block.s_type->name`, NUL-terminated.
    pub fstype: [u8; FSTYPE_LEN],
    /// Where it lives.
    pub path: PathInfo,
}

/// One reported `copy_file_range` call, from entry to exit.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Event {
    /// `bpf_ktime_get_ns()` at entry (CLOCK_MONOTONIC).
    pub start_ns: u64,
    /// `bpf_ktime_get_ns()` at exit.
    pub end_ns: u64,
    /// cgroup v2 id of the calling task.
    pub cgroup_id: u64,
    /// Requested length.
    pub len: u64,
    /// `*off_in` at entry when given.
    pub off_in: i64,
    /// `*off_out` at entry when given.
    pub off_out: i64,
    /// Bytes copied, or `-errno`.
    pub ret: i64,
    /// The `start_ns` of the call this one ran inside, on the same thread
    /// (overlayfs copying its real files for a syscall on the overlay), or 0.
    pub within_start_ns: u64,
    /// Thread group id (the process id users see).
    pub pid: u32,
    /// Thread id.
    pub tid: u32,
    /// Real uid.
    pub uid: u32,
    /// Real gid.
    pub gid: u32,
    /// The parent process's thread group id.
    pub ppid: u32,
    /// Source descriptor (-1 for in-kernel callers).
    pub fd_in: i32,
    /// Destination descriptor (-1 for in-kernel callers).
    pub fd_out: i32,
    /// The enclosing call's source descriptor (see `within_start_ns`), or -1.
    pub within_fd_in: i32,
    /// The enclosing call's destination descriptor, or -1.
    pub within_fd_out: i32,
    /// `flags` argument.
    pub flags: u32,
    /// The facts word the kernel counted this call under ([`crate::fact`]).
    pub facts: u32,
    /// Inode number of the caller's mount namespace.
    pub mnt_ns: u32,
    /// Bytes of the stack filled (at the start of [`Event::tail`]), or a
    /// negative errno from bpf_get_stack.
    pub stack_bytes: i32,
    /// A [`crate::Backend`] discriminant.
    pub backend: u8,
    /// An [`crate::Origin`] discriminant.
    pub origin: u8,
    /// Bits of [`status`].
    pub status: u8,
    /// Bits of [`gap`]: what copytrace did not see of the call.
    pub gaps: u8,
    /// `task_struct.comm`.
    pub comm: [u8; COMM_LEN],
    /// The parent's `comm`.
    pub parent_comm: [u8; COMM_LEN],
    /// Source, then destination.
    pub files: [FileInfo; 2],
    /// Where the executable's code is mapped (`mm->start_code`, `end_code`),
    /// to name stack frames in it after the process is gone.
    pub code_start: u64,
    pub code_end: u64,
    /// The caller's user registers at the syscall, when the stack was
    /// taken and the kernel shows them: instruction pointer, stack
    /// pointer, frame pointer, and the link register (arm64; 0 on x86-64).
    pub user_regs: [u64; 4],
    /// Where the copy of the user stack from `user_regs[1]` up starts in
    /// [`Tail::bytes`], and its length (0: no copy).
    pub unwind_at: u16,
    pub unwind_len: u16,
    /// Bits of [`unwind_flag`].
    pub unwind_flags: u8,
    /// Entries of the [`MappingInfo`] table at `maps_at` in [`Tail::bytes`].
    pub maps_count: u8,
    pub maps_at: u16,
    /// The caller's executable (`task->mm->exe_file`).
    pub exe: PathInfo,
    /// The stack and the names, sent as far as they are used.
    pub tail: Tail,
}

/// The shortest record the kernel sends: the head, without a tail byte.
pub const RECORD_MIN: usize = size_of::<Event>() - TAIL_BUF;

/// A mask above every [`Tail::used`] the kernel writes (see [`Event::record_len`]).
const TAIL_USED_MASK: usize = TAIL_BUF.next_power_of_two() - 1;

// Both sides read these bytes: a layout change must be deliberate.
const _: () = assert!(size_of::<NameSpan>() == 8 && align_of::<NameSpan>() == 2);
const _: () = assert!(size_of::<PathInfo>() == 24 + size_of::<NameSpan>());
const _: () = assert!(size_of::<FileInfo>() == 64 + size_of::<PathInfo>());
const _: () = assert!(size_of::<Tail>() == 8 + TAIL_BUF);
const _: () = assert!(
    size_of::<Event>()
        == 152 + 2 * size_of::<FileInfo>() + 16 + 40 + size_of::<PathInfo>() + size_of::<Tail>()
);
const _: () = assert!(offset_of!(Event, tail) + offset_of!(Tail, bytes) == RECORD_MIN);
const _: () = assert!(align_of::<Event>() == 8 && size_of::<Event>().is_multiple_of(8));
// A record fits a ring-buffer reservation.
const _: () = assert!(size_of::<Event>() < RING_BYTES as usize);
// The stack and the first two walks end below the mask, so every walk
// starts where the last one ended; all three and the stack fit the tail.
const _: () = assert!(STACK_BYTES + 2 * WALK_MAX <= TAIL_START_MASK);
const _: () = assert!(STACK_BYTES + 3 * WALK_MAX <= TAIL_BUF);
const _: () = assert!((TAIL_START_MASK + 1).is_power_of_two());
// The stack copy starts after the return addresses and all three walks,
// and its length fits the u16 beside it.
const _: () = assert!(STACK_BYTES + 3 * WALK_MAX + 8 <= UNWIND_START_MASK);
const _: () = assert!((UNWIND_START_MASK + 1).is_power_of_two());
const _: () =
    assert!(UNWIND_BYTES <= u16::MAX as usize && UNWIND_BYTES.is_multiple_of(UNWIND_CHUNK));
const _: () = assert!(TAIL_BUF <= u16::MAX as usize);
const _: () = assert!(size_of::<MappingInfo>() == 24 + size_of::<PathInfo>());
// A record is built in a per-CPU array slot, whose values the kernel caps
// at 32 KiB (PCPU_MIN_UNIT_SIZE).
const _: () = assert!(size_of::<Event>() <= 32 * 1024);
const _: () = assert!(RECORD_MIN.is_multiple_of(8));
// The kernel writes the names as two 8-byte words each.
const _: () = assert!(COMM_LEN == 16 && FSTYPE_LEN == 16);
const _: () = assert!(
    offset_of!(Event, comm).is_multiple_of(8)
        && offset_of!(Event, parent_comm).is_multiple_of(8)
        && offset_of!(Event, files).is_multiple_of(8)
        && offset_of!(FileInfo, fstype).is_multiple_of(8)
        && size_of::<FileInfo>().is_multiple_of(8)
);

impl Event {
    /// Bytes of this record that the kernel sends: the head, and the tail
    /// as far as it is used.
    #[inline(always)]
    pub fn record_len(&self) -> usize {
        // The mask and the min are what bound the length for the verifier.
        let used = crate::bound(usize::from(self.tail.used), TAIL_USED_MASK);
        RECORD_MIN + used.min(TAIL_BUF)
    }

    /// All of the record's bytes (tests, benchmarks and fuzzing build
    /// records this way; the reader takes any length from
    /// [`RECORD_MIN`] up).
    pub fn as_bytes(&self) -> &[u8] {
        // SAFETY: Event is #[repr(C)] plain data with explicit padding (no
        // uninitialised bytes), and the slice borrows `self` for its lifetime.
        unsafe {
            core::slice::from_raw_parts((self as *const Self).cast::<u8>(), size_of::<Self>())
        }
    }

    /// Appends a walk's components (leaf first) to the tail and points the
    /// span `which` picks at them, as the kernel does (tests and
    /// benchmarks build records this way).
    #[cfg(feature = "user")]
    pub fn push_names(
        &mut self,
        which: fn(&mut Event) -> &mut NameSpan,
        leaf_first: &[&[u8]],
        flags: u8,
    ) {
        let start = usize::from(self.tail.used);
        let mut at = start;
        for c in leaf_first {
            self.tail.bytes[at..at + c.len()].copy_from_slice(c);
            self.tail.bytes[at + c.len()] = 0;
            at += c.len() + 1;
        }
        self.tail.used = at as u16;
        *which(self) = NameSpan {
            start: start as u16,
            used: (at - start) as u16,
            count: leaf_first.len() as u8,
            flags,
            _pad: [0; 2],
        };
    }

    /// Puts a user stack at the start of the tail, as the kernel does for
    /// a suspicious call, before any names (tests and benchmarks).
    #[cfg(feature = "user")]
    pub fn put_stack(&mut self, addrs: &[u64]) {
        assert_eq!(self.tail.used, 0, "the stack goes before the names");
        for (i, a) in addrs.iter().take(STACK_DEPTH).enumerate() {
            self.tail.bytes[i * 8..i * 8 + 8].copy_from_slice(&a.to_ne_bytes());
        }
        self.stack_bytes = (8 * addrs.len().min(STACK_DEPTH)) as i32;
        self.status |= status::STACK;
        self.tail.used = STACK_BYTES as u16;
    }
}
