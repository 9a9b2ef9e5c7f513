//! SPDY/3 frame codec, as moby/spdystream (the library under client-go and
//! the kubelet) speaks it: draft-3 framing, 32-bit header-block lengths,
//! lower-cased header names, NUL-joined multi-values, and zlib header
//! compression primed with the SPDY/3 dictionary (one stream per direction,
//! sync-flushed after every header block).

use std::fmt;

use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress, Status};

/// The only SPDY version spdystream speaks.
pub const VERSION: u16 = 3;

pub const TYPE_SYN_STREAM: u16 = 1;
pub const TYPE_SYN_REPLY: u16 = 2;
pub const TYPE_RST_STREAM: u16 = 3;
pub const TYPE_SETTINGS: u16 = 4;
pub const TYPE_PING: u16 = 6;
pub const TYPE_GOAWAY: u16 = 7;
pub const TYPE_HEADERS: u16 = 8;
pub const TYPE_WINDOW_UPDATE: u16 = 9;

pub const FLAG_FIN: u8 = 0x01;
pub const FLAG_UNIDIRECTIONAL: u8 = 0x02;

/// RST_STREAM status codes (SPDY/3 §2.6.3).
pub const RST_PROTOCOL_ERROR: u32 = 1;
pub const RST_REFUSED_STREAM: u32 = 3;
/// What spdystream's `Stream.Reset()` sends.
pub const RST_CANCEL: u32 = 5;

/// The largest DATA payload a frame can carry (24-bit length).
pub const MAX_DATA_LENGTH: usize = (1 << 24) - 1;

/// Ordered header list. Names are lower-cased when encoded (spdystream
/// does `strings.ToLower(name)`), values are joined with NUL.
pub type Headers = Vec<(String, Vec<String>)>;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    SynStream {
        stream_id: u32,
        associated_to: u32,
        priority: u8,
        slot: u8,
        flags: u8,
        headers: Headers,
    },
    SynReply {
        stream_id: u32,
        flags: u8,
        headers: Headers,
    },
    RstStream {
        stream_id: u32,
        status: u32,
    },
    Settings {
        flags: u8,
        /// (flag, id, value)
        entries: Vec<(u8, u32, u32)>,
    },
    Ping {
        id: u32,
    },
    GoAway {
        last_good_stream_id: u32,
        status: u32,
    },
    Headers {
        stream_id: u32,
        flags: u8,
        headers: Headers,
    },
    WindowUpdate {
        stream_id: u32,
        delta: u32,
    },
    Data {
        stream_id: u32,
        flags: u8,
        data: Vec<u8>,
    },
}

impl Frame {
    /// The stream a frame belongs to, 0 for connection-level frames.
    pub fn stream_id(&self) -> u32 {
        match self {
            Frame::SynStream { stream_id, .. }
            | Frame::SynReply { stream_id, .. }
            | Frame::RstStream { stream_id, .. }
            | Frame::Headers { stream_id, .. }
            | Frame::WindowUpdate { stream_id, .. }
            | Frame::Data { stream_id, .. } => *stream_id,
            _ => 0,
        }
    }
}

/// A frame that could not be decoded; spdystream treats every one of these
/// as fatal for the whole connection (its `Serve` loop stops reading).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FrameError(pub String);

impl fmt::Display for FrameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for FrameError {}

fn err<T>(msg: impl Into<String>) -> Result<T, FrameError> {
    Err(FrameError(msg.into()))
}

/// Header names in SPDY/3's dictionary, each written as a 32-bit big-endian
/// length followed by the name (SPDY/3 §2.6.10.1).
const DICT_WORDS: &[&str] = &[
    "options",
    "head",
    "post",
    "put",
    "delete",
    "trace",
    "accept",
    "accept-charset",
    "accept-encoding",
    "accept-language",
    "accept-ranges",
    "age",
    "allow",
    "authorization",
    "cache-control",
    "connection",
    "content-base",
    "content-encoding",
    "content-language",
    "content-length",
    "content-location",
    "content-md5",
    "content-range",
    "content-type",
    "date",
    "etag",
    "expect",
    "expires",
    "from",
    "host",
    "if-match",
    "if-modified-since",
    "if-none-match",
    "if-range",
    "if-unmodified-since",
    "last-modified",
    "location",
    "max-forwards",
    "pragma",
    "proxy-authenticate",
    "proxy-authorization",
    "range",
    "referer",
    "retry-after",
    "server",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "user-agent",
    "vary",
    "via",
    "warning",
    "www-authenticate",
    "method",
    "get",
    "status",
    "200 OK",
    "version",
    "HTTP/1.1",
    "url",
    "public",
    "set-cookie",
    "keep-alive",
    "origin",
];

