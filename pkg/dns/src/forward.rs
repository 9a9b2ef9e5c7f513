//! Asking the host's resolvers about names the network does not know.

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::time::timeout;

use crate::wire::Header;
use crate::Options;

/// How the query travels to the upstreams: as it came in.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Transport {
    Udp,
    Tcp,
}

/// The first answer an upstream gives within the limits, asking them in
/// order; `None` if there are none or none answered in time.
pub(crate) async fn forward(
    query: &[u8],
    upstreams: &[SocketAddr],
    transport: Transport,
    options: &Options,
) -> Option<Vec<u8>> {
    let id = Header::parse(query)?.id;
    let attempts = async {
        for &upstream in upstreams {
            let asked = match transport {
                Transport::Udp => {
                    timeout(options.upstream_timeout, ask_udp(query, id, upstream)).await
                }
                Transport::Tcp => {
                    timeout(options.upstream_timeout, ask_tcp(query, id, upstream)).await
                }
            };
            match asked {
                Ok(Ok(reply)) => return Some(reply),
                Ok(Err(e)) => tracing::debug!(%upstream, error = %e, "dns upstream failed"),
                Err(_) => tracing::debug!(%upstream, "dns upstream did not answer in time"),
            }
        }
        None
    };
    timeout(options.forward_deadline, attempts)
        .await
        .ok()
        .flatten()
}

/// One UDP exchange from a fresh socket (a new random source port per
/// query makes forged answers harder to slip in).
async fn ask_udp(query: &[u8], id: u16, upstream: SocketAddr) -> io::Result<Vec<u8>> {
    let local: SocketAddr = match upstream {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let socket = UdpSocket::bind(local).await?;
    // Connected: datagrams from anyone but the upstream are filtered out.
    socket.connect(upstream).await?;
    socket.send(query).await?;
    let mut buf = vec![0u8; u16::MAX as usize];
    loop {
        let n = socket.recv(&mut buf).await?;
        if answers(&buf[..n], id) {
            buf.truncate(n);
            return Ok(buf);
        }
    }
}

/// One TCP exchange (RFC 1035 4.2.2: each message after its length).
async fn ask_tcp(query: &[u8], id: u16, upstream: SocketAddr) -> io::Result<Vec<u8>> {
    let mut stream = TcpStream::connect(upstream).await?;
    write_framed(&mut stream, query).await?;
    let reply = read_framed(&mut stream).await?;
    if answers(&reply, id) {
        Ok(reply)
    } else {
        Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "reply to another query",
        ))
    }
}

fn answers(reply: &[u8], id: u16) -> bool {
    Header::parse(reply).is_some_and(|h| h.is_response() && h.id == id)
}

/// Writes one length-prefixed message.
pub(crate) async fn write_framed(stream: &mut TcpStream, message: &[u8]) -> io::Result<()> {
    let len = u16::try_from(message.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "message over 64 KiB"))?;
    let mut framed = Vec::with_capacity(message.len() + 2);
    framed.extend_from_slice(&len.to_be_bytes());
    framed.extend_from_slice(message);
    stream.write_all(&framed).await
}

/// Reads one length-prefixed message.
pub(crate) async fn read_framed(stream: &mut TcpStream) -> io::Result<Vec<u8>> {
    let len = stream.read_u16().await? as usize;
    let mut message = vec![0u8; len];
    stream.read_exact(&mut message).await?;
    Ok(message)
}
