//! How the Docker door sees the core's containers: each container joined
//! with its sandbox, under the name `docker` shows. Kubernetes containers
//! are named as dockershim named them, `k8s_<container>_<pod>_<namespace>_<uid>_<attempt>`,
//! so an admin finds a pod's containers with `docker ps`.

use std::collections::HashMap;

use berth_core::{
    ContainerFilter, ContainerRecord, ContainerState, Core, NamespaceMode, Owner, SandboxFilter,
    SandboxRecord,
};

use crate::error::{ApiError, ApiResult};

/// A container as the Docker API shows it.
#[derive(Debug, Clone)]
pub struct ContainerView {
    pub record: ContainerRecord,
    /// Its sandbox (absent only while a removal races the listing).
    pub sandbox: Option<SandboxRecord>,
    /// The name without dockerd's leading `/`.
    pub name: String,
}

impl ContainerView {
    fn new(record: ContainerRecord, sandbox: Option<SandboxRecord>) -> ContainerView {
        let name = display_name(&record, sandbox.as_ref());
        ContainerView {
            record,
            sandbox,
            name,
        }
    }

    /// dockerd's state word: created, running, exited.
    pub fn state(&self) -> &'static str {
        match self.record.state {
            ContainerState::Created => "created",
            ContainerState::Running if self.record.paused => "paused",
            ContainerState::Running => "running",
            ContainerState::Exited | ContainerState::Unknown => "exited",
        }
    }

    /// The network mode as `docker inspect` shows it.
    pub fn network_mode(&self) -> String {
        let sandbox = self.sandbox.as_ref();
        match sandbox.map(|s| s.config.namespaces.network) {
            Some(NamespaceMode::Node) => "host".into(),
            _ if self.record.owner == Owner::Kubernetes => "bridge".into(),
            // A Docker sandbox is named after the container it was made
            // for: another one in it joined with `--network container:`.
            _ if sandbox.is_some_and(|s| s.config.name != self.record.id) => {
                format!("container:{}", sandbox.map_or("", |s| &s.config.name))
            }
            _ => match sandbox.map(|s| (s.network.as_ref(), s.endpoints.first())) {
                Some((Some(_), _)) => "default".into(),
                // Made on a user network: the name it was made with.
                Some((None, Some(e))) => e.network_name.clone(),
                _ => "none".into(),
            },
        }
    }
}

/// The name `docker` shows for a container.
pub fn display_name(record: &ContainerRecord, sandbox: Option<&SandboxRecord>) -> String {
    match (
        record.owner,
        sandbox.and_then(|s| Some((s, s.config.kubernetes.as_ref()?))),
    ) {
        (Owner::Kubernetes, Some((pod, k8s))) => format!(
            "k8s_{}_{}_{}_{}_{}",
            record.config.name, pod.config.name, k8s.namespace, k8s.uid, record.config.attempt
        ),
        _ => record.config.name.clone(),
    }
}

/// Every container of every owner, newest first (as `docker ps` lists).
pub fn all(core: &Core) -> Vec<ContainerView> {
    let sandboxes: HashMap<String, SandboxRecord> = core
        .sandboxes()
        .list(&SandboxFilter::default())
        .into_iter()
        .map(|s| (s.id.clone(), s))
        .collect();
    let mut views: Vec<ContainerView> = core
        .containers()
        .list(&ContainerFilter::default())
        .into_iter()
        .map(|c| {
            let sandbox = sandboxes.get(&c.sandbox_id).cloned();
            ContainerView::new(c, sandbox)
        })
        .collect();
    views.sort_by_key(|v| std::cmp::Reverse(v.record.created_at_ns));
    views
}

/// Resolves what a user typed, as dockerd does: a full id, a name (with
/// or without its `/`), or a unique id prefix.
pub fn find(core: &Core, reference: &str) -> ApiResult<ContainerView> {
    let wanted = reference.strip_prefix('/').unwrap_or(reference);
    if wanted.is_empty() {
        return Err(ApiError::no_such_container(reference));
    }
    // A full id (the CLI's own follow-up calls, scripts) is one lookup:
    // building every view to find it cost about 1 ms with 50 containers.
    if let Some(record) = core.containers().visible(wanted) {
        let sandbox = core.sandboxes().status(&record.sandbox_id).ok();
        return Ok(ContainerView::new(record, sandbox));
    }
    let views = all(core);
    if let Some(v) = views.iter().find(|v| v.name == wanted) {
        return Ok(v.clone());
    }
    let mut prefixed = views.iter().filter(|v| v.record.id.starts_with(wanted));
    match (prefixed.next(), prefixed.next()) {
        (Some(v), None) => Ok(v.clone()),
        (Some(_), Some(_)) => Err(ApiError::bad_request(format!(
            "multiple IDs found with provided prefix: {wanted}"
        ))),
        _ => Err(ApiError::no_such_container(reference)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_core::{PodConfig, PodMetadata};

    #[test]
    fn kubernetes_containers_get_dockershim_names() {
        let mut c = ContainerRecord::default();
        c.config.name = "web".into();
        c.config.attempt = 2;
        let pod = SandboxRecord {
            config: PodConfig {
                name: "nginx".into(),
                kubernetes: Some(PodMetadata {
                    namespace: "default".into(),
                    uid: "u1".into(),
                    attempt: 0,
                }),
                ..Default::default()
            },
            ..Default::default()
        };
        assert_eq!(display_name(&c, Some(&pod)), "k8s_web_nginx_default_u1_2");
        c.owner = Owner::Docker;
        assert_eq!(display_name(&c, Some(&pod)), "web");
    }
}