/// The dictionary's unprefixed tail: status codes and lines, dates, common
/// values.
const DICT_TAIL: &str = concat!(
    "100101201202205206300302303304305306307402405406407408409410411412413414415416417502504505",
    "203 Non-Authoritative Information204 No Content301 Moved Permanently400 Bad Request",
    "401 Unauthorized403 Forbidden404 Not Found500 Internal Server Error501 Not Implemented",
    "503 Service Unavailable",
    "Jan Feb Mar Apr May Jun Jul Aug Sept Oct Nov Dec 00:00:00 ",
    "Mon, Tue, Wed, Thu, Fri, Sat, Sun, GMT",
    "chunked,text/html,image/png,image/jpg,image/gif,application/xml,application/xhtml+xml,",
    "text/plain,text/javascript,public",
    "privatemax-age=gzip,deflate,sdchcharset=utf-8charset=iso-8859-1,utf-,*,enq=0.",
);

/// The SPDY/3 header-compression dictionary (1423 bytes).
pub fn dictionary() -> &'static [u8] {
    static DICT: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();
    DICT.get_or_init(|| {
        let mut d = Vec::with_capacity(1423);
        for w in DICT_WORDS {
            d.extend_from_slice(&(w.len() as u32).to_be_bytes());
            d.extend_from_slice(w.as_bytes());
        }
        d.extend_from_slice(DICT_TAIL.as_bytes());
        d
    })
}

/// The sending half of header compression: Go's
/// `zlib.NewWriterLevelDict(buf, zlib.BestCompression, dict)` followed by a
/// `Flush()` (Z_SYNC_FLUSH) per header block.
pub struct HeaderCompressor {
    z: Compress,
}

impl Default for HeaderCompressor {
    fn default() -> Self {
        Self::new()
    }
}

impl HeaderCompressor {
    pub fn new() -> Self {
        let mut z = Compress::new(Compression::best(), true);
        z.set_dictionary(dictionary())
            .expect("zlib accepts the SPDY dictionary");
        HeaderCompressor { z }
    }

    pub fn compress(&mut self, block: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(block.len() + 64);
        let start = self.z.total_in();
        loop {
            if out.len() == out.capacity() {
                out.reserve(256);
            }
            let consumed = (self.z.total_in() - start) as usize;
            self.z
                .compress_vec(&block[consumed..], &mut out, FlushCompress::Sync)
                .expect("deflate of an in-memory buffer");
            let consumed = (self.z.total_in() - start) as usize;
            // zlib's contract: the flush is complete once it leaves output
            // space unused.
            if consumed == block.len() && out.len() < out.capacity() {
                return out;
            }
        }
    }
}

/// The receiving half: one inflate stream for the whole connection, which
/// asks for the dictionary after the zlib header of the first block.
pub struct HeaderDecompressor {
    z: Decompress,
}

impl Default for HeaderDecompressor {
    fn default() -> Self {
        Self::new()
    }
}

impl HeaderDecompressor {
    pub fn new() -> Self {
        HeaderDecompressor {
            z: Decompress::new(true),
        }
    }

