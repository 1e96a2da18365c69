//! The quinn baseline's `h3`: HTTP/3 with `h3` over `h3-quinn` (the hyperium adapter, as a
//! quinn user would deploy it) serving the same axum router as alknet (`crate::h3::router`),
//! one tokio task per request. The request body reaches the router directly from the
//! request stream (quinn's streams are `Send`, so no bridge is needed: the strongest setup).

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::{Buf, Bytes};
use h3::server::RequestStream;
use http_body::Frame;
use http_body_util::BodyExt;
use tower_service::Service;
use tracing::debug;

/// Serves HTTP/3 on `conn` until the client closes it.
pub async fn serve_h3(conn: quinn::Connection) {
    let router = crate::h3::router();
    let mut h3_conn = match h3::server::builder()
        .build::<_, Bytes>(h3_quinn::Connection::new(conn))
        .await
    {
        Ok(c) => c,
        Err(e) => {
            debug!("h3 setup failed: {e}");
            return;
        }
    };
    while let Ok(Some(resolver)) = h3_conn.accept().await {
        let mut router = router.clone();
        tokio::spawn(async move {
            let (req, stream) = match resolver.resolve_request().await {
                Ok(r) => r,
                Err(e) => return debug!("h3 request refused: {e}"),
            };
            let (mut send, recv) = stream.split();
            let req = req.map(|()| axum::body::Body::new(QuinnBody(recv)));
            let resp = match Service::call(&mut router, req).await {
                Ok(r) => r,
                Err(never) => match never as Infallible {},
            };
            let (parts, body) = resp.into_parts();
            if send
                .send_response(http::Response::from_parts(parts, ()))
                .await
                .is_err()
            {
                return;
            }
            let mut body = std::pin::pin!(body);
            while let Some(Ok(frame)) = body.frame().await {
                if let Ok(data) = frame.into_data() {
                    if send.send_data(data).await.is_err() {
                        return;
                    }
                }
            }
            let _ = send.finish().await;
        });
    }
}

/// A request body read straight from the h3-quinn request stream.
struct QuinnBody(RequestStream<h3_quinn::RecvStream, Bytes>);

impl http_body::Body for QuinnBody {
    type Data = Bytes;
    type Error = h3::error::StreamError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        match self.0.poll_recv_data(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Ok(Some(mut b))) => {
                Poll::Ready(Some(Ok(Frame::data(b.copy_to_bytes(b.remaining())))))
            }
            Poll::Ready(Ok(None)) => Poll::Ready(None),
            Poll::Ready(Err(e)) => Poll::Ready(Some(Err(e))),
        }
    }
}
