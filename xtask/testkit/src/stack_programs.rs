//! The programs whose suspicious calls' stacks are held to gdb's, built
//! from source with the system's compilers: a C program with and without
//! frame pointers, a Rust release binary and a Go `io.Copy`. The host's
//! tests build them, and so does `cargo xtask systemd-guest` for its guest
//! (the same Debian release, so the same C library).

use std::path::{Path, PathBuf};
use std::process::Command;

/// The C program of the stacks issue: main calls ctbar_bad_copier, which
/// calls libc's copy_file_range from /proc to /proc.
pub const BAD_COPIER_C: &str = r#"#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <unistd.h>

__attribute__((noinline)) ssize_t ctbar_bad_copier(int in, int out) {
    return copy_file_range(in, NULL, out, NULL, 4096, 0);
}

int main(void) {
    int in = open("/proc/self/status", O_RDONLY);
    int out = open("/proc/self/comm", O_WRONLY);
    ssize_t n = ctbar_bad_copier(in, out);
    printf("%zd\n", n);
    sleep(2);
    return 0;
}
"#;

/// The function of [`BAD_COPIER_C`] that makes the call.
pub const BAD_COPIER_FUNCTION: &str = "ctbar_bad_copier";

/// A Rust program that copies `argv[1]` to `argv[2]` with `std::fs::copy`.
pub const RUST_COPY: &str = r#"
fn main() {
    let a: Vec<String> = std::env::args().collect();
    let _ = std::fs::copy(&a[1], &a[2]);
    std::thread::sleep(std::time::Duration::from_secs(2));
}
"#;

/// A Go program that copies `argv[1]` to `argv[2]` with `io.Copy`.
pub const GO_COPY: &str = r#"package main

import (
	"fmt"
	"io"
	"os"
)

func main() {
	src, err := os.Open(os.Args[1])
	if err != nil {
		panic(err)
	}
	dst, err := os.OpenFile(os.Args[2], os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		panic(err)
	}
	n, err := io.Copy(dst, src)
	if err != nil {
		panic(err)
	}
	fmt.Println(n)
}
"#;

/// File names of the built programs.
pub const BAD_COPIER_FP_BIN: &str = "badcopier-fp";
pub const BAD_COPIER_NOFP_BIN: &str = "badcopier-nofp";
pub const RUST_COPY_BIN: &str = "rust-copy";
pub const GO_COPY_BIN: &str = "go-copy";

/// Runs a compiler; the error says which one failed and how.
fn compile(what: &str, cmd: &mut Command) -> Result<(), String> {
    let out = cmd
        .output()
        .map_err(|e| format!("cannot run {what} (cargo xtask provision installs it): {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{what} failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn write_source(dir: &Path, name: &str, text: &str) -> Result<PathBuf, String> {
    std::fs::create_dir_all(dir).map_err(|e| format!("mkdir {}: {e}", dir.display()))?;
    let src = dir.join(name);
    std::fs::write(&src, text).map_err(|e| format!("write {}: {e}", src.display()))?;
    Ok(src)
}

/// Builds [`BAD_COPIER_C`] in `dir` (`-O1 -g`), with or without frame pointers.
pub fn build_bad_copier(dir: &Path, frame_pointers: bool) -> Result<PathBuf, String> {
    let src = write_source(dir, "badcopier.c", BAD_COPIER_C)?;
    let bin = dir.join(if frame_pointers {
        BAD_COPIER_FP_BIN
    } else {
        BAD_COPIER_NOFP_BIN
    });
    let fp = if frame_pointers {
        "-fno-omit-frame-pointer"
    } else {
        "-fomit-frame-pointer"
    };
    compile(
        "cc",
        Command::new("cc")
            .args(["-O1", "-g", fp, "-o"])
            .arg(&bin)
            .arg(&src),
    )?;
    Ok(bin)
}

/// Builds [`RUST_COPY`] in `dir` as a release binary (`rustc -O`).
pub fn build_rust_copy(dir: &Path) -> Result<PathBuf, String> {
    let src = write_source(dir, "copy.rs", RUST_COPY)?;
    let bin = dir.join(RUST_COPY_BIN);
    compile(
        "rustc",
        Command::new("rustc").args(["-O", "-o"]).arg(&bin).arg(&src),
    )?;
    Ok(bin)
}

/// Builds [`GO_COPY`] in `dir` with `go build`.
pub fn build_go_copy(dir: &Path) -> Result<PathBuf, String> {
    // go runs in `dir` and wants an absolute GOCACHE.
    let dir = &std::path::absolute(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    write_source(dir, "main.go", GO_COPY)?;
    let bin = dir.join(GO_COPY_BIN);
    compile(
        "go build",
        Command::new("go")
            .args(["build", "-o"])
            .arg(&bin)
            .arg("main.go")
            .current_dir(dir)
            .env("GOCACHE", dir.join("cache"))
            .env("GO111MODULE", "off"),
    )?;
    Ok(bin)
}
