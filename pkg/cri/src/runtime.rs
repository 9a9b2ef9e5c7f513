//! CRI RuntimeService: each call is one core call, translated both ways
//! (`convert.rs`). Exec, Attach and PortForward answer a one-time URL of the
//! streaming server (berth-stream). The pod metrics calls answer the
//! core's usage snapshot (`usage_metrics.rs`). Checkpointing answers
//! `Unimplemented`, which kubelet treats as an error for that call rather
//! than a crash.
//!
//! CRI's own rules live here, not in the core: kubelet sees only
//! `Owner::Kubernetes` objects (another owner's is NotFound, and listings
//! and events filter by owner), and Stop/Remove of a missing object
//! succeed (the core says NotFound). See docs/dev/architecture.md (Owners,
//! Errors).

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use berth_core::model as m;
use berth_core::{CgroupDriver, ConditionKind, Core, Error, ErrorKind};
use berth_stream::{Request as StreamRequest, StreamServer};
use k8s_cri::v1 as api;
use k8s_cri::v1::runtime_service_server::RuntimeService;
use tonic::{Request, Response, Status};

use crate::convert;
use crate::error::status;
use crate::usage_metrics;
use crate::CRI_API_VERSION;

pub struct Runtime {
    core: Arc<Core>,
    stream: Arc<StreamServer>,
}

impl Runtime {
    pub fn new(core: Arc<Core>, stream: Arc<StreamServer>) -> Self {
        Runtime { core, stream }
    }

    /// A one-time streaming URL for `request`.
    fn stream_url(&self, request: StreamRequest) -> Result<String, Status> {
        self.stream
            .url_for(request)
            .ok_or_else(|| Status::resource_exhausted("too many streaming requests pending"))
    }

    /// A sandbox kubelet may see: another owner's is NotFound here.
    fn sandbox_record(&self, id: &str) -> berth_errdefs::Result<m::SandboxRecord> {
        let record = self.core.sandboxes().status(id)?;
        match record.owner {
            OWNER => Ok(record),
            _ => Err(Error::not_found(format!("pod sandbox {id} not found"))),
        }
    }

    /// A container kubelet may see: another owner's is NotFound here.
    fn container_record(&self, id: &str) -> berth_errdefs::Result<m::ContainerRecord> {
        let record = self.core.containers().status(id)?;
        match record.owner {
            OWNER => Ok(record),
            _ => Err(Error::not_found(format!("container {id} not found"))),
        }
    }

    fn running_container(&self, id: &str) -> Result<m::ContainerRecord, Status> {
        let record = self.container_record(id).map_err(status)?;
        if record.state != m::ContainerState::Running {
            return Err(Status::failed_precondition(format!(
                "container {id} is not running"
            )));
        }
        Ok(record)
    }
}

/// CRI sees and touches only what kubelet made.
const OWNER: m::Owner = m::Owner::Kubernetes;

/// CRI's stop and remove are idempotent: an object that is not there (or
/// not kubelet's) is already stopped and removed.
fn idempotent(r: berth_errdefs::Result<()>) -> Result<(), Status> {
    match r {
        Err(e) if e.kind == ErrorKind::NotFound => Ok(()),
        other => other.map_err(status),
    }
}

type Reply<T> = Result<Response<T>, Status>;
type EventStream =
    Pin<Box<dyn tokio_stream::Stream<Item = Result<api::ContainerEventResponse, Status>> + Send>>;

/// Generates the RuntimeService methods that are not implemented yet.
macro_rules! unimplemented_rpcs {
    ($($name:ident($req:ident) -> $resp:ident;)*) => {
        $(
            // Spelled out as async_trait expands it: the attribute cannot see
            // into this macro.
            fn $name<'life0, 'async_trait>(
                &'life0 self,
                _req: Request<api::$req>,
            ) -> Pin<Box<dyn Future<Output = Reply<api::$resp>> + Send + 'async_trait>>
            where
                'life0: 'async_trait,
                Self: 'async_trait,
            {
                Box::pin(async {
                    Err(Status::unimplemented(concat!(
                        stringify!($name),
                        " is not implemented by berthd yet"
                    )))
                })
            }
        )*
    };
}

