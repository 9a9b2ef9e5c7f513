//! `docker build` on the core: a Dockerfile's stages run step by step,
//! each step an image in the store (as dockerd's classic builder makes
//! them), reused through the build cache when nothing it depends on
//! changed.
//!
//! - `context.rs`: the context tar, unpacked safely into a private temp
//!   dir, with `.dockerignore`'s exclusions removed.
//! - `steps.rs`: one instruction on the image before it (metadata edits,
//!   WORKDIR), and the cache keys.
//! - `copy.rs`: COPY/ADD sources to a layer tar.
//! - `run.rs`: RUN in a hidden build container.
//! - `view.rs`: an image's filesystem, mounted read-only for a while.

mod context;
mod copy;
mod run;
mod steps;
mod view;

use std::collections::BTreeMap;
use std::io::Read;
use std::sync::Arc;

use berth_dockerfile::{Dockerfile, Instruction};
use berth_errdefs::{Error, ErrorKind, Result};
use berth_image::service::Image as LeafImage;
use tokio::sync::mpsc;

use crate::{Core, Credentials, NetworkMode, PullRequest};

/// The label that marks a build's RUN container: such containers are the
/// builder's own, listed to no front door.
pub(crate) const BUILD_CONTAINER_LABEL: &str = "io.berth.build";

/// Whether `record` is a build's RUN container.
pub(crate) fn is_build_container(record: &crate::ContainerRecord) -> bool {
    record.config.labels.contains_key(BUILD_CONTAINER_LABEL)
}

/// What builds berthd stopped in the middle of left under `<root>/build`
/// (contexts, layer tars, mounted views): unmounted and removed.
pub(crate) fn remove_leftovers(root: &std::path::Path) {
    let Ok(entries) = std::fs::read_dir(root.join("build")) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if let Err(e) = crate::rootfs::unmount_all(&path.join("root")) {
            tracing::warn!(path = %path.display(), "unmount a leftover build view: {e}");
            continue;
        }
        let removed = match entry.file_type().is_ok_and(|t| t.is_dir()) {
            true => std::fs::remove_dir_all(&path),
            false => std::fs::remove_file(&path),
        };
        if let Err(e) = removed {
            tracing::warn!(path = %path.display(), "remove a build leftover: {e}");
        }
    }
}

/// What a build asks for (Docker's `/build` parameters, decoded).
#[derive(Debug, Clone, Default)]
pub struct BuildRequest {
    /// The Dockerfile's path inside the context (`Dockerfile` if empty).
    pub dockerfile: String,
    /// Tags for the result (`name[:tag]`; qualified as a pull would).
    pub tags: Vec<String>,
    /// `--build-arg`: a name with no value takes the builder's environment
    /// in Docker; here it is unset.
    pub build_args: BTreeMap<String, Option<String>>,
    /// Stop after this stage (name or index).
    pub target: Option<String>,
    pub no_cache: bool,
    /// Pull every FROM image even when the store has it.
    pub pull: bool,
    /// Labels for the result.
    pub labels: BTreeMap<String, String>,
    /// The RUN containers' network.
    pub network: NetworkMode,
    pub credentials: Credentials,
}

/// What a build reports as it goes; the front door words it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BuildEvent {
    /// A line the builder has for the user before it starts (a warning).
    Note(String),
    /// Step `n` of `total` starts: its text as written.
    Step {
        n: usize,
        total: usize,
        text: String,
    },
    /// The base image's ONBUILD triggers run now.
    Triggers(usize),
    /// The step's image came from the build cache.
    Cached,
    /// A RUN container runs (its id).
    Running(String),
    /// What a RUN printed (stdout and stderr, as they come).
    Output(Vec<u8>),
    /// The RUN container was removed.
    Removed(String),
    /// The step's image.
    Done(String),
}

/// A finished build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuildResult {
    pub image_id: String,
    /// The tags it got, fully qualified.
    pub tags: Vec<String>,
}

