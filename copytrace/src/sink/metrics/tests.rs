use super::*;
use std::os::unix::fs::MetadataExt as _;

#[test]
fn declares_every_metric_with_prefix() {
    let mut m = Metrics::new("6.18.0", None).expect("registry");
    let text = m.render();
    for name in [
        "copytrace_calls_total{fs_in=\"other\",fs_out=\"other\",origin=\"syscall\",verdict=\"silent_zero_copy\"} 0",
        "copytrace_calls_total{fs_in=\"other\",fs_out=\"other\",origin=\"kernel\",verdict=\"silent_zero_copy\"} 0",
        "copytrace_bytes_copied_total 0",
        "copytrace_events_lost_total 0",
        "copytrace_call_duration_seconds_count 0",
        "copytrace_call_duration_seconds_bucket{le=\"+Inf\"} 0",
        "copytrace_probes_attached{backend=\"tracepoint\"} 0",
        "copytrace_build_info{kernel=\"6.18.0\",version=",
        "process_resident_memory_bytes",
    ] {
        assert!(text.contains(name), "{name} missing from:\n{text}");
    }
    // errors_total has no series before a call fails: its one label is the errno.
    for n in name::ALL.into_iter().filter(|n| *n != name::ERRORS_TOTAL) {
        assert!(text.contains(&format!("\n{n}")), "{n} is not exported");
    }
}

#[test]
fn units_get_their_own_label_up_to_the_limit_and_keep_it() {
    // A tree laid out like cgroup2's: a cgroup's id is its directory's inode.
    let root = std::env::temp_dir().join(format!("copytrace-units-{}", std::process::id()));
    let dirs = [
        "system.slice/a.service",
        "system.slice/b.service",
        "system.slice/c.service",
        "system.slice/a.service/worker",
        "system.slice/d.service",
    ];
    for d in dirs {
        std::fs::create_dir_all(root.join(d)).expect("mkdir");
    }
    let id = |d: &str| std::fs::metadata(root.join(d)).expect("stat").ino();
    let (a, b, c, a_worker, d) = (
        id(dirs[0]),
        id(dirs[1]),
        id(dirs[2]),
        id(dirs[3]),
        id(dirs[4]),
    );
    let mut u = UnitLabels {
        top: 2,
        names: CgroupNames::at(root.clone()),
        by_cgroup: HashMap::new(),
        own: Default::default(),
    };
    let key = |cgroup_id| CountKey {
        cgroup_id,
        ..CountKey::default()
    };
    let val = |calls| CountVal {
        calls,
        ..CountVal::default()
    };
    // The two busiest units take the two slots; the third counts as other.
    u.assign(&[(key(c), val(1)), (key(a), val(100)), (key(b), val(50))]);
    assert_eq!(
        (u.label(a), u.label(b), u.label(c)),
        ("a.service", "b.service", OTHER_UNIT)
    );
    // Slots are kept once given: a busier newcomer does not take one,
    // and a new cgroup of a labelled unit gets the unit's label.
    u.assign(&[(key(d), val(10_000)), (key(a_worker), val(1))]);
    assert_eq!(u.label(d), OTHER_UNIT);
    assert_eq!(u.label(a_worker), "a.service");
    assert_eq!(u.label(a), "a.service");
    // A cgroup nobody can name (gone, or never there) is other.
    u.assign(&[(key(u64::MAX), val(1))]);
    assert_eq!(u.label(u64::MAX), OTHER_UNIT);
    let _ = std::fs::remove_dir_all(&root);
}
