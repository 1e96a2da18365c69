//! `alknet/call` end to end over real QUIC on loopback: the Rust client and raw frames
//! written by hand against an in-process server.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use alknet_call::*;
use alknet_proto::call::{EventEnvelope, EventType, Frame, FrameDecoder};
use alknet_runtime::{ConfigIdentityProvider, Connection, IdentityEntry, ServerHandle, VarInt};
use alknet_tests::*;
use serde_json::{json, Value};

const ADMIN_TOKEN: &str = "admin-token";
const READER_TOKEN: &str = "reader-token";

/// Sets a flag when dropped: shows an operation's future was cancelled, not leaked.
struct DropFlag(Arc<AtomicBool>);
impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

struct Fixture {
    server: ServerHandle,
    node: Arc<CallNode>,
    slow_dropped: Arc<AtomicBool>,
}

fn fixture(limits: CallLimits) -> Fixture {
    let slow_dropped = Arc::new(AtomicBool::new(false));
    let mut reg = default_registry().expect("builtins");
    let flag = slow_dropped.clone();
    reg.register(
        Operation::unary("test.sleep", move |_, input| {
            let guard = DropFlag(flag.clone());
            async move {
                let ms = input["ms"].as_u64().unwrap_or(0);
                monoio::time::sleep(Duration::from_millis(ms)).await;
                drop(guard);
                Ok(json!({"slept": ms}))
            }
        })
        .public(),
    )
    .expect("register");
    reg.register(
        Operation::unary("test.panic", |_, _| async move {
            if true {
                panic!("operation blew up on purpose");
            }
            Ok(Value::Null)
        })
        .public(),
    )
    .expect("register");
    reg.register(
        Operation::unary("test.hidden", |_, _| async move { Ok(json!("secret")) })
            .internal()
            .public(),
    )
    .expect("register");
    reg.register(
        Operation::unary("test.via_internal", |ctx, _| async move {
            let inner = ctx.call_internal("test.hidden", Value::Null).await?;
            Ok(json!({"inner": inner, "parent_internal": ctx.internal}))
        })
        .public(),
    )
    .expect("register");
    reg.register(
        Operation::unary("test.whoami", |ctx, _| async move {
            Ok(json!({
                "identity": ctx.identity.map(|i| i.name),
                "connection_identity": ctx.connection_identity.map(|i| i.name),
                "forwarded_for": ctx.forwarded_for,
                "peer": ctx.env.get("ALKNET_PEER_ADDR"),
            }))
        })
        .public(),
    )
    .expect("register");
    reg.register(
        Operation::unary("test.burst", |ctx, input| async move {
            // publishes without yielding, so a subscriber on this worker cannot drain
            let n = input["n"].as_u64().unwrap_or(0);
            let mut delivered = 0;
            for i in 0..n {
                delivered += ctx.publish(NODE_EVENTS_TOPIC, json!(i));
            }
            Ok(json!({"delivered": delivered}))
        })
        .public(),
    )
    .expect("register");
    let provider = ConfigIdentityProvider::new(&[
        IdentityEntry {
            name: "admin".into(),
            fingerprints: vec![],
            tokens: vec![ADMIN_TOKEN.into()],
            scopes: vec![ADMIN_SCOPE.into(), format!("subscribe:{NODE_EVENTS_TOPIC}")],
        },
        IdentityEntry {
            name: "reader".into(),
            fingerprints: vec![],
            tokens: vec![READER_TOKEN.into()],
            scopes: vec![format!("subscribe:{NODE_EVENTS_TOPIC}")],
        },
    ])
    .expect("identities");
    let info = NodeInfo {
        workers: 1,
        alpns: vec!["alknet/call".into()],
        ..NodeInfo::default()
    };
    let adapter = CallAdapter::with_parts(reg, limits, info, None);
    let node = adapter.node();
    let server = start_server(ServerOptions {
        handlers: vec![Arc::new(adapter)],
        provider: Arc::new(provider),
        ..Default::default()
    });
    Fixture {
        server,
        node,
        slow_dropped,
    }
}

