//! Accepts the `:authority` that gRPC clients send over a unix socket.
//!
//! grpcio (Python, C++) since 1.57, grpc-java, grpcurl and .NET put the
//! socket path in `:authority` (`/run/berth/berth.sock`, `unix:/…`, or
//! percent-encoded). That is no URI authority, and h2 resets such a stream
//! with PROTOCOL_ERROR before any handler runs (hyperium/h2#487 is still
//! open; neither h2 nor hyper has a setting for it). containerd and CRI-O
//! accept it, so clients written for them break on berthd.
//!
//! [`LocalAuthority`] sits between the socket and h2 and rewrites every
//! client header block: HPACK is stateful, so each block is decoded with a
//! decoder that follows the client's dynamic table, an authority h2 would
//! refuse becomes `localhost` (what kubelet and crictl send), and the block
//! is re-encoded with literals only. h2's decoder therefore never holds a
//! dynamic entry and cannot fall out of step with the client's encoder.
//! Every other frame passes through untouched.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::{Buf, BufMut, BytesMut};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// The dynamic table size berthd's HTTP/2 server advertises (and the
/// protocol's default): the most a client's encoder may use, so the most
/// the decoder here must follow.
pub const HEADER_TABLE_SIZE: u32 = 4096;

/// What a client connection's preface is: `PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n`.
const PREFACE_LEN: usize = 24;
const FRAME_HEAD: usize = 9;
/// The largest frame berthd's server accepts (HTTP/2's default
/// SETTINGS_MAX_FRAME_SIZE, which it keeps) and so the largest one written
/// here: every peer must accept it.
const MAX_FRAME: usize = 16_384;
/// Bounds on one header block, encoded and decoded (HPACK size: name +
/// value + 32 per field), far above h2's own 16 KiB limit so that h2, not
/// this layer, answers merely large blocks; past them the connection fails.
const MAX_BLOCK: usize = 256 * 1024;
const MAX_FIELDS_SIZE: usize = 1024 * 1024;

const HEADERS: u8 = 0x1;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const PADDED: u8 = 0x8;
const PRIORITY: u8 = 0x20;

/// An HTTP/2 server-side connection whose client header blocks are
/// rewritten as the module says; writes pass straight through.
pub struct LocalAuthority<S> {
    inner: S,
    /// Bytes read from the client, not yet rewritten.
    raw: BytesMut,
    /// Rewritten bytes, not yet read by h2.
    ready: BytesMut,
    rewriter: Rewriter,
    eof: bool,
}

impl<S> LocalAuthority<S> {
    pub fn new(inner: S) -> Self {
        LocalAuthority {
            inner,
            raw: BytesMut::new(),
            ready: BytesMut::new(),
            rewriter: Rewriter::new(),
            eof: false,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for LocalAuthority<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        loop {
            if !this.ready.is_empty() {
                let n = buf.remaining().min(this.ready.len());
                buf.put_slice(&this.ready[..n]);
                this.ready.advance(n);
                return Poll::Ready(Ok(()));
            }
            if this.eof {
                // A block cut short by EOF is dropped: h2 sees the stream end.
                return Poll::Ready(Ok(()));
            }
            let mut chunk = [0u8; 8192];
            let mut chunk = ReadBuf::new(&mut chunk);
            ready!(Pin::new(&mut this.inner).poll_read(cx, &mut chunk))?;
            if chunk.filled().is_empty() {
                this.eof = true;
            }
            this.raw.put_slice(chunk.filled());
            this.rewriter.feed(&mut this.raw, &mut this.ready)?;
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for LocalAuthority<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, data)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

enum Phase {
    /// This many bytes of the client preface still to pass through.
    Preface(usize),
    /// At a frame boundary.
    Head,
    /// This many bytes of a passed-through frame's payload still to come.
    Payload(usize),
}

/// A header block being collected from HEADERS and CONTINUATION frames.
struct Block {
    stream: u32,
    end_stream: bool,
    priority: Option<[u8; 5]>,
    fragment: Vec<u8>,
}

/// The client-to-server byte stream's rewriting, independent of I/O.
struct Rewriter {
    phase: Phase,
    decoder: fluke_hpack::Decoder<'static>,
    block: Option<Block>,
}

fn malformed(what: impl Into<String>) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("HTTP/2 client: {}", what.into()),
    )
}

impl Rewriter {
    fn new() -> Self {
        let mut decoder = fluke_hpack::Decoder::new();
        decoder.set_max_allowed_table_size(HEADER_TABLE_SIZE as usize);
        Rewriter {
            phase: Phase::Preface(PREFACE_LEN),
            decoder,
            block: None,
        }
    }

