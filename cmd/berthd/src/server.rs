//! Wiring: take the locks, open the core, bind the CRI socket (0660), serve,
//! and shut down cleanly on a signal.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use berth_core::{Core, CoreConfig};
use berth_image::registries::RegistriesConfig;
use berth_oci::{default_handlers, RuntimeHandler};
use tokio::net::UnixListener;
use tokio::signal::unix::{signal, SignalKind};
use tokio_stream::wrappers::UnixListenerStream;

use crate::config::Config;

/// How long in-flight requests may take to finish after SIGTERM.
const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

pub async fn run(config: Config) -> Result<()> {
    fs::create_dir_all(&config.root)
        .with_context(|| format!("create root {}", config.root.display()))?;
    fs::create_dir_all(&config.state_dir)
        .with_context(|| format!("create state dir {}", config.state_dir.display()))?;
    let _root_lock = DirLock::take(&config.root)?;
    let _state_lock = DirLock::take(&config.state_dir)?;

    let registries =
        RegistriesConfig::load(&config.registries_config).map_err(|e| anyhow::anyhow!("{e}"))?;
    // Refuse a socket another berthd serves before touching the node
    // (opening the core makes the pod network).
    refuse_served_socket(&config.cri_socket)?;
    let core = Core::open(CoreConfig {
        root: config.root.clone(),
        state_dir: config.state_dir.clone(),
        registries,
        cgroup_driver: config.cgroup_driver,
        handlers: runtime_handlers(&config)?,
        shim: config.shim.clone(),
        cgroup_root: config.cgroup_root.clone(),
        network: config.network.clone(),
    })
    .map_err(|e| anyhow::anyhow!("{e}"))?;

    let listener = bind_socket(&config.cri_socket)?;
    let backend: Arc<dyn berth_stream::Backend> = Arc::new(core.clone());
    let stream = berth_stream::StreamServer::start(config.stream_address, backend)
        .await
        .with_context(|| format!("start the streaming server on {}", config.stream_address))?;
    let (runtime_service, image_service) = berth_cri::services(core, stream);
    tracing::info!(socket = %config.cri_socket.display(), root = %config.root.display(),
        version = env!("CARGO_PKG_VERSION"), "berthd serving CRI v1");

    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let mut server = tokio::spawn(
        tonic::transport::Server::builder()
            // One span per CRI call, named by its method, for every log line inside.
            .trace_fn(|req| tracing::info_span!("cri", method = %req.uri().path()))
            .add_service(runtime_service)
            .add_service(image_service)
            .serve_with_incoming_shutdown(UnixListenerStream::new(listener), async {
                let _ = stop_rx.await;
            }),
    );
    let result = tokio::select! {
        r = &mut server => r,
        () = shutdown_signal() => {
            let _ = stop_tx.send(());
            // Clients such as kubelet keep connections open: drain what is in
            // flight for a while, then stop regardless.
            match tokio::time::timeout(SHUTDOWN_GRACE, &mut server).await {
                Ok(r) => r,
                Err(_) => {
                    tracing::warn!(grace = ?SHUTDOWN_GRACE, "connections still open; closing them");
                    server.abort();
                    Ok(Ok(()))
                }
            }
        }
    };
    let _ = fs::remove_file(&config.cri_socket);
    result.context("CRI server task")?.context("serve CRI")?;
    tracing::info!("berthd stopped");
    Ok(())
}

/// The handlers found on this host (crun wrapped on hybrid cgroup hosts,
/// runc), then those of the config file; `""` is the default one.
fn runtime_handlers(config: &Config) -> Result<Vec<RuntimeHandler>> {
    let mode =
        berth_cgroups::detect(Path::new("/sys/fs/cgroup")).map_err(|e| anyhow::anyhow!("{e}"))?;
    let runtimes = config.state_dir.join("runtimes");
    let mut handlers: Vec<RuntimeHandler> = default_handlers(mode, &runtimes)
        .into_iter()
        .filter(|h| !h.name.is_empty())
        .collect();
    for (name, r) in &config.runtimes {
        if name.is_empty() {
            bail!("runtime handler names must not be empty");
        }
        handlers.retain(|h| &h.name != name);
        handlers.push(RuntimeHandler {
            name: name.clone(),
            program: r.program.clone(),
            argv_prefix: r.args.clone(),
            root: r.root.clone().unwrap_or_else(|| runtimes.join(name)),
            hide_cgroup2: false,
        });
    }
    let default = match &config.default_runtime {
        Some(name) => handlers.iter().find(|h| &h.name == name).with_context(|| {
            format!("default_runtime {name:?} is not a configured runtime handler")
        })?,
        None => match handlers
            .iter()
            .find(|h| h.name == "crun")
            .or(handlers.first())
        {
            Some(h) => h,
            None => {
                tracing::warn!("no OCI runtime found (crun, runc): pods cannot run");
                return Ok(handlers);
            }
        },
    };
    let default = RuntimeHandler {
        name: String::new(),
        ..default.clone()
    };
    handlers.insert(0, default);
    Ok(handlers)
}

async fn shutdown_signal() {
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        tracing::error!("cannot install signal handlers; stop berthd with SIGKILL");
        return std::future::pending().await;
    };
    let name = tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    };
    tracing::info!(signal = name, "shutting down");
}

/// Binds the socket with mode 0660, refusing to steal one that answers.
/// Fails if something answers on the socket (a stale file is fine).
fn refuse_served_socket(path: &Path) -> Result<()> {
    if std::os::unix::net::UnixStream::connect(path).is_ok() {
        bail!(
            "another process is serving on {}; is another berthd running?",
            path.display()
        );
    }
    Ok(())
}

fn bind_socket(path: &Path) -> Result<UnixListener> {
    if let Some(dir) = path.parent() {
        fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    }
    if path.exists() {
        refuse_served_socket(path)?;
        fs::remove_file(path).with_context(|| format!("remove stale socket {}", path.display()))?;
    }
    let listener = UnixListener::bind(path).with_context(|| format!("bind {}", path.display()))?;
    fs::set_permissions(path, fs::Permissions::from_mode(0o660))
        .with_context(|| format!("chmod {}", path.display()))?;
    Ok(listener)
}

/// An exclusive flock on `<dir>/berthd.lock`, held for the daemon's life;
/// the kernel drops it if berthd dies, so a stale lock never blocks a restart.
struct DirLock {
    _file: File,
}

impl DirLock {
    fn take(dir: &Path) -> Result<DirLock> {
        let path: PathBuf = dir.join("berthd.lock");
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .with_context(|| format!("open {}", path.display()))?;
        // SAFETY: flock on a descriptor we own; no memory is touched.
        let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc != 0 {
            let mut holder = String::new();
            let _ = file.read_to_string(&mut holder);
            bail!(
                "{} is in use by another berthd (pid {}); give each instance its own --root and --state-dir",
                dir.display(),
                holder.trim()
            );
        }
        file.set_len(0)?;
        file.rewind()?;
        write!(file, "{}", std::process::id())?;
        Ok(DirLock { _file: file })
    }
}