async fn client(f: &Fixture) -> (Connection, CallClient) {
    let ep = client_endpoint();
    let conn = connect(&ep, &f.server, ALPN).await.expect("connect");
    // the endpoint lives as long as the connection's driver holds it
    std::mem::forget(ep);
    let c = CallClient::new(&conn).await.expect("call stream");
    (conn, c)
}

fn code(r: Result<Value, CallError>) -> ErrorCode {
    r.expect_err("an error").code
}

#[test]
fn round_trip_builtins_and_lookup_rules() {
    let f = fixture(CallLimits::default());
    run_client(|| async {
        let (_conn, c) = client(&f).await;
        let info = c.call("node.info", Value::Null).await.expect("node.info");
        assert_eq!(info["alpns"], json!(["alknet/call"]));
        assert_eq!(info["workers"], 1);
        assert!(info["version"].is_string());
        assert_eq!(
            c.call("node.health", Value::Null).await.expect("health"),
            json!({"status": "ok"})
        );
        let input = json!({"nested": [1, 2.5, "three", null, {"k": true}], "s": "é\"\\"});
        assert_eq!(c.call("echo", input.clone()).await.expect("echo"), input);
        // leading slash stripped, no slash works too
        assert_eq!(c.call("/echo", json!(1)).await.expect("/echo"), json!(1));
        // unknown and internal operations are both NOT_FOUND from the wire
        assert_eq!(code(c.call("nope", Value::Null).await), ErrorCode::NotFound);
        assert_eq!(
            code(c.call("test.hidden", Value::Null).await),
            ErrorCode::NotFound
        );
        // ...but reachable from inside an operation, under an internal child context
        assert_eq!(
            c.call("test.via_internal", Value::Null)
                .await
                .expect("internal call"),
            json!({"inner": "secret", "parent_internal": false})
        );
        // schema discovery lists public operations only
        let list = c
            .call("schema.list", Value::Null)
            .await
            .expect("schema.list");
        let ids: Vec<&str> = list["operations"]
            .as_array()
            .expect("operations")
            .iter()
            .filter_map(|o| o["operationId"].as_str())
            .collect();
        assert!(ids.contains(&"node.info") && ids.contains(&"echo"));
        assert!(!ids.contains(&"test.hidden"));
        let one = c
            .call("schema.get", json!({"operationId": "echo.stream"}))
            .await
            .expect("schema.get");
        assert_eq!(one["streaming"], true);
        assert_eq!(
            code(
                c.call("schema.get", json!({"operationId": "test.hidden"}))
                    .await
            ),
            ErrorCode::NotFound
        );
        // schema violations are INVALID_ARGUMENT
        assert_eq!(
            code(c.call("schema.get", json!({"operationId": 5})).await),
            ErrorCode::InvalidArgument
        );
    });
}

#[test]
fn acl_tokens_and_forwarded_for() {
    let f = fixture(CallLimits::default());
    run_client(|| async {
        let (_conn, c) = client(&f).await;
        // anonymous: default deny
        assert_eq!(
            code(c.call("node.stats", Value::Null).await),
            ErrorCode::Forbidden
        );
        // a forwarded-for identity is metadata, never authority
        let forwarded = CallOptions {
            forwarded_for: Some(json!({"name": "admin"})),
            ..Default::default()
        };
        assert_eq!(
            code(c.call_with("node.stats", Value::Null, &forwarded).await),
            ErrorCode::Forbidden
        );
        // the token overrides the (anonymous) connection identity for this request
        let admin = CallOptions {
            auth_token: Some(ADMIN_TOKEN.into()),
            ..Default::default()
        };
        let stats = c
            .call_with("node.stats", Value::Null, &admin)
            .await
            .expect("admin may read stats");
        assert!(stats["requests"].as_u64().expect("requests") >= 3);
        assert!(stats["errors"]["FORBIDDEN"].as_u64().expect("forbidden") >= 2);
        // a token without the scope is still FORBIDDEN
        let reader = CallOptions {
            auth_token: Some(READER_TOKEN.into()),
            ..Default::default()
        };
        assert_eq!(
            code(c.call_with("node.stats", Value::Null, &reader).await),
            ErrorCode::Forbidden
        );
        // an unknown token falls back to the connection identity (anonymous here)
        let bogus = CallOptions {
            auth_token: Some("bogus".into()),
            forwarded_for: Some(json!({"name": "carol"})),
            ..Default::default()
        };
        let who = c
            .call_with("test.whoami", Value::Null, &bogus)
            .await
            .expect("whoami");
        assert_eq!(who["identity"], Value::Null);
        assert_eq!(who["forwarded_for"], json!({"name": "carol"}));
        assert!(who["peer"]
            .as_str()
            .expect("peer")
            .starts_with("127.0.0.1:"));
        let who = c
            .call_with("test.whoami", Value::Null, &admin)
            .await
            .expect("whoami");
        assert_eq!(who["identity"], "admin");
        assert_eq!(who["connection_identity"], Value::Null);
    });
}