    /// Moves what it can from `raw` to `out`; an incomplete frame head or
    /// header frame stays in `raw` until more arrives.
    fn feed(&mut self, raw: &mut BytesMut, out: &mut BytesMut) -> io::Result<()> {
        loop {
            match self.phase {
                Phase::Preface(left) | Phase::Payload(left) => {
                    let n = left.min(raw.len());
                    if left > 0 && n == 0 {
                        return Ok(());
                    }
                    out.put_slice(&raw.split_to(n));
                    self.phase = match self.phase {
                        _ if n == left => Phase::Head,
                        Phase::Preface(_) => Phase::Preface(left - n),
                        _ => Phase::Payload(left - n),
                    };
                }
                Phase::Head => {
                    if raw.len() < FRAME_HEAD {
                        return Ok(());
                    }
                    let len = u32::from_be_bytes([0, raw[0], raw[1], raw[2]]) as usize;
                    let (kind, flags) = (raw[3], raw[4]);
                    let stream = u32::from_be_bytes([raw[5], raw[6], raw[7], raw[8]]) & !(1 << 31);
                    if kind != HEADERS && kind != CONTINUATION {
                        if self.block.is_some() {
                            return Err(malformed("a frame interrupted a header block"));
                        }
                        out.put_slice(&raw.split_to(FRAME_HEAD));
                        self.phase = Phase::Payload(len);
                        continue;
                    }
                    if len > MAX_FRAME {
                        return Err(malformed(format!("a {len}-byte header frame")));
                    }
                    if raw.len() < FRAME_HEAD + len {
                        return Ok(());
                    }
                    let frame = raw.split_to(FRAME_HEAD + len);
                    self.header_frame(kind, flags, stream, &frame[FRAME_HEAD..], out)?;
                }
            }
        }
    }

    fn header_frame(
        &mut self,
        kind: u8,
        flags: u8,
        stream: u32,
        payload: &[u8],
        out: &mut BytesMut,
    ) -> io::Result<()> {
        if kind == HEADERS {
            if self.block.is_some() {
                return Err(malformed("HEADERS inside a header block"));
            }
            let mut p = payload;
            let mut pad = 0;
            if flags & PADDED != 0 {
                let (&n, rest) = p
                    .split_first()
                    .ok_or_else(|| malformed("empty padded HEADERS"))?;
                pad = n as usize;
                p = rest;
            }
            let mut priority = None;
            if flags & PRIORITY != 0 {
                if p.len() < 5 {
                    return Err(malformed("short HEADERS priority"));
                }
                priority = Some([p[0], p[1], p[2], p[3], p[4]]);
                p = &p[5..];
            }
            if pad > p.len() {
                return Err(malformed("HEADERS padding longer than the frame"));
            }
            self.block = Some(Block {
                stream,
                end_stream: flags & END_STREAM != 0,
                priority,
                fragment: p[..p.len() - pad].to_vec(),
            });
        } else {
            match &mut self.block {
                Some(b) if b.stream == stream => {
                    if b.fragment.len() + payload.len() > MAX_BLOCK {
                        return Err(malformed(format!("a header block over {MAX_BLOCK} bytes")));
                    }
                    b.fragment.extend_from_slice(payload);
                }
                _ => return Err(malformed("CONTINUATION outside its header block")),
            }
        }
        if flags & END_HEADERS != 0 {
            if let Some(block) = self.block.take() {
                self.rewrite(block, out)?;
            }
        }
        Ok(())
    }

