use super::*;

/// A zeroed raw event, for tests to fill in.
pub(crate) fn blank() -> Box<Event> {
    // SAFETY: Event is plain data; all-zero is valid.
    let mut e: Box<Event> = Box::new(unsafe { std::mem::zeroed() });
    e.backend = Backend::Tracepoint as u8;
    e.origin = Origin::Syscall as u8;
    e
}

pub(crate) fn name<const N: usize>(s: &str) -> [u8; N] {
    let mut out = [0u8; N];
    out[..s.len()].copy_from_slice(s.as_bytes());
    out
}

#[test]
fn rejects_short_records() {
    assert_eq!(
        decode(&[0u8; 10]),
        Err(DecodeError::Short {
            got: 10,
            want: RECORD_MIN
        })
    );
}

#[test]
fn a_record_cut_after_its_tail_decodes_as_the_whole() {
    let mut e = blank();
    e.pid = 7;
    e.exe.ino = 12;
    e.files[0].present = 1;
    e.push_names(
        |e| &mut e.files[0].path.names,
        &[b"in"],
        name_flag::COMPLETE,
    );
    e.files[1].present = 1;
    e.push_names(
        |e| &mut e.files[1].path.names,
        &[b"out", b"d"],
        name_flag::COMPLETE,
    );
    e.push_names(
        |e| &mut e.exe.names,
        &[b"cp", b"bin", b"usr"],
        name_flag::COMPLETE,
    );
    let cut = &e.as_bytes()[..e.record_len()];
    assert_eq!(cut.len(), RECORD_MIN + 3 + 6 + 11);
    let whole = decode(e.as_bytes()).expect("the whole record decodes");
    assert_eq!(decode(cut), Ok(whole.clone()));
    let path = |s: &Option<FileSide>| s.as_ref().map(|f| f.location.fs_path.clone());
    assert_eq!(path(&whole.file_in), Some(Untrusted::from("/in")));
    assert_eq!(path(&whole.file_out), Some(Untrusted::from("/d/out")));
    let exe = whole.exe.expect("an executable");
    assert_eq!(exe.fs_path, Untrusted::from("/usr/bin/cp"));
    // Cut inside the names: only whole components are kept, and the
    // path says it is not whole.
    let shorter = decode(&cut[..cut.len() - 3]).expect("decodes");
    let exe = shorter.exe.expect("an executable");
    assert_eq!(exe.fs_path, Untrusted::from("…/bin/cp"));
    assert!(!exe.path_complete);
    assert_eq!(path(&shorter.file_out), Some(Untrusted::from("/d/out")));
}

#[test]
fn spans_outside_the_tail_are_cut_not_followed() {
    let mut e = blank();
    e.files[0].present = 1;
    e.push_names(
        |e| &mut e.files[0].path.names,
        &[b"a", b"b"],
        name_flag::COMPLETE,
    );
    // A span claiming more components than its bytes hold, and one
    // starting past the end of the tail.
    e.files[0].path.names.count = 9;
    e.files[1].present = 1;
    e.files[1].path.names.start = u16::MAX;
    e.files[1].path.names.used = u16::MAX;
    e.files[1].path.names.count = 3;
    e.files[1].path.names.flags = name_flag::COMPLETE;
    let ev = decode(&e.as_bytes()[..e.record_len()]).expect("decodes");
    let f = ev.file_in.expect("source");
    assert_eq!(f.location.fs_path, Untrusted::from("/b/a"));
    let f = ev.file_out.expect("destination");
    assert_eq!(f.location.fs_path, Untrusted::from("…/"));
    assert!(!f.location.path_complete);
}

