//! Small static executables written byte by byte, for attacks on the
//! symbolizer: each makes one failing `copy_file_range(-1, NULL, -1, NULL,
//! 1, 0)` (EBADF, a suspicious call whose stack is taken) and exits 0. No
//! compiler is needed, so the minimal matrix guests run them too; the
//! system call numbers are libc's.

use std::path::Path;

/// Where the single PT_LOAD segment (the whole file) is mapped.
pub const BASE: u64 = 0x40_0000;

/// The function symbol the code is named by (unless a test names it otherwise).
pub const ENTRY_NAME: &str = "attacker_entry";

/// What to put in the executable besides its code.
#[derive(Debug, Clone, Default)]
pub struct Spec {
    /// The code's symbol name; [`ENTRY_NAME`] when `None`.
    pub symbol: Option<Vec<u8>>,
    /// Adds `.debug_info` and a SHF_COMPRESSED `.debug_abbrev` whose
    /// header claims this many decompressed bytes.
    pub compressed_debug_claims: Option<u64>,
    /// Position-independent (ET_DYN, addresses from 0): the kernel loads it
    /// at a random address each run, so no two runs share addresses.
    pub pie: bool,
    /// Puts the code in a segment of its own whose address is not
    /// page-aligned (as LLD lays out executables): the kernel's
    /// `start_code` is then that unaligned address.
    pub unaligned_code: bool,
}

#[cfg(target_arch = "x86_64")]
const EM: u16 = 62;
#[cfg(target_arch = "aarch64")]
const EM: u16 = 183;

/// The machine code: the call, then exit(0).
fn code() -> Vec<u8> {
    let cfr = libc::SYS_copy_file_range as u32;
    let exit = libc::SYS_exit as u32;
    if cfg!(target_arch = "aarch64") {
        let movz = |reg: u32, imm: u32| 0xd280_0000 | (imm << 5) | reg;
        let movn0 = |reg: u32| 0x9280_0000 | reg; // mov xN, #-1
        let svc0 = 0xd400_0001u32;
        [
            movn0(0),
            movz(1, 0),
            movn0(2),
            movz(3, 0),
            movz(4, 1),
            movz(5, 0),
            movz(8, cfr),
            svc0,
            movz(8, exit),
            movz(0, 0),
            svc0,
        ]
        .iter()
        .flat_map(|w| w.to_le_bytes())
        .collect()
    } else {
        let mut c = Vec::new();
        c.extend_from_slice(&[0xbf, 0xff, 0xff, 0xff, 0xff]); // mov edi, -1
        c.extend_from_slice(&[0x31, 0xf6]); // xor esi, esi
        c.extend_from_slice(&[0xba, 0xff, 0xff, 0xff, 0xff]); // mov edx, -1
        c.extend_from_slice(&[0x45, 0x31, 0xd2]); // xor r10d, r10d
        c.extend_from_slice(&[0x41, 0xb8, 1, 0, 0, 0]); // mov r8d, 1
        c.extend_from_slice(&[0x45, 0x31, 0xc9]); // xor r9d, r9d
        c.push(0xb8); // mov eax, SYS_copy_file_range
        c.extend_from_slice(&cfr.to_le_bytes());
        c.extend_from_slice(&[0x0f, 0x05]); // syscall
        c.push(0xb8); // mov eax, SYS_exit
        c.extend_from_slice(&exit.to_le_bytes());
        c.extend_from_slice(&[0x31, 0xff]); // xor edi, edi
        c.extend_from_slice(&[0x0f, 0x05]); // syscall
        c
    }
}

struct Section {
    name: &'static str,
    kind: u32,
    flags: u64,
    addr: u64,
    data: Vec<u8>,
    link: u32,
    info: u32,
    entsize: u64,
}

