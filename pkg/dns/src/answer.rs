//! What to do with one query: answer it from the records, or forward it.

use std::net::IpAddr;

use crate::wire::{
    self, Header, Query, Reply, CLASS_IN, RCODE_FORMERR, RCODE_NOTIMP, RCODE_SERVFAIL, TYPE_A,
    TYPE_AAAA, TYPE_ANY, TYPE_PTR,
};
use crate::Records;

/// Containers come and go, so clients should not keep their answers
/// (aardvark-dns answers with TTL 0 too).
pub(crate) const RECORD_TTL: u32 = 0;

/// The outcome of reading one message.
#[derive(Debug)]
pub(crate) enum Action {
    /// Send this back; over UDP cut to the client's limit with
    /// [`wire::fit_udp`].
    Reply { bytes: Vec<u8>, udp_max: usize },
    /// Not ours: ask the upstreams. Carries the client's UDP limit.
    Forward { udp_max: usize },
    /// Not a query we can answer at all (too short, or a response):
    /// dropped, as a reply could not be matched or could loop.
    Drop,
}

/// Decides what `message` gets, answering names in `records`.
pub(crate) fn decide(message: &[u8], records: &Records) -> Action {
    let Some(header) = Header::parse(message) else {
        return Action::Drop;
    };
    if header.is_response() {
        return Action::Drop;
    }
    if header.opcode() != 0 {
        return error(&header, RCODE_NOTIMP);
    }
    let Ok(query) = wire::parse_query(message, header) else {
        return error(&header, RCODE_FORMERR);
    };
    match local_answer(&query, records) {
        Some(bytes) => Action::Reply {
            bytes,
            udp_max: query.udp_max,
        },
        None => Action::Forward {
            udp_max: query.udp_max,
        },
    }
}

fn error(header: &Header, rcode: u8) -> Action {
    Action::Reply {
        bytes: wire::error_reply(header, rcode),
        udp_max: wire::CLASSIC_UDP_MAX,
    }
}

/// SERVFAIL for a query `decide` said to forward (so it parses).
pub(crate) fn servfail(message: &[u8]) -> Vec<u8> {
    let Some(header) = Header::parse(message) else {
        return Vec::new();
    };
    match wire::parse_query(message, header) {
        Ok(query) => Reply::new(&query, RCODE_SERVFAIL, false).finish(),
        Err(_) => wire::error_reply(&header, RCODE_SERVFAIL),
    }
}

/// The authoritative answer for a name (or address) the network knows.
fn local_answer(query: &Query, records: &Records) -> Option<Vec<u8>> {
    let q = &query.question;
    if q.qclass != CLASS_IN {
        return None;
    }
    let key = q.name.lookup_key();
    if q.qtype == TYPE_PTR {
        return pointer_answer(query, &key, records);
    }
    // A known name answers every type; the ones it has no records of
    // get NOERROR with no answer (NODATA), not a forwarded NXDOMAIN.
    let addrs = records.get(&key)?;
    let mut reply = Reply::new(query, 0, true);
    for addr in addrs.into_iter().filter(|a| wanted(q.qtype, a)) {
        reply.address(addr, RECORD_TTL);
    }
    Some(reply.finish())
}

fn wanted(qtype: u16, addr: &IpAddr) -> bool {
    matches!(
        (qtype, addr),
        (TYPE_A, IpAddr::V4(_)) | (TYPE_AAAA, IpAddr::V6(_)) | (TYPE_ANY, _)
    )
}

