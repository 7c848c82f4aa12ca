//! The switch between reporting every call and only the suspicious ones,
//! flipped in the kernel side's settings while it runs.

use std::sync::{Arc, Mutex};

use aya::maps::{Array, MapData};
use copytrace_common::setting;

/// Tells the kernel side, while it runs, whether every call is wanted or
/// only the suspicious ones (the cheap default). Whoever wants every call
/// holds a [`ReportAllHold`] (`trace`, `run --print all`, each `tail --all`
/// client); the kernel reports every call while any hold is alive.
#[derive(Clone)]
pub struct ReportAll(Arc<Mutex<ReportAllState>>);

struct ReportAllState {
    settings: Array<MapData, u32>,
    holds: usize,
}

/// One reason to report every call; dropping it takes the reason back.
pub struct ReportAllHold(ReportAll);

impl ReportAll {
    /// The switch over the kernel side's settings map, off.
    pub(super) fn new(settings: Array<MapData, u32>) -> Self {
        ReportAll(Arc::new(Mutex::new(ReportAllState { settings, holds: 0 })))
    }

    fn write(state: &mut ReportAllState, on: bool) {
        match state.settings.set(setting::WANT_ALL, u32::from(on), 0) {
            Ok(()) => log::debug!(
                "kernel side now reports {}",
                if on { "every call" } else { "suspicious calls" }
            ),
            Err(e) => log::warn!("cannot switch what the kernel side reports: {e}"),
        }
    }

    /// Reports every call until the returned hold is dropped.
    pub fn hold(&self) -> ReportAllHold {
        if let Ok(mut s) = self.0.lock() {
            s.holds += 1;
            if s.holds == 1 {
                Self::write(&mut s, true);
            }
        }
        ReportAllHold(self.clone())
    }
}

impl Drop for ReportAllHold {
    fn drop(&mut self) {
        if let Ok(mut s) = (self.0).0.lock() {
            s.holds = s.holds.saturating_sub(1);
            if s.holds == 0 {
                ReportAll::write(&mut s, false);
            }
        }
    }
}
