//! Wiring: take the locks, open the core, bind the CRI socket (0660), serve,
//! and shut down cleanly on a signal.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context, Result};
use berth_core::{Core, CoreConfig};
use berth_image::registries::RegistriesConfig;
use berth_oci::{default_handlers, RuntimeHandler};
use tokio::net::UnixListener;
use tokio::signal::unix::{signal, SignalKind};

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
    if let Some(docker_socket) = &config.docker.socket {
        refuse_served_socket(docker_socket)?;
    }
    // Bound first, like the sockets: a bad address stops berthd at once.
    let metrics = bind_metrics(&config)?;
    let recorder: Arc<dyn berth_core::Recorder> = match &metrics {
        Some((_, _, agent)) => agent.clone(),
        None => Arc::new(berth_core::NoRecorder),
    };
    let core = Arc::new(
        Core::open_recording(
            CoreConfig {
                root: config.root.clone(),
                state_dir: config.state_dir.clone(),
                registries,
                cgroup_driver: config.cgroup_driver,
                handlers: runtime_handlers(&config)?,
                shim: config.shim.clone(),
                cgroup_root: config.cgroup_root.clone(),
                cgroup_fs: "/sys/fs/cgroup".into(),
                network: config.network.clone(),
                log_root: config.log_root.clone(),
                seccomp_profile_root: config.seccomp_profile_root.clone(),
                image_limits: config.image_limits,
                seccomp_default: config.seccomp_default,
                precompile_seccomp: config.precompile_seccomp,
            },
            recorder,
        )
        .map_err(|e| anyhow::anyhow!("{e}"))?,
    );

    // The CRI socket last: once it is there (kubelet's and the tests'
    // sign that berthd is up), every other door is bound too.
    let docker_listeners = bind_docker(&config)?;
    let backend: Arc<dyn berth_stream::Backend> = Arc::new(core.clone());
    let stream = berth_stream::StreamServer::start(config.stream_address, backend)
        .await
        .with_context(|| format!("start the streaming server on {}", config.stream_address))?;
    let listener = bind_socket(&config.cri_socket)?;
    let (runtime_service, image_service) = berth_cri::services(core.clone(), stream);
    tracing::info!(socket = %config.cri_socket.display(), root = %config.root.display(),
        version = env!("CARGO_PKG_VERSION"), "berthd serving CRI v1");

    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let (docker_stop, _) = tokio::sync::watch::channel(false);
    docker_listeners.spawn(&core, &docker_stop);
    if let Some((listener, registry, _)) = metrics {
        berth_metrics::census::register(&registry, (*core).clone())
            .context("register the object census")?;
        berth_metrics::containers::register(&registry, (*core).clone())
            .context("register the container usage collector")?;
        let mut stop = docker_stop.subscribe();
        tokio::spawn(berth_metrics::serve(listener, registry, async move {
            let _ = stop.wait_for(|s| *s).await;
        }));
    }
    let routes = tonic::service::Routes::new(runtime_service).add_service(image_service);
    let mut server = tokio::spawn(berth_cri::serve(
        listener,
        routes,
        core.recorder().clone(),
        async {
            let _ = stop_rx.await;
        },
    ));
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
    let _ = docker_stop.send(true);
    let _ = fs::remove_file(&config.cri_socket);
    if let Some(path) = &config.docker.socket {
        let _ = fs::remove_file(path);
    }
    result.context("CRI server task")?.context("serve CRI")?;
    tracing::info!("berthd stopped");
    Ok(())
}

/// The Docker API's listeners, bound before serving starts so that a
/// bad address or certificate stops berthd at once.
struct DockerListeners {
    unix: Option<UnixListener>,
    tcp: Option<(
        tokio::net::TcpListener,
        Option<Arc<berth_docker::TlsConfig>>,
    )>,
}

fn bind_docker(config: &Config) -> Result<DockerListeners> {
    let unix = match &config.docker.socket {
        Some(path) => {
            let listener = bind_socket(path)?;
            tracing::info!(socket = %path.display(), "serving the Docker API");
            Some(listener)
        }
        None => None,
    };
    let tcp = match &config.docker.tcp {
        None => None,
        Some(tcp) => {
            let tls = match &tcp.tls {
                Some((ca, cert, key)) => {
                    Some(berth_docker::tls_config(ca, cert, key).map_err(|e| anyhow::anyhow!(e))?)
                }
                None => {
                    tracing::warn!(address = %tcp.address,
                        "SERVING THE DOCKER API ON PLAIN TCP WITHOUT TLS: anyone who can reach this port is root on this node");
                    None
                }
            };
            let listener = std::net::TcpListener::bind(tcp.address)
                .with_context(|| format!("listen on {}", tcp.address))?;
            listener.set_nonblocking(true)?;
            tracing::info!(address = %tcp.address, tls = tls.is_some(), "serving the Docker API on TCP");
            Some((tokio::net::TcpListener::from_std(listener)?, tls))
        }
    };
    Ok(DockerListeners { unix, tcp })
}

impl DockerListeners {
    fn spawn(self, core: &Arc<Core>, stop: &tokio::sync::watch::Sender<bool>) {
        let stopped = |stop: &tokio::sync::watch::Sender<bool>| {
            let mut rx = stop.subscribe();
            async move {
                let _ = rx.wait_for(|s| *s).await;
            }
        };
        let door = berth_docker::Door::new((**core).clone());
        if let Some(listener) = self.unix {
            tokio::spawn(berth_docker::serve_unix(
                listener,
                door.clone(),
                stopped(stop),
            ));
        }
        match self.tcp {
            Some((listener, Some(tls))) => {
                tokio::spawn(berth_docker::serve_tls(listener, tls, door, stopped(stop)));
            }
            Some((listener, None)) => {
                tokio::spawn(berth_docker::serve_tcp_insecure(
                    listener,
                    door,
                    stopped(stop),
                ));
            }
            None => {}
        }
    }
}

