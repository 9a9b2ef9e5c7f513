//! The core over fakes of its seams (see `fakes/`): the container state
//! machine, idempotence and NotFound, owners, event order, recovery and
//! cleanup after a failed write. No root needed: sandboxes use the node's
//! namespaces, and containers come from records the store holds when the
//! core opens (making one mounts an overlay), driven through the verbs.

mod fakes;

use berth_core::*;
use fakes::*;

fn filter_owner(owner: Option<Owner>) -> SandboxFilter {
    SandboxFilter {
        owner,
        ..Default::default()
    }
}

fn ids_of_sandboxes(core: &Core, owner: Option<Owner>) -> Vec<String> {
    let mut ids: Vec<String> = core
        .sandboxes()
        .list(&filter_owner(owner))
        .into_iter()
        .map(|r| r.id)
        .collect();
    ids.sort();
    ids
}

fn ids_of_containers(core: &Core, filter: &ContainerFilter) -> Vec<String> {
    let mut ids: Vec<String> = core
        .containers()
        .list(filter)
        .into_iter()
        .map(|r| r.id)
        .collect();
    ids.sort();
    ids
}

#[track_caller]
fn assert_error(r: Result<impl std::fmt::Debug, Error>, kind: ErrorKind, message: &str) {
    let e = r.expect_err("an error");
    assert_eq!(e.kind, kind, "{e}");
    assert!(e.message.contains(message), "want {message:?} in: {e}");
}

/// Waits until the core has recorded `id`'s exit.
async fn exited(core: &Core, id: &str) -> ContainerRecord {
    eventually(&format!("exit of {id} recorded"), || {
        core.containers().status(id).unwrap().state == ContainerState::Exited
    })
    .await;
    core.containers().status(id).unwrap()
}

// ---------------------------------------------------------------------------
// The container state machine.

#[tokio::test]
async fn start_refuses_running_and_exited_containers_and_starts_a_created_one() {
    let world = World::new();
    let pod = world.seed_sandbox("pod1", Owner::Kubernetes, "web");
    world.seed_container("running", &pod, ContainerState::Running);
    world.seed_container("exited", &pod, ContainerState::Exited);
    world.seed_container("created", &pod, ContainerState::Created);
    let core = world.open();
    let containers = core.containers();

    for (id, state) in [("running", "Running"), ("exited", "Exited")] {
        assert_error(
            containers.start(id).await,
            ErrorKind::FailedPrecondition,
            &format!("container {id} is {state}, not created: it cannot be started"),
        );
    }
    assert_eq!(world.node.calls_to("start"), Vec::<String>::new());

    containers.start("created").await.unwrap();
    assert_eq!(world.node.calls_to("start"), ["start created"]);
    let status = containers.status("created").unwrap();
    assert_eq!(status.state, ContainerState::Running);
    assert!(status.started_at_ns > 0);
    let stored: ContainerRecord = world.store.get(CONTAINERS, "created").unwrap();
    assert_eq!(stored.state, ContainerState::Running, "persisted");
    assert_error(
        containers.start("created").await,
        ErrorKind::FailedPrecondition,
        "container created is Running, not created",
    );
}

#[tokio::test]
async fn a_failed_runtime_start_leaves_the_container_created() {
    let world = World::new();
    let pod = world.seed_sandbox("pod1", Owner::Kubernetes, "web");
    world.seed_container("c1", &pod, ContainerState::Created);
    let core = world.open();
    let mut events = subscribe(&core);

    world.node.fail_next("start", ErrorKind::Internal);
    assert_error(
        core.containers().start("c1").await,
        ErrorKind::Internal,
        &injected_failure("start"),
    );
    assert_eq!(
        core.containers().status("c1").unwrap().state,
        ContainerState::Created
    );
    let stored: ContainerRecord = world.store.get(CONTAINERS, "c1").unwrap();
    assert_eq!(stored.state, ContainerState::Created);
    assert_eq!(events.pending_about("c1"), []);
    // The failure was the runtime's, once: a retry goes through.
    core.containers().start("c1").await.unwrap();
    assert_eq!(
        core.containers().status("c1").unwrap().state,
        ContainerState::Running
    );
}

