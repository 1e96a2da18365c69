//! The HTTP router against a real running engine (no transport): `/health` follows the
//! server's drain state. The transports (TCP here, HTTP/3) are tested in `http_tcp.rs`.

use alknet_http::{router, HttpConfig, HttpState};
use alknet_tests::*;
use http_body_util::BodyExt;
use tower::ServiceExt;

async fn health(state: &HttpState) -> (u16, serde_json::Value) {
    let req = axum::http::Request::get("/health")
        .body(axum::body::Body::empty())
        .expect("request");
    let resp = router(state.clone())
        .oneshot(req)
        .await
        .expect("infallible");
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    (status, serde_json::from_slice(&body).expect("JSON"))
}

#[test]
fn health_is_503_while_draining() {
    let server = start_server(ServerOptions::default());
    let state = HttpState::new(HttpConfig::default(), None).expect("no static root");
    run_client(|| async {
        let (status, body) = health(&state).await;
        assert_eq!((status, body["status"].as_str()), (503, Some("starting")));
    });
    state.set_status(server.status());
    run_client(|| async {
        let (status, body) = health(&state).await;
        assert_eq!((status, body["status"].as_str()), (200, Some("serving")));
        assert_eq!(body["workers"], 1);
    });
    server.shutdown();
    run_client(|| async {
        let (status, body) = health(&state).await;
        assert_eq!((status, body["status"].as_str()), (503, Some("draining")));
    });
    server.join();
}
