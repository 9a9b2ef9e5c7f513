//! `/networks`: list (filters `name`, `id`, `label`, `driver`, `type`,
//! `dangling`), inspect, create, remove, connect, disconnect and prune,
//! in dockerd's shapes; the core does the work.

use std::collections::BTreeMap;

use berth_core::{Core, NetworkInfo, NetworkJoin, NetworkSpec};
use hyper::{Response, StatusCode};
use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::clock::rfc3339_nano;
use crate::error::{ApiError, ApiResult};
use crate::filters::Filters;
use crate::http::{json, ok_json, Body, Query};
use crate::view;

const FILTERS: &[&str] = &["name", "id", "label", "driver", "type", "dangling", "scope"];

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct CreateBody {
    pub name: String,
    pub driver: Option<String>,
    #[serde(rename = "IPAM")]
    pub ipam: Option<Ipam>,
    pub internal: bool,
    #[serde(rename = "EnableIPv6")]
    pub enable_ipv6: bool,
    pub labels: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct Ipam {
    pub driver: Option<String>,
    pub config: Option<Vec<IpamConfig>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct IpamConfig {
    pub subnet: Option<String>,
    pub gateway: Option<String>,
    #[serde(rename = "IPRange")]
    pub ip_range: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct ConnectBody {
    pub container: String,
    pub endpoint_config: Option<EndpointConfig>,
    pub force: bool,
}

/// One network's settings in a connect or a create's `NetworkingConfig`.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct EndpointConfig {
    pub aliases: Option<Vec<String>>,
    #[serde(rename = "IPAMConfig")]
    pub ipam_config: Option<EndpointIpam>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct EndpointIpam {
    #[serde(rename = "IPv4Address")]
    pub ipv4_address: Option<String>,
}

/// A join of `network` with an endpoint's aliases and address.
pub fn network_join(network: &str, config: Option<&EndpointConfig>) -> ApiResult<NetworkJoin> {
    let ip = config
        .and_then(|c| c.ipam_config.as_ref())
        .and_then(|i| i.ipv4_address.as_deref())
        .filter(|a| !a.is_empty())
        .map(|a| {
            a.parse()
                .map_err(|_| ApiError::bad_request(format!("invalid IPv4 address: {a}")))
        })
        .transpose()?;
    Ok(NetworkJoin {
        network: network.to_string(),
        aliases: config.and_then(|c| c.aliases.clone()).unwrap_or_default(),
        ip,
    })
}

/// A network as `docker network inspect` shows it; `Containers` only
/// when `members` (dockerd's list leaves it empty).
fn network_json(n: &NetworkInfo, members: bool) -> Value {
    let config: Vec<Value> = match (&n.subnet, &n.gateway) {
        (Some(s), Some(g)) => vec![json!({ "Subnet": s, "Gateway": g })],
        (Some(s), None) => vec![json!({ "Subnet": s })],
        _ => Vec::new(),
    };
    let mut containers = Map::new();
    for m in n.members.iter().filter(|_| members) {
        let e = &m.endpoint;
        containers.insert(
            m.container_id.clone(),
            json!({
                "Name": m.container_name,
                "EndpointID": m.sandbox_id,
                "MacAddress": e.mac,
                "IPv4Address": e.address.map(|a| format!("{a}/{}", e.prefix)).unwrap_or_default(),
                "IPv6Address": "",
            }),
        );
    }
    let options = match (n.builtin, &n.bridge) {
        (true, Some(bridge)) => json!({
            "com.docker.network.bridge.default_bridge": "true",
            "com.docker.network.bridge.name": bridge,
        }),
        _ => json!({}),
    };
    json!({
        "Name": n.name,
        "Id": n.id,
        "Created": rfc3339_nano(n.created_at_ns),
        "Scope": "local",
        "Driver": n.driver,
        "EnableIPv6": false,
        "IPAM": {
            "Driver": "default",
            "Options": if n.builtin { Value::Null } else { json!({}) },
            "Config": config,
        },
        "Internal": n.internal,
        "Attachable": false,
        "Ingress": false,
        "ConfigFrom": { "Network": "" },
        "ConfigOnly": false,
        "Containers": containers,
        "Options": options,
        "Labels": n.labels,
    })
}

/// `GET /networks`.
pub fn list(core: &Core, query: &Query) -> ApiResult<Response<Body>> {
    let f = Filters::parse(query.get("filters"), FILTERS)?;
    f.check_values("type", &["custom", "builtin"])?;
    f.check_values("dangling", &["true", "false", "1", "0"])?;
    let networks: Vec<Value> = core
        .networks()
        .list()
        .iter()
        .filter(|n| {
            let dangling = !n.builtin && n.members.is_empty();
            f.any("name", |x| n.name.contains(x))
                && f.any("id", |x| n.id.starts_with(x))
                && f.any("driver", |x| x == n.driver)
                && f.any("scope", |x| x == "local")
                && f.any("type", |x| (x == "builtin") == n.builtin)
                && f.any("dangling", |x| matches!(x, "true" | "1") == dangling)
                && f.labels_match(&n.labels)
        })
        .map(|n| network_json(n, false))
        .collect();
    ok_json(&networks)
}

/// `GET /networks/{id}`.
pub fn inspect(core: &Core, reference: &str) -> ApiResult<Response<Body>> {
    ok_json(&network_json(&core.networks().inspect(reference)?, true))
}

/// `POST /networks/create`: 201 with the id.
pub async fn create(core: &Core, body: CreateBody) -> ApiResult<Response<Body>> {
    if body.enable_ipv6 {
        return Err(ApiError::bad_request("IPv6 networks are not supported"));
    }
    let configs = body.ipam.and_then(|i| i.config).unwrap_or_default();
    if configs.len() > 1 {
        return Err(ApiError::bad_request(
            "only one IPv4 subnet per network is supported",
        ));
    }
    let config = configs.into_iter().next().unwrap_or_default();
    let non_empty = |s: Option<String>| s.filter(|s| !s.is_empty());
    let (subnet, ip_range) = (non_empty(config.subnet), non_empty(config.ip_range));
    if ip_range.is_some() && ip_range != subnet {
        return Err(ApiError::bad_request("--ip-range is not supported"));
    }
    let network = core
        .networks()
        .create(NetworkSpec {
            name: body.name,
            driver: body.driver.unwrap_or_default(),
            subnet,
            gateway: non_empty(config.gateway),
            internal: body.internal,
            labels: body.labels.unwrap_or_default(),
        })
        .await?;
    Ok(json(
        StatusCode::CREATED,
        &json!({ "Id": network.id, "Warning": "" }),
    ))
}

/// `DELETE /networks/{id}`.
pub async fn remove(core: &Core, reference: &str) -> ApiResult<Response<Body>> {
    core.networks().remove(reference).await?;
    crate::http::no_content(StatusCode::NO_CONTENT)
}

/// `POST /networks/prune`.
pub async fn prune(core: &Core, query: &Query) -> ApiResult<Response<Body>> {
    Filters::parse(query.get("filters"), &["label", "until"])?;
    let removed = core.networks().prune().await?;
    ok_json(&json!({ "NetworksDeleted": removed }))
}

/// `POST /networks/{id}/connect`: 200, no body.
pub async fn connect(core: &Core, reference: &str, body: ConnectBody) -> ApiResult<Response<Body>> {
    let container = view::find(core, &body.container)?.record.id;
    let join = network_join(reference, body.endpoint_config.as_ref())?;
    core.networks().connect(&container, join).await?;
    ok_empty()
}

/// `POST /networks/{id}/disconnect`: 200, no body.
pub async fn disconnect(
    core: &Core,
    reference: &str,
    body: ConnectBody,
) -> ApiResult<Response<Body>> {
    let container = view::find(core, &body.container)?.record.id;
    core.networks().disconnect(&container, reference).await?;
    ok_empty()
}

fn ok_empty() -> ApiResult<Response<Body>> {
    crate::http::no_content(StatusCode::OK)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_py_nulls_and_the_clis_endpoint_config_are_read() {
        // docker-py sends nulls where the CLI sends empty strings.
        let body: CreateBody = serde_json::from_str(
            r#"{"Name":"n","Driver":null,"IPAM":{"Driver":"default","Config":[{"Subnet":"10.1.0.0/24","Gateway":null,"IPRange":null}]},"Labels":null}"#,
        )
        .unwrap();
        let config = &body.ipam.unwrap().config.unwrap()[0];
        assert_eq!(config.subnet.as_deref(), Some("10.1.0.0/24"));
        assert_eq!(config.gateway, None);
        let connect: ConnectBody = serde_json::from_str(
            r#"{"Container":"c","EndpointConfig":{"IPAMConfig":{"IPv4Address":"10.1.0.9"},"Aliases":["a"],"Links":null}}"#,
        )
        .unwrap();
        let join = network_join("n", connect.endpoint_config.as_ref()).unwrap();
        assert_eq!(join.aliases, ["a"]);
        assert_eq!(join.ip, Some("10.1.0.9".parse().unwrap()));
        let bad = EndpointConfig {
            ipam_config: Some(EndpointIpam {
                ipv4_address: Some("10.1.0".into()),
            }),
            ..Default::default()
        };
        let e = network_join("n", Some(&bad)).unwrap_err();
        assert!(
            e.message.contains("invalid IPv4 address: 10.1.0"),
            "{}",
            e.message
        );
    }
}
