//! The CRI streaming server (being built): exec, attach and port-forward
//! over SPDY/3.1 and WebSocket, as kubelet's streaming server speaks them.

pub mod spdy;
