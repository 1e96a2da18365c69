//! `h3`: HTTP/3 request/response. `connections × streams` closed loops of `GET /health`
//! (a small fixed JSON answer), each on its own request stream, so alknet and the quinn +
//! h3-quinn baseline face the same client. Both servers serve [`router`].
//!
//! Two clients ([`H3Client`]), both on alknet's client engine:
//! - `wire` (the default), built like a load generator (h2load builds each request once
//!   and sends the same bytes again): a control stream with SETTINGS, then per request the
//!   one HEADERS frame encoded at start-up with QPACK's static table ([`GET_HEALTH`]); the
//!   response's frames are parsed and its status and body checked byte for byte.
//! - `h3-crate`: the `h3` crate's client through the `alknet_http::h3::quic` adapter, which
//!   QPACK-encodes (Huffman) every request and runs h3's client state machine: a second,
//!   independently written client, and more CPU per request taken from the box the
//!   servers share.

use std::future::poll_fn;
use std::sync::mpsc;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use alknet_http::h3::quic::{H3Connection, H3Opener};
use alknet_proto::webtransport::decode_varint;
use alknet_runtime::ReadToEndError;
use axum::routing::get;
use axum::{Json, Router};
use bytes::{Buf, Bytes};

use crate::harness::{closed_loop, cpu_over_window, ClientThread, Schedule, Tally, Workload};
use crate::rr::split;

/// A request slower than this counts as an error (rather than stalling its loop).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// What `GET /health` answers.
const HEALTH_BODY: &[u8] = br#"{"status":"serving"}"#;

/// The router both servers serve (the `alknet` binary's `/health`).
pub fn router() -> Router {
    Router::new().route(
        "/health",
        get(|| async { Json(serde_json::json!({"status": "serving"})) }),
    )
}

type SendRequest = h3::client::SendRequest<H3Opener, Bytes>;

/// Which HTTP/3 client makes the requests (see the module comment).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum H3Client {
    /// Pre-encoded requests, responses parsed by hand: the least client CPU per request.
    #[default]
    Wire,
    /// The `h3` crate's client.
    H3Crate,
    /// The `h3` crate's client over quinn 0.11 + `h3-quinn` on a tokio current-thread
    /// runtime (one client thread): the client side of the baseline's own stack.
    Quinn,
}

#[derive(Debug, Clone)]
pub struct H3Rr {
    /// Connections of each client thread.
    pub connections: Vec<usize>,
    pub streams: usize,
    pub client: H3Client,
}

impl H3Rr {
    pub fn new(connections: usize, threads: usize, streams: usize, client: H3Client) -> Self {
        Self {
            connections: split(connections, threads),
            streams,
            client,
        }
    }
}

/// How a loop makes its requests on one connection.
enum Requester {
    Wire(alknet_runtime::Connection),
    H3Crate(SendRequest),
}

impl Requester {
    async fn get_health(&self) -> Result<u64, &'static str> {
        match self {
            Requester::Wire(conn) => wire_get_health(conn).await,
            Requester::H3Crate(send) => get_health(&mut send.clone()).await,
        }
    }
}

impl Workload for H3Rr {
    async fn run_thread(
        self,
        thread: ClientThread,
        schedule: Arc<OnceLock<Schedule>>,
        ready: mpsc::Sender<()>,
    ) -> Tally {
        let n = self.connections.get(thread.index).copied().unwrap_or(0);
        let mut tally = Tally::default();
        // the HTTP/3 setup (SETTINGS, QPACK streams) is part of connecting, not measured
        let mut conns = Vec::new();
        let mut clients = Vec::new();
        // the wire client's control streams, open for the connections' lives (closing one
        // is a connection error)
        let mut control = Vec::new();
        for _ in 0..n {
            let Some(conn) = thread.connect(&mut tally).await else {
                continue;
            };
            match self.client {
                H3Client::Wire => match open_control_stream(&conn).await {
                    Ok(stream) => {
                        control.push(stream);
                        clients.push((
                            conn.clone(),
                            std::rc::Rc::new(Requester::Wire(conn.clone())),
                        ));
                    }
                    Err(e) => tally.error("h3 setup", || e.to_string()),
                },
                H3Client::Quinn => tally.error("h3 setup", || {
                    "the quinn client runs on a thread of its own (quinn_client)".into()
                }),
                H3Client::H3Crate => match h3::client::new(H3Connection::new(conn.clone())).await {
                    Ok((mut driver, send)) => {
                        monoio::spawn(async move {
                            let _ = poll_fn(|cx| driver.poll_close(cx)).await;
                        });
                        clients.push((conn.clone(), std::rc::Rc::new(Requester::H3Crate(send))));
                    }
                    Err(e) => tally.error("h3 setup", || e.to_string()),
                },
            }
            conns.push(conn);
        }
        let _ = ready.send(());
        if let Some(sched) = crate::harness::wait_for_start(&schedule).await {
            let cpu = monoio::spawn(cpu_over_window(sched));
            let shared = std::rc::Rc::new(std::cell::RefCell::new(tally));
            let mut loops = Vec::new();
            for (conn, send) in &clients {
                for _ in 0..self.streams {
                    let (conn, send, tally) = (conn.clone(), send.clone(), shared.clone());
                    loops.push(monoio::spawn(async move {
                        closed_loop(
                            sched,
                            tally,
                            REQUEST_TIMEOUT,
                            || conn.close_reason().is_some(),
                            || {
                                let send = send.clone();
                                async move {
                                    send.get_health()
                                        .await
                                        .map_err(|kind| (kind, "GET /health".to_string()))
                                }
                            },
                        )
                        .await
                    }));
                }
            }
            for l in loops {
                l.await;
            }
            tally = shared.replace(Tally::default());
            tally.cpu_s = cpu.await;
        }
        drop(clients);
        drop(control);
        thread.close_all(conns).await;
        tally.client = thread.endpoint.stats();
        tally
    }
}

