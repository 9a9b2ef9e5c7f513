//! What berth records for monitoring, and the one interface it records
//! through. The core and the front doors call a [`Recorder`]; an exporter
//! (`pkg/metrics`, wired by berthd) implements it. Nothing here knows
//! Prometheus, so the core and the leaves never depend on the exporter, and
//! a core made without one ([`Core::open`](crate::Core::open),
//! [`Core::with_parts`](crate::Core::with_parts)) records into
//! [`NoRecorder`].
//!
//! Two kinds of figures:
//! - **events**, pushed as they happen through [`Recorder`] (an operation
//!   answered, a pod started, an image pulled);
//! - **levels**, read at scrape time from the core's own state
//!   ([`Core::census`](crate::Core::census) for object counts). A scraper
//!   asks; the core keeps no copy for it. Per-container resource figures
//!   (cAdvisor's names) are levels too and are to be read the same way,
//!   from the core's stats, by a collector in the exporter.

use std::time::Duration;

use crate::{ContainerState, ErrorKind, Owner, SandboxState};

/// The front door an operation came through: the `service` label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    Cri,
    Docker,
    Stream,
}

impl Service {
    pub fn as_str(self) -> &'static str {
        match self {
            Service::Cri => "cri",
            Service::Docker => "docker",
            Service::Stream => "stream",
        }
    }
}

/// How an image pull ended: the `result` and `reason` labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PullOutcome {
    Success,
    Failure(PullFailure),
}

/// Why a pull failed, in CRI-O's categories (a bounded set: a label).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PullFailure {
    /// Credentials missing or refused.
    Denied,
    /// No such repository, tag or manifest.
    ManifestUnknown,
    /// The registry did not answer.
    ConnectionRefused,
    /// A time limit ran out.
    Timeout,
    /// The reference or platform is malformed.
    InvalidReference,
    /// A size limit was reached.
    TooLarge,
    Other,
}

impl PullFailure {
    /// The category an error of `kind` falls in.
    pub fn of(kind: ErrorKind) -> PullFailure {
        match kind {
            ErrorKind::Unauthenticated | ErrorKind::PermissionDenied => PullFailure::Denied,
            ErrorKind::NotFound => PullFailure::ManifestUnknown,
            ErrorKind::Unavailable => PullFailure::ConnectionRefused,
            ErrorKind::DeadlineExceeded => PullFailure::Timeout,
            ErrorKind::InvalidArgument => PullFailure::InvalidReference,
            ErrorKind::ResourceExhausted => PullFailure::TooLarge,
            _ => PullFailure::Other,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            PullFailure::Denied => "denied",
            PullFailure::ManifestUnknown => "manifest_unknown",
            PullFailure::ConnectionRefused => "connection_refused",
            PullFailure::Timeout => "timeout",
            PullFailure::InvalidReference => "invalid_reference",
            PullFailure::TooLarge => "too_large",
            PullFailure::Other => "other",
        }
    }
}

impl PullOutcome {
    /// `(result, reason)`: `("success", "")` or `("failure", category)`.
    pub fn labels(self) -> (&'static str, &'static str) {
        match self {
            PullOutcome::Success => ("success", ""),
            PullOutcome::Failure(f) => ("failure", f.as_str()),
        }
    }
}

/// Where berth's figures go. Every method does nothing by default, so an
/// implementation records what it wants and new figures can be added
/// without touching the others. Calls come from request paths: an
/// implementation must be quick and must not block.
pub trait Recorder: Send + Sync + 'static {
    /// One operation answered by a front door. `operation` is a bounded
    /// name (a CRI method, a Docker route, a streaming kind), `code` the
    /// gRPC code name or the HTTP status.
    fn operation(&self, _service: Service, _operation: &str, _code: &str, _took: Duration) {}

    /// A pod sandbox made and ready (`Sandboxes::run` from start to end).
    fn pod_started(&self, _runtime_handler: &str, _took: Duration) {}

    /// A container started (`Containers::start` from start to end).
    fn container_started(&self, _runtime_handler: &str, _took: Duration) {}

    /// An image pull ended.
    fn image_pulled(&self, _outcome: PullOutcome, _took: Duration) {}

    /// Layer bytes a pull needed: fetched from the registry (`cached`
    /// false) or found in the store (`cached` true).
    fn image_pull_bytes(&self, _cached: bool, _bytes: u64) {}

    /// A container's monitor went away without recording its exit.
    fn monitor_exit_unexpected(&self) {}
}