impl Core {
    /// Builds the image the Dockerfile in the tar `context` (plain, gzip,
    /// bzip2 or xz) describes, reporting on `events`. The context is
    /// unpacked under the root dir and removed at the end; a traversing
    /// entry is `InvalidArgument` naming it. Closing `events` (the client
    /// went) stops the build: the running step's container is removed.
    pub async fn build(
        &self,
        context: impl Read + Send + 'static,
        request: BuildRequest,
        events: mpsc::Sender<BuildEvent>,
    ) -> Result<BuildResult> {
        let dir = self.shared.config.root.join("build");
        berth_store::private_dir(&dir, 0o700)?;
        let dockerfile_path = match request.dockerfile.as_str() {
            "" => "Dockerfile".to_string(),
            p => p.to_string(),
        };
        let ctx = tokio::task::spawn_blocking(move || {
            context::Context::unpack(&dir, context, &dockerfile_path)
        })
        .await
        .map_err(|e| Error::internal(format!("build context task: {e}")))??;
        let ctx = Arc::new(ctx);
        let builder = Builder {
            core: self.clone(),
            request,
            events,
            ctx: ctx.clone(),
        };
        let built = builder.run().await;
        tokio::task::spawn_blocking(move || drop(ctx))
            .await
            .map_err(|e| Error::internal(format!("build cleanup task: {e}")))?;
        built
    }

    /// The untagged images builds made others on (dockerd's intermediate
    /// images): `docker images` shows them only with `-a`.
    pub fn intermediate_images(&self) -> Result<std::collections::HashSet<String>> {
        self.shared.images.leaf.build_parents()
    }

    /// Forgets the build cache and removes the untagged step images it
    /// named that nothing uses (`docker builder prune`): their ids, and
    /// the bytes freed.
    pub async fn prune_build_cache(&self) -> Result<(Vec<String>, u64)> {
        let images = &self.shared.images;
        let before = images.leaf.fs_info()?.used.bytes;
        let mut removed = Vec::new();
        for id in images.leaf.clear_build_cache()? {
            let Some(image) = images.leaf.status(&id)? else {
                continue;
            };
            if image.repo_tags.is_empty() && images.user_of(&image.id).is_none() {
                match images.remove(&image.id).await {
                    Ok(()) => removed.push(image.id),
                    Err(e) => tracing::warn!(id = %image.id, "builder prune: image kept: {e}"),
                }
            }
        }
        let after = images.leaf.fs_info()?.used.bytes;
        Ok((removed, before.saturating_sub(after)))
    }
}

/// One build in progress.
struct Builder {
    core: Core,
    request: BuildRequest,
    events: mpsc::Sender<BuildEvent>,
    ctx: Arc<context::Context>,
}

/// Where a stage is: its image so far (`None`: scratch with nothing yet)
/// and the ARGs it declared, with their values.
pub(crate) struct Stage {
    pub image: Option<LeafImage>,
    pub args: BTreeMap<String, String>,
    /// The ARGs before the first FROM: an ARG without a default in the
    /// stage takes its value from them.
    pub meta: BTreeMap<String, String>,
    /// The base's ONBUILD triggers ran: the next image drops them.
    pub clear_onbuild: bool,
}

impl Builder {
    async fn run(&self) -> Result<BuildResult> {
        let df = &self.ctx.dockerfile;
        for note in &df.notes {
            self.send(BuildEvent::Note(note.clone())).await?;
        }
        let last =
            match &self.request.target {
                Some(t) if !t.is_empty() => df.stage_index(t).ok_or_else(|| {
                    Error::invalid(format!("failed to reach build target {t} in Dockerfile"))
                })?,
                _ => df.stages.len().checked_sub(1).ok_or_else(|| {
                    Error::invalid("the Dockerfile has no FROM: nothing to build")
                })?,
            };
        let total = df.step_count_through(last);
        let mut n = 0;
        let meta = self.meta_args(df, &mut n, total).await?;
        let mut built: Vec<LeafImage> = Vec::new();
        let mut result = None;
        for (index, stage) in df.stages.iter().take(last + 1).enumerate() {
            n += 1;
            self.step_line(n, total, &stage.original).await?;
            let mut state = self.from(df, stage, &meta, &built).await?;
            self.report_image(&state).await?;
            self.run_triggers(df, &mut state, &built).await?;
            for instruction in &stage.instructions {
                n += 1;
                self.step_line(n, total, &instruction.original).await?;
                self.step(df, &mut state, instruction, &built).await?;
            }
            if index == last {
                self.finish_labels(&mut state).await?;
            }
            let image = match state.image {
                Some(image) => image,
                None => self.empty_image().await?,
            };
            result = Some(image.clone());
            built.push(image);
        }
        let image = result.ok_or_else(|| Error::invalid("nothing to build"))?;
        let mut tags = Vec::new();
        for tag in &self.request.tags {
            self.core.images().tag(&image.id, tag).await?;
            let qualified = self.core.images().qualify(tag)?;
            let name = format!(
                "{}:{}",
                qualified.repository,
                qualified.tag.unwrap_or_else(|| "latest".into())
            );
            tags.push(name);
        }
        Ok(BuildResult {
            image_id: image.id,
            tags,
        })
    }

