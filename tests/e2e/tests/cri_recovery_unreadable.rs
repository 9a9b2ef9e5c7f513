//! Recovery that keeps the node up: one pod sandbox record that berthd
//! cannot read (a corrupt disk, a record from an incompatible build) must
//! not keep berthd from starting. The record is moved aside, its bytes kept
//! in the store's quarantine table for an admin, and every other pod is
//! recovered and served as before.

use berth_e2e::*;
use berth_store::{Batch, Store};

/// The core's table of pod sandbox records in `<root>/meta.redb`.
const SANDBOXES: &str = "sandboxes";
/// Not JSON: no build of berthd can decode it.
const GARBAGE: &[u8] = b"\x00\xffnot a sandbox record{";

fn require_root() {
    // SAFETY: geteuid has no preconditions and cannot fail.
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "needs root: run the suite as root"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_pod_record_is_moved_aside_and_the_rest_recovered() {
    require_root();
    let mut d = berth_testkit::TestDaemon::start().await;
    let logs = d.dir().join("logs");
    let mut rt = d.runtime().await;
    let kept = run_pod(&mut rt, pod_config("kept", &logs.join("kept")), "").await;
    let broken = run_pod(&mut rt, pod_config("broken", &logs.join("broken")), "").await;
    drop(rt);

    d.stop().expect("berthd stopped");
    {
        // berthd is stopped, so the store is free to open.
        let store = Store::open(&d.root).expect("open the stopped daemon's store");
        let keys: Vec<String> = store
            .list_raw(SANDBOXES)
            .expect("list sandboxes")
            .into_iter()
            .map(|(k, _)| k)
            .collect();
        assert!(
            keys.contains(&kept) && keys.contains(&broken),
            "both pods are recorded before the corruption: {keys:?}"
        );
        store
            .write(Batch::new().put_raw(SANDBOXES, &broken, GARBAGE.to_vec()))
            .expect("corrupt the record");
    }

    // Starting at all is the first thing under test: before the fix,
    // recovery failed on the record and berthd exited.
    d.start_again().await;
    let mut rt = d.runtime().await;
    let pods = list_pods(&mut rt).await;
    let ids: Vec<&str> = pods.iter().map(|p| p.id.as_str()).collect();
    assert_eq!(
        ids,
        [kept.as_str()],
        "only the readable pod is listed; log:\n{}",
        d.log()
    );
    let log = d.log();
    assert!(
        log.contains(&broken) && log.contains("unreadable"),
        "berthd logs the record it moved aside: {log}"
    );
    // The recovered pod is fully usable: it stops and goes away as usual.
    teardown(&mut rt, &kept).await;
    assert!(list_pods(&mut rt).await.is_empty());
    drop(rt);

    d.stop().expect("berthd stopped");
    let store = Store::open(&d.root).expect("open the stopped daemon's store");
    assert!(
        store
            .list_raw(SANDBOXES)
            .expect("list sandboxes")
            .is_empty(),
        "the unreadable record left the sandboxes table"
    );
    assert_eq!(
        store.list_aside(SANDBOXES).expect("list the quarantine"),
        vec![(broken.clone(), GARBAGE.to_vec())],
        "its bytes are kept, unchanged, in the quarantine table"
    );
    drop(store);
    // Nothing of the pod whose record was lost stays on the host: its
    // pause process, namespaces, cgroup and network went with recovery.
    d.assert_no_leaks();
}
