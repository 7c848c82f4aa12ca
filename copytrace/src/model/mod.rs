//! Pure types and rules: what a call was ([`event`]), what it means
//! ([`classify`]), and the registries those rules use. No I/O here, so every
//! rule is unit-tested without a kernel.

pub mod backend;
pub mod classify;
pub mod errno;
pub mod event;
pub mod fs_magic;
pub mod limits;
pub mod text;
