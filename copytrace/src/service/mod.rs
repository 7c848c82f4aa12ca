//! `copytrace run` as a service: the [`daemon`] loop, its [`config`] file and
//! systemd's [`notify`] protocol.

pub mod config;
pub mod daemon;
pub mod notify;
