//! The DNS wire format (RFC 1035), only as far as the responder needs it:
//! reading a query's header and question, writing answers, truncating.

use std::net::IpAddr;

pub(crate) const HEADER_LEN: usize = 12;
/// What a UDP answer may hold when the client did not say more (RFC 1035).
pub(crate) const CLASSIC_UDP_MAX: usize = 512;
/// The most an EDNS client is taken at its word for.
const EDNS_UDP_MAX: usize = 4096;
const MAX_NAME_LEN: usize = 255;
const MAX_LABEL_LEN: usize = 63;

pub(crate) const FLAG_QR: u16 = 0x8000;
const FLAG_AA: u16 = 0x0400;
const FLAG_TC: u16 = 0x0200;
const FLAG_RD: u16 = 0x0100;
const FLAG_RA: u16 = 0x0080;

pub(crate) const RCODE_FORMERR: u8 = 1;
pub(crate) const RCODE_SERVFAIL: u8 = 2;
pub(crate) const RCODE_NOTIMP: u8 = 4;

pub(crate) const TYPE_A: u16 = 1;
pub(crate) const TYPE_PTR: u16 = 12;
pub(crate) const TYPE_AAAA: u16 = 28;
const TYPE_OPT: u16 = 41;
pub(crate) const TYPE_ANY: u16 = 255;
pub(crate) const CLASS_IN: u16 = 1;

/// A message's fixed header.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Header {
    pub id: u16,
    pub flags: u16,
    pub qdcount: u16,
    pub ancount: u16,
    pub nscount: u16,
    pub arcount: u16,
}

impl Header {
    pub fn parse(buf: &[u8]) -> Option<Header> {
        if buf.len() < HEADER_LEN {
            return None;
        }
        let word = |i: usize| u16::from_be_bytes([buf[i], buf[i + 1]]);
        Some(Header {
            id: word(0),
            flags: word(2),
            qdcount: word(4),
            ancount: word(6),
            nscount: word(8),
            arcount: word(10),
        })
    }

    pub fn is_response(&self) -> bool {
        self.flags & FLAG_QR != 0
    }

    pub fn opcode(&self) -> u16 {
        (self.flags >> 11) & 0xf
    }

    #[cfg(test)]
    pub fn rcode(&self) -> u8 {
        (self.flags & 0xf) as u8
    }

    #[cfg(test)]
    pub fn truncated(&self) -> bool {
        self.flags & FLAG_TC != 0
    }

    fn write(&self, out: &mut Vec<u8>) {
        for word in [
            self.id,
            self.flags,
            self.qdcount,
            self.ancount,
            self.nscount,
            self.arcount,
        ] {
            out.extend_from_slice(&word.to_be_bytes());
        }
    }
}

/// Why a message could not be read.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Malformed;

/// A name as its labels, in the case the client wrote them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Name(pub Vec<Vec<u8>>);

impl Name {
    /// The dotted, lower-cased form Records keys on (no trailing dot).
    pub fn lookup_key(&self) -> String {
        let labels: Vec<String> = self
            .0
            .iter()
            .map(|l| String::from_utf8_lossy(l).to_ascii_lowercase())
            .collect();
        labels.join(".")
    }

    fn write(&self, out: &mut Vec<u8>) {
        for label in &self.0 {
            out.push(label.len() as u8);
            out.extend_from_slice(label);
        }
        out.push(0);
    }
}

/// Reads the name at `pos`, following compression pointers; returns it
/// and where the name ends in place (after its first pointer, if any).
pub(crate) fn read_name(buf: &[u8], mut pos: usize) -> Result<(Name, usize), Malformed> {
    let mut labels = Vec::new();
    let mut len = 1;
    let mut end = None;
    // Each pointer must point backwards, so following them terminates.
    let mut limit = pos;
    loop {
        let b = *buf.get(pos).ok_or(Malformed)? as usize;
        match b & 0xc0 {
            0x00 if b == 0 => break,
            0x00 => {
                let label = buf.get(pos + 1..pos + 1 + b).ok_or(Malformed)?;
                len += b + 1;
                if b > MAX_LABEL_LEN || len > MAX_NAME_LEN {
                    return Err(Malformed);
                }
                labels.push(label.to_vec());
                pos += b + 1;
            }
            0xc0 => {
                let low = *buf.get(pos + 1).ok_or(Malformed)? as usize;
                let target = ((b & 0x3f) << 8) | low;
                if target >= limit {
                    return Err(Malformed);
                }
                end.get_or_insert(pos + 2);
                limit = target;
                pos = target;
            }
            _ => return Err(Malformed),
        }
    }
    Ok((Name(labels), end.unwrap_or(pos + 1)))
}

