//! RUN: the command in a build container on the stage's image (a Docker
//! container of the core's, run by the real OCI runtime in a sandbox of
//! its own, labelled so no front door lists it), its output streamed into
//! the build, its filesystem diff committed as the step's layer (the
//! code `docker commit` uses). The container goes after the step, also
//! when it fails or the client goes away.

use std::collections::BTreeMap;

use berth_errdefs::{Error, ErrorKind, Result};
use berth_image::service::Image as LeafImage;
use serde_json::Value;

use super::{cancelled, BuildEvent, Builder, Stage, BUILD_CONTAINER_LABEL};
use crate::{AttachOutput, ContainerConfig, ImageChanges, NewImage, StandaloneSpec, WaitCondition};

pub(crate) async fn run(
    b: &Builder,
    state: &Stage,
    argv: Vec<String>,
    env: Vec<(String, String)>,
) -> Result<LeafImage> {
    let Some(image) = &state.image else {
        return Err(Error::invalid(
            "RUN on an empty (scratch) stage: there is nothing to run it with",
        ));
    };
    let containers = b.core.containers();
    let spec = StandaloneSpec {
        container: ContainerConfig {
            name: format!("berth-build-{}", &crate::new_id()[..12]),
            image: image.id.clone(),
            command: argv.clone(),
            env,
            labels: BTreeMap::from([(BUILD_CONTAINER_LABEL.to_string(), "1".to_string())]),
            ..Default::default()
        },
        network: b.request.network.clone(),
        ..Default::default()
    };
    let id = containers.create_standalone(spec).await?;
    let ran = run_in(b, state, &id, &argv).await;
    // Removed whatever happened, even when the client went: on a task
    // of its own, waited for.
    let (c, cid) = (containers.clone(), id.clone());
    let removed = tokio::spawn(async move { c.remove_standalone(&cid, true).await })
        .await
        .map_err(|e| Error::internal(format!("build container removal: {e}")))?;
    if let Err(e) = removed {
        if e.kind != ErrorKind::NotFound {
            tracing::warn!(container = %id, "remove a build container: {e}");
        }
    }
    let image = ran?;
    let _ = b.send(BuildEvent::Removed(id)).await;
    Ok(image)
}

async fn run_in(b: &Builder, state: &Stage, id: &str, argv: &[String]) -> Result<LeafImage> {
    let containers = b.core.containers();
    let mut attached = containers.attach(id).await?;
    b.send(BuildEvent::Running(id.to_string())).await?;
    containers.start(id).await?;
    loop {
        let output = tokio::select! {
            o = attached.next_output() => o,
            _ = b.events.closed() => return Err(cancelled()),
        };
        match output {
            Some(AttachOutput::Stdout(bytes)) | Some(AttachOutput::Stderr(bytes)) => {
                b.send(BuildEvent::Output(bytes)).await?
            }
            Some(AttachOutput::Exited(_)) | None => break,
        }
    }
    let code = tokio::select! {
        c = containers.wait(id, WaitCondition::NotRunning) => c?,
        _ = b.events.closed() => return Err(cancelled()),
    };
    if code != 0 {
        return Err(Error::new(
            ErrorKind::FailedPrecondition,
            format!(
                "The command '{}' returned a non-zero code: {code}",
                argv.join(" ")
            ),
        ));
    }
    let mut changes = ImageChanges::default();
    if state.clear_onbuild {
        changes.raw.insert("OnBuild".into(), Value::Null);
    }
    let info = containers
        .commit(
            id,
            NewImage {
                changes,
                ..Default::default()
            },
        )
        .await?;
    b.core
        .shared
        .images
        .resolve(&info.id)?
        .ok_or_else(|| Error::internal(format!("the committed image {} is gone", info.id)))
}
