//! Docker's containers over fakes of the core's seams: a create that
//! fails leaves nothing, names, starting again after an exit, kill, stop,
//! wait, restart, rename, removal with the sandbox, auto-remove and its
//! recovery, and the events each verb publishes. No root needed.

#[allow(dead_code)] // Shared with seams.rs, which uses the rest.
mod fakes;

use std::time::Duration;

use berth_core::*;
use fakes::*;

#[track_caller]
fn assert_error(r: Result<impl std::fmt::Debug, Error>, kind: ErrorKind, message: &str) {
    let e = r.expect_err("an error");
    assert_eq!(e.kind, kind, "{e}");
    assert!(e.message.contains(message), "want {message:?} in: {e}");
}

/// A Docker container in a sandbox of its own, as a core before this one
/// left them (making one for real mounts an overlay).
fn seed_docker(world: &World, id: &str, state: ContainerState) -> ContainerRecord {
    let pod = world.seed_sandbox(&format!("pod-{id}"), Owner::Docker, &format!("pod-{id}"));
    world.seed_container(id, &pod, state)
}

fn with_auto_remove(world: &World, mut record: ContainerRecord) {
    record.auto_remove = true;
    world.store.put(CONTAINERS, &record.id.clone(), &record);
}

/// The next `n` container events about `id`: action and attributes.
async fn actions(sub: &mut Subscription, id: &str, n: usize) -> Vec<(String, Attrs)> {
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while out.len() < n {
        let received = tokio::time::timeout_at(deadline, sub.next())
            .await
            .unwrap_or_else(|_| panic!("events about {id}: only {out:?} in time"))
            .expect("the event stream");
        let Received::Event(e) = received else {
            panic!("a test subscriber lagged");
        };
        if e.id == id && e.kind == ObjectKind::Container {
            let mut attrs = Attrs::new();
            for (k, v) in &e.attributes {
                attrs = attrs.set(k, v.clone());
            }
            out.push((e.action.to_string(), attrs));
        }
    }
    out
}

fn names(events: &[(String, Attrs)]) -> Vec<&str> {
    events.iter().map(|(a, _)| a.as_str()).collect()
}

fn attr_of(events: &[(String, Attrs)], action: &str, key: &str) -> Option<String> {
    events
        .iter()
        .find(|(a, _)| a == action)
        .and_then(|(_, attrs)| BTreeMapOf::from(attrs.clone()).get(key).cloned())
}

type BTreeMapOf = std::collections::BTreeMap<String, String>;

fn spec(name: &str, network: NetworkMode) -> StandaloneSpec {
    StandaloneSpec {
        container: ContainerConfig {
            name: name.into(),
            image: "example.com/missing:1".into(),
            ..Default::default()
        },
        pod: pod_config(Owner::Docker, name),
        network,
        ..Default::default()
    }
}

fn docker_sandboxes(core: &Core) -> Vec<String> {
    core.sandboxes()
        .list(&SandboxFilter {
            owner: Some(Owner::Docker),
            ..Default::default()
        })
        .into_iter()
        .map(|s| s.id)
        .collect()
}

// ---------------------------------------------------------------------------
// Create.

#[tokio::test]
async fn a_create_that_fails_leaves_no_sandbox_record_or_name() {
    let world = World::new();
    let core = world.open();
    let containers = core.containers();

    // The sandbox is made (the node's network needs no root), then the
    // container is refused: its image is not there.
    assert_error(
        containers
            .create_standalone(spec("web", NetworkMode::Host))
            .await,
        ErrorKind::NotFound,
        "image \"example.com/missing:1\" not found",
    );
    assert_eq!(docker_sandboxes(&core), Vec::<String>::new());
    assert_eq!(world.store.keys(SANDBOXES), Vec::<String>::new());
    assert_eq!(world.store.keys(CONTAINERS), Vec::<String>::new());
    assert_eq!(
        World::entries(&world.root().join("pods")),
        Vec::<String>::new()
    );
    assert_eq!(
        World::entries(&world.dir.path().join("state/pods")),
        Vec::<String>::new()
    );
    // Its name is free again: the same failure, not a conflict.
    assert_error(
        containers
            .create_standalone(spec("web", NetworkMode::Host))
            .await,
        ErrorKind::NotFound,
        "not found",
    );
}

