//! SPDY/3.1, server side, as Kubernetes' streaming clients speak it.
//!
//! kubectl exec/attach/port-forward reach the runtime's streaming server
//! through an HTTP/1.1 `Upgrade: SPDY/3.1`; after the 101 response the
//! connection carries SPDY frames written by the Go client library
//! (k8s.io/apimachinery's httpstream/spdy on moby/spdystream). [`serve`]
//! takes the upgraded byte stream and hands out the streams the client
//! opens; [`frame`] is the wire codec.

mod dictionary;
pub mod frame;
mod session;

pub use frame::Headers;
pub use session::{serve, Connection, Stream, StreamReader, StreamWriter, MAX_DATA_FRAME};

#[cfg(test)]
mod session_tests;