#[tokio::test]
async fn stopping_an_exited_container_is_ok_and_signals_nothing() {
    let world = World::new();
    let pod = world.seed_sandbox("pod1", Owner::Kubernetes, "web");
    world.seed_container("done", &pod, ContainerState::Exited);
    world.seed_container("run", &pod, ContainerState::Running);
    let core = world.open();
    let containers = core.containers();

    containers.stop("done", 10).await.unwrap();
    assert_eq!(world.node.calls_to("kill"), Vec::<String>::new());

    // The stop signal (15) ends it; its exit is recorded before stop returns.
    containers.stop("run", 30).await.unwrap();
    assert_eq!(world.node.calls_to("kill"), ["kill run 15"]);
    let status = containers.status("run").unwrap();
    assert_eq!(
        (status.state, status.exit_code, status.reason.as_str()),
        (ContainerState::Exited, 128 + 15, "Error")
    );
    // Twice: fine, and nothing more is sent.
    containers.stop("run", 30).await.unwrap();
    assert_eq!(world.node.calls_to("kill"), ["kill run 15"]);
}

#[tokio::test]
async fn a_stop_without_grace_kills() {
    let world = World::new();
    let pod = world.seed_sandbox("pod1", Owner::Kubernetes, "web");
    world.seed_container("run", &pod, ContainerState::Running);
    let core = world.open();
    core.containers().stop("run", 0).await.unwrap();
    assert_eq!(world.node.calls_to("kill"), ["kill run KILL"]);
    assert_eq!(core.containers().status("run").unwrap().exit_code, 137);
}

#[tokio::test]
async fn the_exit_is_what_the_monitor_recorded() {
    let world = World::new();
    let pod = world.seed_sandbox("pod1", Owner::Kubernetes, "web");
    for id in ["ok", "failed", "oom", "lost"] {
        world.seed_container(id, &pod, ContainerState::Running);
    }
    world
        .cgroups
        .set_oom_kills(&format!("{}/oom", pod.cgroup_parent), 1);
    let core = world.open();

    let ok_at = world.node.exit("ok", 0);
    let failed_at = world.node.exit("failed", 3);
    world.node.exit("oom", 137);
    world.node.vanish("lost");

    let ok = exited(&core, "ok").await;
    assert_eq!((ok.exit_code, ok.reason.as_str()), (0, "Completed"));
    assert_eq!(ok.finished_at_ns, ok_at, "the monitor's finish time");
    let failed = exited(&core, "failed").await;
    assert_eq!((failed.exit_code, failed.reason.as_str()), (3, "Error"));
    assert_eq!(failed.finished_at_ns, failed_at);
    let oom = exited(&core, "oom").await;
    assert_eq!((oom.exit_code, oom.reason.as_str()), (137, "OOMKilled"));

    // No exit recorded: Unknown, told as such.
    eventually("the lost container's state", || {
        core.containers().status("lost").unwrap().state != ContainerState::Running
    })
    .await;
    let lost = core.containers().status("lost").unwrap();
    assert_eq!(lost.state, ContainerState::Exited);
    assert_eq!((lost.exit_code, lost.reason.as_str()), (255, "Unknown"));
    assert!(lost.message.contains("without recording an exit status"));
    assert!(lost.finished_at_ns > 0);

    // Persisted, and the runtime's state released, for each.
    for id in ["ok", "failed", "oom", "lost"] {
        let stored: ContainerRecord = world.store.get(CONTAINERS, id).unwrap();
        assert_eq!(stored.state, ContainerState::Exited, "{id} persisted");
        eventually(&format!("runtime delete of {id}"), || {
            world.node.calls_to(&format!("delete {id} ")).len() == 1
        })
        .await;
    }
}