/// One `GET /health` by the `h3` crate's client (over alknet's adapter or h3-quinn), its
/// answer checked; `Ok(bytes received)`.
pub(crate) async fn get_health<O: h3::quic::OpenStreams<Bytes>>(
    send: &mut h3::client::SendRequest<O, Bytes>,
) -> Result<u64, &'static str> {
    let req = http::Request::get("https://localhost/health")
        .body(())
        .map_err(|_| "request")?;
    let mut stream = send.send_request(req).await.map_err(|_| "send")?;
    stream.finish().await.map_err(|_| "send")?;
    let resp = stream.recv_response().await.map_err(|_| "response")?;
    if resp.status() != http::StatusCode::OK {
        return Err("status");
    }
    let mut body = Vec::with_capacity(HEALTH_BODY.len());
    while let Some(mut chunk) = stream.recv_data().await.map_err(|_| "read")? {
        while chunk.has_remaining() {
            let c = chunk.chunk();
            if body.len() + c.len() > HEALTH_BODY.len() {
                return Err("mismatch");
            }
            body.extend_from_slice(c);
            let n = c.len();
            chunk.advance(n);
        }
    }
    if body != HEALTH_BODY {
        return Err("mismatch");
    }
    Ok(body.len() as u64)
}

/// `GET https://localhost/health` as one HEADERS frame, encoded as the `h3` crate's client
/// (and browsers) encode it, so the servers decode what they would from a real client: the
/// field section prefix (required insert count 0, base 0: static table only, which the
/// server's SETTINGS allow any client), `:method GET` (static 17), `:scheme https` (static
/// 23), then `:authority localhost` and `:path /health` as literals with the static names
/// 0 and 1 and Huffman-coded values (RFC 9204 §4.5, RFC 7541 Appendix B).
const GET_HEALTH: &[u8] = &[
    0x01, 0x13, // HEADERS, 19 bytes
    0x00, 0x00, // required insert count 0, delta base 0
    0xd1, // indexed, static 17: :method GET
    0xd7, // indexed, static 23: :scheme https
    0x50, 0x86, 0xa0, 0xe4, 0x1d, 0x13, 0x9d, 0x09, // :authority, Huffman "localhost"
    0x51, 0x85, 0x62, 0x72, 0x8e, 0x84, 0xcf, // :path, Huffman "/health"
];

/// The client's control stream (RFC 9114 §6.2.1): its type and an empty SETTINGS frame
/// (every setting at its default: no dynamic QPACK table, so no QPACK streams).
async fn open_control_stream(
    conn: &alknet_runtime::Connection,
) -> Result<alknet_runtime::SendStream, String> {
    let mut control = conn.open_uni().await.map_err(|e| e.to_string())?;
    control
        .write_chunk(Bytes::from_static(&[0x00, 0x04, 0x00]))
        .await
        .map_err(|e| e.to_string())?;
    Ok(control)
}

/// One `GET /health` by the wire client: the pre-encoded request, then the response read
/// to FIN and checked (see [`check_health_response`]); `Ok(body bytes)`.
async fn wire_get_health(conn: &alknet_runtime::Connection) -> Result<u64, &'static str> {
    let (mut send, mut recv) = conn.open_bi().await.map_err(|_| "open")?.split();
    send.write_chunk(Bytes::from_static(GET_HEALTH))
        .await
        .map_err(|_| "send")?;
    send.finish().map_err(|_| "send")?;
    let response = recv.read_to_end(MAX_RESPONSE).await.map_err(|e| match e {
        ReadToEndError::TooLong(_) => "mismatch",
        ReadToEndError::Read(_) => "read",
    })?;
    check_health_response(&response)
}