    pub fn decompress(&mut self, data: &[u8]) -> Result<Vec<u8>, FrameError> {
        let mut out = Vec::with_capacity(data.len() * 4 + 256);
        let start = self.z.total_in();
        loop {
            if out.len() == out.capacity() {
                out.reserve(out.capacity().max(256));
            }
            let before_in = self.z.total_in();
            let before_out = out.len();
            let consumed = (before_in - start) as usize;
            match self
                .z
                .decompress_vec(&data[consumed..], &mut out, FlushDecompress::Sync)
            {
                Ok(Status::StreamEnd) => {
                    return err("header zlib stream ended (SPDY never finishes it)")
                }
                Ok(_) => {}
                Err(e) if e.needs_dictionary().is_some() => {
                    self.z.set_dictionary(dictionary()).map_err(|e| {
                        FrameError(format!("header block wants another dictionary: {e}"))
                    })?;
                    continue;
                }
                Err(e) => return err(format!("header block does not inflate: {e}")),
            }
            let consumed = (self.z.total_in() - start) as usize;
            if consumed == data.len() && out.len() < out.capacity() {
                return Ok(out);
            }
            if self.z.total_in() == before_in && out.len() == before_out {
                return err("header block is truncated");
            }
        }
    }
}

/// Serialises a header block exactly as spdystream's `writeHeaderValueBlock`
/// does, before compression.
pub fn encode_header_block(headers: &Headers) -> Vec<u8> {
    let mut b = Vec::new();
    b.extend_from_slice(&(headers.len() as u32).to_be_bytes());
    for (name, values) in headers {
        let name = name.to_ascii_lowercase();
        b.extend_from_slice(&(name.len() as u32).to_be_bytes());
        b.extend_from_slice(name.as_bytes());
        let v = values.join("\0");
        b.extend_from_slice(&(v.len() as u32).to_be_bytes());
        b.extend_from_slice(v.as_bytes());
    }
    b
}

/// Parses a decompressed header block. Like spdystream's
/// `parseHeaderValueBlock`, an upper-case or repeated name is an error, and
/// spdystream makes every such error fatal for the connection.
pub fn decode_header_block(b: &[u8]) -> Result<Headers, FrameError> {
    let mut r = Reader { b, pos: 0 };
    let n = r.u32()?;
    let mut headers: Headers = Vec::new();
    for _ in 0..n {
        let len = r.u32()? as usize;
        let name = r.bytes(len)?;
        let name = String::from_utf8(name.to_vec())
            .map_err(|_| FrameError("header name is not UTF-8".into()))?;
        if name != name.to_ascii_lowercase() {
            return err(format!(
                "header {name:?} was not lowercased (spdystream rejects the frame)"
            ));
        }
        if headers.iter().any(|(n, _)| *n == name) {
            return err(format!("multiple headers named {name:?}"));
        }
        let len = r.u32()? as usize;
        let value = String::from_utf8(r.bytes(len)?.to_vec())
            .map_err(|_| FrameError("header value is not UTF-8".into()))?;
        let values = value.split('\0').map(str::to_string).collect();
        headers.push((name, values));
    }
    if r.pos != b.len() {
        return err(format!(
            "{} bytes after the header block (they would corrupt the next block in spdystream)",
            b.len() - r.pos
        ));
    }
    Ok(headers)
}

