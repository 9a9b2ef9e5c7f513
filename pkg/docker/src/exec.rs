//! Exec instances: `POST /containers/{id}/exec` makes one, `POST
//! /exec/{id}/start` runs it on a hijacked connection (or detached),
//! `/exec/{id}/resize` sizes its terminal, `GET /exec/{id}/json` shows it
//! (the CLI takes its exit code from there). The instances are the door's
//! own state; the processes are the core's streaming execs.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use berth_core::{ExecPid, ExecProcess, ExecSpec, Pty};
use hyper::{Response, StatusCode};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::attach::{size, upgraded};
use crate::error::{ApiError, ApiResult};
use crate::hijack::{self, Output, STDERR, STDOUT};
use crate::http::{json, no_content, ok_json, read_json, Body};
use crate::router::Ctx;
use crate::view;

/// Output bytes read at once.
const CHUNK: usize = 32 * 1024;

/// The exec instances the door knows, by id.
#[derive(Default)]
pub struct Execs {
    by_id: Mutex<HashMap<String, Arc<Instance>>>,
}

struct Instance {
    id: String,
    container_id: String,
    config: CreateBody,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    started: bool,
    running: bool,
    exit_code: Option<i32>,
    pty: Option<Pty>,
    pid: Option<ExecPid>,
}

/// The create body (the fields berth acts on or shows; others ignored).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
struct CreateBody {
    attach_stdin: bool,
    attach_stdout: bool,
    attach_stderr: bool,
    tty: bool,
    privileged: bool,
    user: String,
    env: Option<Vec<String>>,
    working_dir: String,
    cmd: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(default, rename_all = "PascalCase")]
struct StartBody {
    detach: bool,
}

