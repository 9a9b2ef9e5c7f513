//! CRI ImageService: convert, call the core's image service, convert back.
//! Images have no owner: kubelet and admins share one image store.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::UNIX_EPOCH;

use base64::Engine;
use berth_core::{Core, Credentials, ImageInfo, Platform, PullRequest, Secret};
use berth_errdefs::Error;
use k8s_cri::v1 as api;
use k8s_cri::v1::image_service_server::ImageService;
use tonic::{Request, Response, Status};

use crate::error::status;

pub struct Images {
    core: Arc<Core>,
}

impl Images {
    pub fn new(core: Arc<Core>) -> Self {
        Images { core }
    }
}

type Reply<T> = Result<Response<T>, Status>;

fn image_name(spec: Option<&api::ImageSpec>) -> Result<&str, Status> {
    match spec.map(|s| s.image.as_str()) {
        Some(name) if !name.is_empty() => Ok(name),
        _ => Err(status(Error::invalid("image spec has no image reference"))),
    }
}

/// CRI credentials to berth's, preferring the most specific form given.
fn credentials(auth: Option<&api::AuthConfig>) -> Result<Credentials, Status> {
    let Some(a) = auth else {
        return Ok(Credentials::Anonymous);
    };
    if !a.registry_token.is_empty() {
        return Ok(Credentials::Bearer(Secret::new(a.registry_token.clone())));
    }
    if !a.username.is_empty() {
        return Ok(Credentials::Basic {
            username: a.username.clone(),
            password: Secret::new(a.password.clone()),
        });
    }
    if !a.auth.is_empty() {
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(a.auth.trim())
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .and_then(|s| {
                s.split_once(':')
                    .map(|(u, p)| (u.to_string(), p.to_string()))
            });
        let Some((username, password)) = decoded else {
            return Err(status(Error::invalid(
                "auth config: \"auth\" is not base64 of username:password",
            )));
        };
        return Ok(Credentials::Basic {
            username,
            password: Secret::new(password),
        });
    }
    if !a.identity_token.is_empty() {
        return Err(status(Error::new(
            berth_errdefs::ErrorKind::NotImplemented,
            "auth config: identity (refresh) tokens are not supported; pass username/password or a registry token",
        )));
    }
    Ok(Credentials::Anonymous)
}

/// The platform a pull asks for through the well-known node label keys.
fn platform(spec: Option<&api::ImageSpec>) -> Option<Platform> {
    let annotations = &spec?.annotations;
    let arch = annotations.get("kubernetes.io/arch");
    let os = annotations.get("kubernetes.io/os");
    if arch.is_none() && os.is_none() {
        return None;
    }
    let mut p = Platform::host();
    if let Some(a) = arch {
        p.architecture = a.clone();
    }
    if let Some(o) = os {
        p.os = o.clone();
    }
    Some(p)
}

/// The image config's `User` as CRI wants it: a numeric uid or a name.
fn uid_and_username(user: &str) -> (Option<api::Int64Value>, String) {
    if user.is_empty() {
        return (None, String::new());
    }
    let user = user.split(':').next().unwrap_or_default();
    match user.parse::<i64>() {
        Ok(uid) => (Some(api::Int64Value { value: uid }), String::new()),
        Err(_) => (None, user.to_string()),
    }
}

fn to_api(image: &ImageInfo) -> api::Image {
    let (uid, username) = uid_and_username(&image.config.user);
    api::Image {
        id: image.id.clone(),
        repo_tags: image.repo_tags.clone(),
        repo_digests: image.repo_digests.clone(),
        size: image.size,
        uid,
        username,
        spec: Some(api::ImageSpec {
            image: image.id.clone(),
            ..Default::default()
        }),
        pinned: false,
    }
}

#[tonic::async_trait]
impl ImageService for Images {
    async fn list_images(
        &self,
        req: Request<api::ListImagesRequest>,
    ) -> Reply<api::ListImagesResponse> {
        let req = req.into_inner();
        let filter = req
            .filter
            .as_ref()
            .and_then(|f| f.image.as_ref())
            .map(|s| s.image.as_str());
        let images = self.core.images().list(filter).map_err(status)?;
        Ok(Response::new(api::ListImagesResponse {
            images: images.iter().map(to_api).collect(),
        }))
    }