struct Reader<'a> {
    b: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn bytes(&mut self, n: usize) -> Result<&'a [u8], FrameError> {
        if self.b.len() - self.pos < n {
            return err("short frame or header block");
        }
        let s = &self.b[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn u32(&mut self) -> Result<u32, FrameError> {
        let s = self.bytes(4)?;
        Ok(u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
    }

    fn u8(&mut self) -> Result<u8, FrameError> {
        Ok(self.bytes(1)?[0])
    }
}

fn control_header(out: &mut Vec<u8>, ty: u16, flags: u8, len: usize) {
    out.extend_from_slice(&(0x8000 | VERSION).to_be_bytes());
    out.extend_from_slice(&ty.to_be_bytes());
    out.extend_from_slice(&(((flags as u32) << 24) | len as u32).to_be_bytes());
}

/// Appends the wire form of `frame` to `out`, compressing header blocks with
/// `z` (so frames must be encoded in the order they are written).
pub fn encode(frame: &Frame, z: &mut HeaderCompressor, out: &mut Vec<u8>) {
    match frame {
        Frame::SynStream {
            stream_id,
            associated_to,
            priority,
            slot,
            flags,
            headers,
        } => {
            let block = z.compress(&encode_header_block(headers));
            control_header(out, TYPE_SYN_STREAM, *flags, block.len() + 10);
            out.extend_from_slice(&stream_id.to_be_bytes());
            out.extend_from_slice(&associated_to.to_be_bytes());
            out.push(priority << 5);
            out.push(*slot);
            out.extend_from_slice(&block);
        }
        // SYN_REPLY and HEADERS share a layout: stream id, header block.
        Frame::SynReply {
            stream_id,
            flags,
            headers,
        }
        | Frame::Headers {
            stream_id,
            flags,
            headers,
        } => {
            let kind = if matches!(frame, Frame::SynReply { .. }) {
                TYPE_SYN_REPLY
            } else {
                TYPE_HEADERS
            };
            let block = z.compress(&encode_header_block(headers));
            control_header(out, kind, *flags, block.len() + 4);
            out.extend_from_slice(&stream_id.to_be_bytes());
            out.extend_from_slice(&block);
        }
        Frame::RstStream { stream_id, status } => {
            control_header(out, TYPE_RST_STREAM, 0, 8);
            out.extend_from_slice(&stream_id.to_be_bytes());
            out.extend_from_slice(&status.to_be_bytes());
        }
        Frame::Settings { flags, entries } => {
            control_header(out, TYPE_SETTINGS, *flags, 4 + entries.len() * 8);
            out.extend_from_slice(&(entries.len() as u32).to_be_bytes());
            for (flag, id, value) in entries {
                out.extend_from_slice(&(((*flag as u32) << 24) | (id & 0xff_ffff)).to_be_bytes());
                out.extend_from_slice(&value.to_be_bytes());
            }
        }
        Frame::Ping { id } => {
            control_header(out, TYPE_PING, 0, 4);
            out.extend_from_slice(&id.to_be_bytes());
        }
        Frame::GoAway {
            last_good_stream_id,
            status,
        } => {
            control_header(out, TYPE_GOAWAY, 0, 8);
            out.extend_from_slice(&last_good_stream_id.to_be_bytes());
            out.extend_from_slice(&status.to_be_bytes());
        }
        Frame::WindowUpdate { stream_id, delta } => {
            control_header(out, TYPE_WINDOW_UPDATE, 0, 8);
            out.extend_from_slice(&stream_id.to_be_bytes());
            out.extend_from_slice(&delta.to_be_bytes());
        }
        Frame::Data {
            stream_id,
            flags,
            data,
        } => {
            assert!(data.len() <= MAX_DATA_LENGTH, "DATA payload too large");
            out.extend_from_slice(&(stream_id & 0x7fff_ffff).to_be_bytes());
            out.extend_from_slice(&(((*flags as u32) << 24) | data.len() as u32).to_be_bytes());
            out.extend_from_slice(data);
        }
    }
}

/// A decoded frame plus what was odd about it but not fatal.
#[derive(Debug)]
pub struct Decoded {
    pub frame: Frame,
    /// Bytes of `buf` the frame occupied.
    pub len: usize,
    /// The version field, when not 3 (spdystream does not check it).
    pub odd_version: Option<u16>,
}

/// Decodes one frame from the front of `buf`; `Ok(None)` when `buf` does not
/// yet hold a whole frame. Unlike spdystream, which reads fixed fields
/// without looking at the length, a length that disagrees with the frame
/// type is reported (spdystream would lose framing on it).
pub fn decode(buf: &[u8], z: &mut HeaderDecompressor) -> Result<Option<Decoded>, FrameError> {
    if buf.len() < 8 {
        return Ok(None);
    }
    let w0 = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
    let w1 = u32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]);
    let flags = (w1 >> 24) as u8;
    let len = (w1 & 0xff_ffff) as usize;
    if buf.len() < 8 + len {
        return Ok(None);
    }
    let payload = &buf[8..8 + len];
    if w0 & 0x8000_0000 == 0 {
        let stream_id = w0 & 0x7fff_ffff;
        if stream_id == 0 {
            return err("DATA frame on stream 0");
        }
        return Ok(Some(Decoded {
            frame: Frame::Data {
                stream_id,
                flags,
                data: payload.to_vec(),
            },
            len: 8 + len,
            odd_version: None,
        }));
    }
    let version = ((w0 >> 16) & 0x7fff) as u16;
    let ty = (w0 & 0xffff) as u16;
    let mut r = Reader { b: payload, pos: 0 };
    let exact = |want: usize| -> Result<(), FrameError> {
        if len != want {
            return err(format!(
                "control frame type {ty} has length {len}, expected {want}"
            ));
        }
        Ok(())
    };
    let frame = match ty {
        TYPE_SYN_STREAM => {
            if len < 10 {
                return err("SYN_STREAM shorter than 10 bytes");
            }
            let stream_id = r.u32()? & 0x7fff_ffff;
            let associated_to = r.u32()? & 0x7fff_ffff;
            let priority = r.u8()? >> 5;
            let slot = r.u8()?;
            let headers = decode_header_block(&z.decompress(&payload[10..])?)?;
            if stream_id == 0 {
                return err("SYN_STREAM on stream 0");
            }
            Frame::SynStream {
                stream_id,
                associated_to,
                priority,
                slot,
                flags,
                headers,
            }
        }
        TYPE_SYN_REPLY | TYPE_HEADERS => {
            if len < 4 {
                return err("SYN_REPLY/HEADERS shorter than 4 bytes");
            }
            let stream_id = r.u32()? & 0x7fff_ffff;
            let headers = decode_header_block(&z.decompress(&payload[4..])?)?;
            if stream_id == 0 {
                return err("SYN_REPLY/HEADERS on stream 0");
            }
            if ty == TYPE_SYN_REPLY {
                Frame::SynReply {
                    stream_id,
                    flags,
                    headers,
                }
            } else {
                Frame::Headers {
                    stream_id,
                    flags,
                    headers,
                }
            }
        }
        TYPE_RST_STREAM => {
            exact(8)?;
            let stream_id = r.u32()? & 0x7fff_ffff;
            let status = r.u32()?;
            if status == 0 {
                return err("RST_STREAM with status 0");
            }
            if stream_id == 0 {
                return err("RST_STREAM on stream 0");
            }
            Frame::RstStream { stream_id, status }
        }
        TYPE_SETTINGS => {
            let n = r.u32()? as usize;
            exact(4 + n * 8)?;
            let mut entries = Vec::with_capacity(n);
            for _ in 0..n {
                let fid = r.u32()?;
                entries.push(((fid >> 24) as u8, fid & 0xff_ffff, r.u32()?));
            }
            Frame::Settings { flags, entries }
        }
        TYPE_PING => {
            exact(4)?;
            let id = r.u32()?;
            if id == 0 {
                return err("PING with id 0");
            }
            if flags != 0 {
                return err("PING with flags");
            }
            Frame::Ping { id }
        }
        TYPE_GOAWAY => {
            exact(8)?;
            if flags != 0 {
                return err("GOAWAY with flags");
            }
            Frame::GoAway {
                last_good_stream_id: r.u32()? & 0x7fff_ffff,
                status: r.u32()?,
            }
        }
        TYPE_WINDOW_UPDATE => {
            exact(8)?;
            Frame::WindowUpdate {
                stream_id: r.u32()? & 0x7fff_ffff,
                delta: r.u32()? & 0x7fff_ffff,
            }
        }
        other => return err(format!("unknown control frame type {other}")),
    };
    Ok(Some(Decoded {
        frame,
        len: 8 + len,
        odd_version: (version != VERSION).then_some(version),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(pairs: &[(&str, &str)]) -> Headers {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), vec![v.to_string()]))
            .collect()
    }

    fn adler32(b: &[u8]) -> u32 {
        let (mut a, mut s) = (1u32, 0u32);
        for &x in b {
            a = (a + x as u32) % 65521;
            s = (s + a) % 65521;
        }
        (s << 16) | a
    }

    #[test]
    fn dictionary_is_the_spdy3_one() {
        let d = dictionary();
        assert_eq!(d.len(), 1423);
        // The DICTID every SPDY/3 peer puts in its first zlib header.
        assert_eq!(adler32(d), 0xe3c6_a7c2);
        assert_eq!(&d[..11], b"\0\0\0\x07options");
        assert!(d.ends_with(b",*,enq=0."));
    }

    #[test]
    fn compressed_stream_names_the_dictionary() {
        let mut c = HeaderCompressor::new();
        let out = c.compress(&encode_header_block(&h(&[("streamtype", "error")])));
        // CMF 0x78 (deflate, 32K window); FLG with FDICT and level 3 as Go's
        // BestCompression writes; then the dictionary's Adler-32.
        assert_eq!(out[0], 0x78);
        assert_eq!(out[1] & 0x20, 0x20, "FDICT set");
        assert_eq!(out[1] >> 6, 3, "FLEVEL = best compression");
        assert_eq!(((out[0] as u16) << 8 | out[1] as u16) % 31, 0);
        assert_eq!(&out[2..6], &0xe3c6_a7c2u32.to_be_bytes());
        // A sync flush ends with an empty stored block.
        assert!(out.ends_with(&[0x00, 0x00, 0xff, 0xff]));
    }

    #[test]
    fn header_compression_round_trips_across_blocks() {
        let mut c = HeaderCompressor::new();
        let mut d = HeaderDecompressor::new();
        let blocks = [
            h(&[("streamtype", "error")]),
            h(&[("streamtype", "stdin")]),
            h(&[("streamtype", "data"), ("port", "8080"), ("requestid", "0")]),
            vec![],
            vec![("x-multi".to_string(), vec!["a".into(), "b".into()])],
        ];
        for block in &blocks {
            let raw = encode_header_block(block);
            let z = c.compress(&raw);
            assert_eq!(d.decompress(&z).unwrap(), raw);
            assert_eq!(&decode_header_block(&raw).unwrap(), block);
        }
    }

    #[test]
    fn names_are_lowercased_and_values_nul_joined() {
        let raw = encode_header_block(&vec![(
            "StreamType".to_string(),
            vec!["a".into(), "b".into()],
        )]);
        assert_eq!(raw, b"\0\0\0\x01\0\0\0\x0astreamtype\0\0\0\x03a\0b");
    }

    #[test]
    fn decoding_rejects_uppercase_and_duplicate_names() {
        let upper = b"\0\0\0\x01\0\0\0\x01X\0\0\0\x00";
        assert!(decode_header_block(upper).is_err());
        let dup = b"\0\0\0\x02\0\0\0\x01x\0\0\0\x00\0\0\0\x01x\0\0\0\x00";
        assert!(decode_header_block(dup).is_err());
    }

    #[test]
    fn every_frame_round_trips() {
        let frames = vec![
            Frame::SynStream {
                stream_id: 1,
                associated_to: 0,
                priority: 0,
                slot: 0,
                flags: 0,
                headers: h(&[("streamtype", "error")]),
            },
            Frame::SynStream {
                stream_id: 3,
                associated_to: 1,
                priority: 7,
                slot: 2,
                flags: FLAG_FIN | FLAG_UNIDIRECTIONAL,
                headers: h(&[("streamtype", "stdout")]),
            },
            Frame::SynReply {
                stream_id: 1,
                flags: FLAG_FIN,
                headers: vec![],
            },
            Frame::Headers {
                stream_id: 5,
                flags: 0,
                headers: h(&[("a", "b")]),
            },
            Frame::RstStream {
                stream_id: 7,
                status: RST_CANCEL,
            },
            Frame::Settings {
                flags: 1,
                entries: vec![(1, 4, 100), (0, 7, 65536)],
            },
            Frame::Ping { id: 1 },
            Frame::GoAway {
                last_good_stream_id: 0,
                status: 0,
            },
            Frame::WindowUpdate {
                stream_id: 1,
                delta: 4096,
            },
            Frame::Data {
                stream_id: 1,
                flags: FLAG_FIN,
                data: b"hello".to_vec(),
            },
            Frame::Data {
                stream_id: 9,
                flags: 0,
                data: vec![],
            },
        ];
        let mut c = HeaderCompressor::new();
        let mut wire = Vec::new();
        for f in &frames {
            encode(f, &mut c, &mut wire);
        }
        let mut d = HeaderDecompressor::new();
        let mut pos = 0;
        for f in &frames {
            // Every prefix short of a whole frame asks for more bytes.
            let got = decode(&wire[pos..], &mut d).unwrap().unwrap();
            assert_eq!(&got.frame, f);
            assert!(got.odd_version.is_none());
            pos += got.len;
        }
        assert_eq!(pos, wire.len());
        assert!(decode(&wire[pos..], &mut d).unwrap().is_none());
    }

    #[test]
    fn partial_frames_wait_for_more() {
        let mut c = HeaderCompressor::new();
        let mut wire = Vec::new();
        encode(&Frame::Ping { id: 3 }, &mut c, &mut wire);
        let mut d = HeaderDecompressor::new();
        for n in 0..wire.len() {
            assert!(decode(&wire[..n], &mut d).unwrap().is_none());
        }
    }

    #[test]
    fn fixed_frames_match_the_spec_bytes() {
        let mut c = HeaderCompressor::new();
        let mut out = Vec::new();
        encode(
            &Frame::RstStream {
                stream_id: 3,
                status: RST_CANCEL,
            },
            &mut c,
            &mut out,
        );
        assert_eq!(
            out,
            [0x80, 0x03, 0x00, 0x03, 0x00, 0x00, 0x00, 0x08, 0, 0, 0, 3, 0, 0, 0, 5]
        );
        out.clear();
        encode(
            &Frame::Data {
                stream_id: 5,
                flags: FLAG_FIN,
                data: vec![],
            },
            &mut c,
            &mut out,
        );
        assert_eq!(out, [0, 0, 0, 5, 0x01, 0, 0, 0]);
    }

    /// A SYN_REPLY built by hand from the spec: header block compressed with
    /// a fresh dictionary-primed zlib stream, as a Go server would send
    /// `stream.SendReply(http.Header{}, false)`.
    #[test]
    fn decodes_a_hand_built_syn_reply() {
        let mut z = Compress::new(Compression::best(), true);
        z.set_dictionary(dictionary()).unwrap();
        let mut block = Vec::with_capacity(64);
        z.compress_vec(&[0, 0, 0, 0], &mut block, FlushCompress::Sync)
            .unwrap();
        let mut wire = vec![0x80, 0x03, 0x00, 0x02];
        wire.extend_from_slice(&((block.len() as u32 + 4) | (1 << 24)).to_be_bytes());
        wire.extend_from_slice(&[0, 0, 0, 1]);
        wire.extend_from_slice(&block);
        // A PING right behind it, as 12 literal bytes.
        wire.extend_from_slice(&[0x80, 0x03, 0x00, 0x06, 0, 0, 0, 4, 0, 0, 0, 2]);
        let mut d = HeaderDecompressor::new();
        let first = decode(&wire, &mut d).unwrap().unwrap();
        assert_eq!(
            first.frame,
            Frame::SynReply {
                stream_id: 1,
                flags: FLAG_FIN,
                headers: vec![]
            }
        );
        let second = decode(&wire[first.len..], &mut d).unwrap().unwrap();
        assert_eq!(second.frame, Frame::Ping { id: 2 });
        assert_eq!(first.len + second.len, wire.len());
    }

    #[test]
    fn malformed_control_frames_are_errors() {
        let mut d = HeaderDecompressor::new();
        // Unknown type 10 (CREDENTIAL): spdystream has no constructor for it.
        assert!(decode(&[0x80, 3, 0, 10, 0, 0, 0, 0], &mut d).is_err());
        // PING with a 5-byte payload.
        assert!(decode(&[0x80, 3, 0, 6, 0, 0, 0, 5, 0, 0, 0, 1, 0], &mut d).is_err());
        // RST_STREAM with status 0.
        assert!(decode(&[0x80, 3, 0, 3, 0, 0, 0, 8, 0, 0, 0, 1, 0, 0, 0, 0], &mut d).is_err());
        // Version 2 is decoded but flagged.
        let got = decode(&[0x80, 2, 0, 6, 0, 0, 0, 4, 0, 0, 0, 1], &mut d)
            .unwrap()
            .unwrap();
        assert_eq!(got.odd_version, Some(2));
    }
}
