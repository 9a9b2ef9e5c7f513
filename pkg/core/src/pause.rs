//! Docker's pause and unpause: the runtime's `pause`/`resume` freeze and
//! thaw the container's cgroup (v1 `freezer`, v2 `cgroup.freeze`). A
//! paused container still counts as running; it is thawed before it is
//! stopped or killed, so that the signal is delivered.

use std::sync::Arc;

use berth_errdefs::{Error, ErrorKind, Result};

use crate::container::Entry;
use crate::events::Action;
use crate::Containers;

impl Containers {
    /// Freezes a running Docker container's processes.
    pub async fn pause(&self, id: &str) -> Result<()> {
        self.set_paused(id, true).await
    }

    /// Thaws a paused Docker container.
    pub async fn unpause(&self, id: &str) -> Result<()> {
        self.set_paused(id, false).await
    }

    async fn set_paused(&self, id: &str, paused: bool) -> Result<()> {
        self.docker_container(id)?;
        let entry = self.require_container(id)?;
        let _guard = entry.lock.lock().await;
        let record = entry.record();
        record.state.check_running(id)?;
        if record.paused == paused {
            let now = if paused {
                "already paused"
            } else {
                "not paused"
            };
            return Err(Error::new(
                ErrorKind::FailedPrecondition,
                format!("container {id} is {now}"),
            ));
        }
        self.freeze(&entry, paused).await?;
        let action = if paused {
            Action::Pause
        } else {
            Action::Unpause
        };
        self.container_event(&entry.record(), action);
        Ok(())
    }

    /// Thaws `entry` if it is paused, before a signal that must reach it.
    /// The caller holds its lock.
    pub(crate) async fn thaw(&self, entry: &Arc<Entry>) -> Result<()> {
        match entry.record().paused {
            true => self.freeze(entry, false).await,
            false => Ok(()),
        }
    }

    /// The runtime's pause (or resume), then the record.
    async fn freeze(&self, entry: &Arc<Entry>, paused: bool) -> Result<()> {
        let record = entry.record();
        let runtime = self.runtime(&record.runtime_handler)?;
        let id = record.id.clone();
        tokio::task::spawn_blocking(move || match paused {
            true => runtime.pause(&id),
            false => runtime.resume(&id),
        })
        .await
        .map_err(|e| Error::internal(format!("container freeze task: {e}")))??;
        let record = entry.update(|r| r.paused = paused);
        self.persist_container(&record)
    }
}