/// PTR answers for addresses of the network's containers; other reverse
/// names are forwarded.
fn pointer_answer(query: &Query, key: &str, records: &Records) -> Option<Vec<u8>> {
    let names = records.names_of(wire::reverse_address(key)?);
    if names.is_empty() {
        return None;
    }
    let mut reply = Reply::new(query, 0, true);
    for name in names {
        reply.pointer(&name, RECORD_TTL);
    }
    Some(reply.finish())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::testing::{answers, query};

    fn reply(action: Action) -> Vec<u8> {
        match action {
            Action::Reply { bytes, .. } => bytes,
            other => panic!("expected a reply, got {other:?}"),
        }
    }

    #[test]
    fn known_names_answer_per_family() {
        let records = Records::default();
        records.set(
            "web",
            vec!["10.0.0.2".parse().unwrap(), "fd00::2".parse().unwrap()],
        );
        let (h, a) = answers(&reply(decide(&query(1, "WEB.", TYPE_A), &records)));
        assert_eq!(
            (h.rcode(), a.len(), a[0].rdata.clone()),
            (0, 1, vec![10, 0, 0, 2])
        );
        let (_, aaaa) = answers(&reply(decide(&query(2, "web", TYPE_AAAA), &records)));
        assert_eq!((aaaa.len(), aaaa[0].rtype), (1, TYPE_AAAA));
        // MX for a known name: NOERROR, no answer.
        let (h, none) = answers(&reply(decide(&query(3, "web", 15), &records)));
        assert_eq!((h.rcode(), none.len()), (0, 0));
    }

    #[test]
    fn unknown_names_and_other_classes_are_forwarded() {
        let records = Records::default();
        records.set("web", vec!["10.0.0.2".parse().unwrap()]);
        assert!(matches!(
            decide(&query(1, "example.com", TYPE_A), &records),
            Action::Forward { udp_max: 512 }
        ));
        let mut chaos = query(2, "web", TYPE_A);
        let n = chaos.len();
        chaos[n - 1] = 3; // class CH
        assert!(matches!(decide(&chaos, &records), Action::Forward { .. }));
    }

    #[test]
    fn ptr_for_a_container_address() {
        let records = Records::default();
        records.set("web", vec!["10.0.0.2".parse().unwrap()]);
        records.set("alias", vec!["10.0.0.2".parse().unwrap()]);
        let bytes = reply(decide(
            &query(1, "2.0.0.10.in-addr.arpa", TYPE_PTR),
            &records,
        ));
        let (_, a) = answers(&bytes);
        assert_eq!(a.len(), 2);
        assert_eq!(a[0].rdata, b"\x05alias\x00");
        assert!(matches!(
            decide(&query(2, "3.0.0.10.in-addr.arpa", TYPE_PTR), &records),
            Action::Forward { .. }
        ));
    }

    #[test]
    fn bad_messages_get_formerr_notimp_or_nothing() {
        let records = Records::default();
        assert!(matches!(decide(&[1, 2, 3], &records), Action::Drop));
        let mut response = query(1, "web", TYPE_A);
        response[2] |= 0x80;
        assert!(matches!(decide(&response, &records), Action::Drop));
        let mut garbage = query(4, "web", TYPE_A);
        garbage[12] = 0x80; // reserved label type
        let (h, _) = answers(&reply(decide(&garbage, &records)));
        assert_eq!((h.id, h.rcode()), (4, RCODE_FORMERR));
        let mut notify = query(5, "web", TYPE_A);
        notify[2] |= 4 << 3; // opcode NOTIFY
        let (h, _) = answers(&reply(decide(&notify, &records)));
        assert_eq!(h.rcode(), RCODE_NOTIMP);
    }

    #[test]
    fn mangled_queries_never_panic() {
        let records = Records::default();
        records.set("web", vec!["10.0.0.2".parse().unwrap()]);
        let base = query(1, "web.example", TYPE_A);
        // A fixed xorshift, so a failure replays.
        let mut state: u64 = 0x2545_f491_4f6c_dd1d;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..20_000 {
            let mut message = base.clone();
            for _ in 0..1 + next() % 4 {
                let i = (next() as usize) % message.len();
                message[i] = next() as u8;
            }
            message.truncate((next() as usize) % (message.len() + 8));
            let _ = decide(&message, &records);
            let _ = servfail(&message);
            let _ = wire::fit_udp(message, wire::HEADER_LEN + 5);
        }
    }
}