    /// Decodes `block`, fixes its authority and writes it re-encoded as one
    /// HEADERS frame and as many CONTINUATION frames as it needs.
    fn rewrite(&mut self, block: Block, out: &mut BytesMut) -> io::Result<()> {
        let mut fields: Vec<(Vec<u8>, Vec<u8>)> = Vec::new();
        let mut size = 0usize;
        self.decoder
            .decode_with_cb(&block.fragment, |name, value| {
                // Decoding goes on past the bound: the table must stay in step.
                size += name.len() + value.len() + 32;
                if size <= MAX_FIELDS_SIZE {
                    fields.push((name.into_owned(), value.into_owned()));
                }
            })
            .map_err(|e| malformed(format!("HPACK: {e:?}")))?;
        if size > MAX_FIELDS_SIZE {
            return Err(malformed(format!(
                "a header list over {MAX_FIELDS_SIZE} bytes"
            )));
        }
        let mut encoded = Vec::with_capacity(size);
        for (name, value) in &fields {
            let value = if name == b":authority" && !is_authority(value) {
                b"localhost".as_slice()
            } else {
                value
            };
            literal(&mut encoded, name, value);
        }
        let mut first = true;
        let mut rest = encoded.as_slice();
        loop {
            let (kind, mut flags, prefix) = if first {
                let end = if block.end_stream { END_STREAM } else { 0 };
                match &block.priority {
                    Some(p) => (HEADERS, end | PRIORITY, p.as_slice()),
                    None => (HEADERS, end, [].as_slice()),
                }
            } else {
                (CONTINUATION, 0, [].as_slice())
            };
            let take = rest.len().min(MAX_FRAME - prefix.len());
            let (chunk, tail) = rest.split_at(take);
            if tail.is_empty() {
                flags |= END_HEADERS;
            }
            let len = (prefix.len() + chunk.len()) as u32;
            out.put_slice(&len.to_be_bytes()[1..]);
            out.put_u8(kind);
            out.put_u8(flags);
            out.put_u32(block.stream);
            out.put_slice(prefix);
            out.put_slice(chunk);
            rest = tail;
            first = false;
            if rest.is_empty() {
                return Ok(());
            }
        }
    }
}

/// Whether h2 takes `value` as a request's authority.
fn is_authority(value: &[u8]) -> bool {
    tonic::codegen::http::uri::Authority::try_from(value).is_ok()
}

/// One field as "literal without indexing, new name" (RFC 7541 6.2.2),
/// no Huffman coding: it leaves the receiver's dynamic table alone.
fn literal(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.push(0);
    for s in [name, value] {
        fluke_hpack::encoder::encode_integer_into(s.len(), 7, 0, out)
            .expect("writing to a Vec cannot fail");
        out.extend_from_slice(s);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::codegen::http;

    const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
    type Fields = Vec<(Vec<u8>, Vec<u8>)>;

    fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let mut f = (payload.len() as u32).to_be_bytes()[1..].to_vec();
        f.extend_from_slice(&[kind, flags]);
        f.extend_from_slice(&stream.to_be_bytes());
        f.extend_from_slice(payload);
        f
    }

    /// A request's fields, `authority` as the client sends it.
    fn request(path: &str, authority: &str, extra: &[(&str, &str)]) -> Fields {
        let mut f = vec![
            (":method", "POST"),
            (":scheme", "http"),
            (":path", path),
            (":authority", authority),
            ("content-type", "application/grpc"),
        ];
        f.extend_from_slice(extra);
        f.into_iter()
            .map(|(n, v)| (n.as_bytes().to_vec(), v.as_bytes().to_vec()))
            .collect()
    }

    /// Every field as "literal with incremental indexing": the client's
    /// dynamic table gets them all, in order.
    fn indexing(fields: &Fields) -> Vec<u8> {
        let mut out = Vec::new();
        for (n, v) in fields {
            out.push(0x40);
            for s in [n, v] {
                fluke_hpack::encoder::encode_integer_into(s.len(), 7, 0, &mut out).unwrap();
                out.extend_from_slice(s);
            }
        }
        out
    }

    /// The `n` fields just added by [`indexing`], by dynamic-table index
    /// (the newest entry is 62).
    fn indexed(n: usize) -> Vec<u8> {
        (0..n).map(|i| 0x80 | (62 + n - 1 - i) as u8).collect()
    }

    type Block = (u8, u8, u32, Fields);

    /// What the rewritten byte stream carries: its header blocks decoded
    /// (frame kind, flags, stream, fields), and every other frame as is.
    fn parse(mut bytes: &[u8]) -> (Vec<Block>, Vec<Vec<u8>>) {
        assert_eq!(&bytes[..PREFACE_LEN], PREFACE);
        bytes = &bytes[PREFACE_LEN..];
        let mut dec = fluke_hpack::Decoder::new();
        let (mut blocks, mut others) = (Vec::new(), Vec::new());
        let mut open: Option<(u8, u8, u32, Vec<u8>)> = None;
        while !bytes.is_empty() {
            let len = u32::from_be_bytes([0, bytes[0], bytes[1], bytes[2]]) as usize;
            let (kind, flags) = (bytes[3], bytes[4]);
            let stream = u32::from_be_bytes(bytes[5..9].try_into().unwrap());
            let payload = &bytes[9..9 + len];
            assert!(len <= MAX_FRAME);
            match kind {
                HEADERS => {
                    assert!(open.is_none());
                    assert_eq!(flags & PADDED, 0, "no padding is written");
                    let skip = if flags & PRIORITY != 0 { 5 } else { 0 };
                    open = Some((kind, flags, stream, payload[skip..].to_vec()));
                }
                CONTINUATION => open.as_mut().unwrap().3.extend_from_slice(payload),
                _ => others.push(bytes[..9 + len].to_vec()),
            }
            if matches!(kind, HEADERS | CONTINUATION) && flags & END_HEADERS != 0 {
                let (kind, flags, stream, block) = open.take().unwrap();
                blocks.push((kind, flags, stream, dec.decode(&block).unwrap()));
            }
            bytes = &bytes[9 + len..];
        }
        assert!(open.is_none());
        // Literals only: the receiver's dynamic table is still empty.
        assert!(dec.decode(&[0x80 | 62]).is_err());
        (blocks, others)
    }

    fn rewrite_all(input: &[u8]) -> Vec<u8> {
        let mut rw = Rewriter::new();
        let (mut raw, mut out) = (BytesMut::from(input), BytesMut::new());
        rw.feed(&mut raw, &mut out).unwrap();
        assert!(raw.is_empty(), "{} bytes left unread", raw.len());
        out.to_vec()
    }

    fn value<'a>(fields: &'a Fields, name: &str) -> Option<&'a [u8]> {
        fields
            .iter()
            .find(|(n, _)| n == name.as_bytes())
            .map(|(_, v)| v.as_slice())
    }

    #[test]
    fn socket_paths_become_localhost_across_indexed_requests() {
        let mut input = PREFACE.to_vec();
        input.extend(frame(0x4, 0, 0, &[])); // SETTINGS
        let first = request("/a", "/run/berth/berth.sock", &[("x-trace", "one")]);
        input.extend(frame(HEADERS, END_HEADERS, 1, &indexing(&first)));
        input.extend(frame(0x0, END_STREAM, 1, b"\0\0\0\0\0")); // DATA
                                                                // The same request again, all by dynamic-table index.
        input.extend(frame(
            HEADERS,
            END_HEADERS | END_STREAM,
            3,
            &indexed(first.len()),
        ));
        let others = [
            "unix:/run/berth/berth.sock",
            "%2Frun%2Fberth%2Fberth.sock",
            "",
            "localhost:0",
            "[::1]:80",
        ];
        for (i, authority) in others.iter().enumerate() {
            let fields = request("/b", authority, &[]);
            input.extend(frame(
                HEADERS,
                END_HEADERS,
                5 + 2 * i as u32,
                &indexing(&fields),
            ));
        }
        let (blocks, others) = parse(&rewrite_all(&input));
        let authorities: Vec<&[u8]> = blocks
            .iter()
            .map(|b| value(&b.3, ":authority").unwrap())
            .collect();
        assert_eq!(
            authorities,
            [
                b"localhost".as_slice(),
                b"localhost",
                b"localhost",
                b"localhost",
                b"localhost",
                b"localhost:0",
                b"[::1]:80"
            ]
        );
        let mut expected = first.clone();
        expected[3].1 = b"localhost".to_vec();
        assert_eq!(blocks[0].3, expected);
        assert_eq!(blocks[1].3, expected);
        assert_eq!((blocks[0].1, blocks[0].2), (END_HEADERS, 1));
        assert_eq!((blocks[1].1, blocks[1].2), (END_HEADERS | END_STREAM, 3));
        assert_eq!(
            others,
            [
                frame(0x4, 0, 0, &[]),
                frame(0x0, END_STREAM, 1, b"\0\0\0\0\0")
            ]
        );
    }

    #[test]
    fn huffman_padding_priority_and_continuation_are_understood() {
        // RFC 7541 C.4.1: ":authority: www.example.com" Huffman-coded, with
        // incremental indexing; then a request referring to it (index 62).
        let huffman = [
            0x82, 0x86, 0x84, 0x41, 0x8c, 0xf1, 0xe3, 0xc2, 0xe5, 0xf2, 0x3a, 0x6b, 0xa0, 0xab,
            0x90, 0xf4, 0xff,
        ];
        let mut input = PREFACE.to_vec();
        // Padded and with a priority, the block split over two CONTINUATIONs.
        let mut payload = vec![3u8]; // pad length
        payload.extend_from_slice(&[0x80, 0, 0, 1, 200]); // exclusive on 1, weight
        payload.extend_from_slice(&huffman[..5]);
        payload.extend_from_slice(&[0, 0, 0]);
        input.extend(frame(HEADERS, PADDED | PRIORITY | END_STREAM, 1, &payload));
        input.extend(frame(CONTINUATION, 0, 1, &huffman[5..9]));
        input.extend(frame(CONTINUATION, END_HEADERS, 1, &huffman[9..]));
        input.extend(frame(HEADERS, END_HEADERS, 3, &[0x82, 0x86, 0x84, 0xbe]));
        let out = rewrite_all(&input);
        // The priority survives, right after the frame head.
        assert_eq!(
            &out[PREFACE_LEN + 9..PREFACE_LEN + 14],
            &[0x80, 0, 0, 1, 200]
        );
        let (blocks, _) = parse(&out);
        assert_eq!(blocks[0].1, PRIORITY | END_STREAM | END_HEADERS);
        for b in &blocks {
            assert_eq!(
                value(&b.3, ":authority"),
                Some(b"www.example.com".as_slice())
            );
            assert_eq!(value(&b.3, ":path"), Some(b"/".as_slice()));
        }
    }

    #[test]
    fn a_large_block_is_written_as_continuations_and_any_split_reads_the_same() {
        let big = "v".repeat(40_000);
        let fields = request("/big", "/run/berth/berth.sock", &[("x-big", &big)]);
        let block = indexing(&fields);
        let mut input = PREFACE.to_vec();
        let pieces: Vec<&[u8]> = block.chunks(MAX_FRAME).collect();
        for (i, piece) in pieces.iter().enumerate() {
            let kind = if i == 0 { HEADERS } else { CONTINUATION };
            let last = i + 1 == pieces.len();
            input.extend(frame(kind, if last { END_HEADERS } else { 0 }, 1, piece));
        }
        input.extend(frame(0x0, END_STREAM, 1, &[7u8; 100]));
        let whole = rewrite_all(&input);
        let (blocks, others) = parse(&whole);
        assert_eq!(value(&blocks[0].3, "x-big"), Some(big.as_bytes()));
        assert_eq!(
            value(&blocks[0].3, ":authority"),
            Some(b"localhost".as_slice())
        );
        assert_eq!(others, [frame(0x0, END_STREAM, 1, &[7u8; 100])]);
        // Bytes arriving one at a time give the same stream.
        let mut rw = Rewriter::new();
        let (mut raw, mut out) = (BytesMut::new(), BytesMut::new());
        for b in &input {
            raw.put_u8(*b);
            rw.feed(&mut raw, &mut out).unwrap();
        }
        assert!(raw.is_empty());
        assert!(out == whole, "byte-at-a-time output differs");
    }

    #[test]
    fn broken_framing_and_hpack_fail_the_connection() {
        let block = indexing(&request("/", "localhost", &[]));
        let cases: Vec<(&str, Vec<u8>)> = vec![
            (
                "interrupted",
                [frame(HEADERS, 0, 1, &block), frame(0x0, 0, 1, b"x")].concat(),
            ),
            (
                "stray CONTINUATION",
                frame(CONTINUATION, END_HEADERS, 1, &block),
            ),
            (
                "other stream",
                [
                    frame(HEADERS, 0, 1, &block),
                    frame(CONTINUATION, END_HEADERS, 3, &[]),
                ]
                .concat(),
            ),
            ("bad index", frame(HEADERS, END_HEADERS, 1, &[0xff, 0x7f])),
            (
                "table too large",
                frame(HEADERS, END_HEADERS, 1, &[0x3f, 0xe2, 0x1f, 0x82]),
            ),
            (
                "padding",
                frame(HEADERS, END_HEADERS | PADDED, 1, &[9, 0x82]),
            ),
            (
                "oversized frame",
                frame(HEADERS, END_HEADERS, 1, &vec![0; MAX_FRAME + 1]),
            ),
        ];
        for (what, bytes) in cases {
            let mut rw = Rewriter::new();
            let mut raw = BytesMut::from(&[PREFACE, &bytes[..]].concat()[..]);
            let e = rw.feed(&mut raw, &mut BytesMut::new()).unwrap_err();
            assert_eq!(e.kind(), io::ErrorKind::InvalidData, "{what}: {e}");
            assert!(e.to_string().starts_with("HTTP/2 client: "), "{what}: {e}");
        }
    }

    /// Through a real h2 server: without the rewrite h2 resets the streams
    /// (the bug); with it both requests arrive, the second decoded from
    /// dynamic-table references.
    #[tokio::test]
    async fn h2_serves_what_it_refused() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        for rewrite in [false, true] {
            let (client, server) = tokio::io::duplex(1 << 20);
            let served = tokio::spawn(async move {
                let io: Pin<Box<dyn AsyncReadWrite>> = if rewrite {
                    Box::pin(LocalAuthority::new(server))
                } else {
                    Box::pin(server)
                };
                let mut conn = h2::server::handshake(io).await.unwrap();
                let mut seen = Vec::new();
                while let Some(Ok((req, mut respond))) = conn.accept().await {
                    seen.push((
                        req.uri().authority().map(|a| a.to_string()),
                        req.headers().get("x-trace").cloned(),
                    ));
                    let _ = respond.send_response(http::Response::new(()), true);
                }
                seen
            });
            let (mut rd, mut wr) = tokio::io::split(client);
            let fields = request("/a", "/run/berth/berth.sock", &[("x-trace", "t")]);
            let mut input = PREFACE.to_vec();
            input.extend(frame(0x4, 0, 0, &[]));
            input.extend(frame(
                HEADERS,
                END_HEADERS | END_STREAM,
                1,
                &indexing(&fields),
            ));
            input.extend(frame(
                HEADERS,
                END_HEADERS | END_STREAM,
                3,
                &indexed(fields.len()),
            ));
            wr.write_all(&input).await.unwrap();
            // The server's frames until both streams are answered (HEADERS)
            // or reset (RST_STREAM); then hang up.
            let (mut got, mut ends) = (Vec::new(), Vec::new());
            while ends.len() < 2 {
                let mut chunk = [0u8; 4096];
                let n = rd.read(&mut chunk).await.unwrap();
                assert!(n > 0, "server closed early; streams ended: {ends:?}");
                got.extend_from_slice(&chunk[..n]);
                while got.len() >= 9 {
                    let len = u32::from_be_bytes([0, got[0], got[1], got[2]]) as usize;
                    if got.len() < 9 + len {
                        break;
                    }
                    let f: Vec<u8> = got.drain(..9 + len).collect();
                    let stream = u32::from_be_bytes(f[5..9].try_into().unwrap());
                    if stream != 0 && (f[3] == HEADERS || f[3] == 0x3) {
                        ends.push((stream, f[3]));
                    }
                }
            }
            drop((rd, wr));
            let seen = served.await.unwrap();
            if rewrite {
                assert_eq!(ends, [(1, HEADERS), (3, HEADERS)]);
                let t = Some(http::HeaderValue::from_static("t"));
                let localhost = Some("localhost".to_string());
                assert_eq!(seen, [(localhost.clone(), t.clone()), (localhost, t)]);
            } else {
                assert_eq!(ends, [(1, 0x3), (3, 0x3)], "h2 resets both streams");
                assert!(seen.is_empty());
            }
        }
    }

    trait AsyncReadWrite: AsyncRead + AsyncWrite + Send {}
    impl<T: AsyncRead + AsyncWrite + Send> AsyncReadWrite for T {}
}
