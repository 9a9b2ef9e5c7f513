//! Session tests: a minimal client built on the codec talks to `serve`
//! over an in-memory duplex pipe. Timeouts only guard against hangs.

use std::future::Future;
use std::io;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream, ReadHalf, WriteHalf};
use tokio::sync::mpsc;

use super::frame::{Frame, FrameDecoder, FrameEncoder, GoAwayStatus, Headers, RstStatus, Setting};
use super::{serve, Connection, Stream, MAX_DATA_FRAME};

const GUARD: Duration = Duration::from_secs(10);

async fn guard<F: Future>(what: &str, fut: F) -> F::Output {
    match tokio::time::timeout(GUARD, fut).await {
        Ok(out) => out,
        Err(_) => panic!("timed out waiting for {what}"),
    }
}

fn h(pairs: &[(&str, &str)]) -> Headers {
    pairs
        .iter()
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect()
}

/// The client side: raw frames through our own codec, one compression
/// context per direction like a real peer.
struct Client {
    rd: ReadHalf<DuplexStream>,
    wr: WriteHalf<DuplexStream>,
    enc: FrameEncoder,
    dec: FrameDecoder,
    buf: BytesMut,
}

impl Client {
    async fn send(&mut self, frame: Frame) {
        let mut out = BytesMut::new();
        self.enc.encode(&frame, &mut out).expect("encode");
        self.send_raw(&out).await;
    }

    async fn send_raw(&mut self, bytes: &[u8]) {
        guard("client write", self.wr.write_all(bytes))
            .await
            .expect("client write");
    }

    async fn open(&mut self, stream_id: u32, headers: &[(&str, &str)]) {
        self.send(syn_stream(stream_id, headers)).await;
    }

    async fn data(&mut self, stream_id: u32, data: &[u8], fin: bool) {
        self.send(Frame::Data {
            stream_id,
            fin,
            data: Bytes::copy_from_slice(data),
        })
        .await;
    }

    /// The next frame from the server; `None` at end of stream.
    async fn recv(&mut self) -> Option<Frame> {
        loop {
            if let Some(frame) = self.dec.decode(&mut self.buf).expect("server frame") {
                return Some(frame);
            }
            let n = guard("a server frame", self.rd.read_buf(&mut self.buf))
                .await
                .expect("client read");
            if n == 0 {
                assert!(self.buf.is_empty(), "EOF inside a frame");
                return None;
            }
        }
    }

    async fn expect(&mut self) -> Frame {
        self.recv().await.expect("a frame, got EOF")
    }

    async fn expect_eof(&mut self) {
        if let Some(frame) = self.recv().await {
            panic!("expected EOF, got {frame:?}");
        }
    }

    /// A PING round trip: proves the server processed everything sent
    /// before it, and returns the frames the server sent in between.
    async fn sync(&mut self, id: u32) -> Vec<Frame> {
        self.send(Frame::Ping { id }).await;
        let mut before = Vec::new();
        loop {
            match self.expect().await {
                Frame::Ping { id: got } if got == id => return before,
                other => before.push(other),
            }
        }
    }
}

fn syn_stream(stream_id: u32, headers: &[(&str, &str)]) -> Frame {
    Frame::SynStream {
        stream_id,
        associated_id: 0,
        priority: 0,
        slot: 0,
        fin: false,
        unidirectional: false,
        headers: h(headers),
    }
}

fn reply(stream_id: u32) -> Frame {
    Frame::SynReply {
        stream_id,
        fin: false,
        headers: vec![],
    }
}

fn fin(stream_id: u32) -> Frame {
    Frame::Data {
        stream_id,
        fin: true,
        data: Bytes::new(),
    }
}

fn rst(stream_id: u32, status: RstStatus) -> Frame {
    Frame::RstStream { stream_id, status }
}

