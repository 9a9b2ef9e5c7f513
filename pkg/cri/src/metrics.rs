//! The `operation` and `code` labels of a CRI call, for the core's
//! `Recorder`: the method's name from a fixed list (a client cannot make
//! up new series), and the gRPC code name as grpc-go spells it.

use tonic::codegen::http::HeaderMap;

/// CRI v1's methods (RuntimeService and ImageService). A path naming
/// anything else is recorded as `unknown`.
const METHODS: [&str; 35] = [
    "Version",
    "RunPodSandbox",
    "StopPodSandbox",
    "RemovePodSandbox",
    "PodSandboxStatus",
    "ListPodSandbox",
    "CreateContainer",
    "StartContainer",
    "StopContainer",
    "RemoveContainer",
    "ListContainers",
    "ContainerStatus",
    "UpdateContainerResources",
    "ReopenContainerLog",
    "ExecSync",
    "Exec",
    "Attach",
    "PortForward",
    "ContainerStats",
    "ListContainerStats",
    "PodSandboxStats",
    "ListPodSandboxStats",
    "UpdateRuntimeConfig",
    "Status",
    "CheckpointContainer",
    "GetContainerEvents",
    "ListMetricDescriptors",
    "ListPodSandboxMetrics",
    "RuntimeConfig",
    "UpdatePodSandboxResources",
    "ListImages",
    "ImageStatus",
    "PullImage",
    "RemoveImage",
    "ImageFsInfo",
];

/// `/runtime.v1.RuntimeService/RunPodSandbox` → `RunPodSandbox`.
pub fn operation(path: &str) -> &'static str {
    let method = path
        .strip_prefix("/runtime.v1.RuntimeService/")
        .or_else(|| path.strip_prefix("/runtime.v1.ImageService/"));
    method
        .and_then(|m| METHODS.iter().find(|known| **known == m))
        .copied()
        .unwrap_or("unknown")
}

/// The call's code: the `grpc-status` of a trailers-only answer (how
/// tonic answers every error a handler returns and every refusal before
/// one runs), else OK (the status then comes in the trailers, and only a
/// failure to encode the message would make it other than OK).
pub fn code(headers: &HeaderMap) -> &'static str {
    let status = headers
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<i32>().ok())
        .unwrap_or(0);
    code_name(status)
}

/// gRPC's code names as grpc-go (and so kubelet's and containerd's
/// metrics) spell them.
fn code_name(code: i32) -> &'static str {
    match code {
        0 => "OK",
        1 => "Canceled",
        2 => "Unknown",
        3 => "InvalidArgument",
        4 => "DeadlineExceeded",
        5 => "NotFound",
        6 => "AlreadyExists",
        7 => "PermissionDenied",
        8 => "ResourceExhausted",
        9 => "FailedPrecondition",
        10 => "Aborted",
        11 => "OutOfRange",
        12 => "Unimplemented",
        13 => "Internal",
        14 => "Unavailable",
        15 => "DataLoss",
        16 => "Unauthenticated",
        _ => "Unknown",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::codegen::http::HeaderValue;

    #[test]
    fn methods_are_named_and_strangers_are_unknown() {
        assert_eq!(
            operation("/runtime.v1.RuntimeService/RunPodSandbox"),
            "RunPodSandbox"
        );
        assert_eq!(operation("/runtime.v1.ImageService/PullImage"), "PullImage");
        assert_eq!(operation("/runtime.v1.RuntimeService/Made_Up"), "unknown");
        assert_eq!(
            operation("/runtime.v1.ImageService/RunPodSandbox"),
            "RunPodSandbox"
        );
        assert_eq!(operation("/other.Service/Version"), "unknown");
    }

    #[test]
    fn codes_come_from_a_trailers_only_status() {
        let mut headers = HeaderMap::new();
        assert_eq!(code(&headers), "OK");
        headers.insert("grpc-status", HeaderValue::from_static("5"));
        assert_eq!(code(&headers), "NotFound");
        headers.insert("grpc-status", HeaderValue::from_static("99"));
        assert_eq!(code(&headers), "Unknown");
    }
}