/// A query's one question.
#[derive(Clone, Debug)]
pub(crate) struct Question {
    pub name: Name,
    pub qtype: u16,
    pub qclass: u16,
}

/// A query the responder can act on.
#[derive(Debug)]
pub(crate) struct Query {
    pub header: Header,
    pub question: Question,
    /// The largest UDP answer the client takes (EDNS, RFC 6891).
    pub udp_max: usize,
    /// Whether the query carried an OPT record, which the reply echoes.
    pub edns: bool,
}

/// Reads a query with exactly one question (what every resolver sends).
pub(crate) fn parse_query(buf: &[u8], header: Header) -> Result<Query, Malformed> {
    if header.qdcount != 1 {
        return Err(Malformed);
    }
    let (name, pos) = read_name(buf, HEADER_LEN)?;
    let fixed = buf.get(pos..pos + 4).ok_or(Malformed)?;
    let question = Question {
        name,
        qtype: u16::from_be_bytes([fixed[0], fixed[1]]),
        qclass: u16::from_be_bytes([fixed[2], fixed[3]]),
    };
    let edns = edns_udp_max(buf, &header, pos + 4);
    Ok(Query {
        header,
        question,
        udp_max: edns.unwrap_or(CLASSIC_UDP_MAX),
        edns: edns.is_some(),
    })
}

/// The UDP size an OPT record in the query's other sections offers.
fn edns_udp_max(buf: &[u8], header: &Header, mut pos: usize) -> Option<usize> {
    let records = header.ancount as usize + header.nscount as usize + header.arcount as usize;
    for _ in 0..records {
        let (_, after) = read_name(buf, pos).ok()?;
        let fixed = buf.get(after..after + 10)?;
        let rtype = u16::from_be_bytes([fixed[0], fixed[1]]);
        if rtype == TYPE_OPT {
            let size = u16::from_be_bytes([fixed[2], fixed[3]]) as usize;
            return Some(size.clamp(CLASSIC_UDP_MAX, EDNS_UDP_MAX));
        }
        let rdlen = u16::from_be_bytes([fixed[8], fixed[9]]) as usize;
        pos = after + 10 + rdlen;
    }
    None
}

/// An answer to `query`, built record by record.
pub(crate) struct Reply {
    buf: Vec<u8>,
    answers: u16,
    edns: bool,
}

/// Offset of the question's name, which every answer points back to.
const QUESTION_NAME_POINTER: [u8; 2] = [0xc0, HEADER_LEN as u8];

impl Reply {
    /// A reply echoing the question (in the client's case, RFC 4343).
    pub fn new(query: &Query, rcode: u8, authoritative: bool) -> Reply {
        let mut buf = Vec::with_capacity(CLASSIC_UDP_MAX);
        reply_header(&query.header, rcode, 1, authoritative).write(&mut buf);
        query.question.name.write(&mut buf);
        buf.extend_from_slice(&query.question.qtype.to_be_bytes());
        buf.extend_from_slice(&query.question.qclass.to_be_bytes());
        Reply {
            buf,
            answers: 0,
            edns: query.edns,
        }
    }

    /// Adds an A or AAAA record for the question's name.
    pub fn address(&mut self, addr: IpAddr, ttl: u32) {
        match addr {
            IpAddr::V4(v4) => self.record(TYPE_A, ttl, &v4.octets()),
            IpAddr::V6(v6) => self.record(TYPE_AAAA, ttl, &v6.octets()),
        }
    }

    /// Adds a PTR record naming `target` (dotted, without trailing dot).
    pub fn pointer(&mut self, target: &str, ttl: u32) {
        let labels = target
            .split('.')
            .filter(|l| !l.is_empty())
            .map(|l| l.as_bytes().to_vec())
            .collect();
        let mut rdata = Vec::new();
        Name(labels).write(&mut rdata);
        self.record(TYPE_PTR, ttl, &rdata);
    }

    fn record(&mut self, rtype: u16, ttl: u32, rdata: &[u8]) {
        self.buf.extend_from_slice(&QUESTION_NAME_POINTER);
        self.buf.extend_from_slice(&rtype.to_be_bytes());
        self.buf.extend_from_slice(&CLASS_IN.to_be_bytes());
        self.buf.extend_from_slice(&ttl.to_be_bytes());
        self.buf
            .extend_from_slice(&(rdata.len() as u16).to_be_bytes());
        self.buf.extend_from_slice(rdata);
        self.answers += 1;
    }

