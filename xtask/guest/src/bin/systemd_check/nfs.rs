//! The kernel's NFS server copies for its clients through the same
//! `vfs_copy_file_range` (the seed article's case no other tool shows):
//! a client's copy is one syscall on nfs4 and one call of the server's own,
//! and copytrace reports and counts both, the second as `origin: kernel`.

use serde_json::Value;

use crate::check;
use crate::sys::{http_get, sh};
use crate::tail_watch::{calls_during, counted, summary};
use copytrace_guest::console::Kind;
use copytrace_guest::report;

/// The check that the tracepoint back-end, which cannot see nfsd, still
/// gets the client's call right.
const TRACEPOINT: &str = "the tracepoint back-end classifies the NFS client's copy as fentry does";

/// The file copied: big enough that the server copies it in its own call.
const LEN: usize = 3_000_000;

/// Exports `/srv/nfs` (the root filesystem, ext4) and `/srv/nfstmp` (a
/// tmpfs) over loopback and mounts them with NFS 4.2; what went wrong.
fn serve_and_mount() -> Result<(), String> {
    for d in ["/srv/nfs", "/srv/nfstmp", "/mnt/nfs", "/mnt/nfstmp"] {
        std::fs::create_dir_all(d).map_err(|e| format!("mkdir {d}: {e}"))?;
    }
    let steps: [(&str, &[&str]); 5] = [
        ("mount", &["-t", "tmpfs", "tmpfs", "/srv/nfstmp"]),
        ("systemctl", &["restart", "nfs-server"]),
        ("exportfs", &["-ra"]),
        (
            "mount",
            &[
                "-t",
                "nfs",
                "-o",
                "vers=4.2",
                "127.0.0.1:/srv/nfs",
                "/mnt/nfs",
            ],
        ),
        (
            "mount",
            &[
                "-t",
                "nfs",
                "-o",
                "vers=4.2",
                "127.0.0.1:/srv/nfstmp",
                "/mnt/nfstmp",
            ],
        ),
    ];
    std::fs::write(
        "/etc/exports",
        "/srv/nfs 127.0.0.1(rw,sync,no_subtree_check,no_root_squash,fsid=1)\n\
         /srv/nfstmp 127.0.0.1(rw,sync,no_subtree_check,no_root_squash,fsid=2)\n",
    )
    .map_err(|e| format!("/etc/exports: {e}"))?;
    for (program, args) in steps {
        let (code, out) = sh(program, args);
        if code != 0 {
            return Err(format!(
                "{program} {}: exit {code}: {}",
                args.join(" "),
                out.trim()
            ));
        }
    }
    std::fs::write("/srv/nfs/a", vec![7u8; LEN]).map_err(|e| format!("/srv/nfs/a: {e}"))
}

/// The tracepoint back-end sees syscalls only: `copytrace trace --probe
/// tracepoint` around a client's `cp` within the export must classify the
/// client's call as the service's fentry probes did (`fentry_client`), and
/// show none of nfsd's.
fn tracepoint_sees_the_client(fentry_client: Option<&Value>) -> bool {
    let out = "/run/copytrace-nfs-trace.jsonl";
    let (code, said) = sh(
        "copytrace",
        &[
            "trace",
            "--probe",
            "tracepoint",
            "--json",
            "-o",
            out,
            "--",
            "cp",
            "/mnt/nfs/a",
            "/mnt/nfs/e",
        ],
    );
    let text = std::fs::read_to_string(out).unwrap_or_default();
    let _ = std::fs::remove_file(out);
    let calls: Vec<Value> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["type"] == "call")
        .map(|v| v["data"].clone())
        .collect();
    for c in &calls {
        report::line(Kind::Log, "nfs-tracepoint", &c.to_string());
    }
    let traced = calls.iter().find(|c| c["ret"] == LEN);
    let kernel = calls.iter().filter(|c| c["origin"] == "kernel").count();
    let same = |field: &str| {
        traced
            .zip(fentry_client)
            .is_some_and(|(t, f)| t[field] == f[field])
    };
    let shown = |c: Option<&Value>| c.map_or("none".to_string(), summary);
    check(
        TRACEPOINT,
        code == 0
            && traced.is_some_and(|t| {
                t["backend"] == "tracepoint" && t["origin"] == "syscall" && t["file_in"]["fs"] == "nfs"
            })
            && same("verdict")
            && same("mechanism")
            && kernel == 0,
        &format!(
            "trace exit {code} {}; tracepoint: {}; fentry (the service): {}; in-kernel calls seen by the tracepoint run: {kernel}",
            said.trim(),
            shown(traced),
            shown(fentry_client)
        ),
    )
}

