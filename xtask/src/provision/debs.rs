//! The Debian packages `cargo xtask provision` installs, with the programs
//! of theirs that run here; its tests hold the table to what the sources
//! run and to what Debian ships.

/// A Debian package the tasks install.
#[cfg_attr(
    not(test),
    expect(dead_code, reason = "what the table says; its tests read it")
)]
pub struct Deb {
    pub package: &'static str,
    /// The package's programs the tests, benchmarks and tasks run (none
    /// when what they need is files: headers, man pages).
    programs: &'static [&'static str],
    /// What needs it.
    why: &'static str,
}

const fn deb(package: &'static str, programs: &'static [&'static str], why: &'static str) -> Deb {
    Deb {
        package,
        programs,
        why,
    }
}

/// Debian packages, each with its programs run here and what needs them.
pub const DEB_PACKAGES: &[Deb] = &[
    deb("python3", &["python3"], "client tests (os.copy_file_range)"),
    deb(
        "coreutils",
        &["cp", "cat", "date", "mknod", "timeout"],
        "client tests (cp, cat), the benchmark's date, the guest's /dev nodes, gdb's time limit",
    ),
    deb(
        "util-linux",
        &["setarch"],
        "mount namespaces (unshare), mount; stack tests (setarch -R: the addresses gdb sees)",
    ),
    deb("golang-go", &["go"], "client and stack tests (Go io.Copy)"),
    deb(
        "gcc",
        &["gcc", "cc"],
        "stack tests (C caller with frame pointers), symbolizer fuzz (DWARF inputs)",
    ),
    deb(
        "binutils",
        &["readelf"],
        "attack tests (readelf checks the hand-built executables)",
    ),
    deb(
        "strace",
        &["strace"],
        "benchmarks (strace -f); stack tests (holding cp's exit)",
    ),
    deb(
        "gdb",
        &["gdb"],
        "stack tests: gdb's backtrace is the truth copytrace's frames are held to",
    ),
    deb(
        "procps",
        &["sysctl"],
        "benchmarks (sysctl kernel.bpf_stats_enabled)",
    ),
    deb("bpftrace", &["bpftrace"], "benchmarks (bpftrace)"),
    deb(
        "bpftool",
        &["bpftool"],
        "benchmarks (per-program kernel cost)",
    ),
    deb(
        "e2fsprogs",
        &["mkfs.ext4", "filefrag"],
        "ext4 test filesystems (mkfs.ext4), extent checks (filefrag)",
    ),
    deb(
        "xfsprogs",
        &["mkfs.xfs", "xfs_io"],
        "xfs test filesystems (mkfs.xfs) and xfstests replays (xfs_io)",
    ),
    deb(
        "btrfs-progs",
        &["mkfs.btrfs"],
        "btrfs test filesystems (mkfs.btrfs)",
    ),
    deb(
        "linux-libc-dev",
        &[],
        "the uapi headers the filesystem registry is checked against",
    ),
    deb(
        "prometheus",
        &["prometheus", "promtool"],
        "metrics tests (prometheus, promtool)",
    ),
    deb(
        "systemd",
        &["systemd-analyze"],
        "unit checks (systemd-analyze)",
    ),
    deb(
        "man-db",
        &[],
        "unit checks (systemd-analyze verify opens Documentation= man pages)",
    ),
    deb(
        "manpages-dev",
        &[],
        "unit checks (the unit's man:copy_file_range(2))",
    ),
    deb(
        "qemu-system-x86",
        &["qemu-system-x86_64"],
        "kernel matrix and systemd guests (x86_64)",
    ),
    deb(
        "qemu-system-arm",
        &["qemu-system-aarch64"],
        "kernel matrix (arm64)",
    ),
    deb("cpio", &["cpio"], "guest initramfs"),
    deb("xz-utils", &["xz"], "kernel images and modules"),
    deb("zstd", &["zstd"], "kernel images and modules"),
    deb(
        "mmdebstrap",
        &["mmdebstrap"],
        "the systemd guest's root filesystem",
    ),
    deb(
        "qemu-utils",
        &["qemu-img"],
        "the systemd guests' copy-on-write disks (qemu-img)",
    ),
    deb("lintian", &["lintian"], "checking the Debian package"),
    deb("dpkg-dev", &[], "building the Debian package"),
];

/// Programs run here that the table does not install, with what provides
/// them: Debian's essential packages (and apt), and the Rust toolchain
/// that runs cargo xtask at all.
#[cfg(test)]
const ALWAYS_THERE: &[(&str, &str)] = &[
    ("sh", "dash"),
    ("tar", "tar"),
    ("gzip", "gzip"),
    ("find", "findutils"),
    ("dpkg-deb", "dpkg"),
    ("dpkg-query", "dpkg"),
    ("apt-get", "apt"),
    ("cargo", "the Rust toolchain"),
    ("rustc", "the Rust toolchain"),
    ("rustup", "the Rust toolchain"),
];

#[cfg(test)]
mod tests {
    use std::path::{Path, PathBuf};

    use std::process::Command;

    use super::*;
    use crate::arch::Arch;
    use crate::provision::deb_installed;

    /// The sources whose programs run on this machine: cargo xtask, the
    /// test kit and the integration tests (the guest programs run in
    /// guests, with what their own images hold).
    fn sources() -> Vec<(PathBuf, String)> {
        fn walk(dir: &Path, out: &mut Vec<(PathBuf, String)>) {
            for e in std::fs::read_dir(dir)
                .expect("a source directory")
                .flatten()
            {
                let p = e.path();
                if p.is_dir() {
                    walk(&p, out);
                } else if p.extension().is_some_and(|x| x == "rs") {
                    let mut text = std::fs::read_to_string(&p).expect("a source file");
                    // This file's tests spell programs as data.
                    if p.ends_with("src/provision/debs.rs") {
                        text.truncate(text.find("#[cfg(test)]").unwrap_or(text.len()));
                    }
                    out.push((p, text));
                }
            }
        }
        let root = Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut out = Vec::new();
        for d in ["src", "testkit/src", "../copytrace/tests"] {
            walk(&root.join(d), &mut out);
        }
        assert!(out.len() > 20, "found only {} source files", out.len());
        out
    }

    /// The leading string-literal arguments of every `call(` in `text`
    /// (`Command::new("cp")` gives `["cp"]`); calls whose first argument
    /// is not a literal are left out.
    fn literal_args(text: &str, call: &str) -> Vec<Vec<String>> {
        let mut found = Vec::new();
        for (at, _) in text.match_indices(call) {
            let mut rest = &text[at + call.len()..];
            let mut args = Vec::new();
            while let Some(lit) = rest.trim_start().strip_prefix('"') {
                let Some(end) = lit.find('"') else { break };
                args.push(lit[..end].to_string());
                rest = lit[end + 1..].trim_start();
                match rest.strip_prefix(',') {
                    Some(r) => rest = r,
                    None => break,
                }
            }
            if !args.is_empty() {
                found.push(args);
            }
        }
        found
    }

    fn table_package(program: &str) -> Option<&'static str> {
        DEB_PACKAGES
            .iter()
            .find(|d| d.programs.contains(&program))
            .map(|d| d.package)
            .or_else(|| {
                ALWAYS_THERE
                    .iter()
                    .find(|(p, _)| *p == program)
                    .map(|(_, pkg)| *pkg)
            })
    }

    #[test]
    fn every_package_is_listed_once_and_says_what_needs_it() {
        for (i, d) in DEB_PACKAGES.iter().enumerate() {
            assert!(!d.why.is_empty(), "{}", d.package);
            assert!(
                DEB_PACKAGES[..i].iter().all(|e| e.package != d.package),
                "{} twice",
                d.package
            );
        }
    }

    /// What the module promises: every program the tests, benchmarks and
    /// tasks run is installed by a package listed here (or is always
    /// there), and a test's `require_program(program, package)` names the
    /// package the table installs it with.
    #[test]
    fn every_program_run_here_comes_from_the_table() {
        let mut missing = Vec::new();
        let mut checked = 0;
        for (path, text) in sources() {
            let name = path.display();
            for args in literal_args(&text, "Command::new(") {
                let program = &args[0];
                // The project's own binaries, by path.
                if program.contains('/') {
                    continue;
                }
                checked += 1;
                if table_package(program).is_none() {
                    missing.push(format!("{name}: {program} is in no package"));
                }
            }
            for args in literal_args(&text, "require_program(") {
                let [program, package] = &args[..] else {
                    continue;
                };
                checked += 1;
                if table_package(program) != Some(package.as_str()) {
                    missing.push(format!(
                        "{name}: {program} from {package}, the table says {:?}",
                        table_package(program)
                    ));
                }
            }
            for args in literal_args(&text, "ensure_debs(&[") {
                for package in args {
                    checked += 1;
                    if !DEB_PACKAGES.iter().any(|d| d.package == package) {
                        missing.push(format!(
                            "{name}: ensure_debs({package}) is not in the table"
                        ));
                    }
                }
            }
        }
        for arch in [Arch::X86_64, Arch::Aarch64] {
            if table_package(arch.qemu()).is_none() {
                missing.push(format!("{} is in no package", arch.qemu()));
            }
        }
        assert!(
            checked > 40,
            "only {checked} programs found: is the scan broken?"
        );
        assert!(missing.is_empty(), "{}", missing.join("\n"));
    }

    #[test]
    fn literal_args_reads_calls_across_lines() {
        let text = "Command::new(\"cp\") require_program(\n    \"go\",\n    \"golang-go\",\n) Command::new(bin)";
        assert_eq!(literal_args(text, "Command::new("), [["cp"]]);
        assert_eq!(
            literal_args(text, "require_program("),
            [["go", "golang-go"]]
        );
    }

    /// (path, owning package) for each of `paths` dpkg knows (`dpkg -S`),
    /// architecture qualifiers dropped.
    fn owners(paths: &[String]) -> Vec<(String, String)> {
        let Ok(out) = Command::new("dpkg").arg("-S").args(paths).output() else {
            return Vec::new();
        };
        let mut found = Vec::new();
        for l in String::from_utf8_lossy(&out.stdout).lines() {
            if l.starts_with("diversion by") {
                continue;
            }
            let Some((pkgs, path)) = l.split_once(": ") else {
                continue;
            };
            for p in pkgs.split(", ") {
                let p = p.split(':').next().unwrap_or(p);
                found.push((path.to_string(), p.to_string()));
            }
        }
        found
    }

    /// The packages `package` depends on directly.
    fn depends(package: &str) -> Vec<String> {
        let out = Command::new("dpkg-query")
            .args(["-W", "-f=${Depends},${Pre-Depends}", package])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        out.split([',', '|'])
            .filter_map(|d| d.split_whitespace().next())
            .map(|d| d.split(':').next().unwrap_or(d).to_string())
            .collect()
    }

    /// The table against Debian itself: on a Debian machine, each program
    /// listed for an installed package is a file of that package or of a
    /// package it depends on (python3 ships in python3-minimal), directly
    /// or as the alternative it points at (cc is gcc's).
    #[test]
    fn the_programs_are_where_debian_puts_them() {
        if !deb_installed("dpkg") {
            return; // Not a Debian machine: nothing to check against.
        }
        let listed = DEB_PACKAGES.iter().map(|d| (d.package, d.programs)).chain(
            ALWAYS_THERE
                .iter()
                .filter(|(_, pkg)| !pkg.contains(' '))
                .map(|(p, pkg)| (*pkg, std::slice::from_ref(p))),
        );
        let paths_of = |program: &str| -> Vec<String> {
            let mut paths: Vec<String> = ["/usr/bin", "/usr/sbin", "/bin", "/sbin"]
                .iter()
                .map(|d| format!("{d}/{program}"))
                .collect();
            if let Ok(t) = std::fs::read_link(format!("/etc/alternatives/{program}")) {
                paths.push(t.display().to_string());
            }
            paths
        };
        let installed: Vec<(&str, &[&str])> = listed.filter(|(p, _)| deb_installed(p)).collect();
        // One dpkg -S for every path: each call reads the whole database.
        let all: Vec<String> = installed
            .iter()
            .flat_map(|(_, programs)| programs.iter().flat_map(|p| paths_of(p)))
            .collect();
        let owned = owners(&all);
        let mut wrong = Vec::new();
        let mut checked = 0;
        for (package, programs) in installed {
            let mut from = depends(package);
            from.push(package.to_string());
            for program in programs {
                let paths = paths_of(program);
                let owners: Vec<&str> = owned
                    .iter()
                    .filter(|(path, _)| paths.contains(path))
                    .map(|(_, o)| o.as_str())
                    .collect();
                checked += 1;
                if !owners.iter().any(|o| from.iter().any(|f| f == o)) {
                    wrong.push(format!(
                        "{program} is not a program of {package} (dpkg says {owners:?})"
                    ));
                }
            }
        }
        assert!(wrong.is_empty(), "{}", wrong.join("\n"));
        assert!(checked > 0 || !deb_installed("coreutils"));
    }
}