#[tokio::test]
async fn a_create_is_refused_before_anything_is_made() {
    let world = World::new();
    let docker = seed_docker(&world, "d1", ContainerState::Running);
    let k8s_pod = world.seed_sandbox("kpod", Owner::Kubernetes, "nginx");
    world.seed_container("k1", &k8s_pod, ContainerState::Running);
    let core = world.open();
    let containers = core.containers();
    let sandboxes_before = world.store.keys(SANDBOXES);

    // A Docker name in use, naming its holder.
    assert_error(
        containers
            .create_standalone(spec(&docker.config.name, NetworkMode::Host))
            .await,
        ErrorKind::AlreadyExists,
        "name \"ctr-d1\" is reserved for d1",
    );
    // The name Docker shows for a Kubernetes container (dockershim's).
    assert_error(
        containers
            .create_standalone(spec(
                "k8s_ctr-k1_nginx_default_uid-nginx_0",
                NetworkMode::Host,
            ))
            .await,
        ErrorKind::AlreadyExists,
        "reserved for k1",
    );
    // No name; a bad stop signal; another container's sandbox that is a
    // Kubernetes pod's or does not exist.
    assert_error(
        containers
            .create_standalone(spec("", NetworkMode::Host))
            .await,
        ErrorKind::InvalidArgument,
        "needs a name",
    );
    let bad_signal = StandaloneSpec {
        stop_signal: Some("SIGNOPE".into()),
        ..spec("web", NetworkMode::Host)
    };
    assert_error(
        containers.create_standalone(bad_signal).await,
        ErrorKind::InvalidArgument,
        "invalid signal: SIGNOPE",
    );
    assert_error(
        containers
            .create_standalone(spec("web", NetworkMode::Container("k1".into())))
            .await,
        ErrorKind::FailedPrecondition,
        "container k1 belongs to a Kubernetes pod",
    );
    assert_error(
        containers
            .create_standalone(spec("web", NetworkMode::Container("nope".into())))
            .await,
        ErrorKind::NotFound,
        "container nope not found",
    );
    assert_eq!(world.store.keys(SANDBOXES), sandboxes_before);
    assert_eq!(world.node.calls_to("spawn"), Vec::<String>::new());
}

// ---------------------------------------------------------------------------
// The Docker state machine.

#[tokio::test]
async fn an_exited_docker_container_starts_again_with_its_layer_and_log() {
    let world = World::new();
    seed_docker(&world, "d1", ContainerState::Exited);
    let k8s_pod = world.seed_sandbox("kpod", Owner::Kubernetes, "web");
    world.seed_container("k1", &k8s_pod, ContainerState::Exited);
    let core = world.open();
    let containers = core.containers();
    let mut sub = core.events().subscribe(None);
    // A stale exit status from the last run must not end the new one.
    let state = world.dir.path().join("state/c/d1");
    std::fs::write(state.join("exit.json"), "{\"exit_code\":0}").unwrap();

    containers.start("d1").await.unwrap();
    let r = containers.status("d1").unwrap();
    assert_eq!(r.state, ContainerState::Running);
    assert!(
        r.started_at_ns > 0 && r.exit_code == 0 && r.reason.is_empty(),
        "{r:?}"
    );
    assert!(!state.join("exit.json").exists());
    // The runtime's old container deleted, a new monitor, then start.
    let calls: Vec<String> = world
        .node
        .calls()
        .into_iter()
        .filter(|c| c.contains("d1"))
        .collect();
    assert_eq!(calls, ["delete d1 force=true", "spawn d1", "start d1"]);
    assert_eq!(names(&actions(&mut sub, "d1", 1).await), ["start"]);

    // Its next exit is recorded as the first was.
    world.node.exit("d1", 3);
    let code = containers
        .wait("d1", WaitCondition::NotRunning)
        .await
        .unwrap();
    assert_eq!(code, 3);
    let die = actions(&mut sub, "d1", 1).await;
    assert_eq!(attr_of(&die, "die", attr::EXIT_CODE).as_deref(), Some("3"));

    // A Kubernetes container keeps CRI's state machine.
    assert_error(
        containers.start("k1").await,
        ErrorKind::FailedPrecondition,
        "container k1 is Exited, not created: it cannot be started",
    );
}