    pub fn finish(mut self) -> Vec<u8> {
        self.buf[6..8].copy_from_slice(&self.answers.to_be_bytes());
        if self.edns {
            // RFC 6891 6.1.1: an OPT in the query asks for one in the reply
            // (root name, the size this side takes, version 0, no options).
            self.buf.push(0);
            self.buf.extend_from_slice(&TYPE_OPT.to_be_bytes());
            self.buf
                .extend_from_slice(&(EDNS_UDP_MAX as u16).to_be_bytes());
            self.buf.extend_from_slice(&[0, 0, 0, 0, 0, 0]);
            self.buf[10..12].copy_from_slice(&1u16.to_be_bytes());
        }
        self.buf
    }
}

/// The header of a reply to `query`: recursion is available (the rest is
/// forwarded), the client's RD is echoed.
fn reply_header(query: &Header, rcode: u8, qdcount: u16, authoritative: bool) -> Header {
    let mut flags = FLAG_QR | (query.opcode() << 11) | (query.flags & FLAG_RD) | FLAG_RA;
    if authoritative {
        flags |= FLAG_AA;
    }
    Header {
        id: query.id,
        flags: flags | rcode as u16,
        qdcount,
        ancount: 0,
        nscount: 0,
        arcount: 0,
    }
}

/// A header-only error reply, for queries whose question is unreadable.
pub(crate) fn error_reply(query: &Header, rcode: u8) -> Vec<u8> {
    let mut buf = Vec::with_capacity(HEADER_LEN);
    reply_header(query, rcode, 0, false).write(&mut buf);
    buf
}

/// `reply` as it may go back over UDP to a client taking `max` bytes:
/// itself if it fits, else its header and question with TC set, so the
/// client asks again over TCP (RFC 1035 4.2.1, RFC 7766).
pub(crate) fn fit_udp(reply: Vec<u8>, max: usize) -> Vec<u8> {
    if reply.len() <= max {
        return reply;
    }
    let Some(mut header) = Header::parse(&reply) else {
        return reply;
    };
    let mut end = HEADER_LEN;
    for _ in 0..header.qdcount {
        match read_name(&reply, end) {
            Ok((_, after)) if after + 4 <= max && after + 4 <= reply.len() => end = after + 4,
            _ => {
                header.qdcount = 0;
                end = HEADER_LEN;
                break;
            }
        }
    }
    header.flags |= FLAG_TC;
    header.ancount = 0;
    header.nscount = 0;
    header.arcount = 0;
    let mut out = Vec::with_capacity(end);
    header.write(&mut out);
    out.extend_from_slice(&reply[HEADER_LEN..end]);
    out
}

/// The address a reverse name (`4.3.2.1.in-addr.arpa`, nibbles under
/// `ip6.arpa`) stands for, or `None` if it is not one.
pub(crate) fn reverse_address(key: &str) -> Option<IpAddr> {
    if let Some(rest) = key.strip_suffix(".in-addr.arpa") {
        let mut octets: Vec<u8> = rest
            .split('.')
            .map(|o| o.parse().ok())
            .collect::<Option<_>>()?;
        if octets.len() != 4 {
            return None;
        }
        octets.reverse();
        return Some(IpAddr::from([octets[0], octets[1], octets[2], octets[3]]));
    }
    let rest = key.strip_suffix(".ip6.arpa")?;
    let nibbles: Vec<u8> = rest
        .split('.')
        .map(|n| {
            (n.len() == 1)
                .then(|| u8::from_str_radix(n, 16).ok())
                .flatten()
        })
        .collect::<Option<_>>()?;
    if nibbles.len() != 32 {
        return None;
    }
    let mut octets = [0u8; 16];
    for (i, pair) in nibbles.rchunks(2).enumerate() {
        // Reversed nibble order: the low nibble comes first in each pair.
        octets[i] = (pair[1] << 4) | pair[0];
    }
    Some(IpAddr::from(octets))
}

#[cfg(test)]
pub(crate) mod testing {
    //! A small client side for the tests: queries out, answers in.
    use super::*;

    pub fn query(id: u16, name: &str, qtype: u16) -> Vec<u8> {
        let mut buf = Vec::new();
        Header {
            id,
            flags: FLAG_RD,
            qdcount: 1,
            ancount: 0,
            nscount: 0,
            arcount: 0,
        }
        .write(&mut buf);
        let labels = name
            .split('.')
            .filter(|l| !l.is_empty())
            .map(|l| l.as_bytes().to_vec())
            .collect();
        Name(labels).write(&mut buf);
        buf.extend_from_slice(&qtype.to_be_bytes());
        buf.extend_from_slice(&CLASS_IN.to_be_bytes());
        buf
    }

