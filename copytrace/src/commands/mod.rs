//! The one-shot commands: [`trace`] a command's calls, and [`doctor`].

pub mod doctor;
pub mod trace;
