//! A handler that errors or panics ends only its own connection (or stream); the server
//! and every other connection carry on.

use std::sync::Arc;

use alknet_runtime::rt::spawn_guarded;
use alknet_runtime::{
    close_code, AuthContext, Connection, ConnectionError, HandlerError, LocalBoxFuture,
    ProtocolHandler, ReadError, VarInt, STREAM_PANIC_CODE,
};
use alknet_tests::*;

struct PanicsOnFirstStream;

impl ProtocolHandler for PanicsOnFirstStream {
    fn alpn(&self) -> &[u8] {
        b"test/panic"
    }
    fn handle(
        &self,
        conn: Connection,
        _: AuthContext,
    ) -> LocalBoxFuture<'_, Result<(), HandlerError>> {
        Box::pin(async move {
            let mut s = conn.accept_bi().await?;
            let _ = s.recv.read_chunk(16).await?;
            panic!("handler bug");
        })
    }
}

struct FailsWithProtocolError;

impl ProtocolHandler for FailsWithProtocolError {
    fn alpn(&self) -> &[u8] {
        b"test/error"
    }
    fn handle(
        &self,
        conn: Connection,
        _: AuthContext,
    ) -> LocalBoxFuture<'_, Result<(), HandlerError>> {
        Box::pin(async move {
            let _ = conn.accept_bi().await?;
            Err(HandlerError::Protocol {
                code: VarInt::from_u32(0x42),
                reason: "bad request".into(),
            })
        })
    }
}

/// Echoes each stream, except that a stream starting with "panic" panics its task.
struct PanicsPerStream;

impl ProtocolHandler for PanicsPerStream {
    fn alpn(&self) -> &[u8] {
        b"test/stream-panic"
    }
    fn handle(
        &self,
        conn: Connection,
        _: AuthContext,
    ) -> LocalBoxFuture<'_, Result<(), HandlerError>> {
        Box::pin(async move {
            while let Ok(stream) = conn.accept_bi().await {
                spawn_guarded("test stream", async move {
                    let (mut send, mut recv) = stream.split();
                    let body = recv.read_to_end(1 << 16).await.expect("read request");
                    if body.starts_with(b"panic") {
                        panic!("stream handler bug");
                    }
                    send.write_all(&body).await.expect("write reply");
                    send.finish().expect("finish");
                });
            }
            Ok(())
        })
    }
}

fn server() -> alknet_runtime::ServerHandle {
    start_server(ServerOptions {
        workers: 2,
        handlers: vec![
            Arc::new(alknet_echo::EchoHandler),
            Arc::new(PanicsOnFirstStream),
            Arc::new(FailsWithProtocolError),
            Arc::new(PanicsPerStream),
        ],
        ..Default::default()
    })
}

fn application_close(e: &ConnectionError) -> (u64, Vec<u8>) {
    match e {
        ConnectionError::ApplicationClosed(c) => (c.error_code.into_inner(), c.reason.to_vec()),
        other => panic!("expected an application close, got {other}"),
    }
}

#[test]
fn handler_panic_closes_only_its_connection() {
    let server = server();
    run_client(|| async {
        let endpoint = client_endpoint();
        let echo = connect(&endpoint, &server, alknet_echo::ALPN)
            .await
            .expect("echo");
        let doomed = connect(&endpoint, &server, b"test/panic")
            .await
            .expect("panic handler");
        let mut s = doomed.open_bi().await.expect("open");
        s.send.write_all(b"hello").await.expect("write");
        let (code, reason) = application_close(&doomed.closed().await);
        assert_eq!(code, u64::from(close_code::HANDLER_PANIC));
        assert_eq!(reason, b"internal error");
        // the other connection, and new ones, are unaffected
        let data = payload(1, 100_000);
        assert_eq!(echo_roundtrip(&echo, data.clone()).await, sha256(&data));
        let fresh = connect(&endpoint, &server, alknet_echo::ALPN)
            .await
            .expect("new connection");
        assert_eq!(echo_roundtrip(&fresh, data.clone()).await, sha256(&data));
    });
    let panics = server.total_stats().handler_panics;
    assert_eq!(panics, 1);
}

#[test]
fn handler_error_closes_with_its_code_and_reason() {
    let server = server();
    run_client(|| async {
        let endpoint = client_endpoint();
        let conn = connect(&endpoint, &server, b"test/error")
            .await
            .expect("connect");
        let mut s = conn.open_bi().await.expect("open");
        s.send.write_all(b"x").await.expect("write");
        let (code, reason) = application_close(&conn.closed().await);
        assert_eq!(code, 0x42);
        assert_eq!(
            String::from_utf8_lossy(&reason),
            "protocol error 66: bad request"
        );
    });
    let errors = server.total_stats().handler_errors;
    assert_eq!(errors, 1);
}

#[test]
fn stream_task_panic_resets_only_that_stream() {
    let server = server();
    run_client(|| async {
        let endpoint = client_endpoint();
        let conn = connect(&endpoint, &server, b"test/stream-panic")
            .await
            .expect("connect");

        let mut bad = conn.open_bi().await.expect("open");
        bad.send.write_all(b"panic please").await.expect("write");
        bad.send.finish().expect("finish");
        let err = bad
            .recv
            .read_to_end(1024)
            .await
            .expect_err("stream must be reset");
        assert_eq!(
            err,
            alknet_runtime::ReadToEndError::Read(ReadError::Reset(VarInt::from_u32(
                STREAM_PANIC_CODE
            )))
        );

        let mut good = conn.open_bi().await.expect("open");
        good.send.write_all(b"still here").await.expect("write");
        good.send.finish().expect("finish");
        assert_eq!(
            good.recv.read_to_end(1024).await.expect("reply"),
            b"still here"
        );
        assert!(conn.close_reason().is_none());
    });
}