impl Execs {
    fn get(&self, id: &str) -> ApiResult<Arc<Instance>> {
        self.lock()
            .get(id)
            .cloned()
            .ok_or_else(|| ApiError::not_found(format!("No such exec instance: {id}")))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Instance>>> {
        self.by_id.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Forgets the instances of containers that are gone.
    fn prune(&self, core: &berth_core::Core) {
        let containers = core.containers();
        self.lock()
            .retain(|_, i| containers.exists(&i.container_id));
    }
}

impl Instance {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// `POST /containers/{id}/exec`.
pub async fn create(ctx: Ctx, reference: &str) -> ApiResult<Response<Body>> {
    let Ctx {
        core, door, req, ..
    } = ctx;
    let container = view::find(&core, reference)?;
    let body: CreateBody = read_json(req).await?;
    if body.cmd.as_ref().is_none_or(Vec::is_empty) {
        return Err(ApiError::bad_request("No exec command specified"));
    }
    if container.state() != "running" {
        return Err(ApiError::conflict(format!(
            "Container {} is not running",
            container.record.id
        )));
    }
    door.execs.prune(&core);
    let id = random_id()?;
    let instance = Arc::new(Instance {
        id: id.clone(),
        container_id: container.record.id.clone(),
        config: body,
        state: Mutex::new(State::default()),
    });
    door.execs.lock().insert(id.clone(), instance);
    Ok(json(StatusCode::CREATED, &serde_json::json!({ "Id": id })))
}

/// `POST /exec/{id}/start`.
pub async fn start(ctx: Ctx, exec_id: &str) -> ApiResult<Response<Body>> {
    let Ctx {
        core,
        door,
        mut req,
        ..
    } = ctx;
    let instance = door.execs.get(exec_id)?;
    let on_upgrade = hyper::upgrade::on(&mut req);
    let start: StartBody = read_json(req).await?;
    {
        let mut state = instance.state();
        if state.started {
            return Err(ApiError::conflict(format!(
                "Error: Exec command {exec_id} has already run"
            )));
        }
        state.started = true;
        state.running = true;
    }
    let c = &instance.config;
    let spec = ExecSpec {
        cmd: c.cmd.clone().unwrap_or_default(),
        tty: c.tty,
        stdin: c.attach_stdin && !start.detach,
        stdout: c.attach_stdout && !start.detach,
        stderr: c.attach_stderr && !start.detach,
        env: c.env.clone().unwrap_or_default(),
        cwd: Some(c.working_dir.clone()).filter(|w| !w.is_empty()),
        user: Some(c.user.clone()).filter(|u| !u.is_empty()),
        privileged: c.privileged,
    };
    let process = match core
        .containers()
        .exec_stream(&instance.container_id, spec)
        .await
    {
        Ok(p) => p,
        Err(e) => {
            finish_state(&instance, Some(126));
            if start.detach {
                return Err(e.into());
            }
            tokio::spawn(report_failure(on_upgrade, instance, e));
            return Ok(hijack::upgraded_response());
        }
    };
    {
        let mut state = instance.state();
        state.pty = process.pty.clone();
        state.pid = Some(process.pid());
    }
    if start.detach {
        tokio::spawn(finish(instance, process));
        return no_content(StatusCode::OK);
    }
    tokio::spawn(async move {
        let Some(io) = upgraded(on_upgrade).await else {
            // Dropping the process kills it: nobody is there to see it.
            finish_state(&instance, None);
            return;
        };
        stream(io, instance, process).await;
    });
    Ok(hijack::upgraded_response())
}

/// Runs an attached exec: stdin from the client, output to it; the exit
/// code is recorded before the connection closes, so the CLI's inspect
/// that follows sees it.
async fn stream(io: hyper::upgrade::Upgraded, instance: Arc<Instance>, mut process: ExecProcess) {
    let (client_in, client_out) = hijack::split(io);
    let stdin_task = process
        .stdin
        .take()
        .map(|to| tokio::spawn(copy_stdin(client_in, to)));
    let (tx, mut rx) = tokio::sync::mpsc::channel::<(u8, Vec<u8>)>(16);
    let readers: Vec<_> = [
        (STDOUT, process.stdout.take()),
        (STDERR, process.stderr.take()),
    ]
    .into_iter()
    .filter_map(|(kind, r)| r.map(|r| tokio::spawn(read_into(kind, r, tx.clone()))))
    .collect();
    drop(tx);
    let mut output = Output {
        out: client_out,
        tty: instance.config.tty,
    };
    let mut client_gone = false;
    while let Some((kind, bytes)) = rx.recv().await {
        if output.send(kind, &bytes).await.is_err() {
            client_gone = true;
            break;
        }
    }
    if client_gone {
        // Dropping the process kills it, as dockerd does for a lost client.
        for r in readers {
            r.abort();
        }
        finish_state(&instance, None);
    } else {
        let code = process.wait().await.ok();
        finish_state(&instance, code);
        output.finish().await;
    }
    if let Some(task) = stdin_task {
        task.abort();
    }
}

/// An attached exec that could not start: as dockerd, the stream is
/// hijacked anyway and carries the reason on stdout; the exit code (126)
/// is in inspect, which the CLI exits with.
async fn report_failure(
    on_upgrade: hyper::upgrade::OnUpgrade,
    instance: Arc<Instance>,
    e: berth_core::Error,
) {
    let Some(io) = upgraded(on_upgrade).await else {
        return;
    };
    let (_, out) = hijack::split(io);
    let mut output = Output {
        out,
        tty: instance.config.tty,
    };
    let reason = format!("{}\r\n", e.message);
    let _ = output.send(STDOUT, reason.as_bytes()).await;
    output.finish().await;
}

async fn finish(instance: Arc<Instance>, mut process: ExecProcess) {
    let code = process.wait().await.ok();
    finish_state(&instance, code);
}

fn finish_state(instance: &Instance, code: Option<i32>) {
    let mut state = instance.state();
    // Read while the exec's pid file is still there: inspect keeps it.
    if let Some(pid) = &state.pid {
        pid.get();
    }
    state.running = false;
    state.pty = None;
    state.exit_code = Some(code.unwrap_or(-1));
}

async fn read_into(
    kind: u8,
    mut from: impl AsyncRead + Unpin,
    to: tokio::sync::mpsc::Sender<(u8, Vec<u8>)>,
) {
    let mut buf = vec![0; CHUNK];
    loop {
        match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if to.send((kind, buf[..n].to_vec())).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// The client's bytes into the exec's stdin; the client's half-close
/// closes it (`echo hi | docker exec -i c cat` ends).
async fn copy_stdin(
    mut client: impl AsyncRead + Unpin,
    mut to: Box<dyn AsyncWrite + Send + Unpin>,
) {
    let _ = tokio::io::copy(&mut client, &mut to).await;
    let _ = to.shutdown().await;
}

/// `POST /exec/{id}/resize?h=&w=`.
pub fn resize(ctx: &Ctx, exec_id: &str) -> ApiResult<Response<Body>> {
    let instance = ctx.door.execs.get(exec_id)?;
    let (rows, cols) = size(ctx)?;
    let pty = instance.state().pty.clone();
    match pty {
        Some(pty) => pty
            .resize(cols, rows)
            .map_err(|e| ApiError::internal(format!("resize exec {exec_id}: {e}")))?,
        None if instance.config.tty => {
            return Err(ApiError::conflict(format!("Exec {exec_id} is not running")))
        }
        None => {
            return Err(ApiError::bad_request(format!(
                "Exec {exec_id} has no tty to resize"
            )))
        }
    }
    no_content(StatusCode::OK)
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct InspectBody<'a> {
    #[serde(rename = "ID")]
    id: &'a str,
    running: bool,
    exit_code: Option<i32>,
    process_config: ProcessConfig<'a>,
    open_stdin: bool,
    open_stderr: bool,
    open_stdout: bool,
    can_remove: bool,
    #[serde(rename = "ContainerID")]
    container_id: &'a str,
    detach_keys: &'a str,
    pid: u32,
}

#[derive(Serialize)]
struct ProcessConfig<'a> {
    tty: bool,
    entrypoint: &'a str,
    arguments: &'a [String],
    privileged: bool,
    #[serde(skip_serializing_if = "str::is_empty")]
    user: &'a str,
}

/// `GET /exec/{id}/json`.
pub fn inspect(ctx: &Ctx, exec_id: &str) -> ApiResult<Response<Body>> {
    let instance = ctx.door.execs.get(exec_id)?;
    let (running, exit_code, pid) = {
        let s = instance.state();
        let pid = s.pid.as_ref().and_then(ExecPid::get).unwrap_or(0);
        (s.running, s.exit_code, pid)
    };
    let c = &instance.config;
    let cmd = c.cmd.as_deref().unwrap_or_default();
    ok_json(&InspectBody {
        id: &instance.id,
        running,
        exit_code,
        process_config: ProcessConfig {
            tty: c.tty,
            entrypoint: cmd.first().map(String::as_str).unwrap_or(""),
            arguments: cmd.get(1..).unwrap_or_default(),
            privileged: c.privileged,
            user: &c.user,
        },
        open_stdin: c.attach_stdin,
        open_stderr: c.attach_stderr,
        open_stdout: c.attach_stdout,
        can_remove: false,
        container_id: &instance.container_id,
        detach_keys: "",
        pid,
    })
}

/// A new 64-hex id, like dockerd's.
fn random_id() -> ApiResult<String> {
    let mut bytes = [0u8; 32];
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut bytes))
        .map_err(|e| ApiError::internal(format!("random exec id: {e}")))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}
