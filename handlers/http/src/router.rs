//! The one router every HTTP version serves (HTTP/1.1 and HTTP/2 here, HTTP/3 in `h3`).
//! Transports insert a [`crate::ConnInfo`] into each request's extensions first.

use alknet_proto::call::ErrorCode;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::response::Response;
use axum::routing::{get, post};
use axum::Router;

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use crate::auth::ConnInfo;
use crate::routes::{
    call, dashboard, doh, error_response, files, health, mcp, metrics, openapi, pkarr, sse,
    webtransport,
};
use crate::HttpMetrics;
use crate::HttpState;

/// Every route, with the body limit and request counting.
pub fn router(state: HttpState) -> Router {
    let diagnostics = if state.config.diagnostics {
        crate::routes::diag::routes()
    } else {
        Router::new()
    };
    // with `static_root` set, `/` stays the files' (as the QUIC interop runner expects);
    // the page is at `/dashboard` either way
    let dashboard = if state.static_files.is_none() {
        Router::new().route("/", get(dashboard::page))
    } else {
        Router::new()
    }
    .route(dashboard::DASHBOARD_PATH, get(dashboard::page_dashboard));
    Router::new()
        .merge(diagnostics)
        .merge(dashboard)
        .route("/api/dashboard/stream", get(dashboard::stream))
        .route("/health", get(health::health))
        .route("/api/webtransport", get(webtransport::info))
        .route("/metrics", get(metrics::metrics))
        .route("/api/call/{operationId}", post(call::call))
        .route("/api/events/{topic}", get(sse::events))
        .route("/openapi.json", get(openapi::openapi))
        .route(
            "/mcp",
            post(mcp::mcp).get(mcp::mcp_get).delete(mcp::mcp_delete),
        )
        .route("/dns-query", get(doh::get).post(doh::post))
        .route(
            "/pkarr/{key}",
            get(pkarr::get).put(pkarr::put).options(pkarr::options),
        )
        .fallback(fallback)
        .layer(DefaultBodyLimit::max(state.config.max_body_bytes))
        .layer(CountRequestsLayer(state.metrics.clone()))
        .with_state(state)
}

/// A path no route claims: a file of `[http] static_root` when that is set (GET, HEAD),
/// else 404.
async fn fallback(State(state): State<HttpState>, req: Request) -> Response {
    if state.static_files.is_some() {
        return files::serve(&state, req.method(), req.uri().path(), req.headers()).await;
    }
    error_response(ErrorCode::NotFound, "no such route")
}

/// Counts each answered request by its route pattern (not its path: a peer cannot grow
/// the label set), status and protocol. A tower layer of its own rather than
/// `middleware::from_fn`, whose future is boxed per request: this one is a plain
/// wrapper around the route's future.
#[derive(Clone)]
struct CountRequestsLayer(HttpMetrics);

impl<S> tower::Layer<S> for CountRequestsLayer {
    type Service = CountRequests<S>;
    fn layer(&self, inner: S) -> CountRequests<S> {
        CountRequests {
            inner,
            metrics: self.0.clone(),
        }
    }
}

#[derive(Clone)]
struct CountRequests<S> {
    inner: S,
    metrics: HttpMetrics,
}

impl<S> tower_service::Service<Request> for CountRequests<S>
where
    S: tower_service::Service<Request, Response = Response>,
{
    type Response = Response;
    type Error = S::Error;
    type Future = CountedResponse<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request) -> Self::Future {
        // a clone of the route's shared pattern (an `Arc`), not a copy of its text
        let route = req.extensions().get::<MatchedPath>().cloned();
        let protocol = req
            .extensions()
            .get::<ConnInfo>()
            .map_or("unknown", |c| c.protocol);
        CountedResponse {
            inner: self.inner.call(req),
            count: Some((self.metrics.clone(), route, protocol)),
        }
    }
}

pin_project_lite::pin_project! {
    /// The route's response future; counts the response when it is ready.
    struct CountedResponse<F> {
        #[pin]
        inner: F,
        count: Option<(HttpMetrics, Option<MatchedPath>, &'static str)>,
    }
}

impl<F, E> Future for CountedResponse<F>
where
    F: Future<Output = Result<Response, E>>,
{
    type Output = Result<Response, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = std::task::ready!(this.inner.poll(cx));
        if let (Ok(response), Some((metrics, route, protocol))) = (&result, this.count.take()) {
            metrics.count(
                route.as_ref().map_or("unmatched", MatchedPath::as_str),
                response.status().as_u16(),
                protocol,
            );
        }
        Poll::Ready(result)
    }
}