    /// The ARGs before the first FROM, each a step: their values for FROM
    /// lines (a `--build-arg` wins over the default).
    async fn meta_args(
        &self,
        df: &Dockerfile,
        n: &mut usize,
        total: usize,
    ) -> Result<BTreeMap<String, String>> {
        let mut meta = BTreeMap::new();
        for instruction in &df.meta_args {
            *n += 1;
            self.step_line(*n, total, &instruction.original).await?;
            if let berth_dockerfile::Command::Arg(defs) = &instruction.command {
                for def in defs {
                    if let Some(v) = self.arg_value(df, def, &meta)? {
                        meta.insert(def.name.clone(), v);
                    }
                }
            }
        }
        Ok(meta)
    }

    /// An ARG's value: the `--build-arg`, else its default expanded with
    /// what `known` has.
    fn arg_value(
        &self,
        df: &Dockerfile,
        def: &berth_dockerfile::ArgDef,
        known: &BTreeMap<String, String>,
    ) -> Result<Option<String>> {
        if let Some(Some(v)) = self.request.build_args.get(&def.name) {
            return Ok(Some(v.clone()));
        }
        match &def.default {
            Some(d) => Ok(Some(berth_dockerfile::expand(d, df.escape, &|k| {
                known.get(k).cloned()
            })?)),
            None => Ok(None),
        }
    }

    /// The stage's base: an earlier stage, `scratch`, or an image (pulled
    /// when missing or when the build asks to).
    async fn from(
        &self,
        df: &Dockerfile,
        stage: &berth_dockerfile::Stage,
        meta: &BTreeMap<String, String>,
        built: &[LeafImage],
    ) -> Result<Stage> {
        let name =
            berth_dockerfile::expand(&stage.from.image, df.escape, &|k| meta.get(k).cloned())?;
        if let Some(p) = &stage.from.platform {
            let p = berth_dockerfile::expand(p, df.escape, &|k| meta.get(k).cloned())?;
            check_platform(&p)?;
        }
        let image = match self.stage_image(df, &name, built) {
            Some(image) => Some(image),
            None if name.eq_ignore_ascii_case("scratch") => None,
            None => Some(self.image(&name, self.request.pull).await?),
        };
        Ok(Stage {
            image,
            args: BTreeMap::new(),
            meta: meta.clone(),
            clear_onbuild: false,
        })
    }

    /// An earlier stage that `name` names (its name or index).
    fn stage_image(&self, df: &Dockerfile, name: &str, built: &[LeafImage]) -> Option<LeafImage> {
        let index = df.stage_index(name)?;
        // A name is only an earlier stage's: a later one is an image.
        let named = df.stages[index].name.as_deref() == Some(name.to_ascii_lowercase().as_str());
        match index < built.len() && (named || name.parse::<usize>().is_ok()) {
            true => Some(built[index].clone()),
            false => None,
        }
    }

    /// The image `name` names, pulled when the store lacks it or `pull`.
    pub(crate) async fn image(&self, name: &str, pull: bool) -> Result<LeafImage> {
        let images = &self.core.shared.images;
        if !pull {
            if let Some(image) = images.resolve(name)? {
                return Ok(image);
            }
        }
        let pulled = images
            .pull(
                PullRequest {
                    reference: name.to_string(),
                    credentials: self.request.credentials.clone(),
                    platform: None,
                },
                None,
            )
            .await
            .map_err(|e| Error::new(e.kind, format!("pull {name}: {}", e.message)))?;
        images
            .resolve(&pulled.image_id)?
            .ok_or_else(|| Error::not_found(format!("image {name} went during the build")))
    }

