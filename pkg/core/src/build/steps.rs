//! One instruction, prepared (its words expanded, what it depends on
//! known, so its cache key is) and then made into the stage's next image.

use std::collections::BTreeMap;

use berth_dockerfile::{CmdLine, Command, Dockerfile, Healthcheck, Instruction};
use berth_errdefs::{Error, Result};
use berth_image::config_edit::NewLayerInfo;
use berth_image::service::Image as LeafImage;
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

use super::copy::CopyPlan;
use super::view::View;
use super::{Builder, Stage};
use crate::{Core, ImageChanges};

/// What an instruction will do.
pub(crate) enum Kind {
    /// Nothing to store (ARG: only the stage's variables change).
    Nothing,
    /// A config change only.
    Config {
        edit: ImageChanges,
        author: String,
    },
    /// WORKDIR: a config change, and the directory made when missing.
    Workdir {
        edit: ImageChanges,
        dir: String,
    },
    /// RUN: the command line and the build args it sees as env.
    Run {
        argv: Vec<String>,
        env: Vec<(String, String)>,
    },
    Copy(CopyPlan),
}

pub(crate) struct Prepared {
    pub kind: Kind,
    /// The instruction after substitution, with what else it depends on.
    key_text: String,
    /// The history entry's `created_by`.
    created_by: String,
}

