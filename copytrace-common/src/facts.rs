//! The mechanical facts about a finished call that, with the source
//! filesystem's kind and the errno, decide its verdict.
//!
//! The kernel program computes them to key its exact counts; userspace
//! computes them for every event it decodes. Both call [`CallOutcome::facts`],
//! so a count and an event of the same call can never disagree.

/// Bits of a facts word.
pub mod fact {
    /// `len` was 0.
    pub const LEN_ZERO: u32 = 1 << 0;
    /// Returned exactly `len`.
    pub const COPIED_ALL: u32 = 1 << 1;
    /// Returned 0.
    pub const COPIED_ZERO: u32 = 1 << 2;
    /// A short copy (fewer bytes than asked, no error) whose source is open
    /// and whose read position + returned reached its advertised size. Never
    /// set on a full copy: no verdict needs it there, and the position can
    /// cost the kernel side a user-memory read (see [`CallOutcome::needs_read_pos`]).
    pub const AT_SIZE: u32 = 1 << 3;
    /// Source and destination are open on different superblocks.
    pub const CROSS_DEV: u32 = 1 << 4;
    /// fd_in resolved to an open file.
    pub const IN_PRESENT: u32 = 1 << 5;
    /// fd_out resolved to an open file.
    pub const OUT_PRESENT: u32 = 1 << 6;
    /// Fewer bytes than asked, but exactly the most one call copies
    /// ([`super::max_rw_count`]): the kernel capped the request, and a copy
    /// loop goes on with the next call.
    pub const CAPPED: u32 = 1 << 7;
    /// Number of fact bits: facts words are below `1 << COUNT`.
    pub const COUNT: u32 = 8;
}

/// The most bytes one `copy_file_range` call copies on a kernel with pages
/// of `page_size` bytes: `MAX_RW_COUNT`, `INT_MAX & PAGE_MASK`
/// (include/linux/fs.h). The kernel caps every request to it, except where a
/// filesystem's own `copy_file_range` op takes the whole length.
#[inline(always)]
pub const fn max_rw_count(page_size: u64) -> u64 {
    (i32::MAX as u64) & !(page_size.wrapping_sub(1))
}

/// What the facts of a finished call are computed from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CallOutcome {
    /// Requested length.
    pub len: u64,
    /// Bytes copied, or `-errno`.
    pub ret: i64,
    /// Where the source read started (`*off_in`, else its file position).
    pub read_pos: i64,
    /// The source's advertised size at entry.
    pub size_in: i64,
    /// fd_in named an open file.
    pub in_present: bool,
    /// fd_out named an open file.
    pub out_present: bool,
    /// Both are open and on the same superblock.
    pub same_fs: bool,
    /// The running kernel's [`max_rw_count`] (0: unknown, never capped).
    pub max_per_call: u64,
}

impl CallOutcome {
    /// Whether [`CallOutcome::facts`] reads `read_pos`: only for a short
    /// copy from an open source. Other calls may leave it 0.
    #[inline(always)]
    pub fn needs_read_pos(&self) -> bool {
        self.in_present && self.ret >= 0 && self.ret as u64 != self.len
    }

