//! Walks up a dentry tree into a [`NameBuf`]: component names leaf first,
//! packed, each read whole (up to NAME_MAX), stopping at the filesystem's
//! root, with flags saying whether the walk was complete and whether the
//! leaf was deleted.

use aya_ebpf::helpers::generated::bpf_probe_read_kernel_str;
use copytrace_common::{name_flag, KernelOffsets, NameBuf, NAME_AREA, NAME_READ, PATH_DEPTH};

use crate::kread::{read, Fault};

/// Fills `out` (ring-buffer memory) with the path of `dentry` inside its
/// filesystem. Reports a fault only for the first reads; a fault later in
/// the walk marks the path as cut.
#[inline(always)]
pub fn walk(dentry: u64, out: *mut NameBuf, off: &KernelOffsets) -> Result<(), Fault> {
    let mut used: usize = 0;
    let mut count: u8 = 0;
    let mut flags: u8 = 0;
    // SAFETY: `out` points into a reserved ring-buffer slot large enough
    // for a NameBuf; fields are written through raw pointers so nothing
    // uninitialised is read.
    let bytes = unsafe { core::ptr::addr_of_mut!((*out).bytes) }.cast::<u8>();
    if dentry != 0 {
        // Unlinked while open: unhashed but not a root (d_unlinked()).
        let pprev: u64 = read(dentry, off.dentry_d_hash_pprev)?;
        let parent: u64 = read(dentry, off.dentry_d_parent)?;
        if pprev == 0 && parent != dentry {
            flags |= name_flag::DELETED;
        }
        let mut d = dentry;
        let mut done = false;
        for _ in 0..PATH_DEPTH {
            let Ok(parent) = read::<u64>(d, off.dentry_d_parent) else {
                break;
            };
            // The root of a filesystem is its own parent; its name is not a component.
            if parent == d || parent == 0 {
                done = true;
                break;
            }
            if used >= NAME_AREA {
                break;
            }
            let Ok(name) = read::<u64>(d, off.dentry_d_name_name) else {
                break;
            };
            // SAFETY: `used & (NAME_AREA - 1)` < NAME_AREA and NAME_READ more
            // bytes fit in NAME_BUF; the helper writes at most NAME_READ bytes
            // (NUL included) and faults harmlessly on a bad `name`.
            let n = unsafe {
                bpf_probe_read_kernel_str(
                    bytes.add(used & (NAME_AREA - 1)).cast(),
                    NAME_READ as u32,
                    name as *const core::ffi::c_void,
                )
            };
            if n <= 0 {
                break;
            }
            used += (n as usize).min(NAME_READ);
            count += 1;
            d = parent;
        }
        flags |= if done {
            name_flag::COMPLETE
        } else {
            name_flag::CUT
        };
    }
    // SAFETY: as above; plain field writes into the reserved slot.
    unsafe {
        (*out).used = used.min(u16::MAX as usize) as u16;
        (*out).count = count;
        (*out).flags = flags;
    }
    Ok(())
}
