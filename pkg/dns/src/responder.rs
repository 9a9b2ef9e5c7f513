//! Serving one network's records over UDP and TCP.

use std::net::SocketAddr;
use std::time::Duration;

use berth_errdefs::Result;
use tokio::task::JoinHandle;

use crate::Records;

/// Limits of one responder; [`Options::default`] suits a network.
#[derive(Clone, Debug)]
pub struct Options {
    /// How long one upstream has to answer a forwarded query.
    pub upstream_timeout: Duration,
    /// How long a forwarded query may take over all upstreams, after which
    /// the client gets SERVFAIL (glibc's resolver gives up after 5 s).
    pub forward_deadline: Duration,
    /// Forwarded UDP queries in flight; more get SERVFAIL at once.
    pub max_forwards: usize,
    /// Open TCP connections; more are closed at once.
    pub max_tcp_connections: usize,
    /// How long an idle TCP connection is kept open.
    pub tcp_idle_timeout: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            upstream_timeout: Duration::from_secs(2),
            forward_deadline: Duration::from_secs(4),
            max_forwards: 128,
            max_tcp_connections: 64,
            tcp_idle_timeout: Duration::from_secs(10),
        }
    }
}

/// A running responder. Dropping it (or [`Responder::stop`]) stops
/// serving and closes its sockets.
pub struct Responder {
    local_addr: SocketAddr,
    udp: JoinHandle<()>,
    tcp: JoinHandle<()>,
}

impl Responder {
    /// Serves UDP and TCP on `bind` (e.g. the network's gateway
    /// 172.x.0.1:53 in the host netns; port 0 picks one free for both).
    pub async fn start(
        bind: SocketAddr,
        records: Records,
        upstreams: Vec<SocketAddr>,
    ) -> Result<Responder> {
        Self::start_with(bind, records, upstreams, Options::default()).await
    }

    /// [`Responder::start`] with explicit limits.
    pub async fn start_with(
        bind: SocketAddr,
        records: Records,
        upstreams: Vec<SocketAddr>,
        options: Options,
    ) -> Result<Responder> {
        let _ = (records, upstreams, options);
        Err(berth_errdefs::Error::new(
            berth_errdefs::ErrorKind::NotImplemented,
            format!("dns responder on {bind}: not built yet"),
        ))
    }

    /// The address both sockets are bound to.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops serving and waits until both sockets are closed, so the
    /// address can be bound again at once.
    pub async fn stop(mut self) {
        self.udp.abort();
        self.tcp.abort();
        let _ = (&mut self.udp).await;
        let _ = (&mut self.tcp).await;
    }
}

impl Drop for Responder {
    fn drop(&mut self) {
        self.udp.abort();
        self.tcp.abort();
    }
}