/// Records nothing: the core's default.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoRecorder;

impl Recorder for NoRecorder {}

/// How many sandboxes and containers are in each state, by owner: read
/// at scrape time. Every (state, owner) pair is listed, zero or not, so a
/// series does not vanish when its last object goes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Census {
    pub sandboxes: Vec<(SandboxState, Owner, u64)>,
    pub containers: Vec<(ContainerState, Owner, u64)>,
}

impl Census {
    /// The count for one pair (tests and exporters).
    pub fn sandboxes_in(&self, state: SandboxState, owner: Owner) -> u64 {
        count_of(&self.sandboxes, state, owner)
    }

    pub fn containers_in(&self, state: ContainerState, owner: Owner) -> u64 {
        count_of(&self.containers, state, owner)
    }
}

fn count_of<S: PartialEq>(rows: &[(S, Owner, u64)], state: S, owner: Owner) -> u64 {
    rows.iter()
        .find(|(s, o, _)| *s == state && *o == owner)
        .map_or(0, |(_, _, n)| *n)
}

/// The owners, for listing every pair.
pub(crate) const OWNERS: [Owner; 2] = [Owner::Kubernetes, Owner::Docker];

/// Counts `items` into one row per (state, owner) of `states` × [`OWNERS`].
pub(crate) fn census_rows<S: Copy + PartialEq>(
    states: &[S],
    items: impl IntoIterator<Item = (S, Owner)>,
) -> Vec<(S, Owner, u64)> {
    let mut rows: Vec<(S, Owner, u64)> = states
        .iter()
        .flat_map(|s| OWNERS.iter().map(move |o| (*s, *o, 0)))
        .collect();
    for (state, owner) in items {
        if let Some(row) = rows.iter_mut().find(|(s, o, _)| *s == state && *o == owner) {
            row.2 += 1;
        }
    }
    rows
}

impl SandboxState {
    /// Every state, for [`Census`].
    pub const ALL: [SandboxState; 2] = [SandboxState::Ready, SandboxState::NotReady];

    /// The `state` label.
    pub fn as_str(self) -> &'static str {
        match self {
            SandboxState::Ready => "ready",
            SandboxState::NotReady => "notready",
        }
    }
}

impl ContainerState {
    /// Every state, for [`Census`].
    pub const ALL: [ContainerState; 4] = [
        ContainerState::Created,
        ContainerState::Running,
        ContainerState::Exited,
        ContainerState::Unknown,
    ];

    /// The `state` label.
    pub fn as_str(self) -> &'static str {
        match self {
            ContainerState::Created => "created",
            ContainerState::Running => "running",
            ContainerState::Exited => "exited",
            ContainerState::Unknown => "unknown",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn census_lists_every_pair_and_counts_each_object_once() {
        let rows = census_rows(
            &SandboxState::ALL,
            [
                (SandboxState::Ready, Owner::Kubernetes),
                (SandboxState::Ready, Owner::Kubernetes),
                (SandboxState::NotReady, Owner::Docker),
            ],
        );
        assert_eq!(rows.len(), 4);
        let census = Census {
            sandboxes: rows,
            containers: Vec::new(),
        };
        assert_eq!(
            census.sandboxes_in(SandboxState::Ready, Owner::Kubernetes),
            2
        );
        assert_eq!(
            census.sandboxes_in(SandboxState::NotReady, Owner::Docker),
            1
        );
        assert_eq!(census.sandboxes_in(SandboxState::Ready, Owner::Docker), 0);
    }

    #[test]
    fn pull_failures_fall_in_bounded_categories() {
        assert_eq!(
            PullOutcome::Failure(PullFailure::of(ErrorKind::Unauthenticated)).labels(),
            ("failure", "denied")
        );
        assert_eq!(
            PullFailure::of(ErrorKind::NotFound).as_str(),
            "manifest_unknown"
        );
        assert_eq!(PullFailure::of(ErrorKind::Internal).as_str(), "other");
        assert_eq!(PullOutcome::Success.labels(), ("success", ""));
    }
}