impl Prepared {
    /// The step's cache key: its parent image, what it does, and whether
    /// it drops the base's ONBUILD triggers.
    pub fn cache_key(&self, parent: Option<&LeafImage>, clear_onbuild: bool) -> String {
        let mut h = Sha256::new();
        h.update(parent.map(|p| p.id.as_str()).unwrap_or("scratch"));
        h.update([0, u8::from(clear_onbuild)]);
        h.update(self.key_text.as_bytes());
        format!("sha256:{}", hex(&h.finalize()))
    }
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The `config` object of an image's config (Env, WorkingDir, Shell...).
pub(crate) fn run_config(core: &Core, image: &LeafImage) -> Result<Map<String, Value>> {
    let bytes = core.shared.images.leaf.config(image)?;
    let mut all: Value = serde_json::from_slice(&bytes)
        .map_err(|e| Error::internal(format!("image config {}: {e}", image.id)))?;
    match all.get_mut("config").map(Value::take) {
        Some(Value::Object(m)) => Ok(m),
        _ => Ok(Map::new()),
    }
}

fn strings(v: Option<&Value>) -> Vec<String> {
    v.and_then(Value::as_array)
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

/// What `$VAR` means in a stage: its ARGs, overridden by the image's env.
pub(crate) struct Vars {
    map: BTreeMap<String, String>,
    escape: char,
}

impl Vars {
    fn of(config: &Map<String, Value>, state: &Stage, escape: char) -> Vars {
        let mut map = state.args.clone();
        for var in strings(config.get("Env")) {
            if let Some((k, v)) = var.split_once('=') {
                map.insert(k.to_string(), v.to_string());
            }
        }
        Vars { map, escape }
    }

    pub fn expand(&self, word: &str) -> Result<String> {
        berth_dockerfile::expand(word, self.escape, &|k| self.map.get(k).cloned())
    }

    fn words(&self, word: &str) -> Result<Vec<String>> {
        berth_dockerfile::expand_words(word, self.escape, &|k| self.map.get(k).cloned())
    }
}

/// Expands the instruction and learns what it depends on.
pub(crate) async fn prepare(
    b: &Builder,
    df: &Dockerfile,
    state: &mut Stage,
    instruction: &Instruction,
    built: &[LeafImage],
) -> Result<Prepared> {
    let config = match &state.image {
        Some(image) => run_config(&b.core, image)?,
        None => Map::new(),
    };
    let vars = Vars::of(&config, state, df.escape);
    let mut edit = ImageChanges::default();
    let nop = |text: &str| format!("/bin/sh -c #(nop)  {text}");
    let config_step = |edit: ImageChanges, text: String| Prepared {
        created_by: nop(&text),
        key_text: format!("{}\n{:?}", instruction.command.name(), edit),
        kind: Kind::Config {
            edit,
            author: String::new(),
        },
    };
    let prepared = match &instruction.command {
        Command::Arg(defs) => {
            for def in defs {
                let value = b.arg_value(df, def, &state.args)?;
                let value = value.or_else(|| state.meta.get(&def.name).cloned());
                state
                    .args
                    .insert(def.name.clone(), value.unwrap_or_default());
            }
            Prepared {
                kind: Kind::Nothing,
                key_text: String::new(),
                created_by: String::new(),
            }
        }
        Command::Env(pairs) => {
            for kv in pairs {
                let (k, v) = (vars.expand(&kv.key)?, vars.expand(&kv.value)?);
                edit.env.push(format!("{k}={v}"));
            }
            let text = format!("ENV {}", edit.env.join(" "));
            config_step(edit, text)
        }
        Command::Label(pairs) => {
            for kv in pairs {
                edit.labels
                    .insert(vars.expand(&kv.key)?, vars.expand(&kv.value)?);
            }
            config_step(edit, instruction.original.clone())
        }
        Command::Workdir(dir) => {
            let dir = vars.expand(dir)?;
            let current = config
                .get("WorkingDir")
                .and_then(Value::as_str)
                .unwrap_or("/");
            let dir = absolute(current, &dir);
            edit.working_dir = Some(dir.clone());
            Prepared {
                created_by: nop(&format!("WORKDIR {dir}")),
                key_text: format!("WORKDIR\n{dir}"),
                kind: Kind::Workdir { edit, dir },
            }
        }
        Command::User(user) => {
            edit.user = Some(vars.expand(user)?);
            config_step(edit, instruction.original.clone())
        }
        Command::Expose(ports) => {
            for word in ports {
                for port in vars.words(word)? {
                    edit.exposed_ports.push(match port.contains('/') {
                        true => port.to_ascii_lowercase(),
                        false => format!("{port}/tcp"),
                    });
                }
            }
            config_step(edit, instruction.original.clone())
        }
        Command::Volume(paths) => {
            for word in paths {
                edit.volumes.extend(vars.words(word)?);
            }
            config_step(edit, instruction.original.clone())
        }
        Command::Stopsignal(signal) => {
            edit.stop_signal = Some(vars.expand(signal)?);
            config_step(edit, instruction.original.clone())
        }
        Command::Cmd(line) => {
            edit.cmd = Some(command_line(&config, line));
            config_step(edit, instruction.original.clone())
        }
        Command::Entrypoint(line) => {
            edit.entrypoint = Some(command_line(&config, line));
            config_step(edit, instruction.original.clone())
        }
        Command::Shell(shell) => {
            edit.raw.insert("Shell".into(), json!(shell));
            config_step(edit, instruction.original.clone())
        }
        Command::Healthcheck(check) => {
            edit.raw.insert("Healthcheck".into(), healthcheck(check));
            config_step(edit, instruction.original.clone())
        }
        Command::Onbuild(trigger) => {
            let mut triggers = strings(config.get("OnBuild"));
            if state.clear_onbuild {
                triggers.clear();
            }
            triggers.push(trigger.original.clone());
            edit.raw.insert("OnBuild".into(), json!(triggers));
            config_step(edit, instruction.original.clone())
        }
        Command::Maintainer(name) => Prepared {
            created_by: nop(&instruction.original),
            key_text: format!("MAINTAINER\n{name}"),
            kind: Kind::Config {
                edit,
                author: name.clone(),
            },
        },
        Command::Run(run) => {
            let argv = match run.shell_script() {
                Some(script) => {
                    let mut argv = shell(&config);
                    argv.push(script);
                    argv
                }
                None => match &run.cmd {
                    CmdLine::Exec(args) => args.clone(),
                    CmdLine::Shell(s) => vec![s.clone()],
                },
            };
            // The stage's ARGs reach RUN as env, unless ENV set them.
            let env: Vec<(String, String)> = state
                .args
                .iter()
                .filter(|(k, _)| !has_env(&config, k))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            Prepared {
                created_by: argv.join(" "),
                key_text: format!("RUN\n{argv:?}\n{env:?}\n{:?}", b.request.network),
                kind: Kind::Run { argv, env },
            }
        }
        Command::Copy(copy) | Command::Add(copy) => {
            let add = matches!(instruction.command, Command::Add(_));
            let workdir = config
                .get("WorkingDir")
                .and_then(Value::as_str)
                .unwrap_or("/")
                .to_string();
            let plan = CopyPlan::prepare(b, &vars, copy, add, &workdir, built).await?;
            Prepared {
                created_by: nop(&format!(
                    "{} {}",
                    instruction.command.name(),
                    plan.describe()
                )),
                key_text: plan.key_text(),
                kind: Kind::Copy(plan),
            }
        }
    };
    Ok(prepared)
}

/// Makes the step's image.
pub(crate) async fn make(b: &Builder, state: &Stage, prepared: Prepared) -> Result<LeafImage> {
    let created_by = prepared.created_by;
    match prepared.kind {
        Kind::Nothing => Err(Error::internal("a step with nothing to make")),
        Kind::Config { edit, author } => {
            commit(b, state, edit, author, created_by, LayerSource::None).await
        }
        Kind::Workdir { edit, dir } => {
            let core = b.core.clone();
            let parent = state.image.clone();
            let tar = tokio::task::spawn_blocking(move || -> Result<Option<Vec<u8>>> {
                let view = View::open(&core, parent.as_ref())?;
                match view.exists(&dir) {
                    true => Ok(None),
                    false => super::copy::dirs_tar(&view, &dir).map(Some),
                }
            })
            .await
            .map_err(|e| Error::internal(format!("workdir task: {e}")))??;
            let layer = match tar {
                Some(tar) => LayerSource::Bytes(tar),
                None => LayerSource::None,
            };
            commit(b, state, edit, String::new(), created_by, layer).await
        }
        Kind::Run { argv, env } => super::run::run(b, state, argv, env).await,
        Kind::Copy(plan) => {
            let tar = plan.make_tar(b, state).await?;
            commit(
                b,
                state,
                ImageChanges::default(),
                String::new(),
                created_by,
                LayerSource::File(tar),
            )
            .await
        }
    }
}

/// Where a step's layer comes from.
pub(crate) enum LayerSource {
    None,
    Bytes(Vec<u8>),
    /// A tar file, removed once stored.
    File(std::path::PathBuf),
}

/// A config-only image on the stage's (`created_by` names the step).
pub(crate) async fn commit_config(
    b: &Builder,
    state: &Stage,
    edit: ImageChanges,
    author: String,
    created_by: &str,
) -> Result<LeafImage> {
    let created_by = format!("/bin/sh -c #(nop)  {created_by}");
    commit(b, state, edit, author, created_by, LayerSource::None).await
}

/// The stage's image plus `layer`, with `edit` applied.
pub(crate) async fn commit(
    b: &Builder,
    state: &Stage,
    mut edit: ImageChanges,
    author: String,
    created_by: String,
    layer: LayerSource,
) -> Result<LeafImage> {
    if state.clear_onbuild && !edit.raw.contains_key("OnBuild") {
        edit.raw.insert("OnBuild".into(), Value::Null);
    }
    let info = NewLayerInfo {
        edit,
        author,
        comment: String::new(),
        created_by,
    };
    let leaf = b.core.shared.images.leaf.clone();
    let parent = state.image.clone();
    tokio::task::spawn_blocking(move || {
        let made = match &layer {
            LayerSource::None => leaf.commit_layer(parent.as_ref(), None, &info, None),
            LayerSource::Bytes(bytes) => {
                leaf.commit_layer(parent.as_ref(), Some(&mut &bytes[..]), &info, None)
            }
            LayerSource::File(path) => std::fs::File::open(path)
                .map_err(Error::from)
                .and_then(|mut f| leaf.commit_layer(parent.as_ref(), Some(&mut f), &info, None)),
        };
        if let LayerSource::File(path) = &layer {
            let _ = std::fs::remove_file(path);
        }
        made
    })
    .await
    .map_err(|e| Error::internal(format!("build commit task: {e}")))?
}

/// The stage's SHELL, or `/bin/sh -c`.
pub(crate) fn shell(config: &Map<String, Value>) -> Vec<String> {
    let shell = strings(config.get("Shell"));
    match shell.is_empty() {
        true => vec!["/bin/sh".into(), "-c".into()],
        false => shell,
    }
}

/// CMD/ENTRYPOINT as the config keeps them: exec form as is, shell form
/// under the stage's shell.
fn command_line(config: &Map<String, Value>, line: &CmdLine) -> Vec<String> {
    match line {
        CmdLine::Exec(args) => args.clone(),
        CmdLine::Shell(s) => {
            let mut argv = shell(config);
            argv.push(s.clone());
            argv
        }
    }
}

fn has_env(config: &Map<String, Value>, name: &str) -> bool {
    strings(config.get("Env"))
        .iter()
        .any(|v| v.split_once('=').is_some_and(|(k, _)| k == name))
}

/// The config's `Healthcheck` (durations in nanoseconds, as Docker's).
fn healthcheck(check: &Healthcheck) -> Value {
    match check {
        Healthcheck::None => json!({"Test": ["NONE"]}),
        Healthcheck::Check(c) => {
            let mut out = Map::new();
            out.insert("Test".into(), json!(c.test()));
            let durations = [
                ("Interval", c.interval),
                ("Timeout", c.timeout),
                ("StartPeriod", c.start_period),
                ("StartInterval", c.start_interval),
            ];
            for (key, d) in durations {
                if let Some(d) = d {
                    out.insert(key.into(), json!(d.as_nanos() as u64));
                }
            }
            if let Some(r) = c.retries {
                out.insert("Retries".into(), json!(r));
            }
            Value::Object(out)
        }
    }
}

/// `path` made absolute against the working dir `cwd`, cleaned.
pub(crate) fn absolute(cwd: &str, path: &str) -> String {
    let joined = match path.starts_with('/') {
        true => path.to_string(),
        false => format!("{}/{path}", cwd.trim_end_matches('/')),
    };
    let cleaned = berth_dockerfile::clean_path(&joined);
    match cleaned.starts_with('/') {
        true => cleaned,
        false => format!("/{cleaned}"),
    }
}
