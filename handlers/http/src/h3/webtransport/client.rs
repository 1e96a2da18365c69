//! The client side: opens a WebTransport session (draft-02) over an HTTP/3 connection
//! and hands it back as a runtime [`Connection`], the same way the server hands sessions
//! to handlers, so `alknet connect --transport webtransport` pipes a stream of it like a
//! QUIC one.
//!
//! Streams the client opens and datagrams work both ways; unidirectional streams the
//! server opens reach the session. Bidirectional streams the server opens do not: the
//! `h3` client never accepts bidirectional streams (HTTP/3 servers cannot open requests),
//! so nothing sorts them; no alknet handler opens one toward a client of its own accord.

use std::future::poll_fn;
use std::rc::Rc;

use alknet_runtime::{Connection, ConnectionError};
use bytes::Bytes;
use http::{Method, Request, StatusCode};

use super::session::WebTransportSession;
use super::sessions::Sessions;
use super::{WebTransportConfig, DRAFT_HEADER, DRAFT_VALUE};
use crate::h3::quic::H3Connection;

/// Header a draft-02 client sends with its CONNECT (Chromium's, too).
pub const CLIENT_DRAFT_HEADER: &str = "sec-webtransport-http3-draft02";

/// Why a session could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum WebTransportClientError {
    #[error("HTTP/3 setup: {0}")]
    Setup(#[from] h3::error::ConnectionError),
    #[error("HTTP/3 request: {0}")]
    Request(#[from] h3::error::StreamError),
    #[error("the server refused the session: {0}")]
    Refused(StatusCode),
    #[error("the session URL is not valid: {0}")]
    Url(String),
}

/// The CONNECT path of a session to `alpn`'s service, carrying `token` (the identity a
/// client without a certificate runs as) as the `token=` query parameter the server reads
/// ([`super::connect::token_of`]), form-encoded.
pub fn session_path(alpn: &str, token: Option<&str>) -> String {
    match token {
        None => format!("/{alpn}"),
        Some(t) => match serde_urlencoded::to_string([("token", t)]) {
            Ok(q) => format!("/{alpn}?{q}"),
            // a string pair always encodes; without the token the server says 401/403
            Err(_) => format!("/{alpn}"),
        },
    }
}

/// Opens a session to `https://{authority}{path}` (path with any `?token=`) on `conn`,
/// a QUIC connection that negotiated `h3`. The session lives while the returned
/// connection (or a clone) does; the HTTP/3 connection's driver runs as a task of this
/// worker until then.
pub async fn open_session(
    conn: Connection,
    authority: &str,
    path: &str,
) -> Result<Connection, WebTransportClientError> {
    let config = Rc::new(WebTransportConfig::default());
    let sessions = Sessions::new(conn.clone(), config);
    let adapter = H3Connection::new(conn).with_webtransport(sessions.clone());
    let (mut driver, mut send) = h3::client::builder()
        .enable_extended_connect(true)
        .enable_datagram(true)
        .build::<_, _, Bytes>(adapter)
        .await?;
    let uri = format!("https://{authority}{path}");
    let mut req = Request::builder()
        .method(Method::CONNECT)
        .uri(&uri)
        .header(CLIENT_DRAFT_HEADER, "1")
        .body(())
        .map_err(|e| WebTransportClientError::Url(format!("{uri}: {e}")))?;
    req.extensions_mut()
        .insert(h3::ext::Protocol::WEB_TRANSPORT);
    // the driver reads the server's control stream (SETTINGS, GOAWAY) meanwhile
    alknet_runtime::rt::spawn_guarded("webtransport client h3", async move {
        let e = poll_fn(|cx| driver.poll_close(cx)).await;
        tracing::debug!("WebTransport client HTTP/3 connection ended: {e}");
    });
    let mut stream = send.send_request(req).await?;
    let response = stream.recv_response().await?;
    if !response.status().is_success() {
        return Err(WebTransportClientError::Refused(response.status()));
    }
    if response
        .headers()
        .get(DRAFT_HEADER)
        .is_some_and(|v| v.as_bytes() != DRAFT_VALUE.as_bytes())
    {
        tracing::debug!(
            "the server answered another WebTransport draft: {:?}",
            response.headers().get(DRAFT_HEADER)
        );
    }
    let id = stream.id().into_inner();
    let Some(queues) = sessions.open(id) else {
        return Err(WebTransportClientError::Url("session ID in use".into()));
    };
    let alpn = path
        .split('?')
        .next()
        .and_then(WebTransportConfig::alpn_of_path)
        .unwrap_or_default()
        .as_bytes()
        .to_vec();
    let session = WebTransportSession::connection(sessions.clone(), id, queues.clone(), alpn);
    // the CONNECT stream is the session: watched until either side ends it
    alknet_runtime::rt::spawn_guarded("webtransport client session", async move {
        let _send = send;
        let closed = poll_fn(|cx| queues.borrow_mut().poll_closed(cx));
        let ended_by_peer = monoio::select! {
            data = async {
                loop {
                    match stream.recv_data().await {
                        Ok(Some(_)) => continue,
                        Ok(None) => break ConnectionError::LocallyClosed,
                        Err(_) => break ConnectionError::Reset,
                    }
                }
            } => Some(data),
            _ = closed => None,
        };
        match ended_by_peer {
            Some(why) => sessions.close(id, why),
            None => {
                sessions.close(id, ConnectionError::LocallyClosed);
                let _ = stream.finish().await;
            }
        }
    });
    Ok(session)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_paths_carry_the_token_form_encoded() {
        assert_eq!(session_path("alknet/sftp", None), "/alknet/sftp");
        let p = session_path("alknet/sftp", Some("s3cret/+ &x"));
        assert_eq!(p, "/alknet/sftp?token=s3cret%2F%2B+%26x");
        let query = p.split_once('?').map(|(_, q)| q);
        assert_eq!(
            crate::h3::webtransport::connect::token_of(query).as_deref(),
            Some("s3cret/+ &x")
        );
    }
}
