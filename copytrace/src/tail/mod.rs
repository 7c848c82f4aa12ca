//! The live tail, both ends of its socket: the daemon's [`server`] (a
//! sink, configured by [`config`]), the wire [`protocol`], the [`filter`]
//! a client sends and the server applies, and the `copytrace tail`
//! [`client`]. Knows records and the socket, never the probes.

mod access;
pub mod client;
pub mod config;
pub mod filter;
pub mod protocol;
pub mod server;
mod session;
