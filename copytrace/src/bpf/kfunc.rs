//! Turns the programs' placeholder calls into kfunc calls.
//!
//! Rust eBPF code cannot name a kernel function, and aya resolves no kfunc
//! relocations, so the programs call helper id
//! [`RDONLY_CAST_PLACEHOLDER`] where they mean `bpf_rdonly_cast`. Before
//! the object is loaded, every such call in its code sections becomes a
//! kfunc call (`src_reg` = `BPF_PSEUDO_KFUNC_CALL`) of the running kernel's
//! BTF id. Only code sections are touched, at instruction boundaries.

use copytrace_common::RDONLY_CAST_PLACEHOLDER;

/// `BPF_JMP | BPF_CALL`.
const CALL: u8 = 0x85;
/// `src_reg` of a call to a kernel function named by BTF id.
const PSEUDO_KFUNC_CALL: u8 = 2;
/// `SHF_EXECINSTR`.
const EXECINSTR: u64 = 0x4;
/// Bytes per instruction.
const INSN: usize = 8;

/// An ELF object held 8-byte aligned, as the ELF parser requires.
pub struct Object {
    words: Vec<u64>,
    len: usize,
}

impl Object {
    /// The object's bytes.
    pub fn bytes(&self) -> &[u8] {
        // SAFETY: `words` holds at least `len` initialised bytes, and any
        // byte of a u64 is a valid u8.
        unsafe { std::slice::from_raw_parts(self.words.as_ptr().cast(), self.len) }
    }
}

/// Errors from reading the object's section headers.
#[derive(Debug, thiserror::Error)]
#[error("the eBPF object is not the ELF this build expects: {0}")]
pub struct ElfError(&'static str);

fn uint(b: &[u8], at: usize, n: usize) -> Result<u64, ElfError> {
    let s = b
        .get(at..at.saturating_add(n))
        .ok_or(ElfError("section headers out of bounds"))?;
    let mut v = [0u8; 8];
    v[..n].copy_from_slice(s);
    Ok(u64::from_le_bytes(v))
}

/// File ranges of the object's code sections (little-endian ELF64).
fn code_sections(b: &[u8]) -> Result<Vec<std::ops::Range<usize>>, ElfError> {
    if b.get(..6) != Some(&[0x7f, b'E', b'L', b'F', 2, 1][..]) {
        return Err(ElfError("not a little-endian ELF64 file"));
    }
    let shoff = uint(b, 0x28, 8)? as usize;
    let shentsize = uint(b, 0x3a, 2)? as usize;
    let shnum = uint(b, 0x3c, 2)? as usize;
    let mut ranges = Vec::new();
    for i in 0..shnum {
        let sh = shoff.saturating_add(i.saturating_mul(shentsize));
        if uint(b, sh + 0x08, 8)? & EXECINSTR == 0 {
            continue;
        }
        let start = uint(b, sh + 0x18, 8)? as usize;
        let size = uint(b, sh + 0x20, 8)? as usize;
        let end = start.saturating_add(size);
        if b.get(start..end).is_none() {
            return Err(ElfError("a code section lies outside the file"));
        }
        ranges.push(start..end);
    }
    Ok(ranges)
}

/// A copy of `object` whose placeholder calls call kfunc `btf_id`, and how
/// many calls were rewritten.
pub fn with_rdonly_cast(object: &[u8], btf_id: u32) -> Result<(Object, usize), ElfError> {
    let mut bytes = object.to_vec();
    let placeholder = {
        let mut i = [CALL, 0, 0, 0, 0, 0, 0, 0];
        i[4..].copy_from_slice(&RDONLY_CAST_PLACEHOLDER.to_le_bytes());
        i
    };
    let mut rewritten = 0;
    for range in code_sections(&bytes)? {
        for insn in bytes[range].chunks_exact_mut(INSN) {
            if insn == placeholder {
                insn[1] = PSEUDO_KFUNC_CALL << 4;
                insn[4..].copy_from_slice(&btf_id.to_le_bytes());
                rewritten += 1;
            }
        }
    }
    let len = bytes.len();
    let mut words = vec![0u64; len.div_ceil(INSN)];
    for (w, chunk) in words.iter_mut().zip(bytes.chunks(INSN)) {
        let mut b = [0u8; INSN];
        b[..chunk.len()].copy_from_slice(chunk);
        *w = u64::from_le_bytes(b);
    }
    Ok((Object { words, len }, rewritten))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal ELF64 with one code section holding `code`, and one
    /// non-code section holding the same bytes.
    fn elf(code: &[u8]) -> Vec<u8> {
        let mut b = vec![0u8; 64];
        b[..6].copy_from_slice(&[0x7f, b'E', b'L', b'F', 2, 1]);
        let code_at = b.len();
        b.extend_from_slice(code);
        let data_at = b.len();
        b.extend_from_slice(code);
        let shoff = b.len();
        b[0x28..0x30].copy_from_slice(&(shoff as u64).to_le_bytes());
        b[0x3a..0x3c].copy_from_slice(&64u16.to_le_bytes());
        b[0x3c..0x3e].copy_from_slice(&2u16.to_le_bytes());
        for (flags, at) in [(EXECINSTR | 0x2, code_at), (0x2, data_at)] {
            let mut sh = [0u8; 64];
            sh[0x08..0x10].copy_from_slice(&flags.to_le_bytes());
            sh[0x18..0x20].copy_from_slice(&(at as u64).to_le_bytes());
            sh[0x20..0x28].copy_from_slice(&(code.len() as u64).to_le_bytes());
            b.extend_from_slice(&sh);
        }
        b
    }

    fn call(imm: u32) -> [u8; 8] {
        let mut i = [CALL, 0, 0, 0, 0, 0, 0, 0];
        i[4..].copy_from_slice(&imm.to_le_bytes());
        i
    }

    #[test]
    fn only_placeholder_calls_in_code_become_kfunc_calls() {
        let code = [
            call(113),
            call(RDONLY_CAST_PLACEHOLDER),
            call(RDONLY_CAST_PLACEHOLDER),
        ]
        .concat();
        let original = elf(&code);
        let (patched, n) = with_rdonly_cast(&original, 77_001).expect("valid ELF");
        assert_eq!(n, 2);
        let b = patched.bytes();
        assert_eq!(b.len(), original.len());
        let insn = |i: usize| &b[64 + i * 8..64 + i * 8 + 8];
        assert_eq!(insn(0), call(113), "a real helper call is left alone");
        for i in 1..3 {
            assert_eq!(insn(i)[1], 0x20, "src_reg is BPF_PSEUDO_KFUNC_CALL");
            assert_eq!(insn(i)[4..], 77_001u32.to_le_bytes());
        }
        let data = 64 + code.len();
        assert_eq!(&b[data..data + code.len()], &code[..], "data is untouched");
        assert_eq!(b.as_ptr() as usize % 8, 0, "held aligned");
    }

    #[test]
    fn the_built_object_holds_placeholders() {
        let (_, n) =
            with_rdonly_cast(super::super::load::EBPF_OBJECT, 1).expect("the built object");
        assert!(n > 0, "the programs call bpf_rdonly_cast somewhere");
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(with_rdonly_cast(b"not an elf", 1).is_err());
        let mut truncated = elf(&call(1));
        truncated.truncate(80);
        assert!(with_rdonly_cast(&truncated, 1).is_err());
    }
}
