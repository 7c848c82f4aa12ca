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