#[tokio::test]
async fn kill_sends_the_signal_given_by_name_or_number() {
    let world = World::new();
    seed_docker(&world, "d1", ContainerState::Running);
    seed_docker(&world, "d2", ContainerState::Running);
    seed_docker(&world, "gone", ContainerState::Exited);
    let core = world.open();
    let containers = core.containers();
    let mut sub = core.events().subscribe(None);

    assert_error(
        containers.kill("d1", "SIGNOPE").await,
        ErrorKind::InvalidArgument,
        "invalid signal: SIGNOPE",
    );
    assert_error(
        containers.kill("gone", "TERM").await,
        ErrorKind::FailedPrecondition,
        "container gone is not running",
    );
    assert_error(
        containers.kill("nope", "").await,
        ErrorKind::NotFound,
        "nope",
    );
    containers.kill("d1", "SIGUSR1").await.unwrap();
    containers.kill("d2", "").await.unwrap();
    assert_eq!(world.node.calls_to("kill"), ["kill d1 10", "kill d2 9"]);
    let events = actions(&mut sub, "d1", 2).await;
    assert_eq!(names(&events), ["kill", "die"]);
    assert_eq!(
        attr_of(&events, "kill", attr::SIGNAL).as_deref(),
        Some("10")
    );
    assert_eq!(
        attr_of(&events, "kill", attr::NAME).as_deref(),
        Some("ctr-d1")
    );
    assert_eq!(attr_of(&events, "kill", attr::IMAGE).as_deref(), Some(""));
    assert_eq!(parse_signal("15").unwrap(), 15);
    assert_eq!(parse_signal("TERM").unwrap(), 15);
    assert_error(
        parse_signal("0"),
        ErrorKind::InvalidArgument,
        "invalid signal: 0",
    );
}

#[tokio::test]
async fn a_docker_stop_uses_the_stop_signal_and_tells_each_step() {
    let world = World::new();
    let mut record = seed_docker(&world, "d1", ContainerState::Running);
    record.stop_signal = libc::SIGQUIT;
    world.store.put(CONTAINERS, "d1", &record);
    let pod = world.seed_sandbox("kpod", Owner::Kubernetes, "web");
    world.seed_container("k1", &pod, ContainerState::Running);
    let core = world.open();
    let containers = core.containers();
    let mut sub = core.events().subscribe(None);

    containers.stop("d1", 5).await.unwrap();
    assert_eq!(world.node.calls_to("kill d1"), ["kill d1 3"]);
    let events = actions(&mut sub, "d1", 3).await;
    assert_eq!(names(&events), ["kill", "die", "stop"]);
    assert_eq!(attr_of(&events, "kill", attr::SIGNAL).as_deref(), Some("3"));
    assert_eq!(
        attr_of(&events, "die", attr::EXIT_CODE).as_deref(),
        Some("131")
    );
    // Stopping it again tells nothing.
    containers.stop("d1", 5).await.unwrap();

    // CRI's events for a stop are as they were: only the exit.
    containers.stop("k1", 5).await.unwrap();
    assert_eq!(names(&actions(&mut sub, "k1", 1).await), ["die"]);
    containers.remove_standalone("d1", false).await.unwrap();
    let after = actions(&mut sub, "d1", 1).await;
    assert_eq!(
        names(&after),
        ["destroy"],
        "nothing between the stop and destroy"
    );
}

