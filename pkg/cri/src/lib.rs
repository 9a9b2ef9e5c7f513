//! The CRI v1 front door: translates gRPC requests into calls on the berth
//! core and the answers back. No runtime logic lives here, and no leaf
//! crate is reached but through berth-core (`hack/lint-deps.sh`). Error
//! kinds become gRPC codes in one place, `error.rs`.

mod authority;
mod convert;
mod error;
mod events;
mod image;
mod metrics;
mod runtime;
mod serve;
mod usage_metrics;

use std::sync::Arc;

use berth_core::Core;
pub use k8s_cri::v1 as api;
use k8s_cri::v1::image_service_server::ImageServiceServer;
use k8s_cri::v1::runtime_service_server::RuntimeServiceServer;

pub use error::status as to_status;
pub use serve::serve;

/// The largest request message berthd decodes (tonic's default, and what
/// kubelet's messages stay far below).
pub const MAX_REQUEST_BYTES: usize = 4 * 1024 * 1024;

/// tonic answers a request over [`MAX_REQUEST_BYTES`] with OUT_OF_RANGE
/// before any handler runs; gRPC's own servers say RESOURCE_EXHAUSTED, which
/// is what clients retry on and report. berthd itself never answers
/// OUT_OF_RANGE, so every such answer is this one. Use as a response map
/// around the gRPC server.
pub fn oversized_request_status<B>(
    mut response: tonic::codegen::http::Response<B>,
) -> tonic::codegen::http::Response<B> {
    use tonic::codegen::http::HeaderValue;
    let headers = response.headers_mut();
    if headers.get("grpc-status").is_some_and(|v| v == "11") {
        headers.insert("grpc-status", HeaderValue::from_static("8"));
        headers.insert(
            "grpc-message",
            HeaderValue::from_static(
                "the request message is larger than berthd's limit of 4194304 bytes",
            ),
        );
    }
    response
}

/// The CRI API version this server speaks.
pub const CRI_API_VERSION: &str = "v1";

/// Builds the two CRI gRPC services over one core.
pub fn services(
    core: Arc<Core>,
    stream: Arc<berth_stream::StreamServer>,
) -> (
    RuntimeServiceServer<runtime::Runtime>,
    ImageServiceServer<image::Images>,
) {
    (
        RuntimeServiceServer::new(runtime::Runtime::new(core.clone(), stream))
            .max_decoding_message_size(MAX_REQUEST_BYTES),
        ImageServiceServer::new(image::Images::new(core))
            .max_decoding_message_size(MAX_REQUEST_BYTES),
    )
}