#[tokio::test]
async fn update_and_reopen_need_a_live_container() {
    let world = World::new();
    let pod = world.seed_sandbox("pod1", Owner::Kubernetes, "web");
    world.seed_container("done", &pod, ContainerState::Exited);
    world.seed_container("run", &pod, ContainerState::Running);
    let core = world.open();
    let containers = core.containers();
    let resources = Resources {
        memory_limit_in_bytes: 64 << 20,
        ..Default::default()
    };

    assert_error(
        containers.update_resources("done", resources.clone()).await,
        ErrorKind::FailedPrecondition,
        "container done is not running: its resources cannot change",
    );
    assert_error(
        containers.reopen_log("done").await,
        ErrorKind::FailedPrecondition,
        "container done is not running",
    );
    assert_eq!(world.node.calls_to("update"), Vec::<String>::new());
    assert_eq!(world.node.calls_to("control"), Vec::<String>::new());
    let stored: ContainerRecord = world.store.get(CONTAINERS, "done").unwrap();
    assert_eq!(stored.config.resources, Resources::default());

    // A running one takes both.
    containers
        .update_resources("run", resources.clone())
        .await
        .unwrap();
    let update = world.node.calls_to("update run");
    assert_eq!(update.len(), 1);
    assert!(update[0].contains("\"limit\":67108864"), "{update:?}");
    let stored: ContainerRecord = world.store.get(CONTAINERS, "run").unwrap();
    assert_eq!(stored.config.resources, resources);
    containers.reopen_log("run").await.unwrap();
    assert_eq!(world.node.calls_to("control"), ["control run reopen-log"]);
}

// ---------------------------------------------------------------------------
// Idempotence and NotFound.

#[tokio::test]
async fn missing_objects_are_not_found() {
    let world = World::new();
    let core = world.open();
    let (sandboxes, containers) = (core.sandboxes(), core.containers());
    let pod = "pod sandbox nope not found";
    assert_error(sandboxes.stop("nope").await, ErrorKind::NotFound, pod);
    assert_error(sandboxes.remove("nope").await, ErrorKind::NotFound, pod);
    assert_error(sandboxes.status("nope"), ErrorKind::NotFound, pod);
    let ctr = "container nope not found";
    assert_error(containers.stop("nope", 1).await, ErrorKind::NotFound, ctr);
    assert_error(containers.remove("nope").await, ErrorKind::NotFound, ctr);
    assert_error(containers.start("nope").await, ErrorKind::NotFound, ctr);
    assert_error(containers.status("nope"), ErrorKind::NotFound, ctr);
    assert_error(
        containers
            .update_resources("nope", Resources::default())
            .await,
        ErrorKind::NotFound,
        ctr,
    );
    assert_eq!(world.store.writes(), 0);
    assert_eq!(world.node.calls(), Vec::<String>::new());
}

#[tokio::test]
async fn removed_objects_are_not_found_afterwards() {
    let world = World::new();
    let pod = world.seed_sandbox("pod1", Owner::Docker, "app");
    world.seed_container("c1", &pod, ContainerState::Exited);
    let core = world.open();
    core.containers().remove("c1").await.unwrap();
    assert_error(
        core.containers().remove("c1").await,
        ErrorKind::NotFound,
        "container c1 not found",
    );
    core.sandboxes().remove("pod1").await.unwrap();
    assert_error(
        core.sandboxes().remove("pod1").await,
        ErrorKind::NotFound,
        "pod sandbox pod1 not found",
    );
}

#[tokio::test]
async fn removing_a_sandbox_removes_its_containers_and_frees_its_name() {
    let world = World::new();
    let pod = world.seed_sandbox("pod1", Owner::Kubernetes, "web");
    let other = world.seed_sandbox("pod2", Owner::Kubernetes, "db");
    world.seed_container("run", &pod, ContainerState::Running);
    world.seed_container("done", &pod, ContainerState::Exited);
    world.seed_container("theirs", &other, ContainerState::Running);
    let core = world.open();
    let sandboxes = core.sandboxes();

    // The name is taken while the pod exists, and the error names the holder.
    assert_error(
        sandboxes
            .run(Owner::Kubernetes, pod_config(Owner::Kubernetes, "web"))
            .await,
        ErrorKind::AlreadyExists,
        "name \"web_default_uid-web_0\" is reserved for pod1",
    );

    sandboxes.remove("pod1").await.unwrap();
    let all = ContainerFilter::default();
    assert_eq!(ids_of_containers(&core, &all), ["theirs"]);
    assert_eq!(world.store.keys(CONTAINERS), ["theirs"]);
    assert_eq!(world.store.keys(SANDBOXES), ["pod2"]);
    assert!(!world.node.is_running("run"), "the running one was killed");
    assert!(
        world.node.is_running("theirs"),
        "another pod's is untouched"
    );
    assert_eq!(ids_of_sandboxes(&core, None), ["pod2"]);

    // Now the name is free.
    let id = sandboxes
        .run(Owner::Kubernetes, pod_config(Owner::Kubernetes, "web"))
        .await
        .unwrap();
    assert_ne!(id, "pod1");
    assert_eq!(sandboxes.status(&id).unwrap().config.name, "web");
}