fn start_with_buffer(size: usize) -> (Client, Connection, mpsc::Receiver<Stream>) {
    let (client_io, server_io) = tokio::io::duplex(size);
    let (conn, streams) = serve(server_io);
    let (rd, wr) = tokio::io::split(client_io);
    let client = Client {
        rd,
        wr,
        enc: FrameEncoder::new().expect("encoder"),
        dec: FrameDecoder::new(),
        buf: BytesMut::new(),
    };
    (client, conn, streams)
}

fn start() -> (Client, Connection, mpsc::Receiver<Stream>) {
    start_with_buffer(64 * 1024)
}

async fn accept(streams: &mut mpsc::Receiver<Stream>) -> Stream {
    guard("a new stream", streams.recv())
        .await
        .expect("stream channel closed")
}

async fn read(stream: &mut Stream) -> Option<Bytes> {
    guard("stream data", stream.read()).await
}

#[tokio::test]
async fn accepts_streams_with_their_headers_and_replies() {
    let (mut client, _conn, mut streams) = start();
    client.open(1, &[("streamtype", "error")]).await;
    client
        .open(
            3,
            &[("streamtype", "stdout"), ("x-multi", "a"), ("x-multi", "b")],
        )
        .await;

    let error = accept(&mut streams).await;
    assert_eq!(error.id, 1);
    assert_eq!(error.header("streamtype"), Some("error"));
    assert_eq!(error.header("StreamType"), Some("error"));
    let stdout = accept(&mut streams).await;
    assert_eq!(stdout.id, 3);
    assert_eq!(stdout.header("streamtype"), Some("stdout"));
    assert_eq!(stdout.header("x-multi"), Some("a"));
    assert_eq!(
        stdout.headers,
        h(&[("streamtype", "stdout"), ("x-multi", "a"), ("x-multi", "b")])
    );
    assert_eq!(stdout.header("missing"), None);

    stdout.reply();
    error.reply();
    error.reply(); // idempotent
    assert_eq!(client.expect().await, reply(3));
    assert_eq!(client.expect().await, reply(1));
    assert_eq!(client.sync(1).await, vec![], "a second reply was sent");
}

#[tokio::test]
async fn client_data_and_fin_reach_the_stream() {
    let (mut client, _conn, mut streams) = start();
    client.open(1, &[("streamtype", "stdin")]).await;
    // Data may arrive before the stream is even accepted or replied to.
    client.data(1, b"hello", false).await;
    client.data(1, b"", false).await; // empty frames are not surfaced
    client.data(1, b" world", true).await;

    let mut stream = accept(&mut streams).await;
    assert_eq!(read(&mut stream).await.as_deref(), Some(&b"hello"[..]));
    assert_eq!(read(&mut stream).await.as_deref(), Some(&b" world"[..]));
    assert_eq!(read(&mut stream).await, None);
    assert_eq!(read(&mut stream).await, None);

    // Our side stays open after the peer's FIN.
    stream.writer().write(b"still here").await.unwrap();
    assert_eq!(client.expect().await, reply(1));
    assert_eq!(
        client.expect().await,
        Frame::Data {
            stream_id: 1,
            fin: false,
            data: Bytes::from_static(b"still here"),
        }
    );
}