/// The metrics listener and what it serves, when metrics are on.
type Metrics = (
    tokio::net::TcpListener,
    berth_metrics::Registry,
    Arc<berth_metrics::AgentMetrics>,
);

fn bind_metrics(config: &Config) -> Result<Option<Metrics>> {
    let Some(address) = config.metrics_address else {
        return Ok(None);
    };
    let (registry, agent) = berth_metrics::registry().context("metrics registry")?;
    let listener = std::net::TcpListener::bind(address)
        .with_context(|| format!("listen for metrics on {address}"))?;
    listener.set_nonblocking(true)?;
    tracing::info!(address = %listener.local_addr()?, "serving metrics at /metrics");
    Ok(Some((
        tokio::net::TcpListener::from_std(listener)?,
        registry,
        agent,
    )))
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
        let builtin = handlers.iter().position(|h| &h.name == name);
        let handler = match (&r.program, builtin) {
            (Some(program), _) => RuntimeHandler {
                name: name.clone(),
                program: program.clone(),
                argv_prefix: r.args.clone(),
                root: r.root.clone().unwrap_or_else(|| runtimes.join(name)),
                hide_cgroup2: false,
                allowed_annotations: r.allowed_annotations.clone(),
            },
            (None, Some(i)) => RuntimeHandler {
                allowed_annotations: r.allowed_annotations.clone(),
                ..handlers[i].clone()
            },
            (None, None) => bail!(
                "runtime handler {name:?} needs a program (only crun and runc are known without one)"
            ),
        };
        handlers.retain(|h| &h.name != name);
        handlers.push(handler);
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
    let listener = bind_private(path, 0o660)?;
    listener.set_nonblocking(true)?;
    UnixListener::from_std(listener).with_context(|| format!("listen on {}", path.display()))
}

/// Binds a unix socket that appears at `path` already with `mode`: it is
/// bound inside a fresh 0700 directory beside `path`, chmodded there and
/// renamed into place, so no one can connect in between (a chmod after a
/// bind in place leaves a window; a umask would be process-wide, changing
/// what every other thread creates meanwhile).
pub fn bind_private(path: &Path, mode: u32) -> Result<std::os::unix::net::UnixListener> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .with_context(|| format!("socket path {} has no file name", path.display()))?;
    let private = dir.join(format!(
        ".{}.{}.bind",
        name.to_string_lossy(),
        std::process::id()
    ));
    let _ = fs::remove_dir_all(&private);
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&private)
        .with_context(|| format!("create {}", private.display()))?;
    let bound = (|| -> Result<std::os::unix::net::UnixListener> {
        let tmp = private.join("s");
        let listener = std::os::unix::net::UnixListener::bind(&tmp)
            .with_context(|| format!("bind {}", path.display()))?;
        fs::set_permissions(&tmp, fs::Permissions::from_mode(mode))
            .with_context(|| format!("chmod {}", path.display()))?;
        fs::rename(&tmp, path).with_context(|| format!("move the socket to {}", path.display()))?;
        Ok(listener)
    })();
    let _ = fs::remove_dir_all(&private);
    bound
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::{FromRawFd, OwnedFd};

    /// inotify names every file created in `dir` and every file renamed into it.
    fn watch(dir: &Path) -> OwnedFd {
        // SAFETY: plain syscalls; the path is a valid C string we own.
        unsafe {
            let fd = libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC);
            assert!(fd >= 0);
            let c = std::ffi::CString::new(dir.as_os_str().as_encoded_bytes()).unwrap();
            assert!(
                libc::inotify_add_watch(fd, c.as_ptr(), libc::IN_CREATE | libc::IN_MOVED_TO) >= 0
            );
            OwnedFd::from_raw_fd(fd)
        }
    }

    /// (mask, name) of the events queued so far.
    fn events(fd: &OwnedFd) -> Vec<(u32, String)> {
        let mut buf = [0u8; 4096];
        // SAFETY: buf is a valid writable buffer of buf.len() bytes.
        let n = unsafe { libc::read(fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
        let mut out = Vec::new();
        let mut at = 0usize;
        while n > 0 && at < n as usize {
            let mask = u32::from_ne_bytes(buf[at + 4..at + 8].try_into().unwrap());
            let len = u32::from_ne_bytes(buf[at + 12..at + 16].try_into().unwrap()) as usize;
            let name = String::from_utf8_lossy(&buf[at + 16..at + 16 + len])
                .trim_end_matches('\0')
                .to_string();
            out.push((mask, name));
            at += 16 + len;
        }
        out
    }

    #[test]
    fn the_socket_appears_with_its_mode_never_before() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("berth.sock");
        let fd = watch(dir.path());
        let _listener = bind_private(&path, 0o660).unwrap();
        let mode = fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o660);
        let seen = events(&fd);
        // Created in place (bind then chmod) would show IN_CREATE for the
        // socket's own name: the window this closes.
        assert!(
            seen.iter()
                .any(|(m, n)| n == "berth.sock" && m & libc::IN_MOVED_TO != 0),
            "{seen:?}"
        );
        assert!(
            !seen
                .iter()
                .any(|(m, n)| n == "berth.sock" && m & libc::IN_CREATE != 0),
            "{seen:?}"
        );
        // The private bind directory is gone, and the socket answers.
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
        std::os::unix::net::UnixStream::connect(&path).unwrap();
    }
}