    /// The facts word (bits of [`fact`]).
    #[inline(always)]
    pub fn facts(&self) -> u32 {
        let mut f = 0u32;
        if self.len == 0 {
            f |= fact::LEN_ZERO;
        }
        if self.ret >= 0 {
            if self.ret as u64 == self.len {
                f |= fact::COPIED_ALL;
            }
            if self.ret == 0 {
                f |= fact::COPIED_ZERO;
            }
            if self.max_per_call != 0
                && self.ret as u64 == self.max_per_call
                && self.len > self.max_per_call
            {
                f |= fact::CAPPED;
            }
        }
        if self.needs_read_pos() && self.read_pos.saturating_add(self.ret) >= self.size_in {
            f |= fact::AT_SIZE;
        }
        if self.in_present {
            f |= fact::IN_PRESENT;
        }
        if self.out_present {
            f |= fact::OUT_PRESENT;
        }
        if self.in_present && self.out_present && !self.same_fs {
            f |= fact::CROSS_DEV;
        }
        f
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `fact::COUNT` is written by hand; what `facts()` can set decides it.
    /// Every combination of boundary inputs is tried, and the bits they set
    /// together must be exactly the low `COUNT` bits.
    #[test]
    fn count_is_the_bits_facts_can_set() {
        let page = 4096;
        let cap = max_rw_count(page);
        let lens = [0, 1, 100, cap, cap + 1, u64::MAX];
        let rets = [-22, 0, 1, 100, cap as i64];
        let mut seen = 0u32;
        for len in lens {
            for ret in rets {
                for (read_pos, size_in) in [(0, 0), (0, 100), (100, 100), (0, 1 << 40)] {
                    for bools in 0..8u8 {
                        for max_per_call in [0, cap] {
                            seen |= CallOutcome {
                                len,
                                ret,
                                read_pos,
                                size_in,
                                in_present: bools & 1 != 0,
                                out_present: bools & 2 != 0,
                                same_fs: bools & 4 != 0,
                                max_per_call,
                            }
                            .facts();
                        }
                    }
                }
            }
        }
        assert_eq!(seen, (1u32 << fact::COUNT) - 1, "bits set: {seen:#b}");
    }

    #[test]
    fn no_source_means_no_source_facts() {
        let f = CallOutcome {
            len: 5,
            ret: -9,
            out_present: true,
            ..CallOutcome::default()
        }
        .facts();
        assert_eq!(f, fact::OUT_PRESENT);
    }

    #[test]
    fn a_full_copy_does_not_depend_on_its_position() {
        let at = |read_pos| {
            CallOutcome {
                len: 100,
                ret: 100,
                read_pos,
                size_in: 100,
                in_present: true,
                out_present: true,
                same_fs: true,
                max_per_call: 0,
            }
            .facts()
        };
        assert_eq!(at(0), at(5000));
        assert_eq!(at(0) & fact::AT_SIZE, 0);
    }

    #[test]
    fn short_copy_at_end_of_source() {
        let c = CallOutcome {
            len: 1000,
            ret: 100,
            read_pos: 0,
            size_in: 100,
            in_present: true,
            out_present: true,
            same_fs: true,
            max_per_call: max_rw_count(4096),
        };
        assert_eq!(
            c.facts(),
            fact::AT_SIZE | fact::IN_PRESENT | fact::OUT_PRESENT
        );
        let cross = CallOutcome {
            same_fs: false,
            ..c
        };
        assert_ne!(cross.facts() & fact::CROSS_DEV, 0);
    }

    /// The cap as measured on Linux 6.18 with 4 KiB pages: `cp` of a 3 GiB
    /// file's first call returned 2,147,479,552 bytes.
    #[test]
    fn the_per_call_cap_is_int_max_rounded_down_to_a_page() {
        assert_eq!(max_rw_count(4096), 2_147_479_552);
        assert_eq!(max_rw_count(65536), 2_147_418_112);
        let capped = CallOutcome {
            len: 3 << 30,
            ret: 2_147_479_552,
            read_pos: 0,
            size_in: 3 << 30,
            in_present: true,
            out_present: true,
            same_fs: true,
            max_per_call: max_rw_count(4096),
        };
        assert_ne!(capped.facts() & fact::CAPPED, 0);
        assert_eq!(capped.facts() & fact::AT_SIZE, 0);
        // Asking for exactly the cap and getting it is a full copy, not a cap.
        let exact = CallOutcome {
            len: 2_147_479_552,
            ..capped
        };
        assert_eq!(exact.facts() & fact::CAPPED, 0);
        assert_ne!(exact.facts() & fact::COPIED_ALL, 0);
    }
}