fn put_u16(b: &mut Vec<u8>, v: u16) {
    b.extend_from_slice(&v.to_le_bytes());
}
fn put_u32(b: &mut Vec<u8>, v: u32) {
    b.extend_from_slice(&v.to_le_bytes());
}
fn put_u64(b: &mut Vec<u8>, v: u64) {
    b.extend_from_slice(&v.to_le_bytes());
}

/// The executable's bytes.
pub fn build(spec: &Spec) -> Vec<u8> {
    const EHDR: u64 = 64;
    const PHDR: u64 = 56;
    const PAGE: u64 = 0x1000;
    let code = code();
    let base = if spec.pie { 0 } else { BASE };
    let phnum: u16 = if spec.unaligned_code { 2 } else { 1 };
    let code_off = EHDR + PHDR * u64::from(phnum);
    // The code segment's address is congruent to its offset, a page above
    // the headers' segment.
    let code_addr = if spec.unaligned_code {
        base + PAGE + code_off
    } else {
        base + code_off
    };
    let name = spec
        .symbol
        .clone()
        .unwrap_or_else(|| ENTRY_NAME.as_bytes().to_vec());
    let mut strtab = vec![0u8];
    strtab.extend_from_slice(&name);
    strtab.push(0);
    // Symbol 0 is null; symbol 1 is the code, a global function in section 1 (.text).
    let mut symtab = vec![0u8; 24];
    put_u32(&mut symtab, 1);
    symtab.push(0x12); // STB_GLOBAL, STT_FUNC
    symtab.push(0);
    put_u16(&mut symtab, 1);
    put_u64(&mut symtab, code_addr);
    put_u64(&mut symtab, code.len() as u64);
    let mut sections = vec![
        Section {
            name: ".text",
            kind: 1,
            flags: 0x6,
            addr: code_addr,
            data: Vec::new(), // the code, already placed after the headers
            link: 0,
            info: 0,
            entsize: 0,
        },
        Section {
            name: ".symtab",
            kind: 2,
            flags: 0,
            addr: 0,
            data: symtab,
            link: 3,
            info: 1,
            entsize: 24,
        },
        Section {
            name: ".strtab",
            kind: 3,
            flags: 0,
            addr: 0,
            data: strtab,
            link: 0,
            info: 0,
            entsize: 0,
        },
    ];
    if let Some(claim) = spec.compressed_debug_claims {
        // Elf64_Chdr: ch_type ELFCOMPRESS_ZLIB, reserved, ch_size, ch_addralign; then a tiny zlib stream.
        let mut abbrev = Vec::new();
        put_u32(&mut abbrev, 1);
        put_u32(&mut abbrev, 0);
        put_u64(&mut abbrev, claim);
        put_u64(&mut abbrev, 1);
        abbrev.extend_from_slice(&[0x78, 0x9c, 0x03, 0x00, 0x00, 0x00, 0x00, 0x01]);
        sections.push(Section {
            name: ".debug_info",
            kind: 1,
            flags: 0,
            addr: 0,
            data: vec![0; 16],
            link: 0,
            info: 0,
            entsize: 0,
        });
        sections.push(Section {
            name: ".debug_abbrev",
            kind: 1,
            flags: 0x800, // SHF_COMPRESSED
            addr: 0,
            data: abbrev,
            link: 0,
            info: 0,
            entsize: 0,
        });
    }
    let mut shstrtab = vec![0u8];
    let mut name_at = Vec::new();
    for s in &sections {
        name_at.push(shstrtab.len() as u32);
        shstrtab.extend_from_slice(s.name.as_bytes());
        shstrtab.push(0);
    }
    let shstr_name = shstrtab.len() as u32;
    shstrtab.extend_from_slice(b".shstrtab\0");

    // Layout: headers, code, each section's data, .shstrtab, section headers.
    let mut body = code.clone();
    let mut offsets = Vec::new();
    for s in &sections {
        if s.name == ".text" {
            offsets.push(code_off);
            continue;
        }
        offsets.push(code_off + body.len() as u64);
        body.extend_from_slice(&s.data);
    }
    let shstr_off = code_off + body.len() as u64;
    body.extend_from_slice(&shstrtab);
    while !body.len().is_multiple_of(8) {
        body.push(0);
    }
    let shoff = code_off + body.len() as u64;
    let shnum = sections.len() as u16 + 2;
    let file_len = shoff + u64::from(shnum) * 64;

    let mut out = Vec::new();
    out.extend_from_slice(b"\x7fELF");
    out.extend_from_slice(&[2, 1, 1, 0]);
    out.extend_from_slice(&[0; 8]);
    put_u16(&mut out, if spec.pie { 3 } else { 2 }); // ET_DYN or ET_EXEC
    put_u16(&mut out, EM);
    put_u32(&mut out, 1);
    put_u64(&mut out, code_addr); // e_entry
    put_u64(&mut out, EHDR); // e_phoff
    put_u64(&mut out, shoff);
    put_u32(&mut out, 0);
    put_u16(&mut out, EHDR as u16);
    put_u16(&mut out, PHDR as u16);
    put_u16(&mut out, phnum);
    put_u16(&mut out, 64);
    put_u16(&mut out, shnum);
    // e_shstrndx: .shstrtab is last.
    put_u16(&mut out, shnum - 1);
    let mut load = |flags: u32, offset: u64, vaddr: u64, size: u64| {
        put_u32(&mut out, 1);
        put_u32(&mut out, flags);
        put_u64(&mut out, offset);
        put_u64(&mut out, vaddr);
        put_u64(&mut out, vaddr);
        put_u64(&mut out, size);
        put_u64(&mut out, size);
        put_u64(&mut out, PAGE);
    };
    if spec.unaligned_code {
        // R: the headers; R+X: the rest, from the code on.
        load(4, 0, base, code_off);
        load(5, code_off, code_addr, file_len - code_off);
    } else {
        // R+X: the whole file.
        load(5, 0, base, file_len);
    }
    out.extend_from_slice(&body);
    // Section headers: null, ours, .shstrtab.
    out.extend_from_slice(&[0; 64]);
    let mut header = |name: u32, s: &Section, off: u64, size: u64| {
        put_u32(&mut out, name);
        put_u32(&mut out, s.kind);
        put_u64(&mut out, s.flags);
        put_u64(&mut out, s.addr);
        put_u64(&mut out, off);
        put_u64(&mut out, size);
        put_u32(&mut out, s.link);
        put_u32(&mut out, s.info);
        put_u64(&mut out, 1);
        put_u64(&mut out, s.entsize);
    };
    for (i, s) in sections.iter().enumerate() {
        let size = if s.name == ".text" {
            code.len() as u64
        } else {
            s.data.len() as u64
        };
        header(name_at[i], s, offsets[i], size);
    }
    let shstr = Section {
        name: ".shstrtab",
        kind: 3,
        flags: 0,
        addr: 0,
        data: Vec::new(),
        link: 0,
        info: 0,
        entsize: 0,
    };
    header(shstr_name, &shstr, shstr_off, shstrtab.len() as u64);
    out
}

/// Writes the executable to `path`, mode 0755.
pub fn write(path: &Path, spec: &Spec) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, build(spec)).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).expect("chmod 0755");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_executable_runs_and_exits_0() {
        let dir = std::env::temp_dir().join(format!("ct-elf-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("mkdir");
        let exe = dir.join("tiny");
        write(&exe, &Spec::default());
        let st = std::process::Command::new(&exe).status().expect("run");
        assert!(st.success(), "{st}");
        let unaligned = dir.join("unaligned");
        write(
            &unaligned,
            &Spec {
                unaligned_code: true,
                ..Spec::default()
            },
        );
        let st = std::process::Command::new(&unaligned)
            .status()
            .expect("run");
        let _ = std::fs::remove_dir_all(&dir);
        assert!(st.success(), "{st}");
    }
}
