//! The client side of the live tail: the wire [`protocol`] and the
//! `copytrace tail` [`client`]. Knows the socket, never the probes.

pub mod client;
pub mod protocol;
