//! The per-event userspace hot path: decode a ring-buffer record, classify
//! it (with path resolution), and serialise it for JSON sinks.

use std::borrow::Cow;
use std::hint::black_box;

use copytrace::enrich::record::{Enrich, Record};
use copytrace::model::classify::classify;
use copytrace::model::event::decode;
use copytrace::sink::wire::ServerMsg;
use copytrace_common::Event;
use criterion::{criterion_group, criterion_main, Criterion};

fn raw_event() -> Vec<u8> {
    // SAFETY: Event is plain data; all-zero is valid.
    let mut e: Box<Event> = Box::new(unsafe { std::mem::zeroed() });
    e.pid = 1234;
    e.tid = 1234;
    e.len = 4096;
    e.ret = 0;
    e.backend = copytrace_common::Backend::Tracepoint as u8;
    e.origin = copytrace_common::Origin::Syscall as u8;
    e.status = copytrace_common::status::SUSPICIOUS;
    e.comm[..3].copy_from_slice(b"cat");
    // A stack was asked for but came back empty: the record's layout is
    // the suspicious one, without symbolization in the measured path.
    e.put_stack(&[]);
    for f in e.files.iter_mut() {
        f.present = 1;
        f.magic = 0x9fa0;
        f.mode = 0o100444;
        f.path.dev = 22;
        f.path.ino = 7;
    }
    let complete = copytrace_common::name_flag::COMPLETE;
    e.push_names(
        |e| &mut e.files[0].path.names,
        &[b"status", b"1234"],
        complete,
    );
    e.push_names(
        |e| &mut e.files[1].path.names,
        &[b"comm", b"1234"],
        complete,
    );
    // What the kernel sends: the head and the tail in use.
    e.as_bytes()[..e.record_len()].to_vec()
}

fn pipeline(c: &mut Criterion) {
    let bytes = raw_event();
    let ev = decode(&bytes).expect("decodes");
    c.bench_function("decode", |b| b.iter(|| decode(black_box(&bytes))));
    c.bench_function("classify", |b| b.iter(|| classify(black_box(&ev))));
    let mut enrich = Enrich::load();
    c.bench_function("decode+classify+record", |b| {
        b.iter(|| Record::new(decode(black_box(&bytes)).expect("decodes"), &mut enrich))
    });
    let (rec, _) = Record::new(ev.clone(), &mut enrich);
    c.bench_function("json_line", |b| {
        b.iter(|| ServerMsg::Call(Cow::Borrowed(black_box(&rec))).line())
    });
}

criterion_group!(benches, pipeline);
criterion_main!(benches);