#[test]
fn deadline_cancels_the_operation_and_panics_stay_in_their_request() {
    let f = fixture(CallLimits::default());
    run_client(|| async {
        let (_conn, c) = client(&f).await;
        let short = CallOptions {
            timeout: Some(Duration::from_millis(200)),
            ..Default::default()
        };
        let started = std::time::Instant::now();
        let r = c
            .call_with("test.sleep", json!({"ms": 20_000}), &short)
            .await;
        assert_eq!(code(r), ErrorCode::DeadlineExceeded);
        assert!(started.elapsed() < Duration::from_secs(10));
        assert!(
            f.slow_dropped.load(Ordering::SeqCst),
            "the operation future was dropped"
        );
        // a panic answers INTERNAL for that request only; the stream and connection live on
        let e = c
            .call("test.panic", Value::Null)
            .await
            .expect_err("panicked");
        assert_eq!(e.code, ErrorCode::Internal);
        assert_eq!(
            c.call("echo", json!("after")).await.expect("still serving"),
            json!("after")
        );
        // a quick sleep answers normally
        assert_eq!(
            c.call("test.sleep", json!({"ms": 10}))
                .await
                .expect("sleep"),
            json!({"slept": 10})
        );
    });
}

#[test]
fn streaming_results_and_concurrent_streams() {
    let f = fixture(CallLimits::default());
    run_client(|| async {
        let (conn, c) = client(&f).await;
        let mut items = c
            .call_stream("echo.stream", json!({"count": 1000, "item": {"x": 1}}))
            .await
            .expect("stream");
        let mut n = 0;
        while let Some(item) = items.next().await {
            assert_eq!(item.expect("item"), json!({"x": 1}));
            n += 1;
        }
        assert_eq!(n, 1000);
        // over the limit in the schema
        let mut bad = c
            .call_stream("echo.stream", json!({"count": ECHO_STREAM_MAX_ITEMS + 1}))
            .await
            .expect("sent");
        assert_eq!(
            bad.next()
                .await
                .expect("an answer")
                .expect_err("invalid")
                .code,
            ErrorCode::InvalidArgument
        );
        // several streams of one connection at once, each with calls in flight
        let mut clients = vec![c];
        for _ in 0..3 {
            clients.push(CallClient::new(&conn).await.expect("stream"));
        }
        let calls = clients.iter().enumerate().flat_map(|(s, c)| {
            (0..50).map(move |i| async move {
                let v = json!({"stream": s, "i": i});
                assert_eq!(c.call("echo", v.clone()).await.expect("echo"), v);
            })
        });
        futures_util::future::join_all(calls).await;
    });
}