    /// The base's ONBUILD triggers, run as steps of their own (unnumbered).
    async fn run_triggers(
        &self,
        df: &Dockerfile,
        state: &mut Stage,
        built: &[LeafImage],
    ) -> Result<()> {
        let Some(image) = &state.image else {
            return Ok(());
        };
        let config = steps::run_config(&self.core, image)?;
        let triggers: Vec<String> = config
            .get("OnBuild")
            .and_then(|v| v.as_array())
            .map(|a| {
                a.iter()
                    .filter_map(|t| t.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default();
        if triggers.is_empty() {
            return Ok(());
        }
        self.send(BuildEvent::Triggers(triggers.len())).await?;
        state.clear_onbuild = true;
        for text in triggers {
            let instruction = berth_dockerfile::parse_trigger(&text)?;
            self.step(df, state, &instruction, built).await?;
        }
        Ok(())
    }

    /// One instruction: from the cache, or made.
    async fn step(
        &self,
        df: &Dockerfile,
        state: &mut Stage,
        instruction: &Instruction,
        built: &[LeafImage],
    ) -> Result<()> {
        let prepared = steps::prepare(self, df, state, instruction, built).await?;
        if let steps::Kind::Nothing = prepared.kind {
            return self.report_image(state).await;
        }
        let key = prepared.cache_key(state.image.as_ref(), state.clear_onbuild);
        let leaf = &self.core.shared.images.leaf;
        if !self.request.no_cache {
            if let Some(image) = leaf.cached_step(&key)? {
                self.send(BuildEvent::Cached).await?;
                state.image = Some(image);
                state.clear_onbuild = false;
                return self.report_image(state).await;
            }
        }
        let image = steps::make(self, state, prepared).await?;
        let parent = state.image.as_ref().map(|p| p.id.as_str());
        leaf.record_step(&key, &image.id, parent)?;
        state.image = Some(image);
        state.clear_onbuild = false;
        self.report_image(state).await
    }

    /// The build's labels, on the last stage's image.
    async fn finish_labels(&self, state: &mut Stage) -> Result<()> {
        if self.request.labels.is_empty() {
            return Ok(());
        }
        let edit = crate::ImageChanges {
            labels: self.request.labels.clone(),
            ..Default::default()
        };
        let image = steps::commit_config(self, state, edit, String::new(), "LABEL").await?;
        state.image = Some(image);
        Ok(())
    }

    /// A stage that is only `FROM scratch`: an image with no layer.
    async fn empty_image(&self) -> Result<LeafImage> {
        let state = Stage {
            image: None,
            args: BTreeMap::new(),
            meta: BTreeMap::new(),
            clear_onbuild: false,
        };
        steps::commit_config(
            self,
            &state,
            Default::default(),
            String::new(),
            "FROM scratch",
        )
        .await
    }

    async fn step_line(&self, n: usize, total: usize, text: &str) -> Result<()> {
        self.send(BuildEvent::Step {
            n,
            total,
            text: text.to_string(),
        })
        .await
    }

    async fn report_image(&self, state: &Stage) -> Result<()> {
        match &state.image {
            Some(image) => self.send(BuildEvent::Done(image.id.clone())).await,
            None => Ok(()),
        }
    }

    /// Reports `event`; a closed channel (the client went) stops the build.
    pub(crate) async fn send(&self, event: BuildEvent) -> Result<()> {
        self.events.send(event).await.map_err(|_| cancelled())
    }
}

pub(crate) fn cancelled() -> Error {
    Error::new(ErrorKind::Unavailable, "the build's client went away")
}

/// Only the host's platform is built.
fn check_platform(platform: &str) -> Result<()> {
    let host = crate::Platform::host();
    let wanted = format!("{}/{}", host.os, host.architecture);
    if platform.is_empty() || platform == wanted || platform == host.os {
        return Ok(());
    }
    Err(Error::invalid(format!(
        "berth builds only for this node's platform {wanted}, not {platform}"
    )))
}

/// `--platform` of a build request: the host's or refused.
pub fn check_build_platform(platform: &str) -> Result<()> {
    check_platform(platform)
}
