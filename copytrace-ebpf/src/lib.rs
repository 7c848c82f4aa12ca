//! Empty host-side library: it only exists so copytrace's build script can
//! depend on this crate (and be rebuilt when it changes). The programs are the
//! `copytrace` binary target, built for bpfel-unknown-none by aya-build.
#![no_std]