// ---------------------------------------------------------------------------
// Owners.

#[tokio::test]
async fn listings_filter_by_owner() {
    let world = World::new();
    let seeded_k8s = world.seed_sandbox("k8s-old", Owner::Kubernetes, "old");
    let seeded_docker = world.seed_sandbox("docker-old", Owner::Docker, "old-app");
    world.seed_container("kc", &seeded_k8s, ContainerState::Running);
    world.seed_container("dc", &seeded_docker, ContainerState::Running);
    let core = world.open();
    let sandboxes = core.sandboxes();

    let k8s = sandboxes
        .run(Owner::Kubernetes, pod_config(Owner::Kubernetes, "web"))
        .await
        .unwrap();
    let docker = sandboxes
        .run(Owner::Docker, pod_config(Owner::Docker, "app"))
        .await
        .unwrap();
    assert_eq!(sandboxes.status(&k8s).unwrap().owner, Owner::Kubernetes);
    assert_eq!(sandboxes.status(&docker).unwrap().owner, Owner::Docker);

    let mut want_k8s = vec![k8s.clone(), "k8s-old".to_string()];
    want_k8s.sort();
    let mut want_docker = vec![docker.clone(), "docker-old".to_string()];
    want_docker.sort();
    assert_eq!(ids_of_sandboxes(&core, Some(Owner::Kubernetes)), want_k8s);
    assert_eq!(ids_of_sandboxes(&core, Some(Owner::Docker)), want_docker);
    assert_eq!(ids_of_sandboxes(&core, None).len(), 4);

    let of = |owner| ContainerFilter {
        owner,
        ..Default::default()
    };
    assert_eq!(
        ids_of_containers(&core, &of(Some(Owner::Kubernetes))),
        ["kc"]
    );
    assert_eq!(ids_of_containers(&core, &of(Some(Owner::Docker))), ["dc"]);
    assert_eq!(ids_of_containers(&core, &of(None)), ["dc", "kc"]);
}

#[tokio::test]
async fn sandbox_metadata_must_match_the_owner() {
    let world = World::new();
    let core = world.open();
    let sandboxes = core.sandboxes();
    let k8s = |f: fn(&mut PodMetadata)| {
        let mut c = pod_config(Owner::Kubernetes, "web");
        f(c.kubernetes.as_mut().unwrap());
        c
    };
    let needs = "pod sandbox metadata needs a name, a namespace and a uid";
    for config in [
        k8s(|k| k.namespace.clear()),
        k8s(|k| k.uid.clear()),
        pod_config(Owner::Docker, "web"),
    ] {
        assert_error(
            sandboxes.run(Owner::Kubernetes, config).await,
            ErrorKind::InvalidArgument,
            needs,
        );
    }
    assert_error(
        sandboxes
            .run(Owner::Docker, pod_config(Owner::Kubernetes, "web"))
            .await,
        ErrorKind::InvalidArgument,
        "only Kubernetes pod sandboxes carry Kubernetes metadata",
    );
    assert_error(
        sandboxes
            .run(Owner::Docker, pod_config(Owner::Docker, ""))
            .await,
        ErrorKind::InvalidArgument,
        "a pod sandbox needs a name",
    );
    // Refused before anything was made.
    assert!(sandboxes.list(&SandboxFilter::default()).is_empty());
    assert_eq!(world.store.writes(), 0);
    assert_eq!(
        World::entries(&world.root().join("pods")),
        Vec::<String>::new()
    );
    assert_eq!(world.cgroups.log(), Vec::<String>::new());
}

