//! A minimal reader for the kernel's BTF (`/sys/kernel/btf/vmlinux`).
//!
//! copytrace needs two things from it: byte offsets of struct members (Rust
//! eBPF code gets no CO-RE relocations, so the daemon resolves them here and
//! hands them to the programs) and whether a function exists (to choose the
//! probe back-end). The format is documented in the kernel's
//! Documentation/bpf/btf.rst; this parser reads only what those two need and
//! does no I/O beyond the one file read in [`Btf::from_sys_fs`].

use std::collections::HashMap;

/// Where the running kernel publishes its BTF.
pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

const BTF_MAGIC: u16 = 0xeb9f;

const KIND_INT: u32 = 1;
const KIND_PTR: u32 = 2;
const KIND_ARRAY: u32 = 3;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_ENUM: u32 = 6;
const KIND_FWD: u32 = 7;
const KIND_TYPEDEF: u32 = 8;
const KIND_VOLATILE: u32 = 9;
const KIND_CONST: u32 = 10;
const KIND_RESTRICT: u32 = 11;
const KIND_FUNC: u32 = 12;
const KIND_FUNC_PROTO: u32 = 13;
const KIND_VAR: u32 = 14;
const KIND_DATASEC: u32 = 15;
const KIND_FLOAT: u32 = 16;
const KIND_DECL_TAG: u32 = 17;
const KIND_TYPE_TAG: u32 = 18;
const KIND_ENUM64: u32 = 19;

/// Errors from reading or querying BTF.
#[derive(Debug, thiserror::Error)]
pub enum BtfError {
    /// The BTF file could not be read.
    #[error("cannot read {path} (the kernel needs CONFIG_DEBUG_INFO_BTF=y)")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    /// The bytes are not BTF this parser understands.
    #[error("malformed BTF: {0}")]
    Malformed(&'static str),
    /// No struct of that name.
    #[error("kernel BTF has no struct {0}")]
    NoStruct(String),
    /// The struct has no such member.
    #[error("kernel BTF: struct {strukt} has no member {member}")]
    NoMember { strukt: String, member: String },
}

#[derive(Debug, Clone)]
struct Member {
    name: u32,
    type_id: u32,
    bit_offset: u32,
}

#[derive(Debug, Clone)]
struct Type {
    kind: u32,
    name: u32,
    /// Referenced type for modifiers and typedefs; the size in bytes of
    /// ints, structs and unions.
    ref_type: u32,
    members: Vec<Member>,
    /// An array's element type and length.
    array: Option<(u32, u32)>,
}

/// Parsed BTF: the type table and the string section.
#[derive(Debug)]
pub struct Btf {
    types: Vec<Type>,
    strings: Vec<u8>,
    /// Struct and union ids by name; several may share a name.
    structs: HashMap<String, Vec<u32>>,
    funcs: HashMap<String, u32>,
}

fn u16_at(b: &[u8], off: usize) -> Result<u16, BtfError> {
    b.get(off..off + 2)
        .map(|s| u16::from_le_bytes([s[0], s[1]]))
        .ok_or(BtfError::Malformed("truncated"))
}

fn u32_at(b: &[u8], off: usize) -> Result<u32, BtfError> {
    b.get(off..off + 4)
        .map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
        .ok_or(BtfError::Malformed("truncated"))
}

impl Btf {
    /// Reads the running kernel's BTF.
    pub fn from_sys_fs() -> Result<Self, BtfError> {
        Self::from_file(VMLINUX_BTF)
    }

    /// Reads BTF from a file.
    pub fn from_file(path: &str) -> Result<Self, BtfError> {
        let bytes = std::fs::read(path).map_err(|source| BtfError::Read {
            path: path.to_string(),
            source,
        })?;
        Self::parse(&bytes)
    }