#[test]
fn pubsub_delivers_and_drops_slow_subscribers() {
    let f = fixture(CallLimits {
        subscriber_queue: 4,
        ..CallLimits::default()
    });
    run_client(|| async {
        let (_conn, c) = client(&f).await;
        // anonymous subscribers are refused; unknown topics are NOT_FOUND
        assert_eq!(
            c.subscribe(NODE_EVENTS_TOPIC).await.err().map(|e| e.code),
            Some(ErrorCode::Forbidden)
        );
        assert_eq!(
            c.subscribe("no.such.topic").await.err().map(|e| e.code),
            Some(ErrorCode::NotFound)
        );
        c.set_default_token(Some(READER_TOKEN.into()));
        let mut sub = c.subscribe(NODE_EVENTS_TOPIC).await.expect("subscribe");
        // published by an operation (admin) and by the node itself
        let admin = CallOptions {
            auth_token: Some(ADMIN_TOKEN.into()),
            ..Default::default()
        };
        let r = c
            .call_with("node.publish", json!({"data": {"hello": 1}}), &admin)
            .await
            .expect("publish");
        assert_eq!(r, json!({"delivered": 1}));
        assert_eq!(f.node.publish(NODE_EVENTS_TOPIC, json!("from the node")), 1);
        let m = sub.next().await.expect("event").expect("ok");
        assert_eq!(
            (m.topic.as_str(), m.seq, &m.data),
            (NODE_EVENTS_TOPIC, 0, &json!({"hello": 1}))
        );
        let m = sub.next().await.expect("event").expect("ok");
        assert_eq!((m.seq, &m.data), (1, &json!("from the node")));
        sub.unsubscribe().await.expect("unsubscribe");
        assert_eq!(f.node.bus.subscribers(NODE_EVENTS_TOPIC), 0);

        // a burst bigger than the subscriber queue, published without yielding, drops it
        let mut slow = c.subscribe(NODE_EVENTS_TOPIC).await.expect("subscribe");
        let r = c
            .call("test.burst", json!({"n": 100}))
            .await
            .expect("burst");
        assert_eq!(r, json!({"delivered": 4}));
        let mut got = 0;
        let err = loop {
            match slow.next().await.expect("events then an error") {
                Ok(_) => got += 1,
                Err(e) => break e,
            }
        };
        assert_eq!(got, 4);
        assert_eq!(err.code, ErrorCode::Unavailable);
        assert!(slow.next().await.is_none());
        assert_eq!(f.node.bus.subscribers(NODE_EVENTS_TOPIC), 0);
        // the connection is fine
        assert_eq!(c.call("echo", json!(7)).await.expect("echo"), json!(7));
    });
}

