//! CRI `GetContainerEvents` from the core's event bus: the container and
//! sandbox events of Kubernetes objects, each with the statuses kubelet's
//! evented PLEG reads. A Deleted event comes after the object is gone, so
//! it carries the last status this stream saw of it.

use std::collections::HashMap;

use berth_core::{attr, Action, Core, ObjectKind};
use k8s_cri::v1 as api;

use crate::convert;

/// CRI's event for a core action; `None` for actions CRI has no word for.
pub fn event_type(action: Action) -> Option<api::ContainerEventType> {
    use api::ContainerEventType as T;
    match action {
        Action::Create => Some(T::ContainerCreatedEvent),
        Action::Start => Some(T::ContainerStartedEvent),
        Action::Die { .. } | Action::Stop => Some(T::ContainerStoppedEvent),
        Action::Destroy => Some(T::ContainerDeletedEvent),
        _ => None,
    }
}

/// Turns bus events into CRI events, remembering the statuses it sent.
#[derive(Default)]
pub struct Translator {
    sandboxes: HashMap<String, api::PodSandboxStatus>,
    containers: HashMap<String, api::ContainerStatus>,
}

impl Translator {
    pub fn translate(
        &mut self,
        core: &Core,
        event: &berth_core::events::Event,
    ) -> Option<api::ContainerEventResponse> {
        let kind = event_type(event.action)?;
        let owner = berth_core::model::Owner::Kubernetes.as_str();
        if event.attributes.get(attr::OWNER).map(String::as_str) != Some(owner) {
            return None;
        }
        let sandbox_id = match event.kind {
            ObjectKind::Sandbox => event.id.clone(),
            ObjectKind::Container => event.attributes.get(attr::SANDBOX_ID)?.clone(),
            _ => return None,
        };
        let gone = kind == api::ContainerEventType::ContainerDeletedEvent;
        let pod = match core.sandboxes().status(&sandbox_id) {
            Ok(record) => {
                let status = convert::sandbox_status(&record);
                self.sandboxes.insert(sandbox_id.clone(), status.clone());
                Some(status)
            }
            Err(_) => self.sandboxes.get(&sandbox_id).cloned(),
        };
        let mut containers = Vec::new();
        if event.kind == ObjectKind::Container {
            let status = match core.containers().status(&event.id) {
                Ok(record) => {
                    let status = convert::container_status(&record);
                    self.containers.insert(event.id.clone(), status.clone());
                    Some(status)
                }
                Err(_) => self.containers.get(&event.id).cloned(),
            };
            containers.extend(status);
            if gone {
                self.containers.remove(&event.id);
            }
        } else if gone {
            self.sandboxes.remove(&sandbox_id);
        }
        Some(api::ContainerEventResponse {
            container_id: event.id.clone(),
            container_event_type: kind as i32,
            created_at: event.at_ns,
            pod_sandbox_status: pod,
            containers_statuses: containers,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn core_actions_map_to_cri_event_types() {
        use api::ContainerEventType as T;
        for (action, want) in [
            (Action::Create, Some(T::ContainerCreatedEvent)),
            (Action::Start, Some(T::ContainerStartedEvent)),
            (Action::Die { exit_code: 1 }, Some(T::ContainerStoppedEvent)),
            (Action::Stop, Some(T::ContainerStoppedEvent)),
            (Action::Destroy, Some(T::ContainerDeletedEvent)),
            (Action::Oom, None),
            (Action::Pull, None),
        ] {
            assert_eq!(event_type(action), want, "{action:?}");
        }
    }
}
