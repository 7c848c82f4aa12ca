use super::*;

#[test]
fn reads_executable_mappings_with_their_identity() {
    let maps = b"55d0e0a00000-55d0e0a21000 r-xp 00002000 fe:01 123 /usr/bin/cat\n7f00-7f10 rw-p 0 0:0 0 [heap]\n7f20-7f30 r-xp 0 0:0 0 [vdso]\n";
    let m = parse_maps(maps);
    assert_eq!(m.len(), 1);
    assert_eq!((m[0].start, m[0].offset), (0x55d0_e0a0_0000, 0x2000));
    assert_eq!(
        m[0].identity,
        FileIdentity {
            major: 0xfe,
            minor: 1,
            ino: 123
        }
    );
    assert_eq!(m[0].path, b"/usr/bin/cat");
}

#[test]
fn names_frames_and_stacks_are_bounded() {
    let long = Untrusted::new(vec![b'x'; 16 * MAX_NAME]);
    let frame = Frame {
        function: Some(long.clone()),
        inlined: vec![long; 2 * MAX_INLINED],
        ..unnamed(1)
    };
    let s = Stack {
        frames: vec![frame; 2 * STACK_DEPTH],
        cut: Some("y".repeat(1 << 20)),
        note: String::new(),
        mappings: None,
    }
    .bounded();
    assert_eq!(s.frames.len(), STACK_DEPTH);
    let f = &s.frames[0];
    assert!(f
        .function
        .as_ref()
        .is_some_and(|n| n.as_bytes().len() <= MAX_NAME + 3));
    assert_eq!(f.inlined.len(), MAX_INLINED);
    assert!(s.cut.is_some_and(|c| c.len() <= MAX_TEXT + 3));
}

#[test]
fn an_address_is_placed_in_the_mapping_that_holds_it_or_none() {
    let maps = b"1000-2000 r-xp 00000000 fe:01 1 /a\n3000-4000 r-xp 00001000 fe:01 2 /b\n";
    let m = parse_maps(maps);
    assert_eq!(mapping_of(&m, 0xfff), None, "below the first");
    assert_eq!(mapping_of(&m, 0x1000), Some(0));
    assert_eq!(mapping_of(&m, 0x1fff), Some(0));
    assert_eq!(mapping_of(&m, 0x2000), None, "in the gap");
    assert_eq!(mapping_of(&m, 0x3abc), Some(1));
    assert_eq!(mapping_of(&m, 0x4000), None, "past the last");
}

#[test]
fn the_kernels_mappings_are_opened_by_host_path_in_address_order() {
    use crate::model::event::{Location, StackMapping, StackMappings};
    use crate::model::text::Untrusted;
    let at = |start: u64, end: u64, ino: u64, deleted: bool| StackMapping {
        start,
        end,
        pgoff: 2,
        location: Location {
            ino,
            dev: "254:0".into(),
            dev_raw: (254 << 20) | 1,
            mnt_id: 1,
            mnt_ns: 1,
            fs_path: Untrusted::new(format!("/f{ino}").into_bytes()),
            path_complete: true,
            deleted,
            path_on_other_fs: false,
        },
    };
    let found = StackMappings {
        found: vec![
            at(0x9000, 0xa000, 3, false),
            at(0x1000, 0x2000, 1, false),
            // Overlaps the first: a bad record, not the kernel's.
            at(0x1800, 0x3000, 2, false),
            // Unlinked since: its name may now be another file.
            at(0x5000, 0x6000, 4, true),
            // On no mount the daemon sees.
            at(0x7000, 0x8000, 5, false),
        ],
        partial: false,
    };
    let maps = mappings_from_kernel(&found, |k| {
        (k.location.ino != 5).then(|| Untrusted::new(b"/host".to_vec()))
    });
    let starts: Vec<u64> = maps.iter().map(|m| m.start).collect();
    assert_eq!(starts, [0x1000, 0x9000]);
    // SAFETY: sysconf reads a constant of the process.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as u64;
    assert_eq!(maps[0].offset, 2 * page, "vm_pgoff counts pages");
    assert_eq!(
        (
            maps[0].identity.major,
            maps[0].identity.minor,
            maps[0].identity.ino
        ),
        (254, 1, 1)
    );
}