/// A client's `cp` and Python copy within one export, and a `cp` from the
/// ext4 export to the tmpfs one: both halves of each, reported and counted.
pub fn nfs_server_copy() -> (bool, bool) {
    const SEEN: &str = "nfsd's server-side copy is seen and counted beside the client's call";
    const CROSS: &str = "nfsd's copy between an ext4 and a tmpfs export is seen";
    if let Err(e) = serve_and_mount() {
        let detail = format!("NFS over loopback not set up: {e}");
        check(TRACEPOINT, false, &detail);
        return (check(SEEN, false, &detail), check(CROSS, false, &detail));
    }
    let before = http_get("127.0.0.1:9977", "/metrics").unwrap_or_default();
    let (calls, ran) = calls_during(|| {
        let cp = sh("cp", &["/mnt/nfs/a", "/mnt/nfs/b"]);
        let py = sh(
            "python3",
            &[
                "-c",
                "import os; a=os.open('/mnt/nfs/a',os.O_RDONLY); b=os.open('/mnt/nfs/c',os.O_WRONLY|os.O_CREAT,0o644); print(os.copy_file_range(a,b,3000000))",
            ],
        );
        let cross = sh("cp", &["/mnt/nfs/a", "/mnt/nfstmp/d"]);
        format!(
            "cp exit {}, python copied {}, cp to the tmpfs export exit {}",
            cp.0,
            py.1.trim(),
            cross.0
        )
    });
    let after = http_get("127.0.0.1:9977", "/metrics").unwrap_or_default();
    for c in &calls {
        // The whole records, for the closing note: the host echoes CT-LOG.
        report::line(Kind::Log, "nfs", &c.to_string());
    }
    // The first call of each pair that copied the whole file.
    let on = |origin: &str, from: &str, to: &str| {
        calls.iter().find(|c| {
            c["origin"] == origin
                && c["ret"] == LEN
                && c["path_in"].as_str().is_some_and(|p| p.ends_with(from))
                && c["path_out"].as_str().is_some_and(|p| p.ends_with(to))
        })
    };
    let client = on("syscall", "/mnt/nfs/a", "/mnt/nfs/b");
    let server = on("kernel", "/srv/nfs/a", "/srv/nfs/b");
    let python_server = on("kernel", "/srv/nfs/a", "/srv/nfs/c");
    let cross_client = on("syscall", "/mnt/nfs/a", "/mnt/nfstmp/d");
    let cross = on("kernel", "/srv/nfs/a", "/srv/nfstmp/d");
    // nfsd's first try between the two exports, refused (6.1: then spliced).
    let cross_refused = calls.iter().find(|c| {
        c["origin"] == "kernel"
            && c["ret"] == -i64::from(libc::EXDEV)
            && c["path_out"]
                .as_str()
                .is_some_and(|p| p.ends_with("/srv/nfstmp/d"))
    });
    let kernel_counted = counted(&after, "kernel") - counted(&before, "kernel");
    let shown = |c: Option<&Value>| c.map_or("none".to_string(), summary);
    let seen = check(
        SEEN,
        client.is_some_and(|c| c["file_in"]["fs"] == "nfs")
            && server.is_some_and(|c| c["file_in"]["fs"] == "ext4" && c["fd_in"] == -1)
            && python_server.is_some()
            && kernel_counted >= 2.0,
        &format!(
            "{ran}; {} calls; client: {}; server: {}; server for python: {}; calls_total origin=kernel +{kernel_counted}",
            calls.len(),
            shown(client),
            shown(server),
            shown(python_server),
        ),
    );
    let crossed = check(
        CROSS,
        cross.is_some_and(|c| c["file_in"]["fs"] == "ext4" && c["file_out"]["fs"] == "tmpfs")
            && cross_client.is_some(),
        &format!(
            "client: {}; server refused: {}; server copied: {}",
            shown(cross_client),
            shown(cross_refused),
            shown(cross)
        ),
    );
    tracepoint_sees_the_client(client);
    // Leave the system as the package found it (the purge check compares).
    for d in ["/mnt/nfs", "/mnt/nfstmp"] {
        let _ = sh("umount", &[d]);
    }
    let _ = sh("exportfs", &["-ua"]);
    let _ = sh("systemctl", &["stop", "nfs-server"]);
    let _ = sh("umount", &["/srv/nfstmp"]);
    for d in ["/srv/nfs", "/srv/nfstmp", "/mnt/nfs", "/mnt/nfstmp"] {
        let _ = std::fs::remove_dir_all(d);
    }
    (seen, crossed)
}