#[tokio::test]
async fn server_writes_are_split_replied_and_finished() {
    let (mut client, _conn, mut streams) = start();
    client.open(1, &[("streamtype", "stdout")]).await;
    let stream = accept(&mut streams).await;
    let writer = stream.writer();

    let payload: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    let send = tokio::spawn({
        let writer = writer.clone();
        let payload = payload.clone();
        async move {
            // No explicit reply: the first write sends SYN_REPLY first.
            writer.write(&payload).await?;
            writer.close().await?;
            writer.close().await // idempotent
        }
    });

    assert_eq!(client.expect().await, reply(1));
    let mut got = Vec::new();
    loop {
        match client.expect().await {
            Frame::Data {
                stream_id: 1,
                fin,
                data,
            } => {
                assert!(data.len() <= MAX_DATA_FRAME, "{} byte frame", data.len());
                got.extend_from_slice(&data);
                if fin {
                    assert!(data.is_empty(), "FIN comes as its own empty frame");
                    break;
                }
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(got, payload);
    guard("writer task", send).await.unwrap().unwrap();

    let err = writer.write(b"late").await.unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::BrokenPipe);
    assert!(writer.write(b"").await.is_err());
    assert_eq!(client.sync(1).await, vec![], "nothing after FIN");
}

#[tokio::test]
async fn client_pings_are_echoed() {
    let (mut client, _conn, _streams) = start();
    client.send(Frame::Ping { id: 1 }).await;
    assert_eq!(client.expect().await, Frame::Ping { id: 1 });
    // An even id would be a reply to a server ping: not echoed.
    client.send(Frame::Ping { id: 2 }).await;
    client.send(Frame::Ping { id: 0x7fff_ffff }).await;
    assert_eq!(client.expect().await, Frame::Ping { id: 0x7fff_ffff });
}

#[tokio::test]
async fn client_reset_ends_the_stream() {
    let (mut client, _conn, mut streams) = start();
    client.open(1, &[("streamtype", "stdin")]).await;
    client.data(1, b"buffered", false).await;
    let mut stream = accept(&mut streams).await;
    stream.reply();
    client.send(rst(1, RstStatus::Cancel)).await;

    assert_eq!(read(&mut stream).await.as_deref(), Some(&b"buffered"[..]));
    assert_eq!(read(&mut stream).await, None);
    let err = stream.writer().write(b"x").await.unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::ConnectionReset);
    assert!(stream.writer().close().await.is_err());

    // Frames for the reset stream are dropped; the connection goes on and
    // we never reset a stream the peer reset.
    client.data(1, b"in flight", true).await;
    drop(stream);
    assert_eq!(client.sync(1).await, vec![reply(1)]);
}

#[tokio::test]
async fn server_reset_and_abandoned_streams_send_rst_cancel() {
    let (mut client, _conn, mut streams) = start();
    client.open(1, &[("streamtype", "error")]).await;
    client.open(3, &[("streamtype", "stdout")]).await;
    client.open(5, &[("streamtype", "stdin")]).await;
    let mut first = accept(&mut streams).await;
    let second = accept(&mut streams).await;
    let third = accept(&mut streams).await;

    first.reset();
    assert_eq!(client.expect().await, rst(1, RstStatus::Cancel));
    assert_eq!(read(&mut first).await, None);
    assert_eq!(
        first.writer().write(b"x").await.unwrap_err().kind(),
        io::ErrorKind::ConnectionReset
    );
    first.reset(); // once only
    drop(first);

    // Dropped without closing: the peer must not wait forever.
    let (reader, writer) = second.into_split();
    drop(writer);
    assert_eq!(client.sync(1).await, vec![], "a live reader keeps it open");
    drop(reader);
    assert_eq!(client.expect().await, rst(3, RstStatus::Cancel));

    // Dropped after a clean half-close: no reset.
    third.writer().close().await.unwrap();
    drop(third);
    assert_eq!(client.sync(3).await, vec![reply(5), fin(5)]);
}

#[tokio::test]
async fn reused_or_even_stream_ids_get_a_protocol_error_reset() {
    let (mut client, _conn, mut streams) = start();
    client.open(3, &[("streamtype", "error")]).await;
    client.open(3, &[("streamtype", "again")]).await;
    client.open(1, &[("streamtype", "lower")]).await;
    client.open(4, &[("streamtype", "even")]).await;
    client.open(5, &[("streamtype", "stdout")]).await;

    assert_eq!(client.expect().await, rst(3, RstStatus::ProtocolError));
    assert_eq!(client.expect().await, rst(1, RstStatus::ProtocolError));
    assert_eq!(client.expect().await, rst(4, RstStatus::ProtocolError));
    let mut ok = accept(&mut streams).await;
    assert_eq!((ok.id, ok.header("streamtype")), (3, Some("error")));
    let next = accept(&mut streams).await;
    assert_eq!((next.id, next.header("streamtype")), (5, Some("stdout")));

    // The original stream 3 is unaffected.
    client.data(3, b"ok", true).await;
    assert_eq!(read(&mut ok).await.as_deref(), Some(&b"ok"[..]));
    assert_eq!(read(&mut ok).await, None);
}

#[tokio::test]
async fn client_goaway_ends_the_connection() {
    let (mut client, conn, mut streams) = start();
    client.open(1, &[("streamtype", "stdout")]).await;
    let mut stream = accept(&mut streams).await;
    client
        .send(Frame::GoAway {
            last_good_stream_id: 0,
            status: GoAwayStatus::Ok,
        })
        .await;

    guard("closed()", conn.closed()).await;
    assert!(conn.is_closed());
    assert_eq!(read(&mut stream).await, None);
    assert_eq!(
        stream.writer().write(b"x").await.unwrap_err().kind(),
        io::ErrorKind::BrokenPipe
    );
    assert!(guard("the stream channel", streams.recv()).await.is_none());
    client.expect_eof().await;
    guard("close() after the end", conn.close()).await;
}

#[tokio::test]
async fn close_sends_goaway_after_queued_frames() {
    let (mut client, conn, mut streams) = start();
    client.open(1, &[("streamtype", "error")]).await;
    client.open(3, &[("streamtype", "stdout")]).await;
    let mut first = accept(&mut streams).await;
    let _second = accept(&mut streams).await;
    first.writer().write(b"bye").await.unwrap();

    let closer = conn.clone();
    let (a, b) = tokio::join!(
        guard("close()", conn.close()),
        guard("close()", closer.close())
    );
    let ((), ()) = (a, b);
    assert!(conn.is_closed());

    assert_eq!(client.expect().await, reply(1));
    assert_eq!(
        client.expect().await,
        Frame::Data {
            stream_id: 1,
            fin: false,
            data: Bytes::from_static(b"bye"),
        }
    );
    assert_eq!(
        client.expect().await,
        Frame::GoAway {
            last_good_stream_id: 3,
            status: GoAwayStatus::Ok,
        }
    );
    client.expect_eof().await;
    assert_eq!(read(&mut first).await, None);
    assert!(first.writer().write(b"late").await.is_err());
    guard("closed()", conn.closed()).await;
}

#[tokio::test]
async fn dropping_the_client_closes_the_connection() {
    let (mut client, conn, mut streams) = start();
    client.open(1, &[("streamtype", "stdin")]).await;
    let mut stream = accept(&mut streams).await;
    assert!(!conn.is_closed());
    drop(client);

    guard("closed()", conn.closed()).await;
    assert_eq!(read(&mut stream).await, None);
    assert!(stream.writer().write(b"x").await.is_err());
}

#[tokio::test]
async fn malformed_frames_get_goaway_protocol_error() {
    let cases: [&[u8]; 3] = [
        // RST_STREAM with a 7-byte payload.
        &[
            0x80, 0x03, 0x00, 0x03, 0x00, 0x00, 0x00, 0x07, 0, 0, 0, 1, 0, 0, 5,
        ],
        // SPDY/2.
        &[0x80, 0x02, 0x00, 0x06, 0x00, 0x00, 0x00, 0x04, 0, 0, 0, 1],
        // A SYN_REPLY whose header block is not zlib.
        &[
            0x80, 0x03, 0x00, 0x02, 0x00, 0x00, 0x00, 0x08, 0, 0, 0, 1, 1, 2, 3, 4,
        ],
    ];
    for bytes in cases {
        let (mut client, conn, mut streams) = start();
        client.open(1, &[("streamtype", "error")]).await;
        let mut stream = accept(&mut streams).await;
        client.send_raw(bytes).await;
        assert_eq!(
            client.expect().await,
            Frame::GoAway {
                last_good_stream_id: 1,
                status: GoAwayStatus::ProtocolError,
            }
        );
        client.expect_eof().await;
        guard("closed()", conn.closed()).await;
        assert_eq!(read(&mut stream).await, None);
    }
}

#[tokio::test]
async fn ignores_windows_settings_and_frames_for_unknown_streams() {
    let (mut client, _conn, mut streams) = start();
    client
        .send(Frame::Settings {
            clear: false,
            entries: vec![Setting {
                flags: 0,
                id: 7,
                value: 1024,
            }],
        })
        .await;
    client.open(1, &[("streamtype", "stdin")]).await;
    let mut stream = accept(&mut streams).await;

    // Far more than SPDY/3.1's 64 KiB initial window, with no
    // WINDOW_UPDATE from anyone: spdystream never sends or honours them.
    let total = 1024 * 1024;
    let sender = tokio::spawn(async move {
        let chunk = vec![0xab; MAX_DATA_FRAME];
        for _ in 0..total / MAX_DATA_FRAME {
            client.data(1, &chunk, false).await;
        }
        client
            .send(Frame::WindowUpdate {
                stream_id: 1,
                delta: 1,
            })
            .await;
        client.data(9, b"unknown stream", false).await;
        client.send(reply(1)).await;
        client
            .send(Frame::Headers {
                stream_id: 1,
                fin: false,
                headers: h(&[("x", "y")]),
            })
            .await;
        client.send(fin(1)).await;
        client
    });
    let mut received = 0;
    while let Some(data) = read(&mut stream).await {
        assert!(data.iter().all(|&b| b == 0xab));
        received += data.len();
    }
    assert_eq!(received, total);
    let mut client = guard("sender", sender).await.unwrap();
    assert_eq!(
        client.sync(1).await,
        vec![],
        "server sent unsolicited frames"
    );
}

#[tokio::test(start_paused = true)]
async fn a_slow_reader_backpressures_the_connection_without_losing_data() {
    let (mut client, _conn, mut streams) = start_with_buffer(1024);
    client.open(1, &[("streamtype", "stdin")]).await;
    let mut stream = accept(&mut streams).await;
    let mut sender = tokio::spawn(async move {
        for i in 0..500u32 {
            client.data(1, format!("{i:04}|").as_bytes(), false).await;
        }
        client.send(fin(1)).await;
        client
    });
    // Nobody reads the stream yet: once its buffer and the 1 KiB pipe are
    // full the sender must be stuck. The paused clock only jumps ahead
    // when every task is blocked, so this timeout firing proves the stall.
    assert!(
        tokio::time::timeout(Duration::from_secs(1), &mut sender)
            .await
            .is_err(),
        "the sender was not back-pressured"
    );
    let mut got = Vec::new();
    while let Some(data) = read(&mut stream).await {
        got.extend_from_slice(&data);
    }
    let expected: String = (0..500u32).map(|i| format!("{i:04}|")).collect();
    assert_eq!(String::from_utf8(got).unwrap(), expected);
    let mut client = guard("sender", sender).await.unwrap();
    assert_eq!(client.sync(1).await, vec![]);
}

#[tokio::test]
async fn streams_nobody_accepts_are_reset() {
    let (mut client, _conn, streams) = start();
    drop(streams);
    client.open(1, &[("streamtype", "error")]).await;
    assert_eq!(client.expect().await, rst(1, RstStatus::Cancel));
}

#[tokio::test]
async fn a_stream_opened_with_fin_is_already_finished_remotely() {
    let (mut client, _conn, mut streams) = start();
    let Frame::SynStream { headers, .. } = syn_stream(1, &[("streamtype", "error")]) else {
        unreachable!()
    };
    client
        .send(Frame::SynStream {
            stream_id: 1,
            associated_id: 0,
            priority: 3,
            slot: 0,
            fin: true,
            unidirectional: false,
            headers,
        })
        .await;
    let mut stream = accept(&mut streams).await;
    assert_eq!(read(&mut stream).await, None);
    stream.writer().write(b"err").await.unwrap();
    stream.writer().close().await.unwrap();
    drop(stream);
    assert_eq!(
        client.sync(1).await,
        vec![
            reply(1),
            Frame::Data {
                stream_id: 1,
                fin: false,
                data: Bytes::from_static(b"err"),
            },
            fin(1),
        ]
    );
}
