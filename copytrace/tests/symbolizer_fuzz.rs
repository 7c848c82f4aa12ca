//! Fuzzes the symbolizer with corrupted ELF and DWARF: seeded byte
//! mutations of small executables (hand-built, and C programs with plain
//! and compressed DWARF when a compiler is here), each symbolized through
//! the daemon's own client and the real `copytrace symbolize-worker`.
//!
//! What must hold for every input, whatever the parser does with it (name,
//! refuse, crash, hang): an answer comes within the client's deadline, and
//! it is within the daemon's bounds. The run is bounded: a fixed number of
//! cases (`COPYTRACE_FUZZ_CASES`, default 400) from a fixed seed
//! (`COPYTRACE_FUZZ_SEED`).

mod support;

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use base64::Engine as _;
use copytrace::enrich::stack::{MappingsFrom, MAX_INLINED, MAX_NAME};
use copytrace::enrich::symbolizer::client::{Symbolizer, DEADLINE, RESTART_DELAY};
use copytrace::enrich::symbolizer::protocol::{
    FileIdentity, FrameAt, Mapped, Offset, Placed, Request, UnwindInput,
};
use copytrace_common::event::STACK_DEPTH;
use copytrace_testkit::elf::{self, Spec};
use support::{copytrace_bin, scratch_dir};

/// xorshift64*: a small generator nobody's code under test shares.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.next() % n
        }
    }
}

const C_PROGRAM: &str = r#"
#include <stdio.h>
static int depth(int n) { return n ? depth(n - 1) + 1 : 0; }
struct point { int x, y; };
int main(int argc, char **argv) {
    struct point p = { argc, depth(argc) };
    printf("%d %d %s\n", p.x, p.y, argv[0]);
    return 0;
}
"#;

/// The executables to mutate: hand-built ones always, C ones with DWARF
/// (plain and zlib-compressed) where a compiler is installed.
fn seeds(dir: &Path) -> Vec<Vec<u8>> {
    let mut out = vec![
        elf::build(&Spec::default()),
        elf::build(&Spec {
            compressed_debug_claims: Some(1 << 40),
            ..Spec::default()
        }),
    ];
    if !support::suite::on_path("cc") {
        eprintln!("symbolizer fuzz: no C compiler: hand-built executables only (no real DWARF)");
        return out;
    }
    let src = dir.join("prog.c");
    std::fs::write(&src, C_PROGRAM).expect("write C source");
    for (name, extra) in [("plain", None), ("zlib", Some("-gz=zlib"))] {
        let bin = dir.join(name);
        let mut cc = Command::new("cc");
        cc.args(["-O1", "-g", "-o"]).arg(&bin).arg(&src);
        if let Some(e) = extra {
            cc.arg(e);
        }
        if cc.status().is_ok_and(|s| s.success()) {
            out.push(std::fs::read(&bin).expect("read compiled program"));
        }
    }
    out
}

fn identity(path: &Path) -> FileIdentity {
    let m = std::fs::metadata(path).expect("stat the input");
    FileIdentity {
        major: libc::major(m.dev()),
        minor: libc::minor(m.dev()),
        ino: m.ino(),
    }
}

fn mutate(rng: &mut Rng, seed: &[u8]) -> Vec<u8> {
    let mut b = seed.to_vec();
    let flips = 1 + rng.below(32);
    for _ in 0..flips {
        let at = rng.below(b.len() as u64) as usize;
        match rng.below(4) {
            0 => b[at] = rng.next() as u8,
            1 => b[at] ^= 1 << rng.below(8),
            // Headers hold sizes and offsets: large values there find the most.
            2 => {
                let end = (at + 8).min(b.len());
                for (i, byte) in b[at..end].iter_mut().enumerate() {
                    *byte = if i < 7 { 0xff } else { 0x7f };
                }
            }
            _ => {
                let end = (at + 4).min(b.len());
                b[at..end].fill(0);
            }
        }
    }
    b
}

fn check_bounded(stack: &copytrace::enrich::stack::Stack) {
    assert!(stack.frames.len() <= STACK_DEPTH);
    for f in &stack.frames {
        for name in [&f.function, &f.file, &f.module].into_iter().flatten() {
            assert!(
                name.as_bytes().len() <= MAX_NAME + 3,
                "{} bytes",
                name.as_bytes().len()
            );
        }
        assert!(f.inlined.len() <= MAX_INLINED);
    }
}

