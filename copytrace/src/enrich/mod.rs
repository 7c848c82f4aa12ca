//! What the machine adds to a decoded event before anyone reads it: absolute
//! paths ([`mounts`]), the caller's service ([`cgroups`]), its named stack
//! ([`stack`]), names of kernel functions ([`kallsyms`]) and wall-clock
//! time, gathered into a [`record::Record`].

pub mod cgroups;
pub mod kallsyms;
pub mod mounts;
pub mod record;
pub mod stack;