#[tonic::async_trait]
impl RuntimeService for Runtime {
    async fn version(&self, _req: Request<api::VersionRequest>) -> Reply<api::VersionResponse> {
        Ok(Response::new(api::VersionResponse {
            version: "0.1.0".to_string(),
            runtime_name: "berth".to_string(),
            runtime_version: env!("CARGO_PKG_VERSION").to_string(),
            runtime_api_version: CRI_API_VERSION.to_string(),
        }))
    }

    async fn status(&self, req: Request<api::StatusRequest>) -> Reply<api::StatusResponse> {
        let conditions = self
            .core
            .node()
            .conditions()
            .into_iter()
            .map(|c| api::RuntimeCondition {
                r#type: match c.kind {
                    ConditionKind::RuntimeReady => "RuntimeReady",
                    ConditionKind::NetworkReady => "NetworkReady",
                }
                .to_string(),
                status: c.ready,
                reason: c.reason,
                message: c.message,
            })
            .collect();
        let mut info = HashMap::new();
        if req.into_inner().verbose {
            let config = serde_json::json!({
                "root": self.core.node().root().display().to_string(),
                "cgroupDriver": format!("{:?}", self.core.node().cgroup_driver()).to_lowercase(),
            });
            info.insert("config".to_string(), config.to_string());
        }
        Ok(Response::new(api::StatusResponse {
            status: Some(api::RuntimeStatus { conditions }),
            info,
            runtime_handlers: self
                .core
                .node()
                .runtime_handlers()
                .into_iter()
                .map(|name| api::RuntimeHandler {
                    features: Some(api::RuntimeHandlerFeatures {
                        recursive_read_only_mounts: self
                            .core
                            .node()
                            .recursive_read_only_mounts(&name),
                        user_namespaces: self.core.node().user_namespaces(&name),
                    }),
                    name,
                })
                .collect(),
            features: Some(api::RuntimeFeatures {
                supplemental_groups_policy: true,
            }),
        }))
    }

    async fn runtime_config(
        &self,
        _req: Request<api::RuntimeConfigRequest>,
    ) -> Reply<api::RuntimeConfigResponse> {
        let driver = match self.core.node().cgroup_driver() {
            CgroupDriver::Systemd => api::CgroupDriver::Systemd,
            CgroupDriver::Cgroupfs => api::CgroupDriver::Cgroupfs,
        };
        Ok(Response::new(api::RuntimeConfigResponse {
            linux: Some(api::LinuxRuntimeConfiguration {
                cgroup_driver: driver as i32,
            }),
        }))
    }

    type GetContainerEventsStream = EventStream;

    async fn get_container_events(
        &self,
        _req: Request<api::GetEventsRequest>,
    ) -> Reply<EventStream> {
        let mut events = self.core.events().subscribe(None);
        let core = self.core.clone();
        let stream = async_stream::stream! {
            let mut translator = crate::events::Translator::default();
            while let Some(received) = events.next().await {
                let event = match received {
                    berth_core::Received::Event(e) => e,
                    berth_core::Received::Lagged(n) => {
                        tracing::warn!(missed = n, "CRI event subscriber fell behind");
                        continue;
                    }
                };
                if let Some(reply) = translator.translate(&core, &event) {
                    yield Ok(reply);
                }
            }
        };
        Ok(Response::new(Box::pin(stream)))
    }

    async fn run_pod_sandbox(
        &self,
        req: Request<api::RunPodSandboxRequest>,
    ) -> Reply<api::RunPodSandboxResponse> {
        let req = req.into_inner();
        let config = req
            .config
            .ok_or_else(|| Status::invalid_argument("RunPodSandbox needs a config"))?;
        let config = convert::pod_config(config, req.runtime_handler).map_err(status)?;
        let id = self
            .core
            .sandboxes()
            .run(OWNER, config)
            .await
            .map_err(status)?;
        Ok(Response::new(api::RunPodSandboxResponse {
            pod_sandbox_id: id,
        }))
    }

    async fn stop_pod_sandbox(
        &self,
        req: Request<api::StopPodSandboxRequest>,
    ) -> Reply<api::StopPodSandboxResponse> {
        let id = req.into_inner().pod_sandbox_id;
        if self.sandbox_record(&id).is_ok() {
            idempotent(self.core.sandboxes().stop(&id).await)?;
        }
        Ok(Response::new(api::StopPodSandboxResponse {}))
    }

    async fn remove_pod_sandbox(
        &self,
        req: Request<api::RemovePodSandboxRequest>,
    ) -> Reply<api::RemovePodSandboxResponse> {
        let id = req.into_inner().pod_sandbox_id;
        if self.sandbox_record(&id).is_ok() {
            idempotent(self.core.sandboxes().remove(&id).await)?;
        }
        Ok(Response::new(api::RemovePodSandboxResponse {}))
    }

    async fn pod_sandbox_status(
        &self,
        req: Request<api::PodSandboxStatusRequest>,
    ) -> Reply<api::PodSandboxStatusResponse> {
        let req = req.into_inner();
        let record = self.sandbox_record(&req.pod_sandbox_id).map_err(status)?;
        let mut info = HashMap::new();
        if req.verbose {
            info.insert("info".to_string(), sandbox_info(&record).to_string());
        }
        Ok(Response::new(api::PodSandboxStatusResponse {
            status: Some(convert::sandbox_status(&record)),
            info,
            containers_statuses: Vec::new(),
            timestamp: 0,
        }))
    }

    async fn list_pod_sandbox(
        &self,
        req: Request<api::ListPodSandboxRequest>,
    ) -> Reply<api::ListPodSandboxResponse> {
        let filter = req.into_inner().filter.unwrap_or_default();
        let items = self.core.sandboxes().list(&m::SandboxFilter {
            owner: Some(OWNER),
            id: filter.id,
            state: filter.state.map(|s| convert::sandbox_state_in(s.state)),
            labels: filter.label_selector.into_iter().collect(),
        });
        Ok(Response::new(api::ListPodSandboxResponse {
            items: items.iter().map(convert::sandbox).collect(),
        }))
    }

    async fn create_container(
        &self,
        req: Request<api::CreateContainerRequest>,
    ) -> Reply<api::CreateContainerResponse> {
        let req = req.into_inner();
        let config = req
            .config
            .ok_or_else(|| Status::invalid_argument("CreateContainer needs a config"))?;
        // Only into kubelet's own pods.
        self.sandbox_record(&req.pod_sandbox_id).map_err(status)?;
        let id = self
            .core
            .containers()
            .create(&req.pod_sandbox_id, convert::container_config(config))
            .await
            .map_err(status)?;
        Ok(Response::new(api::CreateContainerResponse {
            container_id: id,
        }))
    }

    async fn start_container(
        &self,
        req: Request<api::StartContainerRequest>,
    ) -> Reply<api::StartContainerResponse> {
        let id = req.into_inner().container_id;
        self.container_record(&id).map_err(status)?;
        self.core.containers().start(&id).await.map_err(status)?;
        Ok(Response::new(api::StartContainerResponse {}))
    }

    async fn stop_container(
        &self,
        req: Request<api::StopContainerRequest>,
    ) -> Reply<api::StopContainerResponse> {
        let req = req.into_inner();
        if self.container_record(&req.container_id).is_ok() {
            idempotent(
                self.core
                    .containers()
                    .stop(&req.container_id, req.timeout)
                    .await,
            )?;
        }
        Ok(Response::new(api::StopContainerResponse {}))
    }

    async fn remove_container(
        &self,
        req: Request<api::RemoveContainerRequest>,
    ) -> Reply<api::RemoveContainerResponse> {
        let id = req.into_inner().container_id;
        if self.container_record(&id).is_ok() {
            idempotent(self.core.containers().remove(&id).await)?;
        }
        Ok(Response::new(api::RemoveContainerResponse {}))
    }

    async fn list_containers(
        &self,
        req: Request<api::ListContainersRequest>,
    ) -> Reply<api::ListContainersResponse> {
        let filter = req.into_inner().filter.unwrap_or_default();
        let items = self.core.containers().list(&m::ContainerFilter {
            owner: Some(OWNER),
            id: filter.id,
            sandbox_id: filter.pod_sandbox_id,
            state: filter.state.map(|s| convert::container_state_in(s.state)),
            labels: filter.label_selector.into_iter().collect(),
        });
        Ok(Response::new(api::ListContainersResponse {
            containers: items.iter().map(convert::container).collect(),
        }))
    }

    async fn container_status(
        &self,
        req: Request<api::ContainerStatusRequest>,
    ) -> Reply<api::ContainerStatusResponse> {
        let req = req.into_inner();
        let record = self.container_record(&req.container_id).map_err(status)?;
        let mut info = HashMap::new();
        if req.verbose {
            info.insert("info".to_string(), container_info(&record).to_string());
        }
        Ok(Response::new(api::ContainerStatusResponse {
            status: Some(convert::container_status(&record)),
            info,
        }))
    }

    async fn update_container_resources(
        &self,
        req: Request<api::UpdateContainerResourcesRequest>,
    ) -> Reply<api::UpdateContainerResourcesResponse> {
        let req = req.into_inner();
        let resources = req.linux.as_ref().map(convert::resources).ok_or_else(|| {
            Status::invalid_argument("UpdateContainerResources needs linux resources")
        })?;
        self.container_record(&req.container_id).map_err(status)?;
        self.core
            .containers()
            .update_resources(&req.container_id, resources)
            .await
            .map_err(status)?;
        Ok(Response::new(api::UpdateContainerResourcesResponse {}))
    }

    async fn reopen_container_log(
        &self,
        req: Request<api::ReopenContainerLogRequest>,
    ) -> Reply<api::ReopenContainerLogResponse> {
        let id = req.into_inner().container_id;
        self.container_record(&id).map_err(status)?;
        self.core
            .containers()
            .reopen_log(&id)
            .await
            .map_err(status)?;
        Ok(Response::new(api::ReopenContainerLogResponse {}))
    }

    async fn exec_sync(&self, req: Request<api::ExecSyncRequest>) -> Reply<api::ExecSyncResponse> {
        let req = req.into_inner();
        let timeout = Duration::from_secs(req.timeout.max(0) as u64);
        self.container_record(&req.container_id).map_err(status)?;
        let mut out = self
            .core
            .containers()
            .exec_sync(&req.container_id, req.cmd, timeout)
            .await
            .map_err(status)?;
        // ExecSyncResponse has no truncation flag: say it on stderr.
        if let Some(marker) = out.truncation_marker() {
            tracing::warn!(container = %req.container_id, "ExecSync: {}", marker.trim_end());
            out.stderr.extend_from_slice(marker.as_bytes());
        }
        Ok(Response::new(api::ExecSyncResponse {
            stdout: out.stdout,
            stderr: out.stderr,
            exit_code: out.exit_code,
        }))
    }

    async fn container_stats(
        &self,
        req: Request<api::ContainerStatsRequest>,
    ) -> Reply<api::ContainerStatsResponse> {
        let id = req.into_inner().container_id;
        let record = self.container_record(&id).map_err(status)?;
        let stats = self.core.containers().stats(&id).map_err(status)?;
        Ok(Response::new(api::ContainerStatsResponse {
            stats: Some(convert::container_stats(&stats, &record)),
        }))
    }

    async fn list_container_stats(
        &self,
        req: Request<api::ListContainerStatsRequest>,
    ) -> Reply<api::ListContainerStatsResponse> {
        let filter = req.into_inner().filter.unwrap_or_default();
        let filter = m::ContainerFilter {
            owner: Some(OWNER),
            id: filter.id,
            sandbox_id: filter.pod_sandbox_id,
            state: None,
            labels: filter.label_selector.into_iter().collect(),
        };
        let stats = self.core.containers().list_stats(&filter);
        Ok(Response::new(api::ListContainerStatsResponse {
            stats: self
                .with_records(stats)
                .iter()
                .map(|(s, r)| convert::container_stats(s, r))
                .collect(),
        }))
    }

    async fn pod_sandbox_stats(
        &self,
        req: Request<api::PodSandboxStatsRequest>,
    ) -> Reply<api::PodSandboxStatsResponse> {
        let id = req.into_inner().pod_sandbox_id;
        self.sandbox_record(&id).map_err(status)?;
        let (pod, stats) = self.core.sandboxes().stats(&id).map_err(status)?;
        Ok(Response::new(api::PodSandboxStatsResponse {
            stats: Some(self.pod_stats(&pod, stats)),
        }))
    }

    async fn list_pod_sandbox_stats(
        &self,
        req: Request<api::ListPodSandboxStatsRequest>,
    ) -> Reply<api::ListPodSandboxStatsResponse> {
        let filter = req.into_inner().filter.unwrap_or_default();
        let pods = self.core.sandboxes().list(&m::SandboxFilter {
            owner: Some(OWNER),
            id: filter.id,
            state: None,
            labels: filter.label_selector.into_iter().collect(),
        });
        let mut out = Vec::new();
        for pod in pods {
            if let Ok((pod, stats)) = self.core.sandboxes().stats(&pod.id) {
                out.push(self.pod_stats(&pod, stats));
            }
        }
        Ok(Response::new(api::ListPodSandboxStatsResponse {
            stats: out,
        }))
    }

    async fn list_metric_descriptors(
        &self,
        _req: Request<api::ListMetricDescriptorsRequest>,
    ) -> Reply<api::ListMetricDescriptorsResponse> {
        Ok(Response::new(api::ListMetricDescriptorsResponse {
            descriptors: usage_metrics::descriptors(),
        }))
    }

    async fn list_pod_sandbox_metrics(
        &self,
        _req: Request<api::ListPodSandboxMetricsRequest>,
    ) -> Reply<api::ListPodSandboxMetricsResponse> {
        // The snapshot reads cgroup files: off the async workers.
        let core = self.core.clone();
        let usage = tokio::task::spawn_blocking(move || core.usage())
            .await
            .map_err(|e| Status::internal(format!("usage collection: {e}")))?;
        Ok(Response::new(api::ListPodSandboxMetricsResponse {
            pod_metrics: usage_metrics::pod_metrics(&usage, OWNER),
        }))
    }

    async fn update_runtime_config(
        &self,
        req: Request<api::UpdateRuntimeConfigRequest>,
    ) -> Reply<api::UpdateRuntimeConfigResponse> {
        let cidr = req
            .into_inner()
            .runtime_config
            .and_then(|c| c.network_config)
            .map(|n| n.pod_cidr)
            .unwrap_or_default();
        self.core
            .node()
            .update_pod_cidr(&cidr)
            .await
            .map_err(status)?;
        Ok(Response::new(api::UpdateRuntimeConfigResponse {}))
    }

    async fn exec(&self, req: Request<api::ExecRequest>) -> Reply<api::ExecResponse> {
        let r = req.into_inner();
        if r.cmd.is_empty() {
            return Err(Status::invalid_argument("exec needs a command"));
        }
        if !(r.stdin || r.stdout || r.stderr) {
            return Err(Status::invalid_argument(
                "one of stdin, stdout and stderr must be requested",
            ));
        }
        if r.tty && r.stderr {
            return Err(Status::invalid_argument(
                "a tty exec has no separate stderr: ask for stdout only",
            ));
        }
        self.running_container(&r.container_id)?;
        let url = self.stream_url(StreamRequest::Exec {
            container_id: r.container_id,
            cmd: r.cmd,
            tty: r.tty,
            stdin: r.stdin,
            stdout: r.stdout,
            stderr: r.stderr,
        })?;
        Ok(Response::new(api::ExecResponse { url }))
    }

    async fn attach(&self, req: Request<api::AttachRequest>) -> Reply<api::AttachResponse> {
        let r = req.into_inner();
        if !(r.stdin || r.stdout || r.stderr) {
            return Err(Status::invalid_argument(
                "one of stdin, stdout and stderr must be requested",
            ));
        }
        let record = self.running_container(&r.container_id)?;
        if r.stdin && !record.config.stdin {
            return Err(Status::invalid_argument(format!(
                "container {} was not created with stdin; attach without it",
                r.container_id
            )));
        }
        // The container's own terminal decides, whatever the request says.
        let tty = record.config.tty;
        let url = self.stream_url(StreamRequest::Attach {
            container_id: r.container_id,
            tty,
            stdin: r.stdin,
            stdout: r.stdout,
            stderr: r.stderr && !tty,
        })?;
        Ok(Response::new(api::AttachResponse { url }))
    }

    async fn port_forward(
        &self,
        req: Request<api::PortForwardRequest>,
    ) -> Reply<api::PortForwardResponse> {
        let r = req.into_inner();
        let record = self.sandbox_record(&r.pod_sandbox_id).map_err(status)?;
        if record.state != m::SandboxState::Ready {
            return Err(Status::failed_precondition(format!(
                "pod sandbox {} is not ready",
                r.pod_sandbox_id
            )));
        }
        let url = self.stream_url(StreamRequest::PortForward {
            sandbox_id: r.pod_sandbox_id,
        })?;
        Ok(Response::new(api::PortForwardResponse { url }))
    }

    unimplemented_rpcs! {
        checkpoint_container(CheckpointContainerRequest) -> CheckpointContainerResponse;
    }
}