    /// One answer record: its type, TTL and data.
    #[derive(Debug, PartialEq, Eq)]
    pub struct Record {
        pub rtype: u16,
        pub ttl: u32,
        pub rdata: Vec<u8>,
    }

    pub fn answers(buf: &[u8]) -> (Header, Vec<Record>) {
        let header = Header::parse(buf).expect("reply has a header");
        let mut pos = HEADER_LEN;
        for _ in 0..header.qdcount {
            pos = read_name(buf, pos).expect("question name").1 + 4;
        }
        let mut records = Vec::new();
        for _ in 0..header.ancount {
            pos = read_name(buf, pos).expect("answer name").1;
            let f = &buf[pos..pos + 10];
            let rdlen = u16::from_be_bytes([f[8], f[9]]) as usize;
            records.push(Record {
                rtype: u16::from_be_bytes([f[0], f[1]]),
                ttl: u32::from_be_bytes([f[4], f[5], f[6], f[7]]),
                rdata: buf[pos + 10..pos + 10 + rdlen].to_vec(),
            });
            pos += 10 + rdlen;
        }
        (header, records)
    }
}

#[cfg(test)]
mod tests {
    use super::testing::*;
    use super::*;

    #[test]
    fn reads_a_query_and_answers_it() {
        let q = query(7, "Web.Example", TYPE_A);
        let parsed = parse_query(&q, Header::parse(&q).unwrap()).unwrap();
        assert_eq!(parsed.question.name.lookup_key(), "web.example");
        assert_eq!(parsed.udp_max, CLASSIC_UDP_MAX);
        let mut reply = Reply::new(&parsed, 0, true);
        reply.address("10.1.2.3".parse().unwrap(), 0);
        let bytes = reply.finish();
        let (h, records) = answers(&bytes);
        assert_eq!((h.id, h.rcode(), h.is_response()), (7, 0, true));
        assert_eq!(records[0].rdata, vec![10, 1, 2, 3]);
        // The echoed question keeps the client's case.
        assert_eq!(&bytes[12..16], b"\x03Web");
    }

    #[test]
    fn compression_loops_and_overlong_labels_are_malformed() {
        let mut q = query(1, "a", TYPE_A);
        q.truncate(HEADER_LEN);
        q.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1]); // points at itself
        assert_eq!(
            parse_query(&q, Header::parse(&q).unwrap()).unwrap_err(),
            Malformed
        );
        let mut long = query(1, "a", TYPE_A);
        long.truncate(HEADER_LEN);
        long.push(64);
        long.extend_from_slice(&[b'a'; 64]);
        long.extend_from_slice(&[0, 0, 1, 0, 1]);
        assert!(parse_query(&long, Header::parse(&long).unwrap()).is_err());
    }

    #[test]
    fn edns_raises_the_udp_limit() {
        let mut q = query(1, "a", TYPE_A);
        q[11] = 1; // arcount
        q.extend_from_slice(&[0, 0, 41, 0x04, 0xd0, 0, 0, 0, 0, 0, 0]); // OPT, 1232
        let parsed = parse_query(&q, Header::parse(&q).unwrap()).unwrap();
        assert_eq!(parsed.udp_max, 1232);
        let reply = Reply::new(&parsed, 0, true).finish();
        let (h, _) = answers(&reply);
        assert_eq!(h.arcount, 1);
        assert_eq!(&reply[reply.len() - 11..reply.len() - 8], &[0, 0, 41]);
    }

    #[test]
    fn oversized_replies_are_cut_to_the_question_with_tc() {
        let q = query(9, "many", TYPE_A);
        let parsed = parse_query(&q, Header::parse(&q).unwrap()).unwrap();
        let mut reply = Reply::new(&parsed, 0, true);
        for i in 0..40u8 {
            reply.address(IpAddr::from([10, 0, 0, i]), 0);
        }
        let bytes = reply.finish();
        assert!(bytes.len() > CLASSIC_UDP_MAX);
        let cut = fit_udp(bytes.clone(), CLASSIC_UDP_MAX);
        let (h, records) = answers(&cut);
        assert!(h.truncated());
        assert!(records.is_empty());
        assert_eq!(h.qdcount, 1);
        assert_eq!(fit_udp(bytes.clone(), 4096), bytes);
    }

    #[test]
    fn reverse_names() {
        assert_eq!(
            reverse_address("4.3.2.10.in-addr.arpa"),
            Some("10.2.3.4".parse().unwrap())
        );
        let v6 = "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa";
        assert_eq!(reverse_address(v6), Some("2001:db8::1".parse().unwrap()));
        assert_eq!(reverse_address("1.2.3.in-addr.arpa"), None);
        assert_eq!(reverse_address("web"), None);
    }
}