    async fn image_status(
        &self,
        req: Request<api::ImageStatusRequest>,
    ) -> Reply<api::ImageStatusResponse> {
        let req = req.into_inner();
        let name = image_name(req.image.as_ref())?;
        let images = self.core.images();
        let Some(image) = images.status(name).map_err(status)? else {
            return Ok(Response::new(api::ImageStatusResponse::default()));
        };
        let mut info = HashMap::new();
        if req.verbose {
            // Null when the image went meanwhile.
            let config = images.config_json(&image.id).map_err(status)?;
            let config: serde_json::Value = config
                .and_then(|c| serde_json::from_slice(&c).ok())
                .unwrap_or(serde_json::Value::Null);
            let verbose = serde_json::json!({
                "id": image.id,
                "manifestDigest": image.manifest_digest,
                "platform": image.platform,
                "layers": image.layers.iter().map(|l| serde_json::json!({
                    "digest": l.digest, "diffID": l.diff_id, "size": l.size,
                })).collect::<Vec<_>>(),
                "imageSpec": config,
            });
            info.insert("info".to_string(), verbose.to_string());
        }
        Ok(Response::new(api::ImageStatusResponse {
            image: Some(to_api(&image)),
            info,
        }))
    }

    async fn pull_image(
        &self,
        req: Request<api::PullImageRequest>,
    ) -> Reply<api::PullImageResponse> {
        let req = req.into_inner();
        let name = image_name(req.image.as_ref())?;
        let request = PullRequest {
            reference: name.to_string(),
            credentials: credentials(req.auth.as_ref())?,
            platform: platform(req.image.as_ref()),
        };
        let pulled = self
            .core
            .images()
            .pull(request, None)
            .await
            .map_err(status)?;
        Ok(Response::new(api::PullImageResponse {
            image_ref: pulled.image_id,
        }))
    }

    async fn remove_image(
        &self,
        req: Request<api::RemoveImageRequest>,
    ) -> Reply<api::RemoveImageResponse> {
        let req = req.into_inner();
        let name = image_name(req.image.as_ref())?;
        self.core.images().remove(name).await.map_err(status)?;
        Ok(Response::new(api::RemoveImageResponse {}))
    }

    async fn image_fs_info(
        &self,
        _req: Request<api::ImageFsInfoRequest>,
    ) -> Reply<api::ImageFsInfoResponse> {
        let info = self.core.images().fs_info().map_err(status)?;
        let timestamp = info
            .timestamp
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos() as i64)
            .unwrap_or_default();
        Ok(Response::new(api::ImageFsInfoResponse {
            image_filesystems: vec![api::FilesystemUsage {
                timestamp,
                fs_id: Some(api::FilesystemIdentifier {
                    mountpoint: info.mountpoint.display().to_string(),
                }),
                used_bytes: Some(api::UInt64Value {
                    value: info.used_bytes,
                }),
                inodes_used: Some(api::UInt64Value {
                    value: info.used_inodes,
                }),
            }],
            container_filesystems: Vec::new(),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_maps_like_containerd() {
        assert_eq!(uid_and_username(""), (None, String::new()));
        assert_eq!(
            uid_and_username("1000:1000"),
            (Some(api::Int64Value { value: 1000 }), String::new())
        );
        assert_eq!(uid_and_username("app"), (None, "app".to_string()));
    }

    #[test]
    fn auth_field_is_decoded_and_bad_auth_rejected() {
        let a = api::AuthConfig {
            auth: base64::engine::general_purpose::STANDARD.encode("u:p:w"),
            ..Default::default()
        };
        let Credentials::Basic { username, password } = credentials(Some(&a)).unwrap() else {
            panic!("expected basic credentials")
        };
        assert_eq!((username.as_str(), password.expose()), ("u", "p:w"));
        let bad = api::AuthConfig {
            auth: "!!".into(),
            ..Default::default()
        };
        assert_eq!(
            credentials(Some(&bad)).unwrap_err().code(),
            tonic::Code::InvalidArgument
        );
    }
}
