//! The CRI v1 front door: translates gRPC requests into calls on the berth
//! core and the answers back. No runtime logic lives here.

mod convert;
mod error;
mod image;
mod runtime;

use std::sync::Arc;

use berth_core::Core;
pub use k8s_cri::v1 as api;
use k8s_cri::v1::image_service_server::ImageServiceServer;
use k8s_cri::v1::runtime_service_server::RuntimeServiceServer;

pub use error::status as to_status;

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
        RuntimeServiceServer::new(runtime::Runtime::new(core.clone(), stream)),
        ImageServiceServer::new(image::Images::new(core)),
    )
}
