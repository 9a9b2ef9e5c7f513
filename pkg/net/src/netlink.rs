//! A small synchronous rtnetlink client: just the link, address and route
//! requests the bridge backend needs. In-process netlink takes about a
//! third of the time of `ip` processes per pod (docs/dev/architecture.md, "Pod network"), and a blocking
//! socket fits the blocking `PodNetwork` calls without a second runtime.
//!
//! A netlink socket talks to the network namespace it was opened in, so
//! open one inside `berth_ns::in_netns` to configure a pod's side.

use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

// Message types and flags (linux/rtnetlink.h, linux/netlink.h).
const RTM_NEWLINK: u16 = 16;
const RTM_DELLINK: u16 = 17;
const RTM_GETLINK: u16 = 18;
const RTM_NEWADDR: u16 = 20;
const RTM_NEWROUTE: u16 = 24;
const NLMSG_ERROR: u16 = 2;
const NLMSG_DONE: u16 = 3;
const NLM_F_REQUEST: u16 = 0x1;
const NLM_F_ACK: u16 = 0x4;
const NLM_F_DUMP: u16 = 0x300;
const NLM_F_EXCL: u16 = 0x200;
const NLM_F_CREATE: u16 = 0x400;

// Attributes (linux/if_link.h, linux/if_addr.h, linux/rtnetlink.h).
const IFLA_ADDRESS: u16 = 1;
const IFLA_IFNAME: u16 = 3;
const IFLA_MTU: u16 = 4;
const IFLA_MASTER: u16 = 10;
const IFLA_LINKINFO: u16 = 18;
const IFLA_NET_NS_FD: u16 = 28;
const IFLA_INFO_KIND: u16 = 1;
const IFLA_INFO_DATA: u16 = 2;
const VETH_INFO_PEER: u16 = 1;
const IFA_ADDRESS: u16 = 1;
const IFA_LOCAL: u16 = 2;
const IFA_BROADCAST: u16 = 4;
const RTA_OIF: u16 = 4;
const RTA_GATEWAY: u16 = 5;
const NLA_F_NESTED: u16 = 0x8000;

const IFF_UP: u32 = 0x1;
const RT_TABLE_MAIN: u8 = 254;
const RTPROT_BOOT: u8 = 3;
const RTN_UNICAST: u8 = 1;

const HEADER_LEN: usize = 16;

/// A request being built: the netlink header is filled in by `finish`.
struct Request {
    buf: Vec<u8>,
    /// Offsets of open nested attributes, closed by `end_nested`.
    nests: Vec<usize>,
}

impl Request {
    fn new(kind: u16, flags: u16) -> Request {
        let mut buf = vec![0u8; HEADER_LEN];
        buf[4..6].copy_from_slice(&kind.to_ne_bytes());
        buf[6..8].copy_from_slice(&(flags | NLM_F_REQUEST).to_ne_bytes());
        Request {
            buf,
            nests: Vec::new(),
        }
    }

    /// `struct ifinfomsg`.
    fn ifinfo(mut self, index: u32, flags: u32, change: u32) -> Request {
        push_ifinfo(&mut self.buf, index, flags, change);
        self
    }

    fn attr(&mut self, kind: u16, payload: &[u8]) -> &mut Request {
        let len = 4 + payload.len();
        self.buf.extend_from_slice(&(len as u16).to_ne_bytes());
        self.buf.extend_from_slice(&kind.to_ne_bytes());
        self.buf.extend_from_slice(payload);
        self.pad();
        self
    }

    fn attr_str(&mut self, kind: u16, s: &str) -> &mut Request {
        let mut payload = s.as_bytes().to_vec();
        payload.push(0);
        self.attr(kind, &payload)
    }

    fn attr_u32(&mut self, kind: u16, v: u32) -> &mut Request {
        self.attr(kind, &v.to_ne_bytes())
    }

    fn begin_nested(&mut self, kind: u16) -> &mut Request {
        self.nests.push(self.buf.len());
        self.buf.extend_from_slice(&[0, 0]);
        self.buf
            .extend_from_slice(&(kind | NLA_F_NESTED).to_ne_bytes());
        self
    }

    fn end_nested(&mut self) -> &mut Request {
        if let Some(start) = self.nests.pop() {
            let len = (self.buf.len() - start) as u16;
            self.buf[start..start + 2].copy_from_slice(&len.to_ne_bytes());
        }
        self
    }

    /// Raw bytes inside the current attribute (the veth peer's ifinfomsg).
    fn raw_ifinfo(&mut self) -> &mut Request {
        push_ifinfo(&mut self.buf, 0, 0, 0);
        self
    }

