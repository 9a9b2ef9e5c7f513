//! The CRI streaming server: `kubectl exec`, `attach` and `port-forward`
//! reach a node's containers through it. The CRI `Exec`, `Attach` and
//! `PortForward` calls return one-time URLs ([`StreamServer::url_for`]);
//! clients upgrade them to SPDY/3.1 or WebSocket and speak Kubernetes'
//! remotecommand (`v1`..`v5.channel.k8s.io`) or `portforward.k8s.io`.

pub mod backend;
mod conn;
mod portforward;
pub mod remotecommand;
mod server;
pub mod spdy;
pub mod tokens;
mod ws;

pub use backend::{Backend, Process};
pub use server::{StreamConfig, StreamServer};
pub use tokens::Request;
