//! Serving one network's records over UDP and TCP.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use berth_errdefs::{Error, Result};
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::timeout;

use crate::answer::{decide, servfail, Action};
use crate::forward::{forward, read_framed, write_framed, Transport};
use crate::wire::fit_udp;
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

/// What both serving loops read.
struct Shared {
    records: Records,
    upstreams: Vec<SocketAddr>,
    options: Options,
}

/// How many times a free port is picked when the one UDP got is taken
/// for TCP.
const PORT_TRIES: usize = 8;

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
        let (udp, tcp) = bind_both(bind)
            .await
            .map_err(|e| Error::from(e).context(format!("dns responder on {bind}")))?;
        let local_addr = udp.local_addr().map_err(Error::from)?;
        // Forwarding to itself would only loop until the deadline.
        let upstreams = upstreams.into_iter().filter(|u| *u != local_addr).collect();
        let shared = Arc::new(Shared {
            records,
            upstreams,
            options,
        });
        tracing::debug!(%local_addr, upstreams = ?shared.upstreams, "dns responder serving");
        Ok(Responder {
            local_addr,
            udp: tokio::spawn(serve_udp(udp, shared.clone())),
            tcp: tokio::spawn(serve_tcp(tcp, shared)),
        })
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

/// A UDP socket and a TCP listener on one address and port.
async fn bind_both(bind: SocketAddr) -> io::Result<(UdpSocket, TcpListener)> {
    let mut tries = 0;
    loop {
        let udp = UdpSocket::bind(bind).await?;
        let addr = udp.local_addr()?;
        match TcpListener::bind(addr).await {
            Ok(tcp) => return Ok((udp, tcp)),
            Err(e) if bind.port() == 0 && tries + 1 < PORT_TRIES => {
                tracing::debug!(%addr, error = %e, "dns port taken for tcp, picking another");
                tries += 1;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Answers datagrams; forwards run beside the loop (as many as
/// `max_forwards`) and their replies come back through it, so the socket
/// has one owner and closes when the loop is aborted (the JoinSet aborts
/// the forwards with it).
async fn serve_udp(socket: UdpSocket, shared: Arc<Shared>) {
    let mut forwards: JoinSet<(SocketAddr, Vec<u8>)> = JoinSet::new();
    let mut buf = vec![0u8; u16::MAX as usize];
    loop {
        tokio::select! {
            received = socket.recv_from(&mut buf) => {
                let (n, client) = match received {
                    Ok(got) => got,
                    Err(e) => {
                        // ICMP errors of earlier replies surface here on Linux.
                        tracing::debug!(error = %e, "dns udp receive failed");
                        continue;
                    }
                };
                let message = &buf[..n];
                match decide(message, &shared.records) {
                    Action::Drop => {}
                    Action::Reply { bytes, udp_max } => {
                        send(&socket, &fit_udp(bytes, udp_max), client).await;
                    }
                    Action::Forward { .. } if forwards.len() >= shared.options.max_forwards => {
                        tracing::debug!(%client, "dns forwards at their limit, answering SERVFAIL");
                        send(&socket, &servfail(message), client).await;
                    }
                    Action::Forward { udp_max } => {
                        let message = message.to_vec();
                        let shared = shared.clone();
                        forwards.spawn(async move {
                            let reply = forward(&message, &shared.upstreams, Transport::Udp, &shared.options)
                                .await
                                .unwrap_or_else(|| servfail(&message));
                            (client, fit_udp(reply, udp_max))
                        });
                    }
                }
            }
            Some(done) = forwards.join_next(), if !forwards.is_empty() => {
                if let Ok((client, reply)) = done {
                    send(&socket, &reply, client).await;
                }
            }
        }
    }
}

async fn send(socket: &UdpSocket, reply: &[u8], client: SocketAddr) {
    if let Err(e) = socket.send_to(reply, client).await {
        tracing::debug!(%client, error = %e, "dns udp reply failed");
    }
}

/// Accepts connections (as many as `max_tcp_connections`), each served
/// by its own task that ends with the loop.
async fn serve_tcp(listener: TcpListener, shared: Arc<Shared>) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) if connections.len() >= shared.options.max_tcp_connections => {
                    tracing::debug!(%peer, "dns tcp connections at their limit, closing");
                    drop(stream);
                }
                Ok((stream, _)) => {
                    connections.spawn(serve_connection(stream, shared.clone()));
                }
                Err(e) => {
                    // Out of descriptors: back off instead of spinning.
                    tracing::debug!(error = %e, "dns tcp accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
}

/// Answers queries on one connection in turn until the client closes it,
/// sends something that is no query, or stays idle too long.
async fn serve_connection(mut stream: TcpStream, shared: Arc<Shared>) {
    let idle = shared.options.tcp_idle_timeout;
    loop {
        let Ok(Ok(message)) = timeout(idle, read_framed(&mut stream)).await else {
            return;
        };
        let reply = match decide(&message, &shared.records) {
            Action::Drop => return,
            Action::Reply { bytes, .. } => bytes,
            Action::Forward { .. } => {
                forward(&message, &shared.upstreams, Transport::Tcp, &shared.options)
                    .await
                    .unwrap_or_else(|| servfail(&message))
            }
        };
        if !matches!(
            timeout(idle, write_framed(&mut stream, &reply)).await,
            Ok(Ok(()))
        ) {
            return;
        }
    }
}
