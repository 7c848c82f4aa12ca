//! What the daemon and its symbolizer process say to each other: one
//! length-prefixed JSON message per request and per answer, on a pipe.
//!
//! Both ends bound what they read: the symbolizer parses files a traced
//! user chose, so the daemon treats its answers as hostile too.

use std::io::{self, Read, Write};

use serde::{Deserialize, Serialize};

use crate::enrich::stack::{MappingsFrom, Stack};

/// The longest request the symbolizer reads: the frames, a stack copy
/// (base64) and the caller's executable mappings.
pub const MAX_REQUEST: u32 = 256 * 1024;

/// The longest answer the daemon reads; a longer one ends that symbolizer.
pub const MAX_ANSWER: u32 = 256 * 1024;

/// Who a file must be: what the kernel recorded of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct FileIdentity {
    /// Device major number.
    pub major: u32,
    /// Device minor number.
    pub minor: u32,
    /// Inode number.
    pub ino: u64,
}

/// Where an address lies in a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Offset {
    /// A file offset, from the caller's memory map.
    File(u64),
    /// The caller's `mm->start_code`: the address is in the executable's
    /// code, and its file offset follows from the program headers.
    CodeStart(u64),
}

/// A frame placed in a file.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Placed {
    /// The file's host path (a name only: it is opened and then checked).
    pub path: Vec<u8>,
    /// The identity the opened file must have.
    pub identity: FileIdentity,
    /// Where the address is in it.
    pub offset: Offset,
}

/// One captured return address and where it was found, if anywhere.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct FrameAt {
    /// The address in the caller's memory.
    pub addr: u64,
    /// Its file, or `None` when it lies in no file this daemon can name.
    pub placed: Option<Placed>,
}

/// One executable mapping of the caller's memory.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Mapped {
    /// Where it is in the caller's memory.
    pub start: u64,
    pub end: u64,
    /// The file offset mapped at `start`.
    pub offset: u64,
    /// The file's host path (a name only, as in [`Placed`]).
    pub path: Vec<u8>,
    /// The identity the opened file must have.
    pub identity: FileIdentity,
}

/// What an unwinder that reads `.eh_frame` starts from. Not `Hash`: its
/// stack bytes differ from call to call, so caches key by [`RequestKey`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnwindInput {
    /// Instruction pointer, stack pointer, frame pointer, link register.
    pub regs: [u64; 4],
    /// The stack from `regs[1]` up, base64.
    pub stack: String,
    /// The caller's executable mappings that the instruction pointer or a
    /// word of the stack falls in: the only modules an unwind can need.
    pub mappings: Vec<Mapped>,
    /// The words of the stack that point into `mappings`, by their offset
    /// in it: every frame an unwind of this stack can return is one of
    /// them. The daemon's caches tell stacks apart by these (data words
    /// differ from call to call of one loop); not sent.
    #[serde(skip)]
    pub code_words: Vec<(u32, u64)>,
}

/// What decides a request's answer, and so what it is remembered and
/// shared by: its frames, and for an unwind the registers, the mappings
/// and the stack's words that point into them.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RequestKey {
    frames: Vec<FrameAt>,
    mappings_from: Option<MappingsFrom>,
    leaf_return: Option<FrameAt>,
    unwind: Option<UnwindKey>,
    copy_skipped: bool,
}

/// An unwind's part of a [`RequestKey`]: registers, mappings, code words.
type UnwindKey = ([u64; 4], Vec<Mapped>, Vec<(u32, u64)>);

/// Name these frames, innermost first (remembered and shared by its
/// [`Request::key`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Request {
    /// The frames the kernel's frame-pointer walk found.
    pub frames: Vec<FrameAt>,
    /// Where the mappings that placed the frames came from
    /// ([`MappingsFrom::is_whole`] says whether they are the whole map).
    #[serde(default)]
    pub mappings_from: Option<MappingsFrom>,
    /// The return address a leaf syscall wrapper left for its caller (at
    /// the stack pointer on x86-64, in the link register on arm64), placed
    /// when it lies in a file: the caller a frame-pointer walk skips. Used
    /// only when it follows a call instruction.
    #[serde(default)]
    pub leaf_return: Option<FrameAt>,
    /// Registers and stack to unwind, with the mappings they need, when
    /// the kernel took them and the caller's map was readable.
    #[serde(default)]
    pub unwind: Option<UnwindInput>,
    /// The kernel copied only the stack's first words: its CPU had spent
    /// its budget of whole copies (a flood of suspicious calls).
    #[serde(default)]
    pub copy_skipped: bool,
}

impl Request {
    /// What this request is remembered and shared by (see [`RequestKey`]).
    pub fn key(&self) -> RequestKey {
        RequestKey {
            frames: self.frames.clone(),
            mappings_from: self.mappings_from,
            leaf_return: self.leaf_return.clone(),
            unwind: self
                .unwind
                .as_ref()
                .map(|u| (u.regs, u.mappings.clone(), u.code_words.clone())),
            copy_skipped: self.copy_skipped,
        }
    }
}

/// The symbolizer's answer to one request.
pub type Answer = Result<Stack, String>;

/// Why a message could not be read.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The pipe failed or closed.
    #[error(transparent)]
    Io(#[from] io::Error),
    /// The message claims more bytes than this side accepts.
    #[error("a message of {0} bytes is over the {1}-byte limit")]
    TooLong(u32, u32),
    /// The message is not what the protocol says.
    #[error("a message that does not parse: {0}")]
    Malformed(#[from] serde_json::Error),
}

/// Encodes one message with its length prefix.
pub fn encode<T: Serialize>(msg: &T) -> Result<Vec<u8>, serde_json::Error> {
    let body = serde_json::to_vec(msg)?;
    let len = u32::try_from(body.len()).unwrap_or(u32::MAX);
    let mut out = Vec::with_capacity(body.len() + 4);
    out.extend_from_slice(&len.to_le_bytes());
    out.extend_from_slice(&body);
    Ok(out)
}

/// The body length a prefix announces, if it is within `max`.
pub fn body_len(prefix: [u8; 4], max: u32) -> Result<usize, FrameError> {
    let len = u32::from_le_bytes(prefix);
    if len > max {
        return Err(FrameError::TooLong(len, max));
    }
    Ok(len as usize)
}

/// Reads one message (blocking; the symbolizer's side).
pub fn read_blocking<T: for<'de> Deserialize<'de>>(
    r: &mut impl Read,
    max: u32,
) -> Result<T, FrameError> {
    let mut prefix = [0u8; 4];
    r.read_exact(&mut prefix)?;
    let mut body = vec![0u8; body_len(prefix, max)?];
    r.read_exact(&mut body)?;
    Ok(serde_json::from_slice(&body)?)
}

/// Writes one message (blocking; the symbolizer's side).
pub fn write_blocking<T: Serialize>(w: &mut impl Write, msg: &T) -> io::Result<()> {
    let bytes = encode(msg).map_err(io::Error::other)?;
    w.write_all(&bytes)?;
    w.flush()
}