// ---------------------------------------------------------------------------
// Events.

#[tokio::test]
async fn sandbox_events_come_in_order_once_each() {
    let world = World::new();
    let core = world.open();
    let mut events = subscribe(&core);
    let sandboxes = core.sandboxes();
    let id = sandboxes
        .run(Owner::Docker, pod_config(Owner::Docker, "app"))
        .await
        .unwrap();
    sandboxes.stop(&id).await.unwrap();
    sandboxes.stop(&id).await.unwrap();
    assert_eq!(sandboxes.status(&id).unwrap().state, SandboxState::NotReady);
    sandboxes.remove(&id).await.unwrap();

    let got = events.next_about(&id, 4).await;
    use EventKind::*;
    assert_eq!(
        got,
        [Created, Started, Stopped, Deleted].map(|k| (k, id.clone()))
    );
    assert_eq!(events.pending_about(&id), [], "a second stop told nothing");
}

#[tokio::test]
async fn container_events_follow_start_exit_and_removal() {
    let world = World::new();
    let pod = world.seed_sandbox("pod1", Owner::Kubernetes, "web");
    world.seed_container("c1", &pod, ContainerState::Created);
    let core = world.open();
    let mut events = subscribe(&core);
    let containers = core.containers();

    containers.start("c1").await.unwrap();
    assert_eq!(
        events.next_about("c1", 1).await,
        [(EventKind::Started, "pod1".to_string())]
    );
    world.node.exit("c1", 3);
    let died = events.next_among(&["c1"], 1).await.remove(0);
    assert_eq!(
        (died.kind, died.sandbox_id.as_str()),
        (EventKind::Stopped, "pod1")
    );
    // Typed: the exit code in the action and in Docker's attribute, and
    // what a front door needs to filter and show the event.
    assert_eq!(died.raw.action, Action::Die { exit_code: 3 });
    assert_eq!(died.raw.kind, ObjectKind::Container);
    let attrs = &died.raw.attributes;
    assert_eq!(attrs.get(attr::EXIT_CODE).map(String::as_str), Some("3"));
    assert_eq!(
        attrs.get(attr::OWNER).map(String::as_str),
        Some("kubernetes")
    );
    assert_eq!(
        attrs.get(attr::SANDBOX_ID).map(String::as_str),
        Some("pod1")
    );
    assert!(attrs.contains_key(attr::NAME), "{attrs:?}");
    assert!(attrs.contains_key(attr::IMAGE), "{attrs:?}");
    exited(&core, "c1").await;
    containers.remove("c1").await.unwrap();
    assert_eq!(
        events.next_about("c1", 1).await,
        [(EventKind::Deleted, "pod1".to_string())]
    );
    assert_eq!(events.pending_about("c1"), []);
}

#[tokio::test]
async fn stopping_a_sandbox_stops_its_containers_first() {
    let world = World::new();
    let pod = world.seed_sandbox("pod1", Owner::Kubernetes, "web");
    world.seed_container("run", &pod, ContainerState::Running);
    world.seed_container("done", &pod, ContainerState::Exited);
    let core = world.open();
    let mut events = subscribe(&core);

    core.sandboxes().stop("pod1").await.unwrap();
    let order: Vec<(String, EventKind)> = events
        .next_among(&["pod1", "run", "done"], 2)
        .await
        .into_iter()
        .map(|e| (e.id, e.kind))
        .collect();
    assert_eq!(
        order,
        [
            ("run".to_string(), EventKind::Stopped),
            ("pod1".to_string(), EventKind::Stopped)
        ]
    );
    let run = core.containers().status("run").unwrap();
    assert_eq!((run.state, run.exit_code), (ContainerState::Exited, 137));
    assert_eq!(world.node.calls_to("kill"), ["kill run KILL"]);
    let stored: SandboxRecord = world.store.get(SANDBOXES, "pod1").unwrap();
    assert_eq!(stored.state, SandboxState::NotReady);
    // A stopped pod takes no new containers, and says why.
    assert_error(
        core.containers()
            .create(
                "pod1",
                ContainerConfig {
                    name: "late".into(),
                    ..Default::default()
                },
            )
            .await,
        ErrorKind::FailedPrecondition,
        "pod sandbox pod1 is not ready (it was stopped); create a new one",
    );
    assert_eq!(
        events.pending_about("done"),
        [],
        "an exited one is not stopped again"
    );
}