#[tokio::test]
async fn wait_returns_the_exit_code_at_each_condition() {
    let world = World::new();
    seed_docker(&world, "d1", ContainerState::Running);
    let core = world.open();
    let containers = core.containers();

    let not_running = tokio::spawn({
        let c = containers.clone();
        async move { c.wait("d1", WaitCondition::NotRunning).await }
    });
    let removed = tokio::spawn({
        let c = containers.clone();
        async move { c.wait("d1", WaitCondition::Removed).await }
    });
    world.node.exit("d1", 7);
    assert_eq!(not_running.await.unwrap().unwrap(), 7);
    assert_eq!(
        containers
            .wait("d1", WaitCondition::NotRunning)
            .await
            .unwrap(),
        7
    );

    // next-exit on an exited container waits for the next run's end.
    let next = tokio::spawn({
        let c = containers.clone();
        async move { c.wait("d1", WaitCondition::NextExit).await }
    });
    tokio::task::yield_now().await;
    assert!(!next.is_finished());
    containers.start("d1").await.unwrap();
    world.node.exit("d1", 9);
    assert_eq!(next.await.unwrap().unwrap(), 9);

    assert!(!removed.is_finished());
    containers.remove_standalone("d1", false).await.unwrap();
    assert_eq!(removed.await.unwrap().unwrap(), 9);
    assert_error(
        containers.wait("d1", WaitCondition::NotRunning).await,
        ErrorKind::NotFound,
        "container d1 not found",
    );
}

#[tokio::test]
async fn restart_stops_and_starts_and_tells_both() {
    let world = World::new();
    seed_docker(&world, "d1", ContainerState::Running);
    let pod = world.seed_sandbox("kpod", Owner::Kubernetes, "web");
    world.seed_container("k1", &pod, ContainerState::Running);
    let core = world.open();
    let containers = core.containers();
    let mut sub = core.events().subscribe(None);

    containers.restart("d1", 1).await.unwrap();
    assert_eq!(
        containers.status("d1").unwrap().state,
        ContainerState::Running
    );
    assert!(world.node.is_running("d1"));
    let events = actions(&mut sub, "d1", 5).await;
    assert_eq!(names(&events), ["kill", "die", "stop", "start", "restart"]);
    assert_error(
        containers.restart("k1", 1).await,
        ErrorKind::FailedPrecondition,
        "belongs to a Kubernetes pod",
    );
    assert!(world.node.is_running("k1"));
}

#[tokio::test]
async fn rename_frees_the_old_name_and_takes_the_new_one() {
    let world = World::new();
    seed_docker(&world, "d1", ContainerState::Running);
    seed_docker(&world, "d2", ContainerState::Running);
    let pod = world.seed_sandbox("kpod", Owner::Kubernetes, "web");
    world.seed_container("k1", &pod, ContainerState::Running);
    let core = world.open();
    let containers = core.containers();
    let mut sub = core.events().subscribe(None);

    assert_error(
        containers.rename("d1", "ctr-d2").await,
        ErrorKind::AlreadyExists,
        "reserved for d2",
    );
    assert_error(
        containers.rename("d1", "ctr-d1").await,
        ErrorKind::InvalidArgument,
        "its current name",
    );
    assert_error(
        containers.rename("k1", "web").await,
        ErrorKind::FailedPrecondition,
        "belongs to a Kubernetes pod",
    );
    containers.rename("d1", "web").await.unwrap();
    assert_eq!(containers.status("d1").unwrap().config.name, "web");
    let stored: ContainerRecord = world.store.get(CONTAINERS, "d1").unwrap();
    assert_eq!(stored.config.name, "web");
    let events = actions(&mut sub, "d1", 1).await;
    assert_eq!(names(&events), ["rename"]);
    assert_eq!(
        attr_of(&events, "rename", attr::NAME).as_deref(),
        Some("web")
    );
    assert_eq!(
        attr_of(&events, "rename", attr::OLD_NAME).as_deref(),
        Some("/ctr-d1")
    );
    // The old name is free, the new one is taken.
    containers.rename("d2", "ctr-d1").await.unwrap();
    assert_error(
        containers.rename("d2", "web").await,
        ErrorKind::AlreadyExists,
        "reserved for d1",
    );
}