    fn pad(&mut self) {
        while !self.buf.len().is_multiple_of(4) {
            self.buf.push(0);
        }
    }

    fn finish(mut self, seq: u32) -> Vec<u8> {
        let len = self.buf.len() as u32;
        self.buf[0..4].copy_from_slice(&len.to_ne_bytes());
        self.buf[8..12].copy_from_slice(&seq.to_ne_bytes());
        self.buf
    }
}

fn push_ifinfo(buf: &mut Vec<u8>, index: u32, flags: u32, change: u32) {
    buf.extend_from_slice(&[libc::AF_UNSPEC as u8, 0, 0, 0]);
    buf.extend_from_slice(&index.to_ne_bytes());
    buf.extend_from_slice(&flags.to_ne_bytes());
    buf.extend_from_slice(&change.to_ne_bytes());
}

/// A link as a dump reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Link {
    pub index: u32,
    pub name: String,
    pub master: Option<u32>,
}

/// An rtnetlink socket bound to the network namespace it was opened in.
pub struct Netlink {
    fd: OwnedFd,
    seq: u32,
}

impl Netlink {
    pub fn open() -> io::Result<Netlink> {
        // SAFETY: plain socket(2); the fd is owned right after.
        let fd = unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::NETLINK_ROUTE,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: fd is a fresh descriptor nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: zeroed sockaddr_nl is valid; the kernel assigns the port.
        let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        addr.nl_family = libc::AF_NETLINK as u16;
        // SAFETY: addr is a valid sockaddr_nl of the given size.
        let r = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                &addr as *const _ as *const libc::sockaddr,
                std::mem::size_of::<libc::sockaddr_nl>() as u32,
            )
        };
        if r != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Netlink { fd, seq: 0 })
    }

    /// Makes a bridge and brings it up; an existing link of that name is
    /// fine (the caller checks it is a bridge if it cares).
    pub fn create_bridge(&mut self, name: &str, mtu: Option<u32>) -> io::Result<u32> {
        let mut req = Request::new(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL | NLM_F_ACK)
            .ifinfo(0, IFF_UP, IFF_UP);
        req.attr_str(IFLA_IFNAME, name);
        if let Some(mtu) = mtu {
            req.attr_u32(IFLA_MTU, mtu);
        }
        req.begin_nested(IFLA_LINKINFO)
            .attr_str(IFLA_INFO_KIND, "bridge")
            .end_nested();
        match self.call(req) {
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {}
            r => r?,
        }
        let index = link_index(name)?;
        self.set_up(index)?;
        Ok(index)
    }

    /// Makes a veth pair: `host` on the host, enslaved to `master` and up;
    /// `peer` moved into the namespace open as `peer_netns` (still down),
    /// with `peer_mac` when given (else the kernel's random one).
    pub fn create_veth(
        &mut self,
        host: &str,
        peer: &str,
        peer_netns: RawFd,
        master: u32,
        mtu: Option<u32>,
        peer_mac: Option<[u8; 6]>,
    ) -> io::Result<()> {
        let mut req = Request::new(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL | NLM_F_ACK)
            .ifinfo(0, IFF_UP, IFF_UP);
        req.attr_str(IFLA_IFNAME, host);
        req.attr_u32(IFLA_MASTER, master);
        if let Some(mtu) = mtu {
            req.attr_u32(IFLA_MTU, mtu);
        }
        req.begin_nested(IFLA_LINKINFO)
            .attr_str(IFLA_INFO_KIND, "veth")
            .begin_nested(IFLA_INFO_DATA)
            .begin_nested(VETH_INFO_PEER)
            .raw_ifinfo()
            .attr_str(IFLA_IFNAME, peer)
            .attr_u32(IFLA_NET_NS_FD, peer_netns as u32);
        if let Some(mtu) = mtu {
            req.attr_u32(IFLA_MTU, mtu);
        }
        if let Some(mac) = peer_mac {
            req.attr(IFLA_ADDRESS, &mac);
        }
        req.end_nested().end_nested().end_nested();
        self.call(req)
    }

    pub fn set_up(&mut self, index: u32) -> io::Result<()> {
        let req = Request::new(RTM_NEWLINK, NLM_F_ACK).ifinfo(index, IFF_UP, IFF_UP);
        self.call(req)
    }

    /// Adds `addr/prefix` to the link; already having it is fine.
    pub fn add_address(&mut self, index: u32, addr: Ipv4Addr, prefix: u8) -> io::Result<()> {
        let mut req = Request::new(RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL | NLM_F_ACK);
        req.buf
            .extend_from_slice(&[libc::AF_INET as u8, prefix, 0, 0]);
        req.buf.extend_from_slice(&index.to_ne_bytes());
        req.attr(IFA_LOCAL, &addr.octets())
            .attr(IFA_ADDRESS, &addr.octets());
        if prefix < 31 {
            let host_bits = u32::MAX >> prefix;
            let broadcast = Ipv4Addr::from(u32::from(addr) | host_bits);
            req.attr(IFA_BROADCAST, &broadcast.octets());
        }
        match self.call(req) {
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => Ok(()),
            r => r,
        }
    }

    /// Adds the default route via `gateway` out of the link.
    pub fn add_default_route(&mut self, index: u32, gateway: Ipv4Addr) -> io::Result<()> {
        let mut req = Request::new(RTM_NEWROUTE, NLM_F_CREATE | NLM_F_EXCL | NLM_F_ACK);
        // struct rtmsg: family, dst_len, src_len, tos, table, protocol,
        // scope (universe), type, flags.
        req.buf.extend_from_slice(&[
            libc::AF_INET as u8,
            0,
            0,
            0,
            RT_TABLE_MAIN,
            RTPROT_BOOT,
            0,
            RTN_UNICAST,
        ]);
        req.buf.extend_from_slice(&0u32.to_ne_bytes());
        req.attr(RTA_GATEWAY, &gateway.octets())
            .attr_u32(RTA_OIF, index);
        self.call(req)
    }

    /// Deletes the link; a missing one is fine. Deleting one end of a veth
    /// deletes both.
    pub fn delete_link(&mut self, name: &str) -> io::Result<()> {
        let mut req = Request::new(RTM_DELLINK, NLM_F_ACK).ifinfo(0, 0, 0);
        req.attr_str(IFLA_IFNAME, name);
        match self.call(req) {
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENODEV)) => Ok(()),
            r => r,
        }
    }

    /// Every link in this namespace.
    pub fn links(&mut self) -> io::Result<Vec<Link>> {
        let req = Request::new(RTM_GETLINK, NLM_F_DUMP).ifinfo(0, 0, 0);
        let mut links = Vec::new();
        self.exchange(req, |kind, payload| {
            if kind == RTM_NEWLINK {
                if let Some(link) = parse_link(payload) {
                    links.push(link);
                }
            }
        })?;
        Ok(links)
    }

    fn call(&mut self, req: Request) -> io::Result<()> {
        self.exchange(req, |_, _| {})
    }

    /// Sends one request and reads until its ack, error or dump end.
    fn exchange(&mut self, req: Request, mut on_message: impl FnMut(u16, &[u8])) -> io::Result<()> {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        let msg = req.finish(seq);
        // SAFETY: msg is a valid buffer of msg.len() bytes.
        let sent = unsafe { libc::send(self.fd.as_raw_fd(), msg.as_ptr().cast(), msg.len(), 0) };
        if sent < 0 {
            return Err(io::Error::last_os_error());
        }
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            // SAFETY: buf is a valid writable buffer of buf.len() bytes.
            let n =
                unsafe { libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            if let Some(done) = read_replies(&buf[..n as usize], seq, &mut on_message) {
                return done;
            }
        }
    }
}