    /// Parses raw little-endian BTF bytes.
    pub fn parse(b: &[u8]) -> Result<Self, BtfError> {
        if u16_at(b, 0)? != BTF_MAGIC {
            return Err(BtfError::Malformed("bad magic (not little-endian BTF)"));
        }
        let hdr_len = u32_at(b, 4)? as usize;
        let type_off = u32_at(b, 8)? as usize;
        let type_len = u32_at(b, 12)? as usize;
        let str_off = u32_at(b, 16)? as usize;
        let str_len = u32_at(b, 20)? as usize;
        let types_start = hdr_len + type_off;
        let types_end = types_start + type_len;
        let strs_start = hdr_len + str_off;
        let strings = b
            .get(strs_start..strs_start + str_len)
            .ok_or(BtfError::Malformed("string section out of bounds"))?
            .to_vec();
        let tb = b
            .get(types_start..types_end)
            .ok_or(BtfError::Malformed("type section out of bounds"))?;

        // Type id 0 is void.
        let mut types = vec![Type {
            kind: 0,
            name: 0,
            ref_type: 0,
            members: Vec::new(),
            array: None,
        }];
        let mut pos = 0usize;
        while pos < tb.len() {
            let name = u32_at(tb, pos)?;
            let info = u32_at(tb, pos + 4)?;
            let size_or_type = u32_at(tb, pos + 8)?;
            pos += 12;
            let vlen = (info & 0xffff) as usize;
            let kind = (info >> 24) & 0x1f;
            let kind_flag = info >> 31 == 1;
            let mut members = Vec::new();
            let mut array = None;
            let extra = match kind {
                KIND_INT | KIND_VAR | KIND_DECL_TAG => 4,
                KIND_PTR | KIND_FWD | KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT
                | KIND_FUNC | KIND_FLOAT | KIND_TYPE_TAG => 0,
                KIND_ARRAY => {
                    array = Some((u32_at(tb, pos)?, u32_at(tb, pos + 8)?));
                    12
                }
                KIND_STRUCT | KIND_UNION => {
                    for i in 0..vlen {
                        let m = pos + i * 12;
                        let raw = u32_at(tb, m + 8)?;
                        members.push(Member {
                            name: u32_at(tb, m)?,
                            type_id: u32_at(tb, m + 4)?,
                            bit_offset: if kind_flag { raw & 0x00ff_ffff } else { raw },
                        });
                    }
                    12 * vlen
                }
                KIND_ENUM | KIND_FUNC_PROTO => 8 * vlen,
                KIND_DATASEC | KIND_ENUM64 => 12 * vlen,
                _ => return Err(BtfError::Malformed("unknown type kind")),
            };
            pos += extra;
            types.push(Type {
                kind,
                name,
                ref_type: size_or_type,
                members,
                array,
            });
        }

        let mut btf = Btf {
            types,
            strings,
            structs: HashMap::new(),
            funcs: HashMap::new(),
        };
        for (id, t) in btf.types.iter().enumerate() {
            if t.name == 0 {
                continue;
            }
            let name = btf.str_at(t.name).to_string();
            match t.kind {
                KIND_STRUCT | KIND_UNION => btf.structs.entry(name).or_default().push(id as u32),
                KIND_FUNC => {
                    btf.funcs.insert(name, id as u32);
                }
                _ => {}
            }
        }
        Ok(btf)
    }

    fn str_at(&self, off: u32) -> &str {
        let s = self.strings.get(off as usize..).unwrap_or_default();
        let end = s.iter().position(|&c| c == 0).unwrap_or(s.len());
        std::str::from_utf8(&s[..end]).unwrap_or("")
    }

    /// Follows typedefs and qualifiers to the underlying type id.
    fn resolve(&self, mut id: u32) -> u32 {
        for _ in 0..32 {
            match self.types.get(id as usize) {
                Some(t)
                    if matches!(
                        t.kind,
                        KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_TYPE_TAG
                    ) =>
                {
                    id = t.ref_type
                }
                _ => break,
            }
        }
        id
    }

    /// Bit offset and type id of `member` inside type `id`, looking through
    /// anonymous struct and union members the way C does.
    fn find_member(&self, id: u32, member: &str, depth: u32) -> Option<(u32, u32)> {
        if depth > 8 {
            return None;
        }
        let t = self.types.get(id as usize)?;
        for m in &t.members {
            if m.name == 0 {
                let inner = self.resolve(m.type_id);
                if let Some((off, ty)) = self.find_member(inner, member, depth + 1) {
                    return Some((m.bit_offset + off, ty));
                }
            } else if self.str_at(m.name) == member {
                return Some((m.bit_offset, m.type_id));
            }
        }
        None
    }

    /// Size in bytes of type `id` (ints, structs, unions, arrays of them).
    fn size_of(&self, id: u32, depth: u32) -> Option<u32> {
        if depth > 8 {
            return None;
        }
        let t = self.types.get(self.resolve(id) as usize)?;
        match t.kind {
            KIND_INT | KIND_STRUCT | KIND_UNION | KIND_ENUM | KIND_ENUM64 => Some(t.ref_type),
            KIND_PTR => Some(8),
            KIND_ARRAY => {
                let (elem, n) = t.array?;
                self.size_of(elem, depth + 1)?.checked_mul(n)
            }
            _ => None,
        }
    }

    /// What `what` makes of `member` (bit offset, type id) in the first
    /// `struct strukt` that has it and for which `what` has an answer.
    fn in_struct(
        &self,
        strukt: &str,
        member: &str,
        what: impl Fn(u32, u32) -> Option<u32>,
    ) -> Result<u32, BtfError> {
        let ids = self
            .structs
            .get(strukt)
            .ok_or_else(|| BtfError::NoStruct(strukt.to_string()))?;
        ids.iter()
            .find_map(|&id| {
                let (bits, ty) = self.find_member(id, member, 0)?;
                what(bits, ty)
            })
            .ok_or_else(|| BtfError::NoMember {
                strukt: strukt.to_string(),
                member: member.to_string(),
            })
    }

    /// Size in bytes of `member` in `struct strukt`.
    pub fn member_size(&self, strukt: &str, member: &str) -> Result<u32, BtfError> {
        self.in_struct(strukt, member, |_, ty| self.size_of(ty, 0))
    }

