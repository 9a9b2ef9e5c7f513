//! Docker's restart policies (`--restart no|always|unless-stopped|
//! on-failure[:N]`): after an exit the policy decides, and the container
//! starts again after a back-off that begins at 100 ms, doubles with each
//! restart up to a minute, and begins again once a run lasted 10 s
//! (dockerd's restart manager). A stop or kill asked for by hand keeps it
//! stopped until it is started by hand, which also clears the count.

use std::time::Duration;

use berth_errdefs::{Error, Result};

use crate::model::{ContainerRecord, Owner, RestartPolicy};
use crate::Containers;

const FIRST_DELAY_MS: u64 = 100;
const MAX_DELAY_MS: u64 = 60_000;
/// A run at least this long resets the back-off.
const STEADY_RUN_NS: i64 = 10_000_000_000;

impl RestartPolicy {
    /// Whether an exit with `exit_code`, after `restarts` restarts by the
    /// policy, starts the container again.
    pub fn restarts(self, exit_code: i32, restarts: u32, stopped_by_user: bool) -> bool {
        if stopped_by_user {
            return false;
        }
        match self {
            RestartPolicy::No => false,
            RestartPolicy::Always | RestartPolicy::UnlessStopped => true,
            RestartPolicy::OnFailure { max_retries } => {
                exit_code != 0 && (max_retries == 0 || restarts < max_retries)
            }
        }
    }
}

/// The wait before the next restart, given the last one and how long the
/// run that just ended lasted.
fn next_delay_ms(last_ms: u64, ran_ns: i64) -> u64 {
    match last_ms {
        _ if ran_ns >= STEADY_RUN_NS => FIRST_DELAY_MS,
        0 => FIRST_DELAY_MS,
        ms => (ms * 2).min(MAX_DELAY_MS),
    }
}

impl Containers {
    /// After an exit: starts the container again later if its policy
    /// says so. Anything that happens meanwhile (a start, a stop, a
    /// removal, another restart) has the last word.
    pub(crate) fn apply_restart_policy(&self, record: &ContainerRecord) {
        let policy = record.restart_policy;
        if record.owner != Owner::Docker
            || !policy.restarts(
                record.exit_code,
                record.restart_count,
                record.stopped_by_user,
            )
        {
            return;
        }
        let ran_ns = record.finished_at_ns - record.started_at_ns;
        let delay = next_delay_ms(record.restart_delay_ms, ran_ns);
        self.start_later(record, delay, record.restart_count + 1);
    }

    /// At berthd's start (after a crash or a node reboot): a container
    /// its policy would restart (an `on-failure:N` within its N, as the
    /// record counts) starts now with its count from zero, as dockerd's
    /// restore starts it (a start, not a restart).
    pub(crate) fn restart_at_start(&self, record: &ContainerRecord) {
        let restarts = record.restart_policy.restarts(
            record.exit_code,
            record.restart_count,
            record.stopped_by_user,
        );
        if record.owner == Owner::Docker && restarts {
            self.start_later(record, 0, 0);
        }
    }

    /// Starts the exited `record` again after `delay_ms` with
    /// `restart_count` unless something else happened to it meanwhile.
    fn start_later(&self, record: &ContainerRecord, delay_ms: u64, restart_count: u32) {
        let (core, id, count) = (self.clone(), record.id.clone(), record.restart_count);
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(delay_ms)).await;
            let Some(entry) = core.container_entry(&id) else {
                return;
            };
            let _guard = entry.lock.lock().await;
            // Removed while this waited (the removal held the lock).
            let current = core.container_entry(&id);
            if !current.is_some_and(|c| std::sync::Arc::ptr_eq(&c, &entry)) {
                return;
            }
            let r = entry.record();
            if !r.state.has_exited() || r.stopped_by_user || r.restart_count != count {
                return;
            }
            entry.update(|r| {
                r.restart_count = restart_count;
                r.restart_delay_ms = delay_ms;
            });
            match core.start_again(&entry).await {
                Ok(()) => tracing::info!(container = %id, restarts = restart_count,
                    "started again by its restart policy"),
                Err(e) => tracing::warn!(container = %id, "restart policy: start again: {e}"),
            }
        });
    }

    /// Docker's `update --restart`: the policy from now on.
    pub async fn set_restart_policy(&self, id: &str, policy: RestartPolicy) -> Result<()> {
        self.docker_container(id)?;
        let entry = self.require_container(id)?;
        let _guard = entry.lock.lock().await;
        if entry.record().auto_remove && policy != RestartPolicy::No {
            return Err(Error::invalid(format!(
                "container {id} is removed when it exits (auto-remove): it takes no restart policy"
            )));
        }
        self.persist_container(&entry.update(|r| r.restart_policy = policy))
    }

    /// A start or restart by hand: the policy counts from zero again.
    pub(crate) fn reset_restart_policy(&self, record: &mut ContainerRecord) {
        record.stopped_by_user = false;
        record.restart_count = 0;
        record.restart_delay_ms = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies_decide_like_dockerds() {
        use RestartPolicy::*;
        assert!(!No.restarts(1, 0, false));
        assert!(Always.restarts(0, 99, false));
        assert!(UnlessStopped.restarts(0, 0, false));
        assert!(
            !Always.restarts(1, 0, true),
            "stopped by hand stays stopped"
        );
        let three = OnFailure { max_retries: 3 };
        assert!(!three.restarts(0, 0, false), "a clean exit is no failure");
        assert!(three.restarts(1, 2, false));
        assert!(!three.restarts(1, 3, false), "three restarts at most");
        assert!(OnFailure { max_retries: 0 }.restarts(1, 1000, false));
    }

    #[test]
    fn the_back_off_doubles_to_a_minute_and_resets_after_a_steady_run() {
        assert_eq!(next_delay_ms(0, 0), 100);
        assert_eq!(next_delay_ms(100, 1_000), 200);
        assert_eq!(next_delay_ms(400, 1_000), 800);
        assert_eq!(next_delay_ms(40_000, 1_000), 60_000);
        assert_eq!(next_delay_ms(60_000, 1_000), 60_000);
        assert_eq!(next_delay_ms(6_400, STEADY_RUN_NS), 100);
    }
}