#[test]
fn decodes_fields_and_paths() {
    let mut e = blank();
    e.pid = 42;
    e.ret = -18;
    e.status = status::OFF_IN_GIVEN;
    e.off_in = 7;
    e.comm = name("cp");
    e.files[0].present = 1;
    e.files[0].magic = 0x9fa0;
    e.files[0].mode = 0o100444;
    e.files[0].path.dev = (8 << 20) | 3;
    e.files[0].path.mnt_id = 22;
    e.push_names(
        |e| &mut e.files[0].path.names,
        &[b"status", b"self"],
        name_flag::COMPLETE,
    );
    let ev = decode(e.as_bytes()).expect("decodes");
    assert_eq!(ev.pid, 42);
    assert_eq!(ev.errno(), Some(18));
    assert_eq!(ev.off_in, Some(7));
    assert_eq!(ev.off_out, None);
    assert_eq!(ev.comm, Untrusted::from("cp"));
    assert_eq!(ev.backend, Backend::Tracepoint);
    assert_eq!(ev.vfs_reached, None);
    assert_eq!(ev.stack, None, "no stack unless suspicious");
    let f = ev.file_in.expect("source present");
    assert_eq!(f.fs, "proc");
    assert_eq!(f.kind, FileKind::Regular);
    assert_eq!(f.location.dev, "8:3");
    assert_eq!(f.location.mnt_id, 22);
    assert_eq!(f.location.fs_path, Untrusted::from("/self/status"));
    assert!(f.location.path_complete && !f.location.deleted);
    assert!(ev.file_out.is_none());
}

/// Found by tests/untrusted_input.rs: an unknown filesystem's kernel
/// name went into the human line raw.
#[test]
fn unknown_fs_names_are_escaped() {
    let mut e = blank();
    e.files[0].present = 1;
    e.files[0].magic = 0x0bad_f00d;
    e.files[0].fstype = name("\x01\x1b[2J");
    e.files[1].present = 1;
    e.files[1].magic = 0x0bad_f00d;
    e.files[1].fstype = name("fuseblk");
    let ev = decode(e.as_bytes()).expect("decodes");
    assert_eq!(ev.file_in.expect("present").fs, r#""\x01\x1b[2J""#);
    assert_eq!(ev.file_out.expect("present").fs, "fuseblk");
}

/// The location of the source file, after `leaf_first` and `flags`
/// went through a record.
fn source_location(leaf_first: &[&[u8]], flags: u8) -> Location {
    let mut e = blank();
    e.files[0].present = 1;
    e.push_names(|e| &mut e.files[0].path.names, leaf_first, flags);
    let ev = decode(&e.as_bytes()[..e.record_len()]).expect("decodes");
    ev.file_in.expect("source").location
}

#[test]
fn paths_cut_short_or_deleted_say_so() {
    let loc = source_location(&[b"leaf", b"dir"], name_flag::CUT | name_flag::DELETED);
    assert_eq!(loc.fs_path, Untrusted::from("…/dir/leaf"));
    assert!(loc.deleted && !loc.path_complete);
}

#[test]
fn names_keep_their_exact_bytes() {
    let loc = source_location(&[b"\xff\x1b[2J", b"d\nir"], name_flag::COMPLETE);
    assert_eq!(loc.fs_path.as_bytes(), b"/d\nir/\xff\x1b[2J".as_slice());
}

#[test]
fn suspicious_records_carry_their_stack() {
    let mut e = blank();
    e.status = status::SUSPICIOUS;
    e.put_stack(&[0x401000, 0x402000]);
    e.exe.ino = 3;
    e.push_names(|e| &mut e.exe.names, &[b"cat"], name_flag::COMPLETE);
    assert!(peek_suspicious(e.as_bytes()));
    let ev = decode(&e.as_bytes()[..e.record_len()]).expect("decodes");
    assert_eq!(ev.stack.map(|s| s.addrs), Some(vec![0x401000, 0x402000]));
    assert_eq!(ev.exe.map(|x| x.fs_path), Some(Untrusted::from("/cat")));
    e.stack_bytes = -14;
    let ev = decode(e.as_bytes()).expect("decodes");
    assert_eq!(ev.stack.and_then(|s| s.error), Some(14));
    // With stacks switched off, a suspicious call has none at all.
    e.status = status::SUSPICIOUS;
    let ev = decode(e.as_bytes()).expect("decodes");
    assert!(ev.stack.is_none());
}

#[test]
fn file_kinds_from_mode() {
    assert_eq!(FileKind::from_mode(0o010600), FileKind::Fifo);
    assert_eq!(FileKind::from_mode(0o020666), FileKind::CharDevice);
    assert_eq!(FileKind::from_mode(0o040755), FileKind::Directory);
    assert_eq!(FileKind::from_mode(0), FileKind::Anonymous);
}
