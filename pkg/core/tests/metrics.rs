//! What the core records through its `Recorder`, and its census, over the
//! fakes of its seams.

#[allow(dead_code)] // Shared with seams.rs, which uses the rest.
mod fakes;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use berth_core::*;
use fakes::*;

/// Remembers every call, as text.
#[derive(Default)]
struct Calls(Mutex<Vec<String>>);

impl Calls {
    fn all(&self) -> Vec<String> {
        self.0.lock().unwrap().clone()
    }

    fn push(&self, call: String) {
        self.0.lock().unwrap().push(call);
    }
}

impl Recorder for Calls {
    fn pod_started(&self, runtime_handler: &str, _took: Duration) {
        self.push(format!("pod_started {runtime_handler:?}"));
    }

    fn container_started(&self, runtime_handler: &str, _took: Duration) {
        self.push(format!("container_started {runtime_handler:?}"));
    }

    fn monitor_exit_unexpected(&self) {
        self.push("monitor_exit_unexpected".into());
    }
}

#[tokio::test]
async fn pod_and_container_starts_are_recorded_once_each_and_failures_not() {
    let world = World::new();
    let pod = world.seed_sandbox("pod1", Owner::Kubernetes, "web");
    world.seed_container("created", &pod, ContainerState::Created);
    world.seed_container("running", &pod, ContainerState::Running);
    let calls = Arc::new(Calls::default());
    let core = world.open_recording(calls.clone());

    core.sandboxes()
        .run(Owner::Docker, pod_config(Owner::Docker, "app"))
        .await
        .unwrap();
    core.containers().start("created").await.unwrap();
    core.containers()
        .start("running")
        .await
        .expect_err("a running container does not start again");

    assert_eq!(
        calls.all(),
        ["pod_started \"\"", "container_started \"\""],
        "one figure per success, none for the refused start"
    );
}

#[tokio::test]
async fn a_monitor_gone_without_an_exit_status_is_counted() {
    let world = World::new();
    let pod = world.seed_sandbox("pod1", Owner::Kubernetes, "web");
    world.seed_container("ok", &pod, ContainerState::Running);
    world.seed_container("lost", &pod, ContainerState::Running);
    let calls = Arc::new(Calls::default());
    let core = world.open_recording(calls.clone());

    world.node.exit("ok", 0);
    world.node.vanish("lost");
    eventually("both exits recorded", || {
        ["ok", "lost"]
            .iter()
            .all(|id| core.containers().status(id).unwrap().state == ContainerState::Exited)
    })
    .await;
    assert_eq!(
        calls.all(),
        ["monitor_exit_unexpected"],
        "only the lost one"
    );
}

#[tokio::test]
async fn the_census_counts_objects_by_state_and_owner() {
    let world = World::new();
    let pod = world.seed_sandbox("pod1", Owner::Kubernetes, "web");
    world.seed_container("a", &pod, ContainerState::Running);
    world.seed_container("b", &pod, ContainerState::Running);
    world.seed_container("c", &pod, ContainerState::Created);
    let core = world.open();
    let docker_pod = core
        .sandboxes()
        .run(Owner::Docker, pod_config(Owner::Docker, "app"))
        .await
        .unwrap();
    core.sandboxes().stop(&docker_pod).await.unwrap();

    let census = core.census();
    assert_eq!(census.sandboxes.len(), 4, "every (state, owner) pair");
    assert_eq!(census.containers.len(), 8, "every (state, owner) pair");
    assert_eq!(
        census.sandboxes_in(SandboxState::Ready, Owner::Kubernetes),
        1
    );
    assert_eq!(
        census.sandboxes_in(SandboxState::NotReady, Owner::Docker),
        1
    );
    assert_eq!(census.sandboxes_in(SandboxState::Ready, Owner::Docker), 0);
    assert_eq!(
        census.containers_in(ContainerState::Running, Owner::Kubernetes),
        2
    );
    assert_eq!(
        census.containers_in(ContainerState::Created, Owner::Kubernetes),
        1
    );
    assert_eq!(
        census.containers_in(ContainerState::Running, Owner::Docker),
        0
    );
}