    /// Byte offset of `member` in `struct strukt` (anonymous unions included).
    pub fn member_offset(&self, strukt: &str, member: &str) -> Result<u32, BtfError> {
        self.in_struct(strukt, member, |bits, _| Some(bits / 8))
    }

    /// True when the kernel has a function of that name (a possible fentry target).
    pub fn has_function(&self, name: &str) -> bool {
        self.funcs.contains_key(name)
    }

    /// The type id of a function (what a kfunc call names).
    pub fn function_id(&self, name: &str) -> Option<u32> {
        self.funcs.get(name).copied()
    }

    /// The type id of `struct name`'s definition (not of a union, nor of a
    /// forward declaration).
    pub fn struct_id(&self, name: &str) -> Option<u32> {
        self.structs.get(name)?.iter().copied().find(|&id| {
            self.types
                .get(id as usize)
                .is_some_and(|t| t.kind == KIND_STRUCT && !t.members.is_empty())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Builds BTF bytes holding `struct outer { int a; union { long b; int c; }; }`.
    fn sample() -> Vec<u8> {
        let strings = b"\0int\0outer\0a\0b\0c\0long\0f\0".to_vec();
        // offsets: int=1 outer=5 a=11 b=13 c=15 long=17 f=22
        let mut t = Vec::new();
        let push = |t: &mut Vec<u8>, v: u32| t.extend_from_slice(&v.to_le_bytes());
        // 1: int
        push(&mut t, 1);
        push(&mut t, KIND_INT << 24);
        push(&mut t, 4);
        push(&mut t, 32);
        // 2: long
        push(&mut t, 17);
        push(&mut t, KIND_INT << 24);
        push(&mut t, 8);
        push(&mut t, 64);
        // 3: anonymous union { long b; int c; }
        push(&mut t, 0);
        push(&mut t, (KIND_UNION << 24) | 2);
        push(&mut t, 8);
        for (n, ty) in [(13u32, 2u32), (15, 1)] {
            push(&mut t, n);
            push(&mut t, ty);
            push(&mut t, 0);
        }
        // 4: struct outer { int a; <anon union at bit 64>; }
        push(&mut t, 5);
        push(&mut t, (KIND_STRUCT << 24) | 2);
        push(&mut t, 16);
        for (n, ty, off) in [(11u32, 1u32, 0u32), (0, 3, 64)] {
            push(&mut t, n);
            push(&mut t, ty);
            push(&mut t, off);
        }
        // 5: func f
        push(&mut t, 22);
        push(&mut t, KIND_FUNC << 24);
        push(&mut t, 0);

        let mut b = Vec::new();
        b.extend_from_slice(&BTF_MAGIC.to_le_bytes());
        b.push(1);
        b.push(0);
        for v in [
            24u32,
            0,
            t.len() as u32,
            t.len() as u32,
            strings.len() as u32,
        ] {
            b.extend_from_slice(&v.to_le_bytes());
        }
        b.extend_from_slice(&t);
        b.extend_from_slice(&strings);
        b
    }

    #[test]
    fn finds_direct_and_anonymous_members() {
        let btf = Btf::parse(&sample()).expect("sample parses");
        assert_eq!(btf.member_offset("outer", "a").ok(), Some(0));
        assert_eq!(btf.member_offset("outer", "b").ok(), Some(8));
        assert_eq!(btf.member_offset("outer", "c").ok(), Some(8));
        assert_eq!(btf.member_size("outer", "a").ok(), Some(4));
        assert_eq!(btf.member_size("outer", "b").ok(), Some(8));
        assert_eq!(btf.member_size("outer", "c").ok(), Some(4));
        assert!(matches!(
            btf.member_offset("outer", "zz"),
            Err(BtfError::NoMember { .. })
        ));
        assert!(matches!(
            btf.member_offset("nope", "a"),
            Err(BtfError::NoStruct(_))
        ));
        assert!(btf.has_function("f"));
        assert!(!btf.has_function("g"));
        assert_eq!(btf.function_id("f"), Some(5));
        assert_eq!(btf.struct_id("outer"), Some(4));
        assert_eq!(btf.struct_id("nope"), None);
    }

    #[test]
    fn rejects_garbage() {
        assert!(Btf::parse(b"hello world, not btf at all").is_err());
        assert!(Btf::parse(&[]).is_err());
        let mut truncated = sample();
        truncated.truncate(40);
        assert!(Btf::parse(&truncated).is_err());
    }

    #[test]
    fn reads_the_running_kernel() {
        // Offsets differ per kernel; only their presence is asserted here.
        let Ok(btf) = Btf::from_sys_fs() else {
            panic!("{VMLINUX_BTF} missing: copytrace needs a kernel with BTF");
        };
        assert!(btf.member_offset("file", "f_inode").is_ok());
        assert!(btf.member_offset("task_struct", "files").is_ok());
        assert!(btf.has_function("vfs_copy_file_range"));
        // An array member: comm is TASK_COMM_LEN chars.
        assert_eq!(btf.member_size("task_struct", "comm").ok(), Some(16));
    }
}