#[test]
fn corrupted_elf_and_dwarf_cost_at_most_their_own_stack() {
    let cases: u64 = std::env::var("COPYTRACE_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(400);
    let seed: u64 = std::env::var("COPYTRACE_FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0x5eed_c0de_1234_5678);
    let dir = scratch_dir("symbolizer-fuzz");
    let seeds = seeds(&dir);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let mut rng = Rng(seed | 1);
    let (mut named, mut died, mut late, mut unnamed) = (0u64, 0u64, 0u64, 0u64);
    let mut slowest = Duration::ZERO;
    rt.block_on(async {
        let mut symbolizer = Symbolizer::start_with(copytrace_bin());
        for case in 0..cases {
            let base = &seeds[rng.below(seeds.len() as u64) as usize];
            let bytes = mutate(&mut rng, base);
            // A new name each time: blazesym must not answer from a cache.
            let path: PathBuf = dir.join(format!("case-{case}"));
            std::fs::write(&path, &bytes).expect("write the input");
            let id = identity(&path);
            let frames = (0..1 + rng.below(4))
                .map(|_| FrameAt {
                    addr: 0x40_0000 + rng.below(bytes.len() as u64),
                    placed: Some(Placed {
                        path: path.as_os_str().as_encoded_bytes().to_vec(),
                        identity: id,
                        offset: if rng.below(2) == 0 {
                            Offset::File(rng.below(bytes.len() as u64 + 16))
                        } else {
                            Offset::CodeStart(elf::BASE + rng.below(0x200))
                        },
                    }),
                })
                .collect();
            // Half the cases also unwind: a stack of random words, some
            // pointing into the mutated file's mapping, and its sections
            // parsed for `.eh_frame`.
            let start = 0x40_0000;
            let end = start + bytes.len() as u64 + 0x1000;
            let unwind = (rng.below(2) == 0).then(|| {
                let words: Vec<u8> = (0..rng.below(512))
                    .flat_map(|_| {
                        let w = if rng.below(2) == 0 {
                            start + rng.below(end - start)
                        } else {
                            rng.below(u64::MAX)
                        };
                        w.to_ne_bytes()
                    })
                    .collect();
                UnwindInput {
                    regs: [start + rng.below(end - start), 0x7ff0_0000_0000, rng.below(u64::MAX), 0],
                    stack: base64::engine::general_purpose::STANDARD.encode(words),
                    code_words: Vec::new(),
                    mappings: vec![Mapped {
                        start,
                        end,
                        offset: rng.below(0x2000),
                        path: path.as_os_str().as_encoded_bytes().to_vec(),
                        identity: id,
                    }],
                }
            });
            let request = Request {
                frames,
                // Whole maps end the chain at an unplaced frame; partial
                // ones and none leave it unnamed.
                mappings_from: [
                    None,
                    Some(MappingsFrom::Kernel),
                    Some(MappingsFrom::ProcMaps),
                    Some(MappingsFrom::KernelPartial),
                ][rng.below(4) as usize],
                leaf_return: None,
                unwind,
                copy_skipped: false,
            };
            let start = Instant::now();
            let until = tokio::time::Instant::now() + DEADLINE * 4;
            symbolizer.ask(case, request, until).expect("one request at a time never fills the queue");
            let answer = tokio::time::timeout(DEADLINE * 2, symbolizer.answer())
                .await
                .unwrap_or_else(|_| panic!("case {case} (seed {seed}): no answer within {:?}", DEADLINE * 2))
                .expect("the symbolizer task is alive");
            slowest = slowest.max(start.elapsed());
            assert_eq!(answer.ticket, case);
            check_bounded(&answer.stack);
            let cut = answer.stack.cut.as_deref().unwrap_or("");
            if answer.named {
                named += 1;
            } else if cut.contains("ended on this stack") {
                died += 1;
            } else if cut.contains("took over") {
                late += 1;
            } else {
                unnamed += 1;
            }
            if !answer.named {
                // Let the next case meet a fresh symbolizer, not its restart delay.
                tokio::time::sleep(RESTART_DELAY).await;
            }
            let _ = std::fs::remove_file(&path);
        }
        let c = symbolizer.counters();
        eprintln!(
            "symbolizer fuzz: {cases} cases from seed {seed} over {} executables: {named} answered, {died} killed the symbolizer, {late} were late, {unnamed} other; {} symbolizer starts; slowest {slowest:?}",
            seeds.len(),
            c.starts.load(std::sync::atomic::Ordering::Relaxed)
        );
    });
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(named + died + late + unnamed, cases);
    assert_eq!(unnamed, 0, "every case met a running symbolizer");
}