/// A caller whose stop (or remove) returned has the container's Stopped
/// event already: the exit is told before waiters are let go, so Stopped
/// never follows Deleted nor the pod's own Stopped. The monitor watcher is
/// held between the two (at its log line) to make the order observable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stopped_event_is_out_before_a_stop_returns() {
    let world = World::new();
    let pod = world.seed_sandbox("pod1", Owner::Kubernetes, "web");
    world.seed_container("held", &pod, ContainerState::Running);
    let gate = hold_log("container exited", "held");
    let core = world.open();
    let mut events = subscribe(&core);

    core.containers().stop("held", 30).await.unwrap();
    let seen = events.pending_about("held");
    // The gate works (the watcher comes to the line and waits there).
    eventually("the watcher at its log line", || gate.reached()).await;
    gate.release();
    assert_eq!(seen, [EventKind::Stopped]);
}

// ---------------------------------------------------------------------------
// Recovery.

#[tokio::test]
async fn an_unreadable_record_is_moved_aside_and_the_rest_load() {
    let world = World::new();
    world.seed_sandbox("good1", Owner::Kubernetes, "a");
    world
        .store
        .put_raw(SANDBOXES, "garbage", b"{not json".to_vec());
    world.seed_sandbox("good2", Owner::Docker, "b");
    let core = world.open();

    assert_eq!(ids_of_sandboxes(&core, None), ["good1", "good2"]);
    assert_eq!(
        world.store.moved_aside(),
        [(SANDBOXES.to_string(), "garbage".to_string())]
    );
    assert_eq!(world.store.keys(SANDBOXES), ["good1", "good2"]);
    assert_eq!(core.node().unreadable_records(), 1);
}

#[tokio::test]
async fn a_container_whose_sandbox_is_gone_is_removed() {
    let world = World::new();
    let pod = world.seed_sandbox("pod1", Owner::Kubernetes, "web");
    world.seed_container("kept", &pod, ContainerState::Running);
    let gone = SandboxRecord {
        id: "gone".into(),
        ..pod.clone()
    };
    world.seed_container("orphan", &gone, ContainerState::Running);
    let state_dir = world.dir.path().join("state/c/orphan");
    assert!(state_dir.is_dir());
    let core = world.open();

    assert_eq!(world.store.keys(CONTAINERS), ["kept"]);
    assert_eq!(
        ids_of_containers(&core, &ContainerFilter::default()),
        ["kept"]
    );
    let deletes = world.node.calls_to("delete orphan");
    assert_eq!(
        deletes.first().map(String::as_str),
        Some("delete orphan force=true")
    );
    assert!(!world.node.is_running("orphan"), "killed");
    assert!(
        !world.node.runtime_knows("orphan"),
        "deleted from the runtime"
    );
    assert!(!state_dir.exists(), "its files removed");
    assert!(world.node.is_running("kept"));
}

#[tokio::test]
async fn a_container_that_exited_while_berthd_was_down_is_exited() {
    let world = World::new();
    let pod = world.seed_sandbox("pod1", Owner::Kubernetes, "web");
    world.seed_container("c1", &pod, ContainerState::Running);
    // Its monitor recorded exit 7, then exited, before this core opened.
    let finished_at_ns = world.node.exit("c1", 7);
    let core = world.open();

    let status = core.containers().status("c1").unwrap();
    assert_eq!(status.state, ContainerState::Exited);
    assert_eq!((status.exit_code, status.reason.as_str()), (7, "Error"));
    assert_eq!(status.finished_at_ns, finished_at_ns);
    let stored: ContainerRecord = world.store.get(CONTAINERS, "c1").unwrap();
    assert_eq!(
        (stored.state, stored.exit_code),
        (ContainerState::Exited, 7)
    );
    assert_eq!(world.node.calls_to("delete c1"), ["delete c1 force=true"]);
    // Exited for good: a stop has nothing to do.
    core.containers().stop("c1", 1).await.unwrap();
    assert_eq!(world.node.calls_to("kill"), Vec::<String>::new());
}