/// Walks the messages of one `recv`: `Some` once the reply to `seq` ends
/// (ack, error or dump end), `None` to read on. Lengths come from the
/// kernel but are checked all the same: a short message is an error, not a
/// panic.
fn read_replies(
    mut rest: &[u8],
    seq: u32,
    on_message: &mut impl FnMut(u16, &[u8]),
) -> Option<io::Result<()>> {
    let invalid = |what: &str| {
        Some(Err(io::Error::new(
            io::ErrorKind::InvalidData,
            what.to_string(),
        )))
    };
    while rest.len() >= HEADER_LEN {
        let len = u32_at(rest, 0) as usize;
        if len < HEADER_LEN || len > rest.len() {
            return invalid("truncated netlink message");
        }
        let kind = u16::from_ne_bytes([rest[4], rest[5]]);
        let msg_seq = u32_at(rest, 8);
        let payload = &rest[HEADER_LEN..len];
        rest = &rest[align(len).min(rest.len())..];
        if msg_seq != seq {
            continue;
        }
        match kind {
            NLMSG_DONE => return Some(Ok(())),
            NLMSG_ERROR => {
                let Some(code) = payload.get(..4) else {
                    return invalid("netlink error message without its code");
                };
                let code = i32::from_ne_bytes([code[0], code[1], code[2], code[3]]);
                return Some(if code == 0 {
                    Ok(())
                } else {
                    Err(io::Error::from_raw_os_error(-code))
                });
            }
            _ => on_message(kind, payload),
        }
    }
    None
}

