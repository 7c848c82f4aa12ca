//! The one-shot commands: [`trace`] a command's calls, [`doctor`], and
//! [`assets`] for packaging.

pub mod assets;
pub mod doctor;
pub mod trace;
