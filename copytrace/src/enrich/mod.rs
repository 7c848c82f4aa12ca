//! What the machine adds to a decoded event before anyone reads it: absolute
//! paths ([`mounts`]), names of kernel functions ([`kallsyms`]) and wall-clock
//! time, gathered into a [`record::Record`].

pub mod kallsyms;
pub mod mounts;
pub mod record;
