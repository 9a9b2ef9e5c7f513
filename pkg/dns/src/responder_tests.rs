//! The responder over real sockets on 127.0.0.1 (ephemeral ports): a
//! second responder plays the upstream, a bound socket that never reads
//! plays a silent one.

use std::net::{IpAddr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::time::timeout;

use crate::forward::{read_framed, write_framed};
use crate::wire::testing::{answers, query, Record};
use crate::wire::{RCODE_FORMERR, RCODE_SERVFAIL, TYPE_A, TYPE_AAAA, TYPE_PTR};
use crate::{Options, Records, Responder};

/// How long a test waits for any reply before failing.
const WAIT: Duration = Duration::from_secs(5);

fn any_port() -> SocketAddr {
    "127.0.0.1:0".parse().unwrap()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn quick() -> Options {
    Options {
        upstream_timeout: Duration::from_millis(300),
        forward_deadline: Duration::from_secs(1),
        ..Options::default()
    }
}

async fn responder(records: &Records, upstreams: Vec<SocketAddr>) -> Responder {
    Responder::start_with(any_port(), records.clone(), upstreams, quick())
        .await
        .expect("responder starts")
}

/// A client socket; `ask` sends one datagram and returns the reply to it.
struct Client(UdpSocket);

impl Client {
    async fn new() -> Client {
        Client(UdpSocket::bind(any_port()).await.unwrap())
    }

    async fn send(&self, server: SocketAddr, message: &[u8]) {
        self.0.send_to(message, server).await.unwrap();
    }

    /// The next datagram, failing the test if none comes within WAIT.
    async fn recv(&self) -> Vec<u8> {
        let mut buf = vec![0u8; 65535];
        let (n, _) = timeout(WAIT, self.0.recv_from(&mut buf))
            .await
            .expect("a reply within the deadline")
            .unwrap();
        buf.truncate(n);
        buf
    }

    async fn ask(&self, server: SocketAddr, message: &[u8]) -> Vec<u8> {
        self.send(server, message).await;
        self.recv().await
    }
}

async fn ask_tcp(server: SocketAddr, message: &[u8]) -> Vec<u8> {
    let mut stream = TcpStream::connect(server).await.unwrap();
    write_framed(&mut stream, message).await.unwrap();
    timeout(WAIT, read_framed(&mut stream))
        .await
        .expect("a tcp reply within the deadline")
        .unwrap()
}

fn a(octets: [u8; 4]) -> Record {
    Record {
        rtype: TYPE_A,
        ttl: 0,
        rdata: octets.to_vec(),
    }
}

#[tokio::test]
async fn answers_names_and_aliases_case_insensitively() {
    let records = Records::default();
    records.set("web", vec![ip("10.89.0.2"), ip("fd00::2")]);
    records.set("frontend", vec![ip("10.89.0.2")]);
    let dns = responder(&records, vec![]).await;
    let client = Client::new().await;

    for (id, name) in [(1, "web"), (2, "WeB."), (3, "Frontend")] {
        let (h, got) = answers(&client.ask(dns.local_addr(), &query(id, name, TYPE_A)).await);
        assert_eq!((h.id, h.rcode()), (id, 0), "{name}");
        assert_eq!(got, vec![a([10, 89, 0, 2])], "{name}");
    }
    let (_, got) = answers(
        &client
            .ask(dns.local_addr(), &query(4, "web", TYPE_AAAA))
            .await,
    );
    assert_eq!(got.len(), 1);
    assert_eq!(
        got[0].rdata,
        "fd00::2".parse::<Ipv6Addr>().unwrap().octets()
    );
    // Known, but no IPv6 address: NOERROR and no answer, not forwarded
    // (there is no upstream, which would give SERVFAIL).
    let (h, got) = answers(
        &client
            .ask(dns.local_addr(), &query(5, "frontend", TYPE_AAAA))
            .await,
    );
    assert_eq!((h.rcode(), got.len()), (0, 0));
    let (_, got) = answers(
        &client
            .ask(
                dns.local_addr(),
                &query(6, "2.0.89.10.in-addr.arpa", TYPE_PTR),
            )
            .await,
    );
    assert_eq!(got.len(), 2);
}

#[tokio::test]
async fn set_changes_the_answer_and_remove_forwards() {
    let upstream_records = Records::default();
    upstream_records.set("web", vec![ip("192.0.2.80")]);
    upstream_records.set("example.test", vec![ip("192.0.2.1")]);
    let upstream = responder(&upstream_records, vec![]).await;
    let records = Records::default();
    records.set("web", vec![ip("10.89.0.2")]);
    let dns = responder(&records, vec![upstream.local_addr()]).await;
    let client = Client::new().await;
    let web = |id| query(id, "web", TYPE_A);

    let (_, got) = answers(&client.ask(dns.local_addr(), &web(1)).await);
    assert_eq!(got, vec![a([10, 89, 0, 2])]);
    records.set("web", vec![ip("10.89.0.3")]);
    let (_, got) = answers(&client.ask(dns.local_addr(), &web(2)).await);
    assert_eq!(got, vec![a([10, 89, 0, 3])]);
    records.remove("web");
    let (h, got) = answers(&client.ask(dns.local_addr(), &web(3)).await);
    assert_eq!((h.id, got), (3, vec![a([192, 0, 2, 80])]));
    let (_, got) = answers(
        &client
            .ask(dns.local_addr(), &query(4, "Example.Test", TYPE_A))
            .await,
    );
    assert_eq!(got, vec![a([192, 0, 2, 1])]);
}

#[tokio::test]
async fn servfail_when_no_upstream_answers() {
    // Bound but never read: queries to it go unanswered.
    let silent = UdpSocket::bind(any_port()).await.unwrap();
    let dns = responder(&Records::default(), vec![silent.local_addr().unwrap()]).await;
    let client = Client::new().await;
    let (h, got) = answers(
        &client
            .ask(dns.local_addr(), &query(7, "nowhere.test", TYPE_A))
            .await,
    );
    assert_eq!((h.id, h.rcode(), got.len()), (7, RCODE_SERVFAIL, 0));

    let none = responder(&Records::default(), vec![]).await;
    let (h, _) = answers(
        &client
            .ask(none.local_addr(), &query(8, "nowhere.test", TYPE_A))
            .await,
    );
    assert_eq!((h.id, h.rcode()), (8, RCODE_SERVFAIL));
    let (h, _) = answers(&ask_tcp(none.local_addr(), &query(9, "nowhere.test", TYPE_A)).await);
    assert_eq!((h.id, h.rcode()), (9, RCODE_SERVFAIL));
}

#[tokio::test]
async fn malformed_packets_get_formerr_or_nothing() {
    let records = Records::default();
    records.set("web", vec![ip("10.89.0.2")]);
    let dns = responder(&records, vec![]).await;
    let client = Client::new().await;

    let mut bad_name = query(11, "web", TYPE_A);
    bad_name[12] = 0x40; // a reserved label type
    let (h, _) = answers(&client.ask(dns.local_addr(), &bad_name).await);
    assert_eq!((h.id, h.rcode()), (11, RCODE_FORMERR));

    // Too short to answer and a stray response: dropped. The next reply
    // the client gets is the one to its following query.
    client.send(dns.local_addr(), &[0xde, 0xad]).await;
    let mut response = query(12, "web", TYPE_A);
    response[2] |= 0x80;
    client.send(dns.local_addr(), &response).await;
    client.send(dns.local_addr(), &[]).await;
    let (h, got) = answers(
        &client
            .ask(dns.local_addr(), &query(13, "web", TYPE_A))
            .await,
    );
    assert_eq!((h.id, got), (13, vec![a([10, 89, 0, 2])]));

    // Over TCP, garbage ends the connection without a reply.
    let mut stream = TcpStream::connect(dns.local_addr()).await.unwrap();
    write_framed(&mut stream, &[1, 2, 3]).await.unwrap();
    let ended = timeout(WAIT, read_framed(&mut stream))
        .await
        .expect("closed within the deadline");
    assert!(ended.is_err(), "no reply to a 3-byte message: {ended:?}");
}

#[tokio::test]
async fn tcp_answers_and_forwards_over_tcp() {
    let upstream_records = Records::default();
    upstream_records.set("far.test", vec![ip("192.0.2.9")]);
    let upstream = responder(&upstream_records, vec![]).await;
    // The upstream as the responder sees it: silent over UDP, and over TCP
    // relaying one query to the real one, so only a TCP forward succeeds.
    let silent = UdpSocket::bind(any_port()).await.unwrap();
    let tcp_only = silent.local_addr().unwrap();
    let listener = TcpListener::bind(tcp_only).await.unwrap();
    let real = upstream.local_addr();
    let relay = tokio::spawn(async move {
        let (mut stream, _) = listener.accept().await.unwrap();
        let asked = read_framed(&mut stream).await.unwrap();
        write_framed(&mut stream, &ask_tcp(real, &asked).await)
            .await
            .unwrap();
    });
    let records = Records::default();
    records.set("web", vec![ip("10.89.0.2")]);
    let dns = responder(&records, vec![tcp_only]).await;

    let (h, got) = answers(&ask_tcp(dns.local_addr(), &query(21, "WEB", TYPE_A)).await);
    assert_eq!((h.id, got), (21, vec![a([10, 89, 0, 2])]));
    let (h, got) = answers(&ask_tcp(dns.local_addr(), &query(22, "far.test", TYPE_A)).await);
    assert_eq!((h.id, got), (22, vec![a([192, 0, 2, 9])]));
    timeout(WAIT, relay).await.expect("relay done").unwrap();
    // Over UDP the same name finds only the silent socket.
    let client = Client::new().await;
    let (h, _) = answers(
        &client
            .ask(dns.local_addr(), &query(23, "far.test", TYPE_A))
            .await,
    );
    assert_eq!(h.rcode(), RCODE_SERVFAIL);
}

#[tokio::test]
async fn large_udp_answers_are_truncated_and_whole_over_tcp() {
    let records = Records::default();
    records.set(
        "many",
        (0..40u8).map(|i| IpAddr::from([10, 0, 0, i])).collect(),
    );
    let dns = responder(&records, vec![]).await;
    let client = Client::new().await;

    let reply = client
        .ask(dns.local_addr(), &query(31, "many", TYPE_A))
        .await;
    let (h, got) = answers(&reply);
    assert!(
        h.truncated() && got.is_empty() && reply.len() <= 512,
        "{h:?}"
    );
    let (h, got) = answers(&ask_tcp(dns.local_addr(), &query(32, "many", TYPE_A)).await);
    assert!(!h.truncated());
    assert_eq!(got.len(), 40);
}

#[tokio::test]
async fn stop_closes_both_sockets() {
    let dns = responder(&Records::default(), vec![]).await;
    let addr = dns.local_addr();
    assert!(
        UdpSocket::bind(addr).await.is_err(),
        "udp port held while serving"
    );
    dns.stop().await;
    let _udp = UdpSocket::bind(addr)
        .await
        .expect("udp port free after stop");
    let _tcp = tokio::net::TcpListener::bind(addr)
        .await
        .expect("tcp port free after stop");
}

#[tokio::test]
async fn a_taken_address_is_a_clear_error() {
    let taken = UdpSocket::bind(any_port()).await.unwrap();
    let addr = taken.local_addr().unwrap();
    let err = match Responder::start(addr, Records::default(), vec![]).await {
        Ok(_) => panic!("bound a taken address"),
        Err(e) => e,
    };
    assert!(
        err.to_string()
            .contains(&format!("dns responder on {addr}")),
        "{err}"
    );
}

#[tokio::test]
async fn forwards_beyond_the_limit_get_servfail_at_once() {
    let silent = UdpSocket::bind(any_port()).await.unwrap();
    let options = Options {
        upstream_timeout: Duration::from_secs(30),
        forward_deadline: Duration::from_secs(30),
        max_forwards: 1,
        ..Options::default()
    };
    let dns = Responder::start_with(
        any_port(),
        Records::default(),
        vec![silent.local_addr().unwrap()],
        options,
    )
    .await
    .unwrap();
    let client = Client::new().await;
    client
        .send(dns.local_addr(), &query(51, "one.test", TYPE_A))
        .await;
    // The first forward waits on the silent upstream for 30 s; the second
    // finds no room and is answered well within WAIT.
    let (h, _) = answers(
        &client
            .ask(dns.local_addr(), &query(52, "two.test", TYPE_A))
            .await,
    );
    assert_eq!((h.id, h.rcode()), (52, RCODE_SERVFAIL));
}
