//! A classified call: the decoded event, its diagnosis, resolved paths and
//! wall-clock time. This is what every sink (console, JSON, metrics, tail) receives.

use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use crate::enrich::cgroups::{CgroupNames, Service};
use crate::enrich::kallsyms::OpNames;
use crate::enrich::mounts::{MountTable, Resolved};
use crate::enrich::stack::{mappings_from_kernel, Executable, KernelMaps, Prepared, Stack, Stacks};
use crate::enrich::symbolizer::protocol::Request;
use crate::model::classify::{classify, Diagnosis, Mechanism};
use crate::model::event::{CopyEvent, Location};
use crate::model::text::Untrusted;

/// One call, ready to be shown.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    /// Wall-clock time of entry, RFC 3339.
    pub time: String,
    #[serde(flatten)]
    pub diagnosis: Diagnosis,
    /// Absolute source path as the host sees it, when it can be known.
    pub path_in: Option<Untrusted>,
    /// Other host paths of the source (its device mounted several times,
    /// opened from another mount namespace).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub path_in_alternatives: Vec<Untrusted>,
    /// The source's path inside the caller's mount namespace, when that is
    /// not the host's (a container).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_in_ns: Option<Untrusted>,
    /// Absolute destination path, likewise.
    pub path_out: Option<Untrusted>,
    /// Other host paths of the destination.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub path_out_alternatives: Vec<Untrusted>,
    /// The destination's path inside the caller's mount namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path_out_ns: Option<Untrusted>,
    /// The caller's executable as the host sees it.
    pub exe_path: Option<Untrusted>,
    /// The caller's cgroup, systemd unit and container.
    #[serde(flatten)]
    pub service: Service,
    /// The named user-space stack of a suspicious call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stack: Option<Stack>,
    /// The filesystem function behind `mechanism` (fs_copy, remap), from kallsyms.
    pub mechanism_op: Option<String>,
    /// Duration of the call in nanoseconds.
    pub latency_ns: u64,
    #[serde(flatten)]
    pub event: CopyEvent,
}

/// Converts kernel monotonic timestamps to wall-clock time.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    /// Realtime minus monotonic, in ns, measured once.
    offset_ns: i128,
}

impl Clock {
    /// Measures the realtime/monotonic offset now.
    pub fn new() -> Self {
        let mono = i128::from(super::monotonic_ns());
        let real = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_nanos() as i128;
        Self {
            offset_ns: real - mono,
        }
    }

    /// Wall-clock time of a monotonic timestamp.
    pub fn wall(&self, mono_ns: u64) -> SystemTime {
        let ns = (mono_ns as i128 + self.offset_ns).max(0) as u128;
        SystemTime::UNIX_EPOCH + Duration::from_nanos(ns.min(u64::MAX as u128) as u64)
    }
}

impl Default for Clock {
    fn default() -> Self {
        Self::new()
    }
}

/// What turning an event into a record looks things up in.
#[derive(Debug, Default)]
pub struct Enrich {
    /// Mount id → mount point.
    pub mounts: MountTable,
    /// Monotonic → wall clock.
    pub clock: Clock,
    /// Filesystem op addresses → names.
    pub ops: OpNames,
    /// cgroup id → path.
    pub cgroups: CgroupNames,
    /// Stack addresses → functions.
    pub stacks: Stacks,
}

impl Enrich {
    /// Reads mountinfo and kallsyms, measures the clock offset.
    pub fn load() -> Self {
        Self {
            mounts: MountTable::default(),
            clock: Clock::new(),
            ops: OpNames::load(),
            cgroups: CgroupNames::load(),
            stacks: Stacks::default(),
        }
    }
}

impl Record {
    /// Classifies `event` and resolves its paths. A stack that needs the
    /// symbolizer comes back as its request, for the pipeline to send.
    pub fn new(mut event: CopyEvent, ctx: &mut Enrich) -> (Self, Option<Request>) {
        let diagnosis = classify(&event);
        let op_addr = match diagnosis.mechanism {
            Mechanism::FsCopy => event.file_out.as_ref().map(|f| f.copy_op),
            Mechanism::Remap => event.file_in.as_ref().map(|f| f.remap_op),
            Mechanism::Splice | Mechanism::None => None,
        };
        let mechanism_op = op_addr.and_then(|a| ctx.ops.name(a)).map(str::to_string);
        let (pid, at_ns) = (event.pid, event.end_ns);
        let mut resolve = |l: Option<&Location>| {
            l.map(|l| ctx.mounts.resolve(l, pid, at_ns))
                .unwrap_or_default()
        };
        let input = resolve(event.file_in.as_ref().map(|f| &f.location));
        let output = resolve(event.file_out.as_ref().map(|f| &f.location));
        let exe: Resolved = resolve(event.exe.as_ref());
        let service = ctx.cgroups.service(event.cgroup_id, pid);
        // Only a host path is ever opened for the stack: a name inside the
        // caller's namespace may be anything on the host.
        let prepared = event.stack.as_ref().map(|raw| {
            let executable = event.exe.as_ref().map(|location| Executable {
                location,
                host_path: exe.path.as_ref(),
            });
            let kernel_maps = raw
                .unwind
                .as_ref()
                .and_then(|u| u.mappings.as_ref())
                .map(|m| {
                    let mounts = &mut ctx.mounts;
                    let maps =
                        mappings_from_kernel(m, |k| mounts.resolve(&k.location, pid, at_ns).path);
                    KernelMaps {
                        whole: !m.partial && maps.len() == m.found.len(),
                        maps,
                    }
                });
            ctx.stacks.prepare(raw, pid, executable, kernel_maps)
        });
        // The stack copy has gone into the request: a record kept for the
        // tail's history must not keep its kilobytes too.
        if let Some(raw) = event.stack.as_mut() {
            raw.unwind = None;
        }
        let (stack, request) = match prepared {
            None => (None, None),
            Some(Prepared::Done(s)) => (Some(s), None),
            Some(Prepared::Ask(r)) => (None, Some(r)),
        };
        let record = Self {
            time: humantime::format_rfc3339_micros(ctx.clock.wall(event.start_ns)).to_string(),
            diagnosis,
            mechanism_op,
            path_in: input.path,
            path_in_alternatives: input.alternatives,
            path_in_ns: input.ns_path,
            path_out: output.path,
            path_out_alternatives: output.alternatives,
            path_out_ns: output.ns_path,
            exe_path: exe.path.or(exe.ns_path),
            service,
            stack,
            latency_ns: event.latency_ns(),
            event,
        };
        (record, request)
    }
}