fn parse_link(payload: &[u8]) -> Option<Link> {
    if payload.len() < 16 {
        return None;
    }
    let index = u32_at(payload, 4);
    let mut name = None;
    let mut master = None;
    let mut attrs = &payload[16..];
    while attrs.len() >= 4 {
        let len = u16::from_ne_bytes([attrs[0], attrs[1]]) as usize;
        let kind = u16::from_ne_bytes([attrs[2], attrs[3]]) & !NLA_F_NESTED;
        if len < 4 || len > attrs.len() {
            break;
        }
        let value = &attrs[4..len];
        match kind {
            IFLA_IFNAME => {
                let end = value.iter().position(|b| *b == 0).unwrap_or(value.len());
                name = Some(String::from_utf8_lossy(&value[..end]).into_owned());
            }
            IFLA_MASTER if value.len() >= 4 => master = Some(u32_at(value, 0)),
            _ => {}
        }
        attrs = &attrs[align(len).min(attrs.len())..];
    }
    Some(Link {
        index,
        name: name?,
        master,
    })
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_ne_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn align(len: usize) -> usize {
    (len + 3) & !3
}

/// The index of a link in the calling thread's namespace.
pub fn link_index(name: &str) -> io::Result<u32> {
    let c = std::ffi::CString::new(name)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "interface name has a NUL"))?;
    // SAFETY: c is a valid NUL-terminated string.
    let index = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if index == 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(index)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_attributes_carry_their_length() {
        let mut req = Request::new(RTM_NEWLINK, NLM_F_ACK).ifinfo(0, 0, 0);
        req.begin_nested(IFLA_LINKINFO)
            .attr_str(IFLA_INFO_KIND, "veth")
            .end_nested();
        let msg = req.finish(7);
        assert_eq!(u32_at(&msg, 0) as usize, msg.len());
        assert_eq!(u32_at(&msg, 8), 7);
        // ifinfomsg, then LINKINFO (4) holding INFO_KIND (4 + "veth\0" padded to 8).
        let nested = &msg[32..];
        assert_eq!(u16::from_ne_bytes([nested[0], nested[1]]), 16);
        assert_eq!(
            u16::from_ne_bytes([nested[2], nested[3]]),
            IFLA_LINKINFO | NLA_F_NESTED
        );
        assert_eq!(&nested[8..13], b"veth\0");
    }

    /// A reply of `kind` for `seq` carrying `payload`.
    fn reply(kind: u16, seq: u32, payload: &[u8]) -> Vec<u8> {
        let mut msg = Vec::new();
        msg.extend_from_slice(&((HEADER_LEN + payload.len()) as u32).to_ne_bytes());
        msg.extend_from_slice(&kind.to_ne_bytes());
        msg.extend_from_slice(&0u16.to_ne_bytes());
        msg.extend_from_slice(&seq.to_ne_bytes());
        msg.extend_from_slice(&0u32.to_ne_bytes());
        msg.extend_from_slice(payload);
        msg
    }

    #[test]
    fn a_short_error_message_is_an_error_not_a_panic() {
        let short = reply(NLMSG_ERROR, 5, &[0, 0]);
        let e = read_replies(&short, 5, &mut |_, _| {})
            .unwrap()
            .unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        assert!(e.to_string().contains("without its code"), "{e}");
        let eexist = reply(NLMSG_ERROR, 5, &(-libc::EEXIST).to_ne_bytes());
        let e = read_replies(&eexist, 5, &mut |_, _| {})
            .unwrap()
            .unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EEXIST));
        let ack = reply(NLMSG_ERROR, 5, &0i32.to_ne_bytes());
        read_replies(&ack, 5, &mut |_, _| {}).unwrap().unwrap();
        // Another request's reply is skipped.
        assert!(read_replies(&short, 6, &mut |_, _| {}).is_none());
    }

    #[test]
    fn a_dumped_link_parses() {
        let mut payload = Vec::new();
        push_ifinfo(&mut payload, 42, 0, 0);
        let mut req = Request {
            buf: payload,
            nests: Vec::new(),
        };
        req.attr_str(IFLA_IFNAME, "ve-abc").attr_u32(IFLA_MASTER, 9);
        let link = parse_link(&req.buf).unwrap();
        assert_eq!(
            link,
            Link {
                index: 42,
                name: "ve-abc".into(),
                master: Some(9)
            }
        );
    }
}