/// A response longer than this is wrong (`/health` answers ~80 bytes with its headers).
const MAX_RESPONSE: usize = 16 * 1024;

/// Checks a whole response stream: a HEADERS frame whose first field line is `:status 200`
/// (QPACK static index 25, the only way h3's encoder sends it), DATA frames whose payloads
/// are exactly [`HEALTH_BODY`], frames of unknown (reserved) types skipped as RFC 9114
/// §9 requires, and nothing else (no second HEADERS: no trailers here).
fn check_health_response(mut wire: &[u8]) -> Result<u64, &'static str> {
    let mut headers = false;
    let mut body = 0usize;
    while !wire.is_empty() {
        let ty = take_varint(&mut wire).ok_or("frame")?;
        let len = take_varint(&mut wire).ok_or("frame")?;
        let len = usize::try_from(len).map_err(|_| "frame")?;
        if len > wire.len() {
            return Err("frame");
        }
        let (payload, rest) = wire.split_at(len);
        wire = rest;
        match ty {
            0x01 if !headers => {
                // prefix: required insert count 0 and base 0 (static table only)
                if payload.len() < 3 || payload[0] != 0 || payload[1] != 0 {
                    return Err("headers");
                }
                if payload[2] != 0xd9 {
                    return Err("status");
                }
                headers = true;
            }
            0x00 if headers => {
                let end = body + payload.len();
                if HEALTH_BODY.get(body..end) != Some(payload) {
                    return Err("mismatch");
                }
                body = end;
            }
            // HEADERS twice, DATA before HEADERS, and frames that must not appear on a
            // request stream (CANCEL_PUSH, SETTINGS, PUSH_PROMISE, GOAWAY, MAX_PUSH_ID)
            0x00..=0x01 | 0x03..=0x07 | 0x0d => return Err("frame"),
            _ => {}
        }
    }
    if !headers || body != HEALTH_BODY.len() {
        return Err("mismatch");
    }
    Ok(body as u64)
}

/// A QUIC variable-length integer (RFC 9000 §16) from the front of `buf`, which it leaves
/// past it.
fn take_varint(buf: &mut &[u8]) -> Option<u64> {
    let (v, len) = decode_varint(buf)?;
    *buf = &buf[len..];
    Some(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The HEADERS frame's length is its payload's (that both servers' h3 decodes the
    /// fields is checked end to end by the workload's smoke test against each server).
    #[test]
    fn get_health_frame_is_well_formed() {
        let mut wire = GET_HEALTH;
        assert_eq!(take_varint(&mut wire), Some(1));
        let len = take_varint(&mut wire);
        assert_eq!(len, Some(wire.len() as u64));
        assert_eq!(&wire[..2], &[0, 0]);
    }

    fn frame(ty: u8, payload: &[u8]) -> Vec<u8> {
        let mut v = vec![ty, payload.len() as u8];
        v.extend_from_slice(payload);
        v
    }

    #[test]
    fn health_response_checks_status_body_and_frames() {
        let headers = frame(0x01, &[0, 0, 0xd9, 0x5f, 0x1d, 0x01, b'x']);
        let mut ok = headers.clone();
        ok.extend(frame(0x00, &HEALTH_BODY[..5]));
        ok.extend(frame(0x21, b"grease")); // reserved type: skipped
        ok.extend(frame(0x00, &HEALTH_BODY[5..]));
        assert_eq!(check_health_response(&ok), Ok(HEALTH_BODY.len() as u64));

        let mut not_found = frame(0x01, &[0, 0, 0xdb]); // static 27: :status 404
        not_found.extend(frame(0x00, HEALTH_BODY));
        assert_eq!(check_health_response(&not_found), Err("status"));

        let mut short = headers.clone();
        short.extend(frame(0x00, &HEALTH_BODY[..3]));
        assert_eq!(check_health_response(&short), Err("mismatch"));

        let mut wrong = headers.clone();
        wrong.extend(frame(0x00, b"{\"status\":\"draining\"}"));
        assert_eq!(check_health_response(&wrong), Err("mismatch"));

        let mut trailers = ok.clone();
        trailers.extend(frame(0x01, &[0, 0, 0xd9]));
        assert_eq!(check_health_response(&trailers), Err("frame"));

        assert_eq!(
            check_health_response(&frame(0x00, HEALTH_BODY)),
            Err("frame")
        );
        assert_eq!(check_health_response(&ok[..ok.len() - 1]), Err("frame"));
        assert_eq!(check_health_response(&[]), Err("mismatch"));
    }
}