#[tokio::test]
async fn removal_needs_force_when_running_and_takes_the_sandbox() {
    let world = World::new();
    let d1 = seed_docker(&world, "d1", ContainerState::Running);
    let pod = world.seed_sandbox("kpod", Owner::Kubernetes, "web");
    world.seed_container("k1", &pod, ContainerState::Exited);
    let core = world.open();
    let containers = core.containers();
    let mut sub = core.events().subscribe(None);

    assert_error(
        containers.remove_standalone("d1", false).await,
        ErrorKind::FailedPrecondition,
        "container d1 is running: stop it first or force its removal",
    );
    assert!(world.node.is_running("d1"));
    assert_error(
        containers.remove_standalone("k1", true).await,
        ErrorKind::FailedPrecondition,
        "belongs to a Kubernetes pod",
    );
    containers.remove_standalone("d1", true).await.unwrap();
    let events = actions(&mut sub, "d1", 3).await;
    assert_eq!(names(&events), ["kill", "die", "destroy"]);
    assert_eq!(attr_of(&events, "kill", attr::SIGNAL).as_deref(), Some("9"));
    assert_eq!(docker_sandboxes(&core), Vec::<String>::new());
    assert_eq!(world.store.keys(SANDBOXES), ["kpod"]);
    assert_eq!(world.store.keys(CONTAINERS), ["k1"]);
    assert!(core.sandboxes().status(&d1.sandbox_id).is_err());
}

#[tokio::test]
async fn an_auto_remove_container_goes_with_its_sandbox_when_it_exits() {
    let world = World::new();
    let d1 = seed_docker(&world, "d1", ContainerState::Running);
    with_auto_remove(&world, d1.clone());
    let core = world.open();
    let containers = core.containers();
    let mut sub = core.events().subscribe(None);

    let removed = tokio::spawn({
        let c = containers.clone();
        async move { c.wait("d1", WaitCondition::Removed).await }
    });
    world.node.exit("d1", 0);
    assert_eq!(removed.await.unwrap().unwrap(), 0);
    assert_eq!(names(&actions(&mut sub, "d1", 2).await), ["die", "destroy"]);
    eventually("its sandbox removed", || docker_sandboxes(&core).is_empty()).await;
    assert_eq!(world.store.keys(CONTAINERS), Vec::<String>::new());
    assert_eq!(world.store.keys(SANDBOXES), Vec::<String>::new());
}

#[tokio::test]
async fn recovery_finishes_auto_removals_and_removes_empty_docker_sandboxes() {
    let world = World::new();
    // Exited while berthd was down, and exited before (its removal cut off).
    let d1 = seed_docker(&world, "d1", ContainerState::Running);
    with_auto_remove(&world, d1);
    world.node.exit("d1", 1);
    let d2 = seed_docker(&world, "d2", ContainerState::Exited);
    with_auto_remove(&world, d2);
    // Kept: no auto-remove.
    seed_docker(&world, "d3", ContainerState::Exited);
    // A sandbox whose container's removal was cut off.
    world.seed_sandbox("empty", Owner::Docker, "empty");
    // A Kubernetes pod without containers is kubelet's to remove.
    world.seed_sandbox("kpod", Owner::Kubernetes, "web");

    let core = world.open();
    eventually("the cleanups finished", || {
        world.store.keys(CONTAINERS) == ["d3"] && world.store.keys(SANDBOXES).len() == 2
    })
    .await;
    let mut left = world.store.keys(SANDBOXES);
    left.sort();
    assert_eq!(left, ["kpod", "pod-d3"]);
    assert_eq!(
        core.containers().status("d3").unwrap().state,
        ContainerState::Exited
    );
}

#[tokio::test]
async fn a_start_again_that_fails_leaves_it_exited() {
    let world = World::new();
    seed_docker(&world, "d1", ContainerState::Exited);
    let core = world.open();
    let containers = core.containers();

    world.node.fail_next("start", ErrorKind::Internal);
    assert_error(
        containers.start("d1").await,
        ErrorKind::Internal,
        &injected_failure("start"),
    );
    let r = containers.status("d1").unwrap();
    assert_eq!(r.state, ContainerState::Exited);
    let stored: ContainerRecord = world.store.get(CONTAINERS, "d1").unwrap();
    assert_eq!(stored.state, ContainerState::Exited);
    // The new monitor, still waiting to run it, went with the failure.
    assert_eq!(world.node.calls_to("control d1"), ["control d1 cancel"]);
    assert!(!world.node.is_running("d1"));
    assert_eq!(
        containers
            .wait("d1", WaitCondition::NotRunning)
            .await
            .unwrap(),
        0
    );
    // And it can start later.
    containers.start("d1").await.unwrap();
    assert_eq!(
        containers.status("d1").unwrap().state,
        ContainerState::Running
    );
}
