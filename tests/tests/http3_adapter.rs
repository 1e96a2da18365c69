//! The HTTP/3 adapter from both ends: the `h3` crate's client over the same
//! `alknet_http::h3::quic` adapter (on the runtime's client connection) against the `h3`
//! handler in process. Covers what the aioquic checks cannot steer: the per-connection
//! request limit (observed from inside the router), the request timeout, and bodies both
//! ways through the client side of the adapter.

use std::future::poll_fn;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use alknet_http::h3::quic::H3Connection;
use alknet_http::h3::{H3Handler, H3Limits, ALPN};
use alknet_tests::*;
use axum::routing::{get, post};
use axum::Router;
use bytes::{Buf, Bytes};
use http::{Request, StatusCode};

type SendRequest = h3::client::SendRequest<alknet_http::h3::quic::H3Opener, Bytes>;

/// Requests `/hold` has in flight, the most it ever had, and the gate that lets them end.
struct Hold {
    in_flight: AtomicUsize,
    max_seen: AtomicUsize,
    gate: tokio::sync::Semaphore,
}

impl Default for Hold {
    fn default() -> Self {
        Self {
            in_flight: AtomicUsize::new(0),
            max_seen: AtomicUsize::new(0),
            gate: tokio::sync::Semaphore::new(0),
        }
    }
}

fn router(hold: Arc<Hold>) -> Router {
    Router::new()
        .route("/echo", post(|body: Bytes| async move { body }))
        .route(
            "/hold",
            get(move || {
                let hold = hold.clone();
                async move {
                    let now = hold.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                    hold.max_seen.fetch_max(now, Ordering::SeqCst);
                    let permit = hold.gate.acquire().await.expect("gate open");
                    permit.forget();
                    hold.in_flight.fetch_sub(1, Ordering::SeqCst);
                    "released"
                }
            }),
        )
        .route("/never", get(std::future::pending::<&'static str>))
}

fn start(limits: H3Limits, hold: Arc<Hold>) -> alknet_runtime::ServerHandle {
    start_server(ServerOptions {
        workers: 1,
        handlers: vec![Arc::new(H3Handler::new(router(hold), limits))],
        ..Default::default()
    })
}

/// An h3 client on the runtime's client connection, its driver running as a task.
async fn h3_client(
    endpoint: &alknet_runtime::ClientEndpoint,
    server: &alknet_runtime::ServerHandle,
) -> SendRequest {
    let conn = connect(endpoint, server, ALPN).await.expect("connect");
    let (mut driver, send) = h3::client::new(H3Connection::new(conn))
        .await
        .expect("h3 client");
    monoio::spawn(async move {
        let _ = poll_fn(|cx| driver.poll_close(cx)).await;
    });
    send
}

/// One request; the status and the whole body.
async fn request(
    send: &mut SendRequest,
    method: &str,
    path: &str,
    body: Option<Bytes>,
) -> (StatusCode, Vec<u8>) {
    let req = Request::builder()
        .method(method)
        .uri(format!("https://localhost{path}"))
        .body(())
        .expect("request");
    let mut stream = send.send_request(req).await.expect("send request");
    if let Some(body) = body {
        stream.send_data(body).await.expect("send body");
    }
    stream.finish().await.expect("finish request");
    let resp = stream.recv_response().await.expect("response");
    let mut out = Vec::new();
    while let Some(mut chunk) = stream.recv_data().await.expect("response body") {
        while chunk.has_remaining() {
            let c = chunk.chunk();
            out.extend_from_slice(c);
            let n = c.len();
            chunk.advance(n);
        }
    }
    (resp.status(), out)
}

#[test]
fn bodies_cross_both_ends_of_the_adapter() {
    let server = start(H3Limits::default(), Arc::default());
    run_client(|| async move {
        let endpoint = client_endpoint();
        let mut send = h3_client(&endpoint, &server).await;
        for len in [0usize, 1, 1200, 100_000, 1 << 20] {
            let body = Bytes::from(payload(len as u64, len));
            let (status, back) = request(&mut send, "POST", "/echo", Some(body.clone())).await;
            assert_eq!(status, StatusCode::OK);
            assert_eq!(back.len(), len);
            assert!(back == body, "echo of {len} bytes differs");
        }
    });
}

#[test]
fn requests_past_the_per_connection_limit_wait_for_a_slot() {
    const LIMIT: usize = 3;
    const REQUESTS: usize = 10;
    let hold = Arc::new(Hold::default());
    let limits = H3Limits {
        max_concurrent_requests: LIMIT,
        ..H3Limits::default()
    };
    let server = start(limits, hold.clone());
    run_client(|| async move {
        let endpoint = client_endpoint();
        let send = h3_client(&endpoint, &server).await;
        let (tx, rx) = async_channel::unbounded();
        for _ in 0..REQUESTS {
            let mut send = send.clone();
            let tx = tx.clone();
            monoio::spawn(async move {
                let r = request(&mut send, "GET", "/hold", None).await;
                let _ = tx.send(r).await;
            });
        }
        // all REQUESTS were sent; the server runs LIMIT of them and holds the rest back
        for _ in 0..2_000 {
            if hold.in_flight.load(Ordering::SeqCst) == LIMIT {
                break;
            }
            monoio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(hold.in_flight.load(Ordering::SeqCst), LIMIT);
        hold.gate.add_permits(REQUESTS);
        for _ in 0..REQUESTS {
            let (status, body) = rx.recv().await.expect("a response");
            assert_eq!(status, StatusCode::OK);
            assert_eq!(body, b"released");
        }
        assert_eq!(hold.max_seen.load(Ordering::SeqCst), LIMIT);
    });
}

#[test]
fn a_service_past_the_request_timeout_answers_504_and_the_connection_serves_on() {
    let limits = H3Limits {
        request_timeout: Duration::from_millis(200),
        ..H3Limits::default()
    };
    let server = start(limits, Arc::default());
    run_client(|| async move {
        let endpoint = client_endpoint();
        let mut send = h3_client(&endpoint, &server).await;
        let (status, _) = request(&mut send, "GET", "/never", None).await;
        assert_eq!(status, StatusCode::GATEWAY_TIMEOUT);
        let (status, body) = request(
            &mut send,
            "POST",
            "/echo",
            Some(Bytes::from_static(b"still here")),
        )
        .await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(body, b"still here");
    });
}
