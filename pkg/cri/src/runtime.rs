//! CRI RuntimeService. Version, Status and RuntimeConfig are served; the pod
//! and container calls answer `Unimplemented` until the runtime core has them,
//! which kubelet handles as an error for that call rather than a crash.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use berth_core::{CgroupDriver, ConditionKind, Core};
use k8s_cri::v1 as api;
use k8s_cri::v1::runtime_service_server::RuntimeService;
use tonic::{Request, Response, Status};

use crate::CRI_API_VERSION;

pub struct Runtime {
    core: Arc<Core>,
}

impl Runtime {
    pub fn new(core: Arc<Core>) -> Self {
        Runtime { core }
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
                "root": self.core.root().display().to_string(),
                "cgroupDriver": format!("{:?}", self.core.cgroup_driver()).to_lowercase(),
            });
            info.insert("config".to_string(), config.to_string());
        }
        Ok(Response::new(api::StatusResponse {
            status: Some(api::RuntimeStatus { conditions }),
            info,
            runtime_handlers: Vec::new(),
            features: None,
        }))
    }

    async fn runtime_config(
        &self,
        _req: Request<api::RuntimeConfigRequest>,
    ) -> Reply<api::RuntimeConfigResponse> {
        let driver = match self.core.cgroup_driver() {
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
        Err(Status::unimplemented(
            "get_container_events is not implemented by berthd yet",
        ))
    }

    unimplemented_rpcs! {
        run_pod_sandbox(RunPodSandboxRequest) -> RunPodSandboxResponse;
        stop_pod_sandbox(StopPodSandboxRequest) -> StopPodSandboxResponse;
        remove_pod_sandbox(RemovePodSandboxRequest) -> RemovePodSandboxResponse;
        pod_sandbox_status(PodSandboxStatusRequest) -> PodSandboxStatusResponse;
        list_pod_sandbox(ListPodSandboxRequest) -> ListPodSandboxResponse;
        create_container(CreateContainerRequest) -> CreateContainerResponse;
        start_container(StartContainerRequest) -> StartContainerResponse;
        stop_container(StopContainerRequest) -> StopContainerResponse;
        remove_container(RemoveContainerRequest) -> RemoveContainerResponse;
        list_containers(ListContainersRequest) -> ListContainersResponse;
        container_status(ContainerStatusRequest) -> ContainerStatusResponse;
        update_container_resources(UpdateContainerResourcesRequest) -> UpdateContainerResourcesResponse;
        reopen_container_log(ReopenContainerLogRequest) -> ReopenContainerLogResponse;
        exec_sync(ExecSyncRequest) -> ExecSyncResponse;
        exec(ExecRequest) -> ExecResponse;
        attach(AttachRequest) -> AttachResponse;
        port_forward(PortForwardRequest) -> PortForwardResponse;
        container_stats(ContainerStatsRequest) -> ContainerStatsResponse;
        list_container_stats(ListContainerStatsRequest) -> ListContainerStatsResponse;
        pod_sandbox_stats(PodSandboxStatsRequest) -> PodSandboxStatsResponse;
        list_pod_sandbox_stats(ListPodSandboxStatsRequest) -> ListPodSandboxStatsResponse;
        update_runtime_config(UpdateRuntimeConfigRequest) -> UpdateRuntimeConfigResponse;
        checkpoint_container(CheckpointContainerRequest) -> CheckpointContainerResponse;
        list_metric_descriptors(ListMetricDescriptorsRequest) -> ListMetricDescriptorsResponse;
        list_pod_sandbox_metrics(ListPodSandboxMetricsRequest) -> ListPodSandboxMetricsResponse;
    }
}