#[test]
fn connection_drop_fails_pending_calls() {
    let f = fixture(CallLimits::default());
    let before = f.node.stats.failed_on_close.load(Ordering::SeqCst);
    run_client(|| async {
        let (conn, c) = client(&f).await;
        let slow = c.call("test.sleep", json!({"ms": 30_000}));
        let closer = async {
            monoio::time::sleep(Duration::from_millis(200)).await;
            conn.close(VarInt::from_u32(0), b"bye");
        };
        let (r, ()) = join(slow, closer).await;
        let e = r.expect_err("failed by the close");
        assert_eq!(e.code, ErrorCode::Internal);
        assert!(e.message.contains("connection closed"), "{e}");
        assert_eq!(code(c.call("echo", json!(1)).await), ErrorCode::Internal);
    });
    // the server fails its pending request too, and drops the operation
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while f.node.stats.failed_on_close.load(Ordering::SeqCst) == before {
        assert!(
            std::time::Instant::now() < deadline,
            "server never failed the pending call"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    while !f.slow_dropped.load(Ordering::SeqCst) {
        assert!(
            std::time::Instant::now() < deadline,
            "operation not cancelled"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(f.node.stats.active_connections.load(Ordering::SeqCst), 0);
}

/// Reads frames off a stream by hand.
struct FrameReader {
    recv: alknet_runtime::RecvStream,
    decoder: FrameDecoder,
}

impl FrameReader {
    fn new(recv: alknet_runtime::RecvStream) -> Self {
        Self {
            recv,
            decoder: FrameDecoder::new(16 << 20),
        }
    }

    /// The next frame, `Ok(None)` at the end, or `Err(code)` if the server reset the stream.
    async fn next(&mut self) -> Result<Option<EventEnvelope>, VarInt> {
        loop {
            if let Some(frame) = self.decoder.next_frame() {
                let Frame::Body(mut body) = frame else {
                    panic!("oversized frame from the server");
                };
                return Ok(Some(
                    EventEnvelope::decode(&mut body).expect("server frame"),
                ));
            }
            match self.recv.read_chunk(64 * 1024).await {
                Ok(Some(c)) => self.decoder.push(c),
                Ok(None) => return Ok(None),
                Err(alknet_runtime::ReadError::Reset(code)) => return Err(code),
                Err(e) => panic!("read: {e}"),
            }
        }
    }
}

/// A raw stream: frames written and read by hand.
struct Raw {
    send: alknet_runtime::SendStream,
    reader: FrameReader,
}

impl Raw {
    async fn open(conn: &Connection) -> Self {
        let (send, recv) = conn.open_bi().await.expect("stream").split();
        Self {
            send,
            reader: FrameReader::new(recv),
        }
    }

    async fn write(&mut self, bytes: &[u8]) {
        self.send.write_all(bytes).await.expect("write");
    }

    async fn request(&mut self, id: &str, op: &str, input: Value) {
        let env = EventEnvelope::new(
            EventType::CallRequested,
            Some(id.into()),
            json!({"operationId": op, "input": input}),
        );
        let frame = env.encode().expect("encode");
        self.write(&frame).await;
    }

    async fn next(&mut self) -> Result<Option<EventEnvelope>, VarInt> {
        self.reader.next().await
    }
}

fn frame_with_len(len: u32, body: &[u8]) -> Vec<u8> {
    let mut v = len.to_be_bytes().to_vec();
    v.extend_from_slice(body);
    v
}

#[test]
fn bad_frames_get_errors_or_close_only_their_stream() {
    let f = fixture(CallLimits {
        max_frame_size: 4096,
        ..CallLimits::default()
    });
    run_client(|| async {
        let ep = client_endpoint();
        let conn = connect(&ep, &f.server, ALPN).await.expect("connect");
        let healthy = CallClient::new(&conn).await.expect("stream");

        // 1. valid JSON with an id but an unknown type: call.error, stream continues
        let mut s = Raw::open(&conn).await;
        let body = br#"{"type":"call.bogus","id":"a1","payload":{}}"#;
        s.write(&frame_with_len(body.len() as u32, body)).await;
        let e = s.next().await.expect("open").expect("frame");
        assert_eq!(
            (e.kind, e.id.as_deref()),
            (EventType::CallError, Some("a1"))
        );
        assert_eq!(e.payload["code"], "INVALID_ARGUMENT");
        // missing operationId
        let body = br#"{"type":"call.requested","id":"a2","payload":{"input":1}}"#;
        s.write(&frame_with_len(body.len() as u32, body)).await;
        let e = s.next().await.expect("open").expect("frame");
        assert_eq!(
            (e.id.as_deref(), &e.payload["code"]),
            (Some("a2"), &json!("INVALID_ARGUMENT"))
        );
        // 2. oversized frame whose id can be read: call.error, and the stream goes on
        let big = format!(
            r#"{{"type":"call.requested","id":"big1","payload":{{"operationId":"echo","input":"{}"}}}}"#,
            "x".repeat(10_000)
        );
        s.write(&frame_with_len(big.len() as u32, big.as_bytes()))
            .await;
        let e = s.next().await.expect("open").expect("frame");
        assert_eq!(
            (e.kind, e.id.as_deref()),
            (EventType::CallError, Some("big1"))
        );
        assert_eq!(e.payload["code"], "INVALID_ARGUMENT");
        assert!(e.payload["message"]
            .as_str()
            .expect("message")
            .contains("max_frame_size"));
        s.request("after-big", "echo", json!("ok")).await;
        let e = s.next().await.expect("open").expect("frame");
        assert_eq!(
            (e.kind, e.id.as_deref()),
            (EventType::CallResponded, Some("after-big"))
        );
        // duplicate ids while in flight
        s.request("dup", "test.sleep", json!({"ms": 300})).await;
        s.request("dup", "echo", json!(1)).await;
        let e = s.next().await.expect("open").expect("frame");
        assert_eq!(
            (e.kind, e.id.as_deref()),
            (EventType::CallError, Some("dup"))
        );
        assert_eq!(e.payload["code"], "INVALID_ARGUMENT");
        let e = s.next().await.expect("open").expect("frame");
        assert_eq!(
            (e.kind, e.id.as_deref()),
            (EventType::CallResponded, Some("dup"))
        );

        // 3. malformed JSON: no id to answer, so only this stream is closed with 0x10
        let mut bad = Raw::open(&conn).await;
        bad.write(&frame_with_len(9, b"{not json")).await;
        assert_eq!(
            bad.next().await.err(),
            Some(VarInt::from_u32(STREAM_FRAMING_ERROR))
        );
        // 4. an oversized frame claiming 4 GiB with no id: closed without reading it
        let mut huge = Raw::open(&conn).await;
        huge.write(&frame_with_len(u32::MAX, &[b' '; 2048])).await;
        assert_eq!(
            huge.next().await.err(),
            Some(VarInt::from_u32(STREAM_FRAMING_ERROR))
        );
        // 5. the stream ends inside a frame
        let mut cut = Raw::open(&conn).await;
        cut.write(&frame_with_len(100, b"{\"type\":")).await;
        cut.send.finish().expect("finish");
        assert_eq!(
            cut.next().await.err(),
            Some(VarInt::from_u32(STREAM_FRAMING_ERROR))
        );

        // the other streams and the connection are untouched
        s.request("still", "echo", json!("alive")).await;
        let e = s.next().await.expect("open").expect("frame");
        assert_eq!(
            (e.id.as_deref(), &e.payload["output"]),
            (Some("still"), &json!("alive"))
        );
        assert_eq!(
            healthy.call("echo", json!(2)).await.expect("echo"),
            json!(2)
        );
        assert!(f.node.stats.stream_framing_errors.load(Ordering::SeqCst) >= 3);
    });
}

#[test]
fn ten_thousand_requests_on_one_stream_are_answered_exactly_once() {
    const N: usize = 10_000;
    let f = fixture(CallLimits::default());
    run_client(|| async {
        let ep = client_endpoint();
        let conn = connect(&ep, &f.server, ALPN).await.expect("connect");
        let (mut send, recv) = conn.open_bi().await.expect("stream").split();
        let writer = async move {
            // all requests pipelined in a few large writes
            let mut chunks = Vec::new();
            let mut buf = bytes::BytesMut::new();
            for i in 0..N {
                EventEnvelope::new(
                    EventType::CallRequested,
                    Some(format!("r{i}")),
                    json!({"operationId": "echo", "input": {"i": i}}),
                )
                .encode_into(&mut buf)
                .expect("encode");
                if buf.len() > 64 * 1024 {
                    chunks.push(buf.split().freeze());
                }
            }
            chunks.push(buf.freeze());
            send.write_all_chunks(&mut chunks).await.expect("write");
            send.finish().expect("finish");
        };
        let reader = async move {
            let mut reader = FrameReader::new(recv);
            let mut seen = vec![0u32; N];
            while let Some(env) = reader.next().await.expect("no reset") {
                assert_eq!(env.kind, EventType::CallResponded, "{env:?}");
                let id = env.id.expect("id");
                let i: usize = id[1..].parse().expect("numeric id");
                assert_eq!(env.payload["output"]["i"], i);
                seen[i] += 1;
            }
            seen
        };
        let ((), seen) = join(writer, reader).await;
        assert!(
            seen.iter().all(|&n| n == 1),
            "every request answered exactly once"
        );
    });
}

#[test]
fn a_peer_that_stops_reading_has_its_stuck_requests_swept() {
    // Answers pile up unread until the stream window and the write queue are full; the
    // request tasks then block writing past their deadline and the sweeper evicts them.
    let f = fixture(CallLimits {
        default_timeout_ms: 300,
        sweep_interval_ms: 200,
        write_queue_bytes: 1024,
        ..CallLimits::default()
    });
    let big = "y".repeat(32 * 1024);
    run_client(|| async {
        let ep = client_endpoint();
        let conn = connect(&ep, &f.server, ALPN).await.expect("connect");
        let mut s = Raw::open(&conn).await;
        for i in 0..200 {
            s.request(&format!("big{i}"), "echo", json!(big)).await;
        }
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while f.node.stats.swept.load(Ordering::SeqCst) == 0 {
            assert!(std::time::Instant::now() < deadline, "nothing was swept");
            monoio::time::sleep(Duration::from_millis(50)).await;
        }
        // the connection still serves other streams
        let c = CallClient::new(&conn).await.expect("stream");
        assert_eq!(
            c.call("echo", json!("ok")).await.expect("echo"),
            json!("ok")
        );
    });
}
