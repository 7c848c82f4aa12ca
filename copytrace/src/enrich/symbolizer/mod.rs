//! Naming stacks in a separate, confined process: everything that opens
//! or parses a file a traced user chose happens there ([`worker`], which
//! unwinds stack copies with [`unwind`]), under
//! [`confine`]'s limits, and the daemon only talks to it through a pipe
//! ([`client`], [`protocol`]) with a deadline per stack.

pub mod client;
pub mod confine;
pub mod identity;
pub mod protocol;
pub mod unwind;
pub mod worker;
