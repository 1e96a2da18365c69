//! `h3`: HTTP/3 request/response. `connections × streams` closed loops of `GET /health`
//! (a small fixed JSON answer), each on its own request stream, through the `h3` crate's
//! client on alknet's client engine (the `alknet_http::h3::quic` adapter), so alknet and
//! the quinn + h3-quinn baseline face the same client. Both servers serve [`router`].

use std::future::poll_fn;
use std::sync::mpsc;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use alknet_http::h3::quic::{H3Connection, H3Opener};
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

#[derive(Debug, Clone)]
pub struct H3Rr {
    /// Connections of each client thread.
    pub connections: Vec<usize>,
    pub streams: usize,
}

impl H3Rr {
    pub fn new(connections: usize, threads: usize, streams: usize) -> Self {
        Self {
            connections: split(connections, threads),
            streams,
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
        for _ in 0..n {
            let Some(conn) = thread.connect(&mut tally).await else {
                continue;
            };
            match h3::client::new(H3Connection::new(conn.clone())).await {
                Ok((mut driver, send)) => {
                    monoio::spawn(async move {
                        let _ = poll_fn(|cx| driver.poll_close(cx)).await;
                    });
                    clients.push((conn.clone(), send));
                }
                Err(e) => tally.error("h3 setup", || e.to_string()),
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
                                let mut send = send.clone();
                                async move {
                                    get_health(&mut send)
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
        thread.close_all(conns).await;
        tally.client = thread.endpoint.stats();
        tally
    }
}

/// One `GET /health`, its answer checked; `Ok(bytes received)`.
async fn get_health(send: &mut SendRequest) -> Result<u64, &'static str> {
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