#[tokio::test]
async fn a_container_whose_monitor_lives_stays_running_and_its_exit_is_recorded() {
    let world = World::new();
    let pod = world.seed_sandbox("pod1", Owner::Kubernetes, "web");
    world.seed_container("c1", &pod, ContainerState::Running);
    let core = world.open();
    let mut events = subscribe(&core);

    assert_eq!(
        core.containers().status("c1").unwrap().state,
        ContainerState::Running
    );
    assert_eq!(world.node.calls(), Vec::<String>::new(), "left alone");

    world.node.exit("c1", 0);
    let status = exited(&core, "c1").await;
    assert_eq!((status.exit_code, status.reason.as_str()), (0, "Completed"));
    assert_eq!(
        events.next_about("c1", 1).await,
        [(EventKind::Stopped, "pod1".to_string())]
    );
}

// ---------------------------------------------------------------------------
// Cleanup.

#[tokio::test]
async fn a_sandbox_whose_record_cannot_be_written_leaves_nothing() {
    let world = World::new();
    let core = world.open();
    let sandboxes = core.sandboxes();
    // Limits on a pod whose cgroup parent does not exist: berth makes it.
    let config = PodConfig {
        resources: Some(Resources {
            memory_limit_in_bytes: 128 << 20,
            ..Default::default()
        }),
        ..pod_config(Owner::Kubernetes, "web")
    };

    world.store.fail_next_writes(1);
    assert_error(
        sandboxes.run(Owner::Kubernetes, config.clone()).await,
        ErrorKind::Internal,
        INJECTED_STORE_FAILURE,
    );
    let log = world.cgroups.log();
    let created: Vec<&String> = log.iter().filter(|l| l.starts_with("create ")).collect();
    assert_eq!(created.len(), 1, "{log:?}");
    let path = created[0].strip_prefix("create ").unwrap();
    assert!(path.starts_with(CGROUP_ROOT), "{path}");
    assert_eq!(
        log.iter()
            .filter(|l| **l == format!("remove {path}"))
            .count(),
        1,
        "removed exactly once: {log:?}"
    );
    assert!(world.cgroups.existing().is_empty());
    assert!(sandboxes.list(&SandboxFilter::default()).is_empty());
    assert_eq!(world.store.keys(SANDBOXES), Vec::<String>::new());
    assert_eq!(
        World::entries(&world.root().join("pods")),
        Vec::<String>::new()
    );
    assert_eq!(
        World::entries(&world.dir.path().join("state/pods")),
        Vec::<String>::new()
    );

    // The name was released: the same pod is made on retry, with its cgroup.
    let id = sandboxes.run(Owner::Kubernetes, config).await.unwrap();
    let record = sandboxes.status(&id).unwrap();
    assert!(record.owns_cgroup_parent);
    assert_eq!(
        world.cgroups.existing().into_iter().collect::<Vec<_>>(),
        [record.cgroup_parent.as_str()]
    );
    sandboxes.remove(&id).await.unwrap();
    assert!(world.cgroups.existing().is_empty(), "removed with the pod");
}

#[tokio::test]
async fn a_pod_under_an_existing_cgroup_parent_leaves_it_alone() {
    let world = World::new();
    world.cgroups.add("/kubepods/pod-web");
    let core = world.open();
    let config = PodConfig {
        cgroup_parent: "/kubepods/pod-web".into(),
        resources: Some(Resources {
            cpu_shares: 512,
            ..Default::default()
        }),
        ..pod_config(Owner::Kubernetes, "web")
    };
    let id = core
        .sandboxes()
        .run(Owner::Kubernetes, config)
        .await
        .unwrap();
    let record = core.sandboxes().status(&id).unwrap();
    assert_eq!(record.cgroup_parent, "/kubepods/pod-web");
    assert!(!record.owns_cgroup_parent);
    core.sandboxes().remove(&id).await.unwrap();
    assert_eq!(world.cgroups.log(), Vec::<String>::new(), "kubelet's own");
    assert!(world.cgroups.existing().contains("/kubepods/pod-web"));
}