impl Runtime {
    /// A pod's stats: its containers' and its network's.
    fn pod_stats(
        &self,
        pod: &m::SandboxRecord,
        stats: Vec<m::ContainerStats>,
    ) -> api::PodSandboxStats {
        let interfaces = self
            .core
            .sandboxes()
            .network_stats(&pod.id)
            .unwrap_or_default();
        convert::pod_stats(pod, &self.with_records(stats), &interfaces)
    }

    /// Pairs stats with their container records (dropping any removed meanwhile).
    fn with_records(
        &self,
        stats: Vec<m::ContainerStats>,
    ) -> Vec<(m::ContainerStats, m::ContainerRecord)> {
        stats
            .into_iter()
            .filter_map(|s| {
                let r = self.container_record(&s.id).ok()?;
                Some((s, r))
            })
            .collect()
    }
}

/// Verbose sandbox info, in the spirit of containerd's `info` key.
fn sandbox_info(r: &m::SandboxRecord) -> serde_json::Value {
    serde_json::json!({
        "pid": r.namespaces.pause_pid.unwrap_or(0),
        "runtimeHandler": r.config.runtime_handler,
        "cgroupParent": r.cgroup_parent,
        "namespaces": {
            "network": r.namespaces.net,
            "ipc": r.namespaces.ipc,
            "uts": r.namespaces.uts,
            "pid": r.namespaces.pid,
        },
        "shm": r.shm,
        "config": {
            "hostname": r.config.hostname,
            "logDirectory": r.config.log_directory,
            "sysctls": r.config.sysctls,
            "dns": r.config.dns.as_ref().map(|d| serde_json::json!({
                "servers": d.servers, "searches": d.searches, "options": d.options,
            })),
        },
    })
}

/// Verbose container info.
fn container_info(r: &m::ContainerRecord) -> serde_json::Value {
    serde_json::json!({
        "sandboxID": r.sandbox_id,
        "pid": r.pid,
        "monitorPid": r.shim_pid,
        "runtimeHandler": r.runtime_handler,
        "cgroupsPath": r.cgroups_path,
        "stopSignal": r.stop_signal,
        "logPath": r.log_path,
        "image": r.config.image,
    })
}
